//! Every request ends in exactly one `Outcome`, per target. The counters live here, and
//! only here: the summary, `/metrics` and the tests read the same numbers.

use std::sync::atomic::{AtomicU64, Ordering};

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
    ReplayError(ReplayErrorKind),
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
    pub const ALL: [Outcome; 17] = [
        Outcome::Replayed(StatusClass::Informational),
        Outcome::Replayed(StatusClass::Success),
        Outcome::Replayed(StatusClass::Redirection),
        Outcome::Replayed(StatusClass::ClientError),
        Outcome::Replayed(StatusClass::ServerError),
        Outcome::NotSampled,
        Outcome::Filtered,
        Outcome::RateLimited,
        Outcome::QueueFull,
        Outcome::Incomplete,
        Outcome::TooLarge,
        Outcome::Unparseable,
        Outcome::ReplayError(ReplayErrorKind::Connect),
        Outcome::ReplayError(ReplayErrorKind::Timeout),
        Outcome::ReplayError(ReplayErrorKind::Reset),
        Outcome::ReplayError(ReplayErrorKind::Tls),
        Outcome::ReplayError(ReplayErrorKind::Protocol),
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
            Outcome::Replayed(c) => (
                "replayed",
                match c {
                    StatusClass::Informational => "1xx",
                    StatusClass::Success => "2xx",
                    StatusClass::Redirection => "3xx",
                    StatusClass::ClientError => "4xx",
                    StatusClass::ServerError => "5xx",
                },
            ),
            Outcome::NotSampled => ("not_sampled", ""),
            Outcome::Filtered => ("filtered", ""),
            Outcome::RateLimited => ("rate_limited", ""),
            Outcome::QueueFull => ("queue_full", ""),
            Outcome::Incomplete => ("incomplete", ""),
            Outcome::TooLarge => ("too_large", ""),
            Outcome::Unparseable => ("unparseable", ""),
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

/// Outcome counters of one target. Lock-free; shared between the parse thread and the
/// replay tasks.
#[derive(Debug, Default)]
pub struct TargetCounters {
    counts: [AtomicU64; Outcome::ALL.len()],
}

impl TargetCounters {
    pub fn record(&self, outcome: Outcome) {
        self.counts[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts[outcome.index()].load(Ordering::Relaxed)
    }

    /// Sum over every outcome: equals the requests seen once all are settled.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Request accounting for every target. Requests that end before any target is chosen
/// (incomplete, too large, unparseable) are recorded for every target, so that for each
/// target the outcomes add up to `requests_seen`.
#[derive(Debug)]
pub struct Accounting {
    names: Vec<String>,
    targets: Vec<TargetCounters>,
    seen: AtomicU64,
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
            seen: AtomicU64::new(0),
        }
    }

    /// A request was seen (complete or not). Call once per request, before its outcome.
    pub fn seen(&self) {
        self.seen.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests_seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// An outcome reached before targets are chosen: counted for every target.
    pub fn record_all(&self, outcome: Outcome) {
        for t in &self.targets {
            t.record(outcome);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_add_up_per_target() {
        let acc = Accounting::new(vec!["a".into(), "b".into()]);
        for _ in 0..3 {
            acc.seen();
        }
        acc.record_all(Outcome::Unparseable);
        acc.target(0).record(Outcome::Replayed(StatusClass::Success));
        acc.target(0).record(Outcome::NotSampled);
        acc.target(1).record(Outcome::QueueFull);
        acc.target(1).record(Outcome::ReplayError(ReplayErrorKind::Reset));
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
