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
pub mod http;
pub mod inspect;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod own_traffic;
pub mod pipeline;
pub mod privilege;
pub mod reassembly;
pub mod replay;
pub mod replay_files;
pub mod sample;

use std::process::ExitCode;

use config::{Command, ConfigCommand};
use replay_files::{CaptureSource, ReplayPlan};

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
            eprintln!("{summary}");
            Ok(damaged_files(&summary.damaged))
        }
        Command::Replay(args) => {
            let args = *args;
            let plan = ReplayPlan {
                sources: args.files.into_iter().map(CaptureSource::File).collect(),
                pipeline: args.limits.pipeline_config(&args.port),
                targets: args.shadow.target_configs()?,
                speed: args.speed,
                loops: args.loops,
                drain_timeout: args.drain_timeout,
                progress: true,
                credentials_in_clear: args.shadow.credentials_in_clear(),
            };
            let report = replay_files::replay(&plan)?;
            print!("{}", report.summary());
            Ok(damaged_files(&report.damaged))
        }
        Command::Run(args) => {
            let plan = run_plan(*args)?;
            let report = live::run(&plan)?;
            print!("{}", report.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => demo::run_demo(),
        Command::Config(ConfigCommand::Check { file }) => {
            println!("{}", check_config(&file)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", config::reference_markdown());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Exit code 1 when a capture was damaged part-way (its requests up to the damage were
/// reported, with the summary), after one line per damaged file naming it and the byte
/// offset; distinct from 2, a file or option that stopped the run before it started.
fn damaged_files(damaged: &[String]) -> ExitCode {
    for damage in damaged {
        eprintln!("shadowtap: {damage}; read stopped there, the requests before it are reported");
    }
    if damaged.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Everything `run` needs, built and checked, before anything is opened.
fn run_plan(args: config::RunArgs) -> anyhow::Result<live::RunPlan> {
    Ok(live::RunPlan {
        engine: args.engine,
        ifaces: args.iface,
        pipeline: args.limits.pipeline_config(&args.port),
        targets: args.shadow.target_configs()?,
        credentials_in_clear: args.shadow.credentials_in_clear(),
        ports: args.port,
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

/// `config check FILE`: the file read as `run` would read it (with the environment),
/// and the whole run configuration built from it, without capturing or connecting.
fn check_config(file: &std::path::Path) -> anyhow::Result<String> {
    let argv = [
        std::ffi::OsStr::new("shadowtap"),
        std::ffi::OsStr::new("--config"),
        file.as_os_str(),
        std::ffi::OsStr::new("run"),
    ];
    let Command::Run(args) = config::load(argv)?.command else {
        anyhow::bail!("{}: not read as `run` options", file.display());
    };
    let admin = args.admin_addr;
    let plan = run_plan(*args)?;
    warn_credentials_in_clear(&plan.credentials_in_clear);
    let ports: Vec<String> = plan.ports.iter().map(u16::to_string).collect();
    Ok(format!(
        "{}: ok ({} target{}, ports {}, interfaces {}, engine {}, admin {})",
        file.display(),
        plan.targets.len(),
        if plan.targets.len() == 1 { "" } else { "s" },
        ports.join(","),
        plan.ifaces.join(","),
        clap::ValueEnum::to_possible_value(&plan.engine)
            .map_or_else(String::new, |v| v.get_name().to_string()),
        admin.map_or_else(|| "off".to_string(), |a| a.to_string()),
    ))
}
