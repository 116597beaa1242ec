//! JSON control messages of API version 1 that clients and dashboards read.
//!
//! The admin-side federation configuration is the server's own validated type; the messages
//! here are the ones a client library needs too.
//!
//! Request types reject unknown fields so a typo in a config is an error, not a silently ignored
//! setting. Enums are `#[non_exhaustive]` so a later version can add states and strategies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use cohort_privacy::EpsDelta;

use crate::{ClientId, Epsilon, FederationId, RoundId};

/// The DP-SGD settings a client trains with, as its task carries them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DpSgdConfig {
    /// Noise multiplier σ (noise std = σ·C).
    pub noise_multiplier: f64,
    /// Per-sample clipping norm C.
    pub clip_norm: f64,
    /// Local epochs E per round.
    pub local_epochs: u32,
    /// Poisson sampling rate q of records into a batch.
    pub batch_sample_rate: f64,
}

/// DP-SGD steps in one round of `local_epochs` epochs of Poisson batches at rate `q`: ⌈E/q⌉
/// (at least 1). The server's ledger, the client's ledger and the trainer all count with this
/// one function, so a client never trains more steps than it is charged for.
pub fn dp_sgd_steps_per_round(local_epochs: u32, q: f64) -> u64 {
    let steps = (f64::from(local_epochs) / q).ceil();
    // q ≥ tiny and E ≤ u32::MAX keep this finite; clamp anyway so a cast cannot wrap (NaN → 1).
    if steps.is_nan() {
        return 1;
    }
    steps.clamp(1.0, u64::MAX as f64) as u64
}

impl DpSgdConfig {
    /// See [`dp_sgd_steps_per_round`].
    pub fn steps_per_round(&self) -> u64 {
        dp_sgd_steps_per_round(self.local_epochs, self.batch_sample_rate)
    }
}

/// `POST /v1/federations/{fed}/clients` (admin): register a client and get its one-time token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// The client's name (becomes its certificate's common name).
    pub name: ClientId,
    /// A record-level budget for this client instead of the federation's default.
    #[serde(default)]
    #[schema(value_type = Option<crate::schema::BudgetSchema>)]
    pub budget: Option<EpsDelta>,
}

/// The answer to [`CreateClient`]: hand the token to the hospital out of band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClientCreated {
    /// The client's name.
    pub name: ClientId,
    /// A one-time enrolment token; it is shown once and stored only as a hash, and it stops
    /// working when used.
    pub enrolment_token: String,
}

/// `POST /v1/federations/{fed}/enrol`: exchange a one-time token and a CSR for a certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The one-time token from [`ClientCreated`] (it names the client).
    pub token: String,
    /// A PEM certificate signing request for the client's own key pair (the key never leaves
    /// the client).
    pub csr_pem: String,
    /// How many training records the client holds (for FedAvg weights and the ledger's audit).
    #[serde(default)]
    pub sample_count: Option<u64>,
}

/// The answer to [`EnrolRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnrolResponse {
    /// The client's name, from its token.
    pub name: ClientId,
    /// The signed client certificate.
    pub certificate_pem: String,
    /// The federation CA certificate, to pin the server.
    pub ca_pem: String,
}

/// The enrolment state of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientState {
    /// Registered; token not used yet.
    Pending,
    /// Holds a certificate.
    Enrolled,
    /// Revoked: its certificate is refused.
    Revoked,
}

/// A client as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClientView {
    /// Name.
    pub name: ClientId,
    /// State.
    pub state: ClientState,
    /// Unix seconds of the last request it made, if any.
    pub last_seen: Option<u64>,
}

/// The state of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RoundState {
    /// Accepting task polls and uploads.
    Open,
    /// Committed: a new model version exists.
    Completed,
    /// Ended without a new model; see the reason.
    Aborted,
}

/// A round as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoundView {
    /// Round number.
    pub id: RoundId,
    /// State.
    pub state: RoundState,
    /// The model version clients train from.
    pub base_model_version: u64,
    /// The model version it produced, when completed.
    pub result_model_version: Option<u64>,
    /// Sampled clients.
    pub participants: Vec<ClientId>,
    /// Updates accepted so far (open) or in total (closed).
    pub accepted: u32,
    /// Named metrics: stage latencies, bytes, accepted updates.
    pub metrics: BTreeMap<String, f64>,
    /// Why it aborted.
    pub abort_reason: Option<String>,
    /// Unix milliseconds it opened.
    pub opened_at_ms: u64,
    /// Unix milliseconds it ended.
    pub closed_at_ms: Option<u64>,
    /// Client-level ε of the federation after this round.
    pub federation_epsilon: Option<f64>,
}

