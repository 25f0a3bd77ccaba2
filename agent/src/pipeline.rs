//! The offline half of the pipeline, shared by `inspect`, `replay` and `run`:
//! frames -> decode -> reassembly -> request framing. It owns the per-stream framers and
//! turns their output into `PipelineEvent`s; what happens to a request next (print,
//! sample, replay) is the caller's business. `Pipeline` runs it all on one thread;
//! `PipelineFront` (decode, reassembly) and `PipelineBack` (framing) are its two halves
//! for two threads, reassembly's output passed between them in `SinkBatch`es.

use std::net::SocketAddr;

use crate::capture::Frame;
use std::collections::HashMap;

use crate::decode::{DecodeError, Decoder, DecoderLimits, Segment};
use crate::diff::response::{Expected, ResponseEvent, ResponseFramer, ResponseLimits};
use crate::diff::ResponseSummary;
use crate::h2::answers::ServerAnswers;
use crate::http::FramerLimits;
use crate::reassembly::{FlowTable, LruSlab, ReassemblyConfig, StreamEnd, StreamKey, StreamSink};
use crate::request::{Captured, DropReason, NotHttpKind, Protocol, RequestEvent};
use crate::stream_framer::StreamFramer;

/// Caps of every pure stage, in one place so flags and config fill one struct.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub decoder: DecoderLimits,
    pub reassembly: ReassemblyConfig,
    pub framer: FramerLimits,
    /// Bytes all framers may hold together (heads being read, bodies in progress).
    /// Each stream is held to `max_head` + `max_body` by the framer; without a budget
    /// over all of them, `max_flows` streams could each hold that much.
    pub max_framer_bytes: usize,
    /// Frame the server's answers too and pair them with the requests (`--diff`).
    pub responses: Option<ResponseLimits>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            decoder: DecoderLimits::default(),
            reassembly: ReassemblyConfig::default(),
            framer: FramerLimits::default(),
            max_framer_bytes: 16 << 20,
            responses: None,
        }
    }
}

/// What the pipeline reports, in capture order.
#[derive(Clone, Debug)]
pub enum PipelineEvent {
    Request(Captured),
    /// A request that was seen but could not be framed whole.
    Dropped {
        ts_nanos: u64,
        protocol: Protocol,
        client: SocketAddr,
        server: SocketAddr,
        reason: DropReason,
        method: Option<String>,
    },
    /// Production's answer to request `id` (`--diff`), its latency measured from the
    /// request's last byte to the answer's first byte on the wire.
    Response {
        id: u64,
        summary: ResponseSummary,
    },
    /// Production's answer to request `id` will not be seen (gap, lost framing, the
    /// connection ended first).
    ResponseMissing {
        id: u64,
    },
    /// A stream that carries something other than HTTP/1.x requests.
    NotHttp {
        client: SocketAddr,
        server: SocketAddr,
        kind: NotHttpKind,
        bytes: u64,
    },
}

/// Counters of frames that never became segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub frames: u64,
    pub decode_errors: u64,
    /// Times a stream gave up what its framer held to stay under `max_framer_bytes`.
    pub framer_overflows: u64,
    /// HTTP/2 connections found, by how their start was seen (`ConnStart::index`).
    pub h2_connections: [u64; 3],
    /// HTTP/2 streams opened on them, by the same.
    pub h2_streams: [u64; 3],
}

/// Owns the framers of the live streams; receives the reassembled bytes.
#[derive(Default)]
struct Framers {
    limits: FramerLimits,
    /// In a slab, not a map of framers: a map's buckets of key and framer (184 bytes),
    /// doubled while it grows and again by the tombstones of streams coming and going,
    /// were 500 bytes per stream under a flood; a slab slot is its size. Always `Some`
    /// while in the slab.
    by_stream: LruSlab<StreamKey, Option<StreamFramer>>,
    scratch: Vec<RequestEvent>,
    events: Vec<PipelineEvent>,
    /// Sum of `RequestFramer::buffered` over `by_stream`, kept by the deltas of each call.
    held: usize,
    budget: usize,
    overflows: u64,
    h2_connections: [u64; 3],
    h2_streams: [u64; 3],
    /// Ids of the requests, in capture order.
    next_id: u64,
    /// With `--diff`: the answers of each connection, by its client stream.
    pairs: HashMap<StreamKey, Pairing>,
    responses: Option<ResponseLimits>,
    ports: Option<Vec<u16>>,
    response_events: Vec<ResponseEvent>,
    /// Requests whose answers are kept: their connection and HTTP/2 stream.
    kept: HashMap<u64, (StreamKey, Option<u32>)>,
}

