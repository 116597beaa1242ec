//! Non-private training and evaluation: the baseline DP-SGD is measured against, and what
//! `cohort train` uses to report test accuracy.

use tch::{Kind, Reduction, TchError, Tensor};

use super::optim::Optimizer;
use super::{Network, clip};
use crate::data::Dataset;
use crate::model::Tape;

/// Ordinary mini-batch training: mean loss, one backward, one optimiser step.
#[derive(Debug)]
pub struct NonPrivateTrainer<N: Network> {
    network: N,
    optimizer: Optimizer,
}

impl<N: Network> NonPrivateTrainer<N> {
    /// Wraps a network and an optimiser.
    pub fn new(network: N, optimizer: Optimizer) -> Self {
        Self { network, optimizer }
    }

    /// The network.
    pub fn network(&self) -> &N {
        &self.network
    }

    /// One step on a batch; returns the mean loss.
    pub fn step(&mut self, features: &Tensor, labels: &Tensor) -> Result<f64, TchError> {
        let params: Vec<Tensor> = clip::trainable_parameters(&self.network)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let logits = self.network.forward_t(features, true, &mut Tape::off())?;
        let loss =
            logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)?;
        let grads = Tensor::f_run_backward(&[&loss], &params, false, false)?;
        self.optimizer.step(&params, &grads)?;
        loss.f_double_value(&[])
    }

    /// Gives the network back.
    pub fn into_network(self) -> N {
        self.network
    }
}

/// Fraction of `data` the network classifies correctly, evaluated in batches of `batch`.
pub fn accuracy<N: Network + ?Sized>(net: &N, data: &Dataset, batch: i64) -> Result<f64, TchError> {
    let n = data.len();
    if n == 0 {
        return Ok(f64::NAN);
    }
    let mut correct = 0i64;
    tch::no_grad(|| -> Result<(), TchError> {
        let mut start = 0;
        while start < n {
            let len = batch.max(1).min(n - start);
            let x = data.features.f_narrow(0, start, len)?;
            let y = data.labels.f_narrow(0, start, len)?;
            let predicted = net
                .forward_t(&x, false, &mut Tape::off())?
                .f_argmax(-1, false)?;
            correct += predicted
                .f_eq_tensor(&y.f_to_kind(Kind::Int64)?)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
            start += len;
        }
        Ok(())
    })?;
    Ok(correct as f64 / n as f64)
}
