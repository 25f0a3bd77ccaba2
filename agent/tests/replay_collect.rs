//! The replay clients' `send_collect` against real in-process servers: the shadow
//! answer's `ResponseSummary` (issue 23) for HTTP/1.1 bodies by length, chunked, gzip,
//! over the cap and HEAD, for an HTTP/2 gRPC answer, and nothing when not collecting.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use shadowtap::diff::response::Fnv64;
use shadowtap::metrics::{GrpcStatus, StatusClass};
use shadowtap::replay::client::{ClientOptions, Collect, ShadowClient};
use shadowtap::replay::h2::H2Client;
use shadowtap::replay::rewrite::H2Copy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counts this thread's allocations: the client runs on the test's thread (a
/// current-thread runtime), the server on its own.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialized Cell.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's layout, as given.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: allocated by `System` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// An HTTP/1.1 server answering every request on a connection with `response`.
struct Server {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(response: Vec<u8>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    let mut have = Vec::new();
                    loop {
                        // One response per request head.
                        while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                            have.drain(..end + 4);
                            if tcp.write_all(&response).await.is_err() {
                                return;
                            }
                        }
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => have.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        Self {
            addr,
            _runtime: runtime,
        }
    }
}

fn options(addr: SocketAddr, max_body_bytes: u64) -> ClientOptions {
    ClientOptions {
        host: "127.0.0.1".into(),
        port: addr.port(),
        tls: None,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        max_head_bytes: 64 * 1024,
        max_body_bytes,
        max_idle: 1,
        socket_mark: 0,
        own: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n";
const COLLECT: Option<Collect> = Some(Collect {
    max_body: 64 * 1024,
});

/// One collected HTTP/1.1 answer from a server that sends `response`.
fn collect_one(
    response: &[u8],
    request: &[u8],
    no_body: bool,
    max_body_bytes: u64,
) -> shadowtap::diff::ResponseSummary {
    let server = Server::start(response.to_vec());
    let client = ShadowClient::new(options(server.addr, max_body_bytes));
    let collected = runtime()
        .block_on(client.send_collect(request, no_body, true, COLLECT))
        .unwrap();
    let summary = collected.summary.unwrap();
    assert_eq!(summary.latency, collected.answer.head_after);
    summary
}

#[test]
fn content_length_body() {
    let s = collect_one(
        b"HTTP/1.1 404 Not Found\r\nX-Req: 7\r\nContent-Length: 11\r\n\r\nhello world",
        GET,
        false,
        1 << 20,
    );
    assert_eq!(s.status, 404);
    assert_eq!(
        s.headers,
        vec![
            ("x-req".to_string(), b"7".to_vec()),
            ("content-length".to_string(), b"11".to_vec())
        ]
    );
    assert_eq!(s.body_len, 11);
    assert_eq!(s.body_hash, Fnv64::of(b"hello world"));
    assert_eq!(s.body.as_deref(), Some(&b"hello world"[..]));
    assert_eq!(s.grpc_status, None);
}

#[test]
fn chunked_body_is_de_chunked() {
    let s = collect_one(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n",
        GET,
        false,
        1 << 20,
    );
    assert_eq!(s.status, 200);
    assert_eq!(s.body_len, 11);
    assert_eq!(s.body_hash, Fnv64::of(b"hello world"));
    assert_eq!(s.body.as_deref(), Some(&b"hello world"[..]));
}

#[test]
fn gzip_json_body_is_decoded() {
    let json = br#"{"user":{"id":7,"name":"ann"},"items":[1,2,3]}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json).unwrap();
    let gz = gz.finish().unwrap();
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    response.extend_from_slice(&gz);
    let s = collect_one(&response, GET, false, 1 << 20);
    // Length and hash of the bytes as they came; the body decoded.
    assert_eq!(s.body_len, gz.len() as u64);
    assert_eq!(s.body_hash, Fnv64::of(&gz));
    assert_eq!(s.body.as_deref(), Some(&json[..]));
    assert!(s
        .headers
        .contains(&("content-encoding".to_string(), b"gzip".to_vec())));
}

#[test]
fn body_over_the_cap_is_hashed_only() {
    let body = vec![b'z'; 100_000];
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    response.extend_from_slice(&body);
    let s = collect_one(&response, GET, false, 10_000);
    assert_eq!(s.status, 200);
    assert_eq!(s.body_len, 10_000);
    assert_eq!(s.body_hash, Fnv64::of(&body[..10_000]));
    assert_eq!(s.body, None);
}

#[test]
fn head_answer_has_an_empty_body() {
    let s = collect_one(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1234\r\n\r\n",
        b"HEAD /a HTTP/1.1\r\nHost: t\r\n\r\n",
        true,
        1 << 20,
    );
    assert_eq!((s.status, s.body_len), (200, 0));
    assert_eq!(s.body_hash, Fnv64::of(b""));
    assert_eq!(s.body, Some(Vec::new()));
    assert_eq!(s.headers.len(), 2);
}

/// Not collecting: no summary, and a copy on a kept-alive connection allocates exactly
/// what `send_timed` does (nothing of the collecting).
#[test]
fn collect_off_gives_none_and_costs_nothing() {
    let server =
        Server::start(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok".to_vec());
    let client = ShadowClient::new(options(server.addr, 1 << 20));
    let rt = runtime();
    // Warm: one connection in the pool, the runtime's timer set up.
    for _ in 0..3 {
        rt.block_on(client.send_timed(GET, false, true)).unwrap();
    }
    assert_eq!(client.idle_connections(), 1);
    let measure = |collect: Option<Collect>| {
        let before = allocations();
        let collected = rt
            .block_on(client.send_collect(GET, false, true, collect))
            .unwrap();
        let used = allocations() - before;
        assert_eq!(collected.answer.class, StatusClass::Success);
        (used, collected.summary)
    };
    let before = allocations();
    rt.block_on(client.send_timed(GET, false, true)).unwrap();
    let timed = allocations() - before;
    let (off, summary) = measure(None);
    assert_eq!(summary, None);
    assert_eq!(off, timed, "collecting off allocates like send_timed");
    let (on, summary) = measure(COLLECT);
    assert!(on > off, "collecting on: {on} allocations, off: {off}");
    let summary = summary.unwrap();
    assert_eq!(summary.body.as_deref(), Some(&b"ok"[..]));
    // The connection is still reused.
    assert_eq!(client.idle_connections(), 1);
}

/// An HTTP/2 server: a gRPC answer with a message, fields and `grpc-status: 14` trailers.
fn h2_server() -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        let head = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .header("x-Server", "s1")
                            .body(())
                            .unwrap();
                        let Ok(mut stream) = respond.send_response(head, false) else {
                            return;
                        };
                        let _ = stream.send_data(Bytes::from_static(b"\0\0\0\0\x02ok"), false);
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", "14".parse().unwrap());
                        let _ = stream.send_trailers(trailers);
                    });
                }
            });
        }
    });
    (addr, runtime)
}

