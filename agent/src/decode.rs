//! Frame -> TCP `Segment`: link layers (Ethernet, 802.1Q/QinQ, SLL, SLL2, null/loop, raw,
//! NFLOG), IPv4 (fragments) and IPv6 (extension headers), overlay tunnels (VXLAN, Geneve,
//! GRE and ERSPAN, at most `MAX_TUNNEL_DEPTH` deep), TCP. Tolerant of truncated frames.
//! The segment of a tunnelled packet is the inner one: reassembly sees the inner flow.
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
    /// VXLAN, Geneve or GRE header around an inner packet.
    Tunnel,
    /// NFLOG header or one of its TLVs.
    Nflog,
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
            Self::Tunnel => "tunnel (VXLAN, Geneve, GRE)",
            Self::Nflog => "NFLOG",
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

/// Caps on IP fragment reassembly (IPv4 and IPv6 share one table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Datagrams being reassembled at once; past it the oldest is dropped.
    pub max_fragment_datagrams: usize,
    /// Bytes held across all datagrams being reassembled.
    pub max_fragment_bytes: usize,
    /// A datagram whose first fragment is older than this (by frame time) is dropped,
    /// as Linux does after `ipfrag_time` (30 s).
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

/// IPv6 extension headers walked before TCP. Real packets carry one or two; a longer
/// chain is counted (`ext_chain_too_long`) rather than walked without end.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Tunnels opened one inside the other. An overlay packet is one (VXLAN between nodes),
/// an overlay carried over a GRE or ERSPAN mirror two; deeper nesting is not a network
/// anyone runs, and refusing it (counted `tunnels_too_deep`) bounds the walk.
pub const MAX_TUNNEL_DEPTH: u8 = 2;
/// IANA ports of the UDP tunnels decapsulated.
pub const VXLAN_PORT: u16 = 4789;
pub const GENEVE_PORT: u16 = 6081;

/// What the decoder has seen. Every frame counts in exactly one of `tcp_segments`,
/// `not_ip`, `not_tcp`, `truncated`, `malformed`, `unknown_link`, `ext_chain_too_long`,
/// `tunnels_too_deep`, `ipv4_fragments` and `ipv6_fragments` (`tunnelled` counts again
/// those whose TCP segment or fragment was found inside a tunnel); a completed datagram (`fragments_reassembled`)
/// then counts once more, as a TCP segment, `not_tcp`, `ext_chain_too_long` or an error.
/// So `frames + fragments_reassembled` is their sum.
///
/// Every fragment held ends in one of: a reassembled datagram, `fragments_timed_out`,
/// `fragments_overlapping`, `fragments_dropped`, `fragment_duplicates`, or still pending.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
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
    /// IPv6 packets whose extension header chain is longer than `MAX_EXTENSION_HEADERS`.
    pub ext_chain_too_long: u64,
    /// Frames whose TCP segment (or fragment) came out of a VXLAN, Geneve or GRE tunnel.
    pub tunnelled: u64,
    /// Frames with tunnels nested deeper than `MAX_TUNNEL_DEPTH`.
    pub tunnels_too_deep: u64,
    /// IPv4 fragments of TCP datagrams.
    pub ipv4_fragments: u64,
    /// IPv6 fragments that may carry TCP.
    pub ipv6_fragments: u64,
    /// Datagrams (IPv4 or IPv6) rebuilt from fragments.
    pub fragments_reassembled: u64,
    /// Fragments thrown away when their datagram was not whole after the timeout, or
    /// when the capture ended (`Decoder::flush`).
    pub fragments_timed_out: u64,
    /// Fragments thrown away because two fragments of their datagram overlapped with
    /// different bytes or only in part: the whole datagram goes, as in Linux (RFC 5722).
    pub fragments_overlapping: u64,
    /// Fragments thrown away for the caps, or because their datagram can never be whole
    /// (cut by the snaplen, past 64 KiB, size not a multiple of 8, two last fragments).
    pub fragments_dropped: u64,
    /// Fragments identical to bytes already held (seen twice): ignored, as Linux does.
    pub fragment_duplicates: u64,
}

impl DecodeStats {
    /// Adds another decoder's counts (several files, several runs).
    pub fn add(&mut self, other: &DecodeStats) {
        self.frames += other.frames;
        self.tcp_segments += other.tcp_segments;
        self.cut_segments += other.cut_segments;
        self.not_ip += other.not_ip;
        self.not_tcp += other.not_tcp;
        self.truncated += other.truncated;
        self.malformed += other.malformed;
        self.unknown_link += other.unknown_link;
        self.ext_chain_too_long += other.ext_chain_too_long;
        self.tunnelled += other.tunnelled;
        self.tunnels_too_deep += other.tunnels_too_deep;
        self.ipv4_fragments += other.ipv4_fragments;
        self.ipv6_fragments += other.ipv6_fragments;
        self.fragments_reassembled += other.fragments_reassembled;
        self.fragments_timed_out += other.fragments_timed_out;
        self.fragments_overlapping += other.fragments_overlapping;
        self.fragments_dropped += other.fragments_dropped;
        self.fragment_duplicates += other.fragment_duplicates;
    }

    /// Fragments that were held and then thrown away, for any reason.
    pub fn fragments_lost(&self) -> u64 {
        self.fragments_timed_out + self.fragments_overlapping + self.fragments_dropped
    }
}

/// One line naming what the IP layer did with fragments and extension headers, for the
/// summaries of `inspect`, `replay` and `run`.
impl fmt::Display for DecodeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ip: {} IPv4 and {} IPv6 fragments, {} datagrams reassembled, {} fragments \
             timed out, {} overlapping (datagram dropped), {} dropped (caps or invalid), \
             {} duplicates ignored; {} IPv6 extension chains too long; {} frames \
             decapsulated (VXLAN, Geneve, GRE), {} tunnels nested too deep",
            self.ipv4_fragments,
            self.ipv6_fragments,
            self.fragments_reassembled,
            self.fragments_timed_out,
            self.fragments_overlapping,
            self.fragments_dropped,
            self.fragment_duplicates,
            self.ext_chain_too_long,
            self.tunnelled,
            self.tunnels_too_deep,
        )
    }
}

/// Turns frames into TCP segments; holds IP fragments until their datagram is whole.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: DecoderLimits,
    stats: DecodeStats,
    fragments: FragmentTable,
}

/// Where a fragment lies in its datagram.
#[derive(Clone, Copy, Debug)]
struct FragmentInfo {
    /// IPv4 identification (16 bits) or IPv6 fragment header identification.
    id: u32,
    /// Byte offset of this fragment's data in the datagram's payload.
    offset: u32,
    more: bool,
    /// IPv6: the header that starts the fragmentable part (from the fragment header).
    /// IPv4: always TCP (other protocols are not held).
    next: u8,
}

/// An IP packet whose payload is (the start of) a TCP segment, or a fragment of one.
struct IpPacket<'a> {
    src: IpAddr,
    dst: IpAddr,
    /// Captured bytes of the IP payload (of a fragment: its part of the datagram).
    payload: &'a [u8],
    /// Payload bytes the IP header declares beyond those captured.
    missing: u32,
    fragment: Option<FragmentInfo>,
    /// Found inside a tunnel.
    tunnelled: bool,
}

/// Why a frame yields no TCP packet, without being an error.
enum Skip {
    NotIp,
    NotTcp,
    UnknownLink,
    ExtChainTooLong,
    TunnelTooDeep,
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

    /// Datagrams waiting for more fragments.
    pub fn fragments_pending(&self) -> usize {
        self.fragments.pending.len()
    }

    /// The capture ended: datagrams still waiting can never be whole; their fragments
    /// count as `fragments_timed_out`.
    pub fn flush(&mut self) {
        while !self.fragments.pending.is_empty() {
            self.fragments.remove(0, Lost::TimedOut, &mut self.stats);
        }
    }

