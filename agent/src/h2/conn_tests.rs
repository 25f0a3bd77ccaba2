//! `ClientConn` and `StreamFramer` on whole client byte streams built here: prior
//! knowledge, h2c upgrade, joined late at every offset, gaps, resets and caps.

use proptest::prelude::*;

use super::conn::{ClientConn, ConnLimits, ConnStart};
use super::encoder::{Choice, Encoder, Indexing};
use super::frame::{flag, kind, PREFACE};
use crate::http::FramerLimits;
use crate::request::{DropReason, Header, NotHttpKind, Protocol, Request, RequestEvent};
use crate::stream_framer::StreamFramer;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// What grpcio does: literals with incremental indexing, indices once in the table.
const INDEXED: Choice = Choice {
    indexed: true,
    name_ref: true,
    prefer_dynamic: true,
    indexing: Indexing::Incremental,
    huffman: true,
};

/// Custom metadata: literal without indexing (as grpcio sends it).
const LITERAL: Choice = Choice {
    indexed: false,
    name_ref: false,
    prefer_dynamic: false,
    indexing: Indexing::Without,
    huffman: false,
};

struct Client {
    enc: Encoder,
    bytes: Vec<u8>,
}

impl Client {
    fn new() -> Self {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
        Self {
            enc: Encoder::new(4096),
            bytes,
        }
    }

    fn block(&mut self, fields: &[(&[u8], &[u8])], choice: Choice) -> Vec<u8> {
        let mut block = Vec::new();
        for (n, v) in fields {
            let c = if n.starts_with(b":") || *n == b"content-type" {
                INDEXED
            } else {
                choice
            };
            self.enc.field(n, v, c, &mut block);
        }
        block
    }

    fn headers(&mut self, stream: u32, fields: &[(&[u8], &[u8])], end_stream: bool) {
        let block = self.block(fields, LITERAL);
        let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
        self.bytes
            .extend(frame(kind::HEADERS, flags, stream, &block));
    }

    fn data(&mut self, stream: u32, data: &[u8], end_stream: bool) {
        let flags = if end_stream { flag::END_STREAM } else { 0 };
        self.bytes.extend(frame(kind::DATA, flags, stream, data));
    }

    fn call(&mut self, stream: u32, method: &str, message: &[u8]) {
        let path = format!("/helloworld.Greeter/{method}");
        self.headers(stream, &grpc_fields(&path), false);
        self.data(stream, message, true);
    }
}

fn grpc_fields(path: &str) -> Vec<(&'static [u8], &'static [u8])> {
    let path: &'static str = Box::leak(path.to_string().into_boxed_str());
    vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", b"grpc-hello.example.cn:8000"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"x-user", b"alice"),
    ]
}

fn feed(conn: &mut ClientConn, bytes: &[u8], step: usize) -> Vec<RequestEvent> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(step.max(1)) {
        conn.push(1, chunk, &mut out);
    }
    conn.finish(&mut out);
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

