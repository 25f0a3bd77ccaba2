//! Capture files: a streaming reader for pcap and pcapng (what tcpdump, Wireshark/tshark
//! and shadowtap itself write) and a pcapng writer for `--record`.
//!
//! The reader holds one reusable buffer, read into in large pieces, and hands out records
//! as slices of it: memory stays bounded by the largest record it accepts, whatever the
//! file's size. A file cut short in the middle of a record is a
//! normal end (captures killed mid-write are common), reported in `CaptureFileStats`.
//!
//! `open_input` also reads standard input (`-`) and gzip or zstd compressed captures
//! (tcpdump's `-z` rotations), told apart by their first bytes, decompressed as they are
//! read.

use std::fs::File;
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::ops::Range;
use std::path::Path;

use super::{Frame, LinkType};

/// A pcap record larger than this is taken as corruption: no link layer we decode has
/// frames near this size, and trusting the field would let one bad record allocate GBs.
const MAX_PCAP_RECORD: u32 = 1 << 20;
/// How far a pcap record's captured length may exceed its wire length.
const MAX_CAPTURED_OVER_WIRE: u32 = 65_535;
/// pcapng blocks larger than this are rejected for the same reason.
const MAX_PCAPNG_BLOCK: u32 = 16 << 20;
/// Each IDB costs memory until the next section; a real file has a handful.
const MAX_INTERFACES: usize = 4096;

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OPB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const OPT_END: u16 = 0;
const OPT_IF_NAME: u16 = 2;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;

const NANOS_PER_SEC: u64 = 1_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum CaptureFileError {
    #[error("not a pcap or pcapng capture: {why}")]
    NotACapture { why: String },
    #[error("corrupt capture at byte {offset}: {why}")]
    CorruptRecord { offset: u64, why: String },
    #[error("read failed at byte {offset}: {source}")]
    Io { offset: u64, source: io::Error },
}

/// What the reader has seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureFileStats {
    /// Frames returned by `next_frame`.
    pub frames: u64,
    /// Captured bytes of those frames.
    pub bytes: u64,
    /// Frames whose captured length is less than their length on the wire (snaplen).
    pub truncated_frames: u64,
    /// pcapng blocks that carry no frame we read (statistics, name resolution, unknown).
    pub skipped_blocks: u64,
    /// The file ended inside a record or block.
    pub truncated_tail: bool,
}

#[derive(Clone, Copy, Debug)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let bytes = [b[at], b[at + 1]];
        match self {
            Self::Little => u16::from_le_bytes(bytes),
            Self::Big => u16::from_be_bytes(bytes),
        }
    }

    fn u32(self, b: &[u8], at: usize) -> u32 {
        let bytes = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        match self {
            Self::Little => u32::from_le_bytes(bytes),
            Self::Big => u32::from_be_bytes(bytes),
        }
    }

    fn u64(self, b: &[u8], at: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&b[at..at + 8]);
        match self {
            Self::Little => u64::from_le_bytes(bytes),
            Self::Big => u64::from_be_bytes(bytes),
        }
    }
}

/// Converts a timestamp counted in the file's units to nanoseconds: `ts * num / den`.
#[derive(Clone, Copy, Debug)]
struct TsScale {
    num: u128,
    den: u128,
    /// `if_tsoffset`: seconds added to every timestamp of the interface.
    offset_secs: i64,
}

impl TsScale {
    const MICROS: Self = Self {
        num: 1000,
        den: 1,
        offset_secs: 0,
    };

    /// From `if_tsresol`: high bit set means a power of 2, else a power of 10.
    fn from_tsresol(resol: u8) -> Self {
        let exp = u32::from(resol & 0x7F);
        let (num, den) = if resol & 0x80 != 0 {
            (u128::from(NANOS_PER_SEC), 1u128 << exp)
        } else if exp <= 9 {
            (10u128.pow(9 - exp), 1)
        } else {
            // Finer than 1e-38 s per unit: every timestamp rounds to zero nanoseconds.
            (1, 10u128.checked_pow(exp - 9).unwrap_or(u128::MAX))
        };
        Self {
            num,
            den,
            offset_secs: 0,
        }
    }

    fn to_nanos(self, ts: u64) -> u64 {
        let nanos = u128::from(ts) * self.num / self.den;
        let offset = i128::from(self.offset_secs) * i128::from(NANOS_PER_SEC);
        let total = i128::try_from(nanos)
            .unwrap_or(i128::MAX)
            .saturating_add(offset);
        u64::try_from(total.max(0)).unwrap_or(u64::MAX)
    }
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkType,
    snaplen: u32,
    ts: TsScale,
}

