use std::process::ExitCode;

use shadowtap::config::{self, LoadError};

fn main() -> ExitCode {
    // Errors in the options themselves are written before the configuration is read:
    // asked for on the command line or in the environment, they are JSON already.
    if json_asked() {
        shadowtap::logging::init(config::LogFormat::Json);
    }
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
    shadowtap::logging::line_to_stderr("ERROR", &words.join(" "));
    ExitCode::from(2)
}

/// `--log-format json` (or `=json`) among the arguments, or SHADOWTAP_LOG_FORMAT=json.
fn json_asked() -> bool {
    // args_os: a file name that is not UTF-8 must not stop the run here.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.iter().any(|a| a == "--log-format=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--log-format" && w[1] == "json")
        || std::env::var("SHADOWTAP_LOG_FORMAT").is_ok_and(|v| v == "json")
}
