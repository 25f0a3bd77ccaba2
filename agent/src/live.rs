//! `shadowtap run`: live capture (eBPF TC classifier, or libpcap) feeding the same
//! pipeline as `replay`. Owns the engine choice, interface discovery while running,
//! leaving out the agent's own traffic, `--record`, and shutdown on SIGINT/SIGTERM. It
//! also starts the admin server and copies capture and flow figures into its registry.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shadowtap_common::{port_bit, PORT_WORDS};

use crate::admin::AdminListener;
use crate::capture::pcap_file::PcapngWriter;
use crate::capture::pcap_live::{
    iface_matches, ifindex_of, is_nflog, list_interfaces, FollowingCapture, PcapOptions, ANY_IFACE,
};
use crate::capture::Engine;
use crate::capture::{Frame, LinkType};
use crate::dedup::SegmentDedup;
use crate::logging::count;
use crate::metrics::{CaptureEngine, DropReason, Registry};
use crate::own_traffic::OwnConnections;
use crate::pipeline::{Pipeline, PipelineConfig, PipelineEvent};
use crate::replay::{Handoff, Outbox, TargetConfig};
use crate::replay_files::{
    check_targets_resolve, dispatch, drain, start_replayer, CredentialWatch, DryRun, ReplayReport,
};

/// How a live run is set up.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub engine: Engine,
    /// Interface names, globs (`veth*`) or `any`.
    pub ifaces: Vec<String>,
    pub ports: Vec<u16>,
    pub pipeline: PipelineConfig,
    pub targets: Vec<TargetConfig>,
    pub record: Option<PathBuf>,
    pub drain_timeout: Duration,
    pub ring_bytes: usize,
    /// SO_MARK of the agent's own sockets; the classifier skips packets carrying it.
    pub own_mark: u32,
    pub pcap: PcapOptions,
    /// Stop after this long (tests, bounded runs); None runs until a signal.
    pub duration: Option<Duration>,
    /// Where the admin server (/metrics, /healthz, /readyz) listens; None: no server.
    pub admin_addr: Option<SocketAddr>,
    /// Credential headers that reach an `http://` target unredacted; warned about once,
    /// when a captured request carrying one of them is first handed on to be copied.
    pub credentials_in_clear: Vec<&'static str>,
    /// `--dry-run`: print each copy as it would be sent, send nothing.
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("--engine ebpf: {0}")]
    Ebpf(String),
    #[error("--engine pcap: {0}")]
    Pcap(#[from] crate::capture::pcap_live::PcapLiveError),
    #[error("--record {path}: {source}")]
    Record {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "nflog:GROUP is read by libpcap only, and as the only --iface: use \
         --engine pcap --iface nflog:GROUP"
    )]
    Nflog,
    #[error("no interface matches {0:?} (see /sys/class/net)")]
    NoInterface(Vec<String>),
    #[error(transparent)]
    Setup(#[from] crate::replay_files::ReplayFilesError),
    #[error(transparent)]
    Replayer(#[from] crate::replay::ReplayerError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
}

/// Counters of what the segment gate left out.
#[derive(Debug, Default)]
struct GateCounts {
    own: AtomicU64,
    duplicates: AtomicU64,
}

/// The live pipeline's gate: our own connections out, second sightings out (only while
/// `dedup` is set: with one capture point a packet cannot be seen twice, and hashing
/// every payload was a tenth of the capture thread's time).
fn live_gate(
    own: Arc<OwnConnections>,
    counts: Arc<GateCounts>,
    dedup_on: Arc<AtomicBool>,
) -> crate::pipeline::SegmentGate {
    let mut dedup = SegmentDedup::new(1 << 16);
    let mut own_ports = OwnPorts::default();
    Box::new(move |seg| {
        if own_ports.may_involve(&own, seg) && own.involves(seg.flow.src, seg.flow.dst) {
            counts.own.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if dedup_on.load(Ordering::Relaxed) && dedup.is_duplicate(seg) {
            counts.duplicates.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    })
}

/// The gate's copy of the local ports of our own connections, so that a segment with
/// neither port among them (nearly all) is let through without the registry's lock and
/// two hash lookups. Refreshed when the registry changes and at least once a second of
/// capture time, as the registry forgets closed connections.
struct OwnPorts {
    generation: u64,
    refreshed_at: u64,
    bits: Vec<u64>,
}

impl Default for OwnPorts {
    fn default() -> Self {
        Self {
            // Never a registry generation: the first segment refreshes.
            generation: u64::MAX,
            refreshed_at: 0,
            bits: vec![0; PORT_WORDS as usize],
        }
    }
}

impl OwnPorts {
    const REFRESH_NANOS: u64 = 1_000_000_000;

    fn may_involve(&mut self, own: &OwnConnections, seg: &crate::decode::Segment<'_>) -> bool {
        let generation = own.generation();
        if generation != self.generation
            || seg.ts_nanos.abs_diff(self.refreshed_at) > Self::REFRESH_NANOS
        {
            // The generation is read before the snapshot: a change in between is seen
            // again on the next segment.
            self.generation = generation;
            self.refreshed_at = seg.ts_nanos;
            self.bits.fill(0);
            for addr in own.snapshot() {
                let (word, bit) = port_bit(addr.port());
                self.bits[word as usize] |= bit;
            }
        }
        let has = |port: u16| {
            let (word, bit) = port_bit(port);
            self.bits[word as usize] & bit != 0
        };
        has(seg.flow.src.port()) || has(seg.flow.dst.port())
    }
}

/// Whether a packet may reach the capture twice: seen on two interfaces (NIC and pod
/// veth), on `any`, or on loopback (on its way out and again on its way in).
fn duplicates_possible(ifaces: &[String]) -> bool {
    const ARPHRD_LOOPBACK: &str = "772";
    match ifaces {
        [one] => {
            one == ANY_IFACE
                || one.contains(['*', '?'])
                || std::fs::read_to_string(format!("/sys/class/net/{one}/type"))
                    .map_or(true, |t| t.trim() == ARPHRD_LOOPBACK)
        }
        _ => true,
    }
}

/// Frames from whichever engine runs. One value for the whole run, so its size does
/// not matter.
#[cfg_attr(
    feature = "ebpf",
    expect(clippy::large_enum_variant, reason = "one value per run")
)]
enum Source {
    #[cfg(feature = "ebpf")]
    Ebpf(crate::capture::ebpf::EbpfCapture),
    Pcap {
        capture: FollowingCapture,
        /// With several patterns, `any` is opened and frames are kept by interface
        /// index (SLL2 carries it); None keeps every frame.
        keep_ifindex: Option<HashMap<u32, bool>>,
    },
}

fn matching_interfaces(patterns: &[String]) -> Vec<String> {
    list_interfaces()
        .into_iter()
        .filter(|name| patterns.iter().any(|p| iface_matches(p, name)))
        .collect()
}

#[cfg(feature = "ebpf")]
fn open_ebpf(plan: &RunPlan) -> Result<Source, String> {
    use crate::capture::ebpf::EbpfCapture;
    let mut capture = EbpfCapture::load(&plan.ports, plan.own_mark, plan.ring_bytes)
        .map_err(|e| e.to_string())?;
    if plan.pipeline.responses.is_some() {
        capture
            .set_capture_answers(true)
            .map_err(|e| e.to_string())?;
    }
    let names = matching_interfaces(&plan.ifaces);
    for name in &names {
        capture
            .attach(name)
            .map_err(|e| format!("attach to {name}: {e}"))?;
    }
    tracing::info!(interfaces = ?capture.attached(), tcx = capture.uses_tcx(), "eBPF classifier attached");
    Ok(Source::Ebpf(capture))
}

#[cfg(not(feature = "ebpf"))]
fn open_ebpf(_: &RunPlan) -> Result<Source, String> {
    Err("this build has no eBPF engine (built without the `ebpf` feature)".into())
}

fn open_pcap(plan: &RunPlan) -> Result<Source, LiveError> {
    let single = match plan.ifaces.as_slice() {
        [one] if one == ANY_IFACE || !one.contains(['*', '?']) => Some(one.clone()),
        _ => None,
    };
    let (iface, keep_ifindex) = match single {
        Some(name) => (name, None),
        None => (ANY_IFACE.to_string(), Some(HashMap::new())),
    };
    let capture = FollowingCapture::open(&iface, &plan.ports, &plan.pcap)?;
    tracing::info!(iface = %iface, link = ?capture.link_type(), "libpcap capture open");
    Ok(Source::Pcap {
        capture,
        keep_ifindex,
    })
}

/// Writes captured frames to a pcapng, one interface block per link type.
struct Recorder {
    writer: PcapngWriter<BufWriter<File>>,
    ifaces: HashMap<LinkType, u32>,
    path: PathBuf,
}

impl Recorder {
    fn create(path: &PathBuf) -> Result<Self, LiveError> {
        let at = |source| LiveError::Record {
            path: path.clone(),
            source,
        };
        let file = File::create(path).map_err(at)?;
        Ok(Self {
            writer: PcapngWriter::new(BufWriter::new(file)).map_err(at)?,
            ifaces: HashMap::new(),
            path: path.clone(),
        })
    }

    fn write(&mut self, frame: &Frame<'_>) {
        let id = match self.ifaces.get(&frame.link) {
            Some(id) => *id,
            None => match self.writer.add_interface(frame.link, 262_144, None) {
                Ok(id) => {
                    self.ifaces.insert(frame.link, id);
                    id
                }
                Err(e) => {
                    crate::warn_limited!(path = %self.path.display(), error = %e, "recording failed");
                    return;
                }
            },
        };
        if let Err(e) = self
            .writer
            .write_frame(id, frame.ts_nanos, frame.data, frame.orig_len)
        {
            crate::warn_limited!(path = %self.path.display(), error = %e, "recording failed");
        }
    }

    fn finish(mut self) {
        if let Err(e) = self.writer.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "recording failed");
        }
    }
}

