//! The server's domain: federations, clients, rounds and model versions.
//!
//! Every type here is valid by construction (parse, don't validate): identifiers and
//! configurations are parsed once at the edge — by the HTTP layer from requests, by the store
//! from rows — and the rest of the server works with values that cannot be out of range.
//! Entities have public fields because each field's type already carries its invariant.

mod budget;
mod config;
mod evaluation;
mod ids;

use std::collections::BTreeMap;
use std::fmt;

use cohort_privacy::EpsDelta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use budget::{BudgetFields, MAX_EPSILON_BUDGET, validate_budget, validate_epsilon};
pub use config::{
    DpSgdConfig, StageDeadlines, StrategyConfig, TrainingConfig, TrainingConfigSpec, Weighting,
};
pub use evaluation::{EvaluationConfig, EvaluationNoise, GroupColumn};
pub use ids::{
    CertFingerprint, ClientId, FederationId, MAX_NAME_LEN, RoundNumber, Timestamp, VersionNumber,
};

/// Input that failed validation: which field, and what is wrong with it (an HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    field: &'static str,
    reason: String,
}

impl ValidationError {
    /// A validation failure of `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The offending field, as the API names it (for example `dp_sgd.clip_norm`).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong and, where possible, how to fix it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ValidationError {}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A content-addressed reference to a blob (model weights, strategy state) in the data dir.
///
/// The digest doubles as the HTTP `ETag` and lets the store detect a corrupted file on read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Length in bytes.
    pub size_bytes: u64,
}

impl BlobRef {
    /// The reference `bytes` would be stored under.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            sha256: hex_sha256(bytes),
            size_bytes: bytes.len() as u64,
        }
    }
}

/// Whether a federation still schedules rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FederationState {
    /// Rounds may be opened.
    Active,
    /// No further rounds: the client-level budget would be exceeded, or an admin stopped it.
    Stopped {
        /// Why, for the dashboard.
        reason: String,
    },
}

/// A federation: one model trained by a set of clients under one configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Federation {
    /// Its unique name.
    pub id: FederationId,
    /// The model's architecture as the clients understand it; opaque to the server.
    pub model_spec: serde_json::Value,
    /// Training, privacy and aggregation settings.
    pub config: TrainingConfig,
    /// The initial weights (model version 0).
    pub initial_weights: BlobRef,
    /// Whether it still runs.
    pub state: FederationState,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A federation as an admin asks for it, before the store assigns anything.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFederation {
    /// Its unique name.
    pub id: FederationId,
    /// The model's architecture; opaque to the server.
    pub model_spec: serde_json::Value,
    /// Training, privacy and aggregation settings.
    pub config: TrainingConfig,
}

/// How far a client has come through enrolment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrolmentState {
    /// An admin created it and issued a one-time token; no certificate is bound yet.
    Invited,
    /// It presented the token and its certificate fingerprint is bound.
    Enrolled,
}

/// A client (a hospital, a device) of one federation.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// The federation it belongs to.
    pub federation: FederationId,
    /// Its name within the federation.
    pub id: ClientId,
    /// Its certificate's fingerprint, once enrolled.
    pub fingerprint: Option<CertFingerprint>,
    /// Enrolment progress.
    pub enrolment: EnrolmentState,
    /// A revoked client is never scheduled again and its uploads are refused.
    pub revoked: bool,
    /// Last time it polled; scheduling prefers clients that are online.
    pub last_seen: Option<Timestamp>,
    /// Its record-level budget (the federation's default unless set per client).
    pub budget: EpsDelta,
    /// The number of training records it reported, used for FedAvg weights and audit.
    pub sample_count: Option<u64>,
    /// When it was invited.
    pub created_at: Timestamp,
}

/// Where an in-flight round is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundStage {
    /// Participants train locally.
    Training,
    /// SecAgg: participants advertise public keys.
    AdvertiseKeys,
    /// SecAgg: participants exchange encrypted key shares.
    ShareKeys,
    /// Participants upload (masked) updates.
    Upload,
    /// SecAgg: survivors reveal shares so masks can be removed.
    Unmask,
    /// The server applies the strategy and commits.
    Aggregating,
}

