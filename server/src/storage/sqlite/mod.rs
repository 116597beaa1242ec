//! The SQLite implementation of [`Storage`]: one database file plus a blob folder in the
//! server's data dir.
//!
//! Settings: WAL journal (readers never block the writer), `synchronous=FULL` (a committed
//! transaction survives power loss, which the ledger needs), foreign keys on, 5 s busy
//! timeout. One connection behind a mutex serves the process; SQLite serialises writers
//! anyway, and every call is short.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cohort_privacy::EpsDelta;
use rusqlite::{Connection, Row, Transaction, TransactionBehavior, params};

use super::blobs::BlobDir;
use super::migrations;
use super::{AccountRecord, AccountUpdate, StorageError};
use crate::domain::{
    AbortReason, BlobRef, CertFingerprint, Client, ClientId, EnrolmentState, Federation,
    FederationId, FederationState, ModelVersion, Round, RoundMetrics, RoundNumber, RoundStage,
    RoundState, Timestamp, TrainingConfig, ValidationError, VersionNumber,
};

/// The database file's name inside the data dir.
pub const DATABASE_FILE: &str = "cohort.sqlite3";
/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "cohort.lock";
/// The blob folder's name inside the data dir.
pub const BLOB_DIR: &str = "blobs";

/// What [`SqliteStorage::open`] found and repaired, for the startup log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpenReport {
    /// Whether the database was created by this call.
    pub created: bool,
    /// Migrations applied by this call.
    pub migrations_applied: u32,
    /// Rounds that were in flight when the server last stopped, now aborted
    /// ("server restarted"); their ledger entries stand.
    pub aborted_rounds: Vec<(FederationId, RoundNumber)>,
    /// Temporary or unreferenced blob files removed.
    pub blobs_swept: usize,
}

/// SQLite-backed [`Storage`].
#[derive(Debug)]
pub struct SqliteStorage {
    conn: Mutex<Connection>,
    blobs: BlobDir,
    data_dir: PathBuf,
    /// Held (exclusive advisory lock) for the store's lifetime: a second server on the same
    /// data dir would otherwise "recover" — abort — the first one's in-flight round.
    _lock: std::fs::File,
}

fn to_i64(n: u64, field: &'static str) -> Result<i64, StorageError> {
    i64::try_from(n).map_err(|_| ValidationError::new(field, "too large").into())
}

fn to_u64(n: i64, what: &str) -> Result<u64, StorageError> {
    u64::try_from(n).map_err(|_| StorageError::corrupt(format!("negative {what}")))
}

fn round_no(n: i64) -> Result<RoundNumber, StorageError> {
    RoundNumber::new(to_u64(n, "round number")?)
        .map_err(|e| StorageError::corrupt(format!("round number: {e}")))
}

fn version_no(n: i64) -> Result<VersionNumber, StorageError> {
    VersionNumber::new(to_u64(n, "model version")?)
        .map_err(|e| StorageError::corrupt(format!("model version: {e}")))
}

fn parse_stored<T>(what: &str, r: Result<T, ValidationError>) -> Result<T, StorageError> {
    r.map_err(|e| StorageError::corrupt(format!("{what}: {e}")))
}

fn check_metrics(metrics: &RoundMetrics) -> Result<(), StorageError> {
    for (name, value) in metrics {
        if !value.is_finite() {
            return Err(ValidationError::new("metrics", format!("{name} is not finite")).into());
        }
    }
    Ok(())
}

