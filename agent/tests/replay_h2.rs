//! HTTP/2 copies through the public `Replayer` against a real in-process HTTP/2 server
//! (the `h2` crate's server side) that records what it receives: pseudo-fields, fields,
//! body and trailers as sent; gRPC outcomes; a target with one stream and a small window;
//! a silent target; a target down; TLS with ALPN; GOAWAY. Each target's outcomes add up.

#[expect(
    dead_code,
    reason = "shared test support; this file uses only its TLS certificates"
)]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response};
use shadowtap::metrics::{Accounting, GrpcStatus, Outcome, ReplayErrorKind, StatusClass};
use shadowtap::replay::{Replayer, TargetConfig};
use shadowtap::request::{Captured, Header, Protocol, Request};
use shadowtap::sample::Percent;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// One request as the server got it.
#[derive(Clone, Debug)]
struct Received {
    conn: usize,
    method: String,
    scheme: String,
    authority: String,
    path: String,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
}

impl Received {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Clone, Default)]
struct ServerOptions {
    max_streams: Option<u32>,
    window: Option<u32>,
    /// GOAWAY (graceful) after this many streams on a connection.
    goaway_after: Option<usize>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

struct H2Server {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    accepts: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

fn pairs(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// What the server answers depends on the path's last segment: `Unavailable` (200, a
/// message, then `grpc-status: 14`), `TrailersOnly` (one HEADERS with `grpc-status: 5`),
/// `silent` (never), else 200 with a body (and `grpc-status: 0` trailers for gRPC).
async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    conn: usize,
    received: Arc<Mutex<Vec<Received>>>,
) {
    let (parts, mut body) = req.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.ok().flatten();
    let path = parts.uri.path().to_string();
    received.lock().unwrap().push(Received {
        conn,
        method: parts.method.to_string(),
        scheme: parts.uri.scheme_str().unwrap_or("").to_string(),
        authority: parts
            .uri
            .authority()
            .map_or(String::new(), |a| a.to_string()),
        path: parts
            .uri
            .path_and_query()
            .map_or(String::new(), |p| p.to_string()),
        fields: pairs(&parts.headers),
        body: bytes,
        trailers: trailers.as_ref().map(pairs).unwrap_or_default(),
    });
    let grpc = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let with_status = |code: &str| {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", code.parse().unwrap());
        t
    };
    if path.ends_with("/silent") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return;
    }
    if path.ends_with("/endless") {
        let response = Response::builder().status(200).body(()).unwrap();
        let Ok(mut stream) = respond.send_response(response, false) else {
            return;
        };
        let chunk = Bytes::from(vec![0u8; 16 * 1024]);
        // Until the client resets the stream.
        loop {
            stream.reserve_capacity(chunk.len());
            match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(n)) if n > 0 => {
                    if stream
                        .send_data(chunk.slice(..n.min(chunk.len())), false)
                        .is_err()
                    {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    }
    if path.ends_with("/TrailersOnly") {
        let response = Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "5")
            .body(())
            .unwrap();
        let _ = respond.send_response(response, true);
        return;
    }
    let response = Response::builder().status(200).body(()).unwrap();
    let Ok(mut stream) = respond.send_response(response, false) else {
        return;
    };
    let _ = stream.send_data(Bytes::from_static(b"\0\0\0\0\x02ok"), !grpc);
    if grpc {
        let code = if path.ends_with("/Unavailable") {
            "14"
        } else {
            "0"
        };
        let _ = stream.send_trailers(with_status(code));
    }
}

async fn serve_connection<T>(io: T, conn: usize, opts: ServerOptions, r: Arc<Mutex<Vec<Received>>>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = h2::server::Builder::new();
    if let Some(n) = opts.max_streams {
        builder.max_concurrent_streams(n);
    }
    if let Some(w) = opts.window {
        builder.initial_window_size(w);
        builder.initial_connection_window_size(w);
    }
    let Ok(mut connection) = builder.handshake::<_, Bytes>(io).await else {
        return;
    };
    let mut streams = 0;
    while let Some(Ok((req, respond))) = connection.accept().await {
        streams += 1;
        tokio::spawn(answer(req, respond, conn, r.clone()));
        if opts.goaway_after == Some(streams) {
            connection.graceful_shutdown();
        }
    }
}

impl H2Server {
    fn start(opts: ServerOptions) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let accepts = Arc::new(AtomicUsize::new(0));
        let (r, a) = (received.clone(), accepts.clone());
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conn = a.fetch_add(1, Ordering::SeqCst);
                let (opts, r) = (opts.clone(), r.clone());
                tokio::spawn(async move {
                    match &opts.tls {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve_connection(tls, conn, opts, r).await;
                            }
                        }
                        None => serve_connection(tcp, conn, opts, r).await,
                    }
                });
            }
        });
        Self {
            addr,
            received,
            accepts,
            _runtime: runtime,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn header(name: &str, value: &[u8]) -> Header {
    Header {
        name: name.into(),
        value: value.to_vec(),
    }
}

fn h2_request(path: &str, headers: Vec<Header>, body: &[u8]) -> Request {
    Request {
        protocol: Protocol::H2,
        stream_id: 1,
        method: "POST".into(),
        target: path.as_bytes().to_vec(),
        h2_authority: Some(b"grpc-hello.example.cn:8000".to_vec()),
        scheme: b"http".to_vec(),
        headers,
        body: body.to_vec(),
        ..Request::default()
    }
}

fn grpc_call(path: &str) -> Request {
    h2_request(
        path,
        vec![
            header("content-type", b"application/grpc"),
            header("te", b"trailers"),
        ],
        b"\0\0\0\0\x03abc",
    )
}

fn captured(request: Request) -> Captured {
    Captured {
        id: 0,
        conn: 1,
        client: "192.0.2.10:51000".parse().unwrap(),
        server: "10.0.0.5:8000".parse().unwrap(),
        request,
    }
}

fn target(url: &str) -> TargetConfig {
    let mut t = TargetConfig::from_arg(url, Percent::ALL).unwrap();
    t.connect_timeout = Duration::from_millis(500);
    t.request_timeout = Duration::from_secs(5);
    t
}

fn start(t: TargetConfig) -> (Replayer, Arc<Accounting>) {
    let accounting = Arc::new(Accounting::new(vec![t.url.to_string()]));
    let replayer = Replayer::new(vec![t], accounting.clone()).unwrap();
    (replayer, accounting)
}

/// Submits `requests`, waits until each is settled, shuts down and checks that the
/// outcomes add up.
fn run(t: TargetConfig, requests: Vec<Request>) -> Arc<Accounting> {
    let (r, acc) = start(t);
    for req in requests {
        acc.seen(Protocol::H2);
        r.submit(captured(req));
    }
    let end = Instant::now() + Duration::from_secs(60);
    while r.pending() > 0 {
        assert!(Instant::now() < end, "still {} pending", r.pending());
        std::thread::sleep(Duration::from_millis(5));
    }
    r.shutdown(Duration::from_secs(1));
    adds_up(&acc);
    acc
}

fn adds_up(acc: &Accounting) {
    for (name, t) in acc.iter() {
        assert_eq!(t.total(), acc.requests_seen(), "target {name}");
    }
}

fn outcome(acc: &Accounting, o: Outcome) -> u64 {
    acc.target(0).get_in(Protocol::H2, o)
}

const SUCCESS: Outcome = Outcome::Replayed(StatusClass::Success);

fn grpc(code: u8) -> Outcome {
    Outcome::Grpc(GrpcStatus::parse(Some(code.to_string().as_bytes())))
}

#[test]
fn grpc_call_arrives_with_shadow_authority_fields_body_and_trailers() {
    let server = H2Server::start(ServerOptions::default());
    let mut call = grpc_call("/helloworld.Greeter/SayHello");
    call.headers.extend([
        header("user-agent", b"grpc-python/1.60"),
        header("grpc-timeout", b"100m"),
        header("x-custom", b"a  b"),
        header("trace-bin", b"\0\x01\x02\x03"),
        header("connection", b"keep-alive"),
    ]);
    call.trailers = vec![header("x-checksum", b"42")];
    let acc = run(
        target(&format!("http://{}", server.addr)),
        vec![call.clone()],
    );
    assert_eq!(outcome(&acc, grpc(0)), 1);
    let got = server.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.scheme, "http");
    assert_eq!(r.authority, "grpc-hello.example.cn-shadow:8000");
    assert_eq!(r.path, "/helloworld.Greeter/SayHello");
    assert_eq!(r.field("content-type"), Some(&b"application/grpc"[..]));
    assert_eq!(r.field("te"), Some(&b"trailers"[..]));
    assert_eq!(r.field("user-agent"), Some(&b"grpc-python/1.60"[..]));
    assert_eq!(r.field("grpc-timeout"), Some(&b"100m"[..]));
    assert_eq!(r.field("x-custom"), Some(&b"a  b"[..]));
    assert_eq!(r.field("trace-bin"), Some(&b"AQID"[..]));
    assert_eq!(r.field("x-forwarded-for"), Some(&b"192.0.2.10"[..]));
    assert_eq!(r.field("connection"), None);
    assert_eq!(r.body, call.body);
    assert_eq!(r.trailers, vec![("x-checksum".to_string(), b"42".to_vec())]);
}

