//! What a server does with a request head beyond its body framing (RFC 9112 §3, §9.3):
//! whether it answers 400 (and closes), whether the connection stays open after the
//! request, and which requests are never copied. Decided from the client's bytes alone,
//! so the rules hold where only the client's direction is captured; where a server could
//! go either way, the answer is the one that copies less.

use super::chunked::trim_ows;
use crate::request::NotCopied;

/// What the request-target and Host of a head say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A request a server processes; its copy can be sent.
    Copy,
    /// Processed, but not copied.
    NotCopied(NotCopied),
}

/// The scheme and authority of an absolute-form request-target (`http://a:8/p` gives
/// `("http", "a:8")`); `None` for any other form.
pub fn absolute_form(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = target.iter().position(|&b| b == b':')?;
    let scheme = &target[..colon];
    let valid_scheme = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let rest = target[colon..].strip_prefix(b"://")?;
    if !valid_scheme {
        return None;
    }
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some((scheme, &rest[..end]))
}

/// The port a scheme implies when an authority names none.
fn default_port(scheme: &[u8]) -> Option<&'static [u8]> {
    if scheme.eq_ignore_ascii_case(b"http") {
        Some(b"80")
    } else if scheme.eq_ignore_ascii_case(b"https") {
        Some(b"443")
    } else {
        None
    }
}

/// `host[:port]` with the scheme's default port made explicit, lower-cased: two
/// authorities name the same origin when these are equal.
pub(crate) fn normalised_authority(authority: &[u8], scheme: &[u8]) -> Vec<u8> {
    let mut out = authority.to_ascii_lowercase();
    let has_port = match (
        out.iter().rposition(|&b| b == b':'),
        out.iter().rposition(|&b| b == b']'),
    ) {
        (Some(colon), Some(bracket)) => colon > bracket,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if out.last() == Some(&b':') {
        // `host:` is `host` with the default port (RFC 3986 §3.2.3).
        out.pop();
    } else if has_port {
        return out;
    }
    if let Some(port) = default_port(scheme) {
        out.push(b':');
        out.extend_from_slice(port);
    }
    out
}

/// A Host value or authority a server accepts: no userinfo, no white space or controls,
/// nothing that ends the authority.
pub(crate) fn valid_authority(authority: &[u8]) -> bool {
    // No early exit: a valid value (nearly all of them) is read whole anyway, and the
    // loop without a branch per byte is a third of the cost.
    authority
        .iter()
        .fold(true, |ok, &b| ok & AUTHORITY_BYTE[usize::from(b)])
}

/// `valid_authority`'s bytes as a table: it runs on the Host of every request.
static AUTHORITY_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_graphic() && !matches!(c, b'@' | b'/' | b'?' | b'#' | b'\\');
        b += 1;
    }
    table
};

/// What a head's fields say beyond its body framing, gathered in one pass over them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeadFacts<'a> {
    /// Host fields seen (2 means two or more) and the first one's value.
    pub hosts: u8,
    pub host: Option<&'a [u8]>,
    /// `Connection` tokens.
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

impl<'a> HeadFacts<'a> {
    pub(crate) fn of(headers: &'a [super::Header]) -> Self {
        let mut facts = Self::default();
        for h in headers {
            let name = h.name.as_bytes();
            // The length first: most fields are none of these three.
            match name.len() {
                4 if name.eq_ignore_ascii_case(b"host") => {
                    if facts.hosts == 0 {
                        facts.host = Some(&h.value);
                    }
                    facts.hosts = facts.hosts.saturating_add(1).min(2);
                }
                7 if name.eq_ignore_ascii_case(b"upgrade") => facts.upgrade = true,
                10 if name.eq_ignore_ascii_case(b"connection") => {
                    let (close, keep_alive) = connection_tokens([h.value.as_slice()]);
                    facts.close |= close;
                    facts.keep_alive |= keep_alive;
                }
                _ => {}
            }
        }
        facts
    }
}