impl SqliteStorage {
    /// Opens the store in `data_dir`, creating the folder and database on first start,
    /// running pending migrations, aborting rounds left in flight by a crash ("server
    /// restarted") and sweeping half-written blobs.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<(Self, OpenReport), StorageError> {
        let data_dir = data_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| StorageError::io(format!("creating {}", data_dir.display()), e))?;
        let lock_path = data_dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StorageError::io(format!("opening {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::conflict(format!(
                    "data dir {} is in use by another cohort-server process",
                    data_dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StorageError::io(
                    format!("locking {}", lock_path.display()),
                    e,
                ));
            }
        }
        let db_path = data_dir.join(DATABASE_FILE);
        let created = !db_path.exists();
        let mut conn = Connection::open(&db_path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Database(
                format!("SQLite refused WAL mode (got {mode})").into(),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let migrations_applied = migrations::migrate(&mut conn)?;
        let blobs = BlobDir::open(data_dir.join(BLOB_DIR))?;

        let aborted_rounds = abort_in_flight_rounds(&mut conn)?;
        let referenced = referenced_blobs(&conn)?;
        let blobs_swept = blobs.sweep(&referenced)?;

        let report = OpenReport {
            created,
            migrations_applied,
            aborted_rounds,
            blobs_swept,
        };
        Ok((
            Self {
                conn: Mutex::new(conn),
                blobs,
                data_dir,
                _lock: lock,
            },
            report,
        ))
    }

    /// The data dir this store lives in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back (rusqlite rolls back on
        // drop), so the connection is still consistent: keep serving.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The raw connection, for tests that tamper with rows.
    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> MutexGuard<'_, Connection> {
        self.conn()
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// Marks every in-flight round aborted ("server restarted"): the orchestrator's in-memory
/// state (running sums, SecAgg sessions) died with the process and cannot be resumed.
fn abort_in_flight_rounds(
    conn: &mut Connection,
) -> Result<Vec<(FederationId, RoundNumber)>, StorageError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows: Vec<(String, i64)> = {
        let mut stmt = tx.prepare(
            "SELECT federation, number FROM rounds WHERE state = 'in_progress' \
             ORDER BY federation, number",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let reason = serde_json::to_string(&AbortReason::ServerRestarted)
        .map_err(|e| StorageError::Database(Box::new(e)))?;
    let now = Timestamp::now().as_millis();
    let mut out = Vec::with_capacity(rows.len());
    for (fed, number) in rows {
        tx.execute(
            "UPDATE rounds SET state = 'aborted', stage = NULL, abort_reason = ?3, closed_at = ?4 \
             WHERE federation = ?1 AND number = ?2",
            params![fed, number, reason, now],
        )?;
        out.push((
            parse_stored("federation id", FederationId::parse(&fed))?,
            round_no(number)?,
        ));
    }
    tx.commit()?;
    Ok(out)
}

fn referenced_blobs(conn: &Connection) -> Result<HashSet<String>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT weights_sha256 FROM model_versions \
         UNION SELECT state_sha256 FROM model_versions WHERE state_sha256 IS NOT NULL",
    )?;
    let set = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    Ok(set)
}

// ---- row decoding -------------------------------------------------------------------------

const FEDERATION_COLS: &str = "f.id, f.model_spec, f.config, f.state, f.stop_reason, f.created_at, \
     m.weights_sha256, m.weights_size";

fn federation_from_row(r: &Row<'_>) -> Result<Federation, StorageError> {
    let id: String = r.get(0)?;
    let spec: String = r.get(1)?;
    let config: String = r.get(2)?;
    let state: String = r.get(3)?;
    let stop_reason: Option<String> = r.get(4)?;
    let id = parse_stored("federation id", FederationId::parse(&id))?;
    let model_spec = serde_json::from_str(&spec)
        .map_err(|e| StorageError::corrupt(format!("model spec of {id}: {e}")))?;
    let config: TrainingConfig = serde_json::from_str(&config)
        .map_err(|e| StorageError::corrupt(format!("training config of {id}: {e}")))?;
    let state = match state.as_str() {
        "active" => FederationState::Active,
        _ => FederationState::Stopped {
            reason: stop_reason.unwrap_or_default(),
        },
    };
    Ok(Federation {
        id,
        model_spec,
        config,
        state,
        created_at: Timestamp::from_millis(r.get(5)?),
        initial_weights: BlobRef {
            sha256: r.get(6)?,
            size_bytes: to_u64(r.get(7)?, "blob size")?,
        },
    })
}

