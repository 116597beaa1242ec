//! Durable state: federations, clients, rounds, model versions and the privacy ledger.
//!
//! [`Storage`] is the seam: the server talks to `Arc<dyn Storage>`, and [`SqliteStorage`] is
//! the only implementation. The trait keeps SQL out of the callers, but it is not yet a
//! database-neutral contract: its transactions, the one-round-in-flight rule and the append-only
//! ledger are SQLite triggers and constraints that another backend would have to reproduce, and
//! the server runs as one process over one data dir. Model weights and strategy state are content-addressed blobs: files in the
//! data dir, referenced by SHA-256 from the database.
//!
//! # Blocking
//! The trait is **synchronous** on purpose: every write ends in an fsync (SQLite
//! `synchronous=FULL`, blob files fsynced before rename), and an async facade would only hide
//! that. Async callers run it on the blocking pool:
//! `tokio::task::spawn_blocking(move || store.open_round(&opening))`. Implementations are
//! `Send + Sync`, so one `Arc<dyn Storage>` is shared by every handler.
//!
//! # Atomicity
//! The operations that must not be torn are single methods, each one transaction:
//! [`Storage::open_round`] (round + participants + write-ahead ledger entries + accountant
//! states) and [`Storage::complete_round`] (new model version + round record).

pub mod audit;
mod blobs;
mod error;
pub mod evaluation;
mod migrations;
mod sqlite;

use cohort_privacy::EpsDelta;

use crate::domain::{
    AbortReason, BlobRef, CertFingerprint, Client, ClientId, Federation, FederationId,
    ModelVersion, NewFederation, Round, RoundMetrics, RoundNumber, RoundStage, Timestamp,
    VersionNumber,
};

pub use audit::{AuditContext, AuditRecord, BudgetOp};
pub use error::StorageError;
pub use sqlite::{OpenReport, SqliteStorage};

/// Composable accountant state as stored: the serialised accountant plus the ε it gives at
/// the budget's δ (cached for the dashboard; admission always recomputes from `accountant`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    /// The serialised accountant (opaque to the store; the ledger parses it and treats an
    /// unparsable state as an exhausted budget).
    pub accountant: String,
    /// ε spent so far, at `delta`.
    pub epsilon: f64,
    /// The δ at which `epsilon` was computed.
    pub delta: f64,
    /// Optimistic-concurrency counter: writers state the revision they read, and a mismatch
    /// is a [`StorageError::Conflict`], so two schedulers can never both spend from one state.
    pub revision: u64,
}

/// Who a ledger entry charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerSubject {
    /// A client's record-level spend.
    Client(ClientId),
    /// The federation's client-level spend.
    Federation,
}

/// One append-only ledger line: a subsampled Gaussian mechanism charged for one round.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    /// The round it pays for.
    pub round: RoundNumber,
    /// Who is charged.
    pub subject: LedgerSubject,
    /// Poisson sampling rate of the mechanism (batch rate, or client rate).
    pub sample_rate: f64,
    /// Noise multiplier of the mechanism.
    pub noise_multiplier: f64,
    /// How many times it is composed this round.
    pub steps: u64,
    /// The client's reported record count, kept for audit.
    pub sample_count: Option<u64>,
    /// ε after this entry, at `delta`.
    pub epsilon_after: f64,
    /// The δ of `epsilon_after`.
    pub delta: f64,
    /// When it was written (before the subject learned of the task).
    pub recorded_at: Timestamp,
}

/// An account's new state, written in the same transaction as its ledger entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountUpdate {
    /// The new state.
    pub accountant: String,
    /// ε after the round, at `delta`.
    pub epsilon: f64,
    /// δ of `epsilon`.
    pub delta: f64,
    /// The revision the new state was computed from (0: no account existed yet).
    pub expected_revision: u64,
}

/// Everything opening a round writes, in one transaction, before any client learns of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundOpening {
    /// The federation.
    pub federation: FederationId,
    /// The round's number: exactly one more than the federation's last round.
    pub number: RoundNumber,
    /// The model version participants train from: the latest committed one.
    pub base_version: VersionNumber,
    /// The sampled clients.
    pub participants: Vec<ClientId>,
    /// Write-ahead ledger entries (one per participant, one for the federation if it has a
    /// client-level budget).
    pub entries: Vec<LedgerEntry>,
    /// New record-level account states, one per participant.
    pub client_accounts: Vec<(ClientId, AccountUpdate)>,
    /// The new client-level account state, if the federation has one.
    pub federation_account: Option<AccountUpdate>,
    /// The first stage.
    pub stage: RoundStage,
    /// Now.
    pub opened_at: Timestamp,
}