/// Judges a head the way RFC 9112 asks a server to. `Err` is why a server answers 400
/// (it then closes the connection, so nothing after it is trusted either).
pub(crate) fn judge(
    method: &str,
    target: &[u8],
    version_minor: u8,
    facts: &HeadFacts<'_>,
) -> Result<Verdict, &'static str> {
    // RFC 9112 §3.2: more than one Host, or none in HTTP/1.1, is answered with 400.
    let host = match (facts.hosts, facts.host) {
        (0, _) if version_minor >= 1 => return Err("HTTP/1.1 request without Host"),
        (0, _) | (_, None) => None,
        // Field values come without their surrounding white space (`http::Header`).
        (1, Some(one)) => Some(one),
        _ => return Err("more than one Host header"),
    };
    if host.is_some_and(|h| !valid_authority(h)) {
        return Err("invalid Host value");
    }
    if method == "CONNECT" {
        return Ok(Verdict::NotCopied(NotCopied::Connect));
    }
    match target {
        [b'/', ..] => Ok(Verdict::Copy),
        b"*" if method == "OPTIONS" => Ok(Verdict::NotCopied(NotCopied::OptionsAsterisk)),
        b"*" => Err("asterisk-form target without OPTIONS"),
        _ => {
            let Some((scheme, authority)) = absolute_form(target) else {
                return Err("invalid request-target");
            };
            if default_port(scheme).is_none() {
                return Err("absolute-form target with a scheme other than http(s)");
            }
            if authority.is_empty() || !valid_authority(authority) {
                return Err("absolute-form target with an invalid authority");
            }
            if target.contains(&b'#') {
                return Err("request-target with a fragment");
            }
            // A server takes the authority from the target (RFC 9112 §3.2.2); one whose
            // Host disagrees is at best confused, at worst routed by the wrong one.
            if let Some(host) = host {
                if normalised_authority(host, scheme) != normalised_authority(authority, scheme) {
                    return Err("Host disagrees with the absolute-form target");
                }
            }
            Ok(Verdict::Copy)
        }
    }
}

