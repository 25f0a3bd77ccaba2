//! The table of live connections: lookup by unordered 4-tuple, connection ids, the port
//! filter, SYN/FIN/RST lifecycle, LRU eviction at `max_flows` and idle expiry.
//! Connections live in a slab (slab.rs) so that one carrying no byte costs a fixed few
//! hundred bytes at most: that is what a SYN flood multiplies.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use super::slab::LruSlab;
use super::stream::{Ctx, Direction, SynOutcome};
use super::{ReassemblyConfig, ReassemblyStats, StreamEnd, StreamKey, StreamSink};
use crate::decode::{FlowKey, Segment};

/// Unordered 4-tuple: the lower address first. Direction 0 is lower -> higher.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ConnKey(SocketAddr, SocketAddr);

// Hashed several times per packet: IPv4 pairs go in as two words instead of field by
// field through `SocketAddr`'s derived `Hash` (a tenth of `inspect` with it). Equal keys
// hash equal either way.
impl Hash for ConnKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match (self.0, self.1) {
            (SocketAddr::V4(a), SocketAddr::V4(b)) => {
                state.write_u64(u64::from(a.ip().to_bits()) << 32 | u64::from(b.ip().to_bits()));
                state.write_u32(u32::from(a.port()) << 16 | u32::from(b.port()));
            }
            (a, b) => {
                a.hash(state);
                b.hash(state);
            }
        }
    }
}

#[derive(Default)]
struct Conn {
    id: u64,
    last_ts: u64,
    dirs: [Direction; 2],
}

/// What is remembered of a closed connection.
#[derive(Clone, Copy, Default)]
struct Closed {
    at: u64,
    /// Per direction, so a retransmitted SYN of the old connection is not a new one.
    isn: [Option<u32>; 2],
}

/// Entries a table keeps at most of each kind (slot numbers are `u32`).
const MAX_ENTRIES: usize = 1 << 31;

/// What the directions of every connection share while one of them handles an event.
struct Shared {
    config: ReassemblyConfig,
    stats: ReassemblyStats,
    buffered: usize,
}

impl Shared {
    /// The context direction `d` of connection `conn` (4-tuple `key`) runs in at `ts`.
    fn ctx<'a, S>(
        &'a mut self,
        sink: &'a mut S,
        conn: u64,
        key: ConnKey,
        d: usize,
        ts: u64,
    ) -> Ctx<'a, S> {
        Ctx {
            sink,
            stats: &mut self.stats,
            total: &mut self.buffered,
            config: &self.config,
            key: StreamKey {
                conn,
                flow: dir_flow(key, d),
            },
            ts,
        }
    }

    fn max_entries(&self) -> usize {
        self.config.max_flows.clamp(1, MAX_ENTRIES)
    }
}

/// Reassembles TCP byte streams from segments, per direction, within fixed caps.
///
/// Each connection (unordered 4-tuple) gets a fresh `conn` id; each watched direction is
/// a stream. In-order bytes go to the sink straight from the segment; out-of-order bytes
/// wait in a bounded buffer. Bytes that will never come (lost, cut by the snaplen, or
/// given up to stay under a cap) are reported once as a `gap` just before the next data
/// or the end. A stream that received any `data` or `gap` gets exactly one `end`;
/// streams that never carried a byte get no calls at all.
///
/// A connection that carried no byte yet (a SYN, a flood of them) is one slab slot of
/// fixed size and a bucket of the index; a direction allocates only when bytes or a FIN
/// need it, and gives that back when it ends.
pub struct FlowTable {
    shared: Shared,
    /// Live connections, least recently active first: the first is the one to evict or
    /// the first candidate to expire.
    conns: LruSlab<ConnKey, Conn>,
    next_conn: u64,
    /// Recently closed 4-tuples, oldest first, so a retransmit after FIN/RST is not
    /// taken for a new connection picked up mid-stream. Bounded by `max_flows`.
    closed: LruSlab<ConnKey, Closed>,
}

/// Hands `seg` to its direction of `conn`; true when both directions have now ended.
fn feed<S: StreamSink>(
    conn: &mut Conn,
    d: usize,
    key: ConnKey,
    seg: &Segment<'_>,
    sink: &mut S,
    shared: &mut Shared,
) -> bool {
    conn.last_ts = conn.last_ts.max(seg.ts_nanos);
    let mut ctx = shared.ctx(sink, conn.id, key, d, seg.ts_nanos);
    conn.dirs[d].segment(
        &mut ctx,
        seg.seq,
        seg.flags.syn(),
        seg.payload,
        seg.missing,
        seg.flags.fin(),
    );
    conn.dirs.iter().all(Direction::ended)
}

/// How many of the least recently active connections eviction looks at for one that is
/// not mid-message: enough to pass over a few slow uploads, few enough that a flood of
/// new connections costs the same per connection.
const EVICTION_CANDIDATES: usize = 8;

fn conn_key(flow: FlowKey) -> (ConnKey, usize) {
    if flow.src <= flow.dst {
        (ConnKey(flow.src, flow.dst), 0)
    } else {
        (ConnKey(flow.dst, flow.src), 1)
    }
}

