/*!
The release path of integer statistics computed from a site's records.

# Brief overview
Anything a site computes from its records and sends out — an evaluation's confusion counts and
score histograms, a feature-importance sum — leaves through the same four steps:

1. **Bounded contribution.** The statistic is an integer vector to which one record adds a
   known amount: [`Sensitivity::of_record`] turns "each record touches these cells by at most
   this much" into the exact L1 and L2 sensitivity under add/remove-one-record neighbours.
2. **Calibration.** [`ReleasePlan::calibrate`] finds the smallest Skellam variance whose RDP
   (Agarwal, Kairouz & Liu 2021, [`crate::noise::skellam_rdp`]) converts to at most the target
   (ε, δ). Where the noise is added is part of the plan ([`Placement`]): every site alone, or
   only the sum.
3. **Charge before noise.** [`ReleasePlan::release_after_charging`] hands the
   [`ReleaseCharge`] to the caller's ledger and draws the noise only if the ledger accepted it
   (fail closed: a crash in between leaves the spend recorded and nothing released).
4. **Secure sum.** The noised vector is masked and summed with SecAgg+ by the caller (or, where
   per-site release is allowed, sent as it is). Integers sum exactly, so the server's total
   carries exactly the noise the plan accounts for.

The charge is a mechanism, not a number: ledgers compose its per-order RDP
([`ReleaseCharge::rdp`]) into the same Rényi state as DP-SGD's steps, which is tighter than
adding ε's and is exactly how the server charges distributed noise on updates. On its own, one
release costs [`ReleasePlan::epsilon`] at the target δ (never more than the target ε).

```
use cohort_privacy::EpsDelta;
use cohort_privacy::integer_release::{Contribution, Placement, ReleasePlan, Sensitivity};

// A binary confusion matrix and a score histogram: each record adds 1 to one cell of each.
let sensitivity = Sensitivity::of_record(&[
    Contribution { cells: 1, max_units: 1 },
    Contribution { cells: 1, max_units: 1 },
])?;
let plan = ReleasePlan::calibrate(EpsDelta::new(1.0, 1e-6)?, sensitivity, Placement::Local)?;
assert!(plan.epsilon() <= 1.0);
let mut counts = vec![40_i64, 3, 5, 52];
let mut ledger = Vec::new();
plan.release_after_charging(&mut counts, &mut plan.sampler()?, |charge| {
    ledger.push(*charge); // a real ledger appends and fsyncs here
    Ok::<(), std::convert::Infallible>(())
})?;
assert_eq!(ledger.len(), 1);
# Ok::<(), Box<dyn std::error::Error>>(())
```

# Which trust each placement assumes
- [`Placement::Local`]: every site's vector carries the full calibrated noise on its own. A
  site's records keep their (ε, δ) against anyone who sees that vector — the server included,
  even if secure aggregation failed or was never used. Required before a site's own figures may
  be released. The sum of `n` sites carries `n` times the variance, so figures are noisier.
- [`Placement::Distributed`]: each site adds `1/n_min` of the variance, and only a sum of at least
  `n_min` sites' vectors carries the calibrated noise. The guarantee therefore relies on secure
  aggregation revealing nothing but that sum, and on the sum never being released with fewer
  than `n_min` contributors ([`ReleasePlan::sum_variance`] returns `None` then). Less noise: the
  sum's standard deviation is that of one local site's.
*/

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::accounting::conversion::epsilon_from_rdp;
use crate::accounting::rdp::default_orders;
use crate::budget::EpsDelta;
use crate::noise::skellam::MAX_MU;
use crate::noise::{NoiseError, SkellamSampler, skellam_rdp};

/// How one record can change the released vector: it touches at most `cells` coordinates,
/// each by at most `max_units` (in absolute value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contribution {
    /// Coordinates one record may change in this block.
    pub cells: u64,
    /// The largest change to any one of them, in the vector's integer units.
    pub max_units: u64,
}

