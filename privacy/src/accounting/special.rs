//! Special functions the accountants need, accurate far into the tails.
//!
//! The accountants take logarithms of Gaussian tail probabilities as small as 1e-300, where
//! `ln(erfc(x))` underflows; these helpers switch to asymptotic series there.

use std::f64::consts::{LN_2, PI, SQRT_2};

/// Beyond this point `erfc` is subnormal or zero, so the asymptotic series takes over.
const ERFC_ASYMPTOTIC_FROM: f64 = 26.0;

/// ln(erfc(x)), accurate for all finite x (relative error ~1e-15 in the result).
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < ERFC_ASYMPTOTIC_FROM {
        libm::erfc(x).ln()
    } else {
        // Laurent series at infinity:
        //   ln erfc(x) = -x² - ln(x√π) - 1/(2x²) + 5/(8x⁴) - 37/(24x⁶) + 353/(64x⁸) + O(x⁻¹⁰).
        let r = 1.0 / (x * x);
        -x * x - (x * PI.sqrt()).ln() - 0.5 * r + 0.625 * r * r - 37.0 / 24.0 * r * r * r
            + 353.0 / 64.0 * r * r * r * r
    }
}

/// ln Φ(x), where Φ is the standard normal CDF.
pub(crate) fn log_ndtr(x: f64) -> f64 {
    if x > 5.0 {
        // Φ(x) = 1 - Φ(-x), and Φ(-x) is tiny: log1p keeps its digits.
        (-0.5 * libm::erfc(x / SQRT_2)).ln_1p()
    } else {
        log_erfc(-x / SQRT_2) - LN_2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_matches_direct_evaluation_where_both_work() {
        for &x in &[-3.0, -0.5, 0.0, 0.7, 2.0, 5.0, 10.0, 20.0, 25.9] {
            let direct = libm::erfc(x).ln();
            assert!(
                (log_erfc(x) - direct).abs() <= 1e-14 * direct.abs().max(1.0),
                "{x}"
            );
        }
    }

    #[test]
    fn log_erfc_is_continuous_at_the_switch() {
        let below = libm::erfc(25.999_999).ln();
        let above = log_erfc(26.0);
        assert!((below - above).abs() < 1e-4, "{below} vs {above}");
        // Beyond the switch the series keeps decreasing smoothly.
        assert!(log_erfc(40.0) < log_erfc(30.0));
        assert!(log_erfc(1e3).is_finite());
    }

    #[test]
    fn log_ndtr_known_values() {
        assert!((log_ndtr(0.0) - 0.5f64.ln()).abs() < 1e-15);
        // Φ(-10) = 7.619853024160527e-24 (scipy.special.ndtr).
        assert!((log_ndtr(-10.0) - 7.619_853_024_160_527e-24f64.ln()).abs() < 1e-12);
        // Φ(8) = 1 - 6.22e-16: the log is -6.22e-16, not 0.
        assert!((log_ndtr(8.0) + 6.220_960_574_271_785e-16).abs() < 1e-25);
    }
}
