//! The serialisable description of a model, stored by the server with its federation.
//!
//! A spec is data, not code: every client builds the same network from it, parameter for
//! parameter, so a flat weight vector means the same thing on every site.

use serde::{Deserialize, Serialize};

/// A whole network: what it eats, its layers in order, and how weights start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Shape of one example without the batch dimension, e.g. `[1, 28, 28]` or `[784]`; for
    /// token inputs, `[sequence_length]`.
    pub input_shape: Vec<i64>,
    /// Whether inputs are real-valued (`Float`) or token ids (`Tokens`).
    #[serde(default)]
    pub input: InputKind,
    /// Layers applied in order; the last must produce one vector per example whose width
    /// fits the task ([`ModelTask::check_outputs`]).
    pub layers: Vec<LayerSpec>,
    /// How weights are initialised.
    #[serde(default)]
    pub init: Init,
    /// What the outputs mean and which loss trains them. Specs stored before tasks existed
    /// have no `task` field and are single-label classifiers, which is the default.
    #[serde(default)]
    pub task: ModelTask,
}

/// What a network's output vector means, which targets it is trained against and with which
/// per-example loss: the one definition that DP-SGD, non-private training, evaluation and the
/// simulator all read.
///
/// In JSON it is an object tagged by `kind`, e.g. `{"kind": "classification"}`,
/// `{"kind": "binary", "pos_weight": 4.0}`, `{"kind": "multi_label", "pos_weights": [1, 9]}`,
/// `{"kind": "regression", "loss": {"function": "huber", "delta": 1.0}}`.
///
/// | kind | outputs per example | targets (`Dataset::labels`) | per-example loss |
/// |---|---|---|---|
/// | `classification` | `[K]` logits, K ≥ 2 | `[N]` Int64 class indices | softmax cross-entropy, times `class_weights[y]` |
/// | `binary` | `[1]` logit | `[N, 1]` Float 0/1 | BCE with logits, positives times `pos_weight` |
/// | `multi_label` | `[L]` logits | `[N, L]` Float 0/1 | mean over labels of BCE with logits, positives of label l times `pos_weights[l]` |
/// | `regression` | `[T]` values | `[N, T]` Float | mean over targets of the squared error or the Huber loss |
///
/// Every loss is a sum of per-example terms, so DP-SGD clips each example's gradient exactly as
/// for classification; the class and positive weights scale an example's loss and hence its
/// gradient *before* clipping, so they change what the model favours but not the privacy
/// guarantee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum ModelTask {
    /// Exactly one of K classes per example.
    Classification {
        /// Loss weight of each class, for imbalance (one per output, all > 0); none weighs
        /// every class 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class_weights: Option<Vec<f64>>,
    },
    /// A yes/no outcome, one logit; the probability is its sigmoid.
    Binary {
        /// Loss weight of the positive examples (> 0), e.g. negatives / positives for a rare
        /// outcome; none is 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pos_weight: Option<f64>,
    },
    /// L independent yes/no labels per example (findings on one image).
    MultiLabel {
        /// Loss weight of each label's positives (one per output, all > 0); none is 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pos_weights: Option<Vec<f64>>,
    },
    /// T real-valued targets per example (a risk score, a forecast horizon).
    Regression {
        /// The loss (default: mean squared error).
        #[serde(default)]
        loss: RegressionLoss,
    },
}

impl Default for ModelTask {
    fn default() -> Self {
        ModelTask::Classification {
            class_weights: None,
        }
    }
}

/// The loss of a [`ModelTask::Regression`], applied to each target and averaged over them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "function", deny_unknown_fields)]
pub enum RegressionLoss {
    /// `(ŷ − y)²`.
    #[default]
    Mse,
    /// `½(ŷ − y)²` within `delta` of the target, `delta·(|ŷ − y| − ½·delta)` beyond it: a
    /// squared error that grows only linearly for outliers (PyTorch's `HuberLoss`).
    Huber {
        /// Where the loss turns linear (> 0).
        delta: f64,
    },
}

/// The kind of a [`ModelTask`] without its loss settings: what a data set's targets are, so
/// a loader knows how to read its label columns (`task=` in a data spec).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Class indices.
    #[default]
    Classification,
    /// One 0/1 outcome.
    Binary,
    /// Several 0/1 labels.
    MultiLabel,
    /// Real values.
    Regression,
}

