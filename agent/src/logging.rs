//! Log output and the rate limit of warnings that could repeat per packet or request.
//!
//! Logs go to stderr as text or JSON lines (`--log-format`), level from `RUST_LOG`
//! (default `info`). What is logged never includes request bodies or header values:
//! requests are described by counts and outcomes only.
//!
//! A warning on a per-packet or per-request path goes through [`warn_limited!`] or
//! [`error_limited!`]: each call site lets one event through per [`LOG_INTERVAL`] and
//! adds `suppressed = N` (events dropped since the last one let through) to it.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::LogFormat;

/// How often one rate-limited call site may log.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// `--log-format json` was chosen: every line shadowtap writes (logs, summaries,
/// progress, errors) is then one JSON object.
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether lines are written as JSON objects (`--log-format json`).
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// `1 request`, `2 requests`, `0 requests`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A line for a person that is not a log event (an error that ends the run, a note):
/// on stderr, as text or as one JSON object with the level and message.
pub fn line_to_stderr(level: &str, text: &str) {
    if json() {
        // The shape of the subscriber's own JSON lines, so one parser reads them all.
        eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": utc_now(),
                "level": level,
                "fields": { "message": text },
                "target": "shadowtap",
            })
        );
    } else {
        eprintln!("shadowtap: {text}");
    }
}

/// The time now as the subscriber writes it: `2026-12-04T18:01:49.152891Z`.
fn utc_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        now.subsec_micros()
    )
}

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, not in a pod's log stream.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Err only when a subscriber is already set (tests): keep that one.
    let _ = match format {
        LogFormat::Json => logs.json().try_init(),
        LogFormat::Text => logs.try_init(),
    };
}

/// Lets one event through per interval; counts the others.
#[derive(Debug)]
pub struct RateLimit {
    interval_nanos: u64,
    /// Monotonic nanos from which the next event may pass.
    next: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval_nanos: interval.as_nanos() as u64,
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last one)` when this event may be logged now.
    pub fn check(&self) -> Option<u64> {
        self.check_at(monotonic_nanos())
    }

    /// [`check`](Self::check) at a given time (monotonic nanos), for tests.
    pub fn check_at(&self, now_nanos: u64) -> Option<u64> {
        let next = self.next.load(Ordering::Relaxed);
        let due = now_nanos >= next;
        // One thread wins the slot when several hit the same call site at once.
        if due
            && self
                .next
                .compare_exchange(
                    next,
                    now_nanos.saturating_add(self.interval_nanos),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Nanos since the first call in this process (never 0 after the first interval).
pub fn monotonic_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `tracing::warn!` at most once per [`LOG_INTERVAL`] for this call site, with the
/// number of suppressed events as the field `suppressed`.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::logging::RateLimit =
            $crate::logging::RateLimit::new($crate::logging::LOG_INTERVAL);
        if let Some(suppressed) = LIMIT.check() {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

/// `tracing::error!` at most once per [`LOG_INTERVAL`] for this call site.
#[macro_export]
macro_rules! error_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::logging::RateLimit =
            $crate::logging::RateLimit::new($crate::logging::LOG_INTERVAL);
        if let Some(suppressed) = LIMIT.check() {
            ::tracing::error!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn utc_now_is_shaped_like_the_subscribers_timestamps() {
        let t = utc_now();
        assert_eq!(t.len(), "2026-12-04T18:01:49.152891Z".len(), "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }

    #[test]
    fn one_event_per_interval_with_the_count_of_the_others() {
        let limit = RateLimit::new(Duration::from_secs(10));
        assert_eq!(limit.check_at(5 * SEC), Some(0));
        for t in 6..15 {
            assert_eq!(limit.check_at(t * SEC), None, "at {t}s");
        }
        assert_eq!(limit.check_at(15 * SEC), Some(9));
        assert_eq!(limit.check_at(15 * SEC + 1), None);
        assert_eq!(limit.check_at(40 * SEC), Some(1));
    }

    /// Log lines written to a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_warning_in_a_loop_is_logged_once_per_interval() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for packet in 0..1000 {
                crate::warn_limited!(packet, "capture read failed");
            }
        });
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("WARN"), "{text}");
        assert!(lines[0].contains("suppressed=0 packet=0"), "{text}");
    }

    #[test]
    fn threads_hammering_one_site_let_one_through_per_interval() {
        let limit = std::sync::Arc::new(RateLimit::new(Duration::from_secs(10)));
        let passed: u64 = (0..4)
            .map(|_| {
                let limit = limit.clone();
                std::thread::spawn(move || {
                    (0..10_000)
                        .filter(|_| limit.check_at(SEC).is_some())
                        .count() as u64
                })
            })
            .map(|h| h.join().expect("thread"))
            .sum();
        assert_eq!(passed, 1);
        assert_eq!(limit.check_at(11 * SEC), Some(39_999));
    }
}
