//! The `--config` TOML file merged under flags and `SHADOWTAP_*` variables: flags beat
//! the environment, which beats the file, which beats the defaults.
//!
//! clap stays the only definition of options and their parsers. The command line is
//! parsed once (with required options relaxed, since they may come from the file) to
//! learn the file's path and where each value came from; every file key is then checked
//! with the value parser of the option of that long name, and the keys not given by a
//! flag or variable are appended as `--key=value` to the command line, which is parsed
//! again. Required options and combinations are checked last, naming where each value
//! came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use super::{one_line, Cli, Command as Sub};
use crate::replay::target::{duplicate_target, redact_userinfo};

/// Subcommands whose options the file sets; it is not read for the others.
const FILE_SUBCOMMANDS: [&str; 3] = ["run", "replay", "inspect"];

/// Why the options cannot be used. Each message is one line naming the file and key,
/// flag or variable, and what would be valid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Help or version was asked for (or nothing at all): clap prints it and exits.
    #[error("{0}")]
    Display(clap::Error),
    #[error("{0}")]
    Flag(String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: TOML syntax error: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: unknown key {key:?}; {hint}")]
    UnknownKey {
        path: String,
        key: String,
        hint: String,
    },
    #[error("{path}: key {key:?}: expected {expected}, found {found}")]
    WrongType {
        path: String,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{path}: key {key:?}: invalid value {value}: {reason}")]
    BadValue {
        path: String,
        key: String,
        value: String,
        reason: String,
    },
    #[error("{file}{subcommand} needs --{key}: give the flag, {env}, or `{key} = ...` in the --config file{typo}")]
    Missing {
        /// `FILE: ` when a config file was read.
        file: String,
        subcommand: String,
        key: String,
        env: String,
        /// A set variable whose name is a misspelling of `env`, named.
        typo: String,
    },
    #[error("{0}")]
    Combination(String),
}

/// Where an option's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env(String),
    /// The path of the config file.
    File(String),
    Default,
}

/// The merged options and where each one came from (by long flag name).
#[derive(Debug)]
pub struct Resolved {
    pub cli: Cli,
    pub origins: BTreeMap<String, Origin>,
}

impl Resolved {
    /// Where the option of this long name came from; `None` when it has no value.
    pub fn origin(&self, long: &str) -> Option<&Origin> {
        self.origins.get(long)
    }

    /// Names the source of a value in an error: `--max-buffer`, `SHADOWTAP_MAX_BUFFER`,
    /// `FILE: max-buffer` or `default`.
    fn describe(&self, long: &str) -> String {
        match self.origins.get(long) {
            Some(Origin::Flag) => format!("--{long}"),
            Some(Origin::Env(name)) => name.clone(),
            Some(Origin::File(path)) => format!("{path}: {long}"),
            Some(Origin::Default) | None => "default".to_string(),
        }
    }
}

/// The merged command line, environment and config file.
pub fn load<I, T>(argv: I) -> Result<Cli, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    resolve(argv).map(|r| r.cli)
}

/// Like [`load`], also telling where each value came from.
pub fn resolve<I, T>(argv: I) -> Result<Resolved, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let relaxed = relaxed_command();
    let first = relaxed
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|e| clap_error(e, &argv))?;
    let Some((sub, sub_matches)) = first.subcommand() else {
        return Err(LoadError::Flag("a subcommand is required".into()));
    };
    let config = FILE_SUBCOMMANDS
        .contains(&sub)
        .then(|| sub_matches.get_one::<PathBuf>("config").cloned())
        .flatten();
    let mut injected = Vec::new();
    let mut from_file = BTreeMap::new();
    if let Some(path) = &config {
        let shown = path.display().to_string();
        let (text, table) = read_table(path)?;
        for (key, value) in table {
            // Errors about a key point at its line, as syntax errors do.
            let at =
                key_line(&text, &key).map_or_else(|| shown.clone(), |n| format!("{shown}:{n}"));
            let (arg, applies) = find_key(&relaxed, sub, &key).ok_or_else(|| unknown(&at, &key))?;
            let tokens = tokens_for(&arg, &at, &key, &value)?;
            for token in &tokens {
                check_value(&arg, token, &at, &key)?;
            }
            if !applies {
                continue;
            }
            let id = arg.get_id().as_str();
            let given = matches!(
                sub_matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !given {
                injected.extend(tokens);
                from_file.insert(id.to_string(), shown.clone());
            }
        }
    }
    let argv = with_tokens(argv, injected);
    let matches = relaxed
        .try_get_matches_from(&argv)
        .map_err(|e| clap_error(e, &argv))?;
    let sub_matches = matches
        .subcommand_matches(sub)
        .ok_or_else(|| LoadError::Flag("a subcommand is required".into()))?;
    let origins = origins(&Cli::command(), sub, sub_matches, &from_file);
    let file = config.map_or_else(String::new, |p| format!("{}: ", p.display()));
    check_required(&file, sub, sub_matches)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| clap_error(e, &argv))?;
    // `config check` takes its file as an argument or as the --config file, which is
    // never read as options for it.
    if let Sub::Config(super::ConfigCommand::Check(check)) = &mut cli.command {
        if check.file.is_none() {
            check.file.clone_from(&cli.config);
        }
    }
    let resolved = Resolved { cli, origins };
    check_combinations(&resolved)?;
    Ok(resolved)
}