/// The server's side of one HTTP/1.x connection, paired with its requests.
struct Pairing {
    answers: Answers,
    /// Requests waiting for their answer: id -> the time of their last byte.
    ends: HashMap<u64, u64>,
    /// The server's direction delivered bytes (or a gap) already.
    answered: bool,
    /// The client's side lost bytes: later requests are not paired.
    lost: bool,
}

/// The server's side in the connection's protocol.
enum Answers {
    /// In order, one per request (RFC 9112).
    Http1(Box<ResponseFramer>),
    /// By stream id.
    H2(Box<ServerAnswers>),
}

impl Answers {
    fn push(&mut self, ts_nanos: u64, bytes: &[u8], out: &mut Vec<ResponseEvent>) {
        match self {
            Answers::Http1(f) => f.push(ts_nanos, bytes, out),
            Answers::H2(a) => a.push(ts_nanos, bytes, out),
        }
    }

    fn gap(&mut self, ts_nanos: u64, missing: u64, out: &mut Vec<ResponseEvent>) {
        match self {
            Answers::Http1(f) => f.gap(ts_nanos, missing, out),
            Answers::H2(a) => a.gap(out),
        }
    }

    fn finish(&mut self, ts_nanos: u64, out: &mut Vec<ResponseEvent>) {
        match self {
            Answers::Http1(f) => f.finish(ts_nanos, out),
            Answers::H2(a) => a.finish(out),
        }
    }
}

/// Pairings open at once; past it new connections are not paired (their requests have
/// no production answer: `prod_missing`).
const MAX_PAIRINGS: usize = 65_536;

impl Framers {
    fn new(config: &PipelineConfig) -> Self {
        Self {
            limits: config.framer,
            budget: config.max_framer_bytes,
            responses: config.responses,
            ports: config.reassembly.ports.clone(),
            ..Self::default()
        }
    }

    /// Ends the streams reassembly no longer knows (none expected) at the capture's end.
    fn end_all(&mut self, ts_nanos: u64) {
        let keys: Vec<StreamKey> = self.by_stream.keys().collect();
        for key in keys {
            self.end(key, ts_nanos, StreamEnd::Flushed);
        }
    }

    /// Runs `f` on the stream's framer and keeps `held` exact; past the budget, the
    /// stream that just grew gives up what it holds (as reassembly does for its cap).
    fn with_framer(
        &mut self,
        stream: StreamKey,
        ts_nanos: u64,
        f: impl FnOnce(&mut StreamFramer, FramerLimits, &mut Vec<RequestEvent>),
    ) {
        let limits = self.limits;
        let mut out = std::mem::take(&mut self.scratch);
        let slot = match self.by_stream.find(&stream) {
            Some(slot) => slot,
            None => self
                .by_stream
                .insert(stream, Some(StreamFramer::new(limits))),
        };
        let Some(framer) = self.by_stream.get_mut(slot) else {
            return;
        };
        let before = framer.buffered();
        let h2_before = framer.h2().map(|c| c.streams_seen());
        f(framer, limits, &mut out);
        if let Some(conn) = framer.h2() {
            let start = conn.start().index();
            if h2_before.is_none() {
                self.h2_connections[start] += 1;
            }
            self.h2_streams[start] += conn.streams_seen() - h2_before.unwrap_or(0);
        }
        let mut after = framer.buffered();
        if self.held.saturating_sub(before) + after > self.budget && after > 0 {
            framer.shed(ts_nanos, &mut out);
            self.overflows += 1;
            after = framer.buffered();
        }
        self.held = self.held.saturating_sub(before) + after;
        let protocol = framer.protocol();
        self.scratch = out;
        self.drain(stream, protocol, ts_nanos);
    }

