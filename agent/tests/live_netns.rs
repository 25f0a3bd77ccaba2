//! End-to-end checks of `shadowtap run` on real interfaces: the binary captures inside a
//! `prod` network namespace (httpbin under gunicorn) and shadows to a recording server in
//! `stage`, while curl talks to prod from `client` — Istio's mirroring task without a mesh.
//! Needs root, iproute2, curl, python3 with gunicorn + httpbin (and tshark, bpftool for two
//! tests). Addresses are 10.77.x.x inside namespaces the tests create and delete.

#[expect(
    dead_code,
    reason = "shared with stress_live and admin_metrics; this file uses part of it"
)]
mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::*;

#[test]
fn mirrors_every_request_with_both_engines() {
    if !preflight("mirrors_every_request_with_both_engines", &[]) {
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("mir");
    topo.start_prod();
    topo.start_stage();
    const N: usize = 50;
    for engine in ["ebpf", "pcap"] {
        topo.clear_stage_log();
        let agent = topo.start_agent_on(engine, engine, PROD_IF, &[]);
        topo.get_headers(PROD_IP, N, engine);
        let seen = topo.wait_stage(N, Duration::from_secs(10));
        let (summary, err) = stop_agent(agent);
        assert_eq!(
            seen.len(),
            N,
            "{engine}: stage saw {seen:?}\nsummary:\n{summary}{err}"
        );
        for r in &seen {
            assert_eq!(r.host, SHADOW_HOST, "{engine}: {r:?}");
            assert_eq!(r.method, "GET");
            assert!(
                r.target.starts_with(&format!("/headers?{engine}=")),
                "{r:?}"
            );
        }
        let mut targets: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
        targets.sort_unstable();
        targets.dedup();
        assert_eq!(targets.len(), N, "{engine}: each request exactly once");
        assert_eq!(
            summary_count(&summary, "replayed 2xx"),
            N as u64,
            "{engine}:\n{summary}"
        );
        assert_eq!(
            summary_count(&summary, "total"),
            N as u64,
            "{engine}:\n{summary}"
        );
        assert_eq!(requests_seen(&summary), N as u64, "{engine}:\n{summary}");
        assert!(summary.contains("(= requests seen)"), "{summary}");
        assert!(err.contains(&format!("capture ({engine}):")), "{err}");
        eprintln!(
            "{engine}: {}",
            err.lines().find(|l| l.starts_with("capture")).unwrap_or("")
        );
    }
}

#[test]
fn percent_50_lands_in_a_binomial_band() {
    if !preflight("percent_50_lands_in_a_binomial_band", &[]) {
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("pct");
    topo.start_prod();
    topo.start_stage();
    const N: u64 = 400;
    let agent = topo.start_agent_on("pct", "ebpf", PROD_IF, &["--percent", "50"]);
    topo.get_headers(PROD_IP, N as usize, "p");
    // Waiting for exactly what the agent replayed is not possible before it stops, so
    // wait until the stage log stops growing.
    let mut last = usize::MAX;
    wait_until(Duration::from_secs(10), "stage log to settle", || {
        let now = topo.stage_requests().len();
        let settled = now == last;
        last = now;
        std::thread::sleep(Duration::from_millis(250));
        settled
    });
    let (summary, err) = stop_agent(agent);
    let kept = summary_count(&summary, "replayed 2xx");
    let skipped = summary_count(&summary, "not_sampled");
    assert_eq!(kept + skipped, N, "{summary}{err}");
    assert_eq!(summary_count(&summary, "total"), N, "{summary}");
    assert_eq!(
        topo.stage_requests().len() as u64,
        kept,
        "stage count vs summary"
    );
    // 5 sigma of Binomial(400, 0.5) is 5 * 10 = 50.
    let (lo, hi) = (N / 2 - 50, N / 2 + 50);
    assert!(
        (lo..=hi).contains(&kept),
        "kept {kept} of {N}, outside [{lo}, {hi}]"
    );
    eprintln!("--percent 50: kept {kept} of {N}");
}

#[test]
fn bodies_chunked_and_pipelined_arrive_byte_identical() {
    if !preflight("bodies_chunked_and_pipelined_arrive_byte_identical", &[]) {
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("body");
    topo.start_prod();
    topo.start_stage();
    let agent = topo.start_agent_on("body", "ebpf", PROD_IF, &[]);

    // Not compressible, so a lost or repeated segment changes the digest.
    let big: Vec<u8> = (0u32..(1 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let chunked: Vec<u8> = (0u32..300_000)
        .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    let (big_path, chunked_path) = (topo.path("big.bin"), topo.path("chunked.bin"));
    std::fs::write(&big_path, &big).expect("write body");
    std::fs::write(&chunked_path, &chunked).expect("write body");
    let code = topo.curl(&[
        "-H",
        HOST,
        "-H",
        "Content-Type: application/octet-stream",
        "-w",
        "%{http_code}\\n",
        "--data-binary",
        &format!("@{}", big_path.display()),
        &format!("http://{PROD_IP}:8000/anything/big"),
    ]);
    assert_eq!(code, ["200"]);
    let code = topo.curl(&[
        "-H",
        HOST,
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Content-Type: application/octet-stream",
        "-w",
        "%{http_code}\\n",
        "--data-binary",
        &format!("@{}", chunked_path.display()),
        &format!("http://{PROD_IP}:8000/anything/chunked"),
    ]);
    assert_eq!(code, ["200"]);

    // Three requests in one write; prod must answer all three on the one connection.
    let pipelined = format!(
        r#"
import socket
reqs = b"".join(
    b"POST /anything/pipe%d HTTP/1.1\r\nHost: httpbin:8000\r\nContent-Length: %d\r\n\r\n%s"
    % (i, len(body), body)
    for i, body in enumerate([b"first", b"second body", b"x" * 5000])
)
s = socket.create_connection(("{PROD_IP}", 8000), timeout=10)
s.sendall(reqs)
got = b""
while got.count(b"HTTP/1.1 200") < 3:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
print(got.count(b"HTTP/1.1 200"))
"#
    );
    let out = topo.client.exec_ok(&["python3", "-c", &pipelined]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "3",
        "prod answers to pipelined requests"
    );

    let seen = topo.wait_stage(5, Duration::from_secs(10));
    let (summary, err) = stop_agent(agent);
    let by_target: HashMap<&str, &StageRequest> =
        seen.iter().map(|r| (r.target.as_str(), r)).collect();
    assert_eq!(seen.len(), 5, "stage saw {seen:?}\n{summary}{err}");
    let expect = [
        ("/anything/big", big.clone()),
        ("/anything/chunked", chunked.clone()),
        ("/anything/pipe0", b"first".to_vec()),
        ("/anything/pipe1", b"second body".to_vec()),
        ("/anything/pipe2", vec![b'x'; 5000]),
    ];
    for (path, body) in expect {
        let r = by_target
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing at stage: {seen:?}"));
        assert_eq!(r.host, SHADOW_HOST, "{r:?}");
        assert_eq!(r.method, "POST");
        assert_eq!(r.len, body.len() as u64, "{path} body length");
        assert_eq!(r.sha256, sha256_hex(&body), "{path} body digest");
    }
    assert_eq!(summary_count(&summary, "replayed 2xx"), 5, "{summary}");
    assert_eq!(summary_count(&summary, "total"), 5, "{summary}");
    eprintln!(
        "framing at stage: {:?}",
        seen.iter()
            .map(|r| (r.target.as_str(), r.framing.as_str()))
            .collect::<Vec<_>>()
    );
}

/// Median latency in ms of `n` GETs on one connection.
fn median_latency(topo: &Topology, n: usize, tag: &str) -> f64 {
    let url = format!("http://{PROD_IP}:8000/get?{tag}=[1-{n}]");
    let times = topo.curl(&["-H", HOST, "-w", "%{http_code} %{time_total}\\n", &url]);
    assert_eq!(times.len(), n);
    assert!(
        times.iter().all(|l| l.starts_with("200 ")),
        "prod answers: {times:?}"
    );
    let secs: Vec<String> = times
        .iter()
        .filter_map(|l| l.split(' ').nth(1))
        .map(str::to_string)
        .collect();
    median_ms(&secs)
}

fn within_latency_bound(on: f64, off: f64) -> bool {
    on < off * 1.5 + 2.0
}

/// Median latency with the agent on, and how many requests that took. The machine is
/// shared, so one noisy round out of bound is measured again and the lower median kept.
fn median_latency_on(topo: &Topology, n: usize, tag: &str, off: f64) -> (f64, u64) {
    let first = median_latency(topo, n, tag);
    if within_latency_bound(first, off) {
        return (first, n as u64);
    }
    eprintln!("{tag}: median {first:.3} ms vs {off:.3} ms off; measuring again");
    let second = median_latency(topo, n, &format!("{tag}2"));
    (first.min(second), 2 * n as u64)
}

#[test]
fn stage_down_or_blackholed_does_not_hurt_prod() {
    if !preflight("stage_down_or_blackholed_does_not_hurt_prod", &[]) {
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("down");
    topo.start_prod();
    // No stage server: connections to stage are refused.
    const N: usize = 100;
    // Warm up gunicorn and the caches before measuring.
    median_latency(&topo, 20, "warm");
    let off = median_latency(&topo, N, "off");

    let agent = topo.start_agent_on("down", "pcap", PROD_IF, &[]);
    let (down, sent) = median_latency_on(&topo, N, "down", off);
    std::thread::sleep(Duration::from_millis(300));
    let (summary_down, err) = stop_agent(agent);
    assert_eq!(replay_errors(&summary_down), sent, "{summary_down}{err}");
    assert_eq!(
        summary_count(&summary_down, "total"),
        sent,
        "{summary_down}"
    );

    topo.prod
        .exec_ok(&["ip", "route", "add", "blackhole", &format!("{STAGE_IP}/32")]);
    let agent = topo.start_agent_on("hole", "ebpf", PROD_IF, &[]);
    let (hole, sent) = median_latency_on(&topo, N, "hole", off);
    std::thread::sleep(Duration::from_millis(300));
    let (summary_hole, err) = stop_agent(agent);
    assert_eq!(replay_errors(&summary_hole), sent, "{summary_hole}{err}");
    assert_eq!(
        summary_count(&summary_hole, "total"),
        sent,
        "{summary_hole}"
    );

    eprintln!("median latency ms: agent off {off:.3}, stage down (pcap) {down:.3}, blackholed (ebpf) {hole:.3}");
    for (what, on) in [("stage down", down), ("blackholed", hole)] {
        assert!(
            within_latency_bound(on, off),
            "{what}: median {on:.3} ms vs {off:.3} ms with the agent off"
        );
    }
}

/// The agent's TCX links as (link id, prog id, ifindex), from its fds' fdinfo. The
/// bpftool in Debian 12 does not list TCX attachments per device, but fdinfo names them.
fn tcx_links(pid: u32) -> Vec<(String, String, String)> {
    let mut links = Vec::new();
    let dir = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("agent fdinfo");
    for entry in dir.flatten() {
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        if field("link_type:") == "tcx" {
            links.push((field("link_id:"), field("prog_id:"), field("ifindex:")));
        }
    }
    links
}

fn bpf_object_exists(kind: &str, id: &str) -> bool {
    Command::new("bpftool")
        .args([kind, "show", "id", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn tc_filters(topo: &Topology, iface: &str) -> String {
    let mut all = String::new();
    for dir in ["ingress", "egress"] {
        let out = topo.prod.exec(&["tc", "filter", "show", "dev", iface, dir]);
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    all
}

#[test]
fn kill_9_leaves_nothing_attached_and_a_new_agent_starts_cleanly() {
    if !preflight("kill_9_leaves_nothing_attached", &["bpftool", "tc"]) {
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("kill");
    topo.start_prod();
    topo.start_stage();
    let ifindex = String::from_utf8_lossy(
        &topo
            .prod
            .exec_ok(&["cat", &format!("/sys/class/net/{PROD_IF}/ifindex")])
            .stdout,
    )
    .trim()
    .to_string();

    let mut agent = topo.start_agent_on("k1", "ebpf", PROD_IF, &[]);
    let links = tcx_links(agent.pid());
    // Ingress and egress on the one interface; otherwise the checks below prove nothing.
    assert_eq!(links.len(), 2, "agent's TCX links: {links:?}");
    assert!(
        links.iter().all(|(_, _, i)| *i == ifindex),
        "{links:?} vs ifindex {ifindex}"
    );
    for (link, prog, _) in &links {
        assert!(bpf_object_exists("link", link) && bpf_object_exists("prog", prog));
    }
    topo.get_headers(PROD_IP, 5, "k1");
    agent.signal("-KILL");
    agent.wait(Duration::from_secs(5));
    // The kernel releases links and programs once the last fd is closed; that can lag
    // the exit by an RCU grace period.
    wait_until(
        Duration::from_secs(5),
        "links and programs to be released",
        || {
            links.iter().all(|(link, prog, _)| {
                !bpf_object_exists("link", link) && !bpf_object_exists("prog", prog)
            })
        },
    );
    let filters = tc_filters(&topo, PROD_IF);
    assert!(
        filters.trim().is_empty(),
        "tc filters left after kill -9: {filters}"
    );
    // Traffic with no agent: a stale program or ring would leak it into the next run.
    topo.get_headers(PROD_IP, 7, "none");

    topo.clear_stage_log();
    let agent = topo.start_agent_on("k2", "ebpf", PROD_IF, &[]);
    let links2 = tcx_links(agent.pid());
    assert_eq!(links2.len(), 2, "second agent's TCX links: {links2:?}");
    topo.get_headers(PROD_IP, 10, "k2");
    let seen = topo.wait_stage(10, Duration::from_secs(10));
    let (summary, err) = stop_agent(agent);
    assert_eq!(seen.len(), 10, "{summary}{err}");
    assert!(
        seen.iter().all(|r| r.target.starts_with("/headers?k2=")),
        "{seen:?}"
    );
    assert_eq!(summary_count(&summary, "replayed 2xx"), 10, "{summary}");
    assert_eq!(requests_seen(&summary), 10, "{summary}");
    // SIGINT detaches too.
    wait_until(
        Duration::from_secs(5),
        "second agent's links to be released",
        || {
            links2
                .iter()
                .all(|(link, _, _)| !bpf_object_exists("link", link))
        },
    );
}

#[test]
fn record_writes_a_pcapng_that_tshark_reads_and_replay_replays() {
    if !preflight("record_writes_a_pcapng", &["tshark"]) {
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("rec");
    topo.start_prod();
    topo.start_stage();
    const N: usize = 20;
    let record = topo.path("out.pcapng");
    let record_arg = record.to_str().expect("utf-8 path").to_string();
    let agent = topo.start_agent_on("rec", "ebpf", PROD_IF, &["--record", &record_arg]);
    topo.get_headers(PROD_IP, N, "rec");
    topo.wait_stage(N, Duration::from_secs(10));
    let (summary, _) = stop_agent(agent);
    assert_eq!(
        summary_count(&summary, "replayed 2xx"),
        N as u64,
        "{summary}"
    );

    let out = run(&[
        "tshark",
        "-r",
        &record_arg,
        "-d",
        "tcp.port==8000,http",
        "-Y",
        "http.request",
        "-T",
        "fields",
        "-e",
        "http.request.uri",
    ]);
    let uris: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(uris.len(), N, "tshark requests: {uris:?}");
    assert!(
        uris.iter().all(|u| u.starts_with("/headers?rec=")),
        "{uris:?}"
    );

    topo.clear_stage_log();
    let out = topo.prod.exec_ok(&[
        BIN,
        "replay",
        &record_arg,
        "--port",
        "8000",
        "--speed",
        "max",
        "--target",
        &stage_target(),
    ]);
    let replay_summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        summary_count(&replay_summary, "replayed 2xx"),
        N as u64,
        "{replay_summary}"
    );
    let seen = topo.wait_stage(N, Duration::from_secs(5));
    assert_eq!(seen.len(), N);
    assert!(seen.iter().all(|r| r.host == SHADOW_HOST), "{seen:?}");
}

#[test]
fn interfaces_that_appear_later_are_captured() {
    if !preflight("interfaces_that_appear_later_are_captured", &[]) {
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("late");
    topo.start_prod();
    topo.start_stage();
    for (engine, iface, (prod_ip, client_ip)) in [
        ("ebpf", "vx0", ("10.77.3.1", "10.77.3.2")),
        ("pcap", "vy0", ("10.77.4.1", "10.77.4.2")),
    ] {
        topo.clear_stage_log();
        let pattern = format!("{}*", &iface[..2]);
        let agent = topo.start_agent_on(engine, engine, &pattern, &[]);
        let peer = format!("{}c", &iface[..2]);
        topo.add_veth(
            (iface, &format!("{prod_ip}/24")),
            (&peer, &format!("{client_ip}/24")),
        );
        if engine == "ebpf" {
            let err = agent.stderr.clone();
            wait_until(
                Duration::from_secs(5),
                "agent to attach to the new veth",
                || read(&err).contains("attached to new interface"),
            );
        }
        topo.get_headers(prod_ip, 10, "late");
        let seen = topo.wait_stage(10, Duration::from_secs(10));
        let (summary, err) = stop_agent(agent);
        assert_eq!(seen.len(), 10, "{engine}: {summary}{err}");
        assert_eq!(
            summary_count(&summary, "replayed 2xx"),
            10,
            "{engine}: {summary}"
        );
    }
}

/// SPEC.md, "Only what the server processed": a connection the agent joins midway (it
/// started, or restarted, while the connection was open) may be mid-body, so none of
/// its requests is copied; they are counted `untrusted`. A connection opened after the
/// agent started is shadowed as usual. Both engines, on a real keep-alive connection.
#[test]
fn connections_open_before_the_agent_started_are_counted_not_copied() {
    if !preflight(
        "connections_open_before_the_agent_started_are_counted_not_copied",
        &["python3"],
    ) {
        return;
    }
    let _serial = serial();
    let mut topo = Topology::new("late");
    topo.start_prod();
    topo.start_stage();
    // One keep-alive connection: a request before the agent starts, then (once `go`
    // exists) LATE more on it, then one request on a new connection.
    const LATE: usize = 5;
    let script = topo.path("client.py");
    std::fs::write(
        &script,
        format!(
            r#"
import os, socket, sys, time
go, done = sys.argv[1], sys.argv[2]
def exchange(s, target):
    s.sendall(("GET " + target + " HTTP/1.1\r\nHost: httpbin:8000\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += s.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
old = socket.create_connection(("{PROD_IP}", 8000))
exchange(old, "/headers?early=1")
while not os.path.exists(go):
    time.sleep(0.05)
for i in range({LATE}):
    exchange(old, "/headers?late=%d" % i)
new = socket.create_connection(("{PROD_IP}", 8000))
exchange(new, "/headers?fresh=1")
new.close()
old.close()
open(done, "w").close()
"#
        ),
    )
    .expect("client script");
    for engine in ["ebpf", "pcap"] {
        topo.clear_stage_log();
        let (go, done) = (
            topo.path(&format!("go-{engine}")),
            topo.path(&format!("done-{engine}")),
        );
        let script = script.to_str().expect("path");
        let mut client = topo.client.spawn(
            &[
                "python3",
                script,
                go.to_str().expect("path"),
                done.to_str().expect("path"),
            ],
            &topo.path(&format!("client-{engine}.out")),
            &topo.path(&format!("client-{engine}.err")),
        );
        // The first request is answered before the agent starts.
        std::thread::sleep(Duration::from_millis(500));
        let agent = topo.start_agent_on(engine, engine, PROD_IF, &[]);
        std::fs::write(&go, b"").expect("go file");
        wait_until(Duration::from_secs(15), "client done", || done.exists());
        assert!(
            client.wait(Duration::from_secs(5)).success(),
            "{}",
            client.stderr_text()
        );
        let seen = topo.wait_stage(1, Duration::from_secs(10));
        // Give a wrongly copied late request time to arrive too.
        std::thread::sleep(Duration::from_millis(500));
        let seen_all = topo.stage_requests();
        let (summary, err) = stop_agent(agent);
        let targets: Vec<&str> = seen_all.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(
            targets,
            ["/headers?fresh=1"],
            "{engine}: stage saw {seen:?}\n{summary}{err}"
        );
        assert_eq!(
            summary_count(&summary, "untrusted"),
            LATE as u64,
            "{engine}:\n{summary}"
        );
        assert_eq!(
            summary_count(&summary, "replayed 2xx"),
            1,
            "{engine}:\n{summary}"
        );
        assert_eq!(
            requests_seen(&summary),
            LATE as u64 + 1,
            "{engine}:\n{summary}"
        );
    }
}
