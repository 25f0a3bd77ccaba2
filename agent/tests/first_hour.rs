//! A new user's first hour (issue 21), on the real binary: what `replay` and `run` say
//! and how they exit when nothing or not everything happened (signals, a target that
//! refuses, an unknown name, no request at all), counts in words that agree with their
//! number, the credentials warning only for traffic that carries credentials,
//! `--dry-run`, `--log-format json` on every line, and the progress bar only on a
//! terminal.

#[expect(
    dead_code,
    reason = "shared test support; this file uses the runner, the recording server and the capture builder"
)]
mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{
    client_addr, closed_port, free_port, require_tools, run_shadowtap, shadowtap_bin, Behaviour,
    CaptureBuilder, Finished, RecordingServer, Summary,
};

const LIMIT: Duration = Duration::from_secs(30);

fn server() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 80)
}

/// `n` POSTs of 16 bytes, one connection each, each carrying `extra` headers.
fn posts(dir: &Path, name: &str, n: u32, extra: &str) -> PathBuf {
    let path = dir.join(name);
    let mut capture = CaptureBuilder::new();
    for i in 0..n {
        let request = format!(
            "POST /p/{i} HTTP/1.1\r\nHost: api.example\r\n{extra}Content-Length: 16\r\n\r\n0123456789abcdef"
        );
        capture.connection(client_addr(i), server(), &[request.as_bytes()]);
    }
    capture.write_to(&path);
    path
}

/// Two requests, a minute of nothing, and a third: a replay at 1x is mid-way for long.
fn with_a_long_pause(dir: &Path) -> PathBuf {
    let path = dir.join("pause.pcapng");
    let mut capture = CaptureBuilder::new();
    let get = b"GET /before HTTP/1.1\r\nHost: api.example\r\n\r\n";
    capture.connection(client_addr(1), server(), &[get, get]);
    capture.pause(Duration::from_secs(60));
    capture.connection(
        client_addr(2),
        server(),
        &[b"GET /after HTTP/1.1\r\nHost: api.example\r\n\r\n"],
    );
    capture.write_to(&path);
    path
}

