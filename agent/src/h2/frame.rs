//! HTTP/2 framing (RFC 9113 §4 and §6) over one direction's byte stream: `FrameParser`
//! takes bytes in any split and gives `Frame`s, the same frames whatever the split.
//! It owns the client preface, the 9-byte frame header, padding, the priority fields of
//! HEADERS, CONTINUATION sequences (a header block comes out whole) and the framing
//! limits; and `sync`, which finds a frame boundary in a stream joined midway.
//!
//! It does not own streams, flow control or HPACK: a header block comes out as bytes for
//! `hpack::Decoder`, and the SETTINGS a peer sends are reported, not applied (the
//! connection layer applies the other direction's SETTINGS_MAX_FRAME_SIZE with
//! `set_max_frame_size`, because a limit binds the peer that receives the SETTINGS).

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Every frame starts with this many bytes: 24-bit length, type, flags, 31-bit stream id.
pub const FRAME_HEADER_LEN: usize = 9;

/// SETTINGS_MAX_FRAME_SIZE until the receiving peer says otherwise (RFC 9113 §6.5.2); the
/// smallest value a peer may advertise, too.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The largest SETTINGS_MAX_FRAME_SIZE a peer may advertise (RFC 9113 §6.5.2): 2^24-1.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// The default cap on one header block (HEADERS or PUSH_PROMISE plus its CONTINUATIONs,
/// padding included), buffered whole before HPACK sees it. Envoy rejects request headers
/// over 60 KiB by default and most servers stop near there, so a block over 64 KiB is one
/// the server would refuse too.
pub const DEFAULT_MAX_HEADER_BLOCK: usize = 64 * 1024;

/// DATA payloads come out in pieces of at most this many bytes, so that a 16 MiB DATA
/// frame (legal once a peer raises SETTINGS_MAX_FRAME_SIZE) is never buffered whole. The
/// pieces are cut at fixed offsets of the frame, so they do not depend on the split.
pub const DATA_CHUNK: usize = 16_384;

/// The largest SETTINGS, PING, GOAWAY, PRIORITY, RST_STREAM or WINDOW_UPDATE frame
/// buffered. All but SETTINGS and GOAWAY have a fixed size; a SETTINGS frame of every
/// defined setting is 36 bytes and GOAWAY debug data is a short text, so the default
/// frame size bounds what a real peer sends.
pub const MAX_CONTROL_PAYLOAD: usize = 16_384;

/// Frame types (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6). ACK shares END_STREAM's bit on SETTINGS and PING.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Setting identifiers whose values RFC 9113 §6.5.2 constrains.
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// A connection error of the framing layer: from here on the parser gives no frames, and
/// the connection's remaining bytes are for counting only.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the stream does not start with the HTTP/2 client preface")]
    BadPreface,
    #[error("frame of type {kind} has {len} bytes, over the maximum frame size {max}")]
    FrameTooLarge { kind: u8, len: u32, max: u32 },
    #[error("frame of type {kind} on stream 0, which it must not use")]
    StreamIdRequired { kind: u8 },
    #[error("frame of type {kind} on stream {stream}, where only stream 0 is allowed")]
    StreamIdNotAllowed { kind: u8, stream: u32 },
    #[error("frame of type {kind} with a payload of {len} bytes, a size it cannot have")]
    BadLength { kind: u8, len: u32 },
    #[error("frame of type {kind} with {pad} bytes of padding in a {len}-byte payload")]
    PadTooLong { kind: u8, pad: u8, len: u32 },
    #[error("frame of type {got_kind} on stream {got_stream} inside the header block of stream {stream}, where only CONTINUATION may come")]
    ExpectedContinuation {
        stream: u32,
        got_kind: u8,
        got_stream: u32,
    },
    #[error("CONTINUATION on stream {stream} without a header block to continue")]
    UnexpectedContinuation { stream: u32 },
    #[error("header block on stream {stream} over {max} bytes")]
    HeaderBlockTooLarge { stream: u32, max: usize },
    #[error("control frame of type {kind} with {len} bytes, over {max}")]
    ControlFrameTooLarge { kind: u8, len: u32, max: usize },
    #[error("setting {id:#x} with the value {value}, outside its range")]
    BadSetting { id: u16, value: u32 },
    #[error("WINDOW_UPDATE of 0 for the connection")]
    ZeroWindowIncrement,
}

