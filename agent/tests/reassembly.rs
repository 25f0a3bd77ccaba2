//! FlowTable behaviour: one test per rule, then property tests against a slow model.

use std::net::SocketAddr;

use proptest::prelude::*;
use shadowtap::decode::{FlowKey, Segment, TcpFlags};
use shadowtap::reassembly::{
    FlowTable, ReassemblyConfig, RecordedEvent, RecordingSink, StreamEnd, StreamKey, StreamSink,
};

const SYN: u8 = TcpFlags::SYN;
const FIN: u8 = TcpFlags::FIN;
const RST: u8 = TcpFlags::RST;
const ACK: u8 = TcpFlags::ACK;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn c2s() -> FlowKey {
    FlowKey {
        src: addr("10.0.0.1:40000"),
        dst: addr("10.0.0.2:80"),
    }
}

fn s2c() -> FlowKey {
    c2s().reversed()
}

fn client(port: u16) -> FlowKey {
    FlowKey {
        src: SocketAddr::new(addr("10.0.0.1:1").ip(), port),
        dst: addr("10.0.0.2:80"),
    }
}

fn seg(flow: FlowKey, seq: u32, flags: u8, payload: &[u8]) -> Segment<'_> {
    Segment {
        ts_nanos: 1,
        flow,
        seq,
        ack: 0,
        flags: TcpFlags(flags | ACK),
        payload,
        missing: 0,
    }
}

struct Harness {
    table: FlowTable,
    sink: RecordingSink,
}

impl Harness {
    fn new(config: ReassemblyConfig) -> Self {
        Self {
            table: FlowTable::new(config),
            sink: RecordingSink::default(),
        }
    }

    fn default() -> Self {
        Self::new(ReassemblyConfig::default())
    }

    fn push(&mut self, flow: FlowKey, seq: u32, flags: u8, payload: &[u8]) {
        self.table
            .push(&seg(flow, seq, flags, payload), &mut self.sink);
    }

    fn push_seg(&mut self, seg: Segment<'_>) {
        self.table.push(&seg, &mut self.sink);
    }

    fn flush(&mut self) {
        self.table.flush(10, &mut self.sink);
    }

    /// SYN from the client with `isn`; the server answers with ISN 5000.
    fn handshake(&mut self, isn: u32) {
        self.push(c2s(), isn, SYN, b"");
        self.push(s2c(), 5000, SYN, b"");
    }
}

fn key(conn: u64, flow: FlowKey) -> StreamKey {
    StreamKey { conn, flow }
}

fn data(conn: u64, flow: FlowKey, bytes: &[u8]) -> RecordedEvent {
    RecordedEvent::Data(key(conn, flow), bytes.to_vec())
}

fn gap(conn: u64, flow: FlowKey, n: u64) -> RecordedEvent {
    RecordedEvent::Gap(key(conn, flow), n)
}

fn distrust(conn: u64, flow: FlowKey) -> RecordedEvent {
    RecordedEvent::Distrust(key(conn, flow))
}

fn end(conn: u64, flow: FlowKey, how: StreamEnd) -> RecordedEvent {
    RecordedEvent::End(key(conn, flow), how)
}

#[test]
fn in_order_after_syn_starts_at_isn_plus_one() {
    let mut h = Harness::default();
    h.handshake(1000);
    h.push(c2s(), 1001, 0, b"GET / ");
    h.push(c2s(), 1007, 0, b"HTTP/1.1\r\n");
    h.push(s2c(), 5001, 0, b"HTTP/1.1 200");
    assert_eq!(
        h.sink.events,
        vec![
            data(0, c2s(), b"GET / "),
            data(0, c2s(), b"HTTP/1.1\r\n"),
            data(0, s2c(), b"HTTP/1.1 200"),
        ]
    );
    assert_eq!(h.table.stats().bytes_delivered, 28);
    assert_eq!(h.table.stats().flows_opened, 1);
    assert_eq!(h.table.flows(), 1);
}

#[test]
fn sequence_wraps_around_2_pow_32() {
    let mut h = Harness::default();
    let isn = u32::MAX - 3;
    h.handshake(isn);
    // Offsets 0..12 straddle the wrap: seq MAX-2 .. 8. Delivered out of order.
    let stream = b"0123456789ab";
    let at = |off: usize| isn.wrapping_add(1).wrapping_add(off as u32);
    h.push(c2s(), at(8), 0, &stream[8..]);
    h.push(c2s(), at(4), 0, &stream[4..8]);
    assert!(h.sink.events.is_empty());
    assert_eq!(h.table.buffered_bytes(), 8);
    h.push(c2s(), at(0), 0, &stream[..4]);
    assert_eq!(h.sink.bytes(key(0, c2s())), stream);
    assert_eq!(h.table.buffered_bytes(), 0);
    h.push(c2s(), at(12), 0, b"cd");
    assert_eq!(h.sink.bytes(key(0, c2s())), b"0123456789abcd");
    assert_eq!(h.table.stats().gaps, 0);
}

/// Counts instead of copying, for streams too long to record.
#[derive(Default)]
struct CountingSink {
    bytes: u64,
    gaps: u64,
    ends: Vec<StreamEnd>,
    distrusted: u64,
}

impl StreamSink for CountingSink {
    fn data(&mut self, _: StreamKey, _: u64, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
    }
    fn gap(&mut self, _: StreamKey, _: u64, missing: u64) {
        self.gaps += missing;
    }
    fn end(&mut self, _: StreamKey, _: u64, how: StreamEnd) {
        self.ends.push(how);
    }
    fn distrust(&mut self, _: StreamKey, _: u64) {
        self.distrusted += 1;
    }
}

