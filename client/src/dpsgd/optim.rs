//! Optimisers and learning-rate schedules over explicit gradients.
//!
//! DP-SGD produces its gradient (clipped, summed, noised, scaled) outside autograd, so the
//! optimisers here take `(parameter, gradient)` pairs instead of reading `.grad`. The same code
//! updates non-private training, which keeps benchmarks comparable. Formulas follow PyTorch's
//! `torch.optim` (decoupled from nothing: weight decay is L2 added to the gradient).

use cohort_protocol::training::{LocalOptimizer, LocalTraining, LrSchedule};
use serde::{Deserialize, Serialize};
use tch::{TchError, Tensor};

/// Which update rule, with its own hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OptimizerKind {
    /// Plain SGD, with optional heavy-ball momentum (0 for none).
    Sgd {
        /// Momentum μ in [0, 1).
        momentum: f64,
    },
    /// Adam (Kingma & Ba) with bias correction.
    Adam {
        /// β₁.
        beta1: f64,
        /// β₂.
        beta2: f64,
        /// ε.
        eps: f64,
    },
    /// RMSprop.
    RmsProp {
        /// Smoothing constant α.
        alpha: f64,
        /// ε.
        eps: f64,
    },
    /// AdaGrad.
    AdaGrad {
        /// ε.
        eps: f64,
    },
}

impl OptimizerKind {
    /// Adam with PyTorch's defaults.
    pub fn adam() -> Self {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// How the learning rate changes with the step count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        /// Steps between decays.
        every: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to `min_lr` over `total` steps.
    Cosine {
        /// Steps over which to anneal.
        total: usize,
        /// Final rate.
        min_lr: f64,
    },
}

impl Schedule {
    /// The rate at step `step` (0-based) for base rate `base`.
    pub fn rate(&self, base: f64, step: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => {
                let decays = step.checked_div(every).unwrap_or(0);
                base * gamma.powi(decays.min(i32::MAX as usize) as i32)
            }
            Schedule::Cosine { total, min_lr } => {
                if total == 0 {
                    return base;
                }
                let progress = (step.min(total) as f64) / total as f64;
                min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// Everything that defines an optimiser; serialisable so a federation can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// The update rule.
    pub kind: OptimizerKind,
    /// Base learning rate.
    pub learning_rate: f64,
    /// L2 weight decay λ (adds λθ to the gradient).
    #[serde(default)]
    pub weight_decay: f64,
    /// Learning-rate schedule.
    #[serde(default)]
    pub schedule: Schedule,
    /// Linear warm-up: step k < `warmup_steps` uses (k + 1)/`warmup_steps` of the scheduled
    /// rate.
    #[serde(default)]
    pub warmup_steps: usize,
}

impl OptimizerConfig {
    /// SGD with the given rate and momentum, no decay, constant schedule.
    pub fn sgd(learning_rate: f64, momentum: f64) -> Self {
        Self {
            kind: OptimizerKind::Sgd { momentum },
            learning_rate,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            warmup_steps: 0,
        }
    }

    /// The optimiser a round of `steps` steps runs for a federation's `local` settings (the
    /// cosine schedule anneals over those steps). `cohort train` builds its optimiser here too,
    /// so the mapping is one function.
    pub fn for_round(local: &LocalTraining, steps: u64) -> Self {
        let kind = match local.optimizer {
            LocalOptimizer::Sgd { momentum } => OptimizerKind::Sgd { momentum },
            LocalOptimizer::Adam { beta1, beta2, eps } => OptimizerKind::Adam { beta1, beta2, eps },
            LocalOptimizer::RmsProp { alpha, eps } => OptimizerKind::RmsProp { alpha, eps },
            LocalOptimizer::AdaGrad { eps } => OptimizerKind::AdaGrad { eps },
        };
        let schedule = match local.schedule {
            LrSchedule::Constant => Schedule::Constant,
            LrSchedule::Step { every, gamma } => Schedule::Step {
                every: every as usize,
                gamma,
            },
            LrSchedule::Cosine { min_lr } => Schedule::Cosine {
                total: usize::try_from(steps).unwrap_or(usize::MAX),
                min_lr,
            },
        };
        Self {
            kind,
            learning_rate: local.learning_rate,
            weight_decay: local.weight_decay,
            schedule,
            warmup_steps: local.warmup_steps as usize,
        }
    }

    /// Builds an optimiser with fresh state.
    pub fn build(&self) -> Optimizer {
        Optimizer {
            config: *self,
            steps: 0,
            state: Vec::new(),
        }
    }
}

/// Per-parameter state (momentum buffers, moment estimates).
#[derive(Debug)]
struct Slot {
    first: Option<Tensor>,
    second: Option<Tensor>,
}

/// An optimiser with its state.
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    steps: usize,
    state: Vec<Slot>,
}

impl Optimizer {
    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The learning rate the next step will use.
    pub fn current_rate(&self) -> f64 {
        let scheduled = self
            .config
            .schedule
            .rate(self.config.learning_rate, self.steps);
        let warmup = self.config.warmup_steps;
        if self.steps < warmup {
            scheduled * (self.steps + 1) as f64 / warmup as f64
        } else {
            scheduled
        }
    }

