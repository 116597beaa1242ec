//! Local training behind a small trait, so the loop does not care how Δ is produced.

use cohort_protocol::messages::Task;
use tch::Device;
use tch::nn::VarStore;

use crate::data::Dataset;
use crate::dpsgd::{self, ClippingMode, DpConfig, OptimizerConfig};
use crate::ledger::RdpStepAccountant;
use crate::model::{self, ModelSpec};
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

/// Produces an update from the global model for a task.
pub trait LocalTrainer: Send {
    /// Trains from `global` (safetensors) as `task` says and returns Δ.
    fn train(&mut self, global: &[u8], task: &Task) -> Result<TrainOutput, String>;

    /// Records available for training.
    fn sample_count(&self) -> u64;
}

/// DP-SGD on a tch model: the task's σ, C, q and epochs; plain SGD at `learning_rate`.
#[derive(Debug)]
pub struct DpSgdTrainer {
    data: Dataset,
    spec: Option<ModelSpec>,
    device: Device,
    learning_rate: f64,
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
        }
    }
}

impl LocalTrainer for DpSgdTrainer {
    fn train(&mut self, global: &[u8], task: &Task) -> Result<TrainOutput, String> {
        let spec = match (&self.spec, &task.model_spec) {
            (Some(s), _) => s.clone(),
            (None, Some(v)) => serde_json::from_value::<ModelSpec>(v.clone()).map_err(|e| {
                format!("the federation's model_spec is not a model this client can build: {e}")
            })?,
            (None, None) => {
                return Err("the task carries no model_spec and none was given locally".into());
            }
        };
        let mut vs = VarStore::new(self.device);
        let network = model::build(&vs.root(), &spec).map_err(|e| e.to_string())?;
        weights::load_safetensors(&mut vs, global).map_err(|e| e.to_string())?;
        let (_, before) = weights::flat_from_safetensors(global).map_err(|e| e.to_string())?;
        let dp = task.dp_sgd;
        let config = DpConfig {
            noise_multiplier: dp.noise_multiplier,
            max_grad_norm: dp.clip_norm,
            sample_rate: dp.batch_sample_rate,
            clipping: ClippingMode::Auto,
        };
        let mut trainer = dpsgd::make_private(
            network,
            OptimizerConfig::sgd(self.learning_rate, 0.0).build(),
            config,
            self.data.len(),
            Box::new(RdpStepAccountant::new()),
        )
        .map_err(|e| e.to_string())?;
        for _ in 0..dp.local_epochs {
            trainer
                .train_epoch(&self.data, |_| {})
                .map_err(|e| e.to_string())?;
        }
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
        Ok(TrainOutput {
            delta: after.iter().zip(&before).map(|(a, b)| a - b).collect(),
            num_examples: self.data.len().max(0) as u64,
        })
    }

    fn sample_count(&self) -> u64 {
        self.data.len().max(0) as u64
    }
}
