//! The replay stage: for each target, filter, sample, rate-cap and queue a captured
//! request, then send its shadow copy and record one outcome per target.
//!
//! `Replayer::submit` runs on the capture/parse thread and never blocks: every hand-off
//! is a `try_put` into a bounded queue, and a full queue is counted as `queue_full`. The
//! network side runs on a tokio runtime owned by a thread of its own, so a slow, dead or
//! hostile target only ever costs shadow copies. The caller counts a request as seen
//! (`Accounting::seen`) before it submits it; the replayer records exactly one outcome
//! per target for it, including at shutdown, so each target's outcomes add up.

pub mod client;
pub mod filter;
pub mod h2;
mod queue;
pub mod resolve;
pub mod rewrite;
pub mod target;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::oneshot;

use crate::diff::engine::DiffEngine;
use crate::metrics::{Accounting, Outcome, ReplayErrorKind, TargetCounters};
use crate::own_traffic::OwnConnections;
use crate::request::{Captured, Header, Protocol, Request};
use crate::sample::{hash_bytes, ConnectionKey, Percent, SampleBy, Sampler, TokenBucket};
use client::{ClientOptions, Collect, Collected, ShadowClient, TlsTarget};
use filter::RequestFilter;
use h2::H2Client;
use rewrite::{build_h2_request, build_shadow_request, H2CopyOptions, HeaderRules};
use target::{parse_target, Scheme, TargetUrl, TargetUrlError, TlsOptions, TlsSetupError};

/// Everything about one target. `TargetConfig::new` gives the defaults.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    pub url: TargetUrl,
    pub percent: Percent,
    pub sample_by: SampleBy,
    /// Seeds the sampler; `None`: hash modes derive a seed from the URL and position (the
    /// same on every node), the random mode takes one from the OS.
    pub seed: Option<u64>,
    /// `--max-rps`: copies per second, with a burst of `max_rps_burst`.
    pub max_rps: Option<f64>,
    pub max_rps_burst: Option<u32>,
    pub filter: RequestFilter,
    pub rules: HeaderRules,
    /// `--shadow-suffix`; empty leaves Host as sent.
    pub shadow_suffix: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    pub queue_len: usize,
    /// Request bytes queued or in flight; past it a copy counts as `queue_full` (live) or
    /// waits (files). `queue_len` alone would let long queues of big bodies take GiBs.
    pub max_queue_bytes: usize,
    pub max_response_head_bytes: usize,
    pub max_response_body_bytes: u64,
    pub tls: TlsOptions,
    /// SO_MARK on every connection (0: none); live capture skips marked packets.
    pub socket_mark: u32,
    /// Registry of our own connections that live capture leaves out.
    pub own: Option<Arc<OwnConnections>>,
    /// The response comparison this target takes part in (`--diff`).
    pub diff: Option<DiffSide>,
}

/// A target's part in the response comparison.
#[derive(Clone, Debug)]
pub struct DiffSide {
    pub engine: Arc<DiffEngine>,
    /// The baseline (`--diff-baseline`: production's version in staging), whose answers
    /// tell noise from differences; otherwise the candidate, each copy of which opens a
    /// pair that its answer completes.
    pub baseline: bool,
    /// Body bytes of each answer kept for field-level comparison (`--diff-max-body`).
    pub max_body: usize,
}

impl DiffSide {
    /// Hands the answer to a copy of request `id` (or how it failed) to the engine.
    fn answered(
        &self,
        id: u64,
        result: Result<Option<crate::diff::ResponseSummary>, ReplayErrorKind>,
    ) {
        use crate::diff::engine::ShadowSide;
        let side = match result {
            Ok(Some(summary)) => ShadowSide::Answered(summary),
            Ok(None) => ShadowSide::Failed { timeout: false },
            Err(kind) => ShadowSide::Failed {
                timeout: kind == ReplayErrorKind::Timeout,
            },
        };
        if self.baseline {
            self.engine.baseline(id, side);
        } else {
            self.engine.shadow(id, side);
        }
    }
}

impl TargetConfig {
    pub const DEFAULT_SUFFIX: &'static str = "-shadow";

