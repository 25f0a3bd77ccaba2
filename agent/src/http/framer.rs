//! `RequestFramer`: the state machine that turns one client->server byte stream into
//! requests, drops and not-HTTP counts. It owns the buffering (bounded by
//! `FramerLimits`) and the rules for where a request may be trusted to start.
//!
//! # Where requests are trusted to start
//!
//! A trusted boundary is the first byte of the stream, or the byte after a request
//! whose framing we followed exactly (no body, Content-Length, or chunked end). Two
//! weaker ways back in exist, and one deliberate dead end:
//!
//! * **Hunting** (after a capture gap we could not skip exactly, at a stream whose
//!   first line is not a request line (capture started mid-connection), after a request
//!   carrying `Upgrade`): bytes are skipped (counted `NotHttp::Other`) until a line that
//!   is a full `METHOD SP target SP HTTP/1.x` line with an upper-case method, at the
//!   start of a line (or right where the hunt began). The bytes lost there were the
//!   capture's fault, not the client's, and SPEC.md asks to pick up again. A head found
//!   this way that httparse rejects is taken for body text and hunting goes on.
//! * **Skipping exactly**: a capture gap inside a Content-Length body or inside chunk
//!   data, and a body over `max_body`, are skipped by their known length, so the next
//!   request is framed as if nothing happened.
//! * **Never again on this stream** after the client's own framing was unparseable or
//!   ambiguous (both CL and TE, differing CLs, bad sizes, bad chunk lines, httparse
//!   errors, HTTP/0.9). RFC 9112 §6.3 makes a server answer 400 and close the connection
//!   in these cases, so no later byte on it is a request a conforming server would have
//!   served; a server that did act on them guessed the framing, which is exactly what
//!   request smuggling exploits (the `GET /smuggled-*` requests of the zeek 261 variants
//!   sit right after such a head). Resynchronising at "the next request line" would
//!   replay those hidden requests as real ones, so the rest of the stream is counted
//!   `NotHttp::Other` instead. The only trusted boundary left is a new connection.
//!
//! A head over `max_head` (or with more than `max_headers` fields) is dropped as
//! `TooLarge`, but its remaining lines are still scanned (one line at a time, bounded) for
//! the framing fields, so its body is skipped exactly and the stream stays trusted. If
//! those fields are ambiguous, or the request line alone is over `max_head`, the stream
//! is not trusted after it, as above.
//!
//! Classification (HTTP/2 preface, TLS, response) runs at the stream start, at a hunt
//! after `Upgrade` and at the start of a `CONNECT` tunnel; not after a gap in a stream
//! already seen to carry requests, where a few body bytes that happen to look like a
//! TLS record must not end framing for good.
//!
//! # Other decisions
//!
//! * HTTP/0.9 simple requests (`GET /path` without version) are `Unparseable`: there is
//!   no header to carry the shadow Host, and a server closes after answering one.
//! * `CONNECT` is emitted as a request; everything after it is the tunnel's payload and
//!   counted `NotHttp` (TLS when it looks like TLS), never parsed: a server that refused
//!   the tunnel would have closed the connection or left the client to reconnect.
//! * A request with `Upgrade` is emitted; after it we hunt, since the server may have
//!   switched protocols (`h2c` shows up as the HTTP/2 preface and is counted as such).
//! * Empty lines before a request line are skipped (RFC 9112 §2.2).
//! * `Connection: close` does not end framing: what the client sent after it is still
//!   what it sent.
//! * `NotHttp` counts are emitted once per run of skipped bytes (when the run ends or at
//!   `finish`), never per push, so the events do not depend on how bytes were split.
//!   Bytes lost in gaps are not counted.

use std::cell::Cell;
use std::mem::MaybeUninit;

use super::checks::{connection_tokens, judge, persists, HeadFacts, Verdict};
use super::chunked::{framing_of, parse_chunk_size, trim_ows, Framing, MAX_CHUNK_LINE};
use super::new_request;
use super::sync::{
    classify, is_broken_request_line, line_check, method_hint, Classified, LineCheck,
};
use crate::request::{DropReason, Header, NotHttpKind, Request, RequestEvent};

/// Caps on what one stream may make the framer hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramerLimits {
    /// Request line plus header fields plus the empty line; also caps a trailer section.
    pub max_head: usize,
    /// Header fields in one head.
    pub max_headers: usize,
    /// Body bytes (after de-chunking) of one request.
    pub max_body: usize,
}

impl Default for FramerLimits {
    fn default() -> Self {
        Self {
            max_head: 64 * 1024,
            max_headers: 128,
            max_body: 8 * 1024 * 1024,
        }
    }
}

impl FramerLimits {
    /// The most `RequestFramer::buffered` reports under these limits, between calls.
    pub fn buffer_bound(&self) -> usize {
        self.max_head.max(MAX_CHUNK_LINE) + self.max_body + SCANNER_BOUND
    }
}

/// Header slots `head` keeps on the stack; a larger `max_headers` takes them from the heap.
const STACK_HEADERS: usize = 128;

thread_local! {
    /// The input buffer of a framer that holds nothing between pushes (nearly all of
    /// them): one per thread instead of an allocation and a free per segment, which was
    /// a tenth of the live agent's time.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A scratch buffer keeps at most this much capacity between pushes.
const MAX_SCRATCH: usize = 256 * 1024;

/// Bytes the oversized-head scanner may hold: one line prefix and the framing values.
const SCANNER_LINE: usize = 256;
const SCANNER_FIELDS: usize = 16;
const SCANNER_BOUND: usize = SCANNER_LINE * (SCANNER_FIELDS + 1) + 1024;

/// How a head came to be parsed: decides what a parse failure means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// First bytes of the stream: a first line that is not a request line means the
    /// capture started mid-connection, so we hunt.
    Start,
    /// Right after a request we framed exactly: failures are the client's.
    Trusted,
    /// Found while hunting: failures mean it was body text after all.
    Hunted,
}

