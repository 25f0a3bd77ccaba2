//! Comparing a production response with the shadow's: status -> chosen headers -> body
//! hash -> JSON field paths, with ignore rules (`--diff-ignore`).
//!
//! API:
//! * `DiffRules { ignore_headers, ignore_paths, compared_headers }` (`Default`: the
//!   headers in `DEFAULT_COMPARED_HEADERS`, nothing ignored);
//! * `JsonPath::parse("$..build")`: `$`, `.name`, `['name']`, `.*`, `[*]`, `[N]`, `..`;
//!   a path also covers everything below it (`$.meta` ignores `$.meta.took`);
//! * `compare(prod, shadow, &rules) -> Comparison { outcome, fields }`: fields are
//!   `"status"`, `"header:NAME"`, JSON leaf paths (`$.items[3].id`) or `"$"` (bodies
//!   differ and are not both JSON within the cap), in that order;
//! * `json_leaves(&Value) -> Vec<(String, u64)>`: every leaf's path and value hash.
//!
//! Headers never compared by default, because they differ between any two answers:
//! `date`, `server`, `age`, `expires`, `last-modified`, `x-request-id` and other tracing
//! ids, and `etag` (an ETag names a representation on one server: a rebuilt or
//! different-inode copy of the same bytes gets another one; a changed body is caught by
//! the body comparison anyway). `set-cookie` is compared by cookie names only.

use std::fmt;

use serde_json::Value;

use super::response::Fnv64;
use super::{DiffOutcome, ResponseSummary};

/// Header fields compared unless configured otherwise (lower-case).
pub const DEFAULT_COMPARED_HEADERS: &[&str] = &[
    "content-type",
    "location",
    "cache-control",
    "content-encoding",
    "content-language",
    "vary",
    "www-authenticate",
    "grpc-message",
    "set-cookie",
];

/// Differing field paths reported per pair; the rest are counted in `truncated`.
pub const MAX_FIELDS: usize = 64;

/// What is compared and what is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffRules {
    /// Header names (any case) never compared, even when in `compared_headers`.
    pub ignore_headers: Vec<String>,
    /// JSON paths whose differences are ignored (with everything below them).
    pub ignore_paths: Vec<JsonPath>,
    /// Header names (any case) compared.
    pub compared_headers: Vec<String>,
}

impl Default for DiffRules {
    fn default() -> Self {
        Self {
            ignore_headers: Vec::new(),
            ignore_paths: Vec::new(),
            compared_headers: DEFAULT_COMPARED_HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect(),
        }
    }
}

/// The result of comparing one pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    pub outcome: DiffOutcome,
    /// What differs, in the order status, headers, body (see the module's first lines).
    pub fields: Vec<String>,
    /// Differing JSON paths beyond `MAX_FIELDS`, not listed.
    pub truncated: usize,
}

impl Default for Comparison {
    fn default() -> Self {
        Self::only(DiffOutcome::Match)
    }
}

impl Comparison {
    /// A pair that was not compared (`ShadowError`, `ShadowTimeout`, `ProdMissing`).
    pub fn only(outcome: DiffOutcome) -> Self {
        Self {
            outcome,
            fields: Vec::new(),
            truncated: 0,
        }
    }
}

/// Compares `shadow` against `prod`. The outcome names the first stage that differs.
pub fn compare(prod: &ResponseSummary, shadow: &ResponseSummary, rules: &DiffRules) -> Comparison {
    let mut cmp = Comparison::default();
    let mut outcome = None;
    if prod.status != shadow.status {
        cmp.fields.push("status".into());
    }
    if prod.grpc_status != shadow.grpc_status {
        cmp.fields.push("grpc-status".into());
    }
    if !cmp.fields.is_empty() {
        outcome = Some(DiffOutcome::Status);
    }
    let before = cmp.fields.len();
    for name in &rules.compared_headers {
        let name = name.to_ascii_lowercase();
        if rules
            .ignore_headers
            .iter()
            .any(|i| i.eq_ignore_ascii_case(&name))
        {
            continue;
        }
        if header_values(prod, &name) != header_values(shadow, &name) {
            cmp.fields.push(format!("header:{name}"));
        }
    }
    if cmp.fields.len() > before {
        outcome.get_or_insert(DiffOutcome::Headers);
    }
    let before = cmp.fields.len();
    body_differences(prod, shadow, rules, &mut cmp);
    if cmp.fields.len() > before {
        outcome.get_or_insert(DiffOutcome::Body);
    }
    cmp.outcome = outcome.unwrap_or(DiffOutcome::Match);
    cmp
}

/// The values of one header as compared: all occurrences in order; for `set-cookie`
/// the sorted cookie names only (values carry sessions and expiry dates).
fn header_values(r: &ResponseSummary, name: &str) -> Vec<Vec<u8>> {
    let values = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim_ascii());
    if name == "set-cookie" {
        let mut names: Vec<Vec<u8>> = values
            .map(|v| {
                let pair = v.split(|&b| b == b';').next().unwrap_or_default();
                pair.split(|&b| b == b'=')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii()
                    .to_vec()
            })
            .collect();
        names.sort();
        names.dedup();
        return names;
    }
    values.map(<[u8]>::to_vec).collect()
}

