//! Frame -> TCP `Segment`: link layers (Ethernet, 802.1Q/QinQ, SLL, SLL2, null/loop, raw),
//! IPv4 (fragments) and IPv6 (extension headers), TCP. Tolerant of truncated frames.
//! Pure: no I/O, no clock; the fragment timeout runs on frame timestamps.
//! Checksums are not verified: on a capturing host, offloads leave them unfilled.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::capture::{Frame, LinkType};

/// One direction of a TCP connection: packets from `src` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl FlowKey {
    /// The same connection seen from the other side.
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
        }
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

/// Where in the frame decoding stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Ethernet,
    Vlan,
    LinuxSll,
    LinuxSll2,
    /// BSD null / OpenBSD loop header.
    Loopback,
    /// Raw IP: the version nibble.
    RawIp,
    Ipv4,
    Ipv6,
    Ipv6Extension,
    Tcp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ethernet => "Ethernet",
            Self::Vlan => "802.1Q tag",
            Self::LinuxSll => "Linux cooked header",
            Self::LinuxSll2 => "Linux cooked v2 header",
            Self::Loopback => "loopback header",
            Self::RawIp => "raw IP",
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
            Self::Ipv6Extension => "IPv6 extension header",
            Self::Tcp => "TCP",
        })
    }
}

/// A frame that could not be decoded. Both kinds are counted in `DecodeStats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The captured bytes end inside this layer's header.
    #[error("frame ends inside the {layer} header")]
    Truncated { layer: Layer },
    /// The header says something impossible.
    #[error("malformed {layer} header: {why}")]
    Malformed { layer: Layer, why: &'static str },
}

/// Caps on IPv4 fragment reassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Datagrams being reassembled at once; past it the oldest is dropped.
    pub max_fragment_datagrams: usize,
    /// Bytes held across all datagrams being reassembled.
    pub max_fragment_bytes: usize,
    /// A datagram whose first fragment is older than this (by frame time) is dropped.
    pub fragment_timeout_nanos: u64,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        Self {
            max_fragment_datagrams: 256,
            max_fragment_bytes: 4 << 20,
            fragment_timeout_nanos: 30_000_000_000,
        }
    }
}

/// What the decoder has seen. Every frame lands in exactly one of `tcp_segments`,
/// `not_ip`, `not_tcp`, `truncated`, `malformed`, `unknown_link`, `ipv6_fragments` or
/// (for IPv4 fragments) `ipv4_fragments` until its datagram completes or is dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub frames: u64,
    pub tcp_segments: u64,
    /// TCP segments whose payload the capture's snaplen cut (`missing > 0`).
    pub cut_segments: u64,
    pub not_ip: u64,
    pub not_tcp: u64,
    pub truncated: u64,
    pub malformed: u64,
    pub unknown_link: u64,
    /// IPv4 fragments of TCP datagrams.
    pub ipv4_fragments: u64,
    /// IPv4 datagrams rebuilt from fragments.
    pub fragments_reassembled: u64,
    /// IPv4 fragments thrown away: overlap, caps, timeout, cut by snaplen.
    pub fragments_dropped: u64,
    /// IPv6 fragments (not reassembled).
    pub ipv6_fragments: u64,
}

/// Turns frames into TCP segments; holds IPv4 fragments until their datagram is whole.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: DecoderLimits,
    stats: DecodeStats,
    fragments: FragmentTable,
}

/// An IP packet whose payload is (the start of) a TCP segment.
struct IpPacket<'a> {
    src: IpAddr,
    dst: IpAddr,
    /// Captured bytes of the IP payload.
    payload: &'a [u8],
    /// Payload bytes the IP header declares beyond those captured.
    missing: u32,
    /// IPv4 fragment: (id, byte offset, more fragments).
    fragment: Option<(u16, u32, bool)>,
}

/// Why a frame yields no TCP packet, without being an error.
enum Skip {
    NotIp,
    NotTcp,
    UnknownLink,
    Ipv6Fragment,
}

struct TcpHeader {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    header_len: usize,
}

