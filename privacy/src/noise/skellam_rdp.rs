//! Rényi-DP of the aggregate Skellam mechanism, per order, for the RDP accountant.
//!
//! # What is covered
//! The mechanism is `M(D) = Σ_{clients} q_i + Z`, with `q_i ∈ ℤ^d` the rounded updates and
//! `Z` Skellam noise of per-coordinate variance `V` (the central variance guaranteed by
//! [`super::calibration::SkellamPlan::guaranteed_central_variance`]), under add/remove-one-client
//! neighbours whose difference has `‖·‖₂ ≤ Δ₂` and `‖·‖₁ ≤ Δ₁` (from [`super::quantisation`]).
//! Agarwal, Kairouz & Liu (2021, "The Skellam Mechanism for Differentially Private Federated
//! Learning", Theorem 3.5/Corollary 3.6), written with the variance `V = 2μ`, give for every
//! integer order α > 1:
//!
//! ```text
//! ε(α) ≤ α·Δ₂²/(2V) + min( ((2α − 1)·Δ₂² + 6·Δ₁) / (4V²),  3·Δ₁/(2V) )
//! ```
//!
//! The first term is exactly the Gaussian mechanism's RDP with σ² = V; the second is the price
//! of discreteness and vanishes as V grows.
//!
//! Fractional orders (dp_accounting's grid starts at 1.1) are not covered by the theorem. We
//! bound them through the convexity of `K(α) = (α − 1)·D_α` in α (van Erven & Harremoës 2014,
//! since `K` is a cumulant generating function), with `K(1) = 0`: for `a < α < a + 1`,
//! `K(α) ≤ (a + 1 − α)·K(a) + (α − a)·K(a + 1)`, using the integer-order bounds above. That is a
//! valid upper bound, never below the Gaussian's RDP at the same order, but looser than the
//! Gaussian by up to `⌈α⌉/α` even for huge V (between 1 and 2 it is the order-2 value). The
//! accountant's minimum over orders usually lands on an integer order, where the bound is tight.
//!
//! # What is not covered
//! - **Client sampling.** These are the RDP values of one round in which the sampled clients
//!   are fixed. The subsampled-Gaussian formula (Mironov, Talwar & Zhang 2019) is specific to
//!   the Gaussian and must **not** be applied to them. Compose these values unamplified (as if
//!   q = 1) — pessimistic, and valid. Amplification for general mechanisms (Zhu & Wang 2019)
//!   is not implemented.
//! - **Fewer survivors than planned.** The values assume the sum carries variance ≥ V; a round
//!   where fewer than `n_min` clients survive must be aborted, not released.
//! - **Modular wrap-around** in ℤ_{2^b} is post-processing of the integer sum, so it costs no
//!   privacy (only utility, which bit width and scaling must handle).
//! - **Record-level DP** inside each client is DP-SGD's business, accounted separately.

use super::{NoiseError, require_positive_finite};

/// dp_accounting's default RDP orders: 1.1 to 10.9 in steps of 0.1, 11 to 63, 128, 256, 512 and
/// 1024 (156 orders), so per-order vectors line up with the RDP accountant's.
pub fn dp_accounting_orders() -> Vec<f64> {
    let fractional = (1..100).map(|x| 1.0 + f64::from(x) / 10.0);
    let integers = (11..64).map(f64::from);
    fractional
        .chain(integers)
        .chain([128.0, 256.0, 512.0, 1024.0])
        .collect()
}

/// The theorem's bound at an integer order `alpha ≥ 2`; inputs already validated.
fn integer_order_bound(alpha: f64, l1: f64, l2: f64, variance: f64) -> f64 {
    let l2_sq = l2 * l2;
    let gaussian = alpha * l2_sq / (2.0 * variance);
    let discrete = (((2.0 * alpha - 1.0) * l2_sq + 6.0 * l1) / (4.0 * variance * variance))
        .min(3.0 * l1 / (2.0 * variance));
    gaussian + discrete
}

/// RDP ε(α) of one round of the aggregate Skellam mechanism at one order `order > 1`.
///
/// `l1_sensitivity` and `l2_sensitivity` are in quantisation steps (after rounding);
/// `central_variance` is the per-coordinate variance of the noise in the sum, in steps².
pub fn skellam_rdp_at(
    order: f64,
    l1_sensitivity: f64,
    l2_sensitivity: f64,
    central_variance: f64,
) -> Result<f64, NoiseError> {
    if !(order.is_finite() && order > 1.0) {
        return Err(NoiseError::invalid("order", order, "a finite number > 1"));
    }
    let l1 = require_positive_finite("l1_sensitivity", l1_sensitivity)?;
    let l2 = require_positive_finite("l2_sensitivity", l2_sensitivity)?;
    let v = require_positive_finite("central_variance", central_variance)?;
    if order.fract() == 0.0 {
        return Ok(integer_order_bound(order, l1, l2, v));
    }
    let a = order.floor();
    let k_a = if a < 2.0 {
        0.0 // K(1) = log Σ P = 0: Skellam has full support, so the divergence is finite.
    } else {
        (a - 1.0) * integer_order_bound(a, l1, l2, v)
    };
    let k_b = a * integer_order_bound(a + 1.0, l1, l2, v);
    let k_alpha = (a + 1.0 - order) * k_a + (order - a) * k_b;
    Ok(k_alpha / (order - 1.0))
}

/// [`skellam_rdp_at`] on every order of `orders` (for example [`dp_accounting_orders`]), in the
/// same sequence, ready for the RDP accountant to add to its per-order state.
pub fn skellam_rdp(
    orders: &[f64],
    l1_sensitivity: f64,
    l2_sensitivity: f64,
    central_variance: f64,
) -> Result<Vec<f64>, NoiseError> {
    orders
        .iter()
        .map(|&a| skellam_rdp_at(a, l1_sensitivity, l2_sensitivity, central_variance))
        .collect()
}

#[cfg(test)]
#[path = "skellam_rdp_tests.rs"]
mod tests;
