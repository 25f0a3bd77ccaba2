//! The seam between capture and everything after it: the request event every protocol's
//! framer produces (`RequestEvent`), the request itself (`Request`, HTTP/1.x or HTTP/2,
//! one shape for both) and the connection it came on (`Captured`). Sampling, filters,
//! header rules, `inspect` and the replay clients read only these types; `http` (HTTP/1.x)
//! and `h2` (HTTP/2 and gRPC) each turn a client's bytes into them.

use std::net::SocketAddr;

use crate::metrics::Outcome;

/// The protocol a request came in on, and the one its copy is sent with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.0 or HTTP/1.1 (`Request::version_minor` tells which).
    #[default]
    Http1,
    /// HTTP/2 over cleartext TCP (h2c: prior knowledge, or upgraded from HTTP/1.1).
    H2,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Http1, Protocol::H2];

    /// Metric label value and `inspect` column.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One request as captured, with the connection it came on.
#[derive(Clone, Debug)]
pub struct Captured {
    /// The pipeline's id for the request (in capture order), which its production
    /// response carries too (`PipelineEvent::Response`).
    pub id: u64,
    /// The capture's id for the connection (tells apart reuses of a 4-tuple).
    pub conn: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub request: Request,
}

/// A header as it was sent: name and value bytes exactly as on the wire
/// (the value without the surrounding optional whitespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// One complete request as the client sent it, in either protocol.
///
/// HTTP/1.x: `target` is the request-target as sent and the authority is the Host field
/// (or the absolute-form target's). HTTP/2: `method`, `target` and `authority` are the
/// `:method`, `:path` and `:authority` pseudo-fields, `scheme` is `:scheme`, `headers`
/// are the regular fields in order (names lower-case, as HTTP/2 requires) and `trailers`
/// the trailing HEADERS block, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Timestamp of the packet that carried the first byte of the request.
    pub ts_nanos: u64,
    pub protocol: Protocol,
    /// HTTP/2 stream id; 0 for HTTP/1.x.
    pub stream_id: u32,
    pub method: String,
    /// HTTP/1.x: the request-target exactly as sent (origin-, absolute-, authority- or
    /// asterisk-form). HTTP/2: `:path`.
    pub target: Vec<u8>,
    /// HTTP/2's `:authority`, when sent; always `None` for HTTP/1.x (see `authority()`).
    pub h2_authority: Option<Vec<u8>>,
    /// HTTP/2's `:scheme`; empty for HTTP/1.x.
    pub scheme: Vec<u8>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1 (and for HTTP/2).
    pub version_minor: u8,
    /// All headers in order, as sent.
    pub headers: Vec<Header>,
    /// The body bytes; when the request was chunked, the de-chunked content.
    pub body: Vec<u8>,
    /// True when the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Trailer fields (of a chunked body, or HTTP/2's trailing HEADERS), in order.
    pub trailers: Vec<Header>,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            ts_nanos: 0,
            protocol: Protocol::Http1,
            stream_id: 0,
            method: String::new(),
            target: Vec::new(),
            h2_authority: None,
            scheme: Vec::new(),
            version_minor: 1,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
            trailers: Vec::new(),
        }
    }
}

impl Request {
    /// The authority the client addressed: HTTP/2's `:authority`, else the Host field.
    pub fn authority(&self) -> Option<&[u8]> {
        self.h2_authority.as_deref().or_else(|| self.header("host"))
    }

    /// A gRPC call: HTTP/2 with `content-type: application/grpc` (`+proto`, `+json`…).
    pub fn is_grpc(&self) -> bool {
        self.protocol == Protocol::H2
            && self
                .header("content-type")
                .is_some_and(|v| v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/grpc"))
    }

    /// A gRPC call's `service/method` (`helloworld.Greeter/SayHello`), from its `:path`.
    pub fn grpc_method(&self) -> Option<&[u8]> {
        if !self.is_grpc() {
            return None;
        }
        let path = self.target.strip_prefix(b"/")?;
        let path = path.split(|&b| b == b'?').next().unwrap_or(path);
        (path.iter().filter(|&&b| b == b'/').count() == 1).then_some(path)
    }

    /// How `inspect` names the protocol: `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub fn version_text(&self) -> &'static str {
        match (self.protocol, self.version_minor) {
            (Protocol::H2, _) => "HTTP/2",
            (Protocol::Http1, 0) => "HTTP/1.0",
            (Protocol::Http1, _) => "HTTP/1.1",
        }
    }

    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }
}

