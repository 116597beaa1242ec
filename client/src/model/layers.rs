//! The built layers and their recording forward pass.

use tch::{Kind, TchError, Tensor};

use super::spec::Activation;
use super::tape::{ParamId, Record, Tape};

/// A parameter handle: the VarStore tensor and its index in the model's parameter list.
#[derive(Debug)]
pub(crate) struct P {
    pub(crate) id: ParamId,
    pub(crate) tensor: Tensor,
}

/// A fully connected layer.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) weight: P,
    pub(crate) bias: Option<P>,
}

impl Linear {
    pub(crate) fn forward(&self, x: &Tensor, tape: &mut Tape) -> Result<Tensor, TchError> {
        let out = x.f_linear(&self.weight.tensor, self.bias.as_ref().map(|b| &b.tensor))?;
        if tape.is_recording() && self.weight.tensor.requires_grad() {
            tape.push(Record::Linear {
                input: x.detach(),
                output: out.shallow_clone(),
                weight: self.weight.id,
                bias: self.bias.as_ref().map(|b| b.id),
            });
        }
        Ok(out)
    }
}

/// GroupNorm or LayerNorm: normalisation without parameters followed by a per-channel affine
/// map, computed apart so that the normalised input can be recorded.
#[derive(Debug)]
pub(crate) struct Norm {
    pub(crate) weight: P,
    pub(crate) bias: P,
    /// `Some(groups)` for GroupNorm; `None` for LayerNorm over the last dimension.
    pub(crate) groups: Option<i64>,
}

const NORM_EPS: f64 = 1e-5;

impl Norm {
    fn forward(&self, x: &Tensor, tape: &mut Tape) -> Result<Tensor, TchError> {
        let (normalised, channel_dim) = match self.groups {
            Some(groups) => (
                x.f_group_norm::<Tensor>(groups, None, None, NORM_EPS, false)?,
                1,
            ),
            None => {
                let last = x.size().last().copied().unwrap_or(1);
                (
                    x.f_layer_norm::<Tensor>([last], None, None, NORM_EPS, false)?,
                    -1,
                )
            }
        };
        let dims = x.dim() as i64;
        let mut shape = vec![1i64; dims as usize];
        let channels = self.weight.tensor.size()[0];
        let at = if channel_dim < 0 {
            (dims - 1) as usize
        } else {
            channel_dim as usize
        };
        shape[at] = channels;
        let out = normalised
            .f_mul(&self.weight.tensor.f_view(shape.as_slice())?)?
            .f_add(&self.bias.tensor.f_view(shape.as_slice())?)?;
        if tape.is_recording() && self.weight.tensor.requires_grad() {
            tape.push(Record::Affine {
                normalised: normalised.detach(),
                output: out.shallow_clone(),
                weight: self.weight.id,
                bias: self.bias.id,
                channel_dim,
            });
        }
        Ok(out)
    }
}

/// Multi-head self-attention followed by an MLP, both pre-norm and residual.
#[derive(Debug)]
pub(crate) struct TransformerBlock {
    pub(crate) heads: i64,
    pub(crate) norm1: Norm,
    pub(crate) qkv: Linear,
    pub(crate) proj: Linear,
    pub(crate) norm2: Norm,
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
}

impl TransformerBlock {
    fn forward(&self, x: &Tensor, tape: &mut Tape) -> Result<Tensor, TchError> {
        let size = x.size();
        let (b, t, d) = (size[0], size[1], size[2]);
        let h = self.heads;
        let dh = d / h;
        let qkv = self.qkv.forward(&self.norm1.forward(x, tape)?, tape)?;
        // [B, T, 3, H, dh] → three [B, H, T, dh]
        let qkv = qkv.f_view([b, t, 3, h, dh])?.f_permute([2, 0, 3, 1, 4])?;
        let (q, k, v) = (qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?);
        let scores = q
            .f_matmul(&k.f_transpose(-2, -1)?)?
            .f_mul_scalar(1.0 / (dh as f64).sqrt())?;
        let attn = scores.f_softmax(-1, scores.kind())?.f_matmul(&v)?;
        let merged = attn.f_transpose(1, 2)?.f_contiguous()?.f_view([b, t, d])?;
        let x = x.f_add(&self.proj.forward(&merged, tape)?)?;
        let hidden = self
            .fc1
            .forward(&self.norm2.forward(&x, tape)?, tape)?
            .f_gelu("none")?;
        x.f_add(&self.fc2.forward(&hidden, tape)?)
    }
}

