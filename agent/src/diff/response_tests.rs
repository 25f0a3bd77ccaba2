//! Tests of the response framer: table cases, then properties (any split of the bytes
//! gives the same events; pipelined responses pair with their requests).

use super::*;
use proptest::prelude::*;

fn keep(id: u64) -> Expected {
    Expected {
        keep: true,
        id,
        ..Expected::default()
    }
}

fn run(exps: &[Expected], wire: &[u8], finish: bool) -> Vec<ResponseEvent> {
    let mut f = ResponseFramer::new(ResponseLimits::default());
    let mut out = Vec::new();
    for &e in exps {
        f.expect(e, &mut out);
    }
    f.push(7, wire, &mut out);
    if finish {
        f.finish(9, &mut out);
    }
    out
}

fn summary(ev: &ResponseEvent) -> &ResponseSummary {
    match ev {
        ResponseEvent::Response { summary, .. } => summary,
        ResponseEvent::Missing { id } => panic!("request {id} is missing"),
    }
}

fn ids(events: &[ResponseEvent]) -> Vec<(u64, Option<u16>)> {
    events
        .iter()
        .map(|e| match e {
            ResponseEvent::Response { id, summary, .. } => (*id, Some(summary.status)),
            ResponseEvent::Missing { id } => (*id, None),
        })
        .collect()
}

#[test]
fn content_length_response_is_kept_whole() {
    let wire =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
    let out = run(&[keep(1)], wire, false);
    assert_eq!(out.len(), 1);
    let ResponseEvent::Response {
        id,
        first_byte_ts,
        summary: s,
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!((*id, *first_byte_ts, s.status), (1, 7, 200));
    assert_eq!(
        s.headers[0],
        ("content-type".into(), b"application/json".to_vec())
    );
    assert_eq!(s.body.as_deref(), Some(&b"{\"a\":1}"[..]));
    assert_eq!((s.body_len, s.body_hash), (7, Fnv64::of(b"{\"a\":1}")));
}

#[test]
fn head_204_304_and_interim_have_no_body_and_pair_in_order() {
    let head = Expected {
        head: true,
        ..keep(1)
    };
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\
        HTTP/1.1 204 No Content\r\n\r\n\
        HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let out = run(&[head, keep(2), keep(3), keep(4)], wire, false);
    assert_eq!(
        ids(&out),
        vec![
            (1, Some(200)),
            (2, Some(204)),
            (3, Some(304)),
            (4, Some(200))
        ]
    );
    assert_eq!(summary(&out[3]).body.as_deref(), Some(&b"ok"[..]));
}

#[test]
fn switching_protocols_ends_http_on_the_connection() {
    let wire = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
    let out = run(&[keep(1), keep(2)], wire, false);
    assert_eq!(ids(&out), vec![(1, Some(101)), (2, None)]);
    let mut f = ResponseFramer::new(ResponseLimits::default());
    let mut more = Vec::new();
    f.expect(keep(1), &mut more);
    f.push(0, wire, &mut more);
    f.expect(keep(3), &mut more);
    assert_eq!(ids(&more), vec![(1, Some(101)), (3, None)]);
}

#[test]
fn connect_2xx_has_no_body_and_ends_http() {
    let connect = Expected {
        connect: true,
        ..keep(1)
    };
    let out = run(
        &[connect, keep(2)],
        b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01",
        false,
    );
    assert_eq!(ids(&out), vec![(1, Some(200)), (2, None)]);
}

#[test]
fn chunked_body_with_trailers() {
    let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
        HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let out = run(&[keep(1), keep(2)], wire, false);
    assert_eq!(ids(&out), vec![(1, Some(200)), (2, Some(404))]);
    assert_eq!(summary(&out[0]).body.as_deref(), Some(&b"hello world"[..]));
    assert_eq!(summary(&out[0]).body_len, 11);
}

#[test]
fn body_without_length_runs_until_close() {
    let wire = b"HTTP/1.1 200 OK\r\n\r\nall of it";
    assert!(run(&[keep(1)], wire, false).is_empty());
    let out = run(&[keep(1), keep(2)], wire, true);
    assert_eq!(ids(&out), vec![(1, Some(200)), (2, None)]);
    assert_eq!(summary(&out[0]).body.as_deref(), Some(&b"all of it"[..]));
}

#[test]
fn unsampled_requests_are_framed_but_not_reported() {
    let skip = Expected::default();
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx";
    let out = run(&[skip, keep(2)], wire, false);
    assert_eq!(ids(&out), vec![(2, Some(201))]);
}

#[test]
fn ambiguous_framing_loses_the_connection() {
    for head in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: -1",
    ] {
        let wire = format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\nhello");
        let out = run(&[keep(1), keep(2)], wire.as_bytes(), false);
        assert_eq!(ids(&out), vec![(1, None), (2, None)], "{head}");
    }
    let out = run(
        &[keep(1)],
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    );
    assert_eq!(ids(&out), vec![(1, None)]);
    let out = run(
        &[keep(1)],
        b"garbage that is not a status line\r\n\r\n",
        false,
    );
    assert_eq!(ids(&out), vec![(1, None)]);
}

