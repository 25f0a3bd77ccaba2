//! `shadowtap replay`: requests of capture files sent to the targets, paced by their
//! capture timestamps, with every request accounted for in the end summary.

use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::pcap_file::{CaptureFileError, CaptureReader};
use crate::config::Speed;
use crate::decode::DecodeStats;
use crate::logging::count;
use crate::metrics::{Accounting, Outcome};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineEvent};
use crate::replay::rewrite::{build_h2_request, build_shadow_request, H2CopyOptions};
use crate::replay::{Handoff, Outbox, Replayer, ReplayerError, TargetConfig};
use crate::request::{Captured, NotHttpKind, Protocol, Request};

/// A capture to replay: a file, or bytes built into the binary (the demo).
#[derive(Clone, Debug)]
pub enum CaptureSource {
    File(PathBuf),
    Embedded {
        name: &'static str,
        bytes: &'static [u8],
    },
}

impl CaptureSource {
    fn name(&self) -> String {
        match self {
            CaptureSource::File(p) => p.display().to_string(),
            CaptureSource::Embedded { name, .. } => (*name).to_string(),
        }
    }

    fn is_stdin(&self) -> bool {
        matches!(self, CaptureSource::File(p) if crate::capture::pcap_file::is_stdin(p))
    }

    fn size(&self) -> u64 {
        match self {
            CaptureSource::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            CaptureSource::Embedded { bytes, .. } => bytes.len() as u64,
        }
    }

    fn open(&self) -> Result<CaptureReader<Box<dyn Read>>, ReplayFilesError> {
        let at = |source| ReplayFilesError::Capture {
            name: self.name(),
            source,
        };
        let reader: Box<dyn Read> = match self {
            // `-` (standard input) and compressed files too.
            CaptureSource::File(p) => {
                crate::capture::pcap_file::open_input(p).map_err(|e| match e {
                    CaptureFileError::Io { source, .. } => ReplayFilesError::Open {
                        name: self.name(),
                        source,
                    },
                    other => at(other),
                })?
            }
            CaptureSource::Embedded { bytes, .. } => Box::new(*bytes),
        };
        CaptureReader::new(reader).map_err(at)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayFilesError {
    #[error("{name}: {source}")]
    Open {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}: {source}")]
    Capture {
        name: String,
        source: CaptureFileError,
    },
    #[error(
        "`-` (standard input) can be read only once: name it once, and without --loop \
         (save the capture to a file to replay it several times)"
    )]
    StdinOnce,
    #[error(transparent)]
    Replayer(#[from] ReplayerError),
    #[error("target {target}: cannot resolve {host:?}: {source}")]
    Resolve {
        target: String,
        host: String,
        source: std::io::Error,
    },
}

/// Resolves every target's host once before anything is sent, so a misspelt name is a
/// one-line error at the start rather than a run of `replay_error` outcomes. The lookup
/// is bounded like every other (a resolver that hangs is an error after a few seconds),
/// and its answer is cached for the first copies.
pub fn check_targets_resolve(targets: &[TargetConfig]) -> Result<(), ReplayFilesError> {
    let resolver = crate::replay::resolve::Resolver::system();
    for t in targets {
        let wait = t.connect_timeout.max(Duration::from_secs(5));
        if let Err(e) = resolver.resolve_blocking(&t.url.host, t.url.port, wait) {
            return Err(ReplayFilesError::Resolve {
                target: t.url.to_string(),
                host: t.url.host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, e),
            });
        }
    }
    Ok(())
}

/// How a replay runs.
#[derive(Clone, Debug)]
pub struct ReplayPlan {
    pub sources: Vec<CaptureSource>,
    pub pipeline: PipelineConfig,
    pub targets: Vec<TargetConfig>,
    pub speed: Speed,
    pub loops: u32,
    pub drain_timeout: Duration,
    /// Show a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Credential headers that reach an `http://` target unredacted; warned about once,
    /// when a request carrying one of them is first handed on to be copied.
    pub credentials_in_clear: Vec<&'static str>,
    /// `--dry-run`: print each copy as it would be sent, send nothing.
    pub dry_run: bool,
}