/// What follows a request once its body is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Idle,
    /// The server stops reading HTTP/1.1 here: `Connection: close`, an HTTP/1.0 request
    /// without keep-alive, or `Upgrade` (the protocol may have switched).
    Untrusted,
    /// `CONNECT`: a tunnel.
    Tunnel,
    /// `Upgrade: h2c`: the client sends the HTTP/2 preface next if the server switched.
    H2c,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    SizeLine,
    Data(u64),
    DataEnd,
    /// The trailer section; how far the search for its end got.
    Trailers(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyFraming {
    Length(u64),
    Chunked(Chunk),
}

#[derive(Debug)]
struct InFlight {
    req: Request,
    /// A `Dropped` was emitted for it already: its bytes are only skipped.
    reported: bool,
    framing: BodyFraming,
    after: After,
}

/// Reads the lines of a head too large to buffer, keeping only what framing needs.
#[derive(Debug)]
struct OversizedHead {
    method: Option<String>,
    version_minor: u8,
    line: Vec<u8>,
    line_overflow: bool,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    upgrade: bool,
    /// `Connection` said `close`, or a `Connection` line was too long to read.
    close: bool,
    keep_alive: bool,
    hosts: u32,
}

#[derive(Debug)]
enum State {
    /// Nothing classified yet.
    Start,
    /// At a trusted boundary, between requests.
    Idle,
    /// `buf[pos..]` is a head in progress. `line_ok`: its request line was checked;
    /// `scanned`: how far the end-of-head search got.
    Head {
        origin: Origin,
        line_ok: bool,
        scanned: usize,
    },
    Body(Box<InFlight>),
    Oversized(Box<OversizedHead>),
    /// Looking for a request line. `classify`: first check for a non-HTTP protocol;
    /// `line_start`: `buf[pos]` starts a line; `scanned`: bytes of it known to hold no
    /// line end (so each byte is looked at once, however small the pushes).
    Hunt {
        classify: bool,
        line_start: bool,
        scanned: usize,
    },
    /// After CONNECT: classify the tunnel's payload, then skip it all.
    Tunnel,
    /// The rest of the stream is skipped and counted as this kind.
    Skip(NotHttpKind),
    /// After a request asking `Upgrade: h2c`: the preface follows if the server switched.
    AwaitPreface,
    /// `buf[pos..]` is HTTP/2 from its preface on: `take_h2` hands it over.
    H2 {
        upgraded: bool,
    },
    Done,
}

/// The start of an HTTP/2 connection found on a stream (`RequestFramer::take_h2`).
#[derive(Debug)]
pub struct H2Handoff {
    /// After an `Upgrade: h2c` request (stream 1), rather than from the first byte.
    pub upgraded: bool,
    /// The stream's bytes from the preface on.
    pub bytes: Vec<u8>,
}

/// Whether an `Upgrade` field offers `h2c` (RFC 7540 §3.2; the token list may name others).
fn upgrades_to_h2c(headers: &[Header]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|token| trim_ows(token).eq_ignore_ascii_case(b"h2c"))
}

/// Incremental HTTP/1.1 request framer for one client->server stream. Feed bytes in any
/// split; the events depend only on the bytes, gaps and limits, plus `ts_nanos`.
#[derive(Debug)]
pub struct RequestFramer {
    limits: FramerLimits,
    state: State,
    /// Bytes received and not consumed yet; `pos` is the first unconsumed one during a push.
    buf: Vec<u8>,
    pos: usize,
    /// During a push: how many bytes at the front of `buf` came with earlier pushes;
    /// they arrived at `buf_ts`.
    old: usize,
    buf_ts: u64,
    /// Timestamp of the first byte of the request in progress.
    req_ts: u64,
    /// A run of skipped bytes not reported yet.
    pending: Option<(NotHttpKind, u64)>,
    /// The framing state was lost (start not seen, gap, conflicting bytes) or the server
    /// stopped reading: from here to the end of the stream, requests are only counted.
    untrusted: bool,
    /// Blank lines came before the first request: not a stream an HTTP/2 server takes
    /// for prior knowledge (the preface must be its first byte).
    leading_blank: bool,
}

impl RequestFramer {
    pub fn new(limits: FramerLimits) -> Self {
        Self {
            limits,
            state: State::Start,
            buf: Vec::new(),
            pos: 0,
            old: 0,
            buf_ts: 0,
            req_ts: 0,
            pending: None,
            untrusted: false,
            leading_blank: false,
        }
    }

    /// HTTP/2 found and not taken over by the next call (the framer alone, as in its
    /// tests and fuzz target): from here the stream is skipped as HTTP/2, as if it had
    /// been from the start, whatever the next call is.
    fn unclaimed_h2(&mut self, out: &mut Vec<RequestEvent>) {
        if let State::H2 { .. } = self.state {
            let held = std::mem::take(&mut self.buf).len() as u64;
            self.skipped(NotHttpKind::Http2Preface, held, out);
            self.state = State::Skip(NotHttpKind::Http2Preface);
        }
    }

    /// When the stream turned out to be HTTP/2 (the preface at its first byte, or right
    /// after an `Upgrade: h2c` request), its bytes from the preface on; the framer is done
    /// with the stream. Checked after each `push`.
    pub fn take_h2(&mut self) -> Option<H2Handoff> {
        let State::H2 { upgraded } = self.state else {
            return None;
        };
        self.state = State::Done;
        Some(H2Handoff {
            upgraded,
            bytes: std::mem::take(&mut self.buf),
        })
    }

