//! `ServerAnswers`: the server's direction of one HTTP/2 connection, read for the
//! response comparison (`--diff`): per stream the final `:status`, the header fields, the
//! body digest and the trailers' `grpc-status` (or a trailers-only answer's), paired by
//! stream id with the requests `expect`ed on it. Interim (1xx) heads are skipped.
//!
//! Only connections seen from their start are read: the server's header table cannot be
//! known otherwise. A capture gap, a connection error, or a start not seen make every
//! answer of the connection `Missing` from then on (`prod_missing`: never guessed).

use std::collections::HashMap;

use super::frame::{Frame, FrameLimits, FrameParser, MAX_MAX_FRAME_SIZE};
use super::hpack::{Block, Decoder, MAX_TABLE_VIEW};
use crate::diff::response::{BodyDigest, ResponseEvent};
use crate::diff::{ResponseSummary, MAX_KEPT_HEADERS};

/// Answers kept waiting for their request (the server answered before the client's
/// request ended) or requests waiting for their answer, per connection.
const MAX_WAITING: usize = 1024;

struct Open {
    first_byte_ts: u64,
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    digest: BodyDigest,
    grpc_status: Option<u32>,
}

/// See the module's first lines.
pub struct ServerAnswers {
    parser: FrameParser,
    decoder: Decoder,
    max_body: usize,
    frames: Vec<Frame>,
    open: HashMap<u32, Open>,
    /// Requests waiting for their answer: stream id -> request id.
    expected: HashMap<u32, u64>,
    /// Answers complete before their request was: stream id -> the event's parts.
    done: HashMap<u32, (u64, ResponseSummary)>,
    /// Streams whose answers are not wanted: framed, nothing kept.
    unwanted: std::collections::HashSet<u32>,
    failed: bool,
}

impl ServerAnswers {
    pub fn new(max_body: usize, max_header_block: usize) -> Self {
        let mut decoder = Decoder::new().with_max_header_list(max_header_block);
        decoder.set_limit(MAX_TABLE_VIEW);
        Self {
            parser: FrameParser::server(FrameLimits {
                max_frame_size: MAX_MAX_FRAME_SIZE,
                max_header_block,
            }),
            decoder,
            max_body,
            frames: Vec::new(),
            open: HashMap::new(),
            expected: HashMap::new(),
            done: HashMap::new(),
            unwanted: std::collections::HashSet::new(),
            failed: false,
        }
    }

    /// Request `id` went on `stream`: its answer is wanted.
    pub fn expect(&mut self, stream: u32, id: u64, out: &mut Vec<ResponseEvent>) {
        if self.failed || self.expected.len() >= MAX_WAITING {
            out.push(ResponseEvent::Missing { id });
            return;
        }
        match self.done.remove(&stream) {
            Some((first_byte_ts, summary)) => out.push(ResponseEvent::Response {
                id,
                first_byte_ts,
                summary,
            }),
            None => {
                self.expected.insert(stream, id);
            }
        }
    }

    /// The answer on `stream` is no longer wanted (its request was not sampled).
    pub fn unkeep(&mut self, stream: u32) {
        self.expected.remove(&stream);
        self.done.remove(&stream);
        if !self.open.contains_key(&stream) && self.unwanted.len() < MAX_WAITING {
            self.unwanted.insert(stream);
        }
        self.open.remove(&stream);
    }

    pub fn push(&mut self, ts_nanos: u64, bytes: &[u8], out: &mut Vec<ResponseEvent>) {
        if self.failed {
            return;
        }
        let mut frames = std::mem::take(&mut self.frames);
        let result = self.parser.push(bytes, &mut frames);
        for frame in frames.drain(..) {
            self.frame(ts_nanos, frame, out);
            if self.failed {
                break;
            }
        }
        self.frames = frames;
        if result.is_err() {
            self.fail(out);
        }
    }

