//! The PLD accountant: a multiset of steps, composed lazily and incrementally.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::pmf::{Composed, LossPmf, Overflow};
use super::{DEFAULT_DISCRETISATION, Direction, MAX_BINS, one_step};
use crate::accounting::{Accountant, AccountingError, SubsampledGaussian, check_delta};

/// The mechanism name stored with serialised PLD state.
const MECHANISM: &str = "pld";
/// Beyond this grid spacing the accountant gives up and reports ε = +∞ (fail closed).
const MAX_DISCRETISATION: f64 = 1.0;

/// Privacy-loss-distribution accountant for Poisson-subsampled Gaussian steps.
///
/// State is the multiset of steps (identical `(q, σ)` merged into one count, since composition
/// is commutative), so the serialised form stays small however many rounds repeat a setting:
/// `{"mechanism": "pld", "discretisation": h, "history": [{"event": {...}, "count": n}], "steps": n}`.
///
/// Queries compose lazily: the composed distribution is kept in memory and each new step is
/// convolved into it once, so [`projected_epsilon`](Accountant::projected_epsilon) and
/// [`would_exceed`](Accountant::would_exceed) only convolve the new steps, never replay history
/// (the first query after loading state does compose everything once). When the grid would
/// exceed [`MAX_BINS`] points its spacing is doubled, rounding losses up, which keeps the bound
/// valid and loosens it slightly.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "PldState", into = "PldState")]
pub struct PldAccountant {
    discretisation: f64,
    history: Vec<Run>,
    steps: u64,
    cache: FoldCache,
}

/// A number of identical steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Run {
    event: SubsampledGaussian,
    count: u64,
}

impl Default for PldAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl PldAccountant {
    /// An empty accountant with the default grid spacing of 1e-4 in the privacy loss.
    pub fn new() -> Self {
        Self {
            discretisation: DEFAULT_DISCRETISATION,
            history: Vec::new(),
            steps: 0,
            cache: FoldCache::default(),
        }
    }

    /// An empty accountant with grid spacing `h` (finite, in (0, 1]). A smaller `h` is tighter
    /// and slower; the bound is valid at any spacing.
    pub fn with_discretisation(h: f64) -> Result<Self, AccountingError> {
        if !(h.is_finite() && h > 0.0 && h <= MAX_DISCRETISATION) {
            return Err(AccountingError::CorruptState(format!(
                "discretisation interval must be in (0, 1], got {h}"
            )));
        }
        Ok(Self {
            discretisation: h,
            ..Self::new()
        })
    }

    /// The recorded steps, identical `(q, σ)` merged, in order of first appearance.
    pub fn history(&self) -> impl Iterator<Item = (SubsampledGaussian, u64)> + '_ {
        self.history.iter().map(|run| (run.event, run.count))
    }

    /// The smallest δ provable at `epsilon` (the inverse query).
    pub fn delta(&self, epsilon: f64) -> Result<f64, AccountingError> {
        if epsilon.is_nan() || epsilon < 0.0 {
            return Err(AccountingError::InvalidEpsilon(epsilon));
        }
        if self.steps == 0 {
            return Ok(0.0);
        }
        Ok(self.composed().map_or(1.0, |c| c.delta(epsilon)))
    }

    /// The composition of everything recorded, folding in steps recorded since the last query.
    /// `None` means the grid could not be made coarse enough (treated as ε = +∞).
    fn composed(&self) -> Option<Composed> {
        let mut cache = match self.cache.0.lock() {
            Ok(guard) => guard,
            // A panic mid-fold leaves an unknown state: start again from the history.
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                *guard = Folded::unfolded(&self.history);
                guard
            }
        };
        if !cache.pending.is_empty() {
            let pending = std::mem::take(&mut cache.pending);
            let folded = fold(cache.composed.take(), &pending, self.discretisation);
            cache.composed = folded;
            if cache.composed.is_none() {
                // Keep the work so the next query retries rather than reporting zero.
                cache.pending = self.history.clone();
            }
        }
        cache.composed.clone()
    }
}

impl Accountant for PldAccountant {
    fn step(&mut self, event: SubsampledGaussian, count: u64) {
        if count == 0 {
            return;
        }
        match self
            .history
            .iter_mut()
            .find(|r| r.event.key() == event.key())
        {
            Some(run) => run.count = run.count.saturating_add(count),
            None => self.history.push(Run { event, count }),
        }
        self.steps = self.steps.saturating_add(count);
        match self.cache.0.get_mut() {
            Ok(cache) => cache.pending.push(Run { event, count }),
            Err(_) => self.cache = FoldCache::from_history(&self.history),
        }
    }

