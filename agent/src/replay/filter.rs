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

use regex::bytes::Regex;
use thiserror::Error;

use crate::http::HttpRequest;

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
    pub fn allows(&self, req: &HttpRequest) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(&req.method) {
            return false;
        }
        let path = path_and_query(&req.target);
        if !self.allow_paths.is_empty() && !self.allow_paths.iter().any(|r| r.is_match(path)) {
            return false;
        }
        if self.deny_paths.iter().any(|r| r.is_match(path)) {
            return false;
        }
        self.headers.iter().all(|(name, re)| {
            req.headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name) && re.is_match(&h.value))
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Header;

    fn req(method: &str, target: &[u8], headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
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
