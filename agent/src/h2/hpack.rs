//! A tolerant HPACK decoder (RFC 7541) for one direction of one connection, with hard
//! limits and the known-suffix rule for connections joined late (H2.md).
//!
//! It owns the static and dynamic tables, integer and string decoding (Huffman in
//! `huffman.rs`) and the decoding of header blocks into field lists. It never panics on
//! any input and never guesses: a field it cannot know makes its block `Undecodable`.
//!
//! Joining late: the dynamic table always holds the newest insertions, newest first, and
//! an index counts from the newest. A decoder that joined late keeps, in order, the
//! insertions it saw; index 62+j names the j-th newest insertion, so it is known when the
//! decoder saw at least j+1 insertions, whatever came before. An insertion whose name
//! came from an unknown index is kept with its name unknown, so that later references to
//! it are unknown too. Sizes of such entries are counted low (name of 0 bytes) and the
//! table's size is taken at the SETTINGS limit until a size update says otherwise: both
//! keep an entry at least as long as the encoder does, and a valid encoder never points
//! at an entry it evicted, so a known index is always right.

use std::collections::VecDeque;

use super::huffman::{self, HuffmanError};

/// One header field: name and value bytes as decoded.
pub type Field = (Vec<u8>, Vec<u8>);

/// SETTINGS_HEADER_TABLE_SIZE until the decoding side says otherwise (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Bytes of table entries kept, whatever size the peer allows (SETTINGS may allow up to
/// 4 GiB). Entries past it are forgotten as if inserted before the decoder joined: an
/// index to them is unknown, not wrong. Peers use 4 KiB; a few raise it to 64 KiB.
pub const MAX_TABLE_VIEW: usize = 64 * 1024;

/// The default cap on a decoded header list (RFC 9113 §6.5.2's size: name + value + 32
/// per field). A small block can name big table entries many times over, so the decoded
/// list is capped, not just the block. Twice the frame parser's header block cap: servers
/// refuse lists well below it (Envoy 60 KiB, nginx 32 KiB per line by default).
pub const DEFAULT_MAX_HEADER_LIST: usize = 128 * 1024;

/// The longest string literal accepted, before Huffman decoding. No longer than the
/// largest header block the frame parser passes on (`frame::DEFAULT_MAX_HEADER_BLOCK`).
pub const MAX_STRING_LEN: usize = 64 * 1024;

/// Integers above this are refused: every HPACK integer is an index, a length or a table
/// size, none of which can exceed 2^32-1 on HTTP/2 (SETTINGS values are 32-bit).
const MAX_INTEGER: u64 = u32::MAX as u64;

/// Continuation bytes of an integer: five carry 35 bits, enough for `MAX_INTEGER`.
const MAX_INTEGER_BYTES: usize = 5;

/// Bytes an entry counts for besides its name and value (RFC 7541 §4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// RFC 7541 Appendix A.
#[rustfmt::skip]
pub(crate) const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
];

/// Errors of the compression layer. All but `HeaderListTooLarge` leave the table in an
/// unknown state: a COMPRESSION_ERROR for the connection (RFC 9113 §4.3), after which the
/// decoder refuses every block with `Broken`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer over 2^32-1")]
    IntegerOverflow,
    #[error("index 0")]
    ZeroIndex,
    #[error("index {index} past the table ({entries} dynamic entries)")]
    IndexOutOfRange { index: usize, entries: usize },
    #[error("string literal of {len} bytes, over the limit {max}")]
    StringTooLong { len: usize, max: usize },
    #[error(transparent)]
    Huffman(#[from] HuffmanError),
    #[error("dynamic table size update to {size}, over the SETTINGS limit {limit}")]
    TableSizeOverLimit { size: usize, limit: usize },
    #[error("dynamic table size update after the first field of a block")]
    LateTableSizeUpdate,
    /// The block decoded and the table is up to date, but the list was too large to
    /// keep: the stream is lost, not the connection.
    #[error("header list over {max} bytes")]
    HeaderListTooLarge { max: usize },
    #[error("an earlier block failed to decode; the table is unknown")]
    Broken,
}

impl HpackError {
    /// Whether the table state is lost with this error (the connection's headers can no
    /// longer be decoded).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, HpackError::HeaderListTooLarge { .. })
    }
}

/// The outcome of a block that decoded without error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// Every field, in order.
    Fields(Vec<Field>),
    /// At least one field named a table entry inserted before the decoder joined: the
    /// block is counted, never guessed. The table is kept up to date all the same.
    Undecodable,
}

