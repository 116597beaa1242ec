//! How a participant trains locally in each round, as a federation fixes it: the optimiser,
//! its learning rate, weight decay and schedule, and image augmentation.
//!
//! One definition for the three places that must agree: the server validates it when the
//! federation is created, every task carries it, and the client builds its optimiser and
//! augmenter from it (`cohort join` and the simulator through the same function as
//! `cohort train`). The local epochs are the DP-SGD setting's (`DpSgdConfig::local_epochs`),
//! because the ledgers charge by them.

use serde::{Deserialize, Serialize};

/// A federation's local training settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalTraining {
    /// The update rule.
    pub optimizer: LocalOptimizer,
    /// The base learning rate, > 0.
    pub learning_rate: f64,
    /// L2 weight decay λ ≥ 0 (λθ is added to each step's private gradient: it reads no record).
    #[serde(default)]
    pub weight_decay: f64,
    /// How the rate changes over the round's steps.
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Linear warm-up: step k < `warmup_steps` uses (k + 1)/`warmup_steps` of the scheduled
    /// rate (0 for none).
    #[serde(default)]
    pub warmup_steps: u32,
    /// Random transformations of image batches.
    #[serde(default)]
    pub augmentation: ImageAugmentation,
}

/// The local update rule. Defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum LocalOptimizer {
    /// SGD with heavy-ball momentum in [0, 1) (0 for none).
    Sgd {
        /// Momentum μ.
        #[serde(default)]
        momentum: f64,
    },
    /// Adam with bias correction.
    Adam {
        /// β₁ in [0, 1).
        #[serde(default = "beta1")]
        beta1: f64,
        /// β₂ in [0, 1).
        #[serde(default = "beta2")]
        beta2: f64,
        /// ε > 0.
        #[serde(default = "eps_adam")]
        eps: f64,
    },
    /// RMSprop.
    RmsProp {
        /// Smoothing constant α in [0, 1).
        #[serde(default = "alpha")]
        alpha: f64,
        /// ε > 0.
        #[serde(default = "eps_adam")]
        eps: f64,
    },
    /// AdaGrad.
    AdaGrad {
        /// ε > 0.
        #[serde(default = "eps_adagrad")]
        eps: f64,
    },
}

fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn alpha() -> f64 {
    0.99
}
fn eps_adam() -> f64 {
    1e-8
}
fn eps_adagrad() -> f64 {
    1e-10
}

/// A learning-rate schedule over one round's steps (the optimiser starts afresh each round).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        /// Steps between decays, ≥ 1.
        every: u32,
        /// Decay factor in (0, 1].
        gamma: f64,
    },
    /// Cosine annealing from the base rate to `min_lr` over the round's ⌈E/q⌉ steps.
    Cosine {
        /// The final rate, in [0, base rate].
        #[serde(default)]
        min_lr: f64,
    },
}

/// Random transformations of `[B, C, H, W]` image batches, drawn fresh for every batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageAugmentation {
    /// Zero-pad each side by this many pixels (≤ 16), then crop back at a random offset.
    #[serde(default)]
    pub crop_padding: u32,
    /// Mirror left–right with probability 1/2.
    #[serde(default)]
    pub horizontal_flip: bool,
    /// Rotate by an angle uniform in [−d, d] degrees (0 ≤ d ≤ 180), zero fill.
    #[serde(default)]
    pub rotation_degrees: f64,
}

/// Why a [`LocalTraining`] was refused: the field (dotted path under `local_training`) and
/// what it must be.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidLocalTraining {
    /// The offending field.
    pub field: &'static str,
    /// What it must satisfy, with the value given.
    pub reason: String,
}

impl std::fmt::Display for InvalidLocalTraining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidLocalTraining {}

fn check(
    ok: bool,
    field: &'static str,
    value: impl std::fmt::Display,
    what: &str,
) -> Result<(), InvalidLocalTraining> {
    if ok {
        Ok(())
    } else {
        Err(InvalidLocalTraining {
            field,
            reason: format!("must be {what}, got {value}"),
        })
    }
}

fn unit(field: &'static str, v: f64) -> Result<(), InvalidLocalTraining> {
    check(
        v.is_finite() && (0.0..1.0).contains(&v),
        field,
        v,
        "in [0, 1)",
    )
}

fn positive(field: &'static str, v: f64) -> Result<(), InvalidLocalTraining> {
    check(v.is_finite() && v > 0.0, field, v, "a finite number > 0")
}

impl LocalTraining {
    /// Plain SGD at `learning_rate`: what a participant does when its federation fixes nothing.
    pub fn sgd(learning_rate: f64) -> Self {
        Self {
            optimizer: LocalOptimizer::Sgd { momentum: 0.0 },
            learning_rate,
            weight_decay: 0.0,
            schedule: LrSchedule::Constant,
            warmup_steps: 0,
            augmentation: ImageAugmentation::default(),
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), InvalidLocalTraining> {
        positive("local_training.learning_rate", self.learning_rate)?;
        check(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "local_training.weight_decay",
            self.weight_decay,
            "a finite number >= 0",
        )?;
        match self.optimizer {
            LocalOptimizer::Sgd { momentum } => {
                unit("local_training.optimizer.momentum", momentum)?
            }
            LocalOptimizer::Adam { beta1, beta2, eps } => {
                unit("local_training.optimizer.beta1", beta1)?;
                unit("local_training.optimizer.beta2", beta2)?;
                positive("local_training.optimizer.eps", eps)?;
            }
            LocalOptimizer::RmsProp { alpha, eps } => {
                unit("local_training.optimizer.alpha", alpha)?;
                positive("local_training.optimizer.eps", eps)?;
            }
            LocalOptimizer::AdaGrad { eps } => positive("local_training.optimizer.eps", eps)?,
        }
        match self.schedule {
            LrSchedule::Constant => {}
            LrSchedule::Step { every, gamma } => {
                check(
                    every >= 1,
                    "local_training.schedule.every",
                    every,
                    "at least 1",
                )?;
                check(
                    gamma.is_finite() && gamma > 0.0 && gamma <= 1.0,
                    "local_training.schedule.gamma",
                    gamma,
                    "in (0, 1]",
                )?;
            }
            LrSchedule::Cosine { min_lr } => check(
                min_lr.is_finite() && (0.0..=self.learning_rate).contains(&min_lr),
                "local_training.schedule.min_lr",
                min_lr,
                "in [0, learning_rate]",
            )?,
        }
        let a = self.augmentation;
        check(
            a.crop_padding <= 16,
            "local_training.augmentation.crop_padding",
            a.crop_padding,
            "at most 16 pixels",
        )?;
        check(
            a.rotation_degrees.is_finite() && (0.0..=180.0).contains(&a.rotation_degrees),
            "local_training.augmentation.rotation_degrees",
            a.rotation_degrees,
            "in [0, 180]",
        )
    }
}

#[cfg(test)]
#[path = "training_tests.rs"]
mod tests;
