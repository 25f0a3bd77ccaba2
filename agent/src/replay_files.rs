//! `shadowtap replay`: requests of capture files sent to the targets, paced by their
//! capture timestamps, with every request accounted for in the end summary.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::pcap_file::{CaptureFileError, CaptureReader};
use crate::config::Speed;
use crate::decode::DecodeStats;
use crate::http::NotHttpKind;
use crate::metrics::{Accounting, Outcome};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineEvent};
use crate::replay::{CapturedRequest, Handoff, Replayer, ReplayerError, TargetConfig};

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
    /// Credential headers that reach an `http://` target unredacted; warned about once
    /// the replay is set up and about to start.
    pub credentials_in_clear: Vec<&'static str>,
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
}

/// Replays every source `loops` times, then waits up to `drain_timeout` for copies in
/// flight. Every source is opened once first, so a bad file fails before anything is sent.
/// A file damaged part-way is replayed up to the damage (its connections then end as at
/// the end of a file), the damage goes into `damaged`, and the other files still play.
pub fn replay(plan: &ReplayPlan) -> Result<ReplayReport, ReplayFilesError> {
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
    check_targets_resolve(&plan.targets)?;
    let (accounting, replayer) = start_replayer(plan.targets.clone())?;
    crate::warn_credentials_in_clear(&plan.credentials_in_clear);
    let started = Instant::now();
    let mut report = ReplayReport::new(Arc::clone(&accounting));
    let total_bytes: u64 =
        plan.sources.iter().map(CaptureSource::size).sum::<u64>() * u64::from(plan.loops);
    let mut progress = Progress::new(
        plan.progress && std::io::stderr().is_terminal(),
        total_bytes,
    );
    let handle = |ev: PipelineEvent, report: &mut ReplayReport| {
        if dispatch(ev, &accounting, &replayer, Handoff::Now { wait: true }) {
            report.not_http_streams += 1;
        }
    };
    for _ in 0..plan.loops {
        for source in &plan.sources {
            let mut reader = match source.is_stdin().then(|| stdin_reader.take()).flatten() {
                Some(reader) => reader,
                None => source.open()?,
            };
            let mut pipeline = Pipeline::new(plan.pipeline.clone());
            let mut pace = Pacer::new(plan.speed);
            let base = progress.done;
            loop {
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
                progress.set(base + reader.stats().bytes, &accounting);
            }
            for ev in pipeline.flush() {
                handle(ev, &mut report);
            }
            report.frames += pipeline.stats().frames;
            report.undecodable += pipeline.stats().decode_errors;
            report.ip.add(pipeline.decoder().stats());
        }
    }
    progress.finish();
    replayer.shutdown(plan.drain_timeout);
    report.elapsed = started.elapsed();
    Ok(report)
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
) -> bool {
    match ev {
        PipelineEvent::Request(seen) => {
            accounting.seen();
            let captured = CapturedRequest {
                conn: seen.conn,
                client: seen.client,
                server: seen.server,
                request: seen.request,
            };
            replayer.hand_off(captured, how);
            false
        }
        PipelineEvent::Dropped { reason, .. } => {
            accounting.seen();
            accounting.record_all(reason.outcome());
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
            std::thread::sleep(due - now);
        }
    }
}

/// A one-line progress display on stderr, redrawn at most every 100 ms.
struct Progress {
    enabled: bool,
    total: u64,
    done: u64,
    last_draw: Option<Instant>,
}

impl Progress {
    fn new(enabled: bool, total: u64) -> Self {
        Self {
            enabled,
            total,
            done: 0,
            last_draw: None,
        }
    }

    fn set(&mut self, done: u64, accounting: &Accounting) {
        self.done = done;
        if !self.enabled
            || self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        let pct = if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        };
        let width = 30;
        let filled = ((pct / 100.0) * width as f64) as usize;
        eprint!(
            "\r[{}{}] {:5.1}%  {} requests",
            "#".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            pct,
            accounting.requests_seen()
        );
    }

    fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            eprintln!();
        }
    }
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
        }
    }

    /// The end-of-run table: outcomes per target, and whether they add up.
    pub fn summary(&self) -> String {
        let seen = self.accounting.requests_seen();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replayed {} frames in {:.2}s: {} requests seen, {} non-HTTP streams, {} undecodable frames",
            self.frames,
            self.elapsed.as_secs_f64(),
            seen,
            self.not_http_streams,
            self.undecodable
        );
        let _ = writeln!(s, "{}", self.ip);
        for damage in &self.damaged {
            let _ = writeln!(s, "damaged, read up to the damage: {damage}");
        }
        for (name, counters) in self.accounting.iter() {
            let _ = writeln!(s, "target {name}");
            for outcome in Outcome::ALL {
                let n = counters.get(outcome);
                if n > 0 {
                    let (label, detail) = outcome.labels();
                    let label = if detail.is_empty() {
                        label.to_string()
                    } else {
                        format!("{label} {detail}")
                    };
                    let _ = writeln!(s, "  {label:<24} {n:>10}");
                }
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
        s
    }
}
