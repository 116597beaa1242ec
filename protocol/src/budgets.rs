//! Privacy-budget messages: each client's status and ε history, admin budget operations and
//! their audit trail, and a client's view of its own budget.
//!
//! The per-client row itself is [`crate::messages::BudgetView`]; the dashboard, the
//! `cohort budgets` command and `GET /v1/me/budget` all read that one type, so they cannot
//! disagree about a number.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use cohort_privacy::EpsDelta;

use crate::messages::BudgetView;
use crate::{ClientId, Epsilon, FederationId};

/// Whether a client can still be sampled, as far as its budget and enrolment go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BudgetStatus {
    /// Enrolled, not revoked, and one more round of this federation fits its budget.
    Eligible,
    /// Its spend has reached its budget, or one more round would exceed it, or its account
    /// cannot be verified (fail closed). Raising the budget can make it eligible again.
    Exhausted,
    /// Revoked for good.
    Revoked,
    /// Invited but not enrolled yet.
    Pending,
}

impl BudgetStatus {
    /// The lower-case name, as the JSON and the tables show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eligible => "eligible",
            Self::Exhausted => "exhausted",
            Self::Revoked => "revoked",
            Self::Pending => "pending",
        }
    }
}

/// A client's record-level ε after one round it was charged for (one ledger entry).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EpsilonPoint {
    /// The round.
    pub round: u64,
    /// ε after that round, at the δ of the entry.
    pub epsilon: f64,
    /// Unix milliseconds the entry was written (before the client learnt of its task).
    pub recorded_at_ms: u64,
}

/// `POST /v1/federations/{fed}/clients/{client}/budget` (admin): exactly one of
/// `set_epsilon` and `raise_epsilon_by`, and a reason for the audit log.
///
/// Only ε changes: δ stays as enrolled, because a larger δ would lower the ε reported for
/// rounds already spent, which would amount to erasing spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetChangeRequest {
    /// The new ε budget. Lower than what is spent is allowed: the client becomes exhausted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_epsilon: Option<Epsilon>,
    /// Add this much (> 0) to the current ε budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raise_epsilon_by: Option<Epsilon>,
    /// Why (kept in the audit log; 1 to 500 characters, no control characters).
    #[schema(
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 500
    )]
    pub reason: String,
}

/// `POST /v1/federations/{fed}/clients/{client}/revoke` (admin): an optional body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why (kept in the audit log; at most 500 characters, no control characters).
    #[serde(default)]
    #[schema(
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 500
    )]
    pub reason: Option<String>,
}

/// What an audited operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// The ε budget was set to a value.
    SetBudget,
    /// The ε budget was raised by an amount.
    RaiseBudget,
    /// The client was revoked.
    Revoke,
}

impl AuditAction {
    /// The snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SetBudget => "set_budget",
            Self::RaiseBudget => "raise_budget",
            Self::Revoke => "revoke",
        }
    }
}

/// One line of the append-only audit log of budget operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Increasing id (the log's order).
    pub id: u64,
    /// The federation.
    pub federation: FederationId,
    /// The client acted on.
    pub client: ClientId,
    /// What was done.
    pub action: AuditAction,
    /// Who did it: the `sub` of the admin's bearer token.
    pub actor: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The budget before.
    #[schema(value_type = crate::schema::EpsDeltaSchema)]
    pub old_budget: EpsDelta,
    /// The budget after (equal to `old_budget` for a revocation).
    #[schema(value_type = crate::schema::EpsDeltaSchema)]
    pub new_budget: EpsDelta,
    /// ε the client had spent at that moment (unchanged by any operation).
    pub spent_epsilon: f64,
    /// Why.
    pub reason: Option<String>,
}

/// The answer to a [`BudgetChangeRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetChanged {
    /// The client's row after the change.
    pub client: BudgetView,
    /// The audit line written in the same transaction.
    pub audit: AuditEntry,
}

/// `GET /v1/me/budget` (client certificate): the caller's own row and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MyBudget {
    /// The federation the certificate is enrolled in.
    pub federation: FederationId,
    /// The caller's row, as admins see it.
    pub account: BudgetView,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_requests_reject_unknown_fields_and_bad_epsilon() {
        let ok: BudgetChangeRequest =
            serde_json::from_str(r#"{"set_epsilon": 4.5, "reason": "ethics board"}"#).unwrap();
        assert_eq!(ok.set_epsilon.map(Epsilon::get), Some(4.5));
        assert!(
            serde_json::from_str::<BudgetChangeRequest>(r#"{"set_epsilon": -1, "reason": "x"}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<BudgetChangeRequest>(
                r#"{"set_epsilon": 1, "reason": "x", "delta": 0.1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn statuses_serialise_as_their_names() {
        for s in [
            BudgetStatus::Eligible,
            BudgetStatus::Exhausted,
            BudgetStatus::Revoked,
            BudgetStatus::Pending,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
