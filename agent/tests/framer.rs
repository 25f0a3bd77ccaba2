//! The HTTP request framer through its public API, as the pipeline drives it: segments of
//! one client->server stream with their timestamps, gaps, and the end of the stream.

use shadowtap::http::{
    DropReason, FramerEvent, FramerLimits, HttpRequest, NotHttpKind, RequestFramer,
};
use shadowtap::metrics::{Accounting, Outcome};

fn run(segments: &[(u64, &[u8])]) -> Vec<FramerEvent> {
    let mut framer = RequestFramer::new(FramerLimits::default());
    let mut out = Vec::new();
    for (ts, bytes) in segments {
        framer.push(*ts, bytes, &mut out);
    }
    framer.finish(u64::MAX, &mut out);
    out
}

fn requests(events: &[FramerEvent]) -> Vec<&HttpRequest> {
    events
        .iter()
        .filter_map(|e| match e {
            FramerEvent::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn targets(events: &[FramerEvent]) -> Vec<String> {
    requests(events)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.target).into_owned())
        .collect()
}

#[test]
fn pipelined_keep_alive_requests_split_across_segments() {
    let events = run(&[
        (10, b"GET /style.css HTTP/1.1\r\nHost: www.example\r\n\r\nGET /app.js HT"),
        (20, b"TP/1.1\r\nHost: www.example\r\n\r\nPOST /form HTTP/1.1\r\nHost: www.example\r\nContent-Length: 7\r\n\r\na=1"),
        (30, b"&b=2"),
        (40, b"GET /last HTTP/1.1\r\nHost: www.example\r\n\r\n"),
    ]);
    let reqs = requests(&events);
    assert_eq!(events.len(), 4, "{events:?}");
    let seen: Vec<(&str, &[u8], u64, &[u8])> = reqs
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.target.as_slice(),
                r.ts_nanos,
                r.body.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("GET", &b"/style.css"[..], 10, &b""[..]),
            ("GET", b"/app.js", 10, b""),
            ("POST", b"/form", 20, b"a=1&b=2"),
            ("GET", b"/last", 40, b""),
        ]
    );
    assert_eq!(reqs[2].header("content-length"), Some(&b"7"[..]));
    assert_eq!(reqs[0].header("HOST"), Some(&b"www.example"[..]));
}