    fn frame(&mut self, ts_nanos: u64, frame: Frame, out: &mut Vec<ResponseEvent>) {
        match frame {
            Frame::Headers {
                stream,
                end_stream,
                block,
                ..
            } => {
                let fields = match self.decoder.decode(&block) {
                    Ok(Block::Fields(fields)) => fields,
                    // The table is lost (or, never here, unknown): nothing more is sure.
                    Ok(Block::Undecodable) | Err(_) => return self.fail(out),
                };
                match self.open.get_mut(&stream) {
                    // Trailers.
                    Some(open) => {
                        if let Some(code) = grpc_status(&fields) {
                            open.grpc_status = Some(code);
                        }
                        if end_stream {
                            self.complete(stream, out);
                        }
                    }
                    None => {
                        let status = fields
                            .iter()
                            .find(|(n, _)| n == b":status")
                            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u16>().ok());
                        let Some(status) = status else {
                            return self.lost(stream, out);
                        };
                        if (100..200).contains(&status) {
                            return;
                        }
                        if self.unwanted.remove(&stream) {
                            return;
                        }
                        let headers = fields
                            .iter()
                            .filter(|(n, _)| !n.starts_with(b":"))
                            .take(MAX_KEPT_HEADERS)
                            .map(|(n, v)| {
                                (String::from_utf8_lossy(n).to_ascii_lowercase(), v.clone())
                            })
                            .collect();
                        self.open.insert(
                            stream,
                            Open {
                                first_byte_ts: ts_nanos,
                                status,
                                headers,
                                digest: BodyDigest::new(self.max_body),
                                grpc_status: grpc_status(&fields),
                            },
                        );
                        if end_stream {
                            self.complete(stream, out);
                        }
                    }
                }
            }
            Frame::Data {
                stream,
                data,
                end_stream,
            } => {
                if let Some(open) = self.open.get_mut(&stream) {
                    open.digest.push(&data);
                    if end_stream {
                        self.complete(stream, out);
                    }
                }
            }
            Frame::RstStream { stream, .. } => self.lost(stream, out),
            Frame::GoAway { .. }
            | Frame::Settings { .. }
            | Frame::Priority { .. }
            | Frame::Ping { .. }
            | Frame::WindowUpdate { .. }
            | Frame::PushPromise { .. }
            | Frame::OrphanContinuation { .. }
            | Frame::Unknown { .. } => {}
        }
    }

    fn complete(&mut self, stream: u32, out: &mut Vec<ResponseEvent>) {
        let Some(open) = self.open.remove(&stream) else {
            return;
        };
        let encoding = open
            .headers
            .iter()
            .find(|(n, _)| n == "content-encoding")
            .map(|(_, v)| v.clone());
        let (body_len, body_hash, body) = open.digest.finish(encoding.as_deref());
        let summary = ResponseSummary {
            status: open.status,
            grpc_status: open.grpc_status,
            headers: open.headers,
            body_len,
            body_hash,
            body,
            latency: std::time::Duration::ZERO,
        };
        match self.expected.remove(&stream) {
            Some(id) => out.push(ResponseEvent::Response {
                id,
                first_byte_ts: open.first_byte_ts,
                summary,
            }),
            None if self.done.len() < MAX_WAITING => {
                self.done.insert(stream, (open.first_byte_ts, summary));
            }
            None => {}
        }
    }

    /// The answer on `stream` will not be known.
    fn lost(&mut self, stream: u32, out: &mut Vec<ResponseEvent>) {
        self.open.remove(&stream);
        if let Some(id) = self.expected.remove(&stream) {
            out.push(ResponseEvent::Missing { id });
        }
    }

    fn fail(&mut self, out: &mut Vec<ResponseEvent>) {
        self.failed = true;
        self.open.clear();
        self.done.clear();
        for (_, id) in self.expected.drain() {
            out.push(ResponseEvent::Missing { id });
        }
    }

    /// Bytes lost (any gap loses the header table's state) or not trustworthy.
    pub fn gap(&mut self, out: &mut Vec<ResponseEvent>) {
        self.fail(out);
    }

    /// The connection's server side ended.
    pub fn finish(&mut self, out: &mut Vec<ResponseEvent>) {
        self.fail(out);
    }
}

fn grpc_status(fields: &[(Vec<u8>, Vec<u8>)]) -> Option<u32> {
    fields
        .iter()
        .find(|(n, _)| n == b"grpc-status")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::encoder::{Choice, Encoder, Indexing};
    use crate::h2::frame::{flag, kind};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    const LIT: Choice = Choice {
        indexed: true,
        name_ref: true,
        prefer_dynamic: true,
        indexing: Indexing::Incremental,
        huffman: false,
    };

    fn block(enc: &mut Encoder, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            enc.field(n.as_bytes(), v.as_bytes(), LIT, &mut out);
        }
        out
    }

    #[test]
    fn grpc_answers_pair_by_stream_whichever_comes_first() {
        let mut enc = Encoder::new(4096);
        let mut bytes = frame(kind::SETTINGS, 0, 0, &[]);
        let head = block(
            &mut enc,
            &[(":status", "200"), ("content-type", "application/grpc")],
        );
        bytes.extend(frame(kind::HEADERS, flag::END_HEADERS, 1, &head));
        bytes.extend(frame(kind::DATA, 0, 1, b"\0\0\0\0\x02hi"));
        let trailers = block(&mut enc, &[("grpc-status", "0")]);
        bytes.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &trailers,
        ));
        // Stream 3: trailers-only, status 14.
        let only = block(&mut enc, &[(":status", "200"), ("grpc-status", "14")]);
        bytes.extend(frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            3,
            &only,
        ));

        let mut answers = ServerAnswers::new(1024, 65536);
        let mut out = Vec::new();
        answers.expect(1, 10, &mut out);
        for piece in bytes.chunks(7) {
            answers.push(5, piece, &mut out);
        }
        // Stream 3's request is expected after its answer came.
        answers.expect(3, 11, &mut out);
        answers.finish(&mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        let ResponseEvent::Response {
            id: 10, summary, ..
        } = &out[0]
        else {
            panic!("{out:?}");
        };
        assert_eq!(summary.status, 200);
        assert_eq!(summary.grpc_status, Some(0));
        assert_eq!(summary.body.as_deref(), Some(&b"\0\0\0\0\x02hi"[..]));
        let ResponseEvent::Response {
            id: 11, summary, ..
        } = &out[1]
        else {
            panic!("{out:?}");
        };
        assert_eq!(summary.grpc_status, Some(14));
    }

    #[test]
    fn a_gap_makes_waiting_answers_missing() {
        let mut answers = ServerAnswers::new(1024, 65536);
        let mut out = Vec::new();
        answers.expect(1, 1, &mut out);
        answers.gap(&mut out);
        answers.expect(3, 2, &mut out);
        assert_eq!(
            out,
            vec![
                ResponseEvent::Missing { id: 1 },
                ResponseEvent::Missing { id: 2 }
            ]
        );
    }
}
