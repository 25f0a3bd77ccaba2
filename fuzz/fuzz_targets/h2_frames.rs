#![no_main]
//! Fuzzes the HTTP/2 frame parser and `sync`: arbitrary bytes fed in arbitrary pieces must
//! never panic, never buffer more than the limits' bound, and give exactly the frames and
//! the error of the same bytes fed in one piece. DATA pieces stay within `DATA_CHUNK`, and
//! a header block within the header block cap. `sync` must return an offset inside the
//! bytes, and a parser started there must behave like any other.
//!
//! Input layout: byte 0 picks the parser (bit 0: client with the preface prepended, else
//! joined midway), the limits (bits 1-2) and the sender for `sync` (bit 3); byte 1 says
//! how many split points follow (two bytes each, big endian). The rest is the stream.

use libfuzzer_sys::fuzz_target;
use shadowtap::h2::frame::{DATA_CHUNK, PREFACE};
use shadowtap::h2::{
    sync, Frame, FrameError, FrameLimits, FrameParser, Sender, SyncOutcome, SyncRules,
};

fn feed(
    make: &dyn Fn() -> FrameParser,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<Frame>, Result<(), FrameError>) {
    let mut parser = make();
    let bound = parser.limits().buffer_bound();
    let mut out = Vec::new();
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let r = parser.push(&stream[last..cut], &mut out);
        assert!(
            parser.buffered() <= bound,
            "{} > {bound}",
            parser.buffered()
        );
        if r.is_err() {
            assert_eq!(parser.failed(), r.as_ref().err());
            assert_eq!(parser.buffered(), 0);
            return (out, r);
        }
        last = cut;
    }
    (out, Ok(()))
}

fuzz_target!(|data: &[u8]| {
    let [pick, n, rest @ ..] = data else { return };
    let limits = match (pick >> 1) % 4 {
        0 => FrameLimits::default(),
        1 => FrameLimits {
            max_header_block: 64,
            ..FrameLimits::default()
        },
        2 => FrameLimits {
            max_frame_size: 1 << 20,
            max_header_block: 1024,
        },
        _ => FrameLimits {
            max_frame_size: u32::MAX,
            max_header_block: 100_000,
        },
    };
    let n = usize::from(*n % 16);
    if rest.len() < 2 * n {
        return;
    }
    let (points, body) = rest.split_at(2 * n);
    let client = pick & 1 != 0;
    let stream: Vec<u8> = if client {
        [PREFACE.as_slice(), body].concat()
    } else {
        body.to_vec()
    };
    let mut cuts: Vec<usize> = points
        .chunks(2)
        .map(|p| usize::from(u16::from_be_bytes([p[0], p[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let make = || {
        if client {
            FrameParser::client(limits)
        } else {
            FrameParser::joined(limits)
        }
    };
    let whole = feed(&make, &stream, &[]);
    let split = feed(&make, &stream, &cuts);
    assert_eq!(split, whole);
    let max_block = make().limits().max_header_block;
    for frame in &whole.0 {
        match frame {
            Frame::Data { data, .. } => assert!(data.len() <= DATA_CHUNK),
            Frame::Headers { block, .. } | Frame::PushPromise { block, .. } => {
                assert!(block.len() <= max_block)
            }
            _ => {}
        }
    }
    let sender = if pick & 8 != 0 {
        Sender::Server
    } else {
        Sender::Client
    };
    let rules = SyncRules {
        max_frame_size: make().limits().max_frame_size,
        ..SyncRules::new(sender)
    };
    match sync(&stream, &rules) {
        SyncOutcome::Found(at) => {
            assert!(at < stream.len());
            let joined = || FrameParser::joined(limits);
            assert_eq!(
                feed(&joined, &stream[at..], &[]),
                feed(
                    &joined,
                    &stream[at..],
                    &cuts
                        .iter()
                        .map(|c| c.saturating_sub(at))
                        .collect::<Vec<_>>()
                )
            );
        }
        SyncOutcome::NeedMore { keep_from } => assert!(keep_from <= stream.len()),
    }
});
