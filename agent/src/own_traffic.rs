//! The agent's own connections to its targets, so that capture never shadows them.
//! The replay client registers each connection's local address right after connect,
//! before it writes a byte; the capture side drops segments to or from a registered
//! address. eBPF also skips them in the kernel by socket mark, and libpcap by filter;
//! this registry is what makes it exact for both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How long a closed connection's address stays registered: its last FIN/ACKs may
/// still be on their way through the capture.
const LINGER: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct OwnConnections {
    /// local address -> when it closed (None while open).
    addrs: RwLock<HashMap<SocketAddr, Option<Instant>>>,
    /// Entries in `addrs`, readable without the lock (the common case is zero).
    len: AtomicUsize,
    /// Bumped on every change, so a capture filter knows when to rebuild.
    generation: AtomicU64,
}

impl OwnConnections {
    pub fn opened(&self, local: SocketAddr) {
        if let Ok(mut addrs) = self.addrs.write() {
            let now = Instant::now();
            addrs.retain(|_, closed| closed.is_none_or(|t| now.duration_since(t) < LINGER));
            addrs.insert(local, None);
            self.len.store(addrs.len(), Ordering::Release);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn closed(&self, local: SocketAddr) {
        if let Ok(mut addrs) = self.addrs.write() {
            if let Some(closed) = addrs.get_mut(&local) {
                *closed = Some(Instant::now());
            }
        }
    }

    /// Whether either end of a segment is one of ours.
    pub fn involves(&self, a: SocketAddr, b: SocketAddr) -> bool {
        if self.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.addrs
            .read()
            .map(|addrs| addrs.contains_key(&a) || addrs.contains_key(&b))
            .unwrap_or(false)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The registered addresses (for a kernel capture filter).
    pub fn snapshot(&self) -> Vec<SocketAddr> {
        self.addrs
            .read()
            .map(|addrs| addrs.keys().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_addresses_are_recognised_on_either_side() {
        let own = OwnConnections::default();
        let ours: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let target: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert!(!own.involves(ours, target));
        let g0 = own.generation();
        own.opened(ours);
        assert!(own.generation() > g0);
        assert!(own.involves(ours, target));
        assert!(own.involves(target, ours));
        assert!(!own.involves(client, target));
        own.closed(ours);
        // Still registered while its last packets may be in flight.
        assert!(own.involves(ours, target));
        assert_eq!(own.snapshot(), vec![ours]);
    }
}
