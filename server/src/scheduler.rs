//! Opening a round: the socket-free sequence that ties the ledger, sampling and storage
//! together, so that the HTTP orchestrator cannot get the order wrong.
//!
//! 1. Refuse if the federation is stopped or a round is in flight.
//! 2. Client-level admission of a plain round: if its central Gaussian could push the
//!    federation past its client-level budget (or that account cannot be verified), stop the
//!    federation.
//! 3. Eligibility: enrolled, not revoked, seen within the online window, and the client's
//!    record-level budget affords the round (an unverifiable account counts as exhausted).
//! 4. Poisson-sample the eligible at rate q_c from a CSPRNG.
//! 5. Minimum-clients rule: too few sampled → the round is recorded as aborted, nobody is
//!    charged or told. Likewise when secure aggregation cannot run for that many
//!    ([`secure_plan::plan`] says why).
//! 6. Client-level admission of a secure round: its charge is the Skellam noise planned for
//!    the clients actually sampled, so it is known only now; if it does not fit, stop the
//!    federation (still nobody charged or told).
//! 7. Otherwise one transaction writes the round, its participants, the write-ahead ledger
//!    entries and the new accountant states. Only after it commits may a client see its task.
//!
//! Every step runs against `&dyn Storage` and blocks; call it from `spawn_blocking`.
//!
//! # A whole round, without sockets
//! ```
//! use cohort_server::aggregate::{RoundKey, StreamingSum};
//! use cohort_server::domain::*;
//! use cohort_server::ledger::DefaultAccountant;
//! use cohort_server::sampling::ClientSampler;
//! use cohort_server::scheduler::{RoundStart, SchedulingPolicy, open_round};
//! use cohort_server::storage::{NewModel, RoundCompletion, SqliteStorage, Storage};
//! use cohort_server::strategy::{self, FitResults};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (store, _report) = SqliteStorage::open(dir.path())?;
//! let now = Timestamp::now();
//! let config: TrainingConfig = serde_json::from_value(serde_json::json!({
//!     "dp_sgd": {"noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1,
//!                "batch_sample_rate": 0.5},
//!     "client_budget": {"epsilon": 50.0, "delta": 1e-5},
//!     "client_sampling_rate": 1.0,
//!     "min_clients": 1,
//!     "update_clip": 10.0,
//!     "secure_aggregation": false
//! }))?;
//! let new = NewFederation {
//!     id: FederationId::parse("demo")?,
//!     model_spec: serde_json::json!({"kind": "linear"}),
//!     config,
//! };
//! let fed = store.create_federation(&new, b"safetensors bytes", now)?;
//!
//! // An admin invites a client; it enrols with the one-time token and its certificate.
//! let token_sha256 = "ab".repeat(32);
//! let hospital = ClientId::parse("hospital-a")?;
//! store.invite_client(&fed.id, &hospital, None, &token_sha256, now)?;
//! store.enrol_client(&fed.id, &token_sha256, &CertFingerprint::of_der(b"cert"), Some(120), now)?;
//!
//! // Open a round: the client is sampled and charged before it can learn of its task.
//! let mut sampler = ClientSampler::from_os()?;
//! let policy = SchedulingPolicy::default();
//! let RoundStart::Opened { round, .. } =
//!     open_round::<DefaultAccountant, _>(&store, &mut sampler, &fed.id, &policy, 2, now)?
//! else {
//!     panic!("the round should open");
//! };
//! assert_eq!(store.ledger_entries(&fed.id, Some(&hospital))?.len(), 1);
//!
//! // Uploads stream into a running sum; the strategy turns it into the next model.
//! let mut strategy = strategy::build(fed.config.strategy(), fed.config.secure_aggregation())?;
//! let key = RoundKey { federation: fed.id.clone(), round: round.number };
//! let mut sum = StreamingSum::new(key.clone(), 2, round.participants.clone(), strategy.weighting());
//! sum.add(&key, &hospital, &[0.5, -0.25], 120)?;
//! let current = [1.0f32, 1.0];
//! let next = strategy.aggregate_fit(round.number, &current, FitResults::Summed(sum.finish()), &[])?;
//! assert_eq!(next, Some(vec![1.5, 0.75]));
//!
//! // Commit the new version and the round record in one transaction.
//! let completion = RoundCompletion {
//!     new_model: Some(NewModel { weights: b"new safetensors bytes", strategy_state: None }),
//!     metrics: Default::default(),
//!     completed_at: Timestamp::now(),
//! };
//! store.complete_round(&fed.id, round.number, &completion)?;
//! assert_eq!(store.latest_model(&fed.id)?.version.get(), 1);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use rand::CryptoRng;

