#![no_main]
//! Fuzzes `RequestFramer`: arbitrary bytes fed in arbitrary pieces (with gaps) must never
//! panic, must keep `buffered()` under the limits' bound, and must give exactly the events
//! of the same stream fed in one piece per gap-separated run.
//!
//! A stream distrusted from its start (a capture that began mid-connection) must never
//! yield a request, whatever its bytes.
//!
//! Input layout: byte 0 picks the limits (and, with its high bit, distrusts the stream
//! before its first byte); byte 1 says how many split points follow, each
//! as two bytes (offset in the stream, big endian); a split point whose offset is odd and
//! whose high bit is set is also a gap of (offset % 64 + 1) bytes. The rest is the stream.

use libfuzzer_sys::fuzz_target;
use shadowtap::http::{FramerLimits, RequestFramer};
use shadowtap::request::RequestEvent;

struct Cut {
    at: usize,
    gap: u64,
}

fn feed(
    limits: FramerLimits,
    distrusted: bool,
    stream: &[u8],
    cuts: &[Cut],
    split: bool,
) -> Vec<RequestEvent> {
    let mut framer = RequestFramer::new(limits);
    let mut out = Vec::new();
    if distrusted {
        framer.distrust(1, &mut out);
    }
    let mut last = 0;
    for cut in cuts.iter().filter(|c| split || c.gap > 0) {
        framer.push(1, &stream[last..cut.at], &mut out);
        assert!(framer.buffered() <= limits.buffer_bound());
        if cut.gap > 0 {
            framer.gap(1, cut.gap, &mut out);
        }
        last = cut.at;
    }
    framer.push(1, &stream[last..], &mut out);
    assert!(framer.buffered() <= limits.buffer_bound());
    framer.finish(1, &mut out);
    assert!(framer.is_idle());
    assert_eq!(framer.buffered(), 0);
    out
}

fuzz_target!(|data: &[u8]| {
    let [pick, n, rest @ ..] = data else { return };
    let limits = match pick % 3 {
        0 => FramerLimits::default(),
        1 => FramerLimits {
            max_head: 64,
            max_headers: 4,
            max_body: 16,
        },
        _ => FramerLimits {
            max_head: 256,
            max_headers: 16,
            max_body: 1024,
        },
    };
    let n = usize::from(*n % 16);
    if rest.len() < 2 * n {
        return;
    }
    let (points, stream) = rest.split_at(2 * n);
    let mut cuts: Vec<Cut> = points
        .chunks(2)
        .map(|p| {
            let raw = u16::from_be_bytes([p[0], p[1]]);
            let at = usize::from(raw & 0x7fff) % (stream.len() + 1);
            let gap = if raw & 0x8001 == 0x8001 {
                u64::from(raw % 64) + 1
            } else {
                0
            };
            Cut { at, gap }
        })
        .collect();
    cuts.sort_by_key(|c| c.at);
    let distrusted = pick & 0x80 != 0;
    let reference = feed(limits, distrusted, stream, &cuts, false);
    let split = feed(limits, distrusted, stream, &cuts, true);
    assert_eq!(split, reference);
    for event in &reference {
        if let RequestEvent::Request(r) = event {
            assert!(!distrusted, "a request from a distrusted stream");
            assert!(r.body.len() <= limits.max_body);
        }
    }
});
