//! A small HPACK encoder (RFC 7541) for tests and fuzz targets: the caller chooses every
//! representation, so a test can cover each one and a fuzzer can drive them. It tracks,
//! for every table entry, the first insertion a decoder must have seen to know it, which
//! is what the late-join tests check the decoder against. Capture never encodes.

use std::collections::VecDeque;

use super::hpack::{ENTRY_OVERHEAD, STATIC_TABLE};
use super::huffman;

/// How a literal is indexed (RFC 7541 §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indexing {
    Incremental,
    Without,
    Never,
}

/// The encoder's choices for one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Send an index when a table entry has the same name and value.
    pub indexed: bool,
    /// Otherwise, take the name from a table entry when one has it.
    pub name_ref: bool,
    /// Look in the dynamic table before the static table.
    pub prefer_dynamic: bool,
    pub indexing: Indexing,
    pub huffman: bool,
}

impl From<u8> for Choice {
    /// Spreads a fuzzer's or proptest's byte over the choices.
    fn from(b: u8) -> Self {
        Self {
            indexed: b & 0x01 != 0,
            name_ref: b & 0x02 != 0,
            prefer_dynamic: b & 0x04 != 0,
            indexing: match (b >> 3) % 3 {
                0 => Indexing::Incremental,
                1 => Indexing::Without,
                _ => Indexing::Never,
            },
            huffman: b & 0x80 != 0,
        }
    }
}

#[derive(Debug)]
struct Entry {
    name: Vec<u8>,
    value: Vec<u8>,
    /// The oldest insertion (by ordinal) a decoder must have seen to know this entry:
    /// its own, or older when its name came from an older entry.
    needs: u64,
}

/// The encoder side of one direction's dynamic table.
#[derive(Debug)]
pub struct Encoder {
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    inserted: u64,
}

impl Encoder {
    pub fn new(max_size: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size,
            inserted: 0,
        }
    }

    /// Insertions so far: the ordinal the next one gets.
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    /// Writes a dynamic table size update; only valid before a block's first field.
    pub fn size_update(&mut self, size: usize, out: &mut Vec<u8>) {
        integer(out, 0x20, 5, size);
        self.max_size = size;
        self.evict_to(size);
    }

    /// Writes one field. Returns the oldest insertion a decoder must have seen to decode
    /// it, or `None` when it refers to no dynamic entry.
    pub fn field(
        &mut self,
        name: &[u8],
        value: &[u8],
        choice: Choice,
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        let stat = |full: bool| {
            STATIC_TABLE
                .iter()
                .position(|(n, v)| n.as_bytes() == name && (!full || v.as_bytes() == value))
                .map(|i| (i + 1, None))
        };
        let dynamic = |full: bool| {
            self.entries
                .iter()
                .position(|e| e.name == name && (!full || e.value == value))
                .map(|j| (STATIC_TABLE.len() + 1 + j, Some(self.entries[j].needs)))
        };
        let find = |full: bool| {
            if choice.prefer_dynamic {
                dynamic(full).or_else(|| stat(full))
            } else {
                stat(full).or_else(|| dynamic(full))
            }
        };
        if choice.indexed {
            if let Some((index, needs)) = find(true) {
                integer(out, 0x80, 7, index);
                return needs;
            }
        }
        let name_ref = if choice.name_ref { find(false) } else { None };
        let (first, prefix) = match choice.indexing {
            Indexing::Incremental => (0x40, 6),
            Indexing::Without => (0x00, 4),
            Indexing::Never => (0x10, 4),
        };
        let needs = match name_ref {
            Some((index, needs)) => {
                integer(out, first, prefix, index);
                needs
            }
            None => {
                out.push(first);
                string(out, name, choice.huffman);
                None
            }
        };
        string(out, value, choice.huffman);
        if choice.indexing == Indexing::Incremental {
            let own = self.inserted;
            self.inserted += 1;
            self.insert(Entry {
                name: name.to_vec(),
                value: value.to_vec(),
                needs: needs.map_or(own, |n| n.min(own)),
            });
        }
        needs
    }

    fn evict_to(&mut self, room: usize) {
        while self.size > room {
            let Some(old) = self.entries.pop_back() else {
                break;
            };
            self.size -= old.name.len() + old.value.len() + ENTRY_OVERHEAD;
        }
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.name.len() + entry.value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entries.push_front(entry);
    }
}

/// An integer with an N-bit prefix (RFC 7541 §5.1); `first` holds the bits above it.
pub fn integer(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(first | value as u8);
        return;
    }
    out.push(first | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// A string literal (RFC 7541 §5.2).
pub fn string(out: &mut Vec<u8>, s: &[u8], huffman: bool) {
    if huffman {
        let mut coded = Vec::new();
        huffman::encode(s, &mut coded);
        integer(out, 0x80, 7, coded.len());
        out.extend_from_slice(&coded);
    } else {
        integer(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }
}
