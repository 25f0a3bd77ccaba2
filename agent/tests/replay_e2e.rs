//! `shadowtap replay FILE… --target URL` end to end (issue 3): the real binary as a child
//! process, sending copies of the requests of corpus captures, of captures recorded here
//! with curl/tcpdump/httpbin, and of synthetic captures, into targets that record the
//! bytes they receive or misbehave on purpose. What is checked is what a user relies on:
//! the copy is the request (Host suffixed), sampling shares, every request accounted for
//! in the printed summary, bounded memory against hostile targets, one-line errors.

#[expect(
    dead_code,
    reason = "shared test support; this file uses nearly all of it"
)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shadowtap::capture::pcap_file::CaptureReader;
use shadowtap::pipeline::{Pipeline, PipelineConfig, PipelineEvent};
use support::{
    client_addr, closed_port, corpus, digest, pipelined, require_tools, run_shadowtap, shadow_host,
    Behaviour, CaptureBuilder, Finished, Httpbin, Received, RecordingServer, Summary, Tcpdump,
};

const LIMIT: Duration = Duration::from_secs(30);

fn replay(files: &[&Path], target_args: &[&str], extra: &[&str]) -> Finished {
    let mut args: Vec<String> = vec!["replay".into()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    args.extend(["--speed", "max", "--drain-timeout", "10s"].map(String::from));
    for t in target_args {
        args.push("--target".into());
        args.push((*t).to_string());
    }
    args.extend(extra.iter().map(|s| (*s).to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_shadowtap(&args, LIMIT)
}

/// A request as it should arrive: everything compared byte for byte, the body by digest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Arrival {
    method: String,
    target: Vec<u8>,
    host: String,
    body_len: usize,
    body_digest: u64,
}

impl Arrival {
    fn of(r: &Received) -> Self {
        Self {
            method: r.method.clone(),
            target: r.target.clone(),
            host: r.host(),
            body_len: r.body.len(),
            body_digest: digest(&r.body),
        }
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Headers whose presence or value the copy legitimately changes (SPEC.md "The copy is
/// the request"); every other header must arrive with the same name, value and order.
const REWRITTEN: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "trailer",
    "expect",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "x-forwarded-for",
];

fn kept_headers(headers: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    headers
        .iter()
        .filter(|(n, _)| {
            let lower = n.to_ascii_lowercase();
            !REWRITTEN.contains(&lower.as_str())
                && lower != "proxy-connection"
                && !named.contains(&lower)
        })
        .cloned()
        .collect()
}

/// What the captured request looked like, read from the file with the library's pipeline
/// (the reference for bodies and headers; `inspect` is checked against it too).
#[derive(Debug)]
struct Captured {
    arrival: Arrival,
    version: String,
    client_ip: String,
    headers: Vec<(String, Vec<u8>)>,
}

fn captured_requests(path: &Path) -> (Vec<Captured>, u64) {
    let mut reader = CaptureReader::open(path).expect("open capture");
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    let mut events = Vec::new();
    while let Some(frame) = reader.next_frame().expect("read capture") {
        if let Ok(evs) = pipeline.push_frame(&frame) {
            events.extend(evs);
        }
    }
    events.extend(pipeline.flush());
    let mut seen = 0;
    let mut out = Vec::new();
    for ev in events {
        match ev {
            PipelineEvent::Request(s) => {
                seen += 1;
                let r = s.request;
                let host = String::from_utf8_lossy(r.header("host").unwrap_or(b"")).into_owned();
                out.push(Captured {
                    arrival: Arrival {
                        method: r.method.clone(),
                        target: r.target.clone(),
                        host: shadow_host(&host),
                        body_len: r.body.len(),
                        body_digest: digest(&r.body),
                    },
                    version: format!("HTTP/1.{}", r.version_minor),
                    client_ip: s.client.ip().to_string(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect(),
                });
            }
            PipelineEvent::Dropped { .. } => seen += 1,
            PipelineEvent::NotHttp { .. }
            | PipelineEvent::Response { .. }
            | PipelineEvent::ResponseMissing { .. } => {}
        }
    }
    (out, seen)
}

/// `shadowtap inspect FILE` (the binary), as (method, target, shadowed host, body_len).
fn inspect_lines(path: &Path) -> Vec<(String, Vec<u8>, String, usize)> {
    let out = Command::new(support::shadowtap_bin())
        .arg("inspect")
        .arg(path)
        .output()
        .expect("run inspect");
    assert!(out.status.success(), "inspect {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("jsonl line"))
        // Requests not framed whole have lines too; only complete ones are replayed.
        .filter(|v| v["outcome"] == "complete")
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (
                s("method"),
                s("target").into_bytes(),
                shadow_host(&s("host")),
                usize::try_from(v["body_len"].as_u64().expect("body_len")).expect("usize"),
            )
        })
        .collect()
}

/// Every header the client sent arrives in order with its value, except the ones the
/// spec rewrites; those are checked one by one.
fn check_copy(got: &Received, want: &Captured) {
    let what = format!(
        "{} {}",
        want.arrival.method,
        String::from_utf8_lossy(&want.arrival.target)
    );
    let line = [
        want.arrival.method.as_bytes(),
        b" ",
        &want.arrival.target,
        b" ",
        want.version.as_bytes(),
        b"\r\n",
    ]
    .concat();
    assert!(
        got.head.starts_with(&line),
        "{what}: request line {:?}",
        String::from_utf8_lossy(&got.head)
    );
    assert_eq!(got.version, want.version, "{what}: version");
    assert_eq!(
        kept_headers(&got.headers),
        kept_headers(&want.headers),
        "{what}: headers"
    );
    for gone in [
        "expect",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "trailer",
    ] {
        assert!(got.header(gone).is_none(), "{what}: {gone} was forwarded");
    }
    let hosts = got
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .count();
    assert_eq!(hosts, 1, "{what}: one Host");
    let xff = got.header_str("x-forwarded-for");
    assert_eq!(
        xff.rsplit(',').next().map(str::trim),
        Some(want.client_ip.as_str()),
        "{what}: X-Forwarded-For {xff:?}"
    );
    if !got.body.is_empty() {
        assert_eq!(
            got.header_str("content-length"),
            got.body.len().to_string(),
            "{what}"
        );
    }
}

/// Replays `path` into a recording server and checks every copy against the capture and
/// against `inspect`'s view of it.
fn check_fidelity(path: &Path, min_requests: usize) {
    let (captured, seen) = captured_requests(path);
    assert!(
        captured.len() >= min_requests,
        "{}: {} requests",
        path.display(),
        captured.len()
    );
    let from_inspect = sorted(inspect_lines(path));
    let from_library = sorted(
        captured
            .iter()
            .map(|c| {
                let a = &c.arrival;
                (
                    a.method.clone(),
                    a.target.clone(),
                    a.host.clone(),
                    a.body_len,
                )
            })
            .collect(),
    );
    assert_eq!(
        from_inspect,
        from_library,
        "{}: inspect disagrees",
        path.display()
    );

    let server = RecordingServer::start(Behaviour::Answer);
    let run = replay(&[path], &[&server.url()], &[]);
    run.assert_success();
    let summary = run.summary();
    summary.assert_adds_up(seen);
    let t = summary.target(&server.url());
    assert_eq!(
        t.get("replayed 2xx"),
        captured.len() as u64,
        "{}: {summary:#?}",
        path.display()
    );

    let received = server.received();
    let got = sorted(received.iter().map(Arrival::of).collect());
    let want = sorted(captured.iter().map(|c| c.arrival.clone()).collect());
    assert_eq!(got, want, "{}: what arrived", path.display());
    for r in &received {
        let arrival = Arrival::of(r);
        let c = captured
            .iter()
            .find(|c| c.arrival == arrival)
            .expect("matched above");
        check_copy(r, c);
    }
}

#[test]
fn corpus_post_arrives_as_sent() {
    check_fidelity(&corpus("post.pcap"), 1);
}

#[test]
fn corpus_pipelined_requests_all_arrive() {
    check_fidelity(&corpus("pipelined-requests.pcap"), 5);
}

#[test]
fn corpus_large_post_bodies_arrive_whole() {
    let path = corpus("http-post-large.pcap");
    check_fidelity(&path, 2);
    // Wireshark's view of the same file: two POSTs of 61,484 body bytes.
    let lens: Vec<usize> = inspect_lines(&path).iter().map(|l| l.3).collect();
    assert_eq!(lens, vec![61_484, 61_484]);
}

#[test]
fn corpus_100_continue_drops_expect() {
    let path = corpus("100-continue.pcap");
    let (captured, _) = captured_requests(&path);
    assert!(
        captured[0]
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("expect") && v == b"100-continue"),
        "the capture's request carries Expect: 100-continue"
    );
    check_fidelity(&path, 1);
}

/// A chunked upload (extensions, a trailer, a body over many segments) written by hand,
/// so the expectation is ours, not the pipeline's.
#[test]
fn chunked_upload_arrives_dechunked_with_content_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chunked.pcapng");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut wire = b"POST /upload?id=7&x=%20y HTTP/1.1\r\nHost: uploads.example:8080\r\n\
        Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\
        Trailer: X-Checksum\r\nX-Trace: abc\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n"
        .to_vec();
    for piece in big.chunks(4096) {
        wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\nX-Checksum: 42\r\n\r\n");
    let mut body = b"hello world".to_vec();
    body.extend_from_slice(&big);

    let mut capture = CaptureBuilder::new();
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 40_000);
    let server = SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 8080);
    capture.connection(client, server, &[&wire]);
    capture.write_to(&path);

    let target = RecordingServer::start(Behaviour::Answer);
    let run = replay(&[&path], &[&target.url()], &[]);
    run.assert_success();
    let summary = run.summary();
    summary.assert_adds_up(1);
    assert_eq!(summary.target(&target.url()).get("replayed 2xx"), 1);
    let got = target.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, b"/upload?id=7&x=%20y");
    assert_eq!(r.host(), "uploads.example-shadow:8080");
    assert_eq!(r.body.len(), body.len());
    assert_eq!(digest(&r.body), digest(&body));
    assert_eq!(r.header_str("content-length"), body.len().to_string());
    assert!(r.header("transfer-encoding").is_none());
    assert!(r.header("trailer").is_none());
    assert_eq!(r.header_str("content-type"), "application/octet-stream");
    assert_eq!(r.header_str("x-trace"), "abc");
    assert_eq!(r.header_str("x-forwarded-for"), "10.1.2.3");
}

