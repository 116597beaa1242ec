//! Book-keeping ("ghost") clipping: per-sample gradient norms and the clipped gradient sum from
//! one forward and one backward, without per-sample gradient tensors for big layers.
//!
//! For a layer `s = f(a; θ)` the per-sample gradient of θ is a function of the layer input `a_i`
//! and the output gradient `g_i = ∂L_i/∂s_i` alone. With `L = Σ_i L_i`, one
//! `run_backward(L, [s_1 … s_k])` yields every `g` at once. Then:
//!
//! - Linear, `[B, in]`: ‖∇W_i‖² = ‖a_i‖²‖g_i‖²; with a sequence `[B, T, in]`,
//!   ‖∇W_i‖² = ⟨A_i A_iᵀ, G_i G_iᵀ⟩ (Gram matrices, T×T), or the explicit `G_iᵀA_i` when that
//!   is smaller than T².
//! - Conv2d: the same with `A_i` the unfolded input patches (`[L, C·k·k]`), choosing explicit
//!   `[out, C·k·k]` per-sample gradients or L×L Gram matrices, whichever costs less.
//! - GroupNorm/LayerNorm: γ and β are per-channel vectors, so their per-sample gradients are
//!   small and computed outright.
//! - Embedding: ‖∇E_i‖² = Σ_{t,s} [x_t = x_s] ⟨g_t, g_s⟩.
//!
//! The clipped sum `Σ_i c_i ∇θ_i` is then one product per layer with the `c_i`-weighted `g`.

use std::collections::HashMap;

use tch::{TchError, Tensor};

use crate::model::{ParamId, Record};

/// Stabiliser in the clip factor `min(1, C / (‖∇_i‖ + STABILITY))`, as in Opacus.
pub const STABILITY: f64 = 1e-6;

/// What the norm pass keeps for the clipped sum: an explicit per-sample gradient when that was
/// the cheaper way to get the norm.
enum Kept {
    None,
    PerSample(Tensor),
    /// A convolution's per-sample gradients `[B, out, C·k·k]`, their last axis in `axis` order.
    ConvPerSample(Tensor, PatchAxis),
    /// A convolution's unfolded input `[B, L, C·k·k]`, its last axis in `axis` order, reused by
    /// the clipped sum.
    Patches(Tensor, PatchAxis),
}

/// The order of a patch's `C·k·k` axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatchAxis {
    /// `[C, k, k]`, the weight's order.
    ChannelMajor,
    /// `[k, k, C]`, the order of a channels-last (NHWC) input's memory.
    ChannelMinor,
}

/// Per-sample squared gradient norms over all recorded layers (`[B]`) and the per-record data
/// the clipped sum reuses.
pub(crate) struct Norms {
    pub(crate) squared: Tensor,
    kept: Vec<Kept>,
}

fn flatten_sequence(t: &Tensor) -> Result<Tensor, TchError> {
    // [B, ..., F] → [B, T, F]
    let size = t.size();
    let b = size[0];
    let f = size[size.len() - 1];
    t.f_reshape([b, -1, f])
}

fn sum_squares_per_sample(t: &Tensor) -> Result<Tensor, TchError> {
    let b = t.size()[0];
    t.f_reshape([b, -1])?
        .f_square()?
        .f_sum_dim_intlist(1, false, t.kind())
}

