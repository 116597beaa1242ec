//! The discrete Gaussian N_ℤ(0, σ²), sampled exactly with integer arithmetic.
//!
//! `P(X = x) ∝ exp(−x² / (2σ²))` over the integers. Canonne, Kamath & Steinke (NeurIPS 2020,
//! "The Discrete Gaussian for Differential Privacy") give the sampler implemented here:
//! Bernoulli(exp(−γ)) for a rational γ from Bernoulli(γ/k) trials (their Algorithm 1), a
//! discrete Laplace from those (Algorithm 2), and the discrete Gaussian by rejection from the
//! discrete Laplace of scale t = ⌊σ⌋ + 1 (Algorithm 3). Every decision compares a uniform
//! integer, drawn by rejection sampling from a CSPRNG, with an integer: **no floating-point
//! number is ever computed**, so there is nothing for a floating-point attack (Mironov 2012,
//! "On significance of the least significant bits for differential privacy") to read: the
//! output distribution is exactly N_ℤ(0, σ²) for the σ² the sampler holds.
//!
//! σ² is held as an integer (in the caller's lattice steps²), rounded *up* from what the caller
//! asked for, so the noise is never less than requested. The one departure from the ideal
//! distribution is explicit: a discrete-Laplace proposal beyond 2^40 (where the acceptance
//! test's square would overflow 128 bits) is rejected; with σ ≤ [`MAX_SIGMA`] its probability is
//! below exp(−2^16) per draw.
//!
//! Privacy (CKS 2020, Proposition 5 and its product form): for integer shifts, the Rényi
//! divergence of order α between N_ℤ(μ, σ²) and N_ℤ(ν, σ²) is at most α(μ − ν)²/(2σ²), and for
//! independent coordinates the divergences add, so a vector query with integer values and L2
//! sensitivity Δ gets the continuous Gaussian's α·Δ²/(2σ²). [`super::lattice`] builds the
//! mechanisms Cohort uses on top of this.

use rand::rngs::SysRng;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::NoiseError;

/// The largest σ accepted (2^24 lattice steps): it keeps every intermediate of the acceptance
/// test within 128 bits for any proposal below 2^40 = 2^16 σ.
pub const MAX_SIGMA: f64 = 16_777_216.0;

/// [`MAX_SIGMA`]².
const MAX_VARIANCE: u64 = 1 << 48;

/// Proposals at or beyond this magnitude are rejected (see the module docs).
const PROPOSAL_LIMIT: u128 = 1 << 40;

/// Draws N_ℤ(0, σ²) with σ² an integer ≥ 1.
#[derive(Clone)]
pub struct DiscreteGaussianSampler<R = ChaCha20Rng> {
    variance: u64,
    /// t = ⌊σ⌋ + 1, the discrete Laplace proposal's scale.
    scale: u64,
    rng: R,
}

impl<R> std::fmt::Debug for DiscreteGaussianSampler<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The generator's state is a secret: never printed.
        f.debug_struct("DiscreteGaussianSampler")
            .field("variance", &self.variance)
            .finish_non_exhaustive()
    }
}

/// The smallest whole number of steps² not below σ², for σ finite and in [1, [`MAX_SIGMA`]]:
/// the variance to give [`DiscreteGaussianSampler::from_os_entropy`] so that the noise is never
/// less than asked for.
pub fn variance_at_least(sigma: f64) -> Result<u64, NoiseError> {
    if !(sigma.is_finite() && (1.0..=MAX_SIGMA).contains(&sigma)) {
        return Err(NoiseError::invalid(
            "sigma",
            sigma,
            "finite and in [1, 2^24] lattice steps",
        ));
    }
    // σ ≤ 2^24, so σ² < 2^48 is exact enough in f64 to round up and then correct by one.
    let target = sigma * sigma;
    let mut v = target.ceil() as u64;
    while (v as f64) < target {
        v += 1;
    }
    Ok(v.max(1))
}

impl DiscreteGaussianSampler<ChaCha20Rng> {
    /// A sampler of exactly `variance` steps² (see [`variance_at_least`]), keyed from the
    /// operating system's entropy.
    pub fn from_os_entropy(variance: u64) -> Result<Self, NoiseError> {
        let rng = ChaCha20Rng::try_from_rng(&mut SysRng)
            .map_err(|e| NoiseError::Entropy(e.to_string()))?;
        Self::with_rng(variance, rng)
    }
}

impl<R: Rng> DiscreteGaussianSampler<R> {
    /// A sampler of exactly `variance` steps² (1 ≤ variance ≤ 2^48) over a caller's
    /// generator, which must be a CSPRNG the adversary cannot predict (a seeded one is for
    /// simulations only: see [`danger`]).
    pub fn with_rng(variance: u64, rng: R) -> Result<Self, NoiseError> {
        if !(1..=MAX_VARIANCE).contains(&variance) {
            return Err(NoiseError::invalid(
                "variance",
                variance,
                "in [1, 2^48] lattice steps²",
            ));
        }
        Ok(Self {
            variance,
            scale: isqrt(variance) + 1,
            rng,
        })
    }

    /// σ² in steps², exactly (the requested σ² rounded up to an integer).
    pub fn variance(&self) -> u64 {
        self.variance
    }