/// What a finished round commits.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundCompletion<'a> {
    /// The new weights and strategy state, or `None` when the strategy kept the model.
    pub new_model: Option<NewModel<'a>>,
    /// Final metrics (merged over those recorded earlier).
    pub metrics: RoundMetrics,
    /// Now.
    pub completed_at: Timestamp,
}

/// A model version's content.
#[derive(Debug, Clone, PartialEq)]
pub struct NewModel<'a> {
    /// Serialised weights (safetensors).
    pub weights: &'a [u8],
    /// Serialised strategy state (optimiser moments), if the strategy has any.
    pub strategy_state: Option<&'a [u8]>,
}

/// The server's durable state. See the module docs for blocking and atomicity.
///
/// Errors: [`StorageError::NotFound`] (404), [`StorageError::Duplicate`] and
/// [`StorageError::Conflict`] (409), [`StorageError::Invalid`] (422); anything else is the
/// server's fault (500, logged, details hidden).
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Creates a federation with its initial weights as model version 0.
    fn create_federation(
        &self,
        new: &NewFederation,
        initial_weights: &[u8],
        now: Timestamp,
    ) -> Result<Federation, StorageError>;
    /// One federation.
    fn federation(&self, id: &FederationId) -> Result<Federation, StorageError>;
    /// Every federation, by name.
    fn federations(&self) -> Result<Vec<Federation>, StorageError>;
    /// Stops a federation: no round opens after this. Idempotent.
    fn stop_federation(&self, id: &FederationId, reason: &str) -> Result<(), StorageError>;

    /// Creates an invited client holding a one-time enrolment token (stored as its SHA-256).
    /// `budget` overrides the federation's default record-level budget.
    fn invite_client(
        &self,
        federation: &FederationId,
        id: &ClientId,
        budget: Option<EpsDelta>,
        token_sha256: &str,
        now: Timestamp,
    ) -> Result<Client, StorageError>;
    /// Consumes a one-time token and binds the certificate: the token stops working at once,
    /// so a replay is `NotFound`, and a certificate already bound in this federation is
    /// `Duplicate`.
    fn enrol_client(
        &self,
        federation: &FederationId,
        token_sha256: &str,
        fingerprint: &CertFingerprint,
        sample_count: Option<u64>,
        now: Timestamp,
    ) -> Result<Client, StorageError>;
    /// One client.
    fn client(&self, federation: &FederationId, id: &ClientId) -> Result<Client, StorageError>;
    /// The enrolled client holding a certificate (for mutual-TLS requests).
    fn client_by_fingerprint(
        &self,
        federation: &FederationId,
        fingerprint: &CertFingerprint,
    ) -> Result<Client, StorageError>;
    /// A federation's clients, by name.
    fn clients(&self, federation: &FederationId) -> Result<Vec<Client>, StorageError>;
    /// Records that a client polled (`last_seen`) and, if given, its current record count.
    fn touch_client(
        &self,
        federation: &FederationId,
        id: &ClientId,
        sample_count: Option<u64>,
        now: Timestamp,
    ) -> Result<(), StorageError>;
    /// Sets a client's record-level budget. Lowering it below what is spent simply makes
    /// the client ineligible; nothing already spent is forgotten.
    fn set_client_budget(
        &self,
        federation: &FederationId,
        id: &ClientId,
        budget: EpsDelta,
    ) -> Result<(), StorageError>;
    /// Revokes a client for good. Idempotent.
    fn revoke_client(&self, federation: &FederationId, id: &ClientId) -> Result<(), StorageError>;

    /// Opens a round: round, participants, ledger entries and accounts in one transaction.
    /// `Conflict` if a round is in flight, the number is not next, the federation is stopped,
    /// the base is not the latest model, a participant is not enrolled or is revoked, or an
    /// account's revision moved.
    fn open_round(&self, opening: &RoundOpening) -> Result<Round, StorageError>;
    /// Records a round that aborted before anyone was given a task (for example too few
    /// clients sampled): no participants, no ledger entries.
    fn record_skipped_round(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        base_version: VersionNumber,
        reason: &AbortReason,
        now: Timestamp,
    ) -> Result<Round, StorageError>;
    /// One round.
    fn round(&self, federation: &FederationId, number: RoundNumber) -> Result<Round, StorageError>;
    /// A federation's rounds, oldest first.
    fn rounds(&self, federation: &FederationId) -> Result<Vec<Round>, StorageError>;
    /// The round in flight, if any.
    fn current_round(&self, federation: &FederationId) -> Result<Option<Round>, StorageError>;
    /// The number the next round must have.
    fn next_round_number(&self, federation: &FederationId) -> Result<RoundNumber, StorageError>;
    /// Moves an in-flight round to another stage (`Conflict` if it is not in flight).
    fn set_round_stage(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        stage: RoundStage,
    ) -> Result<(), StorageError>;
    /// Merges metrics into an in-flight round (`Invalid` for non-finite values).
    fn record_round_metrics(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        metrics: &RoundMetrics,
    ) -> Result<(), StorageError>;
    /// Aborts an in-flight round. Its ledger entries stay: spend is never refunded.
    fn abort_round(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        reason: &AbortReason,
        now: Timestamp,
    ) -> Result<Round, StorageError>;
    /// Completes an in-flight round, committing the new model version (if any) and the
    /// round record in one transaction; the blobs are durable before it starts.
    fn complete_round(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        completion: &RoundCompletion<'_>,
    ) -> Result<Round, StorageError>;

    /// One model version.
    fn model_version(
        &self,
        federation: &FederationId,
        version: VersionNumber,
    ) -> Result<ModelVersion, StorageError>;
    /// Every committed model version of a federation, oldest first.
    fn model_versions(&self, federation: &FederationId) -> Result<Vec<ModelVersion>, StorageError>;
    /// The latest committed model version: where the next round starts.
    fn latest_model(&self, federation: &FederationId) -> Result<ModelVersion, StorageError>;
    /// A blob's bytes, checked against its digest (`Corrupt` on mismatch).
    fn read_blob(&self, blob: &BlobRef) -> Result<Vec<u8>, StorageError>;

    /// Every client account of a federation (clients that never took part have none).
    fn client_accounts(
        &self,
        federation: &FederationId,
    ) -> Result<Vec<(ClientId, AccountRecord)>, StorageError>;
    /// The federation's client-level account, if it has taken part in a round.
    fn federation_account(
        &self,
        federation: &FederationId,
    ) -> Result<Option<AccountRecord>, StorageError>;
    /// Ledger entries of a federation, oldest first; only one client's if `client` is given.
    fn ledger_entries(
        &self,
        federation: &FederationId,
        client: Option<&ClientId>,
    ) -> Result<Vec<LedgerEntry>, StorageError>;

    /// Applies `op` to a client's ε budget and appends the audit line, in one transaction
    /// (the current budget is read inside it). Spend is untouched; `Invalid` for a bad amount.
    fn change_client_budget(
        &self,
        federation: &FederationId,
        id: &ClientId,
        op: BudgetOp,
        context: &AuditContext,
    ) -> Result<AuditRecord, StorageError>;
    /// Revokes a client and appends the audit line, in one transaction; `None` (and no line)
    /// if it was revoked already.
    fn revoke_client_audited(
        &self,
        federation: &FederationId,
        id: &ClientId,
        context: &AuditContext,
    ) -> Result<Option<AuditRecord>, StorageError>;
    /// The audit log of a federation, oldest first; only one client's if `client` is given.
    fn budget_audit(
        &self,
        federation: &FederationId,
        client: Option<&ClientId>,
    ) -> Result<Vec<AuditRecord>, StorageError>;

    /// Opens an evaluation: its row, every asked site's charge and account, in one
    /// transaction. An evaluation of the federation still open (left by a previous process)
    /// is aborted first.
    fn open_evaluation(
        &self,
        opening: &evaluation::EvaluationOpening,
    ) -> Result<evaluation::StoredEvaluation, StorageError>;
    /// Closes an open evaluation with its result (`Conflict` if it is not open).
    fn close_evaluation(
        &self,
        federation: &FederationId,
        number: u64,
        state: evaluation::StoredEvaluationState,
        result: &str,
        at: Timestamp,
    ) -> Result<evaluation::StoredEvaluation, StorageError>;
    /// Every evaluation of a federation, oldest first.
    fn evaluations(
        &self,
        federation: &FederationId,
    ) -> Result<Vec<evaluation::StoredEvaluation>, StorageError>;
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
pub(crate) mod tests;