/// A 200 whose trailers say `unavailable` is an error, and a trailers-only answer counts
/// by the status in its only HEADERS.
#[test]
fn grpc_status_comes_from_trailers_or_a_trailers_only_answer() {
    let server = H2Server::start(ServerOptions::default());
    let acc = run(
        target(&format!("http://{}", server.addr)),
        vec![
            grpc_call("/svc.S/Unavailable"),
            grpc_call("/svc.S/TrailersOnly"),
            grpc_call("/svc.S/Ok"),
        ],
    );
    assert_eq!(outcome(&acc, grpc(14)), 1);
    assert_eq!(outcome(&acc, grpc(5)), 1);
    assert_eq!(outcome(&acc, grpc(0)), 1);
    assert_eq!(grpc(14), Outcome::Grpc(GrpcStatus::parse(Some(b"14"))));
    assert_eq!(GrpcStatus::parse(Some(b"14")).label(), "unavailable");
}

/// One stream at a time and a 1 KiB window: 200 copies with 4 KiB bodies (and one of
/// 2 MiB) all arrive, each once and whole.
#[test]
fn small_target_gets_every_copy_once_and_whole() {
    let server = H2Server::start(ServerOptions {
        max_streams: Some(1),
        window: Some(1024),
        ..ServerOptions::default()
    });
    let body: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let big: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut requests: Vec<Request> = (0..200)
        .map(|i| h2_request(&format!("/n/{i}"), vec![], &body))
        .collect();
    requests.push(h2_request("/big", vec![], &big));
    let acc = run(target(&format!("http://{}", server.addr)), requests);
    assert_eq!(outcome(&acc, SUCCESS), 201);
    let got = server.received();
    assert_eq!(got.len(), 201);
    let mut paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), 201);
    for r in &got {
        let want = if r.path == "/big" { &big } else { &body };
        assert!(
            r.body == *want,
            "{} came with {} bytes",
            r.path,
            r.body.len()
        );
    }
    assert!(server.accepts.load(Ordering::SeqCst) <= 4);
}