/// Batch normalisation (non-private training only).
#[derive(Debug)]
pub(crate) struct BatchNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) running_mean: Tensor,
    pub(crate) running_var: Tensor,
}

/// One built layer.
#[derive(Debug)]
pub(crate) enum Layer {
    Linear(Linear),
    Conv2d {
        weight: P,
        bias: Option<P>,
        stride: i64,
        padding: i64,
    },
    MaxPool2d {
        kernel: i64,
        stride: i64,
    },
    AvgPool2d {
        kernel: i64,
        stride: i64,
    },
    GlobalAvgPool,
    Norm(Norm),
    BatchNorm2d(BatchNorm),
    Flatten,
    Activation(Activation),
    Dropout(f64),
    Residual {
        body: Vec<Layer>,
        /// A 1×1 strided convolution when the body changes the shape.
        shortcut: Option<Box<Layer>>,
    },
    Embedding(P),
    PositionalEmbedding(P),
    Transformer(Box<TransformerBlock>),
    SequenceMean,
    SequenceLast,
}

impl Layer {
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        train: bool,
        tape: &mut Tape,
    ) -> Result<Tensor, TchError> {
        match self {
            Layer::Linear(linear) => linear.forward(x, tape),
            Layer::Conv2d {
                weight,
                bias,
                stride,
                padding,
            } => {
                let out = x.f_conv2d(
                    &weight.tensor,
                    bias.as_ref().map(|b| &b.tensor),
                    [*stride, *stride],
                    [*padding, *padding],
                    [1, 1],
                    1,
                )?;
                if tape.is_recording() && weight.tensor.requires_grad() {
                    tape.push(Record::Conv2d {
                        input: x.detach(),
                        output: out.shallow_clone(),
                        weight: weight.id,
                        bias: bias.as_ref().map(|b| b.id),
                        kernel: weight.tensor.size()[2],
                        stride: *stride,
                        padding: *padding,
                    });
                }
                channels_last_on_cpu(out)
            }
            Layer::MaxPool2d { kernel, stride } => x.f_max_pool2d(
                [*kernel, *kernel],
                [*stride, *stride],
                [0, 0],
                [1, 1],
                false,
            ),
            Layer::AvgPool2d { kernel, stride } => x.f_avg_pool2d(
                [*kernel, *kernel],
                [*stride, *stride],
                [0, 0],
                false,
                true,
                None,
            ),
            Layer::GlobalAvgPool => x.f_mean_dim([-2i64, -1].as_slice(), false, x.kind()),
            Layer::Norm(norm) => norm.forward(x, tape),
            Layer::BatchNorm2d(bn) => x.f_batch_norm(
                Some(&bn.weight),
                Some(&bn.bias),
                Some(&bn.running_mean),
                Some(&bn.running_var),
                train,
                0.1,
                NORM_EPS,
                false,
            ),
            Layer::Flatten => x.f_flatten(1, -1),
            Layer::Activation(activation) => apply_activation(*activation, x),
            Layer::Dropout(p) => x.f_dropout(*p, train),
            Layer::Residual { body, shortcut } => {
                let mut y = x.shallow_clone();
                for layer in body {
                    y = layer.forward(&y, train, tape)?;
                }
                let skip = match shortcut {
                    Some(conv) => conv.forward(x, train, tape)?,
                    None => x.shallow_clone(),
                };
                y.f_add(&skip)
            }
            Layer::Embedding(weight) => {
                let out = Tensor::f_embedding(&weight.tensor, x, -1, false, false)?;
                if tape.is_recording() && weight.tensor.requires_grad() {
                    tape.push(Record::Embedding {
                        indices: x.shallow_clone(),
                        output: out.shallow_clone(),
                        weight: weight.id,
                    });
                }
                Ok(out)
            }
            Layer::PositionalEmbedding(weight) => {
                // Positions are an embedding lookup of 0..T for every example, so the same
                // ghost-clipping rule as token embeddings applies.
                let size = x.size();
                let (b, t) = (size[0], size[1]);
                let positions = Tensor::f_arange(t, (Kind::Int64, x.device()))?
                    .f_unsqueeze(0)?
                    .f_expand([b, t], false)?;
                let table = Tensor::f_embedding(&weight.tensor, &positions, -1, false, false)?;
                if tape.is_recording() && weight.tensor.requires_grad() {
                    tape.push(Record::Embedding {
                        indices: positions,
                        output: table.shallow_clone(),
                        weight: weight.id,
                    });
                }
                x.f_add(&table)
            }
            Layer::Transformer(block) => block.forward(x, tape),
            Layer::SequenceMean => x.f_mean_dim([1i64].as_slice(), false, x.kind()),
            Layer::SequenceLast => x.f_select(1, -1),
        }
    }

    /// Whether this layer (or one inside it) is a batch norm, which DP must refuse.
    pub(crate) fn has_batch_norm(&self) -> bool {
        match self {
            Layer::BatchNorm2d(_) => true,
            Layer::Residual { body, .. } => body.iter().any(Layer::has_batch_norm),
            _ => false,
        }
    }
}