impl RoundStage {
    /// A stable name for storage and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Training => "training",
            Self::AdvertiseKeys => "advertise_keys",
            Self::ShareKeys => "share_keys",
            Self::Upload => "upload",
            Self::Unmask => "unmask",
            Self::Aggregating => "aggregating",
        }
    }

    /// Parses a name written by [`RoundStage::as_str`].
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "training" => Self::Training,
            "advertise_keys" => Self::AdvertiseKeys,
            "share_keys" => Self::ShareKeys,
            "upload" => Self::Upload,
            "unmask" => Self::Unmask,
            "aggregating" => Self::Aggregating,
            _ => return None,
        })
    }
}

/// Why a round was aborted; recorded with the round and shown to admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AbortReason {
    /// Poisson sampling chose fewer clients than the minimum; nobody was given a task.
    TooFewSampled {
        /// How many were sampled.
        sampled: u32,
        /// The federation's minimum.
        min_clients: u32,
    },
    /// Fewer than the minimum updates arrived before the deadline.
    TooFewUpdates {
        /// How many arrived.
        received: u32,
        /// The federation's minimum.
        min_clients: u32,
    },
    /// A stage's deadline passed without what the round needed.
    DeadlineMissed {
        /// The stage whose deadline passed.
        stage: RoundStage,
    },
    /// The server stopped while the round was in flight; found on restart.
    ServerRestarted,
    /// An admin aborted it.
    Operator {
        /// The admin's note.
        note: String,
    },
    /// Anything else the orchestrator detected (for example a SecAgg failure).
    Failed {
        /// What went wrong.
        detail: String,
    },
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooFewSampled {
                sampled,
                min_clients,
            } => {
                write!(
                    f,
                    "only {sampled} clients sampled, minimum is {min_clients}"
                )
            }
            Self::TooFewUpdates {
                received,
                min_clients,
            } => {
                write!(
                    f,
                    "only {received} updates received, minimum is {min_clients}"
                )
            }
            Self::DeadlineMissed { stage } => {
                write!(f, "deadline of stage {} passed", stage.as_str())
            }
            Self::ServerRestarted => f.write_str("server restarted"),
            Self::Operator { note } => write!(f, "aborted by an admin: {note}"),
            Self::Failed { detail } => write!(f, "failed: {detail}"),
        }
    }
}

/// A round's lifecycle state.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundState {
    /// Running; participants were chosen and charged.
    InProgress {
        /// The current stage.
        stage: RoundStage,
    },
    /// Finished; `version` is the model it produced, or `None` when the strategy kept the
    /// previous model.
    Completed {
        /// The committed model version, if any.
        version: Option<VersionNumber>,
    },
    /// Ended without a model; the ledger entries still count (fail closed).
    Aborted {
        /// Why.
        reason: AbortReason,
    },
}

impl RoundState {
    /// Whether the round is still running.
    pub fn is_in_progress(&self) -> bool {
        matches!(self, Self::InProgress { .. })
    }
}

/// Named scalar metrics of a round (loss, accuracy, bytes, stage latencies, ...).
pub type RoundMetrics = BTreeMap<String, f64>;

/// One round of one federation.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// Its federation.
    pub federation: FederationId,
    /// Its number.
    pub number: RoundNumber,
    /// The model version the participants train from.
    pub base_version: VersionNumber,
    /// Where it is.
    pub state: RoundState,
    /// The sampled clients (all charged in the ledger before they learn of the task).
    pub participants: Vec<ClientId>,
    /// Metrics recorded so far.
    pub metrics: RoundMetrics,
    /// When it opened.
    pub opened_at: Timestamp,
    /// When it completed or aborted.
    pub closed_at: Option<Timestamp>,
}

/// A committed model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    /// Its federation.
    pub federation: FederationId,
    /// Its number (0 = initial weights).
    pub version: VersionNumber,
    /// The weights (safetensors bytes, opaque to the store).
    pub weights: BlobRef,
    /// The strategy's optimiser state after producing this version (FedAdam moments, ...).
    pub strategy_state: Option<BlobRef>,
    /// The round that produced it; `None` for the initial weights.
    pub round: Option<RoundNumber>,
    /// When it was committed.
    pub created_at: Timestamp,
}
