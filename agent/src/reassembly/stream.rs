//! One direction of one connection: sequence numbers unwrapped to 64-bit offsets, the
//! bounded out-of-order buffer, holes, FIN position and in-order delivery to the sink.

use std::collections::BTreeMap;

use super::{ReassemblyConfig, ReassemblyStats, StreamEnd, StreamKey, StreamSink};

/// Delivered bytes remembered per direction so that a retransmit can be compared with
/// what was handed out; a fixed window keeps the per-flow cost constant.
const TAIL: usize = 64;

/// Everything a direction needs from its table while it handles one event.
pub(crate) struct Ctx<'a, S> {
    pub sink: &'a mut S,
    pub stats: &'a mut ReassemblyStats,
    /// Bytes buffered across all flows; kept exact by every insert and removal.
    pub total: &'a mut usize,
    pub config: &'a ReassemblyConfig,
    pub key: StreamKey,
    pub ts: u64,
}

/// Out-of-order material at a known offset. `Missing` is a hole the capture already told
/// us about (snaplen cut): it costs no bytes and is delivered as a gap.
enum Chunk {
    Data(Vec<u8>),
    Missing(u64),
}

impl Chunk {
    fn len(&self) -> u64 {
        match self {
            Chunk::Data(bytes) => bytes.len() as u64,
            Chunk::Missing(n) => *n,
        }
    }
}

/// What a SYN means for a direction that may already carry state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SynOutcome {
    /// First SYN, or the handshake restarted before any data.
    Fresh,
    /// Same ISN again (retransmit), or a SYN older than data already seen.
    Duplicate,
    /// A different ISN after data or FIN: a new connection reuses the 4-tuple.
    Conflict,
}

/// One direction. What every tracked direction needs is inline; the rest (`Held`) is
/// allocated when the first byte or FIN is to be delivered and freed when it ends, so a
/// half-open connection (a SYN flood) costs no heap at all.
#[derive(Default)]
pub(crate) struct Direction {
    /// Offset of the next byte to deliver; everything before it was delivered or gapped.
    next: u64,
    held: Option<Box<Held>>,
    isn: Option<u32>,
    /// Sequence number of offset 0; `None` until a SYN or the first data segment.
    base: Option<u32>,
    /// Whether this direction's bytes go to the sink (watched server port).
    deliver: bool,
    /// The sink has seen this stream (data or gap), so it is owed an `end`.
    announced: bool,
    seen_payload: bool,
    ended: bool,
    /// The sink was told to distrust this stream.
    distrusted: bool,
}

/// The state of a direction that is delivering bytes.
struct Held {
    /// Offset of the FIN (one past the last data byte).
    fin: Option<u64>,
    /// Non-overlapping, non-empty chunks, all starting after `next`.
    chunks: BTreeMap<u64, Chunk>,
    /// Data bytes in `chunks`.
    buffered: usize,
    /// Missing bytes not yet reported: reported just before the next data or the end, so
    /// that adjacent holes reach the sink as one gap.
    pending_gap: u64,
    /// Offsets before this were a gap, not data, so the tail does not hold them.
    tail_from: u64,
    /// Packet time at which the first hole was seen open, while `chunks` is not empty.
    hole_since: Option<u64>,
    tail: [u8; TAIL],
}

impl Held {
    fn new(next: u64) -> Box<Self> {
        Box::new(Self {
            fin: None,
            chunks: BTreeMap::new(),
            buffered: 0,
            pending_gap: 0,
            tail_from: next,
            hole_since: None,
            tail: [0; TAIL],
        })
    }
}

impl Direction {
    pub(crate) fn new(deliver: bool) -> Self {
        Self {
            deliver,
            ..Self::default()
        }
    }

    /// The delivering state, allocated on first use.
    fn h(&mut self) -> &mut Held {
        let next = self.next;
        self.held.get_or_insert_with(|| Held::new(next))
    }

    fn fin(&self) -> Option<u64> {
        self.held.as_ref().and_then(|h| h.fin)
    }

    fn has_chunks(&self) -> bool {
        self.held.as_ref().is_some_and(|h| !h.chunks.is_empty())
    }

    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    pub(crate) fn isn(&self) -> Option<u32> {
        self.isn
    }

    pub(crate) fn fin_seen(&self) -> bool {
        self.fin().is_some()
    }

    fn started(&self) -> bool {
        self.base.is_some() && (self.seen_payload || self.fin().is_some() || self.ended)
    }

