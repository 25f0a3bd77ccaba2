//! Issue 21, what people type (items 4, 6, 8, 13), checked with the real binary: a
//! target URL with a path or given twice is refused with a reason; sizes, durations and
//! ports take the forms people write; `config check` validates for the command a file is
//! for and names misspelt `SHADOWTAP_*` variables; `--help` is grouped, short on `-h`,
//! and its examples parse.

#[expect(
    dead_code,
    reason = "shared test support; this file uses a few of its parts"
)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{Behaviour, RecordingServer};

/// The bundled capture: ten small GETs to port 8000.
fn capture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/demo.pcapng")
        .to_str()
        .expect("utf8 path")
        .to_string()
}

/// `shadowtap ARGS` with only the given `SHADOWTAP_*` variables (and no RUST_LOG).
fn shadowtap(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shadowtap"));
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SHADOWTAP_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run shadowtap")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write file");
    path
}

/// Exit code 2 and one line on stderr holding every one of `needles`; nothing on stdout.
fn assert_refused(out: &Output, what: &str, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: not one line:\n{stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{what}: no {needle:?} in {stderr}"
        );
    }
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout {:?}",
        text(&out.stdout)
    );
}

// ---------------------------------------------------------------------------------------
// Item 4: a target URL with a path; a target given twice.

