//! Rényi DP of *any* mechanism under Poisson subsampling, from the mechanism's own RDP.
//!
//! The sampled-Gaussian formula in [`super::rdp`] is exact for the continuous Gaussian only:
//! Mironov, Talwar & Zhang prove that of the two directions of the add/remove neighbours the
//! one they sum dominates, using the Gaussian's shape. For other mechanisms — the discrete
//! Gaussian that Cohort's hardened noise uses — we take the mechanism-agnostic bound of
//! Zhu & Wang, "Poisson Subsampled Rényi Differential Privacy" (ICML 2019, Theorem 6): if M is
//! (ℓ, ε(ℓ))-RDP for ℓ = 2, …, α, then M ∘ PoissonSample(γ) has, at integer α ≥ 2,
//!
//! ```text
//! ε'(α) ≤ 1/(α−1) · ln[ (1−γ)^(α−1) (αγ − γ + 1)
//!                       + C(α,2) γ² (1−γ)^(α−2) e^{ε(2)}
//!                       + 3 Σ_{ℓ=3..α} C(α,ℓ) γ^ℓ (1−γ)^(α−ℓ) e^{(ℓ−1) ε(ℓ)} ]
//! ```
//!
//! which is within ln(3)/(α−1) of optimal. Subsampling never hurts (the Rényi divergence is
//! jointly quasi-convex), so the value used is the smaller of that and ε(α).
//!
//! Fractional orders take the chord of `(α−1)·ε'` between the neighbouring integers, valid
//! because `(α−1)·D_α = ln E[(P/Q)^α]` is convex in α; between 1 and 2 the chord starts at 0.

/// ε'(α) at each of `orders` for the Poisson-subsampled mechanism whose RDP at integer orders
/// ℓ ≥ 2 is `base(ℓ)`. `sample_rate` must be in (0, 1]; invalid orders (≤ 1, NaN, beyond
/// 2^16) and an invalid rate give `+inf`, which no conversion ever selects.
pub fn poisson_subsampled_rdp(
    sample_rate: f64,
    base: impl Fn(u32) -> f64,
    orders: &[f64],
) -> Vec<f64> {
    let valid_rate = sample_rate.is_finite() && sample_rate > 0.0 && sample_rate <= 1.0;
    let at_integer = |alpha: u32| -> f64 {
        let unamplified = base(alpha);
        if sample_rate == 1.0 {
            return unamplified;
        }
        zhu_wang_bound(sample_rate, &base, alpha).min(unamplified)
    };
    orders
        .iter()
        .map(|&alpha| {
            if !(valid_rate && alpha.is_finite() && alpha > 1.0 && alpha <= 65_536.0) {
                return f64::INFINITY;
            }
            let low = alpha.floor();
            if low == alpha {
                return at_integer(alpha as u32);
            }
            let high = low + 1.0;
            // (α−1)·ε(α) ≤ chord through (low, (low−1)·ε(low)) and (high, (high−1)·ε(high)).
            let low_total = if low < 2.0 {
                0.0
            } else {
                (low - 1.0) * at_integer(low as u32)
            };
            let high_total = (high - 1.0) * at_integer(high as u32);
            let chord = low_total + (alpha - low) * (high_total - low_total);
            chord / (alpha - 1.0)
        })
        .collect()
}

/// Zhu & Wang's Theorem 6 at integer α ≥ 2 and γ in (0, 1), summed in log space.
fn zhu_wang_bound(gamma: f64, base: &impl Fn(u32) -> f64, alpha: u32) -> f64 {
    let n = f64::from(alpha);
    let log_gamma = gamma.ln();
    let log_keep = (-gamma).ln_1p();
    let mut terms = Vec::with_capacity(alpha as usize);
    terms.push((n - 1.0) * log_keep + (n * gamma - gamma).ln_1p());
    let mut log_binomial = 0.0;
    for l in 1..=alpha {
        let ell = f64::from(l);
        log_binomial += (n - ell + 1.0).ln() - ell.ln();
        if l < 2 {
            continue;
        }
        let base_l = base(l);
        if base_l.is_nan() {
            return f64::INFINITY;
        }
        let factor = if l == 2 { 0.0 } else { 3f64.ln() };
        terms.push(
            factor + log_binomial + ell * log_gamma + (n - ell) * log_keep + (ell - 1.0) * base_l,
        );
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return f64::INFINITY;
    }
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()) / (n - 1.0)
}

#[cfg(test)]
#[path = "subsampling_tests.rs"]
mod tests;