#[test]
fn gap_inside_a_known_length_keeps_the_framing() {
    let mut f = ResponseFramer::new(ResponseLimits::default());
    let mut out = Vec::new();
    f.expect(keep(1), &mut out);
    f.expect(keep(2), &mut out);
    f.push(
        0,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        &mut out,
    );
    f.gap(1, 4, &mut out);
    f.push(
        2,
        b"xyzHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    assert_eq!(ids(&out), vec![(1, None), (2, Some(200))]);
    // A gap in a head: everything after is unknown.
    let mut f = ResponseFramer::new(ResponseLimits::default());
    let mut out = Vec::new();
    f.expect(keep(1), &mut out);
    f.push(0, b"HTTP/1.1 20", &mut out);
    f.gap(1, 4, &mut out);
    f.expect(keep(2), &mut out);
    assert_eq!(ids(&out), vec![(1, None), (2, None)]);
}

#[test]
fn bytes_before_their_request_wait_for_expect() {
    let mut f = ResponseFramer::new(ResponseLimits::default());
    let mut out = Vec::new();
    f.push(
        5,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        &mut out,
    );
    assert!(out.is_empty());
    f.expect(keep(1), &mut out);
    assert_eq!(ids(&out), vec![(1, Some(200))]);
    // More responses than requests, never explained: nothing to report, no panic.
    f.push(6, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &mut out);
    f.finish(7, &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn truncated_response_is_missing_at_finish() {
    let out = run(
        &[keep(1)],
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        true,
    );
    assert_eq!(ids(&out), vec![(1, None)]);
}

#[test]
fn gzip_and_deflate_bodies_are_decoded_within_the_cap() {
    use std::io::Write;
    let plain = br#"{"user":{"name":"ada"}}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(plain).unwrap();
    let gz = gz.finish().unwrap();
    let mut d = BodyDigest::new(1024);
    d.push(&gz);
    let (len, hash, body) = d.finish(Some(b"gzip"));
    assert_eq!((len, hash), (gz.len() as u64, Fnv64::of(&gz)));
    assert_eq!(body.as_deref(), Some(&plain[..]));

    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(plain).unwrap();
    let z = z.finish().unwrap();
    let mut d = BodyDigest::new(1024);
    d.push(&z);
    assert_eq!(d.finish(Some(b"deflate")).2.as_deref(), Some(&plain[..]));

    // Decoded size over the cap: hash only.
    let big = vec![b'a'; 10_000];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&big).unwrap();
    let gz = gz.finish().unwrap();
    let mut d = BodyDigest::new(1024);
    d.push(&gz);
    assert_eq!(d.finish(Some(b"gzip")).2, None);
    // br (made by Python's brotli.compress): decoded; one that is not br, and unknown
    // codings: hash only.
    let br: [u8; 29] = [
        11, 12, 128, 123, 34, 117, 115, 101, 114, 34, 58, 123, 34, 110, 97, 109, 101, 34, 58, 34,
        97, 108, 105, 99, 101, 34, 125, 125, 3,
    ];
    let mut d = BodyDigest::new(1024);
    d.push(&br);
    assert_eq!(
        d.finish(Some(b"br")).2.as_deref(),
        Some(&br#"{"user":{"name":"alice"}}"#[..])
    );
    let mut d = BodyDigest::new(1024);
    d.push(b"xx");
    assert_eq!(d.finish(Some(b"br")).2, None);
    let mut d = BodyDigest::new(1024);
    d.push(b"xx");
    assert_eq!(d.finish(Some(b"zstd")).2, None);
}

#[test]
fn big_bodies_are_hashed_not_kept() {
    let limits = ResponseLimits {
        max_body: 4,
        ..ResponseLimits::default()
    };
    let mut f = ResponseFramer::new(limits);
    let mut out = Vec::new();
    f.expect(keep(1), &mut out);
    f.push(
        0,
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef",
        &mut out,
    );
    let s = summary(&out[0]);
    assert_eq!(
        (s.body_len, s.body_hash, s.body.clone()),
        (6, Fnv64::of(b"abcdef"), None)
    );
}

#[test]
fn too_many_pending_requests_give_up_the_connection() {
    let mut f = ResponseFramer::new(ResponseLimits::default());
    let mut out = Vec::new();
    for id in 0..=MAX_PENDING as u64 {
        f.expect(keep(id), &mut out);
    }
    assert_eq!(out.len(), MAX_PENDING + 1);
    assert_eq!(f.pending(), 0);
}

// ---------------------------------------------------------------------------------------
// Properties.

/// One request/response pair of a generated connection.
#[derive(Clone, Debug)]
enum Kind {
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
    Head,
    NoContent,
    NotModified,
    /// 100 Continue before a Content-Length answer.
    Interim(Vec<u8>),
}

fn kind() -> impl Strategy<Value = Kind> {
    let body = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        body.clone().prop_map(Kind::Length),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 0..4)
            .prop_map(Kind::Chunked),
        Just(Kind::Head),
        Just(Kind::NoContent),
        Just(Kind::NotModified),
        body.prop_map(Kind::Interim),
    ]
}

/// The wire bytes, the expectations and the (id, status, body) each kept one must give.
type Case = (Vec<u8>, Vec<Expected>, Vec<(u64, u16, Vec<u8>)>);

fn build(pairs: &[(Kind, bool)], upgrade_at_end: bool) -> Case {
    let mut wire = Vec::new();
    let mut exps = Vec::new();
    let mut want = Vec::new();
    for (i, (k, kept)) in pairs.iter().enumerate() {
        let id = i as u64;
        let mut exp = Expected {
            keep: *kept,
            id,
            ..Expected::default()
        };
        let (status, body) = match k {
            Kind::Length(b) => {
                wire.extend(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len()).bytes(),
                );
                wire.extend(b);
                (200, b.clone())
            }
            Kind::Chunked(chunks) => {
                wire.extend(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n");
                for c in chunks {
                    wire.extend(format!("{:x}\r\n", c.len()).bytes());
                    wire.extend(c);
                    wire.extend(b"\r\n");
                }
                wire.extend(b"0\r\n\r\n");
                (201, chunks.concat())
            }
            Kind::Head => {
                exp.head = true;
                wire.extend(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
                (200, Vec::new())
            }
            Kind::NoContent => {
                wire.extend(b"HTTP/1.1 204 No Content\r\n\r\n");
                (204, Vec::new())
            }
            Kind::NotModified => {
                wire.extend(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n");
                (304, Vec::new())
            }
            Kind::Interim(b) => {
                wire.extend(b"HTTP/1.1 100 Continue\r\n\r\n");
                wire.extend(
                    format!(
                        "HTTP/1.1 202 Accepted\r\nContent-Length: {}\r\n\r\n",
                        b.len()
                    )
                    .bytes(),
                );
                wire.extend(b);
                (202, b.clone())
            }
        };
        exps.push(exp);
        if *kept {
            want.push((id, status, body));
        }
    }
    if upgrade_at_end {
        let id = pairs.len() as u64;
        wire.extend(b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
        exps.push(keep(id));
        exps.push(keep(id + 1));
        want.push((id, 101, Vec::new()));
    }
    (wire, exps, want)
}

fn events_with_splits(exps: &[Expected], wire: &[u8], cuts: &[usize]) -> Vec<ResponseEvent> {
    let mut f = ResponseFramer::new(ResponseLimits::default());
    let mut out = Vec::new();
    for &e in exps {
        f.expect(e, &mut out);
    }
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.sort_unstable();
    let mut at = 0;
    for c in cuts.into_iter().chain([wire.len()]) {
        f.push(1, &wire[at..c], &mut out);
        at = c;
    }
    f.finish(2, &mut out);
    out
}

proptest! {
    #[test]
    fn same_events_however_the_bytes_are_split(
        pairs in proptest::collection::vec((kind(), any::<bool>()), 0..8),
        upgrade in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let (wire, exps, _) = build(&pairs, upgrade);
        let whole = events_with_splits(&exps, &wire, &[]);
        prop_assert_eq!(events_with_splits(&exps, &wire, &cuts), whole);
    }

    #[test]
    fn pipelined_responses_pair_with_their_requests(
        pairs in proptest::collection::vec((kind(), any::<bool>()), 0..8),
        upgrade in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let (wire, exps, want) = build(&pairs, upgrade);
        let out = events_with_splits(&exps, &wire, &cuts);
        let mut got = Vec::new();
        let mut missing = Vec::new();
        for e in &out {
            match e {
                ResponseEvent::Response { id, summary, .. } => {
                    got.push((*id, summary.status, summary.body.clone().unwrap_or_default()));
                    prop_assert_eq!(summary.body_len, summary.body.as_ref().map_or(0, |b| b.len() as u64));
                }
                ResponseEvent::Missing { id } => missing.push(*id),
            }
        }
        prop_assert_eq!(got, want);
        // After a 101 the next request cannot be answered in HTTP.
        let want_missing: Vec<u64> = if upgrade { vec![pairs.len() as u64 + 1] } else { vec![] };
        prop_assert_eq!(missing, want_missing);
    }
}