/// What a replay did: the accounting per target, and capture-side counts.
pub struct ReplayReport {
    pub accounting: Arc<Accounting>,
    pub not_http_streams: u64,
    pub frames: u64,
    pub undecodable: u64,
    /// What the IP layer did: fragments reassembled or lost, extension chains.
    pub ip: DecodeStats,
    /// Captures damaged part-way, `FILE: corrupt capture at byte N: why`, each once.
    pub damaged: Vec<String>,
    pub elapsed: Duration,
    /// The response comparison (`--diff`), settled once the copies are drained.
    pub diff: Option<Arc<crate::diff::engine::DiffEngine>>,
}

/// Replays every source `loops` times, then waits up to `drain_timeout` for copies in
/// flight. Every source is opened once first, so a bad file fails before anything is sent.
/// A file damaged part-way is replayed up to the damage (its connections then end as at
/// the end of a file), the damage goes into `damaged`, and the other files still play.
/// SIGINT/SIGTERM stop the reading; the copies in flight are drained as at the end (a
/// second signal ends the drain) and the report is the run's up to there.
pub fn replay(plan: &ReplayPlan) -> Result<ReplayReport, ReplayFilesError> {
    // First: a Ctrl-C during the checks below still ends in a summary (of nothing).
    crate::signals::install();
    let stdin_uses = plan.sources.iter().filter(|s| s.is_stdin()).count();
    if stdin_uses > 1 || (stdin_uses == 1 && plan.loops > 1) {
        return Err(ReplayFilesError::StdinOnce);
    }
    // Standard input can be read once: its reader, opened for the check, is the one read.
    let mut stdin_reader = None;
    for source in &plan.sources {
        let reader = source.open()?;
        if source.is_stdin() {
            stdin_reader = Some(reader);
        }
    }
    // A dry run looks nothing up and connects nowhere.
    if !plan.dry_run {
        check_targets_resolve(&plan.targets)?;
    }
    let (accounting, replayer) = start_replayer(plan.targets.clone())?;
    let credentials = CredentialWatch::new(plan.credentials_in_clear.clone());
    let dry = plan.dry_run.then(|| DryRun::new(&plan.targets));
    tracing::debug!(
        files = plan.sources.len(),
        targets = plan.targets.len(),
        loops = plan.loops,
        dry_run = plan.dry_run,
        "replay starting"
    );
    let started = Instant::now();
    let mut report = ReplayReport::new(Arc::clone(&accounting));
    let total_bytes: u64 =
        plan.sources.iter().map(CaptureSource::size).sum::<u64>() * u64::from(plan.loops);
    let mut progress = Progress::new(plan.progress, total_bytes);
    let mut outbox = Outbox::default();
    let mut handle = |ev: PipelineEvent, report: &mut ReplayReport| {
        let how = match dry {
            Some(_) => Handoff::Later(&mut outbox),
            None => Handoff::Now { wait: true },
        };
        if dispatch(ev, &accounting, &replayer, how, &credentials) {
            report.not_http_streams += 1;
        }
        if let Some(dry) = &dry {
            dry.print(&replayer, &mut outbox, &accounting);
        }
    };
    'sources: for _ in 0..plan.loops {
        for source in &plan.sources {
            if crate::signals::stop_requested() {
                break 'sources;
            }
            let mut reader = match source.is_stdin().then(|| stdin_reader.take()).flatten() {
                Some(reader) => reader,
                None => source.open()?,
            };
            let mut pipeline = Pipeline::new(plan.pipeline.clone());
            let mut pace = Pacer::new(plan.speed);
            let base = progress.done;
            loop {
                if crate::signals::stop_requested() {
                    break;
                }
                let frame = match reader.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        let damage = ReplayFilesError::Capture {
                            name: source.name(),
                            source: e,
                        }
                        .to_string();
                        if !report.damaged.contains(&damage) {
                            report.damaged.push(damage);
                        }
                        break;
                    }
                };
                pace.wait_for(frame.ts_nanos);
                if let Ok(events) = pipeline.push_frame(&frame) {
                    for ev in events {
                        handle(ev, &mut report);
                    }
                }
                if let Some(diff) = replayer.diff() {
                    pipeline.drop_answers(&diff.take_unwanted());
                }
                progress.set(base + reader.stats().bytes, &accounting);
            }
            // Requests still open when the reading stopped end as at the end of a file,
            // so that every request seen has its outcome.
            for ev in pipeline.flush() {
                handle(ev, &mut report);
            }
            report.frames += pipeline.stats().frames;
            report.undecodable += pipeline.stats().decode_errors;
            report.ip.add(pipeline.decoder().stats());
        }
    }
    progress.finish();
    tracing::debug!(
        pending = replayer.pending(),
        signalled = crate::signals::stop_requested(),
        "reading done; draining copies in flight"
    );
    let diff = replayer.diff().cloned();
    drain(replayer, plan.drain_timeout);
    if let Some(engine) = &diff {
        engine.finish();
    }
    report.diff = diff;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Waits up to `timeout` for the copies queued or in flight (a second SIGINT/SIGTERM
/// ends the wait at once), then stops the replayer: those still unsettled count as
/// `replay_error timeout`.
pub fn drain(replayer: Replayer, timeout: Duration) {
    let end = Instant::now() + timeout;
    while replayer.pending() > 0 && Instant::now() < end && !crate::signals::forced() {
        std::thread::sleep(Duration::from_millis(2));
    }
    replayer.shutdown(Duration::ZERO);
}

/// The warning about credentials sent in clear to an `http://` target, given once and
/// only when a request handed on to be copied really carries one of those headers.
pub struct CredentialWatch {
    headers: Vec<&'static str>,
    warned: AtomicBool,
}

impl CredentialWatch {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Self {
            warned: AtomicBool::new(headers.is_empty()),
            headers,
        }
    }

    fn check(&self, request: &Request) {
        if self.warned.load(Ordering::Relaxed) {
            return;
        }
        let found: Vec<&str> = self
            .headers
            .iter()
            .copied()
            .filter(|h| request.header(h).is_some())
            .collect();
        if !found.is_empty() && !self.warned.swap(true, Ordering::Relaxed) {
            crate::warn_credentials_in_clear(&found);
        }
    }
}

