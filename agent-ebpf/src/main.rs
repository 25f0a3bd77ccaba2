//! shadowtap's TC classifier. For every TCP packet (IPv4 or IPv6, over Ethernet with up
//! to two in-band VLAN tags, or on an L2-less device) whose destination port is in PORTS
//! and whose skb mark is not the agent's own, it copies the whole packet into the EVENTS
//! ring buffer as one or more pieces (`PieceHeader` + bytes). It never changes a packet
//! and always lets it pass, whatever happens.
//!
//! Two kinds of packet are copied without a port check, since the port cannot be read
//! here: every IP fragment that may carry TCP (a later fragment has no TCP header; the
//! agent reassembles and then keeps only watched ports), and IPv6 packets whose extension
//! header chain is longer than the walk here (the agent walks further). Both are rare,
//! and both are counted (STAT_FRAGMENTS, STAT_LONG_CHAINS).

#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use shadowtap_common::{
    port_bit, PieceHeader, CONFIG_ANY_NO_L2, CONFIG_OWN_MARK, CONFIG_PIECE_LEN, CONFIG_SLOTS,
    CONFIG_SRC_PORTS, CONFIG_WAKEUP_BYTES, FLAG_EGRESS, FLAG_HAS_L2, FLAG_TRUNCATED, IFACE_NO_L2,
    MAX_PIECE, MAX_PIECES, PIECE_HEADER_LEN, PORT_WORDS, STAT_BYTES, STAT_FRAGMENTS,
    STAT_LONG_CHAINS, STAT_MATCHED, STAT_OWN_MARK, STAT_PIECES, STAT_RING_DROPS, STAT_SLOTS,
    STAT_TRUNCATED,
};

/// TC_ACT_UNSPEC, which TCX reads as TCX_NEXT: the packet goes on to the next program
/// and then its normal path, as if this classifier were not there.
const PASS: i32 = -1;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AUTH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;
/// IPv4 flags and fragment offset: more fragments (0x2000) and the 13-bit offset.
const IPV4_MF_OR_OFFSET: u16 = 0x3fff;
/// IPv6 extension headers walked before giving up on finding TCP (and copying the
/// packet for the agent, which walks as far as `MAX_EXTENSION_HEADERS`, to decide).
const MAX_EXT_HEADERS: usize = 8;

/// What the headers say about a packet.
#[derive(Clone, Copy)]
enum Found {
    /// TCP with these source and destination ports.
    Ports(u16, u16),
    /// Copied without a port check: a fragment, or an extension chain walked to its bound.
    /// The counter slot says which.
    Unchecked(u32),
    /// Not for us.
    Pass,
}

/// `bpf_ringbuf_output` flags and `bpf_ringbuf_query` selector (uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Packets of a CPU per look at the ring's unread bytes (a power of two).
const WAKEUP_CHECK_EVERY: u32 = 16;

/// Record being assembled: the scratch map value that `bpf_ringbuf_output` copies from.
#[repr(C)]
pub struct Scratch {
    header: PieceHeader,
    data: [u8; MAX_PIECE as usize],
}

/// Default size; the agent sets the real one at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

#[map]
static PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);

#[map]
static CONFIG: Array<u32> = Array::with_max_entries(CONFIG_SLOTS, 0);

#[map]
static IFACES: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_SLOTS, 0);

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[classifier]
pub fn shadowtap_in(ctx: TcContext) -> i32 {
    match try_capture(&ctx, 0) {
        Ok(r) | Err(r) => r,
    }
}

#[classifier]
pub fn shadowtap_eg(ctx: TcContext) -> i32 {
    match try_capture(&ctx, FLAG_EGRESS) {
        Ok(r) | Err(r) => r,
    }
}

/// Adds `n` to a per-CPU counter and returns its previous value.
#[inline(always)]
fn bump(slot: u32, n: u64) -> u64 {
    match STATS.get_ptr_mut(slot) {
        Some(p) => unsafe {
            let old = *p;
            *p = old + n;
            old
        },
        None => 0,
    }
}

/// Whether TCP destination port `port` is one to capture (the PORTS bitmap).
#[inline(always)]
fn watched(port: u16) -> bool {
    let (word, bit) = port_bit(port);
    PORTS.get(word).is_some_and(|w| w & bit != 0)
}

#[inline(always)]
fn load<T>(ctx: &TcContext, offset: usize) -> Result<T, i32> {
    ctx.load::<T>(offset).map_err(|_| PASS)
}

