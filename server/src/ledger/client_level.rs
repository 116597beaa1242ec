//! What one round charges the federation's client-level account: the noise its sum carries.
//!
//! - A **plain** round's server adds N(0, (z·C)²) to the sum of clipped updates of clients it
//!   Poisson-sampled at rate q_c: one subsampled Gaussian step ([`ClientLevel::Gaussian`]).
//! - A **secure** round's sum carries the clients' Skellam shares instead, calibrated so that
//!   the `n_min` survivors' noise has variance ≥ (z·Δ₂)² in quantisation steps. The ledger
//!   charges exactly that mechanism ([`ClientLevel::Skellam`]): Agarwal, Kairouz & Liu's RDP of
//!   the aggregate Skellam mechanism at the guaranteed variance, with the rounded update's L1 and
//!   L2 sensitivities (`cohort_privacy::noise::skellam_rdp`), composed per order into the same
//!   accountant state as every other step.
//!
//! The Skellam charge is **not amplified by client sampling**. The noise of a secure round exists
//! to hide each client's update from the server, and the server drew the sample, so against it
//! sampling hides nothing; the subsampled-Gaussian formula would not apply to Skellam anyway.
//! Composing at q = 1 is pessimistic and valid (see the `skellam_rdp` module).

use cohort_privacy::noise::skellam_rdp;

use super::{LedgerError, Mechanism};
use crate::domain::TrainingConfig;

/// One secure round's aggregate Skellam mechanism as the ledger charges it.
///
/// Invariant (checked by [`SkellamCharge::new`]): every field is finite and > 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkellamCharge {
    l1_sensitivity: f64,
    l2_sensitivity: f64,
    central_variance: f64,
}

impl SkellamCharge {
    /// The mechanism with per-client sensitivities `l1`, `l2` (in quantisation steps, after
    /// rounding) and noise of per-coordinate variance `central_variance` (steps²) guaranteed in
    /// the sum.
    pub fn new(l1: f64, l2: f64, central_variance: f64) -> Result<Self, LedgerError> {
        for (name, v) in [
            ("l1 sensitivity", l1),
            ("l2 sensitivity", l2),
            ("central variance", central_variance),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(LedgerError::InvalidMechanism(format!(
                    "Skellam {name} must be a finite number > 0, got {v}"
                )));
            }
        }
        Ok(Self {
            l1_sensitivity: l1,
            l2_sensitivity: l2,
            central_variance,
        })
    }

    /// Δ₁ in quantisation steps.
    pub fn l1_sensitivity(&self) -> f64 {
        self.l1_sensitivity
    }

    /// Δ₂ in quantisation steps.
    pub fn l2_sensitivity(&self) -> f64 {
        self.l2_sensitivity
    }

    /// The variance the sum is guaranteed to carry, in steps².
    pub fn central_variance(&self) -> f64 {
        self.central_variance
    }

    /// √V / Δ₂: the multiplier a Gaussian of the same variance would have (≥ the configured
    /// z). Recorded in the ledger entry for audit; the charge itself is [`Self::rdp`].
    pub fn noise_multiplier(&self) -> f64 {
        self.central_variance.sqrt() / self.l2_sensitivity
    }

    /// The mechanism's RDP at each of `orders`.
    pub fn rdp(&self, orders: &[f64]) -> Result<Vec<f64>, LedgerError> {
        skellam_rdp::skellam_rdp(
            orders,
            self.l1_sensitivity,
            self.l2_sensitivity,
            self.central_variance,
        )
        .map_err(|e| LedgerError::InvalidMechanism(e.to_string()))
    }
}

/// The client-level mechanism of one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClientLevel {
    /// Central Gaussian noise on a plain round's sum, amplified by Poisson client sampling.
    Gaussian(Mechanism),
    /// The clients' Skellam shares in a secure round's sum, unamplified.
    Skellam(SkellamCharge),
}

impl ClientLevel {
    /// The charge of one round of `config`; `None` when the federation claims no client-level
    /// DP. A secure federation must pass its round's `skellam` charge (it depends on how many
    /// clients were sampled and on the quantiser): charging the configured Gaussian instead
    /// would miss the gap between the two, so its absence is an error, not a fallback.
    pub fn for_round(
        config: &TrainingConfig,
        skellam: Option<SkellamCharge>,
    ) -> Result<Option<Self>, LedgerError> {
        if config.federation_budget().is_none() {
            return Ok(None);
        }
        if config.secure_aggregation() {
            return match skellam {
                Some(s) => Ok(Some(Self::Skellam(s))),
                None => Err(LedgerError::InvalidMechanism(
                    "a secure round's client-level charge needs its Skellam noise plan".into(),
                )),
            };
        }
        Mechanism::new(
            config.client_sampling_rate(),
            config.central_noise_multiplier(),
        )
        .map(|m| Some(Self::Gaussian(m)))
    }

    /// The sampling rate written in the ledger entry: q_c, or 1 for the unamplified Skellam.
    pub fn entry_sample_rate(&self) -> f64 {
        match self {
            Self::Gaussian(m) => m.sample_rate(),
            Self::Skellam(_) => 1.0,
        }
    }

    /// The noise multiplier written in the ledger entry.
    pub fn entry_noise_multiplier(&self) -> f64 {
        match self {
            Self::Gaussian(m) => m.noise_multiplier(),
            Self::Skellam(s) => s.noise_multiplier(),
        }
    }

    /// Composes one round into `accountant`.
    pub fn record<A: super::LedgerAccountant>(
        &self,
        accountant: &mut A,
    ) -> Result<(), LedgerError> {
        match self {
            Self::Gaussian(m) => accountant.record(*m, 1),
            Self::Skellam(s) => accountant.record_skellam(s),
        }
    }
}
