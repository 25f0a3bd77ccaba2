//! The table of live connections: lookup by unordered 4-tuple, connection ids, the port
//! filter, SYN/FIN/RST lifecycle, LRU eviction at `max_flows` and idle expiry.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

// foldhash: per-packet lookups; its seeds are random per table, so crafted 4-tuples
// cannot be aimed at one bucket ahead of time.
use foldhash::HashMap;

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

struct Conn {
    id: u64,
    /// Its last activity; its live entry in `FlowTable::lru` carries the same number.
    touch: u64,
    last_ts: u64,
    dirs: [Direction; 2],
}

/// What is remembered of a closed connection.
#[derive(Clone, Copy)]
struct Closed {
    at: u64,
    /// Per direction, so a retransmitted SYN of the old connection is not a new one.
    isn: [Option<u32>; 2],
}

/// Reassembles TCP byte streams from segments, per direction, within fixed caps.
///
/// Each connection (unordered 4-tuple) gets a fresh `conn` id; each watched direction is
/// a stream. In-order bytes go to the sink straight from the segment; out-of-order bytes
/// wait in a bounded buffer. Bytes that will never come (lost, cut by the snaplen, or
/// given up to stay under a cap) are reported once as a `gap` just before the next data
/// or the end. A stream that received any `data` or `gap` gets exactly one `end`;
/// streams that never carried a byte get no calls at all.
pub struct FlowTable {
    config: ReassemblyConfig,
    conns: HashMap<ConnKey, Conn>,
    /// Connections by last activity (a counter, not a timestamp, so it is unique), oldest
    /// first: the first live entry is the one to evict or the first candidate to expire.
    /// A touch appends a new entry and leaves the old one behind, stale (its number is
    /// no longer the connection's `touch`); stale entries are skipped at the front and
    /// swept once they outnumber the connections (O(n log n) per n touches). A BTreeMap
    /// keyed by the counter kept it exact but cost a tenth of `inspect` in its
    /// per-packet remove and insert.
    lru: VecDeque<(u64, ConnKey)>,
    touches: u64,
    next_conn: u64,
    /// Recently closed 4-tuples, so a retransmit after FIN/RST is not taken for a new
    /// connection picked up mid-stream. Bounded by `max_flows`, oldest first out.
    closed: HashMap<ConnKey, Closed>,
    closed_order: VecDeque<(ConnKey, u64)>,
    stats: ReassemblyStats,
    buffered: usize,
}

/// Stale entries `FlowTable::lru` may hold beyond one per connection before a sweep.
const LRU_SLACK: usize = 1024;

/// Marks `conn` the most recently active.
fn touch(
    conn: &mut Conn,
    touches: &mut u64,
    lru: &mut VecDeque<(u64, ConnKey)>,
    key: ConnKey,
    ts: u64,
) {
    conn.last_ts = conn.last_ts.max(ts);
    // Already the newest entry: a run of segments of one connection appends nothing.
    if conn.touch != *touches {
        *touches += 1;
        conn.touch = *touches;
        lru.push_back((conn.touch, key));
    }
}

