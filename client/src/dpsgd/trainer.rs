//! The private trainer: clip → accumulate → noise → scale → update → account.

use tch::{Kind, Tensor};

use super::canary::GradientCanaries;
use super::noise::{GaussianSource, SecureGaussian};
use super::optim::Optimizer;
use super::sampling::PoissonSampler;
use super::{ClippingMode, DpConfig, DpError, Network, StepAccountant, clip};
use crate::data::{Augmenter, Dataset};

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Examples in the Poisson batch.
    pub batch_size: i64,
    /// Mean loss over the batch (NaN for an empty batch); for progress display only.
    pub mean_loss: f64,
}

/// What one epoch (⌈1/q⌉ Poisson batches) did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochReport {
    /// Steps taken.
    pub steps: usize,
    /// Examples processed over all steps.
    pub examples: i64,
    /// Loss averaged over the examples processed.
    pub mean_loss: f64,
}

/// A network made private: every update it makes is a DP-SGD step recorded by its accountant.
#[derive(Debug)]
pub struct PrivateTrainer<N: Network> {
    network: N,
    optimizer: Optimizer,
    config: DpConfig,
    dataset_len: i64,
    sampler: PoissonSampler,
    pub(super) noise: Box<dyn GaussianSource>,
    accountant: Box<dyn StepAccountant>,
    steps: usize,
    proximal: Option<Proximal>,
    /// White-box audit canaries ([`super::canary`]); `None` outside an audit.
    pub(super) canaries: Option<GradientCanaries>,
    /// Transforms each Poisson batch before clipping: the augmented image is that example's
    /// input for the step, so the privacy analysis is unchanged.
    augmenter: Option<Augmenter>,
}

/// FedProx's proximal term (μ/2)‖w − w_global‖²: its gradient μ(w − w_global) joins the update
/// *after* the private gradient is formed. It depends on no record (w is already a DP output,
/// w_global is public), so it is post-processing: it is neither clipped per sample (which
/// would let it crowd out the data's signal inside the clip) nor noised, and costs no ε.
#[derive(Debug)]
struct Proximal {
    mu: f64,
    /// w_global, one detached copy per trainable parameter, in `trainable_parameters` order.
    anchor: Vec<Tensor>,
}

/// Makes `network` private for a data set of `dataset_len` examples.
///
/// Refuses batch normalisation and out-of-range settings; seeds the Poisson sampler and the
/// Gaussian noise (the ziggurat over an AES-256-CTR keystream, `cohort_privacy::rng`) from
/// the operating system. `accountant` advances once per step.
pub fn make_private<N: Network>(
    network: N,
    optimizer: Optimizer,
    config: DpConfig,
    dataset_len: i64,
    accountant: Box<dyn StepAccountant>,
) -> Result<PrivateTrainer<N>, DpError> {
    if network.has_batch_norm() {
        return Err(DpError::BatchNorm);
    }
    if !(config.noise_multiplier >= 0.0 && config.noise_multiplier.is_finite()) {
        return Err(DpError::InvalidConfig(format!(
            "noise multiplier must be finite and >= 0, got {}",
            config.noise_multiplier
        )));
    }
    if !(config.max_grad_norm > 0.0 && config.max_grad_norm.is_finite()) {
        return Err(DpError::InvalidConfig(format!(
            "clip norm must be finite and > 0, got {}",
            config.max_grad_norm
        )));
    }
    if dataset_len <= 0 {
        return Err(DpError::InvalidConfig("the data set is empty".into()));
    }
    if config.clipping == ClippingMode::Ghost && !network.supports_ghost_clipping() {
        return Err(DpError::Unsupported(
            "ghost clipping does not cover this network; use ClippingMode::Auto".into(),
        ));
    }
    let sampler = PoissonSampler::new(config.sample_rate, dataset_len as u64)?;
    let noise = Box::new(SecureGaussian::from_os().map_err(DpError::Random)?);
    Ok(PrivateTrainer {
        network,
        optimizer,
        config,
        dataset_len,
        sampler,
        noise,
        accountant,
        steps: 0,
        proximal: None,
        canaries: None,
        augmenter: None,
    })
}

impl<N: Network> PrivateTrainer<N> {
    /// The network being trained.
    pub fn network(&self) -> &N {
        &self.network
    }

    /// The DP settings.
    pub fn config(&self) -> &DpConfig {
        &self.config
    }

    /// The optimiser (for its current learning rate).
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// DP-SGD steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// ε spent so far by this trainer's accountant at `delta`.
    pub fn epsilon(&self, delta: f64) -> Option<f64> {
        self.accountant.epsilon(delta)
    }

    /// The accountant, to persist its state.
    pub fn accountant(&self) -> &dyn StepAccountant {
        self.accountant.as_ref()
    }

    /// Whether the noise comes from a CSPRNG seeded by the operating system.
    pub fn noise_is_secure(&self) -> bool {
        self.noise.is_secure()
    }

    /// Adds FedProx's (μ/2)‖w − w_global‖² to the local objective, with w_global the
    /// network's weights now (call it right after loading the global model). μ = 0 leaves the
    /// objective as it is; a negative or non-finite μ is refused.
    pub fn add_proximal_term(&mut self, mu: f64) -> Result<(), DpError> {
        if !(mu.is_finite() && mu >= 0.0) {
            return Err(DpError::InvalidConfig(format!(
                "the proximal coefficient must be finite and >= 0, got {mu}"
            )));
        }
        if mu == 0.0 {
            self.proximal = None;
            return Ok(());
        }
        let anchor = clip::trainable_parameters(&self.network)
            .into_iter()
            .map(|(_, p)| p.f_detach_copy())
            .collect::<Result<Vec<_>, _>>()?;
        self.proximal = Some(Proximal { mu, anchor });
        Ok(())
    }