/// Where the common packet (Ethernet, no VLAN tag, IPv4 without options) is settled with
/// direct packet access instead of a helper call per header field; `None` when the
/// general path must decide (other layouts, headers not linear).
#[inline(always)]
fn linear_ipv4(ctx: &TcContext) -> Option<Found> {
    let start = ctx.data();
    let end = ctx.data_end();
    // Ethernet, a 20-byte IPv4 header and the TCP ports.
    if start + ETH_HLEN + 24 > end {
        return None;
    }
    let at = |offset: usize| unsafe { *((start + offset) as *const u8) };
    if u16::from_be_bytes([at(12), at(13)]) != ETH_P_IP || at(ETH_HLEN) != 0x45 {
        return None;
    }
    if at(ETH_HLEN + 9) != IPPROTO_TCP {
        return Some(Found::Pass);
    }
    let fragment = u16::from_be_bytes([at(ETH_HLEN + 6), at(ETH_HLEN + 7)]) & IPV4_MF_OR_OFFSET;
    if fragment != 0 {
        return Some(Found::Unchecked(STAT_FRAGMENTS));
    }
    Some(Found::Ports(
        u16::from_be_bytes([at(ETH_HLEN + 20), at(ETH_HLEN + 21)]),
        u16::from_be_bytes([at(ETH_HLEN + 22), at(ETH_HLEN + 23)]),
    ))
}

/// What the headers say, read with helper loads (any layout the classifier knows).
/// `Err(PASS)` when the packet is cut short inside them.
#[inline(always)]
fn classify(ctx: &TcContext, has_l2: bool) -> Result<Found, i32> {
    let (ethertype, l3) = if has_l2 {
        let mut ethertype = u16::from_be(load::<u16>(ctx, 12)?);
        let mut l3 = ETH_HLEN;
        // In-band 802.1Q / QinQ tags; offloaded tags live in skb->vlan_tci, not here.
        for _ in 0..2 {
            if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
                ethertype = u16::from_be(load::<u16>(ctx, l3 + 2)?);
                l3 += 4;
            }
        }
        (ethertype, l3)
    } else {
        match load::<u8>(ctx, 0)? >> 4 {
            4 => (ETH_P_IP, 0),
            6 => (ETH_P_IPV6, 0),
            _ => return Err(PASS),
        }
    };
    let dport_at = match ethertype {
        ETH_P_IP => {
            let ver_ihl = load::<u8>(ctx, l3)?;
            let ihl = usize::from(ver_ihl & 0x0f) * 4;
            if ver_ihl >> 4 != 4 || ihl < 20 || load::<u8>(ctx, l3 + 9)? != IPPROTO_TCP {
                return Ok(Found::Pass);
            }
            let frag = u16::from_be(load::<u16>(ctx, l3 + 6)?);
            if frag & IPV4_MF_OR_OFFSET != 0 {
                return Ok(Found::Unchecked(STAT_FRAGMENTS));
            }
            l3 + ihl + 2
        }
        ETH_P_IPV6 => {
            let mut next = load::<u8>(ctx, l3 + 6)?;
            let mut off = l3 + 40;
            // Hop-by-hop, routing, destination options, AH and fragment headers, bounded
            // so the verifier sees the loop end.
            for _ in 0..MAX_EXT_HEADERS {
                match next {
                    EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS => {
                        let ext_len = usize::from(load::<u8>(ctx, off + 1)?);
                        next = load::<u8>(ctx, off)?;
                        off += (ext_len + 1) * 8;
                    }
                    EXT_AUTH => {
                        let ext_len = usize::from(load::<u8>(ctx, off + 1)?);
                        next = load::<u8>(ctx, off)?;
                        off += (ext_len + 2) * 4;
                    }
                    EXT_FRAGMENT => {
                        let frag_off = u16::from_be(load::<u16>(ctx, off + 2)?);
                        next = load::<u8>(ctx, off)?;
                        // Not an atomic fragment (offset 0, no more): the datagram is in
                        // pieces. Those that may carry TCP go to the agent whole.
                        if frag_off & 0xfff9 != 0 {
                            return Ok(match next {
                                IPPROTO_TCP | EXT_ROUTING | EXT_DEST_OPTS | EXT_AUTH => {
                                    Found::Unchecked(STAT_FRAGMENTS)
                                }
                                _ => Found::Pass,
                            });
                        }
                        off += 8;
                    }
                    _ => break,
                }
            }
            match next {
                IPPROTO_TCP => off + 2,
                EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS | EXT_AUTH | EXT_FRAGMENT => {
                    return Ok(Found::Unchecked(STAT_LONG_CHAINS))
                }
                _ => return Ok(Found::Pass),
            }
        }
        _ => return Ok(Found::Pass),
    };
    Ok(Found::Ports(
        u16::from_be(load::<u16>(ctx, dport_at - 2)?),
        u16::from_be(load::<u16>(ctx, dport_at)?),
    ))
}

