//! The exact (ε, δ) curve of the plain Gaussian mechanism (Balle & Wang, "Improving the
//! Gaussian Mechanism for Differential Privacy: Analytical Calibration and Optimal Denoising",
//! ICML 2018, Theorem 8). It is the ground truth the PLD accountant is tested against, and the
//! building block of the subsampled Gaussian's privacy-loss distribution.

use super::special::log_ndtr;
use super::{AccountingError, check_delta};

/// δ(ε) of the Gaussian mechanism with L2 sensitivity 1 and noise standard deviation `sigma`:
/// `Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ)`, evaluated in log space so that it stays accurate
/// (relative error ~1e-13) down to δ ≈ 1e-300. Defined for every real ε.
pub fn gaussian_delta(sigma: f64, epsilon: f64) -> f64 {
    let a = 0.5 / sigma - epsilon * sigma;
    let b = -0.5 / sigma - epsilon * sigma;
    let log_first = log_ndtr(a);
    let log_second = epsilon + log_ndtr(b);
    if log_second >= log_first {
        return 0.0;
    }
    log_first.exp() * -(log_second - log_first).exp_m1()
}

/// The exact ε of the Gaussian mechanism (sensitivity 1, standard deviation `sigma`) at
/// `delta`, found by bisection and rounded up: the result is never below the true ε by more
/// than one unit in the last place.
///
/// `k` runs of the Gaussian mechanism with the same σ compose to one with σ/√k, so this is also
/// the exact ε of `k` full-batch (q = 1) steps.
pub fn gaussian_epsilon(sigma: f64, delta: f64) -> Result<f64, AccountingError> {
    check_delta(delta)?;
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(AccountingError::InvalidNoiseMultiplier(sigma));
    }
    if gaussian_delta(sigma, 0.0) <= delta {
        return Ok(0.0);
    }
    let mut lo = 0.0;
    let mut hi = 1.0;
    while gaussian_delta(sigma, hi) > delta {
        lo = hi;
        hi *= 2.0;
        if hi > 1e12 {
            return Ok(f64::INFINITY);
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if gaussian_delta(sigma, mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_plain_gaussian() {
        // Balle & Wang 2018: σ = 1, δ = 1e-5 gives ε = 4.37718 (dp_accounting's PLD agrees).
        let eps = gaussian_epsilon(1.0, 1e-5).unwrap();
        assert!((eps - 4.37718).abs() < 5e-6, "{eps}");
        assert!(gaussian_delta(1.0, eps) <= 1e-5);
    }

    #[test]
    fn delta_is_one_minus_gamma_far_left_and_zero_far_right() {
        assert!((gaussian_delta(1.0, -30.0) - 1.0).abs() < 1e-12);
        assert_eq!(gaussian_delta(0.5, 1e4), 0.0);
        let d = gaussian_delta(1.0, 20.0);
        assert!(d > 0.0 && d < 1e-80, "{d}");
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(gaussian_epsilon(0.0, 1e-5).is_err());
        assert!(gaussian_epsilon(1.0, 0.0).is_err());
        assert!(gaussian_epsilon(f64::NAN, 1e-5).is_err());
    }
}