/// Computes per-sample squared norms. `grads[k]` is ∂L/∂(records[k].output).
pub(crate) fn squared_norms(records: &[Record], grads: &[Tensor]) -> Result<Norms, TchError> {
    let mut squared: Option<Tensor> = None;
    let mut kept = Vec::with_capacity(records.len());
    let mut add = |t: Tensor| -> Result<(), TchError> {
        squared = Some(match squared.take() {
            Some(s) => s.f_add(&t)?,
            None => t,
        });
        Ok(())
    };
    for (record, g) in records.iter().zip(grads) {
        match record {
            Record::Linear { input, bias, .. } => {
                if input.dim() == 2 {
                    let a2 = input
                        .f_square()?
                        .f_sum_dim_intlist(1, false, input.kind())?;
                    let g2 = g.f_square()?.f_sum_dim_intlist(1, false, g.kind())?;
                    add(a2.f_mul(&g2)?)?;
                    if bias.is_some() {
                        add(g2)?;
                    }
                    kept.push(Kept::None);
                } else {
                    let a = flatten_sequence(input)?;
                    let gs = flatten_sequence(g)?;
                    let (t, fin, fout) = (a.size()[1], a.size()[2], gs.size()[2]);
                    if t * t <= fin * fout {
                        let ga = a.f_bmm(&a.f_transpose(1, 2)?)?;
                        let gg = gs.f_bmm(&gs.f_transpose(1, 2)?)?;
                        add(ga.f_mul(&gg)?.f_sum_dim_intlist(
                            [1i64, 2].as_slice(),
                            false,
                            a.kind(),
                        )?)?;
                        kept.push(Kept::None);
                    } else {
                        let per_sample = gs.f_transpose(1, 2)?.f_bmm(&a)?;
                        add(sum_squares_per_sample(&per_sample)?)?;
                        kept.push(Kept::PerSample(per_sample));
                    }
                    if bias.is_some() {
                        let gb = gs.f_sum_dim_intlist(1, false, gs.kind())?;
                        add(sum_squares_per_sample(&gb)?)?;
                    }
                }
            }
            Record::Conv2d {
                input,
                bias,
                kernel,
                stride,
                padding,
                ..
            } => {
                let b = g.size()[0];
                let out = g.size()[1];
                let channels = input.size()[1];
                let gs = g.f_reshape([b, out, -1])?; // [B, out, L]
                let l = gs.size()[2];
                let ckk = channels * kernel * kernel;
                // Flops: explicit B·out·L·ckk; Gram B·L²·(ckk + out).
                let explicit = out * ckk <= l * (ckk + out);
                if explicit && channels <= GROUPED_CONV_MAX_CHANNELS {
                    let per_sample = per_sample_conv_grads(input, g, *kernel, *stride, *padding)?;
                    add(sum_squares_per_sample(&per_sample)?)?;
                    kept.push(Kept::ConvPerSample(per_sample, PatchAxis::ChannelMajor));
                } else if explicit {
                    // [B, L, C·k·k]
                    let (patches, axis) =
                        patches_in_memory_order(input, *kernel, *stride, *padding)?;
                    let per_sample = gs.f_bmm(&patches)?; // [B, out, ckk]
                    add(sum_squares_per_sample(&per_sample)?)?;
                    kept.push(Kept::ConvPerSample(per_sample, axis));
                } else {
                    // [B, L, C·k·k]; the Gram matrix does not depend on the axis order.
                    let (patches, axis) =
                        patches_in_memory_order(input, *kernel, *stride, *padding)?;
                    let ga = patches.f_bmm(&patches.f_transpose(1, 2)?)?; // [B, L, L]
                    let gg = gs.f_transpose(1, 2)?.f_bmm(&gs)?;
                    add(ga.f_mul(&gg)?.f_sum_dim_intlist(
                        [1i64, 2].as_slice(),
                        false,
                        g.kind(),
                    )?)?;
                    kept.push(Kept::Patches(patches, axis));
                }
                if bias.is_some() {
                    let gb = gs.f_sum_dim_intlist(2, false, gs.kind())?;
                    add(sum_squares_per_sample(&gb)?)?;
                }
            }
            Record::Affine {
                normalised,
                channel_dim,
                ..
            } => {
                let gamma = affine_per_sample(&g.f_mul(normalised)?, *channel_dim)?;
                let beta = affine_per_sample(g, *channel_dim)?;
                add(sum_squares_per_sample(&gamma)?)?;
                add(sum_squares_per_sample(&beta)?)?;
                kept.push(Kept::PerSample(Tensor::f_stack(&[gamma, beta], 0)?));
            }
            Record::Embedding { indices, .. } => {
                if indices.dim() == 1 {
                    add(sum_squares_per_sample(g)?)?;
                } else {
                    let b = indices.size()[0];
                    let idx = indices.f_reshape([b, -1])?;
                    let gs = flatten_sequence(g)?;
                    let same = idx
                        .f_unsqueeze(2)?
                        .f_eq_tensor(&idx.f_unsqueeze(1)?)?
                        .f_to_kind(g.kind())?;
                    let gg = gs.f_bmm(&gs.f_transpose(1, 2)?)?;
                    add(same.f_mul(&gg)?.f_sum_dim_intlist(
                        [1i64, 2].as_slice(),
                        false,
                        g.kind(),
                    )?)?;
                }
                kept.push(Kept::None);
            }
        }
    }
    let squared = match squared {
        Some(s) => s,
        None => {
            return Err(TchError::Kind(
                "ghost clipping saw no parametrised layer".into(),
            ));
        }
    };
    Ok(Norms { squared, kept })
}