use crate::domain::{
    AbortReason, ClientId, FederationId, FederationState, ModelVersion, Round, RoundStage,
    Timestamp,
};
use crate::ledger::{self, ClientLevel, LedgerAccountant, LedgerError, RoundCharge};
use crate::sampling::{self, ClientSampler, Ineligible};
use crate::secure_plan::{self, SecurePlan};
use crate::storage::{Storage, StorageError};

/// Scheduling knobs that are the server's, not the federation's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulingPolicy {
    /// A client counts as online if it polled within this window.
    pub online_window: Duration,
    /// The stage a new round starts in (Training; the orchestrator may use AdvertiseKeys
    /// when clients train after the key exchange).
    pub first_stage: RoundStage,
}

impl Default for SchedulingPolicy {
    fn default() -> Self {
        Self {
            online_window: Duration::from_secs(300),
            first_stage: RoundStage::Training,
        }
    }
}

/// What happened when a round was requested.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundStart {
    /// The round is open and its participants are charged.
    Opened {
        /// The round.
        round: Round,
        /// The model its participants train from.
        base: ModelVersion,
        /// Clients left out, and why (for the dashboard).
        ineligible: Vec<(ClientId, Ineligible)>,
        /// The secure aggregation plan the round was charged for (`None` for a plain round).
        secure: Option<Box<SecurePlan>>,
    },
    /// The round was recorded as aborted before anyone was told (too few sampled, or secure
    /// aggregation cannot run for that many).
    Skipped {
        /// The aborted round record.
        round: Round,
        /// Clients left out, and why.
        ineligible: Vec<(ClientId, Ineligible)>,
    },
    /// The federation was stopped: its client-level budget cannot afford another round.
    FederationStopped {
        /// Why.
        reason: String,
    },
}

