//! Memory bounds of `shadowtap inspect` under hostile captures (issue 6, item 1): the real
//! binary as a child process on captures written here, its peak RSS read from `wait4`.
//! Each case checks that the peak stays under what the configured cap allows plus a
//! stated constant, that what was given up is counted by reason in the summary on
//! stderr, and (where a cap is a size) that a run with another cap moves the peak.

#[expect(
    dead_code,
    reason = "shared capture builders; this file uses a few of them"
)]
mod captures;

use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use captures::{Capture, ACK, FIN_ACK, PSH_ACK, SYN};

const LIMIT: Duration = Duration::from_secs(240);
const MIB: u64 = 1024;

/// RSS a run may take beyond its baseline (the binary on a tiny capture) and beyond what
/// its caps allow: allocator slack, hash-table doubling and the output buffers.
const SLACK_KIB: u64 = 16 * MIB;

/// Stated cost of a tracked connection that carried no byte yet (a SYN).
const HALF_OPEN_FLOW_BYTES: u64 = 400;
/// Stated cost of a connection holding a few bytes of a request head: the connection,
/// its delivering direction's state and a framer holding the bytes.
const FLOW_BYTES: u64 = 1024;

/// Defaults of `inspect` the worst case below is made of.
const DEFAULT_MAX_FLOWS: u64 = 50_000;
const DEFAULT_MAX_BUFFER_KIB: u64 = 16 * MIB;
/// `--max-queue-bytes`, per target: what `run` adds on the replay side.
const DEFAULT_QUEUE_KIB: u64 = 64 * MIB;

/// What the caps allow at their defaults, beyond the baseline: every flow with a few
/// bytes, and the out-of-order bytes plus the framers' bytes (one `--max-buffer` each)
/// at up to twice their size in capacity (growth by doubling). Closed connections
/// (README: ~110 bytes per `--max-flows` more) are not part of the capture below.
const DEFAULT_WORST_KIB: u64 =
    DEFAULT_MAX_FLOWS * FLOW_BYTES / 1024 + 2 * 2 * DEFAULT_MAX_BUFFER_KIB + SLACK_KIB;

const SERVER: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 200, 0, 1), 8080);

/// Client `i`: a distinct address for each of 2^24 connections.
fn client(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(0x0b00_0000 | (i & 0x00ff_ffff)),
        20_000 + (i % 40_000) as u16,
    )
}

/// How a run of the binary ended, with its own peak RSS.
struct Finished {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    max_rss_kib: u64,
}