    /// σ, the standard deviation's parameter (√ of [`Self::variance`]).
    pub fn sigma(&self) -> f64 {
        (self.variance as f64).sqrt()
    }

    /// One draw.
    pub fn sample(&mut self) -> i64 {
        let variance = u128::from(self.variance);
        let t = u128::from(self.scale);
        loop {
            let proposal = self.discrete_laplace();
            let magnitude = u128::from(proposal.unsigned_abs());
            if magnitude >= PROPOSAL_LIMIT {
                continue;
            }
            // Accept with probability exp(−(|y| − σ²/t)² / (2σ²)) = exp(−(|y|·t − σ²)² / (2σ²t²)).
            let gap = (magnitude * t).abs_diff(variance);
            let (Some(numerator), Some(denominator)) = (
                gap.checked_mul(gap),
                (2 * variance).checked_mul(t).and_then(|v| v.checked_mul(t)),
            ) else {
                continue;
            };
            if self.bernoulli_exp(numerator, denominator) {
                return proposal;
            }
        }
    }

    /// Overwrites `out` with independent draws.
    pub fn fill(&mut self, out: &mut [i64]) {
        for x in out.iter_mut() {
            *x = self.sample();
        }
    }

    /// A uniform integer in [0, bound), by rejection (exact; fewer than two draws on average).
    fn uniform_below(&mut self, bound: u128) -> u128 {
        debug_assert!(bound > 0);
        if bound == 1 {
            return 0;
        }
        let bits = 128 - (bound - 1).leading_zeros();
        let mask = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        loop {
            let word = if bits <= 64 {
                u128::from(self.rng.next_u64())
            } else {
                (u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64())
            };
            let candidate = word & mask;
            if candidate < bound {
                return candidate;
            }
        }
    }

    /// Bernoulli(n / d) for 0 ≤ n ≤ d, d > 0.
    fn bernoulli(&mut self, n: u128, d: u128) -> bool {
        self.uniform_below(d) < n
    }

    /// Bernoulli(exp(−n/d)) for n ≥ 0, d > 0 (CKS Algorithm 1).
    fn bernoulli_exp(&mut self, mut n: u128, d: u128) -> bool {
        // exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋)): each whole unit is a separate exp(−1) trial,
        // and most fail early, so the loop is short whatever γ is.
        while n > d {
            if !self.bernoulli_exp_at_most_one(d, d) {
                return false;
            }
            n -= d;
        }
        self.bernoulli_exp_at_most_one(n, d)
    }

    /// Bernoulli(exp(−γ)) for γ = n/d ∈ [0, 1]: draw Bernoulli(γ/k) for k = 1, 2, … until one
    /// fails; the number of successes before it is odd with probability 1 − exp(−γ).
    fn bernoulli_exp_at_most_one(&mut self, n: u128, d: u128) -> bool {
        let mut k: u128 = 1;
        loop {
            let Some(dk) = d.checked_mul(k) else {
                // k beyond 2^64 trials: probability below 1/k!, i.e. never.
                return k % 2 == 1;
            };
            if !self.bernoulli(n, dk) {
                return k % 2 == 1;
            }
            k += 1;
        }
    }

    /// The discrete Laplace of scale t, P(x) ∝ exp(−|x|/t) (CKS Algorithm 2).
    fn discrete_laplace(&mut self) -> i64 {
        let t = u128::from(self.scale);
        loop {
            let u = self.uniform_below(t);
            if !self.bernoulli_exp(u, t) {
                continue;
            }
            let mut v: u128 = 0;
            while self.bernoulli_exp(1, 1) {
                v += 1;
            }
            let negative = self.rng.next_u32() & 1 == 1;
            let magnitude = u + t * v;
            if negative && magnitude == 0 {
                continue;
            }
            // Beyond i64 is astronomically unlikely (v ~ Geometric(1 − e^−1)); saturating keeps
            // it a rejected proposal in `sample` rather than a wrap.
            let magnitude = i64::try_from(magnitude).unwrap_or(i64::MAX);
            return if negative { -magnitude } else { magnitude };
        }
    }
}

/// ⌊√v⌋ exactly.
fn isqrt(v: u64) -> u64 {
    // The f64 estimate is within one of the answer; an overflowing square is too big.
    let mut r = (v as f64).sqrt() as u64;
    while r.checked_mul(r).is_none_or(|square| square > v) {
        r -= 1;
    }
    while (r + 1).checked_mul(r + 1).is_some_and(|square| square <= v) {
        r += 1;
    }
    r
}

/// Reproducible samplers for simulations and tests: whoever knows the seed can subtract the
/// noise, so nothing private may use them.
pub mod danger {
    use super::*;

    /// A sampler of `variance` steps² keyed by `seed`.
    pub fn seeded(
        variance: u64,
        seed: [u8; 32],
    ) -> Result<DiscreteGaussianSampler<ChaCha20Rng>, NoiseError> {
        DiscreteGaussianSampler::with_rng(variance, ChaCha20Rng::from_seed(seed))
    }
}

#[cfg(test)]
#[path = "discrete_gaussian_tests.rs"]
mod tests;
