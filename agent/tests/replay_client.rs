//! The replay stage against real in-process HTTP servers: what bytes a target receives,
//! keep-alive, every failure a target can cause, and that each target's outcomes add up.
//!
//! The replayer owns its runtime on its own thread, so paused tokio time cannot drive it;
//! these tests use short real deadlines (a few hundred milliseconds) instead.

#[expect(
    dead_code,
    reason = "shared test support; this file uses only its TLS certificates"
)]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shadowtap::metrics::{Accounting, Outcome, ReplayErrorKind, StatusClass};
use shadowtap::replay::client::{ClientOptions, ShadowClient};
use shadowtap::replay::filter::RequestFilter;
use shadowtap::replay::rewrite::HeaderRules;
use shadowtap::replay::{Handoff, Outbox, Replayer, TargetConfig};
use shadowtap::request::{Captured, Protocol};
use shadowtap::request::{Header, Request};
use shadowtap::sample::Percent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the test server does with each request it has read.
#[derive(Clone)]
enum Behaviour {
    /// Writes these bytes (a whole response, or several).
    Respond(Vec<u8>),
    /// Responds, then closes the connection without saying so (no `Connection: close`).
    RespondThenClose(Vec<u8>),
    /// Waits this long, then responds.
    Slow(Duration, Vec<u8>),
    /// Never answers, keeps the connection open.
    Silent,
    /// Resets the connection (RST, not FIN).
    Reset,
    /// Declares a 1 GiB body and streams zeros until the client goes away.
    Endless,
}

#[derive(Clone, Debug)]
struct Recorded {
    conn: usize,
    bytes: Vec<u8>,
}