/// The L1 and L2 sensitivity of an integer vector under add/remove-one-record neighbours.
///
/// Invariant: both finite, `0 < l2 ≤ l1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sensitivity {
    l1: f64,
    l2: f64,
}

impl Sensitivity {
    /// The exact sensitivity of a vector to which each record adds at most what `blocks` say:
    /// `Δ₁ = Σ cells·max_units`, `Δ₂ = √(Σ cells·max_units²)`. Exact, not a bound, because a
    /// record can reach every listed change at once (a record of the worst kind does).
    pub fn of_record(blocks: &[Contribution]) -> Result<Self, NoiseError> {
        let mut l1 = 0.0_f64;
        let mut l2_squared = 0.0_f64;
        for block in blocks {
            let cells = block.cells as f64;
            let units = block.max_units as f64;
            l1 += cells * units;
            l2_squared += cells * units * units;
        }
        Self::new(l1, l2_squared.sqrt())
    }

    /// A sensitivity given directly, for vectors whose per-record change is bounded by a clip
    /// (for example a quantised, L2-clipped attribution vector).
    pub fn new(l1: f64, l2: f64) -> Result<Self, NoiseError> {
        if !(l1.is_finite() && l1 > 0.0) {
            return Err(NoiseError::invalid("l1", l1, "a finite number > 0"));
        }
        if !(l2.is_finite() && l2 > 0.0 && l2 <= l1) {
            return Err(NoiseError::invalid(
                "l2",
                l2,
                "a finite number > 0 and at most the L1 sensitivity",
            ));
        }
        Ok(Self { l1, l2 })
    }

    /// Δ₁.
    pub fn l1(&self) -> f64 {
        self.l1
    }

    /// Δ₂.
    pub fn l2(&self) -> f64 {
        self.l2
    }
}

/// Where the calibrated noise is added; see the module docs for the trust each assumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Placement {
    /// Every site adds the full noise.
    Local,
    /// Every site adds `1/min_survivors` of it; only a secure sum of at least `min_survivors`
    /// sites is private.
    Distributed {
        /// The fewest sites whose noise the released sum must contain.
        min_survivors: u64,
    },
}

/// One release's mechanism as a ledger charges it: the Skellam mechanism with these
/// sensitivities and the variance the released vector is guaranteed to carry.
///
/// Invariant: every field finite and > 0 (checked by [`ReleaseCharge::new`] and on
/// deserialisation), so a ledger line that replays into a charge is a valid mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCharge", into = "RawCharge")]
pub struct ReleaseCharge {
    l1: f64,
    l2: f64,
    variance: f64,
}

#[derive(Serialize, Deserialize)]
struct RawCharge {
    l1_sensitivity: f64,
    l2_sensitivity: f64,
    variance: f64,
}

impl TryFrom<RawCharge> for ReleaseCharge {
    type Error = NoiseError;
    fn try_from(raw: RawCharge) -> Result<Self, Self::Error> {
        Self::new(
            Sensitivity::new(raw.l1_sensitivity, raw.l2_sensitivity)?,
            raw.variance,
        )
    }
}

impl From<ReleaseCharge> for RawCharge {
    fn from(c: ReleaseCharge) -> Self {
        Self {
            l1_sensitivity: c.l1,
            l2_sensitivity: c.l2,
            variance: c.variance,
        }
    }
}

impl ReleaseCharge {
    /// The mechanism with `sensitivity` and noise of per-coordinate `variance` in the release.
    pub fn new(sensitivity: Sensitivity, variance: f64) -> Result<Self, NoiseError> {
        if !(variance.is_finite() && variance > 0.0) {
            return Err(NoiseError::invalid(
                "variance",
                variance,
                "a finite number > 0",
            ));
        }
        Ok(Self {
            l1: sensitivity.l1,
            l2: sensitivity.l2,
            variance,
        })
    }