    /// Feeds the next bytes of the stream, which arrived at `ts_nanos`.
    pub fn push(&mut self, ts_nanos: u64, data: &[u8], out: &mut Vec<RequestEvent>) {
        if matches!(self.state, State::Done) || data.is_empty() {
            return;
        }
        self.unclaimed_h2(out);
        if let (State::Skip(kind), true) = (&self.state, self.buf.is_empty()) {
            // Nothing more to parse on this stream: count without copying.
            let kind = *kind;
            self.skipped(kind, data.len() as u64, out);
            return;
        }
        self.old = self.buf.len();
        let scratch = self.buf.capacity() == 0;
        if scratch {
            self.buf = SCRATCH.take();
        }
        self.buf.extend_from_slice(data);
        self.pos = 0;
        while self.step(ts_nanos, out) {}
        let consumed = self.pos;
        if consumed >= self.old {
            self.buf_ts = ts_nanos;
        }
        // Usually all of it: clearing skips the `Drain` machinery, run once per segment.
        if consumed == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..consumed);
        }
        self.pos = 0;
        self.old = 0;
        // The budget over all framers counts held bytes, not capacity: an empty buffer
        // kept by each of `max-flows` idle streams would be outside it (a segment's worth
        // each, 100,000 x 1.4 KiB). So a framer keeps no empty buffer, and what it keeps
        // of the thread's scratch buffer is a copy of the bytes it holds.
        if self.buf.is_empty() || scratch {
            let held = if self.buf.is_empty() {
                Vec::new()
            } else {
                self.buf.clone()
            };
            let mut spare = std::mem::replace(&mut self.buf, held);
            if spare.capacity() <= MAX_SCRATCH {
                spare.clear();
                SCRATCH.set(spare);
            }
        }
    }

    /// `missing` bytes of the stream were lost in the capture at this point. Unless the
    /// loss lies inside a body of known length (skipped exactly), the framing state is
    /// lost with them: the rest of the stream is untrusted.
    pub fn gap(&mut self, ts_nanos: u64, missing: u64, out: &mut Vec<RequestEvent>) {
        if missing == 0 {
            return;
        }
        self.unclaimed_h2(out);
        let leftover = self.buf.len() as u64;
        let method = method_hint(&self.buf);
        self.buf.clear();
        self.state = match std::mem::replace(&mut self.state, State::Done) {
            State::Done => State::Done,
            State::Start => {
                let next = self.lose_framing(true);
                self.skipped(NotHttpKind::Other, leftover, out);
                next
            }
            State::Idle => {
                // The lost bytes were the client's, so at least one request was in them.
                self.drop_request(out, ts_nanos, DropReason::Incomplete, None);
                self.lose_framing(false)
            }
            // The first bytes of a stream, not yet a whole request line: nothing says
            // they were a request.
            State::Head {
                origin: Origin::Start,
                line_ok: false,
                ..
            } => {
                let next = self.lose_framing(false);
                self.skipped(NotHttpKind::Other, leftover, out);
                next
            }
            State::Head { .. } => {
                self.drop_request(out, self.req_ts, DropReason::Incomplete, method);
                self.lose_framing(false)
            }
            State::Body(mut inflight) => {
                if !inflight.reported {
                    let method = Some(inflight.req.method.clone());
                    self.drop_request(out, self.req_ts, DropReason::Incomplete, method);
                    inflight.reported = true;
                    inflight.req.body = Vec::new();
                }
                self.body_gap(ts_nanos, *inflight, missing, out)
            }
            State::Oversized(_) => self.lose_framing(false),
            State::Hunt { classify, .. } => {
                self.skipped(NotHttpKind::Other, leftover, out);
                State::Hunt {
                    classify,
                    line_start: true,
                    scanned: 0,
                }
            }
            State::Tunnel => {
                self.skipped(NotHttpKind::Other, leftover, out);
                State::Skip(NotHttpKind::Other)
            }
            State::Skip(kind) => State::Skip(kind),
            State::AwaitPreface | State::H2 { .. } => {
                self.skipped(NotHttpKind::Other, leftover, out);
                self.lose_framing(true)
            }
        };
    }

    /// From this point the stream's bytes may not be what the server read: its start
    /// was not seen (agent started or restarted mid-connection, flow evicted or timed
    /// out and picked up again), or retransmissions disagreed on its bytes. A request in
    /// progress is dropped as untrusted, and the rest of the stream is only counted.
    pub fn distrust(&mut self, ts_nanos: u64, out: &mut Vec<RequestEvent>) {
        let _ = ts_nanos;
        self.unclaimed_h2(out);
        if self.untrusted {
            return;
        }
        let state = std::mem::replace(&mut self.state, State::Done);
        if let State::Done | State::Skip(_) | State::Tunnel = state {
            // Nothing more is framed on this stream anyway.
            self.state = state;
            return;
        }
        self.untrusted = true;
        let leftover = self.buf.len() as u64;
        let method = method_hint(&self.buf);
        self.buf.clear();
        let classify = matches!(state, State::Start);
        match state {
            State::Head {
                origin: Origin::Start,
                line_ok: false,
                ..
            } => self.skipped(NotHttpKind::Other, leftover, out),
            State::Head { .. } => {
                self.drop_request(out, self.req_ts, DropReason::Untrusted, method);
            }
            State::Body(mut inflight) => {
                self.drop_inflight(&mut inflight, DropReason::Untrusted, out);
            }
            _ => self.skipped(NotHttpKind::Other, leftover, out),
        }
        self.state = self.lose_framing(classify);
    }

    /// Whether the stream was found untrusted (see `distrust`).
    pub fn is_untrusted(&self) -> bool {
        self.untrusted
    }

    /// The framing state is gone for good: what follows is searched for request lines
    /// only to count them (`DropReason::Untrusted`), after checking for other protocols
    /// when `classify`.
    fn lose_framing(&mut self, classify: bool) -> State {
        self.untrusted = true;
        State::Hunt {
            classify,
            line_start: true,
            scanned: 0,
        }
    }

    /// Gives up what the stream holds, to keep all streams under one memory budget: a
    /// body in progress is dropped as `TooLarge` and the rest of it skipped by its
    /// framing (the stream stays trusted); other held bytes are treated as lost in the
    /// capture (see `gap`).
    pub fn shed(&mut self, ts_nanos: u64, out: &mut Vec<RequestEvent>) {
        self.unclaimed_h2(out);
        match std::mem::replace(&mut self.state, State::Done) {
            State::Body(mut inflight) => {
                self.drop_inflight(&mut inflight, DropReason::TooLarge, out);
                self.state = State::Body(inflight);
            }
            other => {
                self.state = other;
                let held = self.buf.len() as u64;
                self.gap(ts_nanos, held, out);
            }
        }
        // What it held is what the budget is short of: give the memory back too.
        if self.buf.is_empty() {
            self.buf = Vec::new();
        } else {
            self.buf.shrink_to_fit();
        }
    }

    /// The stream ended: a request in progress is dropped as incomplete and pending
    /// counts are reported. Later calls do nothing.
    pub fn finish(&mut self, ts_nanos: u64, out: &mut Vec<RequestEvent>) {
        // Drops carry their request's first-byte time, not the time the stream ended.
        let _ = ts_nanos;
        self.unclaimed_h2(out);
        let leftover = self.buf.len() as u64;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Head {
                origin: Origin::Start,
                line_ok: false,
                ..
            } => self.skipped(NotHttpKind::Other, leftover, out),
            State::Head { .. } => {
                let method = method_hint(&self.buf);
                self.drop_request(out, self.req_ts, DropReason::Incomplete, method);
            }
            State::Body(inflight) if !inflight.reported => {
                let method = Some(inflight.req.method.clone());
                self.drop_request(out, self.req_ts, DropReason::Incomplete, method);
            }
            State::Start | State::Hunt { .. } | State::Tunnel | State::AwaitPreface => {
                self.skipped(NotHttpKind::Other, leftover, out);
            }
            // HTTP/2 no one took over (`take_h2`): counted as before.
            State::H2 { .. } => self.skipped(NotHttpKind::Http2Preface, leftover, out),
            _ => {}
        }
        self.flush_skipped(out);
        self.buf = Vec::new();
    }

    /// No request is in progress and nothing is buffered.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty()
            && !matches!(
                self.state,
                State::Head { .. } | State::Body(_) | State::Oversized(_)
            )
    }

    /// Bytes held for the stream (buffered input, the body and trailers in progress).
    pub fn buffered(&self) -> usize {
        let held = match &self.state {
            State::Body(inflight) => {
                inflight.req.body.len()
                    + inflight
                        .req
                        .trailers
                        .iter()
                        .map(|h| h.name.len() + h.value.len())
                        .sum::<usize>()
            }
            State::Oversized(scan) => {
                scan.line.len()
                    + scan
                        .fields
                        .iter()
                        .map(|(n, v)| n.len() + v.len())
                        .sum::<usize>()
            }
            _ => 0,
        };
        self.buf.len() + held
    }

    /// Skips empty lines before a request line (RFC 9112 §2.2); returns what is left.
    /// Classifies the stream's start, after blank lines (remembered: see `leading_blank`).
    fn classify_start(&mut self) -> Classified {
        let before = self.pos;
        let verdict = classify(self.skip_blank_lines());
        self.leading_blank |= self.pos > before;
        verdict
    }

    fn skip_blank_lines(&mut self) -> &[u8] {
        let rest = &self.buf[self.pos..];
        let blank = rest
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        self.pos += blank;
        &self.buf[self.pos..]
    }

    fn ts_at(&self, pos: usize, now: u64) -> u64 {
        if pos < self.old {
            self.buf_ts
        } else {
            now
        }
    }

    fn drop_request(
        &mut self,
        out: &mut Vec<RequestEvent>,
        ts_nanos: u64,
        reason: DropReason,
        method: Option<String>,
    ) {
        self.flush_skipped(out);
        // Whatever else went wrong with it, a request framed without a trusted boundary
        // is counted as untrusted: its other faults may be the misreading's.
        let reason = if self.untrusted {
            DropReason::Untrusted
        } else {
            reason
        };
        out.push(RequestEvent::Dropped {
            ts_nanos,
            reason,
            method,
        });
    }

    fn skipped(&mut self, kind: NotHttpKind, bytes: u64, out: &mut Vec<RequestEvent>) {
        if bytes == 0 {
            return;
        }
        let kind = match kind {
            NotHttpKind::Other if self.untrusted => NotHttpKind::Untrusted,
            kind => kind,
        };
        match &mut self.pending {
            Some((k, n)) if *k == kind => *n += bytes,
            _ => {
                self.flush_skipped(out);
                self.pending = Some((kind, bytes));
            }
        }
    }

    fn flush_skipped(&mut self, out: &mut Vec<RequestEvent>) {
        if let Some((kind, bytes)) = self.pending.take() {
            out.push(RequestEvent::NotHttp { kind, bytes });
        }
    }

    /// One transition on `buf[pos..]`; false when more bytes are needed.
    fn step(&mut self, now: u64, out: &mut Vec<RequestEvent>) -> bool {
        let state = std::mem::replace(&mut self.state, State::Done);
        let (next, progress) = match state {
            State::Done => (State::Done, false),
            State::Start => match self.classify_start() {
                Classified::NeedMore => (State::Start, false),
                Classified::NotHttp(NotHttpKind::Http2Preface) if !self.leading_blank => {
                    (State::H2 { upgraded: false }, false)
                }
                Classified::NotHttp(kind) => (State::Skip(kind), true),
                Classified::Http => {
                    self.req_ts = self.ts_at(self.pos, now);
                    (
                        State::Head {
                            origin: Origin::Start,
                            line_ok: false,
                            scanned: 0,
                        },
                        true,
                    )
                }
            },
            State::Idle => {
                if self.skip_blank_lines().is_empty() {
                    (State::Idle, false)
                } else {
                    self.req_ts = self.ts_at(self.pos, now);
                    (
                        State::Head {
                            origin: Origin::Trusted,
                            line_ok: false,
                            scanned: 0,
                        },
                        true,
                    )
                }
            }
            State::Head {
                origin,
                line_ok,
                scanned,
            } => self.head(origin, line_ok, scanned, out),
            State::Body(inflight) => self.body(*inflight, out),
            State::Oversized(scan) => self.oversized(*scan),
            State::Hunt {
                classify,
                line_start,
                scanned,
            } => self.hunt(classify, line_start, scanned, now, out),
            State::AwaitPreface => match classify(&self.buf[self.pos..]) {
                Classified::NeedMore => (State::AwaitPreface, false),
                Classified::NotHttp(NotHttpKind::Http2Preface) => {
                    (State::H2 { upgraded: true }, false)
                }
                // The server did not switch (or the client gave up): HTTP/1.1 may go on,
                // but nothing says the server still reads it.
                _ => (self.lose_framing(true), true),
            },
            State::H2 { upgraded } => (State::H2 { upgraded }, false),
            State::Tunnel => match classify(&self.buf[self.pos..]) {
                Classified::NeedMore => (State::Tunnel, false),
                Classified::NotHttp(kind) => (State::Skip(kind), true),
                Classified::Http => (State::Skip(NotHttpKind::Other), true),
            },
            State::Skip(kind) => {
                let n = self.buf.len() - self.pos;
                self.skipped(kind, n as u64, out);
                self.pos = self.buf.len();
                (State::Skip(kind), false)
            }
        };
        self.state = next;
        progress
    }

    /// The client's framing cannot be followed: drop and distrust the rest.
    /// `len`: how much of the buffer is known to be this request (a whole head, a 0.9
    /// line); it belongs to the drop, not to the skipped bytes counted after it.
    fn unparseable(
        &mut self,
        out: &mut Vec<RequestEvent>,
        why: &'static str,
        len: usize,
    ) -> (State, bool) {
        let method = method_hint(&self.buf[self.pos..]);
        self.drop_request(out, self.req_ts, DropReason::Unparseable(why), method);
        self.pos += len;
        (State::Skip(NotHttpKind::Other), true)
    }

    /// A hunted head turned out not to be one: skip its first line, hunt on.
    fn not_a_head(&self) -> (State, bool) {
        (
            State::Hunt {
                classify: false,
                line_start: false,
                scanned: 0,
            },
            true,
        )
    }

    fn head(
        &mut self,
        origin: Origin,
        mut line_ok: bool,
        scanned: usize,
        out: &mut Vec<RequestEvent>,
    ) -> (State, bool) {
        let max_head = self.limits.max_head;
        let avail = self.buf.len() - self.pos;
        let window_len = avail.min(max_head);
        let window_full = avail >= max_head;
        let mut scanned = scanned;
        if !line_ok {
            let window = &self.buf[self.pos..self.pos + window_len];
            // The request line is judged once it is whole (or cannot fit the limit), so
            // each byte is scanned once; `line_check` gives a prefix the same verdict
            // as the whole line, so judging late changes no outcome.
            let line = match memchr::memchr(b'\n', &window[scanned..]) {
                Some(i) => &window[..scanned + i + 1],
                None if window_full => window,
                None => {
                    let state = State::Head {
                        origin,
                        line_ok,
                        scanned: window_len,
                    };
                    return (state, false);
                }
            };
            let line_len = line.len();
            match (line_check(line, false), origin) {
                (LineCheck::Request(_), _) => {
                    line_ok = true;
                    scanned = line_len;
                }
                (LineCheck::Http09(len), _) => {
                    return self.unparseable(out, "HTTP/0.9 request (no version)", len)
                }
                // A line shaped like a request (upper-case method, ends in a version)
                // whose middle is broken, e.g. `CONNECT host:25 / HTTP/1.0`: a client
                // did send a request, one no server may guess at.
                (LineCheck::Invalid, Origin::Start) if is_broken_request_line(line) => {
                    return self.unparseable(out, "malformed request line", line_len)
                }
                // The stream's first line (its start was seen) is no request line: this
                // is not HTTP/1.x, and no later line is searched for one.
                (LineCheck::Invalid | LineCheck::Partial, Origin::Start) => {
                    return (State::Skip(NotHttpKind::Other), true)
                }
                (LineCheck::Partial, _) => return self.too_large_head(out),
                (LineCheck::Invalid, _) => return self.unparseable(out, "invalid request line", 0),
            }
        }
        let window = &self.buf[self.pos..self.pos + window_len];
        let Some(head_len) = find_head_end(window, scanned) else {
            if window_full {
                return match origin {
                    Origin::Hunted => self.not_a_head(),
                    _ => self.too_large_head(out),
                };
            }
            let state = State::Head {
                origin,
                line_ok,
                scanned: window_len,
            };
            return (state, false);
        };
        // Uninitialised slots on the stack: filling `max_headers` empty headers on the
        // heap for every request cost more than parsing a typical head.
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        let mut heap = Vec::new();
        let slots = if self.limits.max_headers <= STACK_HEADERS {
            &mut stack[..self.limits.max_headers]
        } else {
            heap.resize_with(self.limits.max_headers, MaybeUninit::uninit);
            &mut heap[..]
        };
        let mut parsed = httparse::Request::new(&mut []);
        let result = parsed.parse_with_uninit_headers(&window[..head_len], slots);
        match result {
            Ok(httparse::Status::Complete(n)) => {
                let req = new_request(
                    self.req_ts,
                    parsed.method.unwrap_or_default(),
                    parsed.path.unwrap_or_default().as_bytes(),
                    parsed.version.unwrap_or(1),
                    parsed.headers,
                );
                let framing = framing_of(
                    req.version_minor,
                    req.headers
                        .iter()
                        .map(|h| (h.name.as_bytes(), h.value.as_slice())),
                );
                let facts = HeadFacts::of(&req.headers);
                let verdict = match framing {
                    Err(why) => Err(why),
                    // Hunted heads are only counted; what a server would make of them
                    // does not matter.
                    Ok(_) if self.untrusted => Ok(Verdict::Copy),
                    Ok(_) => judge(&req.method, &req.target, req.version_minor, &facts),
                };
                let persistent = persists(req.version_minor, facts.close, facts.keep_alive);
                let after = if req.method == "CONNECT" {
                    After::Tunnel
                } else if facts.upgrade && persistent && upgrades_to_h2c(&req.headers) {
                    After::H2c
                } else if facts.upgrade
                    || !persists(req.version_minor, facts.close, facts.keep_alive)
                {
                    After::Untrusted
                } else {
                    After::Idle
                };
                match (framing, verdict) {
                    (Ok(framing), Ok(verdict)) => {
                        self.pos += n;
                        self.start_body(req, framing, verdict, after, out)
                    }
                    (Err(why), _) | (_, Err(why)) => {
                        super::recycle(req);
                        self.unparseable(out, why, n)
                    }
                }
            }
            // The end of the head was found, so httparse has all it needs; a Partial here
            // would be a head we cannot read.
            Ok(httparse::Status::Partial) => match origin {
                Origin::Hunted => self.not_a_head(),
                _ => self.unparseable(out, "incomplete head", head_len),
            },
            Err(httparse::Error::TooManyHeaders) => match origin {
                Origin::Hunted => self.not_a_head(),
                _ => self.too_large_head(out),
            },
            Err(e) => match origin {
                Origin::Hunted => self.not_a_head(),
                _ => self.unparseable(out, httparse_reason(e), head_len),
            },
        }
    }

    // Inlined into `head`: called once per request, and as a call it moved the request
    // (five vectors) through memcpy (+3% instructions of `inspect`).
    #[inline(always)]
    fn start_body(
        &mut self,
        mut req: Request,
        framing: Framing,
        verdict: Verdict,
        after: After,
        out: &mut Vec<RequestEvent>,
    ) -> (State, bool) {
        let body = match framing {
            // A CONNECT's content has no defined meaning (RFC 9110 §9.3.6): what follows
            // the head is the tunnel.
            _ if after == After::Tunnel => None,
            Framing::NoBody | Framing::Length(0) => None,
            Framing::Length(n) => Some(BodyFraming::Length(n)),
            Framing::Chunked => {
                req.chunked = true;
                Some(BodyFraming::Chunked(Chunk::SizeLine))
            }
        };
        let mut inflight = InFlight {
            req,
            reported: false,
            framing: body.unwrap_or(BodyFraming::Length(0)),
            after,
        };
        if let Verdict::NotCopied(why) = verdict {
            self.drop_inflight(&mut inflight, DropReason::NotCopied(why), out);
        }
        match inflight.framing {
            // Most requests: nothing to wait for, so no boxed body state either.
            BodyFraming::Length(0) => return self.complete(inflight, out),
            BodyFraming::Length(n) if n > self.limits.max_body as u64 => {
                self.drop_inflight(&mut inflight, DropReason::TooLarge, out);
            }
            _ => {}
        }
        (State::Body(Box::new(inflight)), true)
    }

    fn drop_inflight(
        &mut self,
        inflight: &mut InFlight,
        reason: DropReason,
        out: &mut Vec<RequestEvent>,
    ) {
        if inflight.reported {
            return;
        }
        inflight.reported = true;
        inflight.req.body = Vec::new();
        let method = Some(inflight.req.method.clone());
        self.drop_request(out, self.req_ts, reason, method);
    }

    /// Unparseable framing inside a body: drop (once) and distrust the rest.
    fn body_unparseable(
        &mut self,
        mut inflight: InFlight,
        why: &'static str,
        out: &mut Vec<RequestEvent>,
    ) -> (State, bool) {
        self.drop_inflight(&mut inflight, DropReason::Unparseable(why), out);
        (State::Skip(NotHttpKind::Other), true)
    }

    fn body(&mut self, mut inflight: InFlight, out: &mut Vec<RequestEvent>) -> (State, bool) {
        let avail = &self.buf[self.pos..];
        match inflight.framing {
            BodyFraming::Length(0) | BodyFraming::Chunked(Chunk::Data(0)) => {
                if let BodyFraming::Chunked(_) = inflight.framing {
                    inflight.framing = BodyFraming::Chunked(Chunk::DataEnd);
                    return (State::Body(Box::new(inflight)), true);
                }
                self.complete(inflight, out)
            }
            BodyFraming::Length(rem) | BodyFraming::Chunked(Chunk::Data(rem)) => {
                if avail.is_empty() {
                    return (State::Body(Box::new(inflight)), false);
                }
                let take = usize::try_from(rem).map_or(avail.len(), |r| r.min(avail.len()));
                if !inflight.reported {
                    inflight.req.body.extend_from_slice(&avail[..take]);
                }
                self.pos += take;
                let left = rem - take as u64;
                inflight.framing = match inflight.framing {
                    BodyFraming::Length(_) => BodyFraming::Length(left),
                    BodyFraming::Chunked(_) => BodyFraming::Chunked(Chunk::Data(left)),
                };
                (State::Body(Box::new(inflight)), true)
            }
            BodyFraming::Chunked(Chunk::SizeLine) => {
                let window = &avail[..avail.len().min(MAX_CHUNK_LINE)];
                let Some(nl) = memchr::memchr(b'\n', window) else {
                    if window.len() >= MAX_CHUNK_LINE {
                        return self.body_unparseable(inflight, "chunk-size line too long", out);
                    }
                    return (State::Body(Box::new(inflight)), false);
                };
                let Some(line) = window[..nl].strip_suffix(b"\r") else {
                    // A bare LF here is a known way to make parsers disagree on framing.
                    return self.body_unparseable(inflight, "chunk-size line without CRLF", out);
                };
                let size = match parse_chunk_size(line) {
                    Ok(size) => size,
                    Err(why) => return self.body_unparseable(inflight, why, out),
                };
                self.pos += nl + 1;
                let room = self.limits.max_body - inflight.req.body.len().min(self.limits.max_body);
                if size > room as u64 {
                    self.drop_inflight(&mut inflight, DropReason::TooLarge, out);
                }
                inflight.framing = BodyFraming::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                });
                (State::Body(Box::new(inflight)), true)
            }
            BodyFraming::Chunked(Chunk::DataEnd) => match avail {
                [] | [b'\r'] => (State::Body(Box::new(inflight)), false),
                [b'\r', b'\n', ..] => {
                    self.pos += 2;
                    inflight.framing = BodyFraming::Chunked(Chunk::SizeLine);
                    (State::Body(Box::new(inflight)), true)
                }
                _ => self.body_unparseable(inflight, "chunk data not followed by CRLF", out),
            },
            BodyFraming::Chunked(Chunk::Trailers(scanned)) => self.trailers(inflight, scanned, out),
        }
    }

    fn trailers(
        &mut self,
        mut inflight: InFlight,
        scanned: usize,
        out: &mut Vec<RequestEvent>,
    ) -> (State, bool) {
        let avail = &self.buf[self.pos..];
        match avail {
            [] | [b'\r'] => return (State::Body(Box::new(inflight)), false),
            [b'\r', b'\n', ..] => {
                self.pos += 2;
                return self.complete(inflight, out);
            }
            _ => {}
        }
        let window = &avail[..avail.len().min(self.limits.max_head)];
        let from = scanned.saturating_sub(3);
        let Some(end) = memchr::memmem::find(&window[from..], b"\r\n\r\n").map(|i| from + i) else {
            if window.len() >= self.limits.max_head {
                // Where such a section ends cannot be found without buffering it.
                self.drop_inflight(&mut inflight, DropReason::TooLarge, out);
                return (State::Skip(NotHttpKind::Other), true);
            }
            inflight.framing = BodyFraming::Chunked(Chunk::Trailers(window.len()));
            return (State::Body(Box::new(inflight)), false);
        };
        let section = &window[..end + 4];
        let mut slots = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        match httparse::parse_headers(section, &mut slots) {
            Ok(httparse::Status::Complete((n, fields))) if n == section.len() => {
                if !inflight.reported {
                    inflight.req.trailers = fields
                        .iter()
                        .map(|h| Header {
                            name: h.name.to_owned(),
                            value: h.value.to_vec(),
                        })
                        .collect();
                }
                self.pos += n;
                self.complete(inflight, out)
            }
            Err(httparse::Error::TooManyHeaders) => {
                self.drop_inflight(&mut inflight, DropReason::TooLarge, out);
                (State::Skip(NotHttpKind::Other), true)
            }
            _ => self.body_unparseable(inflight, "invalid trailer section", out),
        }
    }

    fn complete(&mut self, inflight: InFlight, out: &mut Vec<RequestEvent>) -> (State, bool) {
        if !inflight.reported {
            if self.untrusted {
                let req = inflight.req;
                self.drop_request(
                    out,
                    self.req_ts,
                    DropReason::Untrusted,
                    Some(req.method.clone()),
                );
                super::recycle(req);
            } else {
                self.flush_skipped(out);
                out.push(RequestEvent::Request(inflight.req));
            }
        }
        (self.after_state(inflight.after), true)
    }

    fn after_state(&mut self, after: After) -> State {
        match after {
            // Without a trusted boundary, the next request is hunted for again (and only
            // counted): framing a hunted request exactly proves nothing.
            After::Idle if self.untrusted => self.lose_framing(false),
            After::Idle => State::Idle,
            After::Untrusted => self.lose_framing(true),
            After::Tunnel => State::Tunnel,
            After::H2c if self.untrusted => self.lose_framing(true),
            After::H2c => State::AwaitPreface,
        }
    }

    /// A gap while a body is in progress (already reported incomplete).
    fn body_gap(
        &mut self,
        ts_nanos: u64,
        mut inflight: InFlight,
        missing: u64,
        out: &mut Vec<RequestEvent>,
    ) -> State {
        let rem = match inflight.framing {
            BodyFraming::Length(rem) | BodyFraming::Chunked(Chunk::Data(rem)) => rem,
            // Inside chunk framing lines: where they end is lost.
            BodyFraming::Chunked(_) => 0,
        };
        if missing <= rem {
            let left = rem - missing;
            inflight.framing = match inflight.framing {
                BodyFraming::Length(_) => BodyFraming::Length(left),
                _ => BodyFraming::Chunked(Chunk::Data(left)),
            };
            return State::Body(Box::new(inflight));
        }
        match (inflight.framing, inflight.after) {
            // The gap ran past a known body end into what came next: at least one more
            // request was (partly) lost there.
            (BodyFraming::Length(_), After::Idle) => {
                self.drop_request(out, ts_nanos, DropReason::Incomplete, None);
                self.lose_framing(false)
            }
            (BodyFraming::Length(_), After::Tunnel) => State::Skip(NotHttpKind::Other),
            _ => self.lose_framing(false),
        }
    }

    fn too_large_head(&mut self, out: &mut Vec<RequestEvent>) -> (State, bool) {
        let method = method_hint(&self.buf[self.pos..]);
        self.drop_request(out, self.req_ts, DropReason::TooLarge, method.clone());
        let head = &self.buf[self.pos..];
        // The request line must be whole in what we hold, for the version and method.
        // Only what the limit allows is looked at, so the outcome does not depend on how
        // much more happened to arrive in the same push.
        let window = &head[..head.len().min(self.limits.max_head)];
        let Some(nl) = memchr::memchr(b'\n', window) else {
            return (State::Skip(NotHttpKind::Other), true);
        };
        let line = head[..nl].strip_suffix(b"\r").unwrap_or(&head[..nl]);
        let version_minor = match line.get(line.len().saturating_sub(9)..) {
            Some(b" HTTP/1.0") => 0,
            Some(b" HTTP/1.1") => 1,
            _ => return (State::Skip(NotHttpKind::Other), true),
        };
        self.pos += nl + 1;
        let scan = OversizedHead {
            method,
            version_minor,
            line: Vec::new(),
            line_overflow: false,
            fields: Vec::new(),
            upgrade: false,
            close: false,
            keep_alive: false,
            hosts: 0,
        };
        (State::Oversized(Box::new(scan)), true)
    }

    /// Follows the lines of a head over the limits, keeping only the framing fields, so
    /// that its body can be skipped exactly.
    fn oversized(&mut self, mut scan: OversizedHead) -> (State, bool) {
        let avail = &self.buf[self.pos..];
        let Some(nl) = memchr::memchr(b'\n', avail) else {
            keep_prefix(&mut scan, avail);
            self.pos = self.buf.len();
            return (State::Oversized(Box::new(scan)), false);
        };
        keep_prefix(&mut scan, &avail[..nl]);
        self.pos += nl + 1;
        let mut line = std::mem::take(&mut scan.line);
        let overflow = std::mem::replace(&mut scan.line_overflow, false);
        if !overflow && line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() && !overflow {
            return (self.after_oversized(scan), true);
        }
        let poisoned = (State::Skip(NotHttpKind::Other), true);
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return poisoned;
        }
        let Some(colon) = memchr::memchr(b':', &line) else {
            return poisoned;
        };
        let name = &line[..colon];
        let framing_field = name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding");
        if framing_field {
            if overflow || scan.fields.len() >= SCANNER_FIELDS {
                return poisoned;
            }
            let value = trim_ows(&line[colon + 1..]).to_vec();
            scan.fields.push((name.to_vec(), value));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            scan.upgrade = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            scan.hosts += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            // A token past the part we kept may be `close`: assume it is.
            let (close, keep_alive) = connection_tokens([&line[colon + 1..]]);
            scan.close |= close || overflow;
            scan.keep_alive |= keep_alive;
        }
        (State::Oversized(Box::new(scan)), true)
    }

    fn after_oversized(&mut self, scan: OversizedHead) -> State {
        let framing = framing_of(
            scan.version_minor,
            scan.fields
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        let method = scan.method.unwrap_or_default();
        let after = if method == "CONNECT" {
            After::Tunnel
        } else if scan.upgrade || !persists(scan.version_minor, scan.close, scan.keep_alive) {
            After::Untrusted
        } else {
            After::Idle
        };
        // A server answers 400 to a head with two Hosts (or none in HTTP/1.1) and closes.
        let host_rejected = scan.hosts > 1 || (scan.hosts == 0 && scan.version_minor >= 1);
        let framing = match framing {
            Err(_) => return State::Skip(NotHttpKind::Other),
            Ok(_) if host_rejected && !self.untrusted => return State::Skip(NotHttpKind::Other),
            Ok(_) if after == After::Tunnel => BodyFraming::Length(0),
            Ok(Framing::NoBody) => BodyFraming::Length(0),
            Ok(Framing::Length(n)) => BodyFraming::Length(n),
            Ok(Framing::Chunked) => BodyFraming::Chunked(Chunk::SizeLine),
        };
        let req = Request {
            ts_nanos: self.req_ts,
            method,
            version_minor: scan.version_minor,
            ..Request::default()
        };
        State::Body(Box::new(InFlight {
            req,
            reported: true,
            framing,
            after,
        }))
    }

    fn hunt(
        &mut self,
        mut classify_first: bool,
        line_start: bool,
        scanned: usize,
        now: u64,
        out: &mut Vec<RequestEvent>,
    ) -> (State, bool) {
        let avail = &self.buf[self.pos..];
        if classify_first {
            match classify(avail) {
                Classified::NeedMore => {
                    let state = State::Hunt {
                        classify: true,
                        line_start,
                        scanned,
                    };
                    return (state, false);
                }
                Classified::NotHttp(kind) => return (State::Skip(kind), true),
                Classified::Http => classify_first = false,
            }
        }
        let hunting = |line_start, scanned| State::Hunt {
            classify: classify_first,
            line_start,
            scanned,
        };
        if !line_start {
            return match memchr::memchr(b'\n', avail) {
                None => {
                    let n = avail.len();
                    self.skipped(NotHttpKind::Other, n as u64, out);
                    self.pos += n;
                    (hunting(false, 0), false)
                }
                Some(nl) => {
                    self.skipped(NotHttpKind::Other, nl as u64 + 1, out);
                    self.pos += nl + 1;
                    (hunting(true, 0), true)
                }
            };
        }
        let window = &avail[..avail.len().min(self.limits.max_head)];
        let Some(nl) = memchr::memchr(b'\n', &window[scanned..]).map(|i| scanned + i) else {
            if window.len() >= self.limits.max_head {
                // No line end within the limit: not a request line we could take.
                return (hunting(false, 0), true);
            }
            return (hunting(true, window.len()), false);
        };
        if let LineCheck::Request(_) = line_check(&window[..=nl], true) {
            // The skipped run is reported with this request's outcome (or, if the head
            // is no request after all, goes on growing).
            self.req_ts = self.ts_at(self.pos, now);
            let state = State::Head {
                origin: Origin::Hunted,
                line_ok: true,
                scanned: nl + 1,
            };
            return (state, true);
        }
        self.skipped(NotHttpKind::Other, nl as u64 + 1, out);
        self.pos += nl + 1;
        (hunting(true, 0), true)
    }
}

