//! Our own minimal HTTP/1.1 client for one target: a keep-alive pool, connect and request
//! deadlines, and a response reader that throws the body away.
//!
//! Why not reqwest or hyper: they rebuild the request from a typed model, lower-casing
//! or re-ordering header names and re-encoding the request-target, and the copy must be
//! the bytes the client sent (SPEC.md "The copy is the request"). Here the bytes from
//! `build_shadow_request` go to the socket as they are.
//!
//! Reading the response: the head is parsed with httparse (at most `max_head_bytes`),
//! interim 1xx responses other than 101 are skipped, and the body is read by its framing
//! (none for HEAD, 1xx, 204 and 304; chunked; Content-Length; else until close) into a
//! fixed buffer, never held whole. Once a head is parsed the request counts as replayed
//! with that status class, whatever happens to the body; a body past `max_body_bytes`, a
//! bad chunk or a deadline in the body only closes the connection. Redirects are not
//! followed: a 3xx is a status class like any other.
//!
//! Collecting (issue 23, opt-in with `Collect`, `send_collect`): the answer also carries a
//! `ResponseSummary` for the diff: the full status, the head's fields (names lower-cased,
//! in order, at most `MAX_KEPT_HEADERS`), and the body (de-chunked) through a
//! `BodyDigest`, finished with the answer's `content-encoding`. The body is then read to
//! its end even when it came whole with the head. A body cut short (past
//! `max_body_bytes`, a deadline, a reset, a bad chunk) keeps the length and hash of what
//! was read, at most `max_body_bytes` bytes, and no body (`None`). An answer without body
//! (HEAD, 1xx, 204, 304, length 0) has an empty body whatever its `content-encoding`.
//! Without `Collect` nothing of this runs and nothing is allocated for it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsConnector;

use super::resolve::Resolver;
use crate::diff::response::BodyDigest;
use crate::diff::{ResponseSummary, MAX_KEPT_HEADERS};
use crate::metrics::{ReplayErrorKind, StatusClass};
use crate::own_traffic::OwnConnections;

/// A byte stream to a target, plain or TLS.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Connection {
    io: Box<dyn Stream>,
    /// Registered in `OwnConnections` while open.
    _registration: Option<Registration>,
    /// Response bytes land here, head and body alike, reused for every request on the
    /// connection: no allocation per copy, and no large buffer inside each task's future.
    buf: Vec<u8>,
}

/// Initial size of a connection's read buffer; a head that does not fit grows it, up to
/// `max_head_bytes`.
const READ_BUF: usize = 4096;

/// A connection's local address in `OwnConnections`, from before its first byte until it
/// is dropped.
pub(crate) struct Registration {
    local: SocketAddr,
    own: Arc<OwnConnections>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.own.closed(self.local);
    }
}

/// TLS settings of an `https` target.
#[derive(Clone)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    /// SNI and the name the certificate must carry: the target URL's host.
    pub server_name: ServerName<'static>,
}

/// Limits and addresses of one target's client.
#[derive(Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsTarget>,
    pub connect_timeout: Duration,
    /// From the first byte written to the end of the response head.
    pub request_timeout: Duration,
    pub max_head_bytes: usize,
    /// Body bytes read from one response before the connection is closed instead.
    pub max_body_bytes: u64,
    /// Idle keep-alive connections kept for reuse.
    pub max_idle: usize,
    /// SO_MARK for every socket (0: none), so the eBPF classifier skips our traffic.
    pub socket_mark: u32,
    /// Where connections register their local address, so capture skips them.
    pub own: Option<Arc<OwnConnections>>,
}

/// The client of one target; shared by that target's replay tasks.
pub struct ShadowClient {
    opts: ClientOptions,
    idle: Mutex<VecDeque<Connection>>,
    connector: Connector,
}

/// What went wrong, and whether it happened before the target sent a byte back. A pooled
/// connection that fails that way was most likely closed by the target while idle (the
/// keep-alive race), so the request is sent once more on a new connection, as HTTP
/// clients do; a timeout is never retried.
struct Failure {
    kind: ReplayErrorKind,
    nothing_received: bool,
}

impl Failure {
    fn early(kind: ReplayErrorKind) -> Self {
        Self {
            kind,
            nothing_received: true,
        }
    }
}

fn io_kind(e: &io::Error) -> ReplayErrorKind {
    match e.kind() {
        io::ErrorKind::TimedOut => ReplayErrorKind::Timeout,
        io::ErrorKind::InvalidData => ReplayErrorKind::Protocol,
        _ => ReplayErrorKind::Reset,
    }
}