// ---------------------------------------------------------------------------------------
// Captures recorded here with real tools.

#[test]
fn curl_traffic_recorded_by_tcpdump_replays_into_recorder_and_httpbin() {
    let test = "curl_traffic_recorded_by_tcpdump_replays_into_recorder_and_httpbin";
    if !require_tools(test, &["tcpdump", "gunicorn", "curl"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let httpbin = Httpbin::start();
    let base = httpbin.url();
    let host = format!("127.0.0.1:{}", httpbin.port);
    let cap = dir.path().join("httpbin.pcap");
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    let big_file = dir.path().join("big.bin");
    std::fs::write(&big_file, &big).expect("write");
    let chunked: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let chunked_file = dir.path().join("chunked.txt");
    std::fs::write(&chunked_file, &chunked).expect("write");
    let json = br#"{"name":"shadowtap","n":[1,2,3]}"#;

    let tcpdump = Tcpdump::start(&cap, httpbin.port);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Expect:",
            ])
            .args(args)
            .output()
            .expect("curl");
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && code.starts_with('2'),
            "curl {args:?}: {code} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let get_target = "/get?a=1&b=two%20words&c=%E2%9C%93";
    curl(&[&format!("{base}{get_target}")]);
    curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        std::str::from_utf8(json).expect("utf8"),
        &format!("{base}/post"),
    ]);
    curl(&[
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", big_file.display()),
        &format!("{base}/post"),
    ]);
    curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", chunked_file.display()),
        &format!("{base}/post"),
    ]);
    let first = format!("GET /anything/one HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let second =
        format!("GET /anything/two?x=y HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    pipelined(httpbin.port, &[first.as_bytes(), second.as_bytes()]);
    tcpdump.stop();

    let shadow = shadow_host(&host);
    let arrival = |method: &str, target: &str, body: &[u8]| Arrival {
        method: method.into(),
        target: target.as_bytes().to_vec(),
        host: shadow.clone(),
        body_len: body.len(),
        body_digest: digest(body),
    };
    let want = sorted(vec![
        arrival("GET", get_target, b""),
        arrival("POST", "/post", json),
        arrival("POST", "/post", &big),
        arrival("POST", "/post", &chunked),
        arrival("GET", "/anything/one", b""),
        arrival("GET", "/anything/two?x=y", b""),
    ]);
    let n = want.len() as u64;

    let recorder = RecordingServer::start(Behaviour::Answer);
    let run = replay(&[&cap], &[&recorder.url()], &[]);
    run.assert_success();
    let summary = run.summary();
    summary.assert_adds_up(n);
    assert_eq!(summary.target(&recorder.url()).get("replayed 2xx"), n);
    let received = recorder.received();
    assert_eq!(sorted(received.iter().map(Arrival::of).collect()), want);
    for r in &received {
        assert!(r.header("transfer-encoding").is_none());
        assert_eq!(r.header_str("x-forwarded-for"), "127.0.0.1");
    }

    // The same capture into httpbin itself: a real server takes every copy.
    let run = replay(&[&cap], &[&base], &[]);
    run.assert_success();
    let summary = run.summary();
    summary.assert_adds_up(n);
    assert_eq!(summary.target(&base).get("replayed 2xx"), n, "{summary:#?}");
}

// ---------------------------------------------------------------------------------------
// Sampling, through the binary.

const CONNECTIONS: u32 = 1_000;
const PER_CONNECTION: u32 = 10;
const REQUESTS: u64 = (CONNECTIONS * PER_CONNECTION) as u64;

/// 10,000 GETs on 1,000 connections; each names its connection and position in headers.
fn many_requests(dir: &Path) -> PathBuf {
    let path = dir.join("many.pcapng");
    let server = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 8080);
    let mut capture = CaptureBuilder::new();
    for c in 0..CONNECTIONS {
        let requests: Vec<Vec<u8>> = (0..PER_CONNECTION)
            .map(|i| {
                format!(
                    "GET /item/{c}/{i}?q={} HTTP/1.1\r\nHost: shop.example:8080\r\n\
                     X-Conn: {c}\r\nX-Seq: {i}\r\nUser-Agent: e2e\r\n\r\n",
                    c * PER_CONNECTION + i
                )
                .into_bytes()
            })
            .collect();
        let writes: Vec<&[u8]> = requests.iter().map(Vec::as_slice).collect();
        capture.connection(client_addr(c), server, &writes);
    }
    capture.write_to(&path);
    path
}

