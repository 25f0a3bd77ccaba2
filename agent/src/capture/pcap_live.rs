//! The libpcap live engine (`run --engine pcap`): opens one interface or `any`, keeps only
//! TCP to or from the watched ports with a kernel BPF filter (minus the agent's own
//! connections), and hands out `Frame`s with nanosecond timestamps. Also owns the
//! interface-name helpers (`list_interfaces`, `iface_matches`) the engines share.

use std::collections::BTreeSet;
use std::ffi::c_int;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use pcap::{Active, Capture, Linktype, Precision};

use super::{Frame, LinkType};

/// The pseudo-interface that captures on every interface at once.
pub const ANY_IFACE: &str = "any";

/// How a live capture is opened. The defaults suit an agent that must see each request
/// promptly without losing bursts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapOptions {
    /// Bytes kept of each frame; large enough for a 64 KiB GSO/GRO super-packet.
    pub snaplen: i32,
    /// Size of the kernel ring buffer.
    pub buffer_bytes: i32,
    /// Deliver each packet as it arrives instead of waiting for the buffer to fill.
    pub immediate: bool,
    /// How long `next_frame` waits before returning `Ok(None)`.
    pub timeout_ms: i32,
}

impl Default for PcapOptions {
    fn default() -> Self {
        Self {
            snaplen: 262_144,
            buffer_bytes: 16 * 1024 * 1024,
            immediate: true,
            timeout_ms: 100,
        }
    }
}

/// Counters for one live capture. The kernel counters come from `pcap_stats` and are
/// 32-bit there, so they wrap on long runs; `frames` and `bytes` are counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcapLiveStats {
    /// Packets that passed the filter in the kernel.
    pub received: u64,
    /// Packets dropped because the ring buffer was full.
    pub dropped: u64,
    /// Packets dropped by the interface or its driver.
    pub if_dropped: u64,
    /// Frames handed out by `next_frame`.
    pub frames: u64,
    /// Captured bytes of those frames (after snaplen).
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PcapLiveError {
    #[error(
        "capturing on interface {iface} is not permitted: {detail}; run as root or grant \
         {capability} to shadowtap"
    )]
    Permission {
        iface: String,
        capability: &'static str,
        detail: String,
    },
    #[error("interface {iface} does not exist ({detail}); interfaces here: {available}")]
    NoSuchInterface {
        iface: String,
        detail: String,
        available: String,
    },
    #[error("cannot open interface {iface} for capture: {detail}")]
    Open { iface: String, detail: String },
    #[error(
        "libpcap rejected the capture filter for interface {iface}: {detail} (filter: {filter})"
    )]
    Filter {
        iface: String,
        filter: String,
        detail: String,
    },
    #[error("reading packets from interface {iface} failed: {detail}")]
    Read { iface: String, detail: String },
    #[error("capture statistics for interface {iface} are unavailable: {detail}")]
    Stats { iface: String, detail: String },
}

/// The kernel filter for `ports` on an Ethernet link (with the 802.1Q variant); see
/// `capture_filter_for`.
pub fn capture_filter(ports: &[u16], exclude: &[SocketAddr]) -> String {
    capture_filter_for(LinkType::Ethernet, ports, exclude)
}

/// The kernel filter keeping TCP to or from any of `ports` (both directions, so FIN and
/// RST from either side close flows), without the connections whose local end is in
/// `exclude`. No ports means all TCP.
///
/// On Ethernet a second branch matches VLAN-tagged frames: libpcap's `vlan` keyword moves
/// the offsets of everything after it. Cooked (`any`) and raw links carry no tag in the
/// frame and libpcap refuses `vlan` there, so they get the plain expression.
pub fn capture_filter_for(link: LinkType, ports: &[u16], exclude: &[SocketAddr]) -> String {
    let plain = tcp_filter(ports, exclude);
    if link == LinkType::Ethernet {
        format!("({plain}) or (vlan and ({plain}))")
    } else {
        plain
    }
}

