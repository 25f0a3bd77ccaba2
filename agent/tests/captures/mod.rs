//! Synthetic captures shared by the crafted-capture and memory stress tests:
//! Ethernet/IPv4/TCP frames built byte by byte (checksums left zero, as capture hosts
//! with offload see them) and streamed into a pcapng file without holding them.

use std::io::BufWriter;
use std::net::Ipv4Addr;
use std::path::Path;

use shadowtap::capture::pcap_file::PcapngWriter;
use shadowtap::capture::LinkType;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH_ACK: u8 = 0x18;
pub const FIN_ACK: u8 = 0x11;

pub type Endpoint = (Ipv4Addr, u16);

/// Writes one frame into `f` (cleared first): `src` -> `dst`, acknowledging byte 1.
pub fn build_frame(
    f: &mut Vec<u8>,
    src: Endpoint,
    dst: Endpoint,
    seq: u32,
    flags: u8,
    payload: &[u8],
) {
    f.clear();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = u16::try_from(40 + payload.len()).expect("IPv4 packet size");
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.0.octets());
    f.extend_from_slice(&dst.0.octets());
    f.extend_from_slice(&src.1.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&1u32.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
}

/// One frame on its own.
pub fn frame(src: Endpoint, dst: Endpoint, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload.len());
    build_frame(&mut f, src, dst, seq, flags, payload);
    f
}

/// A pcapng file being written, frame by frame, each 1 µs after the previous one unless
/// the clock is moved on with `wait`.
pub struct Capture {
    writer: PcapngWriter<BufWriter<std::fs::File>>,
    iface: u32,
    ts: u64,
    frame: Vec<u8>,
}

impl Capture {
    pub fn create(path: &Path) -> Self {
        let file = std::fs::File::create(path).expect("create capture");
        let mut writer =
            PcapngWriter::new(BufWriter::with_capacity(1 << 20, file)).expect("pcapng header");
        let iface = writer
            .add_interface(LinkType::Ethernet, 65_535, Some("synthetic0"))
            .expect("interface");
        Self {
            writer,
            iface,
            ts: 1_700_000_000_000_000_000,
            frame: Vec::with_capacity(1600),
        }
    }

    /// A million frames span one second, well inside the idle timeout.
    pub fn tcp(&mut self, src: Endpoint, dst: Endpoint, seq: u32, flags: u8, data: &[u8]) {
        let mut f = std::mem::take(&mut self.frame);
        build_frame(&mut f, src, dst, seq, flags, data);
        self.raw(&f);
        self.frame = f;
    }

    /// A frame built elsewhere.
    pub fn raw(&mut self, frame: &[u8]) {
        self.ts += 1_000;
        let len = u32::try_from(frame.len()).expect("frame size");
        self.writer
            .write_frame(self.iface, self.ts, frame, len)
            .expect("write frame");
    }

    /// Packet time passes with no frame.
    pub fn wait(&mut self, nanos: u64) {
        self.ts += nanos;
    }

    pub fn finish(mut self) {
        self.writer.flush().expect("flush capture");
    }
}
