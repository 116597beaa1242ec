//! Privacy budgets as people and clients see them, and the audited operations admins run on
//! them.
//!
//! Every number shown comes from the ledger: a client's spend is recomputed from its stored
//! accountant at its budget's δ (as admission control does), and its history is the ledger's
//! own entries. The status rules are pure functions ([`budget_status`]) so they are tested
//! without a server.

use std::collections::HashMap;

use cohort_privacy::EpsDelta;
use cohort_protocol::budgets::{
    AuditEntry, BudgetChangeRequest, BudgetChanged, BudgetStatus, EpsilonPoint, MyBudget,
};
use cohort_protocol::messages::{BudgetView, BudgetsView, ClientView};

use super::{Service, client_view, wire_client};
use crate::auth::Claims;
use crate::domain::{
    CertFingerprint, Client, ClientId, EnrolmentState, Federation, FederationId, Timestamp,
};
use crate::http::error::ApiError;
use crate::ledger::{DefaultAccountant, Refusal, RoundCharge, admit_client, client_spends};
use crate::storage::{
    AccountRecord, AuditContext, AuditRecord, BudgetOp, LedgerEntry, LedgerSubject, StorageError,
};

/// What one more round would do to a client's budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Projection {
    /// It fits; ε after the round.
    Fits(f64),
    /// It would exceed the budget; ε after the round.
    Exceeds(f64),
    /// The account or the federation's charge cannot be evaluated (fail closed).
    Unverifiable,
}

impl Projection {
    /// ε after one more round, when known.
    pub fn epsilon(self) -> Option<f64> {
        match self {
            Self::Fits(e) | Self::Exceeds(e) => Some(e),
            Self::Unverifiable => None,
        }
    }
}

/// Projects one more round of `charge` onto a client's account.
pub fn project(
    client: &Client,
    account: Option<&AccountRecord>,
    charge: Option<&RoundCharge>,
) -> Projection {
    let Some(charge) = charge else {
        return Projection::Unverifiable;
    };
    match admit_client::<DefaultAccountant>(client, account, charge) {
        Ok(admitted) => Projection::Fits(admitted.update.epsilon),
        Err(Refusal::WouldExceed { projected, .. }) if !projected.is_nan() => {
            Projection::Exceeds(projected)
        }
        Err(_) => Projection::Unverifiable,
    }
}

/// A client's status. `spent` is `None` when its account cannot be verified.
///
/// Revoked wins over everything; a client that has not enrolled is pending; otherwise it is
/// exhausted when its spend has reached its budget (a budget lowered below the spend lands
/// here), when one more round would not fit, or when anything cannot be verified.
pub fn budget_status(client: &Client, spent: Option<f64>, next: Projection) -> BudgetStatus {
    if client.revoked {
        return BudgetStatus::Revoked;
    }
    if client.enrolment != EnrolmentState::Enrolled {
        return BudgetStatus::Pending;
    }
    match (spent, next) {
        (Some(s), Projection::Fits(_)) if s < client.budget.epsilon() => BudgetStatus::Eligible,
        _ => BudgetStatus::Exhausted,
    }
}

/// The spend to show: the ε the ledger recorded with the account's last entry, once the
/// stored accountant has been re-verified (`recomputed` is `None` when it cannot be). The
/// recorded value is shown rather than the recomputation because the two may differ in the
/// last bit, and people compare the dashboard with the ledger. If the account was recorded at
/// another δ than the budget's, the recomputation at the budget's δ is shown.
pub fn shown_spend(
    recomputed: Option<f64>,
    account: Option<&AccountRecord>,
    budget: EpsDelta,
) -> Option<f64> {
    match (recomputed, account) {
        (None, _) => None,
        (Some(_), Some(a))
            if a.delta == budget.delta() && a.epsilon.is_finite() && a.epsilon >= 0.0 =>
        {
            Some(a.epsilon)
        }
        (Some(r), _) => Some(r),
    }
}

