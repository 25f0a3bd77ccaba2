#![no_main]
//! Fuzzes the per-stream framer of both protocols (`StreamFramer`): arbitrary client
//! bytes, a lost start or not, gaps at arbitrary points, fed in arbitrary pieces, must
//! never panic and never hold more than the caps allow. Where the start was seen, the
//! requests do not depend on the pieces (and with no gap, no event does). Finding frame
//! boundaries again (`h2::sync`, after a lost start or a gap) may settle on another
//! offset with more bytes at hand, by design (a false header with a large length must not
//! hold the search up), so there only what is counted may differ.
//!
//! Input layout: byte 0: bit 0 starts with the HTTP/2 preface prepended, bit 1 distrusts
//! the stream before its first byte (joined late); byte 1: how many cut points follow
//! (three bytes each: two for the offset, one that says gap (its length) or plain cut).

use libfuzzer_sys::fuzz_target;
use shadowtap::h2::frame::PREFACE;
use shadowtap::http::FramerLimits;
use shadowtap::request::RequestEvent;
use shadowtap::stream_framer::StreamFramer;

#[derive(Clone, Copy)]
struct Cut {
    at: usize,
    gap: u64,
}

fn run(stream: &[u8], cuts: &[Cut], distrust: bool, merge: bool) -> Vec<RequestEvent> {
    let limits = FramerLimits {
        max_head: 4096,
        max_headers: 64,
        max_body: 4096,
    };
    let mut framer = StreamFramer::new(limits);
    let mut out = Vec::new();
    if distrust {
        framer.distrust(limits, 0, &mut out);
    }
    let mut last = 0;
    let mut pending: Vec<u8> = Vec::new();
    for cut in cuts.iter().copied().chain(std::iter::once(Cut {
        at: stream.len(),
        gap: 0,
    })) {
        pending.extend_from_slice(&stream[last..cut.at]);
        last = cut.at;
        if !merge || cut.gap > 0 || cut.at == stream.len() {
            framer.push(limits, 1, &pending, &mut out);
            pending.clear();
        }
        if cut.gap > 0 {
            framer.gap(1, cut.gap, &mut out);
        }
        // Bodies, header blocks, a sync window and the header table.
        assert!(framer.buffered() <= 2 * 4096 * 256 + 512 * 1024, "{}", framer.buffered());
    }
    framer.finish(1, &mut out);
    out
}

/// Counts runs of skipped bytes as one total: how a run is split is not the point.
fn normal(events: Vec<RequestEvent>) -> (Vec<RequestEvent>, u64) {
    let mut skipped = 0;
    let kept = events
        .into_iter()
        .filter(|e| match e {
            RequestEvent::NotHttp { bytes, .. } => {
                skipped += bytes;
                false
            }
            _ => true,
        })
        .collect();
    (kept, skipped)
}

fuzz_target!(|data: &[u8]| {
    let [flags, n, rest @ ..] = data else {
        return;
    };
    let n = usize::from(*n).min(rest.len() / 3);
    let (cut_bytes, body) = rest.split_at(n * 3);
    let mut stream = Vec::new();
    if flags & 1 != 0 {
        stream.extend_from_slice(PREFACE);
    }
    stream.extend_from_slice(body);
    let mut cuts: Vec<Cut> = cut_bytes
        .chunks(3)
        .map(|c| Cut {
            at: usize::from(u16::from_be_bytes([c[0], c[1]])) % (stream.len() + 1),
            gap: u64::from(c[2] & 0x7f) * u64::from(c[2] >> 7),
        })
        .collect();
    cuts.sort_by_key(|c| c.at);
    let distrust = flags & 2 != 0;
    let pieces = normal(run(&stream, &cuts, distrust, false));
    let whole = normal(run(&stream, &cuts, distrust, true));
    if distrust {
        return;
    }
    let requests = |events: &[RequestEvent]| -> Vec<RequestEvent> {
        events
            .iter()
            .filter(|e| matches!(e, RequestEvent::Request(_)))
            .cloned()
            .collect()
    };
    assert_eq!(requests(&pieces.0), requests(&whole.0));
    if cuts.iter().all(|c| c.gap == 0) {
        assert_eq!(pieces.0, whole.0);
    }
});
