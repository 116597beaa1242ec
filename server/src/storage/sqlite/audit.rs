//! Audited budget operations in SQLite: each reads the client, changes it and appends the
//! audit line in the caller's transaction.

use cohort_privacy::EpsDelta;
use cohort_protocol::budgets::AuditAction;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::{get_client, get_federation, query_all, to_u64};
use crate::domain::{ClientId, FederationId, Timestamp};
use crate::storage::{AuditContext, AuditRecord, BudgetOp, StorageError};

/// ε the client has spent according to its account's cached value (0 without an account).
fn spent_epsilon(
    tx: &Transaction<'_>,
    fed: &FederationId,
    id: &ClientId,
) -> Result<f64, StorageError> {
    let eps: Option<f64> = tx
        .query_row(
            "SELECT epsilon FROM client_accounts WHERE federation = ?1 AND client = ?2",
            params![fed.as_str(), id.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(eps.unwrap_or(0.0).max(0.0))
}

fn insert(
    tx: &Transaction<'_>,
    fed: &FederationId,
    id: &ClientId,
    (action, old, new): (AuditAction, EpsDelta, EpsDelta),
    context: &AuditContext,
    spent: f64,
) -> Result<AuditRecord, StorageError> {
    tx.execute(
        "INSERT INTO budget_audit (federation, client, action, actor, at, old_epsilon, old_delta, \
         new_epsilon, new_delta, spent_epsilon, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            fed.as_str(),
            id.as_str(),
            action.as_str(),
            context.actor,
            context.at.as_millis(),
            old.epsilon(),
            old.delta(),
            new.epsilon(),
            new.delta(),
            spent,
            context.reason
        ],
    )?;
    Ok(AuditRecord {
        id: to_u64(tx.last_insert_rowid(), "audit id")?,
        federation: fed.clone(),
        client: id.clone(),
        action,
        context: context.clone(),
        old_budget: old,
        new_budget: new,
        spent_epsilon: spent,
    })
}

pub(super) fn change_budget(
    tx: &Transaction<'_>,
    fed: &FederationId,
    id: &ClientId,
    op: BudgetOp,
    context: &AuditContext,
) -> Result<AuditRecord, StorageError> {
    let client = get_client(tx, fed, id)?;
    let new = op.apply(client.budget)?;
    tx.execute(
        "UPDATE clients SET budget_epsilon = ?3 WHERE federation = ?1 AND id = ?2",
        params![fed.as_str(), id.as_str(), new.epsilon()],
    )?;
    let spent = spent_epsilon(tx, fed, id)?;
    insert(
        tx,
        fed,
        id,
        (op.action(), client.budget, new),
        context,
        spent,
    )
}

pub(super) fn revoke(
    tx: &Transaction<'_>,
    fed: &FederationId,
    id: &ClientId,
    context: &AuditContext,
) -> Result<Option<AuditRecord>, StorageError> {
    let client = get_client(tx, fed, id)?;
    if client.revoked {
        return Ok(None);
    }
    tx.execute(
        "UPDATE clients SET revoked = 1, token_sha256 = NULL WHERE federation = ?1 AND id = ?2",
        params![fed.as_str(), id.as_str()],
    )?;
    let spent = spent_epsilon(tx, fed, id)?;
    insert(
        tx,
        fed,
        id,
        (AuditAction::Revoke, client.budget, client.budget),
        context,
        spent,
    )
    .map(Some)
}

fn action_from(s: &str) -> Result<AuditAction, StorageError> {
    match s {
        "set_budget" => Ok(AuditAction::SetBudget),
        "raise_budget" => Ok(AuditAction::RaiseBudget),
        "revoke" => Ok(AuditAction::Revoke),
        other => Err(StorageError::corrupt(format!("audit action {other:?}"))),
    }
}

fn budget(r: &Row<'_>, e: usize, what: &str) -> Result<EpsDelta, StorageError> {
    EpsDelta::new(r.get(e)?, r.get(e + 1)?)
        .map_err(|err| StorageError::corrupt(format!("{what} of an audit line: {err}")))
}

pub(super) fn list(
    conn: &Connection,
    fed: &FederationId,
    client: Option<&ClientId>,
) -> Result<Vec<AuditRecord>, StorageError> {
    get_federation(conn, fed)?;
    query_all(
        conn,
        "SELECT id, client, action, actor, at, old_epsilon, old_delta, new_epsilon, new_delta, \
         spent_epsilon, reason FROM budget_audit \
         WHERE federation = ?1 AND (?2 IS NULL OR client = ?2) ORDER BY id",
        params![fed.as_str(), client.map(ClientId::as_str)],
        |r| {
            let client: String = r.get(1)?;
            let action: String = r.get(2)?;
            Ok(AuditRecord {
                id: to_u64(r.get(0)?, "audit id")?,
                federation: fed.clone(),
                client: ClientId::parse(&client)
                    .map_err(|e| StorageError::corrupt(format!("audit client: {e}")))?,
                action: action_from(&action)?,
                context: AuditContext {
                    actor: r.get(3)?,
                    at: Timestamp::from_millis(r.get(4)?),
                    reason: r.get(10)?,
                },
                old_budget: budget(r, 5, "old budget")?,
                new_budget: budget(r, 7, "new budget")?,
                spent_epsilon: r.get(9)?,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;
    use crate::storage::tests::{create_fed, enrol, fed_id, open_store, opening, spec};

    fn ctx(reason: &str) -> AuditContext {
        AuditContext::new("alice", Some(reason), true, Timestamp::from_millis(5_000)).unwrap()
    }

    /// A store with client c1 enrolled (budget 50) and charged ε = 1.0 by one round.
    fn charged() -> (tempfile::TempDir, crate::storage::SqliteStorage, ClientId) {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(tmp.path());
        create_fed(&store, spec());
        let now = Timestamp::from_millis(2_000);
        let c1 = enrol(&store, 1, None, now);
        store.open_round(&opening(&store, &[&c1], now)).unwrap();
        (tmp, store, c1.id)
    }

    fn spent(store: &crate::storage::SqliteStorage, id: &ClientId) -> f64 {
        let accounts = store.client_accounts(&fed_id()).unwrap();
        accounts.iter().find(|(c, _)| c == id).unwrap().1.epsilon
    }

    #[test]
    fn lowering_below_the_spend_is_audited_and_keeps_the_spend() {
        let (_tmp, store, c1) = charged();
        let rec = store
            .change_client_budget(&fed_id(), &c1, BudgetOp::Set(0.5), &ctx("pause site"))
            .unwrap();
        assert_eq!(rec.action, AuditAction::SetBudget);
        assert_eq!(
            (rec.old_budget.epsilon(), rec.new_budget.epsilon()),
            (50.0, 0.5)
        );
        assert_eq!(rec.new_budget.delta(), 1e-5, "delta never changes");
        assert_eq!(rec.spent_epsilon, 1.0);
        assert_eq!(store.client(&fed_id(), &c1).unwrap().budget.epsilon(), 0.5);
        assert_eq!(spent(&store, &c1), 1.0, "spend is untouched");
        assert_eq!(store.ledger_entries(&fed_id(), Some(&c1)).unwrap().len(), 1);

        let rec = store
            .change_client_budget(&fed_id(), &c1, BudgetOp::Raise(2.0), &ctx("approved"))
            .unwrap();
        assert_eq!(
            (rec.old_budget.epsilon(), rec.new_budget.epsilon()),
            (0.5, 2.5)
        );
        let log = store.budget_audit(&fed_id(), None).unwrap();
        assert_eq!(log.len(), 2);
        assert!(log[0].id < log[1].id);
        assert_eq!(log[0].context.actor, "alice");
        assert_eq!(log[0].context.reason.as_deref(), Some("pause site"));
        assert_eq!(log[1].action, AuditAction::RaiseBudget);
        assert_eq!(log[1].context.at, Timestamp::from_millis(5_000));
    }

    #[test]
    fn refused_operations_change_nothing() {
        let (_tmp, store, c1) = charged();
        assert!(matches!(
            store.change_client_budget(&fed_id(), &c1, BudgetOp::Raise(-1.0), &ctx("x")),
            Err(StorageError::Invalid(_))
        ));
        let ghost = ClientId::parse("ghost").unwrap();
        assert!(matches!(
            store.change_client_budget(&fed_id(), &ghost, BudgetOp::Set(1.0), &ctx("x")),
            Err(StorageError::NotFound { .. })
        ));
        assert!(matches!(
            store.revoke_client_audited(&fed_id(), &ghost, &ctx("x")),
            Err(StorageError::NotFound { .. })
        ));
        assert!(store.budget_audit(&fed_id(), None).unwrap().is_empty());
        assert_eq!(store.client(&fed_id(), &c1).unwrap().budget.epsilon(), 50.0);
    }

    #[test]
    fn revocation_is_audited_once() {
        let (_tmp, store, c1) = charged();
        let first = store
            .revoke_client_audited(&fed_id(), &c1, &ctx("left the study"))
            .unwrap()
            .unwrap();
        assert_eq!(first.action, AuditAction::Revoke);
        assert_eq!(first.old_budget, first.new_budget);
        assert!(store.client(&fed_id(), &c1).unwrap().revoked);
        assert!(
            store
                .revoke_client_audited(&fed_id(), &c1, &ctx("again"))
                .unwrap()
                .is_none()
        );
        assert_eq!(store.budget_audit(&fed_id(), Some(&c1)).unwrap().len(), 1);
        assert_eq!(spent(&store, &c1), 1.0);
    }

    #[test]
    fn no_statement_can_erase_spend_or_rewrite_the_audit_log() {
        let (tmp, store, c1) = charged();
        store
            .change_client_budget(&fed_id(), &c1, BudgetOp::Set(3.0), &ctx("x"))
            .unwrap();
        {
            let conn = store.conn_for_tests();
            for sql in [
                "UPDATE client_accounts SET epsilon = 0",
                "DELETE FROM client_accounts",
                "DELETE FROM ledger_entries",
                "UPDATE budget_audit SET reason = 'forged'",
                "DELETE FROM budget_audit",
            ] {
                assert!(conn.execute(sql, []).is_err(), "{sql} must be refused");
            }
        }
        assert_eq!(spent(&store, &c1), 1.0);
        drop(store);
        // Durable: a restart finds the audit line.
        let store = open_store(tmp.path());
        let log = store.budget_audit(&fed_id(), Some(&c1)).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].new_budget.epsilon(), 3.0);
    }
}
