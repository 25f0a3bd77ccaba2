//! The shadow copy's wire bytes: Host suffix, hop-by-hop removal, `X-Forwarded-For`, body
//! framing and the user's header rules. Pure: no I/O, no clock.
//!
//! Decisions (SPEC.md "Host header", "The copy is the request"):
//! - Host: the suffix goes before the port, found as Envoy's `shadowAppendedHost` finds it
//!   (the last `:` that is not inside `[...]`), so `[::1]:8080` becomes `[::1]-shadow:8080`
//!   and `[::1]` becomes `[::1]-shadow`. Case and a trailing dot are kept as sent. A missing
//!   or empty Host becomes the captured destination `ip:port` (IPv6 in brackets) plus the
//!   suffix, added as the first header.
//! - Version: the request line keeps the client's version (`HTTP/1.0` stays 1.0), because
//!   a 1.0 request means different things to a server (no keep-alive, no chunked).
//! - Body: sent with `Content-Length`. A chunked body is re-framed as `Content-Length` with
//!   the same (de-chunked) bytes; its trailers and the `Trailer` header that announced them
//!   are dropped, since a `Content-Length` message cannot carry them. `Content-Length`
//!   stays where the client put it (or replaces `Transfer-Encoding` in place) and is
//!   written as the real body length. A request that had neither and no body gets neither.
//! - `X-Forwarded-For`: the client IP (no port, IPv6 without brackets) is appended to the
//!   last `X-Forwarded-For` header as `", ip"`, or added as a new last header.
//! - Header rules run last, in the order `remove`, `set`, `redact`: redacting last means a
//!   redacted name never leaves the node with a real value, whatever else was configured.
//!
//! HTTP/2 (`build_h2_request`, H2.md "Sending the copy"): the same Host rule for
//! `:authority` (and a `host` field, if sent), the same hop-by-hop removal (plus
//! `transfer-encoding` and `http2-settings`, which HTTP/2 forbids), `X-Forwarded-For` and
//! header rules; `te` only as `trailers`; `:path` and the body as captured, trailers sent
//! as trailers (remove and redact rules apply to them too). gRPC: `grpc-timeout` capped
//! at the copy's own timeout (and set when absent); true-binary `-bin` values re-encoded
//! as base64.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::request::{Header, Request};

/// The value that replaces a redacted header's value.
pub const REDACTED: &[u8] = b"REDACTED";

/// One user header rule. Names match ASCII case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderRule {
    /// Drop every header of this name.
    Remove(String),
    /// Replace the first header of this name (dropping the others), or add it at the end.
    Set(String, Vec<u8>),
    /// Replace every value of this name by [`REDACTED`].
    Redact(String),
}

/// Header rules of one target, applied in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub rules: Vec<HeaderRule>,
}

impl HeaderRules {
    /// Rules from the three CLI lists, in the documented order: remove, set, redact.
    pub fn from_lists(
        set: Vec<(String, Vec<u8>)>,
        remove: Vec<String>,
        redact: Vec<String>,
    ) -> Self {
        let rules = remove
            .into_iter()
            .map(HeaderRule::Remove)
            .chain(set.into_iter().map(|(n, v)| HeaderRule::Set(n, v)))
            .chain(redact.into_iter().map(HeaderRule::Redact))
            .collect();
        Self { rules }
    }

    fn apply(&self, headers: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        for rule in &self.rules {
            match rule {
                HeaderRule::Remove(name) => headers.retain(|(n, _)| !name_is(n, name)),
                HeaderRule::Set(name, value) => {
                    match headers.iter().position(|(n, _)| name_is(n, name)) {
                        Some(first) => {
                            headers[first].1 = value.clone();
                            let mut i = 0;
                            headers.retain(|(n, _)| {
                                i += 1;
                                i - 1 == first || !name_is(n, name)
                            });
                        }
                        None => headers.push((name.as_bytes().to_vec(), value.clone())),
                    }
                }
                HeaderRule::Redact(name) => {
                    for (n, v) in headers.iter_mut() {
                        if name_is(n, name) {
                            *v = REDACTED.to_vec();
                        }
                    }
                }
            }
        }
    }
}

impl HeaderRules {
    /// The rules that take something away (remove, redact), for fields that come after
    /// the body: `set` adds to the head, never to the trailers.
    fn apply_to_trailers(&self, trailers: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        for rule in &self.rules {
            match rule {
                HeaderRule::Remove(name) => trailers.retain(|(n, _)| !name_is(n, name)),
                HeaderRule::Redact(name) => {
                    for (n, v) in trailers.iter_mut() {
                        if name_is(n, name) {
                            *v = REDACTED.to_vec();
                        }
                    }
                }
                HeaderRule::Set(..) => {}
            }
        }
    }
}

fn name_is(name: &[u8], wanted: &str) -> bool {
    name.eq_ignore_ascii_case(wanted.as_bytes())
}

/// Byte offset of the `:` that starts the port, as Envoy finds it: the last `:` unless a
/// `]` comes after it (then the `:` is inside an IPv6 literal and there is no port).
fn port_start(host: &[u8]) -> Option<usize> {
    let colon = host.iter().rposition(|&b| b == b':')?;
    match host.iter().rposition(|&b| b == b']') {
        Some(bracket) if bracket > colon => None,
        _ => Some(colon),
    }
}