/// The command with required options made optional: they may come from the file, and
/// [`check_required`] checks them after the merge.
fn relaxed_command() -> Command {
    let relax = |a: Arg| {
        if a.get_long().is_some() {
            a.required(false)
        } else {
            a
        }
    };
    let mut cmd = super::help_command();
    for sub in FILE_SUBCOMMANDS {
        cmd = cmd.mut_subcommand(sub, |s| s.mut_args(relax));
    }
    cmd
}

/// The file's text and its table.
fn read_table(path: &Path) -> Result<(String, toml::Table), LoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: shown.clone(),
        source,
    })?;
    match text.parse::<toml::Table>() {
        Ok(table) => Ok((text, table)),
        Err(e) => Err(LoadError::Syntax {
            line: e.span().map_or(1, |s| line_of(&text, s.start)),
            message: one_line(e.message()),
            path: shown,
        }),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line where a top-level key is set (bare or quoted); keys are flat, so the
/// first line starting with it is the one.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            let rest = line
                .strip_prefix(&format!("\"{key}\""))
                .or_else(|| line.strip_prefix(&format!("'{key}'")))
                .or_else(|| line.strip_prefix(key));
            rest.is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// The option a key names, and whether it applies to `sub`. A key of another
/// subcommand's option is checked but not applied, so that one file can serve `run`
/// and `replay`.
fn find_key(cmd: &Command, sub: &str, key: &str) -> Option<(Arg, bool)> {
    if key == "config" {
        return None;
    }
    let by_long = |c: &Command| {
        c.get_arguments()
            .find(|a| a.get_long() == Some(key))
            .cloned()
    };
    if let Some(arg) = by_long(cmd) {
        return Some((arg, true));
    }
    let here = cmd.find_subcommand(sub).and_then(by_long);
    if let Some(arg) = here {
        return Some((arg, true));
    }
    FILE_SUBCOMMANDS
        .iter()
        .filter_map(|s| cmd.find_subcommand(s))
        .find_map(by_long)
        .map(|arg| (arg, false))
}

/// Every key a file may hold, in definition order.
pub(super) fn valid_keys(cmd: &Command) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let subs = FILE_SUBCOMMANDS
        .iter()
        .filter_map(|s| cmd.find_subcommand(s));
    for arg in cmd
        .get_arguments()
        .chain(subs.flat_map(Command::get_arguments))
    {
        if let Some(long) = arg.get_long() {
            if long != "config" && !keys.iter().any(|k| k == long) {
                keys.push(long.to_string());
            }
        }
    }
    keys
}

fn unknown(path: &str, key: &str) -> LoadError {
    let hint = if key == "config" {
        "a config file cannot name another".to_string()
    } else {
        let keys = valid_keys(&Cli::command());
        let closest = keys.iter().min_by_key(|k| edit_distance(key, k));
        match closest {
            Some(k) if edit_distance(key, k) <= (key.len() / 3).max(2) => {
                format!("did you mean {k:?}? (keys are the long flag names)")
            }
            _ => "keys are the long flag names; `shadowtap config reference` lists them".into(),
        }
    };
    LoadError::UnknownKey {
        path: path.to_string(),
        key: key.to_string(),
        hint,
    }
}

