//! Issue 19, the configuration side: values that would inject header lines or break a
//! copy's framing (class 6), numbers that would panic or hang (class 7) and a password in
//! a target URL (class 8). Each is checked with the real binary in the three forms an
//! option takes (flag, `SHADOWTAP_*` variable, TOML key): exit code 2, one line on
//! stderr naming the option, nothing sent.

#[expect(
    dead_code,
    reason = "shared test support; this file uses a few of its parts"
)]
mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Behaviour, RecordingServer};

/// The bundled capture: ten small GETs.
fn capture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.pcapng")
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs the binary with only the given `SHADOWTAP_*` variables; killed after `limit`.
fn shadowtap(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shadowtap"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SHADOWTAP_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start shadowtap");
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    Outcome {
        code,
        stdout,
        stderr,
        took,
    }
}

fn env_name(long: &str) -> String {
    format!("SHADOWTAP_{}", long.to_uppercase().replace('-', "_"))
}

/// A TOML string literal for any text (control characters escaped as TOML wants).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[derive(Clone, Copy, Debug)]
enum Form {
    Flag,
    Env,
    Toml,
}

/// `replay` of the bundled capture to `target` with `long = value` given in `form`.
fn replay_with(
    form: Form,
    long: &str,
    value: &str,
    target: &str,
    dir: &Path,
    limit: Duration,
) -> Outcome {
    let cap = capture();
    let cap = cap.to_str().expect("utf8 path");
    let flag = format!("--{long}={value}");
    let file = dir.join(format!("{long}.toml"));
    let file_text = file.to_str().expect("utf8 path").to_string();
    // `--target` and `--speed max` unless that is what is being checked (a flag beats
    // the other forms).
    let mut args: Vec<&str> = vec!["replay", cap];
    if long != "target" {
        args.extend(["--target", target]);
    }
    if long != "speed" {
        args.extend(["--speed", "max"]);
    }
    match form {
        Form::Flag => {
            args.push(&flag);
            shadowtap(&args, &[], limit)
        }
        Form::Env => shadowtap(&args, &[(&env_name(long), value)], limit),
        Form::Toml => {
            std::fs::write(&file, format!("{long} = {}\n", toml_string(value))).expect("write");
            let mut with_file = vec!["--config", file_text.as_str()];
            with_file.extend(args);
            shadowtap(&with_file, &[], limit)
        }
    }
}

/// What names the option in each form's error.
fn named(form: Form, long: &str) -> String {
    match form {
        Form::Flag => format!("--{long}"),
        Form::Env => env_name(long),
        Form::Toml => format!("\"{long}\""),
    }
}

fn assert_refused(out: &Outcome, form: Form, long: &str, value: &str) {
    let what = format!("{form:?} {long}={value:?}");
    assert_eq!(
        out.code,
        Some(2),
        "{what}: exit code; stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
    let err = out.stderr.trim_end_matches('\n');
    assert!(
        !err.is_empty() && !err.contains('\n') && !err.contains('\r') && !err.contains('\0'),
        "{what}: not one clean line: {:?}",
        out.stderr
    );
    assert!(
        err.contains(&named(form, long)),
        "{what}: does not name the option: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(
        out.stdout.is_empty(),
        "{what}: ran anyway: {:?}",
        out.stdout
    );
}

#[test]
fn config_that_would_break_a_copys_framing_is_refused_in_every_form() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = RecordingServer::start(Behaviour::Answer);
    let url = target.url();
    let cases: &[(&str, &str)] = &[
        ("set-header", "X-A:1\r\nEvil: 2"),
        ("set-header", "X-A:1\nEvil: 2"),
        ("set-header", "X-A:1\rEvil: 2"),
        ("set-header", "X-A:a\0b"),
        ("set-header", "X-A\r\nEvil:1"),
        ("set-header", "X(A):1"),
        ("set-header", "Content-Length:5"),
        ("set-header", "transfer-encoding:chunked"),
        ("set-header", "Host:evil.example"),
        ("set-header", "Connection:close"),
        ("remove-header", "Host"),
        ("remove-header", "content-length"),
        ("remove-header", "X-A\r\nEvil"),
        ("redact-header", "Host"),
        ("redact-header", "X-A\nB"),
        ("shadow-suffix", "-a:80"),
        ("shadow-suffix", "-a/b"),
        ("shadow-suffix", "@evil"),
        ("shadow-suffix", "-a b"),
        ("shadow-suffix", "-a\r\nEvil: 1"),
        ("shadow-suffix", "-a\0"),
        ("allow-header", "X\r\nY:^a"),
        ("allow-method", "GET\r\nX"),
        ("target", "http://127.0.0.1:1\r\nX: y"),
    ];
    for (long, value) in cases {
        for form in [Form::Flag, Form::Env, Form::Toml] {
            // The OS carries no NUL in an argument or a variable: only a file can.
            if value.contains('\0') && !matches!(form, Form::Toml) {
                continue;
            }
            let out = replay_with(form, long, value, &url, dir.path(), Duration::from_secs(20));
            assert_refused(&out, form, long, value);
        }
    }
    assert!(
        target.received().is_empty(),
        "a refused configuration sent copies"
    );

    // What stays valid.
    for (long, value) in [
        ("set-header", "X-Shadow: yes\tplease"),
        ("set-header", "Authorization:Basic c2hhZG93"),
        ("remove-header", "Cookie"),
        ("remove-header", "Transfer-Encoding"),
        ("redact-header", "Authorization"),
        ("shadow-suffix", ".shadow-stage_1"),
        ("shadow-suffix", ""),
    ] {
        let out = replay_with(
            Form::Toml,
            long,
            value,
            &url,
            dir.path(),
            Duration::from_secs(20),
        );
        assert_eq!(out.code, Some(0), "{long}={value:?}: {}", out.stderr);
    }
}

