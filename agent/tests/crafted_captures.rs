//! Captures written here, frame by frame, with what real networks do to TCP: reordering,
//! retransmissions (some with different bytes), gaps, sequence numbers wrapping past
//! 2^32, a capture starting mid-connection, and a flood of half-open connections. Each
//! goes to a real pcapng file and through `inspect`, the whole offline pipeline.

#[expect(
    dead_code,
    reason = "shared capture builders; this file uses a few of them"
)]
mod captures;

use std::net::Ipv4Addr;

use captures::{frame, Capture, ACK, FIN_ACK, PSH_ACK, SYN};
use shadowtap::inspect::{inspect, InspectFormat, InspectSummary};
use shadowtap::pipeline::PipelineConfig;

/// Segments of one client->server stream, to be put in any order.
struct Conn {
    client: (Ipv4Addr, u16),
    server: (Ipv4Addr, u16),
    isn: u32,
}

impl Conn {
    fn new(port: u16, isn: u32) -> Self {
        Self {
            client: (Ipv4Addr::new(10, 1, 0, 1), port),
            server: (Ipv4Addr::new(10, 1, 0, 2), 8080),
            isn,
        }
    }
    fn syn(&self) -> Vec<u8> {
        frame(self.client, self.server, self.isn, SYN, b"")
    }
    /// Data at stream offset `off` (0 = first byte after the SYN).
    fn data(&self, off: usize, bytes: &[u8]) -> Vec<u8> {
        frame(
            self.client,
            self.server,
            self.isn.wrapping_add(1).wrapping_add(off as u32),
            PSH_ACK,
            bytes,
        )
    }
    fn fin(&self, off: usize) -> Vec<u8> {
        frame(
            self.client,
            self.server,
            self.isn.wrapping_add(1).wrapping_add(off as u32),
            FIN_ACK,
            b"",
        )
    }
}

fn write_capture(frames: &[Vec<u8>]) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .suffix(".pcapng")
        .tempfile()
        .expect("temp file");
    let mut c = Capture::create(file.path());
    for f in frames {
        c.raw(f);
    }
    c.finish();
    file
}

fn run(frames: &[Vec<u8>]) -> (Vec<serde_json::Value>, InspectSummary) {
    run_with(frames, &PipelineConfig::default())
}

/// `inspect` of `frames` written to a pcapng file, with `config`: the JSON lines and
/// the summary, whose outcomes are checked to add up.
fn run_with(
    frames: &[Vec<u8>],
    config: &PipelineConfig,
) -> (Vec<serde_json::Value>, InspectSummary) {
    let file = write_capture(frames);
    inspect_file(file.path(), config)
}

/// `inspect` of one capture file with `config`: the JSON lines and the summary, whose
/// outcomes are checked to add up.
fn inspect_file(
    path: &std::path::Path,
    config: &PipelineConfig,
) -> (Vec<serde_json::Value>, InspectSummary) {
    let mut out = Vec::new();
    let summary = inspect(
        &[path.to_path_buf()],
        InspectFormat::Jsonl,
        config,
        &mut out,
    )
    .expect("inspect");
    let lines = String::from_utf8(out)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_adds_up(&summary);
    (lines, summary)
}

/// Every request seen ends in exactly one outcome.
fn assert_adds_up(s: &InspectSummary) {
    assert_eq!(
        s.requests_seen,
        s.complete + s.incomplete + s.too_large + s.unparseable + s.untrusted + s.not_copied,
        "outcomes do not add up: {s}"
    );
}

fn targets(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["target"].as_str().expect("target").to_string())
        .collect()
}

const TWO: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789GET /b HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn reordered_and_duplicated_segments_give_the_in_order_requests() {
    let c = Conn::new(40000, 1000);
    let mut frames = vec![c.syn()];
    let pieces: Vec<(usize, &[u8])> = TWO
        .chunks(7)
        .scan(0, |off, ch| {
            let at = *off;
            *off += ch.len();
            Some((at, ch))
        })
        .collect();
    // Backwards, and every third piece twice.
    for (i, (off, ch)) in pieces.iter().enumerate().rev() {
        frames.push(c.data(*off, ch));
        if i % 3 == 0 {
            frames.push(c.data(*off, ch));
        }
    }
    frames.push(c.fin(TWO.len()));
    let (lines, summary) = run(&frames);
    assert_eq!(targets(&lines), ["/a", "/b"], "{summary}");
    assert_eq!(lines[0]["body_len"], 10);
    assert_eq!((summary.incomplete, summary.unparseable), (0, 0));
}

