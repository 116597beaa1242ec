//! Client-level (user-level) accounting for DP-FedAvg.
//!
//! DP-FedAvg (McMahan, Ramage, Talwar & Zhang, ICLR 2018) protects whether a *client* took
//! part: the server Poisson-samples clients at rate `q`, clips each update to L2 norm
//! `update_clip`, and adds Gaussian noise of standard deviation `central_noise_std` to the
//! sum. One round is exactly one step of the subsampled Gaussian mechanism with
//! `q = client sampling rate` and `σ = central_noise_std / update_clip`, so the accountants
//! apply unchanged. This module gives that mapping names, so a federation's ε is never computed
//! from a record-level sampling rate by mistake.

use serde::{Deserialize, Serialize};

use super::{
    Accountant, AccountantKind, AccountingError, SubsampledGaussian, noise_multiplier_for,
};
use crate::budget::EpsDelta;

/// One DP-FedAvg round's privacy parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FedAvgRound {
    event: SubsampledGaussian,
}

impl FedAvgRound {
    /// A round where each client joins with probability `client_sampling_rate`, updates are
    /// clipped to `update_clip` and the sum gets N(0, central_noise_std²) noise.
    pub fn new(
        client_sampling_rate: f64,
        central_noise_std: f64,
        update_clip: f64,
    ) -> Result<Self, AccountingError> {
        if !(update_clip.is_finite() && update_clip > 0.0) {
            // σ = std / clip: a bad clip makes σ meaningless, and the error says which input.
            return Err(AccountingError::InvalidNoiseMultiplier(
                central_noise_std / update_clip,
            ));
        }
        Self::from_noise_multiplier(client_sampling_rate, central_noise_std / update_clip)
    }

    /// A round given the noise multiplier `z = central_noise_std / update_clip` directly.
    pub fn from_noise_multiplier(
        client_sampling_rate: f64,
        noise_multiplier: f64,
    ) -> Result<Self, AccountingError> {
        Ok(Self {
            event: SubsampledGaussian::new(client_sampling_rate, noise_multiplier)?,
        })
    }

    /// The client sampling rate q.
    pub fn client_sampling_rate(&self) -> f64 {
        self.event.sample_rate()
    }

    /// σ = central noise standard deviation / update clip.
    pub fn noise_multiplier(&self) -> f64 {
        self.event.noise_multiplier()
    }

    /// The mechanism step this round is, for any [`Accountant`].
    pub fn event(&self) -> SubsampledGaussian {
        self.event
    }
}

/// A federation's client-level accountant: any [`Accountant`], fed rounds instead of steps.
///
/// Serialises exactly as the inner accountant does.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientLevelAccountant<A> {
    inner: A,
}

impl<A: Accountant> ClientLevelAccountant<A> {
    /// Wraps an (usually empty) accountant.
    pub fn new(inner: A) -> Self {
        Self { inner }
    }

    /// Records `count` rounds run with `round`'s parameters.
    pub fn record_rounds(&mut self, round: FedAvgRound, count: u64) {
        self.inner.step(round.event, count);
    }

    /// Federation-level ε at `delta`.
    pub fn epsilon(&self, delta: f64) -> Result<f64, AccountingError> {
        self.inner.epsilon(delta)
    }

    /// Whether running `next` rounds would push the federation past `budget`.
    pub fn would_exceed(
        &self,
        budget: EpsDelta,
        next: &[(FedAvgRound, u64)],
    ) -> Result<bool, AccountingError> {
        let steps: Vec<_> = next.iter().map(|&(r, c)| (r.event, c)).collect();
        self.inner.would_exceed(budget, &steps)
    }

    /// How many rounds have been recorded.
    pub fn rounds(&self) -> u64 {
        self.inner.steps()
    }

    /// The wrapped accountant.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

/// The smallest noise multiplier z = central_noise_std / update_clip meeting `target` after
/// `rounds` rounds at `client_sampling_rate`.
pub fn noise_multiplier_for_rounds(
    target: EpsDelta,
    client_sampling_rate: f64,
    rounds: u64,
    kind: AccountantKind,
) -> Result<f64, AccountingError> {
    noise_multiplier_for(target, client_sampling_rate, rounds, kind)
}

/// The smallest central noise standard deviation meeting `target`, for updates clipped to
/// `update_clip`.
pub fn central_noise_std_for(
    target: EpsDelta,
    client_sampling_rate: f64,
    rounds: u64,
    update_clip: f64,
    kind: AccountantKind,
) -> Result<f64, AccountingError> {
    if !(update_clip.is_finite() && update_clip > 0.0) {
        return Err(AccountingError::InvalidNoiseMultiplier(update_clip));
    }
    Ok(noise_multiplier_for_rounds(target, client_sampling_rate, rounds, kind)? * update_clip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::RdpAccountant;

    #[test]
    fn a_round_is_a_subsampled_gaussian_step() {
        let round = FedAvgRound::new(0.01, 1.1 * 0.5, 0.5).unwrap();
        assert!((round.noise_multiplier() - 1.1).abs() < 1e-15);
        let mut fed = ClientLevelAccountant::new(RdpAccountant::new());
        fed.record_rounds(round, 1000);
        let mut plain = RdpAccountant::new();
        plain.step(
            SubsampledGaussian::new(0.01, round.noise_multiplier()).unwrap(),
            1000,
        );
        assert_eq!(fed.epsilon(1e-5).unwrap(), plain.epsilon(1e-5).unwrap());
        assert_eq!(fed.rounds(), 1000);
    }

    #[test]
    fn central_noise_scales_with_the_clip() {
        let target = EpsDelta::new(2.0, 1e-5).unwrap();
        let z = noise_multiplier_for_rounds(target, 0.05, 200, AccountantKind::Rdp).unwrap();
        let std = central_noise_std_for(target, 0.05, 200, 0.1, AccountantKind::Rdp).unwrap();
        assert!((std - 0.1 * z).abs() < 1e-12);
        assert!(FedAvgRound::new(0.05, 1.0, 0.0).is_err());
        assert!(FedAvgRound::new(0.05, -1.0, 1.0).is_err());
    }
}
