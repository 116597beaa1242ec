//! Audited budget operations: what an admin may do to a client's record-level budget, and the
//! append-only record each operation leaves.
//!
//! The arithmetic ([`BudgetOp::apply`]) is a pure function so it can be tested without a
//! database; the store runs it inside the transaction that reads the current budget and writes
//! the audit line, so two admins raising at once both count.
//!
//! What is deliberately impossible: changing δ (a larger δ would lower the ε reported for rounds
//! already run), and touching the spend itself (the privacy accounts are written only by round
//! openings, and the schema refuses a lower ε or a deleted account).

use cohort_privacy::EpsDelta;
use cohort_protocol::budgets::AuditAction;

use crate::domain::{ClientId, FederationId, Timestamp, ValidationError};

pub use crate::domain::MAX_EPSILON_BUDGET;

/// The longest reason kept in the audit log, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A change to a client's ε budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetOp {
    /// Set ε to this value (lowering below the spend is allowed: the client is exhausted).
    Set(f64),
    /// Add this much (> 0) to ε.
    Raise(f64),
}

impl BudgetOp {
    /// The audit action it records.
    pub fn action(self) -> AuditAction {
        match self {
            Self::Set(_) => AuditAction::SetBudget,
            Self::Raise(_) => AuditAction::RaiseBudget,
        }
    }

    /// The budget after this operation; δ never changes.
    pub fn apply(self, current: EpsDelta) -> Result<EpsDelta, ValidationError> {
        let epsilon = match self {
            Self::Set(e) => crate::domain::validate_epsilon("set_epsilon", e)?,
            Self::Raise(by) => {
                if !(by.is_finite() && by > 0.0) {
                    return Err(ValidationError::new(
                        "raise_epsilon_by",
                        format!(
                            "must be a finite number > 0, got {by}; use set_epsilon to lower a budget"
                        ),
                    ));
                }
                current.epsilon() + by
            }
        };
        crate::domain::validate_epsilon("epsilon", epsilon)?;
        EpsDelta::new(epsilon, current.delta())
            .map_err(|e| ValidationError::new("epsilon", e.to_string()))
    }
}

/// Who acts, when and why: the part of an audit line the caller supplies.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditContext {
    /// The admin's name (the `sub` of their token).
    pub actor: String,
    /// Why; trimmed, at most [`MAX_REASON_CHARS`] characters.
    pub reason: Option<String>,
    /// Now.
    pub at: Timestamp,
}

impl AuditContext {
    /// Validates the actor and the reason; `reason_required` for budget changes.
    pub fn new(
        actor: &str,
        reason: Option<&str>,
        reason_required: bool,
        at: Timestamp,
    ) -> Result<Self, ValidationError> {
        let actor = actor.trim();
        if actor.is_empty() {
            return Err(ValidationError::new(
                "actor",
                "the token names nobody (empty sub)",
            ));
        }
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        match reason {
            None if reason_required => {
                return Err(ValidationError::new(
                    "reason",
                    "say why the budget changes (it goes into the audit log)",
                ));
            }
            Some(r) if r.chars().count() > MAX_REASON_CHARS => {
                return Err(ValidationError::new(
                    "reason",
                    format!("at most {MAX_REASON_CHARS} characters"),
                ));
            }
            Some(r) if r.chars().any(char::is_control) => {
                return Err(ValidationError::new(
                    "reason",
                    "control characters are not allowed",
                ));
            }
            _ => {}
        }
        Ok(Self {
            actor: actor.to_owned(),
            reason: reason.map(str::to_owned),
            at,
        })
    }
}

/// One stored audit line.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Increasing id.
    pub id: u64,
    /// The federation.
    pub federation: FederationId,
    /// The client.
    pub client: ClientId,
    /// What was done.
    pub action: AuditAction,
    /// Who, when, why.
    pub context: AuditContext,
    /// The budget before.
    pub old_budget: EpsDelta,
    /// The budget after.
    pub new_budget: EpsDelta,
    /// The client's ε spent at that moment, from its privacy account (0 if it has none).
    pub spent_epsilon: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(e: f64) -> EpsDelta {
        EpsDelta::new(e, 1e-5).unwrap()
    }

    #[test]
    fn set_and_raise_change_epsilon_only() {
        assert_eq!(BudgetOp::Set(2.5).apply(b(8.0)).unwrap(), b(2.5));
        assert_eq!(BudgetOp::Raise(1.5).apply(b(8.0)).unwrap(), b(9.5));
        assert_eq!(BudgetOp::Set(0.0).apply(b(8.0)).unwrap(), b(0.0));
    }

    #[test]
    fn bad_amounts_are_refused() {
        for op in [
            BudgetOp::Set(-1.0),
            BudgetOp::Set(f64::NAN),
            BudgetOp::Set(f64::INFINITY),
            BudgetOp::Raise(0.0),
            BudgetOp::Raise(-2.0),
            BudgetOp::Raise(f64::NAN),
            BudgetOp::Set(MAX_EPSILON_BUDGET * 2.0),
            BudgetOp::Raise(MAX_EPSILON_BUDGET),
        ] {
            assert!(op.apply(b(8.0)).is_err(), "{op:?} must be refused");
        }
    }

    #[test]
    fn reasons_are_required_for_budget_changes_and_bounded() {
        let now = Timestamp::from_millis(1);
        assert!(AuditContext::new("alice", None, true, now).is_err());
        assert!(AuditContext::new("alice", Some("   "), true, now).is_err());
        assert!(AuditContext::new("alice", None, false, now).is_ok());
        assert!(AuditContext::new("", Some("x"), true, now).is_err());
        assert!(AuditContext::new("alice", Some("a\u{7}b"), true, now).is_err());
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        assert!(AuditContext::new("alice", Some(&long), true, now).is_err());
        let ok = AuditContext::new(" alice ", Some("  ethics board ok  "), true, now).unwrap();
        assert_eq!(ok.actor, "alice");
        assert_eq!(ok.reason.as_deref(), Some("ethics board ok"));
    }
}
