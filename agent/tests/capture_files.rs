//! Capture files end to end: the real corpus, hand-built pcap/pcapng edge cases, cut and
//! corrupt files, and the pcapng writer read back by our reader (and tcpdump when present).

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;

use shadowtap::capture::pcap_file::{
    CaptureFileError, CaptureFileStats, CaptureReader, PcapngWriter,
};
use shadowtap::capture::LinkType;
use shadowtap::decode::Decoder;

/// `shared/` sits beside the repository (in CI, and `../../shared` from the agent crate);
/// a git worktree nests the repository one level deeper, so look in every ancestor.
fn corpus_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/corpus/zeek-http"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| manifest.join("../../shared/corpus/zeek-http"))
}

fn corpus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pcap" | "pcapng")
            )
        })
        .collect();
    files.sort();
    files
}

type OwnedFrame = (u64, LinkType, Vec<u8>, u32);

/// Reads every frame; returns (frames as owned copies, stats).
fn read_all(bytes: &[u8]) -> Result<(Vec<OwnedFrame>, CaptureFileStats), CaptureFileError> {
    let mut reader = CaptureReader::new(Cursor::new(bytes))?;
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame()? {
        frames.push((f.ts_nanos, f.link, f.data.to_vec(), f.orig_len));
    }
    Ok((frames, reader.stats().clone()))
}

#[test]
fn every_corpus_file_reads_to_the_end_and_decodes() {
    let files = corpus_files();
    assert!(files.len() >= 60, "corpus has {} files", files.len());
    for path in files {
        let name = path.display().to_string();
        let mut reader = CaptureReader::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut decoder = Decoder::default();
        let mut segments = 0u64;
        let mut n = 0;
        while let Some(frame) = reader
            .next_frame()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
        {
            n += 1;
            match decoder.decode(&frame) {
                Ok(Some(_)) => segments += 1,
                Ok(None) => {}
                Err(e) => panic!("{name}: frame {n} does not decode: {e}"),
            }
        }
        let stats = reader.stats();
        assert!(!stats.truncated_tail, "{name}: cut short");
        assert!(stats.frames > 0, "{name}: no frames");
        assert!(segments > 0, "{name}: no TCP segments");
        assert_eq!(decoder.stats().frames, stats.frames, "{name}");
        assert_eq!(decoder.stats().tcp_segments, segments, "{name}");
    }
}

#[test]
fn frame_counts_match_tcpdump() {
    // Measured with `tcpdump -r FILE 2>/dev/null | wc -l` (tcpdump 4.99) on 2026-11-22.
    let expected = [
        ("100-continue.pcap", 66),
        ("261_variant-01-chunk_2pow64_overflow.pcap", 8),
        ("connect-with-header.pcap", 58),
        ("http-post-large.pcap", 38),
        ("pipelined-requests.pcap", 49),
        ("cooper-grill-dvwa.pcapng", 64),
        ("zeek-image-1080-80-x.pcapng", 17),
    ];
    for (file, count) in expected {
        let bytes = std::fs::read(corpus_dir().join(file)).expect("corpus file");
        let (frames, stats) = read_all(&bytes).expect(file);
        assert_eq!(frames.len(), count, "{file}");
        assert_eq!(stats.frames, count as u64, "{file}");
        assert_eq!(
            stats.bytes,
            frames.iter().map(|f| f.2.len() as u64).sum::<u64>(),
            "{file}"
        );
    }
}

#[test]
fn link_types_and_timestamps_match_tshark() {
    // Values from `tshark -r FILE -T fields -e frame.time_epoch -c 1` and `tcpdump -r`'s
    // "link-type" line.
    let cases = [
        ("get.pcap", LinkType::Ethernet, 1_362_692_526_869_344_000u64),
        (
            "cooper-grill-dvwa.pcapng",
            LinkType::Ethernet,
            1_730_145_002_900_383_409,
        ),
        (
            "zeek-image-1080-80-x.pcapng",
            LinkType::Ethernet,
            1_720_003_638_327_487_000,
        ),
        ("connect-with-header.pcap", LinkType::Null, 0),
        ("basic-auth-with-colon.pcap", LinkType::Ipv4, 0),
    ];
    for (file, link, ts) in cases {
        let bytes = std::fs::read(corpus_dir().join(file)).expect("corpus file");
        let (frames, _) = read_all(&bytes).expect(file);
        assert_eq!(frames[0].1, link, "{file}");
        if ts != 0 {
            assert_eq!(frames[0].0, ts, "{file}");
        }
    }
}

