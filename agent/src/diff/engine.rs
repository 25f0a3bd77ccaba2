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
use super::noise::{BaselineModel, Margins, NoiseModel, RequestKey, DEFAULT_MAX_KEYS};
use super::report::{DiffReport, PairSample, ReportConfig};
use super::response::Fnv64;
use super::route::{Routes, DEFAULT_MAX_ROUTES};
use super::{DiffOutcome, ResponseSummary};
use crate::request::Request;

/// Pairs waiting for their other side, by default.
pub const DEFAULT_MAX_PENDING: usize = 10_000;
/// Decoded bodies held by waiting pairs, all together; past it a newly arrived answer is
/// kept by its hash only (its fields are not compared), so memory stays bounded
/// whatever the answers' sizes.
pub const MAX_HELD_BODY_BYTES: usize = 32 << 20;

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
    /// A copy went to the baseline too: its answer is waited for.
    wants_baseline: bool,
    baseline: Option<ShadowSide>,
}

impl Pending {
    fn complete(&self) -> bool {
        self.prod.is_some()
            && self.shadow.is_some()
            && (!self.wants_baseline || self.baseline.is_some())
    }
}

struct Inner {
    rules: DiffRules,
    routes: Routes,
    noise: NoiseModel,
    report: DiffReport,
    pending: HashMap<u64, Pending>,
    order: VecDeque<u64>,
    max_pending: usize,
    /// Pairs whose only differences were judged noise.
    noisy: u64,
    /// Requests seen whose answers are not wanted (`unwanted`), for the pipeline.
    unwanted: Vec<u64>,
    /// Bytes of the bodies held by waiting pairs.
    held: usize,
    /// `--diff-baseline`: Diffy's model over (candidate, baseline) against production.
    baseline: Option<BaselineModel>,
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
                unwanted: Vec::new(),
                held: 0,
                baseline: None,
            }),
        }
    }

    /// With a baseline (a second copy of production's version): a field is a difference
    /// only where the candidate differs from production clearly more often than the
    /// baseline does (`margins`).
    pub fn with_baseline(self, margins: Margins) -> Self {
        self.lock().baseline = Some(BaselineModel::new(margins));
        self
    }

    /// A copy of request `id` went to the baseline too (after `expect`).
    pub fn expect_baseline(&self, id: u64) {
        if let Some(p) = self.lock().pending.get_mut(&id) {
            p.wants_baseline = true;
        }
    }

    /// The baseline's answer to the copy of request `id`.
    pub fn baseline(&self, id: u64, side: ShadowSide) {
        let mut inner = self.lock();
        if !inner.pending.contains_key(&id) {
            return;
        }
        let side = inner.hold_side(side);
        let p = inner.pending.get_mut(&id).expect("checked above");
        p.baseline = Some(side);
        if p.complete() {
            let p = inner.pending.remove(&id).expect("found above");
            inner.settle(p);
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
            wants_baseline: false,
            baseline: None,
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

    /// Request `id` was handed on: when no pair opened for it (not sampled, filtered,
    /// queue full), its production answer is not wanted, and the pipeline is told so
    /// (`take_unwanted`), so that the answer's body is never buffered.
    pub fn seen(&self, id: u64) {
        let mut inner = self.lock();
        if !inner.pending.contains_key(&id) && inner.unwanted.len() < 65_536 {
            inner.unwanted.push(id);
        }
    }

    /// The requests whose answers are not wanted, since the last call.
    pub fn take_unwanted(&self) -> Vec<u64> {
        std::mem::take(&mut self.lock().unwanted)
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
        if !inner.pending.contains_key(&id) {
            return;
        }
        let summary = summary.map(|r| inner.hold(r));
        let p = inner.pending.get_mut(&id).expect("checked above");
        p.prod = Some(match summary {
            Some(r) => ProdSide::Seen(r),
            None => ProdSide::Missing,
        });
        if p.complete() {
            let p = inner.pending.remove(&id).expect("found above");
            inner.settle(p);
        }
    }

    /// The candidate's answer to the copy of request `id`.
    pub fn shadow(&self, id: u64, side: ShadowSide) {
        let mut inner = self.lock();
        if !inner.pending.contains_key(&id) {
            return;
        }
        let side = inner.hold_side(side);
        let p = inner.pending.get_mut(&id).expect("checked above");
        p.shadow = Some(side);
        if p.complete() {
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
    /// Counts `r`'s body against the budget, or drops it (hash only) past the budget.
    fn hold(&mut self, mut r: ResponseSummary) -> ResponseSummary {
        let n = r.body.as_ref().map_or(0, Vec::len);
        if self.held + n > MAX_HELD_BODY_BYTES {
            r.body = None;
        } else {
            self.held += n;
        }
        r
    }

    fn hold_side(&mut self, side: ShadowSide) -> ShadowSide {
        match side {
            ShadowSide::Answered(r) => ShadowSide::Answered(self.hold(r)),
            failed => failed,
        }
    }

    /// Gives back what a settled pair's bodies held.
    fn release(&mut self, p: &Pending) {
        let body = |r: &ResponseSummary| r.body.as_ref().map_or(0, Vec::len);
        let mut n = 0;
        if let Some(ProdSide::Seen(r)) = &p.prod {
            n += body(r);
        }
        for side in [&p.shadow, &p.baseline].into_iter().flatten() {
            if let ShadowSide::Answered(r) = side {
                n += body(r);
            }
        }
        self.held = self.held.saturating_sub(n);
    }

    fn settle(&mut self, p: Pending) {
        self.release(&p);
        let (cmp, prod_latency, shadow_latency, sample) = match (p.prod, p.shadow) {
            (Some(ProdSide::Seen(prod)), Some(ShadowSide::Answered(shadow))) => {
                let mut cmp = compare(&prod, &shadow, &self.rules);
                let base = match &p.baseline {
                    Some(ShadowSide::Answered(base)) => Some(compare(&prod, base, &self.rules)),
                    _ => None,
                };
                match (&mut self.baseline, base) {
                    (Some(model), Some(base)) => {
                        model.observe(&p.route, &cmp.fields, &base.fields);
                        let (real, noisy) = model.classify(&p.route, &cmp.fields);
                        apply_split(&mut cmp, real, noisy, &mut self.noisy);
                    }
                    // A pair the baseline did not answer: judged by what it learned.
                    (Some(model), None) => {
                        let (real, noisy) = model.classify(&p.route, &cmp.fields);
                        apply_split(&mut cmp, real, noisy, &mut self.noisy);
                    }
                    (None, _) => self.split_noise(&p.key, &p.route, &mut cmp),
                }
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
        apply_split(cmp, real, noisy, &mut self.noisy);
    }
}

/// Lists noisy fields apart (`noisy:` before the path); a pair that differs only by
/// noise is a match (counted in `noisy_pairs`).
fn apply_split(cmp: &mut Comparison, real: Vec<String>, noisy: Vec<String>, noisy_pairs: &mut u64) {
    if noisy.is_empty() {
        return;
    }
    // The first stage that still differs, in the order `compare` judges them.
    cmp.outcome = if real.is_empty() {
        *noisy_pairs += 1;
        DiffOutcome::Match
    } else if real.iter().any(|f| f == "status" || f == "grpc-status") {
        DiffOutcome::Status
    } else if real.iter().any(|f| f.starts_with("header:")) {
        DiffOutcome::Headers
    } else {
        DiffOutcome::Body
    };
    cmp.fields = real
        .into_iter()
        .chain(noisy.into_iter().map(|f| format!("noisy:{f}")))
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;
    use std::time::Duration;

    fn get(path: &str) -> Request {
        Request {
            method: "GET".into(),
            target: path.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    fn json(status: u16, body: &str) -> ResponseSummary {
        ResponseSummary {
            status,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body_len: body.len() as u64,
            body_hash: Fnv64::of(body.as_bytes()),
            body: Some(body.as_bytes().to_vec()),
            latency: Duration::from_millis(3),
            ..ResponseSummary::default()
        }
    }

    fn counts(engine: &DiffEngine) -> Vec<(DiffOutcome, u64)> {
        engine
            .counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    #[test]
    fn a_pair_settles_whichever_side_comes_first() {
        let engine = DiffEngine::new(DiffRules::default(), ReportConfig::default());
        engine.expect(1, &get("/a"));
        engine.prod(1, Some(json(200, r#"{"a":1}"#)));
        engine.shadow(1, ShadowSide::Answered(json(200, r#"{"a":1}"#)));
        engine.expect(2, &get("/a"));
        engine.shadow(2, ShadowSide::Answered(json(200, r#"{"a":2}"#)));
        engine.prod(2, Some(json(200, r#"{"a":1}"#)));
        assert_eq!(
            counts(&engine),
            vec![(DiffOutcome::Match, 1), (DiffOutcome::Body, 1)]
        );
        let table = engine.with_report(|r| r.terminal_table());
        assert!(table.contains("$.a"), "{table}");
    }

    #[test]
    fn missing_sides_are_named_and_unexpected_ids_ignored() {
        let engine = DiffEngine::new(DiffRules::default(), ReportConfig::default());
        engine.prod(7, Some(json(200, "{}")));
        engine.shadow(7, ShadowSide::Failed { timeout: false });
        engine.expect(1, &get("/a"));
        engine.prod(1, None);
        engine.shadow(1, ShadowSide::Answered(json(200, "{}")));
        engine.expect(2, &get("/a"));
        engine.prod(2, Some(json(200, "{}")));
        engine.shadow(2, ShadowSide::Failed { timeout: false });
        engine.expect(3, &get("/a"));
        engine.prod(3, Some(json(200, "{}")));
        engine.finish();
        assert_eq!(
            counts(&engine),
            vec![
                (DiffOutcome::ShadowError, 1),
                (DiffOutcome::ShadowTimeout, 1),
                (DiffOutcome::ProdMissing, 1)
            ]
        );
    }

    #[test]
    fn pairs_waiting_are_bounded() {
        let engine = DiffEngine::new(DiffRules::default(), ReportConfig::default());
        for id in 0..(DEFAULT_MAX_PENDING as u64 + 10) {
            engine.expect(id, &get("/a"));
        }
        assert_eq!(engine.lock().pending.len(), DEFAULT_MAX_PENDING);
        assert_eq!(counts(&engine), vec![(DiffOutcome::ProdMissing, 10)]);
    }

    #[test]
    fn with_a_baseline_a_field_random_on_both_is_noise_and_a_changed_one_is_not() {
        let engine = DiffEngine::new(DiffRules::default(), ReportConfig::default())
            .with_baseline(Margins::default());
        for id in 0..40u64 {
            let nonce = |k: u64| format!(r#"{{"nonce":"{}","name":"alice"}}"#, id * 3 + k);
            engine.expect(id, &get("/r"));
            engine.expect_baseline(id);
            engine.prod(id, Some(json(200, &nonce(0))));
            engine.baseline(id, ShadowSide::Answered(json(200, &nonce(1))));
            let candidate = nonce(2).replace("alice", if id % 2 == 0 { "bob" } else { "alice" });
            engine.shadow(id, ShadowSide::Answered(json(200, &candidate)));
        }
        let table = engine.with_report(|r| r.terminal_table());
        let c = counts(&engine);
        // Half the candidate's answers rename the user: those are differences.
        assert!(c.contains(&(DiffOutcome::Body, 20)), "{c:?}\n{table}");
        assert!(table.contains("$.name"), "{table}");
        assert!(table.contains("noisy:$.nonce"), "{table}");
    }

    #[test]
    fn without_a_baseline_noise_is_learned_from_identical_requests() {
        let engine = DiffEngine::new(DiffRules::default(), ReportConfig::default());
        for id in 0..6u64 {
            engine.expect(id, &get("/r"));
            engine.prod(id, Some(json(200, &format!(r#"{{"nonce":{id},"x":1}}"#))));
            engine.shadow(
                id,
                ShadowSide::Answered(json(200, &format!(r#"{{"nonce":{},"x":1}}"#, id + 100))),
            );
        }
        let c = counts(&engine);
        // The first pair cannot know yet; from the second on, $.nonce is noise.
        assert_eq!(
            c,
            vec![(DiffOutcome::Match, 5), (DiffOutcome::Body, 1)],
            "{c:?}"
        );
        assert_eq!(engine.noisy_pairs(), 5);
    }
}
