//! Opening a round: the socket-free sequence that ties the ledger, sampling and storage
//! together, so that the HTTP orchestrator cannot get the order wrong.
//!
//! 1. Refuse if the federation is stopped or a round is in flight.
//! 2. Client-level admission: if the next round could push the federation past its
//!    client-level budget (or that account cannot be verified), stop the federation.
//! 3. Eligibility: enrolled, not revoked, seen within the online window, and the client's
//!    record-level budget affords the round (an unverifiable account counts as exhausted).
//! 4. Poisson-sample the eligible at rate q_c from a CSPRNG.
//! 5. Minimum-clients rule: too few sampled → the round is recorded as aborted, nobody is
//!    charged or told.
//! 6. Otherwise one transaction writes the round, its participants, the write-ahead ledger
//!    entries and the new accountant states. Only after it commits may a client see its task.
//!
//! Every step runs against `&dyn Storage` and blocks; call it from `spawn_blocking`.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use rand::CryptoRng;

use crate::domain::{
    AbortReason, ClientId, FederationId, FederationState, ModelVersion, Round, RoundStage,
    Timestamp,
};
use crate::ledger::{self, LedgerAccountant, LedgerError, RoundCharge};
use crate::sampling::{self, ClientSampler, Ineligible};
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
    },
    /// The round was recorded as aborted before anyone was told (too few sampled).
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

/// Opens the next round of `federation` (see the module docs for the sequence).
pub fn open_round<A: LedgerAccountant, R: CryptoRng>(
    store: &dyn Storage,
    sampler: &mut ClientSampler<R>,
    federation: &FederationId,
    policy: &SchedulingPolicy,
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

    let fed_account = store.federation_account(federation)?;
    let fed_admitted = match ledger::admit_federation::<A>(&fed, fed_account.as_ref(), &charge) {
        Ok(admitted) => admitted,
        Err(
            e @ (LedgerError::FederationBudgetExhausted { .. }
            | LedgerError::FederationBudgetUnverifiable(_)),
        ) => {
            let reason = e.to_string();
            store.stop_federation(federation, &reason)?;
            return Ok(RoundStart::FederationStopped { reason });
        }
        Err(e) => return Err(ScheduleError::Ledger(e)),
    };

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
    let opening = ledger::round_opening(
        &fed,
        number,
        base.version,
        &charge,
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
    })
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