    /// Δ₁ in the vector's units.
    pub fn l1_sensitivity(&self) -> f64 {
        self.l1
    }

    /// Δ₂ in the vector's units.
    pub fn l2_sensitivity(&self) -> f64 {
        self.l2
    }

    /// The per-coordinate noise variance the release is guaranteed to carry.
    pub fn variance(&self) -> f64 {
        self.variance
    }

    /// The mechanism's RDP at each of `orders`, for an RDP accountant to add per order.
    pub fn rdp(&self, orders: &[f64]) -> Result<Vec<f64>, NoiseError> {
        skellam_rdp::skellam_rdp(orders, self.l1, self.l2, self.variance)
    }

    /// ε of this release alone at `delta`, over the accountant's default orders. This is
    /// exactly what an RDP accountant that recorded nothing else reports after charging it.
    pub fn epsilon(&self, delta: f64) -> Result<f64, NoiseError> {
        let orders = default_orders();
        let rdp = self.rdp(orders)?;
        epsilon_from_rdp(orders, &rdp, delta)
            .map(|(epsilon, _)| epsilon)
            .map_err(|_| NoiseError::invalid("delta", delta, "in (0, 1)"))
    }
}

/// A calibrated release: how much noise each site adds, and what the release costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReleasePlan {
    charge: ReleaseCharge,
    placement: Placement,
    per_site_mu: f64,
    target: EpsDelta,
    epsilon: f64,
}

/// Relative width at which the variance bisection stops: well below any visible difference in
/// noise, far above `f64` resolution.
const BISECTION_TOLERANCE: f64 = 1e-9;

impl ReleasePlan {
    /// The least noise (to 1e-9 relative) whose release costs at most `target` on its own.
    ///
    /// Deterministic: the server and every client calibrate the same plan from the same inputs
    /// bit for bit, so a task need not carry the noise, only what it was calibrated from. Only
    /// a variance that was checked to meet the target is ever returned.
    pub fn calibrate(
        target: EpsDelta,
        sensitivity: Sensitivity,
        placement: Placement,
    ) -> Result<Self, NoiseError> {
        if target.epsilon() <= 0.0 {
            return Err(NoiseError::invalid(
                "epsilon",
                target.epsilon(),
                "> 0 (a release with ε = 0 would need infinite noise)",
            ));
        }
        if target.delta() <= 0.0 {
            return Err(NoiseError::invalid(
                "delta",
                target.delta(),
                "> 0 (the Skellam mechanism's guarantee is approximate DP)",
            ));
        }
        let share = match placement {
            Placement::Local => 1.0,
            Placement::Distributed { min_survivors: 0 } => {
                return Err(NoiseError::invalid("min_survivors", 0, "at least 1"));
            }
            Placement::Distributed { min_survivors } => min_survivors as f64,
        };
        let cost = |variance: f64| -> Result<f64, NoiseError> {
            ReleaseCharge::new(sensitivity, variance)?.epsilon(target.delta())
        };
        let fits = |variance: f64| -> Result<bool, NoiseError> {
            let e = cost(variance)?;
            Ok(!e.is_nan() && e <= target.epsilon())
        };
        // Bracket: `low` never fits, `high` always does.
        let mut high = sensitivity.l2 * sensitivity.l2;
        let mut low = 0.0_f64;
        let largest = 2.0 * MAX_MU * share;
        while !fits(high)? {
            low = high;
            high *= 4.0;
            if high > largest {
                return Err(NoiseError::invalid(
                    "epsilon",
                    target.epsilon(),
                    "large enough that the noise it needs stays within the sampler's range",
                ));
            }
        }
        while high - low > BISECTION_TOLERANCE * high {
            let mid = 0.5 * (low + high);
            if fits(mid)? {
                high = mid;
            } else {
                low = mid;
            }
        }
        // Each site's μ so that `share` sites' noise sums to at least `high`.
        let mut per_site_mu = high / (2.0 * share);
        while 2.0 * share * per_site_mu < high {
            per_site_mu = per_site_mu.next_up();
        }
        let variance = 2.0 * share * per_site_mu;
        let charge = ReleaseCharge::new(sensitivity, variance)?;
        let epsilon = charge.epsilon(target.delta())?;
        if epsilon.is_nan() || epsilon > target.epsilon() {
            // Unreachable by monotonicity; refuse rather than release over the target.
            return Err(NoiseError::invalid(
                "epsilon",
                target.epsilon(),
                "met by the calibrated noise (calibration did not converge)",
            ));
        }
        Ok(Self {
            charge,
            placement,
            per_site_mu,
            target,
            epsilon,
        })
    }

