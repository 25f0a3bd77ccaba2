//! Captures damaged in the middle (issue 19, class 11), through the real binary: a pcap
//! whose middle record has a broken length field, a pcapng whose middle block has an
//! invalid length, and a pcapng with a block cut short. `inspect` and `replay` report the
//! requests before the damage, print a summary whose accounting adds up (the request in
//! progress at the damage is `incomplete`), name the file and the byte offset of the
//! damaged record, and exit 1 (2 stays for a file that is not a capture at all). The
//! copies made before the damage reach a real listening target.

#[expect(
    dead_code,
    reason = "shared test support; this file uses the runner, the recording server and the capture builder"
)]
mod support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use shadowtap::capture::pcap_file::CaptureReader;
use support::{client_addr, run_shadowtap, Behaviour, CaptureBuilder, Finished, RecordingServer};

const LIMIT: Duration = Duration::from_secs(30);

/// Four connections in order: two whole requests, one whose head ends in a second
/// segment (the one damaged), and one after the damage that must not be read.
fn capture() -> Vec<u8> {
    let server = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 8080);
    let mut b = CaptureBuilder::new();
    b.connection(
        client_addr(1),
        server,
        &[b"GET /before-1 HTTP/1.1\r\nHost: app\r\n\r\n"],
    );
    b.connection(
        client_addr(2),
        server,
        &[b"GET /before-2 HTTP/1.1\r\nHost: app\r\n\r\n"],
    );
    b.connection(
        client_addr(3),
        server,
        &[
            b"GET /in-progress HTTP/1.1\r\nHost: app\r\n",
            b"X-Tail: 1\r\n\r\n",
        ],
    );
    b.connection(
        client_addr(4),
        server,
        &[b"GET /after HTTP/1.1\r\nHost: app\r\n\r\n"],
    );
    let file = tempfile::NamedTempFile::new().expect("temp file");
    b.write_to(file.path());
    std::fs::read(file.path()).expect("read capture")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// pcapng blocks as (offset, length), from the section header on.
fn pcapng_blocks(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut blocks = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        blocks.push((at, len));
        at += len;
    }
    blocks
}

/// Offset of the pcapng block whose bytes contain `needle`.
fn block_with(bytes: &[u8], needle: &[u8]) -> (usize, usize) {
    pcapng_blocks(bytes)
        .into_iter()
        .find(|&(at, len)| contains(&bytes[at..at + len], needle))
        .expect("block with the needle")
}

/// The same frames as a classic pcap (little-endian, microseconds, Ethernet), and the
/// offset of each record.
fn as_pcap(pcapng: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut offsets = Vec::new();
    let mut reader = CaptureReader::new(pcapng).expect("our own capture");
    while let Some(frame) = reader.next_frame().expect("our own capture") {
        offsets.push(out.len());
        let micros = frame.ts_nanos / 1000;
        out.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame.orig_len.to_le_bytes());
        out.extend_from_slice(frame.data);
    }
    (out, offsets)
}

/// A damaged file and the byte offset its error must name.
struct Damaged {
    file: tempfile::NamedTempFile,
    offset: usize,
}

impl Damaged {
    fn write(bytes: &[u8], suffix: &str, offset: usize) -> Self {
        let file = tempfile::Builder::new()
            .suffix(suffix)
            .tempfile()
            .expect("temp file");
        std::fs::write(file.path(), bytes).expect("write capture");
        Self { file, offset }
    }

    fn path(&self) -> &Path {
        self.file.path()
    }
}

/// pcap: the record of the second segment of connection 3 claims 4 GiB.
fn pcap_with_broken_length() -> Damaged {
    let (mut bytes, offsets) = as_pcap(&capture());
    let at = offsets
        .iter()
        .copied()
        .find(|&at| {
            let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
            contains(&bytes[at + 16..at + 16 + len], b"X-Tail")
        })
        .expect("the record of the second segment");
    bytes[at + 8..at + 12].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    Damaged::write(&bytes, ".pcap", at)
}

/// pcapng: the block of that segment has a length that is not a multiple of 4.
fn pcapng_with_broken_length() -> Damaged {
    let mut bytes = capture();
    let (at, len) = block_with(&bytes, b"X-Tail");
    bytes[at + 4..at + 8].copy_from_slice(&(len as u32 + 2).to_le_bytes());
    Damaged::write(&bytes, ".pcapng", at)
}

