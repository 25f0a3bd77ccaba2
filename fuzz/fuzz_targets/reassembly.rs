#![no_main]
//! FlowTable under arbitrary segment sequences with small caps: no panics, buffered bytes
//! within the caps, every stream that got data or a gap ends exactly once, nothing after.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use shadowtap::decode::{FlowKey, Segment, TcpFlags};
use shadowtap::reassembly::{FlowTable, ReassemblyConfig, RecordedEvent, RecordingSink};

const MAX_SEGMENT: usize = 96;
const MAX_TOTAL: usize = 256;
const MAX_FLOWS: usize = 4;

/// Four clients, two server ports: a small space so that segments collide.
fn flow(b: u8) -> FlowKey {
    let client = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        1000 + u16::from(b & 3),
    );
    let server = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        if b & 4 == 0 { 80 } else { 8080 },
    );
    let f = FlowKey {
        src: client,
        dst: server,
    };
    if b & 8 == 0 {
        f
    } else {
        f.reversed()
    }
}

fuzz_target!(|data: &[u8]| {
    let config = ReassemblyConfig {
        ports: if data.first().is_some_and(|b| b & 1 == 1) {
            Some(vec![80])
        } else {
            None
        },
        // Byte 0's bit 1 also delivers the answers' direction (`--diff`).
        responses: data.first().is_some_and(|b| b & 2 == 2),
        max_flows: MAX_FLOWS,
        max_stream_buffer: 128,
        max_total_buffer: MAX_TOTAL,
        max_stream_chunks: 6,
        idle_timeout_nanos: 1000,
        hole_timeout_nanos: 300,
        max_ahead: 512,
    };
    let mut table = FlowTable::new(config);
    let mut sink = RecordingSink::default();
    let pattern: Vec<u8> = (0..=255u8).cycle().take(256 + MAX_SEGMENT).collect();
    let mut ts = 0u64;
    // Each op: tuple, flags, seq (2 bytes, around a base near the wrap for odd tuples),
    // payload length, snaplen cut.
    for op in data.get(1..).unwrap_or(&[]).chunks_exact(6) {
        let base: u32 = if op[0] & 1 == 1 { u32::MAX - 300 } else { 1000 };
        let seq = base.wrapping_add(u32::from(u16::from_le_bytes([op[2], op[3]]) % 1024));
        let len = usize::from(op[4]) % MAX_SEGMENT;
        // Payload bytes follow the sequence number, unless the op asks for a corrupt copy.
        let start = (seq % 256) as usize;
        let mut payload = pattern[start..start + len].to_vec();
        if op[0] & 0x80 != 0 {
            payload.iter_mut().for_each(|b| *b ^= 0x5a);
        }
        let missing = if op[5] & 0xc0 == 0xc0 {
            u32::from(op[5] & 0x3f)
        } else {
            0
        };
        ts += u64::from(op[5] & 0x0f) * 10;
        let seg = Segment {
            ts_nanos: ts,
            flow: flow(op[0] >> 1),
            seq,
            ack: 0,
            flags: TcpFlags(op[1] & 0x1f),
            payload: &payload,
            missing,
        };
        table.push(&seg, &mut sink);
        assert!(table.buffered_bytes() <= MAX_TOTAL + MAX_SEGMENT);
        assert!(table.flows() <= MAX_FLOWS);
        if op[1] & 0x80 != 0 {
            table.expire(ts, &mut sink);
        }
        if op[1] & 0x40 != 0 {
            table.give_up_stale_holes(ts, &mut sink);
        }
    }
    table.flush(ts, &mut sink);
    assert_eq!(table.buffered_bytes(), 0);
    assert_eq!(table.flows(), 0);

    let mut ended: HashMap<_, usize> = HashMap::new();
    let mut distrusted = std::collections::HashSet::new();
    for event in &sink.events {
        match event {
            RecordedEvent::Data(k, bytes) => {
                assert!(!bytes.is_empty());
                assert!(!ended.contains_key(k), "data after end");
            }
            RecordedEvent::Gap(k, n) => {
                assert!(*n > 0);
                assert!(!ended.contains_key(k), "gap after end");
            }
            RecordedEvent::End(k, _) => *ended.entry(*k).or_default() += 1,
            RecordedEvent::Distrust(k) => {
                assert!(!ended.contains_key(k), "distrust after end");
                assert!(distrusted.insert(*k), "distrusted twice");
            }
        }
    }
    for k in sink.streams() {
        assert_eq!(ended.get(&k), Some(&1), "{k:?} must end exactly once");
    }
    let st = table.stats();
    assert_eq!(
        st.flows_opened,
        st.flows_closed + st.flows_timed_out + st.flows_evicted + st.flows_flushed
    );
    let delivered: usize = sink
        .events
        .iter()
        .map(|e| match e {
            RecordedEvent::Data(_, b) => b.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(st.bytes_delivered, delivered as u64);
});
