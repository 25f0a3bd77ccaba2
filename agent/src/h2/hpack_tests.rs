//! HPACK decoder tests: RFC 7541 Appendix C, every error, the late-join rule, and
//! round trips through `encoder` with proptest.

use proptest::prelude::*;

use super::encoder::{self, Choice, Encoder, Indexing};
use super::hpack::{Block, Decoder, Field, HpackError, DEFAULT_TABLE_SIZE, MAX_STRING_LEN};
use super::huffman::HuffmanError;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn fields(list: &[(&str, &str)]) -> Block {
    Block::Fields(
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
    )
}

/// A block in hex, the fields it decodes to, and the table size after it.
type Step<'a> = (&'a str, &'a [(&'a str, &'a str)], usize);

/// Decodes each block in turn and checks the list and the table size after it.
fn check_sequence(mut dec: Decoder, steps: &[Step<'_>]) {
    for (i, (block, want, size)) in steps.iter().enumerate() {
        assert_eq!(dec.decode(&hex(block)), Ok(fields(want)), "block {i}");
        assert_eq!(dec.table_size(), *size, "table size after block {i}");
    }
}

#[test]
fn rfc7541_c2_field_representations() {
    check_sequence(
        Decoder::new(),
        &[(
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            &[("custom-key", "custom-header")],
            55,
        )],
    );
    check_sequence(
        Decoder::new(),
        &[(
            "040c 2f73 616d 706c 652f 7061 7468",
            &[(":path", "/sample/path")],
            0,
        )],
    );
    check_sequence(
        Decoder::new(),
        &[(
            "1008 7061 7373 776f 7264 0673 6563 7265 74",
            &[("password", "secret")],
            0,
        )],
    );
    check_sequence(Decoder::new(), &[("82", &[(":method", "GET")], 0)]);
}

const C3_FIELDS: [&[(&str, &str)]; 3] = [
    &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ],
    &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ],
    &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ],
];

#[test]
fn rfc7541_c3_requests_without_huffman() {
    check_sequence(
        Decoder::new(),
        &[
            (
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                C3_FIELDS[0],
                57,
            ),
            ("8286 84be 5808 6e6f 2d63 6163 6865", C3_FIELDS[1], 110),
            (
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                C3_FIELDS[2],
                164,
            ),
        ],
    );
}

#[test]
fn rfc7541_c4_requests_with_huffman() {
    check_sequence(
        Decoder::new(),
        &[
            (
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                C3_FIELDS[0],
                57,
            ),
            ("8286 84be 5886 a8eb 1064 9cbf", C3_FIELDS[1], 110),
            (
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                C3_FIELDS[2],
                164,
            ),
        ],
    );
}

const C5_FIELDS: [&[(&str, &str)]; 3] = [
    &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ],
    &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ],
    &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ],
];

#[test]
fn rfc7541_c5_responses_without_huffman_evict() {
    check_sequence(
        Decoder::new().with_limit(256),
        &[
            (
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230
                 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65
                 7861 6d70 6c65 2e63 6f6d",
                C5_FIELDS[0],
                222,
            ),
            ("4803 3330 37c1 c0bf", C5_FIELDS[1], 222),
            (
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220
                 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157
                 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076
                 6572 7369 6f6e 3d31",
                C5_FIELDS[2],
                215,
            ),
        ],
    );
}

#[test]
fn rfc7541_c6_responses_with_huffman_evict() {
    check_sequence(
        Decoder::new().with_limit(256),
        &[
            (
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0
                 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                C5_FIELDS[0],
                222,
            ),
            ("4883 640e ffc1 c0bf", C5_FIELDS[1], 222),
            (
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b
                 d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27
                 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                C5_FIELDS[2],
                215,
            ),
        ],
    );
}

#[test]
fn errors_are_named_and_fatal_ones_break_the_decoder() {
    let cases: &[(&str, HpackError)] = &[
        ("80", HpackError::ZeroIndex),
        (
            "be",
            HpackError::IndexOutOfRange {
                index: 62,
                entries: 0,
            },
        ),
        // Index 127 + 2^32: over 32 bits.
        ("ff80 8080 8010", HpackError::IntegerOverflow),
        // Six continuation bytes.
        ("ff80 8080 8080 8000", HpackError::IntegerOverflow),
        ("ff", HpackError::Truncated),
        ("400a 6375 7374", HpackError::Truncated),
        ("0f", HpackError::Truncated),
        // A literal name whose Huffman code is EOS followed by padding.
        ("4084 ffff ffff 00", HpackError::Huffman(HuffmanError::Eos)),
        // 'a' then zero bits as padding.
        ("4081 18 00", HpackError::Huffman(HuffmanError::Padding)),
        (
            "3fe1 1f",
            HpackError::TableSizeOverLimit {
                size: 4096,
                limit: 4096,
            },
        ),
        ("823f e11f", HpackError::LateTableSizeUpdate),
    ];
    for (block, want) in cases {
        let mut dec = Decoder::new().with_limit(4095);
        // The size-update case needs 4096 over the limit; the others do not mind.
        let got = dec.decode(&hex(block));
        let want = match want {
            HpackError::TableSizeOverLimit { size, .. } => HpackError::TableSizeOverLimit {
                size: *size,
                limit: 4095,
            },
            other => other.clone(),
        };
        assert_eq!(got, Err(want), "block {block}");
        assert_eq!(dec.decode(&hex("82")), Err(HpackError::Broken), "{block}");
    }
    let mut long = Vec::new();
    encoder::integer(&mut long, 0x00, 4, 0);
    encoder::integer(&mut long, 0x00, 7, MAX_STRING_LEN + 1);
    assert_eq!(
        Decoder::new().decode(&long),
        Err(HpackError::StringTooLong {
            len: MAX_STRING_LEN + 1,
            max: MAX_STRING_LEN
        })
    );
}