    /// What a ledger charges for this release.
    pub fn charge(&self) -> ReleaseCharge {
        self.charge
    }

    /// Where the noise is added.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The target the plan was calibrated to.
    pub fn target(&self) -> EpsDelta {
        self.target
    }

    /// ε of one release on its own at the target δ (≤ the target ε).
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// The Poisson mean each site's Skellam sampler uses (its noise variance is 2μ).
    pub fn per_site_mu(&self) -> f64 {
        self.per_site_mu
    }

    /// The per-coordinate noise variance of a sum of `sites` sites' released vectors, or `None`
    /// when the plan's guarantee does not hold for that sum (no site, or a distributed plan
    /// with fewer than its `min_survivors`): such a sum must not be released.
    pub fn sum_variance(&self, sites: u64) -> Option<f64> {
        let enough = match self.placement {
            Placement::Local => sites >= 1,
            Placement::Distributed { min_survivors } => sites >= min_survivors,
        };
        enough.then_some(2.0 * self.per_site_mu * sites as f64)
    }

    /// A sampler for this plan's per-site noise, keyed from the operating system.
    pub fn sampler(&self) -> Result<SkellamSampler, NoiseError> {
        SkellamSampler::from_os_entropy(self.per_site_mu)
    }

    /// Charges the release through `charge`, then — only if it returned `Ok` — adds this
    /// site's noise to `values` with `sampler`. On any error `values` is unchanged and must not
    /// be sent; after a refused charge nothing was drawn.
    pub fn release_after_charging<E>(
        &self,
        values: &mut [i64],
        sampler: &mut SkellamSampler,
        charge: impl FnOnce(&ReleaseCharge) -> Result<(), E>,
    ) -> Result<(), ReleaseError<E>> {
        if sampler.mu() != self.per_site_mu {
            return Err(ReleaseError::WrongSampler {
                expected_mu: self.per_site_mu,
                got_mu: sampler.mu(),
            });
        }
        charge(&self.charge).map_err(ReleaseError::ChargeRefused)?;
        let mut noised = values.to_vec();
        sampler.add_to(&mut noised).map_err(ReleaseError::Noise)?;
        values.copy_from_slice(&noised);
        Ok(())
    }
}

/// Why [`ReleasePlan::release_after_charging`] released nothing.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReleaseError<E> {
    /// The ledger refused the charge: nothing was drawn or released.
    ChargeRefused(E),
    /// The sampler does not draw this plan's noise (a caller bug): nothing was charged.
    WrongSampler {
        /// The plan's μ.
        expected_mu: f64,
        /// The sampler's μ.
        got_mu: f64,
    },
    /// Adding the noise overflowed: charged, but nothing may be released.
    Noise(NoiseError),
}

impl<E: fmt::Display> fmt::Display for ReleaseError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChargeRefused(e) => write!(f, "the ledger refused the release: {e}"),
            Self::WrongSampler {
                expected_mu,
                got_mu,
            } => write!(
                f,
                "the sampler draws Skellam noise with mu = {got_mu}, the plan needs {expected_mu}"
            ),
            Self::Noise(e) => write!(f, "{e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for ReleaseError<E> {}

#[cfg(test)]
#[path = "integer_release_tests.rs"]
mod tests;