impl ShadowClient {
    pub fn new(opts: ClientOptions) -> Self {
        Self::with_resolver(opts, Resolver::system())
    }

    /// A client that looks its target's name up with `resolver` (tests give a slow one).
    pub fn with_resolver(opts: ClientOptions, resolver: Arc<Resolver>) -> Self {
        Self {
            connector: Connector::new(&opts, resolver),
            opts,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// Connections currently idle in the pool.
    pub fn idle_connections(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn take_idle(&self) -> Option<Connection> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_back()
    }

    fn put_idle(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.opts.max_idle {
            idle.push_back(conn);
        }
    }

    /// Sends `request` (exact bytes) and reads the response. `no_body` says the response has
    /// no body whatever its headers say (HEAD, CONNECT); `keep_alive` false closes the
    /// connection after.
    pub async fn send(
        &self,
        request: &[u8],
        no_body: bool,
        keep_alive: bool,
    ) -> Result<StatusClass, ReplayErrorKind> {
        self.send_timed(request, no_body, keep_alive)
            .await
            .map(|answer| answer.class)
    }

    /// `send`, also telling how long the response head took.
    pub async fn send_timed(
        &self,
        request: &[u8],
        no_body: bool,
        keep_alive: bool,
    ) -> Result<Answer, ReplayErrorKind> {
        self.send_collect(request, no_body, keep_alive, None)
            .await
            .map(|collected| collected.answer)
    }

    /// `send_timed`, also collecting the answer's `ResponseSummary` when `collect` is
    /// given (see the module's first lines); `summary` is `None` without it.
    pub async fn send_collect(
        &self,
        request: &[u8],
        no_body: bool,
        keep_alive: bool,
        collect: Option<Collect>,
    ) -> Result<Collected<Answer>, ReplayErrorKind> {
        let mut may_reuse = true;
        loop {
            let idle = if may_reuse { self.take_idle() } else { None };
            let (conn, reused) = match idle {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            match self.exchange(conn, request, no_body, collect).await {
                Ok((answer, conn)) => {
                    if let Some(conn) = conn.filter(|_| keep_alive) {
                        self.put_idle(conn);
                    }
                    return Ok(answer);
                }
                // The retry goes on a new connection, so it happens at most once.
                Err(f) if reused && f.nothing_received && f.kind != ReplayErrorKind::Timeout => {
                    may_reuse = false;
                }
                Err(f) => return Err(f.kind),
            }
        }
    }

    async fn connect(&self) -> Result<Connection, ReplayErrorKind> {
        let connected = self.connector.connect().await?;
        Ok(Connection {
            io: connected.io,
            _registration: connected.registration,
            buf: vec![0; READ_BUF],
        })
    }

    /// One request and its response on `conn`; the connection comes back when it can
    /// carry another request.
    async fn exchange(
        &self,
        mut conn: Connection,
        request: &[u8],
        no_body: bool,
        collect: Option<Collect>,
    ) -> Result<(Collected<Answer>, Option<Connection>), Failure> {
        let started = Instant::now();
        let deadline = started + self.opts.request_timeout;
        // One timer for the request and the response head: each timer is a registration
        // in the runtime's wheel, and this runs once per shadow copy.
        let max_head = self.opts.max_head_bytes;
        let head = async {
            let sent = async {
                conn.io.write_all(request).await?;
                conn.io.flush().await
            };
            sent.await.map_err(|e| Failure::early(io_kind(&e)))?;
            read_head(&mut *conn.io, &mut conn.buf, max_head, no_body).await
        };
        let response = timeout_at(deadline, head)
            .await
            .map_err(|_| Failure::early(ReplayErrorKind::Timeout))??;
        let answer = Answer {
            class: response.class,
            head_after: started.elapsed(),
        };
        // Boxed: the exchange's future stays as small as without collecting.
        let mut collector = collect.map(|c| {
            Box::new(Collector::from_head(
                c,
                &conn.buf[..response.head_len],
                self.opts.max_body_bytes,
            ))
        });
        let leftover = response.head_len..response.filled;
        let in_buffer = body_in_buffer(response.framing, &conn.buf[leftover.clone()]);
        let clean = match (in_buffer, collector.as_deref_mut()) {
            (Some(clean), None) => clean,
            (Some(clean), Some(c)) => {
                if let Framing::Length(n) = response.framing {
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    c.body(&conn.buf[leftover.start..leftover.end.min(leftover.start + n)]);
                }
                c.complete = true;
                clean
            }
            (None, sink) => {
                // The body gets what is left of the request deadline, and at least a
                // moment to drain small bodies that arrive with the head.
                let body_deadline = deadline.max(Instant::now() + Duration::from_millis(10));
                timeout_at(
                    body_deadline,
                    discard_body(
                        &mut *conn.io,
                        &mut conn.buf,
                        leftover,
                        response.framing,
                        self.opts.max_body_bytes,
                        sink,
                    ),
                )
                .await
                .unwrap_or(false)
            }
        };
        let reusable = clean && response.keep_alive && response.framing != Framing::Close;
        if !reusable {
            // Best effort: a polite close lets the target free the connection at once.
            let _ = timeout(Duration::from_millis(50), conn.io.shutdown()).await;
        }
        let collected = Collected {
            answer,
            summary: collector.map(|c| c.finish(answer.head_after, None)),
        };
        Ok((collected, reusable.then_some(conn)))
    }
}

/// Opens connections to one target, for the HTTP/1.1 and the HTTP/2 client alike: the
/// name looked up at connect time, every address tried within the connect deadline, the
/// socket marked before its SYN, its local address registered before its first byte, and
/// the TLS handshake (inside the same deadline) for `https`.
pub(crate) struct Connector {
    host: String,
    port: u16,
    tls: Option<TlsTarget>,
    connect_timeout: Duration,
    socket_mark: u32,
    own: Option<Arc<OwnConnections>>,
    resolver: Arc<Resolver>,
}

/// An open connection and what came with it.
pub(crate) struct Connected {
    pub io: Box<dyn Stream>,
    pub registration: Option<Registration>,
    /// The protocol the TLS server chose by ALPN (`None` for plain TCP or no ALPN).
    pub alpn: Option<Vec<u8>>,
}

impl Connector {
    pub(crate) fn new(opts: &ClientOptions, resolver: Arc<Resolver>) -> Self {
        Self {
            host: opts.host.clone(),
            port: opts.port,
            tls: opts.tls.clone(),
            connect_timeout: opts.connect_timeout,
            socket_mark: opts.socket_mark,
            own: opts.own.clone(),
            resolver,
        }
    }

    pub(crate) async fn connect(&self) -> Result<Connected, ReplayErrorKind> {
        let started = Instant::now();
        let deadline = started + self.connect_timeout;
        // DNS at connect time (cached for seconds), so a target that moves is followed;
        // the lookup's share of the connect deadline is its timeout.
        let (host, port) = (self.host.as_str(), self.port);
        let addrs = self
            .resolver
            .resolve(host, port, self.connect_timeout)
            .await
            .map_err(|e| {
                tracing::debug!(error = %e, "shadow copy: target name not resolved");
                ReplayErrorKind::Connect
            })?;
        let connecting = async {
            let mut last = ReplayErrorKind::Connect;
            for &addr in addrs.iter() {
                match self.connect_one(addr).await {
                    Ok(tcp) => {
                        // Requests go out in one write; Nagle would only delay them.
                        let _ = tcp.set_nodelay(true);
                        return Ok(tcp);
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        last = ReplayErrorKind::Timeout;
                    }
                    Err(_) => {}
                }
            }
            Err(last)
        };
        let connected = timeout_at(deadline, connecting)
            .await
            .unwrap_or(Err(ReplayErrorKind::Timeout));
        let tcp = match connected {
            Ok(tcp) => tcp,
            Err(kind) => {
                // None of the addresses took it: look the name up again next time.
                self.resolver.forget(host, port);
                return Err(kind);
            }
        };
        // Registered before the first byte is written: capture checks this registry when
        // it processes the request's packets, which is always after this point.
        let registration = match (&self.own, tcp.local_addr()) {
            (Some(own), Ok(local)) => {
                own.opened(local);
                Some(Registration {
                    local,
                    own: Arc::clone(own),
                })
            }
            _ => None,
        };
        let (io, alpn): (Box<dyn Stream>, _) = match &self.tls {
            None => (Box::new(tcp), None),
            Some(tls) => {
                let connector = TlsConnector::from(tls.config.clone());
                let handshake = connector.connect(tls.server_name.clone(), tcp);
                let stream = timeout_at(deadline, handshake)
                    .await
                    .map_err(|_| ReplayErrorKind::Timeout)?
                    .map_err(|_| ReplayErrorKind::Tls)?;
                let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                (Box::new(stream), alpn)
            }
        };
        Ok(Connected {
            io,
            registration,
            alpn,
        })
    }

    /// A TCP connection with our socket mark set before the SYN leaves.
    async fn connect_one(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        if self.socket_mark != 0 {
            set_socket_mark(&socket, self.socket_mark)?;
        }
        socket.connect(addr).await
    }
}

/// A response head that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub class: StatusClass,
    /// From the first byte of the request written to the whole response head read.
    pub head_after: Duration,
}

/// Collect the answer's `ResponseSummary` (issue 23) besides its status class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collect {
    /// Body bytes kept (before and after content decoding) for the diff: `--diff-max-body`.
    pub max_body: usize,
}

/// An answer (`Answer` or `H2Answer`) and, when collecting, its summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collected<A> {
    pub answer: A,
    /// `Some` exactly when a `Collect` was given; `latency` is the answer's `head_after`.
    pub summary: Option<ResponseSummary>,
}

