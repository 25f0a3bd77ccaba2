//! Per-flow TCP byte streams, bounded in flows and bytes. Time is passed in (packet
//! timestamps); nothing here reads a clock or does I/O. `FlowTable` (flow_table.rs) owns
//! the connections, `stream.rs` one direction's ordering and buffer.

mod flow_table;
mod recording;
mod slab;
mod stream;

pub use flow_table::FlowTable;
pub use recording::{RecordedEvent, RecordingSink};
pub(crate) use slab::LruSlab;

use crate::decode::FlowKey;

/// Caps and knobs of a `FlowTable`. Every cap drops and counts rather than grows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Server ports watched: only the direction towards one of them is delivered.
    /// `None` delivers both directions of every connection.
    pub ports: Option<Vec<u16>>,
    /// Also deliver the direction from a watched port (the server's answers), for the
    /// response comparison (`--diff`).
    pub responses: bool,
    /// Live connections; past it the least recently active one is evicted.
    pub max_flows: usize,
    /// Out-of-order bytes buffered per direction before its first hole is given up.
    pub max_stream_buffer: usize,
    /// Out-of-order bytes buffered across all flows. The direction whose segment would
    /// pass it gives up its own holes (cheap, and each direction is already held to
    /// `max_stream_buffer`), so the total never ends a `push` above it.
    pub max_total_buffer: usize,
    /// Separate out-of-order pieces per direction: bounds map overhead when the bytes
    /// come in many tiny segments.
    pub max_stream_chunks: usize,
    pub idle_timeout_nanos: u64,
    /// A hole older than this (packet time) is given up: what follows it is delivered
    /// after a gap. Live capture loses a packet for good when its ring overflows, and
    /// without this the rest of that connection would wait for the buffer caps or its
    /// end. Long enough for a retransmit after a real loss on the wire (RTO >= 200 ms).
    pub hole_timeout_nanos: u64,
    /// A segment starting further than this past the next expected byte is dropped.
    pub max_ahead: u64,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            ports: None,
            responses: false,
            max_flows: 50_000,
            max_stream_buffer: 1 << 20,
            max_total_buffer: 16 << 20,
            max_stream_chunks: 1024,
            idle_timeout_nanos: 120_000_000_000,
            hole_timeout_nanos: 2_000_000_000,
            max_ahead: 16 << 20,
        }
    }
}

/// Counters since the table was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub segments: u64,
    pub bytes_delivered: u64,
    /// Segments (or SYNs) that brought no new byte.
    pub duplicates: u64,
    /// Segments overlapping earlier bytes with different content. Compared against
    /// buffered bytes and the last 64 delivered bytes per direction. The first one
    /// distrusts its stream (`StreamSink::distrust`).
    pub retransmit_mismatch: u64,
    /// Streams whose first byte was delivered without their SYN having been seen
    /// (picked up mid-connection): distrusted from the start.
    pub lost_starts: u64,
    /// Streams distrusted at their first retransmission with other bytes.
    pub conflict_distrusts: u64,
    pub out_of_order: u64,
    /// `gap` calls and the bytes they reported.
    pub gaps: u64,
    pub gap_bytes: u64,
    pub too_far_ahead: u64,
    pub flows_evicted: u64,
    /// Of `flows_evicted`, connections the sink said were mid-message (every other
    /// candidate among the least recently active was too).
    pub flows_evicted_busy: u64,
    pub flows_timed_out: u64,
    pub flows_opened: u64,
    /// Closed by FIN/RST, or replaced by a new connection on the same 4-tuple.
    pub flows_closed: u64,
    /// Ended by `flush`. opened = closed + timed_out + evicted + flushed + live.
    pub flows_flushed: u64,
    /// Times a cap forced a direction to give up holes.
    pub buffer_overflows: u64,
    /// Holes given up because they stayed open longer than `hole_timeout_nanos`.
    pub holes_timed_out: u64,
}

/// One direction of one connection. `conn` is unique for the life of a `FlowTable`
/// (a reused 4-tuple after close gets a new id); `flow` says which direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamKey {
    pub conn: u64,
    pub flow: FlowKey,
}

// Hashed per delivered segment: `conn` and the source port tell the streams of one table
// apart, so the addresses (most of the key's bytes) are left out. Equal keys still hash
// equal, which is all `Hash` must keep.
impl std::hash::Hash for StreamKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.conn ^ (u64::from(self.flow.src.port()) << 48));
    }
}

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    Fin,
    Rst,
    /// No packet for longer than the idle timeout.
    IdleTimeout,
    /// Dropped to stay under a memory cap.
    Evicted,
    /// End of the capture (file finished, agent stopping).
    Flushed,
}

/// Receives the reassembled byte streams, in order, per direction.
pub trait StreamSink {
    /// In-order bytes of a stream.
    fn data(&mut self, stream: StreamKey, ts_nanos: u64, bytes: &[u8]);
    /// `missing` bytes that will never arrive sit between the last data and the next.
    fn gap(&mut self, stream: StreamKey, ts_nanos: u64, missing: u64);
    /// The stream is over; no more calls for this key.
    fn end(&mut self, stream: StreamKey, ts_nanos: u64, how: StreamEnd);
    /// From here to its `end`, the stream's bytes may not be what the receiver's kernel
    /// delivered to it: its start was not seen (picked up mid-connection, after an
    /// eviction or idle timeout), or retransmissions disagreed on bytes. Comes before the
    /// first `data`/`gap` of a stream picked up mid-way, and before any byte that a
    /// conflicting retransmission touched; at most once per stream. The stream gets an
    /// `end` like any other.
    fn distrust(&mut self, stream: StreamKey, ts_nanos: u64);
    /// Whether the consumer is in the middle of a message on this stream: eviction
    /// passes over such connections while it finds one that is not. Consumers that
    /// cannot tell say no.
    fn busy(&self, stream: StreamKey) -> bool {
        let _ = stream;
        false
    }
}