/// Inside mean ± 5 sigma of Binomial(n, p).
fn assert_binomial(what: &str, got: u64, n: u64, p: f64) {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (got as f64 - mean).abs() <= 5.0 * sigma,
        "{what}: {got} of {n}, expected {mean} ± {:.0}",
        5.0 * sigma
    );
}

/// (connection, position) of each arrival; also checks none arrived twice.
fn arrivals_by_key(received: &[Received]) -> BTreeSet<(u32, u32)> {
    let keys: BTreeSet<(u32, u32)> = received
        .iter()
        .map(|r| {
            let n = |h: &str| r.header_str(h).parse::<u32>().expect("numeric header");
            (n("x-conn"), n("x-seq"))
        })
        .collect();
    assert_eq!(keys.len(), received.len(), "a request arrived twice");
    keys
}

#[test]
fn percent_50_keeps_about_half_of_10000_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = many_requests(dir.path());
    let target = RecordingServer::start(Behaviour::Answer);
    let run = replay(
        &[&path],
        &[&target.url()],
        &[
            "--percent",
            "50",
            "--queue-len",
            "20000",
            "--max-in-flight",
            "16",
        ],
    );
    run.assert_success();
    let summary = run.summary();
    summary.assert_adds_up(REQUESTS);
    let t = summary.target(&target.url());
    let received = target.received();
    let arrived = arrivals_by_key(&received).len() as u64;
    assert_binomial("arrivals at --percent 50", arrived, REQUESTS, 0.5);
    assert_eq!(t.get("replayed 2xx"), arrived);
    assert_eq!(
        t.get("not_sampled") + t.get("replayed 2xx"),
        REQUESTS,
        "{t:#?}"
    );
    // Copies share keep-alive connections, never more than are in flight at once.
    assert!(
        target.connections() <= 16,
        "{} connections for {arrived} copies",
        target.connections()
    );
}