/// The Host value the shadow copy carries. See the module comment for the rules.
pub fn shadow_host(host: Option<&[u8]>, captured_dst: SocketAddr, suffix: &str) -> Vec<u8> {
    let host = match host {
        Some(h) if !h.is_empty() => h.to_vec(),
        // `SocketAddr`'s Display writes IPv6 in brackets, as a Host value needs.
        _ => captured_dst.to_string().into_bytes(),
    };
    if suffix.is_empty() {
        return host;
    }
    let mut out = Vec::with_capacity(host.len() + suffix.len());
    match port_start(&host) {
        Some(at) => {
            out.extend_from_slice(&host[..at]);
            out.extend_from_slice(suffix.as_bytes());
            out.extend_from_slice(&host[at..]);
        }
        None => {
            out.extend_from_slice(&host);
            out.extend_from_slice(suffix.as_bytes());
        }
    }
    out
}

/// Hop-by-hop names that never go to the target (RFC 9110 7.6.1, plus the legacy
/// Proxy-Connection), and the framing headers that are re-derived.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "proxy-connection",
];

/// Fields a `Connection` option can never remove from the copy: the copy's route (Host)
/// and its framing, which this module writes itself. A hop-by-hop Host is meaningless to
/// an origin server, which still routes by it.
const NEVER_HOP_BY_HOP: [&[u8]; 3] = [b"host", b"content-length", b"transfer-encoding"];

fn connection_named(headers: &[Header]) -> Vec<Vec<u8>> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b',').map(trim_ows))
        .filter(|t| !t.is_empty())
        .filter(|t| !NEVER_HOP_BY_HOP.iter().any(|n| t.eq_ignore_ascii_case(n)))
        .map(<[u8]>::to_ascii_lowercase)
        .collect()
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn is_expect_continue(h: &Header) -> bool {
    h.name.eq_ignore_ascii_case("expect")
        && trim_ows(&h.value).eq_ignore_ascii_case(b"100-continue")
}

/// Fields that never go to the target in either protocol: hop-by-hop by name or named by
/// `Connection` (`named`), and `Expect: 100-continue` (the copy sends its body at once
/// and waits for no interim answer).
fn is_hop_by_hop(h: &Header, named: &[Vec<u8>]) -> bool {
    HOP_BY_HOP.iter().any(|n| h.name.eq_ignore_ascii_case(n))
        || named
            .iter()
            .any(|n| n.eq_ignore_ascii_case(h.name.as_bytes()))
        || is_expect_continue(h)
}

/// Appends the client IP to the last `X-Forwarded-For`, or adds one named `name`.
fn append_forwarded_for(headers: &mut Vec<(Vec<u8>, Vec<u8>)>, client: SocketAddr, name: &[u8]) {
    let ip = ip_text(client.ip());
    match headers
        .iter_mut()
        .rev()
        .find(|(n, _)| name_is(n, "x-forwarded-for"))
    {
        Some((_, v)) => {
            if !trim_ows(v).is_empty() {
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(ip.as_bytes());
        }
        None => headers.push((name.to_vec(), ip.into_bytes())),
    }
}

fn ip_text(ip: IpAddr) -> String {
    // An IPv4-mapped IPv6 client is an IPv4 client as far as the application knows.
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The request-target the copy carries: an absolute-form target (`http://prod/admin`)
/// gets the suffix on its authority as Host does (`http://prod-shadow/admin`), since a
/// server routes by that authority rather than by Host (RFC 9112 §3.2.2); other forms
/// are sent as they are.
fn shadow_target<'a>(
    target: &'a [u8],
    server: SocketAddr,
    suffix: &str,
) -> std::borrow::Cow<'a, [u8]> {
    match crate::http::absolute_form(target) {
        Some((scheme, authority)) if !suffix.is_empty() => {
            let start = scheme.len() + 3;
            let end = start + authority.len();
            let mut out = Vec::with_capacity(target.len() + suffix.len());
            out.extend_from_slice(&target[..start]);
            out.extend_from_slice(&shadow_host(Some(authority), server, suffix));
            out.extend_from_slice(&target[end..]);
            std::borrow::Cow::Owned(out)
        }
        _ => std::borrow::Cow::Borrowed(target),
    }
}

/// The exact bytes sent to a target for `req`, captured from `client` to `server`.
pub fn build_shadow_request(
    req: &Request,
    client: SocketAddr,
    server: SocketAddr,
    rules: &HeaderRules,
    suffix: &str,
) -> Vec<u8> {
    let named = connection_named(&req.headers);
    let body_len = req.body.len().to_string().into_bytes();
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(req.headers.len() + 2);
    let mut host_seen = false;
    let mut length_written = false;
    for h in &req.headers {
        // Compared in place: a lowercased copy of every name was an allocation per header
        // of every shadow copy.
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        if is_hop_by_hop(h, &named) || (req.chunked && is("trailer")) {
            continue;
        }
        if is("host") {
            // A second Host is invalid HTTP; the framer may still pass one on. Rewriting
            // only the first keeps the copy as close to what was sent as possible.
            if host_seen {
                headers.push((h.name.clone().into_bytes(), h.value.clone()));
            } else {
                host_seen = true;
                let value = shadow_host(Some(&h.value), server, suffix);
                headers.push((h.name.clone().into_bytes(), value));
            }
        } else if is("content-length") || is("transfer-encoding") {
            if !length_written {
                length_written = true;
                let name = if is("content-length") {
                    h.name.clone().into_bytes()
                } else {
                    b"Content-Length".to_vec()
                };
                headers.push((name, body_len.clone()));
            }
        } else {
            headers.push((h.name.clone().into_bytes(), h.value.clone()));
        }
    }
    if !host_seen {
        // An HTTP/1.0 request without Host: its absolute-form authority names the origin
        // if it has one, else the captured destination does.
        let origin = crate::http::absolute_form(&req.target).map(|(_, authority)| authority);
        headers.insert(0, (b"Host".to_vec(), shadow_host(origin, server, suffix)));
    }
    let target = shadow_target(&req.target, server, suffix);
    if !length_written && !req.body.is_empty() {
        headers.push((b"Content-Length".to_vec(), body_len));
    }
    append_forwarded_for(&mut headers, client, b"X-Forwarded-For");
    rules.apply(&mut headers);

    let size = req.method.len()
        + target.len()
        + 16
        + headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
        + 2
        + req.body.len();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&target);
    out.extend_from_slice(if req.version_minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (n, v) in &headers {
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body);
    out
}