/// What is being collected of one answer, for the HTTP/1.1 and the HTTP/2 client.
pub(crate) struct Collector {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    /// The last `content-encoding` field of the head.
    encoding: Option<Vec<u8>>,
    digest: BodyDigest,
    /// Body bytes fed: at most `cap` (the client's `max_body_bytes`).
    fed: u64,
    cap: u64,
    /// The body was read to its end (its framing said so).
    pub(crate) complete: bool,
    /// Body bytes past `cap` were dropped.
    cut: bool,
}

impl Collector {
    pub(crate) fn new(collect: Collect, status: u16, cap: u64) -> Self {
        Self {
            status,
            headers: Vec::new(),
            encoding: None,
            digest: BodyDigest::new(collect.max_body),
            fed: 0,
            cap,
            complete: false,
            cut: false,
        }
    }

    /// From a final response head that `read_head` parsed already (`head` is its bytes).
    fn from_head(collect: Collect, head: &[u8], cap: u64) -> Self {
        let mut fields = [httparse::EMPTY_HEADER; HEAD_FIELDS];
        let mut resp = httparse::Response::new(&mut fields);
        let _ = resp.parse(head);
        let mut c = Self::new(collect, resp.code.unwrap_or_default(), cap);
        for h in resp.headers.iter() {
            c.field(h.name.as_bytes(), h.value);
        }
        c
    }

