//! The libpcap live engine (`run --engine pcap`): opens one interface or `any`, keeps only
//! TCP to or from the watched ports with a kernel BPF filter (minus the agent's own
//! connections), and hands out `Frame`s with nanosecond timestamps. `FollowingCapture`
//! closes the capture of a named interface that is deleted and opens it again once an
//! interface of that name exists. Also owns the interface-name helpers
//! (`list_interfaces`, `iface_matches`, `ifindex_of`) the engines share.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::c_int;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use pcap::{Active, Capture, Linktype, Precision};

use super::{Frame, LinkType};

/// The pseudo-interface that captures on every interface at once.
pub const ANY_IFACE: &str = "any";

/// Whether `iface` names a netfilter log group (`nflog` is group 0, `nflog:N` group N),
/// which libpcap reads as a device of link type NFLOG: packets an iptables or nftables
/// rule logs with `-j NFLOG --nflog-group N` / `log group N`.
pub fn is_nflog(iface: &str) -> bool {
    iface == "nflog"
        || iface
            .strip_prefix("nflog:")
            .is_some_and(|group| group.parse::<u16>().is_ok())
}

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
    /// How long `next_frame` waits before returning `Ok(None)`; at least 1 ms, so that
    /// an idle capture does not spin.
    pub timeout_ms: i32,
}

