//! The eBPF capture engine: loads the TC classifier built from agent-ebpf, attaches it to
//! interfaces (ingress and egress, TCX links where the kernel has them, clsact filters
//! otherwise), and turns the pieces it writes to its ring buffer back into whole frames.
//! Interface patterns and hotplug belong to the caller; this module works by name.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::Link;
use aya::programs::tc::{self, NlOptions, TcAttachOptions};
use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions,
};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfLoader};
use shadowtap_common as common;
use shadowtap_common::PieceHeader;

use super::{Frame, LinkType};

/// The classifier object, compiled by agent/build.rs.
static CLASSIFIER: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shadowtap-classifier"));

/// Return value of the classifier for a packet it lets through (TC_ACT_UNSPEC, which
/// TCX reads as "next").
pub const VERDICT_PASS: u32 = u32::MAX;

/// Partial packets kept at once; pieces of one packet come from one CPU in order, so
/// there is about one per CPU. Past this, all are dropped and counted incomplete.
const MAX_PARTIAL_PACKETS: usize = 64;

/// The reader's timer while the classifier writes without wakeups: `TICK_MIN` under
/// load, doubling while the ring stays empty up to `TICK_MAX`, the longest a lone packet
/// waits (and the idle agent wakes 1000 / 16 times a second, not once per packet).
/// 4 ms rather than 1: a quarter of the agent's CPU per request at 0% went to waking up
/// (wrk at ~70k requests/s, pinned); a copy leaving 3 ms later changes nothing for a
/// fire-and-forget target, and the classifier still wakes the reader early when a
/// quarter of the ring is unread.
const TICK_MIN: Duration = Duration::from_millis(4);
const TICK_MAX: Duration = Duration::from_millis(16);

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "{action} was refused (EPERM): the process lacks {missing}; run as root or grant \
         these capabilities (a container needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    )]
    Permission {
        action: String,
        missing: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("loading the eBPF classifier failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the kernel rejected eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the embedded eBPF object has no {0}; agent-ebpf and the agent are out of step")]
    Missing(&'static str),
    #[error("no network interface named {0:?}")]
    NoSuchInterface(String),
    #[error("attaching the classifier to {iface} {direction} failed: {source}")]
    Attach {
        iface: String,
        direction: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("detaching the classifier from {iface} failed: {source}")]
    Detach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("the classifier is not attached to {0}")]
    NotAttached(String),
    #[error("waiting on the eBPF ring buffer failed: {0}")]
    Poll(#[source] io::Error),
    #[error("{ATTACH_ENV}={0:?}: must be `auto`, `tcx` or `clsact`")]
    AttachMode(String),
}

/// Environment variable that chooses how the classifier is attached: `tcx` (links, on
/// kernels from 6.6), `clsact` (netlink filters under a clsact qdisc, the path of older
/// kernels) or `auto` (unset: TCX where the kernel has it). `clsact` is for a kernel
/// whose TCX misbehaves, and lets tests run the older kernels' path on a new one.
pub const ATTACH_ENV: &str = "SHADOWTAP_EBPF_ATTACH";

/// Whether to attach with TCX, from the value of `ATTACH_ENV` and what the kernel has.
fn use_tcx_from(setting: Option<&str>, kernel_has_tcx: bool) -> Result<bool, EbpfError> {
    match setting.map(str::trim) {
        None | Some("" | "auto") => Ok(kernel_has_tcx),
        Some("tcx") => Ok(true),
        Some("clsact") => Ok(false),
        Some(other) => Err(EbpfError::AttachMode(other.to_owned())),
    }
}

/// One packet as the classifier saw it, rebuilt from its pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedFrame {
    /// Capture time in nanoseconds since the Unix epoch.
    pub ts_nanos: u64,
    pub ifindex: u32,
    /// Seen on egress (else ingress).
    pub egress: bool,
    /// `Ethernet`, or `Raw` on devices without an L2 header.
    pub link: LinkType,
    pub data: Vec<u8>,
    /// Length of the packet in the kernel (`skb->len`); larger than `data` only when the
    /// packet was longer than the classifier copies (256 KiB).
    pub orig_len: u32,
}

impl OwnedFrame {
    pub fn as_frame(&self) -> Frame<'_> {
        Frame {
            ts_nanos: self.ts_nanos,
            link: self.link,
            data: &self.data,
            orig_len: self.orig_len,
        }
    }
}

/// Counters of the classifier (summed over CPUs) and of the reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EbpfStats {
    /// Packets copied (TCP to a watched port, fragments, long IPv6 chains), not counting
    /// the agent's own.
    pub matched: u64,
    /// Packet bytes written to the ring buffer.
    pub bytes: u64,
    /// Pieces that did not fit in the ring buffer.
    pub ring_drops: u64,
    /// Pieces written to the ring buffer.
    pub pieces: u64,
    /// Packets skipped because they carried the agent's own mark.
    pub own_mark_skipped: u64,
    /// Packets longer than what the classifier copies (only their head is delivered).
    pub truncated: u64,
    /// Pieces the reader could not place (their packet's start was lost, or malformed).
    pub pieces_lost: u64,
    /// Packets dropped by the reader because some of their pieces never came.
    pub incomplete_packets: u64,
    /// IP fragments copied without a port check (reassembled and filtered by the agent).
    pub fragments: u64,
    /// IPv6 packets copied without a port check: a longer extension chain than the
    /// classifier walks.
    pub long_chains: u64,
}

/// How a classifier is attached to one interface.
#[derive(Debug)]
struct Attachment {
    ingress: tc::SchedClassifierLinkId,
    egress: tc::SchedClassifierLinkId,
}

