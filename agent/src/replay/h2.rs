//! The HTTP/2 client of one target: h2c with prior knowledge for `http://` targets, TLS
//! with ALPN `h2` for `https://` ones (a server that does not pick `h2` is a protocol
//! error), on the `h2` crate, which sends the copy's pseudo-fields, fields and trailers as
//! `rewrite::build_h2_request` made them.
//!
//! Connections: up to `MAX_CONNECTIONS` per target, opened one at a time as load needs
//! (every open one is full: as many of our streams as the target's
//! SETTINGS_MAX_CONCURRENT_STREAMS), through the same `Connector` as HTTP/1.1 (resolver,
//! connect deadline, SO_MARK, `OwnConnections`). Each has its driver task on the replay
//! runtime; a connection that fails or gets GOAWAY is marked broken and left for a new
//! one. Copies waiting for a connection that is being opened share its failure.
//!
//! A copy: wait for a stream slot (`SendRequest::ready`, which is how the target's stream
//! limit holds), send the head, the body as flow control grants capacity, then the
//! trailers, while reading the answer at the same time (a target may answer before it
//! has read the body). The body of the answer is read and dropped, its flow-control
//! capacity given back at once, up to `max_body_bytes`; past that the stream is reset
//! with CANCEL and the copy counts by what was seen. Everything after the connection is
//! inside `request_timeout`. A copy refused before the target processed it (GOAWAY above
//! its stream, REFUSED_STREAM, or a connection found dead before the request went out)
//! is sent once more on another connection (RFC 9113 8.7), within the same deadline.
//!
//! Collecting (issue 23, `send_collect` with a `Collect`): the answer also carries a
//! `ResponseSummary`: `:status`, the head's fields (`HeaderMap` order: names in the order
//! first seen, a name's values together; trailers are not kept), `grpc-status` as a
//! number from the trailers or a trailers-only answer (whatever `grpc` says; `None` when
//! absent or not a number), and the body's DATA through a `BodyDigest` finished with the
//! head's `content-encoding`. A body cut short (past `max_body_bytes`, a reset, the
//! deadline) keeps the length and hash of what came (at most `max_body_bytes` bytes) and
//! no body. Without `Collect` nothing of this runs.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, SendStream};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};

use super::client::{ClientOptions, Collect, Collected, Collector, Connector};
use super::resolve::Resolver;
use super::rewrite::H2Copy;
use crate::metrics::{GrpcStatus, ReplayErrorKind, StatusClass};

/// Connections per target at most: one carries a hundred streams or more at most
/// targets, more only help a target that allows few streams per connection.
pub const MAX_CONNECTIONS: usize = 4;

/// Receive windows: the answers' bodies are dropped as they come, so a large window only
/// saves WINDOW_UPDATE round trips; it costs no memory of ours.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// One connection to the target and what we know of it.
struct H2Connection {
    send: SendRequest<Bytes>,
    /// Our streams open on it now.
    streams: AtomicUsize,
    /// Failed or told to go away: no new stream goes on it.
    broken: Arc<AtomicBool>,
}

impl H2Connection {
    fn broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    fn full(&self) -> bool {
        self.streams.load(Ordering::Acquire) >= self.send.current_max_send_streams().max(1)
    }
}

/// Counts a stream on its connection while it lives.
struct StreamSlot(Arc<H2Connection>);

