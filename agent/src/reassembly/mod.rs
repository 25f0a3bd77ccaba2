//! Per-flow TCP byte streams, bounded in flows and bytes. Time is passed in (packet
//! timestamps); nothing here reads a clock or does I/O. (Being written: the types below
//! are the contract the HTTP stage relies on.)

use crate::decode::FlowKey;

/// One direction of one connection. `conn` is unique for the life of a `FlowTable`
/// (a reused 4-tuple after close gets a new id); `flow` says which direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub conn: u64,
    pub flow: FlowKey,
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
}
