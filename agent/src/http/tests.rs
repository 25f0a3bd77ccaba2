//! Table-driven framer tests: every case is also fed split at every byte offset and byte
//! by byte, and must give the same events; plus property tests on random valid requests.

use super::*;
use crate::request::{DropReason, Header, NotCopied, NotHttpKind, Request, RequestEvent};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Data(Vec<u8>),
    Gap(u64),
    /// Reassembly's `distrust`: start not seen, or conflicting retransmissions.
    Distrust,
}

fn d(bytes: &[u8]) -> Op {
    Op::Data(bytes.to_vec())
}

const TS: u64 = 7;

/// How a test cuts the `Data` op at an index into pushes.
type Cutter<'a> = &'a dyn Fn(usize, &[u8]) -> Vec<Vec<u8>>;

/// Runs ops, each `Data` cut into pieces by `cut`, then `finish`.
fn run_with(limits: FramerLimits, ops: &[Op], cut: Cutter) -> Vec<RequestEvent> {
    let mut framer = RequestFramer::new(limits);
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Data(bytes) => {
                for piece in cut(i, bytes) {
                    framer.push(TS, &piece, &mut out);
                    assert!(
                        framer.buffered() <= limits.buffer_bound(),
                        "buffered {} over bound",
                        framer.buffered()
                    );
                }
            }
            Op::Gap(n) => framer.gap(TS, *n, &mut out),
            Op::Distrust => framer.distrust(TS, &mut out),
        }
    }
    framer.finish(TS, &mut out);
    assert!(framer.is_idle());
    out
}

fn whole(_: usize, b: &[u8]) -> Vec<Vec<u8>> {
    vec![b.to_vec()]
}

/// The events for `ops`, after checking that every way of splitting them agrees.
fn events(limits: FramerLimits, ops: &[Op]) -> Vec<RequestEvent> {
    let reference = run_with(limits, ops, &whole);
    let bytewise = run_with(limits, ops, &|_, b| {
        b.chunks(1).map(<[u8]>::to_vec).collect()
    });
    assert_eq!(bytewise, reference, "byte by byte differs");
    for (which, op) in ops.iter().enumerate() {
        let Op::Data(bytes) = op else { continue };
        for at in 1..bytes.len() {
            let split = run_with(limits, ops, &|i, b| {
                if i == which {
                    vec![b[..at].to_vec(), b[at..].to_vec()]
                } else {
                    vec![b.to_vec()]
                }
            });
            assert_eq!(split, reference, "split of op {which} at {at} differs");
        }
    }
    reference
}