impl StreamSlot {
    fn new(conn: Arc<H2Connection>) -> Self {
        conn.streams.fetch_add(1, Ordering::AcqRel);
        Self(conn)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct Pool {
    conns: Vec<Arc<H2Connection>>,
    /// Connections being opened (at most one at a time).
    opening: usize,
    /// Opens that failed so far, and how the last one did: copies that waited for an
    /// open take its failure rather than wait out their own deadline.
    failures: u64,
    last_failure: Option<ReplayErrorKind>,
}

enum Pick {
    Use(Arc<H2Connection>),
    /// Open one more (counted in `opening` already).
    Open,
    /// Wait for the connection being opened; `failures` as it was.
    Wait {
        failures: u64,
    },
}

/// What an answer said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Answer {
    pub class: StatusClass,
    /// From the request handed to its connection to the response head read.
    pub head_after: Duration,
    /// For gRPC calls: the `grpc-status` of the trailers (or of a trailers-only answer);
    /// `MISSING` when none came (including a body cut off past the cap).
    pub grpc: Option<GrpcStatus>,
}

/// What went wrong with one attempt, and whether the target cannot have processed it.
#[derive(Clone, Copy)]
struct Failure {
    kind: ReplayErrorKind,
    retry: bool,
}

/// The HTTP/2 client of one target; shared by its replay tasks.
pub struct H2Client {
    opts: ClientOptions,
    connector: Connector,
    pool: Mutex<Pool>,
    /// Told when an open ends, either way.
    opened: Notify,
}

impl H2Client {
    /// `opts.tls` must offer ALPN `h2` (`target::h2_client_config`).
    pub fn new(opts: ClientOptions) -> Self {
        Self {
            connector: Connector::new(&opts, Resolver::system()),
            opts,
            pool: Mutex::new(Pool::default()),
            opened: Notify::new(),
        }
    }

    /// Open connections that take new streams.
    pub fn connections(&self) -> usize {
        self.pool().conns.iter().filter(|c| !c.broken()).count()
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `copy` with `body` and reads the answer. `grpc`: the answer's outcome is its
    /// `grpc-status`.
    pub async fn send(
        &self,
        copy: &H2Copy,
        body: Bytes,
        grpc: bool,
    ) -> Result<H2Answer, ReplayErrorKind> {
        self.send_collect(copy, body, grpc, None)
            .await
            .map(|collected| collected.answer)
    }

    /// `send`, also collecting the answer's `ResponseSummary` when `collect` is given
    /// (see the module's first lines); `summary` is `None` without it.
    pub async fn send_collect(
        &self,
        copy: &H2Copy,
        body: Bytes,
        grpc: bool,
        collect: Option<Collect>,
    ) -> Result<Collected<H2Answer>, ReplayErrorKind> {
        let mut retried = false;
        loop {
            // Built again for the retry: `h2` takes the head by value.
            let (head, trailers) = to_http(copy)?;
            let conn = self.connection().await?;
            let slot = StreamSlot::new(conn);
            match self
                .exchange(&slot.0, head, trailers, body.clone(), grpc, collect)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(f) if f.retry && !retried => retried = true,
                Err(f) => return Err(f.kind),
            }
        }
    }

    /// A connection with room for a stream, opening one when each is full (or none is
    /// open); within the connect deadline.
    async fn connection(&self) -> Result<Arc<H2Connection>, ReplayErrorKind> {
        let deadline = Instant::now() + self.opts.connect_timeout;
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            // Registered before the pool is read, so an open ending in between is seen.
            opened.as_mut().enable();
            let failures = match self.pick() {
                Pick::Use(c) => return Ok(c),
                Pick::Open => return self.open().await,
                Pick::Wait { failures } => failures,
            };
            if timeout_at(deadline, opened).await.is_err() {
                return Err(ReplayErrorKind::Timeout);
            }
            let pool = self.pool();
            if pool.failures != failures && pool.conns.is_empty() {
                return Err(pool.last_failure.unwrap_or(ReplayErrorKind::Connect));
            }
        }
    }

