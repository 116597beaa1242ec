//! Models built from a serialisable [`ModelSpec`] over one tch `VarStore`.
//!
//! # Brief overview
//! [`build`] turns a spec into a [`Model`] whose parameters live in the caller's `VarStore`
//! (tch-rs style: `build(&vs.root(), &spec)`). [`Model::forward_t`] runs the network; given a
//! recording [`Tape`], every layer that ghost clipping understands (Linear, Conv2d, GroupNorm,
//! LayerNorm, Embedding — the Transformer block is made of these) records its input and output,
//! which is all `crate::dpsgd` needs to clip per-sample gradients without materialising them.
//! TorchScript models live in [`torchscript`].
//!
//! ```
//! use cohort_client::model::{self, ModelSpec, Tape};
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let net = model::build(&vs.root(), &ModelSpec::mlp(4, &[8], 3)).unwrap();
//! let logits = net.forward_t(&tch::Tensor::zeros([2, 4], tch::kind::FLOAT_CPU), false, &mut Tape::off()).unwrap();
//! assert_eq!(logits.size(), [2, 3]);
//! ```

mod layers;
pub mod preset;
mod spec;
mod tape;
mod task;
pub mod torchscript;

use std::fmt;

use tch::nn::{self, Init as TchInit};
use tch::{TchError, Tensor};

pub use preset::{PRESETS, preset};
pub use spec::{
    Activation, Init, InputKind, LayerSpec, ModelSpec, ModelTask, RegressionLoss, TaskKind,
};
pub use tape::{ParamId, Record, Tape};

pub(crate) use layers::is_channels_last;
use layers::{BatchNorm, Layer, Linear, Norm, P, TransformerBlock};

/// Why a spec could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum ModelError {
    /// The spec is inconsistent (a shape that does not fit, a bad size).
    InvalidSpec(String),
    /// libtorch failed.
    Torch(TchError),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::InvalidSpec(why) => write!(f, "invalid model spec: {why}"),
            ModelError::Torch(err) => write!(f, "libtorch error: {err}"),
        }
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModelError::Torch(err) => Some(err),
            ModelError::InvalidSpec(_) => None,
        }
    }
}

impl From<TchError> for ModelError {
    fn from(err: TchError) -> Self {
        ModelError::Torch(err)
    }
}

/// One trainable tensor of a model, by its VarStore name.
#[derive(Debug)]
pub struct Param {
    /// The VarStore name, e.g. `layers.0.weight`.
    pub name: String,
    /// The tensor itself (shares storage with the VarStore).
    pub tensor: Tensor,
}

/// A network built from a [`ModelSpec`].
#[derive(Debug)]
pub struct Model {
    spec: ModelSpec,
    layers: Vec<Layer>,
    params: Vec<Param>,
}

impl Model {
    /// The spec this model was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Every parameter in creation order (the order of the spec's layers). Indices are the
    /// [`ParamId`]s that tape records refer to.
    pub fn parameters(&self) -> &[Param] {
        &self.params
    }

    /// Runs the network on a batch. `train` enables dropout and batch statistics; a recording
    /// `tape` collects what ghost clipping needs.
    pub fn forward_t(&self, xs: &Tensor, train: bool, tape: &mut Tape) -> Result<Tensor, TchError> {
        let mut x = xs.shallow_clone();
        for layer in &self.layers {
            x = layer.forward(&x, train, tape)?;
        }
        Ok(x)
    }

    /// Whether a layer normalises over the batch, which makes per-sample clipping meaningless.
    pub fn has_batch_norm(&self) -> bool {
        self.layers.iter().any(Layer::has_batch_norm)
    }

    /// Freezes every parameter whose name starts with `prefix` (transfer learning): frozen
    /// parameters get no gradient, are not updated, and do not count towards clipping norms.
    /// Returns how many were frozen.
    pub fn freeze(&self, prefix: &str) -> usize {
        let mut frozen = 0;
        for param in self.params.iter().filter(|p| p.name.starts_with(prefix)) {
            let _ = param.tensor.set_requires_grad(false);
            frozen += 1;
        }
        frozen
    }
}