/// Levenshtein distance, for suggesting the key (or variable) that was meant.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// The `--key=value` arguments a file value stands for.
fn tokens_for(
    arg: &Arg,
    path: &str,
    key: &str,
    value: &toml::Value,
) -> Result<Vec<OsString>, LoadError> {
    let wrong = |expected, found: &toml::Value| LoadError::WrongType {
        path: path.to_string(),
        key: key.to_string(),
        expected,
        found: type_name(found),
    };
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    };
    let token = |text: String| OsString::from(format!("--{key}={text}"));
    match arg.get_action() {
        ArgAction::SetTrue => match value {
            toml::Value::Boolean(true) => Ok(vec![OsString::from(format!("--{key}"))]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err(wrong("true or false", value)),
        },
        ArgAction::Append => {
            let items = match value {
                toml::Value::Array(items) => items.clone(),
                one => vec![one.clone()],
            };
            items
                .iter()
                .map(|v| {
                    scalar(v)
                        .map(token)
                        .ok_or_else(|| wrong("an array of strings or numbers (or one value)", v))
                })
                .collect()
        }
        _ => scalar(value)
            .map(|t| vec![token(t)])
            .ok_or_else(|| wrong("one string or number", value)),
    }
}

/// Runs the option's own value parser on one file value.
fn check_value(arg: &Arg, token: &OsString, path: &str, key: &str) -> Result<(), LoadError> {
    let alone = arg.clone().env(None).global(false).required(false);
    let result = Command::new("shadowtap")
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(alone)
        .try_get_matches_from([token]);
    let Err(e) = result else {
        return Ok(());
    };
    let text = token.to_string_lossy();
    let value = text.split_once('=').map_or("", |(_, v)| v);
    Err(LoadError::BadValue {
        path: path.to_string(),
        key: key.to_string(),
        value: format!("{:?}", redact_userinfo(value)),
        reason: reason(&e),
    })
}

/// What was wrong with a value, from clap's error: the parser's message, or the list of
/// valid values.
fn reason(e: &clap::Error) -> String {
    if let Some(source) = std::error::Error::source(e) {
        return one_line(&source.to_string());
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("valid values: {}", valid.join(", "));
    }
    strip_usage(&e.render().to_string())
}

/// The file's arguments go before a `--` (after which everything is a file name).
fn with_tokens(mut argv: Vec<OsString>, tokens: Vec<OsString>) -> Vec<OsString> {
    let at = argv
        .iter()
        .skip(1)
        .position(|a| a == "--")
        .map_or(argv.len(), |i| i + 1);
    argv.splice(at..at, tokens);
    argv
}

fn origins(
    cmd: &Command,
    sub: &str,
    matches: &ArgMatches,
    from_file: &BTreeMap<String, String>,
) -> BTreeMap<String, Origin> {
    let args = cmd.get_arguments().chain(
        cmd.find_subcommand(sub)
            .into_iter()
            .flat_map(Command::get_arguments),
    );
    let mut out = BTreeMap::new();
    for arg in args {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        let origin = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => match from_file.get(id) {
                Some(path) => Origin::File(path.clone()),
                None => Origin::Flag,
            },
            Some(ValueSource::EnvVariable) => Origin::Env(
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            Some(_) => Origin::Default,
            None => continue,
        };
        out.insert(long.to_string(), origin);
    }
    out
}

fn check_required(file: &str, sub: &str, matches: &ArgMatches) -> Result<(), LoadError> {
    let cmd = Cli::command();
    let Some(strict) = cmd.find_subcommand(sub) else {
        return Ok(());
    };
    for arg in strict.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_required_set() && matches.value_source(arg.get_id().as_str()).is_none() {
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            let typo = super::check::misspelling_of(&env)
                .map(|set| format!(" ({set} is set: a misspelling of {env}?)"))
                .unwrap_or_default();
            return Err(LoadError::Missing {
                file: file.to_string(),
                subcommand: sub.to_string(),
                key: long.to_string(),
                env,
                typo,
            });
        }
    }
    Ok(())
}