    /// What `connection` does next, decided under the pool's lock.
    fn pick(&self) -> Pick {
        let mut pool = self.pool();
        pool.conns.retain(|c| !c.broken());
        let least = pool
            .conns
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Acquire))
            .cloned();
        match least {
            Some(c) if !c.full() => Pick::Use(c),
            _ if pool.opening == 0 && pool.conns.len() < MAX_CONNECTIONS => {
                pool.opening += 1;
                Pick::Open
            }
            // All full: `ready` waits for a stream slot on the least busy one.
            Some(c) => Pick::Use(c),
            None => Pick::Wait {
                failures: pool.failures,
            },
        }
    }

    /// Opens a connection (the caller counted it in `opening`) and puts it in the pool.
    async fn open(&self) -> Result<Arc<H2Connection>, ReplayErrorKind> {
        let result = self.handshake().await;
        {
            let mut pool = self.pool();
            pool.opening -= 1;
            match &result {
                Ok(conn) => pool.conns.push(Arc::clone(conn)),
                Err(kind) => {
                    pool.failures += 1;
                    pool.last_failure = Some(*kind);
                }
            }
        }
        self.opened.notify_waiters();
        result
    }

    async fn handshake(&self) -> Result<Arc<H2Connection>, ReplayErrorKind> {
        let connected = self.connector.connect().await?;
        if self.opts.tls.is_some() && connected.alpn.as_deref() != Some(b"h2") {
            tracing::debug!(
                alpn = ?connected.alpn.as_deref().map(String::from_utf8_lossy),
                "HTTP/2 copy: the TLS target did not choose h2 by ALPN"
            );
            return Err(ReplayErrorKind::Protocol);
        }
        let mut builder = h2::client::Builder::new();
        builder
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(u32::try_from(self.opts.max_head_bytes).unwrap_or(u32::MAX));
        let deadline = Instant::now() + self.opts.connect_timeout;
        let (send, connection) = timeout_at(deadline, builder.handshake(connected.io))
            .await
            .map_err(|_| ReplayErrorKind::Timeout)?
            .map_err(|e| error_kind(&e))?;
        let broken = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&broken);
        let registration = connected.registration;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/2 copy: connection to the target ended");
            }
            flag.store(true, Ordering::Release);
            // Unregistered only now: the connection's last packets were sent.
            drop(registration);
        });
        Ok(Arc::new(H2Connection {
            send,
            streams: AtomicUsize::new(0),
            broken,
        }))
    }

    /// One copy on `conn`.
    async fn exchange(
        &self,
        conn: &H2Connection,
        head: http::Request<()>,
        trailers: Option<HeaderMap>,
        body: Bytes,
        grpc: bool,
        collect: Option<Collect>,
    ) -> Result<Collected<H2Answer>, Failure> {
        let started = Instant::now();
        let deadline = started + self.opts.request_timeout;
        let timed_out = Failure {
            kind: ReplayErrorKind::Timeout,
            retry: false,
        };
        // Nothing was sent if this fails: another connection may take it.
        let before_sending = |e: h2::Error| {
            conn.broken.store(true, Ordering::Release);
            Failure {
                kind: error_kind(&e),
                retry: true,
            }
        };
        let send = timeout_at(deadline, conn.send.clone().ready())
            .await
            .map_err(|_| timed_out)?;
        let mut send = send.map_err(before_sending)?;
        let end_of_stream = body.is_empty() && trailers.is_none();
        let (response, mut stream) = match send.send_request(head, end_of_stream) {
            Ok(sent) => sent,
            // A head `h2` refuses (a field it does not allow): no connection would take it.
            Err(e) if e.reason().is_none() && !e.is_io() => {
                tracing::debug!(error = %e, "HTTP/2 copy: head refused");
                return Err(Failure {
                    kind: ReplayErrorKind::Protocol,
                    retry: false,
                });
            }
            Err(e) => return Err(before_sending(e)),
        };
        let mut seen = Seen {
            collect,
            ..Seen::default()
        };
        let ended = {
            let exchange = async {
                let sending = send_body(&mut stream, body, trailers);
                let receiving =
                    receive(response, grpc, self.opts.max_body_bytes, started, &mut seen);
                tokio::pin!(sending, receiving);
                let mut sent = false;
                loop {
                    tokio::select! {
                        () = &mut sending, if !sent => sent = true,
                        received = &mut receiving => break received,
                    }
                }
            };
            timeout_at(deadline, exchange).await
        };
        let error = match &ended {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                if e.is_io() || e.is_go_away() {
                    conn.broken.store(true, Ordering::Release);
                }
                Some(e)
            }
            Err(_) => None,
        };
        let timed_out_after_sending = ended.is_err();
        if seen.cut || timed_out_after_sending || error.is_some() {
            // Whatever is left of the stream goes: the target stops sending it.
            stream.send_reset(Reason::CANCEL);
        }
        let complete = matches!(ended, Ok(Ok(())));
        match (seen.class, seen.head_after) {
            // An HTTP answer counts once its head is in; a gRPC call once its status is
            // (or its body was cut off, or it ended without one).
            (Some(class), Some(head_after)) if !grpc || seen.grpc.is_some() || complete => {
                let grpc_code = seen.grpc_code;
                Ok(Collected {
                    answer: H2Answer {
                        class,
                        head_after,
                        grpc: grpc.then(|| seen.grpc.unwrap_or(GrpcStatus::MISSING)),
                    },
                    summary: seen.collector.map(|c| c.finish(head_after, grpc_code)),
                })
            }
            _ => Err(match error {
                Some(e) => Failure {
                    kind: error_kind(e),
                    retry: seen.head_after.is_none() && refused(e),
                },
                None if timed_out_after_sending => timed_out,
                // A status outside 1xx-5xx (`h2` checks it is three digits).
                None => Failure {
                    kind: ReplayErrorKind::Protocol,
                    retry: false,
                },
            }),
        }
    }
}