/// Why no round could be requested at all.
#[derive(Debug)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The federation was stopped earlier (409).
    Stopped {
        /// The recorded reason.
        reason: String,
    },
    /// A round is already in flight (409).
    RoundInProgress(Box<Round>),
    /// The federation's configuration cannot be charged (should not happen: configs are
    /// validated).
    Ledger(LedgerError),
    /// Storage failed or refused.
    Storage(StorageError),
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stopped { reason } => write!(f, "the federation is stopped: {reason}"),
            Self::RoundInProgress(r) => write!(f, "round {} is still in progress", r.number),
            Self::Ledger(e) => write!(f, "{e}"),
            Self::Storage(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ScheduleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Storage(e) => Some(e),
            Self::Ledger(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StorageError> for ScheduleError {
    fn from(e: StorageError) -> Self {
        Self::Storage(e)
    }
}

/// Opens the next round of `federation`, whose model has `dimension` parameters (see the
/// module docs for the sequence).
pub fn open_round<A: LedgerAccountant, R: CryptoRng>(
    store: &dyn Storage,
    sampler: &mut ClientSampler<R>,
    federation: &FederationId,
    policy: &SchedulingPolicy,
    dimension: usize,
    now: Timestamp,
) -> Result<RoundStart, ScheduleError> {
    let fed = store.federation(federation)?;
    if let FederationState::Stopped { reason } = &fed.state {
        return Err(ScheduleError::Stopped {
            reason: reason.clone(),
        });
    }
    if let Some(round) = store.current_round(federation)? {
        return Err(ScheduleError::RoundInProgress(Box::new(round)));
    }
    let charge = RoundCharge::for_config(&fed.config).map_err(ScheduleError::Ledger)?;
    let secure = fed.config.secure_aggregation();

    let fed_account = store.federation_account(federation)?;
    // A plain round's Gaussian costs the same whoever is sampled: stop before sampling.
    let mut fed_admitted = None;
    let mut client_level = None;
    if !secure {
        client_level =
            ClientLevel::for_round(&fed.config, dimension, None).map_err(ScheduleError::Ledger)?;
        match admit_or_stop::<A>(store, &fed, fed_account.as_ref(), client_level.as_ref())? {
            Ok(admitted) => fed_admitted = admitted,
            Err(stopped) => return Ok(stopped),
        }
    }

    let accounts: HashMap<_, _> = store.client_accounts(federation)?.into_iter().collect();
    let mut eligible = Vec::new();
    let mut ineligible = Vec::new();
    for client in store.clients(federation)? {
        if let Err(why) = sampling::check_presence(&client, now, policy.online_window) {
            ineligible.push((client.id, why));
            continue;
        }
        match ledger::admit_client::<A>(&client, accounts.get(&client.id), &charge) {
            Ok(admitted) => eligible.push((client, admitted)),
            Err(refusal) => ineligible.push((client.id, Ineligible::Budget(refusal))),
        }
    }

    let sampled = sampler.poisson(eligible, fed.config.client_sampling_rate());
    let number = store.next_round_number(federation)?;
    let base = store.latest_model(federation)?;
    if let Err(reason) = sampling::check_sampled(sampled.len(), fed.config.min_clients()) {
        let round = store.record_skipped_round(federation, number, base.version, &reason, now)?;
        return Ok(RoundStart::Skipped { round, ineligible });
    }
    let plan = if secure {
        match secure_plan::plan(sampled.len(), dimension, &fed.config) {
            Ok(plan) => Some(Box::new(plan)),
            Err(detail) => {
                let reason = AbortReason::Failed {
                    detail: format!("secure aggregation cannot run: {detail}"),
                };
                let round =
                    store.record_skipped_round(federation, number, base.version, &reason, now)?;
                return Ok(RoundStart::Skipped { round, ineligible });
            }
        }
    } else {
        None
    };
    if secure {
        // The Skellam charge depends on how many were sampled: admit it now, before anyone
        // is charged or told.
        let skellam = plan.as_ref().and_then(|p| p.client_level);
        client_level = ClientLevel::for_round(&fed.config, dimension, skellam)
            .map_err(ScheduleError::Ledger)?;
        match admit_or_stop::<A>(store, &fed, fed_account.as_ref(), client_level.as_ref())? {
            Ok(admitted) => fed_admitted = admitted,
            Err(stopped) => return Ok(stopped),
        }
    }
    let opening = ledger::round_opening(
        &fed,
        number,
        base.version,
        &charge,
        client_level.as_ref(),
        sampled,
        fed_admitted,
        policy.first_stage,
        now,
    );
    let round = store.open_round(&opening)?;
    Ok(RoundStart::Opened {
        round,
        base,
        ineligible,
        secure: plan,
    })
}

/// The federation's admission of `charge`: `Ok(Ok(admitted))` when it fits (or nothing is
/// charged), `Ok(Err(stopped))` after stopping a federation that cannot afford it.
fn admit_or_stop<A: LedgerAccountant>(
    store: &dyn Storage,
    fed: &crate::domain::Federation,
    account: Option<&crate::storage::AccountRecord>,
    charge: Option<&ClientLevel>,
) -> Result<Result<Option<ledger::Admitted>, RoundStart>, ScheduleError> {
    match ledger::admit_federation::<A>(fed, account, charge) {
        Ok(admitted) => Ok(Ok(admitted)),
        Err(
            e @ (LedgerError::FederationBudgetExhausted { .. }
            | LedgerError::FederationBudgetUnverifiable(_)),
        ) => {
            let reason = e.to_string();
            store.stop_federation(&fed.id, &reason)?;
            Ok(Err(RoundStart::FederationStopped { reason }))
        }
        Err(e) => Err(ScheduleError::Ledger(e)),
    }
}

/// Closes a round whose deadline passed with fewer than the minimum updates, recording why;
/// its ledger entries stand. Returns `Ok(None)` if the minimum was met (nothing done).
pub fn abort_if_below_minimum(
    store: &dyn Storage,
    federation: &FederationId,
    round: &Round,
    received: usize,
    min_clients: u32,
    now: Timestamp,
) -> Result<Option<Round>, StorageError> {
    match sampling::check_received(received, min_clients) {
        Ok(()) => Ok(None),
        Err(reason) => store
            .abort_round(federation, round.number, &reason, now)
            .map(Some),
    }
}

/// The reason recorded when a stage's deadline passes (re-exported for the orchestrator).
pub fn deadline_missed(stage: RoundStage) -> AbortReason {
    AbortReason::DeadlineMissed { stage }
}
