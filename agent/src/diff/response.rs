//! HTTP/1.1 responses framed from the server->client bytes of one connection (RFC 9112
//! §6.3), paired in order with the requests the caller saw on that connection.
//!
//! API (what the pipeline calls):
//! * `ResponseFramer::new(ResponseLimits)`;
//! * `expect(Expected { head, connect, keep, id }, out)`, once per request of the connection,
//!   in order, before or while its response arrives (bytes pushed before their request
//!   is expected wait in the head buffer, up to `max_head`);
//! * `push(ts_nanos, bytes, out)`, `gap(ts_nanos, missing, out)`, `finish(ts_nanos, out)`;
//! * events: `ResponseEvent::Response { id, first_byte_ts, summary }` for kept requests
//!   (`summary.latency` is left zero: the caller knows when the request ended), and
//!   `ResponseEvent::Missing { id }` for a kept request whose answer cannot be known.
//! * `BodyDigest`: the streaming body hash, length and capped decoded copy, also used by
//!   the shadow side's client so both sides hash alike.
//!
//! Memory is bounded whatever comes: the head buffer (`max_head`), one chunk-size line,
//! one body copy (`max_body`) and at most `MAX_PENDING` expected requests.
//! gzip, deflate and br bodies are decoded within the cap; other codings by hash only.

use std::collections::VecDeque;
use std::io::Read;

use super::{ResponseSummary, MAX_KEPT_HEADERS};

/// Requests waiting for their responses on one connection. More means the responses
/// are not being seen; the connection's pairing is given up.
pub const MAX_PENDING: usize = 1024;
/// Header fields parsed per response head; more is framing lost.
const MAX_PARSED_HEADERS: usize = 128;
/// The longest chunk-size line or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Bounds of one framer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Status line plus header fields; also caps a trailer section.
    pub max_head: usize,
    /// Body bytes kept (before and after content decoding), `--diff-max-body`.
    pub max_body: usize,
}

impl Default for ResponseLimits {
    fn default() -> Self {
        Self {
            max_head: 64 * 1024,
            max_body: 64 * 1024,
        }
    }
}

/// What the caller knows of a request whose response is to come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Expected {
    /// A HEAD request: its response has no body.
    pub head: bool,
    /// A CONNECT request: a 2xx answer has no body and ends HTTP on the connection.
    pub connect: bool,
    /// Sampled: keep headers and body for comparison. Otherwise only framed.
    pub keep: bool,
    /// The caller's request id, handed back in the events.
    pub id: u64,
}

/// What the framer reports, for kept requests only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseEvent {
    Response {
        id: u64,
        /// Timestamp of the push holding the first byte of the final (non-1xx) head.
        first_byte_ts: u64,
        summary: ResponseSummary,
    },
    /// The response cannot be known: gap, the connection ended, framing lost, or more
    /// responses than requests.
    Missing { id: u64 },
}

// ---------------------------------------------------------------------------------------
// The body digest.

/// FNV-1a, 64 bits: stable across runs, versions and machines (unlike `DefaultHasher`),
/// and cheap enough to run over every body byte.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub fn finish(self) -> u64 {
        self.0
    }
    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Self::default();
        h.update(bytes);
        h.finish()
    }
}

/// A body seen piece by piece: length, FNV-1a hash of the bytes as they came (after
/// de-chunking), and a copy while it stays within `max_body`.
#[derive(Clone, Debug)]
pub struct BodyDigest {
    max_body: usize,
    len: u64,
    hash: Fnv64,
    copy: Vec<u8>,
    overflow: bool,
}

impl BodyDigest {
    pub fn new(max_body: usize) -> Self {
        Self {
            max_body,
            len: 0,
            hash: Fnv64::default(),
            copy: Vec::new(),
            overflow: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.hash.update(bytes);
        if self.overflow {
            return;
        }
        if self.copy.len() + bytes.len() > self.max_body {
            self.overflow = true;
            self.copy = Vec::new();
        } else {
            self.copy.extend_from_slice(bytes);
        }
    }

    /// (length, hash, decoded body). The body is `None` when it was over the cap before
    /// or after decoding, when the coding is unknown (or several codings), or
    /// when it does not decode.
    pub fn finish(self, content_encoding: Option<&[u8]>) -> (u64, u64, Option<Vec<u8>>) {
        let body = if self.overflow {
            None
        } else if self.len == 0 {
            // No body whatever the coding says (HEAD, 204, 304): both sides agree.
            Some(Vec::new())
        } else {
            decode(self.copy, content_encoding, self.max_body)
        };
        (self.len, self.hash.finish(), body)
    }
}

fn decode(raw: Vec<u8>, coding: Option<&[u8]>, max: usize) -> Option<Vec<u8>> {
    let coding = coding.map(<[u8]>::trim_ascii).unwrap_or_default();
    if coding.is_empty() || coding.eq_ignore_ascii_case(b"identity") {
        return Some(raw);
    }
    if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
        return read_capped(flate2::read::MultiGzDecoder::new(&raw[..]), max);
    }
    if coding.eq_ignore_ascii_case(b"deflate") {
        // "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2); some servers send it raw.
        return read_capped(flate2::read::ZlibDecoder::new(&raw[..]), max)
            .or_else(|| read_capped(flate2::read::DeflateDecoder::new(&raw[..]), max));
    }
    if coding.eq_ignore_ascii_case(b"br") {
        return read_capped(brotli_decompressor::Decompressor::new(&raw[..], 4096), max);
    }
    None
}