impl Decoder {
    pub fn new(limits: DecoderLimits) -> Self {
        Self {
            limits,
            stats: DecodeStats::default(),
            fragments: FragmentTable::default(),
        }
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// IPv4 datagrams waiting for more fragments.
    pub fn fragments_pending(&self) -> usize {
        self.fragments.pending.len()
    }

    /// The TCP segment in `frame`, or `None` when the frame carries none (not IP, not
    /// TCP, unknown link) or is an IPv4 fragment held until its datagram is complete.
    /// The segment borrows the frame, or the decoder when it was reassembled.
    pub fn decode<'a>(&'a mut self, frame: &Frame<'a>) -> Result<Option<Segment<'a>>, DecodeError> {
        self.stats.frames += 1;
        if !self.fragments.pending.is_empty() {
            self.fragments
                .expire(frame.ts_nanos, &self.limits, &mut self.stats);
        }
        let packet = match ip_packet(frame) {
            Ok(Ok(packet)) => packet,
            Ok(Err(skip)) => {
                let counter = match skip {
                    Skip::NotIp => &mut self.stats.not_ip,
                    Skip::NotTcp => &mut self.stats.not_tcp,
                    Skip::UnknownLink => &mut self.stats.unknown_link,
                    Skip::Ipv6Fragment => &mut self.stats.ipv6_fragments,
                };
                *counter += 1;
                return Ok(None);
            }
            Err(e) => return Err(self.count_error(e)),
        };
        let flow_of = |tcp: &TcpHeader| FlowKey {
            src: SocketAddr::new(packet.src, tcp.src_port),
            dst: SocketAddr::new(packet.dst, tcp.dst_port),
        };
        if let Some((id, offset, more)) = packet.fragment {
            self.stats.ipv4_fragments += 1;
            let (IpAddr::V4(src), IpAddr::V4(dst)) = (packet.src, packet.dst) else {
                return Ok(None);
            };
            let key = FragmentKey { src, dst, id };
            let fragment = Fragment {
                offset,
                more,
                data: packet.payload,
                cut: packet.missing > 0,
            };
            let complete =
                self.fragments
                    .add(key, fragment, frame.ts_nanos, &self.limits, &mut self.stats);
            if !complete {
                return Ok(None);
            }
            self.stats.fragments_reassembled += 1;
            let tcp = match parse_tcp(&self.fragments.done, self.fragments.done.len()) {
                Ok(tcp) => tcp,
                Err(e) => return Err(self.count_error(e)),
            };
            self.stats.tcp_segments += 1;
            let flow = flow_of(&tcp);
            let this: &'a Self = self;
            return Ok(Some(Segment {
                ts_nanos: frame.ts_nanos,
                flow,
                seq: tcp.seq,
                ack: tcp.ack,
                flags: tcp.flags,
                payload: &this.fragments.done[tcp.header_len..],
                missing: 0,
            }));
        }
        let declared = packet.payload.len() + packet.missing as usize;
        let tcp = match parse_tcp(packet.payload, declared) {
            Ok(tcp) => tcp,
            Err(e) => return Err(self.count_error(e)),
        };
        self.stats.tcp_segments += 1;
        if packet.missing > 0 {
            self.stats.cut_segments += 1;
        }
        Ok(Some(Segment {
            ts_nanos: frame.ts_nanos,
            flow: flow_of(&tcp),
            seq: tcp.seq,
            ack: tcp.ack,
            flags: tcp.flags,
            payload: &packet.payload[tcp.header_len..],
            missing: packet.missing,
        }))
    }

    fn count_error(&mut self, e: DecodeError) -> DecodeError {
        match e {
            DecodeError::Truncated { .. } => self.stats.truncated += 1,
            DecodeError::Malformed { .. } => self.stats.malformed += 1,
        }
        e
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const PROTO_TCP: u8 = 6;

type Decoded<'a> = Result<Result<IpPacket<'a>, Skip>, DecodeError>;

fn truncated<T>(layer: Layer) -> Result<T, DecodeError> {
    Err(DecodeError::Truncated { layer })
}

fn malformed<T>(layer: Layer, why: &'static str) -> Result<T, DecodeError> {
    Err(DecodeError::Malformed { layer, why })
}

fn ip_packet<'a>(frame: &Frame<'a>) -> Decoded<'a> {
    let data = frame.data;
    // Only a frame the capture cut short may miss bytes its IP header declares.
    let cut = (data.len() as u64) < u64::from(frame.orig_len);
    match frame.link {
        LinkType::Ethernet => {
            if data.len() < 14 {
                return truncated(Layer::Ethernet);
            }
            by_ethertype(be16(data, 12), &data[14..], cut)
        }
        LinkType::LinuxSll => {
            if data.len() < 16 {
                return truncated(Layer::LinuxSll);
            }
            by_ethertype(be16(data, 14), &data[16..], cut)
        }
        LinkType::LinuxSll2 => {
            if data.len() < 20 {
                return truncated(Layer::LinuxSll2);
            }
            by_ethertype(be16(data, 0), &data[20..], cut)
        }
        LinkType::Null | LinkType::Loop => {
            if data.len() < 4 {
                return truncated(Layer::Loopback);
            }
            let bytes = [data[0], data[1], data[2], data[3]];
            // Null is in the capturing host's byte order, which the file does not say;
            // the address families are small, so the byte order that gives one is right.
            let family = if frame.link == LinkType::Loop {
                u32::from_be_bytes(bytes)
            } else {
                let le = u32::from_le_bytes(bytes);
                if le <= 0xFFFF {
                    le
                } else {
                    u32::from_be_bytes(bytes)
                }
            };
            match family {
                2 => ipv4(&data[4..], cut),
                // AF_INET6 differs by OS: Linux 10, BSDs 24, FreeBSD 28, macOS 30.
                10 | 24 | 28 | 30 => ipv6(&data[4..], cut),
                _ => Ok(Err(Skip::NotIp)),
            }
        }
        LinkType::Raw => match data.first().map(|b| b >> 4) {
            None => truncated(Layer::RawIp),
            Some(4) => ipv4(data, cut),
            Some(6) => ipv6(data, cut),
            Some(_) => malformed(Layer::RawIp, "IP version is neither 4 nor 6"),
        },
        LinkType::Ipv4 => ipv4(data, cut),
        LinkType::Ipv6 => ipv6(data, cut),
        LinkType::Other(_) => Ok(Err(Skip::UnknownLink)),
    }
}

/// Follows VLAN tags (802.1Q, 802.1ad and the older QinQ types, stacked) to IP.
fn by_ethertype(mut ethertype: u16, mut rest: &[u8], cut: bool) -> Decoded<'_> {
    while matches!(ethertype, 0x8100 | 0x88A8 | 0x9100 | 0x9200) {
        if rest.len() < 4 {
            return truncated(Layer::Vlan);
        }
        ethertype = be16(rest, 2);
        rest = &rest[4..];
    }
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(rest, cut),
        ETHERTYPE_IPV6 => ipv6(rest, cut),
        _ => Ok(Err(Skip::NotIp)),
    }
}