#[test]
fn sample_by_connection_keeps_connections_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = many_requests(dir.path());
    let target = RecordingServer::start(Behaviour::Answer);
    let run = replay(
        &[&path],
        &[&target.url()],
        &[
            "--sample-by",
            "connection",
            "--percent",
            "30",
            "--queue-len",
            "20000",
        ],
    );
    run.assert_success();
    let summary = run.summary();
    summary.assert_adds_up(REQUESTS);
    let received = target.received();
    let mut per_conn: BTreeMap<u32, u32> = BTreeMap::new();
    for (c, _) in arrivals_by_key(&received) {
        *per_conn.entry(c).or_default() += 1;
    }
    let partial: Vec<_> = per_conn
        .iter()
        .filter(|(_, n)| **n != PER_CONNECTION)
        .collect();
    assert!(
        partial.is_empty(),
        "connections split by sampling: {partial:?}"
    );
    assert_binomial(
        "connections kept at 30%",
        per_conn.len() as u64,
        u64::from(CONNECTIONS),
        0.3,
    );
    let t = summary.target(&target.url());
    assert_eq!(t.get("replayed 2xx"), received.len() as u64);
    assert_eq!(t.get("not_sampled"), REQUESTS - received.len() as u64);
}

#[test]
fn two_targets_each_get_their_own_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = many_requests(dir.path());
    let a = RecordingServer::start(Behaviour::Answer);
    let b = RecordingServer::start(Behaviour::Answer);
    let run = replay(
        &[&path],
        &[&format!("{}@20", a.url()), &format!("{}@70", b.url())],
        &["--queue-len", "20000"],
    );
    run.assert_success();
    let summary = run.summary();
    summary.assert_adds_up(REQUESTS);
    for (server, p) in [(&a, 0.2), (&b, 0.7)] {
        let arrived = arrivals_by_key(&server.received()).len() as u64;
        assert_binomial(&format!("{} at {p}", server.url()), arrived, REQUESTS, p);
        let t = summary.target(&server.url());
        assert_eq!(t.get("replayed 2xx"), arrived, "{t:#?}");
        assert_eq!(t.get("not_sampled"), REQUESTS - arrived, "{t:#?}");
    }
}