fn drops(events: &[RequestEvent]) -> Vec<DropReason> {
    events
        .iter()
        .filter_map(|e| match e {
            RequestEvent::Dropped { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn preface_conn() -> ClientConn {
    ClientConn::from_preface(ConnLimits::default(), ConnStart::Preface)
}

#[test]
fn multiplexed_calls_come_out_whole_in_the_order_they_end() {
    let mut c = Client::new();
    c.headers(1, &grpc_fields("/helloworld.Greeter/SayHello"), false);
    c.headers(3, &grpc_fields("/helloworld.Greeter/SayHelloAgain"), false);
    c.data(3, b"\0\0\0\0\x03abc", false);
    c.data(1, b"\0\0\0\0\x01x", true);
    c.data(3, b"def", false);
    let trailers = c.block(&[(b"x-checksum", b"42")], LITERAL);
    c.bytes.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &trailers,
    ));
    for step in [1, 7, 100, usize::MAX] {
        let events = feed(&mut preface_conn(), &c.bytes, step);
        let reqs = requests(&events);
        assert_eq!(reqs.len(), 2, "step {step}: {events:?}");
        assert_eq!(reqs[0].stream_id, 1);
        assert_eq!(reqs[0].target, b"/helloworld.Greeter/SayHello");
        assert_eq!(reqs[0].body, b"\0\0\0\0\x01x");
        assert_eq!(reqs[1].stream_id, 3);
        assert_eq!(reqs[1].body, b"\0\0\0\0\x03abcdef");
        assert_eq!(
            reqs[1].trailers,
            vec![Header {
                name: "x-checksum".into(),
                value: b"42".to_vec()
            }]
        );
        assert_eq!(reqs[1].protocol, Protocol::H2);
        assert_eq!(reqs[1].header("x-user"), Some(&b"alice"[..]));
        assert!(reqs[1].is_grpc());
        assert!(drops(&events).is_empty());
    }
}

#[test]
fn a_stream_reset_by_the_client_is_not_copied() {
    let mut c = Client::new();
    c.headers(1, &grpc_fields("/a.B/C"), false);
    c.data(1, b"partial", false);
    c.bytes
        .extend(frame(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    c.call(3, "SayHello", b"ok");
    let events = feed(&mut preface_conn(), &c.bytes, usize::MAX);
    assert_eq!(drops(&events), vec![DropReason::Reset]);
    assert_eq!(requests(&events).len(), 1);
}

#[test]
fn open_streams_at_the_end_are_incomplete_and_bodies_over_the_cap_too_large() {
    let mut c = Client::new();
    c.headers(1, &grpc_fields("/a.B/C"), false);
    c.data(1, &[7; 100], false);
    c.headers(3, &grpc_fields("/a.B/D"), false);
    c.data(3, &[7; 10], false);
    let limits = ConnLimits {
        max_body: 50,
        ..ConnLimits::default()
    };
    let events = feed(
        &mut ClientConn::from_preface(limits, ConnStart::Preface),
        &c.bytes,
        9,
    );
    assert_eq!(
        drops(&events),
        vec![DropReason::TooLarge, DropReason::Incomplete]
    );
}

#[test]
fn content_length_that_disagrees_with_the_data_is_unparseable() {
    let mut c = Client::new();
    let mut fields = grpc_fields("/a.B/C");
    fields.push((b"content-length", b"5"));
    c.headers(1, &fields, false);
    c.data(1, b"abc", true);
    let events = feed(&mut preface_conn(), &c.bytes, usize::MAX);
    assert_eq!(
        drops(&events),
        vec![DropReason::Unparseable(
            "content-length differs from the DATA sent"
        )]
    );
}

#[test]
fn a_gap_inside_data_loses_only_its_stream() {
    let mut c = Client::new();
    c.headers(1, &grpc_fields("/a.B/C"), false);
    c.headers(3, &grpc_fields("/a.B/D"), false);
    let before = c.bytes.len();
    c.data(1, &[1; 40], true);
    let after_data = c.bytes.len();
    c.data(3, b"fine", true);
    c.call(5, "E", b"later");
    let mut conn = preface_conn();
    let mut out = Vec::new();
    // The frame header and 10 bytes of data, then 20 lost, then the rest.
    conn.push(1, &c.bytes[..before + 19], &mut out);
    conn.gap(2, 20, &mut out);
    conn.push(3, &c.bytes[before + 39..after_data], &mut out);
    conn.push(4, &c.bytes[after_data..], &mut out);
    conn.finish(&mut out);
    assert_eq!(drops(&out), vec![DropReason::Incomplete]);
    let ids: Vec<u32> = requests(&out).iter().map(|r| r.stream_id).collect();
    assert_eq!(ids, vec![3, 5]);
}

#[test]
fn a_gap_in_the_frames_makes_every_later_stream_counted_never_copied() {
    let mut c = Client::new();
    c.call(1, "A", b"one");
    let cut = c.bytes.len();
    c.call(3, "B", b"two");
    let resume = c.bytes.len() - 3;
    for n in 5..40u32 {
        c.call(2 * n + 1, "C", &[n as u8; 30]);
    }
    let mut conn = preface_conn();
    let mut out = Vec::new();
    conn.push(1, &c.bytes[..cut + 4], &mut out);
    conn.gap(2, (resume - cut - 4) as u64, &mut out);
    conn.push(3, &c.bytes[resume..], &mut out);
    conn.finish(&mut out);
    let reqs = requests(&out);
    assert_eq!(reqs.len(), 1, "only the stream before the gap: {out:?}");
    let counted = drops(&out);
    assert!(
        counted.iter().all(|d| *d == DropReason::Untrusted),
        "{counted:?}"
    );
    // The resync needs a few frames; the streams after it are all counted.
    assert!(counted.len() >= 30, "{}", counted.len());
}

#[test]
fn a_connection_error_stops_parsing_and_counts_the_bytes() {
    let mut c = Client::new();
    c.headers(1, &grpc_fields("/a.B/C"), false);
    // A client never sends PUSH_PROMISE.
    c.bytes.extend(frame(
        kind::PUSH_PROMISE,
        flag::END_HEADERS,
        1,
        &[0, 0, 0, 2],
    ));
    c.call(3, "D", b"x");
    let events = feed(&mut preface_conn(), &c.bytes, 20);
    assert!(requests(&events).is_empty());
    assert_eq!(
        drops(&events),
        vec![DropReason::Unparseable("HTTP/2 connection error")]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        RequestEvent::NotHttp {
            kind: NotHttpKind::Untrusted,
            ..
        }
    )));
}

#[test]
fn stream_ids_that_go_back_are_a_connection_error() {
    let mut c = Client::new();
    c.call(5, "A", b"x");
    c.call(3, "B", b"y");
    c.call(7, "C", b"z");
    let events = feed(&mut preface_conn(), &c.bytes, usize::MAX);
    assert_eq!(requests(&events).len(), 1);
}

/// A long-lived connection as grpcio runs one: the first call inserts, later calls index.
fn grpc_connection(calls: u32) -> (Vec<u8>, Vec<(u32, usize)>) {
    let mut c = Client::new();
    let mut starts = Vec::new();
    for i in 0..calls {
        let id = 2 * i + 1;
        starts.push((id, c.bytes.len()));
        let method = if i % 3 == 0 {
            "SayHello"
        } else {
            "SayHelloAgain"
        };
        c.call(id, method, format!("message {i}").as_bytes());
    }
    (c.bytes, starts)
}

#[test]
fn joined_late_copies_only_streams_that_decode_and_never_guesses() {
    let (bytes, starts) = grpc_connection(12);
    let (whole, _) = {
        let events = feed(&mut preface_conn(), &bytes, usize::MAX);
        (
            requests(&events).into_iter().cloned().collect::<Vec<_>>(),
            (),
        )
    };
    assert_eq!(whole.len(), 12);
    for cut in 25..bytes.len() {
        let mut conn = ClientConn::joined_late(ConnLimits::default());
        let events = feed(&mut conn, &bytes[cut..], 13);
        for r in requests(&events) {
            let original = whole.iter().find(|w| w.stream_id == r.stream_id).unwrap();
            assert_eq!(
                r, original,
                "cut at {cut}: a copy that differs from what was sent"
            );
            let start = starts.iter().find(|(id, _)| *id == r.stream_id).unwrap().1;
            assert!(
                start >= cut,
                "cut at {cut}: stream {} began before the join",
                r.stream_id
            );
        }
        // Each stream is counted once at most, whatever became of it.
        let n = requests(&events).len() + drops(&events).len();
        assert!(n <= 12, "cut at {cut}: {n} events for 12 streams");
    }
}

#[test]
fn joined_late_grpc_calls_that_reuse_indexed_fields_are_undecodable() {
    let (bytes, starts) = grpc_connection(6);
    // Join right at the third call: its :path and :authority are indices into entries
    // the first call inserted.
    let cut = starts[2].1;
    let mut conn = ClientConn::joined_late(ConnLimits::default());
    let events = feed(&mut conn, &bytes[cut..], usize::MAX);
    assert!(requests(&events).is_empty(), "{events:?}");
    assert_eq!(drops(&events), vec![DropReason::Undecodable; 4]);
    assert_eq!(conn.streams_seen(), 4);
}

fn h1_limits() -> FramerLimits {
    FramerLimits::default()
}

fn stream_feed(framer: &mut StreamFramer, bytes: &[u8], step: usize) -> Vec<RequestEvent> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(step.max(1)) {
        framer.push(h1_limits(), 1, chunk, &mut out);
    }
    framer.finish(1, &mut out);
    out
}

#[test]
fn a_stream_starting_with_the_preface_is_framed_as_http2() {
    let (bytes, _) = grpc_connection(3);
    for step in [1, 5, 24, 25, 1000] {
        let mut f = StreamFramer::new(h1_limits());
        let events = stream_feed(&mut f, &bytes, step);
        assert_eq!(f.protocol(), Protocol::H2);
        assert_eq!(requests(&events).len(), 3, "step {step}: {events:?}");
    }
}

#[test]
fn blank_lines_before_the_preface_are_not_http2() {
    let (bytes, _) = grpc_connection(1);
    let mut f = StreamFramer::new(h1_limits());
    let events = stream_feed(&mut f, &[b"\r\n".as_slice(), &bytes].concat(), 1000);
    assert_eq!(f.protocol(), Protocol::Http1);
    assert!(requests(&events).is_empty());
}

fn upgrade_request(offer: &str) -> Vec<u8> {
    format!(
        "GET /index HTTP/1.1\r\nHost: web:8080\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: {offer}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn an_h2c_upgrade_followed_by_the_preface_switches_to_http2() {
    let mut c = Client::new();
    c.call(3, "SayHello", b"after the upgrade");
    let bytes = [upgrade_request("h2c"), c.bytes].concat();
    for step in [1, 10, 10_000] {
        let mut f = StreamFramer::new(h1_limits());
        let events = stream_feed(&mut f, &bytes, step);
        let reqs = requests(&events);
        assert_eq!(reqs.len(), 2, "step {step}: {events:?}");
        assert_eq!(reqs[0].protocol, Protocol::Http1);
        assert_eq!(reqs[0].target, b"/index");
        assert_eq!(reqs[1].protocol, Protocol::H2);
        assert_eq!(reqs[1].stream_id, 3);
        assert_eq!(f.h2().unwrap().start(), ConnStart::Upgrade);
    }
}

#[test]
fn after_an_upgrade_to_anything_else_nothing_is_copied() {
    let mut c = Client::new();
    c.call(3, "SayHello", b"x");
    let bytes = [upgrade_request("websocket"), c.bytes].concat();
    let mut f = StreamFramer::new(h1_limits());
    let events = stream_feed(&mut f, &bytes, 100);
    assert_eq!(requests(&events).len(), 1);
    assert_eq!(f.protocol(), Protocol::Http1);
}

#[test]
fn a_stream_whose_start_was_lost_is_probed_for_http2_frames() {
    let (bytes, starts) = grpc_connection(40);
    let mut f = StreamFramer::new(h1_limits());
    let mut out = Vec::new();
    f.distrust(h1_limits(), 0, &mut out);
    let cut = starts[20].1 + 11;
    for chunk in bytes[cut..].chunks(500) {
        f.push(h1_limits(), 1, chunk, &mut out);
    }
    f.finish(1, &mut out);
    assert_eq!(f.protocol(), Protocol::H2);
    assert_eq!(f.h2().unwrap().start(), ConnStart::JoinedLate);
    // grpcio-style indexing: nothing decodes, all is counted.
    assert!(requests(&out).is_empty());
    assert!(drops(&out).len() >= 15, "{out:?}");
    assert!(drops(&out)
        .iter()
        .all(|d| matches!(d, DropReason::Undecodable | DropReason::Untrusted)));
}

#[test]
fn an_http1_stream_whose_start_was_lost_stays_http1() {
    let text = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    let mut f = StreamFramer::new(h1_limits());
    let mut out = Vec::new();
    f.distrust(h1_limits(), 0, &mut out);
    f.push(h1_limits(), 1, &text[5..], &mut out);
    f.finish(1, &mut out);
    assert_eq!(f.protocol(), Protocol::Http1);
    assert!(requests(&out).is_empty());
    assert!(drops(&out).iter().all(|d| *d == DropReason::Untrusted));
}

proptest! {
    /// Any client byte stream, cut anywhere and fed in any pieces: the events do not
    /// depend on the pieces, and a joined-late framer copies only requests that were sent.
    #[test]
    fn joined_late_at_any_offset_in_any_pieces(calls in 1u32..10, cut_frac in 0.0f64..1.0, step in 1usize..300) {
        let (bytes, _) = grpc_connection(calls);
        let whole: Vec<Request> = requests(&feed(&mut preface_conn(), &bytes, usize::MAX)).into_iter().cloned().collect();
        let cut = ((bytes.len() as f64) * cut_frac) as usize;
        let one = feed(&mut ClientConn::joined_late(ConnLimits::default()), &bytes[cut..], usize::MAX);
        let pieces = feed(&mut ClientConn::joined_late(ConnLimits::default()), &bytes[cut..], step);
        prop_assert_eq!(requests(&one), requests(&pieces));
        prop_assert_eq!(drops(&one), drops(&pieces));
        for r in requests(&pieces) {
            prop_assert!(whole.contains(r));
        }
    }

    /// Random bytes never panic and never give a request.
    #[test]
    fn noise_gives_no_request(noise in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let events = feed(&mut ClientConn::joined_late(ConnLimits::default()), &noise, 17);
        prop_assert!(requests(&events).is_empty());
        let mut with_preface = PREFACE.to_vec();
        with_preface.extend(&noise);
        let events = feed(&mut preface_conn(), &with_preface, 17);
        // A request needs a decodable header block with every pseudo-field: possible in
        // principle, but not from random bytes in practice.
        prop_assert!(requests(&events).is_empty());
    }
}