    fn epsilon(&self, delta: f64) -> Result<f64, AccountingError> {
        check_delta(delta)?;
        if self.steps == 0 {
            return Ok(0.0);
        }
        Ok(self.composed().map_or(f64::INFINITY, |c| c.epsilon(delta)))
    }

    fn projected_epsilon(
        &self,
        delta: f64,
        next: &[(SubsampledGaussian, u64)],
    ) -> Result<f64, AccountingError> {
        check_delta(delta)?;
        let next: Vec<Run> = next
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|&(event, count)| Run { event, count })
            .collect();
        if next.is_empty() {
            return self.epsilon(delta);
        }
        let base = if self.steps == 0 {
            None
        } else {
            match self.composed() {
                Some(c) => Some(c),
                None => return Ok(f64::INFINITY),
            }
        };
        Ok(fold(base, &next, self.discretisation).map_or(f64::INFINITY, |c| c.epsilon(delta)))
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn mechanism(&self) -> &'static str {
        MECHANISM
    }
}

/// Composes `runs` into `base` (or from nothing), doubling the grid spacing whenever a
/// distribution would exceed [`MAX_BINS`]. `None` when even the coarsest grid overflows.
fn fold(base: Option<Composed>, runs: &[Run], h: f64) -> Option<Composed> {
    let mut composed = base.map(|c| (Arc::unwrap_or_clone(c.remove), Arc::unwrap_or_clone(c.add)));
    let mut h = composed.as_ref().map_or(h, |(remove, _)| remove.h);
    for run in merge(runs) {
        loop {
            if h > MAX_DISCRETISATION {
                return None;
            }
            match compose_run(composed.as_ref(), run, h) {
                Ok(next) => {
                    composed = Some(next);
                    break;
                }
                Err(Overflow::TooManyBins) => {
                    h *= 2.0;
                    if let Some((remove, add)) = composed.as_mut() {
                        remove.coarsen();
                        add.coarsen();
                    }
                }
            }
        }
    }
    composed.map(|(remove, add)| Composed {
        remove: Arc::new(remove),
        add: Arc::new(add),
    })
}

/// One run's k-fold distribution in both directions, convolved into `base` if there is one.
fn compose_run(
    base: Option<&(LossPmf, LossPmf)>,
    run: Run,
    h: f64,
) -> Result<(LossPmf, LossPmf), Overflow> {
    let mut out = Vec::with_capacity(2);
    for (index, direction) in [Direction::Remove, Direction::Add].into_iter().enumerate() {
        let k_fold = one_step(run.event, direction, h).self_compose(run.count, MAX_BINS)?;
        let combined = match base {
            Some(pair) => {
                let prior = if index == 0 { &pair.0 } else { &pair.1 };
                prior.convolve(&k_fold, MAX_BINS)?
            }
            None => k_fold,
        };
        out.push(combined);
    }
    let add = out.pop().ok_or(Overflow::TooManyBins)?;
    let remove = out.pop().ok_or(Overflow::TooManyBins)?;
    Ok((remove, add))
}

/// Merges runs of identical steps so each distinct step is self-composed once.
fn merge(runs: &[Run]) -> Vec<Run> {
    let mut merged: Vec<Run> = Vec::new();
    for run in runs {
        match merged.iter_mut().find(|r| r.event.key() == run.event.key()) {
            Some(existing) => existing.count = existing.count.saturating_add(run.count),
            None => merged.push(*run),
        }
    }
    merged
}

/// The composed distributions and the steps not yet folded into them.
#[derive(Debug, Clone, Default)]
struct Folded {
    composed: Option<Composed>,
    pending: Vec<Run>,
}

impl Folded {
    fn unfolded(history: &[Run]) -> Self {
        Self {
            composed: None,
            pending: history.to_vec(),
        }
    }
}

/// In-memory composition cache, behind a mutex so `&self` queries can fill it. Derived data:
/// never serialised, rebuilt from the history after loading.
#[derive(Debug, Default)]
struct FoldCache(Mutex<Folded>);

impl FoldCache {
    fn from_history(history: &[Run]) -> Self {
        Self(Mutex::new(Folded::unfolded(history)))
    }
}

impl Clone for FoldCache {
    fn clone(&self) -> Self {
        match self.0.lock() {
            Ok(folded) => Self(Mutex::new(folded.clone())),
            Err(_) => Self::default(),
        }
    }
}

/// The serialised form of [`PldAccountant`].
#[derive(Serialize, Deserialize)]
struct PldState {
    mechanism: String,
    discretisation: f64,
    history: Vec<Run>,
    steps: u64,
}