#[test]
fn chunked_body_is_dechunked_with_trailers() {
    let events = run(&[
        (1, b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"),
        (2, b"4;sig=abc\r\nWiki\r\n"),
        (3, b"5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nChecksum: 42\r\n\r\n"),
    ]);
    let reqs = requests(&events);
    assert_eq!(reqs.len(), 1, "{events:?}");
    assert!(reqs[0].chunked);
    assert_eq!(reqs[0].body, b"Wikipedia in\r\n\r\nchunks.");
    assert_eq!(reqs[0].trailers.len(), 1);
    assert_eq!(reqs[0].trailers[0].name, "Checksum");
    assert_eq!(reqs[0].trailers[0].value, b"42");
}

/// Exact client payloads of the zeek `261_variant-*` captures: each hides a second
/// request behind a first whose framing a lenient server could read two ways.
#[test]
fn zeek_smuggling_variants_never_emit_a_hidden_request() {
    let hidden = |name: &str| format!("GET /smuggled-{name} HTTP/1.1\r\nHost: target\r\n\r\n");
    let head = "POST / HTTP/1.1\r\nHost: target\r\n";
    let cases: Vec<(String, Outcome)> = vec![
        (
            format!(
                "{head}Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n\r\n{}",
                hidden("chunk-2pow64")
            ),
            Outcome::Unparseable,
        ),
        (
            format!(
                "{head}Content-Length: 18446744073709551615\r\n\r\n{}",
                hidden("cl-uint64max")
            ),
            Outcome::TooLarge,
        ),
        (
            format!("{head}Content-Length: -1\r\n\r\n{}", hidden("cl-negative")),
            Outcome::Unparseable,
        ),
        (
            format!(
                "{head}Transfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\n{}",
                hidden("te-cl")
            ),
            Outcome::Unparseable,
        ),
        (
            format!(
                "{head}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{}",
                hidden("obsfold")
            ),
            Outcome::Unparseable,
        ),
        (
            format!(
                "{head}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{}",
                hidden("multi-te")
            ),
            Outcome::Unparseable,
        ),
    ];
    for (payload, outcome) in cases {
        let events = run(&[(1, payload.as_bytes())]);
        assert!(requests(&events).is_empty(), "{payload:?}: {events:?}");
        let drops: Vec<Outcome> = events
            .iter()
            .filter_map(|e| match e {
                FramerEvent::Dropped { reason, method, .. } => {
                    assert_eq!(method.as_deref(), Some("POST"));
                    Some(reason.outcome())
                }
                _ => None,
            })
            .collect();
        assert_eq!(drops, vec![outcome], "{payload:?}");
    }
    // The two variants whose framing is valid: the second request is a real one.
    let cl0 = format!(
        "{head}Expect: 100-continue\r\nContent-Length: 0\r\n\r\n{}",
        hidden("expect-100")
    );
    assert_eq!(
        targets(&run(&[(1, cl0.as_bytes())])),
        ["/", "/smuggled-expect-100"]
    );
    let zeros = format!(
        "{head}Content-Length: 00000000000000000000000000000050\r\n\r\n{}{}",
        "X".repeat(50),
        hidden("leading-zeros")
    );
    assert_eq!(
        targets(&run(&[(1, zeros.as_bytes())])),
        ["/", "/smuggled-leading-zeros"]
    );
}

#[test]
fn every_request_seen_gets_one_outcome() {
    let mut framer = RequestFramer::new(FramerLimits {
        max_head: 1024,
        max_headers: 32,
        max_body: 16,
    });
    let mut out = Vec::new();
    framer.push(
        1,
        b"GET /ok HTTP/1.1\r\n\r\nPOST /big HTTP/1.1\r\nContent-Length: 100\r\n\r\n",
        &mut out,
    );
    framer.push(2, &[b'z'; 100], &mut out);
    framer.push(
        3,
        b"POST /cut HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345",
        &mut out,
    );
    framer.gap(4, 3, &mut out);
    framer.push(5, b"89GET /ok2 HTTP/1.1\r\n\r\nPOST /bad HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nGET /never HTTP/1.1\r\n\r\n", &mut out);
    framer.finish(6, &mut out);

    let accounting = Accounting::new(Vec::new());
    for event in &out {
        match event {
            FramerEvent::Request(_) => {
                accounting.seen();
                accounting.record_all(Outcome::NotSampled);
            }
            FramerEvent::Dropped { reason, .. } => {
                accounting.seen();
                accounting.record_all(reason.outcome());
            }
            FramerEvent::NotHttp { .. } => {}
        }
    }
    let counters = accounting.target(0);
    assert_eq!(accounting.requests_seen(), 5);
    assert_eq!(counters.get(Outcome::NotSampled), 2);
    assert_eq!(counters.get(Outcome::TooLarge), 1);
    assert_eq!(counters.get(Outcome::Incomplete), 1);
    assert_eq!(counters.get(Outcome::Unparseable), 1);
    assert_eq!(counters.total(), accounting.requests_seen());
    assert_eq!(targets(&out), ["/ok", "/ok2"]);
}

#[test]
fn non_http_streams_are_counted_once_whatever_the_segments() {
    let tls: Vec<u8> = [&[0x16u8, 0x03, 0x03, 0x00, 0x40][..], &[0xab; 0x40]].concat();
    let mut framer = RequestFramer::new(FramerLimits::default());
    let mut out = Vec::new();
    for piece in tls.chunks(7) {
        framer.push(1, piece, &mut out);
    }
    assert!(
        out.is_empty(),
        "counts wait for the end of the run: {out:?}"
    );
    framer.finish(2, &mut out);
    assert_eq!(
        out,
        vec![FramerEvent::NotHttp {
            kind: NotHttpKind::Tls,
            bytes: tls.len() as u64
        }]
    );
}

#[test]
fn hostile_streams_stay_within_the_memory_bound() {
    let limits = FramerLimits {
        max_head: 4096,
        max_headers: 64,
        max_body: 65536,
    };
    let bound = limits.buffer_bound();
    let hostile: Vec<Vec<u8>> = vec![
        // A header that never ends.
        [&b"GET / HTTP/1.1\r\nX-Long: "[..], &[b'a'; 200_000]].concat(),
        // A chunk extension that never ends.
        [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;"[..],
            &[b'e'; 200_000],
        ]
        .concat(),
        // Endless chunks, over the body limit.
        [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            &[&b"400\r\n"[..], &[b'd'; 1024], b"\r\n"]
                .concat()
                .repeat(200),
        ]
        .concat(),
        // A request line that never ends, after a good request.
        [&b"GET / HTTP/1.1\r\n\r\nGET /"[..], &[b'p'; 200_000]].concat(),
        // A body-sized Content-Length never reserved.
        [
            &b"POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n"[..],
            &[0u8; 200_000],
        ]
        .concat(),
    ];
    for stream in &hostile {
        let mut framer = RequestFramer::new(limits);
        let mut out = Vec::new();
        for piece in stream.chunks(1460) {
            framer.push(1, piece, &mut out);
            assert!(
                framer.buffered() <= bound,
                "{} > {bound}",
                framer.buffered()
            );
        }
        framer.finish(2, &mut out);
        assert!(targets(&out).iter().all(|t| t == "/"), "{out:?}");
        assert!(
            out.iter().any(|e| matches!(
                e,
                FramerEvent::Dropped {
                    reason: DropReason::TooLarge | DropReason::Unparseable(_),
                    ..
                }
            )),
            "{out:?}"
        );
    }
}

#[test]
fn capture_starting_mid_connection_resynchronises() {
    let events = run(&[
        (1, b"rest of a previous body\r\nthat spans lines\r\n"),
        (2, b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"),
    ]);
    assert_eq!(
        events[0],
        FramerEvent::NotHttp {
            kind: NotHttpKind::Other,
            bytes: 43
        }
    );
    assert_eq!(targets(&events), ["/next"]);
    assert_eq!(requests(&events)[0].ts_nanos, 2);
}

#[test]
fn a_head_near_the_limit_fed_byte_by_byte() {
    // Each byte is scanned once: 60 KiB of one-byte pushes stays cheap.
    let cookie = "c".repeat(60 * 1024);
    let head = format!("GET /big HTTP/1.1\r\nCookie: {cookie}\r\n\r\n");
    let mut framer = RequestFramer::new(FramerLimits::default());
    let mut out = Vec::new();
    for (i, byte) in head.as_bytes().iter().enumerate() {
        framer.push(i as u64, std::slice::from_ref(byte), &mut out);
    }
    framer.finish(0, &mut out);
    let reqs = requests(&out);
    assert_eq!(reqs.len(), 1, "{out:?}");
    assert_eq!(reqs[0].ts_nanos, 0);
    assert_eq!(
        reqs[0].header("cookie").map(<[u8]>::len),
        Some(cookie.len())
    );
}

/// The client->server byte streams of a classic pcap file: a small reader for the test
/// corpus (Ethernet with VLANs, BSD null, raw IPv4; IPv4/IPv6; TCP), with in-order
/// reassembly where a hole becomes a gap. Each stream is a list of (ts, bytes | gap).
mod corpus {
    use std::collections::BTreeMap;

    pub enum Piece {
        Data(u64, Vec<u8>),
        Gap(u64),
    }

    type Flow = (Vec<u8>, u16, Vec<u8>, u16);

    struct Segment {
        ts: u64,
        flow: Flow,
        seq: u32,
        syn: bool,
        ack: bool,
        payload: Vec<u8>,
    }

    fn u16be(b: &[u8]) -> u16 {
        u16::from_be_bytes([b[0], b[1]])
    }

    fn u32be(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    fn tcp_of_ip(ts: u64, ip: &[u8]) -> Option<Segment> {
        let (src, dst, proto, l4, total) = match ip.first()? >> 4 {
            4 => {
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let total = usize::from(u16be(&ip[2..]));
                (ip[12..16].to_vec(), ip[16..20].to_vec(), ip[9], ihl, total)
            }
            6 => (
                ip[8..24].to_vec(),
                ip[24..40].to_vec(),
                ip[6],
                40,
                40 + usize::from(u16be(&ip[4..])),
            ),
            _ => return None,
        };
        if proto != 6 {
            return None;
        }
        let ip = &ip[..total.min(ip.len())];
        let tcp = ip.get(l4..)?;
        let off = usize::from(tcp[12] >> 4) * 4;
        Some(Segment {
            ts,
            flow: (src, u16be(tcp), dst, u16be(&tcp[2..])),
            seq: u32be(&tcp[4..]),
            syn: tcp[13] & 0x02 != 0,
            ack: tcp[13] & 0x10 != 0,
            payload: tcp.get(off..)?.to_vec(),
        })
    }

    fn segments(file: &[u8]) -> Vec<Segment> {
        let magic = u32::from_le_bytes(file[..4].try_into().unwrap());
        let (le, nanos) = match magic {
            0xa1b2c3d4 => (true, false),
            0xa1b23c4d => (true, true),
            0xd4c3b2a1 => (false, false),
            0x4d3cb2a1 => (false, true),
            _ => return Vec::new(),
        };
        let rd = |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            if le {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        };
        let link = rd(&file[20..]);
        let mut out = Vec::new();
        let mut at = 24;
        while at + 16 <= file.len() {
            let sub = u64::from(rd(&file[at + 4..]));
            let ts =
                u64::from(rd(&file[at..])) * 1_000_000_000 + if nanos { sub } else { sub * 1000 };
            let len = rd(&file[at + 8..]) as usize;
            let frame = &file[at + 16..(at + 16 + len).min(file.len())];
            at += 16 + len;
            let ip = match link {
                1 => {
                    let mut off = 12;
                    while matches!(u16be(&frame[off..]), 0x8100 | 0x88a8) {
                        off += 4;
                    }
                    &frame[off + 2..]
                }
                0 => &frame[4..],
                _ => frame,
            };
            out.extend(tcp_of_ip(ts, ip));
        }
        out
    }

    /// Client->server streams, in the order their first segment appears.
    pub fn client_streams(file: &[u8]) -> Vec<Vec<Piece>> {
        let segs = segments(file);
        // The client sent the bare SYN or received the SYN-ACK; with neither in the
        // capture, it is the side with the higher port.
        let is_client = |f: &Flow| {
            let reversed = (f.2.clone(), f.3, f.0.clone(), f.1);
            let handshake = segs
                .iter()
                .find(|s| s.syn && (s.flow == *f || s.flow == reversed));
            match handshake {
                Some(s) => (s.flow == *f) != s.ack,
                None => f.1 > f.3,
            }
        };
        let mut order = Vec::new();
        let mut streams: BTreeMap<usize, (u32, Vec<Piece>)> = BTreeMap::new();
        let mut index: Vec<(Flow, usize)> = Vec::new();
        for s in &segs {
            if !is_client(&s.flow) || (s.payload.is_empty() && !s.syn) {
                continue;
            }
            let i = match index.iter().find(|(f, _)| *f == s.flow) {
                Some((_, i)) => *i,
                None => {
                    let i = index.len();
                    index.push((s.flow.clone(), i));
                    order.push(i);
                    let next = if s.syn { s.seq.wrapping_add(1) } else { s.seq };
                    streams.insert(i, (next, Vec::new()));
                    i
                }
            };
            let (next, pieces) = streams.get_mut(&i).unwrap();
            if s.payload.is_empty() {
                continue;
            }
            let ahead = s.seq.wrapping_sub(*next);
            if ahead < 0x8000_0000 {
                if ahead > 0 {
                    pieces.push(Piece::Gap(u64::from(ahead)));
                }
                pieces.push(Piece::Data(s.ts, s.payload.clone()));
                *next = s.seq.wrapping_add(s.payload.len() as u32);
            } else {
                // Starts before what we have: keep only the new tail of a retransmission.
                let behind = next.wrapping_sub(s.seq) as usize;
                if behind < s.payload.len() {
                    pieces.push(Piece::Data(s.ts, s.payload[behind..].to_vec()));
                    *next = s.seq.wrapping_add(s.payload.len() as u32);
                }
            }
        }
        order
            .into_iter()
            .filter_map(|i| streams.remove(&i))
            .map(|(_, p)| p)
            .filter(|p| !p.is_empty())
            .collect()
    }
}

/// One line per event, short enough to compare with a table.
fn summary(events: &[FramerEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            FramerEvent::Request(r) => format!(
                "{} {} body={}",
                r.method,
                String::from_utf8_lossy(&r.target)
                    .chars()
                    .take(24)
                    .collect::<String>(),
                r.body.len()
            ),
            FramerEvent::Dropped { reason, .. } => format!("dropped {reason:?}"),
            FramerEvent::NotHttp { kind, .. } => format!("not-http {kind:?}"),
        })
        .collect()
}

/// What each client stream of the zeek HTTP corpus frames to. Reviewed by hand against
/// the payloads: the 261 variants and smuggle-http-request as in the table tests; TLS
/// after CONNECT; HTTP/0.9 (also `no-uri`'s `GET HTTP/1.1`) and cruft unparseable;
/// `connect-with-smtp` starts with a line that is no request line (`CONNECT host:25 /
/// HTTP/1.0`), so nothing there is a request.
const ZEEK_CORPUS_EXPECTED: &str = r#"
100-continue.pcap #0: POST / body=2001
261_variant-01-chunk_2pow64_overflow.pcap #0: dropped Unparseable("chunk size overflows") | not-http Other
261_variant-02-cl_uint64max.pcap #0: dropped TooLarge
261_variant-03-cl_negative.pcap #0: dropped Unparseable("invalid Content-Length") | not-http Other
261_variant-04-te_cl_desync.pcap #0: dropped Unparseable("both Content-Length and Transfer-Encoding") | not-http Other
261_variant-07-expect_100_cl0.pcap #0: POST / body=0 | GET /smuggled-expect-100 body=0
261_variant-08-leading_zeros.pcap #0: POST / body=50 | GET /smuggled-leading-zeros body=0
261_variant-09-te_obs_fold.pcap #0: dropped Unparseable("invalid header name (or obs-fold)") | not-http Other
261_variant-10-multi_value_te.pcap #0: dropped Unparseable("Transfer-Encoding other than exactly chunked") | not-http Other
basic-auth-with-colon.pcap #0: GET / body=0
basic-auth-with-extra-space.pcap #0: not-http Other
basic-auth-with-extra-space.pcap #1: not-http Other
basic-auth-with-extra-space.pcap #2: not-http Other
basic-auth-with-extra-space.pcap #3: not-http Other
basic-auth-with-extra-space.pcap #4: GET / body=0
byteranges.pcap #0: GET /msdownload/update/softw body=0
connect-with-header.pcap #0: CONNECT secure.newegg.com:443 body=0 | not-http Tls
connect-with-smtp.pcap #0: not-http Other
content-length-in-request-body.pcap #0: POST /first body=95 | POST /smuggle-this body=0
content-length-overflow.pcap #0: GET /bigfile body=0
content-range-gap-skip.pcap #0: GET /msdownload/update/softw body=0
content-range-gap.pcap #0: GET /images/misc/static/2012 body=0
content-range-less-than-len.pcap #0: GET / body=0
ctu-62604-80.pcap #0: POST /c2sock body=440
curl_http_09.pcap #0: GET /zeek.html body=0
deeply-nested-mime.pcap #0: POST / body=39686
entity_gap.pcap #0: GET /download/CHANGES.bro-au body=0
entity_gap2.pcap #0: GET /download/CHANGES.bro-au body=0
fake-content-length.pcap #0: GET / body=0
get-gzip.pcap #0: GET /gzip body=0
get-to-ssh-server.pcap #0: GET / body=0
get-without-fins.pcap #0: GET /download/CHANGES.bro-au body=0
get.pcap #0: GET /download/CHANGES.bro-au body=0
get_nosyn.pcap #0: GET /download/CHANGES.bro-au body=0
http-09-content-length-confusion.pcap #0: dropped Unparseable("HTTP/0.9 request (no version)") | not-http Other
http-11-request-then-cruft.pcap #0: GET / body=0 | dropped Unparseable("invalid request line") | not-http Other
http-bad-content-range-01.pcap #0: GET / body=0
http-bad-request-with-version.pcap #0: not-http Other
http-filename.pcap #0: GET /response-headers?Conten body=0
http-inner-transfer-encoding-ossfuzz.pcap #0: not-http Other
http-inner-transfer-encoding-reproducer.pcap #0: POST / body=87
http-large-gap.pcap #0: GET /22.04.3/ubuntu-22.04.3- body=0
http-lower-case-nonstandard-port.pcap #0: GET /index.html body=0
http-lower-case.pcap #0: GET /index.html body=0
http-post-large.pcap #0: POST /hello body=61484
http-post-large.pcap #1: POST /hello body=61484
http-single-conn-22.pcap #0: GET / body=0
http-to-ssh.pcap #0: GET / body=0
http_09.pcap #0: dropped Unparseable("HTTP/0.9 request (no version)")
http_09.pcap #1: dropped Unparseable("HTTP/0.9 request (no version)")
http_09.pcap #2: not-http Other
http_09.pcap #3: dropped Unparseable("HTTP/0.9 request (no version)")
http_09.pcap #4: not-http Other
interleaved-http-entity.pcap #0: POST / body=10
invalid-content-ranges.pcap #0: GET /file.bin body=0
invalid-content-ranges.pcap #1: GET /file.bin body=0
invalid-content-ranges.pcap #2: GET /file.bin body=0
missing-zlib-header.pcap #0: GET /library/dap.js body=0 | GET /library/dap.js body=0
multipart-form-data.pcap #0: POST / body=767
multipart.pcap #0: POST /post body=350
no-uri.pcap #0: dropped Unparseable("HTTP/0.9 request (no version)") | not-http Other
no-version.pcap #0: dropped Unparseable("HTTP/0.9 request (no version)")
pipelined-requests.pcap #0: GET /style/enhanced.css body=0 | GET /script/urchin.js body=0 | GET /images/template/screen/ body=0 | GET /images/template/screen/ body=0 | GET /projects/calendar/image body=0
post.pcap #0: POST /post body=11
query-method-non-standard-port.pcap #0: QUERY /users body=57
query-method.pcap #0: QUERY /users body=57
smuggle-http-request.pcap #0: POST /first body=80 | POST /smuggle-this body=0
testmyids.pcap #0: GET / body=0
x-gzip.pcap #0: GET / body=0
zeek-image-post-1080-8000-x.pcap #0: POST / body=5816
"#;

#[test]
fn zeek_corpus_streams() {
    let dir = std::path::Path::new("/work/shared/corpus/zeek-http");
    if !dir.is_dir() {
        eprintln!("corpus not present, skipping");
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    files.sort();
    let limits = FramerLimits::default();
    let mut lines = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for (n, stream) in corpus::client_streams(&bytes).into_iter().enumerate() {
            let mut by_packet = RequestFramer::new(limits);
            let mut out = Vec::new();
            let mut whole: Vec<Vec<u8>> = vec![Vec::new()];
            let mut gaps = Vec::new();
            for piece in &stream {
                match piece {
                    corpus::Piece::Data(ts, data) => {
                        by_packet.push(*ts, data, &mut out);
                        assert!(by_packet.buffered() <= limits.buffer_bound());
                        whole.last_mut().unwrap().extend_from_slice(data);
                    }
                    corpus::Piece::Gap(missing) => {
                        by_packet.gap(0, *missing, &mut out);
                        gaps.push(*missing);
                        whole.push(Vec::new());
                    }
                }
            }
            by_packet.finish(0, &mut out);
            let mut at_once = RequestFramer::new(limits);
            let mut out2 = Vec::new();
            for (i, run) in whole.iter().enumerate() {
                if i > 0 {
                    at_once.gap(0, gaps[i - 1], &mut out2);
                }
                at_once.push(0, run, &mut out2);
            }
            at_once.finish(0, &mut out2);
            assert_eq!(summary(&out), summary(&out2), "{name} #{n}");
            lines.push(format!("{name} #{n}: {}", summary(&out).join(" | ")));
        }
    }
    let expected: Vec<&str> = ZEEK_CORPUS_EXPECTED
        .lines()
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines, expected);
}
