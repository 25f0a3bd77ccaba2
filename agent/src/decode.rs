//! Frame -> TCP `Segment`: link layers (Ethernet, 802.1Q/QinQ, SLL, SLL2, null/loop, raw),
//! IPv4 (fragments) and IPv6 (extension headers), TCP. Tolerant of truncated frames.
//! (Being written: the types below are the contract other stages rely on.)

use std::net::SocketAddr;

/// One direction of a TCP connection: packets from `src` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl FlowKey {
    /// The same connection seen from the other side.
    pub fn reversed(self) -> Self {
        Self { src: self.dst, dst: self.src }
    }
}

/// TCP header flags (the low 8 bits of the flags field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// A TCP segment as captured. `payload` borrows from the frame (or from the decoder's
/// fragment buffer). When the capture cut the frame short, `payload` holds what was
/// captured and `missing` says how many payload bytes the snaplen cut off.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub ts_nanos: u64,
    pub flow: FlowKey,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub payload: &'a [u8],
    pub missing: u32,
}