/// The captured part of `declared` bytes and how many of them are missing; `layer` is
/// blamed when the frame was not cut yet holds less than the header says.
fn clip(
    data: &[u8],
    declared: usize,
    cut: bool,
    layer: Layer,
) -> Result<(&[u8], u32), DecodeError> {
    if declared <= data.len() {
        // Anything past the declared length is link-layer padding (Ethernet minimum size).
        return Ok((&data[..declared], 0));
    }
    if !cut {
        return malformed(layer, "length field exceeds the frame");
    }
    Ok((data, (declared - data.len()) as u32))
}

fn ipv4(data: &[u8], cut: bool) -> Decoded<'_> {
    if data.len() < 20 {
        return truncated(Layer::Ipv4);
    }
    if data[0] >> 4 != 4 {
        return malformed(Layer::Ipv4, "version is not 4");
    }
    let header_len = usize::from(data[0] & 0x0F) * 4;
    if header_len < 20 {
        return malformed(Layer::Ipv4, "header length below 20 bytes");
    }
    if data.len() < header_len {
        return truncated(Layer::Ipv4);
    }
    let total_len = usize::from(be16(data, 2));
    // Zero: the packet was captured before TSO/GSO split it; the capture is the packet.
    let total_len = if total_len == 0 {
        data.len()
    } else {
        total_len
    };
    if total_len < header_len {
        return malformed(Layer::Ipv4, "total length shorter than the header");
    }
    let (packet, missing) = clip(data, total_len, cut, Layer::Ipv4)?;
    if data[9] != PROTO_TCP {
        return Ok(Err(Skip::NotTcp));
    }
    let flags_offset = be16(data, 6);
    let more = flags_offset & 0x2000 != 0;
    let offset = u32::from(flags_offset & 0x1FFF) * 8;
    let fragment = (more || offset != 0).then_some((be16(data, 4), offset, more));
    let src = Ipv4Addr::new(data[12], data[13], data[14], data[15]);
    let dst = Ipv4Addr::new(data[16], data[17], data[18], data[19]);
    Ok(Ok(IpPacket {
        src: src.into(),
        dst: dst.into(),
        payload: &packet[header_len..],
        missing,
        fragment,
    }))
}