    /// Offset of `seq`, unwrapped around `next` (within +-2^31 of it). May be negative
    /// for bytes before the start of a stream picked up mid-way.
    fn offset(&self, seq: u32) -> Option<i64> {
        let base = self.base?;
        let reference = base.wrapping_add(self.next as u32);
        let diff = i64::from(seq.wrapping_sub(reference) as i32);
        Some(self.next as i64 + diff)
    }

    pub(crate) fn on_syn(&mut self, seq: u32) -> SynOutcome {
        if self.isn == Some(seq) {
            return SynOutcome::Duplicate;
        }
        if !self.started() {
            self.isn = Some(seq);
            self.base = Some(seq.wrapping_add(1));
            self.next = 0;
            if let Some(h) = &mut self.held {
                h.tail_from = 0;
            }
            return SynOutcome::Fresh;
        }
        if self.isn.is_none() {
            // Picked up mid-stream and the SYN shows up late (capture reordering): the
            // bytes between it and the first data seen are gone; keep going.
            if let Some(off) = self.offset(seq.wrapping_add(1)) {
                if off <= 0 {
                    self.isn = Some(seq);
                    return SynOutcome::Duplicate;
                }
            }
        }
        SynOutcome::Conflict
    }

    /// The peer's SYN-ACK says this direction's ISN: taken when no SYN of its own was
    /// seen and no byte was placed yet, as if its SYN had been captured.
    pub(crate) fn learn_isn(&mut self, isn: u32) {
        if self.isn.is_none() && !self.started() && self.base.is_none() {
            self.on_syn(isn);
        }
    }

    /// One segment of this direction (RST is handled by the table). Returns true when
    /// this segment ended the direction.
    pub(crate) fn segment<S: StreamSink>(
        &mut self,
        ctx: &mut Ctx<'_, S>,
        seq: u32,
        syn: bool,
        payload: &[u8],
        missing: u32,
        fin: bool,
    ) -> bool {
        let has_data = !payload.is_empty() || missing > 0;
        if self.ended {
            if has_data {
                ctx.stats.duplicates += 1;
            }
            return false;
        }
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        if self.base.is_none() {
            if !has_data && !fin {
                return false;
            }
            self.base = Some(data_seq);
        }
        if has_data {
            self.seen_payload = true;
        }
        if !self.deliver {
            // Only tracked so the connection can close; its bytes are not wanted.
            if fin {
                self.ended = true;
            }
            return self.ended;
        }
        let Some(off) = self.offset(data_seq) else {
            return false;
        };
        let ahead = off - self.next as i64;
        if ahead > 0 && ahead as u64 > ctx.config.max_ahead {
            ctx.stats.too_far_ahead += 1;
            return false;
        }
        let end_all = off + payload.len() as i64 + i64::from(missing);
        if fin && self.fin().is_none() && end_all >= self.next as i64 {
            self.set_fin(ctx, end_all as u64);
        }
        if has_data {
            self.accept(ctx, off, payload, u64::from(missing));
        }
        self.give_up_stale_hole(ctx);
        self.check_fin(ctx)
    }