/// `--dry-run`: the copies that sampling, filters and rate caps keep are printed on
/// stdout as they would be sent (request line, headers as rewritten, body length) and
/// counted as `dry_run`; nothing is sent.
pub struct DryRun {
    targets: Vec<TargetConfig>,
}

impl DryRun {
    pub fn new(targets: &[TargetConfig]) -> Self {
        Self {
            targets: targets.to_vec(),
        }
    }

    /// Prints and settles the copies `outbox` holds.
    pub fn print(&self, replayer: &Replayer, outbox: &mut Outbox, accounting: &Accounting) {
        let held = replayer.take_held(outbox);
        if held.is_empty() {
            return;
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for (index, captured) in held {
            let Some(t) = self.targets.get(index) else {
                continue;
            };
            let (request_line, fields, body, trailers) = copy_text(&captured, t);
            let lines = fields.iter().map(|(n, v)| format!("{n}: {v}"));
            // stdout closed (a pipe into `head`): nothing more to show, the run goes on.
            let _ = if crate::logging::json() {
                let headers: Vec<[&str; 2]> = fields
                    .iter()
                    .map(|(n, v)| [n.as_str(), v.as_str()])
                    .collect();
                let mut line = serde_json::json!({
                    "dry_run": {
                        "target": t.url.to_string(),
                        "client": captured.client.to_string(),
                        "server": captured.server.to_string(),
                        "request_line": request_line,
                        "headers": headers,
                        "body_bytes": body,
                    }
                });
                if !trailers.is_empty() {
                    let trailers: Vec<[&str; 2]> = trailers
                        .iter()
                        .map(|(n, v)| [n.as_str(), v.as_str()])
                        .collect();
                    line["dry_run"]["trailers"] = serde_json::json!(trailers);
                }
                writeln!(out, "{line}")
            } else {
                let mut text = format!(
                    "--- copy to {} ({} -> {}), not sent (--dry-run)\n{request_line}\n",
                    t.url, captured.client, captured.server
                );
                for l in lines {
                    text.push_str(&l);
                    text.push('\n');
                }
                let _ = writeln!(text, "[body: {}]", count(body as u64, "byte", "bytes"));
                for (n, v) in &trailers {
                    let _ = writeln!(text, "[trailer] {n}: {v}");
                }
                out.write_all(text.as_bytes())
            };
            accounting
                .target(index)
                .record(captured.request.protocol, Outcome::DryRun);
        }
        let _ = out.flush();
    }
}

type Fields = Vec<(String, String)>;

/// The copy of `captured` for target `t` as `--dry-run` shows it: a request line, the
/// fields (an HTTP/2 copy's pseudo-fields first), the body's length and the trailers.
fn copy_text(captured: &Captured, t: &TargetConfig) -> (String, Fields, usize, Fields) {
    let req = &captured.request;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let pairs = |list: &[(Vec<u8>, Vec<u8>)]| -> Fields {
        list.iter().map(|(n, v)| (text(n), text(v))).collect()
    };
    if req.protocol == Protocol::H2 {
        let copy = build_h2_request(
            req,
            &H2CopyOptions {
                client: captured.client,
                server: captured.server,
                rules: &t.rules,
                suffix: &t.shadow_suffix,
                scheme: t.url.scheme.as_str(),
                timeout: t.request_timeout,
            },
        );
        let mut fields = vec![
            (":method".to_string(), copy.method.clone()),
            (":scheme".to_string(), copy.scheme.to_string()),
            (":authority".to_string(), text(&copy.authority)),
            (":path".to_string(), text(&copy.path)),
        ];
        fields.extend(pairs(&copy.headers));
        let line = format!("{} {} HTTP/2", copy.method, text(&copy.path));
        return (line, fields, req.body.len(), pairs(&copy.trailers));
    }
    let bytes = build_shadow_request(
        req,
        captured.client,
        captured.server,
        &t.rules,
        &t.shadow_suffix,
    );
    let head_len = memchr::memmem::find(&bytes, b"\r\n\r\n").map_or(bytes.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&bytes[..head_len]);
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let request_line = lines.next().unwrap_or_default().to_string();
    let fields = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            (n.to_string(), v.trim_start().to_string())
        })
        .collect();
    (request_line, fields, bytes.len() - head_len, Vec::new())
}