/// Fields HTTP/2 forbids besides HTTP/1.1's hop-by-hop ones (RFC 9113 8.2.2): the
/// body's framing is the stream's, and the upgrade's settings are the connection's.
const H2_CONNECTION_SPECIFIC: [&str; 2] = ["transfer-encoding", "http2-settings"];

/// The HTTP/2 copy of a request: pseudo-fields, then fields and trailers with lower-case
/// names, in the order they go out. The body is the captured one, sent as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Copy {
    pub method: String,
    /// `http` or `https`: the target's, not the captured `:scheme`.
    pub scheme: &'static str,
    pub authority: Vec<u8>,
    pub path: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub trailers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the copy of an HTTP/2 request needs besides the request: where it went, the
/// target's header rules, suffix and scheme, and the copy's own deadline (the cap on
/// `grpc-timeout`).
#[derive(Clone, Copy, Debug)]
pub struct H2CopyOptions<'a> {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub rules: &'a HeaderRules,
    pub suffix: &'a str,
    pub scheme: &'static str,
    pub timeout: Duration,
}

/// The HTTP/2 copy of `req` (see the module comment for the rules).
pub fn build_h2_request(req: &Request, opts: &H2CopyOptions<'_>) -> H2Copy {
    let named = connection_named(&req.headers);
    let authority = shadow_host(req.authority(), opts.server, opts.suffix);
    let body_len = req.body.len().to_string().into_bytes();
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(req.headers.len() + 2);
    let mut host_seen = false;
    let mut length_written = false;
    for h in &req.headers {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        let name = h.name.to_ascii_lowercase().into_bytes();
        if is("te") {
            // The only `te` HTTP/2 allows; gRPC servers require it.
            if trim_ows(&h.value).eq_ignore_ascii_case(b"trailers") {
                headers.push((name, b"trailers".to_vec()));
            }
        } else if is_hop_by_hop(h, &named) || H2_CONNECTION_SPECIFIC.iter().any(|n| is(n)) {
            continue;
        } else if is("host") && !host_seen {
            host_seen = true;
            let value = shadow_host(Some(&h.value), opts.server, opts.suffix);
            headers.push((name, value));
        } else if is("content-length") {
            // One, and the length of the body that is sent.
            if !length_written {
                length_written = true;
                headers.push((name, body_len.clone()));
            }
        } else {
            headers.push((name, h.value.clone()));
        }
    }
    append_forwarded_for(&mut headers, opts.client, b"x-forwarded-for");
    opts.rules.apply(&mut headers);
    // Rules may add names in any case, or a field HTTP/2 forbids.
    let allowed = |(n, v): &(Vec<u8>, Vec<u8>)| {
        let forbidden = HOP_BY_HOP
            .iter()
            .chain(&H2_CONNECTION_SPECIFIC)
            .any(|f| name_is(n, f));
        !forbidden || (name_is(n, "te") && v.as_slice() == b"trailers")
    };
    headers.retain(allowed);
    for (n, _) in headers.iter_mut() {
        n.make_ascii_lowercase();
    }
    if req.is_grpc() {
        cap_grpc_timeout(&mut headers, opts.timeout);
    }
    let mut trailers: Vec<(Vec<u8>, Vec<u8>)> = req
        .trailers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase().into_bytes(), h.value.clone()))
        .collect();
    opts.rules.apply_to_trailers(&mut trailers);
    trailers.retain(|field| allowed(field) && !name_is(&field.0, "te"));
    for (n, v) in headers.iter_mut().chain(trailers.iter_mut()) {
        reencode_true_binary(n, v);
    }
    H2Copy {
        method: req.method.clone(),
        scheme: opts.scheme,
        authority,
        path: req.target.clone(),
        headers,
        trailers,
    }
}

/// A `grpc-timeout` value (gRPC over HTTP/2: 1 to 8 digits and a unit, `H` `M` `S` `m`
/// `u` `n`), or `None` when it is not one.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `d` as a `grpc-timeout` value: the finest unit whose count fits in 8 digits, rounded
/// down (the cap is never exceeded).
pub fn grpc_timeout_value(d: Duration) -> Vec<u8> {
    const UNITS: [(u8, u128); 6] = [
        (b'n', 1),
        (b'u', 1_000),
        (b'm', 1_000_000),
        (b'S', 1_000_000_000),
        (b'M', 60_000_000_000),
        (b'H', 3_600_000_000_000),
    ];
    let nanos = d.as_nanos();
    let (unit, count) = UNITS
        .iter()
        .map(|&(unit, per)| (unit, nanos / per))
        .find(|&(_, count)| count <= 99_999_999)
        .unwrap_or((b'H', 99_999_999));
    let mut out = count.to_string().into_bytes();
    out.push(unit);
    out
}