const CLIENT_COLS: &str = "federation, id, fingerprint, enrolment, revoked, last_seen, \
     budget_epsilon, budget_delta, sample_count, created_at";

fn client_from_row(r: &Row<'_>) -> Result<Client, StorageError> {
    let fed: String = r.get(0)?;
    let id: String = r.get(1)?;
    let fingerprint: Option<String> = r.get(2)?;
    let enrolment: String = r.get(3)?;
    let budget = EpsDelta::new(r.get(6)?, r.get(7)?)
        .map_err(|e| StorageError::corrupt(format!("budget of client {id}: {e}")))?;
    let sample_count: Option<i64> = r.get(8)?;
    Ok(Client {
        federation: parse_stored("federation id", FederationId::parse(&fed))?,
        id: parse_stored("client id", ClientId::parse(&id))?,
        fingerprint: fingerprint
            .map(|f| parse_stored("fingerprint", CertFingerprint::parse(&f)))
            .transpose()?,
        enrolment: match enrolment.as_str() {
            "enrolled" => EnrolmentState::Enrolled,
            _ => EnrolmentState::Invited,
        },
        revoked: r.get::<_, i64>(4)? != 0,
        last_seen: r.get::<_, Option<i64>>(5)?.map(Timestamp::from_millis),
        budget,
        sample_count: sample_count
            .map(|n| to_u64(n, "sample count"))
            .transpose()?,
        created_at: Timestamp::from_millis(r.get(9)?),
    })
}

const ROUND_COLS: &str = "federation, number, base_version, state, stage, result_version, \
     abort_reason, metrics, opened_at, closed_at";

fn round_from_row(tx: &Connection, r: &Row<'_>) -> Result<Round, StorageError> {
    let fed: String = r.get(0)?;
    let number: i64 = r.get(1)?;
    let state: String = r.get(3)?;
    let stage: Option<String> = r.get(4)?;
    let result_version: Option<i64> = r.get(5)?;
    let abort_reason: Option<String> = r.get(6)?;
    let metrics: String = r.get(7)?;
    let state = match state.as_str() {
        "in_progress" => RoundState::InProgress {
            stage: stage
                .as_deref()
                .and_then(RoundStage::parse)
                .ok_or_else(|| StorageError::corrupt(format!("stage of round {number}")))?,
        },
        "completed" => RoundState::Completed {
            version: result_version.map(version_no).transpose()?,
        },
        _ => RoundState::Aborted {
            reason: serde_json::from_str(abort_reason.as_deref().unwrap_or("null")).map_err(
                |e| StorageError::corrupt(format!("abort reason of round {number}: {e}")),
            )?,
        },
    };
    let mut stmt = tx.prepare_cached(
        "SELECT client FROM round_participants WHERE federation = ?1 AND round = ?2 ORDER BY client",
    )?;
    let participants = stmt
        .query_map(params![fed, number], |row| row.get::<_, String>(0))?
        .map(|c| parse_stored("client id", ClientId::parse(&c?)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Round {
        federation: parse_stored("federation id", FederationId::parse(&fed))?,
        number: round_no(number)?,
        base_version: version_no(r.get(2)?)?,
        state,
        participants,
        metrics: serde_json::from_str(&metrics)
            .map_err(|e| StorageError::corrupt(format!("metrics of round {number}: {e}")))?,
        opened_at: Timestamp::from_millis(r.get(8)?),
        closed_at: r.get::<_, Option<i64>>(9)?.map(Timestamp::from_millis),
    })
}

const MODEL_COLS: &str = "federation, version, weights_sha256, weights_size, state_sha256, state_size, round, created_at";

fn model_from_row(r: &Row<'_>) -> Result<ModelVersion, StorageError> {
    let fed: String = r.get(0)?;
    let state_sha: Option<String> = r.get(4)?;
    let state_size: Option<i64> = r.get(5)?;
    let strategy_state = match (state_sha, state_size) {
        (Some(sha256), Some(size)) => Some(BlobRef {
            sha256,
            size_bytes: to_u64(size, "blob size")?,
        }),
        _ => None,
    };
    Ok(ModelVersion {
        federation: parse_stored("federation id", FederationId::parse(&fed))?,
        version: version_no(r.get(1)?)?,
        weights: BlobRef {
            sha256: r.get(2)?,
            size_bytes: to_u64(r.get(3)?, "blob size")?,
        },
        strategy_state,
        round: r.get::<_, Option<i64>>(6)?.map(round_no).transpose()?,
        created_at: Timestamp::from_millis(r.get(7)?),
    })
}

fn account_from_row(r: &Row<'_>, offset: usize) -> Result<AccountRecord, StorageError> {
    Ok(AccountRecord {
        accountant: r.get(offset)?,
        epsilon: r.get(offset + 1)?,
        delta: r.get(offset + 2)?,
        revision: to_u64(r.get(offset + 3)?, "account revision")?,
    })
}

/// Runs a single-row query whose closure may fail with a [`StorageError`].
fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: impl FnOnce() -> String,
    decode: impl FnOnce(&Row<'_>) -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    match rows.next()? {
        Some(row) => decode(row),
        None => Err(StorageError::not_found(what())),
    }
}

fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut decode: impl FnMut(&Row<'_>) -> Result<T, StorageError>,
) -> Result<Vec<T>, StorageError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn get_federation(conn: &Connection, id: &FederationId) -> Result<Federation, StorageError> {
    query_one(
        conn,
        &format!(
            "SELECT {FEDERATION_COLS} FROM federations f JOIN model_versions m \
             ON m.federation = f.id AND m.version = 0 WHERE f.id = ?1"
        ),
        [id.as_str()],
        || format!("federation {id}"),
        federation_from_row,
    )
}

fn get_round(conn: &Connection, fed: &FederationId, n: RoundNumber) -> Result<Round, StorageError> {
    query_one(
        conn,
        &format!("SELECT {ROUND_COLS} FROM rounds WHERE federation = ?1 AND number = ?2"),
        params![fed.as_str(), to_i64(n.get(), "round")?],
        || format!("round {n} of federation {fed}"),
        |r| round_from_row(conn, r),
    )
}

fn get_client(
    conn: &Connection,
    fed: &FederationId,
    id: &ClientId,
) -> Result<Client, StorageError> {
    query_one(
        conn,
        &format!("SELECT {CLIENT_COLS} FROM clients WHERE federation = ?1 AND id = ?2"),
        params![fed.as_str(), id.as_str()],
        || format!("client {id} of federation {fed}"),
        client_from_row,
    )
}

fn latest_model(conn: &Connection, fed: &FederationId) -> Result<ModelVersion, StorageError> {
    query_one(
        conn,
        &format!(
            "SELECT {MODEL_COLS} FROM model_versions WHERE federation = ?1 \
             ORDER BY version DESC LIMIT 1"
        ),
        [fed.as_str()],
        || format!("federation {fed}"),
        model_from_row,
    )
}

/// Fails with `Conflict` unless round `n` of `fed` is in flight.
fn require_in_progress(
    conn: &Connection,
    fed: &FederationId,
    n: RoundNumber,
) -> Result<Round, StorageError> {
    let round = get_round(conn, fed, n)?;
    if !round.state.is_in_progress() {
        return Err(StorageError::conflict(format!(
            "round {n} of federation {fed} is not in progress"
        )));
    }
    Ok(round)
}

fn next_round_number(conn: &Connection, fed: &FederationId) -> Result<RoundNumber, StorageError> {
    get_federation(conn, fed)?;
    let last: Option<i64> = conn.query_row(
        "SELECT max(number) FROM rounds WHERE federation = ?1",
        [fed.as_str()],
        |r| r.get(0),
    )?;
    match last {
        None => Ok(RoundNumber::FIRST),
        Some(n) => Ok(round_no(n)?.next()),
    }
}

