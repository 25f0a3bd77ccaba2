//! shadowtap: capture HTTP/1.1 requests from packets and shadow copies of them to a
//! test target. Data flows one way:
//! capture -> decode -> reassembly -> http -> sample -> replay.
//! The pure stages (decode, reassembly, http, sample) do no I/O and read no clock.

pub mod capture;
pub mod config;
pub mod decode;
pub mod dedup;
pub mod demo;
pub mod http;
pub mod inspect;
pub mod live;
pub mod metrics;
pub mod own_traffic;
pub mod pipeline;
pub mod privilege;
pub mod reassembly;
pub mod replay;
pub mod replay_files;
pub mod sample;

use std::process::ExitCode;

use config::Command;
use replay_files::{CaptureSource, ReplayPlan};

/// Runs one subcommand. Errors are the kind a person fixes (bad file, bad flag): the
/// binary prints them on one line and exits with code 2.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Inspect(args) => {
            let config = args.limits.pipeline_config(&args.port);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let summary = inspect::inspect(&args.files, args.format, &config, &mut out)?;
            eprintln!("{summary}");
            Ok(ExitCode::SUCCESS)
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
            };
            let report = replay_files::replay(&plan)?;
            print!("{}", report.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let args = *args;
            let plan = live::RunPlan {
                engine: args.engine,
                ifaces: args.iface,
                pipeline: args.limits.pipeline_config(&args.port),
                ports: args.port,
                targets: args.shadow.target_configs()?,
                record: args.record,
                drain_timeout: args.drain_timeout,
                ring_bytes: args.ring_bytes,
                own_mark: args.own_mark,
                pcap: capture::pcap_live::PcapOptions {
                    buffer_bytes: args.pcap_buffer,
                    ..Default::default()
                },
                duration: args.duration,
            };
            let report = live::run(&plan)?;
            print!("{}", report.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => demo::run_demo(),
    }
}
