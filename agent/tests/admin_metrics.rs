//! The admin server of a real `shadowtap run`: the agent captures in a `prod` network
//! namespace (httpbin under gunicorn) and shadows to two recording servers in `stage`,
//! curl sends real requests from `client`, and `/metrics` is scraped over HTTP and parsed
//! with the Prometheus project's own text-format parser (python `prometheus_client`). The
//! scraped counters must add up, match what the targets received, and match the summary
//! printed at SIGTERM, also while wrk keeps the agent's pipeline behind. Needs root,
//! iproute2, curl, nginx, wrk, python3 with gunicorn, httpbin and prometheus_client
//! (.ci/setup); under CI=true a missing one fails the test.

#[expect(
    dead_code,
    reason = "shared with live_netns.rs, which uses the helpers this test does not"
)]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::*;

const HOST: &str = "Host: httpbin:8000";
/// Default of `--admin-addr`; each test's agent has the `prod` namespace's loopback.
const ADMIN: &str = "127.0.0.1:9477";

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `preflight`, plus the Prometheus parser.
fn ready_to_run(test: &str) -> bool {
    if !preflight(test, &["ss"]) {
        return false;
    }
    let parser = Command::new("python3")
        .args(["-c", "import prometheus_client.parser"])
        .stderr(Stdio::null())
        .status();
    if parser.is_ok_and(|s| s.success()) {
        return true;
    }
    let reason = format!("{test}: needs python module prometheus_client (.ci/setup)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason}");
    }
    eprintln!("SKIP {reason}");
    false
}

/// Fetches `/metrics` with urllib and parses it with prometheus_client; prints JSON.
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    content_type = r.headers.get("Content-Type")
    body = r.read().decode("utf-8")
families = []
for fam in text_string_to_metric_families(body):
    families.append({
        "name": fam.name,
        "type": fam.type,
        "samples": [
            {"name": s.name, "labels": s.labels, "value": repr(float(s.value))}
            for s in fam.samples
        ],
    })