#[test]
fn offsets_keep_counting_past_a_full_sequence_lap() {
    let mut table = FlowTable::new(ReassemblyConfig::default());
    let mut sink = CountingSink::default();
    let isn = 0x8000_0000u32;
    table.push(&seg(c2s(), isn, SYN, b""), &mut sink);
    let chunk = vec![b'x'; 1 << 16];
    let laps = (1u64 << 32) / chunk.len() as u64 + 2;
    let mut seq = isn.wrapping_add(1);
    for i in 0..laps {
        // Every 1000th pair arrives swapped, so the buffer is exercised on every lap.
        if i % 1000 == 1 {
            seq = seq.wrapping_add(chunk.len() as u32);
            continue;
        }
        if i % 1000 == 2 {
            let prev = seq.wrapping_sub(chunk.len() as u32);
            table.push(&seg(c2s(), seq, 0, &chunk), &mut sink);
            table.push(&seg(c2s(), prev, 0, &chunk), &mut sink);
        } else {
            table.push(&seg(c2s(), seq, 0, &chunk), &mut sink);
        }
        seq = seq.wrapping_add(chunk.len() as u32);
    }
    table.push(&seg(c2s(), seq, FIN, b""), &mut sink);
    assert_eq!(sink.bytes, laps * chunk.len() as u64);
    assert_eq!(sink.gaps, 0);
    assert_eq!(sink.ends, vec![StreamEnd::Fin]);
    assert_eq!(table.stats().out_of_order, laps.div_ceil(1000));
}

#[test]
fn mid_stream_start_uses_first_data_segment() {
    let mut h = Harness::default();
    h.push(c2s(), 70_000, 0, b"hello");
    // Older bytes of a stream picked up mid-way cannot be placed: dropped.
    h.push(c2s(), 69_990, 0, b"0123456789");
    h.push(c2s(), 70_005, 0, b" world");
    // The sink hears first that the stream's start was not seen.
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![distrust(0, c2s()), data(0, c2s(), b"hello world")]
    );
    assert_eq!(h.table.stats().duplicates, 1);
    assert_eq!(h.table.stats().gaps, 0);
    assert_eq!(h.table.stats().lost_starts, 1);
}

/// A stream whose SYN was seen is trusted from its first byte; the server's side (not
/// delivered with a ports filter) is never distrusted.
#[test]
fn a_stream_with_its_syn_is_not_distrusted() {
    let mut h = Harness::new(ReassemblyConfig {
        ports: Some(vec![80]),
        ..ReassemblyConfig::default()
    });
    h.push(c2s(), 10, SYN, b"");
    h.push(c2s(), 11, 0, b"GET");
    h.push(s2c(), 900, 0, b"HTTP/1.1 200 OK");
    assert_eq!(h.sink.events, vec![data(0, c2s(), b"GET")]);
    assert_eq!(h.table.stats().lost_starts, 0);
}

/// Linux keeps the in-order segment's bytes where it covers queued out-of-order ones;
/// we deliver the queued ones. The sink is told before any byte of the disagreement.
#[test]
fn conflicting_retransmits_distrust_the_stream_before_the_conflicting_bytes() {
    // In order over a buffered chunk.
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 5, 0, b"EFGH");
    h.push(c2s(), 1, 0, b"abcdXFGH");
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![
            data(0, c2s(), b"abcd"),
            distrust(0, c2s()),
            data(0, c2s(), b"EFGH")
        ]
    );
    assert_eq!(h.table.stats().conflict_distrusts, 1);
    // Out of order over out of order: nothing is delivered before the distrust.
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 5, 0, b"EFGH");
    h.push(c2s(), 3, 0, b"cdEFGX");
    h.push(c2s(), 1, 0, b"ab");
    assert_eq!(h.sink.stream(key(0, c2s()))[0], distrust(0, c2s()));
    // Over delivered bytes: the stream is distrusted once, however often it happens.
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 1, 0, b"abcdef");
    h.push(c2s(), 3, 0, b"cXe");
    h.push(c2s(), 3, 0, b"cYe");
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![data(0, c2s(), b"abcdef"), distrust(0, c2s())]
    );
    assert_eq!(h.table.stats().retransmit_mismatch, 2);
    assert_eq!(h.table.stats().conflict_distrusts, 1);
    // Identical retransmits distrust nothing.
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 5, 0, b"EFGH");
    h.push(c2s(), 1, 0, b"abcdEFGH");
    h.push(c2s(), 1, 0, b"abcdEFGH");
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![data(0, c2s(), b"abcdEFGH")]
    );
}

/// A `RecordingSink` that says some streams are mid-message.
struct BusySink {
    inner: RecordingSink,
    busy: Vec<StreamKey>,
}

impl StreamSink for BusySink {
    fn data(&mut self, s: StreamKey, ts: u64, bytes: &[u8]) {
        self.inner.data(s, ts, bytes);
    }
    fn gap(&mut self, s: StreamKey, ts: u64, n: u64) {
        self.inner.gap(s, ts, n);
    }
    fn end(&mut self, s: StreamKey, ts: u64, how: StreamEnd) {
        self.inner.end(s, ts, how);
    }
    fn distrust(&mut self, s: StreamKey, ts: u64) {
        self.inner.distrust(s, ts);
    }
    fn busy(&self, s: StreamKey) -> bool {
        self.busy.contains(&s)
    }
}

