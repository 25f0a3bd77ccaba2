use std::process::ExitCode;

use shadowtap::config::{self, LoadError};

fn main() -> ExitCode {
    let cli = match config::load(std::env::args_os()) {
        Ok(cli) => cli,
        Err(LoadError::Display(help)) => help.exit(),
        Err(e) => return fail(e),
    };
    shadowtap::logging::init(cli.log_format);
    config::warn_unknown_variables(&cli.command);
    match shadowtap::run(cli.command) {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

/// An error a person fixes (bad option, file or value): one line, exit code 2. Some
/// sources (a regex) explain over several lines; a person still gets one.
fn fail(e: impl std::fmt::Display) -> ExitCode {
    let text = e.to_string();
    let words: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    eprintln!("shadowtap: {}", words.join(" "));
    ExitCode::from(2)
}