fn read_capped(r: impl Read, max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    r.take(max as u64 + 1).read_to_end(&mut out).ok()?;
    (out.len() <= max).then_some(out)
}

// ---------------------------------------------------------------------------------------
// The framer.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Body {
        remaining: u64,
    },
    ChunkSize,
    ChunkData {
        remaining: u64,
    },
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    UntilClose,
    /// 101 or a 2xx to CONNECT: what follows is not HTTP.
    Upgraded,
    Lost,
}

/// The response being read.
struct Current {
    exp: Expected,
    first_byte_ts: u64,
    summary: ResponseSummary,
    digest: Option<BodyDigest>,
    encoding: Option<Vec<u8>>,
    /// Bytes of it were lost: framed on, reported Missing.
    tainted: bool,
}

/// Turns the server->client bytes of one HTTP/1.1 connection into responses paired with
/// the connection's requests (see the module's first lines).
pub struct ResponseFramer {
    limits: ResponseLimits,
    expected: VecDeque<Expected>,
    state: State,
    /// Head, chunk-size line or trailer bytes not yet complete.
    buf: Vec<u8>,
    cur: Option<Current>,
    /// Timestamp of the first byte in `buf` (a head may span pushes).
    buf_ts: u64,
    trailer_bytes: usize,
}

impl ResponseFramer {
    pub fn new(limits: ResponseLimits) -> Self {
        Self {
            limits,
            expected: VecDeque::new(),
            state: State::Head,
            buf: Vec::new(),
            cur: None,
            buf_ts: 0,
            trailer_bytes: 0,
        }
    }

    /// The next request of the connection (in order). `out` receives `Missing` at once
    /// when its response can no longer be known, and the events of response bytes that
    /// came before the request was expected.
    pub fn expect(&mut self, kind: Expected, out: &mut Vec<ResponseEvent>) {
        if matches!(self.state, State::Lost | State::Upgraded) {
            missing(kind, out);
            return;
        }
        if self.expected.len() >= MAX_PENDING {
            self.lose(out);
            missing(kind, out);
            return;
        }
        self.expected.push_back(kind);
        if self.state == State::Head && !self.buf.is_empty() && self.expected.len() == 1 {
            // Bytes that came before their request was known.
            let held = std::mem::take(&mut self.buf);
            self.advance(self.buf_ts, &held, out);
        }
    }

    /// Request `id`'s answer is no longer wanted (it was not sampled after all): it is
    /// only framed, its fields and body not kept. No effect once its answer started.
    pub fn unkeep(&mut self, id: u64) {
        if let Some(e) = self.expected.iter_mut().find(|e| e.id == id) {
            e.keep = false;
        }
    }

    /// Bytes of the server->client stream, in order, seen at `ts_nanos`.
    pub fn push(&mut self, ts_nanos: u64, bytes: &[u8], out: &mut Vec<ResponseEvent>) {
        self.advance(ts_nanos, bytes, out);
    }

    /// `missing` bytes of the stream were lost. Inside a body of known length the
    /// framing goes on (that response is reported Missing); elsewhere it is lost.
    pub fn gap(&mut self, _ts_nanos: u64, missing: u64, out: &mut Vec<ResponseEvent>) {
        match self.state {
            State::Body { remaining } | State::ChunkData { remaining } if missing <= remaining => {
                if let Some(cur) = &mut self.cur {
                    cur.tainted = true;
                }
                let left = remaining - missing;
                self.state = match self.state {
                    State::Body { .. } => State::Body { remaining: left },
                    _ => State::ChunkData { remaining: left },
                };
                if left == 0 && matches!(self.state, State::Body { .. }) {
                    self.complete(out);
                }
            }
            State::UntilClose => {
                if let Some(cur) = &mut self.cur {
                    cur.tainted = true;
                }
            }
            State::Lost | State::Upgraded => {}
            _ => self.lose(out),
        }
    }

    /// The connection ended: a close-delimited body is complete; anything else still
    /// waiting is Missing.
    pub fn finish(&mut self, _ts_nanos: u64, out: &mut Vec<ResponseEvent>) {
        if self.state == State::UntilClose {
            self.complete(out);
        }
        self.lose(out);
    }