/// What came back so far: kept outside the exchange so that a deadline in the middle of
/// the body still counts what was seen.
#[derive(Default)]
struct Seen {
    class: Option<StatusClass>,
    head_after: Option<Duration>,
    grpc: Option<GrpcStatus>,
    /// The body went past the cap: the stream must be reset.
    cut: bool,
    /// Collecting: what to collect, what was (boxed: one pointer when off), and the
    /// `grpc-status` as a number.
    collect: Option<Collect>,
    collector: Option<Box<Collector>>,
    grpc_code: Option<u32>,
}

/// Sends the body as flow control allows, then the trailers. A failure ends it quietly:
/// the answer (a reset, or one the target sent early) says how the copy went.
async fn send_body(stream: &mut SendStream<Bytes>, mut body: Bytes, trailers: Option<HeaderMap>) {
    while !body.is_empty() {
        stream.reserve_capacity(body.len());
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(granted)) => granted,
            // Closed or reset.
            Some(Err(_)) | None => return,
        };
        let chunk = body.split_to(granted.min(body.len()));
        if chunk.is_empty() {
            continue;
        }
        let last = body.is_empty() && trailers.is_none();
        if stream.send_data(chunk, last).is_err() {
            return;
        }
    }
    if let Some(trailers) = trailers {
        let _ = stream.send_trailers(trailers);
    }
}

/// Reads the answer into `seen`: head, body (dropped, capacity released as it comes, up
/// to `max_body` bytes) and trailers.
async fn receive(
    response: ResponseFuture,
    grpc: bool,
    max_body: u64,
    started: Instant,
    seen: &mut Seen,
) -> Result<(), h2::Error> {
    let response = response.await?;
    seen.head_after = Some(started.elapsed());
    let status = response.status().as_u16();
    seen.class = StatusClass::of(status);
    let grpc_status = |fields: &HeaderMap| {
        fields
            .get("grpc-status")
            .map(|v| GrpcStatus::parse(Some(v.as_bytes())))
    };
    if grpc {
        // A trailers-only answer carries it in its only HEADERS.
        seen.grpc = grpc_status(response.headers());
    }
    if let Some(collect) = seen.collect {
        let mut c = Collector::new(collect, status, max_body);
        for (name, value) in response.headers() {
            c.field(name.as_str().as_bytes(), value.as_bytes());
        }
        seen.collector = Some(Box::new(c));
        seen.grpc_code = grpc_code(response.headers());
    }
    let mut body = response.into_body();
    let mut read = 0u64;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        read += chunk.len() as u64;
        let _ = body.flow_control().release_capacity(chunk.len());
        if let Some(c) = seen.collector.as_deref_mut() {
            c.body(&chunk);
        }
        if read > max_body {
            seen.cut = true;
            return Ok(());
        }
    }
    if let Some(c) = seen.collector.as_deref_mut() {
        c.complete = true;
    }
    if let Some(trailers) = body.trailers().await? {
        if grpc {
            if let Some(status) = grpc_status(&trailers) {
                seen.grpc = Some(status);
            }
        }
        if seen.collector.is_some() {
            if let Some(code) = grpc_code(&trailers) {
                seen.grpc_code = Some(code);
            }
        }
    }
    Ok(())
}

