//! The admin HTTP server: `/metrics` (Prometheus text format 0.0.4, or OpenMetrics 1.0
//! for `Accept: application/openmetrics-text`), `/healthz` and `/readyz`. It runs on a
//! thread and a tokio runtime of its own, so it answers however busy the capture thread
//! and the replay runtime are, and it stops when its `AdminServer` is dropped. Idle and slow clients cannot starve a probe: each gets
//! `HEAD_TIMEOUT` for its whole request head, and once `MAX_CONNECTIONS` are open a new
//! connection evicts the one that has waited longest for its head.
//!
//! HTTP on hyper 1 (one request per connection, head size and head deadline bounded);
//! the accept loop, the connection table and eviction are this module's, as hyper's
//! server has no connection limit.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::metrics::{Format, Readiness, Registry};

/// Connections open at once. Past it, a new connection takes the place of the one that
/// has waited longest for its request head, so idle or slow clients holding every place
/// cannot turn a probe away (a kubelet whose probe fails restarts a healthy agent), and
/// the server's file descriptors stay bounded. A scraper and two probes need three.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest request head read; a longer one gets 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Deadline for the whole request head, from accept: a client sending a byte at a time
/// gets no longer than one that sends nothing. Probes and scrapers send theirs at once.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline for writing the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections the kernel may hold before they are accepted (capped by somaxconn). Past
/// the backlog a SYN is dropped and retried a second later: a probe's whole timeout.
const LISTEN_BACKLOG: libc::c_int = 1024;

/// `Content-Type` of `/metrics` in the text format (the default).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("--admin-addr {addr}: {source} (use another address, or `off`)")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start the admin server: {0}")]
    Runtime(io::Error),
}

/// A running admin server; dropping it stops it and closes the port.
pub struct AdminServer {
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The admin server's socket, bound and not served yet. Binding is split from serving so
/// that `run` binds while it still may (a port below 1024 needs NET_BIND_SERVICE), drops
/// its capabilities, and only then starts the server's thread.
#[derive(Debug)]
pub struct AdminListener {
    listener: std::net::TcpListener,
    local: SocketAddr,
}

impl AdminListener {
    /// Binds `addr` now, so that a port in use is an error at start-up.
    pub fn bind(addr: SocketAddr) -> Result<Self, AdminError> {
        let at = |source| AdminError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(at)?;
        // std listens with a backlog of 128; listening again only changes the backlog.
        // SAFETY: listen on a socket this function owns, no pointers involved.
        if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
            return Err(at(io::Error::last_os_error()));
        }
        let local = listener.local_addr().map_err(at)?;
        listener.set_nonblocking(true).map_err(at)?;
        Ok(Self { listener, local })
    }

