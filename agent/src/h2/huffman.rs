//! The static Huffman code of HPACK (RFC 7541 §5.2 and Appendix B): decoding string
//! literals, with the RFC's rules on padding and EOS.
//!
//! The code is canonical (within a length, codes rise with the symbol), so the table
//! below holds only each symbol's code length; codes and the decoding tables are derived
//! from it at compile time, and a test checks them against codes printed in the RFC.

/// Code length in bits of each symbol: bytes 0..=255, then EOS (256). RFC 7541 Appendix B.
#[rustfmt::skip]
const CODE_LENGTHS: [u8; 257] = [
    // 0..=31: control bytes
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    // ' ' ! " # $ % & ' ( ) * + , - . /
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    // 0..9 : ; < = > ?
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    // @ A..O
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    // P..Z [ \ ] ^ _
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    // ` a..o
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    // p..z { | } ~ DEL
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    // 128..=255
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    // EOS
    30,
];

/// The longest code (EOS).
const MAX_LEN: usize = 30;

/// The symbol that must never appear in a string (RFC 7541 §5.2).
pub const EOS: u16 = 256;

/// The canonical decoding tables: for each length, the first code of that length, how
/// many codes have it, and where its symbols start in `symbols` (sorted by length, then
/// value).
struct Tables {
    first: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    offset: [u16; MAX_LEN + 1],
    symbols: [u16; 257],
    codes: [u32; 257],
}

const TABLES: Tables = build();

const fn build() -> Tables {
    let mut t = Tables {
        first: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        symbols: [0; 257],
        codes: [0; 257],
    };
    let mut code: u32 = 0;
    let mut next: u16 = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        t.first[len] = code;
        t.offset[len] = next;
        let mut sym = 0;
        while sym < 257 {
            if CODE_LENGTHS[sym] as usize == len {
                t.codes[sym] = code;
                t.symbols[next as usize] = sym as u16;
                next += 1;
                code += 1;
                t.count[len] += 1;
            }
            sym += 1;
        }
        code <<= 1;
        len += 1;
    }
    t
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    #[error("Huffman string contains EOS")]
    Eos,
    #[error("Huffman string ends with padding longer than 7 bits or not all ones")]
    Padding,
}

/// Appends the decoded bytes of `input` to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let t = &TABLES;
    // The bits of the symbol being read, and how many.
    let mut code: u32 = 0;
    let mut len: usize = 0;
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            // A code of `len` bits is one of that length when it falls in its range;
            // canonical codes make every shorter prefix fall outside.
            let index = code.wrapping_sub(t.first[len]);
            if index < t.count[len] {
                let sym = t.symbols[usize::from(t.offset[len]) + index as usize];
                if sym == EOS {
                    return Err(HuffmanError::Eos);
                }
                // Every other symbol is a byte value.
                out.push(sym as u8);
                code = 0;
                len = 0;
            } else if len == MAX_LEN {
                // 30 bits that are no code: only EOS is 30 bits of ones, caught above.
                return Err(HuffmanError::Eos);
            }
        }
    }
    // Padding: the most significant bits of EOS (all ones), at most 7 of them.
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HuffmanError::Padding);
    }
    Ok(())
}

/// The code and its length for a symbol (byte or EOS). The decoder does not need it; the
/// tests' encoder and the fuzz targets do.
pub fn code(sym: u16) -> (u32, u8) {
    let i = usize::from(sym.min(EOS));
    (TABLES.codes[i], CODE_LENGTHS[i])
}

/// Huffman-encodes `input` (RFC 7541 §5.2), padding with ones.
pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in input {
        let (c, l) = code(u16::from(b));
        acc = (acc << l) | u64::from(c);
        bits += u32::from(l);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_rfc_7541_appendix_b() {
        // A sample of rows from Appendix B (code as hex aligned to LSB, length), from
        // each length and from where lengths change; the rest follow canonically.
        let rows: &[(u16, u32, u8)] = &[
            (0, 0x1ff8, 13),
            (1, 0x7fffd8, 23),
            (9, 0xffffea, 24),
            (10, 0x3ffffffc, 30),
            (22, 0x3ffffffe, 30),
            (31, 0xffffffb, 28),
            (b' '.into(), 0x14, 6),
            (b'0'.into(), 0x0, 5),
            (b':'.into(), 0x5c, 7),
            (b'<'.into(), 0x7ffc, 15),
            (b'X'.into(), 0xfc, 8),
            (b'\\'.into(), 0x7fff0, 19),
            (b'z'.into(), 0x7b, 7),
            (b'~'.into(), 0x1ffd, 13),
            (127, 0xffffffc, 28),
            (153, 0x1fffdc, 21),
            (199, 0x1ffffec, 25),
            (203, 0x7ffffde, 27),
            (225, 0xfffff3, 24),
            (249, 0xffffffe, 28),
            (255, 0x3ffffee, 26),
            (EOS, 0x3fffffff, 30),
        ];
        for &(sym, hex, len) in rows {
            assert_eq!(code(sym), (hex, len), "symbol {sym}");
        }
        // A complete prefix code: the Kraft sum is exactly one.
        let kraft: u64 = CODE_LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
    }

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        let mut dec = Vec::new();
        decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, all);
    }

    #[test]
    fn refuses_eos_and_bad_padding() {
        let mut out = Vec::new();
        // 30 ones then two padding ones: EOS.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HuffmanError::Eos)
        );
        // 'a' (00011) then 3 zero bits: padding not all ones.
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(HuffmanError::Padding));
        // 'a' then a whole byte of ones: 11 bits of padding.
        assert_eq!(
            decode(&[0b0001_1111, 0xff], &mut out),
            Err(HuffmanError::Padding)
        );
        out.clear();
        assert_eq!(decode(&[0b0001_1111], &mut out), Ok(()));
        assert_eq!(out, b"a");
    }
}
