//! Frame parser and sync tests: every frame type, padding, CONTINUATION rules, limits,
//! split invariance at every byte, and sync on junk and on real frames.

use proptest::prelude::*;

use super::frame::{
    flag, kind, setting, sync, Frame, FrameError, FrameLimits, FrameParser, Priority, Sender,
    SyncOutcome, SyncRules, DATA_CHUNK, DEFAULT_MAX_FRAME_SIZE, MAX_CONTROL_PAYLOAD, PREFACE,
};

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(kind::SETTINGS, 0, 0, &p)
}

/// Feeds `bytes` cut at `cuts` (sorted offsets) and returns the frames and the outcome.
fn parse_split(
    mut parser: FrameParser,
    bytes: &[u8],
    cuts: &[usize],
) -> (Vec<Frame>, Result<(), FrameError>) {
    let mut out = Vec::new();
    let mut last = 0;
    let bound = parser.limits().buffer_bound();
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let r = parser.push(&bytes[last..cut], &mut out);
        assert!(parser.buffered() <= bound);
        if r.is_err() {
            return (out, r);
        }
        last = cut;
    }
    (out, Ok(()))
}

fn parse(parser: FrameParser, bytes: &[u8]) -> (Vec<Frame>, Result<(), FrameError>) {
    parse_split(parser, bytes, &[])
}

fn client() -> FrameParser {
    FrameParser::client(FrameLimits::default())
}

fn server() -> FrameParser {
    FrameParser::server(FrameLimits::default())
}

/// A client's start: preface, SETTINGS, WINDOW_UPDATE, a padded HEADERS with priority
/// continued by a CONTINUATION, padded DATA, PING, PRIORITY, RST_STREAM, an unknown type,
/// GOAWAY.
fn client_stream() -> (Vec<u8>, Vec<Frame>) {
    let mut b = PREFACE.to_vec();
    b.extend(settings(&[(setting::MAX_CONCURRENT_STREAMS, 100)]));
    b.extend(frame(kind::WINDOW_UPDATE, 0, 0, &65_535u32.to_be_bytes()));
    let mut headers = vec![3]; // pad length
    headers.extend_from_slice(&(0x8000_0003u32).to_be_bytes()); // exclusive, on 3
    headers.push(15); // weight
    headers.extend_from_slice(b"\x82\x86");
    headers.extend_from_slice(&[0, 0, 0]);
    b.extend(frame(
        kind::HEADERS,
        flag::PADDED | flag::PRIORITY | flag::END_STREAM,
        5,
        &headers,
    ));
    b.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 5, b"\x84"));
    b.extend(frame(
        kind::DATA,
        flag::PADDED | flag::END_STREAM,
        7,
        b"\x02hello\0\0",
    ));
    b.extend(frame(kind::PING, 0, 0, b"12345678"));
    b.extend(frame(kind::PRIORITY, 0, 9, &[0, 0, 0, 5, 200]));
    b.extend(frame(kind::RST_STREAM, 0, 9, &8u32.to_be_bytes()));
    b.extend(frame(0xfa, 0xff, 11, b"whatever"));
    let mut goaway = 7u32.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    goaway.extend_from_slice(b"bye");
    b.extend(frame(kind::GOAWAY, 0, 0, &goaway));
    let frames = vec![
        Frame::Settings {
            ack: false,
            params: vec![(setting::MAX_CONCURRENT_STREAMS, 100)],
        },
        Frame::WindowUpdate {
            stream: 0,
            increment: 65_535,
        },
        Frame::Headers {
            stream: 5,
            end_stream: true,
            priority: Some(Priority {
                exclusive: true,
                dependency: 3,
                weight: 15,
            }),
            block: b"\x82\x86\x84".to_vec(),
        },
        Frame::Data {
            stream: 7,
            data: b"hello".to_vec(),
            end_stream: true,
        },
        Frame::Ping {
            ack: false,
            data: *b"12345678",
        },
        Frame::Priority {
            stream: 9,
            priority: Priority {
                exclusive: false,
                dependency: 5,
                weight: 200,
            },
        },
        Frame::RstStream {
            stream: 9,
            error_code: 8,
        },
        Frame::Unknown {
            kind: 0xfa,
            flags: 0xff,
            stream: 11,
            len: 8,
        },
        Frame::GoAway {
            last_stream: 7,
            error_code: 0,
            debug: b"bye".to_vec(),
        },
    ];
    (b, frames)
}