#[test]
fn size_updates_apply_at_block_start_and_evict() {
    let mut dec = Decoder::new();
    // custom-key: custom-header (55 bytes), then a size update to 54 evicts it.
    let insert = "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572";
    dec.decode(&hex(insert)).unwrap();
    assert_eq!(dec.entries(), 1);
    // Two updates in a row at the start are allowed (RFC 7541 §4.2): 0 then 54.
    assert_eq!(
        dec.decode(&hex("20 3f17 82")),
        Ok(fields(&[(":method", "GET")]))
    );
    assert_eq!(dec.entries(), 0);
    // The evicted entry's index is now out of range.
    assert_eq!(
        dec.decode(&hex("be")),
        Err(HpackError::IndexOutOfRange {
            index: 62,
            entries: 0
        })
    );
}

#[test]
fn an_oversized_list_is_lost_but_the_table_is_kept() {
    let mut enc = Encoder::new(DEFAULT_TABLE_SIZE);
    let inc = Choice::from(0);
    let mut block = Vec::new();
    enc.field(b"x-big", &[b'v'; 100], inc, &mut block);
    let mut dec = Decoder::new().with_max_header_list(100);
    assert_eq!(
        dec.decode(&block),
        Err(HpackError::HeaderListTooLarge { max: 100 })
    );
    // The insertion counted: the next block refers to it by index.
    let mut next = Vec::new();
    enc.field(b"x-big", &[b'v'; 100], Choice::from(1), &mut next);
    assert_eq!(next, vec![0xbe]);
    let mut dec2 = Decoder::new();
    dec2.decode(&block).unwrap();
    assert_eq!(
        dec2.decode(&next),
        Ok(Block::Fields(vec![(b"x-big".to_vec(), vec![b'v'; 100])]))
    );
    assert_eq!(
        dec.decode(&hex("82")),
        Ok(fields(&[(":method", "GET")])),
        "not broken"
    );
}

/// The gRPC pattern of H2.md: the first call sends `:path` and `:authority` as literals
/// with incremental indexing, later calls as indices.
#[test]
fn joined_late_decodes_what_it_saw_inserted_and_counts_the_rest() {
    let mut enc = Encoder::new(DEFAULT_TABLE_SIZE);
    let call = |enc: &mut Encoder, path: &str| {
        let mut b = Vec::new();
        let first_use = Choice {
            indexed: true,
            name_ref: true,
            prefer_dynamic: true,
            indexing: Indexing::Incremental,
            huffman: true,
        };
        enc.field(b":method", b"POST", first_use, &mut b);
        enc.field(b":path", path.as_bytes(), first_use, &mut b);
        enc.field(b":authority", b"grpc-hello:8000", first_use, &mut b);
        let custom = Choice {
            indexing: Indexing::Without,
            ..first_use
        };
        enc.field(b"x-trace", b"abc", custom, &mut b);
        b
    };
    let blocks: Vec<Vec<u8>> = ["/a.G/Say", "/a.G/Say", "/a.G/Other", "/a.G/Say"]
        .iter()
        .map(|p| call(&mut enc, p))
        .collect();
    let late = |from: usize| {
        let mut dec = Decoder::joined_late();
        blocks[from..]
            .iter()
            .map(|b| matches!(dec.decode(b), Ok(Block::Fields(_))))
            .collect::<Vec<_>>()
    };
    assert_eq!(late(0), vec![true; 4]);
    // Joined after the first call: :path and :authority are indices into the unknown.
    assert_eq!(late(1), vec![false, false, false]);
    // Joined before another method's first use: its :path is new, :authority is not.
    assert_eq!(late(2), vec![false, false]);
    let mut full = Decoder::new();
    for b in &blocks {
        assert!(matches!(full.decode(b), Ok(Block::Fields(_))));
    }
}