impl TaskKind {
    /// Every kind, in the order of the table on [`ModelTask`].
    pub const ALL: [TaskKind; 4] = [
        TaskKind::Classification,
        TaskKind::Binary,
        TaskKind::MultiLabel,
        TaskKind::Regression,
    ];

    /// The word used in data specs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Classification => "classification",
            TaskKind::Binary => "binary",
            TaskKind::MultiLabel => "multilabel",
            TaskKind::Regression => "regression",
        }
    }

    /// The task of this kind with default loss settings (unweighted; MSE for regression).
    pub fn default_task(self) -> ModelTask {
        match self {
            TaskKind::Classification => ModelTask::default(),
            TaskKind::Binary => ModelTask::Binary { pos_weight: None },
            TaskKind::MultiLabel => ModelTask::MultiLabel { pos_weights: None },
            TaskKind::Regression => ModelTask::Regression {
                loss: RegressionLoss::Mse,
            },
        }
    }

    /// Whether targets are class indices (Int64 `[N]`) rather than Float `[N, width]`.
    pub fn has_class_indices(self) -> bool {
        self == TaskKind::Classification
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TaskKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let wanted = text.trim().to_ascii_lowercase().replace(['-', '_'], "");
        TaskKind::ALL
            .into_iter()
            .find(|kind| kind.name() == wanted)
            .ok_or_else(|| {
                format!(
                    "unknown task `{text}` (tasks: classification, binary, multilabel,                      regression)"
                )
            })
    }
}

impl ModelTask {
    /// The task's kind.
    pub fn kind(&self) -> TaskKind {
        match self {
            ModelTask::Classification { .. } => TaskKind::Classification,
            ModelTask::Binary { .. } => TaskKind::Binary,
            ModelTask::MultiLabel { .. } => TaskKind::MultiLabel,
            ModelTask::Regression { .. } => TaskKind::Regression,
        }
    }

    /// Checks that a network with `width` outputs per example fits this task and that the
    /// task's own settings are valid; the error says what would.
    pub fn check_outputs(&self, width: i64) -> Result<(), String> {
        let positive = |what: &str, values: &[f64]| -> Result<(), String> {
            match values.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
                Some(bad) => Err(format!("{what} must be finite and > 0, got {bad}")),
                None => Ok(()),
            }
        };
        let per_output = |what: &str, values: &Option<Vec<f64>>| -> Result<(), String> {
            if let Some(values) = values {
                if values.len() as i64 != width {
                    return Err(format!(
                        "{what} has {} entries but the model has {width} outputs",
                        values.len()
                    ));
                }
                positive(what, values)?;
            }
            Ok(())
        };
        match self {
            ModelTask::Classification { class_weights } => {
                if width < 2 {
                    return Err(format!(
                        "a classifier needs at least 2 output logits, the model has {width};                          for one yes/no outcome use the binary task"
                    ));
                }
                per_output("class_weights", class_weights)
            }
            ModelTask::Binary { pos_weight } => {
                if width != 1 {
                    return Err(format!(
                        "a binary task needs exactly 1 output logit, the model has {width}"
                    ));
                }
                positive("pos_weight", pos_weight.as_slice())
            }
            ModelTask::MultiLabel { pos_weights } => {
                if width < 1 {
                    return Err("a multi-label task needs at least 1 output".into());
                }
                per_output("pos_weights", pos_weights)
            }
            ModelTask::Regression { loss } => {
                if width < 1 {
                    return Err("a regression task needs at least 1 output".into());
                }
                match loss {
                    RegressionLoss::Mse => Ok(()),
                    RegressionLoss::Huber { delta } => positive("the Huber delta", &[*delta]),
                }
            }
        }
    }
}

/// What one example's input holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Real-valued features (tables, images).
    #[default]
    Float,
    /// Integer token ids (text), consumed by an `Embedding` layer.
    Tokens,
}

/// Weight initialisation. Biases always start at zero; norm layers at γ = 1, β = 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Glorot/Xavier uniform: U(±√(6 / (fan_in + fan_out))); suits tanh and sigmoid nets.
    Xavier,
    /// He/Kaiming normal: N(0, 2 / fan_in); suits ReLU nets.
    #[default]
    He,
}

