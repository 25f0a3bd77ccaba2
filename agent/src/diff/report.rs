//! The comparison report: per-route counts by outcome, latency histograms of both sides,
//! the fields that differ most (with one example each) and a reservoir of redacted
//! differing pairs; written as JSON lines, a terminal table and one self-contained HTML
//! page, and read back from JSON lines files.
//!
//! API:
//! * `DiffReport::new(ReportConfig)`;
//! * `record(route, &Comparison, prod_latency, shadow_latency, Option<PairSample>)`;
//! * `write_jsonl(&self, w)`: `{"kind":"pair",...}` sample records, then one
//!   `{"kind":"route",...}` summary per route: the file alone makes a report;
//! * `terminal_table(&self) -> String`, `render_html(&self) -> String`;
//! * `report_from_files(&[PathBuf]) -> Result<DiffReport, ReportError>` (merges files);
//! * metric hooks: `routes()` -> (route, `RouteStats`) with `count(outcome)`,
//!   `prod_latency`, `shadow_latency` (`LatencyHistogram`: bounds, counts, sum).
//!
//! Samples are redacted when recorded: `authorization`, `cookie`, `set-cookie`,
//! `proxy-authorization` and configured header names, and configured JSON paths. A body
//! that is not JSON is kept as text up to `SAMPLE_TEXT` bytes (redaction by path cannot
//! reach into it).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::compare::{Comparison, JsonPath};
use super::{DiffOutcome, ResponseSummary};

/// Header names always redacted in samples.
pub const REDACTED_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];
pub const REDACTED: &str = "[redacted]";
/// Non-JSON sample bodies are cut to this many bytes.
pub const SAMPLE_TEXT: usize = 1024;
/// Distinct differing fields counted per route; further new ones are not tracked.
pub const MAX_TRACKED_FIELDS: usize = 256;
/// Histogram bucket upper bounds in milliseconds (log-spaced); one more bucket above.
pub const LATENCY_BOUNDS_MS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
];

#[derive(Clone, Debug)]
pub struct ReportConfig {
    /// Samples kept per (route, outcome).
    pub samples_per_outcome: usize,
    /// Fields listed per route in the outputs.
    pub top_fields: usize,
    /// Header names redacted besides `REDACTED_HEADERS`.
    pub redact_headers: Vec<String>,
    /// JSON paths redacted in sample bodies.
    pub redact_paths: Vec<JsonPath>,
    /// Seed of the reservoir sampling: the same pairs give the same samples.
    pub seed: u64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            samples_per_outcome: 5,
            top_fields: 10,
            redact_headers: Vec::new(),
            redact_paths: Vec::new(),
            seed: 0x5eed,
        }
    }
}

/// One pair as a sample: the request and both responses (redacted when recorded).
#[derive(Clone, Debug)]
pub struct PairSample {
    pub method: String,
    pub target: String,
    pub prod: ResponseSummary,
    pub shadow: ResponseSummary,
}

/// Latencies in fixed log buckets (`LATENCY_BOUNDS_MS`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyHistogram {
    /// `LATENCY_BOUNDS_MS.len() + 1` counts; the last is above the highest bound.
    pub counts: Vec<u64>,
    pub sum_ms: f64,
}