/// The accounting (one entry per target, in order) and the replayer that records into it.
pub fn start_replayer(
    targets: Vec<TargetConfig>,
) -> Result<(Arc<Accounting>, Replayer), ReplayerError> {
    let names = targets.iter().map(|t| t.url.to_string()).collect();
    let accounting = Arc::new(Accounting::new(names));
    let replayer = Replayer::new(targets, Arc::clone(&accounting))?;
    Ok((accounting, replayer))
}

/// Hands one pipeline event on: a request to the replayer, a drop to the accounting.
/// Returns true for a stream of another protocol (worth counting; the server's side of
/// a connection is expected and is not).
pub fn dispatch(
    ev: PipelineEvent,
    accounting: &Accounting,
    replayer: &Replayer,
    how: Handoff<'_>,
    credentials: &CredentialWatch,
) -> bool {
    match ev {
        PipelineEvent::Request(captured) => {
            accounting.seen(captured.request.protocol);
            credentials.check(&captured.request);
            let id = captured.id;
            replayer.hand_off(captured, how);
            if let Some(diff) = replayer.diff() {
                diff.seen(id);
            }
            false
        }
        PipelineEvent::Dropped {
            reason, protocol, ..
        } => {
            accounting.seen(protocol);
            accounting.record_all(protocol, reason.outcome());
            false
        }
        PipelineEvent::Response { id, summary } => {
            if let Some(diff) = replayer.diff() {
                diff.prod(id, Some(summary));
            }
            false
        }
        PipelineEvent::ResponseMissing { id } => {
            if let Some(diff) = replayer.diff() {
                diff.prod(id, None);
            }
            false
        }
        // The server's side of a connection is expected, and untrusted bytes are a
        // connection's, not another protocol's.
        PipelineEvent::NotHttp { kind, .. } => {
            !matches!(kind, NotHttpKind::Response | NotHttpKind::Untrusted)
        }
    }
}

/// Sleeps so that frames go out at their capture spacing divided by the speed.
struct Pacer {
    speed: Speed,
    first: Option<(u64, Instant)>,
}

impl Pacer {
    fn new(speed: Speed) -> Self {
        Self { speed, first: None }
    }

    fn wait_for(&mut self, ts_nanos: u64) {
        let Speed::Factor(factor) = self.speed else {
            return;
        };
        let (ts0, t0) = *self.first.get_or_insert((ts_nanos, Instant::now()));
        let offset = Duration::from_nanos(ts_nanos.saturating_sub(ts0)).div_f64(factor);
        let due = t0 + offset;
        let now = Instant::now();
        if due > now {
            // A signal must not wait for the next request of a slow capture.
            crate::signals::sleep(due - now);
        }
    }
}