fn ms(t: Timestamp) -> u64 {
    u64::try_from(t.as_millis()).unwrap_or(0)
}

/// Everything the rows of one federation are computed from, read in one go.
struct Snapshot {
    federation: Federation,
    clients: Vec<Client>,
    accounts: HashMap<ClientId, AccountRecord>,
    federation_account: Option<AccountRecord>,
    entries: Vec<LedgerEntry>,
}

impl Snapshot {
    fn rows(&self, only: Option<&ClientId>) -> Result<Vec<BudgetView>, ApiError> {
        let charge = RoundCharge::for_config(&self.federation.config).ok();
        let mut history: HashMap<&ClientId, Vec<EpsilonPoint>> = HashMap::new();
        for e in &self.entries {
            if let LedgerSubject::Client(c) = &e.subject {
                history.entry(c).or_default().push(EpsilonPoint {
                    round: e.round.get(),
                    epsilon: e.epsilon_after,
                    recorded_at_ms: ms(e.recorded_at),
                });
            }
        }
        let spends = client_spends::<DefaultAccountant>(&self.clients, &self.accounts);
        let mut rows = Vec::new();
        for (client, spend) in self.clients.iter().zip(spends) {
            if only.is_some_and(|o| o != &client.id) {
                continue;
            }
            let account = self.accounts.get(&client.id);
            let next = project(client, account, charge.as_ref());
            let spent = shown_spend(spend.epsilon, account, client.budget);
            let status = budget_status(client, spent, next);
            // An unverifiable account counts as exhausted: show the whole budget as spent.
            let eps = spent.unwrap_or(client.budget.epsilon());
            let history = history.remove(&client.id).unwrap_or_default();
            rows.push(BudgetView {
                client: wire_client(&client.id)?,
                budget: client.budget,
                spent: EpsDelta::new(eps, client.budget.delta()).map_err(ApiError::internal)?,
                rounds: u32::try_from(history.len()).unwrap_or(u32::MAX),
                status,
                next_round_epsilon: next.epsilon(),
                last_seen_ms: client.last_seen.map(ms),
                history,
            });
        }
        Ok(rows)
    }
}

fn wire_federation(id: &FederationId) -> Result<cohort_protocol::FederationId, ApiError> {
    cohort_protocol::FederationId::parse(id.as_str()).map_err(ApiError::internal)
}

fn audit_entry(r: &AuditRecord) -> Result<AuditEntry, ApiError> {
    Ok(AuditEntry {
        id: r.id,
        federation: wire_federation(&r.federation)?,
        client: wire_client(&r.client)?,
        action: r.action,
        actor: r.context.actor.clone(),
        at_ms: ms(r.context.at),
        old_budget: r.old_budget,
        new_budget: r.new_budget,
        spent_epsilon: r.spent_epsilon,
        reason: r.context.reason.clone(),
    })
}

/// The one operation a change request asks for.
pub fn requested_op(req: &BudgetChangeRequest) -> Result<BudgetOp, ApiError> {
    match (req.set_epsilon, req.raise_epsilon_by) {
        (Some(e), None) => Ok(BudgetOp::Set(e.get())),
        (None, Some(by)) => Ok(BudgetOp::Raise(by.get())),
        _ => Err(ApiError::InvalidInput(
            "give exactly one of set_epsilon and raise_epsilon_by".into(),
        )),
    }
}

impl Service {
    async fn snapshot(&self, fed: &FederationId) -> Result<Snapshot, ApiError> {
        let f = fed.clone();
        self.blocking(move |s| {
            Ok(Snapshot {
                federation: s.federation(&f)?,
                clients: s.clients(&f)?,
                accounts: s.client_accounts(&f)?.into_iter().collect(),
                federation_account: s.federation_account(&f)?,
                entries: s.ledger_entries(&f, None)?,
            })
        })
        .await
    }

