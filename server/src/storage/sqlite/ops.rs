//! `impl Storage for SqliteStorage`: each method is one short transaction or query.

use cohort_privacy::EpsDelta;
use rusqlite::{OptionalExtension, params};

use super::{
    CLIENT_COLS, MODEL_COLS, ROUND_COLS, SqliteStorage, account_from_row, check_metrics,
    client_from_row, current_round_in, get_client, get_federation, get_round, insert_round,
    latest_model, model_from_row, next_round_number, query_all, query_one, require_in_progress,
    round_from_row, round_no, to_i64, to_u64,
};
use crate::domain::{
    AbortReason, BlobRef, CertFingerprint, Client, ClientId, Federation, FederationId,
    ModelVersion, NewFederation, Round, RoundMetrics, RoundNumber, RoundStage, Timestamp,
    ValidationError, VersionNumber,
};
use crate::storage::{
    AccountRecord, LedgerEntry, LedgerSubject, RoundCompletion, RoundOpening, Storage, StorageError,
};

pub(super) fn json<T: serde::Serialize>(value: &T) -> Result<String, StorageError> {
    serde_json::to_string(value).map_err(|e| StorageError::Database(Box::new(e)))
}

fn check_token(token_sha256: &str) -> Result<(), StorageError> {
    if token_sha256.len() != 64 || !token_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            ValidationError::new("token", "expected the token's SHA-256 as 64 hex digits").into(),
        );
    }
    Ok(())
}

impl Storage for SqliteStorage {
    fn create_federation(
        &self,
        new: &NewFederation,
        initial_weights: &[u8],
        now: Timestamp,
    ) -> Result<Federation, StorageError> {
        let blob = self.blobs.put(initial_weights)?;
        self.write(|tx| {
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM federations WHERE id = ?1",
                    [new.id.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Err(StorageError::Duplicate {
                    what: format!("federation {}", new.id),
                });
            }
            tx.execute(
                "INSERT INTO federations (id, model_spec, config, state, created_at) \
                 VALUES (?1, ?2, ?3, 'active', ?4)",
                params![
                    new.id.as_str(),
                    json(&new.model_spec)?,
                    json(&new.config)?,
                    now.as_millis()
                ],
            )?;
            tx.execute(
                "INSERT INTO model_versions (federation, version, weights_sha256, weights_size, \
                 created_at) VALUES (?1, 0, ?2, ?3, ?4)",
                params![
                    new.id.as_str(),
                    blob.sha256,
                    to_i64(blob.size_bytes, "weights")?,
                    now.as_millis()
                ],
            )?;
            get_federation(tx, &new.id)
        })
    }

    fn federation(&self, id: &FederationId) -> Result<Federation, StorageError> {
        get_federation(&self.conn(), id)
    }

    fn federations(&self) -> Result<Vec<Federation>, StorageError> {
        let conn = self.conn();
        query_all(
            &conn,
            &format!(
                "SELECT {} FROM federations f JOIN model_versions m \
                 ON m.federation = f.id AND m.version = 0 ORDER BY f.id",
                super::FEDERATION_COLS
            ),
            [],
            super::federation_from_row,
        )
    }

    fn stop_federation(&self, id: &FederationId, reason: &str) -> Result<(), StorageError> {
        self.write(|tx| {
            get_federation(tx, id)?;
            tx.execute(
                "UPDATE federations SET state = 'stopped', stop_reason = ?2 \
                 WHERE id = ?1 AND state = 'active'",
                params![id.as_str(), reason],
            )?;
            Ok(())
        })
    }

    fn invite_client(
        &self,
        federation: &FederationId,
        id: &ClientId,
        budget: Option<EpsDelta>,
        token_sha256: &str,
        now: Timestamp,
    ) -> Result<Client, StorageError> {
        check_token(token_sha256)?;
        self.write(|tx| {
            let fed = get_federation(tx, federation)?;
            if get_client(tx, federation, id).is_ok() {
                return Err(StorageError::Duplicate {
                    what: format!("client {id} of federation {federation}"),
                });
            }
            let budget = budget.unwrap_or_else(|| fed.config.client_budget());
            tx.execute(
                "INSERT INTO clients (federation, id, enrolment, token_sha256, budget_epsilon, \
                 budget_delta, created_at) VALUES (?1, ?2, 'invited', ?3, ?4, ?5, ?6)",
                params![
                    federation.as_str(),
                    id.as_str(),
                    token_sha256.to_ascii_lowercase(),
                    budget.epsilon(),
                    budget.delta(),
                    now.as_millis()
                ],
            )?;
            get_client(tx, federation, id)
        })
    }

