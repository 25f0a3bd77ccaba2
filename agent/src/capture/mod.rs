//! Where frames come from: capture files (pcap, pcapng) and, later, live engines.
//! A `Frame` is one link-layer frame with its capture timestamp; decoding is not done here.

#[cfg(feature = "ebpf")]
pub mod ebpf;
pub mod pcap_file;
pub mod pcap_live;

/// Which live capture engine `run` uses (`--engine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// eBPF where the kernel and privileges allow it, libpcap otherwise.
    Auto,
    Ebpf,
    Pcap,
}

/// Link-layer framing of a captured frame, from the pcap `LINKTYPE_*` registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1), possibly with 802.1Q / QinQ tags.
    Ethernet,
    /// LINKTYPE_NULL (0): BSD loopback, 4-byte address family in host byte order.
    Null,
    /// LINKTYPE_LOOP (108): OpenBSD loopback, 4-byte address family in network order.
    Loop,
    /// LINKTYPE_RAW (101) or DLT_RAW (12/14): the frame starts with an IPv4 or IPv6 header.
    Raw,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_LINUX_SLL (113): Linux cooked capture v1.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): Linux cooked capture v2 (what `any` gives).
    LinuxSll2,
    /// LINKTYPE_NFLOG (239): packets logged by netfilter's NFLOG target (`nflog:GROUP`).
    Nflog,
    /// Anything else; frames of this type are counted and skipped.
    Other(u32),
}

impl LinkType {
    pub fn from_linktype(value: u32) -> Self {
        match value {
            0 => Self::Null,
            1 => Self::Ethernet,
            12 | 14 | 101 => Self::Raw,
            108 => Self::Loop,
            113 => Self::LinuxSll,
            228 => Self::Ipv4,
            229 => Self::Ipv6,
            239 => Self::Nflog,
            276 => Self::LinuxSll2,
            other => Self::Other(other),
        }
    }

    pub fn to_linktype(self) -> u32 {
        match self {
            Self::Null => 0,
            Self::Ethernet => 1,
            Self::Raw => 101,
            Self::Loop => 108,
            Self::LinuxSll => 113,
            Self::Ipv4 => 228,
            Self::Ipv6 => 229,
            Self::Nflog => 239,
            Self::LinuxSll2 => 276,
            Self::Other(v) => v,
        }
    }
}

/// One captured frame. `data` may be shorter than `orig_len` when the capture's
/// snaplen cut it; decoding tolerates that and counts it.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture time in nanoseconds since the Unix epoch.
    pub ts_nanos: u64,
    pub link: LinkType,
    pub data: &'a [u8],
    /// Length of the frame on the wire.
    pub orig_len: u32,
}