/// The input patches a convolution multiplies with its kernel, `[B, L, C·k·k]` with
/// `L = H'·W'` output positions and the `C·k·k` axis in the weight's `[C, k, k]` order: what
/// `im2col` gives (transposed), built from strided views and one copy, because libtorch's CPU
/// `im2col` is tens of times slower than this on the shapes DP-SGD sees.
pub(super) fn patches(
    input: &Tensor,
    kernel: i64,
    stride: i64,
    padding: i64,
) -> Result<Tensor, TchError> {
    let size = input.size();
    let (b, c) = (size[0], size[1]);
    let padded = if padding > 0 {
        input.f_constant_pad_nd([padding, padding, padding, padding])?
    } else {
        input.shallow_clone()
    };
    // [B, C, H', W', k, k] → [B, H', W', C, k, k] → [B, L, C·k·k]
    padded
        .f_unfold(2, kernel, stride)?
        .f_unfold(3, kernel, stride)?
        .f_permute([0, 2, 3, 1, 4, 5])?
        .f_reshape([b, -1, c * kernel * kernel])
}

/// [`patches`] with the `C·k·k` axis in whichever order copies fastest: `[k, k, C]` for a
/// channels-last input (each copied run is then a pixel's C contiguous channels, not `k`
/// pixels of one channel; 0.36 against 1.15 ms for the MNIST CNN's second convolution at batch
/// 256), the weight's `[C, k, k]` otherwise.
pub(super) fn patches_in_memory_order(
    input: &Tensor,
    kernel: i64,
    stride: i64,
    padding: i64,
) -> Result<(Tensor, PatchAxis), TchError> {
    let size = input.size();
    let (b, c) = (size[0], size[1]);
    if c == 1 || !crate::model::is_channels_last(input) {
        return Ok((
            patches(input, kernel, stride, padding)?,
            PatchAxis::ChannelMajor,
        ));
    }
    // [B, H, W, C], contiguous in memory.
    let nhwc = input.f_permute([0, 2, 3, 1])?;
    let padded = if padding > 0 {
        nhwc.f_constant_pad_nd([0, 0, padding, padding, padding, padding])?
    } else {
        nhwc
    };
    // [B, H', W', C, k, k] → [B, H', W', k, k, C] → [B, L, k·k·C]
    let values = padded
        .f_unfold(1, kernel, stride)?
        .f_unfold(2, kernel, stride)?
        .f_permute([0, 1, 2, 4, 5, 3])?
        .f_reshape([b, -1, c * kernel * kernel])?;
    Ok((values, PatchAxis::ChannelMinor))
}

/// A convolution's `[out, C·k·k]` weight gradient with its last axis in `axis` order, reordered
/// to the weight's `[out, C, k, k]`.
fn to_weight_order(
    w: Tensor,
    axis: PatchAxis,
    channels: i64,
    kernel: i64,
) -> Result<Tensor, TchError> {
    let out = w.size()[0];
    match axis {
        PatchAxis::ChannelMajor => w.f_reshape([out, channels, kernel, kernel]),
        PatchAxis::ChannelMinor => w
            .f_reshape([out, kernel, kernel, channels])?
            .f_permute([0, 3, 1, 2])?
            .f_contiguous(),
    }
}

