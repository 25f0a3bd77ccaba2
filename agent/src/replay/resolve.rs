//! Target names to addresses, without letting a slow resolver take threads, memory or
//! the shutdown deadline (issue 19, class 7).
//!
//! getaddrinfo blocks and cannot be cancelled. `tokio::net::lookup_host` runs it on the
//! blocking pool, one thread per call: a resolver that hangs took a thread per connect
//! (up to 512), and dropping the runtime at shutdown waited for all of them. Here:
//! - a fixed number of resolver threads per [`Resolver`] (started at the first name that
//!   needs one; IP literals are never resolved),
//! - one lookup at a time per name: connects that need the same name wait for the same
//!   answer, so a hung lookup holds one thread and one queue slot, whatever the load,
//! - each waiter gives up after its timeout (the connect timeout), counted as a connect
//!   error; a lookup that ran past it is left to finish on its thread and the next
//!   connect starts a new one, so a name is looked up at most once per timeout, on
//!   threads that do not grow in number (lookups wait in a bounded queue for one),
//! - answers are cached ([`Ttl`]), failures briefly, so a name that moves is followed
//!   within seconds and a name that does not resolve costs one lookup per second,
//! - a late answer still lands in the cache: a resolver slower than the connect timeout
//!   costs the copies of that wait, not all of them.
//!
//! The lookup itself is a [`Lookup`], so tests put in one that sleeps.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::watch;

/// A blocking name lookup, run on the resolver's own threads.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The system resolver (getaddrinfo: /etc/hosts, DNS, whatever nsswitch says).
#[derive(Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// Why a name gave no address.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("DNS timeout")]
    Timeout,
    #[error("no address for the name: {0}")]
    NotFound(String),
    #[error("DNS lookups queued past the resolver's capacity")]
    Overloaded,
}

/// How long answers are kept.
#[derive(Clone, Copy, Debug)]
pub struct Ttl {
    /// Addresses; as Envoy refreshes a STRICT_DNS cluster by default, so a target that
    /// moves is followed within seconds.
    pub found: Duration,
    /// A name that did not resolve; short, so that one that comes back is used soon.
    pub failed: Duration,
}

impl Default for Ttl {
    fn default() -> Self {
        Self {
            found: Duration::from_secs(5),
            failed: Duration::from_secs(1),
        }
    }
}

type Key = (String, u16);
type Answer = Result<Arc<[SocketAddr]>, ResolveError>;

#[derive(Default)]
struct Slot {
    cached: Option<(Answer, Instant)>,
    /// The latest lookup, queued or running: when it started, and where its end is
    /// announced.
    running: Option<Running>,
    /// Numbers lookups, so that a late one does not clear a newer one's `running`.
    generation: u64,
}

struct Running {
    started: Instant,
    generation: u64,
    done: watch::Receiver<bool>,
}

struct Job {
    key: Key,
    generation: u64,
    done: watch::Sender<bool>,
}

/// Names to addresses for the replay clients. Cheap to share (`Arc`).
pub struct Resolver {
    lookup: Arc<dyn Lookup>,
    threads: usize,
    ttl: Ttl,
    slots: Arc<Mutex<HashMap<Key, Slot>>>,
    jobs: OnceLock<SyncSender<Job>>,
}

/// Resolver threads of the process-wide resolver: lookups at once, of different names
/// or of a name whose previous lookups hang.
const THREADS: usize = 4;

/// Lookups waiting for a thread. With one lookup per name at a time this is reached only
/// with more hung names than this, and then a lookup fails as `Overloaded`.
const QUEUED_JOBS: usize = 64;

impl Resolver {
    pub fn new(lookup: Arc<dyn Lookup>, threads: usize, ttl: Ttl) -> Self {
        Self {
            lookup,
            threads: threads.max(1),
            ttl,
            slots: Arc::new(Mutex::new(HashMap::new())),
            jobs: OnceLock::new(),
        }
    }

