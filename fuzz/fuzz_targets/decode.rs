#![no_main]
//! Capture files and frames from arbitrary bytes: the input is read as a pcap/pcapng
//! file and every frame decoded; then its first byte picks a link type and the rest is
//! decoded as one frame. Neither may panic, hang or allocate without bound.

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use shadowtap::capture::pcap_file::CaptureReader;
use shadowtap::capture::{Frame, LinkType};
use shadowtap::decode::Decoder;

const LINKS: [LinkType; 9] = [
    LinkType::Ethernet,
    LinkType::Null,
    LinkType::Loop,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Other(147),
];

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::default();
    if let Ok(mut reader) = CaptureReader::new(Cursor::new(data)) {
        // Each call consumes input or ends the reader, so this loop is bounded.
        while let Ok(Some(frame)) = reader.next_frame() {
            assert!(frame.data.len() <= data.len());
            if let Ok(Some(segment)) = decoder.decode(&frame) {
                // A frame's own bytes, or a reassembled IPv4 datagram (at most 64 KiB).
                assert!(segment.payload.len() <= data.len().max(65_535));
            }
        }
    }

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