impl LatencyHistogram {
    pub fn observe(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        self.ensure();
        let i = LATENCY_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.counts[i] += 1;
        self.sum_ms += ms;
    }
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
    fn ensure(&mut self) {
        self.counts.resize(LATENCY_BOUNDS_MS.len() + 1, 0);
    }
    fn merge(&mut self, other: &Self) {
        self.ensure();
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_ms += other.sum_ms;
    }
    fn to_json(&self) -> Value {
        let mut counts = self.counts.clone();
        counts.resize(LATENCY_BOUNDS_MS.len() + 1, 0);
        json!({"le": LATENCY_BOUNDS_MS, "counts": counts, "sum": self.sum_ms, "count": self.count()})
    }
    fn from_json(v: &Value) -> Option<Self> {
        let counts: Vec<u64> = v
            .get("counts")?
            .as_array()?
            .iter()
            .map(Value::as_u64)
            .collect::<Option<_>>()?;
        let le = v.get("le")?.as_array()?;
        let same = le.len() == LATENCY_BOUNDS_MS.len()
            && le
                .iter()
                .zip(LATENCY_BOUNDS_MS)
                .all(|(a, b)| a.as_f64() == Some(b));
        (same && counts.len() == LATENCY_BOUNDS_MS.len() + 1).then(|| Self {
            counts,
            sum_ms: v.get("sum").and_then(Value::as_f64).unwrap_or(0.0),
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldStat {
    pub count: u64,
    /// `prod → shadow` values of the first pair seen with a sample (may be empty).
    pub example: String,
}

/// Up to k items out of all offered, uniformly (algorithm R).
#[derive(Clone, Debug, Default)]
struct Reservoir {
    seen: u64,
    items: Vec<Value>,
}

/// Everything known of one route.
#[derive(Clone, Debug, Default)]
pub struct RouteStats {
    counts: [u64; DiffOutcome::ALL.len()],
    pub prod_latency: LatencyHistogram,
    pub shadow_latency: LatencyHistogram,
    fields: HashMap<String, FieldStat>,
    samples: BTreeMap<DiffOutcome, Reservoir>,
}

impl RouteStats {
    pub fn count(&self, outcome: DiffOutcome) -> u64 {
        self.counts[outcome_index(outcome)]
    }
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// The `n` fields that differ most (count descending, then name).
    pub fn top_fields(&self, n: usize) -> Vec<(&str, &FieldStat)> {
        let mut v: Vec<(&str, &FieldStat)> =
            self.fields.iter().map(|(k, s)| (k.as_str(), s)).collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
    fn add_field(&mut self, path: &str, n: u64, example: impl FnOnce() -> String) {
        if let Some(s) = self.fields.get_mut(path) {
            s.count += n;
            if s.example.is_empty() {
                s.example = example();
            }
        } else if self.fields.len() < MAX_TRACKED_FIELDS {
            let example = example();
            self.fields
                .insert(path.to_string(), FieldStat { count: n, example });
        }
    }
}

fn outcome_index(o: DiffOutcome) -> usize {
    DiffOutcome::ALL.iter().position(|&x| x == o).unwrap_or(0)
}

fn outcome_from_label(s: &str) -> Option<DiffOutcome> {
    DiffOutcome::ALL.into_iter().find(|o| o.label() == s)
}

/// Why a report file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read the diff report {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}:{line}: not a diff report line ({problem}); diff files are written by `--diff-out`"
    )]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// The report being built (see the module's first lines).
#[derive(Clone, Debug)]
pub struct DiffReport {
    config: ReportConfig,
    routes: BTreeMap<String, RouteStats>,
    rng: u64,
}

impl DiffReport {
    pub fn new(config: ReportConfig) -> Self {
        let rng = config.seed;
        Self {
            config,
            routes: BTreeMap::new(),
            rng,
        }
    }

    /// Routes in name order, for the metrics (`shadowtap_diff_total{route,outcome}`).
    pub fn routes(&self) -> impl Iterator<Item = (&str, &RouteStats)> {
        self.routes.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Counts one compared pair. Latencies are `None` when that side has none
    /// (production missing, shadow failed).
    pub fn record(
        &mut self,
        route: &str,
        cmp: &Comparison,
        prod_latency: Option<Duration>,
        shadow_latency: Option<Duration>,
        sample: Option<PairSample>,
    ) {
        let stats = self.routes.entry(route.to_string()).or_default();
        stats.counts[outcome_index(cmp.outcome)] += 1;
        if let Some(d) = prod_latency {
            stats.prod_latency.observe(d);
        }
        if let Some(d) = shadow_latency {
            stats.shadow_latency.observe(d);
        }
        let sample = sample.map(|s| redact(s, &self.config));
        for f in &cmp.fields {
            stats.add_field(f, 1, || {
                sample.as_ref().map(|s| example(f, s)).unwrap_or_default()
            });
        }
        if cmp.outcome == DiffOutcome::Match || self.config.samples_per_outcome == 0 {
            return;
        }
        let res = stats.samples.entry(cmp.outcome).or_default();
        res.seen += 1;
        let k = self.config.samples_per_outcome;
        let slot = if res.items.len() < k {
            Some(res.items.len())
        } else {
            // splitmix64: no RNG crate needed, the same seed gives the same samples.
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let j = (z % res.seen) as usize;
            (j < k).then_some(j)
        };
        if let Some(slot) = slot {
            let record = pair_record(route, cmp, prod_latency, shadow_latency, sample.as_ref());
            if slot == res.items.len() {
                res.items.push(record);
            } else {
                res.items[slot] = record;
            }
        }
    }

    /// Sample records, then one summary record per route.
    pub fn write_jsonl(&self, w: &mut impl Write) -> io::Result<()> {
        for stats in self.routes.values() {
            for res in stats.samples.values() {
                for item in &res.items {
                    serde_json::to_writer(&mut *w, item)?;
                    w.write_all(b"\n")?;
                }
            }
        }
        for (route, stats) in &self.routes {
            let counts: Map<String, Value> = DiffOutcome::ALL
                .iter()
                .map(|&o| (o.label().to_string(), json!(stats.count(o))))
                .collect();
            // All tracked fields, so that merged files still rank them right.
            let fields: Vec<Value> = stats
                .top_fields(MAX_TRACKED_FIELDS)
                .into_iter()
                .map(|(p, s)| json!({"path": p, "count": s.count, "example": s.example}))
                .collect();
            let rec = json!({
                "kind": "route",
                "route": route,
                "counts": counts,
                "prod_latency_ms": stats.prod_latency.to_json(),
                "shadow_latency_ms": stats.shadow_latency.to_json(),
                "top_fields": fields,
            });
            serde_json::to_writer(&mut *w, &rec)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Per route: counts by outcome, then the fields that differ most.
    pub fn terminal_table(&self) -> String {
        let width = self
            .routes
            .keys()
            .map(|r| r.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut s = format!("{:<width$}", "route");
        for o in DiffOutcome::ALL {
            let _ = write!(s, " {:>w$}", o.label(), w = o.label().len().max(5));
        }
        s.push('\n');
        for (route, stats) in &self.routes {
            let _ = write!(s, "{route:<width$}");
            for o in DiffOutcome::ALL {
                let _ = write!(s, " {:>w$}", stats.count(o), w = o.label().len().max(5));
            }
            s.push('\n');
            for (path, f) in stats.top_fields(self.config.top_fields) {
                let _ = write!(s, "    {path}  {}", f.count);
                if !f.example.is_empty() {
                    let _ = write!(s, "  e.g. {}", f.example);
                }
                s.push('\n');
            }
        }
        s
    }

    /// One self-contained page: inline CSS and SVG, nothing fetched, no script.
    pub fn render_html(&self) -> String {
        super::report_html::render(self)
    }

    pub(crate) fn config(&self) -> &ReportConfig {
        &self.config
    }

    /// Adds a `write_jsonl` file's lines (`path` for errors).
    pub fn merge_jsonl(
        &mut self,
        path: &std::path::Path,
        r: impl BufRead,
    ) -> Result<(), ReportError> {
        for (n, line) in r.lines().enumerate() {
            let bad = |problem: String| ReportError::Line {
                path: path.to_path_buf(),
                line: n + 1,
                problem,
            };
            let line = line.map_err(|source| ReportError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            let route = v
                .get("route")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no route".into()))?;
            let stats = self.routes.entry(route.to_string()).or_default();
            match v.get("kind").and_then(Value::as_str) {
                Some("pair") => {
                    let outcome = v
                        .get("outcome")
                        .and_then(Value::as_str)
                        .and_then(outcome_from_label)
                        .ok_or_else(|| bad("unknown outcome".into()))?;
                    let res = stats.samples.entry(outcome).or_default();
                    res.seen += 1;
                    if res.items.len() < self.config.samples_per_outcome {
                        res.items.push(v);
                    }
                }
                Some("route") => {
                    let counts = v
                        .get("counts")
                        .and_then(Value::as_object)
                        .ok_or_else(|| bad("no counts".into()))?;
                    for (label, n) in counts {
                        let o = outcome_from_label(label)
                            .ok_or_else(|| bad(format!("unknown outcome {label}")))?;
                        stats.counts[outcome_index(o)] += n
                            .as_u64()
                            .ok_or_else(|| bad("count is not a number".into()))?;
                    }
                    for (key, h) in [("prod_latency_ms", 0), ("shadow_latency_ms", 1)] {
                        let hist = v
                            .get(key)
                            .and_then(LatencyHistogram::from_json)
                            .ok_or_else(|| {
                                bad(format!("{key} is not a histogram of this version"))
                            })?;
                        let side = if h == 0 {
                            &mut stats.prod_latency
                        } else {
                            &mut stats.shadow_latency
                        };
                        side.merge(&hist);
                    }
                    for f in v
                        .get("top_fields")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let (Some(p), Some(c)) = (
                            f.get("path").and_then(Value::as_str),
                            f.get("count").and_then(Value::as_u64),
                        ) else {
                            return Err(bad("a top field without path or count".into()));
                        };
                        let ex = f
                            .get("example")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        stats.add_field(p, c, || ex);
                    }
                }
                _ => return Err(bad("kind is neither pair nor route".into())),
            }
        }
        Ok(())
    }
}

/// Reads and merges `write_jsonl` files into one report.
pub fn report_from_files(paths: &[PathBuf]) -> Result<DiffReport, ReportError> {
    let mut report = DiffReport::new(ReportConfig::default());
    for path in paths {
        let f = std::fs::File::open(path).map_err(|source| ReportError::Io {
            path: path.clone(),
            source,
        })?;
        report.merge_jsonl(path, io::BufReader::new(f))?;
    }
    Ok(report)
}

fn redact(mut s: PairSample, config: &ReportConfig) -> PairSample {
    for side in [&mut s.prod, &mut s.shadow] {
        for (name, value) in &mut side.headers {
            let secret = REDACTED_HEADERS
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
                || config
                    .redact_headers
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h));
            if secret {
                *value = REDACTED.as_bytes().to_vec();
            }
        }
        if config.redact_paths.is_empty() {
            continue;
        }
        if let Some(body) = &mut side.body {
            if let Ok(mut v) = serde_json::from_slice::<Value>(body) {
                for p in &config.redact_paths {
                    p.redact(&mut v);
                }
                *body = v.to_string().into_bytes();
            }
        }
    }
    s
}

fn pair_record(
    route: &str,
    cmp: &Comparison,
    prod_latency: Option<Duration>,
    shadow_latency: Option<Duration>,
    sample: Option<&PairSample>,
) -> Value {
    let side = |r: Option<&ResponseSummary>, lat: Option<Duration>| {
        let mut m = Map::new();
        m.insert(
            "latency_ms".into(),
            json!(lat.map(|d| d.as_secs_f64() * 1000.0)),
        );
        if let Some(r) = r {
            m.insert("status".into(), json!(r.status));
            if let Some(g) = r.grpc_status {
                m.insert("grpc_status".into(), json!(g));
            }
            let headers: Vec<Value> = r
                .headers
                .iter()
                .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
                .collect();
            m.insert("headers".into(), json!(headers));
            m.insert("body_len".into(), json!(r.body_len));
            m.insert("body_hash".into(), json!(format!("{:016x}", r.body_hash)));
            if let Some(b) = &r.body {
                m.insert("body".into(), body_value(b));
            }
        }
        Value::Object(m)
    };
    json!({
        "kind": "pair",
        "route": route,
        "outcome": cmp.outcome.label(),
        "fields": cmp.fields,
        "prod": side(sample.map(|s| &s.prod), prod_latency),
        "shadow": side(sample.map(|s| &s.shadow), shadow_latency),
        "request": sample.map(|s| json!({"method": s.method, "target": s.target})),
    })
}

fn body_value(b: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(b) {
        return v;
    }
    let cut = &b[..b.len().min(SAMPLE_TEXT)];
    Value::String(String::from_utf8_lossy(cut).into_owned())
}

/// `prod → shadow` for one differing field of a (redacted) sample.
fn example(field: &str, s: &PairSample) -> String {
    // A field judged noise is shown like any other.
    let field = field.strip_prefix("noisy:").unwrap_or(field);
    let short = |v: String| {
        if v.chars().count() > 60 {
            format!("{}…", v.chars().take(60).collect::<String>())
        } else {
            v
        }
    };
    let (p, q) = if field == "status" {
        (s.prod.status.to_string(), s.shadow.status.to_string())
    } else if field == "grpc-status" {
        (
            format!("{:?}", s.prod.grpc_status),
            format!("{:?}", s.shadow.grpc_status),
        )
    } else if let Some(name) = field.strip_prefix("header:") {
        let h = |r: &ResponseSummary| {
            let vals: Vec<String> = r
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            if vals.is_empty() {
                "(none)".to_string()
            } else {
                vals.join(", ")
            }
        };
        (h(&s.prod), h(&s.shadow))
    } else if field == "$" {
        (
            format!("{} bytes", s.prod.body_len),
            format!("{} bytes", s.shadow.body_len),
        )
    } else {
        let at = |r: &ResponseSummary| {
            r.body
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| JsonPath::parse(field).ok()?.lookup(&v).cloned())
                .map_or_else(|| "(none)".to_string(), |v| v.to_string())
        };
        (at(&s.prod), at(&s.shadow))
    };
    format!("{} → {}", short(p), short(q))
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
