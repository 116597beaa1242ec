//! The two transactions that must never be torn: opening a round (with its write-ahead
//! ledger entries) and completing one (with its model version).

use rusqlite::params;

use super::ops::json;
use super::{
    AccountKey, SqliteStorage, check_metrics, get_client, get_federation, get_round, insert_round,
    latest_model, require_in_progress, to_i64, write_account,
};
use crate::domain::{FederationId, Round, RoundNumber, ValidationError};
use crate::storage::{LedgerSubject, RoundCompletion, RoundOpening, StorageError};

impl SqliteStorage {
    pub(super) fn open_round_tx(&self, opening: &RoundOpening) -> Result<Round, StorageError> {
        let fed_id = &opening.federation;
        let number = to_i64(opening.number.get(), "round")?;
        self.write(|tx| {
            let fed = get_federation(tx, fed_id)?;
            insert_round(tx, &fed, opening.number, opening.base_version)?;
            tx.execute(
                "INSERT INTO rounds (federation, number, base_version, state, stage, opened_at) \
                 VALUES (?1, ?2, ?3, 'in_progress', ?4, ?5)",
                params![fed_id.as_str(), number, to_i64(opening.base_version.get(), "version")?,
                        opening.stage.as_str(), opening.opened_at.as_millis()],
            )?;
            for client in &opening.participants {
                let c = get_client(tx, fed_id, client)?;
                if c.revoked || c.enrolment != crate::domain::EnrolmentState::Enrolled {
                    return Err(StorageError::conflict(format!(
                        "client {client} is not enrolled or is revoked and cannot take part"
                    )));
                }
                tx.execute(
                    "INSERT INTO round_participants (federation, round, client) VALUES (?1, ?2, ?3)",
                    params![fed_id.as_str(), number, client.as_str()],
                )?;
            }
            for entry in &opening.entries {
                if entry.round != opening.number {
                    return Err(ValidationError::new("ledger entry", "belongs to another round").into());
                }
                let client = match &entry.subject {
                    LedgerSubject::Client(c) => {
                        if !opening.participants.contains(c) {
                            return Err(ValidationError::new("ledger entry", "charges a non-participant").into());
                        }
                        Some(c.as_str())
                    }
                    LedgerSubject::Federation => None,
                };
                tx.execute(
                    "INSERT INTO ledger_entries (federation, round, client, sample_rate, \
                     noise_multiplier, steps, sample_count, epsilon_after, delta, recorded_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![fed_id.as_str(), number, client, entry.sample_rate, entry.noise_multiplier,
                            to_i64(entry.steps, "steps")?,
                            entry.sample_count.map(|n| to_i64(n, "sample_count")).transpose()?,
                            entry.epsilon_after, entry.delta, entry.recorded_at.as_millis()],
                )?;
            }
            // Every participant must be charged: a round whose spend is not written must not
            // open (fail closed).
            for client in &opening.participants {
                let charged = opening.client_accounts.iter().any(|(c, _)| c == client)
                    && opening.entries.iter().any(|e| e.subject == LedgerSubject::Client(client.clone()));
                if !charged {
                    return Err(ValidationError::new(
                        "ledger",
                        format!("participant {client} has no ledger entry; refusing to open the round"),
                    )
                    .into());
                }
            }
            if fed.config.federation_budget().is_some()
                && (opening.federation_account.is_none()
                    || !opening.entries.iter().any(|e| e.subject == LedgerSubject::Federation))
            {
                return Err(ValidationError::new(
                    "ledger",
                    "the federation has a client-level budget but the round charges nothing to it",
                )
                .into());
            }
            for (client, update) in &opening.client_accounts {
                write_account(tx, AccountKey::Client(fed_id, client), update, opening.opened_at)?;
            }
            if let Some(update) = &opening.federation_account {
                write_account(tx, AccountKey::Federation(fed_id), update, opening.opened_at)?;
            }
            get_round(tx, fed_id, opening.number)
        })
    }

    pub(super) fn complete_round_tx(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        completion: &RoundCompletion<'_>,
    ) -> Result<Round, StorageError> {
        check_metrics(&completion.metrics)?;
        // Blobs first, durably; the transaction below is what makes them a model version.
        let blobs = match &completion.new_model {
            Some(model) => Some((
                self.blobs.put(model.weights)?,
                model
                    .strategy_state
                    .map(|s| self.blobs.put(s))
                    .transpose()?,
            )),
            None => None,
        };
        let now = completion.completed_at.as_millis();
        self.write(|tx| {
            let mut round = require_in_progress(tx, federation, number)?;
            let latest = latest_model(tx, federation)?;
            if latest.version != round.base_version {
                return Err(StorageError::conflict(format!(
                    "round {number} trained from version {} but version {} is current",
                    round.base_version, latest.version
                )));
            }
            let n = to_i64(number.get(), "round")?;
            let result_version = match &blobs {
                Some((weights, state)) => {
                    let version = latest.version.next();
                    tx.execute(
                        "INSERT INTO model_versions (federation, version, weights_sha256, \
                         weights_size, state_sha256, state_size, round, created_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            federation.as_str(),
                            to_i64(version.get(), "version")?,
                            weights.sha256,
                            to_i64(weights.size_bytes, "weights")?,
                            state.as_ref().map(|s| s.sha256.clone()),
                            state
                                .as_ref()
                                .map(|s| to_i64(s.size_bytes, "state"))
                                .transpose()?,
                            n,
                            now
                        ],
                    )?;
                    Some(to_i64(version.get(), "version")?)
                }
                None => None,
            };
            round
                .metrics
                .extend(completion.metrics.iter().map(|(k, v)| (k.clone(), *v)));
            tx.execute(
                "UPDATE rounds SET state = 'completed', stage = NULL, result_version = ?3, \
                 metrics = ?4, closed_at = ?5 WHERE federation = ?1 AND number = ?2",
                params![
                    federation.as_str(),
                    n,
                    result_version,
                    json(&round.metrics)?,
                    now
                ],
            )?;
            get_round(tx, federation, number)
        })
    }
}
