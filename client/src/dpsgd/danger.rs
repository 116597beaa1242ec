//! Settings that weaken the privacy guarantee, for simulation and benchmarks only.
//!
//! Everything here is opt-in by name: a reviewer who greps for `danger::` finds every place a
//! run traded its guarantee for speed or reproducibility.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tch::{Device, Kind, TchError, Tensor};

use super::noise::{GaussianSource, SecureGaussian};
use super::sampling::PoissonSampler;
use super::{DpError, Network, PrivateTrainer};

/// Noise from libtorch's generator (`randn`): fast, but neither cryptographic nor seeded from
/// the operating system, so an adversary may predict it.
#[derive(Debug, Default)]
pub struct TorchGaussian;

impl GaussianSource for TorchGaussian {
    fn sample(
        &mut self,
        std: f64,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, TchError> {
        Tensor::f_randn(shape, (kind, device))?.f_mul_scalar(std)
    }

    fn is_secure(&self) -> bool {
        false
    }
}

/// No noise at all, while the trainer's accountant still charges the configured σ: the bug a
/// privacy audit must catch (`cohort audit dp-sgd --danger-no-noise`, its negative control).
#[derive(Debug, Default)]
pub struct NoNoise;

impl GaussianSource for NoNoise {
    fn sample(
        &mut self,
        _std: f64,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, TchError> {
        Tensor::f_zeros(shape, (kind, device))
    }

    fn add_noise(&mut self, _std: f64, _targets: &mut [Tensor]) -> Result<(), TchError> {
        Ok(())
    }

    fn is_secure(&self) -> bool {
        false
    }
}

/// Noise from a fixed seed (ChaCha20 keys the AES-256-CTR stream): the right distribution and reproducible runs, but anyone
/// who knows the seed can subtract the noise.
pub fn seeded_gaussian(seed: u64) -> SecureGaussianSeeded {
    SecureGaussianSeeded(SecureGaussian::from_rng(ChaCha20Rng::seed_from_u64(seed)))
}

/// A Gaussian source with a known seed (see [`seeded_gaussian`]).
#[derive(Debug)]
pub struct SecureGaussianSeeded(SecureGaussian);

impl GaussianSource for SecureGaussianSeeded {
    fn sample(
        &mut self,
        std: f64,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, TchError> {
        self.0.sample(std, shape, kind, device)
    }

    fn add_noise(&mut self, std: f64, targets: &mut [Tensor]) -> Result<(), TchError> {
        self.0.add_noise(std, targets)
    }

    fn is_secure(&self) -> bool {
        false
    }
}

/// Replaces a trainer's noise source.
pub fn replace_noise<N: Network>(trainer: &mut PrivateTrainer<N>, source: Box<dyn GaussianSource>) {
    trainer.noise = source;
}

/// Makes a trainer's Poisson sampling reproducible from `seed`.
pub fn seed_sampler<N: Network>(trainer: &mut PrivateTrainer<N>, seed: u64) -> Result<(), DpError> {
    let sampler = trainer.sampler_mut();
    let rate = sampler.rate();
    let len = (sampler.expected_batch_size() / rate).round() as u64;
    *sampler = PoissonSampler::with_rng(rate, len, ChaCha20Rng::seed_from_u64(seed))?;
    Ok(())
}

/// Reseeds the trainer's augmenter, if it has one, so a simulation replays the same crops,
/// flips and angles.
pub fn seed_augmenter<N: Network>(trainer: &mut PrivateTrainer<N>, seed: u64) {
    if let Some(config) = trainer.augmenter().map(crate::data::Augmenter::config) {
        trainer.set_augmenter(Some(crate::data::Augmenter::new(config, seed)));
    }
}