/// A dynamic table entry. `name` is `None` when it came from an entry the decoder never
/// knew (joined late).
#[derive(Clone, Debug)]
struct Entry {
    name: Option<Vec<u8>>,
    value: Vec<u8>,
}

impl Entry {
    /// The size RFC 7541 §4.1 gives it; a lower bound when the name is unknown.
    fn size(&self) -> usize {
        self.name.as_ref().map_or(0, Vec::len) + self.value.len() + ENTRY_OVERHEAD
    }
}

#[derive(Debug)]
struct Table {
    /// Newest first.
    entries: VecDeque<Entry>,
    /// Sum of `Entry::size` over `entries`.
    size: usize,
    /// The size the encoder works with: the SETTINGS limit until a size update.
    max_size: usize,
    /// True when `entries` is the whole table: an index past it is an error. False after
    /// joining late or forgetting entries past `MAX_TABLE_VIEW`: such an index is unknown.
    complete: bool,
}

impl Table {
    fn evict_to(&mut self, room: usize) {
        while self.size > room {
            let Some(old) = self.entries.pop_back() else {
                break;
            };
            self.size -= old.size();
        }
    }

    fn set_max_size(&mut self, max: usize) {
        self.max_size = max;
        self.evict_to(max);
        if self.size > MAX_TABLE_VIEW {
            self.complete = false;
            self.evict_to(MAX_TABLE_VIEW);
        }
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        if size > self.max_size {
            // RFC 7541 §4.4: an entry larger than the table empties it and is not added.
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        if size > MAX_TABLE_VIEW {
            self.entries.clear();
            self.size = 0;
            self.complete = false;
            return;
        }
        if self.size + size > MAX_TABLE_VIEW {
            self.complete = false;
            self.evict_to(MAX_TABLE_VIEW - size);
        }
        self.size += size;
        self.entries.push_front(entry);
    }
}

/// What an index names.
enum Lookup<'t> {
    Known(&'t [u8], &'t [u8]),
    /// An entry inserted before the decoder joined, or one whose name came from such an
    /// entry (its value alone is of no use).
    Unknown,
}

/// Decodes the header blocks of one direction of one connection, in order.
#[derive(Debug)]
pub struct Decoder {
    table: Table,
    /// SETTINGS_HEADER_TABLE_SIZE of the decoding side: the most a size update may set.
    limit: usize,
    max_header_list: usize,
    joined_late: bool,
    broken: bool,
}

impl Decoder {
    /// A decoder that sees the connection from its start: it knows every entry.
    pub fn new() -> Self {
        Self::build(true)
    }

    /// A decoder for a connection joined midway: it knows only what it sees inserted.
    pub fn joined_late() -> Self {
        Self::build(false)
    }

    fn build(complete: bool) -> Self {
        Self {
            table: Table {
                entries: VecDeque::new(),
                size: 0,
                max_size: DEFAULT_TABLE_SIZE,
                complete,
            },
            limit: DEFAULT_TABLE_SIZE,
            max_header_list: DEFAULT_MAX_HEADER_LIST,
            joined_late: !complete,
            broken: false,
        }
    }

