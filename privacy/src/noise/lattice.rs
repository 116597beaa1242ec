//! Gaussian noise without floating-point attacks: round to a lattice, add discrete Gaussian
//! noise there, and charge the mechanism that actually ran.
//!
//! A textbook floating-point Gaussian (Box–Muller, a ziggurat) added to a float leaves the
//! low-order bits of the result dependent on the input: Mironov (2012) recovered inputs of
//! the Laplace mechanism from them, and Jin et al. (IEEE S&P 2022, "Are we there yet? Timing
//! and floating-point attacks on differential privacy systems") did the same for Gaussian
//! samplers. [`LatticeGaussian`] closes that channel the way Canonne, Kamath & Steinke (2020)
//! and Google's secure-noise note do: the query value x is rounded to the lattice γℤ
//! (γ = clip/2^p, a power-of-two fraction of the clip), exact discrete Gaussian noise
//! N_ℤ(0, σ²) is added to the integer, and only `γ·(round(x/γ) + Y)` leaves. Its support is the
//! lattice whatever x is, and the sampler ([`super::discrete_gaussian`]) uses integers only.
//!
//! **Sensitivity after rounding.** If neighbouring inputs differ by v with ‖v‖₂ ≤ clip, their
//! rounded lattice points differ by v/γ plus two rounding errors in [−½, ½]^d, so by at most
//! Δ = 2^p + √d in L2 (lattice steps). σ is set to z·Δ, so the noise is z times the sensitivity
//! *after* rounding; p is chosen so that √d costs at most 1/1024 of Δ where σ allows.
//!
//! **What is charged** ([`LatticeGaussian::rdp`]): the discrete Gaussian's own RDP, α·Δ²/(2σ²)
//! for integer shifts (CKS 2020), and under Poisson subsampling at rate q the general bound of
//! [`crate::accounting::subsampling`] (Zhu & Wang 2019), because the sampled-Gaussian formula is
//! proved for the continuous Gaussian only. Callers compose that vector per order.

use rand::Rng;

use super::NoiseError;
use super::discrete_gaussian::{DiscreteGaussianSampler, MAX_SIGMA, variance_at_least};
use crate::accounting::subsampling::poisson_subsampled_rdp;

/// Lattice coordinates must stay below 2^52 so that rounding and integer addition are exact.
const MAX_LATTICE_COORDINATE: f64 = 4_503_599_627_370_496.0; // 2^52

/// The finest lattice considered: γ = clip / 2^40.
const MAX_BITS: i32 = 40;
/// The coarsest: γ = clip · 2^20 (only for very large noise multipliers).
const MIN_BITS: i32 = -20;

/// A planned lattice Gaussian mechanism for a query of L2 sensitivity `clip` over `dimension`
/// coordinates with noise multiplier z.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatticeGaussian {
    bits: i32,
    granularity: f64,
    sensitivity: f64,
    variance: u64,
}

impl LatticeGaussian {
    /// Plans the mechanism: picks p, sets Δ = 2^p + √d and σ² = ⌈(z·Δ)²⌉ steps².
    ///
    /// Refused: a non-positive or non-finite `clip` or `noise_multiplier`, `dimension` 0, or a
    /// z so large (beyond ~2^24 / √d) that no lattice keeps σ within the sampler's range.
    pub fn plan(clip: f64, noise_multiplier: f64, dimension: usize) -> Result<Self, NoiseError> {
        let clip = super::require_positive_finite("clip", clip)?;
        let z = super::require_positive_finite("noise_multiplier", noise_multiplier)?;
        if dimension == 0 {
            return Err(NoiseError::invalid("dimension", 0, "at least 1"));
        }
        let root_d = (dimension as f64).sqrt();
        // Finest lattice wanted: √d at most 1/1024 of 2^p.
        let wanted = (1024.0 * root_d).log2().ceil() as i32;
        // σ = z(2^p + √d) must stay ≤ MAX_SIGMA, and ≥ 1 for the sampler.
        let room = MAX_SIGMA / z - root_d;
        if room <= 2f64.powi(MIN_BITS) {
            return Err(NoiseError::invalid(
                "noise_multiplier",
                z,
                "small enough that z·√dimension stays below 2^24 lattice steps",
            ));
        }
        let largest = (room.log2().floor() as i32).min(MAX_BITS);
        let smallest =
            ((1.0 / z - root_d).max(f64::MIN_POSITIVE).log2().ceil() as i32).max(MIN_BITS);
        let bits = wanted.clamp(smallest.min(largest), largest);
        let scale = 2f64.powi(bits);
        let sensitivity = scale + root_d;
        let sigma = z * sensitivity;
        if !(1.0..=MAX_SIGMA).contains(&sigma) {
            return Err(NoiseError::invalid(
                "noise_multiplier",
                z,
                "one that leaves σ in [1, 2^24] lattice steps for this dimension",
            ));
        }
        let variance = variance_at_least(sigma)?;
        Ok(Self {
            bits,
            granularity: clip / scale,
            sensitivity,
            variance,
        })
    }

