//! Telling real differences from noise (fields that differ on every call: dates, ids,
//! random order). Two models:
//!
//! * `BaselineModel` (Diffy's): each request also goes to a baseline (a second copy of
//!   the production version). Per route and field, `observe(route, candidate_fields,
//!   baseline_fields)` counts pairs where candidate≠production and baseline≠production.
//!   A field is real when, with `c` and `b` those counts over the route's pairs `n`:
//!   `c/n - b/n > absolute` **and** `c > b * (1 + relative/100)`; defaults relative 20
//!   (percent) and absolute 0.03 (a fraction of pairs: three points). Diffy states its
//!   absolute margin in percent; here it is a fraction, `Margins` makes both settable.
//! * `NoiseModel` (no baseline): learns from successive production answers to the SAME
//!   request (`RequestKey`: method, target, body hash) which fields change by themselves;
//!   such a field is noisy for that key and for its route. `observe_prod(key, route,
//!   &summary)`, then `classify(key, route, fields) -> (real, noisy)`. At most
//!   `max_keys` keys are remembered (least recently used forgotten), each as a compact
//!   fingerprint (JSON leaves only up to `MAX_LEAVES`, else the body hash).
//!
//! Field names are those of `compare::Comparison::fields`.

use std::collections::{HashMap, HashSet, VecDeque};

use super::compare::{json_leaves, DiffRules};
use super::response::Fnv64;
use super::ResponseSummary;

/// Noisy fields remembered per route.
pub const MAX_NOISY_PER_ROUTE: usize = 256;
/// JSON leaves kept per fingerprint; bigger documents are compared as a whole.
pub const MAX_LEAVES: usize = 64;
pub const DEFAULT_MAX_KEYS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Margins {
    /// Percent by which the candidate's rate must exceed the baseline's.
    pub relative: f64,
    /// Fraction of pairs by which the candidate's rate must exceed the baseline's.
    pub absolute: f64,
}

impl Default for Margins {
    fn default() -> Self {
        Self {
            relative: 20.0,
            absolute: 0.03,
        }
    }
}

#[derive(Debug, Default)]
struct RouteCounts {
    pairs: u64,
    candidate: HashMap<String, u64>,
    baseline: HashMap<String, u64>,
}

/// Diffy's model: see the module's first lines.
#[derive(Debug, Default)]
pub struct BaselineModel {
    margins: Margins,
    routes: HashMap<String, RouteCounts>,
}

impl BaselineModel {
    pub fn new(margins: Margins) -> Self {
        Self {
            margins,
            routes: HashMap::new(),
        }
    }

    /// One request answered by all three: the fields where candidate and baseline each
    /// differ from production.
    pub fn observe(&mut self, route: &str, candidate: &[String], baseline: &[String]) {
        let r = self.routes.entry(route.to_string()).or_default();
        r.pairs += 1;
        for (fields, map) in [(candidate, &mut r.candidate), (baseline, &mut r.baseline)] {
            for f in fields {
                if map.len() < MAX_NOISY_PER_ROUTE || map.contains_key(f) {
                    *map.entry(f.clone()).or_default() += 1;
                }
            }
        }
    }

    /// True when `field` differs on the candidate clearly more often than on the baseline.
    pub fn is_real(&self, route: &str, field: &str) -> bool {
        let Some(r) = self.routes.get(route) else {
            return false;
        };
        if r.pairs == 0 {
            return false;
        }
        let n = r.pairs as f64;
        let c = r.candidate.get(field).copied().unwrap_or(0) as f64;
        let b = r.baseline.get(field).copied().unwrap_or(0) as f64;
        (c - b) / n > self.margins.absolute && c > b * (1.0 + self.margins.relative / 100.0)
    }

    /// Splits a pair's fields into (real, noisy).
    pub fn classify(&self, route: &str, fields: &[String]) -> (Vec<String>, Vec<String>) {
        fields.iter().cloned().partition(|f| self.is_real(route, f))
    }
}

/// An identical request: method, target and body hash, hashed together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey(u64);

impl RequestKey {
    pub fn new(method: &str, target: &[u8], body_hash: u64) -> Self {
        let mut h = Fnv64::default();
        h.update(method.as_bytes());
        h.update(b" ");
        h.update(target);
        h.update(&body_hash.to_le_bytes());
        Self(h.finish())
    }
}

