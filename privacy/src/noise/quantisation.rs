//! Sensitivity of a clipped update after scaling and stochastic rounding to integers.
//!
//! Before noise and secure aggregation a client clips its update to L2 norm `C`, multiplies it
//! by a scale `s` (one quantisation step = 1/s) and rounds each coordinate stochastically to a
//! neighbouring integer. Rounding can *grow* the norm, so the noise must be calibrated to the
//! rounded vector's norm, not to `s·C`. Following Kairouz, Liu & Steinke (2021, "The Distributed
//! Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation", Theorem 1 and
//! its conditional randomised rounding), for `x ∈ ℝ^d` with `‖x‖₂ ≤ c`:
//!
//! - always: `‖round(x)‖₂ ≤ c + √d`;
//! - with probability ≥ 1 − β: `‖round(x)‖₂² ≤ c² + d/4 + √(2 ln(1/β))·(c + √d/2)`.
//!
//! The second, much smaller bound is only a *sensitivity* if the client enforces it: rounding is
//! repeated until the rounded vector meets it ([`conditional_stochastic_round`]). A client that
//! rounds once and sends whatever comes out has sensitivity `c + √d`; use β = 0 for it.

use rand::RngExt;
use rand_chacha::ChaCha20Rng;

use super::{NoiseError, require_positive_finite};

/// L2 norm bound of `x` after (conditional) stochastic rounding, in quantisation steps.
///
/// `l2_norm_bound` is `c = s·C`, the clip already scaled into quantisation steps; `beta` is the
/// conditional-rounding failure probability in [0, 1) (0 means unconditional rounding); `dim`
/// is the number of coordinates.
pub fn rounded_l2_norm_bound(l2_norm_bound: f64, beta: f64, dim: u64) -> Result<f64, NoiseError> {
    let c = require_positive_finite("l2_norm_bound", l2_norm_bound)?;
    if !(beta.is_finite() && (0.0..1.0).contains(&beta)) {
        return Err(NoiseError::invalid("beta", beta, "in [0, 1)"));
    }
    if dim == 0 {
        return Err(NoiseError::invalid("dim", dim, "at least 1"));
    }
    let d = dim as f64;
    let worst_case = c + d.sqrt();
    if beta == 0.0 {
        return Ok(worst_case);
    }
    let squared = c * c + d / 4.0 + (2.0 * (1.0 / beta).ln()).sqrt() * (c + d.sqrt() / 2.0);
    Ok(worst_case.min(squared.sqrt()))
}

/// L1 norm bound of an integer vector whose L2 norm is at most `rounded_l2` (in steps).
///
/// For integers `|v_i| ≤ v_i²`, so `‖v‖₁ ≤ ‖v‖₂²`; Cauchy–Schwarz gives `‖v‖₁ ≤ √d·‖v‖₂`.
/// Under add/remove-one neighbours the sum changes by one client's rounded vector, so this is
/// the L1 sensitivity the Skellam bound needs.
pub fn rounded_l1_norm_bound(rounded_l2: f64, dim: u64) -> Result<f64, NoiseError> {
    let l2 = require_positive_finite("rounded_l2", rounded_l2)?;
    if dim == 0 {
        return Err(NoiseError::invalid("dim", dim, "at least 1"));
    }
    Ok(l2 * l2.min((dim as f64).sqrt()))
}

/// How many rounding attempts [`conditional_stochastic_round`] makes before giving up. With the
/// bound of [`rounded_l2_norm_bound`] each attempt fails with probability ≤ β, so hitting this
/// limit means the input broke its declared norm or β was near 1.
pub const MAX_ROUNDING_ATTEMPTS: u32 = 1_000;