#[test]
fn a_target_with_a_path_is_refused_with_the_reason_and_a_bare_slash_is_not() {
    let cap = capture();
    let target = RecordingServer::start(Behaviour::Answer);
    let url = target.url();
    for with_path in [
        format!("{url}/prefix"),
        format!("{url}/prefix@50"),
        format!("{url}/?x=1"),
    ] {
        let out = shadowtap(
            &["replay", &cap, "--speed", "max", "--target", &with_path],
            &[],
        );
        assert_refused(
            &out,
            &with_path,
            &["--target", "a path", "is not supported", "byte for byte"],
        );
    }
    assert!(target.received().is_empty(), "a refused target got copies");

    // `http://host:port/` is the origin written the way many people write it.
    let out = shadowtap(
        &[
            "replay",
            &cap,
            "--speed",
            "max",
            "--target",
            &format!("{url}/"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let received = target.received();
    assert_eq!(received.len(), 10, "{}", text(&out.stdout));
    assert!(
        received.iter().all(|r| r.target.starts_with(b"/")),
        "{:?}",
        received.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
}

#[test]
fn a_target_given_twice_is_refused_in_every_form() {
    let cap = capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = RecordingServer::start(Behaviour::Answer);
    let url = target.url();
    let port = url.rsplit(':').next().expect("port").to_string();
    let same = format!("http://127.0.0.1:{port}/@10");

    let flags = shadowtap(
        &[
            "replay", &cap, "--speed", "max", "--target", &url, "--target", &same,
        ],
        &[],
    );
    assert_refused(&flags, "flags", &["--target", "same scheme, host and port"]);

    let twice = shadowtap(
        &[
            "replay", &cap, "--speed", "max", "--target", &url, "--target", &url,
        ],
        &[],
    );
    assert_refused(&twice, "same text", &["--target", "is given twice"]);

    let env_list = format!("{url},{same}");
    let env = shadowtap(
        &["replay", &cap, "--speed", "max"],
        &[("SHADOWTAP_TARGET", &env_list)],
    );
    assert_refused(
        &env,
        "env",
        &["SHADOWTAP_TARGET", "same scheme, host and port"],
    );

    let file = write(
        dir.path(),
        "twice.toml",
        &format!("target = [\"{url}\", \"{url}\"]\nport = [8000]\n"),
    );
    let file = file.to_str().expect("utf8 path");
    let toml = shadowtap(&["--config", file, "replay", &cap, "--speed", "max"], &[]);
    assert_refused(&toml, "toml", &[file, "target", "is given twice"]);
    let check = shadowtap(&["config", "check", file], &[]);
    assert_refused(&check, "config check", &[file, "is given twice"]);

    // Across sources there is no duplicate: the flag's list replaces the file's.
    let across = shadowtap(
        &[
            "--config", file, "replay", &cap, "--speed", "max", "--target", &url,
        ],
        &[],
    );
    assert_eq!(across.status.code(), Some(0), "{}", text(&across.stderr));
    assert!(target.received().len() == 10, "one copy of each request");

    // Different ports of one host are two targets.
    let other = RecordingServer::start(Behaviour::Answer);
    let out = shadowtap(
        &[
            "replay",
            &cap,
            "--speed",
            "max",
            "--target",
            &url,
            "--target",
            &other.url(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(other.received().len(), 10);
}

// ---------------------------------------------------------------------------------------
// Item 6: sizes, durations and ports as people type them.

/// The number after `label ` in the inspect summary (`requests seen: 10 (complete 10, ...`).
fn summary_count(stderr: &str, label: &str) -> u64 {
    let at = stderr
        .find(&format!("{label} "))
        .unwrap_or_else(|| panic!("no {label:?} in {stderr}"))
        + label.len()
        + 1;
    stderr[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count after {label:?} in {stderr}"))
}

#[test]
fn sizes_durations_and_ports_take_units_ranges_and_listen_addresses() {
    let cap = capture();
    // Every size and duration option of `inspect` in the forms people write; the demo
    // capture's ten requests go to port 8000.
    for ports in [":8000", "7990-8010", "80,8000", "8000-8000"] {
        let out = shadowtap(
            &[
                "inspect",
                &cap,
                "--port",
                ports,
                "--max-body",
                "8MiB",
                "--max-head",
                "64k",
                "--max-buffer",
                "1G",
                "--max-stream-buffer",
                "512KB",
                "--idle-timeout",
                "120",
                "--hole-timeout",
                "500ms",
            ],
            &[],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "--port {ports}: {stderr}");
        assert_eq!(
            summary_count(&stderr, "complete"),
            10,
            "--port {ports}: {stderr}"
        );
    }
    // A range that leaves the port out finds nothing: ranges are ranges.
    let out = shadowtap(&["inspect", &cap, "--port", "7990-7999"], &[]);
    assert_eq!(summary_count(&text(&out.stderr), "requests seen:"), 0);
    // A size with a unit is that many bytes: the demo's heads are over 40 bytes.
    let out = shadowtap(&["inspect", &cap, "--max-head", "0.04k"], &[]);
    assert_eq!(summary_count(&text(&out.stderr), "too_large"), 10);
    let out = shadowtap(&["inspect", &cap], &[("SHADOWTAP_MAX_HEAD", "40B")]);
    assert_eq!(summary_count(&text(&out.stderr), "too_large"), 10);

    // `replay`'s and `run`'s own, through a real replay and through `config check`.
    let target = RecordingServer::start(Behaviour::Answer);
    let out = shadowtap(
        &[
            "replay",
            &cap,
            "--speed",
            "max",
            "--target",
            &target.url(),
            "--port",
            ":8000",
            "--max-queue-bytes",
            "64MiB",
            "--connect-timeout",
            "2s",
            "--request-timeout",
            "1m",
            "--drain-timeout",
            "1h",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(target.received().len(), 10);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "units.toml",
        "target = \"http://127.0.0.1:1\"\nport = [\":8080\", \"8000-8002\", 443]\n\
         ring-bytes = \"8MiB\"\npcap-buffer = \"32M\"\nmax-body = 1048576\n\
         duration = \"5m\"\nidle-timeout = 90\nmax-queue-bytes = \"1.5GiB\"\n\
         redact-header = [\"authorization\", \"cookie\", \"proxy-authorization\"]\n",
    );
    let out = shadowtap(&["config", "check", file.to_str().expect("utf8")], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ports 8080,8000,8001,8002,443,"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn zero_where_it_makes_no_sense_and_overflow_are_one_line_with_exit_2() {
    let cap = capture();
    let url = format!("http://127.0.0.1:{}", support::closed_port());
    let cases: &[(&str, &str, &str)] = &[
        ("--port", "0", "port 0"),
        ("--port", ":0", "port 0"),
        ("--port", "8010-8000", "backwards"),
        ("--port", "70000", "1 to 65535"),
        ("--max-buffer", "0", "0 would drop"),
        ("--max-stream-buffer", "0B", "0 would drop"),
        ("--max-head", "0k", "0 would drop"),
        ("--max-queue-bytes", "0", "0 would drop"),
        ("--connect-timeout", "0", "more than zero"),
        ("--request-timeout", "0ms", "more than zero"),
        ("--idle-timeout", "0s", "more than zero"),
        ("--max-body", "99999999999999999999", "too large"),
        ("--max-body", "16777216TiB", "too large"),
        ("--max-buffer", "1e3", "not a size"),
        ("--idle-timeout", "1e12h", "unit"),
        ("--drain-timeout", "999999999h", "out of range"),
        ("--max-head", "1.5", "whole"),
    ];
    for (flag, value, reason) in cases {
        let out = shadowtap(&["replay", &cap, "--target", &url, flag, value], &[]);
        assert_refused(&out, &format!("{flag} {value}"), &[flag, reason]);
    }
    // `run`'s own, refused before any capture is opened.
    for (flag, value, reason) in [
        ("--duration", "0s", "more than zero"),
        ("--ring-bytes", "2GiB", "largest allowed"),
        ("--ring-bytes", "0", "no room"),
        ("--pcap-buffer", "4G", "largest allowed"),
        ("--port", "0", "port 0"),
    ] {
        let out = shadowtap(
            &[
                "run",
                "--port",
                "8080",
                "--admin-addr",
                "off",
                "--target",
                &url,
                flag,
                value,
            ],
            &[],
        );
        assert_refused(&out, &format!("{flag} {value}"), &[flag, reason]);
    }
}

// ---------------------------------------------------------------------------------------
// Item 8: `config check --for`, its file from `--config`/`SHADOWTAP_CONFIG`, and
// misspelt `SHADOWTAP_*` variables.

#[test]
fn config_check_validates_for_the_command_the_file_is_meant_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replay_file = write(
        dir.path(),
        "replay.toml",
        "target = \"https://127.0.0.1:1\"\nspeed = \"2x\"\nloop = 3\nengine = \"pcap\"\n",
    );
    let replay_file = replay_file.to_str().expect("utf8");
    let out = shadowtap(&["config", "check", "--for", "replay", replay_file], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{replay_file}: ok for replay (1 target, ports any, speed 2x, loop 3); \
             not used by replay: engine\n"
        )
    );
    // The same file is not enough for `run` (no port), which is the default.
    for args in [
        &["config", "check", replay_file][..],
        &["config", "check", "--for", "run", replay_file],
    ] {
        let out = shadowtap(args, &[]);
        assert_refused(&out, "for run", &[replay_file, "run needs --port"]);
    }
    // `inspect` needs neither target nor port, and says what it does not use.
    let out = shadowtap(&["config", "check", "--for", "inspect", replay_file], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{replay_file}: ok for inspect (ports any, format jsonl); not used by inspect: \
             engine, loop, speed, target\n"
        )
    );
    // A value wrong for `replay` is an error whatever the file is checked for.
    let bad = write(dir.path(), "bad.toml", "speed = \"fast\"\n");
    let bad = bad.to_str().expect("utf8");
    for command in ["run", "replay", "inspect"] {
        let out = shadowtap(&["config", "check", "--for", command, bad], &[]);
        assert_refused(&out, command, &[bad, "key \"speed\""]);
    }
    let out = shadowtap(&["config", "check", "--for", "demo", replay_file], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // The file may be named by --config or SHADOWTAP_CONFIG instead.
    let want = format!("{replay_file}: ok for replay (");
    let out = shadowtap(
        &[
            "config",
            "check",
            "--for",
            "replay",
            "--config",
            replay_file,
        ],
        &[],
    );
    assert!(
        text(&out.stdout).starts_with(&want),
        "{}",
        text(&out.stderr)
    );
    let out = shadowtap(
        &[
            "--config",
            replay_file,
            "config",
            "check",
            "--for",
            "replay",
        ],
        &[],
    );
    assert!(
        text(&out.stdout).starts_with(&want),
        "{}",
        text(&out.stderr)
    );
    let out = shadowtap(
        &["config", "check", "--for", "replay"],
        &[("SHADOWTAP_CONFIG", replay_file)],
    );
    assert!(
        text(&out.stdout).starts_with(&want),
        "{}",
        text(&out.stderr)
    );
    let out = shadowtap(&["config", "check"], &[]);
    assert_refused(
        &out,
        "no file",
        &["config check needs a file", "SHADOWTAP_CONFIG"],
    );
}

/// The warning lines of stderr that name `name`.
fn warnings_about<'a>(stderr: &'a str, name: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains(name) && l.contains("WARN"))
        .collect()
}

#[test]
fn misspelt_variables_are_warned_about_with_the_closest_name() {
    let cap = capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ok.toml",
        "target = \"https://127.0.0.1:1\"\nport = [8000]\n",
    );
    let file = file.to_str().expect("utf8");

    // `config check`: still ok (the variable is ignored), one warning naming both.
    let out = shadowtap(
        &["config", "check", file],
        &[("SHADOWTAP_PRECENT", "5"), ("SHADOWTAP_PERCENT", "50")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let w = warnings_about(&stderr, "SHADOWTAP_PRECENT");
    assert_eq!(w.len(), 1, "{stderr}");
    assert!(w[0].contains("did you mean SHADOWTAP_PERCENT?"), "{stderr}");
    assert!(!stderr.contains("SHADOWTAP_PERCENT is"), "{stderr}");

    // At the start of inspect and replay too; nothing for a correct environment.
    let out = shadowtap(
        &["inspect", &cap],
        &[("SHADOWTAP_MAX_BODDY", "1k"), ("SHADOWTAP_FORMAT", "jsonl")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let w = warnings_about(&stderr, "SHADOWTAP_MAX_BODDY");
    assert_eq!(w.len(), 1, "{stderr}");
    assert!(
        w[0].contains("did you mean SHADOWTAP_MAX_BODY?"),
        "{stderr}"
    );
    let out = shadowtap(&["inspect", &cap], &[("SHADOWTAP_FORMAT", "jsonl")]);
    assert!(!text(&out.stderr).contains("WARN"), "{}", text(&out.stderr));

    let target = RecordingServer::start(Behaviour::Answer);
    let out = shadowtap(
        &["--log-format", "json", "replay", &cap, "--speed", "max"],
        &[
            ("SHADOWTAP_TARGETS", "http://127.0.0.1:1"),
            ("SHADOWTAP_TARGET", &target.url()),
            (
                "SHADOWTAP_REDACT_HEADER",
                "authorization,cookie,proxy-authorization",
            ),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("SHADOWTAP_TARGETS"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(json["level"], "WARN", "{line}");
    assert!(line.contains("did you mean SHADOWTAP_TARGET?"), "{line}");

    // A misspelt required option is named in the error that it is missing.
    let out = shadowtap(
        &["replay", &cap, "--speed", "max"],
        &[("SHADOWTAP_TARGETS", &target.url())],
    );
    assert_refused(
        &out,
        "typo of a required option",
        &[
            "replay needs --target",
            "SHADOWTAP_TARGETS is set: a misspelling of SHADOWTAP_TARGET?",
        ],
    );

    // `run` warns before it opens anything (here it then fails: no such interface).
    let out = shadowtap(
        &[
            "run",
            "--port",
            "8080",
            "--target",
            "http://127.0.0.1:1",
            "--iface",
            "nosuch0",
            "--engine",
            "pcap",
            "--admin-addr",
            "off",
            "--duration",
            "1s",
        ],
        &[("SHADOWTAP_PROT", "8080")],
    );
    let stderr = text(&out.stderr);
    let w = warnings_about(&stderr, "SHADOWTAP_PROT");
    assert_eq!(w.len(), 1, "{stderr}");
    assert!(w[0].contains("did you mean SHADOWTAP_PORT?"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Item 13: `--help` grouped, `-h` short, examples that parse.

fn help(args: &[&str]) -> String {
    let out = shadowtap(args, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The examples at the end of a help text: the lines after `Examples:` (or `Example:`)
/// indented by two, with `\` continuations joined.
fn examples(help: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut continued = false;
    let mut in_examples = false;
    for line in help.lines() {
        if line == "Examples:" || line == "Example:" {
            in_examples = true;
            continue;
        }
        if !in_examples {
            continue;
        }
        if !line.starts_with("  ") {
            in_examples = false;
            continue;
        }
        let body = line.trim();
        let (body, more) = match body.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (body, false),
        };
        match out.last_mut() {
            Some(last) if continued => {
                last.push(' ');
                last.push_str(body);
            }
            _ => out.push(body.to_string()),
        }
        continued = more;
    }
    out
}

/// A shell line split into words: whitespace separates, single quotes group; `sudo` and
/// a trailing redirection are left out (the shell's, not shadowtap's).
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    assert!(!quoted, "unclosed quote in {line:?}");
    if words.first().map(String::as_str) == Some("sudo") {
        words.remove(0);
    }
    if let Some(at) = words.iter().position(|w| w.starts_with('>')) {
        words.truncate(at);
    }
    words
}

#[test]
fn help_is_grouped_short_on_h_and_its_examples_parse() {
    // `run -h` fits a 24x80-ish screen; every `-h` keeps to 80 columns.
    let short = help(&["run", "-h"]);
    let lines = short.lines().count();
    assert!(lines <= 40, "run -h is {lines} lines:\n{short}");
    for args in [
        &["-h"][..],
        &["run", "-h"],
        &["replay", "-h"],
        &["inspect", "-h"],
        &["config", "-h"],
        &["config", "check", "-h"],
        &["run", "--help"],
    ] {
        let text = help(args);
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{args:?}: wider than 80: {line:?}"
            );
        }
    }
    for flag in [
        "--port",
        "--iface",
        "--target",
        "--percent",
        "--redact-header",
    ] {
        assert!(short.contains(flag), "run -h lacks {flag}:\n{short}");
    }
    assert!(
        !short.contains("--max-flows"),
        "run -h is not short:\n{short}"
    );
    assert!(!short.contains("[env:"), "{short}");

    // The long form has every option, under its heading.
    let long = help(&["run", "--help"]);
    assert!(long.lines().count() > 2 * lines, "{long}");
    let cmd = <shadowtap::config::Cli as clap::CommandFactory>::command();
    let run = cmd.find_subcommand("run").expect("run");
    for long_flag in run.get_arguments().filter_map(clap::Arg::get_long) {
        assert!(
            long.contains(&format!("--{long_flag}")),
            "run --help lacks --{long_flag}"
        );
    }
    for (args, headings) in [
        (
            &["run", "--help"][..],
            &["Capture:", "Target:", "Sampling:", "Limits:", "Output:"][..],
        ),
        (
            &["replay", "--help"],
            &["Input:", "Target:", "Sampling:", "Limits:", "Output:"],
        ),
        (&["inspect", "--help"], &["Input:", "Limits:", "Output:"]),
    ] {
        let text = help(args);
        let mut at = 0;
        for heading in headings {
            let found = text
                .lines()
                .position(|l| l == *heading)
                .unwrap_or_else(|| panic!("{args:?}: no heading {heading}:\n{text}"));
            assert!(found >= at, "{args:?}: {heading} out of order");
            at = found;
        }
    }
    // The heading of an option is where a person looks for it.
    let section = |text: &str, heading: &str| -> String {
        text.lines()
            .skip_while(|l| *l != heading)
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with(' '))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (heading, flag) in [
        ("Capture:", "--iface"),
        ("Target:", "--target "),
        ("Sampling:", "--percent"),
        ("Limits:", "--max-body"),
        ("Output:", "--admin-addr"),
    ] {
        assert!(
            section(&long, heading).contains(flag),
            "{flag} not under {heading}"
        );
    }

    // Every command ends with examples, 3 to 5 in the long form, and each one parses
    // into a usable configuration (required options there, values valid).
    for (args, range) in [
        (&[][..], 3..=5),
        (&["run"], 3..=5),
        (&["replay"], 3..=5),
        (&["inspect"], 3..=5),
        (&["config"], 3..=5),
        (&["config", "check"], 3..=5),
        (&["demo"], 1..=1),
    ] {
        for form in ["-h", "--help"] {
            let text = help(&[args, &[form]].concat());
            let found = examples(&text);
            assert!(!found.is_empty(), "{args:?} {form}: no examples:\n{text}");
            if form == "--help" {
                assert!(
                    range.contains(&found.len()),
                    "{args:?}: {} examples",
                    found.len()
                );
            }
            for example in &found {
                let argv = words(example);
                assert_eq!(argv[0], "shadowtap", "{example}");
                if let Err(e) = shadowtap::config::resolve(&argv) {
                    panic!("{args:?} {form}: example {example:?} does not parse: {e}");
                }
            }
        }
    }
}
