//! One DP-SGD training run with canaries, through the same trainer `cohort train` uses.

use std::time::Instant;

use cohort_client::data::{self, Dataset};
use cohort_client::dpsgd::{
    self, ClippingMode, DpConfig, Network, OptimizerConfig, StepAccountant, accuracy, canary,
    danger,
};
use cohort_client::ledger::RdpStepAccountant;
use cohort_client::model::{self, InputKind, Tape};
use cohort_privacy::EpsDelta;
use cohort_privacy::accounting::{AccountantKind, noise_multiplier_for};
use cohort_privacy::audit::one_run::{self, GuessPlan, OneRunAudit};
use tch::nn::VarStore;
use tch::{Kind, Reduction, Tensor};

use super::{DpSgdPlan, Failure, Mode, Noise, usage};

/// What an audit measured.
#[derive(Debug, Clone)]
pub struct DpSgdAudit {
    /// Trainable parameters (d).
    pub parameters: usize,
    /// Training examples, canaries included (N).
    pub train_examples: i64,
    /// DP-SGD steps.
    pub steps: u64,
    /// q.
    pub sample_rate: f64,
    /// σ the accountant charged.
    pub noise_multiplier: f64,
    /// The accountant's ε at the plan's δ.
    pub accountant_epsilon: f64,
    /// Each canary's score (higher: more likely included).
    pub scores: Vec<f64>,
    /// Whether each canary was included.
    pub included: Vec<bool>,
    /// The one-run lower bound and its guess counts.
    pub audit: OneRunAudit,
    /// Seconds spent in the training steps (canaries included).
    pub train_seconds: f64,
    /// Seconds spent scoring.
    pub score_seconds: f64,
    /// Test accuracy of the trained model.
    pub test_accuracy: f64,
}

impl DpSgdAudit {
    /// Whether the audit contradicts the accountant: a lower bound above the claimed ε (or
    /// an ε that cannot be compared, NaN, which fails closed).
    pub fn contradicts(&self) -> bool {
        use std::cmp::Ordering::{Equal, Less};
        let order = self
            .audit
            .epsilon_lower_bound
            .partial_cmp(&self.accountant_epsilon);
        !matches!(order, Some(Less | Equal))
    }
}

/// Runs the audit with the accountant `cohort train` uses (RDP).
pub(super) fn run(plan: &DpSgdPlan) -> Result<DpSgdAudit, Failure> {
    run_with_accountant(plan, Box::new(RdpStepAccountant::new()))
}