fn dir_flow(key: ConnKey, dir: usize) -> FlowKey {
    let flow = FlowKey {
        src: key.0,
        dst: key.1,
    };
    if dir == 0 {
        flow
    } else {
        flow.reversed()
    }
}

impl FlowTable {
    pub fn new(config: ReassemblyConfig) -> Self {
        Self {
            shared: Shared {
                config,
                stats: ReassemblyStats::default(),
                buffered: 0,
            },
            conns: LruSlab::new(),
            next_conn: 0,
            closed: LruSlab::new(),
        }
    }

    pub fn stats(&self) -> &ReassemblyStats {
        &self.shared.stats
    }

    /// Live connections.
    pub fn flows(&self) -> usize {
        self.conns.len()
    }

    /// Out-of-order payload bytes held, all flows.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.buffered
    }

    fn watched(&self, flow: FlowKey) -> bool {
        let config = &self.shared.config;
        config.ports.as_ref().is_none_or(|ports| {
            ports.contains(&flow.dst.port())
                || (config.responses && ports.contains(&flow.src.port()))
        })
    }

    pub fn push<S: StreamSink>(&mut self, seg: &Segment<'_>, sink: &mut S) {
        self.shared.stats.segments += 1;
        let (key, d) = conn_key(seg.flow);
        let deliver = [
            self.watched(dir_flow(key, 0)),
            self.watched(dir_flow(key, 1)),
        ];
        if !deliver[0] && !deliver[1] {
            return;
        }
        let flags = seg.flags;
        let ts = seg.ts_nanos;
        let found = self.conns.find(&key);
        if !flags.syn() && !flags.rst() {
            // Most segments: a known connection, one lookup.
            if let Some(slot) = found {
                self.conns.touch(slot);
                let conn = self.conns.get_mut(slot);
                if feed(conn, d, key, seg, sink, &mut self.shared) {
                    self.close(slot, ts, sink);
                }
                return;
            }
        }
        let has_data = !seg.payload.is_empty() || seg.missing > 0;

        let mut slot = match found {
            Some(slot) => slot,
            None => {
                if let Some(c) = self.closed.find(&key) {
                    let closed = *self.closed.get(c);
                    let recent =
                        ts.saturating_sub(closed.at) <= self.shared.config.idle_timeout_nanos;
                    let old_syn = flags.syn() && closed.isn[d] == Some(seg.seq);
                    if recent && (old_syn || !flags.syn()) {
                        if has_data || old_syn {
                            self.shared.stats.duplicates += 1;
                        }
                        return;
                    }
                    self.closed.remove(c);
                }
                // A bare ACK/FIN/RST says nothing about where a stream starts.
                if flags.rst() || !(flags.syn() || has_data) {
                    return;
                }
                self.open(key, deliver, ts, sink)
            }
        };
        if flags.syn() {
            match self.conns.get_mut(slot).dirs[d].on_syn(seg.seq) {
                // With a payload, the data path counts the duplicate.
                SynOutcome::Duplicate if !has_data => self.shared.stats.duplicates += 1,
                SynOutcome::Conflict => {
                    // The old connection ended without us seeing it all; the peers only
                    // reuse a 4-tuple once the previous one is closed.
                    self.remove(slot, ts, sink, |dir| {
                        if dir.fin_seen() {
                            StreamEnd::Fin
                        } else {
                            StreamEnd::Rst
                        }
                    });
                    self.shared.stats.flows_closed += 1;
                    slot = self.open(key, deliver, ts, sink);
                    self.conns.get_mut(slot).dirs[d].on_syn(seg.seq);
                }
                SynOutcome::Duplicate | SynOutcome::Fresh => {}
            }
            if flags.ack() {
                // A SYN-ACK acknowledges the peer's ISN: where the peer's stream starts
                // is known even when its SYN was not captured.
                self.conns.get_mut(slot).dirs[1 - d].learn_isn(seg.ack.wrapping_sub(1));
            }
        }
        self.conns.touch(slot);
        if flags.rst() {
            // An RST's payload (diagnostic text, RFC 1122) is not stream data.
            let isn = self.remove(slot, ts, sink, |_| StreamEnd::Rst);
            self.shared.stats.flows_closed += 1;
            self.remember_closed(key, ts, isn);
            return;
        }
        let conn = self.conns.get_mut(slot);
        if feed(conn, d, key, seg, sink, &mut self.shared) {
            self.close(slot, ts, sink);
        }
    }

    /// Both directions ended with FIN.
    fn close<S: StreamSink>(&mut self, slot: u32, ts: u64, sink: &mut S) {
        let key = self.conns.key(slot);
        let isn = self.remove(slot, ts, sink, |_| StreamEnd::Fin);
        self.shared.stats.flows_closed += 1;
        self.remember_closed(key, ts, isn);
    }

    /// Ends connections idle for longer than the timeout. Walks from the least recently
    /// active and stops at the first live connection, so a call costs O(expired).
    /// Timestamps are assumed to be roughly monotonic: a connection touched later but
    /// with an older timestamp waits until the ones before it expire.
    pub fn expire<S: StreamSink>(&mut self, now_nanos: u64, sink: &mut S) {
        let idle_timeout = self.shared.config.idle_timeout_nanos;
        while let Some(slot) = self.conns.oldest() {
            if now_nanos.saturating_sub(self.conns.get(slot).last_ts) <= idle_timeout {
                break;
            }
            self.remove(slot, now_nanos, sink, |_| StreamEnd::IdleTimeout);
            self.shared.stats.flows_timed_out += 1;
        }
        while let Some(slot) = self.closed.oldest() {
            if now_nanos.saturating_sub(self.closed.get(slot).at) <= idle_timeout {
                break;
            }
            self.closed.remove(slot);
        }
    }

    /// Gives up holes open longer than the hole timeout at `now_nanos`, in connections
    /// that got no segment since (a live capture that lost a packet, then went quiet or
    /// closed). Visits every connection: call it about once a second, not per packet.
    pub fn give_up_stale_holes<S: StreamSink>(&mut self, now_nanos: u64, sink: &mut S) {
        let mut ended = Vec::new();
        for slot in 0..self.conns.slot_count() {
            if !self.conns.is_live(slot) {
                continue;
            }
            let key = self.conns.key(slot);
            let conn = self.conns.get_mut(slot);
            if !conn.dirs.iter().any(Direction::has_hole) {
                continue;
            }
            for (d, dir) in conn.dirs.iter_mut().enumerate() {
                dir.tick(&mut self.shared.ctx(&mut *sink, conn.id, key, d, now_nanos));
            }
            if conn.dirs.iter().all(Direction::ended) {
                ended.push(slot);
            }
        }
        for slot in ended {
            self.close(slot, now_nanos, sink);
        }
    }

    /// End of capture: every stream gets what can be delivered (holes as gaps) and ends
    /// with `Flushed`; the table is empty afterwards.
    pub fn flush<S: StreamSink>(&mut self, now_nanos: u64, sink: &mut S) {
        while let Some(slot) = self.conns.oldest() {
            self.remove(slot, now_nanos, sink, |_| StreamEnd::Flushed);
            self.shared.stats.flows_flushed += 1;
        }
        self.conns.clear();
        self.closed.clear();
    }

    fn open<S: StreamSink>(
        &mut self,
        key: ConnKey,
        deliver: [bool; 2],
        ts: u64,
        sink: &mut S,
    ) -> u32 {
        while self.conns.len() >= self.shared.max_entries() {
            let Some((victim, busy)) = self.eviction_victim(sink) else {
                break;
            };
            self.remove(victim, ts, sink, |_| StreamEnd::Evicted);
            self.shared.stats.flows_evicted += 1;
            if busy {
                self.shared.stats.flows_evicted_busy += 1;
            }
        }
        let id = self.next_conn;
        self.next_conn += 1;
        self.shared.stats.flows_opened += 1;
        self.conns.insert(
            key,
            Conn {
                id,
                last_ts: ts,
                dirs: [Direction::new(deliver[0]), Direction::new(deliver[1])],
            },
        )
    }

    /// The connection to evict: the least recently active of the oldest few that is not
    /// mid-message (an evicted connection that goes on is untrusted to its end, and one
    /// caught mid-request loses that request too); the oldest when all are. With whether
    /// it was mid-message.
    fn eviction_victim<S: StreamSink>(&self, sink: &S) -> Option<(u32, bool)> {
        let oldest = self.conns.oldest()?;
        let mut candidate = Some(oldest);
        for _ in 0..EVICTION_CANDIDATES {
            let Some(slot) = candidate else {
                break;
            };
            let key = self.conns.key(slot);
            let conn = self.conns.get(slot);
            let busy = conn.dirs.iter().enumerate().any(|(d, dir)| {
                let stream = StreamKey {
                    conn: conn.id,
                    flow: dir_flow(key, d),
                };
                dir.busy(sink, stream)
            });
            if !busy {
                return Some((slot, false));
            }
            candidate = self.conns.newer(slot);
        }
        Some((oldest, true))
    }

    fn remove<S: StreamSink>(
        &mut self,
        slot: u32,
        ts: u64,
        sink: &mut S,
        how: impl Fn(&Direction) -> StreamEnd,
    ) -> [Option<u32>; 2] {
        let key = self.conns.key(slot);
        let mut conn = self.conns.remove(slot);
        for (d, dir) in conn.dirs.iter_mut().enumerate() {
            let end = how(dir);
            dir.finish(&mut self.shared.ctx(&mut *sink, conn.id, key, d, ts), end);
        }
        [conn.dirs[0].isn(), conn.dirs[1].isn()]
    }

    fn remember_closed(&mut self, key: ConnKey, ts: u64, isn: [Option<u32>; 2]) {
        if let Some(old) = self.closed.find(&key) {
            self.closed.remove(old);
        }
        self.closed.insert(key, Closed { at: ts, isn });
        while self.closed.len() > self.shared.max_entries() {
            let Some(oldest) = self.closed.oldest() else {
                break;
            };
            self.closed.remove(oldest);
        }
    }
}
