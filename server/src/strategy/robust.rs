//! Robust aggregators: they bound the influence of a few wild updates, but need every update
//! in the clear, so configuration refuses them under secure aggregation.

use super::math::{coordinate_median, trimmed_mean};
use super::{FitFailure, FitResults, InputKind, Strategy, StrategyError, individual_updates, step};
use crate::domain::{RoundNumber, Weighting};

/// w ← w + reduce(updates): the whole of a robust aggregator but its coordinate-wise rule.
fn robust_step(
    current: &[f32],
    results: FitResults,
    reduce: impl FnOnce(&[Vec<f32>]) -> Vec<f64>,
) -> Result<Option<Vec<f32>>, StrategyError> {
    let updates = individual_updates(current, results)?;
    if updates.is_empty() {
        return Ok(None);
    }
    step(current, &reduce(&updates), 1.0)
}

/// w ← w + coordinate-wise median of the deltas.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoordinateMedian;

impl Strategy for CoordinateMedian {
    fn name(&self) -> &'static str {
        "coordinate_median"
    }
    fn input_kind(&self) -> InputKind {
        InputKind::Individual
    }
    fn weighting(&self) -> Weighting {
        Weighting::Uniform
    }
    fn aggregate_fit(
        &mut self,
        _round: RoundNumber,
        current: &[f32],
        results: FitResults,
        _failures: &[FitFailure],
    ) -> Result<Option<Vec<f32>>, StrategyError> {
        robust_step(current, results, coordinate_median)
    }
}

/// w ← w + coordinate-wise trimmed mean of the deltas.
#[derive(Debug, Clone, Copy)]
pub struct TrimmedMean {
    fraction: f64,
}

impl TrimmedMean {
    /// Drops ⌊fraction·n⌋ values from each end of every coordinate (fraction in [0, 0.5)).
    pub fn new(fraction: f64) -> Self {
        Self { fraction }
    }
}

impl Strategy for TrimmedMean {
    fn name(&self) -> &'static str {
        "trimmed_mean"
    }
    fn input_kind(&self) -> InputKind {
        InputKind::Individual
    }
    fn weighting(&self) -> Weighting {
        Weighting::Uniform
    }
    fn aggregate_fit(
        &mut self,
        _round: RoundNumber,
        current: &[f32],
        results: FitResults,
        _failures: &[FitFailure],
    ) -> Result<Option<Vec<f32>>, StrategyError> {
        robust_step(current, results, |updates| {
            trimmed_mean(updates, self.fraction)
        })
    }
}
