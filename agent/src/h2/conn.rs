//! `ClientConn`: the client's direction of one HTTP/2 connection, from bytes to requests.
//! Frames (`frame`) and header blocks (`hpack`) become one `RequestEvent` per stream:
//! HEADERS (+CONTINUATION), DATA until END_STREAM, trailers kept.
//!
//! # Where the connection starts
//! * **Preface**: seen from its first byte (prior knowledge), or after an HTTP/1.1
//!   `Upgrade: h2c` request the server accepted (the client sends the preface only after
//!   the server's 101; stream 1 is then the upgrade request, already emitted by the
//!   HTTP/1.1 framer). Every stream is known.
//! * **Joined late**: the agent saw the connection start nowhere (started or restarted
//!   while it was open, flow evicted or timed out and picked up again). Frame boundaries
//!   are found by a chain of plausible frame headers (`frame::sync`), and the header
//!   table is known only from what is seen inserted (`hpack::Decoder::joined_late`). A
//!   stream is copied only when its HEADERS came after the join and every field decoded;
//!   a block naming an entry inserted before the join is counted `undecodable`, never
//!   guessed; streams that began before the join are counted `untrusted`.
//!
//! # When bytes are lost
//! A gap inside a DATA frame (or its padding) is stepped over exactly: only that stream
//! is lost (`incomplete`). Any other gap, and a conflicting retransmission, lose the
//! frame boundaries and the header table for good: the frames found again are followed
//! only to count the streams that start (`untrusted`), never to copy them. A connection
//! error (an invalid frame, a PUSH_PROMISE from a client, a stream id that goes back, a
//! header block that does not decode) ends the connection for the server too: what
//! follows is counted, not parsed.
//!
//! # What is not copied
//! A stream the client reset before END_STREAM (`reset`), a malformed request (RFC 9113
//! §8.1.1: `unparseable`), CONNECT, a body over `max_body` or a header list over the
//! cap (`too_large`), a stream open when the connection ended (`incomplete`).
//!
//! Only the client's bytes are seen, so a stream the server refused (REFUSED_STREAM past
//! its MAX_CONCURRENT_STREAMS, or after its GOAWAY) looks like any other; conforming
//! clients open no more streams than the server allows.

use super::frame::{sync, Frame, FrameLimits, FrameParser, Sender, SyncOutcome, SyncRules};
use super::hpack::{Block, Decoder, MAX_TABLE_VIEW};
use super::request::{request_head, trailers};
use crate::request::{DropReason, NotCopied, NotHttpKind, Request, RequestEvent};

/// Caps on what one connection may make the framer hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// One header block (HEADERS and its CONTINUATIONs), and the decoded list.
    pub max_header_block: usize,
    /// Body bytes of one stream.
    pub max_body: usize,
    /// Streams open at once; past it a new stream is counted `too_large`. A server
    /// allows 100 to 250 by default (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_open_streams: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_header_block: 64 * 1024,
            max_body: 8 * 1024 * 1024,
            max_open_streams: 256,
        }
    }
}

/// How the connection's start was seen (also a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnStart {
    /// The client preface, from the connection's first byte.
    Preface,
    /// The preface after an HTTP/1.1 `Upgrade: h2c` request.
    Upgrade,
    /// Found midway by frame-chain sync.
    JoinedLate,
}

