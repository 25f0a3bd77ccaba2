//! The contract between the eBPF classifier (agent-ebpf) and the agent's reader
//! (agent/src/capture/ebpf.rs): map names, the ring buffer record header, counter slots
//! and size limits. `no_std` because the classifier links it for `bpfel-unknown-none`.

#![no_std]

/// Ring buffer that carries packet pieces to user space.
pub const MAP_EVENTS: &str = "EVENTS";
/// `Array<u64>` of `PORT_WORDS` words, a bitmap of the destination ports to capture:
/// port `p` (host byte order) is watched when bit `p % 64` of word `p / 64` is set. An
/// array lookup is inlined by the verifier where a hash lookup is a helper call and a
/// hash, and every TCP packet of every attached interface pays for this one.
pub const MAP_PORTS: &str = "PORTS";
/// Words in the PORTS bitmap: one bit per TCP port.
pub const PORT_WORDS: u32 = 65536 / 64;

/// Where port `port` lies in the PORTS bitmap: its word and the bit within that word.
/// The one definition of the layout, for the classifier that reads it and the agent
/// that writes it.
#[inline(always)]
pub const fn port_bit(port: u16) -> (u32, u64) {
    ((port >> 6) as u32, 1u64 << (port & 63))
}
/// `Array<u32>` indexed by the `CONFIG_*` slots.
pub const MAP_CONFIG: &str = "CONFIG";
/// `HashMap<u32, u32>`: ifindex -> `IFACE_*` flags, for interfaces that are not Ethernet.
pub const MAP_IFACES: &str = "IFACES";
/// `PerCpuArray<u64>` indexed by the `STAT_*` slots.
pub const MAP_STATS: &str = "STATS";
/// Per-CPU scratch buffer the classifier assembles each record in.
pub const MAP_SCRATCH: &str = "SCRATCH";

/// Classifier attached to TC ingress.
pub const PROG_INGRESS: &str = "shadowtap_in";
/// Classifier attached to TC egress.
pub const PROG_EGRESS: &str = "shadowtap_eg";

/// CONFIG slot: the agent's own SO_MARK; packets carrying it are not captured (0 = off).
pub const CONFIG_OWN_MARK: u32 = 0;
/// CONFIG slot: bytes per piece, 0 or anything above `MAX_PIECE` means `MAX_PIECE`.
/// Tests lower it to exercise multi-piece packets within BPF_PROG_TEST_RUN's size limit.
pub const CONFIG_PIECE_LEN: u32 = 1;
/// CONFIG slot: ring buffer wakeup policy. 0: the kernel's default, a wakeup whenever the
/// reader has caught up (one per packet when it keeps up). Otherwise records are written
/// without a wakeup and the reader drains the ring on a short timer, except that a record
/// that brings the unread bytes to this many or more wakes it at once (the classifier
/// looks on every 16th packet of a CPU). Each wakeup is an irq_work (an interrupt, in a
/// VM an exit) on the CPU that carries the live packet.
pub const CONFIG_WAKEUP_BYTES: u32 = 2;
/// CONFIG slot: nonzero once some interface is marked `IFACE_NO_L2`. While it is 0 the
/// classifier skips the IFACES lookup, a hash lookup on every packet of every interface.
pub const CONFIG_ANY_NO_L2: u32 = 3;
/// CONFIG slot: nonzero to also capture TCP packets whose SOURCE port is watched (the
/// server's answers), for the response comparison (`--diff`).
pub const CONFIG_SRC_PORTS: u32 = 4;
/// Number of CONFIG slots.
pub const CONFIG_SLOTS: u32 = 5;

/// IFACES flag: frames on this interface start at the IP header (tun, wireguard, ipip).
pub const IFACE_NO_L2: u32 = 1;