/// Two versions of the same bytes on the wire: which one the server's kernel kept is
/// not ours to guess (SPEC.md), so nothing of that connection is copied from there on.
#[test]
fn a_retransmit_with_different_bytes_stops_copies_from_its_connection() {
    let c = Conn::new(40001, 5000);
    let frames = vec![
        c.syn(),
        c.data(0, &TWO[..30]),
        // Same sequence range, other bytes.
        c.data(0, &[b'X'; 30]),
        c.data(30, &TWO[30..]),
        c.fin(TWO.len()),
    ];
    let (lines, summary) = run(&frames);
    assert!(targets(&lines).is_empty(), "{summary}");
    // /a was in progress (dropped); /b follows its body with no line break, so the
    // count of what came after the distrust finds no request line there.
    assert_eq!(
        (summary.untrusted, summary.conflict_distrusts),
        (1, 1),
        "{summary}"
    );
    // Out of order: a later segment covers a queued one with other bytes.
    let c = Conn::new(40011, 5000);
    let mut forged = TWO.to_vec();
    forged[60..63].copy_from_slice(b"DEL");
    let frames = vec![
        c.syn(),
        c.data(40, &TWO[40..70]),
        c.data(30, &forged[30..]),
        c.data(0, &TWO[..30]),
        c.fin(TWO.len()),
    ];
    let (lines, summary) = run(&frames);
    assert!(targets(&lines).is_empty(), "{summary}");
    assert_eq!(summary.conflict_distrusts, 1, "{summary}");
    assert_eq!(summary.requests_seen, summary.untrusted, "{summary}");
}

#[test]
fn sequence_numbers_wrapping_past_2_pow_32_are_followed() {
    // The ISN sits 20 bytes before the wrap, so the first request crosses it.
    let c = Conn::new(40002, u32::MAX - 20);
    let mut frames = vec![c.syn()];
    for (i, ch) in TWO.chunks(9).enumerate() {
        frames.push(c.data(i * 9, ch));
    }
    frames.push(c.fin(TWO.len()));
    let (lines, summary) = run(&frames);
    assert_eq!(targets(&lines), ["/a", "/b"], "{summary}");
}

#[test]
fn a_gap_costs_the_request_it_hits_and_the_rest_of_its_connection() {
    let stream = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n";
    let c = Conn::new(40003, 7);
    let second = 28; // where "GET /2" starts
    let frames = vec![
        c.syn(),
        c.data(0, &stream[..second + 5]),
        // bytes second+5 .. second+15 never captured
        c.data(second + 15, &stream[second + 15..]),
        c.fin(stream.len()),
    ];
    let (lines, summary) = run(&frames);
    // Where /2 ended was lost with it: /3 is counted, not framed.
    assert_eq!(targets(&lines), ["/1"], "{summary}");
    assert_eq!((summary.incomplete, summary.untrusted), (1, 1), "{summary}");
    assert_eq!(summary.requests_seen, 3, "{summary}");
}

#[test]
fn a_capture_that_starts_mid_connection_copies_nothing_of_it() {
    let stream = b"tail of an earlier body\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n";
    let c = Conn::new(40004, 123_456);
    // No SYN: the capture started while the connection was already carrying data.
    let frames = vec![
        c.data(9000, &stream[..20]),
        c.data(9020, &stream[20..]),
        c.fin(9000 + stream.len()),
    ];
    let (lines, summary) = run(&frames);
    assert!(targets(&lines).is_empty(), "{summary}");
    assert_eq!(
        (summary.untrusted, summary.lost_starts),
        (1, 1),
        "{summary}"
    );
}

#[test]
fn a_flood_of_half_open_connections_is_bounded_and_real_requests_still_come_through() {
    let mut frames = Vec::new();
    for i in 0..20_000u32 {
        let c = Conn {
            client: (Ipv4Addr::from(0x0a02_0000 + i), 1024 + (i % 60000) as u16),
            server: (Ipv4Addr::new(10, 1, 0, 2), 8080),
            isn: i,
        };
        frames.push(c.syn());
    }
    let c = Conn::new(40005, 99);
    frames.push(c.syn());
    frames.push(c.data(0, b"GET /real HTTP/1.1\r\nHost: x\r\n\r\n"));
    frames.push(frame(c.server, c.client, 1, ACK, b""));
    let mut config = PipelineConfig::default();
    config.reassembly.max_flows = 1000;
    let (lines, summary) = run_with(&frames, &config);
    assert_eq!(targets(&lines), ["/real"], "{summary}");
    assert_eq!(summary.requests_seen, 1, "{summary}");
}

/// `shadowtap inspect FILE --port 8080 ARGS` with `env`: its stdout and summary line.
fn inspect_bin(file: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shadowtap"));
    cmd.arg("inspect")
        .arg(file)
        .args(["--port", "8080"])
        .args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("SHADOWTAP_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run shadowtap");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{args:?} {env:?}: {stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("requests seen:"))
        .unwrap_or_else(|| panic!("no summary in {stderr}"))
        .to_string();
    (String::from_utf8_lossy(&out.stdout).into_owned(), summary)
}