    pub fn new(url: TargetUrl) -> Self {
        Self {
            url,
            percent: Percent::ALL,
            sample_by: SampleBy::Random,
            seed: None,
            max_rps: None,
            max_rps_burst: None,
            filter: RequestFilter::default(),
            rules: HeaderRules::default(),
            shadow_suffix: Self::DEFAULT_SUFFIX.to_string(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_in_flight: 64,
            queue_len: 10_000,
            max_queue_bytes: 64 << 20,
            max_response_head_bytes: 64 * 1024,
            max_response_body_bytes: 16 * 1024 * 1024,
            tls: TlsOptions::default(),
            socket_mark: 0,
            own: None,
            diff: None,
        }
    }

    /// From a `--target URL[@PERCENT]` value; without `@PERCENT`, `default_percent`.
    pub fn from_arg(text: &str, default_percent: Percent) -> Result<Self, TargetUrlError> {
        let (url, percent) = parse_target(text)?;
        let mut cfg = Self::new(url);
        cfg.percent = percent.unwrap_or(default_percent);
        Ok(cfg)
    }
}

#[derive(Debug, Error)]
pub enum ReplayerError {
    #[error("target {url}: {source}")]
    Tls { url: String, source: TlsSetupError },
    #[error("target {0}: host is not a valid TLS server name")]
    ServerName(String),
    #[error("accounting has {accounting} targets but {configured} are configured")]
    TargetCount {
        accounting: usize,
        configured: usize,
    },
    #[error("target {0}: max in-flight and queue length must be at least 1")]
    ZeroLimit(String),
    #[error("cannot start the replay runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Requests accepted into a target's queue and not settled yet. An outcome is recorded
/// only by whoever takes a unit from here, so a task finishing after the shutdown deadline
/// (which takes all that is left) records nothing, and no request counts twice.
/// Kept per protocol, so what the deadline cuts off is counted in the right series.
#[derive(Debug, Default)]
struct Pending([AtomicU64; Protocol::ALL.len()]);

impl Pending {
    fn add(&self, protocol: Protocol) {
        self.0[protocol.index()].fetch_add(1, Ordering::AcqRel);
    }

    fn take_one(&self, protocol: Protocol) -> bool {
        self.0[protocol.index()]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| p.checked_sub(1))
            .is_ok()
    }

    /// Takes every unit left: how many, per protocol.
    fn take_all(&self) -> [(Protocol, u64); Protocol::ALL.len()] {
        Protocol::ALL.map(|p| (p, self.0[p.index()].swap(0, Ordering::AcqRel)))
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|n| n.load(Ordering::Acquire)).sum()
    }
}

/// Bytes of the requests a target holds (queued or in flight), against its cap.
#[derive(Debug)]
struct QueuedBytes {
    held: AtomicUsize,
    max: usize,
}

impl QueuedBytes {
    /// Takes room for `size` bytes. A request bigger than the whole cap still passes
    /// when nothing else is held, so one large body cannot block a file replay forever.
    fn try_take(&self, size: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let next = held.saturating_add(size);
                (held == 0 || next <= self.max).then_some(next)
            })
            .is_ok()
    }

    fn give_back(&self, size: usize) {
        self.held.fetch_sub(size, Ordering::AcqRel);
    }
}

/// What a queued copy costs in memory, as the allocator sees it: the capacities (not
/// the lengths) of every buffer it owns, the slots of its header vectors, the shared
/// allocation that holds it and its place in the queue, each allocation rounded up as
/// `heap_bytes` says. Counting only the bytes of the fields let requests of a hundred
/// small headers (two allocations and a 48-byte slot each) hold five times the cap.
fn request_bytes(request: &Request) -> usize {
    let fields = |list: &Vec<Header>| {
        heap_bytes(list.capacity() * size_of::<Header>())
            + list
                .iter()
                .map(|h| heap_bytes(h.name.capacity()) + heap_bytes(h.value.capacity()))
                .sum::<usize>()
    };
    // The `Arc` around the copy: two counts and the struct.
    heap_bytes(2 * size_of::<usize>() + size_of::<Captured>())
        + size_of::<Arc<Captured>>()
        + heap_bytes(request.method.capacity())
        + heap_bytes(request.target.capacity())
        + heap_bytes(request.body.capacity())
        + fields(&request.headers)
        + fields(&request.trailers)
}

/// Bytes an allocation of `size` takes from the heap: glibc's malloc adds an 8-byte
/// header, rounds to 16 and never hands out less than 32 (other allocators round
/// similarly or to size classes). An empty buffer allocates nothing.
fn heap_bytes(size: usize) -> usize {
    if size == 0 {
        return 0;
    }
    size.saturating_add(8).next_multiple_of(16).max(32)
}

struct TargetSide {
    diff: Option<DiffSide>,
    filter: RequestFilter,
    sampler: Sampler,
    bucket: Option<Mutex<TokenBucket>>,
    queue: queue::Sender<Arc<Captured>>,
    pending: Arc<Pending>,
    bytes: Arc<QueuedBytes>,
}