/// The loaded classifier, its maps, and the interfaces it is attached to. Dropping it
/// detaches everything; with TCX links the kernel also does so when the process dies.
pub struct EbpfCapture {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
    config: Array<MapData, u32>,
    ports: Array<MapData, u64>,
    /// What PORTS holds, so that a change writes only the words that differ.
    port_bits: Vec<u64>,
    ifaces: BpfHashMap<MapData, u32, u32>,
    attached: HashMap<String, Attachment>,
    assembler: PieceAssembler,
    use_tcx: bool,
    /// The classifier writes without waking us (`CONFIG_WAKEUP_BYTES` set): poll on
    /// `tick` instead of waiting for a wakeup.
    batched: bool,
    tick: Duration,
}

impl fmt::Debug for EbpfCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EbpfCapture")
            .field("attached", &self.attached.keys().collect::<Vec<_>>())
            .field("use_tcx", &self.use_tcx)
            .finish_non_exhaustive()
    }
}

impl EbpfCapture {
    /// Loads the classifier, watching TCP destination `ports` and skipping packets whose
    /// skb mark is `own_mark` (0: skip nothing). `ring_bytes` is rounded up to a power of
    /// two of at least one page. Nothing is attached yet.
    pub fn load(ports: &[u16], own_mark: u32, ring_bytes: usize) -> Result<Self, EbpfError> {
        let ring_bytes = ring_size(ring_bytes);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(common::MAP_EVENTS, ring_bytes)
            .load(CLASSIFIER)
            .map_err(|e| {
                permission_error("loading the eBPF classifier", &e).unwrap_or(EbpfError::Load(e))
            })?;
        for name in [common::PROG_INGRESS, common::PROG_EGRESS] {
            program_mut(&mut ebpf, name)?
                .load()
                .map_err(|e| program_error(name, e))?;
        }
        let ring = RingBuf::try_from(take_map(&mut ebpf, common::MAP_EVENTS)?)
            .map_err(|e| map_error(common::MAP_EVENTS, e))?;
        let stats = PerCpuArray::try_from(take_map(&mut ebpf, common::MAP_STATS)?)
            .map_err(|e| map_error(common::MAP_STATS, e))?;
        let config = Array::try_from(take_map(&mut ebpf, common::MAP_CONFIG)?)
            .map_err(|e| map_error(common::MAP_CONFIG, e))?;
        let ports_map = Array::try_from(take_map(&mut ebpf, common::MAP_PORTS)?)
            .map_err(|e| map_error(common::MAP_PORTS, e))?;
        let ifaces = BpfHashMap::try_from(take_map(&mut ebpf, common::MAP_IFACES)?)
            .map_err(|e| map_error(common::MAP_IFACES, e))?;
        let kernel_has_tcx = KernelVersion::current()
            .map(|v| v >= KernelVersion::new(6, 6, 0))
            .unwrap_or(false);
        let setting = std::env::var(ATTACH_ENV).ok();
        let use_tcx = use_tcx_from(setting.as_deref(), kernel_has_tcx)?;
        let mut capture = Self {
            ebpf,
            ring,
            stats,
            config,
            ports: ports_map,
            port_bits: vec![0; common::PORT_WORDS as usize],
            ifaces,
            attached: HashMap::new(),
            assembler: PieceAssembler::new(monotonic_to_realtime_offset()),
            use_tcx,
            batched: false,
            tick: TICK_MIN,
        };
        capture.set_ports(ports)?;
        // A quarter of the ring: far above what one tick brings at any rate the agent
        // keeps up with, far enough below full to leave the reader time to start.
        capture.set_wakeup_bytes(ring_bytes / 4)?;
        capture
            .config
            .set(common::CONFIG_OWN_MARK, own_mark, 0)
            .map_err(|e| map_error(common::MAP_CONFIG, e))?;
        Ok(capture)
    }

    /// Replaces the set of watched destination ports.
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<(), EbpfError> {
        let wanted = port_bitmap(ports);
        for (index, (&want, have)) in wanted.iter().zip(self.port_bits.iter_mut()).enumerate() {
            if want != *have {
                // Each word is written whole, so a watched port stays set throughout.
                self.ports
                    .set(index as u32, want, 0)
                    .map_err(|e| map_error(common::MAP_PORTS, e))?;
                *have = want;
            }
        }
        Ok(())
    }

    /// Caps the bytes per ring buffer piece (0: the built-in 16 KiB). Only tests need
    /// this: it lets BPF_PROG_TEST_RUN's 4 KiB frames span several pieces.
    pub fn set_piece_len(&mut self, piece_len: u32) -> Result<(), EbpfError> {
        self.config
            .set(common::CONFIG_PIECE_LEN, piece_len, 0)
            .map_err(|e| map_error(common::MAP_CONFIG, e))
    }

    /// Ring buffer wakeups: 0 wakes the reader for every packet that finds it caught up
    /// (the kernel's default); otherwise only when this many bytes are unread, the reader
    /// collecting the rest on a timer of at most 16 ms. `load` sets a quarter of the ring.
    pub fn set_wakeup_bytes(&mut self, bytes: u32) -> Result<(), EbpfError> {
        self.config
            .set(common::CONFIG_WAKEUP_BYTES, bytes, 0)
            .map_err(|e| map_error(common::MAP_CONFIG, e))?;
        self.batched = bytes != 0;
        self.tick = TICK_MIN;
        Ok(())
    }

    /// Also capture packets FROM a watched port (the server's answers), for `--diff`.
    pub fn set_capture_answers(&mut self, on: bool) -> Result<(), EbpfError> {
        self.config
            .set(common::CONFIG_SRC_PORTS, u32::from(on), 0)
            .map_err(|e| map_error(common::MAP_CONFIG, e))
    }

