//! `shadowtap config check`: a TOML file read as the command it is meant for would read
//! it (with the `SHADOWTAP_*` variables of the environment), every object that command
//! builds from its options built, nothing captured or connected; and the `SHADOWTAP_*`
//! variables that no option reads (typos), which every command that reads options
//! warns about at start.

use std::ffi::OsString;
use std::path::Path;

use super::file::edit_distance;
use super::{load, port_list, Command, ConfigError, LoadError};

/// The command a file is checked for (`config check --for`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFor {
    #[default]
    Run,
    Replay,
    Inspect,
}

impl CheckFor {
    fn name(self) -> &'static str {
        match self {
            CheckFor::Run => "run",
            CheckFor::Replay => "replay",
            CheckFor::Inspect => "inspect",
        }
    }
}

/// Why a file is not usable for the command.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{file}: {source}")]
    Build { file: String, source: ConfigError },
}

/// The one line `config check` prints for a usable file.
pub fn check(file: &Path, command: CheckFor) -> Result<String, CheckError> {
    let shown = file.display().to_string();
    let mut argv: Vec<OsString> = vec![
        "shadowtap".into(),
        "--config".into(),
        file.as_os_str().to_owned(),
        command.name().into(),
    ];
    if command != CheckFor::Run {
        // The capture files are arguments, never options of a file: any name stands in.
        argv.push("capture.pcap".into());
    }
    let build = |source| CheckError::Build {
        file: shown.clone(),
        source,
    };
    let ports = |list: &[u16]| {
        if list.is_empty() {
            "any".to_string()
        } else {
            list.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let targets = |n: usize| format!("{n} target{}", if n == 1 { "" } else { "s" });
    let line = match load(argv)?.command {
        Command::Run(args) => {
            let built = args.shadow.target_configs().map_err(build)?;
            args.limits.pipeline_config(&args.port);
            crate::warn_credentials_in_clear(&args.shadow.credentials_in_clear());
            Ok(format!(
                "{shown}: ok ({}, ports {}, interfaces {}, engine {}, admin {})",
                targets(built.len()),
                ports(&port_list(&args.port)),
                args.iface.join(","),
                clap::ValueEnum::to_possible_value(&args.engine)
                    .map_or_else(String::new, |v| v.get_name().to_string()),
                args.admin_addr
                    .map_or_else(|| "off".to_string(), |a| a.to_string()),
            ))
        }
        Command::Replay(args) => {
            let built = args.shadow.target_configs().map_err(build)?;
            args.limits.pipeline_config(&args.port);
            crate::warn_credentials_in_clear(&args.shadow.credentials_in_clear());
            let speed = match args.speed {
                super::Speed::Max => "max".to_string(),
                super::Speed::Factor(f) => format!("{f}x"),
            };
            Ok(format!(
                "{shown}: ok for replay ({}, ports {}, speed {speed}, loop {})",
                targets(built.len()),
                ports(&port_list(&args.port)),
                args.loops,
            ))
        }
        Command::Inspect(args) => {
            args.limits.pipeline_config(&args.port);
            let format = clap::ValueEnum::to_possible_value(&args.format)
                .map_or_else(String::new, |v| v.get_name().to_string());
            Ok(format!(
                "{shown}: ok for inspect (ports {}, format {format})",
                ports(&port_list(&args.port)),
            ))
        }
        Command::Demo | Command::Config(_) | Command::Report(_) => unreachable_command(command),
    }?;
    let unused = keys_not_for(file, command);
    if unused.is_empty() {
        Ok(line)
    } else {
        Ok(format!(
            "{line}; not used by {}: {}",
            command.name(),
            unused.join(", ")
        ))
    }
}

/// The file's keys that are options of other commands only: checked, not applied (one
/// file may serve `run` and `replay`), and worth naming when checking for one command.
fn keys_not_for(file: &Path, command: CheckFor) -> Vec<String> {
    let Ok(table) = std::fs::read_to_string(file).map(|t| t.parse::<toml::Table>()) else {
        return Vec::new();
    };
    let Ok(table) = table else {
        return Vec::new();
    };
    let cmd = <super::Cli as clap::CommandFactory>::command();
    let longs = |c: &clap::Command| -> Vec<String> {
        c.get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect()
    };
    let mut used = longs(&cmd);
    if let Some(sub) = cmd.find_subcommand(command.name()) {
        used.extend(longs(sub));
    }
    table
        .keys()
        .filter(|k| !used.contains(k))
        .cloned()
        .collect()
}

/// `load` of `[.., "run"]` gives `Command::Run`; anything else is a bug worth a clear
/// message rather than a panic.
fn unreachable_command(command: CheckFor) -> Result<String, CheckError> {
    Err(CheckError::Load(LoadError::Flag(format!(
        "internal error: the options were not read as `{}` options",
        command.name()
    ))))
}

/// `SHADOWTAP_*` variables read outside the options: the eBPF attach mode, and the
/// switches of this repository's scripts and tests, which must not be reported as typos.
const OTHER_VARIABLES: [&str; 5] = [
    "SHADOWTAP_EBPF_ATTACH",
    "SHADOWTAP_BIN",
    "SHADOWTAP_BLESS",
    "SHADOWTAP_TEST_EPERM_CHILD",
    "SHADOWTAP_EBPF_TEST_NETNS",
];

/// Every variable shadowtap reads: one per option (of every command) and the others.
fn known_variables() -> Vec<String> {
    let cmd = <super::Cli as clap::CommandFactory>::command();
    let mut names: Vec<String> = OTHER_VARIABLES.iter().map(|s| s.to_string()).collect();
    let mut stack = vec![&cmd];
    while let Some(c) = stack.pop() {
        for arg in c.get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy().into_owned();
                if !names.contains(&env) {
                    names.push(env);
                }
            }
        }
        stack.extend(c.get_subcommands());
    }
    names
}

