//! Which requests a target keeps (SPEC.md "Sampling", like Istio's `mirrorPercentage`)
//! and the per-target rate cap. Pure: no I/O, no clock (time comes in as nanoseconds).
//!
//! A decision maps a 64-bit value `x` (a PRNG draw or a seeded hash) onto
//! `[0, 1_000_000)` and keeps the request when it falls below the percent in parts per
//! million. Because the threshold only moves the cut, a key kept at p% is kept at every
//! q > p% (monotone), and targets with different seeds decide independently.
//!
//! Requests without the sampling header in `Header` mode fall back to an independent
//! per-request draw: they have no key that could keep them together, and dropping them
//! all (or keeping them all) would skew the share the user asked for.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use crate::request::Request;

/// Parts per million in 100%.
pub const PPM_ALL: u32 = 1_000_000;

/// A share 0..=100% in steps of 0.0001% (one part per million).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u32);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PercentError {
    #[error("percent is empty; give a number from 0 to 100, like 12.5")]
    Empty,
    #[error("percent {0:?} is not a number from 0 to 100 (digits, optionally `.` and decimals)")]
    NotANumber(String),
    #[error("percent {0:?} has more than 4 decimals; the finest step is 0.0001")]
    TooPrecise(String),
    #[error("percent {0:?} is above 100")]
    OutOfRange(String),
}

impl Percent {
    pub const ALL: Percent = Percent(PPM_ALL);
    pub const NONE: Percent = Percent(0);

    /// From parts per million; `None` above 1_000_000.
    pub fn from_ppm(ppm: u32) -> Option<Self> {
        (ppm <= PPM_ALL).then_some(Self(ppm))
    }

    pub fn ppm(self) -> u32 {
        self.0
    }
}

impl std::str::FromStr for Percent {
    type Err = PercentError;

    /// Strict decimal: `12`, `12.5`, `0.0001`, `100.0`; optional trailing `%`. No sign,
    /// exponent, spaces inside, or more than 4 decimals.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let t = t.strip_suffix('%').unwrap_or(t);
        if t.is_empty() {
            return Err(PercentError::Empty);
        }
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || (t.contains('.') && frac.is_empty()) {
            return Err(PercentError::NotANumber(text.to_string()));
        }
        if frac.len() > 4 {
            return Err(PercentError::TooPrecise(text.to_string()));
        }
        let int = int.trim_start_matches('0');
        if int.len() > 3 {
            return Err(PercentError::OutOfRange(text.to_string()));
        }
        let whole: u32 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| PercentError::NotANumber(text.to_string()))?
        };
        let mut scaled = 0u32;
        for i in 0..4 {
            scaled = scaled * 10 + frac.as_bytes().get(i).map_or(0, |b| u32::from(b - b'0'));
        }
        let ppm = whole * 10_000 + scaled;
        Percent::from_ppm(ppm).ok_or_else(|| PercentError::OutOfRange(text.to_string()))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 10_000, self.0 % 10_000);
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let frac = format!("{frac:04}");
            write!(f, "{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// What a consistent decision is keyed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleBy {
    /// An independent draw per request.
    Random,
    /// Whole connections: client and server address plus the caller's connection id.
    Connection,
    /// Whole keys: the value of this header (first occurrence).
    Header(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("--sample-by {0:?} is not `request`, `connection` or `header:NAME`")]
pub struct SampleByError(String);

impl std::str::FromStr for SampleBy {
    type Err = SampleByError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "request" | "random" => Ok(SampleBy::Random),
            "connection" => Ok(SampleBy::Connection),
            _ => match s.split_once(':') {
                Some(("header", name))
                    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    Ok(SampleBy::Header(name.to_string()))
                }
                _ => Err(SampleByError(s.to_string())),
            },
        }
    }
}

/// The identity of the connection a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    /// Distinguishes a reused 4-tuple (the caller's flow id).
    pub conn: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// The sampling decision of one target. `&self` everywhere: the random stream is a
