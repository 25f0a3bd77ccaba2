//! Route templates: the label a pair is counted under, with a bounded number of values.
//!
//! API: `Routes::new(max_routes)` (`DEFAULT_MAX_ROUTES` = 200), then
//! `route(method, path, grpc) -> String`: HTTP gives `GET /users/{id}` (query dropped,
//! id-like segments replaced), gRPC gives the `:path` itself
//! (`/helloworld.Greeter/SayHello`); once `max_routes` distinct routes are known, new
//! ones are `other`. `template(path)` is the pure templating alone.
//!
//! A segment is an id when it is all digits, a UUID, hex of 16 characters or more, or a
//! token of 24 characters or more from the base64 / base64url alphabet holding a digit
//! (long words and slugs without digits stay: they are usually names of routes).

use std::collections::HashSet;

pub const DEFAULT_MAX_ROUTES: usize = 200;
/// The route every pair falls into once the routes are full.
pub const OTHER: &str = "other";

/// Known routes, capped.
#[derive(Debug)]
pub struct Routes {
    max: usize,
    known: HashSet<String>,
}

impl Routes {
    pub fn new(max_routes: usize) -> Self {
        Self {
            max: max_routes,
            known: HashSet::new(),
        }
    }

    pub fn route(&mut self, method: &str, path: &[u8], grpc: bool) -> String {
        let route = if grpc {
            String::from_utf8_lossy(strip_query(path)).into_owned()
        } else {
            format!("{} {}", method.to_ascii_uppercase(), template(path))
        };
        if self.known.contains(&route) {
            return route;
        }
        if self.known.len() >= self.max {
            return OTHER.to_string();
        }
        self.known.insert(route.clone());
        route
    }

    /// Routes known so far (at most `max_routes`).
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

fn strip_query(path: &[u8]) -> &[u8] {
    let end = memchr::memchr2(b'?', b'#', path).unwrap_or(path.len());
    &path[..end]
}

/// The path without its query, id-like segments as `{id}`. An absolute-form target
/// (`http://host/x`) is reduced to its path.
pub fn template(path: &[u8]) -> String {
    let mut path = strip_query(path);
    if let Some(rest) = path
        .strip_prefix(b"http://")
        .or_else(|| path.strip_prefix(b"https://"))
    {
        path = memchr::memchr(b'/', rest).map_or(b"/", |i| &rest[i..]);
    }
    let text = String::from_utf8_lossy(path);
    if text.is_empty() {
        return "/".into();
    }
    text.split('/')
        .map(|seg| if is_id(seg) { "{id}" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_id(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(b) {
        return true;
    }
    if b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    b.len() >= 24
        && b.iter().any(u8::is_ascii_digit)
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'+' | b'=' | b'%'))
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_become_placeholders() {
        for (path, want) in [
            ("/users/42", "/users/{id}"),
            ("/users/42/orders/7?x=1", "/users/{id}/orders/{id}"),
            ("/o/123e4567-e89b-12d3-a456-426614174000", "/o/{id}"),
            ("/blob/deadbeefdeadbeef01", "/blob/{id}"),
            ("/t/eyJhbGciOiJIUzI1NiJ9abcdef12", "/t/{id}"),
            (
                "/articles/how-to-write-a-good-route-name",
                "/articles/how-to-write-a-good-route-name",
            ),
            ("/v2/cafe", "/v2/cafe"),
            ("/", "/"),
            ("", "/"),
            ("http://example.com/users/9?q", "/users/{id}"),
            ("/a#frag", "/a"),
        ] {
            assert_eq!(template(path.as_bytes()), want, "{path}");
        }
    }

    #[test]
    fn routes_are_prefixed_capped_and_grpc_keeps_the_method() {
        let mut r = Routes::new(2);
        assert_eq!(r.route("get", b"/users/1", false), "GET /users/{id}");
        assert_eq!(
            r.route("POST", b"/helloworld.Greeter/SayHello", true),
            "/helloworld.Greeter/SayHello"
        );
        assert_eq!(r.route("GET", b"/other/thing", false), OTHER);
        assert_eq!(r.route("GET", b"/users/2", false), "GET /users/{id}");
        assert_eq!(r.len(), 2);
    }

    proptest! {
        /// The same path always gives the same route, whatever came before, and numeric
        /// ids never make new routes.
        #[test]
        fn templating_is_stable(
            segs in proptest::collection::vec("[a-z]{1,8}", 1..5),
            ids in proptest::collection::vec(any::<u64>(), 1..5),
            noise in proptest::collection::vec("/[a-z0-9]{1,10}", 0..20),
        ) {
            let path = |ids: &[u64]| -> String {
                segs.iter().zip(ids.iter().cycle()).map(|(s, i)| format!("/{s}/{i}")).collect()
            };
            let mut r = Routes::new(DEFAULT_MAX_ROUTES);
            let first = r.route("GET", path(&ids).as_bytes(), false);
            for n in &noise {
                r.route("GET", n.as_bytes(), false);
            }
            let other_ids: Vec<u64> = ids.iter().map(|i| i.wrapping_add(1)).collect();
            prop_assert_eq!(r.route("GET", path(&other_ids).as_bytes(), false), first.clone());
            prop_assert_eq!(template(path(&ids).as_bytes()), first.trim_start_matches("GET ").to_string());
        }
    }
}
