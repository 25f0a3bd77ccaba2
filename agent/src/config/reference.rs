//! The option reference (markdown) generated from the clap definitions, so that the
//! README's table cannot drift from the code (a test compares them).

use clap::{Arg, ArgAction, CommandFactory};

use super::{one_line, Cli};

/// Subcommands in the table, in the order of its "Commands" column.
const SUBCOMMANDS: [&str; 3] = ["run", "replay", "inspect"];

/// Long name, first definition, and the default in each subcommand that has it.
type Row = (String, Arg, Vec<(&'static str, String)>);

/// One markdown table row per option of `run`, `replay` and `inspect` (and the global
/// ones): flag, environment variable, TOML key, default, commands and help.
pub fn reference_markdown() -> String {
    let cmd = Cli::command();
    let mut rows: Vec<Row> = Vec::new();
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long() {
            rows.push((
                long.to_string(),
                arg.clone(),
                vec![("all", default_of(arg))],
            ));
        }
    }
    for sub in SUBCOMMANDS {
        let Some(sc) = cmd.find_subcommand(sub) else {
            continue;
        };
        for arg in sc.get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else { continue };
            match rows.iter_mut().find(|(l, _, _)| l == long) {
                Some((_, _, defaults)) => defaults.push((sub, default_of(arg))),
                None => rows.push((long.to_string(), arg.clone(), vec![(sub, default_of(arg))])),
            }
        }
    }
    let mut out = String::from(
        "| Flag | Environment | TOML key | Default | Commands | Description |\n\
         |---|---|---|---|---|---|\n",
    );
    for (long, arg, defaults) in &rows {
        let flag = match arg.get_action() {
            ArgAction::SetTrue => format!("`--{long}`"),
            _ => {
                let name = arg
                    .get_value_names()
                    .and_then(|n| n.first())
                    .map_or_else(|| long.to_uppercase(), ToString::to_string);
                format!("`--{long} {name}`")
            }
        }
        .replace('|', "\\|");
        let env = arg
            .get_env()
            .map_or_else(String::new, |e| format!("`{}`", e.to_string_lossy()));
        let key = if long == "config" {
            "—".to_string()
        } else {
            format!("`{long}`")
        };
        let commands = defaults
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .join(", ");
        let first = &defaults[0].1;
        let default = if defaults.iter().all(|(_, d)| d == first) {
            first.clone()
        } else {
            defaults
                .iter()
                .map(|(s, d)| format!("{s}: {}", if d.is_empty() { "none" } else { d }))
                .collect::<Vec<_>>()
                .join("; ")
        };
        out.push_str(&format!(
            "| {flag} | {env} | {key} | {default} | {commands} | {} |\n",
            description(arg)
        ));
    }
    out
}

fn default_of(arg: &Arg) -> String {
    if arg.is_required_set() {
        return "required".into();
    }
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return "`false`".into();
    }
    let values: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if values.is_empty() {
        String::new()
    } else {
        format!("`{}`", values.join(","))
    }
}

fn description(arg: &Arg) -> String {
    // The whole help: the short one that `-h` shows leaves out the details.
    // Its first paragraph is a summary without a full stop; each one ends a sentence.
    let text = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut text = text
        .split("\n\n")
        .map(one_line)
        .filter(|p| !p.is_empty())
        .map(|p| if p.ends_with('.') { p } else { p + "." })
        .collect::<Vec<_>>()
        .join(" ");
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !values.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
        text.push_str(&format!(" One of {}.", values.join(", ")));
    }
    if matches!(arg.get_action(), ArgAction::Append) {
        text.push_str(" Repeatable; in TOML an array.");
    }
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_of_run_and_replay_has_a_row() {
        let table = reference_markdown();
        let cmd = Cli::command();
        for sub in ["run", "replay"] {
            let sc = cmd.find_subcommand(sub).expect("subcommand");
            for long in sc.get_arguments().filter_map(Arg::get_long) {
                assert!(
                    table.contains(&format!("| `{long}` |")),
                    "no row for --{long}:\n{table}"
                );
            }
        }
        assert!(table.contains("| run: `5s`; replay: `10s` |"), "{table}");
    }
}