/// Runs `shadowtap ARGS` under GNU time. Not `wait4` from here: exec records the RSS
/// high-water mark of the address space it replaces, which for a child spawned by this
/// (large) test process is the test process's own, so the child's peak would read as at
/// least ours. `time` is small, and its child's peak is the binary's alone.
fn run_measured(args: &[&str]) -> Finished {
    let dir = tempfile::tempdir().expect("tempdir");
    let rss_file = dir.path().join("rss");
    let started = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(env!("CARGO_BIN_EXE_shadowtap"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn /usr/bin/time (apt install time)");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > LIMIT {
            // SAFETY: signals the process group this test created for the child.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            panic!("shadowtap {args:?} still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let rss = std::fs::read_to_string(&rss_file).expect("time's output");
    // `time` writes "Command exited with non-zero status N" before the figure.
    let max_rss_kib = rss
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no RSS figure in {rss:?}"));
    Finished {
        code: status.code().unwrap_or(-1),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        elapsed: started.elapsed(),
        max_rss_kib,
    }
}

/// The one-line summary `inspect` prints on stderr, as `name -> count`.
fn counts(run: &Finished) -> std::collections::BTreeMap<String, u64> {
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("requests seen:"))
        .unwrap_or_else(|| panic!("no summary on stderr:\n{}", run.stderr));
    let mut out = std::collections::BTreeMap::new();
    let words: Vec<&str> = line
        .split([',', ';', '(', ')', ':'])
        .map(str::trim)
        .collect();
    for w in words {
        // "complete 3", "12 flows evicted", "frames 10" forms.
        let parts: Vec<&str> = w.split_whitespace().collect();
        match parts.as_slice() {
            [name, n] if n.parse::<u64>().is_ok() => {
                out.insert((*name).to_string(), n.parse().unwrap_or(0));
            }
            [n, rest @ ..] if n.parse::<u64>().is_ok() && !rest.is_empty() => {
                out.insert(rest.join(" "), n.parse().unwrap_or(0));
            }
            _ => {}
        }
    }
    let seen = line
        .trim_start_matches("requests seen:")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in {line:?}"));
    out.insert("requests seen".into(), seen);
    out
}

fn inspect(path: &Path, extra: &[&str]) -> Finished {
    let p = path.to_str().expect("utf8 path");
    let mut args = vec!["inspect", p, "--port", "8080"];
    args.extend_from_slice(extra);
    let run = run_measured(&args);
    assert_eq!(run.code, 0, "inspect {extra:?} failed:\n{}", run.stderr);
    eprintln!(
        "inspect {} {extra:?}: peak RSS {} KiB, {:.1}s; {}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
        run.max_rss_kib,
        run.elapsed.as_secs_f64(),
        run.stderr.trim()
    );
    run
}

/// Peak RSS of the binary on a capture with one small request: what every run pays.
fn baseline_kib(dir: &Path) -> u64 {
    let path = dir.join("baseline.pcapng");
    let mut c = Capture::create(&path);
    c.tcp(client(0), SERVER, 0, SYN, b"");
    c.tcp(
        client(0),
        SERVER,
        1,
        PSH_ACK,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    c.finish();
    inspect(&path, &[]).max_rss_kib
}

fn half_open(dir: &Path, n: u32) -> PathBuf {
    let path = dir.join("half-open.pcapng");
    let mut c = Capture::create(&path);
    for i in 0..n {
        c.tcp(client(i), SERVER, i, SYN, b"");
    }
    // One real request at the end still comes through.
    let real = client(n);
    c.tcp(real, SERVER, 7, SYN, b"");
    c.tcp(
        real,
        SERVER,
        8,
        PSH_ACK,
        b"GET /real HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    c.finish();
    path
}

#[test]
fn a_million_half_open_connections_stay_under_the_flow_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = baseline_kib(dir.path());
    let n = 1_000_000;
    let path = half_open(dir.path(), n);
    let small = inspect(&path, &["--max-flows", "10000"]);
    let large = inspect(&path, &["--max-flows", "200000"]);
    for (run, cap) in [(&small, 10_000u64), (&large, 200_000)] {
        let c = counts(run);
        assert!(run.stdout.contains("\"/real\""), "{}", run.stderr);
        assert_eq!(c["complete"], 1, "{}", run.stderr);
        // Every connection beyond the cap was evicted (the rest end with the capture).
        assert_eq!(c["flows evicted"], u64::from(n) + 1 - cap, "{}", run.stderr);
        // A connection that carried no byte is one slab slot (its two directions, the
        // LRU links) and an index bucket: measured ~190 bytes, stated <= 400.
        let bound = base + cap * HALF_OPEN_FLOW_BYTES / 1024 + SLACK_KIB;
        assert!(
            run.max_rss_kib <= bound,
            "--max-flows {cap}: peak {} KiB > bound {bound} KiB",
            run.max_rss_kib
        );
    }
    // Twenty times the cap: the peak follows it (a cap that did nothing would give the
    // same peak twice).
    assert!(
        large.max_rss_kib > small.max_rss_kib + 20 * MIB,
        "peaks {} KiB (10k flows) and {} KiB (200k flows)",
        small.max_rss_kib,
        large.max_rss_kib
    );
}

/// `conns` connections, each sending `segments` full segments after a 1-byte hole at
/// its start (never filled), so reassembly can only buffer or give up.
fn held_behind_holes(dir: &Path, conns: u32, segments: u32) -> PathBuf {
    let path = dir.join("holes.pcapng");
    let mut c = Capture::create(&path);
    let data = [b'a'; 1400];
    for i in 0..conns {
        c.tcp(client(i), SERVER, 0, SYN, b"");
    }
    for s in 0..segments {
        for i in 0..conns {
            c.tcp(client(i), SERVER, 2 + s * 1400, PSH_ACK, &data);
        }
    }
    // And sequence numbers far beyond any window, on every connection.
    for i in 0..conns {
        c.tcp(client(i), SERVER, 0x7000_0000, PSH_ACK, &data);
    }
    c.finish();
    path
}

#[test]
fn out_of_order_bytes_and_far_ahead_sequence_numbers_stay_under_the_buffer_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = baseline_kib(dir.path());
    // 2,000 connections x 64 segments x 1,400 bytes = 179 MB that could be held.
    let (conns, segments) = (2_000u32, 64u32);
    let path = held_behind_holes(dir.path(), conns, segments);
    let mut peaks = Vec::new();
    for cap_mib in [8u64, 64] {
        let cap = (cap_mib << 20).to_string();
        let run = inspect(&path, &["--max-buffer", &cap]);
        let c = counts(&run);
        assert_eq!(
            c["segments too far ahead"],
            u64::from(conns),
            "{}",
            run.stderr
        );
        assert!(c["buffer overflows"] > 0, "{}", run.stderr);
        // Bytes given up by reassembly go to framers, which hold up to a head each while
        // they look for a request line: `--max-buffer` caps both, and buffers grow by
        // doubling (up to twice their bytes).
        // Plus allocator rounding, up to a page per stream.
        let bound = base + cap_mib * MIB * 4 + u64::from(conns) * 4 + SLACK_KIB;
        assert!(
            run.max_rss_kib <= bound,
            "--max-buffer {cap_mib} MiB: peak {} KiB > bound {bound} KiB",
            run.max_rss_kib
        );
        peaks.push(run.max_rss_kib);
    }
    assert!(
        peaks[1] > peaks[0] + 32 * MIB,
        "peaks {peaks:?} KiB: the 64 MiB cap should hold ~56 MiB more than the 8 MiB one"
    );
}

/// `conns` connections each sending `bytes` of header lines that never end.
fn endless_headers(dir: &Path, conns: u32, bytes: usize) -> PathBuf {
    let path = dir.join("endless-headers.pcapng");
    let mut c = Capture::create(&path);
    let mut seg = Vec::new();
    while seg.len() < 1400 - 20 {
        seg.extend_from_slice(b"X-Never-Ends: ab\r\n");
    }
    let head = b"GET /endless HTTP/1.1\r\nHost: x\r\n";
    for i in 0..conns {
        c.tcp(client(i), SERVER, 0, SYN, b"");
        c.tcp(client(i), SERVER, 1, PSH_ACK, head);
    }
    let mut off = 1 + head.len() as u32;
    let mut sent = 0;
    while sent < bytes {
        for i in 0..conns {
            c.tcp(client(i), SERVER, off, PSH_ACK, &seg);
        }
        off += seg.len() as u32;
        sent += seg.len();
    }
    for i in 0..conns {
        c.tcp(client(i), SERVER, off, FIN_ACK, b"");
    }
    c.finish();
    path
}

#[test]
fn headers_that_never_end_are_too_large_and_held_to_the_head_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = baseline_kib(dir.path());
    // 200 connections x 512 KiB of header lines: 100 MiB if framers kept them.
    let conns = 200u32;
    let path = endless_headers(dir.path(), conns, 512 << 10);
    let mut peaks = Vec::new();
    for head_kib in [16u64, 256] {
        let cap = (head_kib << 10).to_string();
        // A framing budget above all 200 heads: only `--max-head` bounds them here.
        let run = inspect(&path, &["--max-head", &cap, "--max-buffer", "67108864"]);
        let c = counts(&run);
        assert_eq!(c["too_large"], u64::from(conns), "{}", run.stderr);
        assert_eq!(c["complete"], 0, "{}", run.stderr);
        // Each framer holds at most one head (with Vec doubling, up to twice the cap).
        let bound = base + u64::from(conns) * head_kib * 2 + SLACK_KIB;
        assert!(
            run.max_rss_kib <= bound,
            "--max-head {head_kib} KiB: peak {} KiB > bound {bound} KiB",
            run.max_rss_kib
        );
        peaks.push(run.max_rss_kib);
    }
    assert!(
        peaks[1] > peaks[0] + 20 * MIB,
        "peaks {peaks:?} KiB: 200 heads of 256 KiB should show over 200 of 16 KiB"
    );
    // The same 256 KiB heads under an 8 MiB budget over all framers: streams past it
    // give up their head (counted), and the peak follows the budget, not 200 heads.
    let run = inspect(&path, &["--max-head", "262144", "--max-buffer", "8388608"]);
    let c = counts(&run);
    assert!(c["framer overflows"] > 0, "{}", run.stderr);
    assert_eq!(c["complete"], 0, "{}", run.stderr);
    assert!(
        run.max_rss_kib <= base + 8 * MIB * 4 + SLACK_KIB,
        "peak {} KiB under an 8 MiB framing budget",
        run.max_rss_kib
    );
}

