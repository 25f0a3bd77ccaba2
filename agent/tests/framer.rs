//! The HTTP request framer through its public API, as the pipeline drives it: segments of
//! one client->server stream with their timestamps, gaps, and the end of the stream.

use shadowtap::http::{FramerLimits, RequestFramer};
use shadowtap::metrics::{Accounting, Outcome};
use shadowtap::request::{DropReason, NotHttpKind, Protocol, Request, RequestEvent};

fn run(segments: &[(u64, &[u8])]) -> Vec<RequestEvent> {
    let mut framer = RequestFramer::new(FramerLimits::default());
    let mut out = Vec::new();
    for (ts, bytes) in segments {
        framer.push(*ts, bytes, &mut out);
    }
    framer.finish(u64::MAX, &mut out);
    out
}

fn requests(events: &[RequestEvent]) -> Vec<&Request> {
    events
        .iter()
        .filter_map(|e| match e {
            RequestEvent::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn targets(events: &[RequestEvent]) -> Vec<String> {
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
                RequestEvent::Dropped { reason, method, .. } => {
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
        b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nPOST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n",
        &mut out,
    );
    framer.push(2, &[b'z'; 100], &mut out);
    framer.push(
        3,
        b"POST /cut HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n12345",
        &mut out,
    );
    framer.gap(4, 3, &mut out);
    framer.push(5, b"89GET /ok2 HTTP/1.1\r\nHost: h\r\n\r\nPOST /bad HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\nGET /closing HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n", &mut out);
    // A second connection whose start was not seen: its requests are only counted.
    let mut late = RequestFramer::new(FramerLimits::default());
    late.distrust(6, &mut out);
    late.push(7, b"GET /late HTTP/1.1\r\nHost: h\r\n\r\n", &mut out);
    late.finish(8, &mut out);
    framer.finish(6, &mut out);

    let accounting = Accounting::new(Vec::new());
    for event in &out {
        match event {
            RequestEvent::Request(_) => {
                accounting.seen(Protocol::Http1);
                accounting.record_all(Protocol::Http1, Outcome::NotSampled);
            }
            RequestEvent::Dropped { reason, .. } => {
                accounting.seen(Protocol::Http1);
                accounting.record_all(Protocol::Http1, reason.outcome());
            }
            RequestEvent::NotHttp { .. } => {}
        }
    }
    let counters = accounting.target(0);
    assert_eq!(accounting.requests_seen(), 6);
    assert_eq!(counters.get(Outcome::NotSampled), 2);
    assert_eq!(counters.get(Outcome::Untrusted), 1);
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
        vec![RequestEvent::NotHttp {
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
                RequestEvent::Dropped {
                    reason: DropReason::TooLarge | DropReason::Unparseable(_),
                    ..
                }
            )),
            "{out:?}"
        );
    }
}

/// SPEC.md: never a copy of bytes after a connection's framing state was lost. A
/// capture that starts mid-connection may start inside a body, and a body can hold
/// anything that looks like a request.
#[test]
fn capture_starting_mid_connection_copies_nothing() {
    let mut framer = RequestFramer::new(FramerLimits::default());
    let mut out = Vec::new();
    framer.distrust(1, &mut out);
    framer.push(
        1,
        b"rest of an upload\r\nDELETE /users/1 HTTP/1.1\r\n",
        &mut out,
    );
    framer.push(
        2,
        b"Host: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n",
        &mut out,
    );
    framer.finish(3, &mut out);
    assert!(targets(&out).is_empty(), "{out:?}");
    assert_eq!(
        out,
        vec![
            RequestEvent::NotHttp {
                kind: NotHttpKind::Untrusted,
                bytes: 19
            },
            RequestEvent::Dropped {
                ts_nanos: 1,
                reason: DropReason::Untrusted,
                method: Some("DELETE".into())
            },
            RequestEvent::Dropped {
                ts_nanos: 2,
                reason: DropReason::Untrusted,
                method: Some("GET".into())
            },
        ]
    );
}

#[test]
fn a_head_near_the_limit_fed_byte_by_byte() {
    // Each byte is scanned once: 60 KiB of one-byte pushes stays cheap.
    let cookie = "c".repeat(60 * 1024);
    let head = format!("GET /big HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n\r\n");
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
