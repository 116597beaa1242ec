//! Evaluations in SQLite: opening writes the row, the charges and the sites' accounts in one
//! transaction (fail closed: no site learns of a task whose spend is not on disk).

use rusqlite::{Row, params};

use super::{
    AccountKey, SqliteStorage, get_client, get_federation, query_all, query_one, to_i64, to_u64,
    version_no, write_account,
};
use crate::domain::{EnrolmentState, FederationId, Timestamp};
use crate::storage::StorageError;
use crate::storage::evaluation::{EvaluationOpening, StoredEvaluation, StoredEvaluationState};

const COLS: &str = "number, model_version, state, opening, result, opened_at, closed_at";

fn from_row(r: &Row<'_>) -> Result<StoredEvaluation, StorageError> {
    let state: String = r.get(2)?;
    Ok(StoredEvaluation {
        number: to_u64(r.get(0)?, "evaluation number")?,
        model_version: version_no(r.get(1)?)?,
        state: StoredEvaluationState::parse(&state)
            .ok_or_else(|| StorageError::corrupt(format!("evaluation state {state:?}")))?,
        opening: r.get(3)?,
        result: r.get(4)?,
        opened_at: Timestamp::from_millis(r.get(5)?),
        closed_at: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_millis),
    })
}

fn get(
    conn: &rusqlite::Connection,
    fed: &FederationId,
    number: i64,
) -> Result<StoredEvaluation, StorageError> {
    query_one(
        conn,
        &format!("SELECT {COLS} FROM evaluations WHERE federation = ?1 AND number = ?2"),
        params![fed.as_str(), number],
        || format!("evaluation {number} of federation {fed}"),
        from_row,
    )
}

impl SqliteStorage {
    pub(super) fn open_evaluation_tx(
        &self,
        o: &EvaluationOpening,
    ) -> Result<StoredEvaluation, StorageError> {
        let fed = &o.federation;
        self.write(|tx| {
            get_federation(tx, fed)?;
            // An evaluation left open by a previous process cannot be resumed (its running
            // sum died with it); its charges stand.
            tx.execute(
                "UPDATE evaluations SET state = 'aborted', closed_at = ?2, \
                 result = '{\"abort_reason\":\"server restarted\"}' \
                 WHERE federation = ?1 AND state = 'in_progress'",
                params![fed.as_str(), o.opened_at.as_millis()],
            )?;
            let number: i64 = tx.query_row(
                "SELECT coalesce(max(number), 0) + 1 FROM evaluations WHERE federation = ?1",
                params![fed.as_str()],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO evaluations (federation, number, model_version, state, opening, \
                 opened_at) VALUES (?1, ?2, ?3, 'in_progress', ?4, ?5)",
                params![
                    fed.as_str(),
                    number,
                    to_i64(o.model_version.get(), "version")?,
                    o.opening,
                    o.opened_at.as_millis()
                ],
            )?;
            for c in &o.charges {
                let client = get_client(tx, fed, &c.client)?;
                if client.revoked || client.enrolment != EnrolmentState::Enrolled {
                    return Err(StorageError::conflict(format!(
                        "client {} is not enrolled or is revoked and cannot be asked",
                        c.client
                    )));
                }
                tx.execute(
                    "INSERT INTO evaluation_charges (federation, evaluation, client, \
                     l1_sensitivity, l2_sensitivity, variance, epsilon_after, delta, recorded_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        fed.as_str(),
                        number,
                        c.client.as_str(),
                        c.charge.l1_sensitivity(),
                        c.charge.l2_sensitivity(),
                        c.charge.variance(),
                        c.update.epsilon,
                        c.update.delta,
                        o.opened_at.as_millis()
                    ],
                )?;
                write_account(
                    tx,
                    AccountKey::Client(fed, &c.client),
                    &c.update,
                    o.opened_at,
                )?;
            }
            get(tx, fed, number)
        })
    }

    pub(super) fn close_evaluation_tx(
        &self,
        fed: &FederationId,
        number: u64,
        state: StoredEvaluationState,
        result: &str,
        at: Timestamp,
    ) -> Result<StoredEvaluation, StorageError> {
        if state == StoredEvaluationState::InProgress {
            return Err(StorageError::conflict(
                "closing an evaluation needs an end state",
            ));
        }
        let n = to_i64(number, "evaluation")?;
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE evaluations SET state = ?3, result = ?4, closed_at = ?5 \
                 WHERE federation = ?1 AND number = ?2 AND state = 'in_progress'",
                params![fed.as_str(), n, state.as_str(), result, at.as_millis()],
            )?;
            if changed != 1 {
                return Err(StorageError::conflict(format!(
                    "evaluation {number} of federation {fed} is not open"
                )));
            }
            get(tx, fed, n)
        })
    }

    pub(super) fn evaluations_query(
        &self,
        fed: &FederationId,
    ) -> Result<Vec<StoredEvaluation>, StorageError> {
        let conn = self.conn();
        get_federation(&conn, fed)?;
        query_all(
            &conn,
            &format!("SELECT {COLS} FROM evaluations WHERE federation = ?1 ORDER BY number"),
            params![fed.as_str()],
            from_row,
        )
    }
}
