//! The symmetric Skellam sampler: `Poisson(μ) − Poisson(μ)`, mean 0, variance 2μ.
//!
//! Randomness comes only from a ChaCha20 CSPRNG seeded by the operating system
//! ([`SkellamSampler::from_os_entropy`]); reproducible seeds for simulations live in
//! [`danger`] so that choosing them is a visible act.
//!
//! # Speed
//! `rand_distr::Poisson` uses Knuth's multiplication method below λ = 12 (cost grows with λ) and
//! a constant-time transformed-rejection method above, so the sampler costs two Poisson draws
//! per coordinate whatever μ is. Throughput figures are in `docs/benchmarks.md` (bench
//! `skellam`). The sampler is single-threaded on purpose: the crate owns no thread pool, and
//! callers that want cores can split the vector and give each part its own
//! [`SkellamSampler::fork`].
//!
//! # Exactness
//! Poisson draws are computed in `f64`; they are exact integers as long as they stay below
//! 2^53, which [`MAX_MU`] guarantees with a wide margin.

use rand::{SeedableRng, rngs::SysRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Poisson};

use super::{NoiseError, require_positive_finite};

/// Largest accepted Poisson mean. At μ = 2^40 a draw exceeds 2^53 (where `f64` stops
/// representing every integer) only ~ 2^45 standard deviations above the mean, i.e. never,
/// while the noise std √(2μ) ≈ 1.5·10^6 quantisation steps is far beyond any useful setting.
pub const MAX_MU: f64 = 1_099_511_627_776.0; // 2^40

/// Draws symmetric Skellam noise with per-coordinate variance 2μ.
#[derive(Debug, Clone)]
pub struct SkellamSampler {
    mu: f64,
    poisson: Poisson<f64>,
    rng: ChaCha20Rng,
}

impl SkellamSampler {
    /// A sampler whose ChaCha20 key comes from the operating system's entropy source.
    ///
    /// `mu` is the mean of each of the two Poisson draws (so the variance is 2μ); it must be
    /// finite, > 0 and ≤ [`MAX_MU`].
    pub fn from_os_entropy(mu: f64) -> Result<Self, NoiseError> {
        let rng = ChaCha20Rng::try_from_rng(&mut SysRng)
            .map_err(|e| NoiseError::Entropy(e.to_string()))?;
        Self::with_rng(mu, rng)
    }

    fn with_rng(mu: f64, rng: ChaCha20Rng) -> Result<Self, NoiseError> {
        let mu = require_positive_finite("mu", mu)?;
        if mu > MAX_MU {
            return Err(NoiseError::invalid("mu", mu, "at most 2^40 (MAX_MU)"));
        }
        let poisson =
            Poisson::new(mu).map_err(|e| NoiseError::invalid("mu", mu, poisson_requirement(e)))?;
        Ok(Self { mu, poisson, rng })
    }

    /// The Poisson mean μ of each half.
    pub fn mu(&self) -> f64 {
        self.mu
    }

    /// The variance 2μ of one coordinate's noise.
    pub fn variance(&self) -> f64 {
        2.0 * self.mu
    }

    /// A second, independent sampler for another thread: its ChaCha20 key is drawn from this
    /// sampler's stream, so it is as unpredictable as this one and shares no keystream with it.
    pub fn fork(&mut self) -> Self {
        Self {
            mu: self.mu,
            poisson: self.poisson,
            rng: ChaCha20Rng::from_rng(&mut self.rng),
        }
    }

    /// One Skellam draw.
    #[inline]
    pub fn sample(&mut self) -> i64 {
        // Both draws are integers below 2^53 (see MAX_MU), so the casts are exact.
        let a = self.poisson.sample(&mut self.rng) as i64;
        let b = self.poisson.sample(&mut self.rng) as i64;
        a - b
    }

    /// Overwrites `out` with independent draws.
    pub fn fill(&mut self, out: &mut [i64]) {
        for x in out.iter_mut() {
            *x = self.sample();
        }
    }

    /// Adds independent noise to every coordinate of an integer (not yet reduced) update.
    ///
    /// Fails closed: on overflow the error names the coordinate and the update must be
    /// discarded, since some coordinates before it already carry noise.
    pub fn add_to(&mut self, update: &mut [i64]) -> Result<(), NoiseError> {
        for (index, x) in update.iter_mut().enumerate() {
            *x = x
                .checked_add(self.sample())
                .ok_or(NoiseError::Overflow { index })?;
        }
        Ok(())
    }

    /// Adds noise to an update already reduced into ℤ_{2^bits} (values in `0..2^bits`), keeping
    /// the result in that ring. Reduction modulo 2^bits commutes with addition, so this equals
    /// reducing `update + noise` afterwards: the privacy analysis of the integer sum carries over
    /// (reduction is post-processing).
    pub fn add_to_modular(&mut self, update: &mut [u64], bits: u32) -> Result<(), NoiseError> {
        if !(1..=64).contains(&bits) {
            return Err(NoiseError::invalid("bits", bits, "in 1..=64"));
        }
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1_u64 << bits) - 1
        };
        for x in update.iter_mut() {
            // Two's complement: adding `n as u64` wraps exactly like adding n modulo 2^64.
            *x = x.wrapping_add(self.sample() as u64) & mask;
        }
        Ok(())
    }
}

fn poisson_requirement(e: rand_distr::PoissonError) -> &'static str {
    match e {
        rand_distr::PoissonError::ShapeTooSmall => "> 0",
        rand_distr::PoissonError::NonFinite => "finite",
        rand_distr::PoissonError::ShapeTooLarge => "below rand_distr's Poisson::MAX_LAMBDA",
    }
}

/// Reproducible samplers for simulations and tests.
///
/// A seed chosen by a person or derived from a public value makes the noise predictable to
/// anyone who knows it, which voids the privacy guarantee. Only the simulator (where every
/// party is virtual) and tests may use this.
pub mod danger {
    use super::*;

    /// A sampler keyed by `seed`. Not private if the seed is known to anyone but the client.
    pub fn seeded(mu: f64, seed: [u8; 32]) -> Result<SkellamSampler, NoiseError> {
        SkellamSampler::with_rng(mu, ChaCha20Rng::from_seed(seed))
    }
}

#[cfg(test)]
#[path = "skellam_tests.rs"]
mod tests;
