//! SIGINT/SIGTERM for `run` and `replay`: the first asks for a graceful stop (stop
//! reading, drain the copies in flight up to `--drain-timeout`, print the summary), a
//! second one ends the drain at once. The exit code of a run a signal stopped is
//! 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells report it.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Signals received since `install`.
static COUNT: AtomicU32 = AtomicU32::new(0);
/// The number of the first signal received (0: none).
static FIRST: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomics: async-signal-safe.
    let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Forgets earlier signals and routes SIGINT and SIGTERM here.
pub fn install() {
    COUNT.store(0, Ordering::SeqCst);
    FIRST.store(0, Ordering::SeqCst);
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// A signal asked the run to stop.
pub fn stop_requested() -> bool {
    COUNT.load(Ordering::SeqCst) > 0
}

/// A second signal: stop waiting for anything.
pub fn forced() -> bool {
    COUNT.load(Ordering::SeqCst) > 1
}

/// The first signal received, if any.
pub fn received() -> Option<i32> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// The exit code of a run stopped by `sig`: 128 + its number (130, 143).
pub fn exit_code(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(1)
}

/// Sleeps `d`, in slices, returning early when a signal asks the run to stop.
pub fn sleep(d: Duration) {
    let end = Instant::now() + d;
    loop {
        if stop_requested() {
            return;
        }
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}