#[test]
fn every_frame_type_at_every_split() {
    let (bytes, want) = client_stream();
    assert_eq!(parse(client(), &bytes), (want.clone(), Ok(())));
    for cut in 0..=bytes.len() {
        assert_eq!(
            parse_split(client(), &bytes, &[cut]),
            (want.clone(), Ok(())),
            "cut at {cut}"
        );
    }
    // One byte at a time.
    let cuts: Vec<usize> = (1..bytes.len()).collect();
    assert_eq!(parse_split(client(), &bytes, &cuts), (want, Ok(())));
}

#[test]
fn a_wrong_preface_stops_the_parser_for_good() {
    let mut parser = client();
    let mut out = Vec::new();
    assert_eq!(parser.push(b"PRI * HTTP/2.0\r\n", &mut out), Ok(()));
    assert_eq!(
        parser.push(b"\r\nXX", &mut out),
        Err(FrameError::BadPreface)
    );
    assert_eq!(
        parser.push(b"anything", &mut out),
        Err(FrameError::BadPreface)
    );
    assert_eq!(parser.failed(), Some(&FrameError::BadPreface));
    assert!(out.is_empty());
    // HTTP/1.1 fails at the first byte that differs.
    assert_eq!(
        parse(client(), b"GET / HTTP/1.1\r\n"),
        (vec![], Err(FrameError::BadPreface))
    );
}