fn write_account(
    tx: &Transaction<'_>,
    table_key: AccountKey<'_>,
    update: &AccountUpdate,
    now: Timestamp,
) -> Result<(), StorageError> {
    let new_revision = to_i64(update.expected_revision.saturating_add(1), "revision")?;
    let expected = to_i64(update.expected_revision, "revision")?;
    let changed = match table_key {
        AccountKey::Client(fed, client) if update.expected_revision == 0 => tx.execute(
            "INSERT INTO client_accounts (federation, client, accountant, epsilon, delta, revision, \
             updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6) ON CONFLICT DO NOTHING",
            params![fed.as_str(), client.as_str(), update.accountant, update.epsilon, update.delta, now.as_millis()],
        )?,
        AccountKey::Client(fed, client) => tx.execute(
            "UPDATE client_accounts SET accountant = ?3, epsilon = ?4, delta = ?5, revision = ?6, \
             updated_at = ?7 WHERE federation = ?1 AND client = ?2 AND revision = ?8",
            params![fed.as_str(), client.as_str(), update.accountant, update.epsilon, update.delta,
                    new_revision, now.as_millis(), expected],
        )?,
        AccountKey::Federation(fed) if update.expected_revision == 0 => tx.execute(
            "INSERT INTO federation_accounts (federation, accountant, epsilon, delta, revision, \
             updated_at) VALUES (?1, ?2, ?3, ?4, 1, ?5) ON CONFLICT DO NOTHING",
            params![fed.as_str(), update.accountant, update.epsilon, update.delta, now.as_millis()],
        )?,
        AccountKey::Federation(fed) => tx.execute(
            "UPDATE federation_accounts SET accountant = ?2, epsilon = ?3, delta = ?4, revision = ?5, \
             updated_at = ?6 WHERE federation = ?1 AND revision = ?7",
            params![fed.as_str(), update.accountant, update.epsilon, update.delta, new_revision,
                    now.as_millis(), expected],
        )?,
    };
    if changed != 1 {
        let who = match table_key {
            AccountKey::Client(_, c) => format!("client {c}"),
            AccountKey::Federation(f) => format!("federation {f}"),
        };
        return Err(StorageError::conflict(format!(
            "the privacy account of {who} changed since it was read; recompute admission"
        )));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum AccountKey<'a> {
    Client(&'a FederationId, &'a ClientId),
    Federation(&'a FederationId),
}

fn insert_round(
    tx: &Transaction<'_>,
    fed: &Federation,
    number: RoundNumber,
    base: VersionNumber,
) -> Result<(), StorageError> {
    if let FederationState::Stopped { reason } = &fed.state {
        return Err(StorageError::conflict(format!(
            "federation {} is stopped: {reason}",
            fed.id
        )));
    }
    let expected = next_round_number(tx, &fed.id)?;
    if number != expected {
        return Err(StorageError::conflict(format!(
            "round {number} is not next for federation {} (expected {expected})",
            fed.id
        )));
    }
    let latest = latest_model(tx, &fed.id)?;
    if latest.version != base {
        return Err(StorageError::conflict(format!(
            "round must start from the latest model version {} (got {base})",
            latest.version
        )));
    }
    if let Some(current) = current_round_in(tx, &fed.id)? {
        return Err(StorageError::conflict(format!(
            "round {} of federation {} is still in progress",
            current.number, fed.id
        )));
    }
    Ok(())
}

fn current_round_in(conn: &Connection, fed: &FederationId) -> Result<Option<Round>, StorageError> {
    let rows = query_all(
        conn,
        &format!("SELECT {ROUND_COLS} FROM rounds WHERE federation = ?1 AND state = 'in_progress'"),
        [fed.as_str()],
        |r| round_from_row(conn, r),
    )?;
    Ok(rows.into_iter().next())
}

mod audit;
mod evaluation;
mod ops;
mod round_tx;