/// The progress bar, with the requests seen so far as its message.
struct Progress {
    bar: crate::progress::Progress,
    done: u64,
    seen: Option<u64>,
}

impl Progress {
    fn new(wanted: bool, total: u64) -> Self {
        Self {
            bar: crate::progress::Progress::new(wanted, total),
            done: 0,
            seen: None,
        }
    }

    fn set(&mut self, done: u64, accounting: &Accounting) {
        self.done = done;
        if self.bar.is_hidden() {
            return;
        }
        self.bar.set(done);
        let seen = accounting.requests_seen();
        if self.seen != Some(seen) {
            self.seen = Some(seen);
            self.bar.message(count(seen, "request", "requests"));
        }
    }

    fn finish(&mut self) {
        self.bar.finish();
    }
}

/// Why a target's timeouts are most likely its own overload, and what helps.
fn overload_note(name: &str, counters: &crate::metrics::TargetCounters) -> String {
    let timeouts = counters.get(Outcome::ReplayError(
        crate::metrics::ReplayErrorKind::Timeout,
    ));
    format!(
        "note: {name} answered some copies and timed out on {} while shadowtap cut its \
         copies in flight {}: it looks overloaded, not down; lower --max-in-flight or set \
         --max-rps",
        count(timeouts, "copy", "copies"),
        count(counters.backoffs(), "time", "times"),
    )
}

impl ReplayReport {
    /// An empty report over `accounting`; the counts fill in as the run goes.
    pub fn new(accounting: Arc<Accounting>) -> Self {
        Self {
            accounting,
            not_http_streams: 0,
            frames: 0,
            undecodable: 0,
            ip: DecodeStats::default(),
            damaged: Vec::new(),
            elapsed: Duration::ZERO,
            diff: None,
        }
    }

