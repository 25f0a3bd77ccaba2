//! shadowtap: capture HTTP/1.1 requests from packets and shadow copies of them to a
//! test target. Data flows one way:
//! capture -> decode -> reassembly -> http -> sample -> replay.
//! The pure stages (decode, reassembly, http, sample) do no I/O and read no clock.

pub mod admin;
pub mod capture;
pub mod config;
pub mod decode;
pub mod dedup;
pub mod demo;
pub mod diff;
pub mod h2;
pub mod http;
pub mod inspect;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod own_traffic;
pub mod pipeline;
pub mod privilege;
pub mod progress;
pub mod reassembly;
pub mod replay;
pub mod replay_files;
pub mod request;
pub mod sample;
pub mod signals;
pub mod stream_framer;

use std::process::ExitCode;

use config::{Command, ConfigCommand};
use logging::{count, line_to_stderr};
use metrics::{Outcome, ReplayErrorKind};
use replay::TargetConfig;
use replay_files::{CaptureSource, ReplayFilesError, ReplayPlan, ReplayReport};

/// Exit code when copies were sent and no target answered any (refused, down, unknown
/// name): nothing was delivered. The reason is printed once per target.
pub const EXIT_NOT_DELIVERED: u8 = 3;
/// Exit code when no HTTP request was found: a capture held none, or `run --duration`
/// saw none on its ports.
pub const EXIT_NO_REQUEST: u8 = 4;