/// `grpc-status` as a number, for the summary.
fn grpc_code(fields: &HeaderMap) -> Option<u32> {
    let value = fields.get("grpc-status")?;
    std::str::from_utf8(value.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The target refused the stream before processing it (RFC 9113 8.7): safe to send again.
fn refused(e: &h2::Error) -> bool {
    e.is_go_away() || e.reason() == Some(Reason::REFUSED_STREAM)
}

fn error_kind(e: &h2::Error) -> ReplayErrorKind {
    if let Some(io) = e.get_io() {
        return match io.kind() {
            std::io::ErrorKind::TimedOut => ReplayErrorKind::Timeout,
            _ => ReplayErrorKind::Reset,
        };
    }
    match e.reason() {
        // We found the target breaking the protocol (h2 sent the GOAWAY or RST_STREAM).
        Some(Reason::PROTOCOL_ERROR | Reason::COMPRESSION_ERROR | Reason::FRAME_SIZE_ERROR)
            if e.is_library() =>
        {
            ReplayErrorKind::Protocol
        }
        Some(_) => ReplayErrorKind::Reset,
        // A local error: what we tried to send is not valid HTTP/2.
        None => ReplayErrorKind::Protocol,
    }
}

/// The copy as `h2` takes it. A value `http` refuses (a control byte, a `:path` it would
/// change) is a protocol error: the copy is never sent altered.
fn to_http(copy: &H2Copy) -> Result<(http::Request<()>, Option<HeaderMap>), ReplayErrorKind> {
    let refused = |what: &str| {
        tracing::debug!(what, "HTTP/2 copy: not a valid HTTP/2 head, not sent");
        ReplayErrorKind::Protocol
    };
    let method = Method::from_bytes(copy.method.as_bytes()).map_err(|_| refused("method"))?;
    let authority =
        Authority::try_from(copy.authority.as_slice()).map_err(|_| refused(":authority"))?;
    let path = PathAndQuery::try_from(copy.path.as_slice()).map_err(|_| refused(":path"))?;
    // `http` drops a fragment and turns an empty path into `/`.
    if path.as_str().as_bytes() != copy.path.as_slice() {
        return Err(refused(":path"));
    }
    let uri = Uri::builder()
        .scheme(copy.scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| refused(":path"))?;
    let fields = |list: &[(Vec<u8>, Vec<u8>)]| -> Result<HeaderMap, ReplayErrorKind> {
        let mut map = HeaderMap::with_capacity(list.len());
        for (name, value) in list {
            let name = HeaderName::from_bytes(name).map_err(|_| refused("field name"))?;
            let value = HeaderValue::from_bytes(value).map_err(|_| refused("field value"))?;
            map.append(name, value);
        }
        Ok(map)
    };
    let mut head = http::Request::new(());
    *head.method_mut() = method;
    *head.uri_mut() = uri;
    *head.headers_mut() = fields(&copy.headers)?;
    let trailers = if copy.trailers.is_empty() {
        None
    } else {
        Some(fields(&copy.trailers)?)
    };
    Ok((head, trailers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(path: &str) -> H2Copy {
        H2Copy {
            method: "POST".into(),
            scheme: "http",
            authority: b"svc-shadow:8000".to_vec(),
            path: path.as_bytes().to_vec(),
            headers: vec![(b"x-a".to_vec(), b"1".to_vec())],
            trailers: vec![],
        }
    }

    /// `receive` over an in-memory connection: `answer` is what the server sends.
    async fn received(
        answer: fn(h2::server::SendResponse<Bytes>),
        collect: Option<Collect>,
        max_body: u64,
    ) -> Seen {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            if let Some(Ok((_req, respond))) = conn.accept().await {
                answer(respond);
            }
            while conn.accept().await.is_some() {}
        });
        let (mut send, conn) = h2::client::handshake(client_io).await.unwrap();
        tokio::spawn(conn);
        let head = http::Request::get("http://t/x").body(()).unwrap();
        let (response, _stream) = send.send_request(head, true).unwrap();
        let mut seen = Seen {
            collect,
            ..Seen::default()
        };
        let _ = receive(response, true, max_body, Instant::now(), &mut seen).await;
        seen
    }

    const COLLECT: Option<Collect> = Some(Collect { max_body: 1024 });

    fn trailers(code: &str) -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", code.parse().unwrap());
        t
    }

    #[tokio::test]
    async fn receive_collects_status_fields_body_and_grpc_status() {
        let seen = received(
            |mut respond| {
                let head = http::Response::builder()
                    .status(200)
                    .header("content-type", "application/grpc")
                    .header("x-b", "2")
                    .body(())
                    .unwrap();
                let mut stream = respond.send_response(head, false).unwrap();
                stream.send_data(Bytes::from_static(b"ab"), false).unwrap();
                stream.send_data(Bytes::from_static(b"cd"), false).unwrap();
                stream.send_trailers(trailers("14")).unwrap();
            },
            COLLECT,
            1 << 20,
        )
        .await;
        assert_eq!(seen.grpc, Some(GrpcStatus::parse(Some(b"14"))));
        let s = seen
            .collector
            .unwrap()
            .finish(Duration::ZERO, seen.grpc_code);
        assert_eq!((s.status, s.grpc_status), (200, Some(14)));
        assert_eq!(
            s.headers,
            vec![
                ("content-type".to_string(), b"application/grpc".to_vec()),
                ("x-b".to_string(), b"2".to_vec())
            ]
        );
        assert_eq!((s.body_len, s.body.as_deref()), (4, Some(&b"abcd"[..])));
    }

    #[tokio::test]
    async fn receive_trailers_only_and_cut_off_bodies() {
        let trailers_only = |mut respond: h2::server::SendResponse<Bytes>| {
            let head = http::Response::builder()
                .status(200)
                .header("grpc-status", "5")
                .body(())
                .unwrap();
            respond.send_response(head, true).unwrap();
        };
        let seen = received(trailers_only, COLLECT, 1 << 20).await;
        let s = seen
            .collector
            .unwrap()
            .finish(Duration::ZERO, seen.grpc_code);
        assert_eq!(
            (s.grpc_status, s.body_len, s.body),
            (Some(5), 0, Some(vec![]))
        );
        // Not collecting: nothing kept.
        let seen = received(trailers_only, None, 1 << 20).await;
        assert!(seen.collector.is_none() && seen.grpc_code.is_none());
        // Past the client's cap: the first `max_body` bytes hashed, no body.
        let seen = received(
            |mut respond| {
                let head = http::Response::builder().status(503).body(()).unwrap();
                let mut stream = respond.send_response(head, false).unwrap();
                stream
                    .send_data(Bytes::from_static(b"0123456789"), true)
                    .unwrap();
            },
            COLLECT,
            4,
        )
        .await;
        assert!(seen.cut);
        let s = seen
            .collector
            .unwrap()
            .finish(Duration::ZERO, seen.grpc_code);
        assert_eq!((s.status, s.body_len, s.body), (503, 4, None));
        assert_eq!(s.body_hash, crate::diff::response::Fnv64::of(b"0123"));
    }

    #[test]
    fn heads_http_would_alter_are_refused() {
        assert!(to_http(&copy("/a/b?c=%zz")).is_ok());
        for path in ["", "/a#frag", "/a b"] {
            assert_eq!(
                to_http(&copy(path)).err(),
                Some(ReplayErrorKind::Protocol),
                "{path:?}"
            );
        }
        let mut bad = copy("/");
        bad.headers.push((b"x-b".to_vec(), b"a\0b".to_vec()));
        assert_eq!(to_http(&bad).err(), Some(ReplayErrorKind::Protocol));
        let mut bad = copy("/");
        bad.authority = b"a b".to_vec();
        assert_eq!(to_http(&bad).err(), Some(ReplayErrorKind::Protocol));
        let mut with_trailers = copy("/");
        with_trailers
            .trailers
            .push((b"grpc-x".to_vec(), b"1".to_vec()));
        let (head, trailers) = to_http(&with_trailers).unwrap();
        assert_eq!(head.uri().to_string(), "http://svc-shadow:8000/");
        assert_eq!(trailers.unwrap().len(), 1);
    }
}