    fn enrol_client(
        &self,
        federation: &FederationId,
        token_sha256: &str,
        fingerprint: &CertFingerprint,
        sample_count: Option<u64>,
        now: Timestamp,
    ) -> Result<Client, StorageError> {
        check_token(token_sha256)?;
        let count = sample_count
            .map(|n| to_i64(n, "sample_count"))
            .transpose()?;
        self.write(|tx| {
            let id: Option<String> = tx
                .query_row(
                    "SELECT id FROM clients WHERE federation = ?1 AND token_sha256 = ?2 \
                     AND enrolment = 'invited' AND revoked = 0",
                    params![federation.as_str(), token_sha256.to_ascii_lowercase()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else {
                return Err(StorageError::not_found("an unused enrolment token"));
            };
            let taken: Option<String> = tx
                .query_row(
                    "SELECT id FROM clients WHERE federation = ?1 AND fingerprint = ?2",
                    params![federation.as_str(), fingerprint.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = taken {
                return Err(StorageError::Duplicate {
                    what: format!("a client ({other}) with this certificate"),
                });
            }
            tx.execute(
                "UPDATE clients SET enrolment = 'enrolled', token_sha256 = NULL, fingerprint = ?3, \
                 sample_count = coalesce(?4, sample_count), last_seen = ?5 \
                 WHERE federation = ?1 AND id = ?2",
                params![
                    federation.as_str(),
                    id,
                    fingerprint.as_str(),
                    count,
                    now.as_millis()
                ],
            )?;
            let id = ClientId::parse(&id).map_err(|e| StorageError::corrupt(e.to_string()))?;
            get_client(tx, federation, &id)
        })
    }

    fn client(&self, federation: &FederationId, id: &ClientId) -> Result<Client, StorageError> {
        get_client(&self.conn(), federation, id)
    }

    fn client_by_fingerprint(
        &self,
        federation: &FederationId,
        fingerprint: &CertFingerprint,
    ) -> Result<Client, StorageError> {
        query_one(
            &self.conn(),
            &format!(
                "SELECT {CLIENT_COLS} FROM clients WHERE federation = ?1 AND fingerprint = ?2 \
                 AND enrolment = 'enrolled'"
            ),
            params![federation.as_str(), fingerprint.as_str()],
            || format!("an enrolled client with this certificate in federation {federation}"),
            client_from_row,
        )
    }

    fn clients(&self, federation: &FederationId) -> Result<Vec<Client>, StorageError> {
        let conn = self.conn();
        get_federation(&conn, federation)?;
        query_all(
            &conn,
            &format!("SELECT {CLIENT_COLS} FROM clients WHERE federation = ?1 ORDER BY id"),
            [federation.as_str()],
            client_from_row,
        )
    }

    fn touch_client(
        &self,
        federation: &FederationId,
        id: &ClientId,
        sample_count: Option<u64>,
        now: Timestamp,
    ) -> Result<(), StorageError> {
        let count = sample_count
            .map(|n| to_i64(n, "sample_count"))
            .transpose()?;
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE clients SET last_seen = max(coalesce(last_seen, 0), ?3), \
                 sample_count = coalesce(?4, sample_count) WHERE federation = ?1 AND id = ?2",
                params![federation.as_str(), id.as_str(), now.as_millis(), count],
            )?;
            if n == 0 {
                return Err(StorageError::not_found(format!(
                    "client {id} of federation {federation}"
                )));
            }
            Ok(())
        })
    }

    fn set_client_budget(
        &self,
        federation: &FederationId,
        id: &ClientId,
        budget: EpsDelta,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE clients SET budget_epsilon = ?3, budget_delta = ?4 \
                 WHERE federation = ?1 AND id = ?2",
                params![
                    federation.as_str(),
                    id.as_str(),
                    budget.epsilon(),
                    budget.delta()
                ],
            )?;
            if n == 0 {
                return Err(StorageError::not_found(format!(
                    "client {id} of federation {federation}"
                )));
            }
            Ok(())
        })
    }

    fn revoke_client(&self, federation: &FederationId, id: &ClientId) -> Result<(), StorageError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE clients SET revoked = 1, token_sha256 = NULL WHERE federation = ?1 AND id = ?2",
                params![federation.as_str(), id.as_str()],
            )?;
            if n == 0 {
                return Err(StorageError::not_found(format!("client {id} of federation {federation}")));
            }
            Ok(())
        })
    }

    fn open_round(&self, opening: &RoundOpening) -> Result<Round, StorageError> {
        self.open_round_tx(opening)
    }

    fn record_skipped_round(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        base_version: VersionNumber,
        reason: &AbortReason,
        now: Timestamp,
    ) -> Result<Round, StorageError> {
        self.write(|tx| {
            let fed = get_federation(tx, federation)?;
            insert_round(tx, &fed, number, base_version)?;
            tx.execute(
                "INSERT INTO rounds (federation, number, base_version, state, abort_reason, \
                 opened_at, closed_at) VALUES (?1, ?2, ?3, 'aborted', ?4, ?5, ?5)",
                params![
                    federation.as_str(),
                    to_i64(number.get(), "round")?,
                    to_i64(base_version.get(), "version")?,
                    json(reason)?,
                    now.as_millis()
                ],
            )?;
            get_round(tx, federation, number)
        })
    }

    fn round(&self, federation: &FederationId, number: RoundNumber) -> Result<Round, StorageError> {
        get_round(&self.conn(), federation, number)
    }

    fn rounds(&self, federation: &FederationId) -> Result<Vec<Round>, StorageError> {
        let conn = self.conn();
        get_federation(&conn, federation)?;
        query_all(
            &conn,
            &format!("SELECT {ROUND_COLS} FROM rounds WHERE federation = ?1 ORDER BY number"),
            [federation.as_str()],
            |r| round_from_row(&conn, r),
        )
    }

    fn current_round(&self, federation: &FederationId) -> Result<Option<Round>, StorageError> {
        let conn = self.conn();
        get_federation(&conn, federation)?;
        current_round_in(&conn, federation)
    }

    fn next_round_number(&self, federation: &FederationId) -> Result<RoundNumber, StorageError> {
        next_round_number(&self.conn(), federation)
    }

    fn set_round_stage(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        stage: RoundStage,
    ) -> Result<(), StorageError> {
        self.write(|tx| {
            require_in_progress(tx, federation, number)?;
            tx.execute(
                "UPDATE rounds SET stage = ?3 WHERE federation = ?1 AND number = ?2",
                params![
                    federation.as_str(),
                    to_i64(number.get(), "round")?,
                    stage.as_str()
                ],
            )?;
            Ok(())
        })
    }

    fn record_round_metrics(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        metrics: &RoundMetrics,
    ) -> Result<(), StorageError> {
        check_metrics(metrics)?;
        self.write(|tx| {
            let mut round = require_in_progress(tx, federation, number)?;
            round
                .metrics
                .extend(metrics.iter().map(|(k, v)| (k.clone(), *v)));
            tx.execute(
                "UPDATE rounds SET metrics = ?3 WHERE federation = ?1 AND number = ?2",
                params![
                    federation.as_str(),
                    to_i64(number.get(), "round")?,
                    json(&round.metrics)?
                ],
            )?;
            Ok(())
        })
    }

    fn abort_round(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        reason: &AbortReason,
        now: Timestamp,
    ) -> Result<Round, StorageError> {
        self.write(|tx| {
            require_in_progress(tx, federation, number)?;
            tx.execute(
                "UPDATE rounds SET state = 'aborted', stage = NULL, abort_reason = ?3, closed_at = ?4 \
                 WHERE federation = ?1 AND number = ?2",
                params![federation.as_str(), to_i64(number.get(), "round")?, json(reason)?, now.as_millis()],
            )?;
            get_round(tx, federation, number)
        })
    }

    fn complete_round(
        &self,
        federation: &FederationId,
        number: RoundNumber,
        completion: &RoundCompletion<'_>,
    ) -> Result<Round, StorageError> {
        self.complete_round_tx(federation, number, completion)
    }

    fn model_version(
        &self,
        federation: &FederationId,
        version: VersionNumber,
    ) -> Result<ModelVersion, StorageError> {
        query_one(
            &self.conn(),
            &format!(
                "SELECT {MODEL_COLS} FROM model_versions WHERE federation = ?1 AND version = ?2"
            ),
            params![federation.as_str(), to_i64(version.get(), "version")?],
            || format!("model version {version} of federation {federation}"),
            model_from_row,
        )
    }

    fn model_versions(&self, federation: &FederationId) -> Result<Vec<ModelVersion>, StorageError> {
        let conn = self.conn();
        get_federation(&conn, federation)?;
        query_all(
            &conn,
            &format!(
                "SELECT {MODEL_COLS} FROM model_versions WHERE federation = ?1 ORDER BY version"
            ),
            [federation.as_str()],
            model_from_row,
        )
    }

    fn latest_model(&self, federation: &FederationId) -> Result<ModelVersion, StorageError> {
        latest_model(&self.conn(), federation)
    }

    fn read_blob(&self, blob: &BlobRef) -> Result<Vec<u8>, StorageError> {
        self.blobs.get(blob)
    }

    fn client_accounts(
        &self,
        federation: &FederationId,
    ) -> Result<Vec<(ClientId, AccountRecord)>, StorageError> {
        let conn = self.conn();
        get_federation(&conn, federation)?;
        query_all(
            &conn,
            "SELECT client, accountant, epsilon, delta, revision FROM client_accounts \
             WHERE federation = ?1 ORDER BY client",
            [federation.as_str()],
            |r| {
                let id: String = r.get(0)?;
                let id = ClientId::parse(&id).map_err(|e| StorageError::corrupt(e.to_string()))?;
                Ok((id, account_from_row(r, 1)?))
            },
        )
    }

    fn federation_account(
        &self,
        federation: &FederationId,
    ) -> Result<Option<AccountRecord>, StorageError> {
        let conn = self.conn();
        get_federation(&conn, federation)?;
        let rows = query_all(
            &conn,
            "SELECT accountant, epsilon, delta, revision FROM federation_accounts WHERE federation = ?1",
            [federation.as_str()],
            |r| account_from_row(r, 0),
        )?;
        Ok(rows.into_iter().next())
    }

    fn ledger_entries(
        &self,
        federation: &FederationId,
        client: Option<&ClientId>,
    ) -> Result<Vec<LedgerEntry>, StorageError> {
        let conn = self.conn();
        get_federation(&conn, federation)?;
        query_all(
            &conn,
            "SELECT round, client, sample_rate, noise_multiplier, steps, sample_count, \
             epsilon_after, delta, recorded_at FROM ledger_entries \
             WHERE federation = ?1 AND (?2 IS NULL OR client = ?2) ORDER BY id",
            params![federation.as_str(), client.map(ClientId::as_str)],
            |r| {
                let subject = match r.get::<_, Option<String>>(1)? {
                    Some(c) => LedgerSubject::Client(
                        ClientId::parse(&c).map_err(|e| StorageError::corrupt(e.to_string()))?,
                    ),
                    None => LedgerSubject::Federation,
                };
                Ok(LedgerEntry {
                    round: round_no(r.get(0)?)?,
                    subject,
                    sample_rate: r.get(2)?,
                    noise_multiplier: r.get(3)?,
                    steps: to_u64(r.get(4)?, "steps")?,
                    sample_count: r
                        .get::<_, Option<i64>>(5)?
                        .map(|n| to_u64(n, "sample count"))
                        .transpose()?,
                    epsilon_after: r.get(6)?,
                    delta: r.get(7)?,
                    recorded_at: Timestamp::from_millis(r.get(8)?),
                })
            },
        )
    }

    fn change_client_budget(
        &self,
        federation: &FederationId,
        id: &ClientId,
        op: crate::storage::BudgetOp,
        context: &crate::storage::AuditContext,
    ) -> Result<crate::storage::AuditRecord, StorageError> {
        self.write(|tx| super::audit::change_budget(tx, federation, id, op, context))
    }

    fn revoke_client_audited(
        &self,
        federation: &FederationId,
        id: &ClientId,
        context: &crate::storage::AuditContext,
    ) -> Result<Option<crate::storage::AuditRecord>, StorageError> {
        self.write(|tx| super::audit::revoke(tx, federation, id, context))
    }

    fn budget_audit(
        &self,
        federation: &FederationId,
        client: Option<&ClientId>,
    ) -> Result<Vec<crate::storage::AuditRecord>, StorageError> {
        let conn = self.conn();
        super::audit::list(&conn, federation, client)
    }

    fn open_evaluation(
        &self,
        opening: &crate::storage::evaluation::EvaluationOpening,
    ) -> Result<crate::storage::evaluation::StoredEvaluation, StorageError> {
        self.open_evaluation_tx(opening)
    }

    fn close_evaluation(
        &self,
        federation: &FederationId,
        number: u64,
        state: crate::storage::evaluation::StoredEvaluationState,
        result: &str,
        at: Timestamp,
    ) -> Result<crate::storage::evaluation::StoredEvaluation, StorageError> {
        self.close_evaluation_tx(federation, number, state, result, at)
    }

    fn evaluations(
        &self,
        federation: &FederationId,
    ) -> Result<Vec<crate::storage::evaluation::StoredEvaluation>, StorageError> {
        self.evaluations_query(federation)
    }
}