    /// The end-of-run table: outcomes per target, and whether they add up.
    pub fn summary(&self) -> String {
        let seen = self.accounting.requests_seen();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} seen in {:.2}s ({}, {}, {})",
            count(seen, "request", "requests"),
            self.elapsed.as_secs_f64(),
            count(self.frames, "frame", "frames"),
            count(self.not_http_streams, "non-HTTP stream", "non-HTTP streams"),
            count(self.undecodable, "undecodable frame", "undecodable frames"),
        );
        let _ = writeln!(s, "{}", self.ip);
        let h2 = self.accounting.requests_seen_in(Protocol::H2);
        if h2 > 0 {
            let _ = writeln!(
                s,
                "by protocol: http1 {}, h2 {h2}",
                self.accounting.requests_seen_in(Protocol::Http1)
            );
        }
        for damage in &self.damaged {
            let _ = writeln!(s, "damaged, read up to the damage: {damage}");
        }
        for (name, counters) in self.accounting.iter() {
            let _ = writeln!(s, "target {name}");
            for (label, n) in outcome_rows(counters) {
                let _ = writeln!(s, "  {label:<24} {n:>10}");
            }
            let total = counters.total();
            let _ = writeln!(
                s,
                "  {:<24} {:>10}{}",
                "total",
                total,
                if total == seen {
                    "  (= requests seen)".to_string()
                } else {
                    format!("  (!= {seen} requests seen)")
                }
            );
        }
        // After the tables, unindented and not starting with `target `: readers of the
        // outcome rows pass over it.
        for (name, counters) in self.accounting.iter() {
            if counters.timeouts_look_like_overload() {
                let _ = writeln!(s, "{}", overload_note(name, counters));
            }
        }
        if let Some(engine) = &self.diff {
            // Each line starts with `| `: not indented, so readers of the outcome rows
            // above pass over them.
            let _ = writeln!(s, "diff: production against the first target, by route");
            for line in engine.with_report(|r| r.terminal_table()).lines() {
                let _ = writeln!(s, "| {line}");
            }
        }
        s
    }

    /// The summary as one JSON object (`--log-format json`), the same figures.
    pub fn summary_json(&self) -> serde_json::Value {
        let seen = self.accounting.requests_seen();
        let targets: Vec<serde_json::Value> = self
            .accounting
            .iter()
            .map(|(name, counters)| {
                let outcomes: serde_json::Map<String, serde_json::Value> = outcome_rows(counters)
                    .into_iter()
                    .map(|(label, n)| (label, n.into()))
                    .collect();
                serde_json::json!({
                    "target": name,
                    "outcomes": outcomes,
                    "total": counters.total(),
                    "adds_up": counters.total() == seen,
                    "timeouts_look_like_overload": counters.timeouts_look_like_overload(),
                })
            })
            .collect();
        serde_json::json!({
            "summary": {
                "requests_seen": seen,
                "requests_seen_by_protocol": {
                    "http1": self.accounting.requests_seen_in(Protocol::Http1),
                    "h2": self.accounting.requests_seen_in(Protocol::H2),
                },
                "elapsed_secs": self.elapsed.as_secs_f64(),
                "frames": self.frames,
                "not_http_streams": self.not_http_streams,
                "undecodable_frames": self.undecodable,
                "ip": self.ip.to_string(),
                "damaged": self.damaged,
                "targets": targets,
                "diff": self.diff.as_ref().map(|engine| engine.with_report(|r| {
                    r.routes()
                        .map(|(route, stats)| {
                            let counts: serde_json::Map<String, serde_json::Value> =
                                crate::diff::DiffOutcome::ALL
                                    .iter()
                                    .map(|o| (o.label().to_string(), stats.count(*o).into()))
                                    .collect();
                            serde_json::json!({ "route": route, "outcomes": counts })
                        })
                        .collect::<Vec<_>>()
                })),
            }
        })
    }

    /// Prints the summary on stdout, as text or (`--log-format json`) one JSON line.
    /// A closed stdout (piped into `head`) loses the summary, not the exit code.
    pub fn print(&self) {
        let text = if crate::logging::json() {
            format!("{}\n", self.summary_json())
        } else {
            self.summary()
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}

/// A target's outcomes that happened, in summary order: `replayed 2xx`, `not_sampled`.
fn outcome_rows(counters: &crate::metrics::TargetCounters) -> Vec<(String, u64)> {
    Outcome::ALL
        .iter()
        .filter_map(|&outcome| {
            let n = counters.get(outcome);
            (n > 0).then(|| {
                let (label, detail) = outcome.labels();
                if detail.is_empty() {
                    (label.to_string(), n)
                } else {
                    (format!("{label} {detail}"), n)
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod overload_tests {
    use super::*;
    use crate::metrics::{Accounting, Outcome, ReplayErrorKind, StatusClass};
    use crate::request::Protocol;

    /// Timeouts beside answers and a cut window read as overload; timeouts alone (a
    /// target that is down) or answers alone do not.
    #[test]
    fn the_summary_says_when_timeouts_look_like_overload() {
        let accounting = Arc::new(Accounting::new(vec![
            "http://busy:80".into(),
            "http://down:80".into(),
        ]));
        let (busy, down) = (accounting.target(0), accounting.target(1));
        for _ in 0..3 {
            accounting.seen(Protocol::Http1);
            busy.record_response(StatusClass::Success, 1_000);
            busy.record(Protocol::Http1, Outcome::Replayed(StatusClass::Success));
            down.record(
                Protocol::Http1,
                Outcome::ReplayError(ReplayErrorKind::Timeout),
            );
        }
        accounting.seen(Protocol::Http1);
        busy.record(
            Protocol::Http1,
            Outcome::ReplayError(ReplayErrorKind::Timeout),
        );
        down.record(
            Protocol::Http1,
            Outcome::ReplayError(ReplayErrorKind::Timeout),
        );
        down.record_backoff();
        let report = ReplayReport::new(Arc::clone(&accounting));
        assert!(
            !report.summary().contains("looks overloaded"),
            "{}",
            report.summary()
        );
        busy.record_backoff();
        let summary = report.summary();
        let notes: Vec<&str> = summary.lines().filter(|l| l.starts_with("note:")).collect();
        assert_eq!(
            notes,
            [
                "note: http://busy:80 answered some copies and timed out on 1 copy while \
              shadowtap cut its copies in flight 1 time: it looks overloaded, not down; \
              lower --max-in-flight or set --max-rps"
            ],
            "{summary}"
        );
        let json = report.summary_json();
        assert_eq!(
            json["summary"]["targets"][0]["timeouts_look_like_overload"],
            true
        );
        assert_eq!(
            json["summary"]["targets"][1]["timeouts_look_like_overload"],
            false
        );
    }
}
