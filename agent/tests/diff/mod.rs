//! Readers of the response comparison's tables, shared by the `--diff` tests
//! (diff_replay.rs, diff_live.rs).

/// The diff table at the end of a `run`/`replay` summary, without its `| ` margin.
pub fn diff_table(summary: &str) -> String {
    let after = summary
        .split("diff: production against the first target, by route\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no diff table:\n{summary}"));
    after
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The counts of one route in a terminal table (`route match status headers body ...`).
pub fn route_counts(table: &str, route: &str) -> Vec<u64> {
    let line = table
        .lines()
        .find(|l| l.starts_with(route) && l[route.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no row for {route:?} in:\n{table}"));
    line[route.len()..]
        .split_whitespace()
        .map(|n| n.parse().expect("count"))
        .collect()
}

pub const MATCH: usize = 0;
pub const STATUS: usize = 1;
pub const BODY: usize = 3;