/// What the replay tasks of one target share.
struct TargetWorker {
    index: usize,
    client: ShadowClient,
    /// Copies of HTTP/2 requests go out as HTTP/2.
    h2: H2Client,
    /// `:scheme` of the HTTP/2 copies: the target's.
    scheme: &'static str,
    /// The HTTP/2 copies' cap on `grpc-timeout`.
    request_timeout: Duration,
    rules: HeaderRules,
    suffix: String,
    accounting: Arc<Accounting>,
    pending: Arc<Pending>,
    bytes: Arc<QueuedBytes>,
    diff: Option<DiffSide>,
}

impl TargetWorker {
    fn counters(&self) -> &TargetCounters {
        self.accounting.target(self.index)
    }

    fn settle(&self, protocol: Protocol, outcome: Outcome) {
        if self.pending.take_one(protocol) {
            self.counters().record(protocol, outcome);
        }
    }

    async fn replay(&self, captured: &Arc<Captured>) -> Outcome {
        if captured.request.protocol == Protocol::H2 {
            return self.replay_h2(captured).await;
        }
        let req = &captured.request;
        let bytes = build_shadow_request(
            req,
            captured.client,
            captured.server,
            &self.rules,
            &self.suffix,
        );
        // A success to CONNECT turns the connection into a tunnel: no body, no reuse.
        let connect = req.method == "CONNECT";
        let no_body = req.method == "HEAD" || connect;
        // A 1.0 request tells the target to close after answering.
        let keep_alive = req.version_minor >= 1 && !connect;
        let collect = self.diff.as_ref().map(|d| Collect {
            max_body: d.max_body,
        });
        let result = self
            .client
            .send_collect(&bytes, no_body, keep_alive, collect)
            .await;
        if let Some(d) = &self.diff {
            d.answered(
                captured.id,
                result.as_ref().map(|c| c.summary.clone()).map_err(|k| *k),
            );
        }
        match result {
            Ok(Collected { answer, .. }) => {
                let nanos = u64::try_from(answer.head_after.as_nanos()).unwrap_or(u64::MAX);
                self.counters().record_response(answer.class, nanos);
                Outcome::Replayed(answer.class)
            }
            Err(kind) => {
                tracing::debug!(target_index = self.index, error = ?kind, "shadow copy failed");
                Outcome::ReplayError(kind)
            }
        }
    }

    /// The HTTP/2 copy: a gRPC call counts by its `grpc-status`, anything else by its
    /// status class.
    async fn replay_h2(&self, captured: &Arc<Captured>) -> Outcome {
        let req = &captured.request;
        let copy = build_h2_request(
            req,
            &H2CopyOptions {
                client: captured.client,
                server: captured.server,
                rules: &self.rules,
                suffix: &self.suffix,
                scheme: self.scheme,
                timeout: self.request_timeout,
            },
        );
        // The captured body, not a copy of it: the request stays alive while h2 holds it.
        let body = bytes::Bytes::from_owner(CapturedBody(Arc::clone(captured)));
        let collect = self.diff.as_ref().map(|d| Collect {
            max_body: d.max_body,
        });
        let result = self
            .h2
            .send_collect(&copy, body, req.is_grpc(), collect)
            .await;
        if let Some(d) = &self.diff {
            d.answered(
                captured.id,
                result.as_ref().map(|c| c.summary.clone()).map_err(|k| *k),
            );
        }
        match result.map(|c| c.answer) {
            Ok(answer) => {
                let nanos = u64::try_from(answer.head_after.as_nanos()).unwrap_or(u64::MAX);
                self.counters().record_response(answer.class, nanos);
                match answer.grpc {
                    Some(status) => Outcome::Grpc(status),
                    None => Outcome::Replayed(answer.class),
                }
            }
            Err(kind) => {
                tracing::debug!(target_index = self.index, error = ?kind, "HTTP/2 shadow copy failed");
                Outcome::ReplayError(kind)
            }
        }
    }
}

/// A captured request's body as the bytes `h2` sends.
struct CapturedBody(Arc<Captured>);

impl AsRef<[u8]> for CapturedBody {
    fn as_ref(&self) -> &[u8] {
        &self.0.request.body
    }
}

/// The replay tasks of one target and the queue they take requests from. A pool of
/// tasks rather than a task per request: spawning allocates (and frees) the whole task
/// with its future each time, which was a tenth of the replay thread's time. The pool
/// starts with one task and keeps one waiting for the next request while it grows, up
/// to the window (`Window`), so an idle or fast target costs few tasks, and a small one
/// is not sent more copies at once than it keeps up with.
struct ReplayPool {
    queue: queue::Receiver<Arc<Captured>>,
    tasks: AtomicUsize,
    waiting: AtomicUsize,
    window: Mutex<Window>,
}

/// Copies a target gets at once before it has shown it keeps up: a one-worker server
/// and a listen backlog of 1 holds this many connections without dropping a SYN.
const INITIAL_WINDOW: usize = 2;

