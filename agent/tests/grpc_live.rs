//! End-to-end checks of HTTP/2 and gRPC shadowing with real parts, both engines: a
//! grpcio `helloworld.Greeter` v1 in a `prod` namespace (the agent watching its port 8000
//! there), v2 in `stage` recording every call it receives (the `:authority`, method,
//! metadata and a digest of each message), and a real grpcio client in `client` calling
//! with `grpc.default_authority` `grpc-hello.example.cn:8000`, as Istio's gRPC mirroring
//! is set up. Plus h2load against nginx's h2c listener, the copies counted from a stage
//! nginx's access log.
//!
//! Needs root, iproute2, python3 with grpcio and grpcio-tools, nginx, h2load, tcpdump
//! and tshark (.ci/setup); without them the tests skip, and fail under `CI=true`. The
//! Python side is agent/tests/grpc/ (stubs generated from helloworld.proto at run time).
//! Addresses are 10.77.x.x inside namespaces the tests create and delete.

#[expect(
    dead_code,
    reason = "shared with live_netns and stress_live; this file uses the topology and the agent runner"
)]
mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::*;

const GRPC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc");
/// What the client sets as `grpc.default_authority`, and what the copies must carry.
const AUTHORITY: &str = "grpc-hello.example.cn:8000";
const SHADOW_AUTHORITY: &str = "grpc-hello.example.cn-shadow:8000";
/// Calls the client makes per phase: unary, unary large, client streaming, server
/// streaming, bidi (greeter_client.py).
const CALLS_PER_PHASE: usize = 5;
const ENGINES: [&str; 2] = ["ebpf", "pcap"];

/// Runs `check` once per engine; a failure with one engine does not keep the other from
/// running. Fails afterwards with every engine's failure message.
fn each_engine(mut check: impl FnMut(&'static str)) {
    let mut failed = Vec::new();
    for engine in ENGINES {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(engine)));
        if let Err(panic) = result {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            failed.push(format!("[{engine}] {message}"));
        }
    }
    assert!(
        failed.is_empty(),
        "failed with {} of {} engines:\n\n{}",
        failed.len(),
        ENGINES.len(),
        failed.join("\n\n")
    );
}

/// `preflight` plus the gRPC Python modules; a missing one fails under `CI=true`.
fn grpc_preflight(test: &str, tools: &[&str]) -> bool {
    if !preflight(test, tools) {
        return false;
    }
    let mods = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .stderr(Stdio::null())
        .status();
    if mods.is_ok_and(|s| s.success()) {
        return true;
    }
    let reason = format!("{test}: needs python modules grpcio and grpcio-tools (.ci/setup)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason}");
    }
    eprintln!("SKIP {reason}");
    false
}

/// The last `n` lines of `text`, for failure messages.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Standard base64 (with padding) to bytes; panics on anything else.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {text:?}"),
        }
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c) << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..=n]);
    }
    out
}

/// One call as the client made it, or as a greeter server recorded it.
#[derive(Debug, Clone)]
struct Call {
    /// `x-call-id`.
    id: String,
    /// Client: early, late, fresh or new. Server: its version label.
    phase: String,
    method: String,
    /// Server only: the `:authority` it received.
    authority: Option<String>,
    /// Server only: the client's address and port (which connection).
    peer: String,
    /// Every metadata pair; `-bin` values as base64 of the bytes.
    metadata: Vec<(String, String)>,
    /// (length, sha256) of each request message.
    messages: Vec<(u64, String)>,
}

