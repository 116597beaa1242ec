//! From Rényi DP to (ε, δ) and back.
//!
//! Both directions use the improved conversion of Balle, Barthe, Gaboardi, Hsu & Sato,
//! "Hypothesis Testing Interpretations and Rényi Differential Privacy" (AISTATS 2020,
//! Theorem 21), also in Canonne, Kamath & Steinke 2020 (Proposition 12): at order α with RDP
//! value r,
//!
//! ```text
//! ε(δ) = r + ln(1 − 1/α) − (ln δ + ln α) / (α − 1)
//! ```
//!
//! minimised over the orders. As in dp_accounting, an order whose RDP already implies
//! `δ ≥ sqrt(1 − e^(−r))` (the KL / total-variation bound) gives ε = 0, and orders ≤ 1.01 are
//! skipped because the formula is unstable there. Unlike dp_accounting, a negative or NaN RDP
//! value is treated as *no information* (that order is skipped) rather than as ε = 0: a
//! corrupted value must never make the spend look smaller.

use super::{AccountingError, check_delta};

/// The smallest order at which the improved conversion is numerically stable.
const MIN_STABLE_ORDER: f64 = 1.01;

/// The best ε at `delta` over all orders, and the order that achieves it.
///
/// Returns `(f64::INFINITY, f64::NAN)` when no order gives a finite bound. Errors when δ is not
/// in (0, 1) or the two slices differ in length.
pub fn epsilon_from_rdp(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
) -> Result<(f64, f64), AccountingError> {
    check_delta(delta)?;
    if orders.len() != rdp.len() {
        return Err(AccountingError::OrdersMismatch);
    }
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        let epsilon = epsilon_at_order(a, r, delta);
        if epsilon < best.0 {
            best = (epsilon, a);
        }
    }
    Ok(best)
}

fn epsilon_at_order(a: f64, r: f64, delta: f64) -> f64 {
    if r.is_nan() || r < 0.0 || a.is_nan() || a <= 1.0 {
        return f64::INFINITY;
    }
    if delta * delta + (-r).exp_m1() > 0.0 {
        // sqrt(1 − e^(−r)) < δ: the total-variation bound already gives (0, δ)-DP.
        return 0.0;
    }
    if a > MIN_STABLE_ORDER {
        let epsilon = r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0);
        if epsilon.is_nan() {
            f64::INFINITY
        } else {
            epsilon.max(0.0)
        }
    } else {
        f64::INFINITY
    }
}

/// The best δ at `epsilon` over all orders, and the order that achieves it (the inverse of
/// [`epsilon_from_rdp`]).
///
/// δ is capped at 1. Errors when ε is negative or NaN, or the slices differ in length.
pub fn delta_from_rdp(
    orders: &[f64],
    rdp: &[f64],
    epsilon: f64,
) -> Result<(f64, f64), AccountingError> {
    if epsilon.is_nan() || epsilon < 0.0 {
        return Err(AccountingError::InvalidEpsilon(epsilon));
    }
    if orders.len() != rdp.len() {
        return Err(AccountingError::OrdersMismatch);
    }
    let mut best = (0.0f64, f64::NAN); // (ln δ, order)
    for (&a, &r) in orders.iter().zip(rdp) {
        if r.is_nan() || r < 0.0 || a.is_nan() || a <= 1.0 {
            continue;
        }
        // The total-variation bound δ ≤ sqrt(1 − e^(−r)), good at small orders.
        let mut log_delta = if r == 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-r).exp()).ln_1p()
        };
        if a > MIN_STABLE_ORDER {
            let bound = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
            log_delta = log_delta.min(bound);
        }
        if log_delta < best.0 || best.1.is_nan() && log_delta <= best.0 {
            best = (log_delta, a);
        }
    }
    Ok((best.0.exp().min(1.0), best.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_order_formula() {
        let (eps, order) = epsilon_from_rdp(&[2.0], &[0.5], 1e-5).unwrap();
        let expected = 0.5 + (0.5f64).ln() - (2e-5f64).ln();
        assert!((eps - expected).abs() < 1e-12);
        assert_eq!(order, 2.0);
    }

    #[test]
    fn delta_inverts_epsilon() {
        let orders = [1.5, 2.0, 4.0, 8.0, 16.0, 32.0];
        let rdp: Vec<f64> = orders.iter().map(|a| a * 0.05).collect();
        let (eps, _) = epsilon_from_rdp(&orders, &rdp, 1e-6).unwrap();
        let (delta, _) = delta_from_rdp(&orders, &rdp, eps).unwrap();
        assert!(delta <= 1e-6 * (1.0 + 1e-9), "{delta}");
        let (looser, _) = delta_from_rdp(&orders, &rdp, eps * 0.9).unwrap();
        assert!(looser > 1e-6);
    }

    #[test]
    fn corrupt_values_are_never_read_as_zero_spend() {
        let (eps, _) = epsilon_from_rdp(&[2.0, 3.0], &[-1.0, f64::NAN], 1e-5).unwrap();
        assert_eq!(eps, f64::INFINITY);
    }

    #[test]
    fn rejects_bad_delta_and_length_mismatch() {
        assert_eq!(
            epsilon_from_rdp(&[2.0], &[0.1], 0.0),
            Err(AccountingError::InvalidDelta(0.0))
        );
        assert!(epsilon_from_rdp(&[2.0], &[0.1], f64::NAN).is_err());
        assert_eq!(
            epsilon_from_rdp(&[2.0, 3.0], &[0.1], 1e-5),
            Err(AccountingError::OrdersMismatch)
        );
        assert!(delta_from_rdp(&[2.0], &[0.1], -1.0).is_err());
    }

    #[test]
    fn tiny_rdp_gives_zero_epsilon_through_total_variation() {
        let (eps, _) = epsilon_from_rdp(&[2.0], &[1e-12], 1e-5).unwrap();
        assert_eq!(eps, 0.0);
    }
}