#[derive(Debug)]
enum Format {
    Pcap {
        endian: Endian,
        nanos: bool,
        /// Kuznetsov's patched libpcap (magic a1b2cd34) adds 8 bytes to each record header.
        extra_header: usize,
        link: LinkType,
    },
    Pcapng {
        endian: Endian,
    },
}

/// Where the frame returned by `next_frame` lies in the reader's buffer.
struct FrameAt {
    start: usize,
    len: usize,
    ts_nanos: u64,
    link: LinkType,
    orig_len: u32,
}

/// Result of reading a fixed-size piece of the file.
enum Fill {
    Full,
    /// End of file before the first byte.
    Eof,
    /// End of file after some bytes: the file was cut.
    Partial,
}

/// Bytes asked of the file per read.
const READ_CHUNK: usize = 256 * 1024;

/// The file's bytes not consumed yet, `data[start..end]`. Reads go straight into `data`
/// in pieces of up to `READ_CHUNK`; records are slices of it, so a frame is never copied
/// (a `BufReader` plus a copy per record was a tenth of `inspect`).
struct Input<R> {
    inner: R,
    /// Zeroed once when it grows, then reused: its length is the buffer's size.
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: Read> Input<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Makes `n` unconsumed bytes available, or as many as the file still has; returns
    /// how many of the `n` are. `data` grows by `READ_CHUNK` only once the bytes before
    /// arrived, so a lying length field costs no memory.
    fn want(&mut self, n: usize) -> io::Result<usize> {
        while self.end - self.start < n {
            if self.start > 0 {
                // Less than one record is left: moving it is cheaper than growing.
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.data.len() {
                self.data.resize(self.data.len() + READ_CHUNK, 0);
            }
            let got = loop {
                match self.inner.read(&mut self.data[self.end..]) {
                    Ok(got) => break got,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if got == 0 {
                break;
            }
            self.end += got;
        }
        Ok((self.end - self.start).min(n))
    }

    /// Consumes `n` available bytes; returns where they lie in `data`.
    fn take(&mut self, n: usize) -> Range<usize> {
        let at = self.start..self.start + n;
        self.start += n;
        at
    }
}

/// Streaming reader of one pcap or pcapng file.
pub struct CaptureReader<R: Read> {
    input: Input<R>,
    /// Bytes consumed so far: error messages point at the record that failed.
    pos: u64,
    format: Format,
    /// pcapng: the interfaces of the current section.
    interfaces: Vec<Interface>,
    /// pcapng: SPBs carry no timestamp; they reuse the last one seen so replay timing holds.
    last_ts: u64,
    /// The body of the last record read, in `input.data`.
    body: Range<usize>,
    stats: CaptureFileStats,
    done: bool,
}

impl CaptureReader<Box<dyn Read>> {
    /// Opens a capture file, standard input for `-`, decompressing as `open_input` does.
    pub fn open(path: &Path) -> Result<Self, CaptureFileError> {
        Self::new(open_input(path)?)
    }
}

/// The name that stands for standard input where a capture file is named.
pub const STDIN_PATH: &str = "-";

/// Whether `path` names standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == STDIN_PATH
}

const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// zstd skippable frames: magic 0x184D2A50 to 0x184D2A5F, little-endian.
const ZSTD_SKIPPABLE: u32 = 0x184D_2A50;
/// Largest zstd window accepted: what the `zstd` tool itself decompresses without
/// `--memory` (128 MiB). The window is what the decoder holds, so this bounds memory
/// whatever the frame header claims.
const MAX_ZSTD_WINDOW: u64 = 128 << 20;

/// The bytes of the capture at `path` (`-`: standard input), decompressed when they
/// are gzip or zstd. The format is told by the first bytes, not the file name: rotated
/// and piped captures rarely keep a telling name. Nothing is read ahead beyond what
/// decompression needs, so memory stays bounded however large the input.
pub fn open_input(path: &Path) -> Result<Box<dyn Read>, CaptureFileError> {
    let io_err = |source| CaptureFileError::Io { offset: 0, source };
    if is_stdin(path) {
        // `Stdin` buffers internally, and reads as large as `Input`'s go around it.
        decompressed(io::stdin())
    } else {
        decompressed(File::open(path).map_err(io_err)?)
    }
}

/// Peeks at the first four bytes of `inner` and puts the decompressor they call for in
/// front of it. Plain captures get no extra buffer: the reader reads large pieces itself.
fn decompressed<R: Read + 'static>(mut inner: R) -> Result<Box<dyn Read>, CaptureFileError> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match inner.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => return Err(CaptureFileError::Io { offset: 0, source }),
        }
    }
    let whole = io::Cursor::new(magic).take(got as u64).chain(inner);
    Ok(if got >= 2 && magic[..2] == GZIP_MAGIC {
        // Multi-member: `gzip -c a b > c` and appended rotations are one stream.
        Box::new(flate2::read::MultiGzDecoder::new(whole))
    } else if got == 4 && magic == ZSTD_MAGIC {
        Box::new(ZstdFrames::new(PeekReader::new(whole)))
    } else {
        Box::new(whole)
    })
}

