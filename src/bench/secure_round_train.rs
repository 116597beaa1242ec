//! The training half of `cohort bench secure-round --train`: generated MNIST-sized client data
//! and a ~100k-parameter MLP, trained with the same `DpSgdTrainer` that `cohort join` runs.
//!
//! The data are generated, not MNIST: 784 standard-normal features per example and labels
//! from a fixed random linear teacher (argmax over 10 classes), so DP-SGD has something to
//! learn and costs what it costs on MNIST-shaped batches. The round's timing does not depend on
//! what the pixels mean.

use std::sync::Arc;

use cohort_client::data::Dataset;
use cohort_client::model::{self, ModelSpec};
use cohort_client::participant::{DpSgdTrainer, LocalTrainer, TrainOutput};
use cohort_client::weights;
use cohort_protocol::messages::Task;
use tch::{Device, Kind, Tensor};
use tokio::sync::Semaphore;

/// Features per example (28 × 28).
pub const FEATURES: i64 = 784;
/// Classes.
pub const CLASSES: i64 = 10;

/// A 784–h–10 MLP with h chosen so that the parameter count is closest to `params`.
pub fn mlp_near(params: usize) -> ModelSpec {
    // 784·h + h + 10·h + 10 parameters.
    let per_hidden = (FEATURES + 1 + CLASSES) as usize;
    let hidden = ((params.saturating_sub(CLASSES as usize) + per_hidden / 2) / per_hidden).max(1);
    ModelSpec::mlp(FEATURES, &[hidden as i64], CLASSES)
}

/// The initial global model of `spec` as safetensors.
pub fn initial_weights(spec: &ModelSpec) -> Result<Vec<u8>, String> {
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _net = model::build(&vs.root(), spec).map_err(|e| e.to_string())?;
    weights::to_safetensors(&vs).map_err(|e| e.to_string())
}

/// `clients` data sets of `examples` generated examples each, labelled by one shared teacher.
pub fn client_data(clients: usize, examples: i64) -> Result<Vec<Dataset>, String> {
    let teacher = Tensor::f_randn([FEATURES, CLASSES], (Kind::Float, Device::Cpu))
        .map_err(|e| e.to_string())?;
    (0..clients)
        .map(|_| {
            let features = Tensor::f_randn([examples, FEATURES], (Kind::Float, Device::Cpu))
                .map_err(|e| e.to_string())?;
            let labels = features
                .f_matmul(&teacher)
                .and_then(|logits| logits.f_argmax(1, false))
                .map_err(|e| e.to_string())?;
            Ok(Dataset {
                features,
                labels,
                num_classes: CLASSES,
            })
        })
        .collect()
}

/// A second handle on the same tensors (no copy), so both federations' clients train on the
/// same data.
pub fn share(data: &Dataset) -> Dataset {
    Dataset {
        features: data.features.shallow_clone(),
        labels: data.labels.shallow_clone(),
        num_classes: data.num_classes,
    }
}

/// A `DpSgdTrainer` that tells the async runtime it is about to block, so that 100 clients
/// training in one process do not starve the in-process server of worker threads; with a
/// semaphore, it trains only once it holds one of its slots.
#[derive(Debug)]
pub struct BlockingTrainer(pub DpSgdTrainer, pub Option<Arc<Semaphore>>);

impl LocalTrainer for BlockingTrainer {
    fn train(&mut self, global: &[u8], task: &Task) -> Result<TrainOutput, String> {
        tokio::task::block_in_place(|| {
            let _slot = match &self.1 {
                Some(slots) => Some(
                    tokio::runtime::Handle::current()
                        .block_on(slots.clone().acquire_owned())
                        .map_err(|_| "the training slots closed".to_owned())?,
                ),
                None => None,
            };
            self.0.train(global, task)
        })
    }

    fn sample_count(&self) -> u64 {
        self.0.sample_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mlp_has_about_the_asked_parameter_count() {
        let spec = mlp_near(100_000);
        let bytes = initial_weights(&spec).unwrap();
        let (_, flat) = weights::flat_from_safetensors(&bytes).unwrap();
        // h = 126: 784·126 + 126 + 1260 + 10.
        assert_eq!(flat.len(), 100_180);
        let data = client_data(2, 30).unwrap();
        assert_eq!(data[0].len(), 30);
        assert_eq!(data[1].features.size(), vec![30, FEATURES]);
        let labels = data[0].label_vec().unwrap();
        assert!(labels.iter().all(|l| (0..CLASSES).contains(l)));
    }
}