    /// One field of the head, in order.
    pub(crate) fn field(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"content-encoding") {
            self.encoding = Some(value.to_vec());
        }
        if self.headers.len() < MAX_KEPT_HEADERS {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            self.headers.push((name, value.to_vec()));
        }
    }

    /// Body bytes (de-chunked), in order; past `cap` they are dropped and the body is
    /// incomplete.
    pub(crate) fn body(&mut self, bytes: &[u8]) {
        let room = usize::try_from(self.cap - self.fed).unwrap_or(usize::MAX);
        if bytes.len() > room {
            self.digest.push(&bytes[..room]);
            self.fed = self.cap;
            self.cut = true;
        } else {
            self.digest.push(bytes);
            self.fed += bytes.len() as u64;
        }
    }

    pub(crate) fn finish(self, latency: Duration, grpc_status: Option<u32>) -> ResponseSummary {
        // No body bytes: an empty body, whatever the head's `content-encoding` says.
        let encoding = self.encoding.as_deref().filter(|_| self.fed > 0);
        let (body_len, body_hash, body) = self.digest.finish(encoding);
        ResponseSummary {
            status: self.status,
            grpc_status,
            headers: self.headers,
            body_len,
            body_hash,
            body: body.filter(|_| self.complete && !self.cut),
            latency,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

struct ResponseHead {
    class: StatusClass,
    framing: Framing,
    keep_alive: bool,
    /// The head is `buf[..head_len]`; `buf[head_len..filled]` is the start of the body.
    head_len: usize,
    filled: usize,
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Header fields parsed per response head.
const HEAD_FIELDS: usize = 96;

/// Reads interim responses and the final response head into `buf` (grown up to
/// `max_head` bytes when a head needs it).
async fn read_head(
    io: &mut dyn Stream,
    buf: &mut Vec<u8>,
    max_head: usize,
    no_body: bool,
) -> Result<ResponseHead, Failure> {
    let mut filled = 0;
    let mut received_any = false;
    loop {
        // Parse what we have first: interim responses may leave the final one buffered.
        if filled > 0 {
            let mut headers = [httparse::EMPTY_HEADER; HEAD_FIELDS];
            let mut resp = httparse::Response::new(&mut headers);
            let protocol = || Failure {
                kind: ReplayErrorKind::Protocol,
                nothing_received: false,
            };
            match resp.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    let code = resp.code.ok_or_else(protocol)?;
                    let class = StatusClass::of(code).ok_or_else(protocol)?;
                    if (100..200).contains(&code) && code != 101 {
                        buf.copy_within(len..filled, 0);
                        filled -= len;
                        continue;
                    }
                    let (framing, keep_alive) =
                        interpret(&resp, code, no_body).ok_or_else(protocol)?;
                    return Ok(ResponseHead {
                        class,
                        framing,
                        keep_alive,
                        head_len: len,
                        filled,
                    });
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(protocol()),
            }
            if filled >= max_head {
                return Err(protocol());
            }
        }
        if filled == buf.len() {
            // Here filled < max_head, so the buffer grows.
            let grown = (buf.len() * 2).max(READ_BUF).min(max_head);
            buf.resize(grown, 0);
        }
        let room = buf.len().min(max_head.max(filled + 1));
        let n = io.read(&mut buf[filled..room]).await.map_err(|e| Failure {
            kind: io_kind(&e),
            nothing_received: !received_any,
        })?;
        if n == 0 {
            return Err(Failure {
                kind: ReplayErrorKind::Reset,
                nothing_received: !received_any,
            });
        }
        received_any = true;
        filled += n;
    }
}

/// Framing and keep-alive of a final response; `None` when the framing is invalid.
fn interpret(
    resp: &httparse::Response<'_, '_>,
    code: u16,
    no_body: bool,
) -> Option<(Framing, bool)> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = false;
    let mut keep_alive_token = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).ok()?.trim();
            let n: u64 = text
                .parse()
                .ok()
                .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, "close");
            keep_alive_token |= has_token(h.value, "keep-alive");
        }
    }
    let keep_alive = match resp.version {
        Some(1) => !close,
        _ => keep_alive_token && !close,
    };
    let framing = if no_body || code == 204 || code == 304 || (100..200).contains(&code) {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    // A 101 hands the connection over to another protocol: never reuse it.
    Some((framing, keep_alive && code != 101))
}