    /// Turns the framer's events into the pipeline's. `protocol`: the stream's, after
    /// the call that produced them.
    fn drain(&mut self, stream: StreamKey, protocol: Protocol, now: u64) {
        let (client, server) = (stream.flow.src, stream.flow.dst);
        let mut scratch = std::mem::take(&mut self.scratch);
        for ev in scratch.drain(..) {
            match ev {
                RequestEvent::Request(request) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    // The request goes out before anything its answer gives.
                    let method = self
                        .responses
                        .is_some()
                        .then(|| (request.method.clone(), request.protocol, request.stream_id));
                    self.events.push(PipelineEvent::Request(Captured {
                        id,
                        conn: stream.conn,
                        client,
                        server,
                        request,
                    }));
                    if let Some((method, protocol, h2_stream)) = method {
                        let h2_stream = (protocol == Protocol::H2).then_some(h2_stream);
                        self.expect_answer(stream, id, Some(&method), h2_stream, now);
                    }
                }
                RequestEvent::Dropped {
                    ts_nanos,
                    reason,
                    method,
                } => {
                    self.events.push(PipelineEvent::Dropped {
                        ts_nanos,
                        protocol,
                        client,
                        server,
                        reason,
                        method,
                    });
                    // The server answers most of these too (400, 413...): the answer
                    // holds a place in the connection's order.
                    if protocol == Protocol::Http1 {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.expect_answer(stream, id, None, None, ts_nanos);
                    }
                }
                RequestEvent::NotHttp { kind, bytes } => {
                    self.events.push(PipelineEvent::NotHttp {
                        client,
                        server,
                        kind,
                        bytes,
                    });
                }
            }
        }
        self.scratch = scratch;
    }

    /// A request (`method`: `None` for one not framed whole, whose answer is only
    /// skipped) whose last byte came at `end_ts` waits for its answer, with `--diff`.
    fn expect_answer(
        &mut self,
        stream: StreamKey,
        id: u64,
        method: Option<&str>,
        h2_stream: Option<u32>,
        end_ts: u64,
    ) {
        let Some(limits) = self.responses else {
            return;
        };
        if !self.pairs.contains_key(&stream) && self.pairs.len() >= MAX_PAIRINGS {
            if method.is_some() {
                self.events.push(PipelineEvent::ResponseMissing { id });
            }
            return;
        }
        let max_header_block = self.limits.max_head;
        let pairing = self.pairs.entry(stream).or_insert_with(|| Pairing {
            answers: match h2_stream {
                Some(_) => Answers::H2(Box::new(ServerAnswers::new(
                    limits.max_body,
                    max_header_block,
                ))),
                None => Answers::Http1(Box::new(ResponseFramer::new(limits))),
            },
            ends: HashMap::new(),
            answered: false,
            lost: false,
        });
        let mut out = std::mem::take(&mut self.response_events);
        match (&mut pairing.answers, h2_stream) {
            (Answers::H2(answers), Some(h2_stream)) if !pairing.lost => {
                pairing.ends.insert(id, end_ts);
                self.kept.insert(id, (stream, Some(h2_stream)));
                answers.expect(h2_stream, id, &mut out);
                self.response_events = out;
                self.drain_responses(stream);
                return;
            }
            // An HTTP/2 request on a connection paired as HTTP/1.1 (after an upgrade),
            // or the reverse: its answer is not followed.
            (Answers::H2(_), None) | (Answers::Http1(_), Some(_)) => pairing.lost = true,
            _ => {}
        }
        self.response_events = out;
        if pairing.lost {
            if method.is_some() {
                self.events.push(PipelineEvent::ResponseMissing { id });
            }
            return;
        }
        let expected = Expected {
            head: method == Some("HEAD"),
            connect: method == Some("CONNECT"),
            keep: method.is_some(),
            id,
        };
        if expected.keep {
            pairing.ends.insert(id, end_ts);
            self.kept.insert(id, (stream, None));
        }
        let mut out = std::mem::take(&mut self.response_events);
        if let Answers::Http1(framer) = &mut pairing.answers {
            framer.expect(expected, &mut out);
        }
        self.response_events = out;
        self.drain_responses(stream);
    }

    /// The answers of these requests are not wanted after all (not sampled): framed,
    /// nothing kept. Their answers start in later frames than their requests end, so
    /// this comes in time when called before the next frame.
    fn drop_answers(&mut self, ids: &[u64]) {
        for id in ids {
            let Some((stream, h2_stream)) = self.kept.remove(id) else {
                continue;
            };
            let Some(p) = self.pairs.get_mut(&stream) else {
                continue;
            };
            p.ends.remove(id);
            match (&mut p.answers, h2_stream) {
                (Answers::Http1(f), _) => f.unkeep(*id),
                (Answers::H2(a), Some(s)) => a.unkeep(s),
                (Answers::H2(_), None) => {}
            }
        }
    }

    /// The client's side of a paired connection lost bytes: which request an answer
    /// belongs to is no longer known from here on.
    fn client_lost(&mut self, stream: StreamKey) {
        if let Some(p) = self.pairs.get_mut(&stream) {
            p.lost = true;
        }
    }

    /// Whether `stream` carries a server's answers (`--diff` only): it comes from a
    /// watched port, or, without ports, its reverse carries requests.
    fn is_answer_stream(&self, stream: StreamKey) -> bool {
        if self.responses.is_none() {
            return false;
        }
        match &self.ports {
            Some(ports) => {
                ports.contains(&stream.flow.src.port()) && !ports.contains(&stream.flow.dst.port())
            }
            None => self.pairs.contains_key(&client_of(stream)),
        }
    }

    /// Runs `f` on the pairing of answer stream `stream`, then hands on its events.
    fn with_pairing(
        &mut self,
        stream: StreamKey,
        f: impl FnOnce(&mut Answers, &mut Vec<ResponseEvent>),
    ) {
        let client = client_of(stream);
        let Some(pairing) = self.pairs.get_mut(&client) else {
            return;
        };
        pairing.answered = true;
        let mut out = std::mem::take(&mut self.response_events);
        f(&mut pairing.answers, &mut out);
        self.response_events = out;
        self.drain_responses(client);
    }

    fn drain_responses(&mut self, client: StreamKey) {
        let mut ends = self.pairs.get_mut(&client).map(|p| &mut p.ends);
        for ev in self.response_events.drain(..) {
            let (id, first_byte) = match &ev {
                ResponseEvent::Response {
                    id, first_byte_ts, ..
                } => (*id, Some(*first_byte_ts)),
                ResponseEvent::Missing { id } => (*id, None),
            };
            let end_ts = ends.as_deref_mut().and_then(|ends| ends.remove(&id));
            self.kept.remove(&id);
            self.events.push(match ev {
                ResponseEvent::Response {
                    id, mut summary, ..
                } => {
                    let waited = first_byte
                        .zip(end_ts)
                        .map_or(0, |(first, end)| first.saturating_sub(end));
                    summary.latency = std::time::Duration::from_nanos(waited);
                    PipelineEvent::Response { id, summary }
                }
                ResponseEvent::Missing { id } => PipelineEvent::ResponseMissing { id },
            });
        }
    }
}