fn ipv6(data: &[u8], cut: bool) -> Decoded<'_> {
    if data.len() < 40 {
        return truncated(Layer::Ipv6);
    }
    if data[0] >> 4 != 6 {
        return malformed(Layer::Ipv6, "version is not 6");
    }
    let payload_len = usize::from(be16(data, 4));
    // Zero: a jumbogram, or captured before GSO split it; the capture is the packet.
    let total_len = if payload_len == 0 {
        data.len()
    } else {
        40 + payload_len
    };
    let (packet, missing) = clip(data, total_len, cut, Layer::Ipv6)?;
    let mut next = data[6];
    let mut at = 40;
    loop {
        let ext_len = match next {
            PROTO_TCP => break,
            // Hop-by-hop, routing, destination options: length in 8-byte units after the first 8.
            0 | 43 | 60 => {
                if packet.len() < at + 2 {
                    return truncated(Layer::Ipv6Extension);
                }
                (usize::from(packet[at + 1]) + 1) * 8
            }
            44 => {
                if packet.len() < at + 8 {
                    return truncated(Layer::Ipv6Extension);
                }
                let offset_more = be16(packet, at + 2);
                // An atomic fragment (offset 0, no more) is the whole packet.
                if offset_more & 0xFFF9 != 0 {
                    return Ok(Err(Skip::Ipv6Fragment));
                }
                8
            }
            // Authentication header: length in 4-byte units after the first 8.
            51 => {
                if packet.len() < at + 2 {
                    return truncated(Layer::Ipv6Extension);
                }
                (usize::from(packet[at + 1]) + 2) * 4
            }
            // ESP hides what follows; 59 is "no next header"; the rest is not TCP.
            _ => return Ok(Err(Skip::NotTcp)),
        };
        if packet.len() < at + ext_len {
            return if missing > 0 {
                truncated(Layer::Ipv6Extension)
            } else {
                malformed(
                    Layer::Ipv6Extension,
                    "extension header runs past the packet",
                )
            };
        }
        next = packet[at];
        at += ext_len;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&data[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&data[24..40]);
    Ok(Ok(IpPacket {
        src: Ipv6Addr::from(src).into(),
        dst: Ipv6Addr::from(dst).into(),
        payload: &packet[at..],
        missing,
        fragment: None,
    }))
}

