//! The one mechanism both accountants understand.

use serde::{Deserialize, Serialize};

use super::AccountingError;

/// One step of the Poisson-subsampled Gaussian mechanism under add/remove-one neighbours.
///
/// Each record (or client) is included independently with probability `sample_rate`, and the
/// sum of contributions clipped to norm C gets N(0, (noise_multiplier · C)²) noise per
/// coordinate. `sample_rate = 1` is the plain Gaussian mechanism.
///
/// Invariants, checked by [`SubsampledGaussian::new`] and on deserialisation:
/// `0 < sample_rate <= 1` and `0 < noise_multiplier < ∞`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawEvent", into = "RawEvent")]
pub struct SubsampledGaussian {
    sample_rate: f64,
    noise_multiplier: f64,
}

#[derive(Serialize, Deserialize)]
struct RawEvent {
    sample_rate: f64,
    noise_multiplier: f64,
}

impl SubsampledGaussian {
    /// Validates `q ∈ (0, 1]` and `σ ∈ (0, ∞)`.
    pub fn new(sample_rate: f64, noise_multiplier: f64) -> Result<Self, AccountingError> {
        if !(sample_rate > 0.0 && sample_rate <= 1.0) {
            return Err(AccountingError::InvalidSampleRate(sample_rate));
        }
        if !(noise_multiplier.is_finite() && noise_multiplier > 0.0) {
            return Err(AccountingError::InvalidNoiseMultiplier(noise_multiplier));
        }
        Ok(Self {
            sample_rate,
            noise_multiplier,
        })
    }

    /// The probability q that any one record (or client) takes part in the step.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// σ: noise standard deviation divided by the clipping norm (the L2 sensitivity).
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// A key that is equal exactly when both parameters are bit-for-bit equal, so that
    /// accountants can group identical steps.
    pub(crate) fn key(&self) -> (u64, u64) {
        (self.sample_rate.to_bits(), self.noise_multiplier.to_bits())
    }
}

impl TryFrom<RawEvent> for SubsampledGaussian {
    type Error = AccountingError;
    fn try_from(raw: RawEvent) -> Result<Self, Self::Error> {
        Self::new(raw.sample_rate, raw.noise_multiplier)
    }
}

impl From<SubsampledGaussian> for RawEvent {
    fn from(event: SubsampledGaussian) -> Self {
        Self {
            sample_rate: event.sample_rate,
            noise_multiplier: event.noise_multiplier,
        }
    }
}