#[test]
fn content_length_2_pow_63_with_no_body_allocates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = baseline_kib(dir.path());
    let path = dir.path().join("huge-cl.pcapng");
    let mut c = Capture::create(&path);
    let heads: [&[u8]; 3] = [
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\n",
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n",
        // Past the 8 MiB body cap, with all 20 MiB of the body sent.
        b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520\r\n\r\n",
    ];
    for (i, head) in heads.iter().enumerate() {
        let i = i as u32;
        c.tcp(client(i), SERVER, 0, SYN, b"");
        c.tcp(client(i), SERVER, 1, PSH_ACK, head);
        let mut off = 1 + head.len() as u32;
        if i == 2 {
            for piece in vec![b'z'; 20 << 20].chunks(1400) {
                c.tcp(client(i), SERVER, off, PSH_ACK, piece);
                off += piece.len() as u32;
            }
        }
        c.tcp(client(i), SERVER, off, FIN_ACK, b"");
    }
    // A normal request after them on a fresh connection.
    c.tcp(client(9), SERVER, 0, SYN, b"");
    c.tcp(
        client(9),
        SERVER,
        1,
        PSH_ACK,
        b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    c.finish();
    let run = inspect(&path, &[]);
    let c = counts(&run);
    assert!(run.stdout.contains("\"/after\""), "{}", run.stdout);
    assert_eq!(c["requests seen"], 4, "{}", run.stderr);
    // 2^63 does not fit the i64 a signed reader would use: it is still a length (too
    // large), and the body of /c is skipped by its length, not parsed as requests.
    assert_eq!(c["too_large"], 3, "{}", run.stderr);
    assert_eq!(c["unparseable"], 0, "{}", run.stderr);
    assert!(
        run.max_rss_kib <= base + SLACK_KIB,
        "peak {} KiB, baseline {base} KiB",
        run.max_rss_kib
    );
}