/// A CPU feature map `[B, C, H, W]` with C > 1 laid out channels-last (NHWC), same values.
///
/// On CPU, libtorch's max pooling over NCHW maps with a stride of 1 and its convolutions over
/// few channels are slow; over NHWC maps they vectorise across channels, and later layers keep
/// the layout (oneDNN's convolution returns NHWC for an NHWC input). With this, and ghost
/// clipping's patch copy in NHWC order, the MNIST CNN trains 1.9× faster without privacy and
/// 1.7× faster with DP-SGD (docs/benchmarks.md). The tape records the convolution's own
/// output, before this copy, so ghost clipping sees the tensor it differentiates.
fn channels_last_on_cpu(out: Tensor) -> Result<Tensor, TchError> {
    if out.device() != tch::Device::Cpu || out.dim() != 4 || is_channels_last(&out) {
        return Ok(out);
    }
    out.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])
}

/// Whether `t` (`[B, C, H, W]`) is stored NHWC, or is one channel (where both layouts agree).
pub(crate) fn is_channels_last(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    let (c, h, w) = (size[1], size[2], size[3]);
    c == 1 || (stride[1] == 1 && stride[3] == c && stride[2] == c * w && stride[0] == c * h * w)
}

/// Applies a point-wise non-linearity.
pub(crate) fn apply_activation(activation: Activation, x: &Tensor) -> Result<Tensor, TchError> {
    match activation {
        Activation::Relu => x.f_relu(),
        Activation::Tanh => x.f_tanh(),
        Activation::Gelu => x.f_gelu("none"),
        Activation::TemperedSigmoid {
            scale,
            temperature,
            offset,
        } => x
            .f_mul_scalar(temperature)?
            .f_sigmoid()?
            .f_mul_scalar(scale)?
            .f_sub_scalar(offset),
    }
}

#[cfg(test)]
mod tests {
    // Test code.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tch::Device;

    #[test]
    fn cpu_feature_maps_become_channels_last_with_the_same_values() {
        let x = Tensor::randn([2, 3, 5, 4], (Kind::Float, Device::Cpu));
        assert!(!is_channels_last(&x));
        let y = channels_last_on_cpu(x.shallow_clone()).unwrap();
        assert!(is_channels_last(&y));
        assert_eq!(y.size(), x.size());
        assert!(y.equal(&x));
        // Already NHWC, or one channel: returned as it is.
        let again = channels_last_on_cpu(y.shallow_clone()).unwrap();
        assert_eq!(again.data_ptr(), y.data_ptr());
        let grey = Tensor::randn([2, 1, 5, 4], (Kind::Float, Device::Cpu));
        assert_eq!(
            channels_last_on_cpu(grey.shallow_clone())
                .unwrap()
                .data_ptr(),
            grey.data_ptr()
        );
    }
}