/// How many copies of a target are in flight at once: AIMD, as TCP does with its
/// congestion window. It starts at `INITIAL_WINDOW` and grows by one per window of
/// copies answered about as fast as the target's best (a target that gets slower as more
/// copies are in flight is queueing them, and more would only queue longer), up to
/// `--max-in-flight`; a timeout, a reset, a refused connect or an answer that took far
/// longer than usual (a dropped SYN costs a second) halves it, once per window. Sending
/// `--max-in-flight` copies at once into a small target overflowed its accept queue and
/// came back as a wall of connect timeouts.
#[derive(Debug)]
struct Window {
    limit: usize,
    max: usize,
    /// Copies answered in time since the last step up.
    credit: usize,
    /// The target's usual latency (connect included): the least seen, drifting up slowly
    /// so that a target that became slower for good becomes the new usual.
    base_nanos: u64,
    /// Counts cuts; a copy started before the last cut cannot cause another one.
    epoch: u64,
    /// When each copy in flight started (by a sequence number), with its epoch: a SYN
    /// dropped by a full accept queue is resent only after a second, and growing the
    /// window all that second (the other copies are answered fast) is what overflowed
    /// the queue. The oldest copy in flight tells of it long before its answer does.
    in_flight: BTreeMap<u64, (Instant, u64)>,
    next_seq: u64,
}

/// What one copy tells the window.
enum Signal {
    /// Answered after this many nanoseconds (connect included).
    Answered(u64),
    /// Timed out, reset or refused: the target is not keeping up (or down).
    Congested,
    /// Could not connect (refused, no route, name not resolved): quickly told, so not
    /// overload when the target never answered; a cut once it has answered.
    Refused,
    /// Says nothing about load (TLS or protocol errors).
    Neutral,
}

impl Window {
    fn new(max: usize) -> Self {
        Self {
            limit: INITIAL_WINDOW.min(max),
            max,
            credit: 0,
            base_nanos: u64::MAX,
            epoch: 0,
            in_flight: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// A copy goes out; pass the number to `update` when it is settled.
    fn begin(&mut self, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.insert(seq, (now, self.epoch));
        seq
    }

    /// Past this, a copy waited in a queue somewhere (or for a SYN resent).
    fn slow_nanos(&self) -> u64 {
        let base = self.base_nanos;
        base.saturating_mul(8).max(base.saturating_add(100_000_000))
    }

    /// Applies `signal` from copy `seq` (see `begin`); true when the window was cut.
    fn update(&mut self, seq: u64, signal: Signal, now: Instant) -> bool {
        let epoch = self.in_flight.remove(&seq).map_or(self.epoch, |(_, e)| e);
        // While the oldest copy in flight is taking long, the window does not grow.
        let oldest = self.in_flight.first_key_value().map(|(_, &(start, _))| {
            u64::try_from(now.duration_since(start).as_nanos()).unwrap_or(u64::MAX)
        });
        match signal {
            Signal::Answered(nanos) => {
                if self.base_nanos != u64::MAX && nanos > self.slow_nanos() {
                    // Not the target's usual: it does not move the baseline.
                    return self.cut(epoch);
                }
                if nanos < self.base_nanos {
                    self.base_nanos = nanos;
                } else {
                    self.base_nanos += (nanos - self.base_nanos) / 1024;
                }
                let base = self.base_nanos;
                // Growing only while answers stay near the best: more copies at once into
                // a target that already queues them only lengthen its queue.
                let steady = base.saturating_mul(2).max(base.saturating_add(1_000_000));
                let none_stuck = oldest.is_none_or(|age| age <= 2 * steady);
                if nanos <= steady && none_stuck {
                    self.step_up();
                }
                false
            }
            // A target that never answered is not overloaded but broken (or silent): a
            // smaller window would only line its timeouts up one after another.
            Signal::Congested if self.base_nanos == u64::MAX => false,
            // A target that is down or does not resolve: the window is no reason for
            // its copies to wait in the queue, and they fail as they did without it.
            Signal::Refused if self.base_nanos == u64::MAX => {
                self.step_up();
                false
            }
            Signal::Congested | Signal::Refused => self.cut(epoch),
            Signal::Neutral => false,
        }
    }

    /// One more copy may be in flight once a window's worth went well.
    fn step_up(&mut self) {
        if self.limit < self.max {
            self.credit += 1;
            if self.credit >= self.limit {
                self.credit = 0;
                self.limit += 1;
            }
        }
    }

    fn cut(&mut self, epoch: u64) -> bool {
        if epoch != self.epoch {
            return false;
        }
        self.epoch += 1;
        self.credit = 0;
        self.limit = (self.limit / 2).max(1);
        true
    }
}

impl ReplayPool {
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more task if the window has room for it.
    fn grow(&self) -> bool {
        let limit = self.window().limit;
        self.tasks
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts one task less if there are more than the window allows (and more than
    /// one): the caller ends.
    fn shrink(&self) -> bool {
        let limit = self.window().limit;
        self.tasks
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > limit && n > 1).then_some(n - 1)
            })
            .is_ok()
    }
}

/// A plain function between `replay_loop` and the spawn that it does, so that the
/// compiler can see the task's future is `Send` without a cycle through itself.
fn spawn_replay_task(worker: Arc<TargetWorker>, pool: Arc<ReplayPool>) {
    tokio::spawn(replay_loop(worker, pool));
}

/// One replay task: takes the next queued request, sends it, settles it, and so on until
/// the queue is closed and empty, or the window shrank below the tasks there are.
async fn replay_loop(worker: Arc<TargetWorker>, pool: Arc<ReplayPool>) {
    loop {
        pool.waiting.fetch_add(1, Ordering::AcqRel);
        let next = pool.queue.take().await;
        let still_waiting = pool.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
        let Some(captured) = next else {
            break;
        };
        // Out of the queue: the copy is on its way (queue depth counts waiting copies).
        worker.counters().dequeued();
        if still_waiting == 0 && pool.grow() {
            spawn_replay_task(worker.clone(), pool.clone());
        }
        let started = Instant::now();
        let seq = pool.window().begin(started);
        let outcome = worker.replay(&captured).await;
        let signal = match outcome {
            // A gRPC error is an answer too: the target was there to give it.
            Outcome::Replayed(_) | Outcome::Grpc(_) => {
                Signal::Answered(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))
            }
            Outcome::ReplayError(ReplayErrorKind::Timeout | ReplayErrorKind::Reset) => {
                Signal::Congested
            }
            Outcome::ReplayError(ReplayErrorKind::Connect) => Signal::Refused,
            _ => Signal::Neutral,
        };
        if pool.window().update(seq, signal, Instant::now()) {
            worker.counters().record_backoff();
            tracing::debug!(
                target_index = worker.index,
                window = pool.window().limit,
                "target fell behind: fewer copies in flight"
            );
        }
        worker.settle(captured.request.protocol, outcome);
        worker.bytes.give_back(request_bytes(&captured.request));
        if pool.shrink() {
            break;
        }
    }
}

