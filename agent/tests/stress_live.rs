//! Faults at the agent and least privilege, live in network namespaces (issue 6, items 4
//! and 6): the capabilities a running agent keeps (read from /proc/PID/status), a ring
//! buffer far too small for the load (drops counted, and every copy that arrives is
//! byte for byte one that was sent), and the watched interface deleted and created again.
//! Needs root; under `CI=true` a missing prerequisite fails instead of skipping.

#[expect(
    dead_code,
    reason = "shared with live_netns; this file uses part of it"
)]
mod support_live;

use std::collections::HashSet;
use std::time::Duration;

use support_live::*;

const HOST: &str = "Host: httpbin:8000";

fn target() -> String {
    format!("http://{STAGE_IP}:8000")
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `CapXxx:` mask from /proc/PID/status.
fn cap_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in status"));
    u64::from_str_radix(line[field.len()..].trim(), 16).expect("hex mask")
}

/// Every thread of the process, since capability sets are per thread.
fn thread_cap_masks(pid: u32) -> Vec<(String, u64)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|e| e.ok())
        .map(|e| {
            let tid = e.file_name().to_string_lossy().into_owned();
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            let mask = status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(u64::MAX);
            (tid, mask)
        })
        .collect()
}

const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_PERFMON: u64 = 1 << 38;
const CAP_BPF: u64 = 1 << 39;

#[test]
fn a_running_agent_keeps_only_the_capabilities_it_uses() {
    if !preflight("a_running_agent_keeps_only_the_capabilities_it_uses", &[]) {
        return;
    }
    let _serial = lock();
    let mut topo = Topology::new("caps");
    topo.start_prod();
    topo.start_stage();
    for (engine, want) in [("ebpf", CAP_BPF | CAP_NET_ADMIN | CAP_PERFMON), ("pcap", 0)] {
        topo.clear_stage_log();
        let agent = topo.start_agent(
            engine,
            &[
                "--engine",
                engine,
                "--iface",
                PROD_IF,
                "--target",
                &target(),
            ],
        );
        // Shadowing still works with what is left (SO_MARK needs NET_ADMIN for eBPF).
        let url = format!("http://{PROD_IP}:8000/headers?caps=[1-5]");
        let codes = topo.curl(&["-H", HOST, "-w", "%{http_code}\\n", &url]);
        assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
        let seen = topo.wait_stage(5, Duration::from_secs(10));
        let pid = agent.pid();
        let threads = thread_cap_masks(pid);
        let (eff, prm, bnd) = (
            cap_mask(pid, "CapEff:"),
            cap_mask(pid, "CapPrm:"),
            cap_mask(pid, "CapBnd:"),
        );
        let (summary, err) = stop_agent(agent);
        assert_eq!(seen.len(), 5, "{engine}: {summary}{err}");
        eprintln!("{engine}: CapEff {eff:#x} CapPrm {prm:#x} CapBnd {bnd:#x}, threads {threads:?}");
        assert_eq!(eff, want, "{engine}: CapEff");
        assert_eq!(prm, want, "{engine}: CapPrm");
        assert_eq!(
            bnd, want,
            "{engine}: CapBnd (exec cannot bring the rest back)"
        );
        for (tid, mask) in threads {
            assert_eq!(mask, want, "{engine}: thread {tid} CapEff");
        }
    }
}

/// Client script: POSTs with a body that depends on the request's number, on a few
/// keep-alive connections at once, and a log of what it sent (target, length, SHA-256).
const LOAD_CLIENT: &str = r#"
import hashlib, http.client, json, sys, threading
host, n, conns, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sent, lock, errors = [], threading.Lock(), []
def worker(w):
    c = http.client.HTTPConnection(host, 8000, timeout=10)
    for i in range(w, n, conns):
        body = (hashlib.sha256(str(i).encode()).hexdigest() * 200)[: 100 + (i * 7919) % 12000].encode()
        target = "/anything/ring?i=%d" % i
        c.request("POST", target, body=body, headers={"Host": "httpbin:8000"})
        r = c.getresponse(); r.read()
        if r.status != 200: errors.append(r.status)
        with lock: sent.append({"target": target, "len": len(body), "sha256": hashlib.sha256(body).hexdigest()})