/// splitmix64 counter in an atomic, so the caller needs no lock.
#[derive(Debug)]
pub struct Sampler {
    percent: Percent,
    by: SampleBy,
    seed: u64,
    state: AtomicU64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's finaliser: a bijective mix with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded 64-bit hash of bytes, stable across processes and releases (unlike std's
/// `DefaultHasher`), so every node of a DaemonSet keeps the same keys.
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = mix64(seed ^ (bytes.len() as u64).wrapping_mul(GOLDEN_GAMMA));
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix64(h ^ u64::from_le_bytes(w)).wrapping_add(GOLDEN_GAMMA);
    }
    let mut w = [0u8; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix64(h ^ u64::from_le_bytes(w))
}

fn addr_bytes(out: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => out.extend_from_slice(&v4.ip().octets()),
        SocketAddr::V6(v6) => out.extend_from_slice(&v6.ip().octets()),
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

impl Sampler {
    /// `seed` keys both the hash (consistent modes) and the random stream; give each
    /// target its own.
    pub fn new(percent: Percent, by: SampleBy, seed: u64) -> Self {
        Self {
            percent,
            by,
            seed,
            state: AtomicU64::new(mix64(seed ^ 0x5348_4144_4f57)),
        }
    }

    pub fn percent(&self) -> Percent {
        self.percent
    }

    fn below(&self, x: u64) -> bool {
        // Multiply-high maps x uniformly onto [0, PPM_ALL) without modulo bias.
        let slot = ((u128::from(x) * u128::from(PPM_ALL)) >> 64) as u32;
        slot < self.percent.0
    }

    fn draw(&self) -> u64 {
        mix64(self.state.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed))
    }

    /// Whether the key `bytes` is kept (consistent: same key, same answer).
    pub fn keeps_key(&self, bytes: &[u8]) -> bool {
        self.below(hash_bytes(self.seed, bytes))
    }

    /// Whether a request on `conn` is kept.
    pub fn keep(&self, conn: &ConnectionKey, req: &Request) -> bool {
        if self.percent.0 == 0 {
            return false;
        }
        if self.percent.0 == PPM_ALL {
            return true;
        }
        match &self.by {
            SampleBy::Random => self.below(self.draw()),
            SampleBy::Connection => {
                let mut key = Vec::with_capacity(44);
                key.extend_from_slice(&conn.conn.to_le_bytes());
                addr_bytes(&mut key, conn.client);
                addr_bytes(&mut key, conn.server);
                self.keeps_key(&key)
            }
            SampleBy::Header(name) => match req.header(name) {
                Some(value) => self.keeps_key(value),
                None => self.below(self.draw()),
            },
        }
    }
}

/// Per-target rate cap (`--max-rps`): `burst` tokens, refilled at `rate_per_sec`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last_nanos: Option<u64>,
}