/// Requests a server may well have served, but whose copy would not stay inside the
/// shadow route or would mean nothing to a staging target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotCopied {
    /// A tunnel: the request opens a connection to another host (which the copy would
    /// open from staging), and what follows is not HTTP.
    Connect,
    /// `OPTIONS *` asks about the server itself, not a resource: nothing to shadow.
    OptionsAsterisk,
}

impl NotCopied {
    /// Metric `detail` label value.
    pub fn label(self) -> &'static str {
        match self {
            NotCopied::Connect => "connect",
            NotCopied::OptionsAsterisk => "options_asterisk",
        }
    }
}

/// Why a request was not emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Part of it was lost in the capture, or the stream ended before it did.
    Incomplete,
    /// The head or the body is over `FramerLimits`.
    TooLarge,
    /// Its framing is invalid or ambiguous, or a server answers it with 400 (Host
    /// rules); the text says why (for logs and tests).
    Unparseable(&'static str),
    /// Framed where the connection's framing state was no longer known (start not seen,
    /// gap, conflicting retransmission, eviction) or after the server stopped reading
    /// it (`Connection: close`, HTTP/1.0, upgrade): it may be body text, never copied.
    Untrusted,
    /// A request a server serves, but that is never copied (CONNECT, `OPTIONS *`).
    NotCopied(NotCopied),
    /// HTTP/2: a header block of a connection joined late named a table entry inserted
    /// before the join; its fields are not known, so it is never guessed.
    Undecodable,
    /// HTTP/2: the client reset the stream (RST_STREAM) before it ended.
    Reset,
}

impl DropReason {
    pub fn outcome(&self) -> Outcome {
        match self {
            DropReason::Incomplete => Outcome::Incomplete,
            DropReason::TooLarge => Outcome::TooLarge,
            DropReason::Unparseable(_) => Outcome::Unparseable,
            DropReason::Untrusted => Outcome::Untrusted,
            DropReason::NotCopied(why) => Outcome::NotCopied(*why),
            DropReason::Undecodable => Outcome::Undecodable,
            DropReason::Reset => Outcome::Reset,
        }
    }
}

/// What skipped bytes were recognised as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotHttpKind {
    /// The HTTP/2 prior-knowledge connection preface.
    Http2Preface,
    /// A TLS record.
    Tls,
    /// An HTTP/1.x response: this is the server's direction.
    Response,
    /// Anything else: unknown protocols, tunnels and everything after unparseable
    /// framing.
    Other,
    /// Bytes of a connection whose framing state was lost (see `DropReason::Untrusted`)
    /// that framed no request.
    Untrusted,
}

impl NotHttpKind {
    /// Metric label value.
    pub fn label(self) -> &'static str {
        match self {
            NotHttpKind::Http2Preface => "http2",
            NotHttpKind::Tls => "tls",
            NotHttpKind::Response => "response",
            NotHttpKind::Other => "other",
            NotHttpKind::Untrusted => "untrusted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestEvent {
    Request(Request),
    /// A request that was seen but will not be emitted. `ts_nanos` is its first byte's
    /// (or, when nothing of it was seen, the gap's); `method` when its head showed one.
    Dropped {
        ts_nanos: u64,
        reason: DropReason,
        method: Option<String>,
    },
    /// `bytes` of the stream were skipped as not HTTP/1.x requests.
    NotHttp {
        kind: NotHttpKind,
        bytes: u64,
    },
}