/// Whether a body that came whole with the head ended where its framing said (`Some`),
/// or `None` when more must be read. The common case of a small response: no timer, no
/// further read.
fn body_in_buffer(framing: Framing, leftover: &[u8]) -> Option<bool> {
    match framing {
        Framing::Empty => Some(leftover.is_empty()),
        Framing::Length(n) => {
            let have = leftover.len() as u64;
            (have >= n).then_some(have == n)
        }
        Framing::Chunked | Framing::Close => None,
    }
}

/// Reads and drops a body, using `buf` (whose `leftover` range holds the body's start)
/// as scratch. True when it ended exactly where its framing said, within `cap` bytes, so
/// the connection can carry another request. `sink` (collecting) gets the body's bytes,
/// de-chunked, and is marked complete when the body ended where its framing said.
async fn discard_body(
    io: &mut dyn Stream,
    buf: &mut [u8],
    leftover: std::ops::Range<usize>,
    framing: Framing,
    cap: u64,
    mut sink: Option<&mut Collector>,
) -> bool {
    let mut have = leftover.len() as u64;
    match framing {
        Framing::Empty => {
            if let Some(c) = sink {
                c.complete = true;
            }
            leftover.is_empty()
        }
        Framing::Length(n) => {
            feed(&mut sink, &buf[leftover.clone()], 0, n);
            if have > n {
                return false;
            }
            while have < n {
                if have >= cap {
                    return false;
                }
                let want = (n - have).min(buf.len() as u64) as usize;
                match io.read(&mut buf[..want]).await {
                    Ok(0) | Err(_) => return false,
                    Ok(k) => {
                        feed(&mut sink, &buf[..k], have, n);
                        have += k as u64;
                    }
                }
            }
            true
        }
        Framing::Close => {
            feed(&mut sink, &buf[leftover.clone()], 0, u64::MAX);
            while have < cap {
                match io.read(buf).await {
                    Ok(0) => {
                        if let Some(c) = sink {
                            c.complete = true;
                        }
                        break;
                    }
                    Err(_) => break,
                    Ok(k) => {
                        feed(&mut sink, &buf[..k], have, u64::MAX);
                        have += k as u64;
                    }
                }
            }
            false
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            let clean = 'body: {
                let mut data = |bytes: &[u8]| {
                    if let Some(c) = sink.as_deref_mut() {
                        c.body(bytes);
                    }
                };
                let start = &buf[leftover];
                match decoder.feed_data(start, &mut data) {
                    Err(()) => break 'body false,
                    Ok(used) if decoder.done() => break 'body used == start.len(),
                    Ok(_) => {}
                }
                loop {
                    if have >= cap {
                        break false;
                    }
                    let k = match io.read(buf).await {
                        Ok(0) | Err(_) => break false,
                        Ok(k) => k,
                    };
                    have += k as u64;
                    match decoder.feed_data(&buf[..k], &mut data) {
                        Err(()) => break false,
                        Ok(used) if decoder.done() => break used == k,
                        Ok(_) => {}
                    }
                }
            };
            if let Some(c) = sink.filter(|_| decoder.done()) {
                c.complete = true;
            }
            clean
        }
    }
}