impl TryFrom<PldState> for PldAccountant {
    type Error = AccountingError;
    fn try_from(state: PldState) -> Result<Self, Self::Error> {
        if state.mechanism != MECHANISM {
            return Err(AccountingError::MechanismMismatch {
                expected: MECHANISM,
                found: state.mechanism,
            });
        }
        let mut accountant = Self::with_discretisation(state.discretisation)?;
        for run in &state.history {
            accountant.step(run.event, run.count);
        }
        if accountant.steps != state.steps {
            return Err(AccountingError::CorruptState(format!(
                "history holds {} steps but the state says {}",
                accountant.steps, state.steps
            )));
        }
        Ok(accountant)
    }
}

impl From<PldAccountant> for PldState {
    fn from(accountant: PldAccountant) -> Self {
        Self {
            mechanism: MECHANISM.to_owned(),
            discretisation: accountant.discretisation,
            history: accountant.history,
            steps: accountant.steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::{RdpAccountant, gaussian_epsilon};

    fn event(q: f64, sigma: f64) -> SubsampledGaussian {
        SubsampledGaussian::new(q, sigma).unwrap()
    }

    #[test]
    fn full_batch_steps_match_the_analytic_gaussian() {
        // 4 steps at σ = 2 compose to one Gaussian at σ = 1: exact ε = 4.37718 at δ = 1e-5.
        let mut acc = PldAccountant::new();
        acc.step(event(1.0, 2.0), 4);
        let exact = gaussian_epsilon(1.0, 1e-5).unwrap();
        let eps = acc.epsilon(1e-5).unwrap();
        assert!(eps >= exact && eps <= 1.01 * exact, "{eps} vs {exact}");
    }

    #[test]
    fn subsampled_is_below_rdp() {
        let e = event(0.01, 1.1);
        let mut pld = PldAccountant::new();
        pld.step(e, 300);
        let mut rdp = RdpAccountant::new();
        rdp.step(e, 300);
        let (p, r) = (pld.epsilon(1e-5).unwrap(), rdp.epsilon(1e-5).unwrap());
        assert!(p < r && p > 0.5 * r, "pld {p} rdp {r}");
    }

    #[test]
    fn heterogeneous_steps_compose_in_any_order_and_project() {
        let (a, b) = (event(0.02, 1.0), event(0.2, 3.0));
        let mut ab = PldAccountant::new();
        ab.step(a, 50);
        ab.step(b, 20);
        let mut ba = PldAccountant::new();
        ba.step(b, 20);
        let projected = ba.projected_epsilon(1e-6, &[(a, 50)]).unwrap();
        ba.step(a, 50);
        let (x, y) = (ab.epsilon(1e-6).unwrap(), ba.epsilon(1e-6).unwrap());
        assert!((x - y).abs() < 1e-3 * x, "{x} vs {y}");
        assert!((projected - y).abs() < 1e-3 * y, "{projected} vs {y}");
        // Splitting one run into several gives the same answer.
        let mut split = PldAccountant::new();
        for _ in 0..5 {
            split.step(a, 10);
            split.epsilon(1e-6).unwrap();
        }
        split.step(b, 20);
        let z = split.epsilon(1e-6).unwrap();
        assert!(z >= x * (1.0 - 1e-3) && z <= x * 1.01, "{z} vs {x}");
    }

    #[test]
    fn serde_round_trip_and_rejections() {
        let mut acc = PldAccountant::new();
        acc.step(event(0.05, 1.2), 30);
        acc.step(event(0.05, 1.2), 5);
        acc.step(event(0.1, 2.0), 3);
        let json = serde_json::to_string(&acc).unwrap();
        let back: PldAccountant = serde_json::from_str(&json).unwrap();
        assert_eq!(back.steps(), 38);
        assert_eq!(back.history().count(), 2);
        assert_eq!(back.epsilon(1e-5).unwrap(), acc.epsilon(1e-5).unwrap());

        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["mechanism"] = "rdp".into();
        assert!(serde_json::from_value::<PldAccountant>(value).is_err());
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["steps"] = 1.into();
        assert!(serde_json::from_value::<PldAccountant>(value).is_err());
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["history"][0]["event"]["sample_rate"] = 1.5.into();
        assert!(serde_json::from_value::<PldAccountant>(value).is_err());
        // An RDP state is not a PLD state.
        let rdp = serde_json::to_string(&RdpAccountant::new()).unwrap();
        assert!(serde_json::from_str::<PldAccountant>(&rdp).is_err());
    }
}
