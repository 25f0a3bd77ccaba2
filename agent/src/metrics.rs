//! Every request ends in exactly one `Outcome`, per target. The counters live here, and
//! only here: the summary, `/metrics` and the tests read the same numbers. Every metric
//! `/metrics` shows is defined once in `METRICS` (name, type, help, labels) and rendered
//! by `Registry::render` from these counters. Writers touch only relaxed atomics: no lock
//! is taken per packet or per request.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::reassembly::ReassemblyStats;
use crate::request::{NotCopied, Protocol};

/// The fate of one request, per SPEC.md "Every request is accounted for".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Sent to the target and answered; the response status class 1..=5.
    Replayed(StatusClass),
    NotSampled,
    Filtered,
    RateLimited,
    QueueFull,
    /// Gap in the capture, connection ended mid-request, or timeout.
    Incomplete,
    TooLarge,
    Unparseable,
    /// Seen where the connection's framing state was lost or after the server stopped
    /// reading it: never copied (`DropReason::Untrusted`).
    Untrusted,
    /// Served by production, but never copied (CONNECT, `OPTIONS *`).
    NotCopied(NotCopied),
    /// HTTP/2: the header block named a table entry the agent never saw (joined the
    /// connection late) or the connection's header state was lost (gap): counted, never
    /// guessed.
    Undecodable,
    /// HTTP/2: the client reset the stream (RST_STREAM) before it ended: production did
    /// not get it whole, so it is not copied.
    Reset,
    /// Sent and answered as a gRPC call: the `grpc-status` of the answer (a 200 with
    /// `grpc-status` 14 is `unavailable`, not a success).
    Grpc(GrpcStatus),
    ReplayError(ReplayErrorKind),
    /// `--dry-run`: kept for the target and printed, not sent.
    DryRun,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl StatusClass {
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    /// Metric label value: `1xx` .. `5xx`.
    pub fn label(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The class of a status code; `None` outside 100..=599.
    pub fn of(status: u16) -> Option<Self> {
        match status {
            100..=199 => Some(Self::Informational),
            200..=299 => Some(Self::Success),
            300..=399 => Some(Self::Redirection),
            400..=499 => Some(Self::ClientError),
            500..=599 => Some(Self::ServerError),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReplayErrorKind {
    /// Could not connect (refused, unreachable, DNS).
    Connect,
    /// Connect or response deadline passed.
    Timeout,
    /// The connection was reset or closed before a whole response head arrived.
    Reset,
    /// TLS handshake or certificate failure.
    Tls,
    /// The target's response was not valid HTTP/1.x.
    Protocol,
}

impl Outcome {
    /// Every outcome, in the order summaries list them.
    pub const ALL: [Outcome; 42] = [
        Outcome::Replayed(StatusClass::Informational),
        Outcome::Replayed(StatusClass::Success),
        Outcome::Replayed(StatusClass::Redirection),
        Outcome::Replayed(StatusClass::ClientError),
        Outcome::Replayed(StatusClass::ServerError),
        Outcome::Grpc(GrpcStatus(0)),
        Outcome::Grpc(GrpcStatus(1)),
        Outcome::Grpc(GrpcStatus(2)),
        Outcome::Grpc(GrpcStatus(3)),
        Outcome::Grpc(GrpcStatus(4)),
        Outcome::Grpc(GrpcStatus(5)),
        Outcome::Grpc(GrpcStatus(6)),
        Outcome::Grpc(GrpcStatus(7)),
        Outcome::Grpc(GrpcStatus(8)),
        Outcome::Grpc(GrpcStatus(9)),
        Outcome::Grpc(GrpcStatus(10)),
        Outcome::Grpc(GrpcStatus(11)),
        Outcome::Grpc(GrpcStatus(12)),
        Outcome::Grpc(GrpcStatus(13)),
        Outcome::Grpc(GrpcStatus(14)),
        Outcome::Grpc(GrpcStatus(15)),
        Outcome::Grpc(GrpcStatus(16)),
        Outcome::Grpc(GrpcStatus::MISSING),
        Outcome::Grpc(GrpcStatus::OTHER),
        Outcome::NotSampled,
        Outcome::Filtered,
        Outcome::RateLimited,
        Outcome::QueueFull,
        Outcome::Incomplete,
        Outcome::TooLarge,
        Outcome::Unparseable,
        Outcome::Untrusted,
        Outcome::Undecodable,
        Outcome::Reset,
        Outcome::NotCopied(NotCopied::Connect),
        Outcome::NotCopied(NotCopied::OptionsAsterisk),
        Outcome::ReplayError(ReplayErrorKind::Connect),
        Outcome::ReplayError(ReplayErrorKind::Timeout),
        Outcome::ReplayError(ReplayErrorKind::Reset),
        Outcome::ReplayError(ReplayErrorKind::Tls),
        Outcome::ReplayError(ReplayErrorKind::Protocol),
        Outcome::DryRun,
    ];

    fn index(self) -> usize {
        // ALL is short; a linear search keeps index() and ALL from drifting apart.
        Self::ALL
            .iter()
            .position(|o| *o == self)
            .expect("Outcome::ALL lists every outcome")
    }

    /// Metric label value: `outcome` plus, where it applies, a `detail`.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            Outcome::Replayed(c) => ("replayed", c.label()),
            Outcome::NotSampled => ("not_sampled", ""),
            Outcome::Filtered => ("filtered", ""),
            Outcome::RateLimited => ("rate_limited", ""),
            Outcome::QueueFull => ("queue_full", ""),
            Outcome::Incomplete => ("incomplete", ""),
            Outcome::TooLarge => ("too_large", ""),
            Outcome::Unparseable => ("unparseable", ""),
            Outcome::Untrusted => ("untrusted", ""),
            Outcome::Undecodable => ("undecodable", ""),
            Outcome::Reset => ("reset", ""),
            Outcome::Grpc(code) => ("grpc", code.label()),
            Outcome::NotCopied(why) => ("not_copied", why.label()),
            Outcome::DryRun => ("dry_run", ""),
            Outcome::ReplayError(k) => (
                "replay_error",
                match k {
                    ReplayErrorKind::Connect => "connect",
                    ReplayErrorKind::Timeout => "timeout",
                    ReplayErrorKind::Reset => "reset",
                    ReplayErrorKind::Tls => "tls",
                    ReplayErrorKind::Protocol => "protocol",
                },
            ),
        }
    }
}

/// The `grpc-status` of a gRPC answer: 0..=16 are the codes gRPC defines, then
/// `MISSING` (no `grpc-status` at all: the call failed, whatever the HTTP status said)
/// and `OTHER` (a value outside 0..=16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrpcStatus(u8);

impl GrpcStatus {
    pub const OK: GrpcStatus = GrpcStatus(0);
    pub const MISSING: GrpcStatus = GrpcStatus(17);
    pub const OTHER: GrpcStatus = GrpcStatus(18);

    const NAMES: [&'static str; 19] = [
        "ok",
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
        "missing",
        "other",
    ];

    /// From a `grpc-status` value: `None` gives `MISSING`, anything but a code 0..=16
    /// gives `OTHER`.
    pub fn parse(value: Option<&[u8]>) -> Self {
        let Some(value) = value else {
            return Self::MISSING;
        };
        match std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
        {
            Some(code) if code <= 16 => GrpcStatus(code),
            _ => Self::OTHER,
        }
    }

    /// The code as a number, for 0..=16.
    pub fn code(self) -> Option<u8> {
        (self.0 <= 16).then_some(self.0)
    }

    /// Metric `detail` label: the code's name in snake case (`unavailable`).
    pub fn label(self) -> &'static str {
        Self::NAMES[usize::from(self.0.min(18))]
    }
}

/// Upper bounds of the replay latency buckets, in nanoseconds: 0.25 ms to 10 s, the span
/// between a target on the same node and `--request-timeout`'s default.
pub const LATENCY_BOUNDS_NANOS: [u64; 15] = [
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram with fixed buckets. Each bucket counts only its own range; the
/// cumulative counts and the total are derived when read, so `+Inf` always equals `_count`.
#[derive(Debug, Default)]
pub struct Histogram {
    /// One per bound, then one for everything above the last.
    buckets: [AtomicU64; LATENCY_BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations at or below each bound of `LATENCY_BOUNDS_NANOS`.
    pub cumulative: [u64; LATENCY_BOUNDS_NANOS.len()],
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, nanos: u64) {
        let i = LATENCY_BOUNDS_NANOS
            .iter()
            .position(|bound| nanos <= *bound)
            .unwrap_or(LATENCY_BOUNDS_NANOS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; LATENCY_BOUNDS_NANOS.len()];
        let mut running = 0u64;
        for (i, slot) in cumulative.iter_mut().enumerate() {
            running += self.buckets[i].load(Ordering::Relaxed);
            *slot = running;
        }
        let count = running + self.buckets[LATENCY_BOUNDS_NANOS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Counters of one target: outcomes, responses, latency and queue depth. Lock-free;
/// shared between the parse thread and the replay tasks.
#[derive(Debug)]
pub struct TargetCounters {
    /// Per protocol (`Protocol::index`), per outcome (`Outcome::index`).
    counts: [[AtomicU64; Outcome::ALL.len()]; Protocol::ALL.len()],
    responses: [AtomicU64; StatusClass::ALL.len()],
    latency: Histogram,
    queued: AtomicU64,
    /// Times the replay window was cut because the target fell behind (timeouts, resets,
    /// refused connects, or answers far slower than its usual).
    backoffs: AtomicU64,
}

impl Default for TargetCounters {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            responses: Default::default(),
            latency: Histogram::default(),
            queued: AtomicU64::new(0),
            backoffs: AtomicU64::new(0),
        }
    }
}

impl TargetCounters {
    pub fn record(&self, protocol: Protocol, outcome: Outcome) {
        self.counts[protocol.index()][outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of both protocols with this outcome.
    pub fn get(&self, outcome: Outcome) -> u64 {
        Protocol::ALL.iter().map(|p| self.get_in(*p, outcome)).sum()
    }

    pub fn get_in(&self, protocol: Protocol, outcome: Outcome) -> u64 {
        self.counts[protocol.index()][outcome.index()].load(Ordering::Relaxed)
    }

    /// Sum over every outcome of both protocols: equals the requests seen once all are
    /// settled.
    pub fn total(&self) -> u64 {
        Protocol::ALL.iter().map(|p| self.total_in(*p)).sum()
    }

    /// Sum over every outcome of one protocol.
    pub fn total_in(&self, protocol: Protocol) -> u64 {
        self.counts[protocol.index()]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// A response head arrived `head_after_nanos` after the copy's first byte was sent.
    /// Counted whether or not the copy is still waited for (see `Replayer::shutdown`).
    pub fn record_response(&self, class: StatusClass, head_after_nanos: u64) {
        self.responses[class.index()].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(head_after_nanos);
    }

    pub fn responses(&self, class: StatusClass) -> u64 {
        self.responses[class.index()].load(Ordering::Relaxed)
    }

    pub fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// A copy entered the target's queue. Call before the hand-off, so that the consumer's
    /// `dequeued` never comes first.
    pub fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy left the queue (taken for sending, or the hand-off failed).
    pub fn dequeued(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| q.checked_sub(1));
    }

    /// Copies waiting in the target's queue.
    pub fn queue_depth(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// The replayer cut the target's window of copies in flight: it fell behind.
    pub fn record_backoff(&self) {
        self.backoffs.fetch_add(1, Ordering::Relaxed);
    }

    /// Times the window of copies in flight was cut (see `record_backoff`).
    pub fn backoffs(&self) -> u64 {
        self.backoffs.load(Ordering::Relaxed)
    }

    /// The target answered some copies and timed out on others while shadowtap had to
    /// cut its window: the timeouts are most likely the target being overloaded (too few
    /// workers, a full accept queue), not a target that is down or a network problem.
    /// For the summary: `--max-in-flight` lower or `--max-rps` helps, not retries.
    pub fn timeouts_look_like_overload(&self) -> bool {
        let answered: u64 = StatusClass::ALL.iter().map(|&c| self.responses(c)).sum();
        self.get(Outcome::ReplayError(ReplayErrorKind::Timeout)) > 0
            && answered > 0
            && self.backoffs() > 0
    }
}

/// Request accounting for every target. Requests that end before any target is chosen
/// (incomplete, too large, unparseable) are recorded for every target, so that for each
/// target the outcomes add up to `requests_seen`.
#[derive(Debug)]
pub struct Accounting {
    names: Vec<String>,
    targets: Vec<TargetCounters>,
    seen: [AtomicU64; Protocol::ALL.len()],
}

impl Accounting {
    /// `targets` are the target names (URLs) in configuration order; with no target
    /// (`inspect`) one implicit target named `none` carries the counts.
    pub fn new(targets: Vec<String>) -> Self {
        let names = if targets.is_empty() {
            vec!["none".to_string()]
        } else {
            targets
        };
        let targets = names.iter().map(|_| TargetCounters::default()).collect();
        Self {
            names,
            targets,
            seen: Default::default(),
        }
    }

    /// A request was seen (complete or not). Call once per request, before its outcome.
    pub fn seen(&self, protocol: Protocol) {
        self.seen[protocol.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests seen, both protocols.
    pub fn requests_seen(&self) -> u64 {
        self.seen.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    pub fn requests_seen_in(&self, protocol: Protocol) -> u64 {
        self.seen[protocol.index()].load(Ordering::Relaxed)
    }

    /// An outcome reached before targets are chosen: counted for every target.
    pub fn record_all(&self, protocol: Protocol, outcome: Outcome) {
        for t in &self.targets {
            t.record(protocol, outcome);
        }
    }

    pub fn target(&self, index: usize) -> &TargetCounters {
        &self.targets[index]
    }

    pub fn target_names(&self) -> &[String] {
        &self.names
    }

    /// (name, counters) for each target.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TargetCounters)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.targets.iter())
    }
}

/// Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric family as `/metrics` shows it. README's metrics table lists each one (a
/// test holds them together).
#[derive(Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

pub const REQUESTS_SEEN: MetricDef = MetricDef {
    name: "shadowtap_requests_seen_total",
    kind: MetricKind::Counter,
    help: "HTTP requests seen by capture, complete or not.",
    labels: &[],
};
pub const REQUESTS: MetricDef = MetricDef {
    name: "shadowtap_requests_total",
    kind: MetricKind::Counter,
    help: "Requests by outcome per target; for each target they add up to shadowtap_requests_seen_total.",
    labels: &["target", "protocol", "outcome", "detail"],
};
pub const TARGET_RESPONSES: MetricDef = MetricDef {
    name: "shadowtap_target_responses_total",
    kind: MetricKind::Counter,
    help: "Response heads received from the target, by status class.",
    labels: &["target", "class"],
};
pub const REPLAY_DURATION: MetricDef = MetricDef {
    name: "shadowtap_replay_duration_seconds",
    kind: MetricKind::Histogram,
    help: "Time from sending a copy to the target's response head.",
    labels: &["target"],
};
pub const QUEUE_DEPTH: MetricDef = MetricDef {
    name: "shadowtap_queue_depth",
    kind: MetricKind::Gauge,
    help: "Copies waiting in the target's queue (bounded by --queue-len).",
    labels: &["target"],
};
pub const CAPTURE_PACKETS: MetricDef = MetricDef {
    name: "shadowtap_capture_packets_total",
    kind: MetricKind::Counter,
    help: "Packets captured on watched ports (eBPF: matched in the kernel; pcap: delivered).",
    labels: &["engine"],
};
pub const CAPTURE_BYTES: MetricDef = MetricDef {
    name: "shadowtap_capture_bytes_total",
    kind: MetricKind::Counter,
    help: "Packet bytes captured (eBPF: written to the ring; pcap: delivered after snaplen).",
    labels: &["engine"],
};
pub const CAPTURE_DROPS: MetricDef = MetricDef {
    name: "shadowtap_capture_drops_total",
    kind: MetricKind::Counter,
    help: "Packets (or eBPF pieces) lost or cut short before reassembly, by reason.",
    labels: &["engine", "reason"],
};
pub const FLOWS_ACTIVE: MetricDef = MetricDef {
    name: "shadowtap_flows_active",
    kind: MetricKind::Gauge,
    help: "TCP connections tracked by reassembly (bounded by --max-flows).",
    labels: &[],
};
pub const BUFFERED_BYTES: MetricDef = MetricDef {
    name: "shadowtap_buffered_bytes",
    kind: MetricKind::Gauge,
    help: "Out-of-order payload bytes held by reassembly (bounded by --max-buffer).",
    labels: &[],
};
pub const STREAMS_DISTRUSTED: MetricDef = MetricDef {
    name: "shadowtap_streams_distrusted_total",
    kind: MetricKind::Counter,
    help: "Client streams whose requests are only counted (outcome untrusted) from some point \
           on, by why: start not seen (agent started, restarted, flow evicted or timed out) \
           or retransmissions with other bytes.",
    labels: &["reason"],
};
pub const H2_CONNECTIONS: MetricDef = MetricDef {
    name: "shadowtap_h2_connections_total",
    kind: MetricKind::Counter,
    help: "HTTP/2 client connections found, by how their start was seen: the preface, an \
           Upgrade: h2c, or joined late (frame-chain sync; only streams whose header fields \
           all decode are copied, the rest count as undecodable).",
    labels: &["start"],
};
pub const H2_STREAMS: MetricDef = MetricDef {
    name: "shadowtap_h2_streams_total",
    kind: MetricKind::Counter,
    help: "HTTP/2 streams opened on those connections, by the same start: the joined_late \
           series is the share a maximum connection age on servers would win back.",
    labels: &["start"],
};
pub const FLOWS_EVICTED: MetricDef = MetricDef {
    name: "shadowtap_flows_evicted_total",
    kind: MetricKind::Counter,
    help: "Connections evicted at --max-flows, by whether they were mid-message (only when \
           every candidate was).",
    labels: &["state"],
};
pub const INTERFACES_ATTACHED: MetricDef = MetricDef {
    name: "shadowtap_interfaces_attached",
    kind: MetricKind::Gauge,
    help: "Interfaces capture is attached to.",
    labels: &[],
};
pub const READY: MetricDef = MetricDef {
    name: "shadowtap_ready",
    kind: MetricKind::Gauge,
    help:
        "1 while capture is attached to at least one interface and not shutting down (as /readyz).",
    labels: &[],
};
pub const BUILD_INFO: MetricDef = MetricDef {
    name: "shadowtap_build_info",
    kind: MetricKind::Gauge,
    help: "Always 1; the version is the label.",
    labels: &["version"],
};

pub const DIFF_TOTAL: MetricDef = MetricDef {
    name: "shadowtap_diff_total",
    kind: MetricKind::Counter,
    help: "Production and shadow answers compared (--diff), by route (at most 200, the rest \
           `other`) and outcome: match, status, headers, body, shadow_error, shadow_timeout, \
           prod_missing.",
    labels: &["route", "outcome"],
};
pub const DIFF_LATENCY: MetricDef = MetricDef {
    name: "shadowtap_diff_latency_seconds",
    kind: MetricKind::Histogram,
    help: "Latency of each side of the compared pairs, by route: production from the \
           request's last byte to the answer's first on the wire, shadow from the copy sent \
           to the answer's head.",
    labels: &["route", "side"],
};
pub const DIFF_FIELDS: MetricDef = MetricDef {
    name: "shadowtap_diff_fields_total",
    kind: MetricKind::Counter,
    help: "Pairs in which a field differed, for the 10 fields that differ most per route \
           (`status`, `header:NAME`, a JSON path such as `$.user.name`, `$` for a body that \
           is not JSON; `noisy:` before fields judged noise).",
    labels: &["route", "field"],
};

/// Every metric, in the order `/metrics` shows them.
pub const METRICS: [&MetricDef; 20] = [
    &REQUESTS_SEEN,
    &REQUESTS,
    &TARGET_RESPONSES,
    &REPLAY_DURATION,
    &QUEUE_DEPTH,
    &CAPTURE_PACKETS,
    &CAPTURE_BYTES,
    &CAPTURE_DROPS,
    &FLOWS_ACTIVE,
    &BUFFERED_BYTES,
    &STREAMS_DISTRUSTED,
    &H2_CONNECTIONS,
    &H2_STREAMS,
    &FLOWS_EVICTED,
    &INTERFACES_ATTACHED,
    &READY,
    &BUILD_INFO,
    &DIFF_TOTAL,
    &DIFF_LATENCY,
    &DIFF_FIELDS,
];

/// The capture engine a run uses (`engine` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureEngine {
    Ebpf,
    Pcap,
}

impl CaptureEngine {
    pub fn label(self) -> &'static str {
        match self {
            CaptureEngine::Ebpf => "ebpf",
            CaptureEngine::Pcap => "pcap",
        }
    }

    /// The drop reasons this engine reports.
    pub fn drop_reasons(self) -> &'static [DropReason] {
        match self {
            CaptureEngine::Ebpf => &[
                DropReason::RingFull,
                DropReason::Truncated,
                DropReason::PiecesLost,
                DropReason::IncompletePacket,
                DropReason::IpFragmentTimeout,
                DropReason::IpFragmentOverlap,
                DropReason::IpFragmentDropped,
                DropReason::Ipv6ExtChainTooLong,
            ],
            CaptureEngine::Pcap => &[
                DropReason::Kernel,
                DropReason::IfDropped,
                DropReason::IpFragmentTimeout,
                DropReason::IpFragmentOverlap,
                DropReason::IpFragmentDropped,
                DropReason::Ipv6ExtChainTooLong,
            ],
        }
    }
}

/// Why capture lost a packet or part of one (`reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// eBPF: the ring buffer had no room for a piece.
    RingFull,
    /// eBPF: the packet was longer than the classifier copies; only its head arrived.
    Truncated,
    /// eBPF: a piece whose packet start was lost, or malformed.
    PiecesLost,
    /// eBPF: a packet whose pieces did not all arrive.
    IncompletePacket,
    /// libpcap: the kernel ring was full.
    Kernel,
    /// libpcap: the interface or its driver dropped it.
    IfDropped,
    /// Both engines, in the decoder: IP fragments whose datagram was not whole within
    /// the fragment timeout (30 s).
    IpFragmentTimeout,
    /// Both: IP fragments of a datagram in which two fragments overlapped with other
    /// bytes or in part; the whole datagram is dropped, as Linux does.
    IpFragmentOverlap,
    /// Both: IP fragments dropped for the reassembly caps, or that can never make a
    /// whole datagram (cut by the snaplen, past 64 KiB, misaligned).
    IpFragmentDropped,
    /// Both: IPv6 packets whose extension header chain is longer than the decoder walks.
    Ipv6ExtChainTooLong,
}

impl DropReason {
    const ALL: [DropReason; 10] = [
        DropReason::RingFull,
        DropReason::Truncated,
        DropReason::PiecesLost,
        DropReason::IncompletePacket,
        DropReason::Kernel,
        DropReason::IfDropped,
        DropReason::IpFragmentTimeout,
        DropReason::IpFragmentOverlap,
        DropReason::IpFragmentDropped,
        DropReason::Ipv6ExtChainTooLong,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::RingFull => "ring_full",
            DropReason::Truncated => "truncated",
            DropReason::PiecesLost => "pieces_lost",
            DropReason::IncompletePacket => "incomplete_packet",
            DropReason::Kernel => "kernel",
            DropReason::IfDropped => "if_dropped",
            DropReason::IpFragmentTimeout => "ip_fragment_timeout",
            DropReason::IpFragmentOverlap => "ip_fragment_overlap",
            DropReason::IpFragmentDropped => "ip_fragment_dropped",
            DropReason::Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Capture totals, copied from the engine's own counters by the pipeline thread now and
/// then. Totals only move forward: a smaller reading is ignored.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    /// 0 until an engine is chosen, then `CaptureEngine as u8 + 1`.
    engine: AtomicU8,
    packets: AtomicU64,
    bytes: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl CaptureCounters {
    pub fn set_engine(&self, engine: CaptureEngine) {
        self.engine.store(engine as u8 + 1, Ordering::Relaxed);
    }

    pub fn engine(&self) -> Option<CaptureEngine> {
        match self.engine.load(Ordering::Relaxed) {
            1 => Some(CaptureEngine::Ebpf),
            2 => Some(CaptureEngine::Pcap),
            _ => None,
        }
    }

    pub fn set_totals(&self, packets: u64, bytes: u64) {
        self.packets.fetch_max(packets, Ordering::Relaxed);
        self.bytes.fetch_max(bytes, Ordering::Relaxed);
    }

    pub fn set_drops(&self, reason: DropReason, total: u64) {
        self.drops[reason.index()].fetch_max(total, Ordering::Relaxed);
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }
}

/// Whether the agent should get traffic (`/readyz`, `shadowtap_ready`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NoInterface,
    ShuttingDown,
}

/// Everything `/metrics` shows: the accounting plus capture and pipeline gauges. The
/// pipeline thread and the replay tasks write, the admin server reads.
#[derive(Debug)]
pub struct Registry {
    accounting: Arc<Accounting>,
    /// `host:port` of each target, in accounting order.
    target_labels: Vec<String>,
    pub capture: CaptureCounters,
    flows_active: AtomicU64,
    buffered_bytes: AtomicU64,
    /// Distrusted streams: start not seen, conflicting retransmission.
    distrusted: [AtomicU64; 2],
    /// Evicted connections: idle, mid-message.
    evicted: [AtomicU64; 2],
    h2_connections: [AtomicU64; 3],
    h2_streams: [AtomicU64; 3],
    interfaces_attached: AtomicU64,
    shutting_down: AtomicBool,
    /// The response comparison, when `--diff` is on.
    diff: std::sync::OnceLock<Arc<crate::diff::engine::DiffEngine>>,
}

/// The `target` label of an accounting name: the URL without its scheme (`host:port`).
fn target_label(name: &str) -> String {
    name.split_once("://")
        .map_or(name, |(_, rest)| rest)
        .trim_end_matches('/')
        .to_string()
}

impl Registry {
    pub fn new(accounting: Arc<Accounting>) -> Self {
        let target_labels = accounting
            .target_names()
            .iter()
            .map(|n| target_label(n))
            .collect();
        Self {
            accounting,
            target_labels,
            capture: CaptureCounters::default(),
            flows_active: AtomicU64::new(0),
            buffered_bytes: AtomicU64::new(0),
            distrusted: Default::default(),
            evicted: Default::default(),
            h2_connections: Default::default(),
            h2_streams: Default::default(),
            interfaces_attached: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            diff: std::sync::OnceLock::new(),
        }
    }

    pub fn accounting(&self) -> &Accounting {
        &self.accounting
    }

    pub fn set_flows(&self, active: usize, buffered_bytes: usize) {
        self.flows_active.store(active as u64, Ordering::Relaxed);
        self.buffered_bytes
            .store(buffered_bytes as u64, Ordering::Relaxed);
    }

    /// Reassembly's running totals of distrusted streams and evictions.
    pub fn set_reassembly(&self, stats: &ReassemblyStats) {
        self.distrusted[0].store(stats.lost_starts, Ordering::Relaxed);
        self.distrusted[1].store(stats.conflict_distrusts, Ordering::Relaxed);
        let busy = stats.flows_evicted_busy;
        self.evicted[0].store(stats.flows_evicted - busy, Ordering::Relaxed);
        self.evicted[1].store(busy, Ordering::Relaxed);
    }

    /// The response comparison whose results `/metrics` shows.
    pub fn set_diff(&self, engine: Arc<crate::diff::engine::DiffEngine>) {
        let _ = self.diff.set(engine);
    }

    /// The pipeline's running totals of HTTP/2 connections and streams, by start.
    pub fn set_h2(&self, connections: &[u64; 3], streams: &[u64; 3]) {
        for (slot, n) in self.h2_connections.iter().zip(connections) {
            slot.store(*n, Ordering::Relaxed);
        }
        for (slot, n) in self.h2_streams.iter().zip(streams) {
            slot.store(*n, Ordering::Relaxed);
        }
    }

    pub fn set_interfaces_attached(&self, n: usize) {
        self.interfaces_attached.store(n as u64, Ordering::Relaxed);
    }

    pub fn interfaces_attached(&self) -> u64 {
        self.interfaces_attached.load(Ordering::Relaxed)
    }

    /// From here on the agent is not ready, whatever is attached.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub fn readiness(&self) -> Readiness {
        if self.shutting_down.load(Ordering::Relaxed) {
            Readiness::ShuttingDown
        } else if self.interfaces_attached() == 0 {
            Readiness::NoInterface
        } else {
            Readiness::Ready
        }
    }

    /// The Prometheus text format (0.0.4) of every metric in `METRICS`.
    /// The exposition in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        self.render_as(Format::Text)
    }

    /// The exposition in `format`. The values are read from the counters now (they are
    /// plain atomics, which the hot path bumps without a lookup or a lock) and encoded by
    /// prometheus-client, which writes both formats from the same families.
    pub fn render_as(&self, format: Format) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self.scrape()));
        let mut out = String::new();
        // Writing to a String cannot fail, and the collector's values are all encodable.
        let _ = match format {
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        };
        out
    }

    /// Every family's samples as they are now.
    fn scrape(&self) -> Scrape {
        let mut out = Scrape::default();
        let targets = || {
            self.target_labels
                .iter()
                .map(String::as_str)
                .zip(self.accounting.iter().map(|(_, c)| c))
        };

        out.family(&REQUESTS_SEEN);
        out.sample(&[], self.accounting.requests_seen());

        out.family(&REQUESTS);
        for (target, counters) in targets() {
            for protocol in Protocol::ALL {
                for outcome in Outcome::ALL {
                    let (label, detail) = outcome.labels();
                    let n = counters.get_in(protocol, outcome);
                    out.sample(&[target, protocol.label(), label, detail], n);
                }
            }
        }

        out.family(&TARGET_RESPONSES);
        for (target, counters) in targets() {
            for class in StatusClass::ALL {
                out.sample(&[target, class.label()], counters.responses(class));
            }
        }

        out.family(&REPLAY_DURATION);
        for (target, counters) in targets() {
            out.histogram(&[target], &counters.latency().snapshot());
        }

        out.family(&QUEUE_DEPTH);
        for (target, counters) in targets() {
            out.sample(&[target], counters.queue_depth());
        }

        // Before an engine is chosen the capture families have no samples.
        let engine = self.capture.engine();
        out.family(&CAPTURE_PACKETS);
        if let Some(engine) = engine {
            out.sample(&[engine.label()], self.capture.packets());
        }
        out.family(&CAPTURE_BYTES);
        if let Some(engine) = engine {
            out.sample(&[engine.label()], self.capture.bytes());
        }
        out.family(&CAPTURE_DROPS);
        if let Some(engine) = engine {
            for reason in engine.drop_reasons() {
                out.sample(
                    &[engine.label(), reason.label()],
                    self.capture.drops(*reason),
                );
            }
        }

        out.family(&FLOWS_ACTIVE);
        out.sample(&[], self.flows_active.load(Ordering::Relaxed));
        out.family(&BUFFERED_BYTES);
        out.sample(&[], self.buffered_bytes.load(Ordering::Relaxed));
        out.family(&STREAMS_DISTRUSTED);
        for (reason, n) in ["lost_start", "conflicting_retransmit"]
            .into_iter()
            .zip(&self.distrusted)
        {
            out.sample(&[reason], n.load(Ordering::Relaxed));
        }
        for (family, counts) in [
            (&H2_CONNECTIONS, &self.h2_connections),
            (&H2_STREAMS, &self.h2_streams),
        ] {
            out.family(family);
            for start in crate::h2::ConnStart::ALL {
                out.sample(
                    &[start.label()],
                    counts[start.index()].load(Ordering::Relaxed),
                );
            }
        }
        out.family(&FLOWS_EVICTED);
        for (state, n) in ["idle", "mid_message"].into_iter().zip(&self.evicted) {
            out.sample(&[state], n.load(Ordering::Relaxed));
        }
        out.family(&INTERFACES_ATTACHED);
        out.sample(&[], self.interfaces_attached());
        out.family(&READY);
        out.sample(&[], u64::from(self.readiness() == Readiness::Ready));
        out.family(&BUILD_INFO);
        out.sample(&[env!("CARGO_PKG_VERSION")], 1);
        out.family(&DIFF_TOTAL);
        if let Some(engine) = self.diff.get() {
            engine.with_report(|report| {
                for (route, stats) in report.routes() {
                    for outcome in crate::diff::DiffOutcome::ALL {
                        out.sample(&[route, outcome.label()], stats.count(outcome));
                    }
                }
            });
        }
        out.family(&DIFF_LATENCY);
        if let Some(engine) = self.diff.get() {
            engine.with_report(|report| {
                for (route, stats) in report.routes() {
                    out.histogram_ms(&[route, "prod"], &stats.prod_latency);
                    out.histogram_ms(&[route, "shadow"], &stats.shadow_latency);
                }
            });
        }
        out.family(&DIFF_FIELDS);
        if let Some(engine) = self.diff.get() {
            engine.with_report(|report| {
                for (route, stats) in report.routes() {
                    for (field, stat) in stats.top_fields(10) {
                        out.sample(&[route, field], stat.count);
                    }
                }
            });
        }
        out
    }
}