#[test]
fn overlapping_retransmits_with_other_bytes_stop_copies_and_stay_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = baseline_kib(dir.path());
    let path = dir.path().join("retransmits.pcapng");
    let mut c = Capture::create(&path);
    let n = 20_000u32;
    let request = b"GET /orig HTTP/1.1\r\nHost: x\r\n\r\n";
    let len = request.len() as u32;
    c.tcp(client(1), SERVER, 0, SYN, b"");
    let evil = &b"GET /evil HTTP/1.1\r\nHost: y\r\n\r\n"[2..];
    // Pairs sent backwards, each segment followed by most of its range again with other
    // bytes: the second request's copies meet buffered bytes, the first's delivered ones.
    for i in (0..n).step_by(2) {
        let at = 1 + i * len;
        for at in [at + len, at] {
            c.tcp(client(1), SERVER, at, PSH_ACK, request);
            c.tcp(client(1), SERVER, at + 2, PSH_ACK, evil);
        }
    }
    c.tcp(client(1), SERVER, 1 + n * len, FIN_ACK, b"");
    c.finish();
    let run = inspect(&path, &[]);
    let c = counts(&run);
    // Two versions of the stream's bytes: which one the server kept is not ours to
    // guess, so from the first disagreement on its requests are only counted.
    assert_eq!(c["complete"], 0, "{}", run.stderr);
    assert_eq!(c["untrusted"], u64::from(n), "{}", run.stderr);
    assert_eq!(c["at conflicting retransmits"], 1, "{}", run.stderr);
    assert!(!run.stdout.contains("/evil"), "a retransmit replaced bytes");
    assert!(
        c["retransmits with other bytes"] >= u64::from(n) - 1,
        "{}",
        run.stderr
    );
    assert!(
        run.max_rss_kib <= base + SLACK_KIB,
        "peak {} KiB",
        run.max_rss_kib
    );
}

