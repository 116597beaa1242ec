//! A tiny end-to-end training job on generated data.
//!
//! It exists so that `make demo`, `cohort doctor` and the test suite can prove in seconds that
//! libtorch is linked, loads, computes gradients and optimises — the failure modes of a
//! misconfigured venv or rpath — without any dataset on disk.

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Settings for [`train_synthetic`]; the defaults finish in well under a second on one core.
#[derive(Debug, Clone)]
pub struct SmokeConfig {
    /// Examples in the generated data set.
    pub examples: i64,
    /// Input features per example.
    pub features: i64,
    /// Optimiser steps (full batch).
    pub steps: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Seeds both the data and the initial weights, so runs are reproducible.
    pub seed: i64,
    /// Where the tensors live.
    pub device: Device,
}

impl Default for SmokeConfig {
    fn default() -> Self {
        Self {
            examples: 512,
            features: 8,
            steps: 50,
            learning_rate: 0.05,
            seed: 7,
            device: Device::Cpu,
        }
    }
}

/// What a smoke run observed: the loss before every step.
#[derive(Debug, Clone)]
pub struct SmokeReport {
    /// Mean cross-entropy loss before each optimiser step, in order.
    pub losses: Vec<f64>,
    /// Accuracy on the training data after the last step.
    pub final_accuracy: f64,
}

/// Trains a two-layer MLP to separate two Gaussian blobs and records the loss at every step.
///
/// The labels are a linear function of the inputs, so a working stack must drive the loss down
/// quickly; a flat loss means gradients or the optimiser are broken.
pub fn train_synthetic(config: &SmokeConfig) -> Result<SmokeReport, tch::TchError> {
    tch::manual_seed(config.seed);
    let device = config.device;
    let inputs = Tensor::f_randn([config.examples, config.features], (Kind::Float, device))?;
    let direction = Tensor::f_randn([config.features, 1], (Kind::Float, device))?;
    let labels = inputs
        .f_matmul(&direction)?
        .f_gt(0.0)?
        .f_to_kind(Kind::Int64)?
        .f_squeeze_dim(1)?;

    let store = nn::VarStore::new(device);
    let root = store.root();
    let model = nn::seq()
        .add(nn::linear(
            &root / "hidden",
            config.features,
            16,
            Default::default(),
        ))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "out", 16, 2, Default::default()));
    let mut optimiser = nn::Adam::default().build(&store, config.learning_rate)?;

    let mut losses = Vec::with_capacity(config.steps);
    for _ in 0..config.steps {
        let loss = model.forward(&inputs).f_cross_entropy_loss::<Tensor>(
            &labels,
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )?;
        losses.push(loss.f_double_value(&[])?);
        optimiser.zero_grad();
        loss.f_backward()?;
        optimiser.step();
    }
    let predictions = model.forward(&inputs).f_argmax(-1, false)?;
    let final_accuracy = predictions
        .f_eq_tensor(&labels)?
        .f_to_kind(Kind::Float)?
        .f_mean(Kind::Float)?
        .f_double_value(&[])?;
    Ok(SmokeReport {
        losses,
        final_accuracy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_falls_when_training_on_separable_data() -> Result<(), tch::TchError> {
        let report = train_synthetic(&SmokeConfig::default())?;
        let first = report.losses[0];
        let last = report.losses[report.losses.len() - 1];
        assert!(first.is_finite() && last.is_finite());
        assert!(last < 0.5 * first, "loss did not halve: {first} -> {last}");
        assert!(
            report.final_accuracy > 0.9,
            "accuracy {}",
            report.final_accuracy
        );
        Ok(())
    }

    #[test]
    fn same_seed_gives_the_same_losses() -> Result<(), tch::TchError> {
        let config = SmokeConfig {
            steps: 5,
            ..SmokeConfig::default()
        };
        let a = train_synthetic(&config)?;
        let b = train_synthetic(&config)?;
        assert_eq!(a.losses, b.losses);
        Ok(())
    }
}