/// pcapng: that block loses its last 12 bytes (a writer that died mid-block, then went
/// on); its length now reaches into the next block and its trailer does not match.
fn pcapng_with_cut_block() -> Damaged {
    let mut bytes = capture();
    let (at, len) = block_with(&bytes, b"X-Tail");
    bytes.drain(at + len - 12..at + len);
    Damaged::write(&bytes, ".pcapng", at)
}

/// The error line names the file and the damaged record's offset.
fn assert_names_damage(run: &Finished, damaged: &Damaged) {
    let want = format!(
        "shadowtap: {}: corrupt capture at byte {}:",
        damaged.path().display(),
        damaged.offset
    );
    assert!(
        run.stderr.lines().any(|l| l.starts_with(&want)),
        "no line starting {want:?} in stderr:\n{}",
        run.stderr
    );
    assert_eq!(
        run.code, 1,
        "damage mid-file exits 1\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

/// The targets of the complete requests (the lines of the others have none).
fn targets(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            (v["outcome"] == "complete").then(|| v["target"].as_str().expect("target").to_string())
        })
        .collect()
}

#[test]
fn inspect_reports_requests_before_mid_file_damage_and_exits_1() {
    for damaged in [
        pcap_with_broken_length(),
        pcapng_with_broken_length(),
        pcapng_with_cut_block(),
    ] {
        let path = damaged.path().to_str().expect("utf8");
        let run = run_shadowtap(&["inspect", path], LIMIT);
        assert_eq!(
            targets(&run.stdout),
            ["/before-1", "/before-2"],
            "{path}\n{}",
            run.stderr
        );
        // The request cut off by the damage is counted, and the counts add up.
        assert!(
            run.stderr.contains(
                "requests seen: 3 (complete 2, incomplete 1, too_large 0, unparseable 0, \
                 untrusted 0, not_copied 0)"
            ),
            "{path}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("1 damaged file(s)"), "{}", run.stderr);
        assert_names_damage(&run, &damaged);
    }
}

#[test]
fn inspect_goes_on_with_the_next_file_after_a_damaged_one() {
    let damaged = pcapng_with_cut_block();
    let good = tempfile::Builder::new()
        .suffix(".pcapng")
        .tempfile()
        .expect("temp file");
    std::fs::write(good.path(), capture()).expect("write");
    let run = run_shadowtap(
        &[
            "inspect",
            damaged.path().to_str().expect("utf8"),
            good.path().to_str().expect("utf8"),
        ],
        LIMIT,
    );
    assert_eq!(
        targets(&run.stdout),
        [
            "/before-1",
            "/before-2",
            "/before-1",
            "/before-2",
            "/in-progress",
            "/after"
        ],
        "{}",
        run.stderr
    );
    assert_names_damage(&run, &damaged);
}

#[test]
fn replay_sends_the_copies_before_mid_file_damage_and_exits_1() {
    for damaged in [pcap_with_broken_length(), pcapng_with_cut_block()] {
        let target = RecordingServer::start(Behaviour::Answer);
        let path = damaged.path().to_str().expect("utf8");
        let run = run_shadowtap(
            &[
                "replay",
                path,
                "--target",
                &target.url(),
                "--speed",
                "max",
                "--drain-timeout",
                "10s",
            ],
            LIMIT,
        );
        assert_names_damage(&run, &damaged);
        let summary = run.summary();
        summary.assert_adds_up(3);
        let t = summary.target("http://127.0.0.1");
        assert_eq!(
            (t.get("replayed 2xx"), t.get("incomplete")),
            (2, 1),
            "{summary:#?}"
        );
        assert!(
            run.stdout
                .contains(&format!("damaged, read up to the damage: {path}: corrupt")),
            "{}",
            run.stdout
        );
        let mut got: Vec<(String, String)> = target
            .received()
            .iter()
            .map(|r| (String::from_utf8_lossy(&r.target).into_owned(), r.host()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("/before-1".to_string(), "app-shadow".to_string()),
                ("/before-2".to_string(), "app-shadow".to_string())
            ],
            "{path}"
        );
    }
}

#[test]
fn a_file_that_is_not_a_capture_is_still_one_line_and_exit_2() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), b"not a capture at all").expect("write");
    let run = run_shadowtap(&["inspect", file.path().to_str().expect("utf8")], LIMIT);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stdout.is_empty());
}