/// A target that never answers: copies time out, the queue bounds what waits, and
/// everything is counted once.
#[test]
fn silent_target_times_out_and_the_queue_stays_bounded() {
    let server = H2Server::start(ServerOptions::default());
    let mut t = target(&format!("http://{}", server.addr));
    t.request_timeout = Duration::from_millis(300);
    t.queue_len = 4;
    t.max_in_flight = 2;
    let requests = (0..40).map(|_| grpc_call("/svc.S/silent")).collect();
    let acc = run(t, requests);
    let timeouts = outcome(&acc, Outcome::ReplayError(ReplayErrorKind::Timeout));
    let full = outcome(&acc, Outcome::QueueFull);
    assert!(timeouts >= 1, "{timeouts}");
    assert!(full >= 1, "{full}");
    assert_eq!(timeouts + full, 40);
    // The copy's deadline went with it.
    assert!(server
        .received()
        .iter()
        .all(|r| r.field("grpc-timeout") == Some(&b"300000u"[..])));
}

/// An answer longer than the body cap: the stream is reset (CANCEL) and the copy counts
/// by its head, well before the deadline.
#[test]
fn endless_answer_is_cut_off_at_the_cap() {
    let server = H2Server::start(ServerOptions::default());
    let mut t = target(&format!("http://{}", server.addr));
    t.max_response_body_bytes = 64 * 1024;
    t.request_timeout = Duration::from_secs(30);
    let started = Instant::now();
    let acc = run(t, vec![h2_request("/x/endless", vec![], b"")]);
    assert_eq!(outcome(&acc, SUCCESS), 1);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn target_down_is_a_connect_error() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let requests = (0..5).map(|_| grpc_call("/svc.S/Ok")).collect();
    let acc = run(target(&format!("http://{addr}")), requests);
    assert_eq!(
        outcome(&acc, Outcome::ReplayError(ReplayErrorKind::Connect)),
        5
    );
}