/// What a client trains in its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    /// The federation.
    pub federation: FederationId,
    /// The round.
    pub round: RoundId,
    /// The model version to download and train from.
    pub model_version: u64,
    /// DP-SGD settings.
    pub dp_sgd: DpSgdConfig,
    /// L2 clip of the update (required when the federation adds central noise).
    pub update_clip: Option<f64>,
    /// FedProx μ, when the strategy is FedProx.
    pub proximal_mu: Option<f64>,
    /// How to train locally (optimiser, schedule, augmentation); `None` when the federation
    /// fixes nothing and the participant runs plain SGD at its own learning rate.
    #[serde(default)]
    pub local_training: Option<crate::training::LocalTraining>,
    /// Number of elements the update frame must hold.
    pub num_params: u64,
    /// Unix milliseconds by which the update must arrive. A secure round's masked input is due
    /// `training_s + upload_s` after its share stage closes, which is never earlier.
    pub upload_deadline_ms: u64,
    /// The client's record-level ε after this round (at its budget's δ), as the server's
    /// ledger recorded it before handing out the task.
    pub epsilon_after_round: Epsilon,
    /// The federation's model architecture (opaque JSON the client's trainer understands).
    #[serde(default)]
    pub model_spec: Option<serde_json::Value>,
    /// How to take part in secure aggregation; `None` when the federation takes plain updates.
    #[serde(default)]
    pub secure_aggregation: Option<crate::secagg::SecAggTask>,
}

/// `GET /v1/federations/{fed}/task`: either a task or "come back later".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
// A poll answer lives for one request and is moved, not stored: boxing the task would add an
// allocation per poll to save stack bytes nobody keeps.
#[allow(clippy::large_enum_variant)]
pub enum TaskPoll {
    /// Train this.
    Train(Task),
    /// Evaluate a model version on the held-out split and release its statistics.
    Evaluate(crate::evaluation::EvaluationTask),
    /// Nothing for this client now; poll again after the `Retry-After` header's seconds.
    Wait {
        /// The same value as `Retry-After`.
        retry_after_s: u64,
    },
    /// The server will not schedule this client, and says why (its budget is exhausted).
    Ineligible {
        /// When to ask again (an admin may raise the budget).
        retry_after_s: u64,
        /// Why it is not scheduled.
        reason: String,
    },
}

/// The answer to an accepted upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadReceipt {
    /// The round the update was added to.
    pub round: RoundId,
    /// Updates accepted into this round so far, this one included.
    pub accepted: u32,
}

/// One statistic a client released with differential privacy (noised on the client).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleasedMetric {
    /// Its name (`[a-z0-9_]`, at most 32 characters).
    #[schema(pattern = r"^[a-z0-9_]{1,32}$")]
    pub name: String,
    /// The noised value.
    pub value: f64,
    /// Standard deviation of the noise that was added.
    #[schema(minimum = 0)]
    pub noise_std: f64,
}

/// A participant's DP-released training metrics for one round, sent after their (ε, δ) was
/// charged to its local ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsUpload {
    /// The released statistics (1 to 16, each name once).
    #[schema(min_items = 1, max_items = 16)]
    pub values: Vec<ReleasedMetric>,
    /// What the release cost the client (record-level, at its own ledger).
    #[schema(value_type = crate::schema::EpsDeltaSchema)]
    pub charged: EpsDelta,
}

/// A client's privacy spend within one federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    /// The client.
    pub client: ClientId,
    /// Its record-level budget.
    #[schema(value_type = crate::schema::EpsDeltaSchema)]
    pub budget: EpsDelta,
    /// What the ledger has charged it so far (rounds it was sampled into, aborted ones too).
    #[schema(value_type = crate::schema::EpsDeltaSchema)]
    pub spent: EpsDelta,
    /// Rounds charged.
    pub rounds: u32,
    /// Eligible, exhausted, revoked or pending.
    pub status: crate::budgets::BudgetStatus,
    /// ε after one more round of this federation at its budget's δ, when that can be
    /// computed (it is why an under-spent client can already be exhausted).
    #[serde(default)]
    pub next_round_epsilon: Option<f64>,
    /// Unix milliseconds of the client's last request, if any.
    #[serde(default)]
    pub last_seen_ms: Option<u64>,
    /// ε after each round it was charged for, oldest first (the ledger's entries).
    #[serde(default)]
    pub history: Vec<crate::budgets::EpsilonPoint>,
}

/// `GET /v1/federations/{fed}/budgets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetsView {
    /// The federation's client-level budget, when it claims client-level DP.
    #[schema(value_type = Option<crate::schema::EpsDeltaSchema>)]
    pub federation_budget: Option<EpsDelta>,
    /// Its client-level spend.
    #[schema(value_type = crate::schema::EpsDeltaSchema)]
    pub federation_spent: EpsDelta,
    /// Each client's record-level spend.
    pub clients: Vec<BudgetView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_poll_round_trips() {
        let w = TaskPoll::Wait { retry_after_s: 5 };
        let s = serde_json::to_string(&w).unwrap();
        assert_eq!(s, r#"{"kind":"wait","retry_after_s":5}"#);
        assert_eq!(serde_json::from_str::<TaskPoll>(&s).unwrap(), w);
    }

    #[test]
    fn a_round_has_ceil_e_over_q_steps() {
        assert_eq!(dp_sgd_steps_per_round(1, 0.25), 4);
        assert_eq!(dp_sgd_steps_per_round(2, 0.3), 7, "not 2 x ceil(1/0.3) = 8");
        assert_eq!(dp_sgd_steps_per_round(3, 1.0), 3);
        assert_eq!(dp_sgd_steps_per_round(1, 2.0), 1, "at least one step");
        assert_eq!(dp_sgd_steps_per_round(1, f64::NAN), 1);
    }
}
