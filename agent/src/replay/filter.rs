//! Which requests a target wants at all (SPEC.md "Filters and rules"): allow by method,
//! allow/deny by path regex, allow by header. Pure: no I/O, no clock.
//!
//! Semantics, each list empty meaning "no constraint":
//! - `--allow-method M`: the method must be one of them (methods are case-sensitive).
//! - `--allow-path RE`: the path must match at least one; `--deny-path RE`: it must match
//!   none (deny wins over allow). Regexes search anywhere in the path (anchor with `^`/`$`)
//!   and run on bytes, so a path that is not UTF-8 is still matched.
//! - `--allow-header NAME:RE` (spaces after the colon ignored, as in a header line): every
//!   such rule must hold; a rule holds when some header of
//!   that name (case-insensitive) has a value the regex matches.
//!
//! The path is the request-target's path and query: the target itself in origin-form,
//! what follows the authority in absolute-form (`/` when nothing does), and the target as
//! sent for the authority (`CONNECT`) and asterisk (`*`) forms.
//!
//! Path regexes see the path as a server routes it, not as spelt ([`normalize_path`]):
//! percent-encoded unreserved characters decoded, `//` merged (nginx `merge_slashes`),
//! `.` and `..` segments resolved (RFC 3986 5.2.4, `..` above the root stays at the
//! root), so `/%61dmin`, `//admin` and `/x/../admin` are all `/admin` to `^/admin`. The
//! query is matched as sent. A deny rule also sees the target as sent, so a rule written
//! against a raw spelling still holds; an allow rule only sees the normalised one, so
//! `/api/../admin` is not under `^/api/`. The copy keeps the original bytes.

use std::borrow::Cow;

use regex::bytes::Regex;
use thiserror::Error;

use crate::request::Request;

#[derive(Debug, Error)]
pub enum FilterError {
    #[error("invalid regex {pattern:?} in {flag}: {source}")]
    Regex {
        flag: &'static str,
        pattern: String,
        source: regex::Error,
    },
    #[error("--allow-header {0:?} is not NAME:REGEX (a header name, a colon, then a regex)")]
    HeaderRule(String),
    #[error("--allow-method {0:?} is not an HTTP method token")]
    Method(String),
}

#[derive(Clone, Debug, Default)]
pub struct RequestFilter {
    methods: Vec<String>,
    allow_paths: Vec<Regex>,
    deny_paths: Vec<Regex>,
    headers: Vec<(String, Regex)>,
}

/// An HTTP token (RFC 9110 5.6.2), as method and header names are.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn compile(flag: &'static str, pattern: &str) -> Result<Regex, FilterError> {
    Regex::new(pattern).map_err(|source| FilterError::Regex {
        flag,
        pattern: pattern.to_string(),
        source,
    })
}

impl RequestFilter {
    /// A filter from the CLI values; `allow_headers` are `NAME:REGEX` strings.
    pub fn new(
        allow_methods: &[String],
        allow_paths: &[String],
        deny_paths: &[String],
        allow_headers: &[String],
    ) -> Result<Self, FilterError> {
        let methods = allow_methods
            .iter()
            .map(|m| {
                if is_token(m) {
                    Ok(m.clone())
                } else {
                    Err(FilterError::Method(m.clone()))
                }
            })
            .collect::<Result<_, _>>()?;
        let allow_paths = allow_paths
            .iter()
            .map(|p| compile("--allow-path", p))
            .collect::<Result<_, _>>()?;
        let deny_paths = deny_paths
            .iter()
            .map(|p| compile("--deny-path", p))
            .collect::<Result<_, _>>()?;
        let headers = allow_headers
            .iter()
            .map(|rule| {
                // A name that is not a token could never match a header the framer
                // accepted; refusing it also keeps CR and LF out of every message.
                let (name, pattern) = rule
                    .split_once(':')
                    .filter(|(n, _)| is_token(n.trim()))
                    .ok_or_else(|| FilterError::HeaderRule(rule.clone()))?;
                Ok((
                    name.trim().to_string(),
                    compile("--allow-header", pattern.trim_start())?,
                ))
            })
            .collect::<Result<_, FilterError>>()?;
        Ok(Self {
            methods,
            allow_paths,
            deny_paths,
            headers,
        })
    }