/// An evicted connection that goes on is untrusted to its end, and one evicted
/// mid-request loses that request: eviction passes over connections mid-message.
#[test]
fn eviction_prefers_connections_that_are_not_mid_message() {
    let mut table = FlowTable::new(ReassemblyConfig {
        max_flows: 3,
        ..ReassemblyConfig::default()
    });
    let mut sink = BusySink {
        inner: RecordingSink::default(),
        busy: vec![key(0, client(1))],
    };
    for port in 1..=3 {
        table.push(&seg(client(port), 0, SYN, b""), &mut sink);
        table.push(&seg(client(port), 1, 0, b"x"), &mut sink);
    }
    // Client 1 is the least recently active, but mid-message: client 2 goes.
    table.push(&seg(client(4), 0, SYN, b""), &mut sink);
    assert!(sink.inner.ends(key(0, client(1))).is_empty());
    assert_eq!(sink.inner.ends(key(1, client(2))), vec![StreamEnd::Evicted]);
    assert_eq!(table.stats().flows_evicted_busy, 0);
    // A hole (bytes waiting out of order) is mid-message too.
    table.push(&seg(client(3), 5, 0, b"later"), &mut sink);
    table.push(&seg(client(5), 0, SYN, b""), &mut sink);
    // Client 4 (a bare SYN, so it gets no calls) went instead.
    assert!(sink.inner.ends(key(2, client(3))).is_empty());
    assert!(sink.inner.ends(key(0, client(1))).is_empty());
    assert_eq!(table.stats().flows_evicted, 2);
    // All mid-message: the least recently active goes, and is counted.
    sink.busy.push(key(4, client(5)));
    table.push(&seg(client(6), 0, SYN, b""), &mut sink);
    assert_eq!(sink.inner.ends(key(0, client(1))), vec![StreamEnd::Evicted]);
    assert_eq!(table.stats().flows_evicted, 3);
    assert_eq!(table.stats().flows_evicted_busy, 1);
}

#[test]
fn bare_acks_do_not_open_connections() {
    let mut h = Harness::default();
    h.push(c2s(), 1, 0, b"");
    h.push(c2s(), 1, FIN, b"");
    h.push(c2s(), 1, RST, b"");
    assert_eq!(h.table.flows(), 0);
    assert_eq!(h.table.stats().flows_opened, 0);
}

#[test]
fn syn_with_data_tfo_delivers_it() {
    let mut h = Harness::default();
    h.push(c2s(), 100, SYN, b"GET");
    h.push(c2s(), 104, 0, b" /");
    // The SYN retransmitted with the same data is a duplicate.
    h.push(c2s(), 100, SYN, b"GET");
    assert_eq!(h.sink.stream(key(0, c2s())), vec![data(0, c2s(), b"GET /")]);
    assert_eq!(h.table.stats().duplicates, 1);
    assert_eq!(h.table.stats().flows_opened, 1);
}

#[test]
fn out_of_order_is_buffered_until_the_hole_fills() {
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 4, 0, b"def");
    h.push(c2s(), 7, 0, b"ghi");
    assert!(h.sink.events.is_empty());
    assert_eq!(h.table.buffered_bytes(), 6);
    assert_eq!(h.table.stats().out_of_order, 2);
    h.push(c2s(), 1, 0, b"abc");
    assert_eq!(
        h.sink.events,
        vec![data(0, c2s(), b"abc"), data(0, c2s(), b"defghi")]
    );
    assert_eq!(h.table.buffered_bytes(), 0);
}

#[test]
fn duplicates_are_dropped_and_mismatching_retransmits_counted() {
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 1, 0, b"abcdef");
    h.push(c2s(), 1, 0, b"abcdef");
    assert_eq!(h.table.stats().duplicates, 1);
    assert_eq!(h.table.stats().retransmit_mismatch, 0);
    h.push(c2s(), 3, 0, b"cXe");
    assert_eq!(h.table.stats().duplicates, 2);
    assert_eq!(h.table.stats().retransmit_mismatch, 1);
    // Against buffered bytes too: the first copy wins.
    h.push(c2s(), 11, 0, b"klm");
    h.push(c2s(), 11, 0, b"kZm");
    assert_eq!(h.table.stats().retransmit_mismatch, 2);
    // A segment overlapping the buffered one as it fills the hole: buffered copy wins.
    h.push(c2s(), 7, 0, b"ghijkQm");
    assert_eq!(h.table.stats().retransmit_mismatch, 3);
    assert_eq!(h.sink.bytes(key(0, c2s())), b"abcdefghijklm");
}

#[test]
fn retransmits_into_a_skipped_hole_are_not_compared_with_stale_bytes() {
    let mut h = Harness::new(ReassemblyConfig {
        max_stream_buffer: 2,
        ..ReassemblyConfig::default()
    });
    h.handshake(0);
    h.push(c2s(), 1, 0, b"a");
    h.push(c2s(), 6, 0, b"xyz");
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![
            data(0, c2s(), b"a"),
            gap(0, c2s(), 4),
            data(0, c2s(), b"xyz")
        ]
    );
    // The hole's bytes arrive too late: dropped, and there is nothing to compare with.
    h.push(c2s(), 2, 0, b"bcde");
    assert_eq!(h.table.stats().duplicates, 1);
    assert_eq!(h.table.stats().retransmit_mismatch, 0);
    // Straddling the hole's end: the delivered part is compared.
    h.push(c2s(), 5, 0, b"eXyz");
    assert_eq!(h.table.stats().retransmit_mismatch, 1);
    assert_eq!(h.sink.bytes(key(0, c2s())), b"axyz");
}

#[test]
fn data_captured_before_its_syn_keeps_one_connection() {
    let mut h = Harness::default();
    h.push(c2s(), 301, 0, b"GET ");
    h.push(c2s(), 300, SYN, b"");
    h.push(c2s(), 305, 0, b"/");
    // Its first byte came before its SYN: it was delivered as picked up mid-way.
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![distrust(0, c2s()), data(0, c2s(), b"GET /")]
    );
    assert_eq!(h.table.stats().flows_opened, 1);
}

#[test]
fn overlapping_segments_are_trimmed() {
    let mut h = Harness::default();
    h.handshake(0);
    let s = b"0123456789ABCDEF";
    h.push(c2s(), 1 + 6, 0, &s[6..12]);
    h.push(c2s(), 1 + 3, 0, &s[3..9]);
    h.push(c2s(), 1 + 10, 0, &s[10..16]);
    h.push(c2s(), 1, 0, &s[0..5]);
    h.push(c2s(), 1 + 2, 0, &s[2..14]);
    assert_eq!(h.sink.bytes(key(0, c2s())), s);
    assert_eq!(h.table.stats().retransmit_mismatch, 0);
    assert_eq!(h.table.buffered_bytes(), 0);
}