    /// The address bound (tells the port when `addr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves from a thread of its own until the returned server is dropped.
    pub fn serve(self, registry: Arc<Registry>) -> Result<AdminServer, AdminError> {
        let Self { listener, local } = self;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("shadowtap-admin")
            .build()
            .map_err(AdminError::Runtime)?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("shadowtap-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, registry, stopped).await,
                        Err(e) => tracing::error!(error = %e, "admin server cannot listen"),
                    }
                });
                // Dropping the runtime here cancels connections still open.
            })
            .map_err(AdminError::Runtime)?;
        tracing::info!(addr = %local, "admin server listening (/metrics, /healthz, /readyz)");
        Ok(AdminServer {
            local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl AdminServer {
    /// Binds `addr` now and serves from a thread of its own.
    pub fn start(addr: SocketAddr, registry: Arc<Registry>) -> Result<Self, AdminError> {
        AdminListener::bind(addr)?.serve(registry)
    }

    /// The address bound (tells the port when `addr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The connections being served, in accept order (ids only grow).
#[derive(Default)]
struct Connections {
    next_id: u64,
    /// While a connection is still reading its head, the sender that evicts it; `None`
    /// once it is being answered (it ends within `WRITE_TIMEOUT` by itself).
    open: BTreeMap<u64, Option<oneshot::Sender<()>>>,
}

type Shared = Arc<Mutex<Connections>>;

fn lock(connections: &Shared) -> std::sync::MutexGuard<'_, Connections> {
    connections.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connections {
    /// Makes room for one more connection (evicting the one that has waited longest for
    /// its head when all places are taken) and registers it. None when every connection
    /// is being answered, which only a flood of complete requests causes.
    fn admit(&mut self) -> Option<(u64, oneshot::Receiver<()>)> {
        if self.open.len() >= MAX_CONNECTIONS {
            let oldest = self
                .open
                .iter()
                .find(|(_, evict)| evict.is_some())
                .map(|(id, _)| *id)?;
            if let Some(Some(evict)) = self.open.remove(&oldest) {
                let _ = evict.send(());
            }
            tracing::debug!(
                connection = oldest,
                "admin: evicted the oldest unfinished head"
            );
        }
        let id = self.next_id;
        self.next_id += 1;
        let (evict, evicted) = oneshot::channel();
        self.open.insert(id, Some(evict));
        Some((id, evicted))
    }
}

/// Takes a connection out of the table however its task ends.
struct Registered {
    connections: Shared,
    id: u64,
}

impl Registered {
    /// The head is in: answering is quick and bounded, so it is no longer evicted.
    fn answering(&self) {
        if let Some(evict) = lock(&self.connections).open.get_mut(&self.id) {
            *evict = None;
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.connections).open.remove(&self.id);
    }
}

async fn serve(listener: TcpListener, registry: Arc<Registry>, mut stopped: oneshot::Receiver<()>) {
    let connections = Shared::default();
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::debug!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (admitted, evicting) = {
            let mut table = lock(&connections);
            let full = table.open.len() >= MAX_CONNECTIONS;
            (table.admit(), full)
        };
        let Some((id, evicted)) = admitted else {
            drop(stream);
            continue;
        };
        if evicting {
            // Lets the evicted task close its socket before the next accept, so that a
            // burst of connections never holds more than MAX_CONNECTIONS descriptors.
            tokio::task::yield_now().await;
        }
        let registered = Registered {
            connections: connections.clone(),
            id,
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, registry, evicted, Arc::new(registered)).await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

/// One request, one response, then the connection is closed. Ends early, without an
/// answer, when `evicted` fires or the head is not in within `HEAD_TIMEOUT`.
async fn handle(
    stream: TcpStream,
    registry: Arc<Registry>,
    mut evicted: oneshot::Receiver<()>,
    registered: Arc<Registered>,
) -> Result<(), hyper::Error> {
    let answering = Arc::new(AtomicBool::new(false));
    let service = {
        let answering = answering.clone();
        let registered = registered.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            // The head is in: from here the connection is no longer evicted.
            answering.store(true, Ordering::Release);
            registered.answering();
            let accept = request
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let response = route_accepting(request.method().as_str(), target, accept, &registry);
            std::future::ready(Ok::<_, std::convert::Infallible>(response.into_http()))
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .keep_alive(false)
        // `Content-Type`, as the hand-written server wrote it (and curl -i shows).
        .title_case_headers(true)
        // hyper answers 431 past it (its least is 8 KiB).
        .max_buf_size(MAX_REQUEST_HEAD);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(connection);
    // hyper's header timer starts with the first byte; a client that sends nothing is
    // held to the same deadline from accept.
    let head_deadline = tokio::time::sleep(HEAD_TIMEOUT);
    tokio::pin!(head_deadline);
    let write_deadline = tokio::time::sleep(HEAD_TIMEOUT + WRITE_TIMEOUT);
    tokio::pin!(write_deadline);
    let mut eviction_seen = false;
    loop {
        tokio::select! {
            served = &mut connection => return served,
            // Fired, or its sender dropped once the head was in: only the first stops.
            _ = &mut evicted, if !eviction_seen => {
                eviction_seen = true;
                if !answering.load(Ordering::Acquire) {
                    return Ok(());
                }
            }
            () = &mut head_deadline, if !answering.load(Ordering::Acquire) => return Ok(()),
            () = &mut write_deadline => return Ok(()),
        }
    }
}

/// A response of the admin server.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// HEAD: the headers of the GET, no body.
    pub head_only: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
            head_only: false,
        }
    }

    fn into_http(self) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
        let body = if self.head_only {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(self.body.clone())
        };
        let mut response = hyper::Response::new(http_body_util::Full::new(body));
        *response.status_mut() = hyper::StatusCode::from_u16(self.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(self.content_type),
        );
        headers.insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_static("no-store"),
        );
        if self.status == 405 {
            headers.insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("GET, HEAD"),
            );
        }
        if self.head_only {
            // The length of the GET's body, as HEAD promises.
            headers.insert(hyper::header::CONTENT_LENGTH, self.body.len().into());
        }
        response
    }

    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        };
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// What a request without an `Accept` header gets; the query string is ignored.
pub fn route(method: &str, target: &str, registry: &Registry) -> Response {
    route_accepting(method, target, None, registry)
}