    /// Tells the classifier whether frames on `ifindex` start with an Ethernet header.
    /// `attach` sets this from the interface type; this overrides it.
    pub fn set_interface_l2(&mut self, ifindex: u32, has_l2: bool) -> Result<(), EbpfError> {
        let result = if has_l2 {
            match self.ifaces.remove(&ifindex) {
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.kind() == io::ErrorKind::NotFound =>
                {
                    Ok(())
                }
                other => other,
            }
        } else {
            self.ifaces
                .insert(ifindex, common::IFACE_NO_L2, 0)
                .and_then(|()| self.config.set(common::CONFIG_ANY_NO_L2, 1, 0))
        };
        result.map_err(|e| map_error(common::MAP_IFACES, e))
    }

    /// Attaches the classifier to `ifname` on ingress and egress.
    pub fn attach(&mut self, ifname: &str) -> Result<(), EbpfError> {
        if self.attached.contains_key(ifname) {
            return Ok(());
        }
        let ifindex = ifindex(ifname)?;
        self.set_interface_l2(ifindex, interface_has_l2(ifname))?;
        if !self.use_tcx {
            prepare_clsact(ifname, ifindex);
        }
        let ingress = self.attach_one(ifname, common::PROG_INGRESS, TcAttachType::Ingress)?;
        let egress = match self.attach_one(ifname, common::PROG_EGRESS, TcAttachType::Egress) {
            Ok(id) => id,
            Err(e) => {
                // Do not leave a half attachment behind.
                if let Ok(prog) = program_mut(&mut self.ebpf, common::PROG_INGRESS) {
                    let _ = prog.detach(ingress);
                }
                return Err(e);
            }
        };
        self.attached
            .insert(ifname.to_owned(), Attachment { ingress, egress });
        Ok(())
    }

    fn attach_one(
        &mut self,
        ifname: &str,
        program: &'static str,
        direction: TcAttachType,
    ) -> Result<tc::SchedClassifierLinkId, EbpfError> {
        // First among TCX programs: one that redirects or drops would otherwise hide the
        // packet from us; we always pass it on to the next.
        let options = if self.use_tcx {
            TcAttachOptions::TcxOrder(LinkOrder::first())
        } else {
            TcAttachOptions::Netlink(NlOptions::default())
        };
        program_mut(&mut self.ebpf, program)?
            .attach_with_options(ifname, direction, options)
            .map_err(|e| {
                let what = format!("attaching the classifier to {ifname}");
                permission_error(&what, &e).unwrap_or_else(|| EbpfError::Attach {
                    iface: ifname.to_owned(),
                    direction: direction_name(direction),
                    source: e,
                })
            })
    }

    /// Detaches the classifier from `ifname`. An interface that has gone away is
    /// forgotten without error (the kernel dropped its links with it).
    pub fn detach(&mut self, ifname: &str) -> Result<(), EbpfError> {
        let attachment = self
            .attached
            .remove(ifname)
            .ok_or_else(|| EbpfError::NotAttached(ifname.to_owned()))?;
        let gone = ifindex(ifname).is_err();
        let ingress = program_mut(&mut self.ebpf, common::PROG_INGRESS)?.detach(attachment.ingress);
        let egress = program_mut(&mut self.ebpf, common::PROG_EGRESS)?.detach(attachment.egress);
        match (ingress, egress) {
            (Ok(()), Ok(())) => Ok(()),
            _ if gone => Ok(()),
            (Err(source), _) | (_, Err(source)) => Err(EbpfError::Detach {
                iface: ifname.to_owned(),
                source,
            }),
        }
    }

    /// Interfaces the classifier is attached to, sorted.
    pub fn attached(&self) -> Vec<String> {
        let mut names: Vec<String> = self.attached.keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether attachments use TCX links (kernel >= 6.6) rather than clsact filters.
    pub fn uses_tcx(&self) -> bool {
        self.use_tcx
    }

    /// Chooses TCX links (`true`) or clsact filters (`false`) for later `attach` calls.
    /// `load` picks TCX on kernels >= 6.6; tests use this to exercise the fallback.
    pub fn set_use_tcx(&mut self, use_tcx: bool) {
        self.use_tcx = use_tcx;
    }

    /// Next whole packet, waiting up to `timeout`; `None` when none came in time.
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Option<OwnedFrame>, EbpfError> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(record) = self.ring.next() {
                self.tick = TICK_MIN;
                if let Some(frame) = self.assembler.push(&record) {
                    return Ok(Some(frame));
                }
            }
            if !self.wait(deadline)? {
                return Ok(None);
            }
        }
    }

    /// Hands the whole packets the ring holds, up to `max` of them, to `each`, waiting up
    /// to `timeout` for the first; returns how many. A packet that came in one piece (all
    /// but the largest) is handed out where it lies in the ring, without a copy.
    pub fn next_frames(
        &mut self,
        timeout: Duration,
        max: usize,
        mut each: impl FnMut(&Frame<'_>),
    ) -> Result<usize, EbpfError> {
        let deadline = Instant::now() + timeout;
        let mut handed = 0;
        loop {
            while handed < max {
                let Some(record) = self.ring.next() else {
                    break;
                };
                self.tick = TICK_MIN;
                if self.assembler.push_with(&record, &mut each) {
                    handed += 1;
                }
            }
            if handed > 0 || !self.wait(deadline)? {
                return Ok(handed);
            }
        }
    }

    /// Waits for records until `deadline`; false once it has passed. While the classifier
    /// writes without wakeups, the wait is the reader's timer instead.
    fn wait(&mut self, deadline: Instant) -> Result<bool, EbpfError> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let mut wait = deadline - now;
        if self.batched {
            wait = wait.min(self.tick);
            self.tick = (self.tick * 2).min(TICK_MAX);
        }
        let wait_ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut pollfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pollfd, 1, wait_ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(EbpfError::Poll(err));
            }
        }
        Ok(true)
    }

    /// Counters so far, summed over CPUs.
    pub fn stats(&self) -> Result<EbpfStats, EbpfError> {
        let sum = |slot: u32| -> Result<u64, EbpfError> {
            let values = self
                .stats
                .get(&slot, 0)
                .map_err(|e| map_error(common::MAP_STATS, e))?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(EbpfStats {
            matched: sum(common::STAT_MATCHED)?,
            bytes: sum(common::STAT_BYTES)?,
            ring_drops: sum(common::STAT_RING_DROPS)?,
            pieces: sum(common::STAT_PIECES)?,
            own_mark_skipped: sum(common::STAT_OWN_MARK)?,
            truncated: sum(common::STAT_TRUNCATED)?,
            pieces_lost: self.assembler.pieces_lost,
            incomplete_packets: self.assembler.incomplete_packets,
            fragments: sum(common::STAT_FRAGMENTS)?,
            long_chains: sum(common::STAT_LONG_CHAINS)?,
        })
    }

    /// Runs the classifier once on `frame` with BPF_PROG_TEST_RUN, as if it arrived on
    /// `ifindex` (0: loopback) with skb mark `mark`; returns its verdict. For tests and
    /// for checking that the kernel accepts the program without attaching it anywhere.
    pub fn test_run(
        &mut self,
        egress: bool,
        frame: &[u8],
        ifindex: u32,
        mark: u32,
    ) -> Result<u32, EbpfError> {
        let name = if egress {
            common::PROG_EGRESS
        } else {
            common::PROG_INGRESS
        };
        let ctx = test_run_context(ifindex, mark);
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        };
        let result = program_mut(&mut self.ebpf, name)?
            .test_run(opts)
            .map_err(|e| program_error(name, e))?;
        Ok(result.return_value)
    }
}