print(json.dumps({"content_type": content_type, "families": families}))
"#;

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug)]
struct Scrape {
    content_type: String,
    /// family name -> type, as the parser read them.
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    fn take(ns: &Netns) -> Scrape {
        let out = ns.exec_ok(&["python3", "-c", SCRAPE, &format!("http://{ADMIN}/metrics")]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("scraper JSON");
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for fam in v["families"].as_array().expect("families") {
            let fam_name = fam["name"].as_str().unwrap_or_default().to_string();
            types.insert(
                fam_name,
                fam["type"].as_str().unwrap_or_default().to_string(),
            );
            for s in fam["samples"].as_array().expect("samples") {
                let labels = s["labels"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                samples.push(Sample {
                    name: s["name"].as_str().unwrap_or_default().to_string(),
                    labels,
                    value: s["value"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .expect("value"),
                });
            }
        }
        Scrape {
            content_type: v["content_type"].as_str().unwrap_or_default().to_string(),
            types,
            samples,
        }
    }

    /// Sum of the samples named `name` whose labels include `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.matching(name, want).map(|s| s.value).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Exactly one sample named `name` with labels including `want`.
    fn one(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.matching(name, want).collect();
        assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
        found[0].value
    }

    /// Non-zero outcome counts of one target, keyed like the summary's rows.
    fn outcomes(&self, target: &str) -> BTreeMap<String, u64> {
        self.matching("shadowtap_requests_total", &[("target", target)])
            .filter(|s| s.value > 0.0)
            .map(|s| {
                let (outcome, detail) = (&s.labels["outcome"], &s.labels["detail"]);
                let row = if detail.is_empty() {
                    outcome.clone()
                } else {
                    format!("{outcome} {detail}")
                };
                (row, s.value as u64)
            })
            .collect()
    }
}

/// Waits until `/readyz` says 200, failing if the agent reports an error first.
fn wait_ready(ns: &Netns, agent: &Proc) {
    wait_until(Duration::from_secs(20), "/readyz 200", || {
        let err = agent.stderr_text();
        // An error is a line of its own starting `shadowtap: `; log lines name the target
        // `shadowtap:` after their timestamp and level.
        assert!(
            !err.lines().any(|l| l.starts_with("shadowtap: ")),
            "agent failed: {err}"
        );
        ns.admin_status(ADMIN, "/readyz") == 200
    });
}

/// Outcome rows per target of an end-of-run summary (`target URL` then indented rows).
fn summary_outcomes(summary: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut all: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut current = None;
    for line in summary.lines() {
        if let Some(url) = line.strip_prefix("target ") {
            let label = url.split_once("://").map_or(url, |(_, rest)| rest);
            current = Some(label.to_string());
            all.entry(label.to_string()).or_default();
        } else if let (Some(t), Some(row)) = (&current, line.strip_prefix("  ")) {
            // `replayed 2xx     10`, `total   10  (= requests seen)`: the label is the
            // words before the first number.
            let words: Vec<&str> = row.split_whitespace().collect();
            let at = words
                .iter()
                .position(|w| w.parse::<u64>().is_ok())
                .expect("count on an outcome row");
            let label = words[..at].join(" ");
            if label != "total" {
                let count = words[at].parse().expect("count");
                all.get_mut(t).expect("target").insert(label, count);
            }
        }
    }
    all
}

/// A second recording server in stage on `port`, logging to `log`.
fn start_stage_on(topo: &Topology, port: &str, log: &Path) -> Proc {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/stage_server.py");
    let out = topo.path(&format!("stage{port}.out"));
    let proc = topo.stage.spawn(
        &[
            "python3",
            script,
            STAGE_IP,
            port,
            log.to_str().expect("utf-8"),
        ],
        &out,
        &topo.path(&format!("stage{port}.err")),
    );
    wait_until(Duration::from_secs(10), "second stage server", || {
        read(&out).contains("ready")
    });
    proc
}

fn log_lines(path: &Path) -> u64 {
    read(path).lines().count() as u64
}

#[test]
fn metrics_add_up_match_the_targets_and_the_summary() {
    if !ready_to_run("metrics_add_up_match_the_targets_and_the_summary") {
        return;
    }
    let _serial = lock();
    let mut topo = Topology::new("adm");
    topo.start_prod();
    topo.start_stage();
    let half_log = topo.path("stage-half.jsonl");
    let _half = start_stage_on(&topo, "8001", &half_log);
    let full = format!("{STAGE_IP}:8000");
    let half = format!("{STAGE_IP}:8001");
    // Nothing listens there: every copy is a `replay_error connect`.
    let refused = format!("{STAGE_IP}:8002");
    const N: u64 = 60;
    for engine in ["ebpf", "pcap"] {
        topo.clear_stage_log();
        std::fs::write(&half_log, "").expect("truncate log");
        // The admin address is left at its default.
        let mut agent = topo.prod.spawn(
            &[
                BIN,
                "run",
                "--port",
                "8000",
                "--drain-timeout",
                "3s",
                "--engine",
                engine,
                "--iface",
                PROD_IF,
                "--target",
                &format!("http://{full}"),
                "--target",
                &format!("http://{half}@50"),
                "--target",
                &format!("http://{refused}"),
            ],
            &topo.path(&format!("agent-{engine}.out")),
            &topo.path(&format!("agent-{engine}.err")),
        );
        wait_ready(&topo.prod, &agent);
        assert_eq!(topo.prod.admin_status(ADMIN, "/healthz"), 200);
        assert_eq!(topo.prod.admin_status(ADMIN, "/no-such-page"), 404);

        // Half the requests get 404 from prod; the copies still get 200 from stage.
        let ok = format!("http://{PROD_IP}:8000/headers?{engine}=[1-{}]", N / 2);
        let missing = format!("http://{PROD_IP}:8000/status/404?{engine}=[1-{}]", N / 2);
        let codes = topo.curl(&["-H", HOST, "-w", "%{http_code}\\n", &ok, &missing]);
        assert_eq!(codes.len() as u64, N, "{codes:?}");

        // Settled: every request seen and every copy answered or given up on. Whatever
        // the last scrape says is then checked below, with the numbers in the message.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let scrape = loop {
            let scrape = Scrape::take(&topo.prod);
            let seen = scrape.one("shadowtap_requests_seen_total", &[]);
            // Capture figures are published once a second: wait for them too.
            let settled = seen >= N as f64
                && scrape.sum("shadowtap_capture_packets_total", &[]) >= N as f64
                && [&full, &half, &refused]
                    .iter()
                    .all(|t| scrape.sum("shadowtap_requests_total", &[("target", t)]) == seen);
            if settled || std::time::Instant::now() > deadline {
                break scrape;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(scrape.sum("shadowtap_queue_depth", &[]), 0.0);

        assert!(
            scrape.content_type.starts_with("text/plain; version=0.0.4"),
            "{}",
            scrape.content_type
        );
        for (family, kind) in [
            ("shadowtap_requests_seen", "counter"),
            ("shadowtap_requests", "counter"),
            ("shadowtap_target_responses", "counter"),
            ("shadowtap_replay_duration_seconds", "histogram"),
            ("shadowtap_queue_depth", "gauge"),
            ("shadowtap_capture_packets", "counter"),
            ("shadowtap_capture_drops", "counter"),
            ("shadowtap_flows_active", "gauge"),
            ("shadowtap_ready", "gauge"),
        ] {
            assert_eq!(
                scrape.types.get(family).map(String::as_str),
                Some(kind),
                "{family}"
            );
        }
        let seen = scrape.one("shadowtap_requests_seen_total", &[]);
        assert_eq!(seen, N as f64, "requests seen vs sent");
        let stage_got = [log_lines(&topo.stage_log()), log_lines(&half_log)];
        for (target, received) in [(&full, stage_got[0]), (&half, stage_got[1]), (&refused, 0)] {
            let t = [("target", target.as_str())];
            assert_eq!(
                scrape.sum("shadowtap_requests_total", &t),
                seen,
                "{target}: outcomes vs seen"
            );
            let ok = [
                ("target", target.as_str()),
                ("protocol", "http1"),
                ("outcome", "replayed"),
                ("detail", "2xx"),
            ];
            let replayed_2xx = scrape.one("shadowtap_requests_total", &ok);
            assert_eq!(
                replayed_2xx, received as f64,
                "{target}: replayed 2xx vs received"
            );
            let replayed = scrape.sum(
                "shadowtap_requests_total",
                &[("target", target.as_str()), ("outcome", "replayed")],
            );
            assert_eq!(
                scrape.one("shadowtap_replay_duration_seconds_count", &t),
                replayed,
                "{target}: histogram count vs replayed"
            );
            let inf = [("target", target.as_str()), ("le", "+Inf")];
            assert_eq!(
                scrape.one("shadowtap_replay_duration_seconds_bucket", &inf),
                replayed,
                "{target}"
            );
            let class = [("target", target.as_str()), ("class", "2xx")];
            assert_eq!(
                scrape.one("shadowtap_target_responses_total", &class),
                replayed_2xx
            );
            let sum = scrape.one("shadowtap_replay_duration_seconds_sum", &t);
            assert!(
                (sum > 0.0) == (replayed > 0.0) && sum < replayed * 10.0 + 1e-9,
                "{target}: latency sum {sum}"
            );
        }
        // 100% and 50%: all copies to the first, a binomial share to the second.
        assert_eq!(stage_got[0], N);
        assert!((10..=50).contains(&stage_got[1]), "{stage_got:?}");
        let e = [("engine", engine)];
        let packets = scrape.one("shadowtap_capture_packets_total", &e);
        assert!(
            packets >= N as f64,
            "{engine}: {packets} packets for {N} requests"
        );
        assert!(scrape.one("shadowtap_capture_bytes_total", &e) > packets * 40.0);
        assert!(scrape.matching("shadowtap_capture_drops_total", &e).count() >= 2);
        assert!(scrape.one("shadowtap_interfaces_attached", &[]) >= 1.0);
        assert_eq!(scrape.one("shadowtap_ready", &[]), 1.0);
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        assert_eq!(scrape.one("shadowtap_build_info", &version), 1.0);
        let mut outcomes = BTreeMap::new();
        outcomes.insert(full.clone(), scrape.outcomes(&full));
        outcomes.insert(half.clone(), scrape.outcomes(&half));
        outcomes.insert(refused.clone(), scrape.outcomes(&refused));
        let connect = [
            ("target", refused.as_str()),
            ("protocol", "http1"),
            ("outcome", "replay_error"),
            ("detail", "connect"),
        ];
        assert_eq!(scrape.one("shadowtap_requests_total", &connect), N as f64);

        agent.signal("-TERM");
        let status = agent.wait(Duration::from_secs(15));
        let (summary, err) = (agent.stdout_text(), agent.stderr_text());
        assert!(status.success(), "agent exited with {status}: {err}");
        assert_eq!(requests_seen(&summary), N, "{summary}");
        assert_eq!(
            summary_outcomes(&summary),
            outcomes,
            "summary vs /metrics:\n{summary}"
        );
        // Stopped with the process.
        assert_eq!(topo.prod.admin_status(ADMIN, "/healthz"), 0);
        eprintln!("{engine}: {outcomes:?}, {packets} packets");
    }
}

#[test]
fn readyz_waits_for_an_interface_and_off_opens_no_port() {
    if !ready_to_run("readyz_waits_for_an_interface_and_off_opens_no_port") {
        return;
    }
    let _serial = lock();
    let ns = Netns::new(format!("st-{}-rdy", std::process::id()));
    let dir = tempfile::tempdir().expect("tempdir");
    let target = "http://127.0.0.1:9";
    // A glob that matches nothing yet: up, but not ready.
    let agent = ns.spawn(
        &[
            BIN, "run", "--port", "8000", "--engine", "ebpf", "--iface", "rdy*", "--target", target,
        ],
        &dir.path().join("a.out"),
        &dir.path().join("a.err"),
    );
    wait_until(Duration::from_secs(20), "/healthz 200", || {
        ns.admin_status(ADMIN, "/healthz") == 200
    });
    assert_eq!(ns.admin_status(ADMIN, "/readyz"), 503);
    let scrape = Scrape::take(&ns);
    assert_eq!(scrape.one("shadowtap_ready", &[]), 0.0);
    assert_eq!(scrape.one("shadowtap_interfaces_attached", &[]), 0.0);
    // The interface appears: attached within the rescan period, then ready.
    ns.exec_ok(&[
        "ip", "link", "add", "rdy0", "type", "veth", "peer", "name", "other0",
    ]);
    ns.exec_ok(&["ip", "link", "set", "rdy0", "up"]);
    wait_ready(&ns, &agent);
    let scrape = Scrape::take(&ns);
    assert_eq!(scrape.one("shadowtap_interfaces_attached", &[]), 1.0);
    assert_eq!(scrape.one("shadowtap_ready", &[]), 1.0);
    drop(agent);

    // `--admin-addr off`: capture runs, no listening socket at all.
    let mut agent = ns.spawn(
        &[
            BIN,
            "run",
            "--port",
            "8000",
            "--engine",
            "pcap",
            "--iface",
            "rdy0",
            "--target",
            target,
            "--admin-addr",
            "off",
        ],
        &dir.path().join("b.out"),
        &dir.path().join("b.err"),
    );
    wait_agent_ready(&agent);
    let listening = String::from_utf8_lossy(&ns.exec_ok(&["ss", "-Hltnp"]).stdout).to_string();
    assert!(
        !listening.contains(&format!("pid={},", agent.pid())),
        "agent listens: {listening}"
    );
    assert_eq!(ns.admin_status(ADMIN, "/healthz"), 0);
    agent.signal("-TERM");
    assert!(agent.wait(Duration::from_secs(15)).success());

    // A bad address is one line and exit code 2, before anything starts.
    let out = ns.exec(&[
        BIN,
        "run",
        "--port",
        "8000",
        "--target",
        target,
        "--admin-addr",
        "nowhere",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin-addr") && err.lines().count() == 1,
        "{err}"
    );
}

/// nginx in `prod`: the live server on the watched veth, and a sink for the copies on
/// loopback (not watched). It goes with the namespace.
fn start_nginx(topo: &Topology) {
    let dir = topo.path("nginx");
    std::fs::create_dir_all(&dir).expect("nginx dir");
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         keepalive_requests 1000000;\n\
         server {{ listen {PROD_IP}:8000; location / {{ return 200 \"ok\\n\"; }} }}\n\
         server {{ listen 127.0.0.1:9000; location / {{ return 200 \"sunk\\n\"; }} }} }}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    topo.prod
        .exec_ok(&["nginx", "-c", path.to_str().expect("utf-8")]);
}

#[test]
fn answers_scrapes_under_load_and_still_adds_up() {
    if !ready_to_run("answers_scrapes_under_load_and_still_adds_up")
        || !preflight(
            "answers_scrapes_under_load_and_still_adds_up",
            &["nginx", "wrk"],
        )
    {
        return;
    }
    let _serial = lock();
    let topo = Topology::new("load");
    start_nginx(&topo);
    // A short queue, so that the load overflows it and `queue_full` is counted too.
    let mut agent = topo.prod.spawn(
        &[
            BIN,
            "run",
            "--port",
            "8000",
            "--engine",
            "ebpf",
            "--iface",
            PROD_IF,
            "--target",
            "http://127.0.0.1:9000",
            "--queue-len",
            "64",
            "--max-in-flight",
            "4",
        ],
        &topo.path("agent.out"),
        &topo.path("agent.err"),
    );
    wait_ready(&topo.prod, &agent);
    let wrk = topo
        .client
        .cmd(&[
            "wrk",
            "-t2",
            "-c64",
            "-d6s",
            &format!("http://{PROD_IP}:8000/"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk");
    std::thread::sleep(Duration::from_millis(500));
    // curl times the exchange itself (connect to last byte), not a process start-up,
    // which on two busy cores is most of the wall time.
    let mut times = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..15 {
        let out = topo.prod.exec_ok(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code} %{time_total}\n",
            &format!("http://{ADMIN}/metrics"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let status = text.lines().last().unwrap_or_default().to_string();
        let (code, secs) = status.split_once(' ').unwrap_or_default();
        assert_eq!(code, "200", "{status}");
        times.push(secs.parse::<f64>().expect("time_total"));
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("shadowtap_requests_seen_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("requests seen in the scrape");
        seen.push(count);
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = wrk.wait_with_output().expect("wrk");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk: {report}");
    let slowest = times.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "scrapes under load: slowest {slowest:.4}s of {}; seen {seen:?}",
        times.len()
    );
    assert!(slowest < 1.0, "scrape seconds: {times:?}");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen.last() > seen.first(),
        "requests seen while scraping: {seen:?}"
    );
    // And the Prometheus parser reads what was served under load.
    Scrape::take(&topo.prod);

    // The agent may still be working through a backlog after wrk ends: settled is when
    // requests seen stay put for a while and every one has its outcome.
    let settled = std::time::Instant::now() + Duration::from_secs(30);
    // A busy machine can starve the agent for a moment, so quiet means three scrapes a
    // second apart that agree.
    let mut last_seen = -1.0;
    let mut quiet_for = 0;
    let scrape = loop {
        let scrape = Scrape::take(&topo.prod);
        let seen = scrape.one("shadowtap_requests_seen_total", &[]);
        quiet_for = if seen == last_seen { quiet_for + 1 } else { 0 };
        last_seen = seen;
        if (quiet_for >= 2 && scrape.sum("shadowtap_requests_total", &[]) == seen)
            || std::time::Instant::now() > settled
        {
            break scrape;
        }
        std::thread::sleep(Duration::from_millis(1000));
    };
    let seen = scrape.one("shadowtap_requests_seen_total", &[]);
    assert_eq!(
        scrape.sum("shadowtap_requests_total", &[]),
        seen,
        "outcomes vs seen"
    );
    let replayed = scrape.sum("shadowtap_requests_total", &[("outcome", "replayed")]);
    assert_eq!(
        scrape.one("shadowtap_replay_duration_seconds_count", &[]),
        replayed
    );
    let outcomes = BTreeMap::from([(
        "127.0.0.1:9000".to_string(),
        scrape.outcomes("127.0.0.1:9000"),
    )]);
    agent.signal("-TERM");
    assert!(agent.wait(Duration::from_secs(20)).success());
    let summary = agent.stdout_text();
    // This load overflows the ring on purpose (`ring_full`), and a connection that lost
    // a packet may still hold requests behind the hole when the agent stops: shutdown
    // releases them, so the summary may only have more of each outcome than the last
    // scrape, never less. (The light-load test above checks exact equality.)
    assert!(requests_seen(&summary) as f64 >= seen, "{summary}");
    let final_outcomes = summary_outcomes(&summary);
    for (target, rows) in &outcomes {
        for (row, n) in rows {
            let at_end = final_outcomes
                .get(target)
                .and_then(|r| r.get(row))
                .copied()
                .unwrap_or(0);
            assert!(at_end >= *n, "{target} {row}: {at_end} < {n}\n{summary}");
        }
    }
    let rps = report
        .lines()
        .find(|l| l.starts_with("Requests/sec"))
        .unwrap_or_default();
    eprintln!("{rps}; {outcomes:?}");
}

/// Moves the calling thread into `ns`: the sockets it opens from then on live there.
fn enter(ns: &Netns) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{}", ns.name)).expect("netns file");
    // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Threads and open file descriptors of process `pid`.
fn threads_and_fds(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (threads, fds)
}

/// One GET on a fresh connection: the status (0 when the connection was closed or
/// refused without an answer) and how long the exchange took.
fn probe(addr: std::net::SocketAddr, path: &str) -> (u16, Duration) {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let answer = (|| -> std::io::Result<Vec<u8>> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: kubelet\r\n\r\n").as_bytes())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    })();
    let status = answer
        .ok()
        .and_then(|a| {
            String::from_utf8_lossy(&a)
                .strip_prefix("HTTP/1.1 ")
                .and_then(|r| r.get(..3))
                .and_then(|c| c.parse().ok())
        })
        .unwrap_or(0);
    (status, started.elapsed())
}

/// Issue 19, class 9: a kubelet probe is answered within a second while 500 idle
/// connections and 100 slowloris clients (a byte a second, reconnecting when closed)
/// hold the admin port of a real agent; the idle ones are closed by the head deadline,
/// and the agent's threads and file descriptors stay bounded.
#[test]
fn probes_answer_within_a_second_while_hundreds_of_clients_hold_the_admin_port() {
    const TEST: &str =
        "probes_answer_within_a_second_while_hundreds_of_clients_hold_the_admin_port";
    if !preflight(TEST, &[]) {
        return;
    }
    let _serial = lock();
    let ns = Netns::new(format!("st-{}-starve", std::process::id()));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = ns.spawn(
        &[
            BIN,
            "run",
            "--port",
            "8000",
            "--engine",
            "pcap",
            "--iface",
            "lo",
            "--target",
            "http://127.0.0.1:9",
        ],
        &dir.path().join("a.out"),
        &dir.path().join("a.err"),
    );
    wait_until(Duration::from_secs(20), "/healthz 200", || {
        ns.admin_status(ADMIN, "/healthz") == 200
    });
    let pid = agent.pid();
    let (threads_before, fds_before) = threads_and_fds(pid);
    let addr: std::net::SocketAddr = ADMIN.parse().expect("admin addr");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (probes, idle_open, peak, reconnects) = std::thread::scope(|s| {
        let idle = s
            .spawn(|| {
                enter(&ns);
                (0..500)
                    .filter_map(|_| {
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()
                    })
                    .collect::<Vec<_>>()
            })
            .join()
            .expect("idle clients");
        assert_eq!(idle.len(), 500, "idle connections opened");
        let opened = std::time::Instant::now();
        let slowloris = s.spawn(|| {
            use std::io::Write;
            enter(&ns);
            let open = || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok();
            let mut conns: Vec<_> = (0..100).map(|_| open()).collect();
            let mut reconnects = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for conn in &mut conns {
                    let sent = match conn {
                        Some(c) => c.write_all(b"G").is_ok(),
                        None => false,
                    };
                    if !sent {
                        *conn = open();
                        reconnects += 1;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            reconnects
        });
        std::thread::sleep(Duration::from_millis(300));
        let ns = &ns;
        let prober = s.spawn(move || {
            enter(ns);
            let mut probes = Vec::new();
            let mut peak = (0u64, 0u64);
            while opened.elapsed() < Duration::from_secs(6) {
                for path in ["/healthz", "/readyz", "/metrics"] {
                    probes.push((path, probe(addr, path)));
                }
                let (threads, fds) = threads_and_fds(pid);
                peak = (peak.0.max(threads), peak.1.max(fds));
                std::thread::sleep(Duration::from_millis(200));
            }
            (probes, peak)
        });
        let (probes, peak) = prober.join().expect("prober");
        // Past the head deadline, every idle connection has been closed by the agent.
        let idle_open = idle
            .iter()
            .filter(|c| {
                use std::io::Read;
                c.set_nonblocking(true).expect("nonblocking");
                let mut byte = [0u8; 1];
                matches!((&**c).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reconnects = slowloris.join().expect("slowloris");
        (probes, idle_open, peak, reconnects)
    });
    let slowest = probes
        .iter()
        .map(|(_, (_, t))| *t)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{} probes under 500 idle + 100 slowloris clients: slowest {slowest:?}; idle still \
         open {idle_open}; slowloris reconnects {reconnects}; threads {threads_before} -> \
         {}, fds {fds_before} -> {}",
        probes.len(),
        peak.0,
        peak.1
    );
    let failed: Vec<_> = probes
        .iter()
        .filter(|(_, (status, took))| *status != 200 || *took >= Duration::from_secs(1))
        .collect();
    assert!(failed.is_empty(), "probes failed or slow: {failed:?}");
    assert_eq!(
        idle_open, 0,
        "idle connections still open after the head deadline"
    );
    assert!(
        peak.0 <= threads_before + 1,
        "threads {threads_before} -> {}",
        peak.0
    );
    assert!(
        peak.1 <= fds_before + shadowtap::admin::MAX_CONNECTIONS as u64 + 8,
        "fds {fds_before} -> {}",
        peak.1
    );
    agent.signal("-TERM");
    assert!(agent.wait(Duration::from_secs(15)).success());
}

/// Fetches `/metrics` twice, with and without `Accept: application/openmetrics-text`,
/// parses each with prometheus_client's parser for its format (the OpenMetrics one is
/// strict: `# EOF`, counter families without `_total`), prints JSON.
const NEGOTIATE: &str = r##"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families as text_families
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
def fetch(accept):
    req = urllib.request.Request(sys.argv[1], headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.headers.get("Content-Type"), r.read().decode("utf-8")
out = {}
for key, accept, parse in (
    ("text", None, text_families),
    ("openmetrics", "application/openmetrics-text; version=1.0.0,text/plain;q=0.5", om_families),
):
    content_type, body = fetch(accept)
    families = list(parse(body))
    out[key] = {
        "content_type": content_type,
        "eof": body.endswith("# EOF\n"),
        "families": sorted((f.name, f.type) for f in families),
        # `le` as a number: OpenMetrics writes 1.0 where the text format writes 1.
        "samples": sorted(
            [s.name, sorted((k, repr(float(v)) if k == "le" else v) for k, v in s.labels.items()),
             float(s.value)]
            for f in families for s in f.samples
        ),
    }
print(json.dumps(out))
"##;

#[test]
fn metrics_answer_openmetrics_when_asked_and_text_otherwise() {
    if !ready_to_run("metrics_answer_openmetrics_when_asked_and_text_otherwise") {
        return;
    }
    let _serial = lock();
    let ns = Netns::new(format!("st-{}-om", std::process::id()));
    let dir = tempfile::tempdir().expect("tempdir");
    let _agent = ns.spawn(
        &[
            BIN,
            "run",
            "--port",
            "8000",
            "--engine",
            "ebpf",
            "--iface",
            "om*",
            "--target",
            "http://127.0.0.1:9",
        ],
        &dir.path().join("a.out"),
        &dir.path().join("a.err"),
    );
    wait_until(Duration::from_secs(20), "/healthz 200", || {
        ns.admin_status(ADMIN, "/healthz") == 200
    });
    let out = ns.exec_ok(&[
        "python3",
        "-c",
        NEGOTIATE,
        &format!("http://{ADMIN}/metrics"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let (text, om) = (&v["text"], &v["openmetrics"]);
    assert_eq!(
        text["content_type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(text["eof"], false);
    assert_eq!(
        om["content_type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(om["eof"], true);
    // The same families with the same samples in both (an idle agent: nothing moves).
    assert_eq!(text["samples"], om["samples"]);
    let families = |f: &serde_json::Value| -> Vec<String> {
        f["families"]
            .as_array()
            .expect("families")
            .iter()
            .map(|f| {
                format!(
                    "{} {}",
                    f[0].as_str().unwrap_or(""),
                    f[1].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    for want in [
        "shadowtap_requests counter",
        "shadowtap_replay_duration_seconds histogram",
        "shadowtap_ready gauge",
    ] {
        assert!(families(om).iter().any(|f| f == want), "{want}: {v:#}");
        assert!(families(text).iter().any(|f| f == want), "{want}: {v:#}");
    }
}