/// The two expositions `/metrics` offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (what Prometheus asks for by default).
    Text,
    /// OpenMetrics 1.0 text (`Accept: application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names it (with a
    /// non-zero q), else the text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or_default();
                let refused = params.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One scrape: each family's samples, in the order of `Registry::scrape`. Every sample
/// comes from a `MetricDef`, so names, types and label names cannot drift from them.
#[derive(Debug, Default)]
struct Scrape {
    families: Vec<(&'static MetricDef, Vec<Sample>)>,
}

#[derive(Debug)]
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: SampleValue,
}

#[derive(Debug)]
enum SampleValue {
    Int(u64),
    /// Sum, count and the count of each bucket (not cumulative), `+Inf` last.
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

impl Scrape {
    fn family(&mut self, def: &'static MetricDef) {
        self.families.push((def, Vec::new()));
    }

    fn push(&mut self, values: &[&str], value: SampleValue) {
        let Some((def, samples)) = self.families.last_mut() else {
            return;
        };
        debug_assert_eq!(values.len(), def.labels.len(), "{}", def.name);
        let labels = def
            .labels
            .iter()
            .copied()
            .zip(values.iter().map(|v| (*v).to_owned()))
            .collect();
        samples.push(Sample { labels, value });
    }

    fn sample(&mut self, values: &[&str], value: u64) {
        self.push(values, SampleValue::Int(value));
    }