#[test]
fn padding_longer_than_the_payload_is_a_protocol_error() {
    let cases = [
        (
            frame(kind::DATA, flag::PADDED, 1, b"\x05abcd"),
            FrameError::PadTooLong {
                kind: kind::DATA,
                pad: 5,
                len: 5,
            },
        ),
        (
            frame(kind::DATA, flag::PADDED, 1, b""),
            FrameError::BadLength {
                kind: kind::DATA,
                len: 0,
            },
        ),
        (
            frame(
                kind::HEADERS,
                flag::PADDED | flag::END_HEADERS,
                1,
                b"\x04\x82\0\0",
            ),
            FrameError::PadTooLong {
                kind: kind::HEADERS,
                pad: 4,
                len: 4,
            },
        ),
        // Priority fields and padding do not fit together.
        (
            frame(
                kind::HEADERS,
                flag::PADDED | flag::PRIORITY | flag::END_HEADERS,
                1,
                b"\x01\0\0\0\x03\x10",
            ),
            FrameError::PadTooLong {
                kind: kind::HEADERS,
                pad: 1,
                len: 6,
            },
        ),
        (
            frame(
                kind::HEADERS,
                flag::PRIORITY | flag::END_HEADERS,
                1,
                b"\0\0",
            ),
            FrameError::BadLength {
                kind: kind::HEADERS,
                len: 2,
            },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(parse(server(), &bytes), (vec![], Err(want)));
    }
    // Padding that exactly fills the frame is fine: an empty block or empty data.
    let (frames, r) = parse(
        server(),
        &[
            frame(kind::DATA, flag::PADDED, 1, b"\x04abcd"),
            frame(
                kind::HEADERS,
                flag::PADDED | flag::END_HEADERS,
                1,
                b"\x02\0\0",
            ),
        ]
        .concat(),
    );
    assert_eq!(r, Ok(()));
    assert_eq!(
        frames,
        vec![
            Frame::Data {
                stream: 1,
                data: vec![],
                end_stream: false
            },
            Frame::Headers {
                stream: 1,
                end_stream: false,
                priority: None,
                block: vec![]
            },
        ]
    );
}

#[test]
fn continuation_must_follow_its_block_on_the_same_stream() {
    let open = frame(kind::HEADERS, 0, 1, b"\x82");
    let cases = [
        // Another stream's CONTINUATION.
        (
            frame(kind::CONTINUATION, flag::END_HEADERS, 3, b""),
            FrameError::ExpectedContinuation {
                stream: 1,
                got_kind: kind::CONTINUATION,
                got_stream: 3,
            },
        ),
        // DATA inside the block.
        (
            frame(kind::DATA, 0, 1, b"x"),
            FrameError::ExpectedContinuation {
                stream: 1,
                got_kind: kind::DATA,
                got_stream: 1,
            },
        ),
        // Even a frame of an unknown type (RFC 9113 §6.10).
        (
            frame(0x20, 0, 0, b""),
            FrameError::ExpectedContinuation {
                stream: 1,
                got_kind: 0x20,
                got_stream: 0,
            },
        ),
    ];
    for (next, want) in cases {
        assert_eq!(
            parse(server(), &[open.clone(), next].concat()),
            (vec![], Err(want))
        );
    }
    assert_eq!(
        parse(server(), &frame(kind::CONTINUATION, 0, 1, b"")),
        (
            vec![],
            Err(FrameError::UnexpectedContinuation { stream: 1 })
        )
    );
    // A PUSH_PROMISE continued twice.
    let mut pp = 2u32.to_be_bytes().to_vec();
    pp.push(0x82);
    let bytes = [
        frame(kind::PUSH_PROMISE, 0, 1, &pp),
        frame(kind::CONTINUATION, 0, 1, b"\x86"),
        frame(kind::CONTINUATION, flag::END_HEADERS, 1, b"\x84"),
    ]
    .concat();
    assert_eq!(
        parse(server(), &bytes),
        (
            vec![Frame::PushPromise {
                stream: 1,
                promised: 2,
                block: b"\x82\x86\x84".to_vec()
            }],
            Ok(())
        )
    );
}

#[test]
fn stream_id_and_length_rules() {
    let cases = [
        (
            frame(kind::DATA, 0, 0, b""),
            FrameError::StreamIdRequired { kind: kind::DATA },
        ),
        (
            frame(kind::HEADERS, flag::END_HEADERS, 0, b""),
            FrameError::StreamIdRequired {
                kind: kind::HEADERS,
            },
        ),
        (
            frame(kind::SETTINGS, 0, 1, b""),
            FrameError::StreamIdNotAllowed {
                kind: kind::SETTINGS,
                stream: 1,
            },
        ),
        (
            frame(kind::PING, 0, 3, b"12345678"),
            FrameError::StreamIdNotAllowed {
                kind: kind::PING,
                stream: 3,
            },
        ),
        (
            frame(kind::PING, 0, 0, b"1234567"),
            FrameError::BadLength {
                kind: kind::PING,
                len: 7,
            },
        ),
        (
            frame(kind::SETTINGS, flag::ACK, 0, b"\0\x01\0\0\0\0"),
            FrameError::BadLength {
                kind: kind::SETTINGS,
                len: 6,
            },
        ),
        (
            frame(kind::SETTINGS, 0, 0, b"\0\x01\0"),
            FrameError::BadLength {
                kind: kind::SETTINGS,
                len: 3,
            },
        ),
        (
            frame(kind::GOAWAY, 0, 0, b"\0\0\0\x01"),
            FrameError::BadLength {
                kind: kind::GOAWAY,
                len: 4,
            },
        ),
        (
            frame(kind::RST_STREAM, 0, 1, b"\0\0\0"),
            FrameError::BadLength {
                kind: kind::RST_STREAM,
                len: 3,
            },
        ),
        (
            frame(kind::WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()),
            FrameError::ZeroWindowIncrement,
        ),
        (
            settings(&[(setting::MAX_FRAME_SIZE, 16_383)]),
            FrameError::BadSetting {
                id: setting::MAX_FRAME_SIZE,
                value: 16_383,
            },
        ),
        (
            settings(&[(setting::ENABLE_PUSH, 2)]),
            FrameError::BadSetting {
                id: setting::ENABLE_PUSH,
                value: 2,
            },
        ),
        (
            settings(&[(setting::INITIAL_WINDOW_SIZE, 1 << 31)]),
            FrameError::BadSetting {
                id: setting::INITIAL_WINDOW_SIZE,
                value: 1 << 31,
            },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(parse(server(), &bytes), (vec![], Err(want)));
    }
    // A zero increment on a stream is that stream's error, not the connection's.
    assert_eq!(
        parse(
            server(),
            &frame(kind::WINDOW_UPDATE, 0, 1, &0u32.to_be_bytes())
        )
        .1,
        Ok(())
    );
}

#[test]
fn frame_size_limit_follows_the_peer_settings() {
    let big = frame(kind::DATA, flag::END_STREAM, 1, &vec![7u8; 40_000]);
    assert_eq!(
        parse(server(), &big),
        (
            vec![],
            Err(FrameError::FrameTooLarge {
                kind: kind::DATA,
                len: 40_000,
                max: DEFAULT_MAX_FRAME_SIZE
            })
        )
    );
    // The other direction advertised a larger size: accepted, given in pieces of at most
    // DATA_CHUNK, and the parser never holds the whole frame.
    let mut parser = server();
    parser.set_max_frame_size(1 << 20);
    let (frames, r) = parse_split(parser, &big, &[5000, 20_000, 20_001]);
    assert_eq!(r, Ok(()));
    let sizes: Vec<(usize, bool)> = frames
        .iter()
        .map(|f| match f {
            Frame::Data {
                data, end_stream, ..
            } => (data.len(), *end_stream),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sizes,
        vec![
            (DATA_CHUNK, false),
            (DATA_CHUNK, false),
            (40_000 - 2 * DATA_CHUNK, true)
        ]
    );
    // Values outside RFC 9113's range are clamped into it.
    let mut parser = server();
    parser.set_max_frame_size(u32::MAX);
    assert_eq!(parser.limits().max_frame_size, (1 << 24) - 1);
    // Control frames are capped whatever the frame size.
    let mut parser = server();
    parser.set_max_frame_size(1 << 20);
    let huge = frame(kind::SETTINGS, 0, 0, &vec![0u8; MAX_CONTROL_PAYLOAD + 6]);
    assert_eq!(
        parse(parser, &huge).1,
        Err(FrameError::ControlFrameTooLarge {
            kind: kind::SETTINGS,
            len: u32::try_from(MAX_CONTROL_PAYLOAD + 6).unwrap(),
            max: MAX_CONTROL_PAYLOAD
        })
    );
}

#[test]
fn a_header_block_is_capped_across_continuations() {
    let limits = FrameLimits {
        max_header_block: 100,
        ..FrameLimits::default()
    };
    let bytes = [
        frame(kind::HEADERS, 0, 1, &[0x82; 60]),
        frame(kind::CONTINUATION, 0, 1, &[0x82; 40]),
        frame(kind::CONTINUATION, flag::END_HEADERS, 1, &[0x82; 1]),
    ]
    .concat();
    assert_eq!(
        parse(FrameParser::server(limits), &bytes),
        (
            vec![],
            Err(FrameError::HeaderBlockTooLarge {
                stream: 1,
                max: 100
            })
        )
    );
    // Exactly at the cap is fine.
    assert_eq!(
        parse(FrameParser::server(limits), &bytes[..bytes.len() - 10]).1,
        Ok(())
    );
}

#[test]
fn a_joined_parser_skips_the_tail_of_a_block_it_missed() {
    let bytes = [
        frame(kind::CONTINUATION, 0, 3, b"\x01\x02"),
        frame(kind::CONTINUATION, flag::END_HEADERS, 3, b"\x03"),
        frame(kind::HEADERS, flag::END_HEADERS, 5, b"\x82"),
    ]
    .concat();
    assert_eq!(
        parse(FrameParser::joined(FrameLimits::default()), &bytes),
        (
            vec![
                Frame::OrphanContinuation {
                    stream: 3,
                    end_headers: false
                },
                Frame::OrphanContinuation {
                    stream: 3,
                    end_headers: true
                },
                Frame::Headers {
                    stream: 5,
                    end_stream: false,
                    priority: None,
                    block: b"\x82".to_vec()
                },
            ],
            Ok(())
        )
    );
    // Once a frame of another type came, a stray CONTINUATION is an error again.
    let late = [
        frame(kind::PING, 0, 0, b"12345678"),
        frame(kind::CONTINUATION, flag::END_HEADERS, 3, b""),
    ]
    .concat();
    assert_eq!(
        parse(FrameParser::joined(FrameLimits::default()), &late).1,
        Err(FrameError::UnexpectedContinuation { stream: 3 })
    );
    // A parser that saw the start never takes a CONTINUATION as a tail.
    assert_eq!(
        parse(server(), &bytes).1,
        Err(FrameError::UnexpectedContinuation { stream: 3 })
    );
}

/// A plausible run of client frames with random payloads: what sync should find.
fn real_frames(seed: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut starts = Vec::new();
    for (i, chunk) in seed.chunks(37).enumerate() {
        starts.push(bytes.len());
        let stream = 1 + 2 * u32::try_from(i).unwrap();
        let f = match i % 4 {
            0 => frame(kind::HEADERS, flag::END_HEADERS, stream, chunk),
            1 => frame(kind::DATA, 0, stream, chunk),
            2 => frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]),
            _ => frame(kind::DATA, flag::END_STREAM, stream, chunk),
        };
        bytes.extend(f);
    }
    (bytes, starts)
}

#[test]
fn sync_false_positive_rate_on_random_bytes() {
    // xorshift64: a fixed sequence, so the measurement is the same on every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let bytes: Vec<u8> = (0..(1 << 20)).map(|_| random() as u8).collect();
    let count = |chain: usize, sender: Sender| {
        let rules = SyncRules {
            chain,
            ..SyncRules::new(sender)
        };
        let mut found = 0;
        let mut at = 0;
        while at < bytes.len() {
            match sync(&bytes[at..], &rules) {
                SyncOutcome::Found(off) => {
                    found += 1;
                    at += off + 1;
                }
                SyncOutcome::NeedMore { .. } => break,
            }
        }
        found
    };
    // One header alone passes now and then in a mebibyte of noise; a chain of two or
    // three never does.
    let single = count(1, Sender::Server);
    eprintln!("sync on 1 MiB of noise: {single} offsets pass a chain of 1");
    assert!(single < 20, "{single} single-header syncs in 1 MiB");
    assert_eq!(count(2, Sender::Server), 0);
    assert_eq!(count(3, Sender::Server), 0);
    assert_eq!(count(3, Sender::Client), 0);
}

#[test]
fn sync_finds_a_boundary_from_every_offset_of_real_frames() {
    let seed: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let (bytes, starts) = real_frames(&seed);
    let rules = SyncRules::new(Sender::Client);
    for off in 0..bytes.len() {
        match sync(&bytes[off..], &rules) {
            SyncOutcome::Found(at) => {
                assert!(
                    starts.contains(&(off + at)),
                    "false boundary {} from {off}",
                    off + at
                );
                // The first boundary at or after off that has a chain of 3 behind it.
                let next = starts.iter().find(|&&s| s >= off).unwrap();
                assert_eq!(off + at, *next, "from {off}");
            }
            SyncOutcome::NeedMore { keep_from } => {
                // Only near the end, where fewer than 3 frames are left.
                let left = starts.iter().filter(|&&s| s >= off + keep_from).count();
                assert!(left < 3, "gave up at {off} with {left} frames left");
            }
        }
    }
    // From a found boundary, a joined parser reads every frame to the end.
    let at = match sync(&bytes[100..], &rules) {
        SyncOutcome::Found(at) => 100 + at,
        other => panic!("{other:?}"),
    };
    let (frames, r) = parse(FrameParser::joined(FrameLimits::default()), &bytes[at..]);
    assert_eq!(r, Ok(()));
    assert_eq!(frames.len(), starts.iter().filter(|&&s| s >= at).count());
}

#[test]
fn sync_asks_for_more_when_the_chain_runs_past_the_bytes() {
    let (bytes, starts) = real_frames(&[1u8; 37 * 3]);
    let rules = SyncRules::new(Sender::Client);
    assert_eq!(sync(&bytes, &rules), SyncOutcome::Found(0));
    // The third header is all it needs, not the third payload.
    assert_eq!(sync(&bytes[..starts[2] + 9], &rules), SyncOutcome::Found(0));
    assert_eq!(
        sync(&bytes[..starts[2] + 8], &rules),
        SyncOutcome::NeedMore { keep_from: 0 }
    );
    // Server ids: a client never sends PUSH_PROMISE nor DATA on even streams.
    let even = [
        frame(kind::DATA, 0, 2, b"x"),
        frame(kind::DATA, 0, 2, b"x"),
        frame(kind::DATA, 0, 2, b"x"),
    ]
    .concat();
    assert_eq!(
        sync(&even, &SyncRules::new(Sender::Server)),
        SyncOutcome::Found(0)
    );
    assert!(matches!(
        sync(&even, &rules),
        SyncOutcome::NeedMore { keep_from } if keep_from > 0
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any bytes in any split: the same frames and the same error as in one piece, and
    /// never more buffered than the bound.
    #[test]
    fn split_invariance(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        mut cuts in prop::collection::vec(0usize..600, 0..8),
        preface in any::<bool>(),
    ) {
        let make = || if preface {
            FrameParser::client(FrameLimits { max_header_block: 200, ..FrameLimits::default() })
        } else {
            FrameParser::joined(FrameLimits { max_header_block: 200, ..FrameLimits::default() })
        };
        cuts.iter_mut().for_each(|c| *c %= bytes.len() + 1);
        cuts.sort_unstable();
        prop_assert_eq!(parse_split(make(), &bytes, &cuts), parse(make(), &bytes));
    }

    /// Real frames after a junk prefix: sync finds the first real frame, never a false
    /// boundary in the junk.
    #[test]
    fn sync_skips_junk_prefixes(
        junk in prop::collection::vec(any::<u8>(), 0..3000),
        seed in prop::collection::vec(any::<u8>(), 37 * 3..37 * 8),
    ) {
        let (frames, _) = real_frames(&seed);
        let bytes = [junk.clone(), frames].concat();
        prop_assert_eq!(sync(&bytes, &SyncRules::new(Sender::Client)), SyncOutcome::Found(junk.len()));
    }
}