fn tcp_filter(ports: &[u16], exclude: &[SocketAddr]) -> String {
    let mut filter = String::from("tcp");
    let ports: BTreeSet<u16> = ports.iter().copied().collect();
    if !ports.is_empty() {
        let alternatives: Vec<String> = ports.iter().map(|p| format!("port {p}")).collect();
        // Writing to a String cannot fail.
        let _ = write!(filter, " and ({})", alternatives.join(" or "));
    }
    let exclude: BTreeSet<(IpAddr, u16)> = exclude
        .iter()
        .map(|addr| (wire_address(addr.ip()), addr.port()))
        .collect();
    for (host, port) in exclude {
        let _ = write!(
            filter,
            " and not (src host {host} and src port {port}) and not (dst host {host} and dst port {port})"
        );
    }
    filter
}

/// A dual-stack socket reports an IPv4 peer as `::ffff:a.b.c.d`, but on the wire the
/// packets are IPv4, so the filter must name the IPv4 address.
fn wire_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Names of the network interfaces in this network namespace, sorted. `any` is not
/// included: it is not an interface, it is all of them.
pub fn list_interfaces() -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir("/sys/class/net") {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect(),
        // No sysfs (some containers): ask libpcap, which also lists pseudo-devices.
        Err(_) => pcap::Device::list()
            .map(|devices| devices.into_iter().map(|d| d.name).collect())
            .unwrap_or_default(),
    };
    names.retain(|name| name != ANY_IFACE);
    names.sort();
    names.dedup();
    names
}

/// Whether interface `name` is selected by `pattern`: an exact name, a glob with `*` (any
/// run of characters) and `?` (one character) such as `veth*` or `cali*`, or `any`,
/// which selects every interface.
pub fn iface_matches(pattern: &str, name: &str) -> bool {
    pattern == ANY_IFACE || glob_matches(pattern.as_bytes(), name.as_bytes())
}

/// Iterative glob match: on a mismatch, retry from the last `*` with it swallowing one
/// more byte. Linear in practice, and no recursion to blow up on patterns like `****a`.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                last_star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match last_star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    last_star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A live libpcap capture on one interface (or `any`).
pub struct PcapCapture {
    cap: Capture<Active>,
    iface: String,
    link: LinkType,
    ports: Vec<u16>,
    timeout_ms: i32,
    /// The last read found the ring empty, so the next one waits for the socket first.
    drained: bool,
    /// Nanoseconds per unit of the timestamp's fractional field: 1 when libpcap gives
    /// nanoseconds, 1000 when it fell back to microseconds.
    nanos_per_frac: u64,
    frames: u64,
    bytes: u64,
}