/// Builds `spec` with its parameters created under `path`.
pub fn build(path: &nn::Path<'_>, spec: &ModelSpec) -> Result<Model, ModelError> {
    if spec.input_shape.is_empty() || spec.input_shape.iter().any(|&d| d <= 0) {
        return Err(ModelError::InvalidSpec(format!(
            "input_shape must be non-empty and positive, got {:?}",
            spec.input_shape
        )));
    }
    let mut builder = Builder {
        init: spec.init,
        params: Vec::new(),
    };
    let mut shape = spec.input_shape.clone();
    let mut tokens = spec.input == InputKind::Tokens;
    let root = path / "layers";
    let mut layers = Vec::with_capacity(spec.layers.len());
    for (i, layer) in spec.layers.iter().enumerate() {
        layers.push(builder.layer(&(&root / i), layer, &mut shape, &mut tokens)?);
    }
    if tokens {
        return Err(ModelError::InvalidSpec(
            "token inputs must pass through an Embedding layer".into(),
        ));
    }
    if shape.len() != 1 {
        return Err(ModelError::InvalidSpec(format!(
            "the last layer must output one vector of logits per example, not shape {shape:?}"
        )));
    }
    spec.task.check_outputs(shape[0]).map_err(invalid)?;
    Ok(Model {
        spec: spec.clone(),
        layers,
        params: builder.params,
    })
}

struct Builder {
    init: Init,
    params: Vec<Param>,
}

fn invalid(why: String) -> ModelError {
    ModelError::InvalidSpec(why)
}

impl Builder {
    fn param(
        &mut self,
        path: &nn::Path<'_>,
        name: &str,
        dims: &[i64],
        init: TchInit,
    ) -> Result<P, ModelError> {
        let tensor = path.f_var(name, dims, init)?;
        let id = self.params.len();
        self.params.push(Param {
            name: path.path(name),
            tensor: tensor.shallow_clone(),
        });
        Ok(P { id, tensor })
    }

    fn weight_init(&self, fan_in: i64, fan_out: i64) -> TchInit {
        match self.init {
            Init::Xavier => {
                let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
                TchInit::Uniform {
                    lo: -bound,
                    up: bound,
                }
            }
            Init::He => TchInit::Randn {
                mean: 0.0,
                stdev: (2.0 / fan_in as f64).sqrt(),
            },
        }
    }