#[test]
fn fin_out_of_order_ends_once_the_bytes_before_it_arrive() {
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 4, FIN, b"def");
    assert!(h.sink.events.is_empty());
    h.push(c2s(), 1, 0, b"abc");
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![data(0, c2s(), b"abcdef"), end(0, c2s(), StreamEnd::Fin)]
    );
    // Bytes past the FIN do not belong to the stream; the connection is still open
    // because the server has not finished.
    h.push(c2s(), 7, 0, b"zzz");
    assert_eq!(h.sink.ends(key(0, c2s())), vec![StreamEnd::Fin]);
    assert_eq!(h.table.flows(), 1);
}

#[test]
fn data_past_an_early_fin_is_cut() {
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 6, 0, b"fghij");
    assert_eq!(h.table.buffered_bytes(), 5);
    h.push(c2s(), 4, FIN, b"de");
    assert_eq!(
        h.table.buffered_bytes(),
        2,
        "bytes past the FIN are released"
    );
    h.push(c2s(), 1, 0, b"abc");
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![data(0, c2s(), b"abcde"), end(0, c2s(), StreamEnd::Fin)]
    );
}

#[test]
fn both_fins_close_and_late_retransmits_are_ignored() {
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 1, FIN, b"req");
    h.push(s2c(), 5001, FIN, b"resp");
    assert_eq!(h.table.flows(), 0);
    assert_eq!(h.table.stats().flows_closed, 1);
    h.push(c2s(), 1, 0, b"req");
    h.push(c2s(), 5, 0, b"");
    assert_eq!(
        h.table.flows(),
        0,
        "a retransmit after close is not a new stream"
    );
    assert_eq!(h.table.stats().duplicates, 1);
    h.flush();
    assert_eq!(h.sink.streams().len(), 2);
    assert_eq!(h.sink.ends(key(0, s2c())), vec![StreamEnd::Fin]);
}

#[test]
fn rst_ends_both_directions_after_delivering_with_gaps() {
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 1, 0, b"ab");
    h.push(c2s(), 6, 0, b"fg");
    h.push(s2c(), 5001, 0, b"resp");
    h.push(s2c(), 1, RST, b"");
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![
            data(0, c2s(), b"ab"),
            gap(0, c2s(), 3),
            data(0, c2s(), b"fg"),
            end(0, c2s(), StreamEnd::Rst),
        ]
    );
    assert_eq!(h.sink.ends(key(0, s2c())), vec![StreamEnd::Rst]);
    assert_eq!(h.table.flows(), 0);
    assert_eq!(h.table.buffered_bytes(), 0);
    assert_eq!(h.table.stats().gap_bytes, 3);
}

#[test]
fn new_syn_after_close_gets_a_new_conn_id() {
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 1, FIN, b"one");
    h.push(s2c(), 5001, FIN, b"");
    h.push(c2s(), 0, SYN, b"");
    assert_eq!(h.table.flows(), 0, "the old connection's SYN retransmitted");
    h.push(c2s(), 9000, SYN, b"");
    h.push(c2s(), 9001, 0, b"two");
    assert_eq!(h.sink.bytes(key(0, c2s())), b"one");
    assert_eq!(h.sink.bytes(key(1, c2s())), b"two");
    assert_eq!(h.table.stats().flows_opened, 2);
}

#[test]
fn syn_with_new_isn_after_half_close_replaces_the_connection() {
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 1, FIN, b"one");
    h.push(s2c(), 5001, 0, b"partial");
    // The stray SYN retransmit with the old ISN changes nothing.
    h.push(c2s(), 0, SYN, b"");
    assert_eq!(h.table.stats().flows_opened, 1);
    h.push(c2s(), 7000, SYN, b"");
    h.push(c2s(), 7001, 0, b"two");
    assert_eq!(h.sink.ends(key(0, c2s())), vec![StreamEnd::Fin]);
    assert_eq!(h.sink.ends(key(0, s2c())), vec![StreamEnd::Rst]);
    assert_eq!(h.sink.bytes(key(1, c2s())), b"two");
    assert_eq!(h.table.stats().flows_opened, 2);
    assert_eq!(h.table.stats().flows_closed, 1);
    assert_eq!(h.table.flows(), 1);
}

#[test]
fn handshake_restarted_before_data_keeps_the_connection() {
    let mut h = Harness::default();
    h.push(c2s(), 10, SYN, b"");
    h.push(c2s(), 500, SYN, b"");
    h.push(c2s(), 501, 0, b"x");
    assert_eq!(h.sink.bytes(key(0, c2s())), b"x");
    assert_eq!(h.table.stats().flows_opened, 1);
}

#[test]
fn least_recently_active_flow_is_evicted_at_max_flows() {
    let mut h = Harness::new(ReassemblyConfig {
        max_flows: 2,
        ..ReassemblyConfig::default()
    });
    h.push(client(1), 0, SYN, b"");
    h.push(client(1), 1, 0, b"a");
    h.push(client(2), 0, SYN, b"");
    h.push(client(2), 1, 0, b"b");
    h.push(client(3), 4, 0, b"zz"); // buffered out of order, then evicted
    h.push(client(3), 1, 0, b"c"); // conn 2: hole at 2..4 stays
                                   // client 1 is the least recently active now.
    h.push(client(4), 0, SYN, b"");
    assert_eq!(h.table.flows(), 2);
    assert_eq!(h.table.stats().flows_evicted, 2);
    assert_eq!(h.sink.ends(key(0, client(1))), vec![StreamEnd::Evicted]);
    assert_eq!(h.sink.ends(key(1, client(2))), vec![StreamEnd::Evicted]);
    assert!(h.sink.ends(key(2, client(3))).is_empty());
    h.push(client(2), 2, 0, b"late");
    assert_eq!(
        h.sink.bytes(key(4, client(2))),
        b"late",
        "evicted tuple starts over"
    );
}