    /// Time passed with no segment for this direction: a hole that timed out is given
    /// up, and a FIN it held back ends the direction. Returns whether it has ended.
    pub(crate) fn tick<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>) -> bool {
        if self.has_hole() {
            self.give_up_stale_hole(ctx);
            self.check_fin(ctx);
        }
        self.ended
    }

    pub(crate) fn has_hole(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.hole_since.is_some())
    }

    /// A hole open for longer than `hole_timeout_nanos` will not be filled: skip it.
    fn give_up_stale_hole<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        let Some(h) = self.held.as_mut() else {
            return;
        };
        if h.chunks.is_empty() {
            h.hole_since = None;
            return;
        }
        let since = *h.hole_since.get_or_insert(ctx.ts);
        if ctx.ts.saturating_sub(since) > ctx.config.hole_timeout_nanos {
            // Every hole behind the first goes too: all that is buffered arrived after
            // the first hole opened, and losses come in bursts (a ring that overflowed
            // drops many packets), so giving holes up one timeout at a time would hold
            // a stream with many of them for minutes. A later hole that a late
            // retransmit would have filled costs that one request (counted).
            while self.has_chunks() {
                ctx.stats.holes_timed_out += 1;
                self.skip_hole(ctx);
            }
            self.h().hole_since = None;
        }
    }

    fn set_fin<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>, fin: u64) {
        let h = self.h();
        h.fin = Some(fin);
        // Anything buffered past the FIN cannot belong to the stream.
        let beyond = h.chunks.split_off(&fin);
        let mut cut: usize = beyond
            .values()
            .map(|chunk| match chunk {
                Chunk::Data(bytes) => bytes.len(),
                Chunk::Missing(_) => 0,
            })
            .sum();
        if let Some(mut last) = h.chunks.last_entry() {
            let start = *last.key();
            let end = start + last.get().len();
            if end > fin {
                let keep = fin - start;
                match last.get_mut() {
                    Chunk::Data(bytes) => {
                        cut += bytes.len() - keep as usize;
                        bytes.truncate(keep as usize);
                    }
                    Chunk::Missing(n) => *n = keep,
                }
            }
        }
        self.release(ctx, cut);
    }

    fn release<S>(&mut self, ctx: &mut Ctx<'_, S>, bytes: usize) {
        if let Some(h) = &mut self.held {
            h.buffered -= bytes;
        }
        *ctx.total -= bytes;
    }

    /// Place payload `[off, off+len)` and snaplen hole `[off+len, off+len+missing)`.
    fn accept<S: StreamSink>(
        &mut self,
        ctx: &mut Ctx<'_, S>,
        off: i64,
        payload: &[u8],
        missing: u64,
    ) {
        let next = self.next as i64;
        let mut data_end = off + payload.len() as i64;
        let mut end = data_end + missing as i64;
        if let Some(fin) = self.fin() {
            let fin = fin as i64;
            data_end = data_end.min(fin);
            end = end.min(fin);
        }
        let mut mismatch = false;
        if off < next {
            let old_end = data_end.min(next);
            if old_end > off {
                let old = &payload[..(old_end - off) as usize];
                if self.differs_from_delivered(off, old) {
                    // The receiver kept the bytes it had (as we did), but two versions of
                    // the stream are on the wire: trust neither from here.
                    mismatch = true;
                    self.conflict(ctx);
                }
            }
        }
        let start = off.max(next);
        if start >= end {
            ctx.stats.duplicates += 1;
            if mismatch {
                ctx.stats.retransmit_mismatch += 1;
            }
            return;
        }
        let data: &[u8] = if data_end > start {
            &payload[(start - off) as usize..(data_end - off) as usize]
        } else {
            &[]
        };
        let (start, data_end, end) = (start as u64, data_end.max(start) as u64, end as u64);
        if start > self.next {
            ctx.stats.out_of_order += 1;
            let mut added = false;
            if !data.is_empty() {
                added |= self.insert(ctx, start, data_end, Some(data), &mut mismatch);
            }
            if end > data_end {
                added |= self.insert(ctx, data_end, end, None, &mut mismatch);
            }
            if !added {
                ctx.stats.duplicates += 1;
            }
            self.enforce_caps(ctx);
        } else {
            self.deliver_in_order(ctx, start, data, end, &mut mismatch);
        }
        if mismatch {
            ctx.stats.retransmit_mismatch += 1;
        }
    }

    /// `data` starts at `start == next`; deliver it straight from the segment, letting
    /// already-buffered chunks win where they overlap.
    fn deliver_in_order<S: StreamSink>(
        &mut self,
        ctx: &mut Ctx<'_, S>,
        start: u64,
        data: &[u8],
        end: u64,
        mismatch: &mut bool,
    ) {
        let data_end = start + data.len() as u64;
        while self.next < end {
            let pos = self.next;
            let first = self.h().chunks.first_key_value().map(|(&s, _)| s);
            match first {
                Some(chunk_start) if chunk_start <= pos => {
                    if let Some((chunk_start, chunk)) = self.h().chunks.pop_first() {
                        if let Chunk::Data(bytes) = &chunk {
                            let overlap_end = (chunk_start + bytes.len() as u64).min(data_end);
                            if overlap_end > chunk_start {
                                let ours = &data[(chunk_start - start) as usize
                                    ..(overlap_end - start) as usize];
                                if ours != &bytes[..ours.len()] {
                                    *mismatch = true;
                                    // Linux keeps the in-order segment's bytes here, we
                                    // deliver the buffered ones: never frame either.
                                    self.conflict(ctx);
                                }
                            }
                        }
                        self.deliver_chunk(ctx, chunk);
                    }
                }
                _ => {
                    let limit = first.map_or(end, |s| s.min(end));
                    if pos < data_end {
                        let to = limit.min(data_end);
                        self.emit_data(ctx, &data[(pos - start) as usize..(to - start) as usize]);
                    }
                    if self.next < limit {
                        self.emit_missing(limit - self.next);
                    }
                }
            }
        }
        self.drain_ready(ctx);
    }

    /// Store `[start, end)` minus what is already buffered (first copy wins). Returns
    /// whether anything new was stored.
    fn insert<S: StreamSink>(
        &mut self,
        ctx: &mut Ctx<'_, S>,
        start: u64,
        end: u64,
        data: Option<&[u8]>,
        mismatch: &mut bool,
    ) -> bool {
        let mut added = false;
        let mut pos = start;
        while pos < end {
            let covering = self
                .h()
                .chunks
                .range(..=pos)
                .next_back()
                .filter(|(&s, c)| s + c.len() > pos)
                .map(|(&s, c)| (s, s + c.len()));
            if let Some((chunk_start, chunk_end)) = covering {
                let upto = chunk_end.min(end);
                if let (Some(ours), Some(Chunk::Data(theirs))) =
                    (data, self.h().chunks.get(&chunk_start))
                {
                    let a = &ours[(pos - start) as usize..(upto - start) as usize];
                    let b = &theirs[(pos - chunk_start) as usize..(upto - chunk_start) as usize];
                    if a != b {
                        // Which copy the receiver's out-of-order queue keeps depends on
                        // how the segments cover each other (tcp_data_queue_ofo): rather
                        // than model it, nothing of this stream is framed from here.
                        *mismatch = true;
                        self.conflict(ctx);
                    }
                }
                pos = upto;
                continue;
            }
            let upto = self
                .h()
                .chunks
                .range(pos..)
                .next()
                .map_or(end, |(&s, _)| s.min(end));
            let piece = data.map(|d| &d[(pos - start) as usize..(upto - start) as usize]);
            self.store(ctx, pos, upto, piece);
            added = true;
            pos = upto;
        }
        added
    }

    fn store<S>(&mut self, ctx: &mut Ctx<'_, S>, start: u64, end: u64, data: Option<&[u8]>) {
        let h = self.h();
        if let Some(bytes) = data {
            h.buffered += bytes.len();
            *ctx.total += bytes.len();
        }
        // Extending the chunk just before keeps a run of segments behind one hole as a
        // single chunk, so ordinary loss does not multiply map entries.
        if let Some((&prev_start, prev)) = h.chunks.range_mut(..start).next_back() {
            if prev_start + prev.len() == start {
                match (prev, data) {
                    (Chunk::Data(prev), Some(bytes)) => {
                        prev.extend_from_slice(bytes);
                        return;
                    }
                    (Chunk::Missing(n), None) => {
                        *n += end - start;
                        return;
                    }
                    _ => {}
                }
            }
        }
        let chunk = match data {
            Some(bytes) => Chunk::Data(bytes.to_vec()),
            None => Chunk::Missing(end - start),
        };
        h.chunks.insert(start, chunk);
    }

    fn enforce_caps<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        let limits = ctx.config;
        let mut overflowed = false;
        while self.held.as_ref().is_some_and(|h| {
            !h.chunks.is_empty()
                && (h.buffered > limits.max_stream_buffer
                    || h.chunks.len() > limits.max_stream_chunks
                    || *ctx.total > limits.max_total_buffer)
        }) {
            overflowed = true;
            self.skip_hole(ctx);
        }
        if overflowed {
            ctx.stats.buffer_overflows += 1;
        }
    }

    /// Give up on the first hole: report it as a gap and deliver what follows it.
    fn skip_hole<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        let first = self
            .held
            .as_ref()
            .and_then(|h| h.chunks.first_key_value().map(|(&s, _)| s));
        if let Some(start) = first {
            if start > self.next {
                self.emit_missing(start - self.next);
            }
        }
        self.drain_ready(ctx);
    }

    fn drain_ready<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        while let Some(h) = &mut self.held {
            if h.chunks
                .first_key_value()
                .is_none_or(|(&s, _)| s > self.next)
            {
                break;
            }
            if let Some((_, chunk)) = h.chunks.pop_first() {
                self.deliver_chunk(ctx, chunk);
            }
        }
    }

    fn deliver_chunk<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>, chunk: Chunk) {
        match chunk {
            Chunk::Data(bytes) => {
                self.release(ctx, bytes.len());
                self.emit_data(ctx, &bytes);
            }
            Chunk::Missing(n) => self.emit_missing(n),
        }
    }

    fn emit_data<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // Only the first delivery of a stream can be its start.
        if !self.announced {
            self.check_start(ctx);
        }
        self.flush_gap(ctx);
        ctx.sink.data(ctx.key, ctx.ts, bytes);
        ctx.stats.bytes_delivered += bytes.len() as u64;
        self.announced = true;
        // The ring keeps byte `p` at `p % TAIL`: the last bytes go in as at most two
        // slices (a byte at a time was a sizeable part of small segments' cost).
        let keep = bytes.len().min(TAIL);
        let last = &bytes[bytes.len() - keep..];
        let at = ((self.next + (bytes.len() - keep) as u64) % TAIL as u64) as usize;
        let split = (TAIL - at).min(keep);
        let tail = &mut self.h().tail;
        tail[at..at + split].copy_from_slice(&last[..split]);
        tail[..keep - split].copy_from_slice(&last[split..]);
        self.next += bytes.len() as u64;
    }

    fn emit_missing(&mut self, n: u64) {
        self.next += n;
        let next = self.next;
        let h = self.h();
        h.pending_gap += n;
        h.tail_from = next;
    }

    fn flush_gap<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        if !self.announced && self.held.as_ref().is_some_and(|h| h.pending_gap > 0) {
            self.check_start(ctx);
        }
        let Some(h) = &mut self.held else {
            return;
        };
        if h.pending_gap > 0 {
            ctx.sink.gap(ctx.key, ctx.ts, h.pending_gap);
            ctx.stats.gaps += 1;
            ctx.stats.gap_bytes += h.pending_gap;
            h.pending_gap = 0;
            self.announced = true;
        }
    }

    /// Before a stream's first delivery: one whose SYN was not seen starts mid-way, so
    /// its sink must not take its first byte for the start of anything.
    #[cold]
    fn check_start<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        if !self.announced && self.isn.is_none() && !self.distrusted {
            ctx.stats.lost_starts += 1;
            self.distrust(ctx);
        }
    }

    /// Two versions of some bytes of this stream were seen.
    fn conflict<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        if !self.distrusted && self.deliver {
            ctx.stats.conflict_distrusts += 1;
        }
        self.distrust(ctx);
    }

    /// Tells the sink (once) that this stream's bytes are not to be trusted from here.
    fn distrust<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        if self.distrusted || !self.deliver {
            return;
        }
        self.distrusted = true;
        // Bytes and holes already owed to the sink belong before this point.
        self.flush_gap(ctx);
        ctx.sink.distrust(ctx.key, ctx.ts);
        self.announced = true;
    }

    /// The sink is mid-message on this stream, or bytes wait behind a hole.
    pub(crate) fn busy<S: StreamSink>(&self, sink: &S, key: StreamKey) -> bool {
        self.deliver && !self.ended && (self.has_chunks() || sink.busy(key))
    }

    /// Whether `old` (at `off`, wholly before `next`) differs from the delivered bytes
    /// still in the tail window.
    fn differs_from_delivered(&self, off: i64, old: &[u8]) -> bool {
        let Some(h) = &self.held else {
            return false;
        };
        let lo = h
            .tail_from
            .max(self.next.saturating_sub(TAIL as u64))
            .max(off.max(0) as u64);
        let hi = (off + old.len() as i64).min(self.next as i64);
        (lo as i64..hi)
            .any(|p| h.tail[(p as u64 % TAIL as u64) as usize] != old[(p - off) as usize])
    }

    fn check_fin<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>) -> bool {
        match self.fin() {
            Some(fin) if self.next >= fin => {
                self.end(ctx, StreamEnd::Fin);
                true
            }
            _ => false,
        }
    }

    /// End now: holes become gaps, everything buffered is delivered, then `end(how)`.
    pub(crate) fn finish<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>, how: StreamEnd) {
        if self.ended {
            return;
        }
        while self.has_chunks() {
            self.skip_hole(ctx);
        }
        if let Some(fin) = self.fin() {
            if self.deliver && self.base.is_some() && self.next < fin {
                self.emit_missing(fin - self.next);
            }
        }
        self.end(ctx, how);
    }

    fn end<S: StreamSink>(&mut self, ctx: &mut Ctx<'_, S>, how: StreamEnd) {
        self.flush_gap(ctx);
        if self.announced {
            ctx.sink.end(ctx.key, ctx.ts, how);
        }
        self.ended = true;
        if let Some(h) = self.held.take() {
            *ctx.total -= h.buffered;
        }
    }
}
