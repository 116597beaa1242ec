//! The RDP accountant: one RDP value per order, updated in O(orders).

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{default_orders, rdp_vector};
use crate::accounting::conversion::{delta_from_rdp, epsilon_from_rdp};
use crate::accounting::{Accountant, AccountingError, SubsampledGaussian};

/// The mechanism name stored with serialised RDP state.
const MECHANISM: &str = "rdp";
/// How many distinct steps' RDP vectors to remember; rounds usually repeat one setting.
const CACHE_CAPACITY: usize = 8;

/// Rényi-DP accountant for Poisson-subsampled Gaussian steps.
///
/// State is the accumulated RDP at each order plus the step count, so recording a step and
/// projecting a future one both cost O(orders) once a step's RDP vector is known (computing it
/// costs a few hundred microseconds and is cached per distinct `(q, σ)`).
///
/// Serialised as `{"mechanism": "rdp", "orders": [...], "rdp": [...], "steps": n}`; loading
/// rejects another mechanism's state, mismatched lengths, invalid orders and negative or NaN
/// RDP values, and rounds each loaded value up by two ulps so that a text round trip can never
/// lower the spend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RdpState", into = "RdpState")]
pub struct RdpAccountant {
    orders: Arc<[f64]>,
    rdp: Vec<f64>,
    steps: u64,
    cache: EventCache,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An empty accountant over [`default_orders`] (dp_accounting's).
    pub fn new() -> Self {
        Self::from_valid_orders(default_orders().into())
    }

    /// An empty accountant over custom orders (each finite and > 1).
    pub fn with_orders(orders: &[f64]) -> Result<Self, AccountingError> {
        validate_orders(orders)?;
        Ok(Self::from_valid_orders(orders.into()))
    }

    fn from_valid_orders(orders: Arc<[f64]>) -> Self {
        let rdp = vec![0.0; orders.len()];
        Self {
            orders,
            rdp,
            steps: 0,
            cache: EventCache::default(),
        }
    }

    /// The orders α at which RDP is tracked.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The accumulated RDP at each order (same length as [`orders`](Self::orders)).
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// ε at `delta` and the order that achieves it (NaN when ε is infinite).
    pub fn epsilon_and_order(&self, delta: f64) -> Result<(f64, f64), AccountingError> {
        epsilon_from_rdp(&self.orders, &self.rdp, delta)
    }

    /// The inverse query: the smallest δ provable at `epsilon`.
    pub fn delta(&self, epsilon: f64) -> Result<f64, AccountingError> {
        Ok(delta_from_rdp(&self.orders, &self.rdp, epsilon)?.0)
    }

    /// ε at `delta` after also running `next`, and the optimal order; see
    /// [`Accountant::projected_epsilon`].
    pub fn projected_epsilon_and_order(
        &self,
        delta: f64,
        next: &[(SubsampledGaussian, u64)],
    ) -> Result<(f64, f64), AccountingError> {
        let mut rdp = self.rdp.clone();
        for &(event, count) in next {
            add_scaled(&mut rdp, &self.event_rdp(event), count);
        }
        epsilon_from_rdp(&self.orders, &rdp, delta)
    }

    /// Adds everything `other` recorded to `self` (for example a client's spend in several
    /// federations). Both must track the same orders.
    pub fn compose(&mut self, other: &RdpAccountant) -> Result<(), AccountingError> {
        if self.orders != other.orders {
            return Err(AccountingError::OrdersMismatch);
        }
        for (mine, theirs) in self.rdp.iter_mut().zip(&other.rdp) {
            *mine += theirs;
        }
        self.steps = self.steps.saturating_add(other.steps);
        Ok(())
    }

    /// Records `count` runs of a mechanism given by its own per-order RDP, aligned with
    /// [`orders`](Self::orders).
    ///
    /// This is how mechanisms the subsampled-Gaussian formula does not cover (the aggregate
    /// Skellam noise of distributed DP, `crate::noise::skellam_rdp`) compose in the *same*
    /// state as the Gaussian steps: RDP adds per order whatever the mechanism. The caller
    /// vouches that each value upper-bounds the mechanism's RDP at that order. Values must be
    /// ≥ 0 and not NaN (+∞ means no guarantee at that order); a wrong length or a bad value
    /// changes nothing and is an error.
    pub fn step_rdp(&mut self, per_step: &[f64], count: u64) -> Result<(), AccountingError> {
        if per_step.len() != self.orders.len() {
            return Err(AccountingError::OrdersMismatch);
        }
        if let Some(bad) = per_step.iter().find(|r| r.is_nan() || **r < 0.0) {
            return Err(AccountingError::CorruptState(format!(
                "a mechanism's RDP must be >= 0 at every order, got {bad}"
            )));
        }
        if count == 0 {
            return Ok(());
        }
        add_scaled(&mut self.rdp, per_step, count);
        self.steps = self.steps.saturating_add(count);
        Ok(())
    }

    /// The RDP vector of one step of `event`, from the cache when possible.
    fn event_rdp(&self, event: SubsampledGaussian) -> Arc<[f64]> {
        if let Some(hit) = self.cache.get(event) {
            return hit;
        }
        let computed: Arc<[f64]> = rdp_vector(event, &self.orders).into();
        self.cache.put(event, Arc::clone(&computed));
        computed
    }
}

impl Accountant for RdpAccountant {
    fn step(&mut self, event: SubsampledGaussian, count: u64) {
        if count == 0 {
            return;
        }
        let per_step = self.event_rdp(event);
        add_scaled(&mut self.rdp, &per_step, count);
        self.steps = self.steps.saturating_add(count);
    }

