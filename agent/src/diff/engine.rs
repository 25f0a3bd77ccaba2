//! `DiffEngine`: the meeting point of a request's two answers. The pipeline hands it the
//! production response (or says it will not be seen), the candidate target's replay task
//! hands it the shadow answer (or its failure); once both sides are in, the pair is
//! compared (`compare`), split into real and noisy differences (`noise`), grouped by
//! route (`route`) and counted (`report`). Shared between the capture thread and the
//! replay runtime behind one lock, taken once per side of a pair.
//!
//! Bounded: at most `max_pending` pairs wait for their other side; past it the oldest
//! is settled with what it has (`prod_missing` when production's answer never came,
//! `shadow_timeout` when the shadow's did not).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use super::compare::{compare, Comparison, DiffRules};
use super::noise::{NoiseModel, RequestKey, DEFAULT_MAX_KEYS};
use super::report::{DiffReport, PairSample, ReportConfig};
use super::response::Fnv64;
use super::route::{Routes, DEFAULT_MAX_ROUTES};
use super::{DiffOutcome, ResponseSummary};
use crate::request::Request;

/// Pairs waiting for their other side, by default.
pub const DEFAULT_MAX_PENDING: usize = 10_000;

/// How the shadow side ended.
#[derive(Clone, Debug)]
pub enum ShadowSide {
    Answered(ResponseSummary),
    Failed { timeout: bool },
}

enum ProdSide {
    Seen(ResponseSummary),
    Missing,
}

struct Pending {
    route: String,
    key: RequestKey,
    method: String,
    target: String,
    prod: Option<ProdSide>,
    shadow: Option<ShadowSide>,
}

struct Inner {
    rules: DiffRules,
    routes: Routes,
    noise: NoiseModel,
    report: DiffReport,
    pending: HashMap<u64, Pending>,
    order: VecDeque<u64>,
    max_pending: usize,
    /// Fields that differed but were judged noise, by route (counted apart).
    noisy: u64,
}

/// See the module's first lines.
pub struct DiffEngine {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for DiffEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffEngine").finish_non_exhaustive()
    }
}

impl DiffEngine {
    pub fn new(rules: DiffRules, report: ReportConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                noise: NoiseModel::new(rules.clone(), DEFAULT_MAX_KEYS),
                rules,
                routes: Routes::new(DEFAULT_MAX_ROUTES),
                report: DiffReport::new(report),
                pending: HashMap::new(),
                order: VecDeque::new(),
                max_pending: DEFAULT_MAX_PENDING,
                noisy: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of request `id` went to the candidate target: its pair opens.
    pub fn expect(&self, id: u64, request: &Request) {
        let mut inner = self.lock();
        let route = inner
            .routes
            .route(&request.method, &request.target, request.is_grpc());
        let key = RequestKey::new(&request.method, &request.target, Fnv64::of(&request.body));
        let pending = Pending {
            route,
            key,
            method: request.method.clone(),
            target: String::from_utf8_lossy(&request.target).into_owned(),
            prod: None,
            shadow: None,
        };
        if inner.pending.insert(id, pending).is_none() {
            inner.order.push_back(id);
        }
        while inner.pending.len() > inner.max_pending {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(p) = inner.pending.remove(&oldest) {
                inner.settle(p);
            }
        }
    }

    /// Production's answer to request `id` (`None`: it will not be seen). Ids with no
    /// open pair (not sampled for the candidate) are ignored.
    pub fn prod(&self, id: u64, summary: Option<ResponseSummary>) {
        let mut inner = self.lock();
        if let Some(r) = &summary {
            if let Some(p) = inner.pending.get(&id) {
                let (key, route) = (p.key, p.route.clone());
                inner.noise.observe_prod(key, &route, r);
            }
        }
        let Some(p) = inner.pending.get_mut(&id) else {
            return;
        };
        p.prod = Some(match summary {
            Some(r) => ProdSide::Seen(r),
            None => ProdSide::Missing,
        });
        if p.shadow.is_some() {
            let p = inner.pending.remove(&id).expect("found above");
            inner.settle(p);
        }
    }

    /// The candidate's answer to the copy of request `id`.
    pub fn shadow(&self, id: u64, side: ShadowSide) {
        let mut inner = self.lock();
        let Some(p) = inner.pending.get_mut(&id) else {
            return;
        };
        p.shadow = Some(side);
        if p.prod.is_some() {
            let p = inner.pending.remove(&id).expect("found above");
            inner.settle(p);
        }
    }

    /// Settles every open pair with what it has (end of the run).
    pub fn finish(&self) {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner.order.drain(..).collect();
        for id in ids {
            if let Some(p) = inner.pending.remove(&id) {
                inner.settle(p);
            }
        }
    }

    /// Pairs compared so far, by outcome (summed over routes).
    pub fn counts(&self) -> Vec<(DiffOutcome, u64)> {
        let inner = self.lock();
        DiffOutcome::ALL
            .iter()
            .map(|&o| (o, inner.report.routes().map(|(_, s)| s.count(o)).sum()))
            .collect()
    }

    /// Pairs whose only differences were noise.
    pub fn noisy_pairs(&self) -> u64 {
        self.lock().noisy
    }

    /// Runs `f` on the report (outputs, metrics).
    pub fn with_report<T>(&self, f: impl FnOnce(&DiffReport) -> T) -> T {
        f(&self.lock().report)
    }
}

impl Inner {
    fn settle(&mut self, p: Pending) {
        let (cmp, prod_latency, shadow_latency, sample) = match (p.prod, p.shadow) {
            (Some(ProdSide::Seen(prod)), Some(ShadowSide::Answered(shadow))) => {
                let mut cmp = compare(&prod, &shadow, &self.rules);
                self.split_noise(&p.key, &p.route, &mut cmp);
                let sample = PairSample {
                    method: p.method,
                    target: p.target,
                    prod: prod.clone(),
                    shadow: shadow.clone(),
                };
                (cmp, Some(prod.latency), Some(shadow.latency), Some(sample))
            }
            (Some(ProdSide::Seen(prod)), shadow) => {
                // No answer by the end (or by eviction) counts as a timeout.
                let timeout = !matches!(shadow, Some(ShadowSide::Failed { timeout: false }));
                let outcome = if timeout {
                    DiffOutcome::ShadowTimeout
                } else {
                    DiffOutcome::ShadowError
                };
                (Comparison::only(outcome), Some(prod.latency), None, None)
            }
            _ => (Comparison::only(DiffOutcome::ProdMissing), None, None, None),
        };
        self.report
            .record(&p.route, &cmp, prod_latency, shadow_latency, sample);
    }

    /// Fields that changed between production's own answers to the same request are
    /// noise: listed apart (`noisy:` before the path), and a pair that differs only by
    /// noise is a match.
    fn split_noise(&mut self, key: &RequestKey, route: &str, cmp: &mut Comparison) {
        if cmp.fields.is_empty() {
            return;
        }
        let (real, noisy) = self.noise.classify(*key, route, &cmp.fields);
        if noisy.is_empty() {
            return;
        }
        if real.is_empty() {
            cmp.outcome = DiffOutcome::Match;
            self.noisy += 1;
        }
        cmp.fields = real
            .into_iter()
            .chain(noisy.into_iter().map(|f| format!("noisy:{f}")))
            .collect();
    }
}
