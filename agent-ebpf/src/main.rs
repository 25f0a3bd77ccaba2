//! shadowtap's TC classifier. For every TCP packet (IPv4 or IPv6, over Ethernet with up
//! to two in-band VLAN tags, or on an L2-less device) whose destination port is in PORTS
//! and whose skb mark is not the agent's own, it copies the whole packet into the EVENTS
//! ring buffer as one or more pieces (`PieceHeader` + bytes). It never changes a packet
//! and always lets it pass, whatever happens.

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
    CONFIG_WAKEUP_BYTES, FLAG_EGRESS, FLAG_HAS_L2, FLAG_TRUNCATED, IFACE_NO_L2, MAX_PIECE,
    MAX_PIECES, PIECE_HEADER_LEN, PORT_WORDS, STAT_BYTES, STAT_MATCHED, STAT_OWN_MARK, STAT_PIECES,
    STAT_RING_DROPS, STAT_SLOTS, STAT_TRUNCATED,
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
/// direct packet access instead of a helper call per header field: `Some(Some(dport))`
/// for an unfragmented TCP packet, `Some(None)` for any other IPv4 packet (pass it), and
/// `None` when the general path must decide (other layouts, headers not linear).
#[inline(always)]
fn linear_ipv4_dport(ctx: &TcContext) -> Option<Option<u16>> {
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
    let fragment = u16::from_be_bytes([at(ETH_HLEN + 6), at(ETH_HLEN + 7)]) & 0x1fff;
    if at(ETH_HLEN + 9) != IPPROTO_TCP || fragment != 0 {
        return Some(None);
    }
    Some(Some(u16::from_be_bytes([
        at(ETH_HLEN + 22),
        at(ETH_HLEN + 23),
    ])))
}

/// Offset of the TCP destination port, or `Err(PASS)` when the packet is not TCP or its
/// TCP header is not in this fragment.
#[inline(always)]
fn tcp_dport_offset(ctx: &TcContext, has_l2: bool) -> Result<usize, i32> {
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
    match ethertype {
        ETH_P_IP => {
            let ver_ihl = load::<u8>(ctx, l3)?;
            let ihl = usize::from(ver_ihl & 0x0f) * 4;
            if ver_ihl >> 4 != 4 || ihl < 20 || load::<u8>(ctx, l3 + 9)? != IPPROTO_TCP {
                return Err(PASS);
            }
            let frag = u16::from_be(load::<u16>(ctx, l3 + 6)?);
            if frag & 0x1fff != 0 {
                return Err(PASS);
            }
            Ok(l3 + ihl + 2)
        }
        ETH_P_IPV6 => {
            let mut next = load::<u8>(ctx, l3 + 6)?;
            let mut off = l3 + 40;
            // Hop-by-hop, routing, destination options and fragment headers, bounded.
            for _ in 0..4 {
                match next {
                    0 | 43 | 60 => {
                        let ext_len = usize::from(load::<u8>(ctx, off + 1)?);
                        next = load::<u8>(ctx, off)?;
                        off += (ext_len + 1) * 8;
                    }
                    44 => {
                        let frag_off = u16::from_be(load::<u16>(ctx, off + 2)?);
                        if frag_off & 0xfff8 != 0 {
                            return Err(PASS);
                        }
                        next = load::<u8>(ctx, off)?;
                        off += 8;
                    }
                    _ => break,
                }
            }
            if next != IPPROTO_TCP {
                return Err(PASS);
            }
            Ok(off + 2)
        }
        _ => Err(PASS),
    }
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

    let fast = if has_l2 { linear_ipv4_dport(ctx) } else { None };
    let dport = match fast {
        Some(Some(dport)) => dport,
        Some(None) => return Ok(PASS),
        None => {
            let dport_at = tcp_dport_offset(ctx, has_l2)?;
            u16::from_be(load::<u16>(ctx, dport_at)?)
        }
    };
    if !watched(dport) {
        return Ok(PASS);
    }
    let own_mark = CONFIG.get(CONFIG_OWN_MARK).copied().unwrap_or(0);
    if own_mark != 0 && mark == own_mark {
        bump(STAT_OWN_MARK, 1);
        return Ok(PASS);
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