/// Up to this many input channels a convolution's explicit per-sample gradients come from one
/// grouped convolution ([`per_sample_conv_grads`]) instead of patches and a batched product:
/// for a first layer over grey or RGB images the patch copy (`k²` copies of the image) is most
/// of the cost, while with more channels libtorch's grouped convolution is the slower of the
/// two (docs/benchmarks.md, `profile_conv_pieces`).
const GROUPED_CONV_MAX_CHANNELS: i64 = 3;

/// Per-sample weight gradients of a convolution, `[B, out, C·k·k]` in the weight's order,
/// as one convolution: sample `b`'s gradient correlates its (padded) input with its output
/// gradient taken as a kernel dilated by the stride. Batch and channels swap roles (the input
/// becomes `[C, B, H, W]`, the `B·out` kernels form B groups), so no patch tensor is built.
pub(super) fn per_sample_conv_grads(
    input: &Tensor,
    g: &Tensor,
    kernel: i64,
    stride: i64,
    padding: i64,
) -> Result<Tensor, TchError> {
    let size = g.size();
    let (b, out, oh, ow) = (size[0], size[1], size[2], size[3]);
    let c = input.size()[1];
    let kernels = g.f_reshape([b * out, 1, oh, ow])?;
    input
        .f_transpose(0, 1)?
        .f_conv2d(
            &kernels,
            None::<Tensor>,
            [1, 1],
            [padding, padding],
            [stride, stride],
            b,
        )? // [C, B·out, k', k'] with k' ≥ k
        .f_narrow(2, 0, kernel)?
        .f_narrow(3, 0, kernel)?
        .f_reshape([c, b, out, kernel * kernel])?
        .f_permute([1, 2, 0, 3])?
        .f_reshape([b, out, c * kernel * kernel])
}

/// `[B, ..., C, ...]` per-element products → per-sample per-channel sums `[B, C]`.
fn affine_per_sample(t: &Tensor, channel_dim: i64) -> Result<Tensor, TchError> {
    let b = t.size()[0];
    if channel_dim == 1 {
        let c = t.size()[1];
        t.f_reshape([b, c, -1])?
            .f_sum_dim_intlist(2, false, t.kind())
    } else {
        flatten_sequence(t)?.f_sum_dim_intlist(1, false, t.kind())
    }
}

/// Clip factors `min(1, C / (‖∇_i‖ + STABILITY))` from squared norms.
pub(crate) fn clip_factors(squared: &Tensor, max_norm: f64) -> Result<Tensor, TchError> {
    squared
        .f_sqrt()?
        .f_add_scalar(STABILITY)?
        .f_reciprocal()?
        .f_mul_scalar(max_norm)?
        .f_clamp_max(1.0)
}