impl std::fmt::Debug for PcapCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapCapture")
            .field("iface", &self.iface)
            .field("link", &self.link)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl PcapCapture {
    /// Opens `iface` (a name or `any`) and installs the filter for `ports`. On `any` it
    /// asks for Linux cooked v2 framing, which names the interface of each packet, and
    /// keeps v1 where libpcap is too old for v2.
    pub fn open(iface: &str, ports: &[u16], opts: &PcapOptions) -> Result<Self, PcapLiveError> {
        let cap = Capture::from_device(iface)
            .map_err(|e| open_error(iface, &e))?
            .snaplen(opts.snaplen)
            .buffer_size(opts.buffer_bytes)
            .immediate_mode(opts.immediate)
            .timeout(opts.timeout_ms)
            .precision(Precision::Nano);
        // Non-blocking, with our own poll: on Linux libpcap keeps waiting past the read
        // timeout while no packet arrives, and `next_frame` must come back to check for
        // shutdown.
        let mut cap = cap
            .open()
            .and_then(Capture::setnonblock)
            .map_err(|e| open_error(iface, &e))?;
        if iface == ANY_IFACE {
            if let Err(e) = cap.set_datalink(Linktype::LINUX_SLL2) {
                tracing::debug!(iface, error = %e, "no Linux cooked v2 framing, keeping v1");
            }
        }
        let link = link_type_of(cap.get_datalink());
        let nanos_per_frac = if gives_nanoseconds(&cap) { 1 } else { 1000 };
        let mut capture = Self {
            cap,
            iface: iface.to_owned(),
            link,
            ports: ports.to_vec(),
            timeout_ms: opts.timeout_ms,
            drained: false,
            nanos_per_frac,
            frames: 0,
            bytes: 0,
        };
        capture.set_excluded(&[])?;
        Ok(capture)
    }

    /// The next frame that passed the filter, or `Ok(None)` when none came within the
    /// read timeout, so the caller can check for shutdown between reads. `Ok(None)` may
    /// also come early (after a burst, or an interrupted wait); just call again.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, PcapLiveError> {
        if self.drained && !self.wait_readable()? {
            return Ok(None);
        }
        match self.cap.next_packet() {
            Ok(packet) => {
                self.drained = false;
                let header = packet.header;
                let secs = u64::try_from(header.ts.tv_sec).unwrap_or(0);
                let frac = u64::try_from(header.ts.tv_usec).unwrap_or(0);
                let ts_nanos = secs
                    .saturating_mul(1_000_000_000)
                    .saturating_add(frac.saturating_mul(self.nanos_per_frac));
                self.frames += 1;
                self.bytes += packet.data.len() as u64;
                Ok(Some(Frame {
                    ts_nanos,
                    link: self.link,
                    data: packet.data,
                    orig_len: header.len,
                }))
            }
            Err(pcap::Error::TimeoutExpired) => {
                self.drained = true;
                Ok(None)
            }
            Err(e) => Err(PcapLiveError::Read {
                iface: self.iface.clone(),
                detail: e.to_string(),
            }),
        }
    }

    /// Waits up to the read timeout for the capture socket to have packets.
    fn wait_readable(&self) -> Result<bool, PcapLiveError> {
        let mut pollfd = libc::pollfd {
            fd: self.cap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and the descriptor stays open while `self.cap` lives.
        let ready = unsafe { libc::poll(&mut pollfd, 1, self.timeout_ms) };
        if ready >= 0 {
            return Ok(ready > 0);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        Err(PcapLiveError::Read {
            iface: self.iface.clone(),
            detail: format!("waiting for packets: {error}"),
        })
    }

    /// Replaces the filter so that connections whose local end is one of `exclude` are
    /// not captured: the agent's own connections to a target on a watched port.
    pub fn set_excluded(&mut self, exclude: &[SocketAddr]) -> Result<(), PcapLiveError> {
        let filter = capture_filter_for(self.link, &self.ports, exclude);
        self.cap
            .filter(&filter, true)
            .map_err(|e| PcapLiveError::Filter {
                iface: self.iface.clone(),
                detail: e.to_string(),
                filter,
            })
    }

    pub fn stats(&mut self) -> Result<PcapLiveStats, PcapLiveError> {
        let stat = self.cap.stats().map_err(|e| PcapLiveError::Stats {
            iface: self.iface.clone(),
            detail: e.to_string(),
        })?;
        Ok(PcapLiveStats {
            received: u64::from(stat.received),
            dropped: u64::from(stat.dropped),
            if_dropped: u64::from(stat.if_dropped),
            frames: self.frames,
            bytes: self.bytes,
        })
    }

    pub fn link_type(&self) -> LinkType {
        self.link
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }
}

fn link_type_of(linktype: Linktype) -> LinkType {
    // Negative values are not in the registry; `Other` keeps them countable and skipped.
    LinkType::from_linktype(u32::try_from(linktype.0).unwrap_or(u32::MAX))
}

#[link(name = "pcap")]
extern "C" {
    // Not bound by the `pcap` crate. Present since libpcap 1.5, which `precision` needs too.
    fn pcap_get_tstamp_precision(handle: *mut std::ffi::c_void) -> c_int;
}

/// PCAP_TSTAMP_PRECISION_NANO from pcap.h.
const PCAP_TSTAMP_PRECISION_NANO: c_int = 1;

/// Whether libpcap honoured the request for nanosecond timestamps; it may not on some
/// platforms, and then the fractional field is in microseconds.
fn gives_nanoseconds(cap: &Capture<Active>) -> bool {
    // SAFETY: the handle is a live, activated pcap_t owned by `cap` for this whole call,
    // and the function only reads a field of it.
    unsafe { pcap_get_tstamp_precision(cap.as_ptr().cast()) == PCAP_TSTAMP_PRECISION_NANO }
}

/// Turns a libpcap open or activate failure into an error that says what to do. The
/// `pcap` crate drops pcap_activate's status code, so this goes by the message text.
fn open_error(iface: &str, error: &pcap::Error) -> PcapLiveError {
    let detail = error.to_string();
    let lower = detail.to_ascii_lowercase();
    if lower.contains("not permitted") || lower.contains("permission") {
        // A packet socket needs CAP_NET_RAW; changing interface flags (promiscuous mode,
        // monitor mode) needs CAP_NET_ADMIN.
        let capability = if lower.contains("promisc") || lower.contains("siocsifflags") {
            "CAP_NET_ADMIN"
        } else {
            "CAP_NET_RAW"
        };
        return PcapLiveError::Permission {
            iface: iface.to_owned(),
            capability,
            detail,
        };
    }
    if iface != ANY_IFACE {
        let available = list_interfaces();
        if !available.iter().any(|name| name == iface) {
            return PcapLiveError::NoSuchInterface {
                iface: iface.to_owned(),
                detail,
                available: available.join(", "),
            };
        }
    }
    PcapLiveError::Open {
        iface: iface.to_owned(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn compiles_on(linktype: Linktype, filter: &str) -> Result<(), String> {
        let cap = Capture::dead(linktype).map_err(|e| e.to_string())?;
        cap.compile(filter, true)
            .map(|_| ())
            .map_err(|e| format!("{e} in {filter:?}"))
    }

    #[test]
    fn filter_keeps_both_directions_of_each_port() {
        assert_eq!(
            capture_filter_for(LinkType::LinuxSll2, &[80, 8080], &[]),
            "tcp and (port 80 or port 8080)"
        );
    }

    #[test]
    fn filter_ports_are_sorted_and_deduplicated() {
        assert_eq!(
            capture_filter_for(LinkType::Raw, &[8080, 80, 8080], &[]),
            "tcp and (port 80 or port 8080)"
        );
    }

    #[test]
    fn filter_without_ports_keeps_all_tcp() {
        assert_eq!(capture_filter_for(LinkType::LinuxSll, &[], &[]), "tcp");
    }

    #[test]
    fn ethernet_filter_adds_a_vlan_branch() {
        assert_eq!(
            capture_filter(&[80], &[]),
            "(tcp and (port 80)) or (vlan and (tcp and (port 80)))"
        );
    }

    #[test]
    fn filter_excludes_local_address_in_both_directions() {
        assert_eq!(
            capture_filter_for(LinkType::LinuxSll2, &[80], &[addr("10.1.2.3:40000")]),
            "tcp and (port 80) and not (src host 10.1.2.3 and src port 40000) \
             and not (dst host 10.1.2.3 and dst port 40000)"
        );
    }

    #[test]
    fn filter_writes_ipv6_and_unmaps_ipv4_mapped_addresses() {
        let filter = capture_filter_for(
            LinkType::Raw,
            &[80],
            &[addr("[fe80::1%2]:5000"), addr("[::ffff:192.0.2.7]:6000")],
        );
        assert!(
            filter.contains("not (src host fe80::1 and src port 5000)"),
            "{filter}"
        );
        assert!(
            filter.contains("not (dst host 192.0.2.7 and dst port 6000)"),
            "{filter}"
        );
        assert!(!filter.contains("ffff"), "{filter}");
    }

    #[test]
    fn filter_lists_each_excluded_address_once() {
        let a = addr("127.0.0.1:41000");
        let filter = capture_filter_for(LinkType::Raw, &[80], &[a, a]);
        assert_eq!(filter.matches("src port 41000").count(), 1, "{filter}");
    }

    #[test]
    fn libpcap_compiles_the_filters() {
        let excludes = [
            vec![],
            vec![addr("127.0.0.1:43210")],
            vec![addr("[::1]:43210"), addr("10.0.0.9:80")],
            vec![
                addr("[2001:db8::5]:1"),
                addr("[fe80::1]:65535"),
                addr("[::ffff:10.0.0.1]:9"),
            ],
        ];
        let port_lists: [&[u16]; 4] = [&[80], &[80, 8080], &[1, 443, 65535], &[]];
        for ports in port_lists {
            for exclude in &excludes {
                for (linktype, link) in [
                    (Linktype::ETHERNET, LinkType::Ethernet),
                    (Linktype::LINUX_SLL2, LinkType::LinuxSll2),
                    (Linktype::LINUX_SLL, LinkType::LinuxSll),
                    (Linktype(12), LinkType::Raw),
                ] {
                    let filter = capture_filter_for(link, ports, exclude);
                    compiles_on(linktype, &filter).unwrap();
                }
            }
        }
    }

    #[test]
    fn vlan_branch_is_only_for_ethernet() {
        // libpcap refuses `vlan` on cooked captures, which is why `any` gets the plain
        // filter; if this ever starts compiling, the split can go.
        assert!(compiles_on(Linktype::LINUX_SLL2, &capture_filter(&[80], &[])).is_err());
        assert!(compiles_on(Linktype::ETHERNET, &capture_filter(&[80], &[])).is_ok());
    }

    #[test]
    fn compiled_filter_matches_tagged_and_untagged_frames() {
        let cap = Capture::dead(Linktype::ETHERNET).unwrap();
        let own = addr("10.0.0.1:40000");
        let program = cap.compile(&capture_filter(&[80], &[own]), true).unwrap();
        let to_80 = ipv4_tcp_frame(false, [10, 0, 0, 2], 51000, [10, 0, 0, 3], 80);
        let tagged = ipv4_tcp_frame(true, [10, 0, 0, 2], 51000, [10, 0, 0, 3], 80);
        let from_80 = ipv4_tcp_frame(false, [10, 0, 0, 3], 80, [10, 0, 0, 2], 51000);
        let other_port = ipv4_tcp_frame(false, [10, 0, 0, 2], 51000, [10, 0, 0, 3], 81);
        let own_out = ipv4_tcp_frame(false, [10, 0, 0, 1], 40000, [10, 0, 0, 3], 80);
        let own_back = ipv4_tcp_frame(true, [10, 0, 0, 3], 80, [10, 0, 0, 1], 40000);
        assert!(program.filter(&to_80));
        assert!(program.filter(&tagged));
        assert!(program.filter(&from_80));
        assert!(!program.filter(&other_port));
        assert!(!program.filter(&own_out));
        assert!(!program.filter(&own_back));
    }

    /// A minimal Ethernet (optionally 802.1Q-tagged) IPv4 TCP SYN, enough for a filter.
    fn ipv4_tcp_frame(vlan: bool, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    #[test]
    fn iface_patterns() {
        let cases = [
            ("eth0", "eth0", true),
            ("eth0", "eth01", false),
            ("eth0", "eth", false),
            ("veth*", "veth1a2b", true),
            ("veth*", "veth", true),
            ("veth*", "eth0", false),
            ("cali*", "cali12ab34", true),
            ("cali*", "lxc1", false),
            ("eth?", "eth1", true),
            ("eth?", "eth10", false),
            ("*0", "eth0", true),
            ("*0", "eth1", false),
            ("e*h*1", "ens-hub1", true),
            ("e*h*1", "ens-hub2", false),
            ("*", "anything", true),
            ("a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("any", "lo", true),
            ("any", "veth9", true),
            ("", "lo", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                iface_matches(pattern, name),
                want,
                "{pattern:?} vs {name:?}"
            );
        }
    }

    #[test]
    fn interface_list_has_loopback_and_no_any() {
        let names = list_interfaces();
        assert!(names.iter().any(|n| n == "lo"), "{names:?}");
        assert!(!names.iter().any(|n| n == ANY_IFACE), "{names:?}");
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    }

    #[test]
    fn unknown_interface_is_named_in_the_error() {
        let error = PcapCapture::open("st-no-such0", &[80], &PcapOptions::default()).unwrap_err();
        assert!(
            matches!(&error, PcapLiveError::NoSuchInterface { iface, .. } if iface == "st-no-such0"),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.contains("st-no-such0") && text.contains("lo"),
            "{text}"
        );
    }
}