/// The priority fields of a HEADERS or PRIORITY frame (RFC 9113 §5.3.2, deprecated but
/// still on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    pub exclusive: bool,
    pub dependency: u32,
    pub weight: u8,
}

/// What the parser gives. One frame gives one event, except DATA (pieces of at most
/// `DATA_CHUNK`) and a header block (one event for HEADERS or PUSH_PROMISE and all its
/// CONTINUATIONs, given when END_HEADERS arrives).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A piece of a DATA frame's data (padding removed). An empty DATA frame gives one
    /// empty piece; `end_stream` is set on the last piece of a frame with END_STREAM.
    Data {
        stream: u32,
        data: Vec<u8>,
        end_stream: bool,
    },
    /// A whole header block: the HEADERS fragment and every CONTINUATION's, in order.
    Headers {
        stream: u32,
        end_stream: bool,
        priority: Option<Priority>,
        block: Vec<u8>,
    },
    Priority {
        stream: u32,
        priority: Priority,
    },
    RstStream {
        stream: u32,
        error_code: u32,
    },
    Settings {
        ack: bool,
        params: Vec<(u16, u32)>,
    },
    PushPromise {
        stream: u32,
        promised: u32,
        block: Vec<u8>,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        error_code: u32,
        debug: Vec<u8>,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    /// A CONTINUATION whose HEADERS came before the parser joined (only at the start of a
    /// parser made with `FrameParser::joined`): that block cannot be decoded.
    OrphanContinuation {
        stream: u32,
        end_headers: bool,
    },
    /// A frame of a type RFC 9113 does not define: skipped, as §5.5 requires.
    Unknown {
        kind: u8,
        flags: u8,
        stream: u32,
        len: u32,
    },
}

/// The parser's limits. `max_frame_size` is what the receiving peer advertised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    pub max_frame_size: u32,
    pub max_header_block: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_header_block: DEFAULT_MAX_HEADER_BLOCK,
        }
    }
}

impl FrameLimits {
    /// The most bytes a parser with these limits ever holds (`FrameParser::buffered`):
    /// a frame header or the preface, plus the larger of a header block, a control frame
    /// and a DATA piece, plus a header block being assembled.
    pub fn buffer_bound(&self) -> usize {
        PREFACE.len()
            + self
                .max_header_block
                .max(MAX_CONTROL_PAYLOAD)
                .max(DATA_CHUNK)
            + self.max_header_block
    }
}