    /// p: the lattice step is clip / 2^p.
    pub fn bits(&self) -> i32 {
        self.bits
    }

    /// γ, the lattice step in the query's own units.
    pub fn granularity(&self) -> f64 {
        self.granularity
    }

    /// Δ = 2^p + √d: the L2 sensitivity after rounding, in lattice steps.
    pub fn l2_sensitivity(&self) -> f64 {
        self.sensitivity
    }

    /// σ² of the integer noise, in steps².
    pub fn variance(&self) -> u64 {
        self.variance
    }

    /// The noise's standard deviation in the query's units: σ·γ.
    pub fn std(&self) -> f64 {
        (self.variance as f64).sqrt() * self.granularity
    }

    /// σ/Δ, the multiplier the charge uses (≥ the z asked for).
    pub fn noise_multiplier(&self) -> f64 {
        (self.variance as f64).sqrt() / self.sensitivity
    }

    /// A sampler for this mechanism's noise, keyed from the operating system.
    pub fn sampler(&self) -> Result<DiscreteGaussianSampler, NoiseError> {
        DiscreteGaussianSampler::from_os_entropy(self.variance)
    }

    /// Replaces each value x with γ·(round(x/γ) + Y), Y ~ N_ℤ(0, σ²) from `sampler`, which must
    /// be [`Self::sampler`] (or, in a simulation, a seeded one of the same variance).
    ///
    /// Fails closed without partial output: every value is checked before any noise is drawn;
    /// a value whose lattice coordinate is not finite or reaches 2^52 is refused.
    pub fn apply<R: Rng>(
        &self,
        values: &mut [f64],
        sampler: &mut DiscreteGaussianSampler<R>,
    ) -> Result<(), NoiseError> {
        if sampler.variance() != self.variance {
            return Err(NoiseError::invalid(
                "sampler variance",
                sampler.variance(),
                "the planned mechanism's variance",
            ));
        }
        if let Some(index) = values.iter().position(|x| {
            let coordinate = (x / self.granularity).round().abs();
            // NaN is not finite, so it is refused here too.
            !coordinate.is_finite() || coordinate >= MAX_LATTICE_COORDINATE
        }) {
            return Err(NoiseError::Overflow { index });
        }
        for x in values.iter_mut() {
            // Exact: both are integers below 2^53 in magnitude.
            let point = (*x / self.granularity).round() + sampler.sample() as f64;
            // The product is post-processing of the integer `point`: its rounding reveals
            // nothing the integer does not.
            *x = point * self.granularity;
        }
        Ok(())
    }

    /// The RDP of one run at each of `orders`, when each contribution joined the query with
    /// probability `sample_rate` (1 for no subsampling).
    pub fn rdp(&self, sample_rate: f64, orders: &[f64]) -> Vec<f64> {
        let per_order = self.sensitivity * self.sensitivity / (2.0 * self.variance as f64);
        poisson_subsampled_rdp(sample_rate, |alpha| f64::from(alpha) * per_order, orders)
    }
}

#[cfg(test)]
#[path = "lattice_tests.rs"]
mod tests;