fn body_differences(
    prod: &ResponseSummary,
    shadow: &ResponseSummary,
    rules: &DiffRules,
    cmp: &mut Comparison,
) {
    let same_bytes = prod.body_len == shadow.body_len && prod.body_hash == shadow.body_hash;
    match (&prod.body, &shadow.body) {
        (Some(p), Some(s)) => {
            // Decoded copies decide: gzip on one side and identity on the other is the
            // same body (the content-encoding header tells that difference).
            if p == s {
                return;
            }
            if let (Ok(pv), Ok(sv)) = (
                serde_json::from_slice::<Value>(p),
                serde_json::from_slice::<Value>(s),
            ) {
                let mut found = Vec::new();
                let mut path = Vec::new();
                json_diff(&pv, &sv, &mut path, &rules.ignore_paths, &mut found);
                cmp.truncated = found.len().saturating_sub(MAX_FIELDS);
                cmp.fields.extend(found.into_iter().take(MAX_FIELDS));
                return;
            }
            cmp.fields.push("$".into());
        }
        _ if same_bytes => {}
        _ => cmp.fields.push("$".into()),
    }
}

/// One step of a concrete path into a JSON document.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

fn render(path: &[Step]) -> String {
    let mut s = String::from("$");
    for step in path {
        match step {
            Step::Key(k) if is_plain_name(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Key(k) => {
                s.push_str("['");
                s.push_str(&k.replace('\\', "\\\\").replace('\'', "\\'"));
                s.push_str("']");
            }
            Step::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
        }
    }
    s
}

fn is_plain_name(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        && !k.starts_with(|c: char| c.is_ascii_digit())
}

/// Differing leaves (or a key / element present on one side only) under `path`.
fn json_diff(
    p: &Value,
    s: &Value,
    path: &mut Vec<Step>,
    ignore: &[JsonPath],
    out: &mut Vec<String>,
) {
    if ignore.iter().any(|i| i.covers(path)) {
        return;
    }
    match (p, s) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                path.push(Step::Key(k.clone()));
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => json_diff(x, y, path, ignore, out),
                    _ => leaf(path, ignore, out),
                }
                path.pop();
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                path.push(Step::Index(i));
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => json_diff(x, y, path, ignore, out),
                    _ => leaf(path, ignore, out),
                }
                path.pop();
            }
        }
        _ if p == s => {}
        _ => leaf(path, ignore, out),
    }
}

fn leaf(path: &[Step], ignore: &[JsonPath], out: &mut Vec<String>) {
    if !ignore.iter().any(|i| i.covers(path)) {
        out.push(render(path));
    }
}

/// Every leaf of a JSON document (scalars, empty objects and arrays) with a hash of its
/// value, in document order (object keys sorted). Leaf paths are those `compare` reports.
pub fn json_leaves(v: &Value) -> Vec<(String, u64)> {
    fn walk(v: &Value, path: &mut Vec<Step>, out: &mut Vec<(String, u64)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    path.push(Step::Key(k.clone()));
                    walk(&m[k], path, out);
                    path.pop();
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for (i, x) in a.iter().enumerate() {
                    path.push(Step::Index(i));
                    walk(x, path, out);
                    path.pop();
                }
            }
            _ => out.push((render(path), Fnv64::of(v.to_string().as_bytes()))),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// JSON paths for ignore rules.

/// One selector of a `JsonPath`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Selector {
    Name(String),
    Index(usize),
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    /// `..`: at this level or any depth below.
    descendant: bool,
    selector: Selector,
}

/// A JSONPath subset for ignore rules: `$`, `.name`, `['name']`, `.*`, `[*]`, `[N]` and
/// `..` (recursive descent). Matches a field and everything below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