    /// A histogram of the diff report (`diff::report::LATENCY_BOUNDS_MS`, per-bucket counts).
    fn histogram_ms(&mut self, values: &[&str], h: &crate::diff::report::LatencyHistogram) {
        use crate::diff::report::LATENCY_BOUNDS_MS;
        let count = |i: usize| h.counts.get(i).copied().unwrap_or(0);
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_MS
            .iter()
            .enumerate()
            .map(|(i, ms)| (ms / 1000.0, count(i)))
            .collect();
        buckets.push((f64::INFINITY, count(LATENCY_BOUNDS_MS.len())));
        self.push(
            values,
            SampleValue::Histogram {
                sum: h.sum_ms / 1000.0,
                count: h.count(),
                buckets,
            },
        );
    }

    fn histogram(&mut self, values: &[&str], h: &HistogramSnapshot) {
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_NANOS
            .iter()
            .zip(h.cumulative)
            .map(|(bound, cumulative)| {
                let in_bucket = cumulative.saturating_sub(below);
                below = cumulative;
                (*bound as f64 / 1e9, in_bucket)
            })
            .collect();
        buckets.push((f64::INFINITY, h.count.saturating_sub(below)));
        self.push(
            values,
            SampleValue::Histogram {
                sum: h.sum_seconds,
                count: h.count,
                buckets,
            },
        );
    }
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::NoLabelSet;
        use prometheus_client::metrics::MetricType;
        for (def, samples) in &self.families {
            // prometheus-client adds `_total` to counters itself (both formats).
            let (name, kind) = match def.kind {
                MetricKind::Counter => (
                    def.name.strip_suffix("_total").unwrap_or(def.name),
                    MetricType::Counter,
                ),
                MetricKind::Gauge => (def.name, MetricType::Gauge),
                MetricKind::Histogram => (def.name, MetricType::Histogram),
            };
            let mut metric = encoder.encode_descriptor(name, def.help, None, kind)?;
            for sample in samples {
                let mut family = metric.encode_family(&sample.labels)?;
                match (&sample.value, def.kind) {
                    (SampleValue::Int(v), MetricKind::Counter) => {
                        family.encode_counter::<NoLabelSet, u64, f64>(v, None)?
                    }
                    (SampleValue::Int(v), _) => family.encode_gauge(v)?,
                    (
                        SampleValue::Histogram {
                            sum,
                            count,
                            buckets,
                        },
                        _,
                    ) => family.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_add_up_per_target() {
        let acc = Accounting::new(vec!["a".into(), "b".into()]);
        for _ in 0..3 {
            acc.seen(Protocol::Http1);
        }
        acc.record_all(Protocol::Http1, Outcome::Unparseable);
        acc.target(0)
            .record(Protocol::Http1, Outcome::Replayed(StatusClass::Success));
        acc.target(0).record(Protocol::Http1, Outcome::NotSampled);
        acc.target(1).record(Protocol::Http1, Outcome::QueueFull);
        acc.target(1).record(
            Protocol::Http1,
            Outcome::ReplayError(ReplayErrorKind::Reset),
        );
        for (_, t) in acc.iter() {
            assert_eq!(t.total(), acc.requests_seen());
        }
        assert_eq!(acc.target(1).get(Outcome::Unparseable), 1);
    }

    #[test]
    fn every_outcome_has_a_distinct_index_and_label() {
        let mut labels: Vec<_> = Outcome::ALL.iter().map(|o| o.labels()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Outcome::ALL.len());
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use std::collections::BTreeMap;

    /// (name, labels, value) of every sample line; a deliberately small reader of the
    /// text format for checks that need no full parser (the admin test uses one).
    fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, mut rest) = match series.split_once('{') {
                Some((n, r)) => (n, r.strip_suffix('}').unwrap()),
                None => (series, ""),
            };
            let mut labels = BTreeMap::new();
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").unwrap();
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    let (i, c) = chars.next().unwrap();
                    match c {
                        '\\' => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        '"' => break i,
                        c => value.push(c),
                    }
                };
                labels.insert(key.to_string(), value);
                rest = after[end + 1..].trim_start_matches(',');
            }
            let value = if value == "+Inf" {
                f64::INFINITY
            } else {
                value.parse().unwrap()
            };
            out.push((name.to_string(), labels, value));
        }
        out
    }