/// `struct __sk_buff` for BPF_PROG_TEST_RUN: only `mark` (offset 8) and `ifindex`
/// (offset 40) set; the kernel rejects non-zero values in fields it does not accept.
fn test_run_context(ifindex: u32, mark: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[8..12].copy_from_slice(&mark.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// The PORTS bitmap for `ports`: bit `p % 64` of word `p / 64` for each port `p`.
fn port_bitmap(ports: &[u16]) -> Vec<u64> {
    let mut words = vec![0u64; common::PORT_WORDS as usize];
    for &port in ports {
        let (word, bit) = common::port_bit(port);
        words[word as usize] |= bit;
    }
    words
}

fn ring_size(requested: usize) -> u32 {
    let wanted = requested.clamp(4096, 1 << 30);
    u32::try_from(wanted.next_power_of_two()).unwrap_or(1 << 30)
}

fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, EbpfError> {
    ebpf.program_mut(name)
        .ok_or(EbpfError::Missing(name))?
        .try_into()
        .map_err(|e| program_error(name, e))
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
    ebpf.take_map(name).ok_or(EbpfError::Missing(name))
}

fn program_error(program: &'static str, source: ProgramError) -> EbpfError {
    let action = format!("loading eBPF program {program}");
    if let Some(refused) = permission_error(&action, &source) {
        return refused;
    }
    // Without CAP_PERFMON the verifier checks as for an unprivileged program and gives up
    // on the classifier's loops (E2BIG, "too complex") instead of saying EPERM: a verifier
    // log of megabytes where the cause is one capability missing.
    if matches!(source, ProgramError::LoadError { .. })
        && missing_capabilities().contains("CAP_PERFMON")
    {
        return EbpfError::Permission {
            action: format!("{action} (the verifier's privileged checks)"),
            missing: missing_capabilities(),
            source: source.to_string().into(),
        };
    }
    EbpfError::Program { program, source }
}

fn map_error(map: &'static str, source: aya::maps::MapError) -> EbpfError {
    EbpfError::Map { map, source }
}

fn direction_name(direction: TcAttachType) -> &'static str {
    match direction {
        TcAttachType::Ingress => "ingress",
        TcAttachType::Egress => "egress",
        TcAttachType::Custom(_) => "custom",
    }
}

/// `Some(EbpfError::Permission)` when an EPERM is somewhere in `err`'s source chain;
/// the error names the capabilities missing from the effective set.
fn permission_error<E>(action: &str, err: &E) -> Option<EbpfError>
where
    E: StdError + Send + Sync + 'static,
{
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    let mut eperm = false;
    while let Some(e) = cause {
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            if io_err.raw_os_error() == Some(libc::EPERM) {
                eperm = true;
                break;
            }
        }
        cause = e.source();
    }
    if !eperm {
        return None;
    }
    Some(EbpfError::Permission {
        action: action.to_owned(),
        missing: missing_capabilities(),
        source: err.to_string().into(),
    })
}

/// The capabilities eBPF capture needs that this process does not have, from CapEff in
/// /proc/self/status (CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON).
fn missing_capabilities() -> String {
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        });
    let Some(cap_eff) = cap_eff else {
        return "CAP_BPF, CAP_NET_ADMIN or CAP_PERFMON (could not read CapEff)".to_owned();
    };
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    let sys_admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !sys_admin {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_PERFMON) && !sys_admin {
        missing.push("CAP_PERFMON");
    }
    if missing.is_empty() {
        // All capabilities present: a security module or a sysctl
        // (kernel.unprivileged_bpf_disabled, a seccomp profile) said no.
        "nothing capability-wise (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON are present; check \
         seccomp/LSM policy)"
            .to_owned()
    } else {
        missing.join(", ")
    }
}

fn ifindex(ifname: &str) -> Result<u32, EbpfError> {
    let c_name = CString::new(ifname).map_err(|_| EbpfError::NoSuchInterface(ifname.to_owned()))?;
    // SAFETY: c_name is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(EbpfError::NoSuchInterface(ifname.to_owned()));
    }
    Ok(index)
}