#[test]
fn a_hundred_thousand_pipelined_requests_on_one_connection_stream_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = baseline_kib(dir.path());
    let path = dir.path().join("pipelined.pcapng");
    let mut c = Capture::create(&path);
    let n = 100_000u32;
    let mut stream = Vec::new();
    for i in 0..n {
        stream.extend_from_slice(
            format!("POST /p/{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").as_bytes(),
        );
    }
    c.tcp(client(2), SERVER, 0, SYN, b"");
    let mut off = 1u32;
    for piece in stream.chunks(1400) {
        c.tcp(client(2), SERVER, off, PSH_ACK, piece);
        off += piece.len() as u32;
    }
    // The server's ACK of everything, and a FIN.
    c.tcp(SERVER, client(2), 1, ACK, b"");
    c.tcp(client(2), SERVER, off, FIN_ACK, b"");
    c.finish();
    let run = inspect(&path, &[]);
    let c = counts(&run);
    assert_eq!(c["complete"], u64::from(n), "{}", run.stderr);
    assert_eq!(c["requests seen"], u64::from(n), "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), n as usize);
    assert!(
        run.stdout
            .lines()
            .last()
            .is_some_and(|l| l.contains(&format!("\"/p/{}\"", n - 1))),
        "last request missing"
    );
    // Requests leave as they are framed: nothing grows with their number.
    assert!(
        run.max_rss_kib <= base + SLACK_KIB,
        "peak {} KiB",
        run.max_rss_kib
    );
}

/// `n` connections from client `first` on, each a SYN and `head` (a request head that
/// does not end), then quiet.
fn few_bytes_each(c: &mut Capture, first: u32, n: u32, head: &[u8]) {
    for i in first..first + n {
        c.tcp(client(i), SERVER, i, SYN, b"");
        c.tcp(client(i), SERVER, i.wrapping_add(1), PSH_ACK, head);
    }
}

#[test]
fn flows_holding_a_few_bytes_each_cost_what_is_stated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = baseline_kib(dir.path());
    let n = 200_000u32;
    let path = dir.path().join("few-bytes.pcapng");
    let mut c = Capture::create(&path);
    few_bytes_each(&mut c, 0, n, b"GET /few HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    c.finish();
    let mut peaks = Vec::new();
    for cap in [20_000u64, 200_000] {
        let run = inspect(&path, &["--max-flows", &cap.to_string()]);
        let c = counts(&run);
        assert_eq!(c["flows evicted"], u64::from(n) - cap, "{}", run.stderr);
        assert_eq!(c["incomplete"], u64::from(n), "{}", run.stderr);
        let per_flow = (run.max_rss_kib.saturating_sub(base)) * 1024 / cap;
        eprintln!("--max-flows {cap}: {per_flow} bytes per flow with a few bytes");
        assert!(
            run.max_rss_kib <= base + cap * FLOW_BYTES / 1024 + SLACK_KIB,
            "--max-flows {cap}: peak {} KiB, {per_flow} bytes per flow",
            run.max_rss_kib
        );
        peaks.push(run.max_rss_kib);
    }
    assert!(
        peaks[1] > peaks[0] + 40 * MIB,
        "peaks {peaks:?} KiB: 180,000 more flows holding bytes should show"
    );
}