    /// The TCP segment in `frame`, or `None` when the frame carries none (not IP, not
    /// TCP, unknown link) or is a fragment held until its datagram is complete.
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
                self.count_skip(skip);
                return Ok(None);
            }
            Err(e) => return Err(self.count_error(e)),
        };
        if packet.tunnelled {
            self.stats.tunnelled += 1;
        }
        let flow_of = |tcp: &TcpHeader| FlowKey {
            src: SocketAddr::new(packet.src, tcp.src_port),
            dst: SocketAddr::new(packet.dst, tcp.dst_port),
        };
        if let Some(info) = packet.fragment {
            let v6 = packet.src.is_ipv6();
            if v6 {
                self.stats.ipv6_fragments += 1;
            } else {
                self.stats.ipv4_fragments += 1;
            }
            let key = FragmentKey {
                src: packet.src,
                dst: packet.dst,
                id: info.id,
            };
            let fragment = Fragment {
                offset: info.offset,
                more: info.more,
                next: info.next,
                data: packet.payload,
                cut: packet.missing > 0,
                max_end: if v6 {
                    MAX_IPV6_FRAGMENTABLE
                } else {
                    MAX_IPV4_PAYLOAD
                },
            };
            let Some(next) =
                self.fragments
                    .add(key, fragment, frame.ts_nanos, &self.limits, &mut self.stats)
            else {
                return Ok(None);
            };
            self.stats.fragments_reassembled += 1;
            // IPv6: the fragmentable part may start with more extension headers.
            let at = match ipv6_chain(&self.fragments.done, next, 0, 0, true) {
                Ok(Ok(Chain::Tcp(at))) => at,
                // A tunnel's outer datagram is not held (only TCP's fragments are), so
                // a rebuilt one leading to UDP or GRE carries no TCP of a watched flow.
                Ok(Ok(Chain::Tunnel { .. })) => {
                    self.count_skip(Skip::NotTcp);
                    return Ok(None);
                }
                // `reassembled` refuses another fragment header; kept apart for the type.
                Ok(Ok(Chain::Fragment { .. })) => {
                    let e = DecodeError::Malformed {
                        layer: Layer::Ipv6Extension,
                        why: "fragment header inside a reassembled datagram",
                    };
                    return Err(self.count_error(e));
                }
                Ok(Err(skip)) => {
                    self.count_skip(skip);
                    return Ok(None);
                }
                Err(e) => return Err(self.count_error(e)),
            };
            let whole = &self.fragments.done[at..];
            let tcp = match parse_tcp(whole, whole.len()) {
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
                payload: &this.fragments.done[at + tcp.header_len..],
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

    fn count_skip(&mut self, skip: Skip) {
        let counter = match skip {
            Skip::NotIp => &mut self.stats.not_ip,
            Skip::NotTcp => &mut self.stats.not_tcp,
            Skip::UnknownLink => &mut self.stats.unknown_link,
            Skip::ExtChainTooLong => &mut self.stats.ext_chain_too_long,
            Skip::TunnelTooDeep => &mut self.stats.tunnels_too_deep,
        };
        *counter += 1;
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
/// Transparent Ethernet bridging: the tunnel carries a whole Ethernet frame.
const ETHERTYPE_TEB: u16 = 0x6558;
const ETHERTYPE_ERSPAN_II: u16 = 0x88BE;
const ETHERTYPE_ERSPAN_III: u16 = 0x22EB;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_GRE: u8 = 47;

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
            by_ethertype(be16(data, 12), &data[14..], cut, 0)
        }
        LinkType::LinuxSll => {
            if data.len() < 16 {
                return truncated(Layer::LinuxSll);
            }
            by_ethertype(be16(data, 14), &data[16..], cut, 0)
        }
        LinkType::LinuxSll2 => {
            if data.len() < 20 {
                return truncated(Layer::LinuxSll2);
            }
            by_ethertype(be16(data, 0), &data[20..], cut, 0)
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
                2 => ipv4(&data[4..], cut, 0),
                // AF_INET6 differs by OS: Linux 10, BSDs 24, FreeBSD 28, macOS 30.
                10 | 24 | 28 | 30 => ipv6(&data[4..], cut, 0),
                _ => Ok(Err(Skip::NotIp)),
            }
        }
        LinkType::Raw => match data.first().map(|b| b >> 4) {
            None => truncated(Layer::RawIp),
            Some(4) => ipv4(data, cut, 0),
            Some(6) => ipv6(data, cut, 0),
            Some(_) => malformed(Layer::RawIp, "IP version is neither 4 nor 6"),
        },
        LinkType::Ipv4 => ipv4(data, cut, 0),
        LinkType::Ipv6 => ipv6(data, cut, 0),
        LinkType::Nflog => nflog(data, cut),
        LinkType::Other(_) => Ok(Err(Skip::UnknownLink)),
    }
}

/// Follows VLAN tags (802.1Q, 802.1ad and the older QinQ types, stacked) to IP; `depth`
/// tunnels were opened to get here.
fn by_ethertype(mut ethertype: u16, mut rest: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
    while matches!(ethertype, 0x8100 | 0x88A8 | 0x9100 | 0x9200) {
        if rest.len() < 4 {
            return truncated(Layer::Vlan);
        }
        ethertype = be16(rest, 2);
        rest = &rest[4..];
    }
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(rest, cut, depth),
        ETHERTYPE_IPV6 => ipv6(rest, cut, depth),
        _ => Ok(Err(Skip::NotIp)),
    }
}

/// An Ethernet frame inside a tunnel.
fn inner_ethernet(frame: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
    if frame.len() < 14 {
        return truncated(Layer::Ethernet);
    }
    by_ethertype(be16(frame, 12), &frame[14..], cut, depth)
}

/// The packet inside a UDP or GRE tunnel (`proto`), whose header starts `payload`;
/// `depth` tunnels were opened around it. Other UDP is not TCP.
fn tunnel(proto: u8, payload: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
    if depth >= MAX_TUNNEL_DEPTH {
        return Ok(Err(Skip::TunnelTooDeep));
    }
    let depth = depth + 1;
    if proto == PROTO_UDP {
        if payload.len() < 8 {
            // Too short to be a tunnel we know: some other UDP, cut.
            return Ok(Err(Skip::NotTcp));
        }
        let inner = &payload[8..];
        return match be16(payload, 2) {
            // VXLAN (RFC 7348): flags with the I bit (a VNI follows), 3 reserved bytes,
            // VNI, reserved; then the Ethernet frame.
            VXLAN_PORT => {
                if inner.len() < 8 {
                    return truncated(Layer::Tunnel);
                }
                if inner[0] & 0x08 == 0 {
                    return malformed(Layer::Tunnel, "VXLAN header without the I flag");
                }
                inner_ethernet(&inner[8..], cut, depth)
            }
            // Geneve (RFC 8926): version 0, options length in 4-byte words, protocol.
            GENEVE_PORT => {
                if inner.len() < 8 {
                    return truncated(Layer::Tunnel);
                }
                if inner[0] >> 6 != 0 {
                    return malformed(Layer::Tunnel, "Geneve version is not 0");
                }
                let header = 8 + usize::from(inner[0] & 0x3F) * 4;
                if inner.len() < header {
                    return truncated(Layer::Tunnel);
                }
                match be16(inner, 2) {
                    ETHERTYPE_TEB => inner_ethernet(&inner[header..], cut, depth),
                    ethertype => by_ethertype(ethertype, &inner[header..], cut, depth),
                }
            }
            _ => Ok(Err(Skip::NotTcp)),
        };
    }
    gre(payload, cut, depth)
}

/// GRE (RFC 2784/2890): version 0 with optional checksum, key and sequence number.
/// Carries IP, an Ethernet frame (bridging, as NVGRE and OVS do), or an ERSPAN mirror.
fn gre(payload: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
    if payload.len() < 4 {
        return truncated(Layer::Tunnel);
    }
    let flags = be16(payload, 0);
    // Version 1 is PPTP's enhanced GRE, which carries PPP; routing (R) is obsolete.
    if flags & 0x0007 != 0 || flags & 0x4000 != 0 {
        return Ok(Err(Skip::NotIp));
    }
    let optional = [0x8000, 0x2000, 0x1000]
        .iter()
        .filter(|&&bit| flags & bit != 0)
        .count();
    let header = 4 + 4 * optional;
    if payload.len() < header {
        return truncated(Layer::Tunnel);
    }
    let inner = &payload[header..];
    match be16(payload, 2) {
        ETHERTYPE_TEB => inner_ethernet(inner, cut, depth),
        // ERSPAN type II: an 8-byte header before the mirrored frame.
        ETHERTYPE_ERSPAN_II => {
            if inner.len() < 8 {
                return truncated(Layer::Tunnel);
            }
            inner_ethernet(&inner[8..], cut, depth)
        }
        // ERSPAN type III: 12 bytes, 8 more when the O flag says a platform
        // sub-header follows.
        ETHERTYPE_ERSPAN_III => {
            if inner.len() < 12 {
                return truncated(Layer::Tunnel);
            }
            let len = if inner[11] & 0x01 != 0 { 20 } else { 12 };
            if inner.len() < len {
                return truncated(Layer::Tunnel);
            }
            inner_ethernet(&inner[len..], cut, depth)
        }
        ethertype => by_ethertype(ethertype, inner, cut, depth),
    }
}

/// NFLOG TLV types (linux/netfilter/nfnetlink_log.h).
const NFULA_PAYLOAD: u16 = 9;