fn replay(files: &[&Path], target: &str, extra: &[&str]) -> Finished {
    let mut args: Vec<String> = vec!["replay".into()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    args.extend(
        [
            "--speed",
            "max",
            "--drain-timeout",
            "10s",
            "--target",
            target,
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|s| (*s).to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_shadowtap(&args, LIMIT)
}

fn spawn(args: &[&str]) -> Child {
    Command::new(shadowtap_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shadowtap")
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill has no memory preconditions; the pid is our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill");
}

/// Waits up to `limit` for the child to exit; None while it still runs.
fn exits_within(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().expect("try_wait").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// --- Item 1: signals ---------------------------------------------------------------------

/// SIGINT mid-capture: the reading stops at once (the third request, a minute later in
/// capture time, is never read), the copies already sent are settled, the normal summary
/// is printed and the exit code is 130.
#[test]
fn sigint_stops_the_replay_prints_the_summary_and_exits_130() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = with_a_long_pause(dir.path());
    let target = RecordingServer::start(Behaviour::Answer);
    let url = target.url();
    let p = path.to_str().expect("utf8");
    let mut child = spawn(&["replay", p, "--target", &url, "--drain-timeout", "10s"]);
    wait_until("the first two copies", Duration::from_secs(10), || {
        target.received().len() >= 2
    });
    let signalled = Instant::now();
    signal(&child, libc::SIGINT);
    assert!(
        exits_within(&mut child, Duration::from_secs(5)),
        "still running 5s after SIGINT"
    );
    let took = signalled.elapsed();
    let out = child.wait_with_output().expect("output");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(took < Duration::from_secs(3), "took {took:?} after SIGINT");
    let summary = Summary::parse(&stdout).expect("the normal summary");
    summary.assert_adds_up(2);
    assert_eq!(summary.target(&url).get("replayed 2xx"), 2, "{stdout}");
}

/// SIGTERM while copies are in flight: the run drains (it is still running a while
/// later, the drain timeout being long); a second SIGTERM ends the drain at once, the
/// copies left count as timeouts, the summary is printed and the exit code is 143.
#[test]
fn sigterm_drains_and_a_second_one_ends_the_drain_at_once_exit_143() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = with_a_long_pause(dir.path());
    let target = RecordingServer::start(Behaviour::Silent);
    let url = target.url();
    let p = path.to_str().expect("utf8");
    let mut child = spawn(&[
        "replay",
        p,
        "--target",
        &url,
        "--drain-timeout",
        "60s",
        "--request-timeout",
        "60s",
    ]);
    wait_until("the first copy", Duration::from_secs(10), || {
        !target.received().is_empty()
    });
    signal(&child, libc::SIGTERM);
    assert!(
        !exits_within(&mut child, Duration::from_millis(800)),
        "exited at once: the copy in flight was not drained"
    );
    let second = Instant::now();
    signal(&child, libc::SIGTERM);
    assert!(
        exits_within(&mut child, Duration::from_secs(3)),
        "a second SIGTERM did not end the drain"
    );
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    let out = child.wait_with_output().expect("output");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(143), "{stdout}{stderr}");
    let summary = Summary::parse(&stdout).expect("the normal summary");
    summary.assert_adds_up(2);
    assert_eq!(
        summary.target(&url).get("replay_error timeout"),
        2,
        "{stdout}"
    );
}

// --- Item 2: exit codes ------------------------------------------------------------------

/// Every copy refused: exit 3, the summary still printed, and the OS's reason given once
/// (not once per copy) with a hint.
#[test]
fn every_copy_refused_is_exit_3_with_the_reason_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = posts(dir.path(), "five.pcapng", 5, "");
    let url = format!("http://127.0.0.1:{}", closed_port());
    let run = replay(&[&path], &url, &["--connect-timeout", "500ms"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    run.summary().assert_adds_up(5);
    assert_eq!(
        run.stderr.matches("connection refused").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("5 copies failed"), "{}", run.stderr);
    assert!(run.stderr.contains("wrong port"), "{}", run.stderr);
}

/// A name that does not resolve at the start: one line that says so in the usual words,
/// exit 2 like any setting a person fixes before anything ran.
#[test]
fn an_unknown_target_name_is_one_line_no_such_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = posts(dir.path(), "one.pcapng", 1, "");
    let run = replay(
        &[&path],
        "http://stage.shadowtap.invalid:8080",
        &["--connect-timeout", "1s"],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("no such host"), "{}", run.stderr);
}

/// A capture without one HTTP request: exit 4 with a hint; copies delivered: exit 0.
#[test]
fn a_capture_without_requests_is_exit_4_and_delivered_copies_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("ssh.pcapng");
    let mut capture = CaptureBuilder::new();
    capture.connection(client_addr(1), server(), &[b"SSH-2.0-OpenSSH_9.6\r\n"]);
    capture.write_to(&empty);
    let target = RecordingServer::start(Behaviour::Answer);
    let run = replay(&[&empty], &target.url(), &[]);
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no HTTP request found"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("0 requests seen"), "{}", run.stdout);

    let path = posts(dir.path(), "two.pcapng", 2, "");
    let run = replay(&[&path], &target.url(), &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.trim().is_empty(), "{}", run.stderr);
}

// --- Item 5: counts in words -------------------------------------------------------------

/// One request is `1 request`, two are `2 requests`; the summary speaks of requests
/// first, frames after.
#[test]
fn the_summary_says_1_request_and_2_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = RecordingServer::start(Behaviour::Answer);
    let one = posts(dir.path(), "one.pcapng", 1, "");
    let run = replay(&[&one], &target.url(), &[]);
    let first = run.stdout.lines().next().unwrap_or_default().to_string();
    assert!(first.starts_with("1 request seen in "), "{first}");
    assert!(first.contains("0 non-HTTP streams"), "{first}");
    assert!(!run.stdout.contains("1 requests"), "{}", run.stdout);
    let two = posts(dir.path(), "two.pcapng", 2, "");
    let run = replay(&[&two], &target.url(), &[]);
    assert!(
        run.stdout.starts_with("2 requests seen in "),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("replayed 8 frames"), "{}", run.stdout);
}

// --- Item 9: the credentials warning -----------------------------------------------------