impl Default for PcapOptions {
    fn default() -> Self {
        Self {
            snaplen: 262_144,
            // Not immediate: libpcap then uses TPACKET_V3, whose ring holds packets at
            // their own size; in immediate mode it falls back to TPACKET_V2, whose slots
            // are snaplen-sized, so 16 MiB held only 64 packets and dropped under load.
            // The 10 ms block timeout bounds the delay instead.
            buffer_bytes: 32 * 1024 * 1024,
            immediate: false,
            timeout_ms: 10,
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
    /// Frames of excluded connections dropped here because there were too many
    /// exclusions for the kernel filter.
    pub excluded_in_user: u64,
    /// Times the interface was deleted and its capture closed (`FollowingCapture`).
    pub interface_gone: u64,
}

impl PcapLiveStats {
    /// The figures of a capture closed before `later`, added to `later`'s. The kernel
    /// counters are added as read, so the sum keeps moving on by each capture's own
    /// (32-bit, wrapping) count, which is how the caller takes differences of them.
    fn plus(self, later: Self) -> Self {
        Self {
            received: self.received + later.received,
            dropped: self.dropped + later.dropped,
            if_dropped: self.if_dropped + later.if_dropped,
            frames: self.frames + later.frames,
            bytes: self.bytes + later.bytes,
            excluded_in_user: self.excluded_in_user + later.excluded_in_user,
            interface_gone: self.interface_gone + later.interface_gone,
        }
    }
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
    #[error("interface {iface} was deleted while capturing on it")]
    Vanished { iface: String },
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
/// `exclude`. No ports means all TCP. Whatever libpcap's `tcp` and `port` cannot see
/// into is kept too (`UNCHECKED`): the decoder reassembles or walks it, reassembly keeps
/// the watched ports, and the own-traffic gate the agent's own connections.
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

/// Packets whose ports the filter cannot read, kept whatever their ports. libpcap's
/// `port` needs the TCP header at a fixed place: an IPv4 fragment other than the first
/// has none (and `port` refuses them all), and on IPv6 `tcp` and `port` only look past
/// the fixed header (or one fragment header), so a hop-by-hop, routing, destination
/// options or AH header in front of TCP hides it. IPv4 fragments of other protocols are
/// left out; IPv6 cannot tell without walking, and such packets are rare.
///
/// Overlay tunnels (VXLAN, Geneve, GRE) are kept whole too: the decoder opens them and
/// reassembly keeps the inner flows to the watched ports. On a pod's veth (the usual
/// place) there are none; on a node's uplink this passes all overlay traffic up.
pub const UNCHECKED: &str = "(ip[9] == 6 and ip[6:2] & 0x3fff != 0) or (ip6 and (ip6[6] == 0 \
     or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 51 or ip6[6] == 60)) \
     or (udp dst port 4789) or (udp dst port 6081) or (ip proto 47) or (ip6 proto 47)";

fn tcp_filter(ports: &[u16], exclude: &[SocketAddr]) -> String {
    format!("({}) or {UNCHECKED}", checked_filter(ports, exclude))
}

/// TCP with its ports where libpcap can read them.
fn checked_filter(ports: &[u16], exclude: &[SocketAddr]) -> String {
    let mut filter = String::from("tcp");
    let ports: BTreeSet<u16> = ports.iter().copied().collect();
    if !ports.is_empty() {
        let alternatives: Vec<String> = ports.iter().map(|p| format!("port {p}")).collect();
        // Writing to a String cannot fail.
        let _ = write!(filter, " and ({})", alternatives.join(" or "));
    }
    // The agent's own connections share one or two local addresses, so grouping the
    // ports by host keeps the program (and libpcap's compile time) small.
    let mut by_host: BTreeMap<IpAddr, BTreeSet<u16>> = BTreeMap::new();
    for addr in exclude {
        by_host
            .entry(wire_address(addr.ip()))
            .or_default()
            .insert(addr.port());
    }
    for (host, ports) in by_host {
        for dir in ["src", "dst"] {
            let alternatives: Vec<String> =
                ports.iter().map(|p| format!("{dir} port {p}")).collect();
            let _ = write!(
                filter,
                " and not ({dir} host {host} and ({}))",
                alternatives.join(" or ")
            );
        }
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

/// Names of the network interfaces, sorted, as /sys/class/net shows them (the network
/// namespace sysfs was mounted in). `any` is not included: it is not an interface, it is
/// all of them.
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

/// The index of interface `name` now (asked of the kernel, so no sysfs is needed); None
/// when there is no such interface.
pub fn ifindex_of(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string, only read.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
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
    /// Index of the interface when it was opened (None on `any`, or when not known).
    ifindex: Option<u32>,
    link: LinkType,
    ports: Vec<u16>,
    /// Set when the exclusions did not fit in the kernel filter: the excluded local
    /// ends, checked here on each frame the kernel's ports-only filter let through.
    user_excluded: Option<HashSet<(IpAddr, u16)>>,
    /// Largest filter, in classic BPF instructions, that the kernel is trusted to take.
    kernel_budget: usize,
    timeout_ms: i32,
    /// The last read found the ring empty, so the next one waits for the socket first.
    drained: bool,
    /// Nanoseconds per unit of the timestamp's fractional field: 1 when libpcap gives
    /// nanoseconds, 1000 when it fell back to microseconds.
    nanos_per_frac: u64,
    frames: u64,
    bytes: u64,
    excluded_in_user: u64,
}

impl std::fmt::Debug for PcapCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapCapture")
            .field("iface", &self.iface)
            .field("link", &self.link)
            .field("ports", &self.ports)
            .field("exclusions_in_user", &self.user_excluded.is_some())
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
        let ifindex = bound_ifindex(cap.as_raw_fd())
            .and_then(|index| u32::try_from(index).ok())
            .filter(|&index| index > 0);
        let mut capture = Self {
            cap,
            iface: iface.to_owned(),
            ifindex,
            link,
            ports: ports.to_vec(),
            user_excluded: None,
            kernel_budget: kernel_filter_budget(),
            timeout_ms: opts.timeout_ms.max(1),
            drained: false,
            nanos_per_frac,
            frames: 0,
            bytes: 0,
            excluded_in_user: 0,
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
        let fd = self.cap.as_raw_fd();
        match self.cap.next_packet() {
            Ok(packet) => {
                self.drained = false;
                if let Some(excluded) = &self.user_excluded {
                    if is_excluded(excluded, self.link, packet.data) {
                        // Skipping to the next packet here would need a second borrow of
                        // the handle; an early `None` is within the contract.
                        self.excluded_in_user += 1;
                        return Ok(None);
                    }
                }
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
            Err(_) if vanished(&self.iface, self.ifindex, fd) => Err(PcapLiveError::Vanished {
                iface: self.iface.clone(),
            }),
            Err(e) => Err(PcapLiveError::Read {
                iface: self.iface.clone(),
                detail: e.to_string(),
            }),
        }
    }

    /// Whether the interface this capture is bound to was deleted. The kernel unbinds a
    /// packet socket from an interface that goes away (its index reads -1 from then on)
    /// and never binds it to one created later under the same name, so such a capture
    /// stays silent for good. `any` is bound to no interface and never goes away.
    pub fn interface_vanished(&self) -> bool {
        vanished(&self.iface, self.ifindex, self.cap.as_raw_fd())
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
    ///
    /// Up to `MAX_KERNEL_EXCLUDES` addresses go into the kernel filter, as long as it
    /// stays within what the kernel takes. Past that the kernel keeps the ports-only
    /// filter and the exclusions are checked here on each frame: libpcap's compile time
    /// grows faster than linearly with the filter, and its own user-space fallback
    /// (1.10) can leave the previous kernel filter in place without saying so, which
    /// would let our own traffic through.
    pub fn set_excluded(&mut self, exclude: &[SocketAddr]) -> Result<(), PcapLiveError> {
        let pairs: HashSet<(IpAddr, u16)> = exclude
            .iter()
            .map(|addr| (wire_address(addr.ip()), addr.port()))
            .collect();
        if self.link == LinkType::Nflog {
            // libpcap compiles no filter for NFLOG ("filtering not implemented"): the
            // netfilter rule that logs to the group is the filter, and the agent's own
            // connections are left out here.
            self.user_excluded = (!pairs.is_empty()).then_some(pairs);
            return Ok(());
        }
        if pairs.len() <= MAX_KERNEL_EXCLUDES {
            let full = capture_filter_for(self.link, &self.ports, exclude);
            let size = self
                .cap
                .compile(&full, true)
                .map_err(|e| self.filter_error(&full, &e))?
                .get_instructions()
                .len();
            if size <= self.kernel_budget {
                self.install(&full)?;
                self.user_excluded = None;
                return Ok(());
            }
        }
        self.install(&capture_filter_for(self.link, &self.ports, &[]))?;
        tracing::debug!(
            iface = %self.iface,
            excluded = pairs.len(),
            "too many exclusions for the kernel filter, checking them in user space"
        );
        self.user_excluded = Some(pairs);
        Ok(())
    }

    fn install(&mut self, filter: &str) -> Result<(), PcapLiveError> {
        self.cap
            .filter(filter, true)
            .map_err(|e| self.filter_error(filter, &e))
    }

    fn filter_error(&self, filter: &str, error: &pcap::Error) -> PcapLiveError {
        PcapLiveError::Filter {
            iface: self.iface.clone(),
            filter: filter.to_owned(),
            detail: error.to_string(),
        }
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
            excluded_in_user: self.excluded_in_user,
            interface_gone: 0,
        })
    }

    pub fn link_type(&self) -> LinkType {
        self.link
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }
}

/// Whether the capture on `iface` (opened when it had index `opened`) through socket `fd`
/// lost its interface: the kernel unbound the socket (it does when the interface is
/// deleted), or the name is gone or now names another interface (the unbinding comes a
/// moment after the first read error). `any` never goes away.
fn vanished(iface: &str, opened: Option<u32>, fd: std::os::fd::RawFd) -> bool {
    if iface == ANY_IFACE {
        return false;
    }
    let unbound = bound_ifindex(fd).is_some_and(|index| index <= 0);
    unbound || (opened.is_some() && ifindex_of(iface) != opened)
}

/// The interface index packet socket `fd` is bound to: -1 once its interface was deleted,
/// 0 for `any`. None for anything but a packet socket (a libpcap without one).
fn bound_ifindex(fd: std::os::fd::RawFd) -> Option<i32> {
    // SAFETY: sockaddr_ll is plain data, valid all zero.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `addr` is writable for `len` bytes; the caller's handle keeps `fd` open.
    let rc = unsafe { libc::getsockname(fd, (&raw mut addr).cast::<libc::sockaddr>(), &mut len) };
    (rc == 0 && i32::from(addr.sll_family) == libc::AF_PACKET).then_some(addr.sll_ifindex)
}

/// A capture on one interface name (or `any`) that outlives the interface: when a named
/// interface is deleted its capture is closed (logged once, counted in
/// `PcapLiveStats::interface_gone`), and `follow` opens a new one once an interface of
/// that name exists again, as pods' veths come and go. Its statistics run on across
/// captures.
pub struct FollowingCapture {
    iface: String,
    ports: Vec<u16>,
    opts: PcapOptions,
    current: Option<PcapCapture>,
    /// Link type of the latest capture opened.
    link: LinkType,
    /// Figures of the captures already closed.
    closed: PcapLiveStats,
    /// The last read found the interface deleted; the capture closes on the next call,
    /// once that read's frame borrow is over.
    gone: bool,
}

impl std::fmt::Debug for FollowingCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowingCapture")
            .field("iface", &self.iface)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl FollowingCapture {
    /// Opens `iface` now: an interface missing at start is an error, as with
    /// `PcapCapture::open`.
    pub fn open(iface: &str, ports: &[u16], opts: &PcapOptions) -> Result<Self, PcapLiveError> {
        let capture = PcapCapture::open(iface, ports, opts)?;
        Ok(Self {
            iface: iface.to_owned(),
            ports: ports.to_vec(),
            opts: opts.clone(),
            link: capture.link_type(),
            current: Some(capture),
            closed: PcapLiveStats::default(),
            gone: false,
        })
    }

    /// As `PcapCapture::next_frame`. While the interface is gone this waits out the read
    /// timeout and returns `Ok(None)`.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, PcapLiveError> {
        // No check of the interface per frame: it costs two system calls, which under
        // load made libpcap's ring overflow. A failed read says so, and `follow` (once a
        // second) catches a deletion that no read noticed.
        if std::mem::take(&mut self.gone) {
            self.close();
        }
        let Some(capture) = self.current.as_mut() else {
            let wait = u64::try_from(self.opts.timeout_ms.max(1)).unwrap_or(1);
            std::thread::sleep(Duration::from_millis(wait));
            return Ok(None);
        };
        match capture.next_frame() {
            Err(PcapLiveError::Vanished { .. }) => {
                self.gone = true;
                Ok(None)
            }
            other => other,
        }
    }

    /// Checks on the interface: closes the capture of one that was deleted, and opens a
    /// capture on an interface of the name that exists (again). Call it now and then
    /// (once a second): an error reading a deleted interface closes its capture sooner,
    /// but a deletion that raced with a read may show no error at all.
    pub fn follow(&mut self) {
        if self
            .current
            .as_ref()
            .is_some_and(PcapCapture::interface_vanished)
        {
            self.close();
        }
        if self.current.is_some() || ifindex_of(&self.iface).is_none() {
            return;
        }
        match PcapCapture::open(&self.iface, &self.ports, &self.opts) {
            Ok(capture) => {
                tracing::info!(iface = %self.iface, "libpcap capture reopened on the new interface");
                self.link = capture.link_type();
                self.current = Some(capture);
            }
            // Created but not up yet, or deleted again in between: the next call retries.
            Err(e) => tracing::debug!(iface = %self.iface, error = %e, "cannot reopen capture yet"),
        }
    }

    fn close(&mut self) {
        let Some(mut capture) = self.current.take() else {
            return;
        };
        let last = capture.stats().unwrap_or(PcapLiveStats {
            frames: capture.frames,
            bytes: capture.bytes,
            excluded_in_user: capture.excluded_in_user,
            ..PcapLiveStats::default()
        });
        self.closed = self.closed.plus(last);
        self.closed.interface_gone += 1;
        tracing::info!(
            iface = %self.iface,
            "interface gone: its capture is closed until an interface of that name appears"
        );
    }

    /// Whether a capture is open (false while the interface is gone).
    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// A named interface (not `any`), which can go away.
    pub fn follows_a_name(&self) -> bool {
        self.iface != ANY_IFACE
    }

    /// The figures of every capture so far, the current one included.
    pub fn stats(&mut self) -> Result<PcapLiveStats, PcapLiveError> {
        match self.current.as_mut() {
            Some(capture) => Ok(self.closed.plus(capture.stats()?)),
            None => Ok(self.closed),
        }
    }

    pub fn link_type(&self) -> LinkType {
        self.link
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }
}

/// Most excluded addresses put into the kernel filter; see `PcapCapture::set_excluded`.
const MAX_KERNEL_EXCLUDES: usize = 64;

/// Whether `frame` is TCP from or to one of the `excluded` endpoints. Frames that cannot
/// be read that far are kept: the decoder counts them.
fn is_excluded(excluded: &HashSet<(IpAddr, u16)>, link: LinkType, frame: &[u8]) -> bool {
    tcp_endpoints(link, frame)
        .is_some_and(|(src, dst)| excluded.contains(&src) || excluded.contains(&dst))
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;

/// Source and destination of a TCP segment: just enough of the headers to apply
/// exclusions, not a decoder. `None` for anything else, cut short or a later fragment.
fn tcp_endpoints(link: LinkType, frame: &[u8]) -> Option<((IpAddr, u16), (IpAddr, u16))> {
    let (mut ethertype, mut rest) = match link {
        LinkType::Ethernet => (be16(frame, 12)?, frame.get(14..)?),
        LinkType::LinuxSll => (be16(frame, 14)?, frame.get(16..)?),
        LinkType::LinuxSll2 => (be16(frame, 0)?, frame.get(20..)?),
        LinkType::Null | LinkType::Loop => ip_ethertype(frame.get(4..)?)?,
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => ip_ethertype(frame)?,
        LinkType::Nflog => ip_ethertype(nflog_payload(frame)?)?,
        LinkType::Other(_) => return None,
    };
    // 802.1Q, 802.1ad and the old QinQ tag, as many as are stacked.
    while link == LinkType::Ethernet && matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
        ethertype = be16(rest, 2)?;
        rest = rest.get(4..)?;
    }
    let (src, dst, tcp) = match ethertype {
        ETHERTYPE_IPV4 => {
            let header_len = usize::from(rest.first()? & 0x0f) * 4;
            let later_fragment = be16(rest, 6)? & 0x1fff != 0;
            if *rest.get(9)? != IPPROTO_TCP || later_fragment {
                return None;
            }
            let src: [u8; 4] = rest.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = rest.get(16..20)?.try_into().ok()?;
            (
                IpAddr::from(src),
                IpAddr::from(dst),
                rest.get(header_len..)?,
            )
        }
        ETHERTYPE_IPV6 => {
            let src: [u8; 16] = rest.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = rest.get(24..40)?.try_into().ok()?;
            let tcp = ipv6_tcp_payload(*rest.get(6)?, rest.get(40..)?)?;
            (IpAddr::from(src), IpAddr::from(dst), tcp)
        }
        _ => return None,
    };
    Some(((src, be16(tcp, 0)?), (dst, be16(tcp, 2)?)))
}

/// Walks the IPv6 extension headers that can precede TCP to the TCP header.
fn ipv6_tcp_payload(mut next: u8, mut rest: &[u8]) -> Option<&[u8]> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DESTINATION: u8 = 60;
    // A bound on the walk; real packets have one or two of these.
    for _ in 0..8 {
        let len = match next {
            IPPROTO_TCP => return Some(rest),
            HOP_BY_HOP | ROUTING | DESTINATION => (usize::from(*rest.get(1)?) + 1) * 8,
            FRAGMENT if be16(rest, 2)? & 0xfff8 == 0 => 8,
            _ => return None,
        };
        next = *rest.first()?;
        rest = rest.get(len..)?;
    }
    None
}

/// The packet of an NFLOG frame: its payload TLV (type 9), lengths in either byte order
/// (see `decode`).
fn nflog_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut rest = frame.get(4..)?;
    let first = usize::from(u16::from_le_bytes([*rest.first()?, *rest.get(1)?]));
    let little = (4..=rest.len()).contains(&first);
    let read = |b: &[u8], at: usize| -> Option<usize> {
        let bytes = [*b.get(at)?, *b.get(at + 1)?];
        Some(usize::from(if little {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        }))
    };
    // A bound on the walk: a logged packet carries a dozen TLVs at most.
    for _ in 0..32 {
        let len = read(rest, 0)?;
        if len < 4 {
            return None;
        }
        if read(rest, 2)? & 0x7fff == 9 {
            return rest.get(4..len.min(rest.len()));
        }
        rest = rest.get((len + 3) & !3..)?;
    }
    None
}

fn ip_ethertype(packet: &[u8]) -> Option<(u16, &[u8])> {
    match packet.first()? >> 4 {
        4 => Some((ETHERTYPE_IPV4, packet)),
        6 => Some((ETHERTYPE_IPV6, packet)),
        _ => None,
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// The kernel refuses socket filters over BPF_MAXINSNS (4096) instructions, and charges
/// them, after translation to eBPF (a few instructions per classic one), against
/// net.core.optmem_max, which is only 20 KiB on older kernels.
fn kernel_filter_budget() -> usize {
    const BPF_MAXINSNS: usize = 4096;
    const CHARGED_BYTES_PER_INSN: usize = 24;
    let optmem_max = std::fs::read_to_string("/proc/sys/net/core/optmem_max")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .unwrap_or(20 * 1024);
    (optmem_max / CHARGED_BYTES_PER_INSN).min(BPF_MAXINSNS)
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
    use std::net::Ipv6Addr;

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
            format!("(tcp and (port 80 or port 8080)) or {UNCHECKED}")
        );
    }

    #[test]
    fn filter_ports_are_sorted_and_deduplicated() {
        assert_eq!(
            capture_filter_for(LinkType::Raw, &[8080, 80, 8080], &[]),
            format!("(tcp and (port 80 or port 8080)) or {UNCHECKED}")
        );
    }

    #[test]
    fn filter_without_ports_keeps_all_tcp() {
        assert_eq!(
            capture_filter_for(LinkType::LinuxSll, &[], &[]),
            format!("(tcp) or {UNCHECKED}")
        );
    }

    #[test]
    fn ethernet_filter_adds_a_vlan_branch() {
        let plain = format!("(tcp and (port 80)) or {UNCHECKED}");
        assert_eq!(
            capture_filter(&[80], &[]),
            format!("({plain}) or (vlan and ({plain}))")
        );
    }

    #[test]
    fn filter_excludes_local_address_in_both_directions() {
        assert_eq!(
            capture_filter_for(LinkType::LinuxSll2, &[80], &[addr("10.1.2.3:40000")]),
            format!(
                "(tcp and (port 80) and not (src host 10.1.2.3 and (src port 40000)) \
                 and not (dst host 10.1.2.3 and (dst port 40000))) or {UNCHECKED}"
            )
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
            filter.contains("not (src host fe80::1 and (src port 5000))"),
            "{filter}"
        );
        assert!(
            filter.contains("not (dst host 192.0.2.7 and (dst port 6000))"),
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
    fn filter_groups_excluded_ports_by_host() {
        let filter = capture_filter_for(
            LinkType::Raw,
            &[80],
            &[
                addr("10.0.0.1:41000"),
                addr("10.0.0.1:40000"),
                addr("[::1]:40000"),
            ],
        );
        assert_eq!(
            filter,
            format!(
                "(tcp and (port 80) \
                 and not (src host 10.0.0.1 and (src port 40000 or src port 41000)) \
                 and not (dst host 10.0.0.1 and (dst port 40000 or dst port 41000)) \
                 and not (src host ::1 and (src port 40000)) \
                 and not (dst host ::1 and (dst port 40000))) or {UNCHECKED}"
            )
        );
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

    #[test]
    fn compiled_filter_keeps_fragments_and_ipv6_extension_headers() {
        let cap = Capture::dead(Linktype::ETHERNET).unwrap();
        let program = cap.compile(&capture_filter(&[80], &[]), true).unwrap();
        let ethernet = |ethertype: [u8; 2], l3: &[u8]| {
            let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
            f.extend_from_slice(&ethertype);
            f.extend_from_slice(l3);
            f
        };
        let v4 = ipv4_tcp_frame(false, [10, 0, 0, 2], 51000, [10, 0, 0, 3], 81);
        let with_fragment = |proto: u8, flags_offset: [u8; 2]| {
            let mut f = v4.clone();
            f[14 + 6..14 + 8].copy_from_slice(&flags_offset);
            f[14 + 9] = proto;
            f
        };
        // A later fragment of TCP: no TCP header to read, kept whatever it carries. A
        // first fragment (MF) to an unwatched port too: its datagram is reassembled
        // before reassembly's port filter.
        assert!(program.filter(&with_fragment(6, [0x00, 0x10])));
        assert!(program.filter(&with_fragment(6, [0x20, 0x00])));
        // A fragment of UDP is not, nor an unfragmented packet to another port.
        assert!(!program.filter(&with_fragment(17, [0x00, 0x10])));
        assert!(!program.filter(&v4));
        // IPv6 with destination options in front of TCP, to a watched port: libpcap's
        // `tcp` alone does not see it.
        let v6 = ipv6_tcp_packet(Ipv6Addr::LOCALHOST, 51000, Ipv6Addr::LOCALHOST, 80);
        assert!(program.filter(&ethernet([0x86, 0xdd], &v6)));
        assert!(
            !cap.compile("tcp and (port 80)", true)
                .unwrap()
                .filter(&ethernet([0x86, 0xdd], &v6)),
            "the plain filter misses it"
        );
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

    fn ipv6_tcp_packet(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 28, 0, 64];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        // A destination-options header (8 bytes of padding) before TCP.
        p[6] = 60;
        p.extend_from_slice(&[IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        p
    }

    #[test]
    fn endpoints_of_tagged_ethernet_ipv4() {
        let frame = ipv4_tcp_frame(true, [10, 0, 0, 2], 51000, [10, 0, 0, 3], 80);
        let want = (
            (IpAddr::from([10, 0, 0, 2]), 51000),
            (IpAddr::from([10, 0, 0, 3]), 80),
        );
        assert_eq!(tcp_endpoints(LinkType::Ethernet, &frame), Some(want));
        // Every truncation before the ports is refused, never misread or a panic.
        let ports_end = 18 + 20 + 4;
        for len in 0..ports_end {
            assert_eq!(
                tcp_endpoints(LinkType::Ethernet, &frame[..len]),
                None,
                "{len}"
            );
        }
        assert_eq!(
            tcp_endpoints(LinkType::Ethernet, &frame[..ports_end]),
            Some(want)
        );
    }

    #[test]
    fn endpoints_of_ipv6_behind_every_link_type() {
        let (a, b) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let packet = ipv6_tcp_packet(a, 40000, b, 8080);
        let want = Some(((IpAddr::V6(a), 40000), (IpAddr::V6(b), 8080)));
        let with = |mut header: Vec<u8>| {
            header.extend_from_slice(&packet);
            header
        };
        let mut sll2 = vec![0x86, 0xdd];
        sll2.resize(20, 0);
        let mut sll = vec![0; 14];
        sll.extend_from_slice(&[0x86, 0xdd]);
        let mut ethernet = vec![0; 12];
        ethernet.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x86, 0xdd]);
        assert_eq!(tcp_endpoints(LinkType::Raw, &packet), want);
        assert_eq!(tcp_endpoints(LinkType::LinuxSll2, &with(sll2)), want);
        assert_eq!(tcp_endpoints(LinkType::LinuxSll, &with(sll)), want);
        assert_eq!(tcp_endpoints(LinkType::Ethernet, &with(ethernet)), want);
        assert_eq!(
            tcp_endpoints(LinkType::Null, &with(24u32.to_ne_bytes().to_vec())),
            want
        );
        assert_eq!(tcp_endpoints(LinkType::Other(147), &packet), None);
    }

    #[test]
    fn non_tcp_and_later_fragments_have_no_endpoints() {
        let mut udp = ipv4_tcp_frame(false, [10, 0, 0, 2], 1, [10, 0, 0, 3], 80);
        udp[14 + 9] = 17;
        assert_eq!(tcp_endpoints(LinkType::Ethernet, &udp), None);
        let mut fragment = ipv4_tcp_frame(false, [10, 0, 0, 2], 1, [10, 0, 0, 3], 80);
        fragment[14 + 7] = 0x10;
        assert_eq!(tcp_endpoints(LinkType::Ethernet, &fragment), None);
    }

    #[test]
    fn exclusion_matches_either_end() {
        let own: HashSet<(IpAddr, u16)> = [(IpAddr::from([10, 0, 0, 1]), 40000)].into();
        let out = ipv4_tcp_frame(false, [10, 0, 0, 1], 40000, [10, 0, 0, 3], 80);
        let back = ipv4_tcp_frame(true, [10, 0, 0, 3], 80, [10, 0, 0, 1], 40000);
        let other = ipv4_tcp_frame(false, [10, 0, 0, 1], 40001, [10, 0, 0, 3], 80);
        assert!(is_excluded(&own, LinkType::Ethernet, &out));
        assert!(is_excluded(&own, LinkType::Ethernet, &back));
        assert!(!is_excluded(&own, LinkType::Ethernet, &other));
        assert!(!is_excluded(&own, LinkType::Ethernet, &out[..20]));
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