/// LINKTYPE_NFLOG: a 4-byte header (address family, version, resource id), then TLVs
/// (length including the 4-byte TLV header, type; padded to 4 bytes). The packet is the
/// payload TLV: an IP packet from its header on. Length and type are in the capturing
/// host's byte order, which the file does not say; the order whose first length fits
/// the frame is taken.
fn nflog(data: &[u8], cut: bool) -> Decoded<'_> {
    if data.len() < 4 {
        return truncated(Layer::Nflog);
    }
    let family = data[0];
    let mut rest = &data[4..];
    let little = rest.len() >= 4 && {
        let le = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        (4..=rest.len()).contains(&le)
    };
    let read16 = |b: &[u8], at: usize| {
        let bytes = [b[at], b[at + 1]];
        if little {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        }
    };
    while rest.len() >= 4 {
        let len = usize::from(read16(rest, 0));
        let kind = read16(rest, 2) & 0x7FFF;
        if len < 4 {
            return malformed(Layer::Nflog, "TLV length below 4");
        }
        if kind == NFULA_PAYLOAD {
            // The payload is the last TLV; a snaplen may have cut it.
            let packet = &rest[4..len.min(rest.len())];
            return match family {
                2 => ipv4(packet, cut, 0),
                10 => ipv6(packet, cut, 0),
                _ => match packet.first().map(|b| b >> 4) {
                    Some(4) => ipv4(packet, cut, 0),
                    Some(6) => ipv6(packet, cut, 0),
                    _ => Ok(Err(Skip::NotIp)),
                },
            };
        }
        let padded = (len + 3) & !3;
        if padded > rest.len() {
            return truncated(Layer::Nflog);
        }
        rest = &rest[padded..];
    }
    // No payload TLV: logged without the packet (`--nflog-size 0`, or a cut frame).
    if cut {
        truncated(Layer::Nflog)
    } else {
        Ok(Err(Skip::NotIp))
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

fn ipv4(data: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
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
    let flags_offset = be16(data, 6);
    if data[9] != PROTO_TCP {
        // Tunnels are opened in whole packets only: their fragments are not held.
        if matches!(data[9], PROTO_UDP | PROTO_GRE) && flags_offset & 0x3FFF == 0 {
            return tunnel(data[9], &packet[header_len..], cut, depth);
        }
        return Ok(Err(Skip::NotTcp));
    }
    let more = flags_offset & 0x2000 != 0;
    let offset = u32::from(flags_offset & 0x1FFF) * 8;
    let fragment = (more || offset != 0).then_some(FragmentInfo {
        id: u32::from(be16(data, 4)),
        offset,
        more,
        next: PROTO_TCP,
    });
    let src = Ipv4Addr::new(data[12], data[13], data[14], data[15]);
    let dst = Ipv4Addr::new(data[16], data[17], data[18], data[19]);
    Ok(Ok(IpPacket {
        src: src.into(),
        dst: dst.into(),
        payload: &packet[header_len..],
        missing,
        fragment,
        tunnelled: depth > 0,
    }))
}

fn ipv6(data: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
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
    let (payload, fragment) = match ipv6_chain(packet, data[6], 40, missing, false)? {
        Ok(Chain::Tcp(at)) => (&packet[at..], None),
        Ok(Chain::Fragment { data_at, info }) => (&packet[data_at..], Some(info)),
        Ok(Chain::Tunnel { at, proto }) => return tunnel(proto, &packet[at..], cut, depth),
        Err(skip) => return Ok(Err(skip)),
    };
    let mut src = [0u8; 16];
    src.copy_from_slice(&data[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&data[24..40]);
    Ok(Ok(IpPacket {
        src: Ipv6Addr::from(src).into(),
        dst: Ipv6Addr::from(dst).into(),
        payload,
        missing,
        fragment,
        tunnelled: depth > 0,
    }))
}

/// Where an IPv6 extension header chain leads.
enum Chain {
    /// The TCP header starts here.
    Tcp(usize),
    /// A fragment of a larger datagram; its part of the datagram starts at `data_at`.
    Fragment { data_at: usize, info: FragmentInfo },
    /// A UDP or GRE header (`proto`) starts here: maybe a tunnel.
    Tunnel { at: usize, proto: u8 },
}

const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AUTH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;

/// Walks the extension headers of `packet` from `at`, where a header of type `next`
/// starts, to TCP (at most `MAX_EXTENSION_HEADERS`). `missing` bytes of the packet were
/// cut by the snaplen. `reassembled`: the walk is over a datagram rebuilt from
/// fragments, which cannot hold another fragment header.
fn ipv6_chain(
    packet: &[u8],
    mut next: u8,
    mut at: usize,
    missing: u32,
    reassembled: bool,
) -> Result<Result<Chain, Skip>, DecodeError> {
    for _ in 0..MAX_EXTENSION_HEADERS {
        let ext_len = match next {
            PROTO_TCP => return Ok(Ok(Chain::Tcp(at))),
            // Hop-by-hop, routing, destination options: length in 8-byte units after
            // the first 8.
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS => {
                if packet.len() < at + 2 {
                    return truncated(Layer::Ipv6Extension);
                }
                (usize::from(packet[at + 1]) + 1) * 8
            }
            EXT_FRAGMENT => {
                if packet.len() < at + 8 {
                    return truncated(Layer::Ipv6Extension);
                }
                let offset_more = be16(packet, at + 2);
                // An atomic fragment (offset 0, no more) is the whole packet.
                if offset_more & 0xFFF9 != 0 {
                    if reassembled {
                        return malformed(
                            Layer::Ipv6Extension,
                            "fragment header inside a reassembled datagram",
                        );
                    }
                    let info = FragmentInfo {
                        id: be32(packet, at + 4),
                        offset: u32::from(offset_more & 0xFFF8),
                        more: offset_more & 1 != 0,
                        next: packet[at],
                    };
                    // Only what may lead to TCP is held; the rest is counted here.
                    if !matches!(
                        info.next,
                        PROTO_TCP | EXT_ROUTING | EXT_DEST_OPTS | EXT_AUTH
                    ) {
                        return Ok(Err(Skip::NotTcp));
                    }
                    return Ok(Ok(Chain::Fragment {
                        data_at: at + 8,
                        info,
                    }));
                }
                8
            }
            // Authentication header: length in 4-byte units after the first 8.
            EXT_AUTH => {
                if packet.len() < at + 2 {
                    return truncated(Layer::Ipv6Extension);
                }
                (usize::from(packet[at + 1]) + 2) * 4
            }
            PROTO_UDP | PROTO_GRE => return Ok(Ok(Chain::Tunnel { at, proto: next })),
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
    if next == PROTO_TCP {
        return Ok(Ok(Chain::Tcp(at)));
    }
    Ok(Err(Skip::ExtChainTooLong))
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
    /// The address family tells IPv4 and IPv6 apart; IPv4 ids are widened.
    src: IpAddr,
    dst: IpAddr,
    id: u32,
}

struct Fragment<'a> {
    offset: u32,
    more: bool,
    /// See `FragmentInfo::next`.
    next: u8,
    data: &'a [u8],
    /// The capture cut this fragment: its datagram can never be whole.
    cut: bool,
    /// Largest end offset a fragment of this family may have.
    max_end: u32,
}

#[derive(Debug)]
struct PendingDatagram {
    key: FragmentKey,
    first_ts: u64,
    /// Bytes at their offsets; holes are zero until filled.
    data: Vec<u8>,
    /// Received byte ranges, sorted, adjacent ones merged into one.
    ranges: Vec<(u32, u32)>,
    /// Known once the last fragment (MF clear) arrives.
    total: Option<u32>,
    /// Known once the first fragment (offset 0) arrives.
    next: Option<u8>,
    fragments: u64,
}

/// Datagrams being reassembled (only those that may carry TCP are held).
/// Small and searched linearly: the cap on datagrams keeps it short.
#[derive(Debug, Default)]
struct FragmentTable {
    pending: Vec<PendingDatagram>,
    bytes: usize,
    /// The last datagram completed; the segment returned for it borrows this.
    done: Vec<u8>,
}

/// Largest IPv4 payload: total length 65535 minus a 20-byte header.
const MAX_IPV4_PAYLOAD: u32 = 65_515;
/// Largest IPv6 fragmentable part: the payload length field's 65535 (Linux refuses
/// fragments that end past it).
const MAX_IPV6_FRAGMENTABLE: u32 = 65_535;

/// Which counter the fragments of a datagram thrown away go to.
#[derive(Clone, Copy)]
enum Lost {
    TimedOut,
    Overlapping,
    Dropped,
}

fn count_lost(stats: &mut DecodeStats, why: Lost, n: u64) {
    *match why {
        Lost::TimedOut => &mut stats.fragments_timed_out,
        Lost::Overlapping => &mut stats.fragments_overlapping,
        Lost::Dropped => &mut stats.fragments_dropped,
    } += n;
}

impl FragmentTable {
    fn expire(&mut self, now: u64, limits: &DecoderLimits, stats: &mut DecodeStats) {
        let mut i = 0;
        while i < self.pending.len() {
            if now.saturating_sub(self.pending[i].first_ts) > limits.fragment_timeout_nanos {
                self.remove(i, Lost::TimedOut, stats);
            } else {
                i += 1;
            }
        }
    }

    fn remove(&mut self, index: usize, why: Lost, stats: &mut DecodeStats) {
        let gone = self.pending.swap_remove(index);
        self.bytes -= gone.data.len();
        count_lost(stats, why, gone.fragments);
    }

    /// Adds a fragment. When its datagram is complete, the datagram's payload is in
    /// `done` and the header type it starts with is returned.
    fn add(
        &mut self,
        key: FragmentKey,
        fragment: Fragment<'_>,
        ts: u64,
        limits: &DecoderLimits,
        stats: &mut DecodeStats,
    ) -> Option<u8> {
        let len = fragment.data.len() as u32;
        let start = fragment.offset;
        let end = start + len;
        let index = self.pending.iter().position(|p| p.key == key);
        // A fragment that can never fit a datagram spoils it.
        let bad = fragment.cut
            || end > fragment.max_end
            || (fragment.more && len % 8 != 0)
            || len == 0 && fragment.more;
        let index = match index {
            Some(i) => i,
            None if bad || end as usize > limits.max_fragment_bytes => {
                stats.fragments_dropped += 1;
                return None;
            }
            None => {
                self.make_room(end as usize, None, limits, stats);
                if self.pending.len() >= limits.max_fragment_datagrams
                    || self.bytes + end as usize > limits.max_fragment_bytes
                {
                    stats.fragments_dropped += 1;
                    return None;
                }
                self.pending.push(PendingDatagram {
                    key,
                    first_ts: ts,
                    data: Vec::new(),
                    ranges: Vec::new(),
                    total: None,
                    next: None,
                    fragments: 0,
                });
                self.pending.len() - 1
            }
        };
        let pending = &self.pending[index];
        let total_conflict = match (pending.total, fragment.more) {
            (Some(total), true) => end > total,
            (Some(total), false) => end != total,
            (None, false) => pending.ranges.iter().any(|&(_, e)| e > end),
            (None, true) => false,
        };
        if bad || total_conflict {
            stats.fragments_dropped += 1;
            self.remove(index, Lost::Dropped, stats);
            return None;
        }
        // As Linux (inet_frag_queue_insert): a fragment inside bytes already held is a
        // duplicate and ignored; one that overlaps them only in part spoils the whole
        // datagram (RFC 5722). Unlike Linux, a duplicate with other bytes spoils it too:
        // which copy the server kept depends on arrival order, and overlaps with other
        // bytes are a known way to show a monitor something the server never saw.
        if let Some(&(s, e)) = pending.ranges.iter().find(|&&(s, e)| start < e && s < end) {
            let inside = s <= start && end <= e;
            if inside && pending.data[start as usize..end as usize] == *fragment.data {
                stats.fragment_duplicates += 1;
                return None;
            }
            stats.fragments_overlapping += 1;
            self.remove(index, Lost::Overlapping, stats);
            return None;
        }
        let grow = (end as usize).saturating_sub(pending.data.len());
        if self.bytes + grow > limits.max_fragment_bytes {
            self.make_room(grow, Some(key), limits, stats);
        }
        let Some(index) = self.pending.iter().position(|p| p.key == key) else {
            stats.fragments_dropped += 1;
            return None;
        };
        if self.bytes + grow > limits.max_fragment_bytes {
            stats.fragments_dropped += 1;
            self.remove(index, Lost::Dropped, stats);
            return None;
        }
        self.bytes += grow;
        let pending = &mut self.pending[index];
        pending.fragments += 1;
        if pending.data.len() < end as usize {
            pending.data.resize(end as usize, 0);
        }
        pending.data[start as usize..end as usize].copy_from_slice(fragment.data);
        if start == 0 {
            pending.next = Some(fragment.next);
        }
        if !fragment.more {
            pending.total = Some(end);
        }
        insert_range(&mut pending.ranges, start, end);
        let (Some(total), Some(next)) = (pending.total, pending.next) else {
            return None;
        };
        if pending.ranges != [(0, total)] {
            return None;
        }
        let whole = self.pending.swap_remove(index);
        self.bytes -= whole.data.len();
        self.done = whole.data;
        Some(next)
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
                Some(i) => self.remove(i, Lost::Dropped, stats),
                None => break,
            }
        }
    }
}

/// Adds `start..end` (overlapping none) to sorted `ranges`, merging it with neighbours
/// it touches, so that a whole datagram is one range.
fn insert_range(ranges: &mut Vec<(u32, u32)>, start: u32, end: u32) {
    let at = ranges.partition_point(|&(s, _)| s < start);
    ranges.insert(at, (start, end));
    if at + 1 < ranges.len() && ranges[at + 1].0 == end {
        ranges[at].1 = ranges[at + 1].1;
        ranges.remove(at + 1);
    }
    if at > 0 && ranges[at - 1].1 == start {
        ranges[at - 1].1 = ranges[at].1;
        ranges.remove(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds frames byte by byte, the way the wire has them.
    mod build {
        pub fn tcp(
            sport: u16,
            dport: u16,
            seq: u32,
            flags: u8,
            opts: &[u8],
            data: &[u8],
        ) -> Vec<u8> {
            assert_eq!(opts.len() % 4, 0);
            let mut out = Vec::new();
            out.extend_from_slice(&sport.to_be_bytes());
            out.extend_from_slice(&dport.to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&0x0102_0304u32.to_be_bytes());
            out.push((((20 + opts.len()) / 4) as u8) << 4);
            out.push(flags);
            out.extend_from_slice(&[0xFF, 0xFF, 0, 0, 0, 0]);
            out.extend_from_slice(opts);
            out.extend_from_slice(data);
            out
        }

        pub fn ipv4_with(
            proto: u8,
            id: u16,
            flags_offset: u16,
            opts: &[u8],
            total: Option<u16>,
            payload: &[u8],
        ) -> Vec<u8> {
            assert_eq!(opts.len() % 4, 0);
            let header_len = 20 + opts.len();
            let total = total.unwrap_or((header_len + payload.len()) as u16);
            let mut out = vec![0x40 | (header_len / 4) as u8, 0];
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&flags_offset.to_be_bytes());
            out.extend_from_slice(&[64, proto, 0, 0]);
            out.extend_from_slice(&[10, 0, 0, 1]);
            out.extend_from_slice(&[10, 0, 0, 2]);
            out.extend_from_slice(opts);
            out.extend_from_slice(payload);
            out
        }

        pub fn ipv4(payload: &[u8]) -> Vec<u8> {
            ipv4_with(6, 7, 0x4000, &[], None, payload)
        }

        pub fn ipv6_with(next: u8, payload_len: Option<u16>, payload: &[u8]) -> Vec<u8> {
            let mut out = vec![0x60, 0, 0, 0];
            out.extend_from_slice(&payload_len.unwrap_or(payload.len() as u16).to_be_bytes());
            out.extend_from_slice(&[next, 64]);
            out.extend_from_slice(&super::V6_SRC.octets());
            out.extend_from_slice(&super::V6_DST.octets());
            out.extend_from_slice(payload);
            out
        }

        pub fn ipv6(payload: &[u8]) -> Vec<u8> {
            ipv6_with(6, None, payload)
        }

        /// Ethernet II with the given VLAN tag protocol ids, outermost first.
        pub fn ethernet(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
            let mut out = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
            for (i, tpid) in tags.iter().enumerate() {
                out.extend_from_slice(&tpid.to_be_bytes());
                out.extend_from_slice(&(100 + i as u16).to_be_bytes());
            }
            out.extend_from_slice(&ethertype.to_be_bytes());
            out.extend_from_slice(payload);
            out
        }

        pub fn sll(protocol: u16, payload: &[u8]) -> Vec<u8> {
            let mut out = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
            out.extend_from_slice(&protocol.to_be_bytes());
            out.extend_from_slice(payload);
            out
        }

        pub fn sll2(protocol: u16, payload: &[u8]) -> Vec<u8> {
            let mut out = protocol.to_be_bytes().to_vec();
            out.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            out.extend_from_slice(payload);
            out
        }

        pub fn prefixed(prefix: [u8; 4], payload: &[u8]) -> Vec<u8> {
            let mut out = prefix.to_vec();
            out.extend_from_slice(payload);
            out
        }
    }

    const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    const PSH_ACK: u8 = TcpFlags::PSH | TcpFlags::ACK;

    fn frame(link: LinkType, data: &[u8]) -> Frame<'_> {
        Frame {
            ts_nanos: 5,
            link,
            data,
            orig_len: data.len() as u32,
        }
    }

    fn request() -> Vec<u8> {
        build::tcp(40000, 80, 1000, PSH_ACK, &[], b"GET / HTTP/1.1\r\n\r\n")
    }

    /// UDP to `dport` carrying `payload` (checksum zero, as offloads leave it).
    fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = 50000u16.to_be_bytes().to_vec();
        out.extend_from_slice(&dport.to_be_bytes());
        out.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(payload);
        out
    }

    /// `inner` (an Ethernet frame) in VXLAN over IPv4 over Ethernet.
    fn vxlan(flags: u8, inner: &[u8]) -> Vec<u8> {
        let mut header = vec![flags, 0, 0, 0, 0, 0, 7, 0];
        header.extend_from_slice(inner);
        build::ethernet(
            &[],
            0x0800,
            &build::ipv4_with(17, 1, 0x4000, &[], None, &udp(VXLAN_PORT, &header)),
        )
    }

    fn decode_tunnelled(data: &[u8]) -> (Result<Option<FlowKey>, DecodeError>, DecodeStats) {
        let mut d = Decoder::default();
        let got = d
            .decode(&frame(LinkType::Ethernet, data))
            .map(|seg| seg.map(|s| s.flow));
        (got, d.stats().clone())
    }

    #[test]
    fn tunnels_open_to_the_inner_flow_and_refuse_what_is_not_theirs() {
        let inner = build::ethernet(&[], 0x0800, &build::ipv4(&request()));
        let (got, stats) = decode_tunnelled(&vxlan(0x08, &inner));
        assert_eq!(got, Ok(Some(v4_flow())));
        assert_eq!((stats.tunnelled, stats.tcp_segments), (1, 1));
        // No I flag: not a VXLAN header we can trust.
        let (got, _) = decode_tunnelled(&vxlan(0x00, &inner));
        assert!(
            matches!(
                got,
                Err(DecodeError::Malformed {
                    layer: Layer::Tunnel,
                    ..
                })
            ),
            "{got:?}"
        );
        // Cut inside the VXLAN header.
        let cut = build::ethernet(
            &[],
            0x0800,
            &build::ipv4_with(17, 1, 0x4000, &[], None, &udp(VXLAN_PORT, &[0x08, 0, 0])),
        );
        let (got, _) = decode_tunnelled(&cut);
        assert_eq!(
            got,
            Err(DecodeError::Truncated {
                layer: Layer::Tunnel
            })
        );
        // Other UDP is just not TCP.
        let dns = build::ethernet(
            &[],
            0x0800,
            &build::ipv4_with(17, 1, 0x4000, &[], None, &udp(53, &[0; 12])),
        );
        let (got, stats) = decode_tunnelled(&dns);
        assert_eq!((got, stats.not_tcp), (Ok(None), 1));
        // GRE version 1 (PPTP) carries PPP, not IP.
        let pptp = build::ethernet(
            &[],
            0x0800,
            &build::ipv4_with(
                47,
                1,
                0x4000,
                &[],
                None,
                &[0x30, 0x01, 0x88, 0x0B, 0, 0, 0, 0],
            ),
        );
        let (got, stats) = decode_tunnelled(&pptp);
        assert_eq!((got, stats.not_ip), (Ok(None), 1));
        // A fragment of a tunnel packet is not held.
        let fragment = build::ethernet(
            &[],
            0x0800,
            &build::ipv4_with(17, 1, 0x2000, &[], None, &udp(VXLAN_PORT, &[0x08; 8])),
        );
        let (got, stats) = decode_tunnelled(&fragment);
        assert_eq!((got, stats.not_tcp, stats.tunnelled), (Ok(None), 1, 0));
    }

    #[test]
    fn tunnels_nest_at_most_max_tunnel_depth() {
        let mut frame = build::ethernet(&[], 0x0800, &build::ipv4(&request()));
        for depth in 1..=MAX_TUNNEL_DEPTH + 1 {
            frame = vxlan(0x08, &frame);
            let (got, stats) = decode_tunnelled(&frame);
            if depth <= MAX_TUNNEL_DEPTH {
                assert_eq!(got, Ok(Some(v4_flow())), "depth {depth}");
            } else {
                assert_eq!(
                    (got, stats.tunnels_too_deep),
                    (Ok(None), 1),
                    "depth {depth}"
                );
            }
        }
    }

    #[test]
    fn nflog_without_a_payload_or_with_a_bad_tlv_is_counted() {
        let tlv = |len: u16, kind: u16, value: &[u8]| {
            let mut out = len.to_le_bytes().to_vec();
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(value);
            out
        };
        let mut logged = vec![2, 0, 0, 5];
        logged.extend(tlv(8, 1, &[8, 0, 3, 0]));
        let packet = build::ipv4(&request());
        logged.extend(tlv(4 + packet.len() as u16, 9, &packet));
        let mut d = Decoder::default();
        let got = d
            .decode(&frame(LinkType::Nflog, &logged))
            .map(|s| s.map(|s| s.flow));
        assert_eq!(got, Ok(Some(v4_flow())));
        // Logged without the packet.
        let mut header_only = vec![2, 0, 0, 5];
        header_only.extend(tlv(8, 1, &[8, 0, 3, 0]));
        let got = d
            .decode(&frame(LinkType::Nflog, &header_only))
            .map(|s| s.is_some());
        assert_eq!(got, Ok(false));
        // A TLV shorter than its own header.
        let mut bad = vec![2, 0, 0, 5];
        bad.extend(tlv(0, 1, &[0, 0]));
        let got = d.decode(&frame(LinkType::Nflog, &bad)).map(|s| s.is_some());
        assert!(
            matches!(
                got,
                Err(DecodeError::Malformed {
                    layer: Layer::Nflog,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    fn v4_flow() -> FlowKey {
        FlowKey {
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:80".parse().unwrap(),
        }
    }

    fn v6_flow() -> FlowKey {
        FlowKey {
            src: SocketAddr::new(V6_SRC.into(), 40000),
            dst: SocketAddr::new(V6_DST.into(), 80),
        }
    }

    /// Decodes one frame with a fresh decoder; returns (flow, payload) or the error.
    fn decode_one(link: LinkType, data: &[u8]) -> Result<Option<(FlowKey, Vec<u8>)>, DecodeError> {
        let mut decoder = Decoder::default();
        let seg = decoder.decode(&frame(link, data))?;
        Ok(seg.map(|s| (s.flow, s.payload.to_vec())))
    }

    fn stats_of(link: LinkType, data: &[u8]) -> DecodeStats {
        let mut decoder = Decoder::default();
        let _ = decoder.decode(&frame(link, data));
        decoder.stats().clone()
    }

    #[test]
    fn ethernet_ipv4_tcp_fields() {
        let data = build::ethernet(&[], 0x0800, &build::ipv4(&request()));
        let mut decoder = Decoder::default();
        let seg = decoder
            .decode(&frame(LinkType::Ethernet, &data))
            .unwrap()
            .unwrap();
        assert_eq!(seg.flow, v4_flow());
        assert_eq!(
            (seg.seq, seg.ack, seg.flags),
            (1000, 0x0102_0304, TcpFlags(PSH_ACK))
        );
        assert_eq!(seg.payload, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!((seg.missing, seg.ts_nanos), (0, 5));
        assert_eq!(decoder.stats().tcp_segments, 1);
    }

    #[test]
    fn ethernet_padding_is_trimmed() {
        let syn = build::tcp(40000, 80, 1, TcpFlags::SYN, &[], &[]);
        let mut data = build::ethernet(&[], 0x0800, &build::ipv4(&syn));
        assert_eq!(data.len(), 54);
        data.resize(60, 0xEE);
        let mut decoder = Decoder::default();
        let seg = decoder
            .decode(&frame(LinkType::Ethernet, &data))
            .unwrap()
            .unwrap();
        assert!(seg.payload.is_empty());
        assert!(seg.flags.syn());
        let data = build::ethernet(&[], 0x86DD, &build::ipv6(&syn));
        let mut padded = data.clone();
        padded.extend_from_slice(&[0xEE; 8]);
        assert_eq!(
            decode_one(LinkType::Ethernet, &padded).unwrap().unwrap().1,
            b""
        );
    }

    #[test]
    fn vlan_and_qinq_tags() {
        let ip = build::ipv4(&request());
        for tags in [
            &[0x8100][..],
            &[0x88A8, 0x8100],
            &[0x9100, 0x9100, 0x8100],
            &[0x9200],
        ] {
            let data = build::ethernet(tags, 0x0800, &ip);
            let (flow, payload) = decode_one(LinkType::Ethernet, &data).unwrap().unwrap();
            assert_eq!(flow, v4_flow(), "{tags:x?}");
            assert_eq!(payload, b"GET / HTTP/1.1\r\n\r\n", "{tags:x?}");
        }
        let data = build::ethernet(&[0x8100], 0x86DD, &build::ipv6(&request()));
        assert_eq!(
            decode_one(LinkType::Ethernet, &data).unwrap().unwrap().0,
            v6_flow()
        );
    }

    #[test]
    fn cooked_captures() {
        let v4 = build::ipv4(&request());
        let v6 = build::ipv6(&request());
        let cases = [
            (LinkType::LinuxSll, build::sll(0x0800, &v4), v4_flow()),
            (LinkType::LinuxSll, build::sll(0x86DD, &v6), v6_flow()),
            (LinkType::LinuxSll2, build::sll2(0x0800, &v4), v4_flow()),
            (LinkType::LinuxSll2, build::sll2(0x86DD, &v6), v6_flow()),
            // Linux keeps a VLAN tag in the payload when it was not offloaded.
            (
                LinkType::LinuxSll,
                build::sll(0x8100, &[&[0, 5, 8, 0][..], &v4].concat()),
                v4_flow(),
            ),
        ];
        for (link, data, flow) in cases {
            assert_eq!(
                decode_one(link, &data).unwrap().unwrap().0,
                flow,
                "{link:?}"
            );
        }
        assert_eq!(
            stats_of(LinkType::LinuxSll2, &build::sll2(0x0806, &[0; 28])).not_ip,
            1
        );
    }

    #[test]
    fn loopback_address_families_in_both_byte_orders() {
        let v4 = build::ipv4(&request());
        let v6 = build::ipv6(&request());
        for af in [2u32] {
            for prefix in [af.to_le_bytes(), af.to_be_bytes()] {
                let data = build::prefixed(prefix, &v4);
                assert_eq!(
                    decode_one(LinkType::Null, &data).unwrap().unwrap().0,
                    v4_flow()
                );
            }
        }
        for af in [10u32, 24, 28, 30] {
            for prefix in [af.to_le_bytes(), af.to_be_bytes()] {
                let data = build::prefixed(prefix, &v6);
                assert_eq!(
                    decode_one(LinkType::Null, &data).unwrap().unwrap().0,
                    v6_flow()
                );
            }
            let data = build::prefixed(af.to_be_bytes(), &v6);
            assert_eq!(
                decode_one(LinkType::Loop, &data).unwrap().unwrap().0,
                v6_flow()
            );
        }
        let data = build::prefixed(2u32.to_be_bytes(), &v4);
        assert_eq!(
            decode_one(LinkType::Loop, &data).unwrap().unwrap().0,
            v4_flow()
        );
        // Loop is network order only: a little-endian 2 is no known family.
        let data = build::prefixed(2u32.to_le_bytes(), &v4);
        assert_eq!(decode_one(LinkType::Loop, &data), Ok(None));
        let unknown = build::prefixed(7u32.to_le_bytes(), &v4);
        assert_eq!(stats_of(LinkType::Null, &unknown).not_ip, 1);
    }

    #[test]
    fn raw_ip_links() {
        let v4 = build::ipv4(&request());
        let v6 = build::ipv6(&request());
        assert_eq!(
            decode_one(LinkType::Raw, &v4).unwrap().unwrap().0,
            v4_flow()
        );
        assert_eq!(
            decode_one(LinkType::Raw, &v6).unwrap().unwrap().0,
            v6_flow()
        );
        assert_eq!(
            decode_one(LinkType::Ipv4, &v4).unwrap().unwrap().0,
            v4_flow()
        );
        assert_eq!(
            decode_one(LinkType::Ipv6, &v6).unwrap().unwrap().0,
            v6_flow()
        );
        assert_eq!(
            decode_one(LinkType::Raw, &[0x50; 40]),
            Err(DecodeError::Malformed {
                layer: Layer::RawIp,
                why: "IP version is neither 4 nor 6"
            })
        );
        assert_eq!(
            decode_one(LinkType::Raw, &[]),
            Err(DecodeError::Truncated {
                layer: Layer::RawIp
            })
        );
        assert_eq!(
            decode_one(LinkType::Ipv4, &v6),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv4,
                why: "version is not 4"
            })
        );
        assert_eq!(
            decode_one(LinkType::Ipv6, &v4[..]).map(|_| ()),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv6,
                why: "version is not 6"
            })
        );
    }

    #[test]
    fn unknown_link_non_ip_and_non_tcp_are_counted() {
        let stats = stats_of(LinkType::Other(147), &[1, 2, 3]);
        assert_eq!((stats.frames, stats.unknown_link), (1, 1));
        let arp = build::ethernet(&[], 0x0806, &[0; 28]);
        assert_eq!(stats_of(LinkType::Ethernet, &arp).not_ip, 1);
        // An 802.3 length field is not an ethertype.
        let llc = build::ethernet(&[], 46, &[0; 46]);
        assert_eq!(stats_of(LinkType::Ethernet, &llc).not_ip, 1);
        let udp = build::ipv4_with(17, 1, 0, &[], None, &[0; 8]);
        assert_eq!(stats_of(LinkType::Raw, &udp).not_tcp, 1);
        // UDP fragments are not held: only TCP is reassembled.
        let udp_frag = build::ipv4_with(17, 1, 0x2000, &[], None, &[0; 8]);
        let stats = stats_of(LinkType::Raw, &udp_frag);
        assert_eq!((stats.not_tcp, stats.ipv4_fragments), (1, 0));
        for next in [50u8, 59, 17, 58] {
            let data = build::ipv6_with(next, None, &[0; 16]);
            assert_eq!(
                stats_of(LinkType::Ipv6, &data).not_tcp,
                1,
                "next header {next}"
            );
        }
    }

    #[test]
    fn ip_and_tcp_options_are_skipped() {
        let tcp = build::tcp(
            40000,
            80,
            9,
            PSH_ACK,
            &[2, 4, 5, 0xB4, 1, 1, 4, 2, 1, 1, 1, 0],
            b"xyz",
        );
        let ip = build::ipv4_with(6, 1, 0, &[0x94, 4, 0, 0, 1, 1, 1, 0], None, &tcp);
        assert_eq!(
            decode_one(LinkType::Raw, &ip).unwrap().unwrap(),
            (v4_flow(), b"xyz".to_vec())
        );
    }

    #[test]
    fn zero_length_fields_mean_the_captured_length() {
        // TSO/GSO: the capturing host saw the packet before the NIC split it.
        let ip = build::ipv4_with(6, 1, 0, &[], Some(0), &request());
        let (_, payload) = decode_one(LinkType::Raw, &ip).unwrap().unwrap();
        assert_eq!(payload, b"GET / HTTP/1.1\r\n\r\n");
        let ip = build::ipv6_with(6, Some(0), &request());
        let (_, payload) = decode_one(LinkType::Raw, &ip).unwrap().unwrap();
        assert_eq!(payload, b"GET / HTTP/1.1\r\n\r\n");
    }

    /// IPv6 extension header: next header, length byte, padding to `len` bytes.
    fn ext(next: u8, len_field: u8, total: usize) -> Vec<u8> {
        let mut out = vec![next, len_field];
        out.resize(total, 0);
        out
    }

    #[test]
    fn ipv6_extension_headers() {
        let mut chain = ext(43, 0, 8); // hop-by-hop -> routing
        chain.extend(ext(60, 1, 16)); // routing -> destination options
        chain.extend(ext(51, 0, 8)); // destination options -> AH
        chain.extend(ext(44, 2, 16)); // AH (len 2: 16 bytes) -> fragment
        chain.extend([6, 0, 0, 0, 0, 0, 0, 1]); // atomic fragment -> TCP
        chain.extend(request());
        let data = build::ipv6_with(0, None, &chain);
        let (flow, payload) = decode_one(LinkType::Ipv6, &data).unwrap().unwrap();
        assert_eq!(
            (flow, payload),
            (v6_flow(), b"GET / HTTP/1.1\r\n\r\n".to_vec())
        );

        // A real fragment alone: counted and held for the rest of its datagram.
        for offset_more in [[0u8, 1], [0, 0x10]] {
            let mut frag = vec![6, 0, offset_more[0], offset_more[1], 0, 0, 0, 9];
            frag.extend(request());
            let stats = stats_of(LinkType::Ipv6, &build::ipv6_with(44, None, &frag));
            assert_eq!((stats.ipv6_fragments, stats.tcp_segments), (1, 0));
        }
        // A fragment of UDP is not held.
        let frag = [17, 0, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut decoder = Decoder::default();
        let _ = decoder.decode(&frame(LinkType::Ipv6, &build::ipv6_with(44, None, &frag)));
        assert_eq!(
            (decoder.stats().not_tcp, decoder.fragments_pending()),
            (1, 0)
        );

        // Extension header longer than the packet it sits in.
        let data = build::ipv6_with(60, None, &ext(6, 4, 8));
        assert_eq!(
            decode_one(LinkType::Ipv6, &data),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv6Extension,
                why: "extension header runs past the packet"
            })
        );
    }

    #[test]
    fn snaplen_cut_payload_reports_missing_bytes() {
        let body = vec![b'a'; 1000];
        let tcp = build::tcp(40000, 80, 1, PSH_ACK, &[], &body);
        for full in [
            build::ethernet(&[], 0x0800, &build::ipv4(&tcp)),
            build::ethernet(&[0x8100], 0x86DD, &build::ipv6(&tcp)),
        ] {
            let captured = &full[..full.len() - 700];
            let mut decoder = Decoder::default();
            let cut = Frame {
                ts_nanos: 1,
                link: LinkType::Ethernet,
                data: captured,
                orig_len: full.len() as u32,
            };
            let seg = decoder.decode(&cut).unwrap().unwrap();
            assert_eq!((seg.payload.len(), seg.missing), (300, 700));
            assert_eq!(decoder.stats().cut_segments, 1);
        }
    }

    #[test]
    fn length_beyond_an_uncut_frame_is_malformed() {
        let ip = build::ipv4_with(6, 1, 0, &[], Some(1400), &request());
        assert_eq!(
            decode_one(LinkType::Raw, &ip),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv4,
                why: "length field exceeds the frame"
            })
        );
        let ip = build::ipv6_with(6, Some(1400), &request());
        assert_eq!(
            decode_one(LinkType::Raw, &ip),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv6,
                why: "length field exceeds the frame"
            })
        );
    }

    #[test]
    fn malformed_headers() {
        let mut ip = build::ipv4(&request());
        ip[0] = 0x44;
        assert_eq!(
            decode_one(LinkType::Raw, &ip),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv4,
                why: "header length below 20 bytes"
            })
        );
        let ip = build::ipv4_with(6, 1, 0, &[], Some(16), &request());
        assert_eq!(
            decode_one(LinkType::Raw, &ip),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv4,
                why: "total length shorter than the header"
            })
        );
        let mut tcp = request();
        tcp[12] = 0x40;
        assert_eq!(
            decode_one(LinkType::Raw, &build::ipv4(&tcp)),
            Err(DecodeError::Malformed {
                layer: Layer::Tcp,
                why: "data offset below 5"
            })
        );
        tcp[12] = 0xF0;
        assert_eq!(
            decode_one(LinkType::Raw, &build::ipv4(&tcp[..30])),
            Err(DecodeError::Malformed {
                layer: Layer::Tcp,
                why: "data offset past the end of the segment"
            })
        );
        assert_eq!(
            decode_one(LinkType::Raw, &build::ipv4(&tcp[..12])),
            Err(DecodeError::Malformed {
                layer: Layer::Tcp,
                why: "segment shorter than a TCP header"
            })
        );
        let mut decoder = Decoder::default();
        let _ = decoder.decode(&frame(LinkType::Raw, &build::ipv4(&tcp[..12])));
        assert_eq!(decoder.stats().malformed, 1);
    }

    /// Cuts `full` (as a snaplen would) at every length; `headers` lists, outermost first,
    /// each layer and where its header ends.
    fn check_every_cut(link: LinkType, full: &[u8], headers: &[(Layer, usize)], payload: &[u8]) {
        let mut decoder = Decoder::default();
        for len in 0..=full.len() {
            let cut = Frame {
                ts_nanos: 0,
                link,
                data: &full[..len],
                orig_len: full.len() as u32,
            };
            let result = decoder
                .decode(&cut)
                .map(|s| s.map(|s| (s.payload.to_vec(), s.missing)));
            match headers.iter().find(|(_, end)| len < *end) {
                Some(&(layer, _)) => {
                    assert_eq!(
                        result,
                        Err(DecodeError::Truncated { layer }),
                        "cut at {len}"
                    )
                }
                None => {
                    let got = len - (full.len() - payload.len());
                    let want = (payload[..got].to_vec(), (payload.len() - got) as u32);
                    assert_eq!(result, Ok(Some(want)), "cut at {len}");
                }
            }
        }
        let header_end = headers.last().unwrap().1;
        let stats = decoder.stats();
        assert_eq!(stats.truncated, header_end as u64);
        assert_eq!(stats.tcp_segments, (full.len() - header_end + 1) as u64);
        assert_eq!(stats.cut_segments, (full.len() - header_end) as u64);
    }

    #[test]
    fn truncated_at_every_length() {
        let data = b"POST /x HTTP/1.1\r\n";
        let tcp = build::tcp(40000, 80, 1, PSH_ACK, &[1, 1, 1, 0], data);
        let eth = build::ethernet(&[0x88A8, 0x8100], 0x0800, &build::ipv4(&tcp));
        let layers = [
            (Layer::Ethernet, 14),
            (Layer::Vlan, 18),
            (Layer::Vlan, 22),
            (Layer::Ipv4, 42),
            (Layer::Tcp, 66),
        ];
        check_every_cut(LinkType::Ethernet, &eth, &layers, data);

        let mut chain = ext(6, 0, 8);
        chain.extend(&tcp);
        let v6 = build::sll2(0x86DD, &build::ipv6_with(60, None, &chain));
        let layers = [
            (Layer::LinuxSll2, 20),
            (Layer::Ipv6, 60),
            (Layer::Ipv6Extension, 62),
            (Layer::Ipv6Extension, 68),
            (Layer::Tcp, 92),
        ];
        check_every_cut(LinkType::LinuxSll2, &v6, &layers, data);

        let null = build::prefixed(30u32.to_le_bytes(), &build::ipv6(&tcp));
        let layers = [(Layer::Loopback, 4), (Layer::Ipv6, 44), (Layer::Tcp, 68)];
        check_every_cut(LinkType::Null, &null, &layers, data);

        let sll = build::sll(0x0800, &build::ipv4(&tcp));
        let layers = [(Layer::LinuxSll, 16), (Layer::Ipv4, 36), (Layer::Tcp, 60)];
        check_every_cut(LinkType::LinuxSll, &sll, &layers, data);
    }

    /// The TCP segment `tcp` split into IPv4 fragments of `size` bytes (a multiple of 8).
    fn fragments(tcp: &[u8], id: u16, size: usize) -> Vec<Vec<u8>> {
        tcp.chunks(size)
            .enumerate()
            .map(|(i, chunk)| {
                let offset = (i * size / 8) as u16;
                let more = if (i + 1) * size < tcp.len() {
                    0x2000
                } else {
                    0
                };
                build::ipv4_with(6, id, more | offset, &[], None, chunk)
            })
            .collect()
    }

    fn feed(decoder: &mut Decoder, ts: u64, packet: &[u8]) -> Option<(FlowKey, Vec<u8>, u32)> {
        let frame = Frame {
            ts_nanos: ts,
            link: LinkType::Raw,
            data: packet,
            orig_len: packet.len() as u32,
        };
        decoder
            .decode(&frame)
            .unwrap()
            .map(|s| (s.flow, s.payload.to_vec(), s.seq))
    }

    #[test]
    fn ipv4_fragments_reassembled_out_of_order() {
        let body: Vec<u8> = (0..100u8).collect();
        let tcp = build::tcp(40000, 80, 77, PSH_ACK, &[], &body);
        let frags = fragments(&tcp, 42, 48);
        assert_eq!(frags.len(), 3);
        let mut decoder = Decoder::default();
        assert_eq!(feed(&mut decoder, 1, &frags[2]), None);
        assert_eq!(feed(&mut decoder, 2, &frags[0]), None);
        assert_eq!(decoder.fragments_pending(), 1);
        assert_eq!(
            feed(&mut decoder, 3, &frags[1]),
            Some((v4_flow(), body.clone(), 77))
        );
        let stats = decoder.stats();
        assert_eq!(
            (
                stats.ipv4_fragments,
                stats.fragments_reassembled,
                stats.tcp_segments
            ),
            (3, 1, 1)
        );
        assert_eq!(
            (stats.fragments_dropped, decoder.fragments_pending()),
            (0, 0)
        );
        assert!(decoder.fragments.bytes == 0);
    }

    #[test]
    fn interleaved_datagrams_reassemble_separately() {
        let a = build::tcp(40000, 80, 1, PSH_ACK, &[], &[b'a'; 60]);
        let b = build::tcp(40000, 80, 2, PSH_ACK, &[], &[b'b'; 60]);
        let (fa, fb) = (fragments(&a, 1, 40), fragments(&b, 2, 40));
        let mut decoder = Decoder::default();
        assert_eq!(feed(&mut decoder, 0, &fa[1]), None);
        assert_eq!(feed(&mut decoder, 0, &fb[0]), None);
        assert_eq!(feed(&mut decoder, 0, &fb[1]).unwrap().1, vec![b'b'; 60]);
        assert_eq!(feed(&mut decoder, 0, &fa[0]).unwrap().1, vec![b'a'; 60]);
    }

    #[test]
    fn overlapping_fragments_drop_the_datagram() {
        let tcp = build::tcp(40000, 80, 1, PSH_ACK, &[], &[7; 60]);
        let frags = fragments(&tcp, 9, 40);
        // Same offset as the first fragment, different bytes.
        let overlap = build::ipv4_with(6, 9, 0x2000, &[], None, &[0; 16]);
        let mut decoder = Decoder::default();
        assert_eq!(feed(&mut decoder, 0, &frags[0]), None);
        assert_eq!(feed(&mut decoder, 0, &overlap), None);
        assert_eq!(decoder.fragments_pending(), 0);
        assert_eq!(feed(&mut decoder, 0, &frags[1]), None);
        let stats = decoder.stats();
        assert_eq!(
            (stats.fragments_overlapping, stats.fragments_reassembled),
            (2, 0)
        );
        assert_eq!(decoder.fragments_pending(), 1);
    }

    #[test]
    fn flush_counts_what_is_still_waiting_as_timed_out() {
        let tcp = build::tcp(40000, 80, 1, PSH_ACK, &[], &[7; 60]);
        let frags = fragments(&tcp, 9, 40);
        let mut decoder = Decoder::default();
        assert_eq!(feed(&mut decoder, 0, &frags[1]), None);
        decoder.flush();
        assert_eq!(decoder.fragments_pending(), 0);
        assert_eq!(decoder.stats().fragments_timed_out, 1);
        assert!(fragments_add_up(decoder.stats(), 0, 0));
    }

    #[test]
    fn fragments_time_out_by_frame_time() {
        let tcp = build::tcp(40000, 80, 1, PSH_ACK, &[], &[7; 60]);
        let frags = fragments(&tcp, 9, 40);
        let mut decoder = Decoder::default();
        assert_eq!(feed(&mut decoder, 1_000, &frags[0]), None);
        assert_eq!(feed(&mut decoder, 31_000_000_000, &frags[1]), None);
        assert_eq!(decoder.stats().fragments_timed_out, 1);
        assert_eq!(decoder.fragments_pending(), 1);
        // Within the timeout a datagram completes.
        assert!(feed(&mut decoder, 32_000_000_000, &frags[0]).is_some());
    }

    #[test]
    fn fragment_caps_evict_the_oldest() {
        let limits = DecoderLimits {
            max_fragment_datagrams: 2,
            ..DecoderLimits::default()
        };
        let mut decoder = Decoder::new(limits);
        let tcp = build::tcp(40000, 80, 1, PSH_ACK, &[], &[7; 60]);
        let per_id: Vec<_> = (0..3).map(|id| fragments(&tcp, id, 40)).collect();
        for (ts, frags) in per_id.iter().enumerate() {
            assert_eq!(feed(&mut decoder, ts as u64, &frags[0]), None);
        }
        assert_eq!(decoder.fragments_pending(), 2);
        assert_eq!(decoder.stats().fragments_dropped, 1);
        // id 0 was evicted: its second half starts a datagram that cannot complete.
        assert_eq!(feed(&mut decoder, 5, &per_id[0][1]), None);
        assert!(feed(&mut decoder, 6, &per_id[2][1]).is_some());

        let limits = DecoderLimits {
            max_fragment_bytes: 100,
            ..DecoderLimits::default()
        };
        let mut decoder = Decoder::new(limits);
        let big = build::tcp(40000, 80, 1, PSH_ACK, &[], &[7; 200]);
        let frags = fragments(&big, 1, 64);
        assert_eq!(feed(&mut decoder, 0, &frags[0]), None);
        assert_eq!(feed(&mut decoder, 0, &frags[1]), None);
        assert_eq!(
            decoder.fragments_pending(),
            0,
            "128 bytes do not fit in 100"
        );
        assert_eq!(decoder.stats().fragments_dropped, 2);
        assert!(decoder.fragments.bytes <= 100);
    }

    #[test]
    fn bad_fragments_are_dropped() {
        let mut decoder = Decoder::default();
        // Not a multiple of 8 but more fragments follow.
        let odd = build::ipv4_with(6, 1, 0x2000, &[], None, &[0; 12]);
        // Ends past the largest datagram.
        let far = build::ipv4_with(6, 2, 0x1FFF, &[], None, &[0; 16]);
        // Cut by snaplen: the datagram can never be whole.
        let whole = build::ipv4_with(6, 3, 0x2000, &[], None, &[0; 32]);
        assert_eq!(feed(&mut decoder, 0, &odd), None);
        assert_eq!(feed(&mut decoder, 0, &far), None);
        let cut = Frame {
            ts_nanos: 0,
            link: LinkType::Raw,
            data: &whole[..40],
            orig_len: 52,
        };
        assert_eq!(decoder.decode(&cut).unwrap().map(|s| s.seq), None);
        assert_eq!(decoder.stats().fragments_dropped, 3);
        assert_eq!(decoder.fragments_pending(), 0);
    }

    /// Every frame lands in exactly one outcome; a completed datagram adds one more.
    fn outcomes_add_up(stats: &DecodeStats) -> bool {
        stats.frames + stats.fragments_reassembled
            == stats.tcp_segments
                + stats.not_ip
                + stats.not_tcp
                + stats.truncated
                + stats.malformed
                + stats.unknown_link
                + stats.ext_chain_too_long
                + stats.ipv6_fragments
                + stats.ipv4_fragments
    }

    /// Every fragment held ends in one outcome or is still pending (`held`: fragments
    /// in the datagrams not yet complete, `used`: in the datagrams completed).
    fn fragments_add_up(stats: &DecodeStats, held: u64, used: u64) -> bool {
        stats.ipv4_fragments + stats.ipv6_fragments
            == used + held + stats.fragments_lost() + stats.fragment_duplicates
    }

    /// `tcp` (the fragmentable part: TCP, perhaps behind destination options) split
    /// into IPv6 fragments of `size` bytes (a multiple of 8), each behind `unfrag` (the
    /// unfragmentable extension headers, whose last next-header field is the fragment
    /// header's 44).
    fn fragments_v6(unfrag: &[u8], first: u8, part: &[u8], id: u32, size: usize) -> Vec<Vec<u8>> {
        part.chunks(size)
            .enumerate()
            .map(|(i, chunk)| {
                let offset = (i * size) as u16;
                let more = u16::from((i + 1) * size < part.len());
                let mut payload = unfrag.to_vec();
                payload.push(first);
                payload.push(0);
                payload.extend_from_slice(&(offset | more).to_be_bytes());
                payload.extend_from_slice(&id.to_be_bytes());
                payload.extend_from_slice(chunk);
                let next = if unfrag.is_empty() { 44 } else { 0 };
                build::ipv6_with(next, None, &payload)
            })
            .collect()
    }

    fn feed_v6(decoder: &mut Decoder, ts: u64, packet: &[u8]) -> Option<(FlowKey, Vec<u8>)> {
        let frame = Frame {
            ts_nanos: ts,
            link: LinkType::Ipv6,
            data: packet,
            orig_len: packet.len() as u32,
        };
        decoder
            .decode(&frame)
            .unwrap()
            .map(|s| (s.flow, s.payload.to_vec()))
    }

    #[test]
    fn ipv6_fragments_behind_hop_by_hop_with_destination_options_reassemble() {
        let body: Vec<u8> = (0..200u8).collect();
        let tcp = build::tcp(40000, 80, 9, PSH_ACK, &[], &body);
        // Destination options (8 bytes) start the fragmentable part, then TCP.
        let mut part = ext(6, 0, 8);
        part.extend(&tcp);
        // Hop-by-hop in the unfragmentable part, pointing at the fragment header.
        let unfrag = ext(44, 0, 8);
        let frags = fragments_v6(&unfrag, 60, &part, 0xdead_beef, 64);
        assert_eq!(frags.len(), 4);
        let mut decoder = Decoder::default();
        for (ts, i) in [3, 1, 0].into_iter().enumerate() {
            assert_eq!(feed_v6(&mut decoder, ts as u64, &frags[i]), None);
        }
        assert_eq!(decoder.fragments_pending(), 1);
        assert_eq!(feed_v6(&mut decoder, 9, &frags[2]), Some((v6_flow(), body)));
        let stats = decoder.stats().clone();
        assert_eq!((stats.ipv6_fragments, stats.fragments_reassembled), (4, 1));
        assert_eq!(decoder.fragments_pending(), 0);
        assert!(outcomes_add_up(&stats));
        assert!(fragments_add_up(&stats, 0, 4));
    }

    #[test]
    fn ipv6_and_ipv4_fragments_with_the_same_id_stay_apart() {
        let tcp = build::tcp(40000, 80, 1, PSH_ACK, &[], &[b'6'; 60]);
        let v6 = fragments_v6(&[], 6, &tcp, 5, 40);
        let v4 = fragments(&build::tcp(40000, 80, 1, PSH_ACK, &[], &[b'4'; 60]), 5, 40);
        let mut decoder = Decoder::default();
        assert_eq!(feed_v6(&mut decoder, 0, &v6[0]), None);
        assert_eq!(feed(&mut decoder, 0, &v4[0]), None);
        assert_eq!(decoder.fragments_pending(), 2);
        assert_eq!(feed(&mut decoder, 0, &v4[1]).unwrap().1, vec![b'4'; 60]);
        assert_eq!(feed_v6(&mut decoder, 0, &v6[1]).unwrap().1, vec![b'6'; 60]);
    }

    #[test]
    fn duplicate_fragments_are_ignored_and_overlaps_drop_the_datagram() {
        let body: Vec<u8> = (0..120u8).collect();
        let tcp = build::tcp(40000, 80, 1, PSH_ACK, &[], &body);
        let frags = fragments(&tcp, 3, 48);
        assert_eq!(frags.len(), 3);
        // Seen twice (a capture on two points, a resend): ignored, the datagram completes.
        let mut decoder = Decoder::default();
        assert_eq!(feed(&mut decoder, 0, &frags[0]), None);
        assert_eq!(feed(&mut decoder, 0, &frags[0]), None);
        assert_eq!(feed(&mut decoder, 0, &frags[1]), None);
        assert_eq!(feed(&mut decoder, 0, &frags[2]).unwrap().1, body);
        assert_eq!(decoder.stats().fragment_duplicates, 1);
        assert!(fragments_add_up(decoder.stats(), 0, 3));

        // Inside bytes already held but other bytes: the whole datagram goes.
        let mut inside = tcp[48..64].to_vec();
        inside[3] ^= 0xFF;
        let inside = build::ipv4_with(6, 3, 0x2000 | 6, &[], None, &inside);
        // The same bytes, but reaching past what is held (partial overlap): as in Linux,
        // the whole datagram goes.
        let partial = build::ipv4_with(6, 3, 0x2000 | 4, &[], None, &tcp[32..64]);
        for spoiler in [inside, partial] {
            let mut decoder = Decoder::default();
            assert_eq!(feed(&mut decoder, 0, &frags[1]), None);
            assert_eq!(feed(&mut decoder, 0, &spoiler), None);
            assert_eq!(decoder.fragments_pending(), 0);
            // What comes later starts a datagram that lacks the middle.
            assert_eq!(feed(&mut decoder, 0, &frags[0]), None);
            assert_eq!(feed(&mut decoder, 0, &frags[2]), None);
            let stats = decoder.stats();
            assert_eq!(
                (stats.fragments_overlapping, stats.fragments_reassembled),
                (2, 0)
            );
            assert!(fragments_add_up(stats, 2, 0));
        }
    }

    #[test]
    fn long_extension_chains_are_counted_by_name() {
        let mut chain = Vec::new();
        for _ in 0..MAX_EXTENSION_HEADERS {
            chain.extend(ext(60, 0, 8));
        }
        let mut at_limit = chain.clone();
        // The last of MAX_EXTENSION_HEADERS headers points at TCP: decoded.
        let last = at_limit.len() - 8;
        at_limit[last] = 6;
        at_limit.extend(request());
        let data = build::ipv6_with(60, None, &at_limit);
        assert!(decode_one(LinkType::Ipv6, &data).unwrap().is_some());
        // One more: counted, not walked.
        chain.extend(ext(6, 0, 8));
        chain.extend(request());
        let stats = stats_of(LinkType::Ipv6, &build::ipv6_with(60, None, &chain));
        assert_eq!((stats.ext_chain_too_long, stats.tcp_segments), (1, 0));
        assert!(outcomes_add_up(&stats));
    }

    const LINKS: [LinkType; 10] = [
        LinkType::Ethernet,
        LinkType::Null,
        LinkType::Loop,
        LinkType::Raw,
        LinkType::Ipv4,
        LinkType::Ipv6,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Other(147),
        LinkType::Other(0xFFFF_FFFF),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn decode_never_panics(
            frames in proptest::collection::vec(
                (0..LINKS.len(), proptest::collection::vec(any::<u8>(), 0..160), any::<u32>(), any::<u64>()),
                1..8,
            )
        ) {
            let mut decoder = Decoder::default();
            for (link, data, orig_len, ts) in &frames {
                let frame = Frame { ts_nanos: *ts, link: LINKS[*link], data, orig_len: *orig_len };
                if let Ok(Some(seg)) = decoder.decode(&frame) {
                    prop_assert!(seg.payload.len() <= data.len());
                }
            }
            prop_assert!(outcomes_add_up(decoder.stats()));
        }

        /// Headers that look right with random fields and contents behind them.
        #[test]
        fn decode_never_panics_on_plausible_headers(
            tags in proptest::collection::vec(prop_oneof![Just(0x8100u16), Just(0x88A8)], 0..3),
            v6 in any::<bool>(),
            header_byte in any::<u8>(),
            length in any::<u16>(),
            flags_offset in any::<u16>(),
            next in prop_oneof![Just(0u8), Just(6), Just(43), Just(44), Just(51), Just(60)],
            rest in proptest::collection::vec(any::<u8>(), 0..120),
            cut in any::<bool>(),
        ) {
            let ip = if v6 {
                let mut ip = build::ipv6_with(next, Some(length), &rest);
                ip[0] = 0x60 | (header_byte & 0x0F);
                ip
            } else {
                let mut ip = build::ipv4_with(6, 1, flags_offset, &[], Some(length), &rest);
                ip[0] = 0x40 | (header_byte & 0x0F);
                ip
            };
            let data = build::ethernet(&tags, if v6 { 0x86DD } else { 0x0800 }, &ip);
            let orig_len = data.len() as u32 + if cut { 1000 } else { 0 };
            let mut decoder = Decoder::default();
            let frame = Frame { ts_nanos: 0, link: LinkType::Ethernet, data: &data, orig_len };
            if let Ok(Some(seg)) = decoder.decode(&frame) {
                prop_assert!(seg.payload.len() < data.len());
                prop_assert!(cut || seg.missing == 0);
            }
            prop_assert!(outcomes_add_up(decoder.stats()));
        }

        /// Any split of a datagram, delivered in any order, reassembles to the original.
        #[test]
        fn fragments_in_any_order_reassemble(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            units in 1usize..40,
            order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
            v6 in any::<bool>(),
        ) {
            let tcp = build::tcp(40000, 80, 5, PSH_ACK, &[], &body);
            let mut frags = if v6 {
                fragments_v6(&[], 6, &tcp, 3, units * 8)
            } else {
                fragments(&tcp, 3, units * 8)
            };
            // Deterministic shuffle from the drawn seed.
            let mut seed = order;
            for i in (1..frags.len()).rev() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                frags.swap(i, (seed >> 33) as usize % (i + 1));
            }
            let mut decoder = Decoder::default();
            let count = frags.len();
            let mut done = Vec::new();
            for (i, frag) in frags.iter().enumerate() {
                if let Some(seg) = feed(&mut decoder, i as u64, frag) {
                    done.push((i, seg));
                }
            }
            if count == 1 {
                // One piece is no fragment at all: it decodes directly.
                prop_assert_eq!(decoder.stats().ipv4_fragments + decoder.stats().ipv6_fragments, 0);
            } else {
                prop_assert_eq!(decoder.stats().fragments_reassembled, 1);
                prop_assert!(fragments_add_up(decoder.stats(), 0, count as u64));
            }
            prop_assert_eq!(done.len(), 1);
            prop_assert_eq!(done[0].0, count - 1);
            prop_assert_eq!(&done[0].1 .1, &body);
            prop_assert_eq!(decoder.fragments_pending(), 0);
            prop_assert!(outcomes_add_up(decoder.stats()));
        }
    }
}
