//! DP-SGD: Poisson-sampled batches, per-sample clipping, Gaussian noise, and an accountant that
//! advances with every step.
//!
//! # Brief overview
//! [`make_private`] is the one entry point. It checks the network (batch norm is refused),
//! resolves the clipping mode, seeds the sampler and the noise from the operating system, and
//! returns a [`PrivateTrainer`] whose [`PrivateTrainer::step`] runs the named stages
//! clip → accumulate ([`clip`]) → noise → scale → update, then advances the accountant.
//! Ghost clipping ([`ghost`]) covers every layer of [`crate::model`]; any other network
//! (TorchScript) uses the per-sample fallback. Weakened settings live in [`danger`].

pub mod canary;
pub mod clip;
pub mod danger;
mod ghost;
pub mod noise;
pub mod optim;
mod plain;
pub mod sampling;
mod trainer;

use std::fmt;

use tch::{TchError, Tensor};

use crate::model::torchscript::TorchScriptModel;
use crate::model::{Model, Tape};

pub use clip::{ClippedSum, clipped_gradient_sum, trainable_parameters};
pub use noise::{GaussianSource, OsRandomError, SecureGaussian};
pub use optim::{Optimizer, OptimizerConfig, OptimizerKind, Schedule};
pub use plain::{NonPrivateTrainer, accuracy};
pub use sampling::{InvalidRate, PoissonSampler};
pub use trainer::{EpochReport, PrivateTrainer, StepReport, make_private};

#[cfg(test)]
mod profile_tests;
#[cfg(test)]
mod tests;

/// Anything DP-SGD can train: a forward pass (optionally recording for ghost clipping) and its
/// parameters.
pub trait Network {
    /// Runs the network; a recording `tape` collects layer inputs and outputs.
    fn forward_t(&self, xs: &Tensor, train: bool, tape: &mut Tape) -> Result<Tensor, TchError>;

    /// Every parameter, indexed by [`crate::model::ParamId`]; frozen ones have
    /// `requires_grad() == false`.
    fn param_tensors(&self) -> Vec<Tensor>;

    /// Whether every trainable parameter sits in a layer that records for ghost clipping.
    fn supports_ghost_clipping(&self) -> bool;

    /// Whether the network normalises over the batch (DP must refuse it).
    fn has_batch_norm(&self) -> bool;
}

impl Network for Model {
    fn forward_t(&self, xs: &Tensor, train: bool, tape: &mut Tape) -> Result<Tensor, TchError> {
        Model::forward_t(self, xs, train, tape)
    }

    fn param_tensors(&self) -> Vec<Tensor> {
        self.parameters()
            .iter()
            .map(|p| p.tensor.shallow_clone())
            .collect()
    }

    fn supports_ghost_clipping(&self) -> bool {
        !self.has_batch_norm()
    }

    fn has_batch_norm(&self) -> bool {
        Model::has_batch_norm(self)
    }
}

impl Network for TorchScriptModel {
    fn forward_t(&self, xs: &Tensor, train: bool, tape: &mut Tape) -> Result<Tensor, TchError> {
        TorchScriptModel::forward_t(self, xs, train, tape)
    }

    fn param_tensors(&self) -> Vec<Tensor> {
        self.parameters()
            .iter()
            .map(|p| p.tensor.shallow_clone())
            .collect()
    }

    fn supports_ghost_clipping(&self) -> bool {
        false
    }

    fn has_batch_norm(&self) -> bool {
        // Fail closed: a module that cannot be probed is treated as mixing the batch.
        self.mixes_batch().unwrap_or(true)
    }
}

/// How per-sample gradient norms are obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClippingMode {
    /// Ghost clipping when the network supports it, else the per-sample fallback.
    #[default]
    Auto,
    /// Ghost clipping; an error for networks it does not cover.
    Ghost,
    /// One backward per example (any network).
    PerSample,
}

/// What one DP-SGD run promises: clip norm C, noise multiplier σ, sampling rate q.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpConfig {
    /// σ: the noise standard deviation is σ·C.
    pub noise_multiplier: f64,
    /// C: per-sample gradients are clipped to this L2 norm.
    pub max_grad_norm: f64,
    /// q: every example joins every batch independently with this probability.
    pub sample_rate: f64,
    /// How per-sample norms are computed.
    pub clipping: ClippingMode,
}

/// Advances with every DP-SGD step; implemented by the privacy accountants.
pub trait StepAccountant: fmt::Debug + Send {
    /// Records one step of the subsampled Gaussian mechanism.
    fn step(&mut self, noise_multiplier: f64, sample_rate: f64);

    /// ε spent so far at `delta`, if this accountant computes it.
    fn epsilon(&self, delta: f64) -> Option<f64>;
}

/// Why DP-SGD refused or failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum DpError {
    /// The configuration is invalid (a σ, C or q out of range).
    InvalidConfig(String),
    /// The network has batch normalisation, which mixes examples.
    BatchNorm,
    /// The requested clipping mode does not cover this network.
    Unsupported(String),
    /// The operating system's random source failed.
    Random(OsRandomError),
    /// libtorch failed.
    Torch(TchError),
}

impl fmt::Display for DpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpError::InvalidConfig(why) => write!(f, "invalid DP-SGD configuration: {why}"),
            DpError::BatchNorm => write!(
                f,
                "BatchNorm cannot be trained with DP-SGD: it mixes the examples of a batch, so \
                 clipping cannot bound one example's influence; replace it with GroupNorm \
                 (LayerSpec::GroupNorm {{ groups }})"
            ),
            DpError::Unsupported(why) => write!(f, "unsupported for DP-SGD: {why}"),
            DpError::Random(err) => write!(f, "{err}"),
            DpError::Torch(err) => write!(f, "libtorch error: {err}"),
        }
    }
}

impl std::error::Error for DpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DpError::Torch(err) => Some(err),
            DpError::Random(err) => Some(err),
            _ => None,
        }
    }
}

impl From<TchError> for DpError {
    fn from(err: TchError) -> Self {
        DpError::Torch(err)
    }
}

impl From<InvalidRate> for DpError {
    fn from(err: InvalidRate) -> Self {
        DpError::InvalidConfig(err.to_string())
    }
}