#[test]
fn numbers_that_would_panic_or_hang_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens: a refused value must be refused before any copy.
    let url = format!("http://127.0.0.1:{}", support::closed_port());
    let cases: &[(&str, &str)] = &[
        ("speed", "1e-300x"),
        ("speed", "0x"),
        ("speed", "-1x"),
        ("speed", "inf"),
        ("speed", "infx"),
        ("speed", "NaNx"),
        ("speed", "1e400x"),
        ("speed", "0.0000001x"),
        ("speed", "1e12x"),
        ("speed", ""),
        ("connect-timeout", "1e400s"),
        ("connect-timeout", "inf"),
        ("request-timeout", "NaN"),
        ("drain-timeout", "-1s"),
        ("hole-timeout", "99999999999999999999999m"),
        ("hole-timeout", "1e-300s"),
        ("drain-timeout", "18446744073709551616ms"),
        ("max-body", "18446744073709551616"),
        ("max-buffer", "-1"),
        ("queue-len", "99999999999"),
        ("max-queue-bytes", "1e3"),
        ("idle-timeout", "18446744073709551616"),
        ("max-rps", "inf"),
        ("max-rps", "1e-300"),
        ("loop", "0"),
        ("percent", "1e2"),
    ];
    for (long, value) in cases {
        for form in [Form::Flag, Form::Env, Form::Toml] {
            // An empty variable is as good as unset to clap.
            if value.is_empty() && matches!(form, Form::Env) {
                continue;
            }
            let out = replay_with(form, long, value, &url, dir.path(), Duration::from_secs(10));
            assert!(
                out.took < Duration::from_secs(10),
                "{form:?} {long}={value:?} hung"
            );
            assert_refused(&out, form, long, value);
        }
    }
}

/// The userinfo of a target URL is refused (copies carry the client's Authorization, not
/// credentials of the target), and the error shows the URL without the password, whatever
/// form it came in; so does `config check`.
#[test]
fn a_password_in_the_target_url_never_shows() {
    const SECRET: &str = "s3cret-7f1c";
    let dir = tempfile::tempdir().expect("tempdir");
    let target = RecordingServer::start(Behaviour::Answer);
    let port = target.url().rsplit(':').next().expect("port").to_string();
    let cap = capture();
    let cap = cap.to_str().expect("utf8 path");
    let urls = [
        format!("http://user:{SECRET}@127.0.0.1:{port}"),
        format!("http://user:{SECRET}@127.0.0.1:{port}@50"),
        format!("https://user:{SECRET}@localhost:{port}/x"),
        format!("http://{SECRET}@127.0.0.1:{port}"),
        format!("http://user:{SECRET}@[::1]:{port}@12.5"),
    ];
    for url in &urls {
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            format!("target = {}\nport = [80]\n", toml_string(url)),
        )
        .expect("write");
        let file = file.to_str().expect("utf8 path");
        let runs = [
            (
                "flag",
                shadowtap(
                    &["replay", cap, "--speed", "max", "--target", url],
                    &[],
                    Duration::from_secs(20),
                ),
            ),
            (
                "env",
                shadowtap(
                    &["replay", cap, "--speed", "max"],
                    &[("SHADOWTAP_TARGET", url)],
                    Duration::from_secs(20),
                ),
            ),
            (
                "toml",
                shadowtap(
                    &["--config", file, "replay", cap, "--speed", "max"],
                    &[],
                    Duration::from_secs(20),
                ),
            ),
            (
                "config check",
                shadowtap(&["config", "check", file], &[], Duration::from_secs(20)),
            ),
            (
                "run",
                shadowtap(
                    &[
                        "run",
                        "--port",
                        "80",
                        "--admin-addr",
                        "off",
                        "--target",
                        url,
                    ],
                    &[("RUST_LOG", "trace")],
                    Duration::from_secs(20),
                ),
            ),
        ];
        for (how, out) in runs {
            assert!(
                !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
                "{how} {url}: password shown:\nstdout {}\nstderr {}",
                out.stdout,
                out.stderr
            );
            assert_eq!(out.code, Some(2), "{how} {url}: {}", out.stderr);
            assert!(
                out.stderr.contains("user info") && out.stderr.contains("***@"),
                "{how} {url}: the error should say what was refused: {}",
                out.stderr
            );
        }
    }
    assert!(target.received().is_empty(), "copies went to a refused URL");
}
