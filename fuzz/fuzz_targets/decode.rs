#![no_main]
//! Capture files and frames from arbitrary bytes: the input is read as a pcap/pcapng
//! file and every frame decoded; then its first byte picks a link type and the rest is
//! decoded as one frame. Neither may panic, hang or allocate without bound.
//! The file is read a second time through reads of a few bytes each, and must give the
//! same frames and the same end: the reader moves its buffer between records, and a
//! record that straddles two reads once came back with another record's bytes.

use std::io::{Cursor, Read};

use libfuzzer_sys::fuzz_target;
use shadowtap::capture::pcap_file::CaptureReader;
use shadowtap::capture::{Frame, LinkType};
use shadowtap::decode::Decoder;

const LINKS: [LinkType; 10] = [
    LinkType::Ethernet,
    LinkType::Null,
    LinkType::Loop,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Nflog,
    LinkType::Other(147),
];

/// Hands out at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// What a reader gives: each frame, then how it ended (None: the end of the file).
type Reading = (Vec<(u64, LinkType, Vec<u8>, u32)>, Option<String>);

fn read_all<R: Read>(input: R, mut each: impl FnMut(&Frame<'_>)) -> Reading {
    let mut frames = Vec::new();
    let mut reader = match CaptureReader::new(input) {
        Ok(reader) => reader,
        Err(e) => return (frames, Some(e.to_string())),
    };
    // Each call consumes input or ends the reader, so this loop is bounded.
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                each(&frame);
                frames.push((frame.ts_nanos, frame.link, frame.data.to_vec(), frame.orig_len));
            }
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e.to_string())),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::default();
    let whole = read_all(Cursor::new(data), |frame| {
        assert!(frame.data.len() <= data.len());
        if let Ok(Some(segment)) = decoder.decode(frame) {
            // A frame's own bytes, or a reassembled IPv4 datagram (at most 64 KiB).
            assert!(segment.payload.len() <= data.len().max(65_535));
        }
    });
    let step = 1 + usize::from(data.last().copied().unwrap_or(0) % 61);
    let trickled = read_all(Trickle { data, step }, |_| {});
    assert_eq!(whole, trickled, "reads of {step} bytes changed what was read");

    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(selector) % LINKS.len()];
    // The high bit says the capture cut the frame, which allows `missing` bytes.
    let orig_len = rest.len() as u32 + if selector & 0x80 != 0 { 1500 } else { 0 };
    let frame = Frame {
        ts_nanos: u64::from(selector) << 32,
        link,
        data: rest,
        orig_len,
    };
    if let Ok(Some(segment)) = decoder.decode(&frame) {
        assert!(segment.payload.len() <= rest.len());
        assert!(selector & 0x80 != 0 || segment.missing == 0);
    }
});