    /// Requests waiting for their response.
    pub fn pending(&self) -> usize {
        self.expected.len() + usize::from(self.cur.is_some())
    }

    fn lose(&mut self, out: &mut Vec<ResponseEvent>) {
        if let Some(cur) = self.cur.take() {
            missing(cur.exp, out);
        }
        for exp in self.expected.drain(..) {
            missing(exp, out);
        }
        self.buf = Vec::new();
        if self.state != State::Upgraded {
            self.state = State::Lost;
        }
    }

    fn advance(&mut self, ts: u64, mut bytes: &[u8], out: &mut Vec<ResponseEvent>) {
        loop {
            match self.state {
                State::Lost | State::Upgraded => return,
                State::Head => {
                    if self.buf.is_empty() {
                        // Stray CRLFs between messages are tolerated (RFC 9112 §2.2).
                        while let [b'\r' | b'\n', rest @ ..] = bytes {
                            bytes = rest;
                        }
                        if bytes.is_empty() {
                            return;
                        }
                        if !self.expected.is_empty() {
                            match self.parse_head(bytes, ts, out) {
                                Ok(Some(used)) => {
                                    bytes = &bytes[used..];
                                    continue;
                                }
                                Ok(None) => {}
                                Err(()) => return self.lose(out),
                            }
                        }
                        self.buf_ts = ts;
                    }
                    // A head in pieces (or bytes before their request): held, bounded.
                    let take = bytes.len().min(self.limits.max_head + 1 - self.buf.len());
                    self.buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.expected.is_empty() {
                        if self.buf.len() > self.limits.max_head {
                            self.lose(out);
                        }
                        return;
                    }
                    let mut joined = std::mem::take(&mut self.buf);
                    match self.parse_head(&joined, self.buf_ts, out) {
                        Ok(Some(used)) => {
                            // The rest of the held bytes, then the rest of this push.
                            let leftover = joined.split_off(used);
                            self.advance(ts, &leftover, out);
                        }
                        Ok(None) if joined.len() <= self.limits.max_head => {
                            self.buf = joined;
                            return;
                        }
                        _ => return self.lose(out),
                    }
                }
                State::Body { remaining } => {
                    if bytes.is_empty() && remaining > 0 {
                        return;
                    }
                    let n = usize::try_from(remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                    self.body(&bytes[..n]);
                    bytes = &bytes[n..];
                    let left = remaining - n as u64;
                    self.state = State::Body { remaining: left };
                    if left == 0 {
                        self.complete(out);
                    }
                }
                State::UntilClose => {
                    self.body(bytes);
                    return;
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(nl) = memchr::memchr(b'\n', bytes) else {
                        self.buf.extend_from_slice(bytes);
                        if self.buf.len() > self.line_cap() {
                            self.lose(out);
                        }
                        return;
                    };
                    self.buf.extend_from_slice(&bytes[..=nl]);
                    bytes = &bytes[nl + 1..];
                    if self.buf.len() > self.line_cap() {
                        self.lose(out);
                        return;
                    }
                    let line = std::mem::take(&mut self.buf);
                    if self.chunk_line(&line, out).is_err() {
                        self.lose(out);
                        return;
                    }
                }
                State::ChunkData { remaining } => {
                    if bytes.is_empty() {
                        return;
                    }
                    let n = usize::try_from(remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                    self.body(&bytes[..n]);
                    bytes = &bytes[n..];
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData { remaining: left }
                    };
                }
            }
        }
    }

    fn line_cap(&self) -> usize {
        if self.state == State::Trailers {
            self.limits.max_head
        } else {
            MAX_CHUNK_LINE
        }
    }

    /// One line (with its LF) of the chunked framing.
    fn chunk_line(&mut self, line: &[u8], out: &mut Vec<ResponseEvent>) -> Result<(), ()> {
        let text = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .ok_or(())?;
        match self.state {
            State::ChunkSize => {
                let size = chunk_size(text)?;
                self.state = if size == 0 {
                    self.trailer_bytes = 0;
                    State::Trailers
                } else {
                    State::ChunkData { remaining: size }
                };
            }
            State::ChunkEnd => {
                if !text.is_empty() {
                    return Err(());
                }
                self.state = State::ChunkSize;
            }
            State::Trailers => {
                if text.is_empty() {
                    self.complete(out);
                } else {
                    // Trailer fields are framed, not kept.
                    self.trailer_bytes += line.len();
                    if self.trailer_bytes > self.limits.max_head {
                        return Err(());
                    }
                }
            }
            _ => return Err(()),
        }
        Ok(())
    }

    fn body(&mut self, bytes: &[u8]) {
        if let Some(d) = self.cur.as_mut().and_then(|c| c.digest.as_mut()) {
            d.push(bytes);
        }
    }

    /// Parses one head at the start of `input`: `Ok(Some(length))` when complete (an
    /// interim 1xx is consumed and skipped), `Ok(None)` when more bytes are needed,
    /// `Err` when framing is lost. `head_ts`: when its first byte was seen.
    fn parse_head(
        &mut self,
        input: &[u8],
        head_ts: u64,
        out: &mut Vec<ResponseEvent>,
    ) -> Result<Option<usize>, ()> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_PARSED_HEADERS];
        let mut resp = httparse::Response::new(&mut fields);
        let used = match resp.parse(input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        let status = resp.code.ok_or(())?;
        let minor = resp.version.ok_or(())?;
        if (100..200).contains(&status) && status != 101 {
            // Interim: the final response follows and answers the same request.
            return Ok(Some(used));
        }
        let exp = self.expected.pop_front().ok_or(())?;
        let upgraded = status == 101 || (exp.connect && (200..300).contains(&status));
        let framing = if exp.head || upgraded || status == 204 || status == 304 {
            Framing::None
        } else {
            match framing_of(minor, resp.headers) {
                Ok(f) => f,
                Err(()) => {
                    // Still waiting: `lose` reports it Missing.
                    self.expected.push_front(exp);
                    return Err(());
                }
            }
        };
        let mut summary = ResponseSummary {
            status,
            ..ResponseSummary::default()
        };
        let mut encoding = None;
        if exp.keep {
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-encoding") {
                    encoding = Some(h.value.to_vec());
                }
                if summary.headers.len() < MAX_KEPT_HEADERS {
                    summary
                        .headers
                        .push((h.name.to_ascii_lowercase(), h.value.to_vec()));
                }
            }
        }
        self.cur = Some(Current {
            exp,
            first_byte_ts: head_ts,
            summary,
            digest: exp.keep.then(|| BodyDigest::new(self.limits.max_body)),
            encoding,
            tainted: false,
        });
        match framing {
            Framing::None => {
                self.complete(out);
                if upgraded {
                    self.state = State::Upgraded;
                    self.lose(out);
                }
            }
            Framing::Length(0) => self.complete(out),
            Framing::Length(n) => self.state = State::Body { remaining: n },
            Framing::Chunked => self.state = State::ChunkSize,
            Framing::UntilClose => self.state = State::UntilClose,
        }
        Ok(Some(used))
    }

    /// The current response is complete: report it (when kept) and read the next head.
    fn complete(&mut self, out: &mut Vec<ResponseEvent>) {
        self.state = State::Head;
        let Some(cur) = self.cur.take() else {
            return;
        };
        if !cur.exp.keep {
            return;
        }
        if cur.tainted {
            missing(cur.exp, out);
            return;
        }
        let mut summary = cur.summary;
        if let Some(d) = cur.digest {
            let (len, hash, body) = d.finish(cur.encoding.as_deref());
            summary.body_len = len;
            summary.body_hash = hash;
            summary.body = body;
        }
        out.push(ResponseEvent::Response {
            id: cur.exp.id,
            first_byte_ts: cur.first_byte_ts,
            summary,
        });
    }
}

