//! `replay --diff` end to end with real servers: a Python JSON service as production
//! (v1) on loopback, curl as its clients, tcpdump recording both directions; then the
//! capture replayed into v2 (the candidate, which differs on purpose: see
//! tests/diff/versions.py) with `--diff`. Asserted: identical routes all `match`, the
//! changed field named by its path, the status route counted `status`, the random field
//! reported as noise (not a difference), ids templated into one route, the samples file
//! read back by `shadowtap report` with the same counts, and exit code 0 whatever the
//! comparison found. Needs root (tcpdump) and curl; under CI=true a missing one fails.

mod diff;
#[expect(
    dead_code,
    reason = "shared with the replay tests, which use the helpers this test does not"
)]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diff::{diff_table, route_counts, BODY, MATCH, STATUS};

use support::{free_port, require_tools, run_shadowtap, Tcpdump};

/// One version of the service; killed when dropped.
struct Version(Child);

impl Version {
    fn start(port: u16, version: &str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diff/versions.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([&port.to_string(), version])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 versions.py");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
            &mut line,
        )
        .expect("read");
        assert_eq!(
            line.trim(),
            "listening",
            "versions.py {version} did not start"
        );
        Self(child)
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// curl fetching `paths` (in order, one keep-alive connection) from `port`.
fn curl(port: u16, paths: &[&str]) {
    let urls: Vec<String> = paths
        .iter()
        .map(|p| format!("http://127.0.0.1:{port}{p}"))
        .collect();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\\n",
            "--max-time",
            "10",
        ])
        .args(&urls)
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl failed: {out:?}");
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().count(), paths.len(), "{codes}");
}