/// Everything at once against the default caps: 76,000 connections holding a few
/// bytes (the table full of them), streams behind holes offering far more than `--max-buffer`, and heads that
/// never end offering far more than the framers' budget, with the flood still coming
/// after the buffers are full (it evicts the oldest of itself, not the buffers).
#[test]
fn the_default_caps_hold_a_mixed_flood_under_the_stated_worst_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = baseline_kib(dir.path());
    let path = dir.path().join("mixed.pcapng");
    let mut c = Capture::create(&path);
    let head = b"GET /flood HTTP/1.1\r\nHost: x\r\n";
    let flood = 46_000u32;
    few_bytes_each(&mut c, 0, flood, head);
    // 1,000 streams behind a hole, 100 segments each: 140 MB offered.
    let holes = 1_000u32;
    let data = [b'a'; 1400];
    for i in 0..holes {
        c.tcp(client(flood + i), SERVER, 0, SYN, b"");
    }
    for s in 0..100u32 {
        for i in 0..holes {
            c.tcp(client(flood + i), SERVER, 2 + s * 1400, PSH_ACK, &data);
        }
    }
    // 1,500 heads of header lines, 60 KiB each (under `--max-head`): 90 MB offered.
    let heads = 1_500u32;
    let first = flood + holes;
    let mut line = Vec::new();
    while line.len() < 1400 - 20 {
        line.extend_from_slice(b"X-Never-Ends: ab\r\n");
    }
    let start = b"GET /endless HTTP/1.1\r\nHost: x\r\n";
    for i in first..first + heads {
        c.tcp(client(i), SERVER, 0, SYN, b"");
        c.tcp(client(i), SERVER, 1, PSH_ACK, start);
    }
    let mut off = 1 + start.len() as u32;
    while (off as usize) < 60 << 10 {
        for i in first..first + heads {
            c.tcp(client(i), SERVER, off, PSH_ACK, &line);
        }
        off += line.len() as u32;
    }
    // More of the flood: the table is full, so the oldest flood connections go.
    few_bytes_each(&mut c, first + heads, 30_000, head);
    c.finish();

    let run = inspect(&path, &[]);
    let c = counts(&run);
    assert!(c["flows evicted"] >= 27_000, "{}", run.stderr);
    assert!(c["buffer overflows"] > 0, "{}", run.stderr);
    assert!(c["framer overflows"] > 0, "{}", run.stderr);
    let worst = base + DEFAULT_WORST_KIB;
    eprintln!(
        "mixed flood, default caps: peak {} KiB, stated worst case {worst} KiB",
        run.max_rss_kib
    );
    assert!(
        run.max_rss_kib <= worst,
        "peak {} KiB over the stated worst case {worst} KiB",
        run.max_rss_kib
    );
    // With `run`'s replay queue on top, the same still fits a 256 MiB limit.
    assert!(
        run.max_rss_kib + DEFAULT_QUEUE_KIB <= 256 * MIB,
        "peak {} KiB + {DEFAULT_QUEUE_KIB} KiB of queue over 256 MiB",
        run.max_rss_kib
    );
}