/// One warning per `SHADOWTAP_*` variable of `vars` that nothing reads, with the known
/// name closest to it when one is close: a misspelt variable is otherwise silently
/// ignored, and its option keeps its default.
pub fn unknown_variables<I>(vars: I) -> Vec<String>
where
    I: IntoIterator<Item = OsString>,
{
    let known = known_variables();
    let mut unknown: Vec<String> = vars
        .into_iter()
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| v.starts_with("SHADOWTAP_") && !known.contains(v))
        .collect();
    unknown.sort();
    unknown
        .into_iter()
        .map(|name| {
            let closest = known.iter().map(|k| (edit_distance(&name, k), k)).min();
            let suffix_len = name.len() - "SHADOWTAP_".len();
            match closest {
                Some((d, k)) if d <= (suffix_len / 3).max(2) => {
                    format!("{name} is not a shadowtap variable and is ignored; did you mean {k}?")
                }
                _ => format!(
                    "{name} is not a shadowtap variable and is ignored; `shadowtap config \
                     reference` lists them"
                ),
            }
        })
        .collect()
}

/// A variable of the environment that nothing reads and whose name is within two edits
/// of `wanted`: the reason a required option looks missing.
pub(super) fn misspelling_of(wanted: &str) -> Option<String> {
    if wanted.is_empty() {
        return None;
    }
    let known = known_variables();
    std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .filter(|name| name.starts_with("SHADOWTAP_") && !known.contains(name))
        .find(|name| edit_distance(name, wanted) <= 2)
}

/// Logs [`unknown_variables`] of the process environment, for the commands that read
/// options (`run`, `replay`, `inspect`, `config check`); once logging is set up.
pub fn warn_unknown_variables(command: &Command) {
    let reads_options = match command {
        Command::Run(_) | Command::Replay(_) | Command::Inspect(_) => true,
        Command::Config(c) => matches!(c, super::ConfigCommand::Check(_)),
        Command::Demo | Command::Report(_) => false,
    };
    if !reads_options {
        return;
    }
    let names = std::env::vars_os().map(|(name, _)| name);
    for warning in unknown_variables(names) {
        tracing::warn!("{warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(names: &[&str]) -> Vec<String> {
        unknown_variables(names.iter().map(OsString::from))
    }

    #[test]
    fn misspelt_variables_get_the_closest_name() {
        let w = warnings(&[
            "SHADOWTAP_PRECENT",
            "SHADOWTAP_TARGETS",
            "SHADOWTAP_PERCENT",
            "SHADOWTAP_EBPF_ATTACH",
            "PATH",
            "SHADOWTAP_WHATEVER_THIS_IS",
            "SHADOWTAP_MAXBODY",
        ]);
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].starts_with("SHADOWTAP_MAXBODY") && w[0].ends_with("SHADOWTAP_MAX_BODY?"));
        assert!(w[1].ends_with("did you mean SHADOWTAP_PERCENT?"), "{w:?}");
        assert!(w[2].ends_with("did you mean SHADOWTAP_TARGET?"), "{w:?}");
        assert!(w[3].contains("config reference"), "{w:?}");
        assert!(warnings(&["SHADOWTAP_CONFIG", "SHADOWTAP_FORMAT", "SHADOWTAP_SPEED"]).is_empty());
    }
}
