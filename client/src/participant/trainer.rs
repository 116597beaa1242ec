//! Local training behind a small trait, so the loop does not care how Δ is produced.

use cohort_protocol::evaluation::EvaluationTask;
use cohort_protocol::messages::Task;
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, TchError, Tensor};

use cohort_protocol::training::LocalTraining;

use super::evaluation::{HeldOut, site_statistics};
use crate::data::{Augmentation, Augmenter, Dataset};
use crate::dpsgd::{self, ClippingMode, DpConfig, OptimizerConfig, PrivateTrainer};
use crate::ledger::RdpStepAccountant;
use crate::model::{self, ModelSpec, Tape};
use crate::weights;

/// What local training produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutput {
    /// Δ = w_local − w_global, flattened in the order of the model file's sorted tensor names
    /// (the server's order).
    pub delta: Vec<f32>,
    /// Records trained on (FedAvg's weight for plain uploads).
    pub num_examples: u64,
}

/// How the locally trained model does on the client's own data: what a participant may
/// release (with DP, see `cohort_privacy::release`) after a round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalMetrics {
    /// Mean cross-entropy, each example's loss clipped to [`MAX_RELEASED_LOSS`] first so that
    /// the mean's sensitivity is `MAX_RELEASED_LOSS / examples`.
    pub mean_loss: f64,
    /// Fraction of examples classified correctly.
    pub accuracy: f64,
    /// Examples evaluated.
    pub examples: u64,
}

/// The per-example loss bound of [`LocalMetrics::mean_loss`].
pub const MAX_RELEASED_LOSS: f64 = 10.0;

/// Produces an update from the global model for a task.
pub trait LocalTrainer: Send {
    /// Trains from `global` (safetensors) as `task` says and returns Δ.
    fn train(&mut self, global: &[u8], task: &Task) -> Result<TrainOutput, String>;

    /// Records available for training.
    fn sample_count(&self) -> u64;

    /// Metrics of the model the last [`train`](Self::train) produced, if this trainer
    /// computes them (the default does not, and then nothing is released).
    fn metrics(&mut self) -> Option<LocalMetrics> {
        None
    }

    /// The exact evaluation statistics of the model in `global` on this site's held-out
    /// records, in the task shape's layout. The default holds no held-out split and refuses
    /// (before anything is charged).
    fn held_out_statistics(
        &mut self,
        global: &[u8],
        task: &EvaluationTask,
    ) -> Result<Vec<i64>, String> {
        let _ = (global, task);
        Err("this trainer holds no held-out split to evaluate on".into())
    }
}

/// DP-SGD on a tch model: the task's σ, C, q and epochs, and its local training settings
/// (plain SGD at `learning_rate` when the federation fixes none).
#[derive(Debug)]
pub struct DpSgdTrainer {
    data: Dataset,
    spec: Option<ModelSpec>,
    device: Device,
    learning_rate: f64,
    last: Option<LocalMetrics>,
    held_out: Option<HeldOut>,
}

impl DpSgdTrainer {
    /// A trainer over `data`. The model architecture comes from each task's `model_spec`
    /// unless `spec` fixes it.
    pub fn new(data: Dataset, spec: Option<ModelSpec>, device: Device, learning_rate: f64) -> Self {
        Self {
            data,
            spec,
            device,
            learning_rate,
            last: None,
            held_out: None,
        }
    }

    /// Answers evaluation tasks on `held_out` (the split training never sees).
    pub fn with_held_out(mut self, held_out: HeldOut) -> Self {
        self.held_out = Some(held_out);
        self
    }

    fn model_spec(&self, from_task: Option<&serde_json::Value>) -> Result<ModelSpec, String> {
        match (&self.spec, from_task) {
            (Some(s), _) => Ok(s.clone()),
            (None, Some(v)) => serde_json::from_value::<ModelSpec>(v.clone()).map_err(|e| {
                format!("the federation's model_spec is not a model this client can build: {e}")
            }),
            (None, None) => Err("the task carries no model_spec and none was given locally".into()),
        }
    }
}