#[inline(always)]
fn try_capture(ctx: &TcContext, direction: u32) -> Result<i32, i32> {
    let skb = ctx.skb.skb;
    let (ifindex, mark) = unsafe { ((*skb).ifindex, (*skb).mark) };
    let any_no_l2 = CONFIG.get(CONFIG_ANY_NO_L2).copied().unwrap_or(0) != 0;
    let iface_flags = if any_no_l2 {
        unsafe { IFACES.get(&ifindex) }.copied().unwrap_or(0)
    } else {
        0
    };
    let has_l2 = iface_flags & IFACE_NO_L2 == 0;

    let fast = if has_l2 { linear_ipv4(ctx) } else { None };
    let found = match fast {
        Some(found) => found,
        None => classify(ctx, has_l2)?,
    };
    let unchecked = match found {
        Found::Ports(_, dport) if watched(dport) => None,
        // The server's answers, for the response comparison (`--diff`).
        Found::Ports(sport, _)
            if CONFIG.get(CONFIG_SRC_PORTS).copied().unwrap_or(0) != 0 && watched(sport) =>
        {
            None
        }
        Found::Unchecked(slot) => Some(slot),
        Found::Ports(..) | Found::Pass => return Ok(PASS),
    };
    let own_mark = CONFIG.get(CONFIG_OWN_MARK).copied().unwrap_or(0);
    if own_mark != 0 && mark == own_mark {
        bump(STAT_OWN_MARK, 1);
        return Ok(PASS);
    }
    if let Some(slot) = unchecked {
        bump(slot, 1);
    }

    let seq = bump(STAT_MATCHED, 1) as u32;
    let pkt_len = ctx.len();
    let configured = CONFIG.get(CONFIG_PIECE_LEN).copied().unwrap_or(0);
    let piece_max = if configured == 0 || configured > MAX_PIECE {
        MAX_PIECE
    } else {
        configured
    };
    let mut flags = direction;
    if has_l2 {
        flags |= FLAG_HAS_L2;
    }
    let cap_len = if pkt_len > piece_max * MAX_PIECES {
        flags |= FLAG_TRUNCATED;
        bump(STAT_TRUNCATED, 1);
        piece_max * MAX_PIECES
    } else {
        pkt_len
    };

    let wakeup_bytes = u64::from(CONFIG.get(CONFIG_WAKEUP_BYTES).copied().unwrap_or(0));
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(PASS)?;
    let ktime_ns = unsafe { bpf_ktime_get_ns() };
    let cpu = unsafe { bpf_get_smp_processor_id() };
    for i in 0..MAX_PIECES {
        let offset = i * piece_max;
        if offset >= cap_len {
            break;
        }
        let len = cap_len - offset;
        let len = if len > piece_max { piece_max } else { len };
        // Restated for the verifier: the copy length must be provably in 1..=MAX_PIECE.
        if !aya_ebpf::check_bounds_signed(i64::from(len), 1, i64::from(MAX_PIECE)) {
            break;
        }
        unsafe {
            (*scratch).header = PieceHeader {
                ktime_ns,
                ifindex,
                flags,
                pkt_len,
                cap_len,
                offset,
                piece_len: len,
                cpu,
                seq,
            };
        }
        let data = unsafe { (*scratch).data.as_mut_ptr() };
        if unsafe { bpf_skb_load_bytes(skb as *const c_void, offset, data.cast(), len) } != 0 {
            break;
        }
        let record = unsafe {
            core::slice::from_raw_parts(scratch as *const u8, PIECE_HEADER_LEN + len as usize)
        };
        let wake = if wakeup_bytes == 0 {
            0
        } else if i > 0 || seq % WAKEUP_CHECK_EVERY == 0 {
            // Wake the reader only when the unread bytes reach the threshold; below it
            // the reader's timer collects the records. Asked on every 16th packet of a
            // CPU (and every later piece): the query was 7% of the program's time, and
            // 16 records late is nothing next to a threshold of a quarter of the ring.
            let unread = EVENTS.query(BPF_RB_AVAIL_DATA);
            if unread + record.len() as u64 >= wakeup_bytes {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            }
        } else {
            BPF_RB_NO_WAKEUP
        };
        if EVENTS.output::<[u8]>(record, wake).is_err() {
            bump(STAT_RING_DROPS, 1);
            break;
        }
        bump(STAT_PIECES, 1);
        bump(STAT_BYTES, u64::from(len));
    }
    Ok(PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