/// The client's stream of the connection whose other direction is `stream`.
fn client_of(stream: StreamKey) -> StreamKey {
    StreamKey {
        conn: stream.conn,
        flow: stream.flow.reversed(),
    }
}

impl StreamSink for Framers {
    fn data(&mut self, stream: StreamKey, ts_nanos: u64, bytes: &[u8]) {
        if self.is_answer_stream(stream) {
            self.with_pairing(stream, |f, out| f.push(ts_nanos, bytes, out));
            return;
        }
        self.with_framer(stream, ts_nanos, |f, limits, out| {
            f.push(limits, ts_nanos, bytes, out)
        });
    }

    fn gap(&mut self, stream: StreamKey, ts_nanos: u64, missing: u64) {
        if self.is_answer_stream(stream) {
            self.with_pairing(stream, |f, out| f.gap(ts_nanos, missing, out));
            return;
        }
        if missing > 0 {
            self.client_lost(stream);
        }
        self.with_framer(stream, ts_nanos, |f, _, out| f.gap(ts_nanos, missing, out));
    }

    fn distrust(&mut self, stream: StreamKey, ts_nanos: u64) {
        if self.is_answer_stream(stream) {
            // Bytes that may not be what the client read: framing them proves nothing.
            self.with_pairing(stream, |f, out| f.gap(ts_nanos, u64::MAX, out));
            return;
        }
        self.client_lost(stream);
        self.with_framer(stream, ts_nanos, |f, limits, out| {
            f.distrust(limits, ts_nanos, out)
        });
    }