/// `Σ_i c_i ∇θ_i` for every recorded parameter, keyed by parameter id.
pub(crate) fn clipped_sum(
    records: &[Record],
    grads: &[Tensor],
    norms: Norms,
    factors: &Tensor,
    params: &[Tensor],
) -> Result<HashMap<ParamId, Tensor>, TchError> {
    let mut out: HashMap<ParamId, Tensor> = HashMap::new();
    let mut put = |id: ParamId, t: Tensor| -> Result<(), TchError> {
        if let Some(existing) = out.remove(&id) {
            out.insert(id, existing.f_add(&t)?);
        } else {
            out.insert(id, t);
        }
        Ok(())
    };
    let b = factors.size()[0];
    for ((record, g), kept) in records.iter().zip(grads).zip(norms.kept) {
        // Broadcast the factors over every non-batch dimension of g.
        let mut shape = vec![1i64; g.dim()];
        shape[0] = b;
        let weighted = g.f_mul(&factors.f_view(shape.as_slice())?)?;
        match record {
            Record::Linear {
                input,
                weight,
                bias,
                ..
            } => {
                let fout = *g.size().last().unwrap_or(&1);
                let fin = *input.size().last().unwrap_or(&1);
                let w = match kept {
                    Kept::PerSample(per_sample) | Kept::ConvPerSample(per_sample, _) => {
                        weighted_sum(&per_sample, factors)?
                    }
                    Kept::None | Kept::Patches(..) => weighted
                        .f_reshape([-1, fout])?
                        .f_tr()?
                        .f_matmul(&input.f_reshape([-1, fin])?)?,
                };
                put(*weight, w)?;
                if let Some(bias) = bias {
                    put(
                        *bias,
                        weighted
                            .f_reshape([-1, fout])?
                            .f_sum_dim_intlist(0, false, g.kind())?,
                    )?;
                }
            }
            Record::Conv2d {
                input,
                weight,
                bias,
                kernel,
                ..
            } => {
                let out_ch = g.size()[1];
                let channels = input.size()[1];
                let w = match kept {
                    Kept::ConvPerSample(per_sample, axis) => to_weight_order(
                        weighted_sum(&per_sample, factors)?,
                        axis,
                        channels,
                        *kernel,
                    )?,
                    Kept::Patches(patches, axis) => {
                        let gs = weighted.f_reshape([b, out_ch, -1])?;
                        let ckk = patches.size()[2];
                        // Σ_b gs_b · P_b = [out, B·L] · [B·L, ckk]
                        let w = gs
                            .f_permute([1, 0, 2])?
                            .f_reshape([out_ch, -1])?
                            .f_matmul(&patches.f_reshape([-1, ckk])?)?;
                        to_weight_order(w, axis, channels, *kernel)?
                    }
                    Kept::None | Kept::PerSample(_) => {
                        return Err(TchError::Kind(
                            "ghost clipping lost a convolution's patches".into(),
                        ));
                    }
                };
                put(*weight, w)?;
                if let Some(bias) = bias {
                    put(
                        *bias,
                        weighted.f_sum_dim_intlist([0i64, 2, 3].as_slice(), false, g.kind())?,
                    )?;
                }
            }
            Record::Affine { weight, bias, .. } => {
                if let Kept::PerSample(both) = kept {
                    put(*weight, weighted_sum(&both.f_get(0)?, factors)?)?;
                    put(*bias, weighted_sum(&both.f_get(1)?, factors)?)?;
                }
            }
            Record::Embedding {
                indices, weight, ..
            } => {
                let d = *g.size().last().unwrap_or(&1);
                let vocab_rows = weighted.f_reshape([-1, d])?;
                let vocab = params.get(*weight).map_or(0, |p| p.size()[0]);
                let zeros = Tensor::f_zeros([vocab, d], (g.kind(), g.device()))?;
                let table = zeros.f_index_add(0, &indices.f_reshape([-1])?, &vocab_rows)?;
                put(*weight, table)?;
            }
        }
    }
    Ok(out)
}

fn weighted_sum(per_sample: &Tensor, factors: &Tensor) -> Result<Tensor, TchError> {
    let size = per_sample.size();
    let b = size[0];
    factors
        .f_unsqueeze(0)?
        .f_matmul(&per_sample.f_reshape([b, -1])?)?
        .f_reshape(&size[1..])
}

#[cfg(test)]
mod tests {
    // Test code.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn channels_last_patches_are_the_same_values_in_kkc_order() {
        let (b, c, k) = (3, 5, 3);
        for (stride, padding) in [(1, 0), (2, 1), (1, 2)] {
            let x = Tensor::randn([b, c, 7, 6], (Kind::Float, Device::Cpu));
            let reference = patches(&x, k, stride, padding).unwrap(); // [B, L, C·k·k]
            let nhwc = x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
            assert!(crate::model::is_channels_last(&nhwc));
            let (fast, axis) = patches_in_memory_order(&nhwc, k, stride, padding).unwrap();
            assert_eq!(axis, PatchAxis::ChannelMinor);
            let l = reference.size()[1];
            let reordered = fast
                .reshape([b, l, k, k, c])
                .permute([0, 1, 4, 2, 3])
                .reshape([b, l, c * k * k]);
            assert!(
                reordered.equal(&reference),
                "stride {stride}, padding {padding}"
            );
            // An NCHW input keeps the weight's order.
            let (same, axis) = patches_in_memory_order(&x, k, stride, padding).unwrap();
            assert_eq!(axis, PatchAxis::ChannelMajor);
            assert!(same.equal(&reference));
        }
    }
}