// ---------------------------------------------------------------------------------------
// Targets that fail: every request still ends in one outcome, and the run ends.

const FAULT_REQUESTS: u64 = 20;

/// 20 POSTs of 1 KiB on 4 connections.
fn few_requests(dir: &Path) -> PathBuf {
    let path = dir.join("few.pcapng");
    let server = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 80);
    let mut capture = CaptureBuilder::new();
    for c in 0..4u32 {
        let requests: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                let mut r = format!(
                    "POST /fault/{c}/{i} HTTP/1.1\r\nHost: api.example\r\nContent-Length: 1024\r\n\r\n"
                )
                .into_bytes();
                r.extend(std::iter::repeat_n(b'x', 1024));
                r
            })
            .collect();
        let writes: Vec<&[u8]> = requests.iter().map(Vec::as_slice).collect();
        capture.connection(client_addr(c), server, &writes);
    }
    capture.write_to(&path);
    path
}

fn fault_run(behaviour: Behaviour, extra: &[&str]) -> (Finished, Summary, RecordingServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = few_requests(dir.path());
    let server = RecordingServer::start(behaviour);
    let run = replay(&[&path], &[&server.url()], extra);
    let summary = run.summary();
    summary.assert_adds_up(FAULT_REQUESTS);
    // Exit 3 when no copy got an answer, 0 when some did.
    let answered = summary.targets[0]
        .outcomes
        .keys()
        .any(|k| k.starts_with("replayed"));
    assert_eq!(run.code, if answered { 0 } else { 3 }, "{}", run.stderr);
    (run, summary, server)
}

#[test]
fn target_down_counts_connect_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = few_requests(dir.path());
    let url = format!("http://127.0.0.1:{}", closed_port());
    let run = replay(&[&path], &[&url], &["--connect-timeout", "500ms"]);
    // Nothing delivered: exit 3, the reason once.
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("connection refused").count(),
        1,
        "{}",
        run.stderr
    );
    let summary = run.summary();
    summary.assert_adds_up(FAULT_REQUESTS);
    assert_eq!(
        summary.target(&url).get("replay_error connect"),
        FAULT_REQUESTS,
        "{summary:#?}"
    );
}