/// What is remembered of one production answer.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    status: u16,
    grpc_status: Option<u32>,
    headers: Vec<(String, u64)>,
    body: (u64, u64),
    leaves: Option<Vec<(String, u64)>>,
}

impl Fingerprint {
    fn of(r: &ResponseSummary, rules: &DiffRules) -> Self {
        let headers = rules
            .compared_headers
            .iter()
            .map(|name| {
                let mut h = Fnv64::default();
                for (n, v) in &r.headers {
                    if n.eq_ignore_ascii_case(name) {
                        h.update(v);
                        h.update(b"\n");
                    }
                }
                (name.to_ascii_lowercase(), h.finish())
            })
            .collect();
        let leaves = r
            .body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .map(|v| json_leaves(&v))
            .filter(|l| l.len() <= MAX_LEAVES);
        Self {
            status: r.status,
            grpc_status: r.grpc_status,
            headers,
            body: (r.body_len, r.body_hash),
            leaves,
        }
    }

    /// Fields that differ between two answers, named as `compare` names them.
    fn differences(&self, other: &Self, out: &mut Vec<String>) {
        if self.status != other.status {
            out.push("status".into());
        }
        if self.grpc_status != other.grpc_status {
            out.push("grpc-status".into());
        }
        for ((n, a), (_, b)) in self.headers.iter().zip(&other.headers) {
            if a != b {
                out.push(format!("header:{n}"));
            }
        }
        match (&self.leaves, &other.leaves) {
            (Some(a), Some(b)) => {
                let b: HashMap<&str, u64> = b.iter().map(|(p, h)| (p.as_str(), *h)).collect();
                let mut seen = HashSet::new();
                for (p, h) in a {
                    seen.insert(p.as_str());
                    if b.get(p.as_str()) != Some(h) {
                        out.push(p.clone());
                    }
                }
                out.extend(
                    b.keys()
                        .filter(|p| !seen.contains(*p))
                        .map(|p| p.to_string()),
                );
            }
            _ if self.body != other.body => out.push("$".into()),
            _ => {}
        }
    }
}

struct Entry {
    last: Fingerprint,
    noisy: HashSet<String>,
    stamp: u64,
}

/// Noise learned without a baseline: see the module's first lines.
pub struct NoiseModel {
    rules: DiffRules,
    max_keys: usize,
    keys: HashMap<RequestKey, Entry>,
    /// Keys in the order of use (stale stamps skipped), for eviction.
    order: VecDeque<(RequestKey, u64)>,
    stamp: u64,
    routes: HashMap<String, HashSet<String>>,
}

impl NoiseModel {
    pub fn new(rules: DiffRules, max_keys: usize) -> Self {
        Self {
            rules,
            max_keys: max_keys.max(1),
            keys: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
            routes: HashMap::new(),
        }
    }

    /// A production answer to `key` (on `route`): fields that changed since its last
    /// answer are noisy.
    pub fn observe_prod(&mut self, key: RequestKey, route: &str, r: &ResponseSummary) {
        self.stamp += 1;
        let fp = Fingerprint::of(r, &self.rules);
        let stamp = self.stamp;
        if let Some(e) = self.keys.get_mut(&key) {
            let mut changed = Vec::new();
            e.last.differences(&fp, &mut changed);
            let on_route = self.routes.entry(route.to_string()).or_default();
            for f in changed {
                if on_route.len() < MAX_NOISY_PER_ROUTE {
                    on_route.insert(f.clone());
                }
                e.noisy.insert(f);
            }
            e.last = fp;
            e.stamp = stamp;
        } else {
            while self.keys.len() >= self.max_keys {
                let Some((old, s)) = self.order.pop_front() else {
                    break;
                };
                if self.keys.get(&old).is_some_and(|e| e.stamp == s) {
                    self.keys.remove(&old);
                }
            }
            self.keys.insert(
                key,
                Entry {
                    last: fp,
                    noisy: HashSet::new(),
                    stamp,
                },
            );
        }
        self.order.push_back((key, stamp));
        if self.order.len() > 4 * self.max_keys {
            let keys = &self.keys;
            self.order
                .retain(|(k, s)| keys.get(k).is_some_and(|e| e.stamp == *s));
        }
    }

    /// Splits a pair's fields into (real, noisy): noisy when seen changing between two
    /// production answers to this request or to another request of the route.
    pub fn classify(
        &self,
        key: RequestKey,
        route: &str,
        fields: &[String],
    ) -> (Vec<String>, Vec<String>) {
        let by_key = self.keys.get(&key).map(|e| &e.noisy);
        let by_route = self.routes.get(route);
        fields.iter().cloned().partition(|f| {
            !(by_key.is_some_and(|n| n.contains(f)) || by_route.is_some_and(|n| n.contains(f)))
        })
    }