    /// Augments every batch [`Self::step_sampled`] draws (`None` stops augmenting).
    pub fn set_augmenter(&mut self, augmenter: Option<Augmenter>) {
        self.augmenter = augmenter;
    }

    /// The augmenter in use, if any.
    pub fn augmenter(&self) -> Option<&Augmenter> {
        self.augmenter.as_ref()
    }

    pub(super) fn sampler_mut(&mut self) -> &mut PoissonSampler {
        &mut self.sampler
    }

    /// The privatised gradient of one batch without applying it: clip and accumulate, add
    /// N(0, σ²C²) to each coordinate, divide by the expected batch size q·N. The accountant is
    /// charged here, as soon as the noisy gradient exists.
    ///
    /// The division is folded into the clip factors and the noise's deviation,
    /// `(Σ cᵢ∇ᵢ + σC·z) / (qN) = Σ (cᵢ/qN)∇ᵢ + (σC/qN)·z`, which spares a pass over every
    /// gradient.
    pub fn private_gradient(
        &mut self,
        features: &Tensor,
        labels: &Tensor,
    ) -> Result<(Vec<Tensor>, StepReport), DpError> {
        let expected = self.config.sample_rate * self.dataset_len as f64;
        let clipped = clip::scaled_clipped_gradient_sum(
            &self.network,
            features,
            labels,
            self.config.max_grad_norm,
            self.config.clipping,
            1.0 / expected,
        )?;
        let std = self.config.noise_multiplier * self.config.max_grad_norm / expected;
        let mut grads = clipped.grads;
        if let Some(canaries) = self.canaries.as_mut() {
            canaries.add_sampled(&mut grads, 1.0 / expected)?;
        }
        if std > 0.0 {
            self.noise.add_noise(std, &mut grads)?;
        }
        self.accountant
            .step(self.config.noise_multiplier, self.config.sample_rate);
        let mean_loss = if clipped.batch_size > 0 {
            clipped.loss_sum / clipped.batch_size as f64
        } else {
            f64::NAN
        };
        Ok((
            grads,
            StepReport {
                batch_size: clipped.batch_size,
                mean_loss,
            },
        ))
    }

    /// One DP-SGD step on a batch the caller drew by Poisson sampling (see
    /// [`PrivateTrainer::step_sampled`] to let the trainer draw it).
    pub fn step(&mut self, features: &Tensor, labels: &Tensor) -> Result<StepReport, DpError> {
        let (mut grads, report) = self.private_gradient(features, labels)?;
        let params: Vec<Tensor> = clip::trainable_parameters(&self.network)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        if let Some(proximal) = &self.proximal {
            tch::no_grad(|| -> Result<(), DpError> {
                for ((g, w), anchor) in grads.iter_mut().zip(&params).zip(&proximal.anchor) {
                    // g += μ(w − w_global), in place.
                    let pull = w.f_sub(anchor)?;
                    let _ = g.f_add_(&pull.f_mul_scalar(proximal.mu)?)?;
                }
                Ok(())
            })?;
        }
        self.optimizer.step(&params, &grads)?;
        self.steps += 1;
        Ok(report)
    }

    /// Draws a Poisson batch from `data` and takes one step on it.
    pub fn step_sampled(&mut self, data: &Dataset) -> Result<StepReport, DpError> {
        if data.len() != self.dataset_len {
            return Err(DpError::InvalidConfig(format!(
                "the trainer was made for {} examples but the data set has {}",
                self.dataset_len,
                data.len()
            )));
        }
        let indices = self.sampler.sample();
        let index = Tensor::f_from_slice(&indices)?.f_to_device(data.features.device())?;
        let mut features = data.features.f_index_select(0, &index)?;
        if let Some(augmenter) = &mut self.augmenter {
            features = augmenter
                .apply(&features)
                .map_err(|e| DpError::InvalidConfig(format!("augmentation: {e}")))?;
        }
        let labels = data
            .labels
            .f_index_select(0, &index)?
            .f_to_kind(Kind::Int64)?;
        self.step(&features, &labels)
    }

    /// One epoch: ⌈1/q⌉ Poisson batches. `on_step` sees each step's report (for progress bars).
    pub fn train_epoch(
        &mut self,
        data: &Dataset,
        on_step: impl FnMut(&StepReport),
    ) -> Result<EpochReport, DpError> {
        let steps = self.sampler.steps_per_epoch();
        self.train_steps(data, steps as u64, on_step)
    }

    /// Exactly `steps` Poisson batches: what a ledger that charged `steps` steps allows.
    pub fn train_steps(
        &mut self,
        data: &Dataset,
        steps: u64,
        mut on_step: impl FnMut(&StepReport),
    ) -> Result<EpochReport, DpError> {
        let steps = usize::try_from(steps)
            .map_err(|_| DpError::InvalidConfig(format!("{steps} steps do not fit in memory")))?;
        let mut examples = 0;
        let mut loss = 0.0;
        for _ in 0..steps {
            let report = self.step_sampled(data)?;
            if report.batch_size > 0 {
                examples += report.batch_size;
                loss += report.mean_loss * report.batch_size as f64;
            }
            on_step(&report);
        }
        Ok(EpochReport {
            steps,
            examples,
            mean_loss: if examples > 0 {
                loss / examples as f64
            } else {
                f64::NAN
            },
        })
    }

    /// Gives the network back (e.g. to save its weights).
    pub fn into_network(self) -> N {
        self.network
    }
}
