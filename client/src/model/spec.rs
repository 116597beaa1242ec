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
    /// Layers applied in order; the last must produce `[classes]` logits per example.
    pub layers: Vec<LayerSpec>,
    /// How weights are initialised.
    #[serde(default)]
    pub init: Init,
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