/// Loss and accuracy of the model in `weights` on `data`, in batches, without gradients.
fn evaluate(
    spec: &ModelSpec,
    device: Device,
    weights_bytes: &[u8],
    data: &Dataset,
) -> Result<LocalMetrics, String> {
    let mut vs = VarStore::new(device);
    let network = model::build(&vs.root(), spec).map_err(|e| e.to_string())?;
    weights::load_safetensors(&mut vs, weights_bytes).map_err(|e| e.to_string())?;
    let n = data.len();
    if n == 0 {
        return Err("no examples to evaluate".into());
    }
    let (mut loss, mut correct) = (0.0, 0.0);
    tch::no_grad(|| -> Result<(), TchError> {
        let mut tape = Tape::off();
        for start in (0..n).step_by(1024) {
            let len = (n - start).min(1024);
            let x = data.features.f_narrow(0, start, len)?.f_to_device(device)?;
            let y = data.labels.f_narrow(0, start, len)?.f_to_device(device)?;
            let logits = network.forward_t(&x, false, &mut tape)?;
            loss += logits
                .f_cross_entropy_loss::<Tensor>(&y, None, Reduction::None, -100, 0.0)?
                .f_clamp(0.0, MAX_RELEASED_LOSS)?
                .f_sum(Kind::Double)?
                .f_double_value(&[])?;
            correct += logits
                .f_argmax(-1, false)?
                .f_eq_tensor(&y)?
                .f_sum(Kind::Double)?
                .f_double_value(&[])?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(LocalMetrics {
        mean_loss: loss / n as f64,
        accuracy: correct / n as f64,
        examples: n as u64,
    })
}

/// One round of local DP-SGD from the `global` weights, as every trainer runs it (a hospital's
/// [`DpSgdTrainer`], the simulator's virtual clients): the model built from `spec`, exactly the
/// ⌈E/q⌉ steps both ledgers charge (not E whole epochs of ⌈1/q⌉ steps, which is more whenever
/// 1/q is not a whole number), and Δ in the model file's order. The optimiser, its schedule and
/// the augmentation are the task's `local_training` (plain SGD at `learning_rate` without one),
/// built by [`OptimizerConfig::for_round`]. `prepare` may adjust the private trainer before it
/// trains (the simulator seeds its noise, sampling and augmentation). Returns Δ and the trained
/// weights as safetensors.
pub fn train_round(
    spec: &ModelSpec,
    device: Device,
    learning_rate: f64,
    data: &Dataset,
    global: &[u8],
    task: &Task,
    prepare: impl FnOnce(&mut PrivateTrainer<model::Model>) -> Result<(), String>,
) -> Result<(TrainOutput, Vec<u8>), String> {
    let mut vs = VarStore::new(device);
    let network = model::build(&vs.root(), spec).map_err(|e| e.to_string())?;
    weights::load_safetensors(&mut vs, global).map_err(|e| e.to_string())?;
    let (_, before) = weights::flat_from_safetensors(global).map_err(|e| e.to_string())?;
    let dp = task.dp_sgd;
    let config = DpConfig {
        noise_multiplier: dp.noise_multiplier,
        max_grad_norm: dp.clip_norm,
        sample_rate: dp.batch_sample_rate,
        clipping: ClippingMode::Auto,
    };
    let local = task
        .local_training
        .unwrap_or_else(|| LocalTraining::sgd(learning_rate));
    let mut trainer = dpsgd::make_private(
        network,
        OptimizerConfig::for_round(&local, dp.steps_per_round()).build(),
        config,
        data.len(),
        Box::new(RdpStepAccountant::new()),
    )
    .map_err(|e| e.to_string())?;
    let augmentation = Augmentation::from(local.augmentation);
    if !augmentation.is_identity() {
        // Which crops and angles a batch gets is not secret (the batch's membership is), so an
        // OS-seeded ordinary generator is enough; the simulator reseeds it for replay.
        let seed = rand::random::<u64>();
        trainer.set_augmenter(Some(Augmenter::new(augmentation, seed)));
    }
    // FedProx: the global weights just loaded are w_global.
    if let Some(mu) = task.proximal_mu {
        trainer.add_proximal_term(mu).map_err(|e| e.to_string())?;
    }
    prepare(&mut trainer)?;
    trainer
        .train_steps(data, dp.steps_per_round(), |_| {})
        .map_err(|e| e.to_string())?;
    drop(trainer);
    let after_bytes = weights::to_safetensors(&vs).map_err(|e| e.to_string())?;
    let (_, after) = weights::flat_from_safetensors(&after_bytes).map_err(|e| e.to_string())?;
    if after.len() != before.len() {
        return Err(format!(
            "the trained model has {} parameters, the global model {}",
            after.len(),
            before.len()
        ));
    }
    let output = TrainOutput {
        delta: after.iter().zip(&before).map(|(a, b)| a - b).collect(),
        num_examples: data.len().max(0) as u64,
    };
    Ok((output, after_bytes))
}

impl LocalTrainer for DpSgdTrainer {
    fn train(&mut self, global: &[u8], task: &Task) -> Result<TrainOutput, String> {
        self.last = None;
        let spec = self.model_spec(task.model_spec.as_ref())?;
        let (output, after_bytes) = train_round(
            &spec,
            self.device,
            self.learning_rate,
            &self.data,
            global,
            task,
            |_| Ok(()),
        )?;
        // Metrics are optional: a model whose outputs are not class logits simply has none.
        self.last = evaluate(&spec, self.device, &after_bytes, &self.data).ok();
        Ok(output)
    }

    fn sample_count(&self) -> u64 {
        self.data.len().max(0) as u64
    }

    fn metrics(&mut self) -> Option<LocalMetrics> {
        self.last.take()
    }

    fn held_out_statistics(
        &mut self,
        global: &[u8],
        task: &EvaluationTask,
    ) -> Result<Vec<i64>, String> {
        let spec = self.model_spec(task.model_spec.as_ref())?;
        let held_out = self.held_out.as_ref().ok_or_else(|| {
            "this site was started without a held-out split to evaluate on".to_owned()
        })?;
        site_statistics(&spec, self.device, global, held_out, task)
    }
}

#[cfg(test)]
#[path = "trainer_tests.rs"]
mod tests;