    fn linear(
        &mut self,
        path: &nn::Path<'_>,
        input: i64,
        out: i64,
        bias: bool,
    ) -> Result<Linear, ModelError> {
        if out <= 0 {
            return Err(invalid(format!("Linear needs out > 0, got {out}")));
        }
        let weight = self.param(path, "weight", &[out, input], self.weight_init(input, out))?;
        let bias = if bias {
            Some(self.param(path, "bias", &[out], TchInit::Const(0.0))?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    fn norm(
        &mut self,
        path: &nn::Path<'_>,
        channels: i64,
        groups: Option<i64>,
    ) -> Result<Norm, ModelError> {
        Ok(Norm {
            weight: self.param(path, "weight", &[channels], TchInit::Const(1.0))?,
            bias: self.param(path, "bias", &[channels], TchInit::Const(0.0))?,
            groups,
        })
    }

    fn image(shape: &[i64], what: &str) -> Result<(i64, i64, i64), ModelError> {
        match shape {
            [c, h, w] => Ok((*c, *h, *w)),
            other => Err(invalid(format!(
                "{what} needs [C, H, W] inputs, got {other:?}"
            ))),
        }
    }

    fn sequence(shape: &[i64], what: &str) -> Result<(i64, i64), ModelError> {
        match shape {
            [t, d] => Ok((*t, *d)),
            other => Err(invalid(format!(
                "{what} needs [T, d] inputs, got {other:?}"
            ))),
        }
    }

    fn pooled(
        size: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
        what: &str,
    ) -> Result<i64, ModelError> {
        if kernel <= 0 || stride <= 0 || padding < 0 {
            return Err(invalid(format!(
                "{what} needs kernel, stride > 0 and padding >= 0"
            )));
        }
        let out = (size + 2 * padding - kernel) / stride + 1;
        if out <= 0 || size + 2 * padding < kernel {
            return Err(invalid(format!(
                "{what}: kernel {kernel} does not fit an input of side {size}"
            )));
        }
        Ok(out)
    }

    fn layer(
        &mut self,
        path: &nn::Path<'_>,
        spec: &LayerSpec,
        shape: &mut Vec<i64>,
        tokens: &mut bool,
    ) -> Result<Layer, ModelError> {
        if *tokens && !matches!(spec, LayerSpec::Embedding { .. }) {
            return Err(invalid(
                "token inputs must go to an Embedding layer first".into(),
            ));
        }
        let layer = match *spec {
            LayerSpec::Linear { out, bias } => {
                let input = *shape.last().unwrap_or(&0);
                let layer = Layer::Linear(self.linear(path, input, out, bias)?);
                if let Some(last) = shape.last_mut() {
                    *last = out;
                }
                layer
            }
            LayerSpec::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                let (c, h, w) = Self::image(shape, "Conv2d")?;
                let oh = Self::pooled(h, kernel, stride, padding, "Conv2d")?;
                let ow = Self::pooled(w, kernel, stride, padding, "Conv2d")?;
                if out_channels <= 0 {
                    return Err(invalid("Conv2d needs out_channels > 0".into()));
                }
                let fan_in = c * kernel * kernel;
                let init = self.weight_init(fan_in, out_channels * kernel * kernel);
                let weight =
                    self.param(path, "weight", &[out_channels, c, kernel, kernel], init)?;
                let bias = Some(self.param(path, "bias", &[out_channels], TchInit::Const(0.0))?);
                *shape = vec![out_channels, oh, ow];
                Layer::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                }
            }
            LayerSpec::MaxPool2d { kernel, stride } | LayerSpec::AvgPool2d { kernel, stride } => {
                let stride = stride.unwrap_or(kernel);
                let (c, h, w) = Self::image(shape, "pooling")?;
                *shape = vec![
                    c,
                    Self::pooled(h, kernel, stride, 0, "pooling")?,
                    Self::pooled(w, kernel, stride, 0, "pooling")?,
                ];
                if matches!(spec, LayerSpec::MaxPool2d { .. }) {
                    Layer::MaxPool2d { kernel, stride }
                } else {
                    Layer::AvgPool2d { kernel, stride }
                }
            }
            LayerSpec::GlobalAvgPool => {
                let (c, _, _) = Self::image(shape, "GlobalAvgPool")?;
                *shape = vec![c];
                Layer::GlobalAvgPool
            }
            LayerSpec::GroupNorm { groups } => {
                let channels = *shape.first().unwrap_or(&0);
                if shape.len() < 2 || groups <= 0 || channels % groups != 0 {
                    return Err(invalid(format!(
                        "GroupNorm needs [C, ...] inputs with C divisible by groups; got shape \
                         {shape:?} and {groups} groups"
                    )));
                }
                Layer::Norm(self.norm(path, channels, Some(groups))?)
            }
            LayerSpec::LayerNorm => {
                let channels = *shape.last().unwrap_or(&0);
                Layer::Norm(self.norm(path, channels, None)?)
            }
            LayerSpec::BatchNorm2d => {
                let (c, _, _) = Self::image(shape, "BatchNorm2d")?;
                Layer::BatchNorm2d(BatchNorm {
                    weight: path.f_ones("weight", &[c])?,
                    bias: path.f_zeros("bias", &[c])?,
                    running_mean: path.f_zeros_no_train("running_mean", &[c])?,
                    running_var: path.f_ones_no_train("running_var", &[c])?,
                })
            }
            LayerSpec::Flatten => {
                *shape = vec![shape.iter().product()];
                Layer::Flatten
            }
            LayerSpec::Activation(activation) => Layer::Activation(activation),
            LayerSpec::Dropout { p } => {
                if !(0.0..1.0).contains(&p) {
                    return Err(invalid(format!("Dropout needs 0 <= p < 1, got {p}")));
                }
                Layer::Dropout(p)
            }
            LayerSpec::Residual { ref body } => {
                let input = shape.clone();
                let mut layers = Vec::with_capacity(body.len());
                let body_path = path / "body";
                for (i, layer) in body.iter().enumerate() {
                    layers.push(self.layer(&(&body_path / i), layer, shape, tokens)?);
                }
                let shortcut = if *shape == input {
                    None
                } else {
                    let (c, h, _) = Self::image(&input, "a shape-changing Residual")?;
                    let (oc, oh, _) = Self::image(shape, "a shape-changing Residual")?;
                    let stride = (h / oh.max(1)).max(1);
                    if Self::pooled(h, 1, stride, 0, "Residual shortcut")? != oh {
                        return Err(invalid(format!(
                            "Residual body maps {input:?} to {shape:?}, which no strided 1×1 \
                             convolution matches"
                        )));
                    }
                    let sc = &(path / "shortcut");
                    let weight =
                        self.param(sc, "weight", &[oc, c, 1, 1], self.weight_init(c, oc))?;
                    Some(Box::new(Layer::Conv2d {
                        weight,
                        bias: None,
                        stride,
                        padding: 0,
                    }))
                };
                Layer::Residual {
                    body: layers,
                    shortcut,
                }
            }
            LayerSpec::Embedding { vocab, dim } => {
                if !*tokens || shape.len() != 1 || vocab <= 0 || dim <= 0 {
                    return Err(invalid(
                        "Embedding must come first, on token inputs [T], with vocab, dim > 0"
                            .into(),
                    ));
                }
                *tokens = false;
                let weight = self.param(
                    path,
                    "weight",
                    &[vocab, dim],
                    TchInit::Randn {
                        mean: 0.0,
                        stdev: 1.0 / (dim as f64).sqrt(),
                    },
                )?;
                shape.push(dim);
                Layer::Embedding(weight)
            }
            LayerSpec::PositionalEmbedding => {
                let (t, d) = Self::sequence(shape, "PositionalEmbedding")?;
                let init = TchInit::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                };
                Layer::PositionalEmbedding(self.param(path, "weight", &[t, d], init)?)
            }
            LayerSpec::TransformerBlock { heads, hidden } => {
                let (_, d) = Self::sequence(shape, "TransformerBlock")?;
                if heads <= 0 || d % heads != 0 || hidden <= 0 {
                    return Err(invalid(format!(
                        "TransformerBlock needs heads dividing the width {d} and hidden > 0"
                    )));
                }
                Layer::Transformer(Box::new(TransformerBlock {
                    heads,
                    norm1: self.norm(&(path / "norm1"), d, None)?,
                    qkv: self.linear(&(path / "qkv"), d, 3 * d, true)?,
                    proj: self.linear(&(path / "proj"), d, d, true)?,
                    norm2: self.norm(&(path / "norm2"), d, None)?,
                    fc1: self.linear(&(path / "fc1"), d, hidden, true)?,
                    fc2: self.linear(&(path / "fc2"), hidden, d, true)?,
                }))
            }
            LayerSpec::SequenceMean | LayerSpec::SequenceLast => {
                let (_, d) = Self::sequence(shape, "sequence pooling")?;
                *shape = vec![d];
                if matches!(spec, LayerSpec::SequenceMean) {
                    Layer::SequenceMean
                } else {
                    Layer::SequenceLast
                }
            }
        };
        Ok(layer)
    }
}

#[cfg(test)]
mod tests;