fn check_combinations(r: &Resolved) -> Result<(), LoadError> {
    let targets = match &r.cli.command {
        Sub::Replay(a) => Some(&a.shadow.targets),
        Sub::Run(a) => Some(&a.shadow.targets),
        Sub::Inspect(_) | Sub::Demo | Sub::Config(_) | Sub::Report(_) => None,
    };
    // Precedence picks one source for the whole list, so a duplicate is always within
    // the one that was used: name it.
    if let Some((earlier, later)) = targets.and_then(|t| duplicate_target(t)) {
        return Err(LoadError::Combination(super::duplicate_target_message(
            earlier,
            later,
            &r.describe("target"),
        )));
    }
    let limits = match &r.cli.command {
        Sub::Inspect(a) => &a.limits,
        Sub::Replay(a) => &a.limits,
        Sub::Run(a) => &a.limits,
        Sub::Demo | Sub::Config(_) | Sub::Report(_) => return Ok(()),
    };
    if limits.max_stream_buffer > limits.max_buffer {
        return Err(LoadError::Combination(format!(
            "max-stream-buffer {} ({}) is larger than max-buffer {} ({}): one stream's \
             buffer must fit in the total; lower max-stream-buffer or raise max-buffer",
            limits.max_stream_buffer,
            r.describe("max-stream-buffer"),
            limits.max_buffer,
            r.describe("max-buffer"),
        )));
    }
    Ok(())
}

/// clap's message on one line without usage and hint; a bad value that came from the
/// environment names the variable, since the flag was not typed.
fn clap_error(e: clap::Error, argv: &[OsString]) -> LoadError {
    if !e.use_stderr() || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // Help from the strict command, which marks the required options.
        return match super::help_command().try_get_matches_from(argv) {
            Err(strict) if strict.kind() == e.kind() => LoadError::Display(strict),
            _ => LoadError::Display(e),
        };
    }
    let mut message = strip_usage(&e.render().to_string());
    if matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        if let Some(safe) = invalid_value_message(&e) {
            message = safe;
        }
        if let Some(env) = env_behind(&e, argv) {
            return LoadError::Flag(format!("{env}: {message}"));
        }
    }
    LoadError::Flag(message)
}

/// clap's "invalid value" message rebuilt so that the value is escaped (clap quotes it
/// as it is, so a CR or LF in it would print a second line or move the cursor) and a
/// target URL's password is left out.
fn invalid_value_message(e: &clap::Error) -> Option<String> {
    let Some(ContextValue::String(value)) = e.get(ContextKind::InvalidValue) else {
        return None;
    };
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let why = match std::error::Error::source(e) {
        Some(source) => one_line(&source.to_string()),
        None => match e.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => format!("valid values: {}", valid.join(", ")),
            _ => "not a valid value".to_string(),
        },
    };
    // The reason needs no redaction: the target's parser shows the URL redacted.
    Some(format!(
        "invalid value {:?} for '{arg}': {why}",
        redact_userinfo(value)
    ))
}

/// The variable that supplied the invalid value of `e`, if no flag did.
fn env_behind(e: &clap::Error, argv: &[OsString]) -> Option<String> {
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let typed = argv.iter().any(|a| {
        let a = a.to_string_lossy();
        a == format!("--{long}") || a.starts_with(&format!("--{long}="))
    });
    if typed {
        return None;
    }
    let cmd = Cli::command();
    let arg = cmd
        .get_arguments()
        .chain(cmd.get_subcommands().flat_map(Command::get_arguments))
        .find(|a| a.get_long() == Some(long))?;
    let env = arg.get_env()?.to_string_lossy().into_owned();
    std::env::var_os(&env).map(|_| env)
}

/// clap's rendered error without its usage and `--help` hint, on one line.
pub(super) fn strip_usage(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ").trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("percent", "percent"), 0);
        assert_eq!(edit_distance("prcent", "percent"), 1);
        assert_eq!(edit_distance("max-flow", "max-flows"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn key_lines_are_found_bare_or_quoted_but_not_as_prefixes() {
        let text = "# c\nmax-flows-x = 1\nmax-flows = 2\n \"percent\" = 3\n";
        assert_eq!(key_line(text, "max-flows"), Some(3));
        assert_eq!(key_line(text, "percent"), Some(4));
        assert_eq!(key_line(text, "port"), None);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("é\nb", 1), 1);
    }

    #[test]
    fn file_arguments_go_before_a_double_dash() {
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            with_tokens(argv(&["st", "replay", "--", "a.pcap"]), argv(&["--loop=2"])),
            argv(&["st", "replay", "--loop=2", "--", "a.pcap"])
        );
        assert_eq!(
            with_tokens(argv(&["st", "replay", "a.pcap"]), argv(&["--loop=2"])),
            argv(&["st", "replay", "a.pcap", "--loop=2"])
        );
    }
}
