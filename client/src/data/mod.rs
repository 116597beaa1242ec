//! Training data as libtorch tensors.
//!
//! Every loader (CSV, IDX, text) produces the same [`Dataset`] shape, so the DP-SGD engine,
//! partitioners and evaluation never care where examples came from.

use tch::Tensor;

/// A set of labelled examples held as two tensors on one device.
///
/// Invariant: `features.size()[0] == labels.size()[0]`; `labels` is `Int64` in
/// `0..num_classes` (for next-token prediction, the vocabulary size).
#[derive(Debug)]
pub struct Dataset {
    /// Inputs, `[N, ...]`: `Float` for tables and images, `Int64` token ids for text.
    pub features: Tensor,
    /// Targets, `[N]` of `Int64` class indices.
    pub labels: Tensor,
    /// Number of distinct classes (or the vocabulary size for next-token prediction).
    pub num_classes: i64,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> i64 {
        self.labels.size().first().copied().unwrap_or(0)
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
