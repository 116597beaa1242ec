//! Poisson sampling: each example joins each batch independently with probability q.
//!
//! This is the sampling the RDP amplification bound assumes; fixed-size shuffled batches give a
//! weaker guarantee. Batch sizes vary (Binomial(N, q)), so the engine divides by the expected
//! size q·N, never by the drawn size, which would leak it.

use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Geometric};

use super::noise::{OsRandomError, os_seeded_chacha};

/// Draws Poisson batches of indices into a data set of `len` examples.
#[derive(Debug)]
pub struct PoissonSampler {
    rng: ChaCha20Rng,
    gaps: Geometric,
    rate: f64,
    len: u64,
}

/// A sampling rate outside (0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidRate(pub f64);

impl std::fmt::Display for InvalidRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sampling rate must be in (0, 1], got {}", self.0)
    }
}

impl std::error::Error for InvalidRate {}

impl PoissonSampler {
    /// A sampler with rate `rate` over `len` examples, seeded from the operating system.
    pub fn new(rate: f64, len: u64) -> Result<Self, super::DpError> {
        let rng = os_seeded_chacha().map_err(|e: OsRandomError| super::DpError::Random(e))?;
        Self::with_rng(rate, len, rng).map_err(super::DpError::from)
    }

    pub(crate) fn with_rng(rate: f64, len: u64, rng: ChaCha20Rng) -> Result<Self, InvalidRate> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(InvalidRate(rate));
        }
        let gaps = Geometric::new(rate).map_err(|_| InvalidRate(rate))?;
        Ok(Self {
            rng,
            gaps,
            rate,
            len,
        })
    }

    /// The sampling rate q.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The expected batch size q·N, the normaliser of every step.
    pub fn expected_batch_size(&self) -> f64 {
        self.rate * self.len as f64
    }

    /// Number of steps that make one epoch in expectation: ⌈1/q⌉.
    pub fn steps_per_epoch(&self) -> usize {
        (1.0 / self.rate).ceil() as usize
    }

    /// One batch: sorted indices, each included with probability q. Skips ahead by geometric
    /// gaps, so the cost is O(q·N), not O(N).
    pub fn sample(&mut self) -> Vec<i64> {
        let mut out = Vec::with_capacity((self.expected_batch_size() * 1.2) as usize + 8);
        let mut next: u64 = 0;
        loop {
            let gap = self.gaps.sample(&mut self.rng);
            next = match next.checked_add(gap) {
                Some(n) => n,
                None => break,
            };
            if next >= self.len {
                break;
            }
            out.push(next as i64);
            next += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn batch_sizes_have_binomial_mean_and_variance() {
        let (n, q) = (10_000u64, 0.01);
        let mut sampler = PoissonSampler::with_rng(q, n, ChaCha20Rng::seed_from_u64(1)).unwrap();
        let trials = 4_000;
        let sizes: Vec<f64> = (0..trials).map(|_| sampler.sample().len() as f64).collect();
        let mean = sizes.iter().sum::<f64>() / trials as f64;
        let var = sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (trials - 1) as f64;
        let (want_mean, want_var) = (n as f64 * q, n as f64 * q * (1.0 - q));
        // Standard error of the mean ≈ √(99/4000) ≈ 0.16; of the variance ≈ 99·√(2/4000) ≈ 2.2.
        assert!((mean - want_mean).abs() < 0.8, "mean {mean} vs {want_mean}");
        assert!(
            (var - want_var).abs() < 11.0,
            "variance {var} vs {want_var}"
        );
    }

    #[test]
    fn every_example_is_included_at_rate_q() {
        let (n, q) = (50u64, 0.2);
        let mut sampler = PoissonSampler::with_rng(q, n, ChaCha20Rng::seed_from_u64(2)).unwrap();
        let mut counts = vec![0u32; n as usize];
        let trials = 20_000;
        for _ in 0..trials {
            let batch = sampler.sample();
            assert!(batch.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
            for i in batch {
                counts[i as usize] += 1;
            }
        }
        for (i, &c) in counts.iter().enumerate() {
            let rate = f64::from(c) / f64::from(trials);
            // σ = √(0.16/20000) ≈ 0.0028; 5σ ≈ 0.014.
            assert!((rate - q).abs() < 0.015, "example {i} included at {rate}");
        }
    }

    #[test]
    fn rate_one_takes_everything_and_bad_rates_are_refused() {
        let mut sampler = PoissonSampler::with_rng(1.0, 7, ChaCha20Rng::seed_from_u64(3)).unwrap();
        assert_eq!(sampler.sample(), (0..7).collect::<Vec<_>>());
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(PoissonSampler::with_rng(bad, 7, ChaCha20Rng::seed_from_u64(3)).is_err());
        }
    }
}