    fn busy(&self, stream: StreamKey) -> bool {
        self.by_stream
            .find(&stream)
            .and_then(|slot| self.by_stream.get(slot).as_ref())
            .is_some_and(|framer| !framer.is_idle())
    }

    fn end(&mut self, stream: StreamKey, ts_nanos: u64, _how: StreamEnd) {
        if self.is_answer_stream(stream) {
            self.with_pairing(stream, |f, out| f.finish(ts_nanos, out));
            self.pairs.remove(&client_of(stream));
            return;
        }
        // A connection whose server said nothing: its requests' answers will not come.
        if let Some(p) = self.pairs.get_mut(&stream).filter(|p| !p.answered) {
            p.answers.finish(ts_nanos, &mut self.response_events);
            self.drain_responses(stream);
            self.pairs.remove(&stream);
        }
        let slot = self.by_stream.find(&stream);
        if let Some(mut framer) = slot.and_then(|slot| self.by_stream.remove(slot)) {
            self.held = self.held.saturating_sub(framer.buffered());
            framer.finish(ts_nanos, &mut self.scratch);
            self.drain(stream, framer.protocol(), ts_nanos);
        }
    }
}

/// How often (in capture time) idle flows are looked for.
const EXPIRE_EVERY_NANOS: u64 = 1_000_000_000;

/// Decides, per decoded segment, whether it goes on to reassembly (`true`) or is left
/// out (the agent's own traffic, a second sighting of one packet).
pub type SegmentGate = Box<dyn FnMut(&Segment<'_>) -> bool + Send>;

/// The first half of the pipeline: decode and reassembly, handing the streams' bytes to
/// any `StreamSink`. Alone it lets `inspect` frame on another thread (`SinkBatch`).
pub struct PipelineFront {
    decoder: Decoder,
    gate: Option<SegmentGate>,
    flows: FlowTable,
    stats: PipelineStats,
    last_expire: u64,
    latest_ts: u64,
}

impl PipelineFront {
    pub fn new(config: &PipelineConfig) -> Self {
        Self {
            decoder: Decoder::new(config.decoder),
            gate: None,
            flows: FlowTable::new(ReassemblyConfig {
                responses: config.reassembly.responses || config.responses.is_some(),
                ..config.reassembly.clone()
            }),
            stats: PipelineStats::default(),
            last_expire: 0,
            latest_ts: 0,
        }
    }

    /// Feeds one frame; what it completes goes to `sink`.
    pub fn push_frame<S: StreamSink>(
        &mut self,
        frame: &Frame<'_>,
        sink: &mut S,
    ) -> Result<(), DecodeError> {
        self.stats.frames += 1;
        self.latest_ts = self.latest_ts.max(frame.ts_nanos);
        match self.decoder.decode(frame) {
            Ok(Some(segment)) => {
                if self.gate.as_mut().is_none_or(|keep| keep(&segment)) {
                    self.flows.push(&segment, sink);
                }
            }
            Ok(None) => {}
            Err(e) => {
                self.stats.decode_errors += 1;
                return Err(e);
            }
        }
        self.maybe_expire(sink);
        Ok(())
    }

    /// See `Pipeline::tick`.
    pub fn tick<S: StreamSink>(&mut self, now_nanos: u64, sink: &mut S) {
        self.latest_ts = self.latest_ts.max(now_nanos);
        self.maybe_expire(sink);
    }

    fn maybe_expire<S: StreamSink>(&mut self, sink: &mut S) {
        if self.latest_ts.saturating_sub(self.last_expire) >= EXPIRE_EVERY_NANOS {
            self.last_expire = self.latest_ts;
            self.flows.expire(self.latest_ts, sink);
            self.flows.give_up_stale_holes(self.latest_ts, sink);
        }
    }

    /// Ends every stream reassembly knows (end of capture).
    pub fn flush<S: StreamSink>(&mut self, sink: &mut S) {
        self.flows.flush(self.latest_ts, sink);
        self.decoder.flush();
    }

    /// The latest time seen, from frames or ticks.
    pub fn latest_ts(&self) -> u64 {
        self.latest_ts
    }

    /// Frames and decode errors (`framer_overflows` belongs to the framing half).
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }
}