/// The connection-option tokens of the `Connection` fields that say whether it
/// persists: (`close` seen, `keep-alive` seen).
pub(crate) fn connection_tokens<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> (bool, bool) {
    let (mut close, mut keep_alive) = (false, false);
    for value in values {
        for token in value.split(|&b| b == b',').map(trim_ows) {
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    (close, keep_alive)
}

/// Whether the server keeps reading the connection after this request (RFC 9112 §9.3):
/// not after `Connection: close`, and an HTTP/1.0 request persists only with
/// `Connection: keep-alive`.
pub(crate) fn persists(version_minor: u8, close: bool, keep_alive: bool) -> bool {
    !close && (version_minor >= 1 || keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(method: &str, target: &str, v: u8, hosts: &[&str]) -> Result<Verdict, &'static str> {
        let headers: Vec<crate::http::Header> = hosts
            .iter()
            .map(|v| crate::http::Header {
                name: "Host".into(),
                value: v.as_bytes().to_vec(),
            })
            .collect();
        judge(method, target.as_bytes(), v, &HeadFacts::of(&headers))
    }

    /// Method, target, minor version, Host values, and the verdict.
    type Row = (
        &'static str,
        &'static str,
        u8,
        &'static [&'static str],
        Result<Verdict, &'static str>,
    );

    #[test]
    fn host_rules_of_rfc_9112() {
        use Verdict::*;
        let table: &[Row] = &[
            ("GET", "/", 1, &["h"], Ok(Copy)),
            ("GET", "/", 1, &[""], Ok(Copy)),
            ("GET", "/", 0, &[], Ok(Copy)),
            ("GET", "/", 1, &[], Err("HTTP/1.1 request without Host")),
            ("GET", "/", 1, &["a", "a"], Err("more than one Host header")),
            ("GET", "/", 0, &["a", "b"], Err("more than one Host header")),
            ("GET", "/", 1, &["user@h"], Err("invalid Host value")),
            ("GET", "/", 1, &["h/x"], Err("invalid Host value")),
            (
                "GET",
                "http://prod.internal/admin",
                1,
                &["prod.internal"],
                Ok(Copy),
            ),
            (
                "GET",
                "HTTP://Prod.Internal:80/a",
                1,
                &["prod.internal"],
                Ok(Copy),
            ),
            (
                "GET",
                "http://prod.internal/",
                1,
                &["prod.internal:80"],
                Ok(Copy),
            ),
            ("GET", "https://p:443?q", 1, &["p"], Ok(Copy)),
            ("GET", "http://prod.internal/a", 0, &[], Ok(Copy)),
            (
                "GET",
                "http://prod.internal/admin",
                1,
                &["stage"],
                Err("Host disagrees with the absolute-form target"),
            ),
            (
                "GET",
                "http://prod:8080/",
                1,
                &["prod"],
                Err("Host disagrees with the absolute-form target"),
            ),
            (
                "GET",
                "http://u:p@prod/",
                1,
                &["prod"],
                Err("absolute-form target with an invalid authority"),
            ),
            (
                "GET",
                "http:///x",
                1,
                &["h"],
                Err("absolute-form target with an invalid authority"),
            ),
            (
                "GET",
                "ftp://h/x",
                1,
                &["h"],
                Err("absolute-form target with a scheme other than http(s)"),
            ),
            (
                "GET",
                "http://h/x#f",
                1,
                &["h"],
                Err("request-target with a fragment"),
            ),
            ("GET", "h:80", 1, &["h"], Err("invalid request-target")),
            (
                "GET",
                "index.html",
                1,
                &["h"],
                Err("invalid request-target"),
            ),
            (
                "CONNECT",
                "h:443",
                1,
                &["h:443"],
                Ok(NotCopied(super::NotCopied::Connect)),
            ),
            (
                "OPTIONS",
                "*",
                1,
                &["h"],
                Ok(NotCopied(super::NotCopied::OptionsAsterisk)),
            ),
            (
                "GET",
                "*",
                1,
                &["h"],
                Err("asterisk-form target without OPTIONS"),
            ),
            ("OPTIONS", "/x", 1, &["h"], Ok(Copy)),
        ];
        for (method, target, v, hosts, want) in table {
            assert_eq!(
                judged(method, target, *v, hosts),
                *want,
                "{method} {target} {hosts:?}"
            );
        }
    }

    #[test]
    fn absolute_form_splits_scheme_and_authority() {
        assert_eq!(
            absolute_form(b"http://a:8/p?q"),
            Some((&b"http"[..], &b"a:8"[..]))
        );
        assert_eq!(
            absolute_form(b"http://a?q"),
            Some((&b"http"[..], &b"a"[..]))
        );
        assert_eq!(absolute_form(b"/http://a"), None);
        assert_eq!(absolute_form(b"a:80"), None);
        assert_eq!(absolute_form(b"1x://a/"), None);
    }

    #[test]
    fn head_facts_in_one_pass() {
        let h = |n: &str, v: &str| crate::http::Header {
            name: n.into(),
            value: v.as_bytes().to_vec(),
        };
        let headers = [
            h("HOST", "a"),
            h("Connection", "Upgrade, close"),
            h("upgrade", "websocket"),
            h("host", "b"),
            h("Host", "c"),
            h("X-Connection", "keep-alive"),
        ];
        let facts = HeadFacts::of(&headers);
        assert_eq!(
            facts,
            HeadFacts {
                hosts: 2,
                host: Some(&b"a"[..]),
                close: true,
                keep_alive: false,
                upgrade: true,
            }
        );
        assert_eq!(HeadFacts::of(&[]), HeadFacts::default());
    }

    #[test]
    fn persistence_by_version_and_tokens() {
        let tokens = |v: &[&str]| connection_tokens(v.iter().map(|s| s.as_bytes()));
        assert_eq!(tokens(&["close"]), (true, false));
        assert_eq!(tokens(&["Keep-Alive, Upgrade"]), (false, true));
        assert_eq!(tokens(&["foo", " CLOSE "]), (true, false));
        assert_eq!(tokens(&["closed"]), (false, false));
        assert!(persists(1, false, false));
        assert!(!persists(1, true, true));
        assert!(!persists(0, false, false));
        assert!(persists(0, false, true));
    }
}