    /// The resolver every target shares unless a test gives a client its own.
    pub fn system() -> Arc<Resolver> {
        static SYSTEM: OnceLock<Arc<Resolver>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                Arc::new(Resolver::new(
                    Arc::new(SystemLookup),
                    THREADS,
                    Ttl::default(),
                ))
            })
            .clone()
    }

    /// Addresses of `host:port`, waiting at most `timeout` (the connect timeout).
    pub async fn resolve(&self, host: &str, port: u16, timeout: Duration) -> Answer {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Arc::from([SocketAddr::new(ip, port)]));
        }
        let key: Key = (host.to_string(), port);
        let mut done = {
            let now = Instant::now();
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = slots.entry(key.clone()).or_default();
            if let Some((answer, until)) = &slot.cached {
                if *until > now {
                    return answer.clone();
                }
            }
            match &slot.running {
                // Waiting together for the same lookup.
                Some(r) if now.duration_since(r.started) < timeout => r.done.clone(),
                // None yet, or the latest one has run past a connect's timeout: a new
                // one (getaddrinfo retries on its own, but /etc/hosts may have changed
                // meanwhile). At most one per timeout per name, on the fixed threads.
                _ => {
                    let (tx, rx) = watch::channel(false);
                    slot.generation += 1;
                    self.submit(Job {
                        key: key.clone(),
                        generation: slot.generation,
                        done: tx,
                    })?;
                    slot.running = Some(Running {
                        started: now,
                        generation: slot.generation,
                        done: rx.clone(),
                    });
                    rx
                }
            }
        };
        if tokio::time::timeout(timeout, done.wait_for(|d| *d))
            .await
            .is_err()
        {
            return Err(ResolveError::Timeout);
        }
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.get(&key).and_then(|s| s.cached.as_ref()) {
            Some((answer, _)) => answer.clone(),
            // Forgotten in between (a connect failed on them): as good as timed out.
            None => Err(ResolveError::Timeout),
        }
    }

    /// [`Resolver::resolve`] for a caller outside the runtime (the check at start).
    pub fn resolve_blocking(&self, host: &str, port: u16, timeout: Duration) -> Answer {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| ResolveError::NotFound(format!("cannot wait for the lookup: {e}")))?;
        runtime.block_on(self.resolve(host, port, timeout))
    }

    /// Forgets the addresses of a name, after none of them took a connection.
    pub fn forget(&self, host: &str, port: u16) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(&(host.to_string(), port)) {
            if matches!(slot.cached, Some((Ok(_), _))) {
                slot.cached = None;
            }
        }
    }

    fn submit(&self, job: Job) -> Result<(), ResolveError> {
        let jobs = self.jobs.get_or_init(|| self.start_threads());
        match jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                Err(ResolveError::Overloaded)
            }
        }
    }

    fn start_threads(&self) -> SyncSender<Job> {
        let (tx, rx) = sync_channel::<Job>(QUEUED_JOBS);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..self.threads {
            let rx = Arc::clone(&rx);
            let lookup = Arc::clone(&self.lookup);
            let slots = Arc::clone(&self.slots);
            let ttl = self.ttl;
            // Detached: a thread stuck in getaddrinfo must not hold up the exit.
            let spawned = std::thread::Builder::new()
                .name(format!("shadowtap-dns-{i}"))
                .spawn(move || loop {
                    let job = {
                        let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
                        match rx.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    };
                    let found = lookup.lookup(&job.key.0, job.key.1);
                    let (answer, ttl) = match found {
                        Ok(addrs) if !addrs.is_empty() => (Ok(Arc::from(addrs)), ttl.found),
                        Ok(_) => (Err(ResolveError::NotFound("no address".into())), ttl.failed),
                        Err(e) => (Err(ResolveError::NotFound(e.to_string())), ttl.failed),
                    };
                    let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
                    let slot = slots.entry(job.key).or_default();
                    slot.cached = Some((answer, Instant::now() + ttl));
                    if slot.running.as_ref().map(|r| r.generation) == Some(job.generation) {
                        slot.running = None;
                    }
                    let _ = job.done.send(true);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a DNS resolver thread");
            }
        }
        tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A lookup that takes `delay` and counts its calls; `127.0.0.7` for every name.
    struct SlowLookup {
        delay: Duration,
        calls: AtomicUsize,
    }

    impl SlowLookup {
        fn new(delay: Duration) -> Arc<Self> {
            Arc::new(Self {
                delay,
                calls: AtomicUsize::new(0),
            })
        }
    }

    impl Lookup for SlowLookup {
        fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            if host.ends_with(".invalid") {
                return Err(io::Error::new(io::ErrorKind::NotFound, "NXDOMAIN"));
            }
            Ok(vec![SocketAddr::from(([127, 0, 0, 7], port))])
        }
    }

    fn dns_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(Result::ok)
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.starts_with("shadowtap-dns"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn ip_literals_are_never_looked_up() {
        let lookup = SlowLookup::new(Duration::ZERO);
        let r = Resolver::new(lookup.clone(), 1, Ttl::default());
        let a = r.resolve("::1", 80, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            &a[..],
            &[SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 80))]
        );
        let a = r
            .resolve("10.1.2.3", 9, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(&a[..], &[SocketAddr::from(([10, 1, 2, 3], 9))]);
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 0);
        assert!(r.jobs.get().is_none(), "no thread started for literals");
    }

    #[tokio::test]
    async fn answers_and_failures_are_cached_for_their_ttl() {
        let lookup = SlowLookup::new(Duration::ZERO);
        let ttl = Ttl {
            found: Duration::from_millis(300),
            failed: Duration::from_millis(100),
        };
        let r = Resolver::new(lookup.clone(), 1, ttl);
        let t = Duration::from_secs(2);
        for _ in 0..5 {
            assert!(r.resolve("stage", 80, t).await.is_ok());
            assert!(matches!(
                r.resolve("gone.invalid", 80, t).await,
                Err(ResolveError::NotFound(_))
            ));
        }
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = r.resolve("gone.invalid", 80, t).await;
        assert!(r.resolve("stage", 80, t).await.is_ok());
        assert_eq!(
            lookup.calls.load(Ordering::SeqCst),
            3,
            "only the failure expired"
        );
        r.forget("stage", 80);
        assert!(r.resolve("stage", 80, t).await.is_ok());
        assert_eq!(
            lookup.calls.load(Ordering::SeqCst),
            4,
            "forgotten: looked up again"
        );
    }

    /// A lookup that hangs: hundreds of connects wait for the one lookup, each fails
    /// within its timeout as a DNS timeout, later ones at once; the resolver keeps its
    /// threads; the late answer is used once it comes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_lookup_keeps_threads_fixed_and_each_copy_within_its_timeout() {
        let lookup = SlowLookup::new(Duration::from_millis(1500));
        let r = Arc::new(Resolver::new(lookup.clone(), 2, Ttl::default()));
        let timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let waiters: Vec<_> = (0..300)
            .map(|_| {
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    let t0 = std::time::Instant::now();
                    (r.resolve("slow.stage", 80, timeout).await, t0.elapsed())
                })
            })
            .collect();
        for w in waiters {
            let (answer, took) = w.await.unwrap();
            assert_eq!(answer, Err(ResolveError::Timeout));
            assert!(took < timeout + Duration::from_millis(150), "{took:?}");
        }
        assert!(started.elapsed() < Duration::from_millis(1000));
        assert_eq!(
            lookup.calls.load(Ordering::SeqCst),
            1,
            "one lookup per name"
        );
        // Two of this resolver's; the other tests' resolvers may have one each running.
        assert!(dns_threads() <= 4, "{} resolver threads", dns_threads());
        // Past the timeout the next connect starts another lookup, and waits its own
        // timeout; while both threads hang, lookups queue, one per timeout.
        for n in 2..=4 {
            let t0 = std::time::Instant::now();
            assert_eq!(
                r.resolve("slow.stage", 80, timeout).await,
                Err(ResolveError::Timeout)
            );
            let took = t0.elapsed();
            assert!(took >= timeout && took < timeout + Duration::from_millis(150));
            assert!(lookup.calls.load(Ordering::SeqCst) <= n.min(2));
        }
        assert!(dns_threads() <= 4, "{} resolver threads", dns_threads());
        // The first lookup's late answer is cached and used at once.
        let wait = Duration::from_millis(1600).saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
        let t0 = std::time::Instant::now();
        let late = r.resolve("slow.stage", 80, timeout).await.unwrap();
        assert_eq!(late[0].port(), 80);
        assert!(t0.elapsed() < Duration::from_millis(50));
    }

    /// The client counts a name that does not resolve in time as a connect error, within
    /// its connect timeout.
    #[tokio::test]
    async fn a_copy_to_a_hung_name_fails_as_connect_within_the_connect_timeout() {
        use crate::metrics::ReplayErrorKind;
        use crate::replay::client::{ClientOptions, ShadowClient};
        let lookup = SlowLookup::new(Duration::from_secs(2));
        let resolver = Arc::new(Resolver::new(lookup, 1, Ttl::default()));
        let client = ShadowClient::with_resolver(
            ClientOptions {
                host: "slow.stage".into(),
                port: 80,
                tls: None,
                connect_timeout: Duration::from_millis(300),
                request_timeout: Duration::from_secs(1),
                max_head_bytes: 4096,
                max_body_bytes: 4096,
                max_idle: 1,
                socket_mark: 0,
                own: None,
            },
            resolver,
        );
        let t0 = std::time::Instant::now();
        let sent = client
            .send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false, true)
            .await;
        assert_eq!(sent, Err(ReplayErrorKind::Connect));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(600),
            "{took:?}"
        );
    }
}