#[test]
fn an_entry_named_from_the_unknown_stays_unknown() {
    let mut dec = Decoder::joined_late();
    // Literal with incremental indexing, name from index 62 (unknown), value "v".
    assert_eq!(dec.decode(&hex("7e 0176")), Ok(Block::Undecodable));
    assert_eq!(dec.entries(), 1);
    // Index 62 is now that entry: its name is still unknown.
    assert_eq!(dec.decode(&hex("be")), Ok(Block::Undecodable));
    // A literal insertion pushes it to 63; 62 is known.
    assert_eq!(
        dec.decode(&hex("40 016b 0176 be")),
        Ok(fields(&[("k", "v"), ("k", "v")]))
    );
    assert_eq!(dec.decode(&hex("bf")), Ok(Block::Undecodable));
    // Far past anything a 4096-byte table holds: unknown, never an error, when late.
    assert_eq!(dec.decode(&hex("ff80 01")), Ok(Block::Undecodable));
}

/// Names and values from small sets, so that the encoder finds table matches often.
fn field_strategy() -> impl Strategy<Value = Field> {
    let names = prop::sample::select(vec![
        ":method",
        ":path",
        ":authority",
        "content-type",
        "user-agent",
        "x-a",
        "x-b",
        "grpc-timeout",
    ]);
    let values = prop_oneof![
        prop::sample::select(vec!["", "GET", "/", "/a.G/Say", "application/grpc", "1S"])
            .prop_map(|v| v.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(any::<u8>(), 100..300),
    ];
    (names, values).prop_map(|(n, v)| (n.as_bytes().to_vec(), v))
}

#[derive(Clone, Debug)]
struct BlockPlan {
    size_update: Option<usize>,
    fields: Vec<(Field, u8)>,
}

fn connection_strategy() -> impl Strategy<Value = (usize, Vec<BlockPlan>)> {
    let block = (
        prop::option::weighted(0.1, 0usize..400),
        prop::collection::vec((field_strategy(), any::<u8>()), 0..8),
    )
        .prop_map(|(size_update, fields)| BlockPlan {
            size_update,
            fields,
        });
    (
        prop::sample::select(vec![0usize, 64, 256, 400]),
        prop::collection::vec(block, 1..12),
    )
}

/// A connection's blocks, each with the oldest insertion it needs (None: none) and the
/// insertion count before it.
struct Encoded {
    blocks: Vec<Vec<u8>>,
    needs: Vec<Option<u64>>,
    inserted_before: Vec<u64>,
}

fn encode_connection(limit: usize, plans: &[BlockPlan]) -> Encoded {
    let mut enc = Encoder::new(limit);
    let mut out = Encoded {
        blocks: Vec::new(),
        needs: Vec::new(),
        inserted_before: Vec::new(),
    };
    for plan in plans {
        out.inserted_before.push(enc.inserted());
        let mut block = Vec::new();
        if let Some(size) = plan.size_update {
            enc.size_update(size.min(limit), &mut block);
        }
        let mut needs: Option<u64> = None;
        for ((n, v), choice) in &plan.fields {
            if let Some(k) = enc.field(n, v, Choice::from(*choice), &mut block) {
                needs = Some(needs.map_or(k, |m| m.min(k)));
            }
        }
        out.blocks.push(block);
        out.needs.push(needs);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A decoder from the start decodes every block to exactly what was encoded.
    #[test]
    fn full_decoder_round_trips((limit, plans) in connection_strategy()) {
        let enc = encode_connection(limit, &plans);
        let mut dec = Decoder::new().with_limit(limit);
        for (block, plan) in enc.blocks.iter().zip(&plans) {
            let want: Vec<Field> = plan.fields.iter().map(|(f, _)| f.clone()).collect();
            prop_assert_eq!(dec.decode(block), Ok(Block::Fields(want)));
        }
    }

    /// Joined late at every block boundary k: each block decodes to exactly its list or
    /// is Undecodable, and a block that needs only insertions from k on always decodes.
    #[test]
    fn joined_late_at_every_boundary((limit, plans) in connection_strategy()) {
        let enc = encode_connection(limit, &plans);
        for k in 0..plans.len() {
            let mut dec = Decoder::joined_late();
            dec.set_limit(limit);
            for (i, plan) in plans.iter().enumerate().skip(k) {
                let want: Vec<Field> = plan.fields.iter().map(|(f, _)| f.clone()).collect();
                let got = dec.decode(&enc.blocks[i]);
                let must = enc.needs[i].is_none_or(|n| n >= enc.inserted_before[k]);
                if must {
                    prop_assert_eq!(got, Ok(Block::Fields(want)), "k {} block {}", k, i);
                } else {
                    prop_assert!(
                        got == Ok(Block::Fields(want)) || got == Ok(Block::Undecodable),
                        "k {} block {}: {:?}", k, i, got
                    );
                }
            }
        }
    }

    /// Any bytes: never a panic, and a late decoder never yields a list the full decoder
    /// does not.
    #[test]
    fn arbitrary_blocks_never_panic(blocks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..6)) {
        let mut full = Decoder::new();
        let mut late = Decoder::joined_late();
        for b in &blocks {
            let f = full.decode(b);
            let l = late.decode(b);
            if let Ok(Block::Fields(list)) = &l {
                if f.is_err() { break; }
                prop_assert_eq!(&f, &Ok(Block::Fields(list.clone())));
            }
        }
    }
}