/// Whether frames on `ifname` start with an Ethernet header, from its ARPHRD type.
/// Unknown or unreadable types are taken as Ethernet, the common case.
fn interface_has_l2(ifname: &str) -> bool {
    const ARPHRD_PPP: u32 = 512;
    const ARPHRD_RAWIP: u32 = 519;
    const ARPHRD_TUNNEL: u32 = 768;
    const ARPHRD_TUNNEL6: u32 = 769;
    const ARPHRD_SIT: u32 = 776;
    const ARPHRD_IPGRE: u32 = 778;
    const ARPHRD_NONE: u32 = 65534;
    let arphrd = std::fs::read_to_string(format!("/sys/class/net/{ifname}/type"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    !matches!(
        arphrd,
        Some(
            ARPHRD_PPP
                | ARPHRD_RAWIP
                | ARPHRD_TUNNEL
                | ARPHRD_TUNNEL6
                | ARPHRD_SIT
                | ARPHRD_IPGRE
                | ARPHRD_NONE
        )
    )
}

/// The clsact path: make sure the qdisc exists and remove the filters an earlier agent
/// left on the interface. Unlike TCX links, netlink filters outlive the process that
/// attached them: an agent killed before it could detach leaves its classifier running
/// (copying every watched packet into a ring nobody reads), and a second one would
/// attach beside it. Ours are the `bpf` filters named after our programs on their own
/// hook; any other filter, of whatever kind or name, is left alone. Says in one line how
/// many it removed; returns that number.
fn prepare_clsact(ifname: &str, ifindex: u32) -> usize {
    // EEXIST when the qdisc is already there, which is what we want.
    let _ = tc::qdisc_add_clsact(ifname);
    let mut removed = 0;
    for (direction, name) in [
        (TcAttachType::Ingress, common::PROG_INGRESS),
        (TcAttachType::Egress, common::PROG_EGRESS),
    ] {
        let filters = match clsact_bpf_filters(ifindex, clsact_parent(direction)) {
            Ok(filters) => filters,
            Err(e) => {
                tracing::warn!(iface = ifname, error = %e, "cannot list clsact filters; leftovers of an earlier agent may stay attached");
                continue;
            }
        };
        for filter in filters.iter().filter(|f| f.name.as_deref() == Some(name)) {
            let detached = tc::SchedClassifierLink::attached(
                ifname,
                direction,
                filter.priority,
                tc::TcHandle::from(filter.handle),
                None,
            )
            .map_err(|e| e.to_string())
            .and_then(|link| Link::detach(link).map_err(|e| e.to_string()));
            match detached {
                Ok(()) => removed += 1,
                Err(error) => tracing::warn!(
                    iface = ifname,
                    name,
                    priority = filter.priority,
                    error,
                    "cannot remove a leftover shadowtap filter"
                ),
            }
        }
    }
    if removed > 0 {
        tracing::warn!(
            iface = ifname,
            removed,
            "removed {removed} leftover shadowtap filters from {ifname}: an earlier agent \
             was stopped (killed?) before it could detach them"
        );
    }
    removed
}

/// Parent of a clsact hook: TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS or _EGRESS).
fn clsact_parent(direction: TcAttachType) -> u32 {
    match direction {
        TcAttachType::Egress => 0xffff_fff3,
        _ => 0xffff_fff2,
    }
}

/// A `bpf` filter on a clsact hook, as the kernel lists it.
#[derive(Debug, PartialEq, Eq)]
struct BpfFilter {
    priority: u16,
    handle: u32,
    /// `TCA_BPF_NAME`: the program name for eBPF filters; classic BPF ones have none.
    name: Option<String>,
}

// rtnetlink numbers (linux/netlink.h, linux/rtnetlink.h, linux/pkt_cls.h).
const NLMSG_HDR: usize = 16;
const TCMSG_LEN: usize = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
/// Attribute type bits (the rest are the nested and byte-order flags).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The `bpf` filters under `parent` on interface `ifindex`, from an RTM_GETTFILTER dump.
/// aya removes filters by name but does not say how many, nor list them.
fn clsact_bpf_filters(ifindex: u32, parent: u32) -> io::Result<Vec<BpfFilter>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: socket(2) with constant arguments; the fd is owned at once below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // A kernel that never answers must not hang attaching.
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: a valid fd and a timeval of the size passed.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let mut request = Vec::with_capacity(NLMSG_HDR + TCMSG_LEN);
    request.extend_from_slice(&((NLMSG_HDR + TCMSG_LEN) as u32).to_ne_bytes());
    request.extend_from_slice(&RTM_GETTFILTER.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    request.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    request.extend_from_slice(&ifindex.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes()); // handle: all
    request.extend_from_slice(&parent.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes()); // priority and protocol: all
                                                    // SAFETY: sends `request`'s bytes on a valid fd.
    let sent = unsafe { libc::send(sock.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut filters = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receives into `buf`, at most its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 || parse_filter_dump(&buf[..n], &mut filters)? {
            return Ok(filters);
        }
    }
}

/// Adds the `bpf` filters of one read of a filter dump to `out`; true once the dump is
/// complete.
fn parse_filter_dump(mut buf: &[u8], out: &mut Vec<BpfFilter>) -> io::Result<bool> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message");
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDR || len > buf.len() {
            return Err(bad());
        }
        let body = &buf[NLMSG_HDR..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = body.get(..4).ok_or_else(bad)?;
                let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                return if code == 0 {
                    Ok(true)
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
            RTM_NEWTFILTER => out.extend(parse_bpf_filter(body)),
            _ => {}
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    Ok(false)
}

/// One RTM_NEWTFILTER body (tcmsg and attributes), if it is a `bpf` filter. The dump
/// also lists each priority's chain head (handle 0, no options), which is not a filter.
fn parse_bpf_filter(body: &[u8]) -> Option<BpfFilter> {
    let word = |at: usize| {
        body.get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let handle = word(8)?;
    let priority = (word(16)? >> 16) as u16;
    let mut is_bpf = false;
    let mut name = None;
    for (kind, value) in attributes(body.get(TCMSG_LEN..)?) {
        match kind {
            TCA_KIND => is_bpf = value.split(|&b| b == 0).next() == Some(b"bpf"),
            TCA_OPTIONS => {
                for (kind, value) in attributes(value) {
                    if kind == TCA_BPF_NAME {
                        let text = value.split(|&b| b == 0).next().unwrap_or_default();
                        name = Some(String::from_utf8_lossy(text).into_owned());
                    }
                }
            }
            _ => {}
        }
    }
    (is_bpf && handle != 0).then_some(BpfFilter {
        priority,
        handle,
        name,
    })
}

/// The netlink attributes in `buf` as (type, value); stops at the first malformed one.
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*buf.first()?, *buf.get(1)?]));
        let kind = u16::from_ne_bytes([*buf.get(2)?, *buf.get(3)?]) & NLA_TYPE_MASK;
        let value = buf.get(4..len)?;
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// Nanoseconds to add to CLOCK_MONOTONIC (what `bpf_ktime_get_ns` reads) to get Unix
/// time, measured once; the two clocks drift apart only if the wall clock is stepped.
fn monotonic_to_realtime_offset() -> i64 {
    fn now(clock: libc::clockid_t) -> i128 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid timespec; both clocks exist on every Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    }
    let mono_before = now(libc::CLOCK_MONOTONIC);
    let real = now(libc::CLOCK_REALTIME);
    let mono_after = now(libc::CLOCK_MONOTONIC);
    let offset = real - (mono_before + mono_after) / 2;
    i64::try_from(offset).unwrap_or(0)
}

/// A packet whose first pieces have arrived.
#[derive(Debug)]
struct Partial {
    header: PieceHeader,
    data: Vec<u8>,
}

/// Rebuilds packets from ring buffer records. Pure: no I/O, no clock (the monotonic to
/// Unix offset is given).
#[derive(Debug)]
pub struct PieceAssembler {
    clock_offset: i64,
    /// Keyed by (cpu, seq), which names one packet.
    partial: HashMap<(u32, u32), Partial>,
    pub pieces_lost: u64,
    pub incomplete_packets: u64,
}

impl PieceAssembler {
    pub fn new(clock_offset: i64) -> Self {
        Self {
            clock_offset,
            partial: HashMap::new(),
            pieces_lost: 0,
            incomplete_packets: 0,
        }
    }

    /// Takes one ring buffer record; returns the packet it completes, if any.
    pub fn push(&mut self, record: &[u8]) -> Option<OwnedFrame> {
        let (header, data) = match self.place(record) {
            Placed::Nothing => return None,
            Placed::Whole(header, piece) => (header, piece.to_vec()),
            Placed::Joined(header, data) => (header, data),
        };
        let (ts_nanos, link) = self.stamp(&header);
        Some(OwnedFrame {
            ts_nanos,
            ifindex: header.ifindex,
            egress: header.flags & common::FLAG_EGRESS != 0,
            link,
            data,
            orig_len: header.pkt_len,
        })
    }

    /// Like `push`, but hands the packet it completes to `each` as a borrowed frame
    /// (from `record` itself when the packet came in one piece); true when it did.
    pub fn push_with(&mut self, record: &[u8], each: impl FnOnce(&Frame<'_>)) -> bool {
        let (header, joined, piece) = match self.place(record) {
            Placed::Nothing => return false,
            Placed::Whole(header, piece) => (header, None, piece),
            Placed::Joined(header, data) => (header, Some(data), &[][..]),
        };
        let (ts_nanos, link) = self.stamp(&header);
        each(&Frame {
            ts_nanos,
            link,
            data: joined.as_deref().unwrap_or(piece),
            orig_len: header.pkt_len,
        });
        true
    }

    /// Files one record: a packet that came whole, a packet its last piece completed, or
    /// nothing yet (a piece kept, or a record counted as lost).
    fn place<'r>(&mut self, record: &'r [u8]) -> Placed<'r> {
        let Some(header) = PieceHeader::parse(record) else {
            self.pieces_lost += 1;
            return Placed::Nothing;
        };
        let Some(piece) = record.get(common::PIECE_HEADER_LEN..) else {
            return Placed::Nothing;
        };
        let end = u64::from(header.offset) + u64::from(header.piece_len);
        if piece.len() != header.piece_len as usize
            || end > u64::from(header.cap_len)
            || header.cap_len > header.pkt_len
        {
            self.pieces_lost += 1;
            return Placed::Nothing;
        }
        let key = (header.cpu, header.seq);
        if header.offset == 0 {
            // A CPU finishes one packet before it starts the next, so an unfinished one
            // from the same CPU lost its tail in the ring.
            if !self.partial.is_empty() {
                let before = self.partial.len();
                self.partial.retain(|&(cpu, _), _| cpu != header.cpu);
                self.incomplete_packets += (before - self.partial.len()) as u64;
            }
            if header.piece_len == header.cap_len {
                return Placed::Whole(header, piece);
            }
            if self.partial.len() >= MAX_PARTIAL_PACKETS {
                self.incomplete_packets += self.partial.len() as u64;
                self.partial.clear();
            }
            let mut data = Vec::with_capacity(header.cap_len as usize);
            data.extend_from_slice(piece);
            self.partial.insert(key, Partial { header, data });
            return Placed::Nothing;
        }
        let Some(partial) = self.partial.get_mut(&key) else {
            self.pieces_lost += 1;
            return Placed::Nothing;
        };
        if partial.data.len() != header.offset as usize || partial.header.cap_len != header.cap_len
        {
            self.partial.remove(&key);
            self.pieces_lost += 1;
            self.incomplete_packets += 1;
            return Placed::Nothing;
        }
        partial.data.extend_from_slice(piece);
        if partial.data.len() < header.cap_len as usize {
            return Placed::Nothing;
        }
        match self.partial.remove(&key) {
            Some(done) => Placed::Joined(done.header, done.data),
            None => Placed::Nothing,
        }
    }

    /// Wall-clock time and link type of a packet.
    fn stamp(&self, header: &PieceHeader) -> (u64, LinkType) {
        let ts = i128::from(header.ktime_ns) + i128::from(self.clock_offset);
        let link = if header.flags & common::FLAG_HAS_L2 != 0 {
            LinkType::Ethernet
        } else {
            LinkType::Raw
        };
        (u64::try_from(ts).unwrap_or(0), link)
    }
}