#[test]
fn the_hole_timeout_flag_decides_whether_a_late_retransmit_still_fills_its_hole() {
    let request = b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n";
    let c = Conn::new(40006, 4242);
    let other = Conn::new(40007, 1);
    let file = tempfile::Builder::new()
        .suffix(".pcapng")
        .tempfile()
        .expect("temp file");
    let mut cap = Capture::create(file.path());
    cap.raw(&c.syn());
    // The first 10 bytes are lost on the way and retransmitted 1.5 s later; a frame
    // of another connection in between lets the once-a-second sweep run.
    cap.raw(&c.data(10, &request[10..]));
    cap.wait(1_500_000_000);
    cap.raw(&other.syn());
    cap.raw(&c.data(0, &request[..10]));
    cap.raw(&c.fin(request.len()));
    cap.finish();

    let (out, summary) = inspect_bin(file.path(), &[], &[]);
    assert!(out.contains("\"/late\""), "default 2s: {summary}\n{out}");
    assert!(summary.contains(" 0 holes given up"), "{summary}");
    for (args, env) in [
        (&["--hole-timeout", "500ms"][..], &[][..]),
        (&[][..], &[("SHADOWTAP_HOLE_TIMEOUT", "0.5s")][..]),
    ] {
        let (out, summary) = inspect_bin(file.path(), args, env);
        assert!(
            !out.contains("\"/late\""),
            "{args:?} {env:?}: {summary}\n{out}"
        );
        assert!(summary.contains(" 1 holes given up"), "{summary}");
    }
    // 1.5 s is still inside a 3 s timeout.
    let (out, _) = inspect_bin(file.path(), &["--hole-timeout", "3s"], &[]);
    assert!(out.contains("\"/late\""), "{out}");
}

/// A slow upload whose connection state is lost halfway (SYN flood at the flow cap, or
/// the idle timeout): when its bytes come again they may be anywhere in the body, and a
/// request line inside it (`DELETE /users/1`) must never be framed as a request.
#[test]
fn an_upload_whose_connection_was_evicted_or_timed_out_never_yields_its_body_text() {
    let body = b"part one of the upload\r\nDELETE /users/1 HTTP/1.1\r\nHost: x\r\n\r\nand the rest";
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = [head.as_bytes(), &body[..]].concat();
    let split = head.len() + 24; // the DELETE line starts the second piece
    let upload = Conn::new(40020, 77);

    // Evicted by a flood of half-open connections at a flow cap of 100.
    let mut frames = vec![upload.syn(), upload.data(0, &stream[..split])];
    for i in 0..500u32 {
        let c = Conn {
            client: (Ipv4Addr::from(0x0a03_0000 + i), 2000 + i as u16),
            server: (Ipv4Addr::new(10, 1, 0, 2), 8080),
            isn: i,
        };
        frames.push(c.syn());
    }
    frames.push(upload.data(split, &stream[split..]));
    frames.push(upload.fin(stream.len()));
    let mut config = PipelineConfig::default();
    config.reassembly.max_flows = 100;
    let (lines, summary) = run_with(&frames, &config);
    // No line at all: nothing framed, let alone the DELETE inside the body.
    assert!(lines.is_empty(), "{summary}\n{lines:?}");
    // The upload was cut (incomplete); its continuation is a stream picked up mid-way.
    assert_eq!((summary.incomplete, summary.untrusted), (1, 1), "{summary}");
    assert_eq!(summary.lost_starts, 1, "{summary}");

    // Ended by the idle timeout in the middle, then picked up again.
    let file = tempfile::Builder::new()
        .suffix(".pcapng")
        .tempfile()
        .expect("temp file");
    let mut cap = Capture::create(file.path());
    cap.raw(&upload.syn());
    cap.raw(&upload.data(0, &stream[..split]));
    cap.wait(3_000_000_000);
    cap.raw(&Conn::new(40021, 5).syn()); // any frame moves the capture's clock
    cap.raw(&upload.data(split, &stream[split..]));
    cap.raw(&upload.fin(stream.len()));
    cap.finish();
    let (out, summary) = inspect_bin(file.path(), &["--idle-timeout", "1"], &[]);
    // The binary prints a line per request seen: here the two not copied, no complete one.
    let outcomes: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["outcome"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(outcomes, ["incomplete", "untrusted"], "{summary}\n{out}");
    assert!(!out.contains("/users/1"), "{summary}\n{out}");
    assert!(summary.contains("incomplete 1"), "{summary}");
    assert!(summary.contains("untrusted 1"), "{summary}");
}

/// Runs `inspect` on a capture committed under tests/captures (written by
/// make_fragments.py with scapy).
fn inspect_committed(name: &str) -> (Vec<serde_json::Value>, InspectSummary) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captures")
        .join(name);
    inspect_file(&path, &PipelineConfig::default())
}