/// A point-wise non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "function")]
pub enum Activation {
    /// max(0, x).
    Relu,
    /// tanh(x).
    Tanh,
    /// GELU (erf form).
    Gelu,
    /// `scale · σ(temperature · x) − offset` (Papernot et al. 2021): bounded activations keep
    /// DP-SGD's clipped gradients informative. `scale 2, temperature 2, offset 1` is tanh.
    TemperedSigmoid {
        /// Output scale s.
        scale: f64,
        /// Inverse temperature T.
        temperature: f64,
        /// Output offset o.
        offset: f64,
    },
}

/// One layer of a [`ModelSpec`]. Shapes are inferred from the input shape, so a spec names only
/// output sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LayerSpec {
    /// Fully connected layer over the last dimension.
    Linear {
        /// Output features.
        out: i64,
        /// Whether a bias is added (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D convolution over `[C, H, W]` inputs (one group, no dilation).
    Conv2d {
        /// Output channels.
        out_channels: i64,
        /// Square kernel side.
        kernel: i64,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: i64,
        /// Zero padding on each side (default 0).
        #[serde(default)]
        padding: i64,
    },
    /// Max pooling with a square window.
    MaxPool2d {
        /// Window side.
        kernel: i64,
        /// Stride (default: the window side).
        #[serde(default)]
        stride: Option<i64>,
    },
    /// Average pooling with a square window.
    AvgPool2d {
        /// Window side.
        kernel: i64,
        /// Stride (default: the window side).
        #[serde(default)]
        stride: Option<i64>,
    },
    /// Mean over all spatial positions: `[C, H, W]` → `[C]`.
    GlobalAvgPool,
    /// Group normalisation over `[C, ...]` with a learned per-channel affine map; the DP-safe
    /// replacement for batch normalisation.
    GroupNorm {
        /// Number of groups; must divide the channel count.
        groups: i64,
    },
    /// Layer normalisation over the last dimension with a learned affine map.
    LayerNorm,
    /// Batch normalisation. Refused under DP (it mixes examples in a batch); use `GroupNorm`.
    BatchNorm2d,
    /// Flattens everything but the batch dimension.
    Flatten,
    /// A point-wise non-linearity.
    Activation(Activation),
    /// Dropout with drop probability `p` (training only).
    Dropout {
        /// Drop probability in `[0, 1)`.
        p: f64,
    },
    /// `body(x) + shortcut(x)`; the shortcut is the identity, or a 1×1 strided convolution when
    /// the body changes the shape (as in ResNet).
    Residual {
        /// Layers of the residual branch.
        body: Vec<LayerSpec>,
    },
    /// Token embedding: `[T]` ids → `[T, dim]`.
    Embedding {
        /// Vocabulary size.
        vocab: i64,
        /// Embedding width.
        dim: i64,
    },
    /// Learned positional embedding added to `[T, dim]` inputs.
    PositionalEmbedding,
    /// One pre-norm Transformer encoder block (multi-head self-attention and a GELU MLP), built
    /// from Linear and LayerNorm layers so ghost clipping covers it.
    TransformerBlock {
        /// Attention heads; must divide the width.
        heads: i64,
        /// Hidden width of the MLP.
        hidden: i64,
    },
    /// Mean over the sequence: `[T, d]` → `[d]`.
    SequenceMean,
    /// Last position of the sequence: `[T, d]` → `[d]`.
    SequenceLast,
}

fn yes() -> bool {
    true
}

fn one() -> i64 {
    1
}

impl ModelSpec {
    /// A multilayer perceptron over flat inputs with ReLU between layers.
    pub fn mlp(inputs: i64, hidden: &[i64], classes: i64) -> Self {
        let mut layers = Vec::new();
        for &width in hidden {
            layers.push(LayerSpec::Linear {
                out: width,
                bias: true,
            });
            layers.push(LayerSpec::Activation(Activation::Relu));
        }
        layers.push(LayerSpec::Linear {
            out: classes,
            bias: true,
        });
        Self {
            input_shape: vec![inputs],
            input: InputKind::Float,
            layers,
            init: Init::He,
            task: ModelTask::default(),
        }
    }