/// What a request gets; `/metrics` answers in the format `accept` asks for.
pub fn route_accepting(
    method: &str,
    target: &str,
    accept: Option<&str>,
    registry: &Registry,
) -> Response {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return Response::text(404, "not found: try /metrics, /healthz or /readyz\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Response::text(405, "only GET and HEAD\n"),
    };
    let mut response = match path {
        "/metrics" => {
            let format = Format::from_accept(accept);
            Response {
                status: 200,
                content_type: format.content_type(),
                body: registry.render_as(format),
                head_only: false,
            }
        }
        "/healthz" => Response::text(200, "ok\n"),
        _ => match registry.readiness() {
            Readiness::Ready => Response::text(200, "ready\n"),
            Readiness::NoInterface => {
                Response::text(503, "not ready: capture is attached to no interface yet\n")
            }
            Readiness::ShuttingDown => Response::text(503, "not ready: shutting down\n"),
        },
    };
    response.head_only = head_only;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Accounting;

    fn registry() -> Arc<Registry> {
        Arc::new(Registry::new(Arc::new(Accounting::new(vec![
            "http://stage:8080".into(),
        ]))))
    }

    #[test]
    fn metrics_negotiate_openmetrics_on_accept() {
        let reg = registry();
        let om = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        for accept in [
            "application/openmetrics-text",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            "text/plain;q=0.5, Application/OpenMetrics-Text",
        ] {
            let r = route_accepting("GET", "/metrics", Some(accept), &reg);
            assert_eq!(r.content_type, om, "{accept}");
            assert!(r.body.ends_with("# EOF\n"), "{accept}");
        }
        for accept in [
            None,
            Some("text/plain"),
            Some("*/*"),
            Some("application/openmetrics-text;q=0"),
        ] {
            let r = route_accepting("GET", "/metrics", accept, &reg);
            assert_eq!(r.content_type, METRICS_CONTENT_TYPE, "{accept:?}");
            assert!(!r.body.contains("# EOF"), "{accept:?}");
        }
    }

    #[test]
    fn routes() {
        let reg = registry();
        assert_eq!(route("GET", "/healthz", &reg).status, 200);
        assert_eq!(route("GET", "/nope", &reg).status, 404);
        assert_eq!(route("GET", "/metricsx", &reg).status, 404);
        assert_eq!(route("POST", "/metrics", &reg).status, 405);
        let metrics = route("GET", "/metrics?x=1", &reg);
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.content_type, METRICS_CONTENT_TYPE);
        assert!(
            metrics.body.contains("shadowtap_ready 0\n"),
            "{}",
            metrics.body
        );
        let head = route("HEAD", "/metrics", &reg);
        assert!(head.head_only);
        let encoded = String::from_utf8(head.encode()).unwrap();
        assert!(encoded.ends_with("\r\n\r\n"), "{encoded}");
        assert!(encoded.contains(&format!("Content-Length: {}\r\n", head.body.len())));
    }

    #[test]
    fn readyz_follows_attachment_then_shutdown() {
        let reg = registry();
        assert_eq!(route("GET", "/readyz", &reg).status, 503);
        reg.set_interfaces_attached(2);
        assert_eq!(route("GET", "/readyz", &reg).status, 200);
        assert!(reg.render().contains("shadowtap_ready 1\n"));
        reg.begin_shutdown();
        let r = route("GET", "/readyz", &reg);
        assert_eq!(r.status, 503);
        assert!(r.body.contains("shutting down"));
        assert_eq!(route("GET", "/healthz", &reg).status, 200);
    }

    /// Raw request bytes to a real server on loopback; returns the response text.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn serves_over_tcp_and_bounds_what_it_reads() {
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), registry()).unwrap();
        let addr = server.local_addr();
        let ok = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
        // Split across writes: the head is read until complete.
        let split = {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metr").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(b"ics HTTP/1.1\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert!(
            split.contains("Content-Type: text/plain; version=0.0.4"),
            "{split}"
        );
        assert!(split.contains("# TYPE shadowtap_requests_total counter"));
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST_HEAD + 100, b'a');
        let big = exchange(addr, &huge);
        assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
        let bad = exchange(addr, b"\x00\x01garbage\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        drop(server);
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "port still open after drop"
        );
    }

    /// Whether the server closed `s` within `wait` (EOF or reset), as a client sees it.
    fn closed_within(s: &std::net::TcpStream, wait: Duration) -> bool {
        use std::io::Read;
        s.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        match (&*s).read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn answers_at_once_while_every_place_is_held_by_idle_connections() {
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), registry()).unwrap();
        let addr = server.local_addr();
        // Idle connections that never send a byte take every place...
        let idle: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        // ...and a probe is answered at once, in the place of the oldest of them.
        let started = std::time::Instant::now();
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(closed_within(&idle[0], Duration::from_millis(500)));
        assert!(!closed_within(
            &idle[MAX_CONNECTIONS - 1],
            Duration::from_millis(100)
        ));
        // The head deadline closes the rest.
        std::thread::sleep(HEAD_TIMEOUT);
        let open = idle
            .iter()
            .filter(|s| !closed_within(s, Duration::from_millis(10)))
            .count();
        assert_eq!(open, 0, "idle connections open after the head deadline");
    }
}