/// Decodes every zstd frame of a stream in turn (ruzstd's `StreamingDecoder` stops after
/// the first), skipping skippable frames, refusing windows over `MAX_ZSTD_WINDOW`.
struct ZstdFrames<R: Read> {
    source: PeekReader<R>,
    decoder: ruzstd::decoding::FrameDecoder,
    /// A frame is being decoded (its header was read).
    in_frame: bool,
}

impl<R: Read> ZstdFrames<R> {
    fn new(source: PeekReader<R>) -> Self {
        Self {
            source,
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Starts the next frame; false at the end of the stream.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            // The longest frame header: magic, descriptor, window, dictionary id (4) and
            // content size (8).
            let head = self.source.peek(18)?;
            if head.is_empty() {
                return Ok(false);
            }
            if head.len() >= 4 {
                let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
                if magic & !0xF == ZSTD_SKIPPABLE {
                    let mut header = [0u8; 8];
                    self.source.read_exact(&mut header)?;
                    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                    let skipped = io::copy(
                        &mut (&mut self.source).take(u64::from(len)),
                        &mut io::sink(),
                    )?;
                    if skipped < u64::from(len) {
                        return Err(io::Error::new(
                            ErrorKind::UnexpectedEof,
                            "zstd: the input ends inside a skippable frame",
                        ));
                    }
                    continue;
                }
            }
            if let Some(window) = zstd_window(head) {
                if window > MAX_ZSTD_WINDOW {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!(
                            "zstd frame needs a {window}-byte window, more than the {MAX_ZSTD_WINDOW} \
                             accepted; decompress it with `zstd -d --memory=...` first"
                        ),
                    ));
                }
            }
            self.decoder
                .reset(&mut self.source)
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("zstd: {e}")))?;
            return Ok(true);
        }
    }
}

/// A buffered reader that can look a few bytes ahead however its reads fall: a zstd
/// frame's header may straddle two reads of the input.
struct PeekReader<R: Read> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: Read> PeekReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    /// Up to `n` (at most `READ_CHUNK`) unread bytes, fewer only at the end of the input.
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.end - self.start < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            while self.end < n {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Ok(0) => break,
                    Ok(got) => self.end += got,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.start..self.end.min(self.start + n)])
    }
}

impl<R: Read> Read for PeekReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let got = {
            let available = self.fill_buf()?;
            let got = available.len().min(out.len());
            out[..got].copy_from_slice(&available[..got]);
            got
        };
        self.consume(got);
        Ok(got)
    }
}

impl<R: Read> BufRead for PeekReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(got) => break got,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }
}

