//! Aggregation strategies, shaped like Flower's: a strategy configures a round and aggregates
//! its results; the server does all I/O (sampling, transport, storage) around it.
//!
//! Differences from Flower, and why:
//! - Client *selection* is not a strategy method: it is Poisson sampling in
//!   [`crate::sampling`], because client-level DP's amplification argument depends on it.
//! - Results arrive as a streamed sum ([`FitResults::Summed`]) — the server never holds
//!   individual updates under secure aggregation — except for robust aggregators, which
//!   declare [`InputKind::Individual`] and are refused with secure aggregation.
//! - Updates are deltas Δ = w_local − w_global; [`Strategy::aggregate_fit`] returns the new
//!   weights, or `None` to keep the previous model (for example when nothing arrived).
//! - Optimiser state is exported ([`Strategy::state`]) and committed with each model version,
//!   so a restarted server resumes FedAdam's moments rather than silently resetting them.
//!
//! The arithmetic lives in [`math`] as pure functions.

mod fedopt;
pub mod math;
mod robust;
pub mod state;

use std::fmt;

use cohort_evaluation::{Derivation, Released, Report};

use crate::aggregate::SummedUpdates;
use crate::domain::{ClientId, RoundNumber, StrategyConfig, ValidationError, Weighting};

pub use fedopt::{FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi};
pub use robust::{CoordinateMedian, TrimmedMean};

/// What a strategy asks of each participant's local training, copied into its task.
/// Typed: each field is a `Task` field, so a strategy cannot send a key no client reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientConfig {
    /// FedProx's μ: the participant adds (μ/2)‖w − w_global‖² to its local objective.
    pub proximal_mu: Option<f64>,
}

impl ClientConfig {
    /// Nothing asked beyond the federation's training config.
    pub fn new() -> Self {
        Self::default()
    }
}

/// What form a strategy needs the round's updates in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A running sum ([`crate::aggregate::StreamingSum`]): O(model) memory, SecAgg-compatible.
    Summed,
    /// Every update kept ([`crate::aggregate::CollectedUpdates`]): only without SecAgg.
    Individual,
}

/// A round's accepted updates.
#[derive(Debug, Clone, PartialEq)]
pub enum FitResults {
    /// The (weighted) sum of deltas.
    Summed(SummedUpdates),
    /// Each delta (robust aggregators only).
    Individual(Vec<Vec<f32>>),
}

/// A participant that was charged but did not deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct FitFailure {
    /// Who.
    pub client: ClientId,
    /// What happened (deadline, invalid update, dropped out of SecAgg).
    pub reason: String,
}

/// What an evaluation's sites released, summed, and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluateResults<'a> {
    /// The sum of the sites' (noisy) statistics.
    pub summed: &'a Released,
    /// The noise in the sum and the suppression threshold.
    pub derivation: Derivation,
    /// Sites whose statistics arrived.
    pub sites: usize,
}

/// Why a strategy could not aggregate.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StrategyError {
    /// The configuration is not acceptable (422 when creating a federation).
    Config(ValidationError),
    /// Results came in the wrong form for this strategy (an orchestration bug).
    WrongInput {
        /// What the strategy needs.
        expected: InputKind,
    },
    /// The results do not match the model's parameter count.
    LengthMismatch {
        /// The model's parameter count.
        expected: usize,
        /// The results'.
        got: usize,
    },
    /// The new model would contain NaN or ±∞; the round must not commit it.
    NonFinite,
    /// Stored strategy state could not be restored.
    BadState(String),
}

impl fmt::Display for StrategyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::WrongInput { expected } => write!(f, "strategy expects {expected:?} results"),
            Self::LengthMismatch { expected, got } => {
                write!(f, "results have {got} parameters, the model has {expected}")
            }
            Self::NonFinite => f.write_str("aggregation produced a non-finite parameter"),
            Self::BadState(m) => write!(f, "cannot restore strategy state: {m}"),
        }
    }
}

impl std::error::Error for StrategyError {}

/// A federated aggregation strategy. Implementations do no I/O and keep only optimiser state.
///
/// Required: [`name`](Strategy::name) and [`aggregate_fit`](Strategy::aggregate_fit).
/// Everything else has a sensible default.
pub trait Strategy: Send + fmt::Debug {
    /// A stable name (`fed_avg`, `fed_adam`, ...), also used to tag saved state.
    fn name(&self) -> &'static str;

    /// The form results must take.
    fn input_kind(&self) -> InputKind {
        InputKind::Summed
    }

    /// How the round's sum should weight updates.
    fn weighting(&self) -> Weighting {
        Weighting::SampleCount
    }

    /// Server-chosen initial weights; `None` means the federation's uploaded weights.
    fn initialize_parameters(&self) -> Option<Vec<f32>> {
        None
    }

    /// Configuration each participant receives with its training task.
    fn configure_fit(&self, _round: RoundNumber) -> ClientConfig {
        ClientConfig::new()
    }