/// Runs one subcommand. Errors are the kind a person fixes (bad file, bad flag): the
/// binary prints them on one line and exits with code 2.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Inspect(args) => {
            let config = args.limits.pipeline_config(&args.port);
            let stdout = std::io::stdout();
            // Not locked: the lock cannot move to the thread that writes.
            let mut out = std::io::BufWriter::new(stdout);
            let opts = inspect::InspectOptions {
                format: args.format,
                all_outcomes: true,
                headers: args.headers,
                body: args.body,
                utc: args.utc,
            };
            let summary = inspect::inspect_with(&args.files, &opts, &config, &mut out)?;
            if logging::json() {
                eprintln!("{}", serde_json::json!({ "summary": summary }));
            } else {
                eprintln!("{summary}");
            }
            Ok(damaged_files(&summary.damaged))
        }
        Command::Replay(args) => {
            let args = *args;
            let mut pipeline = args.limits.pipeline_config(&args.port);
            let mut targets = args.shadow.target_configs()?;
            let diff = args.diff.attach(&args.shadow.redact_header, &mut targets)?;
            if diff.is_some() {
                pipeline.responses = args.diff.response_limits();
            }
            let plan = ReplayPlan {
                sources: args.files.into_iter().map(CaptureSource::File).collect(),
                pipeline,
                targets,
                speed: args.speed,
                loops: args.loops,
                drain_timeout: args.drain_timeout,
                progress: true,
                credentials_in_clear: args.shadow.credentials_in_clear(),
                dry_run: args.shadow.dry_run,
            };
            let report = match replay_files::replay(&plan) {
                Ok(report) => report,
                Err(e @ ReplayFilesError::Resolve { .. }) => return Ok(unresolved(&e)),
                Err(e) => return Err(e.into()),
            };
            report.print();
            if let (Some(engine), Some(path)) = (&diff, &args.diff.diff_samples) {
                write_diff_samples(engine, path)?;
            }
            Ok(exit_code(&report, &plan.targets, true))
        }
        Command::Report(args) => {
            let report = diff::report::report_from_files(&args.files)?;
            print!("{}", report.terminal_table());
            if let Some(out) = &args.html {
                std::fs::write(out, report.render_html())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let samples = args.diff.diff_samples.clone();
            let plan = run_plan(*args)?;
            let report = match live::run(&plan) {
                Ok(report) => report,
                Err(live::LiveError::Setup(e @ ReplayFilesError::Resolve { .. })) => {
                    return Ok(unresolved(&e))
                }
                Err(e) => return Err(e.into()),
            };
            report.print();
            if let (Some(engine), Some(path)) = (&report.diff, &samples) {
                write_diff_samples(engine, path)?;
            }
            let bounded = plan.duration.is_some() && signals::received().is_none();
            let code = exit_code(&report, &plan.targets, bounded);
            // Stopped by a signal, `run` is a service told to stop, and that is a success;
            // the lines above still name a target that answered nothing. Ended by
            // `--duration`, its code says whether anything was delivered.
            Ok(if signals::received().is_some() {
                ExitCode::SUCCESS
            } else {
                code
            })
        }
        Command::Demo => demo::run_demo(),
        Command::Config(ConfigCommand::Check(check)) => {
            println!("{}", check.run()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", config::reference_markdown());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--diff-samples FILE`: the comparison's samples and per-route summaries.
fn write_diff_samples(
    engine: &diff::engine::DiffEngine,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)
        .map_err(|e| anyhow::anyhow!("--diff-samples {}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    engine
        .with_report(|r| r.write_jsonl(&mut out))
        .and_then(|()| std::io::Write::flush(&mut out))
        .map_err(|e| anyhow::anyhow!("--diff-samples {}: {e}", path.display()))
}

/// Exit code 1 when a capture was damaged part-way (its requests up to the damage were
/// reported, with the summary), after one line per damaged file naming it and the byte
/// offset; distinct from 2, a file or option that stopped the run before it started.
fn damaged_files(damaged: &[String]) -> ExitCode {
    for damage in damaged {
        line_to_stderr(
            "ERROR",
            &format!("{damage}; read stopped there, the requests before it are reported"),
        );
    }
    if damaged.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The exit code of a `replay` or `run` that got to its summary, after a line for each
/// thing that went wrong. In order of precedence: 130/143 stopped by SIGINT/SIGTERM
/// (`run` turns that into 0),
/// 1 a capture damaged part-way, 3 copies were sent and none was answered (by any
/// target), 4 no request found (when `expect_requests`), 0 otherwise.
fn exit_code(report: &ReplayReport, targets: &[TargetConfig], expect_requests: bool) -> ExitCode {
    let damaged = !report.damaged.is_empty();
    damaged_files(&report.damaged);
    // A target that answered nothing is named (once, with the reason) even when another
    // got its copies; the exit code says 3 only when no copy reached any target.
    let mut delivered = false;
    let mut failed_targets = false;
    for (index, (name, counters)) in report.accounting.iter().enumerate() {
        let answered: u64 = Outcome::ALL
            .iter()
            .filter(|o| matches!(o, Outcome::Replayed(_) | Outcome::Grpc(_)))
            .map(|&o| counters.get(o))
            .sum();
        let failed: Vec<(ReplayErrorKind, u64)> = [
            ReplayErrorKind::Connect,
            ReplayErrorKind::Timeout,
            ReplayErrorKind::Reset,
            ReplayErrorKind::Tls,
            ReplayErrorKind::Protocol,
        ]
        .into_iter()
        .map(|k| (k, counters.get(Outcome::ReplayError(k))))
        .collect();
        let failures: u64 = failed.iter().map(|(_, n)| n).sum();
        delivered |= answered > 0 || counters.get(Outcome::DryRun) > 0;
        if answered > 0 || failures == 0 {
            continue;
        }
        failed_targets = true;
        let kind = failed
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or(ReplayErrorKind::Connect, |(k, _)| *k);
        let why = targets
            .get(index)
            .map_or_else(String::new, |t| diagnose(t, kind));
        line_to_stderr(
            "ERROR",
            &format!(
                "target {name}: no copy delivered ({} failed): {why}",
                count(failures, "copy", "copies")
            ),
        );
    }
    let undelivered = failed_targets && !delivered;
    let none_seen = expect_requests && report.accounting.requests_seen() == 0;
    if none_seen {
        line_to_stderr(
            "ERROR",
            "no HTTP request found: wrong --port, traffic over TLS (not readable), or a \
             capture of something else?",
        );
    }
    if let Some(sig) = signals::received() {
        ExitCode::from(signals::exit_code(sig))
    } else if damaged {
        ExitCode::from(1)
    } else if undelivered {
        ExitCode::from(EXIT_NOT_DELIVERED)
    } else if none_seen {
        ExitCode::from(EXIT_NO_REQUEST)
    } else {
        ExitCode::SUCCESS
    }
}

/// A target name that does not resolve at the start: like a bad option, a one-line
/// error a person fixes before anything ran (exit 2), in the usual words with a hint.
/// (A name that stops resolving while copies go out ends in exit 3.)
fn unresolved(e: &ReplayFilesError) -> ExitCode {
    line_to_stderr(
        "ERROR",
        &format!("{e}: no such host; is the name right, and does this host's DNS know it?"),
    );
    ExitCode::from(2)
}

/// An OS error as words in a sentence: `connection refused (os error 111)`.
fn os_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

/// Why copies to `t` failed, in the operating system's words where it has them: one
/// connection is tried now (copies only count a kind of error, not its cause), with a
/// hint at the usual mistakes.
fn diagnose(t: &TargetConfig, kind: ReplayErrorKind) -> String {
    use std::net::TcpStream;
    let addr = format!("{}:{}", t.url.host, t.url.port);
    // Bounded like a connect: a resolver that hangs must not hold the exit up long.
    let lookup = t.connect_timeout.max(std::time::Duration::from_secs(1));
    let first =
        match replay::resolve::Resolver::system().resolve_blocking(&t.url.host, t.url.port, lookup)
        {
            Ok(addrs) => addrs.first().copied(),
            Err(replay::resolve::ResolveError::Timeout) => {
                return format!(
                    "looking up {:?} did not answer within {lookup:?}: is the DNS server \
                 reachable?",
                    t.url.host
                )
            }
            Err(e) => {
                return format!(
                    "cannot resolve {:?}: no such host ({e}); is the name right, and does this \
                 host's DNS know it?",
                    t.url.host
                )
            }
        };
    let Some(first) = first else {
        return format!("{:?}: no such host (no address)", t.url.host);
    };
    let wait = lookup;
    match TcpStream::connect_timeout(&first, wait) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "{addr}: {}; nothing listens there: wrong port, or the server is not running?",
            os_words(&e)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => format!(
            "{addr}: connection timed out after {wait:?}; a firewall dropping packets, or a \
             wrong address?"
        ),
        Err(e) => format!(
            "{addr}: {}; wrong address, no route, or a firewall?",
            os_words(&e)
        ),
        Ok(_) => match kind {
            ReplayErrorKind::Connect => format!(
                "{addr}: connecting failed while copying (it works now): the target was down \
                 or overloaded?"
            ),
            ReplayErrorKind::Timeout => format!(
                "{addr}: accepts connections but did not answer in time (--request-timeout): \
                 overloaded, or not an HTTP server?"
            ),
            ReplayErrorKind::Reset => format!(
                "{addr}: closed or reset connections before answering: wrong port, or an \
                 https server given as http://?"
            ),
            ReplayErrorKind::Tls => format!(
                "{addr}: TLS handshake failed: --target-ca or --insecure, or an http server \
                 given as https://?"
            ),
            ReplayErrorKind::Protocol => {
                format!(
                    "{addr}: the answers are not HTTP/1.x, or not HTTP/2 for HTTP/2 copies \
                     (prior knowledge on http://, ALPN h2 on https://): wrong port?"
                )
            }
        },
    }
}

/// Everything `run` needs, built and checked, before anything is opened.
fn run_plan(args: config::RunArgs) -> anyhow::Result<live::RunPlan> {
    let mut pipeline = args.limits.pipeline_config(&args.port);
    let mut targets = args.shadow.target_configs()?;
    if args
        .diff
        .attach(&args.shadow.redact_header, &mut targets)?
        .is_some()
    {
        pipeline.responses = args.diff.response_limits();
    }
    Ok(live::RunPlan {
        engine: args.engine,
        ifaces: args.iface,
        pipeline,
        targets,
        credentials_in_clear: args.shadow.credentials_in_clear(),
        ports: config::port_list(&args.port),
        record: args.record,
        drain_timeout: args.drain_timeout,
        ring_bytes: args.ring_bytes,
        own_mark: args.own_mark,
        pcap: capture::pcap_live::PcapOptions {
            buffer_bytes: args.pcap_buffer,
            ..Default::default()
        },
        duration: args.duration,
        admin_addr: args.admin_addr,
        dry_run: args.shadow.dry_run,
    })
}

/// Warns (once per start) when credentials would travel in clear text to an `http://`
/// target. `run` and `replay` call it once everything is checked and set up, just before
/// capture or replay starts, so a command that fails prints its one-line error alone.
pub(crate) fn warn_credentials_in_clear(headers: &[&str]) {
    if !headers.is_empty() {
        tracing::warn!(
            headers = %headers.join(", "),
            "these headers are forwarded unredacted to an http:// target; add \
             --redact-header (or redact-header in the config file) for each"
        );
    }
}