/// Bytes of a body of `n` bytes (`u64::MAX`: until close) of which `before` came already,
/// to the collector if any; it is complete once `n` came.
fn feed(sink: &mut Option<&mut Collector>, bytes: &[u8], before: u64, n: u64) {
    if let Some(c) = sink {
        let take = usize::try_from(n.saturating_sub(before)).unwrap_or(usize::MAX);
        c.body(&bytes[..bytes.len().min(take)]);
        if n != u64::MAX && before + bytes.len() as u64 >= n {
            c.complete = true;
        }
    }
}

/// Where a chunked body's decoder is (RFC 9112 7.1), byte by byte so that a body of any
/// size passes through a fixed buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    SizeStart,
    Size,
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    EndLf,
    Done,
}

#[derive(Debug, Default)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
}

impl ChunkedDecoder {
    pub(crate) fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes bytes up to the end of the body; returns how many it used.
    #[cfg(test)]
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<usize, ()> {
        self.feed_data(data, |_| {})
    }

    /// `feed`, handing each piece of the chunks' data (the de-chunked body) to `on_data`.
    pub(crate) fn feed_data(
        &mut self,
        data: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<usize, ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() && self.state != Done {
            let b = data[i];
            self.state = match self.state {
                SizeStart | Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        if self.size >> 60 != 0 {
                            return Err(());
                        }
                        self.size = self.size * 16 + u64::from(d);
                        Size
                    }
                    None if self.state == SizeStart => return Err(()),
                    None => match b {
                        b';' | b' ' | b'\t' => Extension,
                        b'\r' => SizeLf,
                        b'\n' => self.after_size_line(),
                        _ => return Err(()),
                    },
                },
                Extension => match b {
                    b'\r' => SizeLf,
                    b'\n' => self.after_size_line(),
                    _ => Extension,
                },
                SizeLf if b == b'\n' => self.after_size_line(),
                SizeLf => return Err(()),
                Data(left) => {
                    let take = (left.min((data.len() - i) as u64)) as usize;
                    on_data(&data[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { DataCr } else { Data(left) };
                    continue;
                }
                DataCr => match b {
                    b'\r' => DataLf,
                    b'\n' => SizeStart,
                    _ => return Err(()),
                },
                DataLf if b == b'\n' => SizeStart,
                DataLf => return Err(()),
                TrailerStart => match b {
                    b'\r' => EndLf,
                    b'\n' => Done,
                    _ => Trailer,
                },
                Trailer if b == b'\n' => TrailerStart,
                Trailer => Trailer,
                EndLf if b == b'\n' => Done,
                EndLf => return Err(()),
                Done => Done,
            };
            i += 1;
        }
        Ok(i)
    }

    fn after_size_line(&mut self) -> ChunkState {
        let size = std::mem::take(&mut self.size);
        if size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data(size)
        }
    }
}