/// A gRPC copy's deadline: the client's `grpc-timeout` when it is shorter than the copy's
/// own `timeout`, else `timeout`; a missing or invalid one becomes `timeout`, so the
/// target gives up on the call no later than we do (a copy never waits forever).
fn cap_grpc_timeout(headers: &mut Vec<(Vec<u8>, Vec<u8>)>, timeout: Duration) {
    match headers.iter().position(|(n, _)| n == b"grpc-timeout") {
        Some(at) => {
            let sent = parse_grpc_timeout(&headers[at].1);
            if sent.is_none_or(|sent| sent > timeout) {
                headers[at].1 = grpc_timeout_value(timeout);
            }
            // A second one would leave the target to pick.
            let mut i = 0;
            headers.retain(|(n, _)| {
                i += 1;
                i - 1 == at || n != b"grpc-timeout"
            });
        }
        None => headers.push((b"grpc-timeout".to_vec(), grpc_timeout_value(timeout))),
    }
}

/// A `-bin` value that starts with a NUL is raw bytes: two gRPC peers that both
/// advertised true-binary metadata (setting 0xfe03) send it so. It goes out as base64 of
/// the bytes after the NUL, the form every gRPC peer reads. The target's own SETTINGS
/// would tell whether it takes raw bytes, but `h2` does not expose unknown settings, so
/// such values are always re-encoded (a NUL is not a legal HTTP/2 field value anyway).
fn reencode_true_binary(name: &[u8], value: &mut Vec<u8>) {
    if name.ends_with(b"-bin") && value.first() == Some(&0) {
        *value = base64_unpadded(&value[1..]);
    }
}