    fn epsilon(&self, delta: f64) -> Result<f64, AccountingError> {
        Ok(self.epsilon_and_order(delta)?.0)
    }

    fn projected_epsilon(
        &self,
        delta: f64,
        next: &[(SubsampledGaussian, u64)],
    ) -> Result<f64, AccountingError> {
        Ok(self.projected_epsilon_and_order(delta, next)?.0)
    }

    fn steps(&self) -> u64 {
        self.steps
    }

    fn mechanism(&self) -> &'static str {
        MECHANISM
    }
}

/// `total += count × per_step`, element-wise. `count` as f64 is exact below 2^53.
fn add_scaled(total: &mut [f64], per_step: &[f64], count: u64) {
    let count = count as f64;
    for (t, r) in total.iter_mut().zip(per_step) {
        *t += count * r;
    }
}

fn validate_orders(orders: &[f64]) -> Result<(), AccountingError> {
    if orders.is_empty() {
        return Err(AccountingError::InvalidOrders("no orders given".into()));
    }
    if let Some(bad) = orders.iter().find(|a| !(a.is_finite() && **a > 1.0)) {
        return Err(AccountingError::InvalidOrders(format!(
            "every order must be a finite number > 1, got {bad}"
        )));
    }
    Ok(())
}

/// The serialised form of [`RdpAccountant`].
#[derive(Serialize, Deserialize)]
struct RdpState {
    mechanism: String,
    orders: Vec<f64>,
    rdp: Vec<f64>,
    steps: u64,
}

impl TryFrom<RdpState> for RdpAccountant {
    type Error = AccountingError;
    fn try_from(state: RdpState) -> Result<Self, Self::Error> {
        if state.mechanism != MECHANISM {
            return Err(AccountingError::MechanismMismatch {
                expected: MECHANISM,
                found: state.mechanism,
            });
        }
        validate_orders(&state.orders)?;
        if state.orders.len() != state.rdp.len() {
            return Err(AccountingError::OrdersMismatch);
        }
        // +inf is a legitimate RDP value (a step with no privacy at that order); NaN and
        // negative values are not.
        if let Some(bad) = state.rdp.iter().find(|r| r.is_nan() || **r < 0.0) {
            return Err(AccountingError::CorruptState(format!(
                "RDP values must be >= 0, found {bad}"
            )));
        }
        // Text formats may round a float to a neighbour on the way back (serde_json does
        // without its `float_roundtrip` feature); two ulps up keeps a reload from ever
        // reporting less than was saved.
        let rdp = state.rdp.iter().map(|r| r.next_up().next_up()).collect();
        Ok(Self {
            orders: state.orders.into(),
            rdp,
            steps: state.steps,
            cache: EventCache::default(),
        })
    }
}