impl Call {
    fn parse(line: &str, id_from_metadata: bool) -> Self {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("JSON line {line:?}: {e}"));
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let metadata: Vec<(String, String)> = v["metadata"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p[0].as_str().unwrap_or_default().to_string(),
                            p[1].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let messages = v["messages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        (
                            m["len"].as_u64().unwrap_or(0),
                            m["sha256"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let id = if id_from_metadata {
            metadata
                .iter()
                .find(|(k, _)| k == "x-call-id")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        } else {
            s("id")
        };
        Call {
            id,
            phase: if id_from_metadata {
                s("version")
            } else {
                s("phase")
            },
            method: s("method"),
            authority: v["authority"].as_str().map(str::to_string),
            peer: s("peer"),
            metadata,
            messages,
        }
    }

    /// The metadata the client set (`x-` keys), in order.
    fn custom_metadata(&self) -> Vec<(String, String)> {
        self.metadata
            .iter()
            .filter(|(k, _)| k.starts_with("x-"))
            .cloned()
            .collect()
    }

    /// One line for failure messages.
    fn brief(&self) -> String {
        format!(
            "{} {} authority={:?} peer={} messages={:?}",
            self.id,
            self.method,
            self.authority,
            self.peer,
            self.messages.iter().map(|m| m.0).collect::<Vec<_>>()
        )
    }
}

fn read_calls(path: &Path, id_from_metadata: bool) -> Vec<Call> {
    read(path)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| Call::parse(l, id_from_metadata))
        .collect()
}

fn briefs(calls: &[Call]) -> String {
    if calls.is_empty() {
        return "  (none)".into();
    }
    calls
        .iter()
        .map(|c| format!("  {}", c.brief()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The gRPC topology: `Topology`'s namespaces with greeter v1 on prod:8000 and v2 on
/// stage:8000, both recording what they receive.
struct GrpcTopo {
    topo: Topology,
}

impl GrpcTopo {
    fn new(test: &str) -> Self {
        Self::with_prod_args(test, &[])
    }

    /// `new` with more arguments for prod's greeter_server.py.
    fn with_prod_args(test: &str, prod_args: &[&str]) -> Self {
        let mut topo = Topology::new(test);
        let prod = start_greeter(&topo, &topo.prod, "0.0.0.0:8000", "v1", "prod", prod_args);
        let stage = start_greeter(
            &topo,
            &topo.stage,
            &format!("{STAGE_IP}:8000"),
            "v2",
            "stage",
            &[],
        );
        topo.prod_server = Some(prod);
        topo.stage_server = Some(stage);
        GrpcTopo { topo }
    }

    fn record(&self, which: &str) -> PathBuf {
        self.topo.path(&format!("{which}-grpc.jsonl"))
    }

    fn clear_records(&self) {
        for which in ["prod", "stage"] {
            std::fs::write(self.record(which), "").expect("truncate record");
        }
    }

    fn prod_calls(&self) -> Vec<Call> {
        read_calls(&self.record("prod"), true)
    }

    fn stage_calls(&self) -> Vec<Call> {
        read_calls(&self.record("stage"), true)
    }

    /// Waits until stage recorded `n` calls (or recorded nothing new for 5 s, or
    /// `limit` passed), then a little longer so a duplicate has time to show; returns
    /// everything stage recorded.
    fn wait_stage_calls(&self, n: usize, limit: Duration) -> Vec<Call> {
        let path = self.record("stage");
        wait_settled(n as u64, limit, Duration::from_secs(5), || {
            read_calls(&path, true).len() as u64
        });
        std::thread::sleep(Duration::from_millis(500));
        self.stage_calls()
    }

    fn client_args(&self, tag: &str) -> Vec<String> {
        client_args(&format!("{PROD_IP}:8000"), AUTHORITY, tag)
    }

    /// Runs the client in `client` against prod once (every call kind on a new
    /// channel); returns its calls.
    fn run_client(&self, tag: &str) -> Vec<Call> {
        run_client_in(&self.topo.client, &self.client_args(tag), tag)
    }

    /// The client in `--two-phase` mode, stdin piped; waits until it printed READY.
    fn spawn_two_phase_client(&self, tag: &str, mode: &[&str]) -> (Child, PathBuf, PathBuf) {
        let mut args = self.client_args(tag);
        args.extend(mode.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, err) = (
            self.topo.path(&format!("client-{tag}.out")),
            self.topo.path(&format!("client-{tag}.err")),
        );
        let mut child = self
            .topo
            .client
            .cmd(&args)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).expect("client stdout"))
            .stderr(std::fs::File::create(&err).expect("client stderr"))
            .spawn()
            .expect("spawn greeter client");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !read(&out).contains("READY") {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "two-phase client ({tag}) exited {status} before READY: {}\n{}",
                    read(&out),
                    tail(&read(&err), 30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "two-phase client ({tag}) not READY in 60 s: {}\n{}",
                read(&out),
                tail(&read(&err), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (child, out, err)
    }
}

/// Sends the waiting client its go line and waits (90 s at most) for it to end; returns
/// every call it made.
fn go_and_finish(client: &mut Child, out: &Path, err: &Path, engine: &str) -> Vec<Call> {
    client
        .stdin
        .take()
        .expect("client stdin")
        .write_all(b"go\n")
        .expect("write go");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = client.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            panic!(
                "{engine}: client did not finish in 90 s: {}",
                tail(&read(err), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{engine}: client failed ({status}): {}\n{}",
        read(out),
        tail(&read(err), 30)
    );
    read_calls(out, false)
}

/// greeter_client.py's command line: TARGET with `grpc.default_authority` AUTHORITY.
fn client_args(target: &str, authority: &str, tag: &str) -> Vec<String> {
    vec![
        // Every call has a 30 s deadline; this bounds the whole run.
        "timeout".into(),
        "180".into(),
        "python3".into(),
        format!("{GRPC_DIR}/greeter_client.py"),
        target.into(),
        "--authority".into(),
        authority.into(),
        "--tag".into(),
        tag.into(),
    ]
}

/// Runs the client (`args`) in `ns` to the end; returns the calls it made.
fn run_client_in(ns: &Netns, args: &[String], tag: &str) -> Vec<Call> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns.exec(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "greeter client ({tag}) failed ({}): {stdout}\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stderr), 30)
    );
    let calls: Vec<Call> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| Call::parse(l, false))
        .collect();
    assert_eq!(calls.len(), CALLS_PER_PHASE, "client output: {stdout}");
    calls
}

/// Polls `count` until it reaches `want`, stays unchanged for `quiet`, or `limit`
/// passes; returns the last count. Copies that never come cost `quiet`, not `limit`.
fn wait_settled(
    want: u64,
    limit: Duration,
    quiet: Duration,
    mut count: impl FnMut() -> u64,
) -> u64 {
    let deadline = Instant::now() + limit;
    let (mut last, mut since) = (count(), Instant::now());
    while last < want && Instant::now() < deadline && since.elapsed() < quiet {
        std::thread::sleep(Duration::from_millis(100));
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// Starts greeter_server.py in `ns` recording to `<which>-grpc.jsonl`; waits for `ready`.
fn start_greeter(
    topo: &Topology,
    ns: &Netns,
    listen: &str,
    version: &str,
    which: &str,
    extra: &[&str],
) -> Proc {
    let record = topo.path(&format!("{which}-grpc.jsonl"));
    let script = format!("{GRPC_DIR}/greeter_server.py");
    let record = record.to_str().expect("utf-8 path");
    let mut args = vec!["python3", &script, listen, version, record];
    args.extend_from_slice(extra);
    let proc = ns.spawn(
        &args,
        &topo.path(&format!("{which}-grpc.out")),
        &topo.path(&format!("{which}-grpc.err")),
    );
    let (out, err) = (proc.stdout.clone(), proc.stderr.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read(&out).contains("ready") {
        assert!(
            Instant::now() < deadline,
            "greeter {version} on {listen} not ready in 30 s: {}\n{}",
            read(&out),
            tail(&read(&err), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    proc
}

/// Every call in `sent` reached stage exactly once, as the client sent it: `:authority`
/// with the `-shadow` suffix before the port, the same method, the same request messages
/// (length and SHA-256 of each, in order) and the same custom metadata, the `-bin` value
/// byte-identical. Nothing else reached stage. `context` goes into every message.
fn assert_copies(sent: &[Call], stage: &[Call], context: &str) {
    let mut by_id: HashMap<&str, Vec<&Call>> = HashMap::new();
    for c in stage {
        by_id.entry(c.id.as_str()).or_default().push(c);
    }
    let sent_ids: Vec<&str> = sent.iter().map(|c| c.id.as_str()).collect();
    let unexpected: Vec<&Call> = stage
        .iter()
        .filter(|c| !sent_ids.contains(&c.id.as_str()))
        .collect();
    let missing: Vec<&str> = sent_ids
        .iter()
        .copied()
        .filter(|id| !by_id.contains_key(id))
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{context}\nexpected at stage exactly once each: {sent_ids:?}\nmissing: {missing:?}\n\
         unexpected: {unexpected:?}\nstage recorded {} calls:\n{}",
        stage.len(),
        briefs(stage)
    );
    for s in sent {
        let got = &by_id[s.id.as_str()];
        assert_eq!(
            got.len(),
            1,
            "{context}\n{} arrived {} times:\n{}",
            s.id,
            got.len(),
            got.iter().map(|c| c.brief()).collect::<Vec<_>>().join("\n")
        );
        let g = got[0];
        assert_eq!(
            g.authority.as_deref(),
            Some(SHADOW_AUTHORITY),
            "{context}\n{}: :authority at stage",
            s.id
        );
        assert_eq!(g.phase, "v2", "{context}\n{}: recorded by", s.id);
        assert_eq!(g.method, s.method, "{context}\n{}: :path", s.id);
        assert_eq!(
            g.messages, s.messages,
            "{context}\n{}: request messages (length, sha256) at stage vs sent",
            s.id
        );
        // The keys the client set, as stage got them; other keys the copy may carry
        // (user-agent, grpc-timeout, x-forwarded-for) are not compared.
        let want = s.custom_metadata();
        let have: Vec<(String, String)> = g
            .metadata
            .iter()
            .filter(|(k, _)| want.iter().any(|(w, _)| w == k))
            .cloned()
            .collect();
        assert_eq!(
            have.iter().map(|p| &p.0).collect::<Vec<_>>(),
            want.iter().map(|p| &p.0).collect::<Vec<_>>(),
            "{context}\n{}: the client's metadata keys at stage vs sent (all at stage: {:?})",
            s.id,
            g.metadata
        );
        for ((key, w), (_, h)) in want.iter().zip(&have) {
            if key.ends_with("-bin") {
                assert_eq!(
                    base64_decode(h),
                    base64_decode(w),
                    "{context}\n{}: {key} bytes at stage vs sent",
                    s.id
                );
            } else {
                assert_eq!(h, w, "{context}\n{}: {key} at stage vs sent", s.id);
            }
        }
    }
}

/// The client's calls reached prod (v1) as sent, each once: the topology works whatever
/// the agent does.
fn assert_prod_got(sent: &[Call], prod: &[Call], context: &str) {
    for s in sent {
        let n = prod.iter().filter(|p| p.id == s.id).count();
        assert_eq!(
            n,
            1,
            "{context}: prod recorded {} {n} times:\n{}",
            s.id,
            briefs(prod)
        );
        let p = prod.iter().find(|p| p.id == s.id).expect("found");
        assert_eq!(
            p.authority.as_deref(),
            Some(AUTHORITY),
            "{context}: {}",
            s.id
        );
        assert_eq!(p.messages, s.messages, "{context}: {} at prod", s.id);
    }
}

/// The agent's `/metrics` (default admin address), scraped from inside prod.
fn scrape_metrics(topo: &Topology) -> String {
    let out = topo.prod.exec(&[
        "curl",
        "-s",
        "--max-time",
        "5",
        &format!("http://{ADMIN}/metrics"),
    ]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Sum of `shadowtap_requests_total` samples with protocol `protocol` and one of
/// `outcomes` (`outcome` or `outcome/detail`, e.g. `grpc/ok`).
fn requests_metric(metrics: &str, protocol: &str, outcomes: &[&str]) -> u64 {
    let mut sum = 0.0;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("shadowtap_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        if label("protocol") != protocol {
            continue;
        }
        let (outcome, detail) = (label("outcome"), label("detail"));
        if outcomes
            .iter()
            .any(|o| *o == outcome || *o == format!("{outcome}/{detail}"))
        {
            sum += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    sum as u64
}

fn agent_report(summary: &str, err: &str) -> String {
    format!(
        "agent summary:\n{summary}\nagent stderr (tail):\n{}",
        tail(err, 25)
    )
}

/// (a) Every call kind on a new channel, each engine: every call arrives at stage v2
/// exactly once with `:authority` `grpc-hello.example.cn-shadow:8000`, the same messages
/// (≥ 1 MiB ones included) and metadata (`x-trace-bin` byte-identical); the summary counts
/// each as `grpc ok`.
#[test]
fn grpc_every_call_kind_is_shadowed_once_with_both_engines() {
    if !grpc_preflight("grpc_every_call_kind_is_shadowed_once", &[]) {
        return;
    }
    let _serial = serial();
    let g = GrpcTopo::new("gall");
    each_engine(|engine| {
        g.clear_records();
        let agent = g.topo.start_agent_on(engine, engine, PROD_IF, &[]);
        let sent = g.run_client(engine);
        assert_prod_got(&sent, &g.prod_calls(), engine);
        let stage = g.wait_stage_calls(sent.len(), Duration::from_secs(15));
        let (summary, err) = stop_agent(agent);
        let context = format!("{engine}:\n{}", agent_report(&summary, &err));
        assert_copies(&sent, &stage, &context);
        assert_eq!(
            summary_count(&summary, "grpc ok"),
            sent.len() as u64,
            "{context}\nsummary `grpc ok` vs calls made"
        );
        assert_eq!(
            summary_count(&summary, "total"),
            sent.len() as u64,
            "{context}"
        );
        assert_eq!(requests_seen(&summary), sent.len() as u64, "{context}");
    });
}

/// (b) A channel opened before the agent starts: its calls made after the agent started
/// are not copied (the agent joined the connection late: HPACK state unknown) and are
/// counted `untrusted` or `undecodable` under protocol `h2`; every call on a channel
/// opened after the agent started is shadowed exactly once.
#[test]
fn grpc_channel_open_before_the_agent_is_counted_new_channel_shadowed() {
    if !grpc_preflight("grpc_channel_open_before_the_agent_is_counted", &[]) {
        return;
    }
    let _serial = serial();
    let g = GrpcTopo::new("glate");
    each_engine(|engine| {
        g.clear_records();
        let (mut client, out, err_path) = g.spawn_two_phase_client(engine, &["--two-phase"]);
        let agent = g.topo.start_agent_on(engine, engine, PROD_IF, &[]);
        let calls = go_and_finish(&mut client, &out, &err_path, engine);
        let phase =
            |p: &str| -> Vec<Call> { calls.iter().filter(|c| c.phase == p).cloned().collect() };
        let (early, late, fresh) = (phase("early"), phase("late"), phase("fresh"));
        for (name, set) in [("early", &early), ("late", &late), ("fresh", &fresh)] {
            assert_eq!(
                set.len(),
                CALLS_PER_PHASE,
                "{engine}: {name} calls: {calls:?}"
            );
        }

        // The topology: early and late calls shared one connection, fresh another.
        let prod = g.prod_calls();
        assert_prod_got(&calls, &prod, engine);
        let peer_of = |id: &str| {
            prod.iter()
                .find(|p| p.id == id)
                .map(|p| p.peer.clone())
                .unwrap_or_default()
        };
        let old_peer = peer_of(&early[0].id);
        for c in early.iter().chain(&late) {
            assert_eq!(
                peer_of(&c.id),
                old_peer,
                "{engine}: {} not on the channel opened before the agent",
                c.id
            );
        }
        for c in &fresh {
            assert_ne!(
                peer_of(&c.id),
                old_peer,
                "{engine}: {} on the old connection",
                c.id
            );
        }

        let stage = g.wait_stage_calls(fresh.len(), Duration::from_secs(15));
        let metrics = scrape_metrics(&g.topo);
        let (summary, err) = stop_agent(agent);
        let context = format!(
            "{engine}:\n{}\n/metrics shadowtap_requests_total (non-zero) before stop:\n{}",
            agent_report(&summary, &err),
            metrics
                .lines()
                .filter(|l| l.starts_with("shadowtap_requests_total") && !l.ends_with(" 0"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // Neither early nor late calls at stage; fresh ones exactly once, as sent.
        assert_copies(&fresh, &stage, &context);
        let counted = requests_metric(&metrics, "h2", &["untrusted", "undecodable"]);
        assert_eq!(
            counted,
            late.len() as u64,
            "{context}\nh2 requests counted untrusted + undecodable vs calls made on the \
             old channel after the agent started"
        );
        assert_eq!(
            summary_count(&summary, "untrusted") + summary_count(&summary, "undecodable"),
            late.len() as u64,
            "{context}\nsummary untrusted + undecodable"
        );
        assert_eq!(
            requests_metric(&metrics, "h2", &["grpc/ok"]),
            fresh.len() as u64,
            "{context}\nh2 requests `grpc ok` vs calls on the new channel"
        );
        assert_eq!(
            requests_seen(&summary),
            (late.len() + fresh.len()) as u64,
            "{context}\nrequests seen vs late + fresh calls"
        );
    });
}

/// Connections recycled by the server (gRPC's MAX_CONNECTION_AGE, here 4 s): a channel
/// opened before the agent starts keeps calling (unary, every 100 ms); its calls on the
/// connection that was open when the agent started are counted `untrusted` or
/// `undecodable` (protocol `h2`), never copied, and every call on the connections grpcio
/// opens after the server closed the old one is shadowed exactly once. Which connection
/// carried a call is what prod's greeter recorded (the client's address and port).
#[test]
fn grpc_connections_recycled_by_max_connection_age_are_picked_up() {
    if !grpc_preflight("grpc_connections_recycled_by_max_connection_age", &[]) {
        return;
    }
    let _serial = serial();
    const ROLLING: &str = "80";
    let g = GrpcTopo::with_prod_args("gage", &["--max-connection-age-ms", "4000"]);
    each_engine(|engine| {
        g.clear_records();
        let (mut client, out, err_path) =
            g.spawn_two_phase_client(engine, &["--rolling", ROLLING, "--interval-ms", "100"]);
        let agent = g.topo.start_agent_on(engine, engine, PROD_IF, &[]);
        let calls = go_and_finish(&mut client, &out, &err_path, engine);
        let prod = g.prod_calls();
        assert_prod_got(&calls, &prod, engine);
        let peer_of = |id: &str| {
            prod.iter()
                .find(|p| p.id == id)
                .map(|p| p.peer.clone())
                .unwrap_or_default()
        };
        let early_peer = peer_of(&format!("{engine}-early-unary"));
        let rolling: Vec<&Call> = calls.iter().filter(|c| c.phase == "rolling").collect();
        let (old, new): (Vec<Call>, Vec<Call>) = rolling
            .iter()
            .map(|c| (*c).clone())
            .partition(|c| peer_of(&c.id) == early_peer);
        let mut peers: Vec<String> = rolling.iter().map(|c| peer_of(&c.id)).collect();
        peers.dedup();
        // The topology: some calls on the old connection after the agent started, then
        // at least one new connection.
        assert!(
            !old.is_empty() && !new.is_empty(),
            "{engine}: rolling calls on the old connection: {}, on new ones: {} (connections \
             in order: {peers:?}); max connection age vs agent start time?",
            old.len(),
            new.len()
        );

        let stage = g.wait_stage_calls(new.len(), Duration::from_secs(15));
        let metrics = scrape_metrics(&g.topo);
        let (summary, err) = stop_agent(agent);
        let context = format!(
            "{engine}: {} calls on the old connection after the agent started, {} on {} new \
             connections\n{}\n/metrics shadowtap_requests_total (non-zero) before stop:\n{}",
            old.len(),
            new.len(),
            peers.len() - 1,
            agent_report(&summary, &err),
            metrics
                .lines()
                .filter(|l| l.starts_with("shadowtap_requests_total") && !l.ends_with(" 0"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_copies(&new, &stage, &context);
        assert_eq!(
            requests_metric(&metrics, "h2", &["untrusted", "undecodable"]),
            old.len() as u64,
            "{context}\nh2 requests counted untrusted + undecodable vs calls on the old \
             connection after the agent started"
        );
        assert_eq!(
            requests_metric(&metrics, "h2", &["grpc/ok"]),
            new.len() as u64,
            "{context}\nh2 requests `grpc ok` vs calls on new connections"
        );
        assert_eq!(
            requests_seen(&summary),
            rolling.len() as u64,
            "{context}\nrequests seen vs rolling calls"
        );
    });
}

/// (c) tcpdump captures the client->prod traffic of every call kind; `shadowtap replay`
/// of that file delivers each call to stage exactly once, as sent.
#[test]
fn grpc_tcpdump_capture_replays_each_call_once() {
    if !grpc_preflight(
        "grpc_tcpdump_capture_replays_each_call_once",
        &["tcpdump", "tshark"],
    ) {
        return;
    }
    let _serial = serial();
    let g = GrpcTopo::new("gpcap");
    g.clear_records();
    let pcap = g.topo.path("grpc.pcap");
    let pcap_arg = pcap.to_str().expect("utf-8 path").to_string();
    let mut tcpdump = g.topo.prod.spawn(
        &[
            "tcpdump",
            "-i",
            PROD_IF,
            "-s",
            "0",
            // A 64 MiB buffer: with the default 2 MiB, the 1 MiB messages' bursts lost
            // packets, and shadowtap (rightly) counted the call they cut `incomplete`.
            "-B",
            "65536",
            // Without it, the packets of the last ring block not yet handed over when
            // tcpdump is stopped are never written (seen: the bidi call's last ones).
            "--immediate-mode",
            "-U",
            "-w",
            &pcap_arg,
            "tcp port 8000",
        ],
        &g.topo.path("tcpdump.out"),
        &g.topo.path("tcpdump.err"),
    );
    let tcpdump_err = tcpdump.stderr.clone();
    wait_until(Duration::from_secs(10), "tcpdump listening", || {
        read(&tcpdump_err).contains("listening on")
    });
    let sent = g.run_client("file");
    assert_prod_got(&sent, &g.prod_calls(), "capture");
    tcpdump.signal("-INT");
    assert!(tcpdump.wait(Duration::from_secs(10)).success());
    let report = read(&tcpdump_err);
    assert!(
        report
            .lines()
            .any(|l| l.trim() == "0 packets dropped by kernel"),
        "tcpdump lost packets, so the capture is not the traffic: {report}"
    );

    // The capture holds the calls (tshark's HTTP/2 dissector): one request header block
    // with each :path.
    let out = run(&[
        "tshark",
        "-r",
        &pcap_arg,
        "-d",
        "tcp.port==8000,http2",
        "-Y",
        "http2.headers.path",
        "-T",
        "fields",
        "-e",
        "http2.headers.path",
    ]);
    let paths = String::from_utf8_lossy(&out.stdout).to_string();
    let mut got: Vec<&str> = paths
        .lines()
        .flat_map(|l| l.split(','))
        .filter(|p| !p.is_empty())
        .collect();
    got.sort_unstable();
    let mut want: Vec<&str> = sent.iter().map(|c| c.method.as_str()).collect();
    want.sort_unstable();
    assert_eq!(got, want, "request :path values tshark finds in {pcap_arg}");

    let replay = g.topo.prod.exec(&[
        BIN,
        "replay",
        &pcap_arg,
        "--port",
        "8000",
        "--speed",
        "max",
        "--target",
        &stage_target(),
        // The capture holds v1's answers; v2 says `from v2` in every reply.
        "--diff",
    ]);
    let summary = String::from_utf8_lossy(&replay.stdout).to_string();
    let err = String::from_utf8_lossy(&replay.stderr).to_string();
    let stage = g.wait_stage_calls(sent.len(), Duration::from_secs(10));
    let context = format!(
        "shadowtap replay {pcap_arg} (exit {}):\n{}",
        replay.status,
        agent_report(&summary, &err)
    );
    assert_copies(&sent, &stage, &context);
    assert!(replay.status.success(), "{context}");
    assert_eq!(
        summary_count(&summary, "grpc ok"),
        sent.len() as u64,
        "{context}\nsummary `grpc ok` vs calls captured"
    );
    assert_eq!(requests_seen(&summary), sent.len() as u64, "{context}");

    // The comparison, by method: every reply differs in its message bytes (`body`),
    // status and grpc-status agree.
    let table: String = summary
        .split("diff: production against the first target, by route\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no diff table\n{context}"))
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .map(|l| format!("{l}\n"))
        .collect();
    for call in &sent {
        let calls = sent.iter().filter(|c| c.method == call.method).count() as u64;
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{} ", call.method)))
            .unwrap_or_else(|| panic!("no diff row for {}\n{table}", call.method));
        let counts: Vec<u64> = row[call.method.len()..]
            .split_whitespace()
            .map(|n| n.parse().expect("count"))
            .collect();
        // match, status, headers, body, shadow_error, shadow_timeout, prod_missing
        assert_eq!(
            counts,
            [0, 0, 0, calls, 0, 0, 0],
            "{}\n{table}",
            call.method
        );
    }
}

/// nginx major.minor.patch from `nginx -v`.
fn nginx_version() -> (u32, u32, u32) {
    let out = run(&["nginx", "-v"]);
    let text = String::from_utf8_lossy(&out.stderr);
    let v = text
        .split("nginx/")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("nginx -v: {text}"));
    let n: Vec<u32> = v.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    (
        n[0],
        n.get(1).copied().unwrap_or(0),
        n.get(2).copied().unwrap_or(0),
    )
}

/// An nginx config with a cleartext HTTP/2 (prior knowledge) listener on `listen`
/// answering 200, logging (all but `/ready`) `$http_host|$request_method|$request_uri|$server_protocol|$status`
/// per request to `dir/access.log`. `listen ... http2` before nginx 1.25.1, `http2 on`
/// from then on.
fn nginx_h2c_conf(dir: &Path, listen: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("nginx dir");
    let d = dir.display();
    let listen_lines = if nginx_version() >= (1, 25, 1) {
        format!("listen {listen};\n    http2 on;")
    } else {
        format!("listen {listen} http2;")
    };
    let conf = format!(
        r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
  log_format shadow '$http_host|$request_method|$request_uri|$server_protocol|$status';
  access_log {d}/access.log shadow;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  server {{
    {listen_lines}
    location / {{ return 200 "ok\n"; }}
    # Readiness probes are not requests to count.
    location = /ready {{ access_log off; return 200 "ready\n"; }}
  }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    path
}

/// `h2load`'s `requests:` line: (total, succeeded).
fn h2load_counts(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no `requests:` line in h2load output:\n{out}"));
    let w: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| w.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
    // requests: N total, N started, N done, N succeeded, N failed, ...
    (num(1), num(7))
}

/// `Topology`'s namespaces with nginx h2c listeners on prod:8000 and stage:8000, both
/// ready (checked over each namespace's own side); returns it and stage's access log.
fn nginx_h2c_topology(test: &str) -> (Topology, PathBuf) {
    let mut topo = Topology::new(test);
    let prod_conf = nginx_h2c_conf(&topo.path("nginx-prod"), "0.0.0.0:8000");
    let stage_dir = topo.path("nginx-stage");
    let stage_conf = nginx_h2c_conf(&stage_dir, &format!("{STAGE_IP}:8000"));
    let stage_log = stage_dir.join("access.log");
    for (ns, conf, which) in [
        (&topo.prod, &prod_conf, "prod"),
        (&topo.stage, &stage_conf, "stage"),
    ] {
        let conf = conf.to_str().expect("utf-8 path").to_string();
        let proc = ns.spawn(
            &["nginx", "-c", &conf],
            &topo.path(&format!("nginx-{which}.out")),
            &topo.path(&format!("nginx-{which}.err")),
        );
        if which == "prod" {
            topo.prod_server = Some(proc);
        } else {
            topo.stage_server = Some(proc);
        }
    }
    // Readiness over each namespace's own side, so nothing crosses the watched veth.
    for (ns, url) in [
        (&topo.prod, "http://127.0.0.1:8000/ready".to_string()),
        (&topo.stage, format!("http://{STAGE_IP}:8000/ready")),
    ] {
        wait_until(Duration::from_secs(10), "nginx h2c ready", || {
            ns.exec(&[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "1",
                "--http2-prior-knowledge",
                &url,
            ])
            .status
            .success()
        });
    }
    (topo, stage_log)
}

/// h2load -n N -c 4 -m 16 from `ns` with `:authority` AUTHORITY, bounded to 120 s,
/// at `rps` requests per second per connection (0: as fast as it goes); returns (total,
/// succeeded, its output).
fn h2load(ns: &Netns, n: u64, rps: u32, authority: &str, url: &str) -> (u64, u64, String) {
    let n = n.to_string();
    let rate = format!("--rps={rps}");
    let header = format!(":authority: {authority}");
    let mut args = vec![
        "timeout", "120", "h2load", "-n", &n, "-c", "4", "-m", "16", "-H", &header,
    ];
    if rps > 0 {
        args.push(&rate);
    }
    args.push(url);
    let out = ns.exec(&args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "h2load {url} failed:\n{text}");
    let (total, succeeded) = h2load_counts(&text);
    (total, succeeded, text)
}

/// (d) h2load against nginx's h2c listener in prod (4 connections, 16 streams each),
/// each engine at 100%: every request h2load reports succeeded reaches the stage nginx
/// exactly once (its access log), with the `-shadow` authority and the path.
#[test]
fn h2load_against_nginx_h2c_every_request_shadowed_once() {
    if !grpc_preflight(
        "h2load_against_nginx_h2c_every_request_shadowed_once",
        &["nginx", "h2load"],
    ) {
        return;
    }
    let _serial = serial();
    // Paced (4 connections x 250/s): the tests run the debug build, whose HTTP/2 sender
    // keeps up with about a thousand copies a second; the release build's figures at
    // h2load's full rate (every copy delivered) are bench/h2c.sh's. The queue holds the
    // whole run, so pacing jitter is no loss either.
    const N: u64 = 8_000;
    const RPS_PER_CONNECTION: u32 = 250;
    let (topo, stage_log) = nginx_h2c_topology("h2l");
    let authority = "nginx-h2c.example:8000";
    let shadow = "nginx-h2c.example-shadow:8000";
    each_engine(|engine| {
        std::fs::write(&stage_log, "").expect("truncate stage access log");
        let agent = topo.start_agent_on(
            &format!("h2l-{engine}"),
            engine,
            PROD_IF,
            &["--queue-len", "10000"],
        );
        let path = format!("/h2load-{engine}");
        let (total, succeeded, h2load_out) = h2load(
            &topo.client,
            N,
            RPS_PER_CONNECTION,
            authority,
            &format!("http://{PROD_IP}:8000{path}"),
        );
        assert_eq!(
            (total, succeeded),
            (N, N),
            "{engine}: h2load against prod nginx:\n{h2load_out}"
        );
        wait_settled(
            succeeded,
            Duration::from_secs(60),
            Duration::from_secs(3),
            || read(&stage_log).lines().count() as u64,
        );
        std::thread::sleep(Duration::from_millis(500));
        let (summary, err) = stop_agent(agent);
        let log = read(&stage_log);
        let lines: Vec<&str> = log.lines().collect();
        let context = format!("{engine}:\n{}", agent_report(&summary, &err));
        let wrong: Vec<&&str> = lines
            .iter()
            .filter(|l| !l.starts_with(&format!("{shadow}|GET|{path}|")))
            .take(5)
            .collect();
        assert!(
            wrong.is_empty(),
            "{context}\nstage lines not `{shadow}|GET|{path}|...`: {wrong:?}"
        );
        assert_eq!(
            lines.len() as u64,
            succeeded,
            "{context}\nrequests at stage nginx vs succeeded in h2load"
        );
        assert_eq!(
            summary_count(&summary, "replayed 2xx"),
            succeeded,
            "{context}\nsummary `replayed 2xx`"
        );
        assert_eq!(requests_seen(&summary), succeeded, "{context}");
    });
}

/// The parts the tests above rely on, without the agent: the greeter client's calls made
/// straight to stage v2 (from prod, with the shadow authority) pass the same checks a
/// copy must pass, and h2load against stage nginx's h2c listener is logged once per
/// request in the format the h2load test reads. If this fails, the others prove nothing.
#[test]
fn harness_grpc_pair_and_nginx_h2c_work_without_the_agent() {
    if !grpc_preflight(
        "harness_grpc_pair_and_nginx_h2c_work_without_the_agent",
        &["nginx", "h2load"],
    ) {
        return;
    }
    let _serial = serial();
    let g = GrpcTopo::new("hgrpc");
    g.clear_records();
    let sent = run_client_in(
        &g.topo.prod,
        &client_args(&format!("{STAGE_IP}:8000"), SHADOW_AUTHORITY, "direct"),
        "direct",
    );
    let large = sent
        .iter()
        .flat_map(|c| &c.messages)
        .filter(|m| m.0 >= 1 << 20)
        .count();
    assert!(large >= 3, "messages of 1 MiB or more: {large}");
    let stage = g.wait_stage_calls(sent.len(), Duration::from_secs(10));
    assert_copies(&sent, &stage, "greeter client straight to stage v2");
    assert!(g.prod_calls().is_empty(), "prod recorded calls");
    drop(g);

    let (topo, stage_log) = nginx_h2c_topology("hnginx");
    const N: u64 = 2_000;
    let (total, succeeded, out) = h2load(
        &topo.prod,
        N,
        0,
        "nginx-h2c.example-shadow:8000",
        &format!("http://{STAGE_IP}:8000/direct"),
    );
    assert_eq!((total, succeeded), (N, N), "{out}");
    let n = wait_settled(N, Duration::from_secs(10), Duration::from_secs(3), || {
        read(&stage_log).lines().count() as u64
    });
    assert_eq!(n, N, "stage nginx access log lines");
    let log = read(&stage_log);
    assert!(
        log.lines()
            .all(|l| l.starts_with("nginx-h2c.example-shadow:8000|GET|/direct|HTTP/2.0|200")),
        "{}",
        tail(&log, 3)
    );
}

#[test]
fn base64_decode_reads_standard_base64() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("YQ=="), b"a");
    assert_eq!(base64_decode("AP/+gA"), [0x00, 0xff, 0xfe, 0x80]);
    assert_eq!(base64_decode(""), b"");
}