/// `segment` holds the captured bytes; `declared` is the segment length by the IP header.
fn parse_tcp(segment: &[u8], declared: usize) -> Result<TcpHeader, DecodeError> {
    if declared < 20 {
        return malformed(Layer::Tcp, "segment shorter than a TCP header");
    }
    if segment.len() < 20 {
        return truncated(Layer::Tcp);
    }
    let header_len = usize::from(segment[12] >> 4) * 4;
    if header_len < 20 {
        return malformed(Layer::Tcp, "data offset below 5");
    }
    if header_len > declared {
        return malformed(Layer::Tcp, "data offset past the end of the segment");
    }
    if header_len > segment.len() {
        return truncated(Layer::Tcp);
    }
    Ok(TcpHeader {
        src_port: be16(segment, 0),
        dst_port: be16(segment, 2),
        seq: be32(segment, 4),
        ack: be32(segment, 8),
        flags: TcpFlags(segment[13]),
        header_len,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FragmentKey {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
}

struct Fragment<'a> {
    offset: u32,
    more: bool,
    data: &'a [u8],
    /// The capture cut this fragment: its datagram can never be whole.
    cut: bool,
}

#[derive(Debug)]
struct PendingDatagram {
    key: FragmentKey,
    first_ts: u64,
    /// Bytes at their offsets; holes are zero until filled.
    data: Vec<u8>,
    /// Received byte ranges, sorted, not overlapping, not adjacent-merged.
    ranges: Vec<(u32, u32)>,
    /// Known once the last fragment (MF clear) arrives.
    total: Option<u32>,
    fragments: u64,
}

/// IPv4 datagrams being reassembled (protocol is always TCP: others are not held).
/// Small and searched linearly: the cap on datagrams keeps it short.
#[derive(Debug, Default)]
struct FragmentTable {
    pending: Vec<PendingDatagram>,
    bytes: usize,
    /// The last datagram completed; the segment returned for it borrows this.
    done: Vec<u8>,
}

/// Largest IPv4 payload: total length 65535 minus a 20-byte header.
const MAX_DATAGRAM_PAYLOAD: u32 = 65_515;

impl FragmentTable {
    fn expire(&mut self, now: u64, limits: &DecoderLimits, stats: &mut DecodeStats) {
        let mut i = 0;
        while i < self.pending.len() {
            if now.saturating_sub(self.pending[i].first_ts) > limits.fragment_timeout_nanos {
                self.remove(i, stats);
            } else {
                i += 1;
            }
        }
    }

    fn remove(&mut self, index: usize, stats: &mut DecodeStats) {
        let gone = self.pending.swap_remove(index);
        self.bytes -= gone.data.len();
        stats.fragments_dropped += gone.fragments;
    }

    /// Adds a fragment; true when its datagram is complete, its payload in `done`.
    fn add(
        &mut self,
        key: FragmentKey,
        fragment: Fragment<'_>,
        ts: u64,
        limits: &DecoderLimits,
        stats: &mut DecodeStats,
    ) -> bool {
        let len = fragment.data.len() as u32;
        let start = fragment.offset;
        let end = start + len;
        let index = self.pending.iter().position(|p| p.key == key);
        // A fragment that can never fit a datagram spoils it; overlaps are a known IDS
        // evasion where different stacks keep different bytes, so none are trusted.
        let bad = fragment.cut
            || end > MAX_DATAGRAM_PAYLOAD
            || (fragment.more && len % 8 != 0)
            || len == 0 && fragment.more;
        let index = match index {
            Some(i) => i,
            None if bad => {
                stats.fragments_dropped += 1;
                return false;
            }
            None => {
                self.make_room(end as usize, None, limits, stats);
                if self.pending.len() >= limits.max_fragment_datagrams
                    || self.bytes + end as usize > limits.max_fragment_bytes
                {
                    stats.fragments_dropped += 1;
                    return false;
                }
                self.pending.push(PendingDatagram {
                    key,
                    first_ts: ts,
                    data: Vec::new(),
                    ranges: Vec::new(),
                    total: None,
                    fragments: 0,
                });
                self.pending.len() - 1
            }
        };
        let pending = &self.pending[index];
        let overlaps = pending.ranges.iter().any(|&(s, e)| start < e && s < end);
        let total_conflict = match (pending.total, fragment.more) {
            (Some(total), true) => end > total,
            (Some(total), false) => end != total,
            (None, false) => pending.ranges.iter().any(|&(_, e)| e > end),
            (None, true) => false,
        };
        if bad || overlaps || total_conflict {
            stats.fragments_dropped += 1;
            self.remove(index, stats);
            return false;
        }
        let grow = (end as usize).saturating_sub(pending.data.len());
        if self.bytes + grow > limits.max_fragment_bytes {
            self.make_room(grow, Some(key), limits, stats);
        }
        let Some(index) = self.pending.iter().position(|p| p.key == key) else {
            stats.fragments_dropped += 1;
            return false;
        };
        if self.bytes + grow > limits.max_fragment_bytes {
            stats.fragments_dropped += 1;
            self.remove(index, stats);
            return false;
        }
        self.bytes += grow;
        let pending = &mut self.pending[index];
        pending.fragments += 1;
        if pending.data.len() < end as usize {
            pending.data.resize(end as usize, 0);
        }
        pending.data[start as usize..end as usize].copy_from_slice(fragment.data);
        let at = pending.ranges.partition_point(|&(s, _)| s < start);
        pending.ranges.insert(at, (start, end));
        if !fragment.more {
            pending.total = Some(end);
        }
        let Some(total) = pending.total else {
            return false;
        };
        let mut reach = 0;
        for &(s, e) in &pending.ranges {
            if s != reach {
                return false;
            }
            reach = e;
        }
        if reach != total {
            return false;
        }
        let whole = self.pending.swap_remove(index);
        self.bytes -= whole.data.len();
        self.done = whole.data;
        true
    }

    /// Drops the oldest datagrams (other than `keep`) until `need` more bytes and one
    /// more datagram fit.
    fn make_room(
        &mut self,
        need: usize,
        keep: Option<FragmentKey>,
        limits: &DecoderLimits,
        stats: &mut DecodeStats,
    ) {
        let slots = if keep.is_some() { 0 } else { 1 };
        while self.pending.len() + slots > limits.max_fragment_datagrams
            || self.bytes + need > limits.max_fragment_bytes
        {
            let oldest = self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, p)| Some(p.key) != keep)
                .min_by_key(|(_, p)| p.first_ts)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => self.remove(i, stats),
                None => break,
            }
        }
    }
}