    /// Every client's record-level spend, status and history, and the federation's
    /// client-level spend.
    pub async fn budgets(&self, fed: &FederationId) -> Result<BudgetsView, ApiError> {
        let snap = self.snapshot(fed).await?;
        let federation_spent = match &snap.federation_account {
            Some(a) => EpsDelta::new(a.epsilon, a.delta).map_err(ApiError::internal)?,
            None => EpsDelta::ZERO,
        };
        Ok(BudgetsView {
            federation_budget: snap.federation.config.federation_budget(),
            federation_spent,
            clients: snap.rows(None)?,
        })
    }

    async fn row(&self, fed: &FederationId, client: &ClientId) -> Result<BudgetView, ApiError> {
        self.snapshot(fed)
            .await?
            .rows(Some(client))?
            .pop()
            .ok_or_else(|| ApiError::NotFound(format!("client {client} of federation {fed}")))
    }

    /// Sets or raises a client's ε budget, audited. Spend is never touched: lowering the
    /// budget below it makes the client exhausted.
    pub async fn change_budget(
        &self,
        fed: &FederationId,
        client: &ClientId,
        actor: &Claims,
        req: &BudgetChangeRequest,
    ) -> Result<BudgetChanged, ApiError> {
        let op = requested_op(req)?;
        let context = AuditContext::new(
            &actor.sub,
            Some(req.reason.as_str()),
            true,
            Timestamp::now(),
        )?;
        let (f, c) = (fed.clone(), client.clone());
        let record = self
            .blocking(move |s| s.change_client_budget(&f, &c, op, &context))
            .await?;
        tracing::info!(
            federation = %fed, client = %client, actor = %record.context.actor,
            old = record.old_budget.epsilon(), new = record.new_budget.epsilon(),
            "client budget changed"
        );
        Ok(BudgetChanged {
            client: self.row(fed, client).await?,
            audit: audit_entry(&record)?,
        })
    }

    /// Revokes a client, audited: its certificate stops working and it is never sampled again.
    /// Revoking a revoked client changes nothing and writes no audit line.
    pub async fn revoke_audited(
        &self,
        fed: &FederationId,
        client: &ClientId,
        actor: &Claims,
        reason: Option<&str>,
    ) -> Result<ClientView, ApiError> {
        let context = AuditContext::new(&actor.sub, reason, false, Timestamp::now())?;
        let (f, c) = (fed.clone(), client.clone());
        let (record, after) = self
            .blocking(move |s| {
                let record = s.revoke_client_audited(&f, &c, &context)?;
                Ok((record, s.client(&f, &c)?))
            })
            .await?;
        if record.is_some() {
            tracing::info!(federation = %fed, client = %client, actor = %actor.sub, "client revoked");
        }
        client_view(&after)
    }

    /// The audit log, oldest first; one client's if given.
    pub async fn audit_log(
        &self,
        fed: &FederationId,
        client: Option<ClientId>,
    ) -> Result<Vec<AuditEntry>, ApiError> {
        let f = fed.clone();
        let records = self
            .blocking(move |s| s.budget_audit(&f, client.as_ref()))
            .await?;
        records.iter().map(audit_entry).collect()
    }