/// Keeps at most `SCANNER_LINE` bytes of the current line.
fn keep_prefix(scan: &mut OversizedHead, bytes: &[u8]) {
    let room = SCANNER_LINE - scan.line.len();
    if bytes.len() > room {
        scan.line_overflow = true;
    }
    scan.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// The length of the head (through its empty line) if `window` holds all of it; the
/// search restarts a little before `scanned`, where the previous one stopped.
fn find_head_end(window: &[u8], scanned: usize) -> Option<usize> {
    let mut from = scanned.saturating_sub(3);
    while let Some(i) = memchr::memchr(b'\n', &window[from..]).map(|i| from + i) {
        match (window.get(i + 1), window.get(i + 2)) {
            (Some(b'\n'), _) => return Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
            _ => from = i + 1,
        }
    }
    None
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name (or obs-fold)",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// The request-targets of the requests among `events`, in order.
#[cfg(test)]
pub(super) fn request_targets(events: &[RequestEvent]) -> Vec<&[u8]> {
    events
        .iter()
        .filter_map(|e| match e {
            RequestEvent::Request(r) => Some(r.target.as_slice()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod scratch_tests {
    use super::*;

    /// Framers borrow the thread's scratch buffer for a push and keep only a copy of
    /// the bytes they hold: a framer waiting for the rest of a head holds no more
    /// capacity than bytes (the framer budget counts bytes), and one holding nothing
    /// keeps no buffer at all.
    #[test]
    fn a_framer_keeps_only_the_bytes_it_holds() {
        let mut out = Vec::new();
        let mut busy = RequestFramer::new(FramerLimits::default());
        // A large push leaves the thread's scratch buffer with a large capacity.
        let mut big = b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n".to_vec();
        big.resize(big.len() + 100_000, b'x');
        busy.push(1, &big, &mut out);
        assert!(busy.buf.capacity() == 0 && busy.is_idle());
        assert!(
            SCRATCH.with(|s| {
                let v = s.take();
                let cap = v.capacity();
                s.set(v);
                cap
            }) >= 100_000
        );

        let mut split = RequestFramer::new(FramerLimits::default());
        split.push(2, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HT", &mut out);
        assert_eq!(split.buffered(), 9);
        assert_eq!(split.buf.capacity(), 9);
        split.push(3, b"TP/1.1\r\nHost: h\r\n\r\n", &mut out);
        assert_eq!(split.buf.capacity(), 0);
        assert_eq!(request_targets(&out), [&b"/big"[..], b"/a", b"/b"]);
    }
}