    /// Requests remembered (at most `max_keys`).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::compare::compare;
    use proptest::prelude::*;

    fn json(body: &str) -> ResponseSummary {
        ResponseSummary {
            status: 200,
            body_len: body.len() as u64,
            body_hash: Fnv64::of(body.as_bytes()),
            body: Some(body.as_bytes().to_vec()),
            ..ResponseSummary::default()
        }
    }

    #[test]
    fn margins_decide_with_a_baseline() {
        let mut m = BaselineModel::new(Margins::default());
        let f = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        for i in 0..100 {
            let cand = if i % 2 == 0 {
                f(&["$.ts", "$.price"])
            } else {
                f(&["$.ts"])
            };
            m.observe("GET /p", &cand, &f(&["$.ts"]));
        }
        assert!(!m.is_real("GET /p", "$.ts"));
        assert!(m.is_real("GET /p", "$.price"));
        assert_eq!(
            m.classify("GET /p", &f(&["$.ts", "$.price"])),
            (f(&["$.price"]), f(&["$.ts"]))
        );
        assert!(!m.is_real("GET /other", "$.price"));
    }

    #[test]
    fn identical_requests_teach_noise_and_quiet_routes_keep_real_differences() {
        let mut m = NoiseModel::new(DiffRules::default(), 8);
        let key = RequestKey::new("GET", b"/t", 0);
        m.observe_prod(key, "GET /t", &json(r#"{"now":1,"v":"a"}"#));
        m.observe_prod(key, "GET /t", &json(r#"{"now":2,"v":"a"}"#));
        let shadow = json(r#"{"now":3,"v":"b"}"#);
        let fields = compare(
            &json(r#"{"now":2,"v":"a"}"#),
            &shadow,
            &DiffRules::default(),
        )
        .fields;
        assert_eq!(
            m.classify(key, "GET /t", &fields),
            (vec!["$.v".to_string()], vec!["$.now".to_string()])
        );
        let quiet = RequestKey::new("GET", b"/q", 0);
        m.observe_prod(quiet, "GET /q", &json(r#"{"now":1}"#));
        m.observe_prod(quiet, "GET /q", &json(r#"{"now":1}"#));
        assert_eq!(
            m.classify(quiet, "GET /q", &["$.now".to_string()]).0,
            ["$.now"]
        );
    }

    #[test]
    fn keys_are_bounded() {
        let mut m = NoiseModel::new(DiffRules::default(), 3);
        for i in 0..100u64 {
            m.observe_prod(RequestKey::new("GET", b"/", i), "r", &json("{}"));
            m.observe_prod(RequestKey::new("GET", b"/", 0), "r", &json("{}"));
        }
        assert_eq!(m.len(), 3);
        assert!(m.order.len() <= 12);
        assert!(m.keys.contains_key(&RequestKey::new("GET", b"/", 0)));
    }

    proptest! {
        /// With a baseline, a field that differs on every call (on both) is never real;
        /// a field only the candidate changes always is.
        #[test]
        fn baseline_separates_noise_from_changes(
            calls in 1usize..200,
            noise in proptest::collection::vec(any::<u64>(), 200),
        ) {
            let mut m = BaselineModel::new(Margins::default());
            let mut key = NoiseModel::new(DiffRules::default(), 16);
            let k = RequestKey::new("GET", b"/x", 0);
            for n in noise.iter().take(calls) {
                let prod = json(&format!(r#"{{"id":{n},"v":1}}"#));
                let cand = json(&format!(r#"{{"id":{},"v":2}}"#, n.wrapping_add(1)));
                let base = json(&format!(r#"{{"id":{},"v":1}}"#, n.wrapping_add(2)));
                let rules = DiffRules::default();
                m.observe("GET /x", &compare(&prod, &cand, &rules).fields, &compare(&prod, &base, &rules).fields);
                key.observe_prod(k, "GET /x", &prod);
            }
            prop_assert!(!m.is_real("GET /x", "$.id"));
            prop_assert!(m.is_real("GET /x", "$.v"));
            let (real, _) = key.classify(k, "GET /x", &["$.v".to_string()]);
            prop_assert_eq!(real, vec!["$.v".to_string()]);
        }
    }
}
