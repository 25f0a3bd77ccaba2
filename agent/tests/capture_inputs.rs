//! Where captures come from besides a plain file (issue 21, item 7): standard input (`-`)
//! for `inspect` and `replay`, and gzip or zstd compressed captures (tcpdump `-z`
//! rotations), recognised by their first bytes whatever the file is called. The real
//! binary reads them through a real pipe from the real `gzip` and `zstd` tools.

#[expect(
    dead_code,
    reason = "shared test support; this file uses the runner and the recording server"
)]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{corpus, require_tools, run_shadowtap, shadowtap_bin, Behaviour, RecordingServer};

/// `sh -c SCRIPT` with `$B` the binary and `$F` the capture: how a user pipes.
fn shell(script: &str, file: &Path) -> Output {
    Command::new("sh")
        .args(["-c", script])
        .env("B", shadowtap_bin())
        .env("F", file)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn inspect_file(file: &Path) -> String {
    let out = shell("\"$B\" inspect \"$F\"", file);
    assert!(out.status.success(), "inspect: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn inspect_reads_stdin_and_gzip_and_zstd_streams() {
    if !require_tools(
        "inspect_reads_stdin_and_gzip_and_zstd_streams",
        &["gzip", "zstd"],
    ) {
        return;
    }
    let file = corpus("pipelined-requests.pcap");
    let expected = inspect_file(&file);
    assert_eq!(expected.lines().count(), 5, "{expected}");
    for (what, script) in [
        ("plain on stdin", "cat \"$F\" | \"$B\" inspect -"),
        ("gzip on stdin", "gzip -c \"$F\" | \"$B\" inspect -"),
        ("zstd on stdin", "zstd -q -c \"$F\" | \"$B\" inspect -"),
        // Two gzip members, as `cat a.gz b.gz` makes: one stream of bytes.
        (
            "two gzip members",
            "{ head -c 1000 \"$F\" | gzip -c; tail -c +1001 \"$F\" | gzip -c; } | \"$B\" inspect -",
        ),
        // Two zstd frames (as `zstd -c a; zstd -c b` or a multi-threaded zstd makes).
        (
            "two zstd frames",
            "{ head -c 3000 \"$F\" | zstd -q -c; tail -c +3001 \"$F\" | zstd -q -c; } | \"$B\" inspect -",
        ),
        (
            "zstd at level 19 with a long window",
            "zstd -q -19 --long=24 -c \"$F\" | \"$B\" inspect -",
        ),
    ] {
        let out = shell(script, &file);
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected, "{what}");
    }
}

#[test]
fn compressed_files_are_told_by_their_bytes_not_their_name() {
    if !require_tools(
        "compressed_files_are_told_by_their_bytes_not_their_name",
        &["gzip", "zstd"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = corpus("pipelined-requests.pcap");
    let expected = inspect_file(&file);
    // Named like plain captures, as a rotation script may leave them.
    let gz = dir.path().join("rotated.pcap");
    let zst = dir.path().join("rotated-2.pcap0");
    let out = shell(
        &format!(
            "gzip -c \"$F\" > {} && zstd -q -c \"$F\" > {}",
            gz.display(),
            zst.display()
        ),
        &file,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for compressed in [&gz, &zst] {
        assert_eq!(
            inspect_file(compressed),
            expected,
            "{}",
            compressed.display()
        );
    }
    // Several files in one run, one of them compressed, one on stdin.
    let out = shell(
        &format!(
            "zstd -q -c \"$F\" | \"$B\" inspect {} - \"$F\"",
            gz.display()
        ),
        &file,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected.repeat(3));
}

#[test]
fn a_damaged_compressed_stream_is_named_not_misread() {
    if !require_tools(
        "a_damaged_compressed_stream_is_named_not_misread",
        &["gzip"],
    ) {
        return;
    }
    let file = corpus("pipelined-requests.pcap");
    // Cut in the middle of the deflate data: what came before is reported, exit 1.
    let out = shell("gzip -c \"$F\" | head -c 20000 | \"$B\" inspect -", &file);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("-: read failed"), "{stderr}");
    // A zstd frame asking for a 1 GiB window: refused before any of it is allocated.
    let out = shell(
        "printf '\\050\\265\\057\\375\\000\\240\\001\\000\\000' | \"$B\" inspect -",
        &file,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("1073741824-byte window"), "{stderr}");
    // Neither pcap nor a compression we know: the message names what is accepted.
    let out = shell("echo 'GET / HTTP/1.1' | \"$B\" inspect -", &file);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("gzip or zstd"), "{stderr}");
}

#[test]
fn stdin_is_read_once() {
    let file = corpus("pipelined-requests.pcap");
    let out = shell("\"$B\" inspect - - < \"$F\"", &file);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("can be read only once"),
        "{}",
        text(&out.stderr)
    );
    for script in [
        "\"$B\" replay - - --target http://127.0.0.1:9 < \"$F\"",
        "\"$B\" replay - --loop 2 --target http://127.0.0.1:9 < \"$F\"",
    ] {
        let out = shell(script, &file);
        assert_eq!(out.status.code(), Some(2), "{script}");
        assert!(
            text(&out.stderr).contains("can be read only once"),
            "{script}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn replay_sends_the_requests_of_a_compressed_capture_on_stdin() {
    if !require_tools(
        "replay_sends_the_requests_of_a_compressed_capture_on_stdin",
        &["zstd"],
    ) {
        return;
    }
    let server = RecordingServer::start(Behaviour::Answer);
    let file = corpus("pipelined-requests.pcap");
    let out = shell(
        &format!(
            "zstd -q -c \"$F\" | \"$B\" replay - --speed max --drain-timeout 10s --target {}",
            server.url()
        ),
        &file,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let summary = support::Summary::parse(&stdout).expect("summary");
    summary.assert_adds_up(5);
    let received = server.received();
    assert_eq!(received.len(), 5, "{stdout}");
    // The same copies as from the file itself.
    let direct = RecordingServer::start(Behaviour::Answer);
    let url = direct.url();
    let finished = run_shadowtap(
        &[
            "replay",
            &file.display().to_string(),
            "--speed",
            "max",
            "--target",
            &url,
        ],
        Duration::from_secs(30),
    );
    finished.assert_success();
    let targets = |r: &[support::Received]| {
        let mut t: Vec<(Vec<u8>, String)> =
            r.iter().map(|r| (r.target.clone(), r.host())).collect();
        t.sort();
        t
    };
    assert_eq!(targets(&received), targets(&direct.received()));
}