/// tshark's view of the corpus: the frame holding each request and its addresses.
#[test]
fn request_frames_decode_to_the_flows_tshark_found() {
    let tsv = std::fs::read_to_string(corpus_dir().join("../zeek-http-tshark.tsv")).expect("tsv");
    let mut checked = 0;
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, frame_no) = (cols[0], cols[1].parse::<usize>().expect("frame number"));
        let bytes = std::fs::read(corpus_dir().join(file)).expect("corpus file");
        let mut reader = CaptureReader::new(Cursor::new(&bytes[..])).expect(file);
        let mut decoder = Decoder::default();
        let mut n = 0;
        while let Some(frame) = reader.next_frame().expect(file) {
            n += 1;
            let decoded = decoder.decode(&frame);
            if n != frame_no {
                continue;
            }
            let segment = decoded
                .expect(file)
                .unwrap_or_else(|| panic!("{file}#{n}: no TCP"));
            let port = |s: &str| s.parse::<u16>().expect("port");
            assert_eq!(segment.flow.src.port(), port(cols[3]), "{file}#{n}");
            assert_eq!(segment.flow.dst.port(), port(cols[5]), "{file}#{n}");
            if cols[2].is_empty() {
                // tshark's ip.src is empty for IPv6 (this is ::1 over BSD loopback).
                assert_eq!(segment.flow.src.ip(), "::1".parse::<IpAddr>().expect("ip"));
            } else {
                assert_eq!(
                    segment.flow.src.ip(),
                    cols[2].parse::<IpAddr>().expect("ip")
                );
                assert_eq!(
                    segment.flow.dst.ip(),
                    cols[4].parse::<IpAddr>().expect("ip")
                );
            }
            assert!(!segment.payload.is_empty(), "{file}#{n}: empty payload");
            checked += 1;
            break;
        }
    }
    assert!(checked >= 50, "only {checked} rows checked");
}

#[test]
fn pcapng_writer_round_trips() {
    let mut writer = PcapngWriter::new(Vec::new()).expect("writer");
    let eth = writer
        .add_interface(LinkType::Ethernet, 65535, Some("eth0"))
        .expect("idb");
    let raw = writer.add_interface(LinkType::Raw, 128, None).expect("idb");
    assert_eq!((eth, raw), (0, 1));
    let frames: Vec<(u32, u64, Vec<u8>, u32)> = vec![
        (eth, 1_700_000_000_123_456_789, (0..60).collect(), 60),
        (raw, 1_700_000_001_000_000_001, vec![0x45; 13], 1500),
        (eth, 1_700_000_002_999_999_999, Vec::new(), 0),
        (eth, u64::from(u32::MAX) + 7, vec![1, 2, 3], 3),
    ];
    for (iface, ts, data, orig) in &frames {
        writer.write_frame(*iface, *ts, data, *orig).expect("epb");
    }
    assert!(
        writer.write_frame(2, 0, &[], 0).is_err(),
        "interface 2 was never added"
    );
    writer.flush().expect("flush");
    let bytes = writer.into_inner();
    let (read, stats) = read_all(&bytes).expect("read back");
    assert_eq!(read.len(), frames.len());
    for ((iface, ts, data, orig), (rts, rlink, rdata, rorig)) in frames.iter().zip(&read) {
        assert_eq!(rts, ts);
        assert_eq!(
            *rlink,
            if *iface == eth {
                LinkType::Ethernet
            } else {
                LinkType::Raw
            }
        );
        assert_eq!(rdata, data);
        assert_eq!(rorig, orig);
    }
    assert_eq!(stats.truncated_frames, 1);
    assert!(!stats.truncated_tail);
}