    /// True when the request passes every configured rule.
    pub fn allows(&self, req: &Request) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(&req.method) {
            return false;
        }
        if !self.paths_allow(&req.target) {
            return false;
        }
        self.headers.iter().all(|(name, re)| {
            req.headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name) && re.is_match(&h.value))
        })
    }
}

impl RequestFilter {
    fn paths_allow(&self, target: &[u8]) -> bool {
        if self.allow_paths.is_empty() && self.deny_paths.is_empty() {
            return true;
        }
        let sent = path_and_query(target);
        let path = normalize_path(sent);
        if !self.allow_paths.is_empty() && !self.allow_paths.iter().any(|r| r.is_match(&path)) {
            return false;
        }
        let respelt = matches!(path, Cow::Owned(_));
        !self
            .deny_paths
            .iter()
            .any(|r| r.is_match(&path) || (respelt && r.is_match(sent)))
    }
}

/// Path and query of a request-target (see the module comment).
pub fn path_and_query(target: &[u8]) -> &[u8] {
    let Some(scheme_end) = target.windows(3).position(|w| w == b"://") else {
        return target;
    };
    // Only absolute-form has "scheme://" before any '/'.
    if target[..scheme_end].contains(&b'/') {
        return target;
    }
    let after = &target[scheme_end + 3..];
    match after.iter().position(|&b| b == b'/' || b == b'?') {
        Some(i) => &after[i..],
        None => b"/",
    }
}

/// The path part of a path-and-query as a server routes it (see the module comment);
/// the query is kept as sent. Borrowed when nothing changes, which is the common case.
/// Only a path that starts with `/` is a path; `*` and authority-form are kept.
pub fn normalize_path(path_and_query: &[u8]) -> Cow<'_, [u8]> {
    let end = path_and_query
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(path_and_query.len());
    let (path, query) = path_and_query.split_at(end);
    if !path.starts_with(b"/") || is_normal(path) {
        return Cow::Borrowed(path_and_query);
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&[u8]> = Vec::new();
    // A path that ends in `/`, `/.` or `/..` names a directory: it keeps a final `/`.
    let mut directory = false;
    for segment in decoded.split(|&b| b == b'/').skip(1) {
        directory = true;
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            name => {
                segments.push(name);
                directory = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path_and_query.len());
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if directory || segments.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(query);
    Cow::Owned(out)
}

/// True when normalising would change nothing: no `%`, no empty segment but a last one
/// (a path ending in `/`), no dot segment.
fn is_normal(path: &[u8]) -> bool {
    if path.contains(&b'%') {
        return false;
    }
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            b"" if !last => return false,
            b"." | b".." => return false,
            _ => {}
        }
    }
    true
}

