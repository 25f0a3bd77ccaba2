//! One packet seen at two capture points (NIC and pod veth, or egress and ingress of
//! `lo`) must feed reassembly once. Data segments are keyed by what NAT leaves alone:
//! sequence and acknowledgement numbers, payload length and a hash of the payload,
//! not addresses; a key seen again within the window is a second sighting. Pure: time
//! is the packet timestamp.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::decode::Segment;

/// Second sightings come within microseconds; a retransmission after this long is
/// let through (reassembly drops it as a duplicate anyway).
const WINDOW_NANOS: u64 = 1_000_000_000;

#[derive(Debug)]
pub struct SegmentDedup {
    seen: HashMap<u64, u64>,
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
    pub duplicates: u64,
    pub resets: u64,
}

impl SegmentDedup {
    /// `capacity`: keys remembered at most (each ~16 bytes plus map overhead).
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
            hasher: Default::default(),
            duplicates: 0,
            resets: 0,
        }
    }

    /// True when this segment was already seen (drop it).
    pub fn is_duplicate(&mut self, seg: &Segment<'_>) -> bool {
        if seg.payload.is_empty() {
            // Control segments are harmless twice: reassembly treats them as retransmits.
            return false;
        }
        let mut h = self.hasher.build_hasher();
        h.write_u32(seg.seq);
        h.write_u32(seg.ack);
        h.write_usize(seg.payload.len());
        h.write(seg.payload);
        let key = h.finish();
        let now = seg.ts_nanos;
        if let Some(&at) = self.seen.get(&key) {
            if now.abs_diff(at) <= WINDOW_NANOS {
                self.duplicates += 1;
                return true;
            }
        }
        if self.seen.len() >= self.capacity {
            self.seen
                .retain(|_, at| now.saturating_sub(*at) <= WINDOW_NANOS);
            if self.seen.len() >= self.capacity {
                // Bounded over exact: forgetting costs at most a duplicate that
                // reassembly then drops itself.
                self.seen.clear();
                self.resets += 1;
            }
        }
        self.seen.insert(key, now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{FlowKey, TcpFlags};

    fn seg(src: &str, dst: &str, seq: u32, ts: u64, payload: &'static [u8]) -> Segment<'static> {
        Segment {
            ts_nanos: ts,
            flow: FlowKey {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
            },
            seq,
            ack: 7,
            flags: TcpFlags(TcpFlags::ACK),
            payload,
            missing: 0,
        }
    }

    #[test]
    fn a_packet_seen_twice_even_through_nat_passes_once() {
        let mut d = SegmentDedup::new(16);
        let at_nic = seg(
            "10.0.0.1:5000",
            "10.96.0.10:80",
            100,
            1_000,
            b"GET / HTTP/1.1\r\n\r\n",
        );
        let at_veth = seg(
            "10.0.0.1:5000",
            "10.244.1.7:8080",
            100,
            1_500,
            b"GET / HTTP/1.1\r\n\r\n",
        );
        assert!(!d.is_duplicate(&at_nic));
        assert!(d.is_duplicate(&at_veth));
        assert_eq!(d.duplicates, 1);
    }

    #[test]
    fn different_data_or_late_repeats_are_not_duplicates() {
        let mut d = SegmentDedup::new(16);
        assert!(!d.is_duplicate(&seg("1.1.1.1:1", "2.2.2.2:80", 100, 0, b"abc")));
        assert!(!d.is_duplicate(&seg("1.1.1.1:1", "2.2.2.2:80", 103, 10, b"abc")));
        assert!(!d.is_duplicate(&seg("1.1.1.1:1", "2.2.2.2:80", 100, 20, b"abd")));
        assert!(!d.is_duplicate(&seg(
            "1.1.1.1:1",
            "2.2.2.2:80",
            100,
            5 * WINDOW_NANOS,
            b"abc"
        )));
        assert!(!d.is_duplicate(&seg("1.1.1.1:1", "2.2.2.2:80", 100, 30, b"")));
        assert!(!d.is_duplicate(&seg("1.1.1.1:1", "2.2.2.2:80", 100, 40, b"")));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut d = SegmentDedup::new(8);
        for i in 0..1000u32 {
            let payload: &'static [u8] = b"x";
            d.is_duplicate(&seg("1.1.1.1:1", "2.2.2.2:80", i, u64::from(i), payload));
            assert!(d.seen.len() <= 8);
        }
        assert!(d.resets > 0);
    }
}