#[test]
fn replay_diff_compares_production_answers_with_the_candidates() {
    if !require_tools(
        "replay_diff_compares_production_answers_with_the_candidates",
        &["tcpdump", "curl", "python3"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("prod.pcap");
    let (prod_port, stage_port) = (free_port(), free_port());
    let prod = Version::start(prod_port, "v1");
    let tcpdump = Tcpdump::start(&pcap, prod_port);
    // Each route on its own connection and again on a shared one (pairing in order).
    curl(prod_port, &["/same", "/same", "/same"]);
    curl(prod_port, &["/user", "/user"]);
    curl(prod_port, &["/status", "/status"]);
    curl(prod_port, &["/slow"]);
    curl(prod_port, &["/random", "/random", "/random"]);
    curl(prod_port, &["/users/1", "/users/22", "/users/333"]);
    curl(
        prod_port,
        &["/same", "/user", "/status", "/random", "/users/4"],
    );
    tcpdump.stop();
    drop(prod);

    let _stage = Version::start(stage_port, "v2");
    let samples = dir.path().join("diff.jsonl");
    let pcap_arg = pcap.to_str().expect("utf-8");
    let samples_arg = samples.to_str().expect("utf-8");
    let target = format!("http://127.0.0.1:{stage_port}");
    let run = run_shadowtap(
        &[
            "replay",
            pcap_arg,
            "--port",
            &prod_port.to_string(),
            "--speed",
            "max",
            "--target",
            &target,
            "--diff",
            "--diff-samples",
            samples_arg,
        ],
        Duration::from_secs(60),
    );
    run.assert_success();
    let table = &diff_table(&run.stdout);
    println!("{table}");
    let same = route_counts(table, "GET /same");
    assert_eq!(
        same[MATCH], 4,
        "identical answers all match: {same:?}\n{table}"
    );
    assert_eq!(same.iter().sum::<u64>(), 4, "{table}");

    let user = route_counts(table, "GET /user");
    assert_eq!(
        user[BODY], 3,
        "the renamed user is a body difference\n{table}"
    );
    assert!(
        table.contains("$.user.name"),
        "the differing field is named by its path:\n{table}"
    );

    let status = route_counts(table, "GET /status");
    assert_eq!(status[STATUS], 3, "{table}");

    let slow = route_counts(table, "GET /slow");
    assert_eq!(slow[MATCH], 1, "slower but the same answer: {table}");

    // Production's own answers to the identical /random requests differ in $.nonce:
    // learned as noise, so the pairs match and the field is listed apart.
    let random = route_counts(table, "GET /random");
    assert_eq!(random.iter().sum::<u64>(), 4, "{table}");
    assert!(
        random[MATCH] >= 2,
        "noise is not a difference: {random:?}\n{table}"
    );
    assert!(table.contains("noisy:$.nonce"), "{table}");

    let users = route_counts(table, "GET /users/{id}");
    assert_eq!(users[MATCH], 4, "ids templated into one route: {table}");

    // With a baseline (v1 again, in staging) the random field is noise by Diffy's
    // margins: it differs as often on the baseline as on the candidate.
    let baseline_port = free_port();
    let _baseline = Version::start(baseline_port, "v1");
    let with_base = run_shadowtap(
        &[
            "replay",
            pcap_arg,
            "--port",
            &prod_port.to_string(),
            "--speed",
            "max",
            "--target",
            &target,
            "--diff",
            "--diff-baseline",
            &format!("http://127.0.0.1:{baseline_port}"),
        ],
        Duration::from_secs(60),
    );
    with_base.assert_success();
    let based = &diff_table(&with_base.stdout);
    println!("{based}");
    let random = route_counts(based, "GET /random");
    assert_eq!(random[MATCH], 4, "{based}");
    assert!(based.contains("noisy:$.nonce"), "{based}");
    assert_eq!(route_counts(based, "GET /user")[BODY], 3, "{based}");
    assert_eq!(route_counts(based, "GET /status")[STATUS], 3, "{based}");
    // The baseline is a target of its own in the outcome tables, never in the diff's.
    assert!(
        with_base
            .stdout
            .contains(&format!("target http://127.0.0.1:{baseline_port}")),
        "{}",
        with_base.stdout
    );

    // Sampled at 50%: only the copies sent are compared (the others' answers are framed
    // and skipped), and each of them exactly once.
    let half = run_shadowtap(
        &[
            "replay",
            pcap_arg,
            "--port",
            &prod_port.to_string(),
            "--speed",
            "max",
            "--target",
            &format!("{target}@50"),
            "--diff",
        ],
        Duration::from_secs(60),
    );
    half.assert_success();
    let sent = half.summary().target(&target).get("replayed 2xx")
        + half.summary().target(&target).get("replayed 5xx");
    let half_table = diff_table(&half.stdout);
    let compared: u64 = half_table
        .lines()
        .filter(|l| l.starts_with("GET "))
        .map(|l| {
            let route_end = l.find("  ").unwrap_or(l.len());
            l[route_end..]
                .split_whitespace()
                .map(|n| n.parse::<u64>().expect("count"))
                .sum::<u64>()
        })
        .sum();
    assert!(
        sent > 0 && sent < 20,
        "about half of 20 sampled: {sent}\n{}",
        half.stdout
    );
    assert_eq!(compared, sent, "{half_table}");

    // The samples file alone gives the same table.
    let report = run_shadowtap(&["report", samples_arg], Duration::from_secs(20));
    report.assert_success();
    for route in ["GET /same", "GET /user", "GET /status", "GET /users/{id}"] {
        assert_eq!(
            route_counts(&report.stdout, route),
            route_counts(table, route),
            "report {route}:\n{}",
            report.stdout
        );
    }
    let html = dir.path().join("report.html");
    let page = run_shadowtap(
        &[
            "report",
            samples_arg,
            "--html",
            html.to_str().expect("utf-8"),
        ],
        Duration::from_secs(20),
    );
    page.assert_success();
    let text = std::fs::read_to_string(&html).expect("html written");
    assert!(
        text.contains("/users/{id}") && text.contains("$.user.name"),
        "{text}"
    );
}