    /// The small MNIST CNN of the DP-SGD literature (also Opacus' MNIST example): two strided
    /// convolutions, two max-pools and two linear layers, with tanh activations; ~26k parameters.
    pub fn mnist_cnn() -> Self {
        let tanh = LayerSpec::Activation(Activation::Tanh);
        Self {
            input_shape: vec![1, 28, 28],
            input: InputKind::Float,
            layers: vec![
                LayerSpec::Conv2d {
                    out_channels: 16,
                    kernel: 8,
                    stride: 2,
                    padding: 3,
                },
                tanh.clone(),
                LayerSpec::MaxPool2d {
                    kernel: 2,
                    stride: Some(1),
                },
                LayerSpec::Conv2d {
                    out_channels: 32,
                    kernel: 4,
                    stride: 2,
                    padding: 0,
                },
                tanh.clone(),
                LayerSpec::MaxPool2d {
                    kernel: 2,
                    stride: Some(1),
                },
                LayerSpec::Flatten,
                LayerSpec::Linear {
                    out: 32,
                    bias: true,
                },
                tanh,
                LayerSpec::Linear {
                    out: 10,
                    bias: true,
                },
            ],
            init: Init::Xavier,
            task: ModelTask::default(),
        }
    }

    /// A small ResNet for `[C, H, W]` images: a stem convolution, residual blocks with
    /// GroupNorm at the given widths (each after the first halves the resolution), global pooling
    /// and a linear head.
    pub fn small_resnet(input_shape: [i64; 3], widths: &[i64], classes: i64) -> Self {
        let relu = LayerSpec::Activation(Activation::Relu);
        let first = widths.first().copied().unwrap_or(16);
        let mut layers = vec![
            LayerSpec::Conv2d {
                out_channels: first,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            LayerSpec::GroupNorm {
                groups: groups_for(first),
            },
            relu.clone(),
        ];
        for (i, &width) in widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            layers.push(LayerSpec::Residual {
                body: vec![
                    LayerSpec::Conv2d {
                        out_channels: width,
                        kernel: 3,
                        stride,
                        padding: 1,
                    },
                    LayerSpec::GroupNorm {
                        groups: groups_for(width),
                    },
                    relu.clone(),
                    LayerSpec::Conv2d {
                        out_channels: width,
                        kernel: 3,
                        stride: 1,
                        padding: 1,
                    },
                    LayerSpec::GroupNorm {
                        groups: groups_for(width),
                    },
                ],
            });
            layers.push(relu.clone());
        }
        layers.push(LayerSpec::GlobalAvgPool);
        layers.push(LayerSpec::Linear {
            out: classes,
            bias: true,
        });
        Self {
            input_shape: input_shape.to_vec(),
            input: InputKind::Float,
            layers,
            init: Init::He,
            task: ModelTask::default(),
        }
    }

    /// A small Transformer encoder for next-token prediction over `[sequence]` token ids:
    /// embedding + positions, `blocks` encoder blocks, a final LayerNorm and a linear head
    /// reading the last position.
    pub fn transformer(vocab: i64, sequence: i64, dim: i64, heads: i64, blocks: usize) -> Self {
        let mut layers = vec![
            LayerSpec::Embedding { vocab, dim },
            LayerSpec::PositionalEmbedding,
        ];
        for _ in 0..blocks {
            layers.push(LayerSpec::TransformerBlock {
                heads,
                hidden: 4 * dim,
            });
        }
        layers.push(LayerSpec::LayerNorm);
        layers.push(LayerSpec::SequenceLast);
        layers.push(LayerSpec::Linear {
            out: vocab,
            bias: true,
        });
        Self {
            input_shape: vec![sequence],
            input: InputKind::Tokens,
            layers,
            init: Init::Xavier,
            task: ModelTask::default(),
        }
    }

    /// The spec as JSON, the form the server stores.
    pub fn to_json(&self) -> String {
        // A spec holds only numbers, strings and enums: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses a spec from JSON.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// 8 groups where the width allows, else one group per channel pair or fewer.
fn groups_for(channels: i64) -> i64 {
    [8, 4, 2, 1]
        .into_iter()
        .find(|g| channels % g == 0)
        .unwrap_or(1)
}