/// Thousands of segments over a few connections: the activity order survives the
/// table's bookkeeping of old activity being swept many times over.
#[test]
fn eviction_order_holds_after_long_activity() {
    let mut h = Harness::new(ReassemblyConfig {
        max_flows: 5,
        ..ReassemblyConfig::default()
    });
    let mut next = [0u32; 6];
    let mut send = |h: &mut Harness, port: u16| {
        let seq = &mut next[usize::from(port)];
        h.push(client(port), *seq, 0, b"x");
        *seq += 1;
    };
    for round in 0..2000u16 {
        // Rotating and skewed, so each connection's entry goes stale again and again.
        for port in 1..=5 {
            send(&mut h, port);
            if (round + port) % 3 == 0 {
                send(&mut h, 6 - port);
            }
        }
    }
    for port in [3, 1, 5, 2, 4] {
        send(&mut h, port);
    }
    // Client 3 (conn 2, opened third) is now the least recently active.
    h.push(client(9), 0, SYN, b"");
    assert_eq!(h.table.stats().flows_evicted, 1);
    assert_eq!(h.sink.ends(key(2, client(3))), vec![StreamEnd::Evicted]);
    send(&mut h, 1);
    h.push(client(10), 0, SYN, b"");
    // Then client 5 (conn 4); client 1 was just active.
    assert_eq!(h.sink.ends(key(4, client(5))), vec![StreamEnd::Evicted]);
    assert_eq!(h.table.stats().flows_evicted, 2);
    assert_eq!(h.table.flows(), 5);
}

#[test]
fn eviction_follows_recent_activity() {
    let mut h = Harness::new(ReassemblyConfig {
        max_flows: 2,
        ..ReassemblyConfig::default()
    });
    h.push(client(1), 1, 0, b"a");
    h.push(client(2), 1, 0, b"b");
    h.push(client(1), 2, 0, b"a");
    h.push(client(3), 1, 0, b"c");
    assert_eq!(h.sink.ends(key(1, client(2))), vec![StreamEnd::Evicted]);
    assert!(h.sink.ends(key(0, client(1))).is_empty());
}

#[test]
fn syn_flood_stays_bounded_and_silent() {
    let mut h = Harness::new(ReassemblyConfig {
        max_flows: 100,
        ..ReassemblyConfig::default()
    });
    for port in 1..=10_000u16 {
        h.push(client(port), u32::from(port) * 7, SYN, b"");
    }
    assert_eq!(h.table.flows(), 100);
    assert_eq!(h.table.stats().flows_evicted, 9_900);
    assert!(
        h.sink.events.is_empty(),
        "streams without data get no calls"
    );
}

#[test]
fn stream_buffer_cap_gives_up_the_hole() {
    let mut h = Harness::new(ReassemblyConfig {
        max_stream_buffer: 10,
        ..ReassemblyConfig::default()
    });
    h.handshake(0);
    h.push(c2s(), 1, 0, b"a");
    h.push(c2s(), 3, 0, b"cdefgh");
    h.push(c2s(), 12, 0, b"lmnop");
    assert_eq!(h.table.stats().buffer_overflows, 1);
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![
            data(0, c2s(), b"a"),
            gap(0, c2s(), 1),
            data(0, c2s(), b"cdefgh")
        ]
    );
    assert_eq!(h.table.buffered_bytes(), 5);
    h.push(c2s(), 9, 0, b"ijk");
    assert_eq!(h.sink.bytes(key(0, c2s())), b"acdefghijklmnop");
}

#[test]
fn total_buffer_cap_resynchronises_the_pushing_stream() {
    let mut h = Harness::new(ReassemblyConfig {
        max_total_buffer: 10,
        ..ReassemblyConfig::default()
    });
    h.push(client(1), 0, SYN, b"");
    h.push(client(2), 0, SYN, b"");
    h.push(client(1), 3, 0, b"123456");
    h.push(client(2), 3, 0, b"abcdef");
    assert!(h.table.buffered_bytes() <= 10);
    assert_eq!(h.table.buffered_bytes(), 6);
    assert_eq!(h.table.stats().buffer_overflows, 1);
    assert_eq!(
        h.sink.stream(key(1, client(2))),
        vec![gap(1, client(2), 2), data(1, client(2), b"abcdef")]
    );
    assert!(h.sink.stream(key(0, client(1))).is_empty());
}

#[test]
fn too_many_pieces_give_up_holes() {
    let mut h = Harness::new(ReassemblyConfig {
        max_stream_chunks: 4,
        ..ReassemblyConfig::default()
    });
    h.handshake(0);
    for i in 0..5u32 {
        h.push(c2s(), 2 + 2 * i, 0, b"x");
    }
    assert_eq!(h.table.stats().buffer_overflows, 1);
    assert_eq!(h.sink.stream(key(0, c2s()))[0], gap(0, c2s(), 1));
}

#[test]
fn far_ahead_segment_is_dropped_without_allocating() {
    let mut h = Harness::new(ReassemblyConfig {
        max_ahead: 1000,
        ..ReassemblyConfig::default()
    });
    h.handshake(0);
    h.push(c2s(), 1 + 1001, 0, b"far");
    h.push(c2s(), 1 + 1000, 0, b"edge");
    assert_eq!(h.table.stats().too_far_ahead, 1);
    assert_eq!(h.table.buffered_bytes(), 4);
    h.push(c2s(), 1, 0, b"ok");
    h.flush();
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![
            data(0, c2s(), b"ok"),
            gap(0, c2s(), 998),
            data(0, c2s(), b"edge"),
            end(0, c2s(), StreamEnd::Flushed),
        ]
    );
}

