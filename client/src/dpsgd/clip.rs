//! Clip-and-accumulate: `Σ_i min(1, C/‖∇_i‖) ∇_i` over a batch, by ghost clipping or by the
//! per-sample fallback.

use tch::{Reduction, TchError, Tensor};

use super::{ClippingMode, DpError, Network, ghost};
use crate::model::{ParamId, Tape};

/// The result of clip-and-accumulate over one batch.
#[derive(Debug)]
pub struct ClippedSum {
    /// Clipped gradient sums, one per trainable parameter, in [`trainable_parameters`] order.
    pub grads: Vec<Tensor>,
    /// Sum of the per-example losses (for progress reporting only; it is not private).
    pub loss_sum: f64,
    /// Examples in the batch.
    pub batch_size: i64,
}

/// The parameters that receive gradients, with their ids, in a fixed order.
pub fn trainable_parameters<N: Network + ?Sized>(net: &N) -> Vec<(ParamId, Tensor)> {
    net.param_tensors()
        .into_iter()
        .enumerate()
        .filter(|(_, t)| t.requires_grad())
        .collect()
}

/// Per-example cross-entropy, summed: its gradient w.r.t. anything is the sum of per-example
/// gradients, which is what clipping needs.
pub(crate) fn summed_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor, TchError> {
    logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::Sum, -100, 0.0)
}

/// Computes the clipped gradient sum of one batch with the given mode (`Auto` picks ghost
/// clipping when the network supports it).
pub fn clipped_gradient_sum<N: Network + ?Sized>(
    net: &N,
    features: &Tensor,
    labels: &Tensor,
    max_grad_norm: f64,
    mode: ClippingMode,
) -> Result<ClippedSum, DpError> {
    scaled_clipped_gradient_sum(net, features, labels, max_grad_norm, mode, 1.0)
}

/// `scale · Σ_i min(1, C/‖∇_i‖) ∇_i`: the scale rides on the per-example clip factors, so
/// the trainer's division by the expected batch size costs no pass over the gradients.
pub(crate) fn scaled_clipped_gradient_sum<N: Network + ?Sized>(
    net: &N,
    features: &Tensor,
    labels: &Tensor,
    max_grad_norm: f64,
    mode: ClippingMode,
    scale: f64,
) -> Result<ClippedSum, DpError> {
    let trainable = trainable_parameters(net);
    let batch_size = features.size().first().copied().unwrap_or(0);
    if batch_size == 0 {
        let grads = trainable
            .iter()
            .map(|(_, p)| p.f_zeros_like())
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(ClippedSum {
            grads,
            loss_sum: 0.0,
            batch_size,
        });
    }
    let use_ghost = match mode {
        ClippingMode::Ghost => {
            if !net.supports_ghost_clipping() {
                return Err(DpError::Unsupported(
                    "this network has layers ghost clipping does not cover; use \
                     ClippingMode::PerSample or Auto"
                        .into(),
                ));
            }
            true
        }
        ClippingMode::PerSample => false,
        ClippingMode::Auto => net.supports_ghost_clipping(),
    };
    if use_ghost {
        ghost_clipped_sum(net, &trainable, features, labels, max_grad_norm, scale)
    } else {
        per_sample_clipped_sum(net, &trainable, features, labels, max_grad_norm, scale)
    }
}

fn ghost_clipped_sum<N: Network + ?Sized>(
    net: &N,
    trainable: &[(ParamId, Tensor)],
    features: &Tensor,
    labels: &Tensor,
    max_grad_norm: f64,
    scale: f64,
) -> Result<ClippedSum, DpError> {
    let batch_size = features.size()[0];
    let mut tape = Tape::recording();
    let logits = net.forward_t(features, true, &mut tape)?;
    let loss = summed_loss(&logits, labels)?;
    let records = tape.take();
    let outputs: Vec<&Tensor> = records.iter().map(|r| r.output()).collect();
    let output_grads = Tensor::f_run_backward(&[&loss], &outputs, false, false)?;
    let norms = ghost::squared_norms(&records, &output_grads)?;
    let mut factors = ghost::clip_factors(&norms.squared, max_grad_norm)?;
    if scale != 1.0 {
        factors = factors.f_mul_scalar(scale)?;
    }
    let all = net.param_tensors();
    let mut by_id = ghost::clipped_sum(&records, &output_grads, norms, &factors, &all)?;
    let mut grads = Vec::with_capacity(trainable.len());
    for (id, param) in trainable {
        match by_id.remove(id) {
            Some(g) => grads.push(g.f_reshape(param.size())?),
            None => {
                return Err(DpError::Unsupported(format!(
                    "parameter #{id} was not seen by ghost clipping (a layer without a \
                     ghost rule, or a parameter used twice); use ClippingMode::PerSample"
                )));
            }
        }
    }
    Ok(ClippedSum {
        grads,
        loss_sum: loss.f_double_value(&[])?,
        batch_size,
    })
}

/// The generic fallback: one backward per example. Works for any network, TorchScript
/// included, at the cost of B backward passes.
fn per_sample_clipped_sum<N: Network + ?Sized>(
    net: &N,
    trainable: &[(ParamId, Tensor)],
    features: &Tensor,
    labels: &Tensor,
    max_grad_norm: f64,
    scale: f64,
) -> Result<ClippedSum, DpError> {
    let batch_size = features.size()[0];
    let params: Vec<&Tensor> = trainable.iter().map(|(_, p)| p).collect();
    let mut sums: Vec<Tensor> = params
        .iter()
        .map(|p| p.f_zeros_like())
        .collect::<Result<_, _>>()?;
    let mut loss_sum = 0.0;
    for i in 0..batch_size {
        let x = features.f_narrow(0, i, 1)?;
        let y = labels.f_narrow(0, i, 1)?;
        let loss = summed_loss(&net.forward_t(&x, true, &mut Tape::off())?, &y)?;
        loss_sum += loss.f_double_value(&[])?;
        let grads = Tensor::f_run_backward(&[&loss], &params, false, false)?;
        let mut squared = 0.0;
        for g in &grads {
            squared += g.f_square()?.f_sum(g.kind())?.f_double_value(&[])?;
        }
        let factor = (max_grad_norm / (squared.sqrt() + ghost::STABILITY)).min(1.0) * scale;
        tch::no_grad(|| -> Result<(), TchError> {
            for (sum, g) in sums.iter_mut().zip(&grads) {
                *sum = sum.f_add(&g.f_mul_scalar(factor)?)?;
            }
            Ok(())
        })?;
    }
    Ok(ClippedSum {
        grads: sums,
        loss_sum,
        batch_size,
    })
}