/// Interfaces are looked for again this often (pods come and go).
const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// How long one wait for a frame lasts before checking for a stop.
const POLL: Duration = Duration::from_millis(100);
/// Packets taken from the ring buffer per read: a tick's worth at high rates, few enough
/// that a stop or a rescan is not held up.
#[cfg(feature = "ebpf")]
const RING_BATCH: usize = 1024;

/// Runs until SIGINT/SIGTERM (or `plan.duration`), then drains and reports.
pub fn run(plan: &RunPlan) -> Result<ReplayReport, LiveError> {
    let own = Arc::new(OwnConnections::default());
    let mut targets = plan.targets.clone();
    for t in &mut targets {
        t.socket_mark = plan.own_mark;
        t.own = Some(Arc::clone(&own));
    }
    if !plan.dry_run {
        check_targets_resolve(&targets)?;
    }
    // A glob may match only interfaces created later (pods starting): the rescan picks
    // them up, so only plain names that match nothing are a mistake.
    let may_appear = plan
        .ifaces
        .iter()
        .any(|i| i == ANY_IFACE || i.contains(['*', '?']));
    // `nflog:GROUP` is libpcap's reader of a netfilter log group, not an interface:
    // only the pcap engine reads it, and alone (`any`, which several names open, has
    // no NFLOG packets).
    let nflog = plan.ifaces.iter().any(|i| is_nflog(i));
    if nflog && (plan.ifaces.len() > 1 || plan.engine == Engine::Ebpf) {
        return Err(LiveError::Nflog);
    }
    if matching_interfaces(&plan.ifaces).is_empty() && !may_appear && !nflog {
        return Err(LiveError::NoInterface(plan.ifaces.clone()));
    }
    let mut source = match plan.engine {
        Engine::Ebpf => open_ebpf(plan).map_err(LiveError::Ebpf)?,
        Engine::Pcap => open_pcap(plan)?,
        Engine::Auto if nflog => open_pcap(plan)?,
        Engine::Auto => match open_ebpf(plan) {
            Ok(source) => source,
            Err(why) => {
                tracing::warn!(reason = %why, "eBPF engine unavailable; falling back to libpcap");
                open_pcap(plan)?
            }
        },
    };
    let mut recorder = plan.record.as_ref().map(Recorder::create).transpose()?;
    // Bound before the drop: a port below 1024 needs NET_BIND_SERVICE, which goes there.
    let admin_listener = plan.admin_addr.map(AdminListener::bind).transpose()?;
    // Capabilities are per thread and inherited: they go before the replay and admin
    // threads start, so that no thread keeps the full set.
    drop_privileges(&source, &mut targets);
    let (accounting, replayer) = start_replayer(targets)?;
    let registry = Arc::new(Registry::new(Arc::clone(&accounting)));
    if let Some(engine) = replayer.diff() {
        registry.set_diff(Arc::clone(engine));
    }
    let _admin = admin_listener
        .map(|listener| listener.serve(Arc::clone(&registry)))
        .transpose()?;
    let mut published = Published::default();
    published.publish(&mut source, None, &registry, plan);
    let gate_counts = Arc::new(GateCounts::default());
    let dedup_on = Arc::new(AtomicBool::new(match &source {
        #[cfg(feature = "ebpf")]
        Source::Ebpf(capture) => duplicates_possible(&capture.attached()),
        Source::Pcap { .. } => duplicates_possible(&plan.ifaces),
    }));
    let mut pipeline = Pipeline::new(plan.pipeline.clone());
    pipeline.set_gate(live_gate(
        Arc::clone(&own),
        Arc::clone(&gate_counts),
        Arc::clone(&dedup_on),
    ));
    let credentials = CredentialWatch::new(plan.credentials_in_clear.clone());
    let dry = plan.dry_run.then(|| DryRun::new(&plan.targets));
    // Copies leave through here: printed (`--dry-run`) or handed to the replay thread.
    let send = |outbox: &mut Outbox| match &dry {
        Some(dry) => dry.print(&replayer, outbox, &accounting),
        None => replayer.send(outbox),
    };

    crate::signals::install();
    let started = Instant::now();
    let mut report = ReplayReport::new(Arc::clone(&accounting));
    let mut last_scan = Instant::now();
    // Copies kept during one read of the capture are handed to the replayer together
    // after it: the replay thread then wakes once per read, not once per copy (on the
    // agent's one CPU, each wakeup was a switch away from the capture thread and back).
    // Every request is decided on as soon as it is framed, so the framer builds the next
    // one in the buffers of those not kept.
    let mut outbox = Outbox::default();
    let hand_on = |ev: PipelineEvent, outbox: &mut Outbox, report: &mut ReplayReport| {
        if dispatch(
            ev,
            &accounting,
            &replayer,
            Handoff::Later(outbox),
            &credentials,
        ) {
            report.not_http_streams += 1;
        }
    };
    let diff_engine = replayer.diff().cloned();
    let mut feed = |frame: &Frame<'_>,
                    pipeline: &mut Pipeline,
                    outbox: &mut Outbox,
                    report: &mut ReplayReport| {
        if let Some(r) = recorder.as_mut() {
            r.write(frame);
        }
        if let Ok(events) = pipeline.push_frame(frame) {
            for ev in events {
                hand_on(ev, outbox, report);
            }
        }
        if let Some(diff) = &diff_engine {
            pipeline.drop_answers(&diff.take_unwanted());
        }
    };
    while !crate::signals::stop_requested() && plan.duration.is_none_or(|d| started.elapsed() < d) {
        let rescan = last_scan.elapsed() >= RESCAN_EVERY;
        if rescan {
            last_scan = Instant::now();
            published.publish(&mut source, Some(&pipeline), &registry, plan);
            // Frames carry wall-clock time; a quiet capture still moves the pipeline's
            // clock so idle connections end and lost packets' holes are given up.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            for ev in pipeline.tick(now) {
                hand_on(ev, &mut outbox, &mut report);
            }
        }
        match &mut source {
            #[cfg(feature = "ebpf")]
            Source::Ebpf(capture) => {
                if rescan {
                    follow_interfaces(capture, &plan.ifaces);
                    // Before any frame of a new interface is read.
                    dedup_on.store(duplicates_possible(&capture.attached()), Ordering::Relaxed);
                }
                let read = capture.next_frames(POLL, RING_BATCH, |frame| {
                    feed(frame, &mut pipeline, &mut outbox, &mut report)
                });
                if let Err(e) = read {
                    crate::warn_limited!(error = %e, "ring buffer read failed");
                }
            }
            Source::Pcap {
                capture,
                keep_ifindex,
            } => {
                // Own connections are not written into the kernel filter as they come and
                // go: libpcap swaps a filter by installing reject-all first, and segments
                // of watched connections arriving in that window were lost (a gap that
                // held back every later request of the connection). The gate drops them.
                if rescan {
                    capture.follow();
                    if let Some(map) = keep_ifindex.as_mut() {
                        map.clear();
                    }
                }
                match capture.next_frame() {
                    Ok(Some(frame)) => {
                        if keep_frame(&frame, keep_ifindex.as_mut(), &plan.ifaces) {
                            feed(&frame, &mut pipeline, &mut outbox, &mut report);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        crate::warn_limited!(error = %e, "capture read failed");
                        std::thread::sleep(POLL);
                    }
                }
            }
        }
        send(&mut outbox);
    }
    registry.begin_shutdown();
    tracing::info!("stopping: capture detached, draining copies in flight");
    published.publish(&mut source, Some(&pipeline), &registry, plan);
    capture_summary(&mut source, &gate_counts);
    drop(source);
    for ev in pipeline.flush() {
        hand_on(ev, &mut outbox, &mut report);
    }
    send(&mut outbox);
    if let Some(r) = recorder.take() {
        r.finish();
    }
    let diff = replayer.diff().cloned();
    drain(replayer, plan.drain_timeout);
    if let Some(engine) = &diff {
        engine.finish();
    }
    report.diff = diff;
    report.frames = pipeline.stats().frames;
    report.undecodable = pipeline.stats().decode_errors;
    report.ip = pipeline.decoder().stats().clone();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// What was last copied into the registry. libpcap's kernel counters are 32 bits wide
/// and wrap on long runs; the totals here do not.
#[derive(Default)]
struct Published {
    pcap_raw: [u64; 2],
    pcap_total: [u64; 2],
}

impl Published {
    /// Copies capture figures and pipeline gauges into the registry. Reading the engine's
    /// counters costs a system call, so this runs once a second, not per frame.
    fn publish(
        &mut self,
        source: &mut Source,
        pipeline: Option<&Pipeline>,
        registry: &Registry,
        plan: &RunPlan,
    ) {
        let capture = &registry.capture;
        match source {
            #[cfg(feature = "ebpf")]
            Source::Ebpf(ebpf) => {
                capture.set_engine(CaptureEngine::Ebpf);
                registry.set_interfaces_attached(ebpf.attached().len());
                if let Ok(s) = ebpf.stats() {
                    capture.set_totals(s.matched, s.bytes);
                    capture.set_drops(DropReason::RingFull, s.ring_drops);
                    capture.set_drops(DropReason::Truncated, s.truncated);
                    capture.set_drops(DropReason::PiecesLost, s.pieces_lost);
                    capture.set_drops(DropReason::IncompletePacket, s.incomplete_packets);
                }
            }
            Source::Pcap { capture: pcap, .. } => {
                capture.set_engine(CaptureEngine::Pcap);
                // libpcap is open on the named interface, or on `any` for the patterns.
                registry.set_interfaces_attached(if pcap.follows_a_name() {
                    usize::from(pcap.is_open())
                } else {
                    matching_interfaces(&plan.ifaces).len()
                });
                if let Ok(s) = pcap.stats() {
                    capture.set_totals(s.frames, s.bytes);
                    for (i, (reason, raw)) in [
                        (DropReason::Kernel, s.dropped),
                        (DropReason::IfDropped, s.if_dropped),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        let delta = raw.wrapping_sub(self.pcap_raw[i]) & u64::from(u32::MAX);
                        self.pcap_raw[i] = raw;
                        self.pcap_total[i] += delta;
                        capture.set_drops(reason, self.pcap_total[i]);
                    }
                }
            }
        }
        if let Some(p) = pipeline {
            registry.set_flows(p.flows().flows(), p.flows().buffered_bytes());
            registry.set_reassembly(p.flows().stats());
            let stats = p.stats();
            registry.set_h2(&stats.h2_connections, &stats.h2_streams);
            // What the decoder could not hand on, whichever engine captured it.
            let ip = p.decoder().stats();
            for (reason, total) in [
                (DropReason::IpFragmentTimeout, ip.fragments_timed_out),
                (DropReason::IpFragmentOverlap, ip.fragments_overlapping),
                (DropReason::IpFragmentDropped, ip.fragments_dropped),
                (DropReason::Ipv6ExtChainTooLong, ip.ext_chain_too_long),
            ] {
                capture.set_drops(reason, total);
            }
        }
    }
}

/// Keeps only the capabilities the rest of the run uses. Runs before the replay thread
/// starts, which inherits the reduced sets. eBPF keeps BPF, NET_ADMIN and PERFMON to
/// attach to interfaces that appear (or come back) while running, and NET_ADMIN also
/// sets SO_MARK on our sockets. libpcap on `any` has its one socket open and needs
/// nothing; on a named interface it keeps NET_RAW to open a new socket when the interface
/// is deleted and created again. Its copies go out unmarked (the mark is only for the
/// eBPF classifier).
fn drop_privileges(source: &Source, targets: &mut [crate::replay::TargetConfig]) {
    use crate::privilege::keep_only;
    let keep: &[u32] = match source {
        #[cfg(feature = "ebpf")]
        Source::Ebpf(_) => {
            use crate::privilege::{CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON};
            &[CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON]
        }
        Source::Pcap { capture, .. } => {
            for t in targets.iter_mut() {
                t.socket_mark = 0;
            }
            if capture.follows_a_name() {
                &[crate::privilege::CAP_NET_RAW]
            } else {
                &[]
            }
        }
    };
    match keep_only(keep) {
        Ok(left) => tracing::info!(
            capabilities = format!("{left:#x}"),
            "dropped capabilities no longer needed"
        ),
        Err(e) => tracing::warn!(error = %e, "could not drop capabilities"),
    }
}

/// Attaches to interfaces that appeared and lets go of those that vanished.
#[cfg(feature = "ebpf")]
fn follow_interfaces(capture: &mut crate::capture::ebpf::EbpfCapture, patterns: &[String]) {
    let want = matching_interfaces(patterns);
    let have = capture.attached();
    for name in want.iter().filter(|n| !have.contains(n)) {
        match capture.attach(name) {
            Ok(()) => tracing::info!(iface = %name, "attached to new interface"),
            Err(e) => tracing::debug!(iface = %name, error = %e, "could not attach"),
        }
    }
    for name in have.iter().filter(|n| !want.contains(n)) {
        // The interface is gone; its links went with it. Forget it.
        let _ = capture.detach(name);
        tracing::info!(iface = %name, "interface gone");
    }
}

/// With glob patterns on `any`: keep a frame when its interface (SLL2 ifindex) matches.
fn keep_frame(
    frame: &Frame<'_>,
    keep: Option<&mut HashMap<u32, bool>>,
    patterns: &[String],
) -> bool {
    let Some(keep) = keep else {
        return true;
    };
    if frame.link != LinkType::LinuxSll2 || frame.data.len() < 8 {
        return true;
    }
    let ifindex = u32::from_be_bytes([frame.data[4], frame.data[5], frame.data[6], frame.data[7]]);
    *keep.entry(ifindex).or_insert_with(|| {
        list_interfaces()
            .into_iter()
            .find(|n| ifindex_of(n) == Some(ifindex))
            .is_some_and(|name| patterns.iter().any(|p| iface_matches(p, &name)))
    })
}

fn capture_summary(source: &mut Source, gate: &GateCounts) {
    let own = gate.own.load(Ordering::Relaxed);
    let dups = gate.duplicates.load(Ordering::Relaxed);
    let (text, json) = match source {
        #[cfg(feature = "ebpf")]
        Source::Ebpf(capture) => match capture.stats() {
            Ok(s) => (
                format!(
                    "capture (ebpf): {} matched ({} and {} copied without a port check), {}, {} skipped in kernel, {} and {} left out",
                    count(s.matched, "packet", "packets"),
                    count(s.fragments, "IP fragment", "IP fragments"),
                    count(s.long_chains, "long IPv6 extension chain", "long IPv6 extension chains"),
                    count(s.ring_drops, "ring-buffer drop", "ring-buffer drops"),
                    count(s.own_mark_skipped, "own packet", "own packets"),
                    count(own, "own segment", "own segments"),
                    count(dups, "second sighting", "second sightings"),
                ),
                serde_json::json!({ "capture": {
                    "engine": "ebpf", "packets_matched": s.matched, "ip_fragments": s.fragments,
                    "long_ipv6_chains": s.long_chains, "ring_drops": s.ring_drops,
                    "own_packets_skipped": s.own_mark_skipped, "own_segments": own,
                    "second_sightings": dups,
                }}),
            ),
            Err(e) => (
                format!("capture (ebpf): stats unavailable: {e}"),
                serde_json::json!({ "capture": { "engine": "ebpf", "error": e.to_string() }}),
            ),
        },
        Source::Pcap { capture, .. } => match capture.stats() {
            Ok(s) => (
                format!(
                    "capture (pcap): {}, {}, {}, {} and {} left out, interface gone {}",
                    count(s.frames, "frame", "frames"),
                    count(s.dropped, "kernel drop", "kernel drops"),
                    count(s.if_dropped, "interface drop", "interface drops"),
                    count(own, "own segment", "own segments"),
                    count(dups, "second sighting", "second sightings"),
                    count(s.interface_gone, "time", "times"),
                ),
                serde_json::json!({ "capture": {
                    "engine": "pcap", "frames": s.frames, "kernel_drops": s.dropped,
                    "interface_drops": s.if_dropped, "own_segments": own,
                    "second_sightings": dups, "interface_gone": s.interface_gone,
                }}),
            ),
            Err(e) => (
                format!("capture (pcap): stats unavailable: {e}"),
                serde_json::json!({ "capture": { "engine": "pcap", "error": e.to_string() }}),
            ),
        },
    };
    if crate::logging::json() {
        eprintln!("{json}");
    } else {
        eprintln!("{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{FlowKey, Segment, TcpFlags};

    fn segment(src: &str, dst: &str, ts_nanos: u64) -> Segment<'static> {
        Segment {
            ts_nanos,
            flow: FlowKey {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
            },
            seq: 1,
            ack: 1,
            flags: TcpFlags(TcpFlags::ACK),
            payload: b"GET / HTTP/1.1\r\n\r\n",
            missing: 0,
        }
    }

    #[test]
    fn own_ports_follow_the_registry() {
        let own = OwnConnections::default();
        let mut ports = OwnPorts::default();
        let client = "10.0.0.1:40000";
        assert!(!ports.may_involve(&own, &segment(client, "10.0.0.2:8000", 0)));
        own.opened("127.0.0.1:50000".parse().unwrap());
        // A new connection is seen by the next segment, either way round.
        assert!(ports.may_involve(&own, &segment("127.0.0.1:50000", "127.0.0.1:9000", 1)));
        assert!(ports.may_involve(&own, &segment("127.0.0.1:9000", "127.0.0.1:50000", 2)));
        assert!(!ports.may_involve(&own, &segment(client, "10.0.0.2:8000", 3)));
        // Only a hint: the same port at another address is checked in the registry.
        assert!(ports.may_involve(&own, &segment("10.0.0.9:50000", "10.0.0.2:8000", 4)));
        assert!(!own.involves(
            "10.0.0.9:50000".parse().unwrap(),
            "10.0.0.2:8000".parse().unwrap()
        ));
    }

    #[test]
    fn duplicates_are_possible_on_several_interfaces_any_globs_and_loopback() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(duplicates_possible(&names(&["lo"])));
        assert!(duplicates_possible(&names(&[ANY_IFACE])));
        assert!(duplicates_possible(&names(&["veth*"])));
        assert!(duplicates_possible(&names(&["eth0", "eth1"])));
        assert!(duplicates_possible(&names(&[])));
        // An interface that cannot be looked up is not assumed safe.
        assert!(duplicates_possible(&names(&["no-such-if0"])));
        let ethernet = list_interfaces().into_iter().find(|n| {
            std::fs::read_to_string(format!("/sys/class/net/{n}/type"))
                .is_ok_and(|t| t.trim() == "1")
        });
        if let Some(one) = ethernet {
            assert!(!duplicates_possible(&names(&[one.as_str()])), "{one}");
        }
    }
}