/// STATS slot: packets copied (TCP to a watched port, or one of the unchecked kinds
/// below); also the per-CPU packet sequence number.
pub const STAT_MATCHED: u32 = 0;
/// STATS slot: packet bytes written to the ring buffer.
pub const STAT_BYTES: u32 = 1;
/// STATS slot: pieces that did not fit in the ring buffer (the packet is then incomplete).
pub const STAT_RING_DROPS: u32 = 2;
/// STATS slot: pieces written to the ring buffer.
pub const STAT_PIECES: u32 = 3;
/// STATS slot: matched packets skipped because they carried the agent's own mark.
pub const STAT_OWN_MARK: u32 = 4;
/// STATS slot: packets longer than `MAX_PIECES` pieces; only their head is copied.
pub const STAT_TRUNCATED: u32 = 5;
/// STATS slot: IP fragments that may carry TCP, copied without a port check (a later
/// fragment has no TCP header; the agent reassembles, then keeps the watched ports).
pub const STAT_FRAGMENTS: u32 = 6;
/// STATS slot: IPv6 packets whose extension header chain is longer than the classifier
/// walks, copied without a port check for the agent to decide.
pub const STAT_LONG_CHAINS: u32 = 7;
/// Number of STATS slots.
pub const STAT_SLOTS: u32 = 8;

/// Largest piece of a packet carried by one ring buffer record. A per-CPU map value is
/// limited to 32 KiB, and the scratch buffer holds a header plus one piece.
pub const MAX_PIECE: u32 = 16 * 1024;
/// Pieces per packet; with `MAX_PIECE` this covers 256 KiB (GSO, BIG TCP on loopback).
pub const MAX_PIECES: u32 = 16;

/// Piece flag: captured on egress (else ingress).
pub const FLAG_EGRESS: u32 = 1;
/// Piece flag: the packet starts with an Ethernet header (else with the IP header).
pub const FLAG_HAS_L2: u32 = 2;
/// Piece flag: the packet was longer than what is copied (`cap_len < pkt_len`).
pub const FLAG_TRUNCATED: u32 = 4;

/// Header of every ring buffer record; `piece_len` packet bytes follow it.
/// All fields are native-endian `u32`/`u64`, laid out without padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PieceHeader {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the classifier ran.
    pub ktime_ns: u64,
    pub ifindex: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Length of the whole packet (`skb->len`).
    pub pkt_len: u32,
    /// Bytes copied across all pieces of this packet (`<= pkt_len`).
    pub cap_len: u32,
    /// Offset of this piece in the packet.
    pub offset: u32,
    pub piece_len: u32,
    /// CPU the classifier ran on; with `seq` it names the packet the piece belongs to.
    pub cpu: u32,
    /// Per-CPU packet sequence number.
    pub seq: u32,
}

/// Size of `PieceHeader` in a record.
pub const PIECE_HEADER_LEN: usize = core::mem::size_of::<PieceHeader>();

impl PieceHeader {
    /// Reads a header from the start of a record (native byte order, as the kernel wrote
    /// it). `None` when the record is shorter than a header.
    pub fn parse(record: &[u8]) -> Option<Self> {
        let bytes = record.get(..PIECE_HEADER_LEN)?;
        let u32_at = |at: usize| -> Option<u32> {
            let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_ne_bytes(raw))
        };
        let ktime: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        Some(Self {
            ktime_ns: u64::from_ne_bytes(ktime),
            ifindex: u32_at(8)?,
            flags: u32_at(12)?,
            pkt_len: u32_at(16)?,
            cap_len: u32_at(20)?,
            offset: u32_at(24)?,
            piece_len: u32_at(28)?,
            cpu: u32_at(32)?,
            seq: u32_at(36)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_has_no_padding() {
        assert_eq!(PIECE_HEADER_LEN, 40);
        assert_eq!(core::mem::align_of::<PieceHeader>(), 8);
    }

    #[test]
    fn parse_reads_fields_in_declaration_order() {
        let mut raw = [0u8; PIECE_HEADER_LEN + 3];
        raw[..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_ne_bytes());
        for (i, v) in [7u32, 3, 1500, 1400, 512, 256, 1, 99].iter().enumerate() {
            raw[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_ne_bytes());
        }
        let h = PieceHeader::parse(&raw).unwrap();
        assert_eq!(
            h,
            PieceHeader {
                ktime_ns: 0x0102_0304_0506_0708,
                ifindex: 7,
                flags: 3,
                pkt_len: 1500,
                cap_len: 1400,
                offset: 512,
                piece_len: 256,
                cpu: 1,
                seq: 99,
            }
        );
        assert_eq!(PieceHeader::parse(&raw[..PIECE_HEADER_LEN - 1]), None);
    }
}