/// Stochastically rounds `x` (already scaled into quantisation steps) to integers, repeating
/// until `‖round(x)‖₂ ≤ bound`, so that `bound` is a true L2 sensitivity.
///
/// Each coordinate becomes `⌊x_i⌋ + 1` with probability `x_i − ⌊x_i⌋`, else `⌊x_i⌋`, which
/// keeps it unbiased. Randomness comes from the caller's CSPRNG.
pub fn conditional_stochastic_round(
    x: &[f64],
    bound: f64,
    rng: &mut ChaCha20Rng,
) -> Result<Vec<i64>, NoiseError> {
    let bound = require_positive_finite("bound", bound)?;
    // Coordinates beyond ±2^62 could not be held after rounding; reject them (and NaN) upfront.
    const LIMIT: f64 = 4_611_686_018_427_387_904.0;
    if let Some((i, v)) = x
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && v.abs() < LIMIT))
    {
        return Err(NoiseError::invalid(
            "x",
            format!("{v} at {i}"),
            "finite and below 2^62 in magnitude",
        ));
    }
    let bound_sq = bound * bound;
    let mut out = vec![0_i64; x.len()];
    for _ in 0..MAX_ROUNDING_ATTEMPTS {
        let mut norm_sq = 0.0;
        for (o, &v) in out.iter_mut().zip(x) {
            let floor = v.floor();
            let up = rng.random::<f64>() < v - floor;
            let r = floor + if up { 1.0 } else { 0.0 };
            norm_sq += r * r;
            *o = r as i64;
        }
        if norm_sq <= bound_sq {
            return Ok(out);
        }
    }
    Err(NoiseError::invalid(
        "bound",
        bound,
        "reachable by rounding x: is x clipped to the norm the bound was computed for?",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn beta_zero_is_the_worst_case() {
        assert_eq!(rounded_l2_norm_bound(10.0, 0.0, 100).unwrap(), 20.0);
    }

    #[test]
    fn known_value() {
        // c = 1000, d = 10_000, β = e^-0.5: c² + d/4 + 1·(c + 50) = 1_003_550.
        let b = rounded_l2_norm_bound(1000.0, (-0.5_f64).exp(), 10_000).unwrap();
        assert!((b - 1_003_550.0_f64.sqrt()).abs() < 1e-9);
        assert!(b < 1000.0 + 100.0);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(rounded_l2_norm_bound(0.0, 0.1, 10).is_err());
        assert!(rounded_l2_norm_bound(1.0, 1.0, 10).is_err());
        assert!(rounded_l2_norm_bound(1.0, -0.1, 10).is_err());
        assert!(rounded_l2_norm_bound(1.0, 0.1, 0).is_err());
        assert!(rounded_l2_norm_bound(f64::NAN, 0.1, 10).is_err());
        assert!(rounded_l1_norm_bound(0.0, 10).is_err());
        assert!(rounded_l1_norm_bound(1.0, 0).is_err());
        let mut rng = ChaCha20Rng::from_seed([0; 32]);
        assert!(conditional_stochastic_round(&[f64::NAN], 5.0, &mut rng).is_err());
        assert!(conditional_stochastic_round(&[1e300], 5.0, &mut rng).is_err());
        // A vector far outside the bound can never be rounded into it.
        assert!(conditional_stochastic_round(&[100.0; 4], 5.0, &mut rng).is_err());
    }

    #[test]
    fn l1_bound_uses_integrality_for_small_norms() {
        assert_eq!(rounded_l1_norm_bound(3.0, 1_000_000).unwrap(), 9.0);
        assert_eq!(rounded_l1_norm_bound(1000.0, 100).unwrap(), 10_000.0);
    }

    proptest! {
        #[test]
        fn rounded_vectors_meet_the_bound(
            seed in any::<[u8; 32]>(),
            raw in proptest::collection::vec(-50.0_f64..50.0, 1..200),
            beta in 1e-9_f64..0.5,
        ) {
            let mut rng = ChaCha20Rng::from_seed(seed);
            let c = raw.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-3);
            let bound = rounded_l2_norm_bound(c, beta, raw.len() as u64).unwrap();
            prop_assert!(bound >= c);
            let r = conditional_stochastic_round(&raw, bound, &mut rng).unwrap();
            let norm = r.iter().map(|&v| (v * v) as f64).sum::<f64>().sqrt();
            prop_assert!(norm <= bound);
            let l1: f64 = r.iter().map(|&v| v.abs() as f64).sum();
            prop_assert!(l1 <= rounded_l1_norm_bound(bound, raw.len() as u64).unwrap());
            for (a, b) in r.iter().zip(&raw) {
                prop_assert!((*a as f64 - b).abs() < 1.0);
            }
        }
    }

    #[test]
    fn rounding_is_unbiased() {
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let x = [0.25, -1.75, 3.5];
        let mut sums = [0.0; 3];
        let n = 20_000;
        for _ in 0..n {
            let r = conditional_stochastic_round(&x, 1e6, &mut rng).unwrap();
            for i in 0..3 {
                sums[i] += r[i] as f64;
            }
        }
        for i in 0..3 {
            // Bernoulli std ≤ 1/2, so 5 standard errors are 2.5/√n.
            assert!((sums[i] / n as f64 - x[i]).abs() < 2.5 / (n as f64).sqrt());
        }
    }
}
