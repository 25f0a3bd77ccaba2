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

use std::net::{IpAddr, SocketAddr};

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
        if HOP_BY_HOP.iter().any(|n| is(n))
            || named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(h.name.as_bytes()))
            || is_expect_continue(h)
            || (req.chunked && is("trailer"))
        {
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
        None => headers.push((b"X-Forwarded-For".to_vec(), ip.into_bytes())),
    }
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
}