    /// Aggregates a round's results into new weights, or `None` to keep `current`.
    fn aggregate_fit(
        &mut self,
        round: RoundNumber,
        current: &[f32],
        results: FitResults,
        failures: &[FitFailure],
    ) -> Result<Option<Vec<f32>>, StrategyError>;

    /// Configuration each site receives with an evaluation task (sent as the task's
    /// `config`).
    ///
    /// Free-form on purpose, unlike [`ClientConfig`]: Cohort's own client evaluates every task
    /// the same way and reads none of it; a deployment's own client may (a threshold, a
    /// subgroup to report), without a protocol change.
    fn configure_evaluate(&self, _evaluation: u64) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// The federation's figures from an evaluation's summed statistics; `None` publishes no
    /// report. The default derives every figure with its noise-aware interval. Whatever a
    /// strategy computes here is post-processing of the release: it cannot cost privacy.
    fn aggregate_evaluate(
        &self,
        _evaluation: u64,
        results: &EvaluateResults<'_>,
        _failures: &[FitFailure],
    ) -> Option<Report> {
        Some(Report::derive(results.summed, results.derivation))
    }

    /// Optimiser state to commit with the model version (`None`: stateless).
    fn state(&self) -> Option<Vec<u8>> {
        None
    }

    /// Restores state saved by [`state`](Strategy::state) for a model of `len` parameters.
    fn restore_state(&mut self, _len: usize, _bytes: &[u8]) -> Result<(), StrategyError> {
        Err(StrategyError::BadState(format!(
            "{} keeps no state",
            self.name()
        )))
    }
}

/// Builds the strategy a federation configured. Refuses robust aggregators under secure
/// aggregation (they need updates the server must never see).
pub fn build(
    config: &StrategyConfig,
    secure_aggregation: bool,
) -> Result<Box<dyn Strategy>, StrategyError> {
    config.validate().map_err(StrategyError::Config)?;
    if secure_aggregation && config.needs_individual_updates() {
        return Err(StrategyError::Config(ValidationError::new(
            "strategy",
            "robust aggregators need every update in the clear, which secure aggregation forbids",
        )));
    }
    Ok(match *config {
        StrategyConfig::FedAvg { weighting } => Box::new(FedAvg::new(weighting)),
        StrategyConfig::FedAvgM {
            weighting,
            server_lr,
            momentum,
        } => Box::new(FedAvgM::new(weighting, server_lr, momentum)),
        StrategyConfig::FedAdam {
            weighting,
            server_lr,
            beta1,
            beta2,
            tau,
        } => Box::new(FedAdam::new(weighting, server_lr, beta1, beta2, tau)),
        StrategyConfig::FedYogi {
            weighting,
            server_lr,
            beta1,
            beta2,
            tau,
        } => Box::new(FedYogi::new(weighting, server_lr, beta1, beta2, tau)),
        StrategyConfig::FedAdagrad {
            weighting,
            server_lr,
            tau,
        } => Box::new(FedAdagrad::new(weighting, server_lr, tau)),
        StrategyConfig::FedProx {
            weighting,
            proximal_mu,
        } => Box::new(FedProx::new(weighting, proximal_mu)),
        StrategyConfig::CoordinateMedian => Box::new(CoordinateMedian),
        StrategyConfig::TrimmedMean { trim_fraction } => Box::new(TrimmedMean::new(trim_fraction)),
    })
}

/// The mean delta of summed results, checked against the model length; `None` if empty.
fn mean_delta(current: &[f32], results: FitResults) -> Result<Option<Vec<f64>>, StrategyError> {
    let FitResults::Summed(summed) = results else {
        return Err(StrategyError::WrongInput {
            expected: InputKind::Summed,
        });
    };
    if summed.sum.len() != current.len() {
        return Err(StrategyError::LengthMismatch {
            expected: current.len(),
            got: summed.sum.len(),
        });
    }
    Ok(summed.mean())
}

/// Every update of a robust aggregator's round, each checked against the model's length.
fn individual_updates(
    current: &[f32],
    results: FitResults,
) -> Result<Vec<Vec<f32>>, StrategyError> {
    let FitResults::Individual(updates) = results else {
        return Err(StrategyError::WrongInput {
            expected: InputKind::Individual,
        });
    };
    if let Some(bad) = updates.iter().find(|u| u.len() != current.len()) {
        return Err(StrategyError::LengthMismatch {
            expected: current.len(),
            got: bad.len(),
        });
    }
    Ok(updates)
}

/// The next model, w + lr·direction, refused if it has NaN or ±∞ (for example after `f32`
/// overflow): every strategy ends with this step.
fn step(current: &[f32], direction: &[f64], lr: f64) -> Result<Option<Vec<f32>>, StrategyError> {
    let weights = math::apply_step(current, direction, lr);
    if weights.iter().all(|w| w.is_finite()) {
        Ok(Some(weights))
    } else {
        Err(StrategyError::NonFinite)
    }
}

#[cfg(test)]
mod tests;