    /// Updates `params[k]` in place with `grads[k]`. The pairing must be the same on every
    /// call (state is kept by position).
    pub fn step(&mut self, params: &[Tensor], grads: &[Tensor]) -> Result<(), TchError> {
        if params.len() != grads.len() {
            return Err(TchError::Shape(format!(
                "{} parameters but {} gradients",
                params.len(),
                grads.len()
            )));
        }
        if self.state.is_empty() {
            self.state = params
                .iter()
                .map(|_| Slot {
                    first: None,
                    second: None,
                })
                .collect();
        }
        let lr = self.current_rate();
        self.steps += 1;
        let t = self.steps as f64;
        let wd = self.config.weight_decay;
        let kind = self.config.kind;
        tch::no_grad(|| -> Result<(), TchError> {
            for ((param, grad), slot) in params.iter().zip(grads).zip(self.state.iter_mut()) {
                let mut grad = grad.shallow_clone();
                if wd != 0.0 {
                    grad = grad.f_add(&param.f_mul_scalar(wd)?)?;
                }
                let update = match kind {
                    OptimizerKind::Sgd { momentum } => {
                        if momentum == 0.0 {
                            grad
                        } else {
                            let buf = match slot.first.take() {
                                Some(buf) => buf.f_mul_scalar(momentum)?.f_add(&grad)?,
                                None => grad.copy(),
                            };
                            slot.first = Some(buf.shallow_clone());
                            buf
                        }
                    }
                    OptimizerKind::Adam { beta1, beta2, eps } => {
                        let m = match slot.first.take() {
                            Some(m) => m
                                .f_mul_scalar(beta1)?
                                .f_add(&grad.f_mul_scalar(1.0 - beta1)?)?,
                            None => grad.f_mul_scalar(1.0 - beta1)?,
                        };
                        let v = match slot.second.take() {
                            Some(v) => v
                                .f_mul_scalar(beta2)?
                                .f_add(&grad.f_square()?.f_mul_scalar(1.0 - beta2)?)?,
                            None => grad.f_square()?.f_mul_scalar(1.0 - beta2)?,
                        };
                        let m_hat = m.f_div_scalar(1.0 - beta1.powf(t))?;
                        let v_hat = v.f_div_scalar(1.0 - beta2.powf(t))?;
                        slot.first = Some(m);
                        slot.second = Some(v);
                        m_hat.f_div(&v_hat.f_sqrt()?.f_add_scalar(eps)?)?
                    }
                    OptimizerKind::RmsProp { alpha, eps } => {
                        let v = match slot.second.take() {
                            Some(v) => v
                                .f_mul_scalar(alpha)?
                                .f_add(&grad.f_square()?.f_mul_scalar(1.0 - alpha)?)?,
                            None => grad.f_square()?.f_mul_scalar(1.0 - alpha)?,
                        };
                        let update = grad.f_div(&v.f_sqrt()?.f_add_scalar(eps)?)?;
                        slot.second = Some(v);
                        update
                    }
                    OptimizerKind::AdaGrad { eps } => {
                        let sum = match slot.second.take() {
                            Some(s) => s.f_add(&grad.f_square()?)?,
                            None => grad.f_square()?,
                        };
                        let update = grad.f_div(&sum.f_sqrt()?.f_add_scalar(eps)?)?;
                        slot.second = Some(sum);
                        update
                    }
                };
                let mut target = param.shallow_clone();
                let _ = target.f_sub_(&update.f_mul_scalar(lr)?)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn quadratic_descent(kind: OptimizerKind, lr: f64, steps: usize) -> f64 {
        // Minimise ½‖θ − 3‖² from θ = 0; the gradient is θ − 3.
        let theta = Tensor::zeros([4], (Kind::Double, tch::Device::Cpu));
        let mut opt = OptimizerConfig {
            kind,
            learning_rate: lr,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            warmup_steps: 0,
        }
        .build();
        for _ in 0..steps {
            let grad = &theta - 3.0;
            opt.step(&[theta.shallow_clone()], &[grad]).unwrap();
        }
        (&theta - 3.0).abs().max().double_value(&[])
    }

    #[test]
    fn every_optimiser_converges_on_a_quadratic() {
        assert!(quadratic_descent(OptimizerKind::Sgd { momentum: 0.0 }, 0.1, 200) < 1e-6);
        assert!(quadratic_descent(OptimizerKind::Sgd { momentum: 0.9 }, 0.05, 400) < 1e-4);
        assert!(quadratic_descent(OptimizerKind::adam(), 0.1, 600) < 1e-2);
        assert!(
            quadratic_descent(
                OptimizerKind::RmsProp {
                    alpha: 0.99,
                    eps: 1e-8
                },
                0.01,
                2000
            ) < 2e-2
        );
        assert!(quadratic_descent(OptimizerKind::AdaGrad { eps: 1e-10 }, 1.0, 500) < 1e-3);
    }

    #[test]
    fn first_adam_step_moves_by_the_learning_rate() {
        // With bias correction the first step is lr · g/|g| per coordinate.
        let theta = Tensor::from_slice(&[1.0f64, -2.0]);
        let mut opt = OptimizerConfig {
            kind: OptimizerKind::adam(),
            learning_rate: 0.5,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            warmup_steps: 0,
        }
        .build();
        opt.step(
            &[theta.shallow_clone()],
            &[Tensor::from_slice(&[4.0f64, -0.1])],
        )
        .unwrap();
        let got: Vec<f64> = Vec::try_from(&theta).unwrap();
        assert!(
            (got[0] - 0.5).abs() < 1e-6 && (got[1] + 1.5).abs() < 1e-6,
            "{got:?}"
        );
    }

    #[test]
    fn weight_decay_shrinks_parameters_without_gradient() {
        let theta = Tensor::from_slice(&[2.0f64]);
        let mut opt = OptimizerConfig {
            kind: OptimizerKind::Sgd { momentum: 0.0 },
            learning_rate: 0.1,
            weight_decay: 0.5,
            schedule: Schedule::Constant,
            warmup_steps: 0,
        }
        .build();
        opt.step(&[theta.shallow_clone()], &[Tensor::from_slice(&[0.0f64])])
            .unwrap();
        assert!((theta.double_value(&[0]) - 1.9).abs() < 1e-12);
    }

    #[test]
    fn warm_up_ramps_the_scheduled_rate_linearly() {
        let theta = Tensor::from_slice(&[0.0f64]);
        let mut opt = OptimizerConfig {
            warmup_steps: 4,
            ..OptimizerConfig::sgd(1.0, 0.0)
        }
        .build();
        let mut rates = Vec::new();
        for _ in 0..6 {
            rates.push(opt.current_rate());
            opt.step(&[theta.shallow_clone()], &[Tensor::from_slice(&[0.0f64])])
                .unwrap();
        }
        assert_eq!(rates, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn schedules_follow_their_formulas() {
        let step = Schedule::Step {
            every: 10,
            gamma: 0.5,
        };
        assert_eq!(step.rate(1.0, 0), 1.0);
        assert_eq!(step.rate(1.0, 9), 1.0);
        assert_eq!(step.rate(1.0, 10), 0.5);
        assert_eq!(step.rate(1.0, 25), 0.25);
        let cosine = Schedule::Cosine {
            total: 100,
            min_lr: 0.1,
        };
        assert!((cosine.rate(1.0, 0) - 1.0).abs() < 1e-12);
        assert!((cosine.rate(1.0, 50) - 0.55).abs() < 1e-12);
        assert!((cosine.rate(1.0, 100) - 0.1).abs() < 1e-12);
        assert!((cosine.rate(1.0, 1000) - 0.1).abs() < 1e-12);
    }
}