/// A request with the given headers; body is plain unless `chunked`.
fn req(
    method: &str,
    target: &str,
    minor: u8,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RequestEvent {
    RequestEvent::Request(Request {
        ts_nanos: TS,
        method: method.into(),
        target: target.as_bytes().to_vec(),
        version_minor: minor,
        headers: headers
            .iter()
            .map(|(n, v)| Header {
                name: (*n).into(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        body: body.to_vec(),
        chunked: false,
        trailers: Vec::new(),
        ..Request::default()
    })
}

fn chunked(event: RequestEvent, trailers: &[(&str, &str)]) -> RequestEvent {
    let RequestEvent::Request(mut r) = event else {
        panic!("not a request")
    };
    r.chunked = true;
    r.trailers = trailers
        .iter()
        .map(|(n, v)| Header {
            name: (*n).into(),
            value: v.as_bytes().to_vec(),
        })
        .collect();
    RequestEvent::Request(r)
}

fn dropped(reason: DropReason, method: Option<&str>) -> RequestEvent {
    RequestEvent::Dropped {
        ts_nanos: TS,
        reason,
        method: method.map(str::to_owned),
    }
}

fn unparseable(why: &'static str, method: &str) -> RequestEvent {
    dropped(DropReason::Unparseable(why), Some(method))
}

fn untrusted(method: &str) -> RequestEvent {
    dropped(DropReason::Untrusted, Some(method))
}

fn not_http(kind: NotHttpKind, bytes: usize) -> RequestEvent {
    RequestEvent::NotHttp {
        kind,
        bytes: bytes as u64,
    }
}

const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: target\r\n\r\n";

fn smuggled_after(head: &[u8]) -> Vec<u8> {
    [head, SMUGGLED].concat()
}

struct Case {
    name: &'static str,
    limits: FramerLimits,
    ops: Vec<Op>,
    want: Vec<RequestEvent>,
}

fn case(name: &'static str, ops: Vec<Op>, want: Vec<RequestEvent>) -> Case {
    Case {
        name,
        limits: FramerLimits::default(),
        ops,
        want,
    }
}

fn small(max_head: usize, max_headers: usize, max_body: usize) -> FramerLimits {
    FramerLimits {
        max_head,
        max_headers,
        max_body,
    }
}

fn cases() -> Vec<Case> {
    let h = |host: &'static str| ("Host", host);
    let post_body = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    let tls_hello: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5];
    // Variant 08 of the zeek 261 set: leading zeros are valid digits, the body is 50 X.
    let leading_zeros = [
        &b"POST / HTTP/1.1\r\nHost: target\r\nContent-Length: 00000000000000000000000000000050\r\n\r\n"[..],
        &[b'X'; 50],
        b"GET /smuggled-leading-zeros HTTP/1.1\r\nHost: target\r\n\r\n",
    ]
    .concat();
    // smuggle-http-request.pcap: the 80 body bytes hold a MIME part with its own
    // "Transfer-Encoding: chunked" line (and a NUL); by Content-Length the second POST
    // starts right after them, and the server answered both.
    let smuggle_body = [
        &b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x01\xff\x00\x00\xff"[..],
        b"MIME-Version: 1.0\r\nTransfer-Encoding: chunked\r\n\x00\r\n",
        b"B0001!!!\nBoom?\n",
    ]
    .concat();
    let smuggle_first = b"POST /first HTTP/1.1\r\nHost: localhost\r\nContent-Type: message/rfc822\r\nContent-Length: 80\r\nContent-Encoding: gzip\r\n\r\n";
    let smuggle_second = b"POST /smuggle-this HTTP/1.1\r\nHost: localhost\r\nContent-Type: message/rfc822\r\nContent-Length: 0\r\nContent-Encoding: gzip\r\n\r\n";
    let smuggle_headers = |cl: &'static str| {
        vec![
            ("Host", "localhost"),
            ("Content-Type", "message/rfc822"),
            ("Content-Length", cl),
            ("Content-Encoding", "gzip"),
        ]
    };
    let big_head = {
        let mut v = b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n".to_vec();
        for i in 0..8 {
            v.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(20)).as_bytes());
        }
        v.extend_from_slice(b"\r\nabc");
        v
    };
    let websocket =
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

    vec![
        case(
            "get without body",
            vec![d(b"GET /a?b=c HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n")],
            vec![req("GET", "/a?b=c", 1, &[h("example"), ("Accept", "*/*")], b"")],
        ),
        case(
            "content-length body",
            vec![d(post_body)],
            vec![req("POST", "/p", 1, &[h("a"), ("Content-Length", "5")], b"hello")],
        ),
        case(
            "pipelined keep-alive requests in one push",
            vec![d(&[&b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"[..], post_body, b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"].concat())],
            vec![
                req("GET", "/1", 1, &[h("a")], b""),
                req("POST", "/p", 1, &[h("a"), ("Content-Length", "5")], b"hello"),
                req("GET", "/3", 1, &[h("a")], b""),
            ],
        ),
        case(
            "empty lines between requests are skipped",
            vec![d(b"\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![req("GET", "/1", 1, &[h("a")], b""), req("GET", "/2", 1, &[h("a")], b"")],
        ),
        case(
            "chunked with extensions and trailers",
            vec![d(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=val\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Sum: 1\r\nX-Other: two\r\n\r\nGET /n HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![
                chunked(
                    req("POST", "/c", 1, &[h("a"), ("Transfer-Encoding", "chunked")], b"hello world"),
                    &[("X-Sum", "1"), ("X-Other", "two")],
                ),
                req("GET", "/n", 1, &[h("a")], b""),
            ],
        ),
        case(
            "chunked without trailers, size with leading zeros and upper-case hex",
            vec![d(b"PUT /c HTTP/1.1\r\nhost: a\r\ntransfer-encoding: Chunked\r\n\r\n00A\r\n0123456789\r\n0\r\n\r\n")],
            vec![chunked(
                req("PUT", "/c", 1, &[("host", "a"), ("transfer-encoding", "Chunked")], b"0123456789"),
                &[],
            )],
        ),
        case(
            "expect 100-continue: the body still follows",
            vec![d(b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabcGET /n HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![
                req("POST", "/e", 1, &[h("a"), ("Expect", "100-continue"), ("Content-Length", "3")], b"abc"),
                req("GET", "/n", 1, &[h("a")], b""),
            ],
        ),
        case(
            "zeek 261-07: expect 100-continue with CL 0, then a real request",
            vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nHost: target\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"))],
            vec![
                req("POST", "/", 1, &[h("target"), ("Expect", "100-continue"), ("Content-Length", "0")], b""),
                req("GET", "/smuggled", 1, &[h("target")], b""),
            ],
        ),
        case(
            "http/1.0 keep-alive with and without body",
            vec![d(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\nPOST /old HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")],
            vec![
                req("GET", "/old", 0, &[("Connection", "keep-alive")], b""),
                req("POST", "/old", 0, &[("Content-Length", "2")], b"hi"),
            ],
        ),
        case(
            "http/1.0 without keep-alive: the server closes, what follows is only counted",
            vec![d(b"GET /old HTTP/1.0\r\n\r\nPOST /old HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")],
            vec![req("GET", "/old", 0, &[], b""), untrusted("POST")],
        ),
        case(
            "connection: close ends the connection for the server",
            vec![d(b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, close\r\n\r\nDELETE /2 HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![
                req("GET", "/1", 1, &[h("a"), ("Connection", "Keep-Alive, close")], b""),
                untrusted("DELETE"),
            ],
        ),
        case(
            "http/1.1 without Host: 400 and close",
            vec![d(&smuggled_after(b"GET /a HTTP/1.1\r\nX: 1\r\n\r\n"))],
            vec![
                unparseable("HTTP/1.1 request without Host", "GET"),
                not_http(NotHttpKind::Other, SMUGGLED.len()),
            ],
        ),
        case(
            "two Host headers: 400 and close",
            vec![d(&smuggled_after(b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"))],
            vec![
                unparseable("more than one Host header", "GET"),
                not_http(NotHttpKind::Other, SMUGGLED.len()),
            ],
        ),
        case(
            "absolute-form target whose authority disagrees with Host",
            vec![d(&smuggled_after(b"GET http://prod.internal/admin HTTP/1.1\r\nHost: a\r\n\r\n"))],
            vec![
                unparseable("Host disagrees with the absolute-form target", "GET"),
                not_http(NotHttpKind::Other, SMUGGLED.len()),
            ],
        ),
        case(
            "absolute-form target that agrees with Host is framed as sent",
            vec![d(b"GET http://A:80/x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![req("GET", "http://A:80/x", 1, &[h("a")], b""), req("GET", "/y", 1, &[h("a")], b"")],
        ),
        case(
            "OPTIONS * is served but not copied; the connection goes on",
            vec![d(b"OPTIONS * HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /y HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![
                dropped(DropReason::NotCopied(NotCopied::OptionsAsterisk), Some("OPTIONS")),
                req("GET", "/y", 1, &[h("a")], b""),
            ],
        ),
        case(
            "start not seen: a request line inside an upload body is never a request",
            vec![Op::Distrust, d(b"ody text\r\nDELETE /users/1 HTTP/1.1\r\nHost: a\r\n\r\nmore")],
            vec![not_http(NotHttpKind::Untrusted, 10), untrusted("DELETE"), not_http(NotHttpKind::Untrusted, 4)],
        ),
        case(
            "start not seen, even between requests: only counted",
            vec![Op::Distrust, d(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![untrusted("GET")],
        ),
        case(
            "distrusted mid-body: the request in progress and all after are only counted",
            vec![
                d(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\nab"),
                Op::Distrust,
                d(b"cd\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"),
            ],
            vec![
                req("GET", "/1", 1, &[h("a")], b""),
                untrusted("POST"),
                not_http(NotHttpKind::Untrusted, 4),
                untrusted("GET"),
            ],
        ),
        case(
            "distrusted after a stream already skipped: nothing changes",
            vec![d(b"\x16\x03\x01ab"), Op::Distrust, d(b"GET / HTTP/1.1\r\n\r\n")],
            vec![not_http(NotHttpKind::Tls, 5 + 18)],
        ),
        case(
            "bare LF line ends in a head",
            vec![d(b"GET / HTTP/1.1\nHost: zeek.org\n\n")],
            vec![req("GET", "/", 1, &[h("zeek.org")], b"")],
        ),
        case(
            "lower-case method at stream start is a token",
            vec![d(b"get / HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![req("get", "/", 1, &[h("a")], b"")],
        ),
        case(
            "identical content-length repeats are one value",
            vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nabPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nc")],
            vec![
                req("POST", "/", 1, &[h("a"), ("Content-Length", "2, 2")], b"ab"),
                req("POST", "/", 1, &[h("a"), ("Content-Length", "1"), ("Content-Length", "1")], b"c"),
            ],
        ),
        case(
            "zeek 261-08: leading zeros are valid",
            vec![d(&leading_zeros)],
            vec![
                req("POST", "/", 1, &[h("target"), ("Content-Length", "00000000000000000000000000000050")], &[b'X'; 50]),
                req("GET", "/smuggled-leading-zeros", 1, &[h("target")], b""),
            ],
        ),
        case(
            "smuggle-http-request.pcap: a TE line inside a body is just body",
            vec![d(&[&smuggle_first[..], &smuggle_body, smuggle_second].concat())],
            vec![
                req("POST", "/first", 1, &smuggle_headers("80"), &smuggle_body),
                req("POST", "/smuggle-this", 1, &smuggle_headers("0"), b""),
            ],
        ),
        case(
            "conflicting content-length values: nothing after is trusted",
            vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello"))],
            vec![
                unparseable("conflicting Content-Length values", "POST"),
                not_http(NotHttpKind::Other, 5 + SMUGGLED.len()),
            ],
        ),
        case(
            "two differing content-length fields",
            vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\n"))],
            vec![
                unparseable("conflicting Content-Length values", "POST"),
                not_http(NotHttpKind::Other, SMUGGLED.len()),
            ],
        ),
        case(
            "zeek 261-04: TE and CL together",
            vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nHost: target\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\n"))],
            vec![
                unparseable("both Content-Length and Transfer-Encoding", "POST"),
                not_http(NotHttpKind::Other, 5 + SMUGGLED.len()),
            ],
        ),
        case(
            "zeek 261-03: negative content-length",
            vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nHost: target\r\nContent-Length: -1\r\n\r\n"))],
            vec![
                unparseable("invalid Content-Length", "POST"),
                not_http(NotHttpKind::Other, SMUGGLED.len()),
            ],
        ),
        case(
            "content-length overflowing u64",
            vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n"))],
            vec![
                unparseable("invalid Content-Length", "POST"),
                not_http(NotHttpKind::Other, SMUGGLED.len()),
            ],
        ),
        case(
            "empty content-length",
            vec![d(b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n")],
            vec![unparseable("invalid Content-Length", "POST")],
        ),
        case(
            "zeek 261-02: CL u64::MAX is too large and its body hides the next request",
            vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nHost: target\r\nContent-Length: 18446744073709551615\r\n\r\n"))],
            vec![dropped(DropReason::TooLarge, Some("POST"))],
        ),
        case(
            "zeek 261-10: TE chunked, identity",
            vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nHost: target\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"))],
            vec![
                unparseable("Transfer-Encoding other than exactly chunked", "POST"),
                not_http(NotHttpKind::Other, 5 + SMUGGLED.len()),
            ],
        ),
        case(
            "TE gzip, chunked is not forwarded",
            vec![d(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")],
            vec![
                unparseable("Transfer-Encoding other than exactly chunked", "POST"),
                not_http(NotHttpKind::Other, 5),
            ],
        ),
        case(
            "TE in HTTP/1.0",
            vec![d(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")],
            vec![
                unparseable("Transfer-Encoding in an HTTP/1.0 request", "POST"),
                not_http(NotHttpKind::Other, 5),
            ],
        ),
        case(
            "zeek 261-01: chunk size 2^64",
            vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nHost: target\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n\r\n"))],
            vec![
                unparseable("chunk size overflows", "POST"),
                not_http(NotHttpKind::Other, 19 + 2 + SMUGGLED.len()),
            ],
        ),
        case(
            "invalid chunk size",
            vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")],
            vec![unparseable("invalid chunk size", "POST"), not_http(NotHttpKind::Other, 4)],
        ),
        case(
            "chunk-size line ended by a bare LF",
            vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n")],
            vec![unparseable("chunk-size line without CRLF", "POST"), not_http(NotHttpKind::Other, 12)],
        ),
        case(
            "chunk data not followed by CRLF",
            vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n")],
            vec![unparseable("chunk data not followed by CRLF", "POST"), not_http(NotHttpKind::Other, 8)],
        ),
        case(
            "zeek 261-09: obs-fold in transfer-encoding",
            vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nHost: target\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"))],
            vec![
                unparseable("invalid header name (or obs-fold)", "POST"),
                not_http(NotHttpKind::Other, 5 + SMUGGLED.len()),
            ],
        ),
        case(
            "control byte in a header value",
            vec![d(b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n")],
            vec![unparseable("invalid header value", "GET")],
        ),
        case(
            "cruft after a request (http-11-request-then-cruft.pcap)",
            vec![d(b"GET / HTTP/1.1\nHost: zeek.org\n\n"), d(b"T / HTTP\n\n")],
            vec![
                req("GET", "/", 1, &[h("zeek.org")], b""),
                unparseable("invalid request line", "T"),
                not_http(NotHttpKind::Other, 10),
            ],
        ),
        case(
            "HTTP/0.9 simple request (http_09.pcap)",
            vec![d(b"GET /zeek.html\n")],
            vec![unparseable("HTTP/0.9 request (no version)", "GET")],
        ),
        case(
            "no version after a trusted request",
            vec![d(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x\r\n\r\n")],
            vec![
                req("GET", "/", 1, &[h("a")], b""),
                unparseable("HTTP/0.9 request (no version)", "GET"),
                not_http(NotHttpKind::Other, 2),
            ],
        ),
        case(
            "HTTP/2 prior knowledge",
            vec![d(&[sync::H2_PREFACE, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"].concat())],
            vec![not_http(NotHttpKind::Http2Preface, 24 + 9)],
        ),
        case(
            "TLS",
            vec![d(tls_hello)],
            vec![not_http(NotHttpKind::Tls, tls_hello.len())],
        ),
        case(
            "server direction",
            vec![d(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n")],
            vec![not_http(NotHttpKind::Response, 56)],
        ),
        case(
            "other protocol",
            vec![d(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02")],
            vec![not_http(NotHttpKind::Other, 24)],
        ),
        case(
            "a stream whose start was seen and is no request: nothing after is searched",
            vec![d(b"ld\" }\r\nmore body\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![not_http(NotHttpKind::Other, 18 + 31)],
        ),
        case(
            "capture started mid-body: later requests are only counted",
            vec![Op::Distrust, d(b"ld\" }\r\nmore body\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![not_http(NotHttpKind::Untrusted, 18), untrusted("GET")],
        ),
        case(
            "CONNECT then a TLS tunnel",
            vec![d(&[&b"CONNECT secure.example:443 HTTP/1.1\r\nHost: secure.example:443\r\n\r\n"[..], tls_hello].concat())],
            vec![
                dropped(DropReason::NotCopied(NotCopied::Connect), Some("CONNECT")),
                not_http(NotHttpKind::Tls, tls_hello.len()),
            ],
        ),
        case(
            "CONNECT then plain bytes are never parsed",
            vec![d(&[&b"CONNECT h:80 HTTP/1.1\r\nHost: h:80\r\n\r\n"[..], b"GET / HTTP/1.1\r\n\r\n"].concat())],
            vec![
                dropped(DropReason::NotCopied(NotCopied::Connect), Some("CONNECT")),
                not_http(NotHttpKind::Other, 18),
            ],
        ),
        case(
            "upgrade to websocket: what follows is another protocol, only counted",
            vec![d(&[&websocket[..], b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58\r\nGET /after HTTP/1.1\r\n\r\n"].concat())],
            vec![
                req("GET", "/ws", 1, &[h("a"), ("Upgrade", "websocket"), ("Connection", "Upgrade")], b""),
                not_http(NotHttpKind::Untrusted, 13),
                untrusted("GET"),
            ],
        ),
        case(
            "upgrade to h2c",
            vec![d(&[&b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n"[..], sync::H2_PREFACE].concat())],
            vec![
                req("GET", "/", 1, &[h("a"), ("Upgrade", "h2c")], b""),
                not_http(NotHttpKind::Http2Preface, 24),
            ],
        ),
        case(
            "stream of a few bytes that never became a request line",
            vec![d(b"hello")],
            vec![not_http(NotHttpKind::Other, 5)],
        ),
        case(
            "stream ends in a head",
            vec![d(b"GET / HTTP/1.1\r\nHost: a\r\n")],
            vec![dropped(DropReason::Incomplete, Some("GET"))],
        ),
        case(
            "stream ends in a body",
            vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")],
            vec![dropped(DropReason::Incomplete, Some("POST"))],
        ),
        case(
            "stream ends in chunk framing",
            vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n")],
            vec![dropped(DropReason::Incomplete, Some("POST"))],
        ),
        case(
            "gap inside a content-length body is skipped exactly",
            vec![
                d(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"),
                Op::Gap(4),
                d(b"hij"),
                d(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"),
            ],
            vec![dropped(DropReason::Incomplete, Some("POST")), req("GET", "/next", 1, &[h("a")], b"")],
        ),
        case(
            "gap inside chunk data is skipped exactly",
            vec![
                d(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nab"),
                Op::Gap(3),
                d(b"fgh\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"),
            ],
            vec![dropped(DropReason::Incomplete, Some("POST")), req("GET", "/next", 1, &[h("a")], b"")],
        ),
        case(
            "gap across chunk framing: the framing state is lost, later requests only counted",
            vec![
                d(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab"),
                Op::Gap(5),
                d(b"xyz\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"),
            ],
            vec![
                dropped(DropReason::Incomplete, Some("POST")),
                not_http(NotHttpKind::Untrusted, 10),
                untrusted("GET"),
            ],
        ),
        case(
            "gap inside a head: drop it, later requests only counted",
            vec![
                d(b"GET /lost HTTP/1.1\r\nHost: a\r\nX-Lo"),
                Op::Gap(10),
                d(b"ng: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"),
            ],
            vec![
                dropped(DropReason::Incomplete, Some("GET")),
                not_http(NotHttpKind::Untrusted, 9),
                untrusted("GET"),
            ],
        ),
        case(
            "gap at stream start",
            vec![Op::Gap(10), d(b"st HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![not_http(NotHttpKind::Untrusted, 15), untrusted("GET")],
        ),
        case(
            "gap after the first bytes of a stream",
            vec![d(b"GE"), Op::Gap(3), d(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")],
            vec![not_http(NotHttpKind::Untrusted, 2), untrusted("GET")],
        ),
        case(
            "gap in a stream already not HTTP",
            vec![d(b"\x16\x03\x01abc"), Op::Gap(3), d(b"GET /2 HTTP/1.1\r\n\r\n")],
            vec![not_http(NotHttpKind::Tls, 6 + 19)],
        ),
        case(
            "gap between requests: one request was lost",
            vec![
                d(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"),
                Op::Gap(30),
                d(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"),
            ],
            vec![
                req("GET", "/1", 1, &[h("a")], b""),
                dropped(DropReason::Incomplete, None),
                untrusted("GET"),
            ],
        ),
        case(
            "gap running past a body end",
            vec![
                d(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab"),
                Op::Gap(12),
                d(b"1.1\r\n\r\nGET /n HTTP/1.1\r\n\r\n"),
            ],
            vec![
                dropped(DropReason::Incomplete, Some("POST")),
                dropped(DropReason::Incomplete, None),
                not_http(NotHttpKind::Untrusted, 7),
                untrusted("GET"),
            ],
        ),
        case(
            "a request line in a body after a gap that parses badly is body text",
            vec![
                d(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"),
                Op::Gap(3),
                d(b"x\r\nGET /fake HTTP/1.1\r\nbad header\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
            ],
            vec![
                req("GET", "/1", 1, &[h("a")], b""),
                dropped(DropReason::Incomplete, None),
                not_http(NotHttpKind::Untrusted, 3 + 20 + 12 + 2),
                untrusted("GET"),
            ],
        ),
        Case {
            name: "head over max_head: too large, body skipped exactly",
            limits: small(64, 128, 1024),
            ops: vec![d(&[&big_head[..], b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"].concat())],
            want: vec![dropped(DropReason::TooLarge, Some("POST")), req("GET", "/next", 1, &[h("a")], b"")],
        },
        Case {
            name: "too many headers: too large, next request framed",
            limits: small(4096, 4, 1024),
            ops: vec![d(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")],
            want: vec![dropped(DropReason::TooLarge, Some("GET")), req("GET", "/next", 1, &[h("a")], b"")],
        },
        Case {
            name: "oversized head with chunked body",
            limits: small(48, 128, 1024),
            ops: vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")],
            want: vec![dropped(DropReason::TooLarge, Some("POST")), req("GET", "/next", 1, &[h("a")], b"")],
        },
        Case {
            name: "oversized head with Connection: close is not trusted after",
            limits: small(48, 128, 1024),
            ops: vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nConnection: close\r\nContent-Length: 1\r\n\r\nxGET /next HTTP/1.1\r\nHost: a\r\n\r\n")],
            want: vec![dropped(DropReason::TooLarge, Some("POST")), untrusted("GET")],
        },
        Case {
            name: "oversized head with two Hosts is not trusted after",
            limits: small(48, 128, 1024),
            ops: vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nHost: b\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")],
            want: vec![dropped(DropReason::TooLarge, Some("POST")), not_http(NotHttpKind::Other, 31)],
        },
        Case {
            name: "oversized head with ambiguous framing is not trusted after",
            limits: small(40, 128, 1024),
            ops: vec![d(&smuggled_after(b"POST / HTTP/1.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaa\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))],
            want: vec![dropped(DropReason::TooLarge, Some("POST")), not_http(NotHttpKind::Other, 5 + SMUGGLED.len())],
        },
        Case {
            name: "body over max_body: too large, skipped exactly",
            limits: small(4096, 128, 4),
            ops: vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789GET /next HTTP/1.1\r\nHost: a\r\n\r\n")],
            want: vec![dropped(DropReason::TooLarge, Some("POST")), req("GET", "/next", 1, &[h("a")], b"")],
        },
        Case {
            name: "chunked body over max_body: framing followed while discarding",
            limits: small(4096, 128, 4),
            ops: vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\nT: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")],
            want: vec![dropped(DropReason::TooLarge, Some("POST")), req("GET", "/next", 1, &[h("a")], b"")],
        },
        Case {
            name: "body at exactly max_body is kept",
            limits: small(4096, 128, 4),
            ops: vec![d(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")],
            want: vec![chunked(req("POST", "/", 1, &[h("a"), ("Transfer-Encoding", "chunked")], b"abcd"), &[])],
        },
    ]
}

#[test]
fn table() {
    let mut failed = Vec::new();
    for case in cases() {
        let got = std::panic::catch_unwind(|| events(case.limits, &case.ops));
        match got {
            Ok(got) if got == case.want => {}
            Ok(got) => failed.push(format!(
                "{}:\n   got {got:?}\n  want {:?}",
                case.name, case.want
            )),
            Err(_) => failed.push(format!("{}: panicked", case.name)),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn outcomes_of_drop_reasons() {
    use crate::metrics::Outcome;
    assert_eq!(DropReason::Incomplete.outcome(), Outcome::Incomplete);
    assert_eq!(DropReason::TooLarge.outcome(), Outcome::TooLarge);
    assert_eq!(DropReason::Unparseable("x").outcome(), Outcome::Unparseable);
}

#[test]
fn request_ts_is_the_push_that_carried_its_first_byte() {
    let mut framer = RequestFramer::new(FramerLimits::default());
    let mut out = Vec::new();
    framer.push(1, b"GET /a HTTP/1.1\r\nHost: a\r\n", &mut out);
    framer.push(2, b"\r\nGET /b HT", &mut out);
    framer.push(
        3,
        b"TP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\nPOST /d HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nx",
        &mut out,
    );
    framer.push(4, b"y", &mut out);
    framer.finish(5, &mut out);
    let ts: Vec<(Vec<u8>, u64)> = out
        .iter()
        .map(|e| match e {
            RequestEvent::Request(r) => (r.target.clone(), r.ts_nanos),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        ts,
        vec![
            (b"/a".to_vec(), 1),
            (b"/b".to_vec(), 2),
            (b"/c".to_vec(), 3),
            (b"/d".to_vec(), 3)
        ]
    );
}

#[test]
fn huge_content_length_allocates_nothing_big() {
    for cl in ["18446744073709551615", "9223372036854775808"] {
        let mut framer = RequestFramer::new(FramerLimits::default());
        let mut out = Vec::new();
        let head = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n");
        framer.push(1, head.as_bytes(), &mut out);
        for _ in 0..64 {
            framer.push(1, &[b'x'; 1024], &mut out);
            assert!(framer.buffered() < 1024, "{}", framer.buffered());
        }
        assert_eq!(
            out,
            vec![RequestEvent::Dropped {
                ts_nanos: 1,
                reason: DropReason::TooLarge,
                method: Some("POST".into())
            }]
        );
        assert!(!framer.is_idle());
    }
}

#[test]
fn memory_stays_bounded_while_a_body_under_the_limit_grows() {
    let limits = small(1024, 16, 10_000);
    let mut framer = RequestFramer::new(limits);
    let mut out = Vec::new();
    framer.push(
        1,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000\r\n\r\n",
        &mut out,
    );
    for _ in 0..100 {
        framer.push(1, &[b'x'; 100], &mut out);
        assert!(framer.buffered() <= limits.buffer_bound());
    }
    assert_eq!(framer.buffered(), 0);
    assert!(framer.is_idle());
    assert!(matches!(&out[..], [RequestEvent::Request(r)] if r.body.len() == 10_000));
}

#[test]
fn shedding_a_body_in_progress_drops_it_and_keeps_framing_exact() {
    let mut framer = RequestFramer::new(FramerLimits::default());
    let mut out = Vec::new();
    framer.push(
        TS,
        b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234",
        &mut out,
    );
    assert_eq!(framer.buffered(), 5);
    framer.shed(TS, &mut out);
    assert_eq!(framer.buffered(), 0);
    // The rest of the body is skipped by its length; the next request is whole.
    framer.push(TS, b"56789GET /next HTTP/1.1\r\nHost: x\r\n\r\n", &mut out);
    framer.finish(TS, &mut out);
    assert_eq!(
        out,
        vec![
            dropped(DropReason::TooLarge, Some("POST")),
            req("GET", "/next", 1, &[("Host", "x")], b""),
        ]
    );
}

#[test]
fn shedding_a_head_in_progress_drops_it_and_distrusts_the_rest() {
    let mut framer = RequestFramer::new(FramerLimits::default());
    let mut out = Vec::new();
    framer.push(
        TS,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /half HTTP/1.1\r\nX-Lo",
        &mut out,
    );
    assert!(framer.buffered() > 0);
    framer.shed(TS, &mut out);
    assert_eq!(framer.buffered(), 0);
    framer.push(
        TS,
        b"ng: yes\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        &mut out,
    );
    framer.finish(TS, &mut out);
    // Where the dropped head ended is not known: /b is only counted.
    assert_eq!(framer::request_targets(&out), [&b"/a"[..]]);
    assert!(
        out.contains(&dropped(DropReason::Incomplete, Some("GET"))),
        "{out:?}"
    );
    assert_eq!(out.last(), Some(&untrusted("GET")), "{out:?}");
}

#[test]
fn nothing_happens_after_finish() {
    let mut framer = RequestFramer::new(FramerLimits::default());
    let mut out = Vec::new();
    framer.finish(1, &mut out);
    framer.push(2, b"GET / HTTP/1.1\r\n\r\n", &mut out);
    framer.gap(3, 10, &mut out);
    framer.finish(4, &mut out);
    assert!(out.is_empty());
}

// ---- property tests ----

#[derive(Clone, Debug)]
enum BodyKind {
    None,
    Length(Vec<u8>),
    /// Chunks with their extensions, then trailers.
    Chunked(Vec<(Vec<u8>, String)>, Vec<(String, String)>),
}

#[derive(Clone, Debug)]
struct GenRequest {
    method: String,
    target: String,
    minor: u8,
    headers: Vec<(String, String)>,
    body: BodyKind,
}

fn header_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,12}".prop_filter(
        "framing and upgrade fields are set by the body",
        |n| {
            ![
                "content-length",
                "transfer-encoding",
                "upgrade",
                "host",
                "connection",
            ]
            .iter()
            .any(|f| n.eq_ignore_ascii_case(f))
        },
    )
}

fn header_value() -> impl Strategy<Value = String> {
    "([!-~]([ \t!-~]{0,20}[!-~])?)?"
}

fn gen_request() -> impl Strategy<Value = GenRequest> {
    let method = prop_oneof![
        prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND", "M-SEARCH",
        ])
        .prop_map(str::to_owned),
        // Any token is a method to the framer (CONNECT aside, which opens a tunnel).
        "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,10}"
            .prop_filter("CONNECT tunnels", |m| m != "CONNECT"),
    ];
    let target = prop_oneof![
        "/[A-Za-z0-9/._~%?=&;:@!$'()*+,-]{0,30}",
        "http://[a-z]{1,10}(:[0-9]{1,5})?/[a-z0-9]{0,10}",
    ];
    let headers = prop::collection::vec((header_name(), header_value()), 0..6);
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..40),
        prop::sample::select(vec!["", ";a", ";a=b", " ; n=\"q v\""]),
    );
    let trailer = (header_name(), header_value());
    let body = prop_oneof![
        Just(BodyKind::None),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(BodyKind::Length),
        (
            prop::collection::vec(chunk, 0..5),
            prop::collection::vec(trailer, 0..3)
        )
            .prop_map(|(c, t)| {
                BodyKind::Chunked(c.into_iter().map(|(b, e)| (b, e.to_string())).collect(), t)
            }),
    ];
    (method, target, 0u8..=1, headers, body).prop_map(|(method, target, minor, headers, body)| {
        // Chunked needs HTTP/1.1.
        let minor = if matches!(body, BodyKind::Chunked(..)) {
            1
        } else {
            minor
        };
        GenRequest {
            method,
            target,
            minor,
            headers,
            body,
        }
    })
}

impl GenRequest {
    fn wire(&self) -> Vec<u8> {
        self.wire_and_body_ranges().0
    }

    /// The request on the wire, and where its body bytes (each chunk's data) sit in it.
    fn wire_and_body_ranges(&self) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
        let mut ranges = Vec::new();
        let mut w =
            format!("{} {} HTTP/1.{}\r\n", self.method, self.target, self.minor).into_bytes();
        for (n, v) in self.all_headers() {
            w.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        w.extend_from_slice(b"\r\n");
        match &self.body {
            BodyKind::None => {}
            BodyKind::Length(b) => {
                ranges.push(w.len()..w.len() + b.len());
                w.extend_from_slice(b);
            }
            BodyKind::Chunked(chunks, trailers) => {
                for (data, ext) in chunks {
                    w.extend_from_slice(format!("{:x}{ext}\r\n", data.len()).as_bytes());
                    ranges.push(w.len()..w.len() + data.len());
                    w.extend_from_slice(data);
                    w.extend_from_slice(b"\r\n");
                }
                w.extend_from_slice(b"0\r\n");
                for (n, v) in trailers {
                    w.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
                }
                w.extend_from_slice(b"\r\n");
            }
        }
        (w, ranges)
    }

    fn all_headers(&self) -> Vec<(String, String)> {
        // One Host, agreeing with an absolute-form target (else a server answers 400),
        // and keep-alive for HTTP/1.0 (else nothing after it is read).
        let host = crate::http::absolute_form(self.target.as_bytes())
            .map_or("h".to_owned(), |(_, a)| {
                String::from_utf8_lossy(a).into_owned()
            });
        let mut h = vec![("Host".to_owned(), host)];
        h.extend(self.headers.iter().cloned());
        if self.minor == 0 {
            h.push(("Connection".into(), "keep-alive".into()));
        }
        match &self.body {
            BodyKind::None => {}
            BodyKind::Length(b) => h.push(("Content-Length".into(), b.len().to_string())),
            BodyKind::Chunked(..) => h.push(("Transfer-Encoding".into(), "chunked".into())),
        }
        h
    }

    fn expected(&self) -> Request {
        let to_headers = |h: &[(String, String)]| {
            h.iter()
                .map(|(n, v)| Header {
                    name: n.clone(),
                    value: v.as_bytes().to_vec(),
                })
                .collect()
        };
        let (body, chunked, trailers) = match &self.body {
            BodyKind::None => (Vec::new(), false, Vec::new()),
            BodyKind::Length(b) => (b.clone(), false, Vec::new()),
            BodyKind::Chunked(c, t) => (
                c.iter().flat_map(|(b, _)| b.clone()).collect(),
                true,
                to_headers(t),
            ),
        };
        Request {
            ts_nanos: TS,
            method: self.method.clone(),
            target: self.target.as_bytes().to_vec(),
            version_minor: self.minor,
            headers: to_headers(&self.all_headers()),
            body,
            chunked,
            trailers,
            ..Request::default()
        }
    }
}

/// Cuts `bytes` at the given fractions of its length.
fn cut_at(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        pieces.push(bytes[last..p].to_vec());
        last = p;
    }
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn valid_requests_come_back_whatever_the_split(
        reqs in prop::collection::vec(gen_request(), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let wire: Vec<u8> = reqs.iter().flat_map(GenRequest::wire).collect();
        let mut framer = RequestFramer::new(FramerLimits::default());
        let mut out = Vec::new();
        for piece in cut_at(&wire, &cuts) {
            framer.push(TS, &piece, &mut out);
        }
        prop_assert!(framer.is_idle());
        framer.finish(TS, &mut out);
        let want: Vec<RequestEvent> = reqs.iter().map(|r| RequestEvent::Request(r.expected())).collect();
        prop_assert_eq!(out, want);
    }

    #[test]
    fn a_gap_inside_a_body_drops_only_that_request(
        reqs in prop::collection::vec(gen_request(), 1..5),
        pick in any::<prop::sample::Index>(),
        start in any::<prop::sample::Index>(),
        len in any::<prop::sample::Index>(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut wire = Vec::new();
        let mut candidates = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let (w, ranges) = r.wire_and_body_ranges();
            for range in ranges.into_iter().filter(|r| !r.is_empty()) {
                candidates.push((i, range.start + wire.len()..range.end + wire.len()));
            }
            wire.extend_from_slice(&w);
        }
        prop_assume!(!candidates.is_empty());
        let (victim, range) = candidates[pick.index(candidates.len())].clone();
        let gap_start = range.start + start.index(range.len());
        let gap_len = 1 + len.index(range.end - gap_start);

        let mut framer = RequestFramer::new(FramerLimits::default());
        let mut out = Vec::new();
        for piece in cut_at(&wire[..gap_start], &cuts) {
            framer.push(TS, &piece, &mut out);
        }
        framer.gap(TS, gap_len as u64, &mut out);
        for piece in cut_at(&wire[gap_start + gap_len..], &cuts) {
            framer.push(TS, &piece, &mut out);
        }
        framer.finish(TS, &mut out);
        let want: Vec<RequestEvent> = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if i == victim {
                    dropped(DropReason::Incomplete, Some(&r.method))
                } else {
                    RequestEvent::Request(r.expected())
                }
            })
            .collect();
        prop_assert_eq!(out, want);
    }

    #[test]
    fn any_bytes_any_split_same_events(
        bytes in prop::collection::vec(prop_oneof![
            4 => any::<u8>(),
            4 => prop::sample::select(b"GET /HTTP1.\r\n: 0chunkedContent-Length".to_vec()),
        ], 0..300),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let limits = small(64, 8, 32);
        let ops = [Op::Data(bytes.clone())];
        let reference = run_with(limits, &ops, &whole);
        let split = run_with(limits, &ops, &|_, b| cut_at(b, &cuts));
        prop_assert_eq!(split, reference);
    }
}