#[test]
fn h2_answer_with_grpc_status_trailer() {
    let (addr, _server) = h2_server();
    let client = H2Client::new(options(addr, 1 << 20));
    let copy = H2Copy {
        method: "POST".into(),
        scheme: "http",
        authority: format!("127.0.0.1:{}", addr.port()).into_bytes(),
        path: b"/pkg.Svc/Call".to_vec(),
        headers: vec![(b"content-type".to_vec(), b"application/grpc".to_vec())],
        trailers: vec![],
    };
    let body = Bytes::from_static(b"\0\0\0\0\x01x");
    let rt = runtime();
    let collected = rt
        .block_on(client.send_collect(&copy, body.clone(), true, COLLECT))
        .unwrap();
    assert_eq!(collected.answer.grpc, Some(GrpcStatus::parse(Some(b"14"))));
    let s = collected.summary.unwrap();
    assert_eq!((s.status, s.grpc_status), (200, Some(14)));
    assert_eq!(s.latency, collected.answer.head_after);
    assert_eq!(
        s.headers,
        vec![
            ("content-type".to_string(), b"application/grpc".to_vec()),
            ("x-server".to_string(), b"s1".to_vec())
        ]
    );
    assert_eq!(s.body_len, 7);
    assert_eq!(s.body_hash, Fnv64::of(b"\0\0\0\0\x02ok"));
    assert_eq!(s.body.as_deref(), Some(&b"\0\0\0\0\x02ok"[..]));
    // Not collecting: the same answer, no summary.
    let plain = rt
        .block_on(client.send_collect(&copy, body, true, None))
        .unwrap();
    assert_eq!(plain.summary, None);
    assert_eq!(plain.answer.grpc, collected.answer.grpc);
}