#[test]
fn ipv4_fragments_reordered_are_reassembled_into_the_request() {
    let (lines, summary) = inspect_committed("frag-v4.pcap");
    assert_eq!(targets(&lines), ["/frag-v4"], "{summary}");
    assert_eq!(lines[0]["body_len"], 2500);
    assert_eq!(
        (summary.ip.ipv4_fragments, summary.ip.fragments_reassembled),
        (3, 1),
        "{summary}"
    );
    assert_eq!(summary.ip.fragments_lost(), 0);
    assert_eq!((summary.incomplete, summary.unparseable), (0, 0));
}

#[test]
fn ipv6_hop_by_hop_and_destination_options_are_walked() {
    let (lines, summary) = inspect_committed("ext-v6.pcap");
    assert_eq!(targets(&lines), ["/ext-v6"], "{summary}");
    assert_eq!(lines[0]["client"], "[fd20::1]:40002");
    assert_eq!(summary.decode_errors, 0);
}

#[test]
fn ipv6_fragments_behind_hop_by_hop_are_reassembled_into_the_request() {
    let (lines, summary) = inspect_committed("frag-v6.pcap");
    assert_eq!(targets(&lines), ["/frag-v6"], "{summary}");
    assert_eq!(lines[0]["body_len"], 2500);
    assert_eq!(
        (summary.ip.ipv6_fragments, summary.ip.fragments_reassembled),
        (3, 1),
        "{summary}"
    );
    assert!(
        summary
            .to_string()
            .contains("ip: 0 IPv4 and 3 IPv6 fragments, 1 datagrams reassembled"),
        "{summary}"
    );
}

#[test]
fn overlapping_fragments_with_other_bytes_drop_the_datagram_and_are_counted() {
    let (lines, summary) = inspect_committed("overlap-v4.pcap");
    // The spoiled request is not found; the clean one after it is.
    assert_eq!(targets(&lines), ["/after-overlap"], "{summary}");
    let ip = &summary.ip;
    // The first fragment and the one overlapping it with other bytes went with the
    // datagram; the two after it wait for a first fragment that never comes, and count
    // as timed out when the capture ends.
    assert_eq!(ip.fragments_overlapping, 2, "{summary}");
    assert_eq!(ip.fragments_timed_out, 2, "{summary}");
    assert_eq!(
        (ip.ipv4_fragments, ip.fragments_reassembled),
        (7, 1),
        "{summary}"
    );
    assert!(
        summary
            .to_string()
            .contains("2 overlapping (datagram dropped)"),
        "{summary}"
    );
}

/// The JSON lines `shadowtap inspect` prints for a committed capture, and its summary.
fn inspect_committed_bin(name: &str) -> (Vec<serde_json::Value>, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captures")
        .join(name);
    let (stdout, summary) = inspect_bin(&path, &[], &[]);
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (lines, summary)
}

fn field(line: &serde_json::Value, name: &str) -> String {
    line[name].as_str().unwrap_or_default().to_string()
}

#[test]
fn vxlan_geneve_gre_and_erspan_are_decapsulated_to_the_pod_requests() {
    // make_tunnels.py: one connection per encapsulation, the path names it.
    let (lines, summary) = inspect_committed_bin("tunnels.pcap");
    assert_eq!(
        targets(&lines),
        [
            "/vxlan-v4",
            "/vxlan-v6",
            "/geneve-eth",
            "/geneve-ip",
            "/gre-ip",
            "/gretap-v6",
            "/erspan",
            "/two-deep",
        ],
        "{summary}"
    );
    // The inner flow is what reassembly saw: pod addresses, not the nodes'.
    for line in &lines {
        let client = field(line, "client");
        let server = field(line, "server");
        assert!(
            (client.starts_with("10.244.1.5:") && server == "10.244.2.7:8080")
                || (client.starts_with("[fd44::5]:") && server == "[fd44::7]:8080"),
            "{line}"
        );
    }
    // 8 connections of 3 frames inside tunnels; the 3 frames nested three deep are
    // refused and counted, never framed; the DNS packet is neither.
    assert!(
        summary.contains("24 frames decapsulated (VXLAN, Geneve, GRE), 3 tunnels nested too deep"),
        "{summary}"
    );
    assert!(summary.contains("(0 undecodable)"), "{summary}");
}

#[test]
fn nflog_captures_are_read_in_either_byte_order() {
    let (lines, summary) = inspect_committed_bin("nflog.pcap");
    assert_eq!(
        targets(&lines),
        ["/nflog-v4", "/nflog-v6", "/nflog-be"],
        "{summary}"
    );
    assert_eq!(field(&lines[1], "client"), "[fd44::5]:40012");
    assert!(summary.contains("(0 undecodable)"), "{summary}");
}