    fn value(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = samples(text)
            .into_iter()
            .filter(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .collect();
        assert_eq!(found.len(), 1, "{name} {want:?} in\n{text}");
        found[0]
    }

    fn busy_registry() -> Registry {
        let acc = Arc::new(Accounting::new(vec![
            "http://stage:8080".into(),
            "https://[::1]:8443".into(),
        ]));
        for _ in 0..4 {
            acc.seen(Protocol::Http1);
        }
        acc.record_all(Protocol::Http1, Outcome::Incomplete);
        let t0 = acc.target(0);
        t0.record(Protocol::Http1, Outcome::Replayed(StatusClass::Success));
        t0.record(Protocol::Http1, Outcome::Replayed(StatusClass::ServerError));
        t0.record(
            Protocol::Http1,
            Outcome::ReplayError(ReplayErrorKind::Timeout),
        );
        t0.record_response(StatusClass::Success, 1_000_000);
        t0.record_response(StatusClass::ServerError, 30_000_000_000);
        let t1 = acc.target(1);
        t1.record(Protocol::Http1, Outcome::NotSampled);
        t1.record(Protocol::Http1, Outcome::QueueFull);
        t1.record(Protocol::Http1, Outcome::Filtered);
        t1.enqueued();
        let reg = Registry::new(acc);
        reg.capture.set_engine(CaptureEngine::Pcap);
        reg.capture.set_totals(10, 1500);
        reg.capture.set_drops(DropReason::Kernel, 2);
        reg.set_flows(3, 4096);
        reg.set_interfaces_attached(1);
        reg
    }

    #[test]
    fn every_metric_has_one_help_and_type_and_only_its_samples() {
        let text = busy_registry().render();
        for def in METRICS {
            let help = format!("# HELP {} ", def.name);
            let ty = format!("# TYPE {} {}\n", def.name, def.kind.name());
            assert_eq!(text.matches(&help).count(), 1, "{}", def.name);
            assert_eq!(text.matches(&ty).count(), 1, "{}", def.name);
        }
        for (name, labels, _) in samples(&text) {
            let def = METRICS
                .iter()
                .find(|d| match d.kind {
                    MetricKind::Histogram => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{}{s}", d.name)),
                    _ => name == d.name,
                })
                .unwrap_or_else(|| panic!("sample {name} of no defined metric"));
            let mut want: Vec<&str> = def.labels.to_vec();
            if name.ends_with("_bucket") {
                want.push("le");
            }
            want.sort_unstable();
            let got: Vec<&str> = labels.keys().map(String::as_str).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn outcomes_add_up_to_requests_seen_in_the_exposition() {
        let text = busy_registry().render();
        let seen = value(&text, "shadowtap_requests_seen_total", &[]);
        assert_eq!(seen, 4.0);
        for target in ["stage:8080", "[::1]:8443"] {
            let sum: f64 = samples(&text)
                .into_iter()
                .filter(|(n, l, _)| n == "shadowtap_requests_total" && l["target"] == target)
                .map(|(_, _, v)| v)
                .sum();
            assert_eq!(sum, seen, "{target}");
        }
        let replayed_5xx = [
            ("target", "stage:8080"),
            ("protocol", "http1"),
            ("outcome", "replayed"),
            ("detail", "5xx"),
        ];
        assert_eq!(value(&text, "shadowtap_requests_total", &replayed_5xx), 1.0);
        let timeout = [
            ("target", "stage:8080"),
            ("protocol", "http1"),
            ("detail", "timeout"),
        ];
        assert_eq!(value(&text, "shadowtap_requests_total", &timeout), 1.0);
        let ok = [("target", "stage:8080"), ("class", "2xx")];
        assert_eq!(value(&text, "shadowtap_target_responses_total", &ok), 1.0);
        assert_eq!(
            value(&text, "shadowtap_queue_depth", &[("target", "[::1]:8443")]),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "shadowtap_capture_drops_total",
                &[("engine", "pcap"), ("reason", "kernel")]
            ),
            2.0
        );
        assert_eq!(value(&text, "shadowtap_flows_active", &[]), 3.0);
        assert_eq!(value(&text, "shadowtap_buffered_bytes", &[]), 4096.0);
        assert_eq!(value(&text, "shadowtap_ready", &[]), 1.0);
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        assert_eq!(value(&text, "shadowtap_build_info", &version), 1.0);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let acc = Arc::new(Accounting::new(vec!["http://we\"ird\\host\n:80".into()]));
        let text = Registry::new(acc).render();
        assert!(text.contains(r#"target="we\"ird\\host\n:80""#), "{text}");
        let found = samples(&text)
            .into_iter()
            .any(|(_, l, _)| l.get("target").map(String::as_str) == Some("we\"ird\\host\n:80"));
        assert!(found, "escaped value reads back");
        // A sample line never breaks: every line is a comment or `name[{...}] value`.
        assert!(text
            .lines()
            .all(|l| l.starts_with("# ") || l.starts_with("shadowtap_")));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_equals_count() {
        let h = Histogram::default();
        // On a bound counts in that bucket; past the last bound only in +Inf.
        let observations = [
            1,
            250_000,
            250_001,
            1_000_000,
            7_000_000,
            10_000_000_000,
            10_000_000_001,
            u64::MAX / 4,
        ];
        for n in observations {
            h.observe(n);
        }
        let acc = Arc::new(Accounting::new(vec!["http://t:1".into()]));
        let reg = Registry::new(Arc::clone(&acc));
        for n in observations {
            acc.target(0).record_response(StatusClass::Success, n);
        }
        let text = reg.render();
        let buckets: Vec<(f64, f64)> = samples(&text)
            .into_iter()
            .filter(|(n, _, _)| n == "shadowtap_replay_duration_seconds_bucket")
            .map(|(_, l, v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), v))
            .collect();
        assert_eq!(buckets.len(), LATENCY_BOUNDS_NANOS.len() + 1);
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{buckets:?}"
        );
        let count = value(&text, "shadowtap_replay_duration_seconds_count", &[]);
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
        assert_eq!(count, observations.len() as f64);
        let at = |le: f64| buckets.iter().find(|b| b.0 == le).unwrap().1;
        assert_eq!(at(0.00025), 2.0);
        assert_eq!(at(0.001), 4.0);
        assert_eq!(at(0.01), 5.0);
        assert_eq!(at(10.0), 6.0);
        let sum = value(&text, "shadowtap_replay_duration_seconds_sum", &[]);
        let want: f64 = observations.iter().map(|n| *n as f64 / 1e9).sum();
        assert!((sum - want).abs() / want < 1e-9, "{sum} vs {want}");
        assert_eq!(h.snapshot().count, observations.len() as u64);
    }

    #[test]
    fn counters_never_go_down() {
        let reg = busy_registry();
        let before = samples(&reg.render());
        let acc = reg.accounting();
        acc.seen(Protocol::Http1);
        acc.target(0)
            .record(Protocol::Http1, Outcome::Replayed(StatusClass::Success));
        acc.target(0)
            .record_response(StatusClass::Success, 5_000_000);
        acc.target(1).record(Protocol::Http1, Outcome::NotSampled);
        reg.capture.set_totals(20, 3000);
        // A smaller reading (a counter read out of order) does not move a total back.
        reg.capture.set_totals(5, 5);
        reg.capture.set_drops(DropReason::Kernel, 1);
        let after = samples(&reg.render());
        let counter_families: Vec<&str> = METRICS
            .iter()
            .filter(|d| d.kind != MetricKind::Gauge)
            .map(|d| d.name)
            .collect();
        let mut grew = 0;
        for (name, labels, old) in &before {
            if !counter_families.iter().any(|f| name.starts_with(f)) {
                continue;
            }
            let new = after
                .iter()
                .find(|(n, l, _)| n == name && l == labels)
                .map(|s| s.2)
                .unwrap_or_else(|| panic!("{name} {labels:?} vanished"));
            assert!(new >= *old, "{name} {labels:?}: {old} -> {new}");
            grew += usize::from(new > *old);
        }
        assert!(grew >= 6, "only {grew} series grew");
        assert_eq!(reg.capture.packets(), 20);
    }

    #[test]
    fn readme_metrics_table_lists_every_metric() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let section = readme
            .split("\n## Metrics\n")
            .nth(1)
            .expect("README has a `## Metrics` section");
        let section = section.split("\n## ").next().unwrap();
        // | `name` | type | `label`, `label` | meaning |
        let mut rows = BTreeMap::new();
        for line in section.lines().filter(|l| l.starts_with("| `shadowtap_")) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 4, "{line}");
            let labels: Vec<String> = cells[2]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_string())
                .filter(|l| !l.is_empty() && l != "-")
                .collect();
            let name = cells[0].trim_matches('`').to_string();
            assert!(!cells[3].is_empty(), "{name}: no meaning given");
            assert!(
                rows.insert(name.clone(), (cells[1].to_string(), labels))
                    .is_none(),
                "{name} twice"
            );
        }
        for def in METRICS {
            let (kind, labels) = rows
                .remove(def.name)
                .unwrap_or_else(|| panic!("README metrics table lacks {}", def.name));
            assert_eq!(kind, def.kind.name(), "{}: type in README", def.name);
            assert_eq!(labels, def.labels, "{}: labels in README", def.name);
        }
        assert!(
            rows.is_empty(),
            "README lists metrics that do not exist: {rows:?}"
        );
    }
}