/// Hands `seg` to its direction of `conn`; true when both directions have now ended.
#[expect(
    clippy::too_many_arguments,
    reason = "the table's fields are borrowed apart from the connection"
)]
fn feed<S: StreamSink>(
    conn: &mut Conn,
    d: usize,
    key: ConnKey,
    seg: &Segment<'_>,
    sink: &mut S,
    stats: &mut ReassemblyStats,
    total: &mut usize,
    config: &ReassemblyConfig,
) -> bool {
    let mut ctx = Ctx {
        sink,
        stats,
        total,
        config,
        key: StreamKey {
            conn: conn.id,
            flow: dir_flow(key, d),
        },
        ts: seg.ts_nanos,
    };
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
            config,
            conns: HashMap::default(),
            lru: VecDeque::new(),
            touches: 0,
            next_conn: 0,
            closed: HashMap::default(),
            closed_order: VecDeque::new(),
            stats: ReassemblyStats::default(),
            buffered: 0,
        }
    }

    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// Live connections.
    pub fn flows(&self) -> usize {
        self.conns.len()
    }

    /// Out-of-order payload bytes held, all flows.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    fn watched(&self, flow: FlowKey) -> bool {
        self.config
            .ports
            .as_ref()
            .is_none_or(|ports| ports.contains(&flow.dst.port()))
    }

    pub fn push<S: StreamSink>(&mut self, seg: &Segment<'_>, sink: &mut S) {
        self.stats.segments += 1;
        if self.lru.len() > 2 * self.conns.len() + LRU_SLACK {
            // Rebuilt from the connections themselves (each one's live entry, in touch
            // order): no lookup per stale entry, which a `retain` would need.
            self.lru.clear();
            self.lru
                .extend(self.conns.iter().map(|(key, conn)| (conn.touch, *key)));
            self.lru
                .make_contiguous()
                .sort_unstable_by_key(|&(touch, _)| touch);
        }
        let (key, d) = conn_key(seg.flow);
        let deliver = [
            self.watched(dir_flow(key, 0)),
            self.watched(dir_flow(key, 1)),
        ];
        if !deliver[0] && !deliver[1] {
            return;
        }
        let flags = seg.flags;
        if !flags.syn() && !flags.rst() {
            // Most segments: a known connection, one lookup.
            if let Some(conn) = self.conns.get_mut(&key) {
                touch(conn, &mut self.touches, &mut self.lru, key, seg.ts_nanos);
                let (stats, total) = (&mut self.stats, &mut self.buffered);
                if feed(conn, d, key, seg, sink, stats, total, &self.config) {
                    self.close(key, seg.ts_nanos, sink);
                }
                return;
            }
        }
        let has_data = !seg.payload.is_empty() || seg.missing > 0;

        if !self.conns.contains_key(&key) {
            if let Some(closed) = self.closed.remove(&key) {
                let recent =
                    seg.ts_nanos.saturating_sub(closed.at) <= self.config.idle_timeout_nanos;
                let old_syn = flags.syn() && closed.isn[d] == Some(seg.seq);
                if recent && (old_syn || !flags.syn()) {
                    self.closed.insert(key, closed);
                    if has_data || old_syn {
                        self.stats.duplicates += 1;
                    }
                    return;
                }
            }
            // A bare ACK/FIN/RST says nothing about where a stream starts.
            if flags.rst() || !(flags.syn() || has_data) {
                return;
            }
            self.open(key, deliver, seg.ts_nanos, sink);
        }
        if flags.syn() {
            let outcome = self
                .conns
                .get_mut(&key)
                .map(|conn| conn.dirs[d].on_syn(seg.seq));
            match outcome {
                // With a payload, the data path counts the duplicate.
                Some(SynOutcome::Duplicate) if !has_data => self.stats.duplicates += 1,
                Some(SynOutcome::Conflict) => {
                    // The old connection ended without us seeing it all; the peers only
                    // reuse a 4-tuple once the previous one is closed.
                    self.remove(key, seg.ts_nanos, sink, |dir| {
                        if dir.fin_seen() {
                            StreamEnd::Fin
                        } else {
                            StreamEnd::Rst
                        }
                    });
                    self.stats.flows_closed += 1;
                    self.open(key, deliver, seg.ts_nanos, sink);
                    if let Some(conn) = self.conns.get_mut(&key) {
                        conn.dirs[d].on_syn(seg.seq);
                    }
                }
                Some(SynOutcome::Duplicate | SynOutcome::Fresh) | None => {}
            }
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        touch(conn, &mut self.touches, &mut self.lru, key, seg.ts_nanos);
        if flags.rst() {
            // An RST's payload (diagnostic text, RFC 1122) is not stream data.
            let isn = self.remove(key, seg.ts_nanos, sink, |_| StreamEnd::Rst);
            self.stats.flows_closed += 1;
            self.remember_closed(key, seg.ts_nanos, isn);
            return;
        }
        if feed(
            conn,
            d,
            key,
            seg,
            sink,
            &mut self.stats,
            &mut self.buffered,
            &self.config,
        ) {
            self.close(key, seg.ts_nanos, sink);
        }
    }

    /// Both directions ended with FIN.
    fn close<S: StreamSink>(&mut self, key: ConnKey, ts: u64, sink: &mut S) {
        let isn = self.remove(key, ts, sink, |_| StreamEnd::Fin);
        self.stats.flows_closed += 1;
        self.remember_closed(key, ts, isn);
    }

    /// Ends connections idle for longer than the timeout. Walks the LRU from its old
    /// end and stops at the first live connection, so a call costs O(expired · log n).
    /// Timestamps are assumed to be roughly monotonic: a connection touched later but
    /// with an older timestamp waits until the ones before it expire.
    pub fn expire<S: StreamSink>(&mut self, now_nanos: u64, sink: &mut S) {
        while let Some(key) = self.oldest() {
            let idle = self.conns.get(&key).is_none_or(|c| {
                now_nanos.saturating_sub(c.last_ts) > self.config.idle_timeout_nanos
            });
            if !idle {
                break;
            }
            self.remove(key, now_nanos, sink, |_| StreamEnd::IdleTimeout);
            self.stats.flows_timed_out += 1;
        }
        while let Some(&(key, at)) = self.closed_order.front() {
            if now_nanos.saturating_sub(at) <= self.config.idle_timeout_nanos {
                break;
            }
            self.closed_order.pop_front();
            if self.closed.get(&key).is_some_and(|c| c.at == at) {
                self.closed.remove(&key);
            }
        }
    }

    /// Gives up holes open longer than the hole timeout at `now_nanos`, in connections
    /// that got no segment since (a live capture that lost a packet, then went quiet or
    /// closed). Visits every connection: call it about once a second, not per packet.
    pub fn give_up_stale_holes<S: StreamSink>(&mut self, now_nanos: u64, sink: &mut S) {
        let mut ended = Vec::new();
        for (&key, conn) in &mut self.conns {
            if !conn.dirs.iter().any(Direction::has_hole) {
                continue;
            }
            for d in 0..2 {
                let mut ctx = Ctx {
                    sink: &mut *sink,
                    stats: &mut self.stats,
                    total: &mut self.buffered,
                    config: &self.config,
                    key: StreamKey {
                        conn: conn.id,
                        flow: dir_flow(key, d),
                    },
                    ts: now_nanos,
                };
                conn.dirs[d].tick(&mut ctx);
            }
            if conn.dirs.iter().all(Direction::ended) {
                ended.push(key);
            }
        }
        for key in ended {
            self.close(key, now_nanos, sink);
        }
    }

    /// End of capture: every stream gets what can be delivered (holes as gaps) and ends
    /// with `Flushed`; the table is empty afterwards.
    pub fn flush<S: StreamSink>(&mut self, now_nanos: u64, sink: &mut S) {
        while let Some(key) = self.oldest() {
            self.remove(key, now_nanos, sink, |_| StreamEnd::Flushed);
            self.stats.flows_flushed += 1;
        }
        self.lru.clear();
        self.closed.clear();
        self.closed_order.clear();
    }

    /// The least recently active connection; drops the stale entries before it.
    fn oldest(&mut self) -> Option<ConnKey> {
        while let Some(&(touch, key)) = self.lru.front() {
            if self.conns.get(&key).is_some_and(|c| c.touch == touch) {
                return Some(key);
            }
            self.lru.pop_front();
        }
        None
    }

    fn open<S: StreamSink>(&mut self, key: ConnKey, deliver: [bool; 2], ts: u64, sink: &mut S) {
        while self.conns.len() >= self.config.max_flows.max(1) {
            let Some(victim) = self.oldest() else {
                break;
            };
            self.remove(victim, ts, sink, |_| StreamEnd::Evicted);
            self.stats.flows_evicted += 1;
        }
        let id = self.next_conn;
        self.next_conn += 1;
        self.stats.flows_opened += 1;
        self.touches += 1;
        self.conns.insert(
            key,
            Conn {
                id,
                touch: self.touches,
                last_ts: ts,
                dirs: [Direction::new(deliver[0]), Direction::new(deliver[1])],
            },
        );
        self.lru.push_back((self.touches, key));
    }

    fn remove<S: StreamSink>(
        &mut self,
        key: ConnKey,
        ts: u64,
        sink: &mut S,
        how: impl Fn(&Direction) -> StreamEnd,
    ) -> [Option<u32>; 2] {
        let Some(mut conn) = self.conns.remove(&key) else {
            return [None; 2];
        };
        for (d, dir) in conn.dirs.iter_mut().enumerate() {
            let end = how(dir);
            let mut ctx = Ctx {
                sink: &mut *sink,
                stats: &mut self.stats,
                total: &mut self.buffered,
                config: &self.config,
                key: StreamKey {
                    conn: conn.id,
                    flow: dir_flow(key, d),
                },
                ts,
            };
            dir.finish(&mut ctx, end);
        }
        [conn.dirs[0].isn(), conn.dirs[1].isn()]
    }

    fn remember_closed(&mut self, key: ConnKey, ts: u64, isn: [Option<u32>; 2]) {
        self.closed.insert(key, Closed { at: ts, isn });
        self.closed_order.push_back((key, ts));
        while self.closed_order.len() > self.config.max_flows.max(1) {
            if let Some((old, at)) = self.closed_order.pop_front() {
                if self.closed.get(&old).is_some_and(|c| c.at == at) {
                    self.closed.remove(&old);
                }
            }
        }
    }
}