/// Runs the audit with `accountant` charging each step: tests inject a faulty one here to
/// check that the audit catches an accountant that under-charges.
pub fn run_with_accountant(
    plan: &DpSgdPlan,
    accountant: Box<dyn StepAccountant>,
) -> Result<DpSgdAudit, Failure> {
    let split = data::load(&plan.data)
        .map_err(|e| usage(format!("cannot load --data {}: {e}", plan.data)))?;
    let failed = |e: &dyn std::fmt::Display| Failure::Failed(e.to_string());
    let train = split.train.to_device(plan.device).map_err(|e| failed(&e))?;
    let test = split.test.to_device(plan.device).map_err(|e| failed(&e))?;
    let classes = train.num_classes;
    let shape = train.features.size().get(1..).unwrap_or(&[]).to_vec();
    let kind = if train.features.kind() == Kind::Int64 {
        InputKind::Tokens
    } else {
        InputKind::Float
    };
    let (train, black_box) = match plan.mode {
        Mode::WhiteBox => (train, None),
        Mode::BlackBox => {
            let n = usize::try_from(train.len()).unwrap_or(0);
            if plan.canaries >= n {
                return Err(usage(format!(
                    "--canaries {} must be fewer than the {n} training examples in black-box mode",
                    plan.canaries
                )));
            }
            let (train, canaries) = canary::InputCanaries::plant(&train, plan.canaries, plan.seed)
                .map_err(|e| failed(&e))?;
            (train, Some(canaries))
        }
    };
    let train_len = train.len();
    if plan.batch > train_len {
        return Err(usage(format!(
            "--batch {} is larger than the {train_len} training examples",
            plan.batch
        )));
    }

    tch::manual_seed(plan.seed as i64);
    let vs = VarStore::new(plan.device);
    let spec =
        model::preset(&plan.model, &shape, kind, classes).map_err(|e| usage(e.to_string()))?;
    let net = model::build(&vs.root(), &spec).map_err(|e| usage(e.to_string()))?;

    let sample_rate = plan.batch as f64 / train_len as f64;
    let steps = ((1.0 / sample_rate).ceil() as u64)
        .checked_mul(plan.epochs)
        .ok_or_else(|| usage("--epochs is too large"))?;
    let noise_multiplier = match plan.noise {
        Noise::Multiplier(sigma) => sigma,
        Noise::TargetEpsilon(target) => {
            let target = EpsDelta::new(target, plan.delta).map_err(|e| usage(e.to_string()))?;
            noise_multiplier_for(target, sample_rate, steps, AccountantKind::Rdp)
                .map_err(|e| Failure::Failed(format!("cannot calibrate σ: {e}")))?
        }
    };
    let initial = canary::flat_trainable(&net).map_err(|e| failed(&e))?;
    let config = DpConfig {
        noise_multiplier,
        max_grad_norm: plan.clip,
        sample_rate,
        clipping: ClippingMode::Auto,
    };
    let mut trainer = dpsgd::make_private(
        net,
        OptimizerConfig::sgd(plan.lr, 0.0).build(),
        config,
        train_len,
        accountant,
    )
    .map_err(|e| failed(&e))?;
    if plan.danger_no_noise {
        danger::replace_noise(&mut trainer, Box::new(danger::NoNoise));
    }
    if plan.mode == Mode::WhiteBox {
        let canaries = canary::GradientCanaries::new(
            trainer.network(),
            plan.canaries,
            plan.clip,
            sample_rate,
            plan.seed,
        )
        .map_err(|e| failed(&e))?;
        canary::plant(&mut trainer, canaries);
    }

    let start = Instant::now();
    trainer
        .train_steps(&train, steps, |_| {})
        .map_err(|e| Failure::Failed(format!("training failed: {e}")))?;
    let train_seconds = start.elapsed().as_secs_f64();
    let accountant_epsilon = trainer.epsilon(plan.delta).unwrap_or(f64::INFINITY);

    let start = Instant::now();
    let (scores, included) = match black_box {
        None => {
            let canaries = canary::remove(&mut trainer).ok_or_else(|| {
                Failure::Failed("the gradient canaries went missing during training".into())
            })?;
            let trained = canary::flat_trainable(trainer.network()).map_err(|e| failed(&e))?;
            let change: Vec<f32> = trained.iter().zip(&initial).map(|(a, b)| a - b).collect();
            let scores = canaries.scores(&change).map_err(|e| failed(&e))?;
            (scores, canaries.included().to_vec())
        }
        Some(canaries) => {
            let losses =
                per_example_loss(trainer.network(), canaries.examples()).map_err(|e| failed(&e))?;
            (
                losses.iter().map(|l| -l).collect(),
                canaries.included().to_vec(),
            )
        }
    };
    let score_seconds = start.elapsed().as_secs_f64();
    let guess_plan = GuessPlan::default_for(plan.canaries).map_err(|e| failed(&e))?;
    let audit = one_run::audit(&scores, &included, plan.delta, plan.confidence, &guess_plan)
        .map_err(|e| failed(&e))?;
    let test_accuracy = accuracy(trainer.network(), &test, 1024).map_err(|e| failed(&e))?;
    Ok(DpSgdAudit {
        parameters: initial.len(),
        train_examples: train_len,
        steps,
        sample_rate,
        noise_multiplier,
        accountant_epsilon,
        scores,
        included,
        audit,
        train_seconds,
        score_seconds,
        test_accuracy,
    })
}

/// The cross-entropy of each example under the trained network, in batches of 1024.
fn per_example_loss<N: Network>(net: &N, data: &Dataset) -> Result<Vec<f64>, tch::TchError> {
    let n = data.len();
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut start = 0;
    while start < n {
        let len = (n - start).min(1024);
        let x = data.features.narrow(0, start, len);
        let y = data.labels.narrow(0, start, len).f_to_kind(Kind::Int64)?;
        let loss = tch::no_grad(|| -> Result<Tensor, tch::TchError> {
            let logits = net.forward_t(&x, false, &mut Tape::off())?;
            logits.f_cross_entropy_loss::<Tensor>(&y, None, Reduction::None, -100, 0.0)
        })?;
        let loss = loss
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?;
        out.extend(Vec::<f64>::try_from(&loss)?);
        start += len;
    }
    Ok(out)
}