#[test]
fn silent_target_counts_timeouts_at_the_request_timeout() {
    // 400 ms: a target that never answers gets two copies at once (it has not shown it
    // keeps up with more), so the 20 time out in 10 rounds.
    let (run, summary, server) = fault_run(Behaviour::Silent, &["--request-timeout", "400ms"]);
    let t = summary.target(&server.url());
    assert_eq!(
        t.get("replay_error timeout"),
        FAULT_REQUESTS,
        "{summary:#?}"
    );
    // Well before the 10 s drain deadline: the request timeout ended them, not shutdown.
    assert!(
        run.elapsed < Duration::from_secs(6),
        "took {:?}",
        run.elapsed
    );
    assert_eq!(server.received().len() as u64, FAULT_REQUESTS);
}

#[test]
fn resetting_target_counts_resets() {
    let (_, summary, server) = fault_run(Behaviour::Reset, &[]);
    assert_eq!(
        summary.target(&server.url()).get("replay_error reset"),
        FAULT_REQUESTS,
        "{summary:#?}"
    );
}

#[test]
fn slow_target_times_out_past_the_request_timeout() {
    let (_, summary, server) = fault_run(
        Behaviour::Delay(Duration::from_millis(1500)),
        &["--request-timeout", "500ms"],
    );
    let t = summary.target(&server.url());
    assert_eq!(
        t.get("replay_error timeout"),
        FAULT_REQUESTS,
        "{summary:#?}"
    );
}

#[test]
fn slow_target_within_the_request_timeout_is_replayed() {
    let (_, summary, server) = fault_run(
        Behaviour::Delay(Duration::from_millis(300)),
        &["--request-timeout", "3s"],
    );
    let t = summary.target(&server.url());
    assert_eq!(t.get("replayed 2xx"), FAULT_REQUESTS, "{summary:#?}");
}

#[test]
fn endless_response_is_dropped_in_bounded_memory() {
    let (run, summary, server) = fault_run(Behaviour::Endless, &[]);
    let t = summary.target(&server.url());
    assert_eq!(t.get("replayed 2xx"), FAULT_REQUESTS, "{summary:#?}");
    // The copies really pulled big responses...
    assert!(
        server.body_bytes_streamed() >= FAULT_REQUESTS << 20,
        "only {} bytes streamed",
        server.body_bytes_streamed()
    );
    // ...and none was held whole.
    assert!(
        run.max_rss_kib < 200 * 1024,
        "peak RSS {} MiB",
        run.max_rss_kib / 1024
    );
}

// ---------------------------------------------------------------------------------------
// Errors a person fixes: exit code 2 and one line that names the problem.

fn assert_one_line_error(args: &[&str], names: &str) {
    let run = run_shadowtap(args, LIMIT);
    assert_eq!(run.code, 2, "{args:?}: stderr {}", run.stderr);
    assert!(run.stdout.is_empty(), "{args:?}: stdout {}", run.stdout);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: stderr is not one line:\n{}",
        run.stderr
    );
    assert!(
        lines[0].contains(names),
        "{args:?}: {:?} does not name {names:?}",
        lines[0]
    );
}

#[test]
fn cli_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = corpus("post.pcap");
    let good = good.to_str().expect("utf8 path");
    let url = format!("http://127.0.0.1:{}", closed_port());
    let not_capture = dir.path().join("notes.txt");
    std::fs::write(&not_capture, "GET / HTTP/1.1\r\n\r\nnot a capture\n").expect("write");
    let not_capture = not_capture.to_str().expect("utf8 path");
    let missing = dir.path().join("missing.pcap");
    let missing = missing.to_str().expect("utf8 path");

    assert_one_line_error(
        &["replay", good, "--target", &url, "--percent", "120"],
        "120",
    );
    assert_one_line_error(
        &["replay", good, "--target", &url, "--speed", "fast"],
        "fast",
    );
    assert_one_line_error(&["replay", missing, "--target", &url], missing);
    assert_one_line_error(&["replay", not_capture, "--target", &url], not_capture);
    assert_one_line_error(
        &["replay", good, "--target", "http://no-such-host.invalid"],
        "no-such-host.invalid",
    );
}