impl TokenBucket {
    /// Starts full. A rate that is not a positive finite number never refills.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        let rate_per_sec = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            rate_per_sec
        } else {
            0.0
        };
        let burst = f64::from(burst.max(1));
        Self {
            rate_per_sec,
            burst,
            tokens: burst,
            last_nanos: None,
        }
    }

    /// Takes one token if there is one. Time that goes backwards adds nothing.
    pub fn try_take(&mut self, now_nanos: u64) -> bool {
        if let Some(last) = self.last_nanos {
            let elapsed = now_nanos.saturating_sub(last) as f64 / 1e9;
            self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        }
        self.last_nanos = Some(self.last_nanos.map_or(now_nanos, |l| l.max(now_nanos)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Header;
    use proptest::prelude::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        Request {
            ts_nanos: 0,
            method: "GET".into(),
            target: b"/".to_vec(),
            version_minor: 1,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
            body: vec![],
            chunked: false,
            trailers: vec![],
            ..Request::default()
        }
    }

    fn conn(i: u64) -> ConnectionKey {
        ConnectionKey {
            conn: i,
            client: SocketAddr::from((
                [10, 1, (i >> 8) as u8, i as u8],
                40_000 + (i % 20_000) as u16,
            )),
            server: "10.0.0.1:8080".parse().unwrap(),
        }
    }

    fn pct(s: &str) -> Percent {
        s.parse().unwrap()
    }

    /// True when `kept` of `n` is within 5 sigma of a binomial(n, p).
    fn within_5_sigma(kept: u64, n: u64, p: f64) -> bool {
        let mean = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        (kept as f64 - mean).abs() <= 5.0 * sigma
    }

    #[test]
    fn percent_parsing() {
        let ok = [
            ("0", 0),
            ("100", 1_000_000),
            ("100.0000", 1_000_000),
            ("12.5", 125_000),
            ("0.0001", 1),
            ("0.01", 100),
            ("007.25", 72_500),
            (" 50% ", 500_000),
        ];
        for (s, ppm) in ok {
            assert_eq!(s.parse::<Percent>().map(Percent::ppm), Ok(ppm), "{s}");
        }
        let bad = [
            ("", PercentError::Empty),
            ("%", PercentError::Empty),
            ("-1", PercentError::NotANumber("-1".into())),
            ("+1", PercentError::NotANumber("+1".into())),
            ("1e2", PercentError::NotANumber("1e2".into())),
            (".5", PercentError::NotANumber(".5".into())),
            ("5.", PercentError::NotANumber("5.".into())),
            ("1.2.3", PercentError::NotANumber("1.2.3".into())),
            ("nan", PercentError::NotANumber("nan".into())),
            ("0.00001", PercentError::TooPrecise("0.00001".into())),
            ("100.0001", PercentError::OutOfRange("100.0001".into())),
            ("101", PercentError::OutOfRange("101".into())),
            (
                "99999999999",
                PercentError::OutOfRange("99999999999".into()),
            ),
        ];
        for (s, e) in bad {
            assert_eq!(s.parse::<Percent>(), Err(e), "{s:?}");
        }
        assert_eq!(pct("12.5").to_string(), "12.5");
        assert_eq!(pct("0.0001").to_string(), "0.0001");
        assert_eq!(pct("100").to_string(), "100");
    }

    #[test]
    fn sample_by_parsing() {
        assert_eq!("request".parse(), Ok(SampleBy::Random));
        assert_eq!("connection".parse(), Ok(SampleBy::Connection));
        assert_eq!(
            "header:X-User".parse(),
            Ok(SampleBy::Header("X-User".into()))
        );
        assert!("header:".parse::<SampleBy>().is_err());
        assert!("cookie".parse::<SampleBy>().is_err());
    }

    #[test]
    fn random_50_percent_lands_in_5_sigma_band() {
        for seed in [1, 2, 0xdead_beef] {
            let s = Sampler::new(pct("50"), SampleBy::Random, seed);
            let r = req(&[]);
            let kept = (0..10_000).filter(|_| s.keep(&conn(0), &r)).count() as u64;
            assert!(
                within_5_sigma(kept, 10_000, 0.5),
                "seed {seed}: kept {kept}"
            );
        }
    }

    #[test]
    fn extremes_keep_all_or_nothing() {
        let r = req(&[]);
        let all = Sampler::new(Percent::ALL, SampleBy::Random, 7);
        let none = Sampler::new(Percent::NONE, SampleBy::Connection, 7);
        assert!((0..1000).all(|i| all.keep(&conn(i), &r)));
        assert!((0..1000).all(|i| !none.keep(&conn(i), &r)));
    }

    #[test]
    fn connection_mode_keeps_connections_whole() {
        let s = Sampler::new(pct("30"), SampleBy::Connection, 42);
        let mut kept_conns = 0u64;
        for i in 0..5_000 {
            let decisions: Vec<bool> = (0..5)
                .map(|j| s.keep(&conn(i), &req(&[("X-Req", &j.to_string())])))
                .collect();
            assert!(
                decisions.iter().all(|d| *d == decisions[0]),
                "conn {i} split"
            );
            kept_conns += u64::from(decisions[0]);
        }
        assert!(within_5_sigma(kept_conns, 5_000, 0.3), "kept {kept_conns}");
    }

    #[test]
    fn header_mode_keys_on_value_and_falls_back_to_draws() {
        let s = Sampler::new(pct("20"), SampleBy::Header("x-user".into()), 9);
        let mut kept_users = 0u64;
        for u in 0..5_000 {
            let user = format!("user-{u}");
            let first = s.keep(&conn(u), &req(&[("X-User", &user)]));
            // Same key on other connections: same decision.
            for c in 0..3 {
                assert_eq!(s.keep(&conn(10_000 + c), &req(&[("X-User", &user)])), first);
            }
            kept_users += u64::from(first);
        }
        assert!(within_5_sigma(kept_users, 5_000, 0.2), "kept {kept_users}");
        let without = (0..10_000).filter(|_| s.keep(&conn(1), &req(&[]))).count() as u64;
        assert!(
            within_5_sigma(without, 10_000, 0.2),
            "fallback kept {without}"
        );
    }

    #[test]
    fn targets_with_different_seeds_sample_independently() {
        let a = Sampler::new(pct("50"), SampleBy::Connection, 1);
        let b = Sampler::new(pct("50"), SampleBy::Connection, 2);
        let r = req(&[]);
        let both = (0..10_000)
            .filter(|&i| a.keep(&conn(i), &r) && b.keep(&conn(i), &r))
            .count() as u64;
        assert!(within_5_sigma(both, 10_000, 0.25), "both kept {both}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn threshold_on_hash_is_monotone(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            seed in any::<u64>(),
            p in 0u32..=PPM_ALL,
            q in 0u32..=PPM_ALL,
        ) {
            let (lo, hi) = (p.min(q), p.max(q));
            let lo_s = Sampler::new(Percent::from_ppm(lo).unwrap(), SampleBy::Connection, seed);
            let hi_s = Sampler::new(Percent::from_ppm(hi).unwrap(), SampleBy::Connection, seed);
            if lo_s.keeps_key(&key) {
                prop_assert!(hi_s.keeps_key(&key));
            }
        }

        #[test]
        fn percent_round_trips_through_display(ppm in 0u32..=PPM_ALL) {
            let p = Percent::from_ppm(ppm).unwrap();
            prop_assert_eq!(p.to_string().parse::<Percent>(), Ok(p));
        }
    }

    #[test]
    fn hash_is_stable_across_releases() {
        // Pinned values: nodes of a DaemonSet (and restarts) must agree on the same keys.
        assert_ne!(hash_bytes(0, b"a"), hash_bytes(1, b"a"));
        assert_ne!(hash_bytes(0, b"a"), hash_bytes(0, b"a\0"));
        assert_eq!(hash_bytes(42, b"user-1234"), 1_189_649_649_447_903_916);
        assert_eq!(hash_bytes(7, b""), 13_225_839_796_362_995_591);
    }

    #[test]
    fn token_bucket_caps_rate_with_burst() {
        let mut b = TokenBucket::new(10.0, 3);
        let t0 = 1_000_000_000;
        assert_eq!((0..5).filter(|_| b.try_take(t0)).count(), 3, "burst");
        assert!(!b.try_take(t0 + 50_000_000), "half a token after 50 ms");
        assert!(b.try_take(t0 + 100_000_000), "one token after 100 ms");
        assert!(!b.try_take(t0 + 100_000_000));
        // A long pause refills to the burst, not beyond.
        let later = t0 + 60_000_000_000;
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
        // Time going backwards adds nothing.
        assert!(!b.try_take(t0));
        assert!(!b.try_take(later));
        // Over 10 s at 10/s (after the burst), about 100 pass.
        let mut b = TokenBucket::new(10.0, 1);
        let passed = (0..10_000u64).filter(|i| b.try_take(i * 1_000_000)).count();
        assert!((100..=101).contains(&passed), "passed {passed}");
    }

    #[test]
    fn token_bucket_with_zero_rate_only_gives_the_burst() {
        let mut b = TokenBucket::new(0.0, 2);
        assert_eq!(
            (0..10u64).filter(|i| b.try_take(i * 1_000_000_000)).count(),
            2
        );
        let mut b = TokenBucket::new(f64::NAN, 1);
        assert_eq!(
            (0..10u64).filter(|i| b.try_take(i * 1_000_000_000)).count(),
            1
        );
    }
}