/// What one record did (`PieceAssembler::place`).
enum Placed<'r> {
    Nothing,
    /// A packet in one piece: the record's own bytes.
    Whole(PieceHeader, &'r [u8]),
    /// A packet whose last piece this was.
    Joined(PieceHeader, Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(h: PieceHeader, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&h.ktime_ns.to_ne_bytes());
        for v in [
            h.ifindex,
            h.flags,
            h.pkt_len,
            h.cap_len,
            h.offset,
            h.piece_len,
            h.cpu,
            h.seq,
        ] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(bytes);
        out
    }

    /// Splits `packet` into records of at most `piece` bytes, as the classifier does.
    fn pieces(packet: &[u8], piece: usize, cpu: u32, seq: u32, flags: u32) -> Vec<Vec<u8>> {
        packet
            .chunks(piece)
            .enumerate()
            .map(|(i, chunk)| {
                let h = PieceHeader {
                    ktime_ns: 1_000,
                    ifindex: 3,
                    flags,
                    pkt_len: packet.len() as u32,
                    cap_len: packet.len() as u32,
                    offset: (i * piece) as u32,
                    piece_len: chunk.len() as u32,
                    cpu,
                    seq,
                };
                record(h, chunk)
            })
            .collect()
    }

    #[test]
    fn single_piece_packet_is_a_frame_with_wall_clock_time() {
        let mut asm = PieceAssembler::new(5_000);
        let packet: Vec<u8> = (0..100u8).collect();
        let recs = pieces(
            &packet,
            4096,
            0,
            1,
            common::FLAG_HAS_L2 | common::FLAG_EGRESS,
        );
        let frame = asm.push(&recs[0]).unwrap();
        assert_eq!(frame.data, packet);
        assert_eq!(frame.ts_nanos, 6_000);
        assert_eq!(frame.ifindex, 3);
        assert!(frame.egress);
        assert_eq!(frame.link, LinkType::Ethernet);
        assert_eq!(frame.orig_len, 100);
        assert_eq!(frame.as_frame().data, &packet[..]);
    }

    #[test]
    fn interleaved_pieces_from_two_cpus_rebuild_both_packets() {
        let mut asm = PieceAssembler::new(0);
        let a: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..7_000u32).map(|i| (i * 7) as u8).collect();
        let ra = pieces(&a, 4096, 0, 9, 0);
        let rb = pieces(&b, 4096, 1, 9, 0);
        let mut out = Vec::new();
        for (x, y) in ra.iter().zip(rb.iter()) {
            out.extend(asm.push(x));
            out.extend(asm.push(y));
        }
        for x in ra.iter().skip(rb.len()) {
            out.extend(asm.push(x));
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, b);
        assert_eq!(out[0].link, LinkType::Raw);
        assert_eq!(out[1].data, a);
        assert_eq!(asm.incomplete_packets + asm.pieces_lost, 0);
    }

    #[test]
    fn lost_tail_counts_incomplete_and_next_packet_still_arrives() {
        let mut asm = PieceAssembler::new(0);
        let a = vec![1u8; 9_000];
        let b = vec![2u8; 50];
        let ra = pieces(&a, 4096, 2, 1, 0);
        assert!(asm.push(&ra[0]).is_none());
        assert!(asm.push(&ra[1]).is_none());
        // ra[2] never came (ring full); the next packet from CPU 2 starts.
        let frame = asm.push(&pieces(&b, 4096, 2, 2, 0)[0]).unwrap();
        assert_eq!(frame.data, b);
        assert_eq!(asm.incomplete_packets, 1);
        // The late tail of packet 1 cannot be placed.
        assert!(asm.push(&ra[2]).is_none());
        assert_eq!(asm.pieces_lost, 1);
    }

    #[test]
    fn lost_head_or_middle_piece_is_counted_not_glued() {
        let mut asm = PieceAssembler::new(0);
        let a = vec![3u8; 9_000];
        let ra = pieces(&a, 4096, 0, 5, 0);
        assert!(asm.push(&ra[0]).is_none());
        assert!(asm.push(&ra[2]).is_none());
        assert_eq!(asm.pieces_lost, 1);
        assert_eq!(asm.incomplete_packets, 1);
        assert!(asm.push(&ra[1]).is_none());
        assert_eq!(asm.pieces_lost, 2);
    }

    #[test]
    fn malformed_records_are_counted() {
        let mut asm = PieceAssembler::new(0);
        assert!(asm.push(&[0u8; 10]).is_none());
        let mut rec = pieces(&[9u8; 30], 4096, 0, 0, 0).remove(0);
        rec.pop();
        assert!(asm.push(&rec).is_none());
        assert_eq!(asm.pieces_lost, 2);
    }

    #[test]
    fn truncated_packet_keeps_wire_length() {
        let mut asm = PieceAssembler::new(0);
        let h = PieceHeader {
            pkt_len: 300_000,
            cap_len: 4,
            piece_len: 4,
            flags: common::FLAG_TRUNCATED,
            ..PieceHeader::default()
        };
        let frame = asm.push(&record(h, &[1, 2, 3, 4])).unwrap();
        assert_eq!(frame.orig_len, 300_000);
        assert_eq!(frame.data, [1, 2, 3, 4]);
    }

    #[test]
    fn push_with_hands_out_the_frames_push_returns() {
        let a: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let b = vec![7u8; 60];
        let mut records = pieces(&a, 4096, 0, 1, common::FLAG_HAS_L2);
        records.extend(pieces(&b, 4096, 1, 1, 0));
        let mut owned = PieceAssembler::new(10);
        let want: Vec<_> = records
            .iter()
            .filter_map(|r| owned.push(r))
            .map(|f| (f.ts_nanos, f.link, f.data, f.orig_len))
            .collect();
        let mut borrowed = PieceAssembler::new(10);
        let mut got = Vec::new();
        for r in &records {
            borrowed.push_with(r, |f| {
                got.push((f.ts_nanos, f.link, f.data.to_vec(), f.orig_len))
            });
        }
        assert_eq!(want.len(), 2);
        assert_eq!(got, want);
        assert_eq!(got[0].2, a);
        assert_eq!(got[1].2, b);
    }

    #[test]
    fn port_bitmap_sets_one_bit_per_port() {
        let words = port_bitmap(&[0, 63, 64, 8000, 65535]);
        assert_eq!(words.len(), 1024);
        assert_eq!(words[0], 1 | 1 << 63);
        assert_eq!(words[1], 1);
        assert_eq!(words[8000 / 64], 1 << (8000 % 64));
        assert_eq!(words[1023], 1 << 63);
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 5);
    }

    #[test]
    fn ring_size_is_a_power_of_two_of_at_least_a_page() {
        assert_eq!(ring_size(0), 4096);
        assert_eq!(ring_size(5000), 8192);
        assert_eq!(ring_size(1 << 22), 1 << 22);
        assert_eq!(ring_size(usize::MAX), 1 << 30);
    }

    #[test]
    fn test_run_context_sets_mark_and_ifindex_only() {
        let ctx = test_run_context(7, 0xdead);
        assert_eq!(&ctx[8..12], &0xdeadu32.to_ne_bytes());
        assert_eq!(&ctx[40..44], &7u32.to_ne_bytes());
        assert_eq!(ctx.iter().filter(|b| **b != 0).count(), 3);
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    /// An RTM_NEWTFILTER message as the kernel sends it in a dump.
    fn filter_msg(kind: &str, priority: u16, handle: u32, name: Option<&str>) -> Vec<u8> {
        let mut body = vec![0u8, 0, 0, 0];
        body.extend_from_slice(&7u32.to_ne_bytes());
        body.extend_from_slice(&handle.to_ne_bytes());
        body.extend_from_slice(&0xffff_fff2u32.to_ne_bytes());
        body.extend_from_slice(&((u32::from(priority) << 16) | 0x0300).to_ne_bytes());
        body.extend(attr(TCA_KIND, format!("{kind}\0").as_bytes()));
        if handle != 0 {
            let mut options = attr(6, &5u32.to_ne_bytes());
            if let Some(name) = name {
                options.extend(attr(TCA_BPF_NAME, format!("{name}\0").as_bytes()));
            }
            body.extend(attr(TCA_OPTIONS | 0x8000, &options));
        }
        message(RTM_NEWTFILTER, &body)
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HDR + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(body);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    #[test]
    fn a_filter_dump_lists_bpf_filters_with_their_names_only() {
        let mut dump = Vec::new();
        dump.extend(filter_msg("bpf", 5, 0, None)); // the chain head of priority 5
        dump.extend(filter_msg("bpf", 5, 1, None)); // classic BPF: no name
        dump.extend(filter_msg("bpf", 49151, 1, Some("shadowtap_in")));
        dump.extend(filter_msg("bpf", 49150, 2, Some("shadowtap_in_x")));
        dump.extend(filter_msg("u32", 49152, 0x800_800, None));
        let mut out = Vec::new();
        assert!(!parse_filter_dump(&dump, &mut out).unwrap(), "not done yet");
        let named = |name: &str| Some(name.to_string());
        assert_eq!(
            out,
            vec![
                BpfFilter {
                    priority: 5,
                    handle: 1,
                    name: None
                },
                BpfFilter {
                    priority: 49151,
                    handle: 1,
                    name: named("shadowtap_in")
                },
                BpfFilter {
                    priority: 49150,
                    handle: 2,
                    name: named("shadowtap_in_x")
                },
            ]
        );
        assert!(parse_filter_dump(&message(NLMSG_DONE, &[0; 4]), &mut out).unwrap());
        let einval = message(NLMSG_ERROR, &(-libc::EINVAL).to_ne_bytes());
        let err = parse_filter_dump(&einval, &mut out).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        // A length past the read is an error, not a panic.
        let mut cut = filter_msg("bpf", 1, 1, None);
        cut.truncate(30);
        assert!(parse_filter_dump(&cut, &mut out).is_err());
    }

    #[test]
    fn the_attach_mode_comes_from_the_kernel_unless_set() {
        assert!(use_tcx_from(None, true).unwrap());
        assert!(!use_tcx_from(Some("auto"), false).unwrap());
        assert!(!use_tcx_from(Some("clsact"), true).unwrap());
        assert!(use_tcx_from(Some("tcx"), false).unwrap());
        let err = use_tcx_from(Some("netlink"), true).unwrap_err().to_string();
        assert!(
            err.contains("SHADOWTAP_EBPF_ATTACH") && err.contains("clsact"),
            "{err}"
        );
    }
}