impl From<RdpAccountant> for RdpState {
    fn from(accountant: RdpAccountant) -> Self {
        Self {
            mechanism: MECHANISM.to_owned(),
            orders: accountant.orders.to_vec(),
            rdp: accountant.rdp,
            steps: accountant.steps,
        }
    }
}

/// A tiny memo of recent steps' RDP vectors, shared behind a mutex so `&self` queries can fill
/// it. Not serialised: it is derived data.
#[derive(Debug, Default)]
struct EventCache(Mutex<Vec<CacheEntry>>);

/// A step's key and its per-order RDP vector.
type CacheEntry = ((u64, u64), Arc<[f64]>);

impl EventCache {
    fn get(&self, event: SubsampledGaussian) -> Option<Arc<[f64]>> {
        let entries = self.0.lock().ok()?;
        entries
            .iter()
            .find(|(key, _)| *key == event.key())
            .map(|(_, rdp)| Arc::clone(rdp))
    }

    fn put(&self, event: SubsampledGaussian, rdp: Arc<[f64]>) {
        if let Ok(mut entries) = self.0.lock() {
            if entries.len() >= CACHE_CAPACITY {
                entries.remove(0);
            }
            entries.push((event.key(), rdp));
        }
    }
}

impl Clone for EventCache {
    fn clone(&self) -> Self {
        let entries = self.0.lock().map(|e| e.clone()).unwrap_or_default();
        Self(Mutex::new(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(q: f64, sigma: f64) -> SubsampledGaussian {
        SubsampledGaussian::new(q, sigma).unwrap()
    }

    #[test]
    fn golden_dp_sgd_value() {
        // dp_accounting and Opacus: q = 0.01, σ = 1.1, 1000 steps, δ = 1e-5 → ε ≈ 1.7118.
        let mut acc = RdpAccountant::new();
        acc.step(event(0.01, 1.1), 1000);
        let eps = acc.epsilon(1e-5).unwrap();
        assert!((eps - 1.7118).abs() < 1e-4, "{eps}");
        assert_eq!(acc.steps(), 1000);
    }

    #[test]
    fn golden_opacus_value() {
        // Opacus' accountants_test: σ = 1.5, q = 0.04, 2250 steps, δ = 1e-5 → ε ≈ 7.329.
        let mut acc = RdpAccountant::new();
        acc.step(event(0.04, 1.5), 2250);
        let eps = acc.epsilon(1e-5).unwrap();
        assert!((eps - 7.329).abs() < 5e-3, "{eps}");
    }

    #[test]
    fn composition_is_order_independent_and_matches_projection() {
        let a = event(0.01, 1.1);
        let b = event(0.1, 3.0);
        let mut ab = RdpAccountant::new();
        ab.step(a, 10);
        ab.step(b, 5);
        let mut ba = RdpAccountant::new();
        ba.step(b, 5);
        ba.step(a, 10);
        for (x, y) in ab.rdp().iter().zip(ba.rdp()) {
            assert!((x - y).abs() <= 1e-12 * x.abs());
        }
        let mut only_a = RdpAccountant::new();
        only_a.step(a, 10);
        let projected = only_a.projected_epsilon(1e-5, &[(b, 5)]).unwrap();
        assert!((projected - ab.epsilon(1e-5).unwrap()).abs() < 1e-12);
        // Projection leaves the accountant unchanged.
        assert_eq!(only_a.steps(), 10);
    }

    #[test]
    fn would_exceed_uses_the_budget_delta() {
        let mut acc = RdpAccountant::new();
        acc.step(event(0.01, 1.1), 1000);
        let next = [(event(0.01, 1.1), 1000)];
        let eps_after = acc.projected_epsilon(1e-5, &next).unwrap();
        let roomy = crate::EpsDelta::new(eps_after + 0.01, 1e-5).unwrap();
        let tight = crate::EpsDelta::new(eps_after - 0.01, 1e-5).unwrap();
        assert!(!acc.would_exceed(roomy, &next).unwrap());
        assert!(acc.would_exceed(tight, &next).unwrap());
        let zero_delta = crate::EpsDelta::new(100.0, 0.0).unwrap();
        assert!(acc.would_exceed(zero_delta, &next).is_err());
    }

    #[test]
    fn serde_round_trip_and_rejections() {
        let mut acc = RdpAccountant::new();
        acc.step(event(0.02, 0.8), 77);
        let json = serde_json::to_string(&acc).unwrap();
        let back: RdpAccountant = serde_json::from_str(&json).unwrap();
        for (loaded, saved) in back.rdp().iter().zip(acc.rdp()) {
            assert!(
                loaded >= saved && (loaded - saved) <= 1e-15 * saved,
                "{loaded} {saved}"
            );
        }
        assert!(back.epsilon(1e-5).unwrap() >= acc.epsilon(1e-5).unwrap());
        assert_eq!(back.orders(), acc.orders());
        assert_eq!(back.steps(), 77);

        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["mechanism"] = "pld".into();
        let err = serde_json::from_value::<RdpAccountant>(value).unwrap_err();
        assert!(err.to_string().contains("mechanism 'pld'"), "{err}");

        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["orders"].as_array_mut().unwrap().pop();
        assert!(serde_json::from_value::<RdpAccountant>(value).is_err());

        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["rdp"][3] = (-0.5).into();
        assert!(serde_json::from_value::<RdpAccountant>(value).is_err());

        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["orders"][0] = 0.5.into();
        assert!(serde_json::from_value::<RdpAccountant>(value).is_err());
    }

    #[test]
    fn compose_rejects_different_orders() {
        let mut a = RdpAccountant::new();
        let b = RdpAccountant::with_orders(&[2.0, 4.0]).unwrap();
        assert_eq!(a.compose(&b), Err(AccountingError::OrdersMismatch));
        assert!(RdpAccountant::with_orders(&[]).is_err());
        assert!(RdpAccountant::with_orders(&[1.0]).is_err());
    }

    #[test]
    fn raw_rdp_steps_compose_with_gaussian_steps() {
        // A Gaussian step given as its own RDP vector composes exactly like the event.
        let e = event(1.0, 2.0);
        let mut by_event = RdpAccountant::new();
        by_event.step(e, 3);
        let mut by_vector = RdpAccountant::new();
        let v = rdp_vector(e, by_vector.orders());
        by_vector.step_rdp(&v, 3).unwrap();
        assert_eq!(by_event.rdp(), by_vector.rdp());
        assert_eq!(by_vector.steps(), 3);
        // Bad input changes nothing.
        let before = by_vector.rdp().to_vec();
        assert_eq!(
            by_vector.step_rdp(&v[1..], 1),
            Err(AccountingError::OrdersMismatch)
        );
        let mut nan = v.clone();
        nan[4] = f64::NAN;
        assert!(by_vector.step_rdp(&nan, 1).is_err());
        let mut negative = v;
        negative[0] = -1e-9;
        assert!(by_vector.step_rdp(&negative, 1).is_err());
        assert_eq!(by_vector.rdp(), &before[..]);
    }

    #[test]
    fn empty_accountant_has_spent_nothing() {
        assert_eq!(RdpAccountant::new().epsilon(1e-5).unwrap(), 0.0);
    }
}
