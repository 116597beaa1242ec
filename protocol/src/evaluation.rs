//! Federated evaluation on the wire: the task a sampled site answers, its statistics upload,
//! and what the API shows of an evaluation.
//!
//! The statistics themselves are `cohort_evaluation`'s: a flat integer vector in the layout of
//! the task's [`Shape`]. JSON integers keep them exact, and a non-integer or out-of-range
//! number fails to parse, so a malformed upload never reaches the sum.

use cohort_evaluation::{Report, Shape};
use cohort_privacy::EpsDelta;
use serde::{Deserialize, Serialize};

use crate::{ClientId, Epsilon, FederationId};

/// The noise a site adds before its statistics leave it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "placement", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskNoise {
    /// The full calibrated Skellam noise at every site (record-level DP for the site even
    /// against the server). The site recalibrates from `target` and the task's shape and
    /// refuses the task if its plan's μ differs from `per_site_mu`.
    Local {
        /// The (ε, δ) one evaluation may cost a record.
        #[schema(value_type = crate::schema::EpsDeltaSchema)]
        target: EpsDelta,
        /// The Skellam μ the server calibrated (variance 2μ per coordinate).
        per_site_mu: f64,
    },
    /// No noise: the federation opted out, visibly, for tests. No privacy is claimed.
    Off,
}

/// What a site evaluates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvaluationTask {
    /// The federation.
    pub federation: FederationId,
    /// The evaluation's number within the federation.
    pub evaluation: u64,
    /// The model version to download and evaluate.
    pub model_version: u64,
    /// The statistics' layout.
    #[schema(value_type = Object)]
    pub shape: Shape,
    /// The data column whose values index the groups, when set.
    pub group_column: Option<String>,
    /// The group values, in index order (one unnamed group when no column is set).
    pub group_values: Vec<String>,
    /// The noise to add.
    pub noise: TaskNoise,
    /// The site's record-level ε after this evaluation as the server's ledger recorded it
    /// (`None` with noise off).
    pub epsilon_after: Option<Epsilon>,
    /// Unix milliseconds by which the statistics must arrive.
    pub upload_deadline_ms: u64,
    /// The federation's model architecture.
    #[serde(default)]
    pub model_spec: Option<serde_json::Value>,
    /// What the federation's strategy asks of the evaluation (its `configure_evaluate`).
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// `POST /v1/federations/{fed}/evaluations/{n}/statistics`: a site's released statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatisticsUpload {
    /// The (noised) vector in the task shape's layout.
    pub values: Vec<i64>,
    /// What the release cost at the site's own ledger (`None` with noise off).
    #[schema(value_type = Option<crate::schema::EpsDeltaSchema>)]
    pub charged: Option<EpsDelta>,
}

/// The answer to an accepted upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatisticsReceipt {
    /// The evaluation.
    pub evaluation: u64,
    /// Uploads accepted so far, this one included.
    pub accepted: u32,
}

/// `POST /v1/federations/{fed}/evaluations` (admin): evaluate a model version now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenEvaluation {
    /// The version to evaluate; the latest when absent.
    #[serde(default)]
    pub model_version: Option<u64>,
}

/// The state of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EvaluationState {
    /// Waiting for statistics.
    Open,
    /// Its report is final.
    Completed,
    /// Ended without a report; see the reason.
    Aborted,
}

/// A client that was not asked, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Skipped {
    /// The client.
    pub client: ClientId,
    /// Why (its budget cannot afford the evaluation, or cannot be verified).
    pub reason: String,
}

/// One site's own report, kept only when the federation allows per-site release (which
/// requires noise at every site).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteReport {
    /// The site.
    pub client: ClientId,
    /// Its figures.
    #[schema(value_type = Object)]
    pub report: Report,
}

/// What the noise in an evaluation's figures is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NoiseView {
    /// `local` or `off`.
    pub placement: String,
    /// Per-coordinate noise variance of the summed statistics (0 with noise off).
    pub sum_variance: f64,
    /// The record-level (ε, δ) each participating site paid (`None` with noise off).
    #[schema(value_type = Option<crate::schema::EpsDeltaSchema>)]
    pub per_site: Option<EpsDelta>,
}

/// An evaluation as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvaluationView {
    /// Its number.
    pub evaluation: u64,
    /// The model version evaluated.
    pub model_version: u64,
    /// State.
    pub state: EvaluationState,
    /// The sites asked.
    pub participants: Vec<ClientId>,
    /// The sites whose statistics arrived.
    pub accepted: u32,
    /// Sites not asked, with the reason.
    pub skipped: Vec<Skipped>,
    /// The group values, in the report's group order.
    pub group_values: Vec<String>,
    /// The noise behind the figures.
    pub noise: NoiseView,
    /// The federation's figures, once completed.
    #[schema(value_type = Option<Object>)]
    pub report: Option<Report>,
    /// Per-site figures, where released.
    pub sites: Vec<SiteReport>,
    /// Why it aborted.
    pub abort_reason: Option<String>,
    /// Unix milliseconds it opened.
    pub opened_at_ms: u64,
    /// Unix milliseconds it ended.
    pub closed_at_ms: Option<u64>,
}
