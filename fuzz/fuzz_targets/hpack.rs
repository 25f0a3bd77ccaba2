#![no_main]
//! Fuzzes the HPACK decoder, in two ways chosen by the first byte's low bit.
//!
//! Raw: the rest is a series of header blocks (each a length byte, then that many bytes),
//! decoded by a decoder that saw the connection start and by decoders that joined late
//! at every block. Nothing may panic, and whenever a late decoder yields a list, the full
//! decoder yields the same list for that block (until the full decoder fails, after which
//! the connection would be gone).
//!
//! Encoded: the rest drives `h2::encoder` (op bytes choose the representation, names come
//! from a small set so the table gets reused, values from the input), then the same
//! decoders run: the full one must give back every list exactly, a late one each list or
//! `Undecodable`, and the list whenever the block needs only insertions it saw.

use libfuzzer_sys::fuzz_target;
use shadowtap::h2::encoder::{Choice, Encoder};
use shadowtap::h2::{Block, Decoder, Field};

const NAMES: [&[u8]; 6] = [
    b":path",
    b":authority",
    b"content-type",
    b"x-a",
    b"x-b",
    b"te",
];

/// Table sizes to try: none, tiny, the RFC 7541 C.5 size, the default.
const LIMITS: [usize; 4] = [0, 64, 256, 4096];

fn raw(limit: usize, mut data: &[u8]) {
    let mut blocks = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        blocks.push(&rest[..len]);
        data = &rest[len..];
    }
    let mut full = Decoder::new().with_limit(limit);
    let results: Vec<_> = blocks.iter().map(|b| full.decode(b)).collect();
    // Blocks the full decoder answered before its first fatal error.
    let valid = results
        .iter()
        .position(|r| r.as_ref().is_err_and(|e| e.is_fatal()))
        .unwrap_or(results.len());
    for k in 0..blocks.len() {
        let mut late = Decoder::joined_late();
        late.set_limit(limit);
        for i in k..blocks.len() {
            let got = late.decode(blocks[i]);
            if i < valid {
                if let Ok(Block::Fields(list)) = &got {
                    assert_eq!(
                        &results[i],
                        &Ok(Block::Fields(list.clone())),
                        "k {k} block {i}"
                    );
                }
            }
        }
    }
}

fn encoded(limit: usize, data: &[u8]) {
    let mut enc = Encoder::new(limit);
    let mut blocks: Vec<(Vec<u8>, Vec<Field>, Option<u64>, u64)> = Vec::new();
    let mut block = Vec::new();
    let mut fields = Vec::new();
    let mut needs: Option<u64> = None;
    let mut before = 0;
    let mut it = data.iter().copied();
    while let Some(op) = it.next() {
        match op {
            0xff => {
                blocks.push((
                    std::mem::take(&mut block),
                    std::mem::take(&mut fields),
                    needs.take(),
                    before,
                ));
                before = enc.inserted();
            }
            0xfe if fields.is_empty() => {
                let size = usize::from(it.next().unwrap_or(0)) * 16;
                enc.size_update(size.min(limit), &mut block);
            }
            _ => {
                let name = NAMES[usize::from(it.next().unwrap_or(0)) % NAMES.len()];
                let len = usize::from(it.next().unwrap_or(0) % 64);
                let value: Vec<u8> = it.by_ref().take(len).collect();
                if let Some(k) = enc.field(name, &value, Choice::from(op), &mut block) {
                    needs = Some(needs.map_or(k, |m| m.min(k)));
                }
                fields.push((name.to_vec(), value));
            }
        }
    }
    blocks.push((block, fields, needs, before));
    let mut full = Decoder::new().with_limit(limit);
    for (b, want, _, _) in &blocks {
        assert_eq!(full.decode(b), Ok(Block::Fields(want.clone())));
    }
    for k in 0..blocks.len() {
        let mut late = Decoder::joined_late();
        late.set_limit(limit);
        for (i, (b, want, needs, _)) in blocks.iter().enumerate().skip(k) {
            let got = late.decode(b);
            let must = needs.is_none_or(|n| n >= blocks[k].3);
            if must {
                assert_eq!(got, Ok(Block::Fields(want.clone())), "k {k} block {i}");
            } else {
                assert!(
                    got == Ok(Block::Fields(want.clone())) || got == Ok(Block::Undecodable),
                    "k {k} block {i}: {got:?}"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, rest @ ..] = data else { return };
    let limit = LIMITS[usize::from(pick >> 1) % LIMITS.len()];
    if pick & 1 == 0 {
        raw(limit, rest);
    } else {
        encoded(limit, rest);
    }
});
