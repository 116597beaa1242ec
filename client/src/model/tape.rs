//! What a recording forward pass remembers for ghost clipping.
//!
//! Every layer with parameters that ghost clipping understands pushes one [`Record`]: the
//! layer's input (or what its per-sample gradient is computed from) and its output, which is
//! still attached to the autograd graph so that one `Tensor::run_backward` can return
//! ∂loss/∂output for every record at once.

use tch::Tensor;

/// Index of a parameter in [`super::Model::parameters`].
pub type ParamId = usize;

/// One parametrised layer application seen during a recording forward pass.
#[derive(Debug)]
pub enum Record {
    /// `output = input · Wᵀ + b`, with `input` `[B, in]` or `[B, T, in]`.
    Linear {
        /// Layer input (detached).
        input: Tensor,
        /// Layer output (in the graph).
        output: Tensor,
        /// The weight `[out, in]`.
        weight: ParamId,
        /// The bias `[out]`, if any.
        bias: Option<ParamId>,
    },
    /// `output = conv2d(input, W, b)`; `input` `[B, C, H, W]`.
    Conv2d {
        /// Layer input (detached).
        input: Tensor,
        /// Layer output (in the graph).
        output: Tensor,
        /// The weight `[out, C, k, k]`.
        weight: ParamId,
        /// The bias `[out]`.
        bias: Option<ParamId>,
        /// Kernel side.
        kernel: i64,
        /// Stride.
        stride: i64,
        /// Padding.
        padding: i64,
    },
    /// `output = normalised · γ + β` for GroupNorm (channels on dim 1) and LayerNorm (channels
    /// on the last dim).
    Affine {
        /// The normalised input without the affine map (detached).
        normalised: Tensor,
        /// Layer output (in the graph).
        output: Tensor,
        /// γ.
        weight: ParamId,
        /// β.
        bias: ParamId,
        /// Which dimension γ and β index: 1 (GroupNorm) or -1 (LayerNorm).
        channel_dim: i64,
    },
    /// `output = W[indices]`, `indices` `[B]` or `[B, T]`.
    Embedding {
        /// Token ids (Int64).
        indices: Tensor,
        /// Layer output (in the graph).
        output: Tensor,
        /// The table `[vocab, dim]`.
        weight: ParamId,
    },
}

impl Record {
    /// The layer output whose gradient ghost clipping needs.
    pub fn output(&self) -> &Tensor {
        match self {
            Record::Linear { output, .. }
            | Record::Conv2d { output, .. }
            | Record::Affine { output, .. }
            | Record::Embedding { output, .. } => output,
        }
    }
}

/// The records of one forward pass, in execution order. A disabled tape records nothing, which
/// is what plain (non-private) training and evaluation use.
#[derive(Debug, Default)]
pub struct Tape {
    enabled: bool,
    records: Vec<Record>,
}

impl Tape {
    /// A tape that records.
    pub fn recording() -> Self {
        Self {
            enabled: true,
            records: Vec::new(),
        }
    }

    /// A tape that ignores everything.
    pub fn off() -> Self {
        Self::default()
    }

    /// Whether layers should record.
    pub fn is_recording(&self) -> bool {
        self.enabled
    }

    /// Adds a record if recording.
    pub fn push(&mut self, record: Record) {
        if self.enabled {
            self.records.push(record);
        }
    }

    /// The records so far.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Takes the records, leaving the tape empty.
    pub fn take(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }
}