/// The memory a zstd frame's decoder holds, from its header (`head` starts at the frame's
/// magic number): the window, or the whole content for a single-segment frame. None when
/// `head` is too short to say (the decoder then reports the damage).
fn zstd_window(head: &[u8]) -> Option<u64> {
    let descriptor = *head.get(4)?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let window = *head.get(5)?;
        let log = 10 + u64::from(window >> 3);
        let base = 1u64 << log;
        return Some(base + (base / 8) * u64::from(window & 7));
    }
    let dict_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let at = 5 + dict_len;
    Some(match descriptor >> 6 {
        0 => u64::from(*head.get(at)?),
        1 => u64::from(u16::from_le_bytes([*head.get(at)?, *head.get(at + 1)?])) + 256,
        2 => u64::from(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?)),
        _ => u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?),
    })
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let wanted = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(
                        &mut self.source,
                        ruzstd::decoding::BlockDecodingStrategy::UptoBytes(wanted),
                    )
                    .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("zstd: {e}")))?;
            }
            let got = self.decoder.read(buf)?;
            if got > 0 {
                return Ok(got);
            }
            if self.decoder.is_finished() {
                self.in_frame = false;
            }
        }
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header (pcap) or first section header (pcapng).
    pub fn new(inner: R) -> Result<Self, CaptureFileError> {
        let mut reader = Self {
            input: Input::new(inner),
            pos: 0,
            // Placeholder until the magic is known.
            format: Format::Pcapng {
                endian: Endian::Little,
            },
            interfaces: Vec::new(),
            last_ts: 0,
            body: 0..0,
            stats: CaptureFileStats::default(),
            done: false,
        };
        let mut magic = [0u8; 4];
        match reader.fill(&mut magic)? {
            Fill::Full => {}
            Fill::Eof => return Err(not_a_capture("the file is empty")),
            Fill::Partial => {
                return Err(not_a_capture("the file is shorter than any capture header"))
            }
        }
        let (endian, nanos, extra_header) = match magic {
            [0xD4, 0xC3, 0xB2, 0xA1] => (Endian::Little, false, 0),
            [0xA1, 0xB2, 0xC3, 0xD4] => (Endian::Big, false, 0),
            [0x4D, 0x3C, 0xB2, 0xA1] => (Endian::Little, true, 0),
            [0xA1, 0xB2, 0x3C, 0x4D] => (Endian::Big, true, 0),
            [0x34, 0xCD, 0xB2, 0xA1] => (Endian::Little, false, 8),
            [0xA1, 0xB2, 0xCD, 0x34] => (Endian::Big, false, 8),
            [0x0A, 0x0D, 0x0D, 0x0A] => {
                reader.read_section_header()?;
                return Ok(reader);
            }
            other => {
                return Err(not_a_capture(&format!(
                    "unknown magic number {:02x}{:02x}{:02x}{:02x} (expected pcap a1b2c3d4/a1b23c4d or pcapng 0a0d0d0a, possibly gzip or zstd compressed)",
                    other[0], other[1], other[2], other[3]
                )))
            }
        };
        // Rest of the pcap file header: version (4), thiszone (4), sigfigs (4), snaplen (4),
        // linktype (4). snaplen is not used: records say their own length.
        let mut header = [0u8; 20];
        match reader.fill(&mut header)? {
            Fill::Full => {}
            Fill::Eof | Fill::Partial => {
                reader.stats.truncated_tail = true;
                reader.done = true;
            }
        }
        let major = endian.u16(&header, 0);
        if !reader.done && major != 2 {
            return Err(not_a_capture(&format!(
                "pcap major version {major}, expected 2"
            )));
        }
        // The upper bits of the field carry FCS information, the link type is the low 16.
        let link = LinkType::from_linktype(endian.u32(&header, 16) & 0xFFFF);
        reader.format = Format::Pcap {
            endian,
            nanos,
            extra_header,
            link,
        };
        Ok(reader)
    }

    pub fn stats(&self) -> &CaptureFileStats {
        &self.stats
    }

    /// The next frame, or `None` at the end of the file (or where it was cut).
    /// The frame borrows the reader's buffer, which the next call reuses.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureFileError> {
        if self.done {
            return Ok(None);
        }
        let next = match self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::Pcapng { .. } => self.next_pcapng(),
        };
        let at = match next {
            Ok(Some(at)) => at,
            Ok(None) => {
                self.done = true;
                return Ok(None);
            }
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        self.stats.frames += 1;
        self.stats.bytes += at.len as u64;
        if (at.len as u64) < u64::from(at.orig_len) {
            self.stats.truncated_frames += 1;
        }
        Ok(Some(Frame {
            ts_nanos: at.ts_nanos,
            link: at.link,
            data: &self.body()[at.start..at.start + at.len],
            orig_len: at.orig_len,
        }))
    }

    fn next_pcap(&mut self) -> Result<Option<FrameAt>, CaptureFileError> {
        let Format::Pcap {
            endian,
            nanos,
            extra_header,
            link,
        } = self.format
        else {
            return Ok(None);
        };
        let record_at = self.pos;
        let header_len = 16 + extra_header;
        let got = self.want(header_len)?;
        let at = self.input.take(got);
        self.pos += got as u64;
        if got < header_len {
            return Ok(if got == 0 { None } else { self.cut() });
        }
        // Read in place: copying 16 bytes out per record showed in profiles.
        let header = &self.input.data[at];
        let ts_sec = u64::from(endian.u32(header, 0));
        let ts_frac = u64::from(endian.u32(header, 4));
        let incl_len = endian.u32(header, 8);
        let orig_len = endian.u32(header, 12);
        if incl_len > MAX_PCAP_RECORD {
            return Err(CaptureFileError::CorruptRecord {
                offset: record_at,
                why: format!(
                    "record claims {incl_len} captured bytes (limit {MAX_PCAP_RECORD}): the file is damaged"
                ),
            });
        }
        // Captured beyond the wire length happens by a few bytes in odd writers; by more
        // than a frame, the reader is out of step with the records.
        if incl_len > orig_len && incl_len - orig_len > MAX_CAPTURED_OVER_WIRE {
            return Err(CaptureFileError::CorruptRecord {
                offset: record_at,
                why: format!(
                    "record claims {incl_len} captured bytes of a {orig_len}-byte packet: the file is damaged"
                ),
            });
        }
        let len = incl_len as usize;
        if !self.read_body(len)? {
            return Ok(self.cut());
        }
        let frac_nanos = if nanos {
            ts_frac
        } else {
            ts_frac.saturating_mul(1000)
        };
        Ok(Some(FrameAt {
            start: 0,
            len,
            ts_nanos: ts_sec
                .saturating_mul(NANOS_PER_SEC)
                .saturating_add(frac_nanos),
            link,
            // A record longer than its wire length is odd but harmless; keep orig >= captured.
            orig_len: orig_len.max(incl_len),
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<FrameAt>, CaptureFileError> {
        loop {
            let block_at = self.pos;
            let mut header = [0u8; 8];
            match self.fill(&mut header)? {
                Fill::Full => {}
                Fill::Eof => return Ok(None),
                Fill::Partial => return Ok(self.cut()),
            }
            if header[..4] == [0x0A, 0x0D, 0x0D, 0x0A] {
                // A new section, perhaps in the other byte order: the SHB type reads the
                // same either way, its length only once the byte-order magic is known.
                let mut len = [0u8; 4];
                len.copy_from_slice(&header[4..]);
                if !self.read_section_body(block_at, len)? {
                    return Ok(self.cut());
                }
                continue;
            }
            let Format::Pcapng { endian, .. } = self.format else {
                return Ok(None);
            };
            let block_type = endian.u32(&header, 0);
            let total_len = endian.u32(&header, 4);
            check_block_len(block_at, total_len, 12)?;
            let body_len = (total_len - 12) as usize;
            match block_type {
                PCAPNG_IDB | PCAPNG_EPB | PCAPNG_SPB | PCAPNG_OPB => {}
                _ => {
                    // Skip without buffering: unknown blocks can be large (e.g. systemd journal).
                    if !self.skip(body_len as u64)? {
                        return Ok(self.cut());
                    }
                    if !self.read_trailer(block_at, total_len, endian)? {
                        return Ok(self.cut());
                    }
                    self.stats.skipped_blocks += 1;
                    continue;
                }
            }
            // Body and trailer in the buffer together: reading the trailer on its own
            // could refill the buffer over the body, which `self.body` points into.
            self.want(body_len + 4)?;
            if !self.read_body(body_len)? {
                return Ok(self.cut());
            }
            if !self.read_trailer(block_at, total_len, endian)? {
                return Ok(self.cut());
            }
            match block_type {
                PCAPNG_IDB => self.parse_idb(block_at, endian)?,
                PCAPNG_EPB => return self.parse_epb(block_at, endian).map(Some),
                PCAPNG_OPB => return self.parse_opb(block_at, endian).map(Some),
                _ => return self.parse_spb(block_at, endian).map(Some),
            }
        }
    }

    /// Reads the SHB after its first 4 bytes (the block type) were consumed.
    fn read_section_header(&mut self) -> Result<(), CaptureFileError> {
        let mut len = [0u8; 4];
        match self.fill(&mut len)? {
            Fill::Full => {}
            Fill::Eof | Fill::Partial => {
                self.cut();
                return Ok(());
            }
        }
        if !self.read_section_body(0, len)? {
            self.cut();
        }
        Ok(())
    }

    /// Reads an SHB from its byte-order magic on; `len_bytes` is its total-length field.
    /// Returns false when the file ends inside the block.
    fn read_section_body(
        &mut self,
        block_at: u64,
        len_bytes: [u8; 4],
    ) -> Result<bool, CaptureFileError> {
        let mut bom = [0u8; 4];
        match self.fill(&mut bom)? {
            Fill::Full => {}
            Fill::Eof | Fill::Partial => return Ok(false),
        }
        let endian = if u32::from_le_bytes(bom) == PCAPNG_BYTE_ORDER_MAGIC {
            Endian::Little
        } else if u32::from_be_bytes(bom) == PCAPNG_BYTE_ORDER_MAGIC {
            Endian::Big
        } else if block_at == 0 {
            return Err(not_a_capture(
                "pcapng section header without the 1a2b3c4d byte-order magic",
            ));
        } else {
            return Err(CaptureFileError::CorruptRecord {
                offset: block_at,
                why: "section header block without the 1a2b3c4d byte-order magic".into(),
            });
        };
        let total_len = endian.u32(&len_bytes, 0);
        // type, length, byte-order magic, version (4), section length (8), length again.
        check_block_len(block_at, total_len, 28)?;
        let body_len = u64::from(total_len - 16);
        if !self.skip(body_len)? || !self.read_trailer(block_at, total_len, endian)? {
            return Ok(false);
        }
        // A new section describes its interfaces afresh.
        self.format = Format::Pcapng { endian };
        self.interfaces.clear();
        self.last_ts = 0;
        Ok(true)
    }

    /// Reads the trailing copy of the block length; false when the file ends first.
    fn read_trailer(
        &mut self,
        block_at: u64,
        total_len: u32,
        endian: Endian,
    ) -> Result<bool, CaptureFileError> {
        let mut trailer = [0u8; 4];
        match self.fill(&mut trailer)? {
            Fill::Full => {}
            Fill::Eof | Fill::Partial => return Ok(false),
        }
        let trailing = endian.u32(&trailer, 0);
        if trailing != total_len {
            return Err(CaptureFileError::CorruptRecord {
                offset: block_at,
                why: format!("block length {total_len} at the start but {trailing} at the end"),
            });
        }
        Ok(true)
    }

    fn parse_idb(&mut self, block_at: u64, endian: Endian) -> Result<(), CaptureFileError> {
        let body = self.body();
        if body.len() < 8 {
            return Err(corrupt(
                block_at,
                "interface description block shorter than 20 bytes",
            ));
        }
        let link = LinkType::from_linktype(u32::from(endian.u16(body, 0)));
        let snaplen = endian.u32(body, 4);
        let mut ts = TsScale::MICROS;
        for (code, value) in Options::new(&body[8..], endian) {
            match code {
                OPT_IF_TSRESOL if !value.is_empty() => {
                    let offset_secs = ts.offset_secs;
                    ts = TsScale::from_tsresol(value[0]);
                    ts.offset_secs = offset_secs;
                }
                OPT_IF_TSOFFSET if value.len() >= 8 => {
                    // The option is signed: a negative offset moves timestamps earlier.
                    ts.offset_secs = endian.u64(value, 0) as i64;
                }
                _ => {}
            }
        }
        if self.interfaces.len() >= MAX_INTERFACES {
            return Err(corrupt(
                block_at,
                "more than 4096 interfaces in one section",
            ));
        }
        self.interfaces.push(Interface { link, snaplen, ts });
        Ok(())
    }

    fn interface(&self, block_at: u64, id: u32) -> Result<Interface, CaptureFileError> {
        self.interfaces.get(id as usize).copied().ok_or_else(|| {
            corrupt(
                block_at,
                &format!("packet on interface {id}, which no interface block described"),
            )
        })
    }

    fn parse_epb(&mut self, block_at: u64, endian: Endian) -> Result<FrameAt, CaptureFileError> {
        if self.body().len() < 20 {
            return Err(corrupt(
                block_at,
                "enhanced packet block shorter than 32 bytes",
            ));
        }
        let id = endian.u32(self.body(), 0);
        self.packet_at(block_at, endian, id, 4, 20)
    }

    fn parse_opb(&mut self, block_at: u64, endian: Endian) -> Result<FrameAt, CaptureFileError> {
        if self.body().len() < 20 {
            return Err(corrupt(block_at, "packet block shorter than 32 bytes"));
        }
        let id = u32::from(endian.u16(self.body(), 0));
        self.packet_at(block_at, endian, id, 4, 20)
    }

    /// EPB and OPB share a layout after the interface id: ts high, ts low, captured
    /// length, original length, data.
    fn packet_at(
        &mut self,
        block_at: u64,
        endian: Endian,
        id: u32,
        ts_at: usize,
        data_at: usize,
    ) -> Result<FrameAt, CaptureFileError> {
        let iface = self.interface(block_at, id)?;
        let ts_units = (u64::from(endian.u32(self.body(), ts_at)) << 32)
            | u64::from(endian.u32(self.body(), ts_at + 4));
        let cap_len = endian.u32(self.body(), ts_at + 8);
        let orig_len = endian.u32(self.body(), ts_at + 12);
        if cap_len as usize > self.body().len() - data_at {
            return Err(corrupt(
                block_at,
                &format!(
                    "packet claims {cap_len} captured bytes but its block holds {}",
                    self.body().len() - data_at
                ),
            ));
        }
        let ts_nanos = iface.ts.to_nanos(ts_units);
        self.last_ts = ts_nanos;
        Ok(FrameAt {
            start: data_at,
            len: cap_len as usize,
            ts_nanos,
            link: iface.link,
            orig_len: orig_len.max(cap_len),
        })
    }

    fn parse_spb(&mut self, block_at: u64, endian: Endian) -> Result<FrameAt, CaptureFileError> {
        if self.body().len() < 4 {
            return Err(corrupt(
                block_at,
                "simple packet block shorter than 16 bytes",
            ));
        }
        let iface = self.interface(block_at, 0)?;
        let orig_len = endian.u32(self.body(), 0);
        let mut len = (orig_len as usize).min(self.body().len() - 4);
        if iface.snaplen != 0 {
            len = len.min(iface.snaplen as usize);
        }
        Ok(FrameAt {
            start: 4,
            len,
            ts_nanos: self.last_ts,
            link: iface.link,
            orig_len: orig_len.max(len as u32),
        })
    }

    /// Marks the file as cut short; returns no frame.
    fn cut(&mut self) -> Option<FrameAt> {
        self.stats.truncated_tail = true;
        self.done = true;
        None
    }

    /// The body of the last record read.
    fn body(&self) -> &[u8] {
        &self.input.data[self.body.clone()]
    }

    /// Makes up to `n` bytes available; returns how many are.
    fn want(&mut self, n: usize) -> Result<usize, CaptureFileError> {
        self.input.want(n).map_err(|source| CaptureFileError::Io {
            offset: self.pos + (self.input.end - self.input.start) as u64,
            source,
        })
    }

    /// Reads the next `len` bytes as the record body; false when the file ends first.
    fn read_body(&mut self, len: usize) -> Result<bool, CaptureFileError> {
        let got = self.want(len)?;
        self.body = self.input.take(got);
        self.pos += got as u64;
        Ok(got == len)
    }

    /// Consumes `len` bytes unread; false when the file ends first.
    fn skip(&mut self, len: u64) -> Result<bool, CaptureFileError> {
        let mut left = len;
        while left > 0 {
            let got = self.want(usize::try_from(left).map_or(READ_CHUNK, |l| l.min(READ_CHUNK)))?;
            if got == 0 {
                return Ok(false);
            }
            self.input.take(got);
            self.pos += got as u64;
            left -= got as u64;
        }
        Ok(true)
    }

    /// Reads exactly `buf.len()` bytes unless the file ends first.
    fn fill(&mut self, buf: &mut [u8]) -> Result<Fill, CaptureFileError> {
        let got = self.want(buf.len())?;
        let at = self.input.take(got);
        buf[..got].copy_from_slice(&self.input.data[at]);
        self.pos += got as u64;
        Ok(if got == buf.len() {
            Fill::Full
        } else if got == 0 {
            Fill::Eof
        } else {
            Fill::Partial
        })
    }
}

fn not_a_capture(why: &str) -> CaptureFileError {
    CaptureFileError::NotACapture {
        why: why.to_owned(),
    }
}

fn corrupt(offset: u64, why: &str) -> CaptureFileError {
    CaptureFileError::CorruptRecord {
        offset,
        why: why.to_owned(),
    }
}

fn check_block_len(block_at: u64, total_len: u32, min: u32) -> Result<(), CaptureFileError> {
    if total_len % 4 != 0 || total_len < min || total_len > MAX_PCAPNG_BLOCK {
        return Err(corrupt(
            block_at,
            &format!(
                "block length {total_len} is invalid (must be a multiple of 4, at least {min}, at most {MAX_PCAPNG_BLOCK})"
            ),
        ));
    }
    Ok(())
}

/// Iterates over pcapng options (code, value); stops at opt_endofopt or at the first
/// option that does not fit.
struct Options<'a> {
    rest: &'a [u8],
    endian: Endian,
}

impl<'a> Options<'a> {
    fn new(rest: &'a [u8], endian: Endian) -> Self {
        Self { rest, endian }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            return None;
        }
        let code = self.endian.u16(self.rest, 0);
        let len = usize::from(self.endian.u16(self.rest, 2));
        if code == OPT_END || 4 + len > self.rest.len() {
            return None;
        }
        let value = &self.rest[4..4 + len];
        let padded = (4 + len + 3) & !3;
        self.rest = &self.rest[padded.min(self.rest.len())..];
        Some((code, value))
    }
}

/// Writes a pcapng file: one section, little-endian, nanosecond timestamps.
pub struct PcapngWriter<W: Write> {
    inner: W,
    interfaces: u32,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header block.
    pub fn new(mut inner: W) -> io::Result<Self> {
        let mut block = Vec::with_capacity(28);
        block.extend_from_slice(&PCAPNG_SHB.to_le_bytes());
        block.extend_from_slice(&28u32.to_le_bytes());
        block.extend_from_slice(&PCAPNG_BYTE_ORDER_MAGIC.to_le_bytes());
        block.extend_from_slice(&1u16.to_le_bytes());
        block.extend_from_slice(&0u16.to_le_bytes());
        // Section length unknown: we stream.
        block.extend_from_slice(&u64::MAX.to_le_bytes());
        block.extend_from_slice(&28u32.to_le_bytes());
        inner.write_all(&block)?;
        Ok(Self {
            inner,
            interfaces: 0,
        })
    }

    /// Describes an interface; returns the id to pass to `write_frame`.
    pub fn add_interface(
        &mut self,
        link: LinkType,
        snaplen: u32,
        name: Option<&str>,
    ) -> io::Result<u32> {
        let link_code = u16::try_from(link.to_linktype()).map_err(|_| {
            io::Error::new(ErrorKind::InvalidInput, "pcapng link types are 16 bits")
        })?;
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&link_code.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&snaplen.to_le_bytes());
        if let Some(name) = name {
            let len = u16::try_from(name.len()).map_err(|_| {
                io::Error::new(
                    ErrorKind::InvalidInput,
                    "interface name longer than 65535 bytes",
                )
            })?;
            push_option(&mut body, OPT_IF_NAME, len, name.as_bytes());
        }
        push_option(&mut body, OPT_IF_TSRESOL, 1, &[9]);
        push_option(&mut body, OPT_END, 0, &[]);
        self.write_block(PCAPNG_IDB, &body, &[])?;
        let id = self.interfaces;
        self.interfaces += 1;
        Ok(id)
    }

    /// Writes one frame as an enhanced packet block.
    pub fn write_frame(
        &mut self,
        iface: u32,
        ts_nanos: u64,
        data: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        if iface >= self.interfaces {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("interface {iface} was not added"),
            ));
        }
        if data.len() > (MAX_PCAPNG_BLOCK - 64) as usize {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "frame too large for a pcapng block",
            ));
        }
        let cap_len = data.len() as u32;
        let mut fixed = [0u8; 20];
        fixed[0..4].copy_from_slice(&iface.to_le_bytes());
        fixed[4..8].copy_from_slice(&((ts_nanos >> 32) as u32).to_le_bytes());
        fixed[8..12].copy_from_slice(&(ts_nanos as u32).to_le_bytes());
        fixed[12..16].copy_from_slice(&cap_len.to_le_bytes());
        fixed[16..20].copy_from_slice(&orig_len.max(cap_len).to_le_bytes());
        self.write_block(PCAPNG_EPB, &fixed, data)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    /// Writes a block whose body is `fixed` then `data` padded to 4 bytes.
    fn write_block(&mut self, block_type: u32, fixed: &[u8], data: &[u8]) -> io::Result<()> {
        let pad = (4 - data.len() % 4) % 4;
        let total = (12 + fixed.len() + data.len() + pad) as u32;
        self.inner.write_all(&block_type.to_le_bytes())?;
        self.inner.write_all(&total.to_le_bytes())?;
        self.inner.write_all(fixed)?;
        self.inner.write_all(data)?;
        self.inner.write_all(&[0u8; 3][..pad])?;
        self.inner.write_all(&total.to_le_bytes())
    }
}

fn push_option(body: &mut Vec<u8>, code: u16, len: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(value);
    let pad = (4 - value.len() % 4) % 4;
    body.extend_from_slice(&[0u8; 3][..pad]);
}