/// `%XX` of an unreserved character (RFC 3986 2.3) decoded, other `%XX` with upper-case
/// hex, and a `%` that starts no `%XX` written `%25`, so that decoding never makes a new
/// `%XX` and normalising twice changes nothing more.
fn decode_unreserved(path: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let hex = |i: usize| path.get(i).and_then(|&b| (b as char).to_digit(16));
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] != b'%' {
            out.push(path[i]);
            i += 1;
            continue;
        }
        let Some(value) = hex(i + 1).zip(hex(i + 2)).map(|(h, l)| (h << 4 | l) as u8) else {
            out.extend_from_slice(b"%25");
            i += 1;
            continue;
        };
        if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
            out.push(value);
        } else {
            let (h, l) = (HEX[usize::from(value >> 4)], HEX[usize::from(value & 15)]);
            out.extend_from_slice(&[b'%', h, l]);
        }
        i += 3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Header;

    fn req(method: &str, target: &[u8], headers: &[(&str, &str)]) -> Request {
        Request {
            ts_nanos: 0,
            method: method.into(),
            target: target.to_vec(),
            version_minor: 1,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
            body: vec![],
            chunked: false,
            trailers: vec![],
            ..Request::default()
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn path_and_query_forms() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"/a/b?c=1", b"/a/b?c=1"),
            (b"http://h:80/a?b", b"/a?b"),
            (b"https://h", b"/"),
            (b"http://h?q=1", b"?q=1"),
            (b"*", b"*"),
            (b"example.com:443", b"example.com:443"),
            (b"/redirect?to=http://x/y", b"/redirect?to=http://x/y"),
        ];
        for (target, want) in cases {
            assert_eq!(
                path_and_query(target),
                *want,
                "{:?}",
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn empty_filter_allows_everything() {
        let f = RequestFilter::new(&[], &[], &[], &[]).unwrap();
        assert!(f.allows(&req("BREW", b"\xff/x", &[])));
    }

    #[test]
    fn method_path_and_header_rules() {
        let f = RequestFilter::new(
            &s(&["GET", "POST"]),
            &s(&["^/api/", "^/v2/"]),
            &s(&["/internal", "debug=1"]),
            &s(&["X-Tenant:^(a|b)$", "content-type: json"]),
        )
        .unwrap();
        let ok = [("x-tenant", "b"), ("Content-Type", "application/json")];
        assert!(f.allows(&req("GET", b"/api/users?id=3", &ok)));
        assert!(f.allows(&req("POST", b"http://h/v2/x", &ok)));
        assert!(
            !f.allows(&req("get", b"/api/users", &ok)),
            "method is case-sensitive"
        );
        assert!(!f.allows(&req("PUT", b"/api/users", &ok)));
        assert!(!f.allows(&req("GET", b"/web/", &ok)));
        assert!(!f.allows(&req("GET", b"/api/internal/x", &ok)), "deny wins");
        assert!(
            !f.allows(&req("GET", b"/api/x?debug=1", &ok)),
            "query is matched"
        );
        assert!(
            !f.allows(&req("GET", b"/api/x", &[("X-Tenant", "b")])),
            "all header rules"
        );
        assert!(!f.allows(&req("GET", b"/api/x", &[("X-Tenant", "c"), ok[1]])));
        // Any occurrence of a repeated header may satisfy the rule.
        assert!(f.allows(&req(
            "GET",
            b"/api/x",
            &[("X-Tenant", "c"), ("X-Tenant", "a"), ok[1]]
        )));
    }

    #[test]
    fn paths_are_normalised_as_servers_route_them() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"/a/b?c=1", b"/a/b?c=1"),
            (b"/", b"/"),
            (b"//admin", b"/admin"),
            (b"/a//b///c", b"/a/b/c"),
            (b"/./admin", b"/admin"),
            (b"/x/../admin", b"/admin"),
            (b"/../../admin", b"/admin"),
            (b"/a/b/..", b"/a/"),
            (b"/a/b/.", b"/a/b/"),
            (b"/a/", b"/a/"),
            (b"/..", b"/"),
            (b"/%61dmin", b"/admin"),
            (b"/%2e%2E/admin", b"/admin"),
            (b"/x/%2e%2e/admin", b"/admin"),
            (b"/a%2fb", b"/a%2Fb"),
            (b"/a%2F..%2Fb", b"/a%2F..%2Fb"),
            (b"/%7e%5F%2d", b"/~_-"),
            (b"/%zz/%4", b"/%25zz/%254"),
            (b"/caf%c3%a9", b"/caf%C3%A9"),
            (b"/a/./b?x=/../%61", b"/a/b?x=/../%61"),
            (b"?q=1", b"?q=1"),
            (b"*", b"*"),
            (b"example.com:443", b"example.com:443"),
            (b"/\xff/../x", b"/x"),
        ];
        for (path, want) in cases {
            let got = normalize_path(path);
            assert_eq!(
                &*got,
                *want,
                "{:?} -> {:?}",
                String::from_utf8_lossy(path),
                String::from_utf8_lossy(&got)
            );
            assert_eq!(&*normalize_path(&got), &*got, "idempotent");
        }
        assert!(matches!(normalize_path(b"/a/b/c.txt?x"), Cow::Borrowed(_)));
    }

    #[test]
    fn spellings_of_a_denied_path_are_denied() {
        let deny = RequestFilter::new(&[], &[], &s(&["^/admin(/|$)"]), &[]).unwrap();
        let allow = RequestFilter::new(&[], &s(&["^/api/"]), &[], &[]).unwrap();
        for target in [
            &b"/admin"[..],
            b"//admin/x",
            b"/./admin",
            b"/x/../admin",
            b"/../admin",
            b"/%61dmin",
            b"/%41dmin/../admin/",
            b"/%2e/admin",
            b"/api/%2E%2E/admin",
            b"http://h//admin/?x",
            b"http://h/x/../admin",
        ] {
            let what = String::from_utf8_lossy(target);
            assert!(!deny.allows(&req("GET", target, &[])), "{what} dodged deny");
        }
        assert!(deny.allows(&req("GET", b"/administrator", &[])));
        assert!(deny.allows(&req("GET", b"/api/admin", &[])));
        for target in [&b"/api/../admin"[..], b"/api/%2e%2e/admin", b"/x/../api"] {
            let what = String::from_utf8_lossy(target);
            assert!(
                !allow.allows(&req("GET", target, &[])),
                "{what} passed allow"
            );
        }
        assert!(allow.allows(&req("GET", b"/x/../api/", &[])));
        assert!(allow.allows(&req("GET", b"//api//v1", &[])));
        // A deny rule written against a spelling still holds.
        let raw = RequestFilter::new(&[], &[], &s(&["%2e%2e"]), &[]).unwrap();
        assert!(!raw.allows(&req("GET", b"/a/%2e%2e/b", &[])));
    }

    proptest::proptest! {
        #[test]
        fn normalisation_is_idempotent(path in proptest::collection::vec(
            proptest::sample::select(b"/.%2eEfFaA4?x\xff".to_vec()), 0..40)
        ) {
            let mut path = path;
            path.insert(0, b'/');
            let once = normalize_path(&path).into_owned();
            proptest::prop_assert_eq!(&*normalize_path(&once), &once[..]);
        }

        /// Any mix of merged slashes, dot segments, detours and percent-encoded letters
        /// of `/admin/panel` is still denied by `^/admin/`.
        #[test]
        fn a_denied_path_cannot_be_dodged(
            pieces in proptest::collection::vec((0u8..6, proptest::bool::ANY), 1..8),
            encode in proptest::collection::vec(proptest::bool::ANY, 10),
            lower in proptest::bool::ANY,
        ) {
            let deny = RequestFilter::new(&[], &[], &s(&["^/admin/panel$"]), &[]).unwrap();
            let word = |w: &str, offset: usize| {
                let mut out = String::new();
                for (i, c) in w.chars().enumerate() {
                    if encode[(i + offset) % encode.len()] {
                        let e = format!("%{:02X}", c as u32);
                        out.push_str(&if lower { e.to_lowercase() } else { e });
                    } else {
                        out.push(c);
                    }
                }
                out
            };
            let mut path = String::new();
            for (kind, before_admin) in &pieces {
                let detour = match kind {
                    0 => "/",
                    1 => "/.",
                    2 => "/x/..",
                    3 => "/%2e",
                    4 => "/y/%2E%2e",
                    _ => "/../..",
                };
                if *before_admin {
                    path.push_str(detour);
                }
            }
            path.push('/');
            path.push_str(&word("admin", 0));
            for (kind, before_admin) in &pieces {
                if !before_admin {
                    path.push_str(["/", "/.", "/z/..", "/%2E", "//", "/."][usize::from(*kind)]);
                }
            }
            path.push('/');
            path.push_str(&word("panel", 5));
            let r = req("GET", path.as_bytes(), &[]);
            proptest::prop_assert!(!deny.allows(&r), "{} dodged the deny rule", path);
        }
    }

    #[test]
    fn non_utf8_paths_match_on_bytes() {
        let f = RequestFilter::new(&[], &s(&["^/caf"]), &[], &[]).unwrap();
        assert!(f.allows(&req("GET", b"/caf\xe9", &[])));
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let e = RequestFilter::new(&[], &s(&["("]), &[], &[]).unwrap_err();
        assert!(e.to_string().contains("--allow-path"), "{e}");
        let e = RequestFilter::new(&[], &[], &[], &s(&["NoColon"])).unwrap_err();
        assert!(matches!(e, FilterError::HeaderRule(_)));
        let e = RequestFilter::new(&[], &[], &[], &s(&[":x"])).unwrap_err();
        assert!(matches!(e, FilterError::HeaderRule(_)));
        let e = RequestFilter::new(&s(&["GE T"]), &[], &[], &[]).unwrap_err();
        assert!(matches!(e, FilterError::Method(_)));
    }
}
