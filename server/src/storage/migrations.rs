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
    include_str!("migrations/0003_evaluations.sql"),
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
}
