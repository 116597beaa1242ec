//! The one validation every privacy budget passes where it enters the server: a client's own
//! budget at invitation, a budget an admin sets or raises, and a federation's defaults.
//!
//! `EpsDelta` already refuses NaN, infinities, a negative ε and δ outside [0, 1). What it
//! allows but no budget may be: δ = 0 (DP-SGD's Gaussian noise only gives (ε, δ) guarantees
//! with δ > 0, so such a budget can never be checked, and an unverifiable budget counts as
//! spent), and an ε so large that it protects nobody and only hides a typo (invitations took
//! ε = 1e300 while the budget endpoint refused it, and the client was then sampled).

use cohort_privacy::EpsDelta;

use super::ValidationError;

/// The largest ε budget accepted.
pub const MAX_EPSILON_BUDGET: f64 = 1.0e6;

/// The API's names for the two halves of a budget, for the error to point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetFields {
    /// Where ε came from (e.g. `budget.epsilon`).
    pub epsilon: &'static str,
    /// Where δ came from.
    pub delta: &'static str,
}

/// Checks an ε budget.
pub fn validate_epsilon(field: &'static str, epsilon: f64) -> Result<f64, ValidationError> {
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(ValidationError::new(
            field,
            format!("must be a finite number >= 0, got {epsilon}"),
        ));
    }
    if epsilon > MAX_EPSILON_BUDGET {
        return Err(ValidationError::new(
            field,
            format!("a budget above {MAX_EPSILON_BUDGET} protects nobody; got {epsilon}"),
        ));
    }
    Ok(epsilon)
}

/// Checks an (ε, δ) budget.
pub fn validate_budget(
    fields: BudgetFields,
    budget: EpsDelta,
) -> Result<EpsDelta, ValidationError> {
    validate_epsilon(fields.epsilon, budget.epsilon())?;
    if budget.delta() <= 0.0 {
        return Err(ValidationError::new(
            fields.delta,
            "must be > 0: Gaussian noise only gives (epsilon, delta) guarantees with delta > 0",
        ));
    }
    Ok(budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: BudgetFields = BudgetFields {
        epsilon: "budget.epsilon",
        delta: "budget.delta",
    };

    #[test]
    fn refuses_what_protects_nobody_and_what_cannot_be_checked() {
        let ok = EpsDelta::new(8.0, 1e-5).unwrap();
        assert_eq!(validate_budget(F, ok).unwrap(), ok);
        assert!(validate_budget(F, EpsDelta::new(0.0, 1e-5).unwrap()).is_ok());
        assert!(validate_budget(F, EpsDelta::new(MAX_EPSILON_BUDGET, 1e-5).unwrap()).is_ok());
        let huge = validate_budget(F, EpsDelta::new(1e300, 1e-5).unwrap()).unwrap_err();
        assert_eq!(huge.field(), "budget.epsilon");
        let no_delta = validate_budget(F, EpsDelta::new(1.0, 0.0).unwrap()).unwrap_err();
        assert_eq!(no_delta.field(), "budget.delta");
        for bad in [f64::NAN, f64::INFINITY, -1.0, MAX_EPSILON_BUDGET * 1.5] {
            assert!(validate_epsilon("e", bad).is_err(), "{bad}");
        }
    }
}