impl ConnStart {
    pub const ALL: [ConnStart; 3] = [
        ConnStart::Preface,
        ConnStart::Upgrade,
        ConnStart::JoinedLate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnStart::Preface => "preface",
            ConnStart::Upgrade => "upgrade",
            ConnStart::JoinedLate => "joined_late",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The trust the connection's streams get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trust {
    /// New streams whose fields all decode are copied.
    Streams,
    /// Frame boundaries or the header table were lost: new streams are only counted.
    CountOnly,
    /// A connection error: nothing more is parsed.
    Failed,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Open is the common case; a Counted stream is brief.
enum Phase {
    /// Headers decoded; body arriving.
    Open {
        request: Request,
        content_length: Option<u64>,
        not_copied: Option<NotCopied>,
        trailers_seen: bool,
    },
    /// Counted already (dropped, or not copied): the rest of the stream is only read.
    Counted,
}

#[derive(Debug)]
struct Stream {
    id: u32,
    phase: Phase,
}

/// Streams whose ids were seen before any of their HEADERS on a connection joined late
/// (they began before the join), remembered so each is counted once.
const MAX_PREJOIN: usize = 1024;

/// The client's direction of one HTTP/2 connection.
#[derive(Debug)]
pub struct ClientConn {
    start: ConnStart,
    limits: ConnLimits,
    parser: FrameParser,
    decoder: Decoder,
    trust: Trust,
    /// Looking for frame boundaries (joined late, or after lost bytes): the bytes kept
    /// for `frame::sync`, and whether any were given.
    syncing: Option<Vec<u8>>,
    streams: Vec<Stream>,
    /// The highest stream id the client opened (or was seen using).
    last_stream: u32,
    prejoin: Vec<u32>,
    frames: Vec<Frame>,
    /// Skipped bytes not reported yet.
    pending: Option<(NotHttpKind, u64)>,
    /// Streams opened (HEADERS of a new id seen) on this connection.
    streams_seen: u64,
}

impl ClientConn {
    /// A connection whose next bytes are the client preface.
    pub fn from_preface(limits: ConnLimits, start: ConnStart) -> Self {
        let mut conn = Self::new(
            limits,
            start,
            FrameParser::client(frame_limits(limits)),
            Decoder::new(),
        );
        if start == ConnStart::Upgrade {
            // Stream 1 is the HTTP/1.1 request that asked for the upgrade.
            conn.last_stream = 1;
        }
        conn
    }

    /// A connection seen from somewhere in its middle: boundaries are searched first.
    pub fn joined_late(limits: ConnLimits) -> Self {
        let mut conn = Self::new(
            limits,
            ConnStart::JoinedLate,
            FrameParser::joined(frame_limits(limits)),
            Decoder::joined_late(),
        );
        conn.syncing = Some(Vec::new());
        conn
    }

    fn new(limits: ConnLimits, start: ConnStart, parser: FrameParser, decoder: Decoder) -> Self {
        // The peer's SETTINGS_HEADER_TABLE_SIZE is in the direction not seen: accept any
        // size update up to what the decoder is willing to hold.
        let mut decoder = decoder.with_max_header_list(limits.max_header_block);
        decoder.set_limit(MAX_TABLE_VIEW);
        Self {
            start,
            limits,
            parser,
            decoder,
            trust: Trust::Streams,
            syncing: None,
            streams: Vec::new(),
            last_stream: 0,
            prejoin: Vec::new(),
            frames: Vec::new(),
            pending: None,
            streams_seen: 0,
        }
    }

    pub fn start(&self) -> ConnStart {
        self.start
    }

    /// Streams opened so far (a HEADERS frame of a new stream seen).
    pub fn streams_seen(&self) -> u64 {
        self.streams_seen
    }

    /// Feeds the next bytes of the client's direction, which arrived at `ts_nanos`.
    pub fn push(&mut self, ts_nanos: u64, data: &[u8], out: &mut Vec<RequestEvent>) {
        if data.is_empty() {
            return;
        }
        if self.trust == Trust::Failed {
            self.skipped(NotHttpKind::Untrusted, data.len() as u64, out);
            return;
        }
        if let Some(mut kept) = self.syncing.take() {
            kept.extend_from_slice(data);
            let rules = SyncRules::new(Sender::Client);
            match sync(&kept, &rules) {
                SyncOutcome::Found(at) => {
                    self.skipped(NotHttpKind::Untrusted, at as u64, out);
                    self.parse(ts_nanos, &kept[at..], out);
                }
                SyncOutcome::NeedMore { keep_from } => {
                    self.skipped(NotHttpKind::Untrusted, keep_from as u64, out);
                    kept.drain(..keep_from);
                    self.syncing = Some(kept);
                }
            }
            return;
        }
        self.parse(ts_nanos, data, out);
    }

    /// Whether frame boundaries are being searched for.
    pub fn is_syncing(&self) -> bool {
        self.syncing.is_some()
    }

    fn parse(&mut self, ts_nanos: u64, data: &[u8], out: &mut Vec<RequestEvent>) {
        let mut frames = std::mem::take(&mut self.frames);
        let result = self.parser.push(data, &mut frames);
        for frame in frames.drain(..) {
            self.frame(ts_nanos, frame, out);
            if self.trust == Trust::Failed {
                break;
            }
        }
        self.frames = frames;
        if result.is_err() && self.trust != Trust::Failed {
            tracing::debug!(error = ?result, "HTTP/2 connection error on the client's side");
            self.fail(out);
        }
    }

    fn frame(&mut self, ts_nanos: u64, frame: Frame, out: &mut Vec<RequestEvent>) {
        match frame {
            Frame::Headers {
                stream,
                end_stream,
                block,
                ..
            } => self.headers(ts_nanos, stream, end_stream, &block, out),
            Frame::Data {
                stream,
                data,
                end_stream,
            } => self.data(ts_nanos, stream, &data, end_stream, out),
            Frame::RstStream { stream, .. } => {
                if let Some(at) = self.find(stream) {
                    let s = self.streams.remove(at);
                    if let Phase::Open { request, .. } = s.phase {
                        drop_request(out, &request, DropReason::Reset);
                    }
                } else {
                    self.prejoin_stream(ts_nanos, stream, out);
                }
            }
            // A client never pushes (RFC 9113 §8.4): a connection error.
            Frame::PushPromise { .. } => self.fail(out),
            Frame::OrphanContinuation { stream, .. } => self.prejoin_stream(ts_nanos, stream, out),
            // The client's SETTINGS are about what it receives; the limits of what it
            // sends are in the server's SETTINGS, not seen here.
            Frame::Settings { .. }
            | Frame::Priority { .. }
            | Frame::Ping { .. }
            | Frame::GoAway { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }

    fn find(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    fn headers(
        &mut self,
        ts_nanos: u64,
        id: u32,
        end_stream: bool,
        block: &[u8],
        out: &mut Vec<RequestEvent>,
    ) {
        // Every block is decoded, whatever becomes of its stream: the table must follow.
        let decoded = if self.trust == Trust::CountOnly {
            None
        } else {
            match self.decoder.decode(block) {
                Ok(Block::Fields(fields)) => Some(Ok(fields)),
                Ok(Block::Undecodable) => Some(Err(DropReason::Undecodable)),
                Err(e) if e.is_fatal() => {
                    // COMPRESSION_ERROR: the server ends the connection.
                    tracing::debug!(error = %e, "header block did not decode");
                    self.fail(out);
                    return;
                }
                Err(_) => Some(Err(DropReason::TooLarge)),
            }
        };
        if let Some(at) = self.find(id) {
            self.trailers_of(at, end_stream, decoded, out);
            return;
        }
        if id % 2 == 0 {
            // Clients open odd streams only (§5.1.1): a connection error.
            self.fail(out);
            return;
        }
        if id <= self.last_stream {
            match (self.trust, self.start) {
                // Trailers of a stream dropped when the boundaries were lost.
                (Trust::CountOnly, _) => {}
                // Trailers of a stream begun before the join.
                (_, ConnStart::JoinedLate) => self.prejoin_stream(ts_nanos, id, out),
                // A new stream must have a higher id than every earlier one.
                _ => self.fail(out),
            }
            return;
        }
        // On a connection joined late, the first header block of a stream not seen
        // before may be the trailers of one begun before the join: no pseudo-header.
        if self.start == ConnStart::JoinedLate
            && matches!(&decoded, Some(Ok(fields)) if !fields.iter().any(|(n, _)| n.starts_with(b":")))
        {
            self.prejoin_stream(ts_nanos, id, out);
            return;
        }
        self.last_stream = id;
        self.streams_seen += 1;
        let phase = match decoded {
            None => {
                drop_at(out, ts_nanos, DropReason::Untrusted, None);
                Phase::Counted
            }
            Some(Err(reason)) => {
                drop_at(out, ts_nanos, reason, None);
                Phase::Counted
            }
            Some(Ok(fields)) => match request_head(ts_nanos, id, fields) {
                Err((reason, method)) => {
                    drop_at(out, ts_nanos, reason, method);
                    Phase::Counted
                }
                Ok(_) if self.streams.len() >= self.limits.max_open_streams => {
                    drop_at(out, ts_nanos, DropReason::TooLarge, None);
                    Phase::Counted
                }
                Ok(head) => Phase::Open {
                    request: head.request,
                    content_length: head.content_length,
                    not_copied: head.not_copied,
                    trailers_seen: false,
                },
            },
        };
        if end_stream {
            if let Phase::Open { .. } = phase {
                self.complete(Stream { id, phase }, out);
            }
            return;
        }
        self.streams.push(Stream { id, phase });
    }

    /// A second header block on an open stream: trailers, which end it.
    fn trailers_of(
        &mut self,
        at: usize,
        end_stream: bool,
        decoded: Option<Result<Vec<super::hpack::Field>, DropReason>>,
        out: &mut Vec<RequestEvent>,
    ) {
        let mut stream = self.streams.remove(at);
        let Phase::Open {
            request,
            trailers_seen,
            ..
        } = &mut stream.phase
        else {
            if !end_stream {
                self.streams.push(stream);
            }
            return;
        };
        // Informational header blocks come only from servers; a client's second block
        // must end the stream (§8.1).
        let result = match decoded {
            _ if !end_stream || *trailers_seen => Err(DropReason::Unparseable(
                "header block in the middle of a stream",
            )),
            None => Err(DropReason::Untrusted),
            Some(Err(reason)) => Err(reason),
            Some(Ok(fields)) => trailers(fields).map_err(DropReason::Unparseable),
        };
        match result {
            Ok(fields) => {
                request.trailers = fields;
                *trailers_seen = true;
                self.complete(stream, out);
            }
            Err(reason) => {
                drop_request(out, request, reason);
                if !end_stream {
                    stream.phase = Phase::Counted;
                    self.streams.push(stream);
                }
            }
        }
    }

    fn data(
        &mut self,
        ts_nanos: u64,
        id: u32,
        data: &[u8],
        end_stream: bool,
        out: &mut Vec<RequestEvent>,
    ) {
        let Some(at) = self.find(id) else {
            self.prejoin_stream(ts_nanos, id, out);
            return;
        };
        let max_body = self.limits.max_body;
        let stream = &mut self.streams[at];
        if let Phase::Open {
            request,
            trailers_seen,
            ..
        } = &mut stream.phase
        {
            if *trailers_seen {
                drop_request(out, request, DropReason::Unparseable("DATA after trailers"));
                stream.phase = Phase::Counted;
            } else if request.body.len() + data.len() > max_body {
                drop_request(out, request, DropReason::TooLarge);
                stream.phase = Phase::Counted;
            } else {
                request.body.extend_from_slice(data);
            }
        }
        if end_stream {
            let stream = self.streams.remove(at);
            self.complete(stream, out);
        }
    }

    /// The stream ended (END_STREAM): its request, unless counted already.
    fn complete(&mut self, stream: Stream, out: &mut Vec<RequestEvent>) {
        let Phase::Open {
            request,
            content_length,
            not_copied,
            ..
        } = stream.phase
        else {
            return;
        };
        if content_length.is_some_and(|n| n != request.body.len() as u64) {
            // §8.1.1: a malformed request, reset by the server.
            drop_request(
                out,
                &request,
                DropReason::Unparseable("content-length differs from the DATA sent"),
            );
        } else if let Some(why) = not_copied {
            drop_request(out, &request, DropReason::NotCopied(why));
        } else {
            out.push(RequestEvent::Request(request));
        }
    }

    /// A frame of a stream whose HEADERS was not seen: on a connection joined late, a
    /// stream begun before the join (counted once); otherwise a stream already closed.
    fn prejoin_stream(&mut self, ts_nanos: u64, id: u32, out: &mut Vec<RequestEvent>) {
        if self.start != ConnStart::JoinedLate
            || self.trust != Trust::Streams
            || id % 2 == 0
            || (self.streams_seen > 0 && id > self.last_stream)
            || self.prejoin.contains(&id)
        {
            return;
        }
        if self.prejoin.len() >= MAX_PREJOIN {
            self.prejoin.remove(0);
        }
        self.prejoin.push(id);
        drop_at(out, ts_nanos, DropReason::Untrusted, None);
    }

    /// `missing` bytes of the client's direction were lost here.
    pub fn gap(&mut self, ts_nanos: u64, missing: u64, out: &mut Vec<RequestEvent>) {
        if missing == 0 || self.trust == Trust::Failed {
            return;
        }
        if let Some(kept) = self.syncing.as_mut() {
            // Still looking for a boundary: what was kept is no longer contiguous.
            let lost = kept.len() as u64;
            kept.clear();
            self.pending_skip(lost);
            return;
        }
        if let Some((id, _)) = self.parser.skippable() {
            if self.parser.skip(missing) {
                if let Some(at) = self.find(id).filter(|_| id != 0) {
                    let stream = &mut self.streams[at];
                    if let Phase::Open { request, .. } = &stream.phase {
                        drop_request(out, request, DropReason::Incomplete);
                    }
                    stream.phase = Phase::Counted;
                }
                return;
            }
        }
        self.lose_boundaries(ts_nanos, DropReason::Incomplete, out);
    }

    /// From here the bytes may not be what the server read (conflicting retransmission):
    /// open streams are dropped and the rest only counted.
    pub fn distrust(&mut self, ts_nanos: u64, out: &mut Vec<RequestEvent>) {
        if self.trust == Trust::Streams && self.syncing.is_none() {
            self.lose_boundaries(ts_nanos, DropReason::Untrusted, out);
        } else if let Some(kept) = &mut self.syncing {
            self.pending = Some((
                NotHttpKind::Untrusted,
                self.pending.map_or(0, |p| p.1) + kept.len() as u64,
            ));
            kept.clear();
            self.trust = Trust::CountOnly;
        }
    }

    fn lose_boundaries(&mut self, ts_nanos: u64, reason: DropReason, out: &mut Vec<RequestEvent>) {
        let _ = ts_nanos;
        self.drop_open(reason, out);
        self.trust = Trust::CountOnly;
        self.pending_skip(self.parser.buffered() as u64);
        self.parser = FrameParser::joined(frame_limits(self.limits));
        self.syncing = Some(Vec::new());
    }

    fn drop_open(&mut self, reason: DropReason, out: &mut Vec<RequestEvent>) {
        for stream in self.streams.drain(..) {
            if let Phase::Open { request, .. } = stream.phase {
                drop_request(out, &request, reason);
            }
        }
    }

    /// A connection error: open streams are lost, nothing after is parsed.
    fn fail(&mut self, out: &mut Vec<RequestEvent>) {
        self.drop_open(DropReason::Unparseable("HTTP/2 connection error"), out);
        self.trust = Trust::Failed;
        self.syncing = None;
    }

    /// Gives up the bodies held, largest first, to stay under a budget over all streams.
    pub fn shed(&mut self, out: &mut Vec<RequestEvent>) {
        for stream in &mut self.streams {
            if let Phase::Open { request, .. } = &stream.phase {
                if !request.body.is_empty() {
                    drop_request(out, request, DropReason::TooLarge);
                    stream.phase = Phase::Counted;
                }
            }
        }
    }

    /// The connection ended: open streams are incomplete.
    pub fn finish(&mut self, out: &mut Vec<RequestEvent>) {
        self.drop_open(DropReason::Incomplete, out);
        if let Some(kept) = self.syncing.take() {
            self.pending_skip(kept.len() as u64);
        }
        self.flush_skipped(out);
        self.trust = Trust::Failed;
    }

    /// No stream is open and no frame is half read.
    pub fn is_idle(&self) -> bool {
        self.streams.is_empty()
            && self.parser.at_boundary()
            && self.syncing.as_ref().is_none_or(Vec::is_empty)
    }

    /// Bytes held: the parser's, the bodies and heads in progress, the search buffer and
    /// the header table.
    pub fn buffered(&self) -> usize {
        let streams: usize = self
            .streams
            .iter()
            .map(|s| match &s.phase {
                Phase::Open { request, .. } => request_bytes(request),
                Phase::Counted => 0,
            })
            .sum();
        self.parser.buffered()
            + streams
            + self.syncing.as_ref().map_or(0, Vec::len)
            + self.decoder.table_size()
    }

    fn skipped(&mut self, kind: NotHttpKind, bytes: u64, out: &mut Vec<RequestEvent>) {
        if bytes == 0 {
            return;
        }
        match &mut self.pending {
            Some((k, n)) if *k == kind => *n += bytes,
            _ => {
                self.flush_skipped(out);
                self.pending = Some((kind, bytes));
            }
        }
    }

    fn pending_skip(&mut self, bytes: u64) {
        if bytes > 0 {
            let (_, n) = self.pending.get_or_insert((NotHttpKind::Untrusted, 0));
            *n += bytes;
        }
    }

    fn flush_skipped(&mut self, out: &mut Vec<RequestEvent>) {
        if let Some((kind, bytes)) = self.pending.take() {
            out.push(RequestEvent::NotHttp { kind, bytes });
        }
    }
}

fn frame_limits(limits: ConnLimits) -> FrameLimits {
    FrameLimits {
        // The server may have allowed frames up to 2^24-1; DATA is read in pieces and
        // other frames have their own caps, so a large frame costs no memory here.
        max_frame_size: super::frame::MAX_MAX_FRAME_SIZE,
        max_header_block: limits.max_header_block,
    }
}

fn request_bytes(r: &Request) -> usize {
    r.body.len()
        + r.target.len()
        + r.headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
        + r.trailers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
}

fn drop_request(out: &mut Vec<RequestEvent>, request: &Request, reason: DropReason) {
    drop_at(out, request.ts_nanos, reason, Some(request.method.clone()));
}

fn drop_at(out: &mut Vec<RequestEvent>, ts_nanos: u64, reason: DropReason, method: Option<String>) {
    out.push(RequestEvent::Dropped {
        ts_nanos,
        reason,
        method,
    });
}