/// SO_MARK on a socket (needs CAP_NET_ADMIN, which a live agent has).
fn set_socket_mark(socket: &tokio::net::TcpSocket, mark: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = mark;
    // SAFETY: a valid fd owned by `socket`, and a pointer/length pair to a live u32.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&value as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<usize, ()> {
        let mut d = ChunkedDecoder::default();
        let used = d.feed(input)?;
        assert!(d.done(), "not done after {input:?}");
        Ok(used)
    }

    #[test]
    fn chunked_decoder_finds_the_end() {
        let cases: &[&[u8]] = &[
            b"0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n",
            b"3\nabc\n0\n\n",
            b"ff \r\n",
        ];
        for input in &cases[..4] {
            assert_eq!(decode_all(input), Ok(input.len()), "{input:?}");
        }
        // Bytes after the end are left unused.
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(b"0\r\n\r\nHTTP/1.1"), Ok(5));
        assert!(d.done());
        // Incomplete is not done.
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.feed(cases[4]), Ok(cases[4].len()));
        assert!(!d.done());
    }

    #[test]
    fn chunked_decoder_split_at_every_offset() {
        let input: &[u8] =
            b"5;a=b\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\n";
        for cut in 0..=input.len() {
            let mut d = ChunkedDecoder::default();
            let a = d.feed(&input[..cut]).unwrap();
            assert_eq!(a, cut);
            let b = d.feed(&input[cut..]).unwrap();
            assert_eq!(a + b, input.len(), "cut {cut}");
            assert!(d.done());
        }
    }

    #[test]
    fn chunked_decoder_rejects_garbage() {
        for input in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX",
            b"5\rX",
            b"fffffffffffffffff\r\n",
        ] {
            assert_eq!(ChunkedDecoder::default().feed(input), Err(()), "{input:?}");
        }
    }

    #[test]
    fn body_that_came_with_the_head_needs_no_read() {
        use Framing::*;
        assert_eq!(body_in_buffer(Empty, b""), Some(true));
        assert_eq!(body_in_buffer(Empty, b"x"), Some(false));
        assert_eq!(body_in_buffer(Length(3), b"ok\n"), Some(true));
        assert_eq!(body_in_buffer(Length(3), b"ok\nHTTP"), Some(false));
        assert_eq!(body_in_buffer(Length(3), b"ok"), None);
        assert_eq!(body_in_buffer(Chunked, b"0\r\n\r\n"), None);
        assert_eq!(body_in_buffer(Close, b""), None);
    }

    /// A head longer than the initial buffer grows it; one longer than the cap is refused;
    /// the buffer is reused for the next response on the connection.
    #[tokio::test]
    async fn read_head_grows_the_buffer_up_to_the_cap() {
        let long = "a".repeat(3 * READ_BUF);
        let response = format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nX-Long: {long}\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 204 No\r\n\r\n"
        );
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        server.write_all(response.as_bytes()).await.unwrap();
        let mut buf = vec![0; READ_BUF];
        let head = read_head(&mut client, &mut buf, 64 * 1024, false)
            .await
            .ok()
            .unwrap();
        assert_eq!(head.class, StatusClass::ClientError);
        assert_eq!(head.framing, Framing::Length(2));
        assert!(buf.len() > READ_BUF);
        let body = &buf[head.head_len..head.filled];
        assert!(
            body.starts_with(b"no"),
            "{:?}",
            String::from_utf8_lossy(body)
        );

        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        server.write_all(response.as_bytes()).await.unwrap();
        let mut buf = vec![0; READ_BUF];
        let refused = read_head(&mut client, &mut buf, 2 * READ_BUF, false).await;
        assert!(matches!(
            refused,
            Err(Failure {
                kind: ReplayErrorKind::Protocol,
                ..
            })
        ));
    }

    #[test]
    fn chunked_decoder_hands_over_the_data_at_every_split() {
        let input: &[u8] =
            b"5;a=b\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\n";
        for cut in 0..=input.len() {
            let mut d = ChunkedDecoder::default();
            let mut data = Vec::new();
            d.feed_data(&input[..cut], |b| data.extend_from_slice(b))
                .unwrap();
            d.feed_data(&input[cut..], |b| data.extend_from_slice(b))
                .unwrap();
            assert!(d.done());
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "cut {cut}");
        }
    }

    const COLLECT: Collect = Collect { max_body: 1024 };

    /// Head fields: names lower-cased, in order, at most `MAX_KEPT_HEADERS`.
    #[test]
    fn collector_keeps_the_head_fields_in_order() {
        let mut head = b"HTTP/1.1 201 Created\r\nX-B: 2\r\nContent-Type: a/b\r\n".to_vec();
        for i in 0..MAX_KEPT_HEADERS {
            head.extend_from_slice(format!("X-N{i}: {i}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let c = Collector::from_head(COLLECT, &head, 1 << 20);
        let s = c.finish(Duration::from_millis(3), None);
        assert_eq!(s.status, 201);
        assert_eq!(s.headers.len(), MAX_KEPT_HEADERS);
        assert_eq!(s.headers[0], ("x-b".to_string(), b"2".to_vec()));
        assert_eq!(s.headers[1], ("content-type".to_string(), b"a/b".to_vec()));
        assert_eq!(s.latency, Duration::from_millis(3));
        // Never marked complete (the body was not read to its end): no body.
        assert_eq!(s.body, None);
    }

    /// An answer without body is an empty body whatever its `content-encoding`.
    #[test]
    fn collector_empty_body_ignores_the_coding() {
        let head = b"HTTP/1.1 304 NM\r\nContent-Encoding: gzip\r\n\r\n";
        let mut c = Collector::from_head(COLLECT, head, 1 << 20);
        c.complete = true;
        let s = c.finish(Duration::ZERO, None);
        assert_eq!((s.status, s.body_len), (304, 0));
        assert_eq!(s.body_hash, crate::diff::response::Fnv64::of(b""));
        assert_eq!(s.body, Some(Vec::new()));
    }

    /// Past the client's cap: length and hash of the first `cap` bytes, no body.
    #[test]
    fn collector_past_the_cap_keeps_the_hash_only() {
        let mut c = Collector::new(COLLECT, 200, 10);
        c.body(b"0123456");
        c.body(b"789abc");
        c.complete = true;
        let s = c.finish(Duration::ZERO, None);
        assert_eq!(s.body_len, 10);
        assert_eq!(s.body_hash, crate::diff::response::Fnv64::of(b"0123456789"));
        assert_eq!(s.body, None);
    }

    /// `discard_body` feeds the de-chunked body, marks it complete at its end, and not
    /// when the connection ends early.
    #[tokio::test]
    async fn discard_body_feeds_the_collector() {
        async fn run(
            framing: Framing,
            start: &[u8],
            rest: &[u8],
            cap: u64,
        ) -> (bool, ResponseSummary) {
            let (mut client, mut server) = tokio::io::duplex(64 * 1024);
            server.write_all(rest).await.unwrap();
            drop(server);
            let mut buf = vec![0; 8];
            buf[..start.len()].copy_from_slice(start);
            let mut c = Collector::new(COLLECT, 200, cap);
            let clean = discard_body(
                &mut client,
                &mut buf,
                0..start.len(),
                framing,
                cap,
                Some(&mut c),
            )
            .await;
            (clean, c.finish(Duration::ZERO, None))
        }
        let (clean, s) = run(
            Framing::Chunked,
            b"3\r\nab",
            b"c\r\n4\r\ndefg\r\n0\r\n\r\n",
            1024,
        )
        .await;
        assert!(clean);
        assert_eq!(s.body.as_deref(), Some(&b"abcdefg"[..]));
        assert_eq!(s.body_len, 7);
        let (clean, s) = run(Framing::Length(12), b"hello", b" world!", 1024).await;
        assert!(clean);
        assert_eq!(s.body.as_deref(), Some(&b"hello world!"[..]));
        let (clean, s) = run(Framing::Close, b"until", b" close", 1024).await;
        assert!(!clean);
        assert_eq!(s.body.as_deref(), Some(&b"until close"[..]));
        // Cut short: what came is hashed, no body.
        let (clean, s) = run(Framing::Length(20), b"hello", b" world", 1024).await;
        assert!(!clean);
        assert_eq!((s.body_len, s.body), (11, None));
        assert_eq!(
            s.body_hash,
            crate::diff::response::Fnv64::of(b"hello world")
        );
        let (_, s) = run(Framing::Chunked, b"5\r\nhel", b"lo\r\n", 1024).await;
        assert_eq!((s.body_len, s.body), (5, None));
        // Over the cap.
        let (clean, s) = run(Framing::Length(100), b"01234567", &[b'x'; 92], 12).await;
        assert!(!clean);
        assert_eq!((s.body_len, s.body), (12, None));
    }

    fn framing_of(head: &[u8], head_request: bool) -> Option<(Framing, bool)> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(head).unwrap().is_complete());
        let code = resp.code.unwrap();
        interpret(&resp, code, head_request)
    }

    #[test]
    fn response_framing_table() {
        use Framing::*;
        type Case = (&'static [u8], bool, Option<(Framing, bool)>);
        let cases: &[Case] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Some((Length(5), true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                Some((Empty, true)),
            ),
            (b"HTTP/1.1 204 No\r\n\r\n", false, Some((Empty, true))),
            (
                b"HTTP/1.1 304 NM\r\nContent-Length: 9\r\n\r\n",
                false,
                Some((Empty, true)),
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", false, Some((Close, true))),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                Some((Empty, true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                false,
                Some((Chunked, true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Some((Close, true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false,
                Some((Length(1), false)),
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                false,
                Some((Length(1), false)),
            ),
            (
                b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
                false,
                Some((Length(1), true)),
            ),
            (
                b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n",
                false,
                Some((Empty, false)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                None,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                false,
                Some((Length(1), true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
                false,
                None,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, None),
        ];
        for (head, head_request, want) in cases {
            assert_eq!(
                framing_of(head, *head_request),
                *want,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