#[test]
fn pcapng_records_read_back_when_a_trailer_starts_a_reader_chunk() {
    // Pairs of 54- and 89-byte frames (a SYN, then a few bytes of payload): at byte
    // 786,260 a record's trailer is the first thing of a new read, and the refill used
    // to overwrite the body before it was parsed ("packet on interface 124").
    let mut writer = PcapngWriter::new(Vec::new()).expect("writer");
    let eth = writer
        .add_interface(LinkType::Ethernet, 65535, Some("synthetic0"))
        .expect("idb");
    let n = 20_000u32;
    for i in 0..n {
        writer
            .write_frame(eth, u64::from(i), &[1u8; 54], 54)
            .expect("epb");
        writer
            .write_frame(eth, u64::from(i), &[i as u8; 89], 89)
            .expect("epb");
    }
    let bytes = writer.into_inner();
    let (read, _) = read_all(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.len(), 2 * n as usize);
    for (i, pair) in read.chunks(2).enumerate() {
        assert_eq!(pair[0].2, [1u8; 54], "pair {i}");
        assert_eq!(pair[1].2, [i as u8; 89], "pair {i}");
    }
}

/// Runs a packet tool on `path`; `None` when the tool is not installed.
fn run_tool(tool: &str, args: &[&str], path: &std::path::Path) -> Option<String> {
    let out = Command::new(tool).args(args).arg(path).output().ok()?;
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn pcapng_writer_output_is_read_by_tcpdump_and_tshark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("written.pcapng");
    let get = std::fs::read(corpus_dir().join("get.pcap")).expect("corpus file");
    let (frames, _) = read_all(&get).expect("get.pcap");
    let mut writer = PcapngWriter::new(Vec::new()).expect("writer");
    let iface = writer
        .add_interface(LinkType::Ethernet, 262_144, Some("lo"))
        .expect("idb");
    for (ts, _, data, orig) in &frames {
        writer.write_frame(iface, *ts, data, *orig).expect("epb");
    }
    std::fs::write(&path, writer.into_inner()).expect("write file");

    match run_tool("tcpdump", &["-nn", "-r"], &path) {
        Some(text) => {
            assert_eq!(text.lines().count(), frames.len());
            // The first packet of get.pcap: the SYN to port 80 at 21:42:06.869344 UTC.
            let first = text.lines().next().unwrap_or_default();
            assert!(
                first.contains("141.142.228.5.59856 > 192.150.187.43.80"),
                "{first}"
            );
            assert!(first.contains(":06.869344"), "{first}");
        }
        None => eprintln!("tcpdump not installed; skipping that check"),
    }
    let fields = [
        "-T",
        "fields",
        "-e",
        "frame.time_epoch",
        "-e",
        "tcp.srcport",
        "-r",
    ];
    match run_tool("tshark", &fields, &path) {
        Some(text) => {
            assert_eq!(text.lines().count(), frames.len());
            let first = text.lines().next().unwrap_or_default();
            assert_eq!(first, "1362692526.869344000\t59856", "{first}");
        }
        None => eprintln!("tshark not installed; skipping that check"),
    }
}