#[test]
fn snaplen_cut_is_a_known_hole() {
    let mut h = Harness::default();
    h.handshake(0);
    let mut cut = seg(c2s(), 1, 0, b"abc");
    cut.missing = 4;
    h.push_seg(cut);
    h.push(c2s(), 8, 0, b"hij");
    // Out of order: the cut segment lands after the rest and its hole is reported too.
    let mut late = seg(c2s(), 15, 0, b"o");
    late.missing = 2;
    h.push_seg(late);
    h.push(c2s(), 11, 0, b"klmn");
    h.push(c2s(), 18, 0, b"rs");
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![
            data(0, c2s(), b"abc"),
            gap(0, c2s(), 4),
            data(0, c2s(), b"hijklmno"),
            gap(0, c2s(), 2),
            data(0, c2s(), b"rs"),
        ]
    );
    assert_eq!(h.table.stats().gaps, 2);
    assert_eq!(h.table.buffered_bytes(), 0);
}

#[test]
fn ports_filter_delivers_only_towards_the_server() {
    let mut h = Harness::new(ReassemblyConfig {
        ports: Some(vec![80]),
        ..ReassemblyConfig::default()
    });
    let other = FlowKey {
        src: addr("10.0.0.1:40001"),
        dst: addr("10.0.0.2:443"),
    };
    h.push(other, 1, 0, b"tls");
    assert_eq!(h.table.flows(), 0);
    h.handshake(0);
    h.push(c2s(), 1, FIN, b"GET");
    h.push(s2c(), 5001, 0, b"200 OK");
    assert_eq!(h.sink.streams(), vec![key(0, c2s())]);
    h.push(s2c(), 5007, FIN, b"");
    assert_eq!(
        h.table.flows(),
        0,
        "the untracked direction's FIN still closes"
    );
    assert_eq!(h.table.stats().flows_closed, 1);
    assert_eq!(h.table.buffered_bytes(), 0);
}

#[test]
fn idle_flows_expire() {
    let mut h = Harness::new(ReassemblyConfig {
        idle_timeout_nanos: 100,
        ..ReassemblyConfig::default()
    });
    let mut s = seg(client(1), 1, 0, b"a");
    s.ts_nanos = 10;
    h.push_seg(s);
    let mut s = seg(client(2), 1, 0, b"b");
    s.ts_nanos = 50;
    h.push_seg(s);
    let mut s = seg(client(1), 3, 0, b"c");
    s.ts_nanos = 60;
    h.push_seg(s);
    h.table.expire(150, &mut h.sink);
    assert_eq!(
        h.table.flows(),
        2,
        "idle for exactly the timeout is not over it"
    );
    h.table.expire(151, &mut h.sink);
    assert_eq!(h.table.flows(), 1);
    h.table.expire(160, &mut h.sink);
    assert_eq!(h.table.flows(), 1);
    assert_eq!(
        h.sink.stream(key(1, client(2))),
        vec![
            distrust(1, client(2)),
            data(1, client(2), b"b"),
            end(1, client(2), StreamEnd::IdleTimeout)
        ]
    );
    h.table.expire(161, &mut h.sink);
    assert_eq!(h.table.flows(), 0);
    assert_eq!(
        h.sink.stream(key(0, client(1))),
        vec![
            distrust(0, client(1)),
            data(0, client(1), b"a"),
            gap(0, client(1), 1),
            data(0, client(1), b"c"),
            end(0, client(1), StreamEnd::IdleTimeout),
        ]
    );
    assert_eq!(h.table.stats().flows_timed_out, 2);
}

#[test]
fn flush_ends_every_stream_with_data() {
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 1, 0, b"a");
    h.push(c2s(), 3, FIN, b"c");
    h.push(s2c(), 5001, 0, b"x");
    h.push(client(9), 0, SYN, b"");
    h.flush();
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![
            data(0, c2s(), b"a"),
            gap(0, c2s(), 1),
            data(0, c2s(), b"c"),
            end(0, c2s(), StreamEnd::Flushed),
        ]
    );
    assert_eq!(h.sink.ends(key(0, s2c())), vec![StreamEnd::Flushed]);
    assert_eq!(h.sink.streams().len(), 2);
    assert_eq!(h.table.flows(), 0);
    let st = h.table.stats();
    assert_eq!(st.flows_opened, st.flows_flushed);
}

#[test]
fn fin_with_missing_bytes_before_it_reports_the_tail_gap() {
    let mut h = Harness::default();
    h.handshake(0);
    h.push(c2s(), 1, 0, b"ab");
    h.push(c2s(), 6, FIN, b"");
    h.flush();
    assert_eq!(
        h.sink.stream(key(0, c2s())),
        vec![
            data(0, c2s(), b"ab"),
            gap(0, c2s(), 3),
            end(0, c2s(), StreamEnd::Flushed),
        ]
    );
}

// ---- property tests ----

/// One direction's plan: the stream, how it is cut, extra overlapping copies, which
/// segments are lost.
#[derive(Debug, Clone)]
struct Plan {
    isn: u32,
    stream: Vec<u8>,
    /// Ranges sent, with FIN on the ones ending at the stream's end when `fin`.
    segments: Vec<(usize, usize)>,
    fin: bool,
}

fn isn_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (u32::MAX - 2000)..=u32::MAX]
}

fn plan_strategy() -> impl Strategy<Value = Plan> {
    (
        isn_strategy(),
        prop::collection::vec(any::<u8>(), 1..600),
        any::<bool>(),
    )
        .prop_flat_map(|(isn, stream, fin)| {
            let n = stream.len();
            (
                Just(isn),
                Just(stream),
                prop::collection::vec(1..=n, 0..12),
                prop::collection::vec((0..n, 1..200usize), 0..12),
                prop::collection::vec(any::<prop::sample::Index>(), 0..6),
                Just(fin),
            )
        })
        .prop_map(|(isn, stream, mut cuts, extras, repeats, fin)| {
            let n = stream.len();
            cuts.push(0);
            cuts.push(n);
            cuts.sort_unstable();
            cuts.dedup();
            let mut segments: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1])).collect();
            segments.extend(extras.into_iter().map(|(a, len)| (a, (a + len).min(n))));
            // Exact duplicates (retransmits) of some of them.
            let again: Vec<(usize, usize)> = repeats.iter().map(|i| *i.get(&segments)).collect();
            segments.extend(again);
            Plan {
                isn,
                stream,
                segments,
                fin,
            }
        })
}