    /// The budget of the client holding this certificate, in whichever federation it enrolled.
    pub async fn my_budget(&self, fingerprint: &str) -> Result<MyBudget, ApiError> {
        let fp = CertFingerprint::parse(fingerprint).map_err(ApiError::internal)?;
        let found = self
            .blocking(move |s| {
                for fed in s.federations()? {
                    match s.client_by_fingerprint(&fed.id, &fp) {
                        Ok(client) => return Ok(Some((fed.id, client))),
                        Err(StorageError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(None)
            })
            .await?;
        let Some((fed, client)) = found else {
            return Err(ApiError::Forbidden(
                "this certificate is not enrolled in any federation".into(),
            ));
        };
        if client.revoked {
            return Err(ApiError::Forbidden(format!(
                "client {} has been revoked",
                client.id
            )));
        }
        Ok(MyBudget {
            federation: wire_federation(&fed)?,
            account: self.row(&fed, &client.id).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientId, FederationId};

    fn client(budget: f64, enrolled: bool, revoked: bool) -> Client {
        Client {
            federation: FederationId::parse("fed").unwrap(),
            id: ClientId::parse("site-a").unwrap(),
            fingerprint: None,
            enrolment: if enrolled {
                EnrolmentState::Enrolled
            } else {
                EnrolmentState::Invited
            },
            revoked,
            last_seen: None,
            budget: EpsDelta::new(budget, 1e-5).unwrap(),
            sample_count: Some(100),
            created_at: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn status_follows_revocation_enrolment_and_spend() {
        let fits = Projection::Fits(1.0);
        assert_eq!(
            budget_status(&client(8.0, true, false), Some(0.5), fits),
            BudgetStatus::Eligible
        );
        assert_eq!(
            budget_status(&client(8.0, true, true), Some(0.5), fits),
            BudgetStatus::Revoked
        );
        assert_eq!(
            budget_status(&client(8.0, false, false), Some(0.0), fits),
            BudgetStatus::Pending
        );
        // Spend at or above the budget (a budget lowered below the spend): exhausted.
        assert_eq!(
            budget_status(&client(0.5, true, false), Some(0.5), fits),
            BudgetStatus::Exhausted
        );
        assert_eq!(
            budget_status(&client(0.2, true, false), Some(0.5), fits),
            BudgetStatus::Exhausted
        );
        // Under budget but the next round would not fit; or nothing can be verified.
        assert_eq!(
            budget_status(
                &client(8.0, true, false),
                Some(0.5),
                Projection::Exceeds(9.0)
            ),
            BudgetStatus::Exhausted
        );
        assert_eq!(
            budget_status(&client(8.0, true, false), None, fits),
            BudgetStatus::Exhausted
        );
        assert_eq!(
            budget_status(
                &client(8.0, true, false),
                Some(0.5),
                Projection::Unverifiable
            ),
            BudgetStatus::Exhausted
        );
    }

    #[test]
    fn the_recorded_spend_is_shown_once_verified() {
        let budget = EpsDelta::new(8.0, 1e-5).unwrap();
        let account = |epsilon, delta| AccountRecord {
            accountant: String::new(),
            epsilon,
            delta,
            revision: 1,
        };
        let recorded = account(3.441324458927944, 1e-5);
        assert_eq!(
            shown_spend(Some(3.4413244589279444), Some(&recorded), budget),
            Some(3.441324458927944)
        );
        // Unverifiable state: nothing is shown as spent-so-far, the caller fails closed.
        assert_eq!(shown_spend(None, Some(&recorded), budget), None);
        // Recorded at another δ: the recomputation at the budget's δ.
        assert_eq!(
            shown_spend(Some(2.5), Some(&account(3.0, 1e-6)), budget),
            Some(2.5)
        );
        assert_eq!(shown_spend(Some(0.0), None, budget), Some(0.0));
    }

    #[test]
    fn exactly_one_operation_is_accepted() {
        let req = |set: Option<f64>, raise: Option<f64>| BudgetChangeRequest {
            set_epsilon: set.map(|e| cohort_protocol::Epsilon::new(e).unwrap()),
            raise_epsilon_by: raise.map(|e| cohort_protocol::Epsilon::new(e).unwrap()),
            reason: "r".into(),
        };
        assert_eq!(
            requested_op(&req(Some(2.0), None)).unwrap(),
            BudgetOp::Set(2.0)
        );
        assert_eq!(
            requested_op(&req(None, Some(1.0))).unwrap(),
            BudgetOp::Raise(1.0)
        );
        assert!(requested_op(&req(None, None)).is_err());
        assert!(requested_op(&req(Some(2.0), Some(1.0))).is_err());
    }
}
