//! Passive response comparison (issue 23): the production response seen on the wire and
//! the shadow response the replay client received, paired per request and compared.
//! This module owns the shared shapes; the pure stages live in submodules:
//! * `response`: HTTP/1.1 responses framed from the server's bytes (RFC 9112), bodies
//!   hashed while streaming and kept (decoded) only up to `--diff-max-body`;
//! * `compare`: status -> chosen headers -> body hash -> JSON field paths, with ignore
//!   rules;
//! * `route`: route templates (`/users/{id}`, gRPC by method), capped;
//! * `noise`: the baseline margins (Diffy's model) and, without a baseline, fields learned
//!   as noise from identical requests;
//! * `report`: per-route aggregation, samples (JSON lines), the terminal table and the
//!   self-contained HTML page.
//!
//! Pairing (which response answers which request) and the wiring into capture and
//! replay live with the pipeline; they hand this module `ResponseSummary`s.

pub mod compare;
pub mod engine;
pub mod noise;
pub mod report;
mod report_html;
pub mod response;
pub mod route;

use std::time::Duration;

/// What is kept of one response, production's or the shadow's (bounded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseSummary {
    pub status: u16,
    /// gRPC: `grpc-status` of the trailers (or of a trailers-only answer).
    pub grpc_status: Option<u32>,
    /// Header fields in order, names lower-cased, at most `MAX_KEPT_HEADERS`.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes on the wire (after de-chunking, before content decoding).
    pub body_len: u64,
    /// A hash of the body bytes as they came (after de-chunking), computed while streaming.
    pub body_hash: u64,
    /// The body, content-decoded (gzip, deflate, br), when it fit within the diff body
    /// cap both before and after decoding; `None`: compared by hash only.
    pub body: Option<Vec<u8>>,
    /// Production: from the request's last byte to the response's first byte on the wire.
    /// Shadow: from the copy's first byte sent to the answer's head.
    pub latency: Duration,
}

/// Header fields kept per response.
pub const MAX_KEPT_HEADERS: usize = 64;

/// How one pair ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiffOutcome {
    Match,
    /// Status (or grpc-status) differs.
    Status,
    /// A compared header differs.
    Headers,
    /// The body differs (by hash, and by JSON field paths when both decode).
    Body,
    /// The copy failed (connect, reset, protocol, TLS).
    ShadowError,
    ShadowTimeout,
    /// The production response was not seen (capture started late, gap, eviction).
    ProdMissing,
}

impl DiffOutcome {
    pub const ALL: [DiffOutcome; 7] = [
        DiffOutcome::Match,
        DiffOutcome::Status,
        DiffOutcome::Headers,
        DiffOutcome::Body,
        DiffOutcome::ShadowError,
        DiffOutcome::ShadowTimeout,
        DiffOutcome::ProdMissing,
    ];

    /// Metric label value and report name.
    pub fn label(self) -> &'static str {
        match self {
            DiffOutcome::Match => "match",
            DiffOutcome::Status => "status",
            DiffOutcome::Headers => "headers",
            DiffOutcome::Body => "body",
            DiffOutcome::ShadowError => "shadow_error",
            DiffOutcome::ShadowTimeout => "shadow_timeout",
            DiffOutcome::ProdMissing => "prod_missing",
        }
    }
}