struct Sent {
    flow: FlowKey,
    seq: u32,
    fin: bool,
    bytes: Vec<u8>,
    range: (usize, usize),
}

fn segments_of(plan: &Plan, flow: FlowKey) -> Vec<Sent> {
    let n = plan.stream.len();
    plan.segments
        .iter()
        .map(|&(a, b)| Sent {
            flow,
            seq: plan.isn.wrapping_add(1).wrapping_add(a as u32),
            fin: plan.fin && b == n,
            bytes: plan.stream[a..b].to_vec(),
            range: (a, b),
        })
        .collect()
}

/// Orders `items` by the random keys (a permutation), keeping `keep[i]` ones only.
fn arrange(mut items: Vec<Sent>, order: &[u32], keep: &[bool]) -> Vec<Sent> {
    let mut keyed: Vec<(u32, usize, Sent)> = items
        .drain(..)
        .enumerate()
        .filter(|(i, _)| keep.get(*i).copied().unwrap_or(true))
        .map(|(i, s)| (order.get(i).copied().unwrap_or(0), i, s))
        .collect();
    keyed.sort_by_key(|(k, i, _)| (*k, *i));
    keyed.into_iter().map(|(_, _, s)| s).collect()
}

/// The slow model: known bytes by position; data runs and gap runs up to the stream's
/// known length (the FIN when one arrived, else the furthest byte seen).
fn model(plan: &Plan, kept: &[&Sent], conn: u64, flow: FlowKey) -> Vec<RecordedEvent> {
    let n = plan.stream.len();
    let mut known: Vec<Option<u8>> = vec![None; n];
    let mut len = 0;
    let mut fin = false;
    for s in kept {
        let (a, b) = s.range;
        for (slot, byte) in known[a..b].iter_mut().zip(&plan.stream[a..b]) {
            *slot = Some(*byte);
        }
        len = len.max(s.range.1);
        fin |= s.fin;
    }
    if fin {
        len = n;
    }
    let k = key(conn, flow);
    let mut out: Vec<RecordedEvent> = Vec::new();
    for b in &known[..len] {
        match (b, out.last_mut()) {
            (Some(b), Some(RecordedEvent::Data(_, run))) => run.push(*b),
            (Some(b), _) => out.push(RecordedEvent::Data(k, vec![*b])),
            (None, Some(RecordedEvent::Gap(_, run))) => *run += 1,
            (None, _) => out.push(RecordedEvent::Gap(k, 1)),
        }
    }
    if !out.is_empty() {
        let complete = fin && known.iter().all(Option::is_some);
        out.push(RecordedEvent::End(
            k,
            if complete {
                StreamEnd::Fin
            } else {
                StreamEnd::Flushed
            },
        ));
    }
    out
}

fn run_both(
    up: &Plan,
    down: &Plan,
    order: &[u32],
    keep: &[bool],
) -> (RecordingSink, FlowTable, Vec<Sent>) {
    let mut all = segments_of(up, c2s());
    all.extend(segments_of(down, s2c()));
    let sent = arrange(all, order, keep);
    let mut table = FlowTable::new(ReassemblyConfig::default());
    let mut sink = RecordingSink::default();
    table.push(&seg(c2s(), up.isn, SYN, b""), &mut sink);
    table.push(&seg(s2c(), down.isn, SYN, b""), &mut sink);
    for s in &sent {
        let flags = if s.fin { FIN } else { 0 };
        table.push(&seg(s.flow, s.seq, flags, &s.bytes), &mut sink);
    }
    table.flush(u64::MAX, &mut sink);
    (sink, table, sent)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn any_arrival_order_without_loss_delivers_the_stream(
        up in plan_strategy(),
        down in plan_strategy(),
        order in prop::collection::vec(any::<u32>(), 0..64),
    ) {
        let (sink, table, _) = run_both(&up, &down, &order, &[]);
        for (plan, flow) in [(&up, c2s()), (&down, s2c())] {
            let k = key(0, flow);
            let how = if plan.fin { StreamEnd::Fin } else { StreamEnd::Flushed };
            prop_assert_eq!(
                sink.stream(k),
                vec![RecordedEvent::Data(k, plan.stream.clone()), RecordedEvent::End(k, how)]
            );
        }
        prop_assert_eq!(table.stats().gaps, 0);
        prop_assert_eq!(table.stats().retransmit_mismatch, 0);
        prop_assert_eq!(table.buffered_bytes(), 0);
        prop_assert_eq!(sink.streams().len(), 2);
    }

    #[test]
    fn with_loss_delivery_matches_the_model(
        up in plan_strategy(),
        down in plan_strategy(),
        order in prop::collection::vec(any::<u32>(), 0..64),
        keep in prop::collection::vec(prop::bool::weighted(0.7), 0..64),
    ) {
        let (sink, table, sent) = run_both(&up, &down, &order, &keep);
        for (plan, flow) in [(&up, c2s()), (&down, s2c())] {
            let kept: Vec<&Sent> = sent.iter().filter(|s| s.flow == flow).collect();
            prop_assert_eq!(sink.stream(key(0, flow)), model(plan, &kept, 0, flow));
        }
        prop_assert!(sink.streams().iter().all(|k| k.conn == 0));
        prop_assert_eq!(table.buffered_bytes(), 0);
        prop_assert_eq!(table.stats().retransmit_mismatch, 0);
    }

    #[test]
    fn small_caps_hold_under_arbitrary_traffic(
        ops in prop::collection::vec(
            (0..4u16, any::<bool>(), 0..3u8, 0u32..400, 0usize..40, any::<u8>()),
            1..300,
        ),
    ) {
        let config = ReassemblyConfig {
            max_flows: 3,
            max_stream_buffer: 64,
            max_total_buffer: 100,
            max_stream_chunks: 8,
            max_ahead: 200,
            ..ReassemblyConfig::default()
        };
        let mut table = FlowTable::new(config);
        let mut sink = RecordingSink::default();
        let payload = [7u8; 40];
        for (i, &(port, from_server, kind, seq, len, extra)) in ops.iter().enumerate() {
            let flow = if from_server { client(port).reversed() } else { client(port) };
            let flags = match kind {
                0 if extra % 5 == 0 => SYN,
                1 if extra % 7 == 0 => FIN,
                2 if extra % 31 == 0 => RST,
                _ => 0,
            };
            let mut s = seg(flow, seq, flags, &payload[..len]);
            s.ts_nanos = i as u64;
            s.missing = u32::from(extra % 4 == 1) * u32::from(extra);
            table.push(&s, &mut sink);
            prop_assert!(table.buffered_bytes() <= 100 + 40);
            prop_assert!(table.flows() <= 3);
        }
        table.flush(u64::MAX, &mut sink);
        prop_assert_eq!(table.buffered_bytes(), 0);
        prop_assert_eq!(table.flows(), 0);
        for k in sink.streams() {
            let events: Vec<&RecordedEvent> = sink
                .events
                .iter()
                .filter(|e| matches!(e, RecordedEvent::Data(s, _) | RecordedEvent::Gap(s, _) | RecordedEvent::End(s, _) if *s == k))
                .collect();
            prop_assert!(matches!(events.last(), Some(RecordedEvent::End(..))), "{:?} does not end", k);
            prop_assert_eq!(sink.ends(k).len(), 1);
        }
        let st = table.stats();
        prop_assert_eq!(
            st.flows_opened,
            st.flows_closed + st.flows_timed_out + st.flows_evicted + st.flows_flushed
        );
    }
}

