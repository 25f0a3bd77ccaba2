//! `run --diff` on live traffic, both engines, real parts in network namespaces: the
//! JSON service of tests/diff/versions.py as v1 in prod (the agent watching its port on
//! the prod veth), v2 as the candidate in stage and a second v1 there as the baseline;
//! curl in the client namespace. The agent sees production's answers on the wire (the
//! eBPF classifier then matches the source port too) and compares them with v2's.
//! Asserted per engine: identical routes `match`, the changed field named by its path,
//! the status route `status`, the random field not a difference (the baseline's margins),
//! ids templated, `/metrics` shows `shadowtap_diff_total` with the same counts, and the
//! baseline's copies never counted in the comparison.

#[expect(
    dead_code,
    reason = "shared with live_netns and stress_live; this file uses the topology and the agent runner"
)]
mod common;
mod diff;

use std::time::Duration;

use diff::{diff_table, route_counts, BODY, MATCH, STATUS};

use common::netns::*;

const ENGINES: [&str; 2] = ["ebpf", "pcap"];

fn start_version(ns: &Netns, topo: &Topology, port: &str, version: &str, addr: &str) -> Proc {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/diff/versions.py");
    let out = topo.path(&format!("{version}-{addr}-{port}.out"));
    let proc = ns.spawn(
        &["python3", script, port, version, addr],
        &out,
        &topo.path(&format!("{version}-{addr}-{port}.err")),
    );
    wait_until(Duration::from_secs(10), "versions.py listening", || {
        read(&out).contains("listening")
    });
    proc
}

#[test]
fn run_diff_compares_live_answers_with_the_candidates_on_both_engines() {
    if !preflight(
        "run_diff_compares_live_answers_with_the_candidates_on_both_engines",
        &["curl", "python3"],
    ) {
        return;
    }
    let _serial = serial();
    let topo = Topology::new("dlive");
    let _prod = start_version(&topo.prod, &topo, "8000", "v1", PROD_IP);
    let _candidate = start_version(&topo.stage, &topo, "8000", "v2", STAGE_IP);
    let _baseline = start_version(&topo.stage, &topo, "8001", "v1", STAGE_IP);
    let baseline = format!("http://{STAGE_IP}:8001");
    let mut failed = Vec::new();
    for engine in ENGINES {
        let agent = topo.start_agent_on(
            &format!("diff-{engine}"),
            engine,
            PROD_IF,
            &["--diff", "--diff-baseline", &baseline],
        );
        let url = |p: &str| format!("http://{PROD_IP}:8000{p}");
        let batches: [&[&str]; 5] = [
            &["/same", "/same", "/same"],
            &["/user", "/user"],
            &["/status", "/status"],
            &["/random", "/random", "/random"],
            &["/users/1", "/users/22", "/users/333", "/same"],
        ];
        for batch in batches {
            let urls: Vec<String> = batch.iter().map(|p| url(p)).collect();
            let mut args = vec!["-w", "%{http_code}\\n"];
            args.extend(urls.iter().map(String::as_str));
            let codes = topo.curl(&args);
            assert_eq!(codes.len(), batch.len(), "{codes:?}");
        }
        // The copies and their answers settle; /metrics shows the comparison meanwhile.
        std::thread::sleep(Duration::from_secs(2));
        let metrics = topo
            .prod
            .exec(&["curl", "-s", &format!("http://{ADMIN}/metrics")]);
        let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
        let (summary, err) = stop_agent(agent);
        let result = std::panic::catch_unwind(|| {
            let table = &diff_table(&summary);
            println!("[{engine}]\n{table}");
            assert_eq!(route_counts(table, "GET /same")[MATCH], 4, "{table}");
            assert_eq!(route_counts(table, "GET /user")[BODY], 2, "{table}");
            assert!(table.contains("$.user.name"), "{table}");
            assert_eq!(route_counts(table, "GET /status")[STATUS], 2, "{table}");
            assert_eq!(route_counts(table, "GET /random")[MATCH], 3, "{table}");
            assert_eq!(route_counts(table, "GET /users/{id}")[MATCH], 3, "{table}");
            let total: u64 = [
                "GET /same",
                "GET /user",
                "GET /status",
                "GET /random",
                "GET /users/{id}",
            ]
            .iter()
            .map(|r| route_counts(table, r).iter().sum::<u64>())
            .sum();
            assert_eq!(total, 14, "every request compared once: {table}");
            assert!(
                metrics.contains("shadowtap_diff_total{route=\"GET /user\",outcome=\"body\"} 2"),
                "/metrics:\n{}",
                metrics
                    .lines()
                    .filter(|l| l.starts_with("shadowtap_diff"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        });
        if let Err(e) = result {
            let message = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            failed.push(format!("[{engine}] {message}\nagent stderr:\n{err}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