/// The fixed part of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// The stream id without the reserved bit.
    pub stream: u32,
    /// The reserved bit, which senders must leave clear and receivers ignore.
    pub reserved: bool,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        let raw = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        Self {
            len: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            kind: bytes[3],
            flags: bytes[4],
            stream: raw & 0x7fff_ffff,
            reserved: raw & 0x8000_0000 != 0,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A header block being assembled from HEADERS or PUSH_PROMISE and CONTINUATIONs.
#[derive(Debug)]
struct PendingBlock {
    stream: u32,
    start: BlockStart,
    fragment: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
enum BlockStart {
    Headers {
        end_stream: bool,
        priority: Option<Priority>,
    },
    PushPromise {
        promised: u32,
    },
}

#[derive(Clone, Debug)]
enum State {
    Preface,
    Header,
    /// A frame buffered whole before it is interpreted.
    Payload(FrameHeader),
    /// A PADDED DATA frame, before its pad length byte.
    DataPad(FrameHeader),
    Data {
        stream: u32,
        data_left: u32,
        pad_left: u32,
        end_stream: bool,
        /// No piece given yet: an empty DATA frame still gives one.
        fresh: bool,
    },
    Skip(u32),
    Failed(FrameError),
}

/// Incremental frame parser for one direction of one connection.
#[derive(Debug)]
pub struct FrameParser {
    state: State,
    limits: FrameLimits,
    /// The bytes of the current unit (preface, frame header, buffered payload, DATA piece).
    buf: Vec<u8>,
    block: Option<PendingBlock>,
    /// Joined midway and no frame but CONTINUATION seen yet: a CONTINUATION is the tail
    /// of a block that started before, not an error.
    allow_orphan: bool,
    /// The stream of an orphan CONTINUATION sequence still going on.
    orphan: Option<u32>,
}

impl FrameParser {
    /// The client's direction from its first byte: the preface comes first.
    pub fn client(limits: FrameLimits) -> Self {
        Self::with_state(State::Preface, limits, false)
    }

    /// The server's direction from its first byte (it has no preface), or a client's
    /// after the preface.
    pub fn server(limits: FrameLimits) -> Self {
        Self::with_state(State::Header, limits, false)
    }

    /// Either direction from a frame boundary found by `sync`: the first frames may be
    /// the CONTINUATIONs of a header block that began before.
    pub fn joined(limits: FrameLimits) -> Self {
        Self::with_state(State::Header, limits, true)
    }

    fn with_state(state: State, limits: FrameLimits, allow_orphan: bool) -> Self {
        let limits = FrameLimits {
            max_frame_size: limits
                .max_frame_size
                .clamp(DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE),
            ..limits
        };
        Self {
            state,
            limits,
            buf: Vec::new(),
            block: None,
            allow_orphan,
            orphan: None,
        }
    }

    /// Applies the SETTINGS_MAX_FRAME_SIZE the receiving peer advertised (clamped to the
    /// range RFC 9113 allows; `Frame::Settings` already refused values outside it).
    pub fn set_max_frame_size(&mut self, size: u32) {
        self.limits.max_frame_size = size.clamp(DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE);
    }

    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Bytes held: never more than `limits().buffer_bound()`.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.block.as_ref().map_or(0, |b| b.fragment.len())
    }

    /// The error that stopped the parser, if one did.
    pub fn failed(&self) -> Option<&FrameError> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Inside a frame whose remaining bytes need not be read (the rest of a DATA frame,
    /// its padding, or a frame being skipped): the DATA frame's stream (0 for others)
    /// and how many bytes of the frame are left. A capture gap no longer than that can
    /// be stepped over with `skip` without losing the frame boundaries.
    pub fn skippable(&self) -> Option<(u32, u64)> {
        match &self.state {
            // `buf` holds the start of a DATA piece not given yet: it goes with the skip.
            State::Data {
                stream,
                data_left,
                pad_left,
                ..
            } => Some((
                *stream,
                u64::from(*data_left) + u64::from(*pad_left) - self.buf.len() as u64,
            )),
            State::Skip(left) => Some((0, u64::from(*left))),
            _ => None,
        }
    }

    /// Steps over `n` bytes of the frame `skippable` allows (no DATA piece is given for
    /// them, and the END_STREAM of that frame is not reported); false, and nothing
    /// changed, when `n` is more than it allows.
    pub fn skip(&mut self, n: u64) -> bool {
        if self.skippable().is_none_or(|(_, left)| n > left) {
            return false;
        }
        // n <= data_left + pad_left (or the skip's length), both u32; the bytes of a
        // piece held in `buf` are taken off the frame as if skipped too.
        let n = n as u32 + self.buf.len() as u32;
        self.buf.clear();
        self.state = match self.state.clone() {
            State::Data {
                data_left,
                pad_left,
                ..
            } if n >= data_left => State::Skip(pad_left - (n - data_left)),
            State::Data {
                stream,
                data_left,
                pad_left,
                ..
            } => State::Data {
                stream,
                data_left: data_left - n,
                pad_left,
                // The frame's end is no longer the stream's end for us: its data is
                // incomplete, and its owner was told so.
                end_stream: false,
                fresh: false,
            },
            State::Skip(left) => State::Skip(left - n),
            other => other,
        };
        true
    }

    /// True between frames (nothing of a frame or header block pending).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.buf.is_empty() && self.block.is_none()
    }

    /// Feeds the next bytes of the stream; frames complete in them are appended to `out`.
    /// On a connection error the frames before it are in `out` and every later call
    /// returns the same error.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<Frame>) -> Result<(), FrameError> {
        loop {
            match self.state.clone() {
                State::Failed(e) => return Err(e),
                State::Preface => {
                    if !take(&mut self.buf, &mut input, PREFACE.len()) {
                        if !PREFACE.starts_with(&self.buf) {
                            return self.fail(FrameError::BadPreface);
                        }
                        return Ok(());
                    }
                    if self.buf[..] != PREFACE[..] {
                        return self.fail(FrameError::BadPreface);
                    }
                    self.buf.clear();
                    self.state = State::Header;
                }
                State::Header => {
                    if !take(&mut self.buf, &mut input, FRAME_HEADER_LEN) {
                        return Ok(());
                    }
                    let mut raw = [0u8; FRAME_HEADER_LEN];
                    raw.copy_from_slice(&self.buf);
                    self.buf.clear();
                    if let Err(e) = self.start_frame(FrameHeader::parse(&raw), out) {
                        return self.fail(e);
                    }
                }
                State::Payload(head) => {
                    if !take(&mut self.buf, &mut input, head.len as usize) {
                        return Ok(());
                    }
                    let payload = std::mem::take(&mut self.buf);
                    self.state = State::Header;
                    if let Err(e) = self.finish_frame(head, payload, out) {
                        return self.fail(e);
                    }
                }
                State::DataPad(head) => {
                    let Some((&pad, rest)) = input.split_first() else {
                        return Ok(());
                    };
                    input = rest;
                    if u32::from(pad) >= head.len {
                        return self.fail(FrameError::PadTooLong {
                            kind: kind::DATA,
                            pad,
                            len: head.len,
                        });
                    }
                    self.state = State::Data {
                        stream: head.stream,
                        data_left: head.len - 1 - u32::from(pad),
                        pad_left: u32::from(pad),
                        end_stream: head.has(flag::END_STREAM),
                        fresh: true,
                    };
                }
                State::Data {
                    stream,
                    data_left,
                    pad_left,
                    end_stream,
                    fresh,
                } => {
                    if data_left > 0 || fresh {
                        let want = (data_left as usize).min(DATA_CHUNK);
                        if !take(&mut self.buf, &mut input, want) {
                            return Ok(());
                        }
                        // `want` <= DATA_CHUNK, far below u32::MAX.
                        let left = data_left - want as u32;
                        out.push(Frame::Data {
                            stream,
                            data: std::mem::take(&mut self.buf),
                            end_stream: end_stream && left == 0,
                        });
                        self.state = State::Data {
                            stream,
                            data_left: left,
                            pad_left,
                            end_stream,
                            fresh: false,
                        };
                    } else {
                        self.state = State::Skip(pad_left);
                    }
                }
                State::Skip(left) => {
                    if left == 0 {
                        self.state = State::Header;
                        continue;
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                    let n = input.len().min(left as usize);
                    input = &input[n..];
                    // n <= left, a u32.
                    self.state = State::Skip(left - n as u32);
                }
            }
        }
    }

    fn fail(&mut self, e: FrameError) -> Result<(), FrameError> {
        self.buf = Vec::new();
        self.block = None;
        self.state = State::Failed(e.clone());
        Err(e)
    }

    /// Checks a frame header and picks how its payload is read.
    fn start_frame(&mut self, head: FrameHeader, out: &mut Vec<Frame>) -> Result<(), FrameError> {
        if head.len > self.limits.max_frame_size {
            return Err(FrameError::FrameTooLarge {
                kind: head.kind,
                len: head.len,
                max: self.limits.max_frame_size,
            });
        }
        // RFC 9113 §6.10: nothing but CONTINUATION on the same stream inside a header
        // block, not even a frame of an unknown type.
        let continuing = self.block.as_ref().map(|b| b.stream).or(self.orphan);
        if let Some(stream) = continuing {
            if head.kind != kind::CONTINUATION || head.stream != stream {
                return Err(FrameError::ExpectedContinuation {
                    stream,
                    got_kind: head.kind,
                    got_stream: head.stream,
                });
            }
        }
        if head.kind == kind::CONTINUATION && self.block.is_none() {
            if !self.allow_orphan && self.orphan.is_none() {
                return Err(FrameError::UnexpectedContinuation {
                    stream: head.stream,
                });
            }
            let end_headers = head.has(flag::END_HEADERS);
            out.push(Frame::OrphanContinuation {
                stream: head.stream,
                end_headers,
            });
            self.orphan = (!end_headers).then_some(head.stream);
            self.state = State::Skip(head.len);
            return Ok(());
        }
        self.allow_orphan = false;
        check_stream_id(&head)?;
        match head.kind {
            kind::DATA => {
                self.state = if head.has(flag::PADDED) {
                    if head.len == 0 {
                        return Err(FrameError::BadLength {
                            kind: head.kind,
                            len: 0,
                        });
                    }
                    State::DataPad(head)
                } else {
                    State::Data {
                        stream: head.stream,
                        data_left: head.len,
                        pad_left: 0,
                        end_stream: head.has(flag::END_STREAM),
                        fresh: true,
                    }
                };
            }
            kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION => {
                let held = self.block.as_ref().map_or(0, |b| b.fragment.len());
                if held + head.len as usize > self.limits.max_header_block {
                    return Err(FrameError::HeaderBlockTooLarge {
                        stream: head.stream,
                        max: self.limits.max_header_block,
                    });
                }
                self.state = State::Payload(head);
            }
            kind::PRIORITY
            | kind::RST_STREAM
            | kind::SETTINGS
            | kind::PING
            | kind::GOAWAY
            | kind::WINDOW_UPDATE => {
                if head.len as usize > MAX_CONTROL_PAYLOAD {
                    return Err(FrameError::ControlFrameTooLarge {
                        kind: head.kind,
                        len: head.len,
                        max: MAX_CONTROL_PAYLOAD,
                    });
                }
                let fixed = match head.kind {
                    kind::PRIORITY => Some(5),
                    kind::RST_STREAM | kind::WINDOW_UPDATE => Some(4),
                    kind::PING => Some(8),
                    kind::SETTINGS if head.has(flag::ACK) => Some(0),
                    _ => None,
                };
                let bad = match fixed {
                    Some(n) => head.len != n,
                    None if head.kind == kind::SETTINGS => head.len % 6 != 0,
                    None => head.len < 8, // GOAWAY: last stream id and error code
                };
                if bad {
                    return Err(FrameError::BadLength {
                        kind: head.kind,
                        len: head.len,
                    });
                }
                self.state = State::Payload(head);
            }
            _ => {
                out.push(Frame::Unknown {
                    kind: head.kind,
                    flags: head.flags,
                    stream: head.stream,
                    len: head.len,
                });
                self.state = State::Skip(head.len);
            }
        }
        Ok(())
    }

    /// Interprets a frame buffered whole (every type but DATA and unknown types).
    fn finish_frame(
        &mut self,
        head: FrameHeader,
        payload: Vec<u8>,
        out: &mut Vec<Frame>,
    ) -> Result<(), FrameError> {
        let word = |at: usize| {
            payload
                .get(at..at + 4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match head.kind {
            kind::HEADERS => {
                let prio_len = if head.has(flag::PRIORITY) { 5 } else { 0 };
                let body = unpad(&head, &payload, prio_len)?;
                let priority = (prio_len > 0).then(|| parse_priority(&body[..5]));
                let start = BlockStart::Headers {
                    end_stream: head.has(flag::END_STREAM),
                    priority,
                };
                self.block_fragment(&head, start, body[prio_len..].to_vec(), out);
            }
            kind::PUSH_PROMISE => {
                let body = unpad(&head, &payload, 4)?;
                let promised = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let start = BlockStart::PushPromise {
                    promised: promised & 0x7fff_ffff,
                };
                self.block_fragment(&head, start, body[4..].to_vec(), out);
            }
            kind::CONTINUATION => {
                if let Some(block) = self.block.as_mut() {
                    block.fragment.extend_from_slice(&payload);
                }
                if head.has(flag::END_HEADERS) {
                    if let Some(block) = self.block.take() {
                        out.push(block.into_frame());
                    }
                }
            }
            kind::PRIORITY => out.push(Frame::Priority {
                stream: head.stream,
                priority: parse_priority(&payload),
            }),
            kind::RST_STREAM => out.push(Frame::RstStream {
                stream: head.stream,
                error_code: word(0),
            }),
            kind::SETTINGS => {
                let mut params = Vec::with_capacity(payload.len() / 6);
                for p in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([p[0], p[1]]);
                    let value = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                    let ok = match id {
                        setting::ENABLE_PUSH => value <= 1,
                        setting::INITIAL_WINDOW_SIZE => value <= 0x7fff_ffff,
                        setting::MAX_FRAME_SIZE => {
                            (DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value)
                        }
                        _ => true,
                    };
                    if !ok {
                        return Err(FrameError::BadSetting { id, value });
                    }
                    params.push((id, value));
                }
                out.push(Frame::Settings {
                    ack: head.has(flag::ACK),
                    params,
                });
            }
            kind::PING => {
                let mut data = [0u8; 8];
                data.copy_from_slice(&payload);
                out.push(Frame::Ping {
                    ack: head.has(flag::ACK),
                    data,
                });
            }
            kind::GOAWAY => out.push(Frame::GoAway {
                last_stream: word(0) & 0x7fff_ffff,
                error_code: word(4),
                debug: payload[8..].to_vec(),
            }),
            kind::WINDOW_UPDATE => {
                let increment = word(0) & 0x7fff_ffff;
                // On a stream a zero increment is a stream error (RFC 9113 §6.9): the
                // connection goes on, so the frame is given as it is.
                if increment == 0 && head.stream == 0 {
                    return Err(FrameError::ZeroWindowIncrement);
                }
                out.push(Frame::WindowUpdate {
                    stream: head.stream,
                    increment,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn block_fragment(
        &mut self,
        head: &FrameHeader,
        start: BlockStart,
        fragment: Vec<u8>,
        out: &mut Vec<Frame>,
    ) {
        let block = PendingBlock {
            stream: head.stream,
            start,
            fragment,
        };
        if head.has(flag::END_HEADERS) {
            out.push(block.into_frame());
        } else {
            self.block = Some(block);
        }
    }
}

impl PendingBlock {
    fn into_frame(self) -> Frame {
        match self.start {
            BlockStart::Headers {
                end_stream,
                priority,
            } => Frame::Headers {
                stream: self.stream,
                end_stream,
                priority,
                block: self.fragment,
            },
            BlockStart::PushPromise { promised } => Frame::PushPromise {
                stream: self.stream,
                promised,
                block: self.fragment,
            },
        }
    }
}

/// Moves bytes from `input` into `buf` until it holds `want`; true once it does.
fn take(buf: &mut Vec<u8>, input: &mut &[u8], want: usize) -> bool {
    let need = want.saturating_sub(buf.len());
    let n = need.min(input.len());
    buf.extend_from_slice(&input[..n]);
    *input = &input[n..];
    buf.len() >= want
}

/// The payload of a HEADERS or PUSH_PROMISE without its padding; `fixed` bytes (priority
/// fields, promised stream id) must fit before the padding.
fn unpad<'p>(head: &FrameHeader, payload: &'p [u8], fixed: usize) -> Result<&'p [u8], FrameError> {
    let (pad, body) = if head.has(flag::PADDED) {
        match payload.split_first() {
            Some((&pad, rest)) => (pad, rest),
            None => {
                return Err(FrameError::BadLength {
                    kind: head.kind,
                    len: head.len,
                })
            }
        }
    } else {
        (0, payload)
    };
    if body.len() < fixed {
        return Err(FrameError::BadLength {
            kind: head.kind,
            len: head.len,
        });
    }
    if usize::from(pad) > body.len() - fixed {
        return Err(FrameError::PadTooLong {
            kind: head.kind,
            pad,
            len: head.len,
        });
    }
    Ok(&body[..body.len() - usize::from(pad)])
}

/// Reads the 5 priority bytes (the caller checked the length).
fn parse_priority(bytes: &[u8]) -> Priority {
    let dep = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    Priority {
        exclusive: dep & 0x8000_0000 != 0,
        dependency: dep & 0x7fff_ffff,
        weight: bytes[4],
    }
}

/// Stream-id rules of RFC 9113 §6 that make a frame a connection error.
fn check_stream_id(head: &FrameHeader) -> Result<(), FrameError> {
    match head.kind {
        kind::SETTINGS | kind::PING | kind::GOAWAY if head.stream != 0 => {
            Err(FrameError::StreamIdNotAllowed {
                kind: head.kind,
                stream: head.stream,
            })
        }
        kind::DATA
        | kind::HEADERS
        | kind::PRIORITY
        | kind::RST_STREAM
        | kind::PUSH_PROMISE
        | kind::CONTINUATION
            if head.stream == 0 =>
        {
            Err(FrameError::StreamIdRequired { kind: head.kind })
        }
        _ => Ok(()),
    }
}

/// Which peer wrote the bytes `sync` looks at: stream ids differ (RFC 9113 §5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// Opens odd streams only and never sends PUSH_PROMISE.
    Client,
    /// Answers on odd streams and pushes on even ones.
    Server,
}

/// How strict `sync` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncRules {
    pub sender: Sender,
    /// The largest frame length taken as plausible (what the receiving peer advertised).
    pub max_frame_size: u32,
    /// How many plausible frame headers, each where the previous frame ends, make a
    /// boundary. One random header passes now and then; three in a chain hardly ever do.
    pub chain: usize,
}

/// Frames in a row that `sync` wants by default: with the checks of `plausible`, a random
/// 9 bytes pass about once in 10^6 to 10^7 tries, so three in a row are below 10^-18.
pub const DEFAULT_SYNC_CHAIN: usize = 3;

impl SyncRules {
    pub fn new(sender: Sender) -> Self {
        Self {
            sender,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            chain: DEFAULT_SYNC_CHAIN,
        }
    }
}

/// What `sync` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// A chain of plausible frames starts at this offset: parse from there with
    /// `FrameParser::joined`.
    Found(usize),
    /// No boundary before `keep_from`; from there on the bytes do not yet tell. Drop the
    /// bytes before it and call again with more.
    NeedMore { keep_from: usize },
}

/// Finds the first offset in `bytes` (a stream joined at an unknown point) where
/// `rules.chain` plausible frame headers follow one another. Only frame headers are
/// judged (never payloads), so the answer for an offset does not change as bytes arrive.
/// An offset whose chain runs past the end of `bytes` does not hold up a later offset
/// whose chain is complete: a false header with a large length would otherwise make the
/// search wait for up to `chain` maximum-size frames.
pub fn sync(bytes: &[u8], rules: &SyncRules) -> SyncOutcome {
    let chain = rules.chain.max(1);
    let mut undecided = None;
    for start in 0..bytes.len() {
        let mut at = start;
        let mut found = 0;
        loop {
            let Some(raw) = bytes.get(at..at + FRAME_HEADER_LEN) else {
                undecided = undecided.or(Some(start));
                break;
            };
            let mut header = [0u8; FRAME_HEADER_LEN];
            header.copy_from_slice(raw);
            let head = FrameHeader::parse(&header);
            if !plausible(&head, rules) {
                break;
            }
            found += 1;
            if found == chain {
                return SyncOutcome::Found(start);
            }
            at += FRAME_HEADER_LEN + head.len as usize;
        }
    }
    SyncOutcome::NeedMore {
        keep_from: undecided.unwrap_or(bytes.len()),
    }
}

/// Whether a header looks like one a conforming peer writes: a defined type, only that
/// type's flags, the reserved bit clear, a length it can have, and a stream id the type
/// and the sender allow. Stricter than the parser, which must ignore unknown flags.
fn plausible(head: &FrameHeader, rules: &SyncRules) -> bool {
    if head.len > rules.max_frame_size || head.reserved {
        return false;
    }
    let client = rules.sender == Sender::Client;
    let odd = head.stream % 2 == 1;
    let (flags, stream_ok, len_ok) = match head.kind {
        kind::DATA => (
            flag::END_STREAM | flag::PADDED,
            head.stream != 0 && (odd || !client),
            true,
        ),
        kind::HEADERS => (
            flag::END_STREAM | flag::END_HEADERS | flag::PADDED | flag::PRIORITY,
            head.stream != 0 && (odd || !client),
            true,
        ),
        kind::PRIORITY => (0, head.stream != 0, head.len == 5),
        kind::RST_STREAM => (0, head.stream != 0, head.len == 4),
        kind::SETTINGS => (
            flag::ACK,
            head.stream == 0,
            if head.has(flag::ACK) {
                head.len == 0
            } else {
                head.len % 6 == 0
            },
        ),
        kind::PUSH_PROMISE => (
            flag::END_HEADERS | flag::PADDED,
            !client && odd,
            head.len >= 4,
        ),
        kind::PING => (flag::ACK, head.stream == 0, head.len == 8),
        kind::GOAWAY => (0, head.stream == 0, head.len >= 8),
        kind::WINDOW_UPDATE => (0, true, head.len == 4),
        kind::CONTINUATION => (
            flag::END_HEADERS,
            head.stream != 0 && (odd || !client),
            true,
        ),
        _ => return false,
    };
    head.flags & !flags == 0 && stream_ok && len_ok
}