fn missing(exp: Expected, out: &mut Vec<ResponseEvent>) {
    if exp.keep {
        out.push(ResponseEvent::Missing { id: exp.id });
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// RFC 9112 §6.3 for a response that may have a body. Ambiguity is an error, never a
/// guess: Content-Length with Transfer-Encoding, differing lengths, Transfer-Encoding in
/// HTTP/1.0.
fn framing_of(minor: u8, headers: &[httparse::Header<'_>]) -> Result<Framing, ()> {
    let mut length = None;
    let mut te: Option<bool> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|&b| b == b',') {
                let n = decimal(part.trim_ascii()).ok_or(())?;
                if length.is_some_and(|l| l != n) {
                    return Err(());
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding of the last field decides: chunked last or not.
            if let Some(last) = h
                .value
                .rsplit(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .find(|c| !c.is_empty())
            {
                te = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
        }
    }
    match (te, length) {
        (Some(_), Some(_)) => Err(()),
        (Some(_), None) if minor == 0 => Err(()),
        (Some(true), None) => Ok(Framing::Chunked),
        // RFC 9112 §6.3 (4): chunked not last: the body runs until the close.
        (Some(false), None) | (None, None) => Ok(Framing::UntilClose),
        (None, Some(n)) => Ok(Framing::Length(n)),
    }
}

fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then_some(())?;
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// `1*HEXDIG [ ext ]`: the size; extensions are skipped, not read.
fn chunk_size(line: &[u8]) -> Result<u64, ()> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(());
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(());
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| ())?;
    u64::from_str_radix(text, 16).map_err(|_| ())
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