ts = [threading.Thread(target=worker, args=(w,)) for w in range(conns)]
[t.start() for t in ts]; [t.join() for t in ts]
open(log, "w").write("\n".join(json.dumps(s) for s in sent))
print("errors", len(errors))
"#;

/// (target, body length, SHA-256) of every request the load client sent.
fn sent_requests(log: &std::path::Path) -> HashSet<(String, u64, String)> {
    read(log)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("sent line");
            (
                v["target"].as_str().unwrap_or_default().to_string(),
                v["len"].as_u64().unwrap_or(0),
                v["sha256"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn sigkill_under_load_leaves_nothing_attached_and_the_service_never_notices() {
    if !preflight("sigkill_under_load", &["tc", "bpftool"]) {
        return;
    }
    let _serial = lock();
    let mut topo = Topology::new("k9");
    topo.start_prod();
    topo.start_stage();
    let args = [
        "--engine",
        "ebpf",
        "--iface",
        PROD_IF,
        "--target",
        &target(),
    ];
    let agent = topo.start_agent("k9a", &args);
    let script = topo.path("load.py");
    std::fs::write(&script, LOAD_CLIENT).expect("write client");
    let sent_log = topo.path("sent.jsonl");
    let n = 2400;
    let mut client = topo.client.spawn(
        &[
            "python3",
            script.to_str().expect("utf8"),
            PROD_IP,
            &n.to_string(),
            "4",
            sent_log.to_str().expect("utf8"),
        ],
        &topo.path("client.out"),
        &topo.path("client.err"),
    );
    // Let the load run, then kill the agent in the middle of it.
    wait_until(Duration::from_secs(20), "copies flowing", || {
        topo.stage_requests().len() >= 50
    });
    agent.signal("-KILL");
    drop(agent);
    let filters = |dir: &str| {
        String::from_utf8_lossy(
            &topo
                .prod
                .exec_ok(&["tc", "filter", "show", "dev", PROD_IF, dir])
                .stdout,
        )
        .into_owned()
    };
    // TCX links go with the last fd; allow the kernel its grace period.
    wait_until(Duration::from_secs(5), "nothing attached", || {
        let net = topo
            .prod
            .exec_ok(&["bpftool", "net", "show", "dev", PROD_IF]);
        let net = String::from_utf8_lossy(&net.stdout).into_owned();
        filters("ingress").trim().is_empty()
            && filters("egress").trim().is_empty()
            && !net.contains("shadowtap")
            && !net.contains("tcx")
    });
    topo.clear_stage_log();
    let agent = topo.start_agent("k9b", &args);
    let status = client.wait(Duration::from_secs(60));
    let said = read(&topo.path("client.out"));
    assert!(
        status.success() && said.contains("errors 0"),
        "the live service noticed: {said}{}",
        read(&topo.path("client.err"))
    );
    std::thread::sleep(Duration::from_secs(2));
    let (summary, err) = stop_agent(agent);
    let sent = sent_requests(&sent_log);
    assert_eq!(sent.len(), n, "every request of the load was answered");
    let after = topo.stage_requests();
    assert!(
        !after.is_empty(),
        "the restarted agent shadows: {summary}{err}"
    );
    for r in &after {
        assert!(
            sent.contains(&(r.target.clone(), r.len, r.sha256.clone())),
            "a copy that was never sent arrived after the restart: {}",
            r.target
        );
    }
    eprintln!(
        "kill -9 under load: {n} requests, 0 client errors, {} copies from the restarted agent\n{summary}",
        after.len()
    );
}

#[test]
fn a_tiny_ring_buffer_drops_and_counts_but_never_sends_a_wrong_request() {
    if !preflight("a_tiny_ring_buffer_drops_and_counts", &[]) {
        return;
    }
    let _serial = lock();
    let mut topo = Topology::new("ring");
    topo.start_prod();
    topo.start_stage();
    let agent = topo.start_agent(
        "ring",
        &[
            "--engine",
            "ebpf",
            "--iface",
            PROD_IF,
            "--ring-bytes",
            "4096",
            "--target",
            &target(),
        ],
    );
    let script = topo.path("load.py");
    std::fs::write(&script, LOAD_CLIENT).expect("write client");
    let sent_log = topo.path("sent.jsonl");
    let n = 600;
    let out = topo.client.exec_ok(&[
        "python3",
        script.to_str().expect("utf8"),
        PROD_IP,
        &n.to_string(),
        "6",
        sent_log.to_str().expect("utf8"),
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("errors 0"),
        "the live service saw errors: {said}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let (summary, err) = stop_agent(agent);
    let sent = sent_requests(&sent_log);
    assert_eq!(sent.len(), n, "client log");
    let arrived = topo.stage_requests();
    for r in &arrived {
        assert!(
            sent.contains(&(r.target.clone(), r.len, r.sha256.clone())),
            "a copy that was never sent arrived: {} len {}",
            r.target,
            r.len
        );
    }
    let drops: u64 = err
        .lines()
        .find_map(|l| {
            let at = l.find(" ring-buffer drops")?;
            l[..at].rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no ring-buffer drop count in:\n{err}"));
    eprintln!(
        "tiny ring: {n} requests sent, {} copies arrived (all byte-identical), {drops} ring-buffer drops\n{summary}",
        arrived.len()
    );
    assert!(
        drops > 0,
        "a 4 KiB ring under 600 bodies of up to 12 KB must drop"
    );
    assert!(arrived.len() < n, "drops cost copies");
    // What was dropped shows up as requests the capture lost, not as silence.
    let lost = summary_count(&summary, "incomplete") + summary_count(&summary, "unparseable");
    assert!(
        lost > 0 || summary_count(&summary, "total") < n as u64,
        "{summary}"
    );
}

#[test]
fn an_interface_deleted_and_created_again_is_attached_again() {
    if !preflight("an_interface_deleted_and_created_again", &[]) {
        return;
    }
    let _serial = lock();
    let mut topo = Topology::new("flap");
    topo.start_prod();
    topo.start_stage();
    let (iface, peer, prod_ip, client_ip) = ("vf0", "vfc", "10.77.5.1", "10.77.5.2");
    let create = |topo: &Topology| {
        topo.prod.exec_ok(&[
            "ip",
            "link",
            "add",
            iface,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            &topo.client.name,
        ]);
        topo.prod
            .exec_ok(&["ip", "addr", "add", &format!("{prod_ip}/24"), "dev", iface]);
        topo.prod.exec_ok(&["ip", "link", "set", iface, "up"]);
        topo.client
            .exec_ok(&["ip", "addr", "add", &format!("{client_ip}/24"), "dev", peer]);
        topo.client.exec_ok(&["ip", "link", "set", peer, "up"]);
    };
    create(&topo);
    // A plain name, not a glob: the agent must still follow it when it comes back.
    let agent = topo.start_agent(
        "flap",
        &["--engine", "ebpf", "--iface", iface, "--target", &target()],
    );
    let url = |tag: &str| format!("http://{prod_ip}:8000/headers?{tag}=[1-5]");
    let codes = topo.curl(&["-H", HOST, "-w", "%{http_code}\\n", &url("before")]);
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    topo.wait_stage(5, Duration::from_secs(10));
    topo.prod.exec_ok(&["ip", "link", "del", iface]);
    std::thread::sleep(Duration::from_secs(2));
    let err_path = agent.stderr.clone();
    let attached_before = read(&err_path).matches("attached to new interface").count();
    create(&topo);
    wait_until(Duration::from_secs(10), "re-attach to the new veth", || {
        read(&err_path).matches("attached to new interface").count() > attached_before
    });
    let codes = topo.curl(&["-H", HOST, "-w", "%{http_code}\\n", &url("after")]);
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    let seen = topo.wait_stage(10, Duration::from_secs(10));
    assert!(
        agent_alive(&agent),
        "agent died when its interface went away"
    );
    let (summary, err) = stop_agent(agent);
    let after = seen.iter().filter(|r| r.target.contains("after=")).count();
    assert_eq!(
        after, 5,
        "copies after the interface came back: {summary}{err}"
    );
}

fn agent_alive(agent: &Proc) -> bool {
    std::path::Path::new(&format!("/proc/{}", agent.pid())).exists()
}