/// Why a `--diff-ignore` path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a JSON path: {problem} at character {at}; \
     write paths like `$.timestamp`, `$.items[*].id`, `$['odd key']` or `$..request_id`"
)]
pub struct JsonPathError {
    pub input: String,
    /// 1-based character position.
    pub at: usize,
    pub problem: &'static str,
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for JsonPath {
    type Err = JsonPathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl JsonPath {
    pub fn parse(input: &str) -> Result<Self, JsonPathError> {
        let chars: Vec<char> = input.trim().chars().collect();
        let err = |at: usize, problem| JsonPathError {
            input: input.to_string(),
            at: at + 1,
            problem,
        };
        if chars.first() != Some(&'$') {
            return Err(err(0, "it must start with `$` (the document root)"));
        }
        let mut segments = Vec::new();
        let mut i = 1;
        while i < chars.len() {
            let descendant = chars[i] == '.' && chars.get(i + 1) == Some(&'.');
            let selector = match chars[i] {
                '.' => {
                    i += if descendant { 2 } else { 1 };
                    if chars.get(i) == Some(&'[') {
                        if !descendant {
                            return Err(err(i, "`.` followed by `[`"));
                        }
                        let (sel, next) = bracket(&chars, i).map_err(|(at, p)| err(at, p))?;
                        i = next;
                        sel
                    } else if chars.get(i) == Some(&'*') {
                        i += 1;
                        Selector::Any
                    } else {
                        let start = i;
                        while i < chars.len()
                            && !matches!(chars[i], '.' | '[' | ']' | '\'' | '"' | ' ')
                        {
                            i += 1;
                        }
                        if i == start {
                            return Err(err(start, "a name is missing after `.`"));
                        }
                        Selector::Name(chars[start..i].iter().collect())
                    }
                }
                '[' => {
                    let (sel, next) = bracket(&chars, i).map_err(|(at, p)| err(at, p))?;
                    i = next;
                    sel
                }
                _ => return Err(err(i, "expected `.`, `..` or `[`")),
            };
            segments.push(Segment {
                descendant,
                selector,
            });
        }
        Ok(Self {
            text: chars.iter().collect(),
            segments,
        })
    }

    /// True when `path` is this path or below it.
    fn covers(&self, path: &[Step]) -> bool {
        fn m(segs: &[Segment], path: &[Step]) -> bool {
            let Some((seg, rest)) = segs.split_first() else {
                return true;
            };
            let sel = |step: &Step| match (&seg.selector, step) {
                (Selector::Any, _) => true,
                (Selector::Name(n), Step::Key(k)) => n == k,
                (Selector::Index(n), Step::Index(i)) => n == i,
                _ => false,
            };
            if seg.descendant {
                (0..path.len()).any(|k| sel(&path[k]) && m(rest, &path[k + 1..]))
            } else {
                !path.is_empty() && sel(&path[0]) && m(rest, &path[1..])
            }
        }
        m(&self.segments, path)
    }

    /// Replaces every value this path covers with `"[redacted]"`.
    pub fn redact(&self, v: &mut Value) {
        fn walk(p: &JsonPath, v: &mut Value, path: &mut Vec<Step>) {
            if p.covers(path) {
                *v = Value::String("[redacted]".into());
                return;
            }
            match v {
                Value::Object(m) => {
                    for (k, x) in m.iter_mut() {
                        path.push(Step::Key(k.clone()));
                        walk(p, x, path);
                        path.pop();
                    }
                }
                Value::Array(a) => {
                    for (i, x) in a.iter_mut().enumerate() {
                        path.push(Step::Index(i));
                        walk(p, x, path);
                        path.pop();
                    }
                }
                _ => {}
            }
        }
        walk(self, v, &mut Vec::new());
    }

    /// The value at this path when it names one place (no `*`, no `..`).
    pub fn lookup<'a>(&self, mut v: &'a Value) -> Option<&'a Value> {
        for seg in &self.segments {
            v = match (seg.descendant, &seg.selector) {
                (false, Selector::Name(n)) => v.get(n.as_str())?,
                (false, Selector::Index(i)) => v.get(*i)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// True when the rendered leaf path (as in `Comparison::fields`) is covered.
    pub fn covers_rendered(&self, rendered: &str) -> bool {
        parse_concrete(rendered).is_some_and(|p| self.covers(&p))
    }
}

/// `[*]`, `[N]`, `['name']` or `["name"]` starting at `chars[i] == '['`.
fn bracket(chars: &[char], i: usize) -> Result<(Selector, usize), (usize, &'static str)> {
    let mut j = i + 1;
    match chars.get(j) {
        Some('*') => {
            if chars.get(j + 1) != Some(&']') {
                return Err((j + 1, "`[*` must be closed by `]`"));
            }
            Ok((Selector::Any, j + 2))
        }
        Some(&q @ ('\'' | '"')) => {
            j += 1;
            let mut name = String::new();
            loop {
                match chars.get(j) {
                    None => return Err((j, "the quoted name is not closed")),
                    Some('\\') if chars.get(j + 1).is_some() => {
                        name.push(chars[j + 1]);
                        j += 2;
                    }
                    Some(&c) if c == q => break,
                    Some(&c) => {
                        name.push(c);
                        j += 1;
                    }
                }
            }
            if chars.get(j + 1) != Some(&']') {
                return Err((j + 1, "a quoted name must be followed by `]`"));
            }
            Ok((Selector::Name(name), j + 2))
        }
        Some(c) if c.is_ascii_digit() => {
            let start = j;
            while chars.get(j).is_some_and(char::is_ascii_digit) {
                j += 1;
            }
            if chars.get(j) != Some(&']') {
                return Err((j, "an index must be digits closed by `]`"));
            }
            let n: String = chars[start..j].iter().collect();
            let n = n.parse().map_err(|_| (start, "the index is too large"))?;
            Ok((Selector::Index(n), j + 1))
        }
        _ => Err((j, "`[` must hold `*`, an index or a quoted name")),
    }
}

/// The steps of a path as `render` writes it.
fn parse_concrete(s: &str) -> Option<Vec<Step>> {
    let p = JsonPath::parse(s).ok()?;
    p.segments
        .into_iter()
        .map(|seg| match (seg.descendant, seg.selector) {
            (false, Selector::Name(n)) => Some(Step::Key(n)),
            (false, Selector::Index(i)) => Some(Step::Index(i)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[path = "compare_tests.rs"]
mod tests;
