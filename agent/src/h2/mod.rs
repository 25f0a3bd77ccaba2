//! HTTP/2 codec, the pure layer under h2c and gRPC capture (issue 20): frames out of one
//! direction's bytes (`frame`), header blocks into field lists (`hpack`, `huffman`), and
//! the frame-chain sync that finds frame boundaries on a connection joined midway.
//! No I/O and no clock: streams, requests and connection trust live above it.
//!
//! `encoder` is a small HPACK encoder whose every choice is the caller's: the tests and
//! the fuzz targets build header blocks with it; capture never encodes.

pub mod answers;
pub mod conn;
pub mod encoder;
pub mod frame;
pub mod hpack;
pub mod huffman;
pub mod request;

#[cfg(test)]
mod conn_tests;
#[cfg(test)]
mod frame_tests;
#[cfg(test)]
mod hpack_tests;

pub use conn::{ClientConn, ConnLimits, ConnStart};
pub use frame::{
    sync, Frame, FrameError, FrameHeader, FrameLimits, FrameParser, Priority, Sender, SyncOutcome,
    SyncRules,
};
pub use hpack::{Block, Decoder, Field, HpackError};
