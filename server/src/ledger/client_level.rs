//! What one round charges the federation's client-level account: the noise its sum carries.
//!
//! - A **plain** round's server puts the sum of clipped updates of clients it Poisson-sampled
//!   at rate q_c on a lattice and adds exact discrete Gaussian noise of σ ≥ z·Δ there
//!   ([`central_noise`], `cohort_privacy::noise::LatticeGaussian`), so no floating-point sampler
//!   touches the sum. The ledger charges that mechanism ([`ClientLevel::Lattice`]): the discrete
//!   Gaussian's RDP at the rounded sensitivity Δ, amplified by Poisson sampling with the
//!   mechanism-agnostic bound of Zhu & Wang (the sampled-Gaussian formula is proved for the
//!   continuous Gaussian only).
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

use cohort_privacy::noise::{LatticeGaussian, skellam_rdp};

use super::LedgerError;
use crate::domain::TrainingConfig;

/// The central noise a plain round of `config` adds to the sum of a `dimension`-parameter
/// model's updates; `None` when the federation asks for none (z = 0). The round's commit and
/// its ledger charge both call this, so what is charged is what is added.
pub fn central_noise(
    config: &TrainingConfig,
    dimension: usize,
) -> Result<Option<LatticeGaussian>, LedgerError> {
    let z = config.central_noise_multiplier();
    if z == 0.0 {
        return Ok(None);
    }
    let clip = config.update_clip().ok_or_else(|| {
        LedgerError::InvalidMechanism("central noise needs an update clip".into())
    })?;
    LatticeGaussian::plan(clip, z, dimension)
        .map(Some)
        .map_err(|e| LedgerError::InvalidMechanism(e.to_string()))
}

/// A plain round's central noise as the ledger charges it: the planned lattice mechanism and
/// the client sampling rate that amplifies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatticeCharge {
    plan: LatticeGaussian,
    sample_rate: f64,
}

impl LatticeCharge {
    /// The mechanism `plan` run on a sum of clients sampled at `sample_rate` (in (0, 1]).
    pub fn new(plan: LatticeGaussian, sample_rate: f64) -> Result<Self, LedgerError> {
        if !(sample_rate.is_finite() && sample_rate > 0.0 && sample_rate <= 1.0) {
            return Err(LedgerError::InvalidMechanism(format!(
                "sample rate must be in (0, 1], got {sample_rate}"
            )));
        }
        Ok(Self { plan, sample_rate })
    }

    /// The planned mechanism.
    pub fn plan(&self) -> &LatticeGaussian {
        &self.plan
    }

    /// The mechanism's RDP at each of `orders`.
    pub fn rdp(&self, orders: &[f64]) -> Vec<f64> {
        self.plan.rdp(self.sample_rate, orders)
    }
}

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
    /// Central lattice Gaussian noise on a plain round's sum, amplified by Poisson client
    /// sampling.
    Lattice(LatticeCharge),
    /// The clients' Skellam shares in a secure round's sum, unamplified.
    Skellam(SkellamCharge),
}

impl ClientLevel {
    /// The charge of one round of `config` on a `dimension`-parameter model; `None` when the
    /// federation claims no client-level DP. A secure federation must pass its round's `skellam` charge (it depends on how many
    /// clients were sampled and on the quantiser): charging the configured Gaussian instead
    /// would miss the gap between the two, so its absence is an error, not a fallback.
    pub fn for_round(
        config: &TrainingConfig,
        dimension: usize,
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
        let plan = central_noise(config, dimension)?.ok_or_else(|| {
            LedgerError::InvalidMechanism(
                "a client-level budget without central noise cannot be charged".into(),
            )
        })?;
        LatticeCharge::new(plan, config.client_sampling_rate()).map(|c| Some(Self::Lattice(c)))
    }

    /// The sampling rate written in the ledger entry: q_c, or 1 for the unamplified Skellam.
    pub fn entry_sample_rate(&self) -> f64 {
        match self {
            Self::Lattice(c) => c.sample_rate,
            Self::Skellam(_) => 1.0,
        }
    }

    /// The noise multiplier written in the ledger entry (σ/Δ for the lattice, √V/Δ₂ for
    /// Skellam: at least the configured z).
    pub fn entry_noise_multiplier(&self) -> f64 {
        match self {
            Self::Lattice(c) => c.plan.noise_multiplier(),
            Self::Skellam(s) => s.noise_multiplier(),
        }
    }

    /// Composes one round into `accountant`.
    pub fn record<A: super::LedgerAccountant>(
        &self,
        accountant: &mut A,
    ) -> Result<(), LedgerError> {
        match self {
            Self::Lattice(c) => accountant.record_rdp(&|orders| Ok(c.rdp(orders))),
            Self::Skellam(s) => accountant.record_rdp(&|orders| s.rdp(orders)),
        }
    }
}