/// Copies decided on with `Handoff::Later` and not yet on their queues: target index,
/// the copy, its size in the queue's byte budget. Empty it with `Replayer::send` (until
/// then the copies count in no outcome).
#[derive(Default)]
pub struct Outbox {
    held: Vec<(usize, Arc<Captured>, usize)>,
}

/// How `Replayer::hand_off` puts the copies it keeps on their targets' queues.
pub enum Handoff<'a> {
    /// At once. `wait`: block while a queue is full (files: nothing is live, every copy
    /// should go out) instead of counting `queue_full` (live).
    Now { wait: bool },
    /// Into the outbox, until `Replayer::send`; never blocks. Live capture decides on
    /// each request as soon as it is framed (so the framer reuses the buffers of those
    /// not kept) and wakes the replay thread once per read of the capture.
    Later(&'a mut Outbox),
}

/// Sends shadow copies to every configured target.
pub struct Replayer {
    targets: Vec<TargetSide>,
    /// The response comparison, if a target is its candidate.
    diff: Option<Arc<DiffEngine>>,
    accounting: Arc<Accounting>,
    clock: Instant,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is keyed from the OS's randomness once per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5348_4144);
    h.finish()
}

impl Replayer {
    /// Starts the replay runtime. `accounting` must list the targets in the same order.
    pub fn new(
        targets: Vec<TargetConfig>,
        accounting: Arc<Accounting>,
    ) -> Result<Self, ReplayerError> {
        let names = accounting.target_names().len();
        if names != targets.len() && !(targets.is_empty() && names == 1) {
            return Err(ReplayerError::TargetCount {
                accounting: names,
                configured: targets.len(),
            });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("shadowtap-replay")
            .build()?;
        let mut sides = Vec::with_capacity(targets.len());
        for (index, cfg) in targets.into_iter().enumerate() {
            let name = cfg.url.to_string();
            if cfg.max_in_flight == 0 || cfg.queue_len == 0 {
                return Err(ReplayerError::ZeroLimit(name));
            }
            let tls_with = |config: fn(&TlsOptions) -> Result<_, TlsSetupError>| {
                Ok::<_, ReplayerError>(match cfg.url.scheme {
                    Scheme::Http => None,
                    Scheme::Https => Some(TlsTarget {
                        config: config(&cfg.tls).map_err(|source| ReplayerError::Tls {
                            url: name.clone(),
                            source,
                        })?,
                        server_name: target::server_name(&cfg.url.host)
                            .ok_or_else(|| ReplayerError::ServerName(name.clone()))?,
                    }),
                })
            };
            let tls = tls_with(target::client_config)?;
            // Its own configuration: offering `h2` by ALPN to HTTP/1.1 copies would let the
            // target answer them in HTTP/2.
            let h2_tls = tls_with(target::h2_client_config)?;
            let seed = cfg.seed.unwrap_or_else(|| match cfg.sample_by {
                SampleBy::Random => os_seed(),
                _ => hash_bytes(index as u64, name.as_bytes()),
            });
            let options = ClientOptions {
                host: cfg.url.host.clone(),
                port: cfg.url.port,
                tls,
                connect_timeout: cfg.connect_timeout,
                request_timeout: cfg.request_timeout,
                max_head_bytes: cfg.max_response_head_bytes,
                max_body_bytes: cfg.max_response_body_bytes,
                max_idle: cfg.max_in_flight,
                socket_mark: cfg.socket_mark,
                own: cfg.own.clone(),
            };
            let h2 = H2Client::new(ClientOptions {
                tls: h2_tls,
                ..options.clone()
            });
            let client = ShadowClient::new(options);
            let pending = Arc::new(Pending::default());
            let bytes = Arc::new(QueuedBytes {
                held: AtomicUsize::new(0),
                max: cfg.max_queue_bytes,
            });
            let (tx, rx) = queue::bounded(cfg.queue_len);
            let worker = Arc::new(TargetWorker {
                index,
                client,
                h2,
                scheme: cfg.url.scheme.as_str(),
                request_timeout: cfg.request_timeout,
                rules: cfg.rules,
                suffix: cfg.shadow_suffix,
                accounting: accounting.clone(),
                pending: pending.clone(),
                bytes: bytes.clone(),
                diff: cfg.diff.clone(),
            });
            let pool = Arc::new(ReplayPool {
                queue: rx,
                tasks: AtomicUsize::new(1),
                waiting: AtomicUsize::new(0),
                window: Mutex::new(Window::new(cfg.max_in_flight)),
            });
            runtime.spawn(replay_loop(worker, pool));
            let bucket = cfg.max_rps.map(|rate| {
                let burst = cfg
                    .max_rps_burst
                    .unwrap_or(rate.ceil().clamp(1.0, 1e6) as u32);
                Mutex::new(TokenBucket::new(rate, burst))
            });
            sides.push(TargetSide {
                diff: cfg.diff.clone(),
                filter: cfg.filter,
                sampler: Sampler::new(cfg.percent, cfg.sample_by, seed),
                bucket,
                queue: tx,
                pending,
                bytes,
            });
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("shadowtap-replay".into())
            .spawn(move || {
                // Tasks run while the thread waits here; dropping the runtime afterwards
                // cancels whatever is left.
                let _ = runtime.block_on(stopped);
            })?;
        let diff = sides
            .iter()
            .find_map(|t| t.diff.as_ref().map(|d| Arc::clone(&d.engine)));
        Ok(Self {
            diff,
            targets: sides,
            accounting,
            clock: Instant::now(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The response comparison, if one of the targets is its candidate.
    pub fn diff(&self) -> Option<&Arc<DiffEngine>> {
        self.diff.as_ref()
    }

    /// `hand_off` with the copies put on their queues at once; never blocks (a full
    /// queue counts `queue_full`).
    pub fn submit(&self, captured: Captured) {
        self.hand_off(captured, Handoff::Now { wait: false });
    }

    /// Like `submit`, but waits for room in a full queue instead of dropping: for
    /// replaying files, where nothing is live and every copy should go out.
    pub fn submit_waiting(&self, captured: Captured) {
        self.hand_off(captured, Handoff::Now { wait: true });
    }

    /// Hands the copies in `outbox` to their targets' queues (never blocks), then wakes
    /// each target that got some, once.
    pub fn send(&self, outbox: &mut Outbox) {
        let mut touched = 0u64;
        for (index, shared, size) in outbox.held.drain(..) {
            self.enqueue(index, shared, size, false);
            match 1u64.checked_shl(index as u32) {
                Some(bit) => touched |= bit,
                // Past 64 targets (not a real configuration), each copy wakes its target.
                None => self.targets[index].queue.wake(),
            }
        }
        for (index, t) in self.targets.iter().enumerate().take(64) {
            if touched & (1 << index) != 0 {
                t.queue.wake();
            }
        }
    }

    /// Takes the copies `outbox` holds without sending them (`--dry-run`): their bytes
    /// go back to their targets' budgets and the caller records their outcomes.
    pub fn take_held(&self, outbox: &mut Outbox) -> Vec<(usize, Arc<Captured>)> {
        outbox
            .held
            .drain(..)
            .map(|(index, shared, size)| {
                self.targets[index].bytes.give_back(size);
                (index, shared)
            })
            .collect()
    }

    /// Decides on a request for every target and counts what is decided here (filtered,
    /// not sampled, rate limited, queue full); the copies kept go on as `how` says. Call
    /// `Accounting::seen` first.
    pub fn hand_off(&self, captured: Captured, mut how: Handoff<'_>) {
        let wait = matches!(how, Handoff::Now { wait: true });
        let key = ConnectionKey {
            conn: captured.conn,
            client: captured.client,
            server: captured.server,
        };
        let size = request_bytes(&captured.request);
        // Into an `Arc` only once a queue takes it: most requests are not sampled, and
        // allocating and copying each of them was a share of the capture thread's time.
        let mut captured: Result<Captured, Arc<Captured>> = Ok(captured);
        for (index, t) in self.targets.iter().enumerate() {
            let counters = self.accounting.target(index);
            let request = match &captured {
                Ok(owned) => &owned.request,
                Err(shared) => &shared.request,
            };
            if !t.filter.allows(request) {
                counters.record(request.protocol, Outcome::Filtered);
                continue;
            }
            if !t.sampler.keep(&key, request) {
                counters.record(request.protocol, Outcome::NotSampled);
                continue;
            }
            if let Some(bucket) = &t.bucket {
                let now = u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let taken = bucket
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .try_take(now);
                if !taken {
                    counters.record(request.protocol, Outcome::RateLimited);
                    continue;
                }
            }
            let mut room = t.bytes.try_take(size);
            if !room && wait {
                // Tasks give bytes back as they finish; a file replay waits for them.
                while !t.bytes.try_take(size) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                room = true;
            }
            if !room {
                counters.record(request.protocol, Outcome::QueueFull);
                continue;
            }
            let shared = match captured {
                Ok(owned) => Arc::new(owned),
                Err(shared) => shared,
            };
            match &t.diff {
                Some(d) if d.baseline => d.engine.expect_baseline(shared.id),
                Some(d) => d.engine.expect(shared.id, &shared.request),
                None => {}
            }
            captured = Err(Arc::clone(&shared));
            match &mut how {
                // Its bytes are taken: the outbox is inside the queue's byte budget.
                Handoff::Later(outbox) => outbox.held.push((index, shared, size)),
                Handoff::Now { wait } => {
                    self.enqueue(index, shared, size, *wait);
                    t.queue.wake();
                }
            }
        }
        // No target kept it (nearly every request at low percentages): the framer on this
        // thread builds the next request in its buffers instead of allocating new ones.
        if let Ok(unsent) = captured {
            crate::http::recycle(unsent.request);
        }
    }

    /// Puts a copy whose `size` bytes are taken from target `index`'s budget on its queue.
    fn enqueue(&self, index: usize, shared: Arc<Captured>, size: usize, wait: bool) {
        let t = &self.targets[index];
        let counters = self.accounting.target(index);
        // Counted before the send so that a task finishing at once finds its unit.
        let protocol = shared.request.protocol;
        t.pending.add(protocol);
        counters.enqueued();
        let sent = if wait {
            t.queue.put_waiting(shared);
            true
        } else {
            t.queue.try_put(shared).is_ok()
        };
        if !sent {
            t.bytes.give_back(size);
            // Nothing else can take this unit: submit and shutdown both need the
            // replayer and tasks only settle what was queued.
            t.pending.take_one(protocol);
            counters.dequeued();
            counters.record(protocol, Outcome::QueueFull);
        }
    }

    /// Requests queued or in flight, over all targets.
    pub fn pending(&self) -> u64 {
        self.targets.iter().map(|t| t.pending.get()).sum()
    }

    /// Stops taking requests, lets queued and in-flight ones finish until `deadline` has
    /// passed, counts those still unsettled as `replay_error` (timeout), and stops the
    /// runtime.
    pub fn shutdown(mut self, deadline: Duration) {
        let end = Instant::now() + deadline;
        let pendings: Vec<Arc<Pending>> = self.targets.iter().map(|t| t.pending.clone()).collect();
        // Closing the queues lets each dispatcher finish once it has drained its queue.
        self.targets.clear();
        while pendings.iter().any(|p| p.get() > 0) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
        for (index, p) in pendings.iter().enumerate() {
            for (protocol, left) in p.take_all() {
                for _ in 0..left {
                    self.accounting
                        .target(index)
                        .record(protocol, Outcome::ReplayError(ReplayErrorKind::Timeout));
                }
            }
        }
        self.stop_runtime();
    }

    fn stop_runtime(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Replayer {
    fn drop(&mut self) {
        self.stop_runtime();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: usize) -> Request {
        Request {
            ts_nanos: 0,
            method: "GET".into(),
            target: b"/".to_vec(),
            version_minor: 1,
            headers: (0..headers)
                .map(|i| Header {
                    name: format!("X-{i}"),
                    value: b"v".to_vec(),
                })
                .collect(),
            body: Vec::new(),
            chunked: false,
            trailers: Vec::new(),
            ..Request::default()
        }
    }

    /// Answers as fast as the best grow the window by one per window of them; a timeout
    /// halves it, and the other copies of the same window that time out do not cut again.
    #[test]
    fn window_grows_while_answers_are_fast_and_halves_once_per_window_on_timeouts() {
        let now = Instant::now();
        let mut w = Window::new(64);
        assert_eq!(w.limit, INITIAL_WINDOW);
        for _ in 0..200 {
            let seq = w.begin(now);
            assert!(!w.update(seq, Signal::Answered(1_000_000), now));
        }
        let grown = w.limit;
        assert!(grown > 10, "{grown}");
        let started: Vec<u64> = (0..5).map(|_| w.begin(now)).collect();
        let cuts = started
            .iter()
            .filter(|&&seq| w.update(seq, Signal::Congested, now))
            .count();
        assert_eq!(cuts, 1);
        assert_eq!(w.limit, grown / 2);
        // A copy answered a second late (a SYN resent) is a cut too.
        let seq = w.begin(now);
        assert!(w.update(seq, Signal::Answered(1_000_000_000), now));
        assert_eq!(w.limit, grown / 4);
        // Answers that queue (ten times the best) do not grow it.
        let before = w.limit;
        for _ in 0..100 {
            let seq = w.begin(now);
            w.update(seq, Signal::Answered(10_000_000), now);
        }
        assert_eq!(w.limit, before);
    }

    /// A target that never answered is not overloaded: its timeouts leave the window as
    /// it is, and quick refusals (down, not resolved) let it grow as answers would.
    #[test]
    fn a_target_that_never_answered_is_not_cut() {
        let now = Instant::now();
        let mut w = Window::new(64);
        for _ in 0..10 {
            let seq = w.begin(now);
            assert!(!w.update(seq, Signal::Congested, now));
        }
        assert_eq!(w.limit, INITIAL_WINDOW);
        for _ in 0..200 {
            let seq = w.begin(now);
            assert!(!w.update(seq, Signal::Refused, now));
        }
        assert!(w.limit > 10, "{}", w.limit);
        // Once it has answered, a refusal is a cut.
        let seq = w.begin(now);
        w.update(seq, Signal::Answered(1_000_000), now);
        let seq = w.begin(now);
        assert!(w.update(seq, Signal::Refused, now));
    }

    #[test]
    fn window_never_passes_max_in_flight_nor_drops_below_one() {
        let now = Instant::now();
        let mut w = Window::new(3);
        for _ in 0..100 {
            let seq = w.begin(now);
            w.update(seq, Signal::Answered(1_000_000), now);
        }
        assert_eq!(w.limit, 3);
        for _ in 0..10 {
            let seq = w.begin(now);
            w.update(seq, Signal::Congested, now);
        }
        assert_eq!(w.limit, 1);
        assert_eq!(Window::new(1).limit, 1);
    }

    #[test]
    fn heap_bytes_rounds_like_the_allocator() {
        assert_eq!(heap_bytes(0), 0);
        assert_eq!(heap_bytes(1), 32);
        assert_eq!(heap_bytes(24), 32);
        assert_eq!(heap_bytes(25), 48);
        assert_eq!(heap_bytes(1000), 1008);
    }

    /// A header costs its slot and two allocations of at least 32 bytes, however short
    /// its name and value: 120 one-byte values are ~14 KB, not 120 times a few bytes.
    #[test]
    fn a_copy_is_charged_its_allocations_not_its_lengths() {
        let small = request(120);
        let per_header = size_of::<Header>() + 2 * 32;
        assert!(
            request_bytes(&small) >= 120 * per_header,
            "{}",
            request_bytes(&small)
        );
        // Spare capacity (a recycled request's buffers) is memory too.
        let mut roomy = request(120);
        roomy.body.reserve_exact(16 * 1024);
        roomy.headers.reserve_exact(1000);
        assert!(
            request_bytes(&roomy) >= request_bytes(&small) + 16 * 1024 + 1000 * size_of::<Header>()
        );
    }
}