/// One recorded `StreamSink` call; a `Data`'s bytes are the next `len` of `SinkBatch::bytes`.
#[derive(Clone, Copy, Debug)]
enum SinkOp {
    Data {
        stream: StreamKey,
        ts_nanos: u64,
        len: usize,
    },
    Gap {
        stream: StreamKey,
        ts_nanos: u64,
        missing: u64,
    },
    End {
        stream: StreamKey,
        ts_nanos: u64,
        how: StreamEnd,
    },
    Distrust {
        stream: StreamKey,
        ts_nanos: u64,
    },
}

/// Reassembly's output recorded in order, to be framed on another thread
/// (`PipelineBack::replay`). Reused: `clear` keeps the allocations.
#[derive(Debug, Default)]
pub struct SinkBatch {
    ops: Vec<SinkOp>,
    bytes: Vec<u8>,
}

/// A `SinkBatch` is handed on once it holds this many calls or bytes.
const BATCH_OPS: usize = 1024;
const BATCH_BYTES: usize = 64 * 1024;

impl SinkBatch {
    /// Enough recorded to be worth handing on.
    pub fn is_full(&self) -> bool {
        self.ops.len() >= BATCH_OPS || self.bytes.len() >= BATCH_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Empties the batch; a rare huge delivery does not leave its allocation behind.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.bytes.clear();
        if self.bytes.capacity() > 4 * BATCH_BYTES {
            self.bytes = Vec::new();
        }
    }
}

impl StreamSink for SinkBatch {
    fn data(&mut self, stream: StreamKey, ts_nanos: u64, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
        self.ops.push(SinkOp::Data {
            stream,
            ts_nanos,
            len: bytes.len(),
        });
    }

    fn gap(&mut self, stream: StreamKey, ts_nanos: u64, missing: u64) {
        self.ops.push(SinkOp::Gap {
            stream,
            ts_nanos,
            missing,
        });
    }

    fn end(&mut self, stream: StreamKey, ts_nanos: u64, how: StreamEnd) {
        self.ops.push(SinkOp::End {
            stream,
            ts_nanos,
            how,
        });
    }

    fn distrust(&mut self, stream: StreamKey, ts_nanos: u64) {
        self.ops.push(SinkOp::Distrust { stream, ts_nanos });
    }
}

/// The second half of the pipeline: request framing of the streams a `PipelineFront`
/// delivered, replayed from `SinkBatch`es in their order.
pub struct PipelineBack {
    framers: Framers,
}

impl PipelineBack {
    pub fn new(config: &PipelineConfig) -> Self {
        Self {
            framers: Framers::new(config),
        }
    }