/// No request carries credentials: no warning. Two carry a Cookie: one warning that
/// names it. Redacted: none.
#[test]
fn the_credentials_warning_is_for_traffic_that_carries_them_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = RecordingServer::start(Behaviour::Answer);
    let plain = posts(dir.path(), "plain.pcapng", 3, "");
    let run = replay(&[&plain], &target.url(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("unredacted"), "{}", run.stderr);

    let cookies = posts(
        dir.path(),
        "cookies.pcapng",
        3,
        "Cookie: session=s3cr3t\r\n",
    );
    let run = replay(&[&cookies], &target.url(), &[]);
    assert_eq!(
        run.stderr.matches("unredacted").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Cookie"), "{}", run.stderr);
    assert!(!run.stderr.contains("Authorization"), "{}", run.stderr);

    let run = replay(&[&cookies], &target.url(), &["--redact-header", "Cookie"]);
    assert!(!run.stderr.contains("unredacted"), "{}", run.stderr);
}

// --- Item 11: --dry-run ------------------------------------------------------------------

/// `replay --dry-run` prints each copy as it would be sent and connects nowhere: the
/// listener at the target sees no connection. The copies count as `dry_run`.
#[test]
fn dry_run_prints_the_copies_and_connects_nowhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = posts(dir.path(), "three.pcapng", 3, "Accept: */*\r\n");
    let target = RecordingServer::start(Behaviour::Answer);
    let run = replay(&[&path], &target.url(), &["--dry-run"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(target.connections(), 0, "a dry run connected to the target");
    for i in 0..3 {
        assert!(
            run.stdout.contains(&format!("POST /p/{i} HTTP/1.1\n")),
            "{}",
            run.stdout
        );
    }
    assert_eq!(
        run.stdout.matches("Host: api.example-shadow\n").count(),
        3,
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.matches("Accept: */*\n").count(), 3);
    assert_eq!(run.stdout.matches("[body: 16 bytes]").count(), 3);
    let summary = run.summary();
    summary.assert_adds_up(3);
    assert_eq!(summary.target(&target.url()).get("dry_run"), 3);
}

/// Sampling still decides in a dry run: at 0 % nothing is printed.
#[test]
fn dry_run_copies_only_what_sampling_keeps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = posts(dir.path(), "three.pcapng", 3, "");
    let url = format!("http://127.0.0.1:{}", closed_port());
    let run = replay(&[&path], &url, &["--dry-run", "--percent", "0"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("POST "), "{}", run.stdout);
    assert_eq!(run.summary().target(&url).get("not_sampled"), 3);
}

// --- Item 12: --log-format json ----------------------------------------------------------

fn assert_all_json(what: &str, stream: &str) -> Vec<serde_json::Value> {
    stream
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: not one JSON object ({e}): {line:?}"))
        })
        .collect()
}