/// Live capture loses a packet for good when its ring overflows: the hole must not hold
/// back the rest of the connection until a buffer cap or the connection's end.
#[test]
fn hole_open_past_the_hole_timeout_is_given_up() {
    let config = ReassemblyConfig {
        hole_timeout_nanos: 2_000_000_000,
        ..ReassemblyConfig::default()
    };
    let data_of = |sink: &RecordingSink| -> Vec<u8> {
        sink.events
            .iter()
            .flat_map(|e| match e {
                RecordedEvent::Data(_, d) => d.clone(),
                _ => Vec::new(),
            })
            .collect()
    };
    let gaps = |sink: &RecordingSink| -> Vec<u64> {
        sink.events
            .iter()
            .filter_map(|e| match e {
                RecordedEvent::Gap(_, n) => Some(*n),
                _ => None,
            })
            .collect()
    };
    let at = |ts: u64, seq: u32, payload: &'static [u8]| Segment {
        ts_nanos: ts,
        ..seg(c2s(), seq, 0, payload)
    };

    // Driven by later segments: "bbbb" (seq 105) is lost; "cccc" and "dddd" wait behind
    // the hole until a segment comes more than 2 s after the hole opened.
    let mut h = Harness::new(config.clone());
    h.push_seg(at(1_000, 101, b"aaaa"));
    h.push_seg(at(2_000, 109, b"cccc"));
    h.push_seg(at(1_500_000_000, 113, b"dddd"));
    assert_eq!(
        data_of(&h.sink),
        b"aaaa",
        "held behind the hole before the timeout"
    );
    h.push_seg(at(2_100_000_000, 117, b"eeee"));
    assert_eq!(data_of(&h.sink), b"aaaaccccddddeeee");
    assert_eq!(gaps(&h.sink), vec![4]);
    assert_eq!(h.table.stats().holes_timed_out, 1);

    // Driven by the clock alone: the connection went quiet (or sent its FIN) behind
    // the hole; a sweep at a later time delivers what waited and ends the stream.
    let mut h = Harness::new(config);
    h.push_seg(at(1_000, 101, b"aaaa"));
    h.push_seg(at(2_000, 109, b"cccc"));
    h.push_seg(at(3_000, 113, &[]));
    h.table.push(
        &Segment {
            flags: TcpFlags(FIN | ACK),
            ..at(3_000, 113, b"")
        },
        &mut h.sink,
    );
    h.table.give_up_stale_holes(1_000_000_000, &mut h.sink);
    assert_eq!(data_of(&h.sink), b"aaaa", "too early to give the hole up");
    h.table.give_up_stale_holes(2_000_003_001, &mut h.sink);
    assert_eq!(data_of(&h.sink), b"aaaacccc");
    assert_eq!(gaps(&h.sink), vec![4]);
    assert!(
        matches!(
            h.sink.events.last(),
            Some(RecordedEvent::End(_, StreamEnd::Fin))
        ),
        "{:?}",
        h.sink.events
    );
}

/// A burst of losses leaves many holes: once the first times out, all buffered data
/// goes out (a hole each way would hold the stream for one timeout per hole).
#[test]
fn every_hole_goes_once_the_first_times_out() {
    let mut h = Harness::new(ReassemblyConfig {
        hole_timeout_nanos: 2_000_000_000,
        ..ReassemblyConfig::default()
    });
    let at = |ts: u64, seq: u32, payload: &'static [u8]| Segment {
        ts_nanos: ts,
        ..seg(c2s(), seq, 0, payload)
    };
    h.push_seg(at(1, 101, b"aa"));
    // Holes at 103..105, 107..109 and 111..113.
    h.push_seg(at(2, 105, b"cc"));
    h.push_seg(at(3, 109, b"ee"));
    h.push_seg(at(4, 113, b"gg"));
    h.table.give_up_stale_holes(2_000_000_003, &mut h.sink);
    let events = &h.sink.events;
    let data: Vec<u8> = events
        .iter()
        .flat_map(|e| match e {
            RecordedEvent::Data(_, d) => d.clone(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(data, b"aacceegg");
    let gaps: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            RecordedEvent::Gap(_, n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, vec![2, 2, 2]);
    assert_eq!(h.table.stats().holes_timed_out, 3);
}
