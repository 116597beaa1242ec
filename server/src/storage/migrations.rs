//! Numbered schema migrations, applied in order at startup.
//!
//! The database's `PRAGMA user_version` is the number of migrations applied. Each migration
//! runs in its own transaction together with the version bump, so a crash mid-migration
//! leaves the previous version intact. A database from a newer server is refused rather than
//! guessed at.

use rusqlite::Connection;

use super::StorageError;

/// The migrations, in order: entry `i` brings the schema to version `i + 1`. Append only;
/// never edit a released migration.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_budget_audit.sql"),
    include_str!("migrations/0003_bounded_inputs.sql"),
    include_str!("migrations/0004_evaluations.sql"),
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings `conn` up to [`SCHEMA_VERSION`]; returns how many migrations ran.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StorageError> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(StorageError::corrupt(format!(
            "database schema version {current} is newer than this server's {SCHEMA_VERSION}; \
             run a newer cohort-server"
        )));
    }
    let mut applied = 0;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as u32 + 1;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_refuse_newer_schemas() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn rows_from_before_issue_26_keep_loading_bounded_or_visibly_unbounded() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        let plain = serde_json::json!({
            "dp_sgd": {"noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1,
                       "batch_sample_rate": 0.1},
            "update_clip": null, "central_noise_multiplier": 0.0,
            "client_budget": {"epsilon": 1e300, "delta": 1e-5}, "federation_budget": null,
            "client_sampling_rate": 1.0, "min_clients": 1,
            "strategy": {"name": "fed_avg", "weighting": "sample_count"},
            "secure_aggregation": false
        });
        let mut median = plain.clone();
        median["strategy"] = serde_json::json!({"name": "coordinate_median"});
        median["client_budget"]["epsilon"] = 8.0.into();
        for (id, config) in [("plain", &plain), ("median", &median)] {
            conn.execute(
                "INSERT INTO federations VALUES (?1, '{}', ?2, 'active', NULL, 0)",
                rusqlite::params![id, config.to_string()],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO clients (federation, id, enrolment, budget_epsilon, budget_delta, created_at) \
             VALUES ('plain', 'a', 'invited', 1e300, 1e-5, 0)",
            [],
        )
        .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION - 2);
        let load = |id: &str| -> crate::domain::TrainingConfig {
            let text: String = conn
                .query_row("SELECT config FROM federations WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap();
            serde_json::from_str(&text).unwrap()
        };
        let plain = load("plain");
        assert!(plain.allows_unbounded_updates());
        assert_eq!(plain.client_budget().epsilon(), 1e6);
        assert!(!load("median").allows_unbounded_updates());
        let eps: f64 = conn
            .query_row("SELECT budget_epsilon FROM clients", [], |r| r.get(0))
            .unwrap();
        assert_eq!(eps, 1e6);
    }
}
