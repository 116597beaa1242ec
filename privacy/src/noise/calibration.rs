//! From the central noise the accountant needs to the Skellam share each client adds.
//!
//! The accountant reasons about one central mechanism: the sum of the surviving clients'
//! quantised updates plus integer noise of variance `σ_central²` (in quantisation steps).
//! Clients that drop out after sampling take their noise share with them, so each share is sized
//! for the *fewest* clients that can survive a round that still completes; if more survive, the
//! sum simply carries more noise than accounted, which is safe.

use super::{NoiseError, require_positive_finite, skellam::MAX_MU};

/// The fewest clients that survive when at most `max_dropout_fraction` of `sampled` drop.
///
/// Rounds the number of dropped clients *up* (ceil), so the answer is never larger than the
/// true minimum: a larger `n_min` would make every share too small. Errors when no client
/// would be guaranteed to survive, since no per-client share can then guarantee any noise.
pub fn min_survivors(sampled: u64, max_dropout_fraction: f64) -> Result<u64, NoiseError> {
    if sampled == 0 {
        return Err(NoiseError::invalid("sampled", sampled, "at least 1"));
    }
    if !(max_dropout_fraction.is_finite() && (0.0..1.0).contains(&max_dropout_fraction)) {
        return Err(NoiseError::invalid(
            "max_dropout_fraction",
            max_dropout_fraction,
            "in [0, 1)",
        ));
    }
    // Counts are far below 2^53, so the products are exact enough; ceil keeps it pessimistic.
    let dropped = (sampled as f64 * max_dropout_fraction).ceil() as u64;
    match sampled.checked_sub(dropped) {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(NoiseError::invalid(
            "max_dropout_fraction",
            max_dropout_fraction,
            "small enough that at least one sampled client survives",
        )),
    }
}

/// A calibrated per-client Skellam share.
///
/// Invariant: `n_min · 2 · per_client_mu ≥ σ_central²` in `f64` arithmetic, checked when the
/// plan is made, so the accountant may use [`SkellamPlan::guaranteed_central_variance`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkellamPlan {
    per_client_mu: f64,
    n_min: u64,
    target_central_std: f64,
}

impl SkellamPlan {
    /// The share that makes `n_min` clients' noise sum to at least variance
    /// `central_std²` (both in quantisation steps).
    ///
    /// The sum of independent Skellam(μ, μ) is Skellam(n·μ, n·μ) with variance 2nμ, so
    /// μ = σ²/(2·n_min), nudged upwards until the product clears σ² despite rounding.
    pub fn for_central_std(central_std: f64, n_min: u64) -> Result<Self, NoiseError> {
        let central_std = require_positive_finite("central_std", central_std)?;
        if n_min == 0 {
            return Err(NoiseError::invalid("n_min", n_min, "at least 1"));
        }
        let target = central_std * central_std;
        if !target.is_finite() {
            return Err(NoiseError::invalid(
                "central_std",
                central_std,
                "with a finite square",
            ));
        }
        let n = n_min as f64;
        let mut mu = target / (2.0 * n);
        while 2.0 * n * mu < target {
            mu = mu.next_up();
        }
        if !(mu > 0.0 && mu <= MAX_MU) {
            return Err(NoiseError::invalid(
                "central_std",
                central_std,
                "such that σ²/(2·n_min) lies in (0, 2^40]",
            ));
        }
        Ok(Self {
            per_client_mu: mu,
            n_min,
            target_central_std: central_std,
        })
    }

    /// The Poisson mean each client passes to [`super::SkellamSampler`].
    pub fn per_client_mu(&self) -> f64 {
        self.per_client_mu
    }

    /// The survivors this plan was sized for.
    pub fn n_min(&self) -> u64 {
        self.n_min
    }

    /// The central std the plan was asked for.
    pub fn target_central_std(&self) -> f64 {
        self.target_central_std
    }

    /// The variance the aggregate is guaranteed to carry when at least `n_min` clients survive:
    /// `2 · n_min · μ` (≥ σ_central²). This is the value to account with.
    pub fn guaranteed_central_variance(&self) -> f64 {
        2.0 * self.n_min as f64 * self.per_client_mu
    }

    /// The variance of the aggregate when `survivors` clients' noise is in the sum; `None` when
    /// fewer than `n_min` survived, because the accounted guarantee no longer holds and the
    /// round must not be released.
    pub fn central_variance_with(&self, survivors: u64) -> Option<f64> {
        (survivors >= self.n_min).then_some(2.0 * survivors as f64 * self.per_client_mu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn min_survivors_rounds_dropouts_up() {
        assert_eq!(min_survivors(100, 0.2).unwrap(), 80);
        assert_eq!(min_survivors(10, 0.25).unwrap(), 7); // 2.5 dropped → 3
        assert_eq!(min_survivors(10, 0.0).unwrap(), 10);
        assert_eq!(min_survivors(1, 0.0).unwrap(), 1);
        assert!(min_survivors(1, 0.5).is_err());
        assert!(min_survivors(0, 0.1).is_err());
        assert!(min_survivors(10, 1.0).is_err());
        assert!(min_survivors(10, f64::NAN).is_err());
        assert!(min_survivors(10, -0.1).is_err());
    }

    #[test]
    fn rejects_bad_plans() {
        assert!(SkellamPlan::for_central_std(0.0, 10).is_err());
        assert!(SkellamPlan::for_central_std(-1.0, 10).is_err());
        assert!(SkellamPlan::for_central_std(f64::NAN, 10).is_err());
        assert!(SkellamPlan::for_central_std(1.0, 0).is_err());
        assert!(SkellamPlan::for_central_std(1e200, 1).is_err());
        assert!(SkellamPlan::for_central_std(1e7, 1).is_err()); // μ = 5e13 > 2^40
    }

    #[test]
    fn fewer_than_n_min_survivors_voids_the_plan() {
        let plan = SkellamPlan::for_central_std(100.0, 8).unwrap();
        assert!(plan.central_variance_with(7).is_none());
        assert!(plan.central_variance_with(8).unwrap() >= 100.0 * 100.0);
        assert!(plan.central_variance_with(9).unwrap() > plan.central_variance_with(8).unwrap());
    }

    proptest! {
        #[test]
        fn calibration_round_trips(std in 1e-3_f64..1e5, n_min in 1_u64..100_000) {
            let plan = SkellamPlan::for_central_std(std, n_min).unwrap();
            let var = plan.guaranteed_central_variance();
            // Never below the target, and not wastefully above it.
            prop_assert!(var >= std * std);
            prop_assert!(var <= std * std * (1.0 + 1e-12));
            prop_assert_eq!(plan.central_variance_with(n_min), Some(var));
        }

        #[test]
        fn min_survivors_is_never_above_the_true_minimum(
            sampled in 1_u64..1_000_000, frac in 0.0_f64..0.99,
        ) {
            if let Ok(n) = min_survivors(sampled, frac) {
                // At most floor(frac·sampled) may drop; we assume at least that many did.
                let true_min = sampled - (sampled as f64 * frac).floor() as u64;
                prop_assert!(n <= true_min && n >= 1);
            }
        }
    }
}
