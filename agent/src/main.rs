use std::process::ExitCode;

use clap::Parser;
use shadowtap::config::{Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    match shadowtap::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shadowtap: {e}");
            ExitCode::from(2)
        }
    }
}