/// A target that accepts every connection and never answers: the copies sent to it stay
/// in flight and the rest pile up in the queue. Stops with the returned guard.
struct SilentTarget {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentTarget {
    fn start() -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentTarget {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Whether the first thread of `pid` (the one reading the capture) is asleep.
fn main_thread_sleeps(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('S'))
}

/// `shadowtap replay` of `path` at full speed into a silent target with
/// `--max-queue-bytes cap`: replay waits for room once the queue is full, so RSS climbs
/// to what the queue holds and stays there. Returns that plateau (KiB), read from
/// /proc, and kills the run.
fn queued_plateau_kib(path: &Path, cap: u64) -> u64 {
    let target = SilentTarget::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowtap"))
        .args([
            "replay",
            path.to_str().expect("utf8 path"),
            "--port",
            "8080",
        ])
        .args(["--speed", "max", "--request-timeout", "600s"])
        .args(["--target", &format!("http://127.0.0.1:{}", target.port)])
        .args(["--max-queue-bytes", &cap.to_string()])
        // The count cap far away: only the byte cap holds copies back.
        .args(["--queue-len", "4000000"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shadowtap replay");
    let pid = child.id();
    let started = Instant::now();
    let mut peak = 0u64;
    // (when, RSS, whether the reading thread slept) over the last two seconds.
    let mut window: std::collections::VecDeque<(Instant, u64, bool)> = Default::default();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("replay ended ({status}) before its queue filled");
        }
        let rss = vm_rss_kib(pid).unwrap_or(0);
        peak = peak.max(rss);
        window.push_back((Instant::now(), rss, main_thread_sleeps(pid)));
        while window
            .front()
            .is_some_and(|(at, ..)| at.elapsed() > Duration::from_secs(2))
        {
            window.pop_front();
        }
        // Full is RSS staying put (within noise) while the reading thread mostly sleeps
        // (waiting for room, waking each millisecond to look); a thread starved of CPU
        // by other work is runnable, not asleep, and not full yet.
        let (lowest, sleeping) = window.iter().fold((u64::MAX, 0), |(low, n), (_, r, s)| {
            (low.min(*r), n + usize::from(*s))
        });
        let settled = started.elapsed() > Duration::from_secs(3)
            && peak <= lowest + 256
            && sleeping * 4 >= window.len() * 3;
        if settled {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "replay RSS still growing after {LIMIT:?}: {peak} KiB"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    peak
}

/// Issue 19, class 12: a queued copy is charged what it takes in memory, not the bytes
/// of its fields, so requests with a hundred small headers (each header two allocations
/// and a slot of a vector) do not let the queue hold several times its cap.
#[test]
fn max_queue_bytes_bounds_resident_memory_of_copies_with_many_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many-headers.pcapng");
    let mut c = Capture::create(&path);
    // 6,000 pipelined requests of 120 headers each (the framer takes up to 128), about
    // 2.6 KB each on the wire and ~14 KB each once framed.
    let n = 6_000u32;
    let mut stream = Vec::new();
    for i in 0..n {
        stream.extend_from_slice(format!("GET /many/{i} HTTP/1.1\r\nHost: x\r\n").as_bytes());
        for h in 0..119 {
            stream.extend_from_slice(format!("X-Field-{h:03}: v{i:07}\r\n").as_bytes());
        }
        stream.extend_from_slice(b"\r\n");
    }
    c.tcp(client(3), SERVER, 0, SYN, b"");
    let mut off = 1u32;
    for piece in stream.chunks(1400) {
        c.tcp(client(3), SERVER, off, PSH_ACK, piece);
        off += piece.len() as u32;
    }
    c.tcp(SERVER, client(3), 1, ACK, b"");
    c.finish();

    // One copy at a time (a cap below one request): everything but the queue.
    let base = queued_plateau_kib(&path, 1);
    let cap_kib = 8 * MIB;
    let full = queued_plateau_kib(&path, cap_kib * 1024);
    let held = full.saturating_sub(base);
    eprintln!(
        "--max-queue-bytes {cap_kib} KiB: plateau {full} KiB, baseline {base} KiB, \
         queue {held} KiB ({:.2}x the cap)",
        held as f64 / cap_kib as f64
    );
    // Within 1.5x of the cap (plus allocator slack of a few pages)...
    assert!(
        held <= cap_kib * 3 / 2 + 2 * MIB,
        "queue of {held} KiB over 1.5x its {cap_kib} KiB cap"
    );
    // ...and the queue did fill: the cap is what held the copies back.
    assert!(
        held >= cap_kib / 4,
        "queue of {held} KiB: the copies never piled up"
    );
}