/// After a GOAWAY the copies go on a new connection, none lost.
#[test]
fn goaway_moves_copies_to_a_new_connection() {
    let server = H2Server::start(ServerOptions {
        goaway_after: Some(5),
        ..ServerOptions::default()
    });
    let t = target(&format!("http://{}", server.addr));
    let (r, acc) = start(t);
    for i in 0..20 {
        acc.seen(Protocol::H2);
        r.submit(captured(h2_request(&format!("/g/{i}"), vec![], b"x")));
        // One at a time, so that the GOAWAY comes between copies.
        let end = Instant::now() + Duration::from_secs(10);
        while r.pending() > 0 {
            assert!(Instant::now() < end);
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    r.shutdown(Duration::from_secs(1));
    adds_up(&acc);
    assert_eq!(outcome(&acc, SUCCESS), 20);
    let got = server.received();
    assert_eq!(got.len(), 20);
    let conns: std::collections::BTreeSet<usize> = got.iter().map(|r| r.conn).collect();
    assert!(conns.len() >= 4, "{conns:?}");
}

mod tls {
    use super::*;
    use shadowtap::replay::target::TlsOptions;

    /// A TLS acceptor for `localhost` offering `alpn`, and the CA's PEM.
    fn acceptor(alpn: &[&[u8]]) -> (tokio_rustls::TlsAcceptor, String) {
        let (config, ca) = support::localhost_tls(alpn);
        (tokio_rustls::TlsAcceptor::from(config), ca)
    }

    fn https_target(server: &H2Server, ca_pem: &str) -> (TargetConfig, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        let mut t = target(&format!("https://localhost:{}", server.addr.port()));
        t.tls = TlsOptions {
            ca_file: Some(ca),
            insecure: false,
        };
        (t, dir)
    }

    #[test]
    fn tls_target_that_picks_h2_gets_the_copy() {
        let (acceptor, ca) = acceptor(&[b"h2"]);
        let server = H2Server::start(ServerOptions {
            tls: Some(acceptor),
            ..ServerOptions::default()
        });
        let (t, _dir) = https_target(&server, &ca);
        let acc = run(t, vec![grpc_call("/svc.S/Ok"), grpc_call("/svc.S/Ok")]);
        assert_eq!(outcome(&acc, grpc(0)), 2);
        let got = server.received();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|r| r.scheme == "https"));
    }

    /// A TLS server that does not choose h2 (no ALPN in common) is a protocol error.
    #[test]
    fn tls_target_without_h2_is_a_protocol_error() {
        let (acceptor, ca) = acceptor(&[]);
        let server = H2Server::start(ServerOptions {
            tls: Some(acceptor),
            ..ServerOptions::default()
        });
        let (t, _dir) = https_target(&server, &ca);
        let acc = run(t, vec![grpc_call("/svc.S/Ok")]);
        assert_eq!(
            outcome(&acc, Outcome::ReplayError(ReplayErrorKind::Protocol)),
            1
        );
    }
}