#[test]
fn a_file_cut_mid_record_ends_cleanly() {
    let bytes = std::fs::read(corpus_dir().join("get.pcap")).expect("corpus file");
    let (full, _) = read_all(&bytes).expect("full");
    // Record boundaries: global header, then 16 + captured length per record.
    let mut boundaries = vec![24usize];
    for f in &full {
        let last = *boundaries.last().expect("nonempty");
        boundaries.push(last + 16 + f.2.len());
    }
    assert_eq!(*boundaries.last().expect("nonempty"), bytes.len());
    for cut in 4..bytes.len() {
        let (frames, stats) = read_all(&bytes[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let whole = boundaries
            .iter()
            .filter(|&&b| b <= cut)
            .count()
            .saturating_sub(1);
        assert_eq!(frames.len(), whole, "cut at {cut}");
        assert_eq!(
            stats.truncated_tail,
            !boundaries.contains(&cut),
            "cut at {cut}"
        );
        assert_eq!(frames[..], full[..whole], "cut at {cut}");
    }
}

#[test]
fn a_pcapng_cut_anywhere_ends_cleanly() {
    let bytes = std::fs::read(corpus_dir().join("zeek-image-1080-80-x.pcapng")).expect("file");
    let (full, stats) = read_all(&bytes).expect("full");
    assert_eq!(
        stats.skipped_blocks, 0,
        "walk below assumes only SHB/IDB/EPB"
    );
    // Block ends (the file is little-endian) and how many frames precede each.
    let mut ends = vec![(0usize, 0usize)];
    let mut at = 0;
    while at < bytes.len() {
        let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        at += len as usize;
        let frames = ends.last().expect("nonempty").1 + usize::from(kind == 6);
        ends.push((at, frames));
    }
    assert_eq!(ends.last().expect("nonempty").1, full.len());
    for cut in 4..bytes.len() {
        let (frames, stats) = read_all(&bytes[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let (_, whole) = ends
            .iter()
            .rev()
            .find(|(end, _)| *end <= cut)
            .expect("block 0");
        assert_eq!(frames.len(), *whole, "cut at {cut}");
        assert_eq!(
            stats.truncated_tail,
            !ends.iter().any(|(end, _)| *end == cut),
            "cut at {cut}"
        );
        assert_eq!(frames[..], full[..*whole], "cut at {cut}");
    }
}

#[test]
fn not_a_capture() {
    for bytes in [
        &b""[..],
        b"\xd4\xc3",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x7fELF\x02\x01\x01\0",
    ] {
        match CaptureReader::new(Cursor::new(bytes)) {
            Err(CaptureFileError::NotACapture { why }) => assert!(!why.is_empty()),
            Err(e) => panic!("{bytes:?}: wrong error {e}"),
            Ok(_) => panic!("{bytes:?}: accepted"),
        }
    }
    let err = CaptureReader::new(Cursor::new(&b"GET / HTTP/1.1\r\n"[..]))
        .err()
        .expect("error");
    assert!(err.to_string().contains("47455420"), "{err}");
}

/// pcap file header in the given byte order.
fn pcap_header(magic: u32, big: bool, snaplen: u32, link: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let u32b = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u16b = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    out.extend_from_slice(&u32b(magic));
    out.extend_from_slice(&u16b(2));
    out.extend_from_slice(&u16b(4));
    out.extend_from_slice(&u32b(0));
    out.extend_from_slice(&u32b(0));
    out.extend_from_slice(&u32b(snaplen));
    out.extend_from_slice(&u32b(link));
    out
}

fn pcap_record(out: &mut Vec<u8>, big: bool, sec: u32, frac: u32, data: &[u8], orig: u32) {
    let u32b = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    out.extend_from_slice(&u32b(sec));
    out.extend_from_slice(&u32b(frac));
    out.extend_from_slice(&u32b(data.len() as u32));
    out.extend_from_slice(&u32b(orig));
    out.extend_from_slice(data);
}

#[test]
fn nanosecond_big_endian_pcap() {
    let mut file = pcap_header(0xA1B2_3C4D, true, u32::MAX, 276);
    pcap_record(
        &mut file,
        true,
        1_700_000_000,
        999_999_999,
        &[1, 2, 3, 4],
        4,
    );
    pcap_record(&mut file, true, 1_700_000_001, 5, &[9; 10], 1514);
    let (frames, stats) = read_all(&file).expect("read");
    assert_eq!(
        frames,
        vec![
            (
                1_700_000_000_999_999_999,
                LinkType::LinuxSll2,
                vec![1, 2, 3, 4],
                4
            ),
            (
                1_700_000_001_000_000_005,
                LinkType::LinuxSll2,
                vec![9; 10],
                1514
            ),
        ]
    );
    assert_eq!(stats.truncated_frames, 1);
    assert_eq!(stats.bytes, 14);
}

#[test]
fn microsecond_little_endian_pcap_with_fcs_bits_in_linktype() {
    // Bits 28-31 of the link type field carry the FCS length; the type is the low 16 bits.
    let mut file = pcap_header(0xA1B2_C3D4, false, 65535, 0x1000_0000 | 113);
    pcap_record(&mut file, false, 10, 20, &[7; 16], 16);
    let (frames, _) = read_all(&file).expect("read");
    assert_eq!(
        frames,
        vec![(10_000_020_000, LinkType::LinuxSll, vec![7; 16], 16)]
    );
}

#[test]
fn absurd_pcap_record_length_is_an_error_not_an_allocation() {
    let mut file = pcap_header(0xA1B2_C3D4, false, 65535, 1);
    pcap_record(&mut file, false, 1, 0, &[0; 20], 20);
    let at = file.len() as u64;
    file.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    file.extend_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    file.extend_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    let mut reader = CaptureReader::new(Cursor::new(&file[..])).expect("header");
    assert!(reader.next_frame().expect("first").is_some());
    match reader.next_frame() {
        Err(CaptureFileError::CorruptRecord { offset, why }) => {
            assert_eq!(offset, at);
            assert!(why.contains("2147483632"), "{why}");
        }
        other => panic!(
            "expected CorruptRecord, got {:?}",
            other.map(|f| f.map(|f| f.data.len()))
        ),
    }
    // After an error the reader stays finished instead of reading garbage as records.
    assert!(reader.next_frame().expect("done").is_none());
}

#[test]
fn pcap_record_much_longer_than_its_packet_is_an_error() {
    let mut file = pcap_header(0xA1B2_C3D4, false, 65535, 1);
    pcap_record(&mut file, false, 1, 0, &[0; 20], 24);
    // Odd but harmless: 4 bytes more captured than on the wire.
    pcap_record(&mut file, false, 1, 0, &[0; 28], 24);
    let (frames, _) = read_all(&file).expect("small excess is tolerated");
    assert_eq!((frames.len(), frames[1].3), (2, 28));
    pcap_record(&mut file, false, 1, 0, &vec![0; 70_000], 60);
    match read_all(&file) {
        Err(CaptureFileError::CorruptRecord { offset, why }) => {
            assert_eq!(offset, 24 + 36 + 44);
            assert!(
                why.contains("70000 captured bytes of a 60-byte packet"),
                "{why}"
            );
        }
        other => panic!("expected CorruptRecord, got {:?}", other.map(|r| r.0.len())),
    }
}

#[test]
fn kuznetsov_pcap_records_have_a_longer_header() {
    let mut file = pcap_header(0xA1B2_CD34, false, 65535, 1);
    for (sec, byte) in [(1u32, 0xAAu8), (2, 0xBB)] {
        let mut record = Vec::new();
        pcap_record(&mut record, false, sec, 7, &[byte; 6], 6);
        // ifindex, protocol, packet type, padding: between the header and the data.
        record.splice(16..16, [0u8; 8]);
        file.extend_from_slice(&record);
    }
    let (frames, stats) = read_all(&file).expect("read");
    assert_eq!(
        frames,
        vec![
            (1_000_007_000, LinkType::Ethernet, vec![0xAA; 6], 6),
            (2_000_007_000, LinkType::Ethernet, vec![0xBB; 6], 6),
        ]
    );
    assert!(!stats.truncated_tail);
}

/// Builds pcapng blocks in either byte order.
struct Ng {
    big: bool,
    out: Vec<u8>,
}

impl Ng {
    fn u16b(&self, v: u16) -> [u8; 2] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn u32b(&self, v: u32) -> [u8; 4] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn block(&mut self, kind: u32, body: &[u8]) {
        let mut padded = body.to_vec();
        while padded.len() % 4 != 0 {
            padded.push(0);
        }
        let total = 12 + padded.len() as u32;
        let (k, t) = (self.u32b(kind), self.u32b(total));
        self.out.extend_from_slice(&k);
        self.out.extend_from_slice(&t);
        self.out.extend_from_slice(&padded);
        self.out.extend_from_slice(&t);
    }
    fn shb(&mut self, big: bool) {
        self.big = big;
        let mut body = self.u32b(0x1A2B_3C4D).to_vec();
        body.extend_from_slice(&self.u16b(1));
        body.extend_from_slice(&self.u16b(0));
        body.extend_from_slice(&[0xFF; 8]);
        self.block(0x0A0D_0D0A, &body);
    }
    fn option(&self, body: &mut Vec<u8>, code: u16, value: &[u8]) {
        body.extend_from_slice(&self.u16b(code));
        body.extend_from_slice(&self.u16b(value.len() as u16));
        body.extend_from_slice(value);
        while body.len() % 4 != 0 {
            body.push(0);
        }
    }
    fn idb(&mut self, link: u16, snaplen: u32, tsresol: Option<u8>, tsoffset: Option<i64>) {
        let mut body = self.u16b(link).to_vec();
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&self.u32b(snaplen));
        if let Some(r) = tsresol {
            self.option(&mut body, 9, &[r]);
        }
        if let Some(o) = tsoffset {
            let bytes = if self.big {
                o.to_be_bytes()
            } else {
                o.to_le_bytes()
            };
            self.option(&mut body, 14, &bytes);
        }
        self.option(&mut body, 0, &[]);
        self.block(1, &body);
    }
    fn epb(&mut self, iface: u32, ts: u64, data: &[u8], orig: u32) {
        let mut body = self.u32b(iface).to_vec();
        body.extend_from_slice(&self.u32b((ts >> 32) as u32));
        body.extend_from_slice(&self.u32b(ts as u32));
        body.extend_from_slice(&self.u32b(data.len() as u32));
        body.extend_from_slice(&self.u32b(orig));
        body.extend_from_slice(data);
        self.block(6, &body);
    }
    fn opb(&mut self, iface: u16, ts: u64, data: &[u8], orig: u32) {
        let mut body = self.u16b(iface).to_vec();
        body.extend_from_slice(&self.u16b(0));
        body.extend_from_slice(&self.u32b((ts >> 32) as u32));
        body.extend_from_slice(&self.u32b(ts as u32));
        body.extend_from_slice(&self.u32b(data.len() as u32));
        body.extend_from_slice(&self.u32b(orig));
        body.extend_from_slice(data);
        self.block(2, &body);
    }
    fn spb(&mut self, orig: u32, data: &[u8]) {
        let mut body = self.u32b(orig).to_vec();
        body.extend_from_slice(data);
        self.block(3, &body);
    }
}

#[test]
fn pcapng_sections_interfaces_resolutions_and_block_types() {
    let mut ng = Ng {
        big: false,
        out: Vec::new(),
    };
    ng.shb(false);
    ng.idb(1, 65535, None, None); // microseconds (default)
    ng.idb(101, 0, Some(9), Some(-10)); // nanoseconds, 10 s earlier
    ng.idb(113, 0, Some(0x80 | 10), Some(100)); // 1/1024 s, 100 s later
    ng.block(5, &[0; 20]); // interface statistics: skipped
    ng.block(0x0BAD_CAFE, &[1, 2, 3]); // unknown: skipped
    ng.epb(0, 1_500_000, &[1, 2, 3], 3);
    ng.epb(1, 20_000_000_007, &[4; 5], 9);
    ng.epb(2, 2048, &[5], 1);
    ng.opb(1, 30_000_000_000, &[6, 6], 2);
    ng.spb(4, &[7, 7, 7, 7]);
    // New section, other byte order: interfaces start again.
    ng.shb(true);
    ng.idb(276, 3, Some(3), None); // milliseconds, snaplen 3
    ng.spb(10, &[8; 10]);
    ng.epb(0, 42, &[9; 3], 3);
    let (frames, stats) = read_all(&ng.out).expect("read");
    assert_eq!(
        frames,
        vec![
            (1_500_000_000, LinkType::Ethernet, vec![1, 2, 3], 3),
            (10_000_000_007, LinkType::Raw, vec![4; 5], 9),
            (102_000_000_000, LinkType::LinuxSll, vec![5], 1),
            (20_000_000_000, LinkType::Raw, vec![6, 6], 2),
            // SPB: interface 0, no timestamp of its own (keeps the last one).
            (20_000_000_000, LinkType::Ethernet, vec![7; 4], 4),
            // SPB limited by the interface snaplen; timestamps restart with the section.
            (0, LinkType::LinuxSll2, vec![8; 3], 10),
            (42_000_000, LinkType::LinuxSll2, vec![9; 3], 3),
        ]
    );
    assert_eq!(stats.skipped_blocks, 2);
    assert_eq!(stats.truncated_frames, 2);
    assert!(!stats.truncated_tail);
}

#[test]
fn pcapng_packet_on_an_interface_of_a_previous_section_is_an_error() {
    let mut ng = Ng {
        big: false,
        out: Vec::new(),
    };
    ng.shb(false);
    ng.idb(1, 0, None, None);
    ng.shb(false);
    let at = ng.out.len() as u64;
    ng.epb(0, 0, &[1], 1);
    let err = read_all(&ng.out).expect_err("interface 0 is gone");
    match err {
        CaptureFileError::CorruptRecord { offset, why } => {
            assert_eq!(offset, at);
            assert!(why.contains("interface 0"), "{why}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn pcapng_bad_block_lengths_are_errors() {
    let mut base = Ng {
        big: false,
        out: Vec::new(),
    };
    base.shb(false);
    base.idb(1, 0, None, None);
    let at = base.out.len();

    let corrupt = |mutate: &dyn Fn(&mut Vec<u8>)| {
        let mut ng = Ng {
            big: false,
            out: base.out.clone(),
        };
        ng.epb(0, 0, &[1, 2, 3, 4], 4);
        mutate(&mut ng.out);
        match read_all(&ng.out) {
            Err(CaptureFileError::CorruptRecord { offset, why }) => (offset, why),
            other => panic!("expected CorruptRecord, got {:?}", other.map(|r| r.0.len())),
        }
    };
    // Not a multiple of 4.
    let (offset, why) = corrupt(&|b| b[at + 4] = 37);
    assert_eq!((offset, why.contains("37")), (at as u64, true), "{why}");
    // Below the 12-byte minimum.
    let (_, why) = corrupt(&|b| b[at + 4] = 8);
    assert!(why.contains("at least 12"), "{why}");
    // Absurdly large: rejected before anything is read or allocated.
    let (_, why) = corrupt(&|b| b[at + 4..at + 8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes()));
    assert!(why.contains("at most"), "{why}");
    // Trailing length differs from the leading one.
    let (_, why) = corrupt(&|b| {
        let n = b.len();
        b[n - 4] = 0x40;
    });
    assert!(why.contains("at the end"), "{why}");
    // Captured length larger than the block.
    let (_, why) = corrupt(&|b| b[at + 20] = 200);
    assert!(why.contains("200 captured bytes"), "{why}");
}

#[test]
fn decoded_corpus_segments_carry_real_addresses() {
    // connect-with-header.pcap is IPv6 over BSD loopback (LINKTYPE_NULL, AF_INET6 = 30).
    let bytes = std::fs::read(corpus_dir().join("connect-with-header.pcap")).expect("file");
    let mut reader = CaptureReader::new(Cursor::new(&bytes[..])).expect("header");
    let mut decoder = Decoder::default();
    let frame = reader.next_frame().expect("read").expect("frame");
    let segment = decoder.decode(&frame).expect("decode").expect("tcp");
    let lo: IpAddr = "::1".parse().expect("ip");
    assert_eq!(segment.flow.src, SocketAddr::new(lo, 52522));
    assert_eq!(segment.flow.dst, SocketAddr::new(lo, 80));
    assert!(segment.flags.syn() && !segment.flags.ack());
}

#[test]
fn pcapng_without_byte_order_magic_is_not_a_capture() {
    let mut ng = Ng {
        big: false,
        out: Vec::new(),
    };
    ng.shb(false);
    ng.out[8..12].copy_from_slice(b"junk");
    match CaptureReader::new(Cursor::new(&ng.out[..])) {
        Err(CaptureFileError::NotACapture { why }) => assert!(why.contains("1a2b3c4d"), "{why}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("accepted"),
    }
}

mod damaged_files {
    use super::*;
    use proptest::prelude::*;

    /// Reads until the end or the first error; the reader must neither panic nor loop.
    fn read_damaged(bytes: &[u8]) {
        let Ok(mut reader) = CaptureReader::new(Cursor::new(bytes)) else {
            return;
        };
        let mut decoder = Decoder::default();
        let mut frames = 0;
        while let Ok(Some(frame)) = reader.next_frame() {
            frames += 1;
            assert!(frame.data.len() <= bytes.len());
            let _ = decoder.decode(&frame);
        }
        // Each frame costs at least a 16-byte record header or a 12-byte block.
        assert!(frames <= bytes.len() / 12);
        assert!(reader.next_frame().map(|f| f.is_none()).unwrap_or(true));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_behind_a_valid_magic(
            magic in prop_oneof![
                Just(vec![0xD4, 0xC3, 0xB2, 0xA1]),
                Just(vec![0xA1, 0xB2, 0x3C, 0x4D]),
                Just(vec![0x0A, 0x0D, 0x0D, 0x0A, 0x1C, 0, 0, 0, 0x4D, 0x3C, 0x2B, 0x1A]),
            ],
            rest in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            read_damaged(&[magic, rest].concat());
        }

        #[test]
        fn corpus_files_with_flipped_bytes(
            file in prop_oneof![
                Just("get.pcap"),
                Just("zeek-image-1080-80-x.pcapng"),
                Just("connect-with-header.pcap"),
            ],
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = std::fs::read(corpus_dir().join(file)).expect("corpus file");
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let cut = cut.index(bytes.len() + 1);
            read_damaged(&bytes[..cut]);
        }
    }
}
