//! Configuration (issue 5): every `run`/`replay` option is a flag, a `SHADOWTAP_*`
//! variable and a TOML key; they merge as flags > environment > file > defaults; every
//! bad key, value or combination is one line naming it, exit code 2; `config check`
//! as a process; the README's reference table is the generated one; logs at trace
//! level show neither bodies nor redacted values.

#[expect(
    dead_code,
    reason = "shared test support; this file uses a few of its parts"
)]
mod support;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use clap::CommandFactory;
use shadowtap::config::{self, Cli, Command as Sub, LoadError, Origin, Resolved};
use shadowtap::sample::Percent;
use support::{Behaviour, CaptureBuilder, RecordingServer};

/// clap reads `SHADOWTAP_*` from the process environment, which tests here change:
/// every test that parses options or starts the binary holds this lock.
static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|p| p.into_inner())
}

fn clear_shadowtap_env() {
    for (name, _) in std::env::vars_os() {
        // SHADOWTAP_BLESS is this repository's switch for golden files, not an option.
        if name.to_string_lossy().starts_with("SHADOWTAP_") && name != "SHADOWTAP_BLESS" {
            std::env::remove_var(name);
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

fn resolve(args: &[&str]) -> Result<Resolved, LoadError> {
    config::resolve(std::iter::once("shadowtap").chain(args.iter().copied()))
}

/// `shadowtap ARGS` with only the given `SHADOWTAP_*`/`RUST_LOG` variables.
fn shadowtap(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shadowtap"));
    cmd.args(args).env_remove("RUST_LOG");
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

fn env_name(long: &str) -> String {
    format!("SHADOWTAP_{}", long.to_uppercase().replace('-', "_"))
}

/// A valid file value for options that have no default.
fn sample_value(long: &str, dir: &Path) -> Option<String> {
    let ca = write(dir, "ca.pem", "not checked until a TLS target connects\n");
    Some(match long {
        "target" => "[\"http://127.0.0.1:1@50\"]".into(),
        "port" => "[8080, 8081]".into(),
        "allow-method" => "[\"GET\"]".into(),
        "allow-path" => "[\"^/api/\"]".into(),
        "deny-path" => "[\"^/health\"]".into(),
        "allow-header" => "[\"x-user:^a\"]".into(),
        "set-header" => "[\"x-shadow:1\"]".into(),
        "remove-header" => "[\"cookie\"]".into(),
        "redact-header" => "[\"authorization\"]".into(),
        "max-rps" => "12.5".into(),
        "target-ca" => format!("{:?}", ca.display().to_string()),
        "insecure" => "true".into(),
        "dry-run" => "true".into(),
        "record" => "\"/tmp/shadowtap-test.pcapng\"".into(),
        "duration" => "\"3s\"".into(),
        "diff" => "true".into(),
        "diff-ignore-header" => "[\"x-request-id\"]".into(),
        "diff-ignore" => "[\"$..build\"]".into(),
        "diff-samples" => "\"/tmp/shadowtap-test-diff.jsonl\"".into(),
        "diff-baseline" => "\"http://127.0.0.1:2\"".into(),
        _ => return None,
    })
}

#[test]
fn every_run_and_replay_option_is_a_flag_an_env_var_and_a_toml_key() {
    let _env = env_lock();
    clear_shadowtap_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let cmd = Cli::command();
    let mut checked = 0;
    for sub in ["run", "replay"] {
        let sc = cmd.find_subcommand(sub).expect("subcommand");
        for arg in sc.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue;
            };
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(env, Some(env_name(long)), "{sub} --{long}: env var");
            let value = match sample_value(long, dir.path()) {
                Some(v) => v,
                None => {
                    let defaults = arg.get_default_values();
                    assert!(
                        !defaults.is_empty(),
                        "{sub} --{long} has no default: add a sample value in this test"
                    );
                    let quoted: Vec<String> = defaults
                        .iter()
                        .map(|d| format!("{:?}", d.to_string_lossy()))
                        .collect();
                    if matches!(arg.get_action(), clap::ArgAction::Append) {
                        format!("[{}]", quoted.join(", "))
                    } else {
                        quoted.join("")
                    }
                }
            };
            let mut toml = format!("{long} = {value}\n");
            for (key, v) in [("target", "[\"http://127.0.0.1:1\"]"), ("port", "[80]")] {
                if key != long {
                    toml.push_str(&format!("{key} = {v}\n"));
                }
            }
            let file = write(dir.path(), "one.toml", &toml);
            let file = file.to_str().expect("utf8 path");
            let args: Vec<&str> = match sub {
                "run" => vec!["--config", file, "run"],
                _ => vec!["--config", file, "replay", "capture.pcap"],
            };
            let resolved = resolve(&args)
                .unwrap_or_else(|e| panic!("{sub}: `{long} = {value}` rejected: {e}"));
            let expected = if long == "insecure" || value != "[]" {
                Some(&Origin::File(file.to_string()))
            } else {
                None
            };
            assert_eq!(
                resolved.origin(long),
                expected,
                "{sub}: `{long} = {value}` did not come from the file"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} options seen");
}

fn run_args(r: &Resolved) -> &config::RunArgs {
    match &r.cli.command {
        Sub::Run(a) => a,
        other => panic!("not run: {other:?}"),
    }
}

fn percent(text: &str) -> Percent {
    text.parse().expect("percent")
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let _env = env_lock();
    clear_shadowtap_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "c.toml",
        "target = \"http://127.0.0.1:1\"\nport = [80]\npercent = 10\n\
         iface = [\"veth*\", \"eth0\"]\ninsecure = true\n",
    );
    let file = file.to_str().expect("utf8 path");
    let from_file = Origin::File(file.to_string());

    // Defaults only (no file).
    let r = resolve(&["run", "--port", "80", "--target", "http://127.0.0.1:1"]).expect("defaults");
    let a = run_args(&r);
    assert_eq!(a.shadow.percent, percent("100"));
    assert_eq!(a.iface, ["any"]);
    assert!(!a.shadow.insecure);
    assert_eq!(r.origin("percent"), Some(&Origin::Default));
    assert_eq!(r.origin("port"), Some(&Origin::Flag));

    // The file beats the defaults.
    let r = resolve(&["--config", file, "run"]).expect("file");
    let a = run_args(&r);
    assert_eq!(a.shadow.percent, percent("10"));
    assert_eq!(a.iface, ["veth*", "eth0"]);
    assert!(a.shadow.insecure);
    for key in ["percent", "iface", "insecure", "target", "port"] {
        assert_eq!(r.origin(key), Some(&from_file), "{key}");
    }

    // The environment beats the file.
    std::env::set_var("SHADOWTAP_PERCENT", "20");
    std::env::set_var("SHADOWTAP_IFACE", "cali*,lo");
    std::env::set_var("SHADOWTAP_INSECURE", "false");
    let r = resolve(&["--config", file, "run"]).expect("env");
    let a = run_args(&r);
    assert_eq!(a.shadow.percent, percent("20"));
    assert_eq!(a.iface, ["cali*", "lo"]);
    assert!(!a.shadow.insecure);
    assert_eq!(
        r.origin("iface"),
        Some(&Origin::Env("SHADOWTAP_IFACE".into()))
    );
    assert_eq!(r.origin("port"), Some(&from_file));

    // Flags beat the environment.
    let r = resolve(&[
        "--config",
        file,
        "run",
        "--percent",
        "30",
        "--iface",
        "eth1",
        "--insecure",
    ])
    .expect("flags");
    let a = run_args(&r);
    assert_eq!(a.shadow.percent, percent("30"));
    assert_eq!(a.iface, ["eth1"]);
    assert!(a.shadow.insecure);
    for key in ["percent", "iface", "insecure"] {
        assert_eq!(r.origin(key), Some(&Origin::Flag), "{key}");
    }

    // The file itself can come from the environment.
    std::env::set_var("SHADOWTAP_CONFIG", file);
    let r = resolve(&["run", "--percent", "40"]).expect("config from env");
    assert_eq!(run_args(&r).shadow.percent, percent("40"));
    assert_eq!(run_args(&r).shadow.targets, ["http://127.0.0.1:1"]);
    clear_shadowtap_env();
}

#[test]
fn one_file_serves_run_replay_and_inspect() {
    let _env = env_lock();
    clear_shadowtap_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "shared.toml",
        "target = \"http://127.0.0.1:1\"\nport = [80]\nengine = \"pcap\"\nspeed = \"max\"\n\
         max-flows = 500\nformat = \"table\"\n",
    );
    let file = file.to_str().expect("utf8 path");
    let r = resolve(&["--config", file, "inspect", "a.pcap"]).expect("inspect");
    let Sub::Inspect(a) = &r.cli.command else {
        panic!("not inspect");
    };
    assert_eq!(
        (a.limits.max_flows, config::port_list(&a.port)),
        (500, vec![80u16])
    );
    // `target`, `engine` and `speed` are not inspect options: checked, not applied.
    assert_eq!(r.origin("target"), None);
    let r = resolve(&["--config", file, "replay", "a.pcap"]).expect("replay");
    let Sub::Replay(a) = &r.cli.command else {
        panic!("not replay");
    };
    assert_eq!(a.speed, config::Speed::Max);
    assert_eq!(a.limits.max_flows, 500);
    let r = resolve(&["--config", file, "run"]).expect("run");
    assert_eq!(run_args(&r).engine, shadowtap::capture::Engine::Pcap);
    // A value that is wrong for the other subcommand is still an error.
    let bad = write(dir.path(), "bad.toml", "speed = \"fast\"\n");
    let err = resolve(&["--config", bad.to_str().expect("utf8"), "inspect", "a.pcap"])
        .expect_err("bad speed");
    assert!(err.to_string().contains("key \"speed\""), "{err}");
}

#[test]
fn admin_addr_defaults_to_localhost_and_off_disables_it() {
    let _env = env_lock();
    clear_shadowtap_env();
    let base = ["run", "--port", "80", "--target", "http://127.0.0.1:1"];
    let r = resolve(&base).expect("default");
    assert_eq!(
        run_args(&r).admin_addr,
        Some("127.0.0.1:9477".parse().expect("addr"))
    );
    let off = resolve(&[&base[..], &["--admin-addr", "off"]].concat()).expect("off");
    assert_eq!(run_args(&off).admin_addr, None);
    let v6 = resolve(&[&base[..], &["--admin-addr", "[::]:9000"]].concat()).expect("v6");
    assert_eq!(
        run_args(&v6).admin_addr,
        Some("[::]:9000".parse().expect("addr"))
    );
}

/// `config check` of a file holding `extra` (after a valid target and port): exit 2,
/// one line on stderr naming the file and `names`.
fn assert_check_fails(dir: &Path, extra: &str, names: &str) {
    let toml = format!("target = [\"http://127.0.0.1:1\"]\nport = [80]\n{extra}\n");
    check_fails_with(dir, &toml, names);
}

fn check_fails_with(dir: &Path, toml: &str, names: &str) {
    let file = write(dir, "bad.toml", toml);
    let file = file.to_str().expect("utf8 path");
    let out = shadowtap(&["config", "check", file], &[]);
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(out.status.code(), Some(2), "{toml:?}: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{toml:?}: stdout {}",
        text(&out.stdout)
    );
    assert_eq!(lines.len(), 1, "{toml:?}: not one line:\n{stderr}");
    assert!(
        lines[0].contains(file),
        "{toml:?}: {:?} does not name the file",
        lines[0]
    );
    assert!(
        lines[0].contains(names),
        "{toml:?}: {:?} does not name {names:?}",
        lines[0]
    );
}

#[test]
fn every_bad_file_is_one_line_naming_file_and_key_with_exit_2() {
    let _env = env_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Unknown keys, with the closest valid one suggested.
    assert_check_fails(
        d,
        "prcent = 5",
        "bad.toml:3: unknown key \"prcent\"; did you mean \"percent\"",
    );
    assert_check_fails(d, "max-flow = 5", "did you mean \"max-flows\"");
    assert_check_fails(d, "config = \"other.toml\"", "\"config\"");
    // Wrong types.
    assert_check_fails(
        d,
        "insecure = \"yes\"",
        "key \"insecure\": expected true or false",
    );
    assert_check_fails(
        d,
        "percent = [1, 2]",
        "key \"percent\": expected one string or number",
    );
    assert_check_fails(d, "iface = [{ name = \"eth0\" }]", "key \"iface\"");
    assert_check_fails(d, "max-flows = true", "key \"max-flows\"");
    // Bad values, with what would be valid.
    assert_check_fails(
        d,
        "percent = 150",
        "bad.toml:3: key \"percent\": invalid value \"150\"",
    );
    assert_check_fails(d, "engine = \"xdp\"", "valid values: auto, ebpf, pcap");
    assert_check_fails(d, "connect-timeout = \"soon\"", "key \"connect-timeout\"");
    assert_check_fails(d, "allow-path = [\"a(\"]", "key \"allow-path\"");
    assert_check_fails(d, "allow-header = [\"no-colon\"]", "key \"allow-header\"");
    assert_check_fails(d, "set-header = [\":x\"]", "key \"set-header\"");
    assert_check_fails(d, "queue-len = 0", "key \"queue-len\": invalid value \"0\"");
    assert_check_fails(d, "max-in-flight = -1", "key \"max-in-flight\"");
    assert_check_fails(d, "admin-addr = \"nope\"", "key \"admin-addr\"");
    assert_check_fails(d, "max-rps = 0", "key \"max-rps\"");
    assert_check_fails(d, "sample-by = \"user\"", "key \"sample-by\"");
    assert_check_fails(d, "log-format = \"xml\"", "key \"log-format\"");
    assert_check_fails(d, "speed = \"fast\"", "key \"speed\"");
    assert_check_fails(d, "target-ca = \"/no/such/ca.pem\"", "key \"target-ca\"");
    check_fails_with(
        d,
        "target = \"ftp://stage\"\nport = [80]\n",
        "key \"target\"",
    );
    check_fails_with(
        d,
        "target = \"http://stage@150\"\nport = [80]\n",
        "key \"target\"",
    );
    check_fails_with(
        d,
        "target = \"http://stage\"\nport = [0x1ffff]\n",
        "key \"port\"",
    );
    // Bad combinations.
    check_fails_with(d, "port = [80]\n", "needs --target");
    check_fails_with(d, "target = \"http://127.0.0.1:1\"\n", "needs --port");
    assert_check_fails(
        d,
        "max-stream-buffer = 2097152\nmax-buffer = 1048576",
        "max-stream-buffer 2097152",
    );
    // Syntax errors name the line.
    assert_check_fails(d, "percent = ", "bad.toml:3: TOML syntax error");
    check_fails_with(d, "port = [80\ntarget = 1\n", "bad.toml:2:");
}

#[test]
fn bad_env_values_and_flags_name_their_source() {
    let _env = env_lock();
    let out = shadowtap(
        &["replay", "x.pcap", "--target", "http://127.0.0.1:1"],
        &[("SHADOWTAP_PERCENT", "150")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("SHADOWTAP_PERCENT"), "{stderr}");
    let out = shadowtap(
        &[
            "run",
            "--port",
            "80",
            "--target",
            "http://127.0.0.1:1",
            "--queue-len",
            "0",
        ],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--queue-len"), "{stderr}");
}

#[test]
fn config_check_reports_ok_on_one_line_and_warns_about_clear_credentials() {
    let _env = env_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "good.toml",
        "port = [80, 8080]\ntarget = [\"http://127.0.0.1:1@10\", \"https://127.0.0.1:2\"]\n\
         iface = \"veth*\"\nengine = \"pcap\"\nadmin-addr = \"off\"\nspeed = \"2x\"\n",
    );
    let file = file.to_str().expect("utf8 path");
    let out = shadowtap(&["config", "check", file], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        text(&out.stdout),
        format!(
            "{file}: ok (2 targets, ports 80,8080, interfaces veth*, engine pcap, admin off); \
             not used by run: speed\n"
        )
    );
    // Nothing redacted and an http:// target: one warning naming the three headers.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("unredacted"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    for header in [
        "Authorization",
        "Cookie",
        "Proxy-Authorization",
        "--redact-header",
    ] {
        assert!(warnings[0].contains(header), "{stderr}");
    }

    // The environment counts, as it would for `run`; redacting (or removing) silences it.
    let out = shadowtap(
        &["config", "check", file],
        &[
            ("SHADOWTAP_REDACT_HEADER", "authorization,cookie"),
            ("SHADOWTAP_REMOVE_HEADER", "Proxy-Authorization"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("unredacted"),
        "{}",
        text(&out.stderr)
    );

    // Targets may come from the environment alone.
    let ports_only = write(dir.path(), "ports.toml", "port = [80]\n");
    let out = shadowtap(
        &["config", "check", ports_only.to_str().expect("utf8")],
        &[(
            "SHADOWTAP_TARGET",
            "https://127.0.0.1:1,https://127.0.0.1:2",
        )],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(": ok (2 targets, ports 80,"),
        "{}",
        text(&out.stdout)
    );

    // Only https targets: nothing travels in clear.
    let tls = write(
        dir.path(),
        "tls.toml",
        "port = [443]\ntarget = \"https://127.0.0.1:1\"\n",
    );
    let out = shadowtap(&["config", "check", tls.to_str().expect("utf8")], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("unredacted"),
        "{}",
        text(&out.stderr)
    );

    // `insecure` with only http targets is fine.
    let insecure = write(
        dir.path(),
        "insecure.toml",
        "port = [80]\ntarget = \"http://127.0.0.1:1\"\ninsecure = true\nredact-header = [\"authorization\", \"cookie\", \"proxy-authorization\"]\n",
    );
    let out = shadowtap(&["config", "check", insecure.to_str().expect("utf8")], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}

fn readme() -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path).expect("read README.md");
    (path, text)
}

const TABLE_START: &str = "<!-- config-reference: generated by `shadowtap config reference` -->\n";
const TABLE_END: &str = "<!-- end of config-reference -->\n";

#[test]
fn readme_reference_table_is_the_generated_one() {
    let (path, readme) = readme();
    let start = readme
        .find(TABLE_START)
        .expect("README has the reference start marker")
        + TABLE_START.len();
    let end = start
        + readme[start..]
            .find(TABLE_END)
            .expect("README has the end marker");
    let generated = config::reference_markdown();
    if std::env::var_os("SHADOWTAP_BLESS").is_some() {
        let updated = format!("{}{generated}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).expect("write README.md");
        return;
    }
    assert_eq!(
        &readme[start..end],
        generated,
        "the README table differs from `shadowtap config reference`: run with \
         SHADOWTAP_BLESS=1 to rewrite it, then review the diff"
    );
    // The binary prints the same table.
    let _env = env_lock();
    let out = shadowtap(&["config", "reference"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), generated);
}

#[test]
fn readme_example_config_passes_config_check() {
    let (_, readme) = readme();
    let section = &readme[readme
        .find("## Configuration")
        .expect("Configuration section")..];
    let start = section.find("```toml\n").expect("a toml example") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").expect("closed")];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "example.toml", example);
    let _env = env_lock();
    let out = shadowtap(&["config", "check", file.to_str().expect("utf8")], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(": ok ("),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn trace_logs_of_a_real_replay_show_no_body_and_no_redacted_value() {
    const BODY: &str = "BODY-MARKER-5a17c0de";
    const SECRET: &str = "Bearer SECRET-TOKEN-9e4f21";
    let dir = tempfile::tempdir().expect("tempdir");
    let server = SocketAddrV4::new([10, 0, 0, 2].into(), 8080);
    let request = format!(
        "POST /orders?id=7 HTTP/1.1\r\nHost: shop.internal\r\nAuthorization: {SECRET}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut capture = CaptureBuilder::new();
    capture.connection(support::client_addr(1), server, &[request.as_bytes()]);
    let pcap = dir.path().join("secret.pcapng");
    capture.write_to(&pcap);
    let target = RecordingServer::start(Behaviour::Answer);
    // The log format comes from the file, so the JSON logger is what is checked.
    let file = write(
        dir.path(),
        "replay.toml",
        &format!(
            "target = \"{}\"\nredact-header = [\"authorization\"]\nspeed = \"max\"\nlog-format = \"json\"\n",
            target.url()
        ),
    );
    let _env = env_lock();
    let out = shadowtap(
        &[
            "--config",
            file.to_str().expect("utf8"),
            "replay",
            pcap.to_str().expect("utf8"),
        ],
        &[("RUST_LOG", "trace")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let received = target.received();
    assert_eq!(received.len(), 1, "stdout {}", text(&out.stdout));
    assert_eq!(received[0].body, BODY.as_bytes());
    assert_eq!(received[0].header_str("authorization"), "REDACTED");
    let log_lines: Vec<&str> = stderr.lines().collect();
    assert!(!log_lines.is_empty(), "no logs at trace level");
    for line in &log_lines {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON log line: {line}");
    }
    assert!(!stderr.contains(BODY), "body in logs:\n{stderr}");
    assert!(
        !stderr.contains("SECRET-TOKEN"),
        "redacted value in logs:\n{stderr}"
    );
}