    /// Starts with this SETTINGS_HEADER_TABLE_SIZE, and the table at that size (as when
    /// the decoding side's first SETTINGS reached the encoder before its first block).
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self.table.set_max_size(limit);
        self
    }

    /// Caps the decoded header list (name + value + 32 per field).
    pub fn with_max_header_list(mut self, max: usize) -> Self {
        self.max_header_list = max;
        self
    }

    /// Applies the SETTINGS_HEADER_TABLE_SIZE the decoding side advertised. The table
    /// itself changes only with the size update the encoder then sends (RFC 7541 §4.2);
    /// a decoder that joined late takes the new limit as the table's size until then,
    /// since it does not know the size in use.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        if self.joined_late {
            self.table.set_max_size(limit);
        }
    }

    pub fn is_joined_late(&self) -> bool {
        self.joined_late
    }

    /// Sum of the held entries' sizes (RFC 7541 §4.1; unknown names count 0).
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// Dynamic entries held (known or with an unknown name).
    pub fn entries(&self) -> usize {
        self.table.entries.len()
    }

    /// Decodes one whole header block (after CONTINUATIONs are joined).
    pub fn decode(&mut self, block: &[u8]) -> Result<Block, HpackError> {
        if self.broken {
            return Err(HpackError::Broken);
        }
        let result = self.decode_block(block);
        if let Err(e) = &result {
            if e.is_fatal() {
                self.broken = true;
                self.table.entries = VecDeque::new();
                self.table.size = 0;
            }
        }
        result
    }

    fn decode_block(&mut self, block: &[u8]) -> Result<Block, HpackError> {
        let mut cur = Cursor {
            bytes: block,
            pos: 0,
        };
        let mut fields = Vec::new();
        let mut list_size = 0usize;
        let mut too_large = false;
        let mut unknown = false;
        let mut at_start = true;
        let max_list = self.max_header_list;
        let mut keep = |fields: &mut Vec<Field>, name: &[u8], value: &[u8]| {
            list_size = list_size.saturating_add(name.len() + value.len() + ENTRY_OVERHEAD);
            if list_size > max_list {
                too_large = true;
                *fields = Vec::new();
            }
            if !too_large {
                fields.push((name.to_vec(), value.to_vec()));
            }
        };
        while let Some(first) = cur.peek() {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = cur.integer(7)?;
                match self.lookup(index)? {
                    Lookup::Known(n, v) => keep(&mut fields, n, v),
                    Lookup::Unknown => unknown = true,
                }
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3), allowed only before the first field.
                if !at_start {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let size = cur.integer(5)?;
                if size > self.limit {
                    return Err(HpackError::TableSizeOverLimit {
                        size,
                        limit: self.limit,
                    });
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // Literal: with incremental indexing (01, §6.2.1), without indexing
                // (0000, §6.2.2) or never indexed (0001, §6.2.3).
                let indexing = first & 0xc0 == 0x40;
                let index = cur.integer(if indexing { 6 } else { 4 })?;
                let name = if index == 0 {
                    Some(cur.string()?)
                } else {
                    match self.lookup(index)? {
                        Lookup::Known(n, _) => Some(n.to_vec()),
                        Lookup::Unknown => None,
                    }
                };
                let value = cur.string()?;
                match &name {
                    Some(n) => keep(&mut fields, n, &value),
                    None => unknown = true,
                }
                if indexing {
                    self.table.insert(Entry { name, value });
                }
            }
            at_start = false;
        }
        if too_large {
            Err(HpackError::HeaderListTooLarge {
                max: self.max_header_list,
            })
        } else if unknown {
            Ok(Block::Undecodable)
        } else {
            Ok(Block::Fields(fields))
        }
    }

    fn lookup(&self, index: usize) -> Result<Lookup<'_>, HpackError> {
        if index == 0 {
            return Err(HpackError::ZeroIndex);
        }
        if let Some((n, v)) = STATIC_TABLE.get(index - 1) {
            return Ok(Lookup::Known(n.as_bytes(), v.as_bytes()));
        }
        let j = index - STATIC_TABLE.len() - 1;
        match self.table.entries.get(j) {
            Some(Entry {
                name: Some(n),
                value,
            }) => Ok(Lookup::Known(n, value)),
            Some(Entry { name: None, .. }) => Ok(Lookup::Unknown),
            None if self.table.complete => Err(HpackError::IndexOutOfRange {
                index,
                entries: self.table.entries.len(),
            }),
            None => Ok(Lookup::Unknown),
        }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

struct Cursor<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, HpackError> {
        let b = self.peek().ok_or(HpackError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// An integer with an N-bit prefix (RFC 7541 §5.1).
    fn integer(&mut self, prefix: u32) -> Result<usize, HpackError> {
        let mask = (1u8 << prefix) - 1;
        let first = self.next()? & mask;
        if first < mask {
            return Ok(usize::from(first));
        }
        let mut value = u64::from(mask);
        for i in 0..MAX_INTEGER_BYTES {
            let b = self.next()?;
            value += u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return usize::try_from(value)
                    .ok()
                    .filter(|_| value <= MAX_INTEGER)
                    .ok_or(HpackError::IntegerOverflow);
            }
        }
        Err(HpackError::IntegerOverflow)
    }

    /// A string literal (RFC 7541 §5.2).
    fn string(&mut self) -> Result<Vec<u8>, HpackError> {
        let huffman = self.peek().is_some_and(|b| b & 0x80 != 0);
        let len = self.integer(7)?;
        if len > MAX_STRING_LEN {
            return Err(HpackError::StringTooLong {
                len,
                max: MAX_STRING_LEN,
            });
        }
        let raw = self
            .bytes
            .get(self.pos..self.pos + len)
            .ok_or(HpackError::Truncated)?;
        self.pos += len;
        if huffman {
            // The shortest code is 5 bits: at most 8/5 bytes out per byte in.
            let mut out = Vec::with_capacity(len * 8 / 5 + 1);
            huffman::decode(raw, &mut out)?;
            Ok(out)
        } else {
            Ok(raw.to_vec())
        }
    }
}