/// Standard-alphabet base64 without padding (gRPC emits it unpadded and reads both).
fn base64_unpadded(bytes: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let sextets = [n >> 18, n >> 12, n >> 6, n];
        for s in &sextets[..chunk.len() + 1] {
            out.push(ALPHABET[(s & 63) as usize]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_rule_table() {
        let dst4 = sa("10.0.0.7:8080");
        let dst6 = sa("[fd00::7]:8443");
        let cases: &[(Option<&str>, SocketAddr, &str, &str)] = &[
            (Some("httpbin:8000"), dst4, "-shadow", "httpbin-shadow:8000"),
            (
                Some("api.example.com"),
                dst4,
                "-shadow",
                "api.example.com-shadow",
            ),
            (
                Some("API.Example.COM."),
                dst4,
                "-shadow",
                "API.Example.COM.-shadow",
            ),
            (
                Some("example.com.:80"),
                dst4,
                "-shadow",
                "example.com.-shadow:80",
            ),
            (
                Some("10.1.2.3:9000"),
                dst4,
                "-shadow",
                "10.1.2.3-shadow:9000",
            ),
            (Some("[::1]:8080"), dst4, "-shadow", "[::1]-shadow:8080"),
            (Some("[::1]"), dst4, "-shadow", "[::1]-shadow"),
            (
                Some("[fe80::1%25eth0]:80"),
                dst4,
                "-shadow",
                "[fe80::1%25eth0]-shadow:80",
            ),
            (Some("host:"), dst4, "-shadow", "host-shadow:"),
            (Some("httpbin:8000"), dst4, "", "httpbin:8000"),
            (Some("httpbin:8000"), dst4, "-canary", "httpbin-canary:8000"),
            (None, dst4, "-shadow", "10.0.0.7-shadow:8080"),
            (Some(""), dst4, "-shadow", "10.0.0.7-shadow:8080"),
            (None, dst6, "-shadow", "[fd00::7]-shadow:8443"),
            (None, dst6, "", "[fd00::7]:8443"),
        ];
        for (host, dst, suffix, want) in cases {
            let got = shadow_host(host.map(str::as_bytes), *dst, suffix);
            assert_eq!(
                String::from_utf8_lossy(&got),
                *want,
                "host {host:?} dst {dst} suffix {suffix:?}"
            );
        }
    }

    fn h(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn req(headers: Vec<Header>, body: &[u8]) -> Request {
        Request {
            ts_nanos: 0,
            method: "POST".into(),
            target: b"/a%20b/c?x=1&y=%zz".to_vec(),
            version_minor: 1,
            headers,
            body: body.to_vec(),
            chunked: false,
            trailers: vec![],
            ..Request::default()
        }
    }

    fn build(r: &Request, rules: &HeaderRules) -> String {
        let bytes = build_shadow_request(
            r,
            sa("192.0.2.1:50000"),
            sa("10.0.0.7:8080"),
            rules,
            "-shadow",
        );
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn copy_keeps_order_case_and_target() {
        let r = req(
            vec![
                h("HOST", "Svc:8080"),
                h("x-Custom", "a  b"),
                h("Content-Length", "3"),
                h("accept", "*/*"),
            ],
            b"abc",
        );
        assert_eq!(
            build(&r, &HeaderRules::default()),
            "POST /a%20b/c?x=1&y=%zz HTTP/1.1\r\nHOST: Svc-shadow:8080\r\nx-Custom: a  b\r\n\
             Content-Length: 3\r\naccept: */*\r\nX-Forwarded-For: 192.0.2.1\r\n\r\nabc"
        );
    }

    #[test]
    fn hop_by_hop_table() {
        // (header present in the request, whether it reaches the target)
        let cases: &[(&str, &str, bool)] = &[
            ("Connection", "keep-alive", false),
            ("Keep-Alive", "timeout=5", false),
            ("TE", "trailers", false),
            ("Upgrade", "websocket", false),
            ("Proxy-Connection", "keep-alive", false),
            ("Expect", "100-continue", false),
            ("Expect", "something-else", true),
            ("Via", "1.1 proxy", true),
            ("Trailer", "X-Sum", true),
        ];
        for (name, value, kept) in cases {
            let r = req(vec![h("Host", "a"), h(name, value)], b"");
            let out = build(&r, &HeaderRules::default());
            let line = format!("\r\n{name}: {value}\r\n");
            assert_eq!(out.contains(&line), *kept, "{name}: {value} -> {out:?}");
        }
    }

    #[test]
    fn connection_named_headers_are_dropped() {
        let r = req(
            vec![
                h("Host", "a"),
                h("Connection", "close, X-Secret ,x-other"),
                h("x-secret", "1"),
                h("X-Other", "2"),
                h("X-Kept", "3"),
            ],
            b"",
        );
        assert_eq!(
            build(&r, &HeaderRules::default()),
            "POST /a%20b/c?x=1&y=%zz HTTP/1.1\r\nHost: a-shadow\r\nX-Kept: 3\r\n\
             X-Forwarded-For: 192.0.2.1\r\n\r\n"
        );
    }

    /// `Connection: host` (or a framing header) names a field no option may take from
    /// the copy: without Host the gateway would route by the target's address, outside
    /// the `-shadow` route.
    #[test]
    fn connection_cannot_remove_host_or_framing() {
        let r = req(
            vec![
                h("Host", "prod:80"),
                h("Connection", "Host, content-length,Transfer-Encoding, x-a"),
                h("Content-Length", "2"),
                h("X-A", "1"),
            ],
            b"hi",
        );
        assert_eq!(
            build(&r, &HeaderRules::default()),
            "POST /a%20b/c?x=1&y=%zz HTTP/1.1\r\nHost: prod-shadow:80\r\n\
             Content-Length: 2\r\nX-Forwarded-For: 192.0.2.1\r\n\r\nhi"
        );
    }

    /// An absolute-form target names the origin a server routes by: its authority gets
    /// the suffix as Host does, the rest stays byte for byte.
    #[test]
    fn absolute_form_target_gets_the_suffix() {
        let cases: &[(&str, Option<&str>, &str, &str)] = &[
            (
                "http://prod.internal/admin?x=1",
                Some("prod.internal"),
                "http://prod.internal-shadow/admin?x=1",
                "prod.internal-shadow",
            ),
            (
                "HTTP://Prod:8080",
                Some("prod:8080"),
                "HTTP://Prod-shadow:8080",
                "prod-shadow:8080",
            ),
            (
                "http://[::1]:81/p",
                None,
                "http://[::1]-shadow:81/p",
                "[::1]-shadow:81",
            ),
            ("/plain", None, "/plain", "10.0.0.7-shadow:8080"),
        ];
        for (target, host, want_target, want_host) in cases {
            let mut r = req(host.iter().map(|v| h("Host", v)).collect(), b"");
            r.target = target.as_bytes().to_vec();
            if host.is_none() {
                r.version_minor = 0;
            }
            let out = build(&r, &HeaderRules::default());
            let (line, rest) = out.split_once("\r\n").unwrap();
            let version = if host.is_none() { "1.0" } else { "1.1" };
            assert_eq!(
                line,
                format!("POST {want_target} HTTP/{version}"),
                "{target}"
            );
            assert!(
                rest.starts_with(&format!("Host: {want_host}\r\n")),
                "{out:?}"
            );
        }
        // An empty suffix leaves the target as it was.
        let mut r = req(vec![h("Host", "p")], b"");
        r.target = b"http://p/x".to_vec();
        let out = build_shadow_request(
            &r,
            sa("192.0.2.1:1"),
            sa("10.0.0.7:80"),
            &HeaderRules::default(),
            "",
        );
        assert!(out.starts_with(b"POST http://p/x HTTP/1.1\r\nHost: p\r\n"));
    }

    #[test]
    fn chunked_is_reframed_as_content_length_and_trailers_dropped() {
        let mut r = req(
            vec![
                h("Host", "a"),
                h("Transfer-Encoding", "chunked"),
                h("Trailer", "X-Sum"),
                h("X-After", "1"),
            ],
            b"hello world",
        );
        r.chunked = true;
        r.trailers = vec![h("X-Sum", "abc")];
        assert_eq!(
            build(&r, &HeaderRules::default()),
            "POST /a%20b/c?x=1&y=%zz HTTP/1.1\r\nHost: a-shadow\r\nContent-Length: 11\r\n\
             X-After: 1\r\nX-Forwarded-For: 192.0.2.1\r\n\r\nhello world"
        );
    }

    #[test]
    fn http10_without_host_keeps_version_and_gets_destination_host() {
        let mut r = req(vec![h("User-Agent", "x")], b"");
        r.version_minor = 0;
        r.method = "GET".into();
        r.target = b"/".to_vec();
        assert_eq!(
            build(&r, &HeaderRules::default()),
            "GET / HTTP/1.0\r\nHost: 10.0.0.7-shadow:8080\r\nUser-Agent: x\r\n\
             X-Forwarded-For: 192.0.2.1\r\n\r\n"
        );
    }

    #[test]
    fn body_without_length_header_gets_one() {
        let r = req(vec![h("Host", "a")], b"xyz");
        assert!(build(&r, &HeaderRules::default()).contains("\r\nContent-Length: 3\r\n"));
    }

    #[test]
    fn xff_is_appended_to_the_last_one_or_added() {
        let r = req(
            vec![
                h("Host", "a"),
                h("X-Forwarded-For", "1.1.1.1"),
                h("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
            ],
            b"",
        );
        let out = build(&r, &HeaderRules::default());
        assert!(out.contains("\r\nX-Forwarded-For: 1.1.1.1\r\n"), "{out}");
        assert!(
            out.contains("\r\nx-forwarded-for: 2.2.2.2, 3.3.3.3, 192.0.2.1\r\n"),
            "{out}"
        );

        let v6 = build_shadow_request(
            &req(vec![h("Host", "a"), h("X-Forwarded-For", "")], b""),
            sa("[2001:db8::5]:4000"),
            sa("[2001:db8::1]:80"),
            &HeaderRules::default(),
            "-shadow",
        );
        assert!(String::from_utf8(v6)
            .unwrap()
            .contains("\r\nX-Forwarded-For: 2001:db8::5\r\n"));

        let mapped = build_shadow_request(
            &req(vec![h("Host", "a")], b""),
            sa("[::ffff:192.0.2.9]:4000"),
            sa("10.0.0.1:80"),
            &HeaderRules::default(),
            "-shadow",
        );
        assert!(String::from_utf8(mapped)
            .unwrap()
            .contains("\r\nX-Forwarded-For: 192.0.2.9\r\n"));
    }

    #[test]
    fn rules_apply_remove_then_set_then_redact() {
        let r = req(
            vec![
                h("Host", "a"),
                h("Authorization", "Bearer secret"),
                h("Cookie", "a=1"),
                h("cookie", "b=2"),
                h("X-Env", "prod"),
                h("x-env", "prod2"),
                h("X-Drop", "1"),
            ],
            b"",
        );
        let rules = HeaderRules::from_lists(
            vec![
                ("X-Env".into(), b"staging".to_vec()),
                ("X-New".into(), b"n".to_vec()),
                ("Authorization".into(), b"Bearer other".to_vec()),
            ],
            vec!["x-drop".into(), "X-New".into()],
            vec!["authorization".into(), "COOKIE".into()],
        );
        assert_eq!(
            build(&r, &rules),
            "POST /a%20b/c?x=1&y=%zz HTTP/1.1\r\nHost: a-shadow\r\nAuthorization: REDACTED\r\n\
             Cookie: REDACTED\r\ncookie: REDACTED\r\nX-Env: staging\r\n\
             X-Forwarded-For: 192.0.2.1\r\nX-New: n\r\n\r\n"
        );
    }

    fn header_strategy() -> impl proptest::strategy::Strategy<Value = Header> {
        use proptest::prelude::*;
        let names = prop_oneof![
            Just("Host".to_string()),
            Just("Connection".to_string()),
            Just("Keep-Alive".to_string()),
            Just("Content-Length".to_string()),
            Just("Transfer-Encoding".to_string()),
            Just("X-Forwarded-For".to_string()),
            "[A-Za-z][A-Za-z0-9-]{0,12}",
        ];
        (names, "[ -~&&[^ ]]([ -~]{0,20}[!-~])?").prop_map(|(name, value)| Header {
            name,
            value: value.into_bytes(),
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the headers, the copy is one valid HTTP/1.1 message with the same
        /// method, target and body, one Host, and the end-to-end headers in their order.
        #[test]
        fn copy_is_a_valid_message_with_the_same_body(
            headers in proptest::collection::vec(header_strategy(), 0..12),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            chunked in proptest::prelude::any::<bool>(),
        ) {
            let mut r = req(headers.clone(), &body);
            r.chunked = chunked;
            let out = build_shadow_request(
                &r,
                sa("192.0.2.1:1"),
                sa("10.0.0.7:80"),
                &HeaderRules::default(),
                "-shadow",
            );
            let mut parsed = [httparse::EMPTY_HEADER; 32];
            let mut p = httparse::Request::new(&mut parsed);
            let len = match p.parse(&out) {
                Ok(httparse::Status::Complete(len)) => len,
                other => panic!("not a complete head: {other:?}"),
            };
            proptest::prop_assert_eq!(p.method, Some("POST"));
            proptest::prop_assert_eq!(p.path.map(str::as_bytes), Some(&r.target[..]));
            proptest::prop_assert_eq!(&out[len..], &body[..]);
            let count = |n: &str| p.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(n)).count();
            proptest::prop_assert_eq!(count("transfer-encoding"), 0);
            proptest::prop_assert!(count("content-length") <= 1);
            proptest::prop_assert!(count("host") >= 1);
            proptest::prop_assert_eq!(count("connection") + count("keep-alive"), 0);
            if let Some(cl) = p.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length")) {
                let want_len = body.len().to_string();
                proptest::prop_assert_eq!(cl.value, want_len.as_bytes());
            } else {
                proptest::prop_assert!(body.is_empty());
            }
            let named = connection_named(&headers);
            let end_to_end: Vec<&Header> = headers
                .iter()
                .filter(|h| {
                    let l = h.name.to_ascii_lowercase();
                    !["host", "connection", "keep-alive", "content-length", "transfer-encoding",
                      "x-forwarded-for", "te", "upgrade", "proxy-connection", "expect", "trailer"]
                        .contains(&l.as_str())
                        && !named.iter().any(|n| n == l.as_bytes())
                })
                .collect();
            let sent: Vec<(&str, &[u8])> = p
                .headers
                .iter()
                .filter(|h| end_to_end.iter().any(|e| e.name == h.name))
                .map(|h| (h.name, h.value))
                .collect();
            let want: Vec<(&str, &[u8])> =
                end_to_end.iter().map(|h| (h.name.as_str(), &h.value[..])).collect();
            proptest::prop_assert_eq!(sent, want);
        }
    }

    #[test]
    fn rules_can_override_host_and_xff() {
        let r = req(vec![h("Host", "a")], b"");
        let rules = HeaderRules::from_lists(
            vec![("host".into(), b"fixed".to_vec())],
            vec!["X-Forwarded-For".into()],
            vec![],
        );
        assert_eq!(
            build(&r, &rules),
            "POST /a%20b/c?x=1&y=%zz HTTP/1.1\r\nHost: fixed\r\n\r\n"
        );
    }

    fn h2_req(authority: Option<&str>, headers: Vec<Header>, body: &[u8]) -> Request {
        Request {
            protocol: crate::request::Protocol::H2,
            stream_id: 1,
            method: "POST".into(),
            target: b"/helloworld.Greeter/SayHello?x=%zz".to_vec(),
            h2_authority: authority.map(|a| a.as_bytes().to_vec()),
            scheme: b"http".to_vec(),
            headers,
            body: body.to_vec(),
            ..Request::default()
        }
    }

    fn h2_build(r: &Request, rules: &HeaderRules, server: &str) -> H2Copy {
        build_h2_request(
            r,
            &H2CopyOptions {
                client: sa("192.0.2.1:50000"),
                server: sa(server),
                rules,
                suffix: "-shadow",
                scheme: "https",
                timeout: Duration::from_secs(10),
            },
        )
    }

    fn fields(list: &[(Vec<u8>, Vec<u8>)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// `:authority` gets the suffix before the port, as Host does; without one, the Host
    /// field names it; without either, the captured destination does.
    #[test]
    fn h2_authority_table() {
        let cases: &[(Option<&str>, Option<&str>, &str, &str)] = &[
            (
                Some("grpc-hello.example.cn:8000"),
                None,
                "10.0.0.7:8000",
                "grpc-hello.example.cn-shadow:8000",
            ),
            (
                Some("api.example.com"),
                None,
                "10.0.0.7:80",
                "api.example.com-shadow",
            ),
            (Some("[::1]:8080"), None, "10.0.0.7:80", "[::1]-shadow:8080"),
            (Some("[fd00::1]"), None, "10.0.0.7:80", "[fd00::1]-shadow"),
            (None, Some("Svc:81"), "10.0.0.7:80", "Svc-shadow:81"),
            (None, None, "10.0.0.7:8000", "10.0.0.7-shadow:8000"),
            (None, None, "[fd00::7]:8443", "[fd00::7]-shadow:8443"),
            (Some(""), None, "10.0.0.7:8000", "10.0.0.7-shadow:8000"),
        ];
        for (authority, host, server, want) in cases {
            let headers = host.iter().map(|v| h("host", v)).collect();
            let copy = h2_build(
                &h2_req(*authority, headers, b""),
                &HeaderRules::default(),
                server,
            );
            assert_eq!(
                String::from_utf8_lossy(&copy.authority),
                *want,
                "{authority:?} {host:?}"
            );
            assert_eq!(copy.scheme, "https");
            assert_eq!(copy.method, "POST");
            assert_eq!(copy.path, b"/helloworld.Greeter/SayHello?x=%zz");
        }
    }

    /// Connection-specific fields never go out; `te` only as `trailers`; a `host` field is
    /// rewritten like `:authority`; a wrong `content-length` becomes the body's; the
    /// other fields keep their order and values, and `x-forwarded-for` is appended.
    #[test]
    fn h2_fields_drop_connection_specific_ones() {
        let r = h2_req(
            Some("svc:8000"),
            vec![
                h("connection", "keep-alive, x-secret"),
                h("x-secret", "1"),
                h("keep-alive", "timeout=5"),
                h("proxy-connection", "keep-alive"),
                h("transfer-encoding", "chunked"),
                h("upgrade", "h2c"),
                h("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
                h("expect", "100-continue"),
                h("te", "gzip"),
                h("user-agent", "grpc-go/1.0"),
                h("host", "svc:8000"),
                h("content-length", "99"),
                h("x-a", "  spaced  "),
            ],
            b"hello",
        );
        let copy = h2_build(&r, &HeaderRules::default(), "10.0.0.7:8000");
        assert_eq!(
            fields(&copy.headers),
            pairs(&[
                ("user-agent", "grpc-go/1.0"),
                ("host", "svc-shadow:8000"),
                ("content-length", "5"),
                ("x-a", "  spaced  "),
                ("x-forwarded-for", "192.0.2.1"),
            ])
        );
        let r = h2_req(None, vec![h("TE", " Trailers ")], b"");
        let copy = h2_build(&r, &HeaderRules::default(), "10.0.0.7:8000");
        assert_eq!(
            fields(&copy.headers),
            pairs(&[("te", "trailers"), ("x-forwarded-for", "192.0.2.1")])
        );
    }

    /// Rules apply as for HTTP/1.1 (names they add are lower-cased, and cannot add a
    /// field HTTP/2 forbids); remove and redact reach the trailers, set does not.
    #[test]
    fn h2_rules_apply_to_fields_and_trailers() {
        let mut r = h2_req(
            Some("svc"),
            vec![h("authorization", "Bearer x"), h("x-drop", "1")],
            b"",
        );
        r.trailers = vec![h("x-drop", "2"), h("authorization", "t"), h("x-sum", "9")];
        let rules = HeaderRules::from_lists(
            vec![
                ("X-Env".into(), b"staging".to_vec()),
                ("Connection".into(), b"close".to_vec()),
            ],
            vec!["X-Drop".into()],
            vec!["Authorization".into()],
        );
        let copy = h2_build(&r, &rules, "10.0.0.7:80");
        assert_eq!(
            fields(&copy.headers),
            pairs(&[
                ("authorization", "REDACTED"),
                ("x-forwarded-for", "192.0.2.1"),
                ("x-env", "staging"),
            ])
        );
        assert_eq!(
            fields(&copy.trailers),
            pairs(&[("authorization", "REDACTED"), ("x-sum", "9")])
        );
    }

    fn grpc_req(headers: Vec<Header>) -> Request {
        let mut all = vec![
            h("content-type", "application/grpc+proto"),
            h("te", "trailers"),
        ];
        all.extend(headers);
        h2_req(
            Some("grpc-hello.example.cn:8000"),
            all,
            b"\0\0\0\0\x02\x0a\x00",
        )
    }

    fn grpc_timeout_of(copy: &H2Copy) -> Vec<String> {
        fields(&copy.headers)
            .into_iter()
            .filter(|(n, _)| n == "grpc-timeout")
            .map(|(_, v)| v)
            .collect()
    }

    /// `grpc-timeout`: kept when shorter than the copy's timeout (10 s here), capped when
    /// longer, set when missing, replaced when invalid; one only. Non-gRPC requests keep
    /// whatever they sent.
    #[test]
    fn grpc_timeout_is_capped_set_and_kept() {
        let cases: &[(&[&str], &str)] = &[
            (&["100m"], "100m"),
            (&["5S"], "5S"),
            (&["10S"], "10S"),
            (&["11S"], "10000000u"),
            (&["1H"], "10000000u"),
            (&["99999999H"], "10000000u"),
            (&["9999999n"], "9999999n"),
            (&[], "10000000u"),
            (&["abc"], "10000000u"),
            (&["123456789m"], "10000000u"),
            (&["1x"], "10000000u"),
            (&["S"], "10000000u"),
            (&["-1S"], "10000000u"),
            (&["1s"], "10000000u"),
            (&["1S", "2S"], "1S"),
        ];
        for (sent, want) in cases {
            let r = grpc_req(sent.iter().map(|v| h("grpc-timeout", v)).collect());
            let copy = h2_build(&r, &HeaderRules::default(), "10.0.0.7:8000");
            assert_eq!(grpc_timeout_of(&copy), vec![want.to_string()], "{sent:?}");
            assert!(fields(&copy.headers).contains(&("te".into(), "trailers".into())));
        }
        let plain = h2_req(Some("a"), vec![h("grpc-timeout", "1H")], b"");
        let copy = h2_build(&plain, &HeaderRules::default(), "10.0.0.7:80");
        assert_eq!(grpc_timeout_of(&copy), vec!["1H".to_string()]);
    }

    #[test]
    fn grpc_timeout_parse_and_format() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout(b"4m"), Some(Duration::from_millis(4)));
        assert_eq!(parse_grpc_timeout(b"5u"), Some(Duration::from_micros(5)));
        assert_eq!(
            parse_grpc_timeout(b"00000006n"),
            Some(Duration::from_nanos(6))
        );
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in [
            &b""[..],
            b"H",
            b"123456789S",
            b"1 S",
            b"+1S",
            b"1SS",
            b"1.5S",
            b"\xffS",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_millis(100), "100000u"),
            (Duration::from_secs(10), "10000000u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(1_000_000), "1000000S"),
            (Duration::from_secs(u64::MAX), "99999999H"),
        ];
        for (d, want) in cases {
            assert_eq!(String::from_utf8_lossy(&grpc_timeout_value(*d)), *want);
            assert!(parse_grpc_timeout(&grpc_timeout_value(*d)).unwrap() <= *d);
        }
    }

    /// A `-bin` value that starts with NUL (true binary) goes out as base64 of the rest;
    /// base64 values as sent, and the other names whatever their value.
    #[test]
    fn true_binary_metadata_is_reencoded_as_base64() {
        let mut r = grpc_req(vec![
            Header {
                name: "trace-bin".into(),
                value: b"\0\x01\x02\x03\xff".to_vec(),
            },
            h("key-bin", "AQID"),
            h("other", "x"),
        ]);
        r.trailers = vec![Header {
            name: "t-bin".into(),
            value: b"\0hi".to_vec(),
        }];
        let copy = h2_build(&r, &HeaderRules::default(), "10.0.0.7:8000");
        let got = fields(&copy.headers);
        assert!(
            got.contains(&("trace-bin".into(), "AQID/w".into())),
            "{got:?}"
        );
        assert!(got.contains(&("key-bin".into(), "AQID".into())), "{got:?}");
        assert_eq!(fields(&copy.trailers), pairs(&[("t-bin", "aGk")]));
        for (raw, want) in [
            (&b""[..], ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(String::from_utf8_lossy(&base64_unpadded(raw)), want);
        }
    }
}
