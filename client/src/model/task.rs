//! The per-example losses of a [`ModelTask`], computed on libtorch tensors.
//!
//! Every trainer reads the loss from here: DP-SGD sums the per-example terms (so a per-sample
//! gradient is the gradient of one term), non-private training averages them, and evaluation
//! reports them. One definition keeps the private and non-private objectives the same.

use tch::{Kind, Reduction, TchError, Tensor};

use super::spec::{ModelTask, RegressionLoss};

impl ModelTask {
    /// The loss of each example, `[B]`, for `outputs` `[B, K]` and targets as the table on
    /// [`ModelTask`] describes (class indices `[B]` for classification, `[B, K]` values
    /// otherwise; `[B]` is accepted when K = 1).
    pub fn per_example_loss(&self, outputs: &Tensor, targets: &Tensor) -> Result<Tensor, TchError> {
        let weights = |values: &[f64]| -> Result<Tensor, TchError> {
            Tensor::f_from_slice(values)?
                .f_to_kind(outputs.kind())?
                .f_to_device(outputs.device())
        };
        match self {
            ModelTask::Classification { class_weights } => {
                let weight = class_weights.as_deref().map(weights).transpose()?;
                let labels = targets.f_to_kind(Kind::Int64)?;
                outputs.f_cross_entropy_loss(&labels, weight.as_ref(), Reduction::None, -100, 0.0)
            }
            ModelTask::Binary { pos_weight } => {
                let pos = pos_weight.map(|w| weights(&[w])).transpose()?;
                let targets = real_targets(outputs, targets)?;
                outputs
                    .f_binary_cross_entropy_with_logits(
                        &targets,
                        None::<&Tensor>,
                        pos.as_ref(),
                        Reduction::None,
                    )?
                    .f_mean_dim(1, false, outputs.kind())
            }
            ModelTask::MultiLabel { pos_weights } => {
                let pos = pos_weights.as_deref().map(weights).transpose()?;
                let targets = real_targets(outputs, targets)?;
                outputs
                    .f_binary_cross_entropy_with_logits(
                        &targets,
                        None::<&Tensor>,
                        pos.as_ref(),
                        Reduction::None,
                    )?
                    .f_mean_dim(1, false, outputs.kind())
            }
            ModelTask::Regression { loss } => {
                let targets = real_targets(outputs, targets)?;
                let elementwise = match loss {
                    RegressionLoss::Mse => outputs.f_sub(&targets)?.f_square()?,
                    RegressionLoss::Huber { delta } => {
                        outputs.f_huber_loss(&targets, Reduction::None, *delta)?
                    }
                };
                elementwise.f_mean_dim(1, false, outputs.kind())
            }
        }
    }

    /// The sum of the per-example losses: its gradient is the sum of per-example gradients,
    /// which is what per-sample clipping differentiates.
    pub fn summed_loss(&self, outputs: &Tensor, targets: &Tensor) -> Result<Tensor, TchError> {
        self.per_example_loss(outputs, targets)?
            .f_sum(outputs.kind())
    }

    /// The mean of the per-example losses, what non-private training minimises.
    pub fn mean_loss(&self, outputs: &Tensor, targets: &Tensor) -> Result<Tensor, TchError> {
        self.per_example_loss(outputs, targets)?
            .f_mean(outputs.kind())
    }

    /// The model's outputs turned into what a user reads: class probabilities (softmax) for
    /// classification, probabilities (sigmoid) for binary and multi-label, the values
    /// themselves for regression.
    pub fn predictions(&self, outputs: &Tensor) -> Result<Tensor, TchError> {
        match self {
            ModelTask::Classification { .. } => outputs.f_softmax(-1, outputs.kind()),
            ModelTask::Binary { .. } | ModelTask::MultiLabel { .. } => outputs.f_sigmoid(),
            ModelTask::Regression { .. } => Ok(outputs.shallow_clone()),
        }
    }
}

/// Targets of a non-classification task as `outputs`' shape and kind; a `[B]` vector counts as
/// `[B, 1]`.
fn real_targets(outputs: &Tensor, targets: &Tensor) -> Result<Tensor, TchError> {
    let targets = if targets.dim() == 1 && outputs.dim() == 2 {
        targets.f_unsqueeze(1)?
    } else {
        targets.shallow_clone()
    };
    if targets.size() != outputs.size() {
        return Err(TchError::Shape(format!(
            "the targets have shape {:?} but the model outputs {:?}",
            targets.size(),
            outputs.size()
        )));
    }
    targets.f_to_kind(outputs.kind())
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