/// Every line on stdout and stderr is one JSON object: copies, warnings, the summary,
/// the error with the reason, the damaged-file line, and an option error.
#[test]
fn log_format_json_makes_every_line_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cookies = posts(dir.path(), "cookies.pcapng", 3, "Cookie: a=b\r\n");
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let run = replay(
        &[&cookies],
        &refused,
        &["--log-format", "json", "--connect-timeout", "500ms"],
    );
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    let out = assert_all_json("replay stdout", &run.stdout);
    let err = assert_all_json("replay stderr", &run.stderr);
    assert_eq!(out.len(), 1, "{}", run.stdout);
    assert_eq!(out[0]["summary"]["requests_seen"], 3);
    assert_eq!(
        out[0]["summary"]["targets"][0]["outcomes"]["replay_error connect"],
        3
    );
    assert!(run.stderr.contains("unredacted"), "{}", run.stderr);
    assert!(
        err.iter().any(|e| e["level"] == "ERROR"
            && e["timestamp"].is_string()
            && e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("connection refused"))),
        "{}",
        run.stderr
    );

    let target = RecordingServer::start(Behaviour::Answer);
    let run = replay(
        &[&cookies],
        &target.url(),
        &["--log-format=json", "--dry-run"],
    );
    let out = assert_all_json("dry-run stdout", &run.stdout);
    assert_all_json("dry-run stderr", &run.stderr);
    let copies: Vec<_> = out.iter().filter(|v| v.get("dry_run").is_some()).collect();
    assert_eq!(copies.len(), 3, "{}", run.stdout);
    assert_eq!(copies[0]["dry_run"]["body_bytes"], 16);

    // A capture cut short, read by inspect: the damage line is JSON too.
    let bytes = std::fs::read(&cookies).expect("read");
    let cut = dir.path().join("cut.pcapng");
    std::fs::write(&cut, &bytes[..bytes.len() - 30]).expect("write");
    let out = Command::new(shadowtap_bin())
        .args([
            "--log-format",
            "json",
            "inspect",
            cut.to_str().expect("utf8"),
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("inspect");
    let (stdout, stderr) = text(&out);
    assert!(!stdout.is_empty() && !stderr.is_empty(), "{stdout}{stderr}");
    assert_all_json("inspect stdout", &stdout);
    let err = assert_all_json("inspect stderr", &stderr);
    assert!(err.iter().any(|e| e.get("summary").is_some()), "{stderr}");

    // An option error, before any configuration is read.
    let out = Command::new(shadowtap_bin())
        .args([
            "replay",
            "x.pcap",
            "--target",
            "ftp://x",
            "--log-format",
            "json",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("replay");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_all_json("option error", &stderr);
}

// --- Item 14: the progress bar -----------------------------------------------------------

/// Piped, the output holds no progress bytes (no carriage return, no bar).
#[test]
fn piped_replay_shows_no_progress_bar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = posts(dir.path(), "three.pcapng", 3, "");
    let target = RecordingServer::start(Behaviour::Answer);
    let run = replay(&[&path], &target.url(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for stream in [&run.stdout, &run.stderr] {
        assert!(!stream.contains('\r'), "{stream:?}");
        assert!(!stream.contains("[#"), "{stream:?}");
        assert!(!stream.contains('\u{1b}'), "{stream:?}");
    }
}

/// On a terminal (a pty from `script`), the bar is drawn while the replay runs.
#[test]
fn replay_on_a_terminal_draws_a_progress_bar() {
    if !require_tools("replay_on_a_terminal_draws_a_progress_bar", &["script"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // One request, a second of nothing, one more: long enough to draw at 10 Hz.
    let path = dir.path().join("slow.pcapng");
    let mut capture = CaptureBuilder::new();
    let get = b"GET / HTTP/1.1\r\nHost: api.example\r\n\r\n";
    capture.connection(client_addr(1), server(), &[get]);
    capture.pause(Duration::from_millis(1500));
    capture.connection(client_addr(2), server(), &[get]);
    capture.write_to(&path);
    let target = RecordingServer::start(Behaviour::Answer);
    let typescript = dir.path().join("typescript");
    let cmd = format!(
        "{} replay {} --target {} 2>&1 >/dev/null",
        shadowtap_bin(),
        path.display(),
        target.url()
    );
    let status = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, typescript.to_str().expect("utf8")])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("script");
    assert!(status.success(), "{status}");
    let shown =
        String::from_utf8_lossy(&std::fs::read(&typescript).expect("typescript")).into_owned();
    // indicatif's bar: position in bytes of the total, the requests so far, an ETA.
    assert!(shown.contains("[#") || shown.contains("[>"), "{shown:?}");
    assert!(shown.contains("B/"), "{shown:?}");
    assert!(shown.contains(" eta "), "{shown:?}");
    assert!(shown.contains("1 request "), "{shown:?}");
    assert!(!shown.contains("1 requests"), "{shown:?}");
    assert!(shown.contains('%'), "{shown:?}");
}

// --- `run`: the same on a live capture ----------------------------------------------------

/// `run --duration` on loopback: a request copied in a dry run (printed, nothing sent,
/// `1 request` in the summary), then a run that sees no request exits 4, every line JSON.
#[test]
fn run_dry_run_prints_the_copy_and_a_quiet_run_exits_4_in_json() {
    if !require_tools("run_dry_run_prints_the_copy", &["curl"]) {
        return;
    }
    let production = RecordingServer::start(Behaviour::Answer);
    let port = production
        .url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let stage = RecordingServer::start(Behaviour::Answer);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "--engine",
            "pcap",
            "--iface",
            "lo",
            "--port",
            &port,
            "--duration",
            "3s",
            "--admin-addr",
            "off",
            "--target",
            &stage.url(),
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| (*s).to_string()));
        a
    };
    let argv = args(&["--dry-run"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let child = spawn(&argv);
    std::thread::sleep(Duration::from_millis(1200));
    let curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-H", "Host: shop.example"])
        .arg(format!("{}/live", production.url()))
        .status()
        .expect("curl");
    assert!(curl.success());
    let out = child.wait_with_output().expect("run");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stage.connections(), 0, "a dry run connected to the target");
    assert!(stdout.contains("GET /live HTTP/1.1\n"), "{stdout}");
    assert!(stdout.contains("Host: shop.example-shadow\n"), "{stdout}");
    let summary = Summary::parse(&stdout).expect("summary");
    summary.assert_adds_up(1);
    assert!(stdout.contains("1 request seen in "), "{stdout}");
    assert!(!stdout.contains("frames in"), "{stdout}");

    let port2 = free_port().to_string();
    let mut argv = args(&["--log-format", "json"]);
    let at = argv.iter().position(|a| a == &port).expect("port");
    argv[at] = port2;
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = spawn(&argv).wait_with_output().expect("run");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{stdout}{stderr}");
    let out = assert_all_json("run stdout", &stdout);
    let err = assert_all_json("run stderr", &stderr);
    assert_eq!(out[0]["summary"]["requests_seen"], 0);
    assert!(err.iter().any(|e| e.get("capture").is_some()), "{stderr}");
    assert!(stderr.contains("no HTTP request found"), "{stderr}");
}

/// `run` is a service: SIGINT is how it is told to stop, so it exits 0 after its
/// summary (and, no `--duration` having bounded it, a quiet port is no error).
#[test]
fn run_stopped_by_sigint_exits_0_with_its_summary() {
    if !require_tools("run_stopped_by_sigint_exits_0", &[]) {
        return;
    }
    let stage = RecordingServer::start(Behaviour::Answer);
    let port = free_port().to_string();
    let mut child = spawn(&[
        "run",
        "--engine",
        "pcap",
        "--iface",
        "lo",
        "--port",
        &port,
        "--admin-addr",
        "off",
        "--target",
        &stage.url(),
    ]);
    std::thread::sleep(Duration::from_millis(1000));
    signal(&child, libc::SIGINT);
    assert!(
        exits_within(&mut child, Duration::from_secs(10)),
        "run still going 10s after SIGINT"
    );
    let out = child.wait_with_output().expect("run");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("0 requests seen in "), "{stdout}");
    assert!(!stderr.contains("no HTTP request found"), "{stderr}");
}

/// `demo` under `--log-format json` writes JSON lines only, and a reader that leaves
/// early (`| head -1`) does not make it panic.
#[test]
fn demo_in_json_and_into_a_closed_pipe() {
    let out = Command::new(shadowtap_bin())
        .args(["--log-format", "json", "demo"])
        .env_remove("RUST_LOG")
        .output()
        .expect("demo");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let lines = assert_all_json("demo stdout", &stdout);
    assert_all_json("demo stderr", &stderr);
    assert_eq!(
        lines[0]["demo"]["received"].as_array().map(Vec::len),
        Some(12)
    );
    assert_eq!(lines[1]["summary"]["requests_seen"], 12);
    // The two gRPC calls of the bundled h2c capture arrive with the `-shadow` authority.
    let grpc: Vec<&serde_json::Value> = lines[0]["demo"]["received"]
        .as_array()
        .expect("received")
        .iter()
        .filter(|r| r["target"] == "/helloworld.Greeter/SayHello")
        .collect();
    assert_eq!(grpc.len(), 2, "{stdout}");
    assert!(grpc
        .iter()
        .all(|r| r["host"] == "grpc-hello.example.cn-shadow:8000"));
    assert_eq!(lines[1]["summary"]["requests_seen_by_protocol"]["h2"], 2);

    let mut child = Command::new(shadowtap_bin())
        .arg("demo")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo");
    // Read nothing, close the pipe: every write after this fails with EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("demo");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `inspect` on a terminal draws the bar too (over the bytes read, naming the file);
/// piped, its stderr is the summary alone.
#[test]
fn inspect_draws_a_progress_bar_on_a_terminal_only() {
    if !require_tools("inspect_draws_a_progress_bar", &["script"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = posts(dir.path(), "many.pcapng", 3000, "");
    let typescript = dir.path().join("typescript");
    let cmd = format!(
        "{} inspect {} 2>&1 >/dev/null",
        shadowtap_bin(),
        path.display()
    );
    let status = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, typescript.to_str().expect("utf8")])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("script");
    assert!(status.success(), "{status}");
    let shown =
        String::from_utf8_lossy(&std::fs::read(&typescript).expect("typescript")).into_owned();
    assert!(shown.contains("B/"), "{shown:?}");
    assert!(shown.contains("many.pcapng"), "{shown:?}");
    assert!(shown.contains(" eta "), "{shown:?}");

    let out = Command::new(shadowtap_bin())
        .args(["inspect", path.to_str().expect("utf8")])
        .env_remove("RUST_LOG")
        .output()
        .expect("inspect");
    let (_, stderr) = text(&out);
    assert!(
        !stderr.contains('\r') && !stderr.contains(" eta "),
        "{stderr:?}"
    );
    assert!(stderr.starts_with("requests seen: 3000"), "{stderr:?}");
}