    /// Frames the batch's bytes; `on_event` gets every event in the order the
    /// sequential `Pipeline` reports them. Stops at the first error `on_event` returns.
    pub fn replay<E>(
        &mut self,
        batch: &SinkBatch,
        mut on_event: impl FnMut(PipelineEvent) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut at = 0;
        for op in &batch.ops {
            match *op {
                SinkOp::Data {
                    stream,
                    ts_nanos,
                    len,
                } => {
                    self.framers
                        .data(stream, ts_nanos, &batch.bytes[at..at + len]);
                    at += len;
                }
                SinkOp::Gap {
                    stream,
                    ts_nanos,
                    missing,
                } => self.framers.gap(stream, ts_nanos, missing),
                SinkOp::End {
                    stream,
                    ts_nanos,
                    how,
                } => self.framers.end(stream, ts_nanos, how),
                SinkOp::Distrust { stream, ts_nanos } => self.framers.distrust(stream, ts_nanos),
            }
            for ev in self.framers.events.drain(..) {
                on_event(ev)?;
            }
        }
        Ok(())
    }

    /// Ends the streams still open here after the front's `flush` (none expected), as
    /// `Pipeline::flush` does; `latest_ts` is the front's.
    pub fn finish<E>(
        &mut self,
        latest_ts: u64,
        mut on_event: impl FnMut(PipelineEvent) -> Result<(), E>,
    ) -> Result<(), E> {
        self.framers.end_all(latest_ts);
        for ev in self.framers.events.drain(..) {
            on_event(ev)?;
        }
        Ok(())
    }

    /// Times a stream gave up what its framer held to stay under `max_framer_bytes`.
    pub fn framer_overflows(&self) -> u64 {
        self.framers.overflows
    }

    /// See `Pipeline::drop_answers`.
    pub fn drop_answers(&mut self, ids: &[u64]) {
        self.framers.drop_answers(ids);
    }

    /// HTTP/2 connections and the streams opened on them, by how their start was seen.
    pub fn h2_stats(&self) -> ([u64; 3], [u64; 3]) {
        (self.framers.h2_connections, self.framers.h2_streams)
    }
}

/// frames in, `PipelineEvent`s out. Pure: no I/O, time from the frames.
pub struct Pipeline {
    front: PipelineFront,
    framers: Framers,
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        Self {
            front: PipelineFront::new(&config),
            framers: Framers::new(&config),
        }
    }

    /// Feeds one frame; returns the events it completed (valid until the next call).
    pub fn push_frame(
        &mut self,
        frame: &Frame<'_>,
    ) -> Result<std::vec::Drain<'_, PipelineEvent>, DecodeError> {
        self.front.push_frame(frame, &mut self.framers)?;
        Ok(self.framers.events.drain(..))
    }

    /// The clock moved with no frame (live capture on a quiet moment): connections idle
    /// too long end and holes open too long are given up, as if a frame had come at
    /// `now_nanos` (same clock as frame timestamps).
    pub fn tick(&mut self, now_nanos: u64) -> std::vec::Drain<'_, PipelineEvent> {
        self.front.tick(now_nanos, &mut self.framers);
        self.framers.events.drain(..)
    }

    /// Ends every stream (end of capture): partial requests become `incomplete`.
    pub fn flush(&mut self) -> std::vec::Drain<'_, PipelineEvent> {
        self.front.flush(&mut self.framers);
        self.framers.end_all(self.front.latest_ts);
        self.framers.events.drain(..)
    }

    /// `--diff`: the answers of these requests are not wanted (not sampled for the
    /// candidate): they are framed to keep each connection's order, and nothing of them
    /// is kept. Call it after handing on a push's events, before the next frame.
    pub fn drop_answers(&mut self, ids: &[u64]) {
        self.framers.drop_answers(ids);
    }

    /// Installs the segment gate (live capture only).
    pub fn set_gate(&mut self, gate: SegmentGate) {
        self.front.gate = Some(gate);
    }

    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            framer_overflows: self.framers.overflows,
            h2_connections: self.framers.h2_connections,
            h2_streams: self.framers.h2_streams,
            ..self.front.stats.clone()
        }
    }

    pub fn decoder(&self) -> &Decoder {
        &self.front.decoder
    }

    pub fn flows(&self) -> &FlowTable {
        &self.front.flows
    }

    /// Bytes held by the framers of open streams.
    pub fn framer_buffered(&self) -> usize {
        self.framers
            .by_stream
            .values()
            .flatten()
            .map(StreamFramer::buffered)
            .sum()
    }
}