struct TestServer {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    streamed: Arc<AtomicU64>,
    stream_ended: Arc<AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

impl TestServer {
    fn start(behaviour: Behaviour) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let streamed = Arc::new(AtomicU64::new(0));
        let stream_ended = Arc::new(AtomicBool::new(false));
        let (a, r, s, e) = (
            accepts.clone(),
            requests.clone(),
            streamed.clone(),
            stream_ended.clone(),
        );
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let conn = a.fetch_add(1, Ordering::SeqCst);
                let (r, s, e, b) = (r.clone(), s.clone(), e.clone(), behaviour.clone());
                tokio::spawn(serve(stream, conn, b, r, s, e));
            }
        });
        Self {
            addr,
            accepts,
            requests,
            streamed,
            stream_ended,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request: head by httparse, body by Content-Length (the replayer always
/// sends Content-Length). `None` at end of stream.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = req.parse(buf) {
            let body = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                })
                .unwrap_or(0);
            if buf.len() >= len + body {
                return Some(buf.drain(..len + body).collect());
            }
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    behaviour: Behaviour,
    requests: Arc<Mutex<Vec<Recorded>>>,
    streamed: Arc<AtomicU64>,
    stream_ended: Arc<AtomicBool>,
) {
    let mut buf = Vec::new();
    while let Some(bytes) = read_request(&mut stream, &mut buf).await {
        requests.lock().unwrap().push(Recorded { conn, bytes });
        match &behaviour {
            Behaviour::Respond(resp) => {
                if stream.write_all(resp).await.is_err() {
                    return;
                }
            }
            Behaviour::RespondThenClose(resp) => {
                let _ = stream.write_all(resp).await;
                return;
            }
            Behaviour::Slow(delay, resp) => {
                tokio::time::sleep(*delay).await;
                if stream.write_all(resp).await.is_err() {
                    return;
                }
            }
            Behaviour::Silent => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            Behaviour::Reset => {
                stream.set_zero_linger().unwrap();
                return;
            }
            Behaviour::Endless => {
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
                if stream.write_all(head).await.is_ok() {
                    let zeros = vec![0u8; 64 * 1024];
                    while stream.write_all(&zeros).await.is_ok() {
                        streamed.fetch_add(zeros.len() as u64, Ordering::SeqCst);
                    }
                }
                stream_ended.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.as_bytes().to_vec(),
    }
}

fn get(path: &str) -> Request {
    Request {
        ts_nanos: 0,
        method: "GET".into(),
        target: path.as_bytes().to_vec(),
        version_minor: 1,
        headers: vec![header("Host", "svc:8080"), header("User-Agent", "test")],
        body: vec![],
        chunked: false,
        trailers: vec![],
        ..Request::default()
    }
}

fn captured(conn: u64, request: Request) -> Captured {
    Captured {
        id: conn,
        conn,
        client: "192.0.2.10:51000".parse().unwrap(),
        server: "10.0.0.5:8080".parse().unwrap(),
        request,
    }
}

fn target(url: &str) -> TargetConfig {
    let mut t = TargetConfig::from_arg(url, Percent::ALL).unwrap();
    t.connect_timeout = Duration::from_millis(500);
    t.request_timeout = Duration::from_secs(5);
    t
}

fn start(targets: Vec<TargetConfig>) -> (Replayer, Arc<Accounting>) {
    let names = targets.iter().map(|t| t.url.to_string()).collect();
    let accounting = Arc::new(Accounting::new(names));
    let replayer = Replayer::new(targets, accounting.clone()).unwrap();
    (replayer, accounting)
}

fn submit(r: &Replayer, acc: &Accounting, req: Captured) {
    acc.seen(Protocol::Http1);
    r.submit(req);
}

fn wait_settled(r: &Replayer, within: Duration) {
    let end = Instant::now() + within;
    while r.pending() > 0 {
        assert!(Instant::now() < end, "still {} pending", r.pending());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// After shutdown every target's outcomes must add up to the requests seen.
fn assert_adds_up(acc: &Accounting) {
    for (name, t) in acc.iter() {
        assert_eq!(t.total(), acc.requests_seen(), "target {name}");
    }
}

const SUCCESS: Outcome = Outcome::Replayed(StatusClass::Success);

#[test]
fn copy_is_the_request_except_the_documented_rewrites() {
    let server = TestServer::start(Behaviour::Respond(OK.to_vec()));
    let mut t = target(&server.url());
    t.rules = HeaderRules::from_lists(vec![], vec![], vec!["authorization".into()]);
    let (r, acc) = start(vec![t]);

    let body: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let req = Request {
        ts_nanos: 1,
        method: "POST".into(),
        target: b"/Upload/%7Euser?a=1&a=2&b=%20".to_vec(),
        version_minor: 1,
        headers: vec![
            header("host", "Svc.Example:8080"),
            header("connection", "keep-alive, X-Hop"),
            header("X-Hop", "gone"),
            header("Expect", "100-continue"),
            header("X-MiXeD-Case", "Value  With  Spaces"),
            header("Transfer-Encoding", "chunked"),
            header("Authorization", "Bearer secret"),
            header("x-forwarded-for", "203.0.113.1"),
            header("Keep-Alive", "timeout=5"),
            header("accept", "*/*"),
        ],
        body: body.clone(),
        chunked: true,
        trailers: vec![header("X-Checksum", "abc")],
        ..Request::default()
    };
    submit(&r, &acc, captured(1, req));
    wait_settled(&r, Duration::from_secs(5));
    r.shutdown(Duration::from_secs(1));

    let got = server.requests();
    assert_eq!(got.len(), 1);
    let mut want = b"POST /Upload/%7Euser?a=1&a=2&b=%20 HTTP/1.1\r\n\
host: Svc.Example-shadow:8080\r\n\
X-MiXeD-Case: Value  With  Spaces\r\n\
Content-Length: 5000\r\n\
Authorization: REDACTED\r\n\
x-forwarded-for: 203.0.113.1, 192.0.2.10\r\n\
accept: */*\r\n\r\n"
        .to_vec();
    want.extend_from_slice(&body);
    assert_eq!(
        String::from_utf8_lossy(&got[0].bytes[..got[0].bytes.len() - body.len()]),
        String::from_utf8_lossy(&want[..want.len() - body.len()])
    );
    assert!(got[0].bytes == want, "body bytes differ");
    assert_eq!(acc.target(0).get(SUCCESS), 1);
    assert_adds_up(&acc);
}

#[test]
fn keep_alive_connections_are_reused() {
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    for response in [OK.to_vec(), chunked.to_vec(), interim.to_vec()] {
        let server = TestServer::start(Behaviour::Respond(response.clone()));
        let mut t = target(&server.url());
        t.max_in_flight = 1;
        let (r, acc) = start(vec![t]);
        for i in 0..20 {
            submit(&r, &acc, captured(i, get(&format!("/item/{i}"))));
        }
        wait_settled(&r, Duration::from_secs(10));
        r.shutdown(Duration::from_secs(1));
        let label = String::from_utf8_lossy(&response).into_owned();
        assert_eq!(acc.target(0).get(SUCCESS), 20, "{label}");
        assert_eq!(server.requests().len(), 20, "{label}");
        assert_eq!(server.accepts(), 1, "one connection for all: {label}");
        assert!(server.requests().iter().all(|q| q.conn == 0), "{label}");
        assert_adds_up(&acc);
    }
}

#[test]
fn connection_closed_while_idle_is_retried_once_on_a_new_one() {
    let server = TestServer::start(Behaviour::RespondThenClose(OK.to_vec()));
    let mut t = target(&server.url());
    t.max_in_flight = 1;
    let (r, acc) = start(vec![t]);
    for i in 0..5 {
        submit(&r, &acc, captured(i, get("/")));
        // Let the target's close arrive before the next request, as with a real idle
        // timeout; the retry must then hide it.
        wait_settled(&r, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    r.shutdown(Duration::from_secs(1));
    assert_eq!(acc.target(0).get(SUCCESS), 5);
    assert_eq!(
        server.requests().len(),
        5,
        "each request reached the target once"
    );
    assert_eq!(server.accepts(), 5);
}

#[test]
fn http10_request_is_sent_as_10_on_its_own_connection() {
    let server = TestServer::start(Behaviour::Respond(
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    ));
    let (r, acc) = start(vec![target(&server.url())]);
    for i in 0..3 {
        let mut req = get("/old");
        req.version_minor = 0;
        req.headers = vec![header("User-Agent", "curl/1")];
        submit(&r, &acc, captured(i, req));
    }
    wait_settled(&r, Duration::from_secs(5));
    r.shutdown(Duration::from_secs(1));
    let got = server.requests();
    assert_eq!(got.len(), 3);
    assert_eq!(
        String::from_utf8_lossy(&got[0].bytes),
        "GET /old HTTP/1.0\r\nHost: 10.0.0.5-shadow:8080\r\nUser-Agent: curl/1\r\n\
         X-Forwarded-For: 192.0.2.10\r\n\r\n"
    );
    assert_eq!(server.accepts(), 3);
    assert_eq!(acc.target(0).get(SUCCESS), 3);
}

#[test]
fn accounting_must_list_the_targets() {
    let t = target("http://127.0.0.1:9");
    let accounting = Arc::new(Accounting::new(vec!["a".into(), "b".into()]));
    assert!(Replayer::new(vec![t], accounting).is_err());
}

#[test]
fn head_response_has_no_body_whatever_it_declares() {
    // A HEAD answer declares the length of the GET body but carries none; reading one
    // would hang until the deadline and lose the connection.
    let server = TestServer::start(Behaviour::Respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec(),
    ));
    let mut t = target(&server.url());
    t.max_in_flight = 1;
    t.request_timeout = Duration::from_secs(3);
    let (r, acc) = start(vec![t]);
    let began = Instant::now();
    for i in 0..3 {
        let mut req = get("/");
        req.method = "HEAD".into();
        submit(&r, &acc, captured(i, req));
    }
    wait_settled(&r, Duration::from_secs(10));
    assert!(began.elapsed() < Duration::from_secs(2));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(acc.target(0).get(SUCCESS), 3);
    assert_eq!(server.accepts(), 1);
}

#[test]
fn target_down_is_a_connect_error() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The listener is closed again: connecting is refused.
    let (r, acc) = start(vec![target(&format!("http://{addr}"))]);
    for i in 0..3 {
        submit(&r, &acc, captured(i, get("/")));
    }
    wait_settled(&r, Duration::from_secs(5));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(
        acc.target(0)
            .get(Outcome::ReplayError(ReplayErrorKind::Connect)),
        3
    );
    assert_adds_up(&acc);
}

#[test]
fn unresolvable_target_is_a_connect_error() {
    // RFC 6761: `.invalid` never resolves.
    let mut t = target("http://shadowtap-test.invalid:8080");
    t.connect_timeout = Duration::from_secs(5);
    let (r, acc) = start(vec![t]);
    submit(&r, &acc, captured(1, get("/")));
    wait_settled(&r, Duration::from_secs(10));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(
        acc.target(0)
            .get(Outcome::ReplayError(ReplayErrorKind::Connect)),
        1
    );
}

#[test]
fn request_timeout_runs_on_tokio_time() {
    // The client alone, on a runtime with paused time: the default 10 s deadline passes
    // without 10 s of waiting, once the request is out and nothing else is pending.
    let server = TestServer::start(Behaviour::Silent);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let client = ShadowClient::new(ClientOptions {
        host: "127.0.0.1".into(),
        port: server.addr.port(),
        tls: None,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        max_head_bytes: 64 * 1024,
        max_body_bytes: 1024,
        max_idle: 1,
        socket_mark: 0,
        own: None,
    });
    let began = Instant::now();
    let result = runtime.block_on(client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false, true));
    assert_eq!(result, Err(ReplayErrorKind::Timeout));
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    // It was the request that timed out, not the connect: the target got it.
    let end = Instant::now() + Duration::from_secs(5);
    while server.requests().is_empty() {
        assert!(Instant::now() < end, "request never reached the target");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn silent_target_times_out() {
    let server = TestServer::start(Behaviour::Silent);
    let mut t = target(&server.url());
    t.request_timeout = Duration::from_millis(200);
    let (r, acc) = start(vec![t]);
    let began = Instant::now();
    submit(&r, &acc, captured(1, get("/")));
    wait_settled(&r, Duration::from_secs(5));
    assert!(began.elapsed() < Duration::from_secs(2));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(
        acc.target(0)
            .get(Outcome::ReplayError(ReplayErrorKind::Timeout)),
        1
    );
    assert_adds_up(&acc);
}

#[test]
fn resetting_target_is_a_reset_error() {
    let server = TestServer::start(Behaviour::Reset);
    let (r, acc) = start(vec![target(&server.url())]);
    submit(&r, &acc, captured(1, get("/")));
    wait_settled(&r, Duration::from_secs(5));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(
        acc.target(0)
            .get(Outcome::ReplayError(ReplayErrorKind::Reset)),
        1
    );
}

#[test]
fn garbage_response_is_a_protocol_error() {
    let server = TestServer::start(Behaviour::Respond(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()));
    let (r, acc) = start(vec![target(&server.url())]);
    submit(&r, &acc, captured(1, get("/")));
    wait_settled(&r, Duration::from_secs(5));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(
        acc.target(0)
            .get(Outcome::ReplayError(ReplayErrorKind::Protocol)),
        1
    );
}

#[test]
fn endless_response_is_counted_and_cut_off() {
    let server = TestServer::start(Behaviour::Endless);
    let mut t = target(&server.url());
    t.max_response_body_bytes = 1024 * 1024;
    t.max_in_flight = 1;
    let (r, acc) = start(vec![t]);
    submit(&r, &acc, captured(1, get("/big")));
    wait_settled(&r, Duration::from_secs(10));
    assert_eq!(acc.target(0).get(SUCCESS), 1, "status counted");
    // The client closed: the server's writes fail soon, having sent a few MiB at most
    // (the cap plus socket buffers), not the declared GiB.
    let end = Instant::now() + Duration::from_secs(10);
    while !server.stream_ended.load(Ordering::SeqCst) {
        assert!(Instant::now() < end, "server still streaming");
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = server.streamed.load(Ordering::SeqCst);
    assert!(sent < 64 * 1024 * 1024, "server sent {sent} bytes");
    // The cut-off connection is not reused.
    submit(&r, &acc, captured(2, get("/big")));
    wait_settled(&r, Duration::from_secs(10));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(server.accepts(), 2);
    assert_eq!(acc.target(0).get(SUCCESS), 2);
}

#[test]
fn oversized_response_head_is_a_protocol_error() {
    let mut huge = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 100 * 1024));
    huge.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    let server = TestServer::start(Behaviour::Respond(huge));
    let mut t = target(&server.url());
    t.max_response_head_bytes = 16 * 1024;
    let (r, acc) = start(vec![t]);
    submit(&r, &acc, captured(1, get("/")));
    wait_settled(&r, Duration::from_secs(5));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(
        acc.target(0)
            .get(Outcome::ReplayError(ReplayErrorKind::Protocol)),
        1
    );
}

#[test]
fn in_flight_cap_bounds_connections() {
    let server = TestServer::start(Behaviour::Slow(Duration::from_millis(100), OK.to_vec()));
    let mut t = target(&server.url());
    t.max_in_flight = 3;
    let (r, acc) = start(vec![t]);
    for i in 0..12 {
        submit(&r, &acc, captured(i, get("/")));
    }
    wait_settled(&r, Duration::from_secs(10));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(acc.target(0).get(SUCCESS), 12);
    assert_eq!(
        server.accepts(),
        3,
        "never more than 3 at once, reused after"
    );
}

#[test]
fn redirects_are_not_followed() {
    let server = TestServer::start(Behaviour::Respond(
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ));
    let (r, acc) = start(vec![target(&server.url())]);
    submit(&r, &acc, captured(1, get("/moved")));
    wait_settled(&r, Duration::from_secs(5));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(
        acc.target(0)
            .get(Outcome::Replayed(StatusClass::Redirection)),
        1
    );
}

#[test]
fn full_queue_is_counted_and_never_blocks() {
    let server = TestServer::start(Behaviour::Slow(Duration::from_millis(300), OK.to_vec()));
    let mut t = target(&server.url());
    t.max_in_flight = 1;
    t.queue_len = 2;
    let (r, acc) = start(vec![t]);
    let began = Instant::now();
    for i in 0..20 {
        submit(&r, &acc, captured(i, get("/")));
    }
    assert!(
        began.elapsed() < Duration::from_millis(100),
        "submit blocked"
    );
    let full = acc.target(0).get(Outcome::QueueFull);
    // At most: one in flight, one held by the dispatcher, two queued.
    assert!(full >= 16, "queue_full {full}");
    r.shutdown(Duration::from_secs(5));
    assert_eq!(acc.target(0).get(SUCCESS) + full, 20);
    assert_adds_up(&acc);
}

#[test]
fn each_target_gets_its_own_share() {
    let a = TestServer::start(Behaviour::Respond(OK.to_vec()));
    let b = TestServer::start(Behaviour::Respond(OK.to_vec()));
    let ta = target(&a.url());
    let mut tb = TargetConfig::from_arg(&format!("{}@30", b.url()), Percent::ALL).unwrap();
    tb.seed = Some(7);
    let (r, acc) = start(vec![ta, tb]);
    let n = 1000u64;
    for i in 0..n {
        submit(&r, &acc, captured(i, get(&format!("/r/{i}"))));
    }
    wait_settled(&r, Duration::from_secs(30));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(acc.target(0).get(SUCCESS), n);
    assert_eq!(a.requests().len() as u64, n);
    let kept = acc.target(1).get(SUCCESS);
    let sigma = (n as f64 * 0.3 * 0.7).sqrt();
    assert!(
        (kept as f64 - 300.0).abs() <= 5.0 * sigma,
        "30% target kept {kept} of {n}"
    );
    assert_eq!(acc.target(1).get(Outcome::NotSampled), n - kept);
    assert_eq!(b.requests().len() as u64, kept);
    assert_adds_up(&acc);
}

#[test]
fn filters_and_rate_cap_are_counted_per_target() {
    let server = TestServer::start(Behaviour::Respond(OK.to_vec()));
    let mut filtered = target(&server.url());
    filtered.filter = RequestFilter::new(&[], &[], &["^/health".into()], &[]).unwrap();
    let mut capped = target(&server.url());
    capped.max_rps = Some(1.0);
    capped.max_rps_burst = Some(5);
    let (r, acc) = start(vec![filtered, capped]);
    for i in 0..20 {
        let path = if i % 2 == 0 { "/healthz" } else { "/api" };
        submit(&r, &acc, captured(i, get(path)));
    }
    wait_settled(&r, Duration::from_secs(10));
    r.shutdown(Duration::from_secs(1));
    assert_eq!(acc.target(0).get(Outcome::Filtered), 10);
    assert_eq!(acc.target(0).get(SUCCESS), 10);
    let limited = acc.target(1).get(Outcome::RateLimited);
    assert!((14..=15).contains(&limited), "rate_limited {limited}");
    assert_eq!(acc.target(1).get(SUCCESS), 20 - limited);
    assert_adds_up(&acc);
}

#[test]
fn shutdown_deadline_settles_everything() {
    let server = TestServer::start(Behaviour::Silent);
    let mut t = target(&server.url());
    t.max_in_flight = 4;
    let (r, acc) = start(vec![t]);
    for i in 0..10 {
        submit(&r, &acc, captured(i, get("/")));
    }
    assert_eq!(r.pending(), 10);
    let began = Instant::now();
    r.shutdown(Duration::from_millis(200));
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(
        acc.target(0)
            .get(Outcome::ReplayError(ReplayErrorKind::Timeout)),
        10
    );
    assert_adds_up(&acc);
}

mod tls {
    //! `https` targets: roots from `--target-ca`, default verification, `--insecure`, SNI.

    use super::*;
    use shadowtap::replay::target::TlsOptions;
    use tokio_rustls::TlsAcceptor;

    struct TlsServer {
        addr: SocketAddr,
        ca_pem: String,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
        sni: Arc<Mutex<Vec<Option<String>>>>,
        _runtime: tokio::runtime::Runtime,
    }

    fn start_tls_server() -> TlsServer {
        let (config, ca_pem) = support::localhost_tls(&[]);
        let acceptor = TlsAcceptor::from(config);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sni = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (requests.clone(), sni.clone());
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, r, s) = (acceptor.clone(), r.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    s.lock()
                        .unwrap()
                        .push(tls.get_ref().1.server_name().map(str::to_string));
                    let mut buf = Vec::new();
                    while let Some(req) = read_request(&mut tls, &mut buf).await {
                        r.lock().unwrap().push(req);
                        if tls.write_all(OK).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TlsServer {
            addr,
            ca_pem,
            requests,
            sni,
            _runtime: runtime,
        }
    }

    fn https_target(server: &TlsServer, tls: TlsOptions) -> TargetConfig {
        let mut t = target(&format!("https://localhost:{}", server.addr.port()));
        t.tls = tls;
        t
    }

    fn run_one(t: TargetConfig) -> Arc<Accounting> {
        let (r, acc) = start(vec![t]);
        for i in 0..3 {
            submit(&r, &acc, captured(i, get("/secure")));
        }
        wait_settled(&r, Duration::from_secs(10));
        r.shutdown(Duration::from_secs(1));
        assert_adds_up(&acc);
        acc
    }

    #[test]
    fn target_ca_is_trusted_and_sni_is_the_url_host() {
        let server = start_tls_server();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &server.ca_pem).unwrap();
        let mut t = https_target(
            &server,
            TlsOptions {
                ca_file: Some(ca_file),
                insecure: false,
            },
        );
        t.max_in_flight = 1;
        let acc = run_one(t);
        assert_eq!(acc.target(0).get(SUCCESS), 3);
        let requests = server.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 3);
        assert!(requests[0].starts_with(b"GET /secure HTTP/1.1\r\nHost: svc-shadow:8080\r\n"));
        // Keep-alive works over TLS too: one handshake.
        assert_eq!(
            *server.sni.lock().unwrap(),
            vec![Some("localhost".to_string())]
        );
    }

    #[test]
    fn unknown_ca_is_a_tls_error() {
        let server = start_tls_server();
        let acc = run_one(https_target(&server, TlsOptions::default()));
        assert_eq!(
            acc.target(0)
                .get(Outcome::ReplayError(ReplayErrorKind::Tls)),
            3
        );
        assert!(server.requests.lock().unwrap().is_empty());
    }

    #[test]
    fn insecure_accepts_any_certificate() {
        let server = start_tls_server();
        let acc = run_one(https_target(
            &server,
            TlsOptions {
                ca_file: None,
                insecure: true,
            },
        ));
        assert_eq!(acc.target(0).get(SUCCESS), 3);
    }
}

/// Live capture decides on each request as it is framed but hands the copies over per
/// read: a copy in the outbox has reached no target and counts in no outcome until
/// `send`, while a target that does not keep the request counts it at once.
#[test]
fn copies_wait_in_the_outbox_until_sent() {
    let server = TestServer::start(Behaviour::Respond(OK.to_vec()));
    let all = target(&server.url());
    let mut none = target(&server.url());
    none.percent = Percent::NONE;
    let (r, acc) = start(vec![all, none]);
    let mut outbox = Outbox::default();
    for i in 0..5 {
        acc.seen(Protocol::Http1);
        r.hand_off(
            captured(i, get(&format!("/held/{i}"))),
            Handoff::Later(&mut outbox),
        );
    }
    assert_eq!(acc.target(1).get(Outcome::NotSampled), 5);
    assert_eq!(acc.target(0).total(), 0);
    assert_eq!(r.pending(), 0);
    std::thread::sleep(Duration::from_millis(100));
    assert!(server.requests().is_empty());

    r.send(&mut outbox);
    wait_settled(&r, Duration::from_secs(5));
    assert_eq!(acc.target(0).get(SUCCESS), 5);
    let mut paths: Vec<String> = server
        .requests()
        .iter()
        .map(|rec| {
            String::from_utf8_lossy(&rec.bytes)
                .lines()
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    paths.sort();
    let want: Vec<String> = (0..5).map(|i| format!("GET /held/{i} HTTP/1.1")).collect();
    assert_eq!(paths, want);
    // Sent once: a second send has nothing left.
    r.send(&mut outbox);
    r.shutdown(Duration::from_secs(2));
    assert_eq!(server.requests().len(), 5);
    assert_adds_up(&acc);
}
