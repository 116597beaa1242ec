//! The one-shot empirical privacy estimate of Andrew et al. 2024 ("One-shot Empirical Privacy
//! Estimation for Federated Learning", ICLR 2024), implemented from the paper's description.
//!
//! Canary clients send updates in random directions. In high dimension a random direction is
//! nearly orthogonal to everything else, so the cosine of a canary that was never sent with
//! the model change is close to N(0, 1/d), while a sent canary's cosine is shifted by its own
//! contribution. Fitting a Gaussian to the cosines of sent canaries and another to those of
//! unsent ones (the null), the estimate is the ε at which the Gaussian mechanism that tells
//! these two Gaussians apart is (ε, δ)-DP: how well an attacker who knows the distributions
//! could tell "sent" from "not sent". It is an estimate, not a bound: it relies on the fits.
//!
//! The (ε, δ) curve of two Gaussians with different variances is computed exactly from the
//! hockey-stick divergence: the privacy-loss `ln p(x)/q(x)` is quadratic in x, so the set where
//! it exceeds ε is an interval or the complement of one, whose masses are normal CDFs.

use crate::accounting::special::log_ndtr;

use super::{AuditError, check_delta};

/// A Gaussian N(mean, std²) fitted to a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianFit {
    /// Sample mean.
    pub mean: f64,
    /// Sample standard deviation (with Bessel's correction).
    pub std: f64,
    /// Sample size.
    pub count: usize,
}

impl GaussianFit {
    /// Fits mean and standard deviation to `sample` (at least two finite values).
    pub fn of(sample: &[f64]) -> Result<Self, AuditError> {
        if sample.len() < 2 {
            return Err(AuditError::InvalidSample(format!(
                "at least 2 values are needed, got {}",
                sample.len()
            )));
        }
        if let Some(x) = sample.iter().find(|x| !x.is_finite()) {
            return Err(AuditError::InvalidSample(format!(
                "the sample holds the value {x}"
            )));
        }
        let n = sample.len() as f64;
        let mean = sample.iter().sum::<f64>() / n;
        let var = sample.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        Ok(Self {
            mean,
            std: var.sqrt(),
            count: sample.len(),
        })
    }

    /// The cosine of a uniformly random unit vector with any fixed vector in `dimension`
    /// dimensions, as a Gaussian: N(0, 1/d), accurate for d in the thousands and beyond.
    pub fn random_cosine(dimension: usize) -> Self {
        Self {
            mean: 0.0,
            std: (dimension.max(1) as f64).powf(-0.5),
            count: 0,
        }
    }
}

/// ln(1 − Φ(x)) = ln Φ(−x), the standard normal's upper tail.
fn log_upper(x: f64) -> f64 {
    log_ndtr(-x)
}

/// ln of P[lo < X < hi] for X ~ N(0, 1), lo < hi (either may be infinite).
fn log_interval(lo: f64, hi: f64) -> f64 {
    if lo >= hi {
        return f64::NEG_INFINITY;
    }
    // Use the tail on the side away from the mass so the difference keeps its digits.
    if lo > 0.0 {
        let (a, b) = (log_upper(lo), log_upper(hi));
        a + (-(b - a).exp()).ln_1p()
    } else {
        let (a, b) = (log_ndtr(hi), log_ndtr(lo));
        a + (-(b - a).exp()).ln_1p()
    }
}

/// Where `a·x² + b·x + c > 0`, as a union of at most two disjoint open intervals.
fn positive_set(a: f64, b: f64, c: f64) -> Vec<(f64, f64)> {
    let inf = f64::INFINITY;
    if a == 0.0 {
        if b > 0.0 {
            return vec![(-c / b, inf)];
        }
        if b < 0.0 {
            return vec![(-inf, -c / b)];
        }
        return if c > 0.0 { vec![(-inf, inf)] } else { vec![] };
    }
    let disc = b * b - 4.0 * a * c;
    if disc <= 0.0 {
        return if a > 0.0 { vec![(-inf, inf)] } else { vec![] };
    }
    // Stable roots: when the variances nearly agree, `a` is tiny, one root is the linear
    // loss's root and the other lies so far out that its mass is nil; neither cancels.
    let q = -0.5 * (b + b.signum() * disc.sqrt());
    let (r1, r2) = if q == 0.0 {
        let r = (-c / a).sqrt();
        (-r, r)
    } else {
        let (x, y) = (q / a, c / q);
        (x.min(y), x.max(y))
    };
    if a > 0.0 {
        vec![(-inf, r1), (r2, inf)]
    } else {
        vec![(r1, r2)]
    }
}

/// ln of the mass of N(mean, std²) on a union of disjoint intervals.
fn log_mass(intervals: &[(f64, f64)], mean: f64, std: f64) -> f64 {
    let mut total = f64::NEG_INFINITY;
    for &(lo, hi) in intervals {
        let part = log_interval((lo - mean) / std, (hi - mean) / std);
        total = log_add(total, part);
    }
    total
}

fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// The hockey-stick divergence `H_{e^ε}(P ‖ Q) = P[L > ε] − e^ε Q[L > ε]` for P = N(μ₁, s₁²),
/// Q = N(μ₂, s₂²), with L = ln p/q.
fn hockey_stick(p: (f64, f64), q: (f64, f64), epsilon: f64) -> f64 {
    let ((m1, s1), (m2, s2)) = (p, q);
    // L(x) − ε = a·x² + b·x + c.
    let a = 0.5 / (s2 * s2) - 0.5 / (s1 * s1);
    let b = m1 / (s1 * s1) - m2 / (s2 * s2);
    let c = 0.5 * m2 * m2 / (s2 * s2) - 0.5 * m1 * m1 / (s1 * s1) + (s2 / s1).ln() - epsilon;
    let set = positive_set(a, b, c);
    let log_p = log_mass(&set, m1, s1);
    let log_q = epsilon + log_mass(&set, m2, s2);
    if log_p == f64::NEG_INFINITY || log_q >= log_p {
        return 0.0;
    }
    log_p.exp() * -(log_q - log_p).exp_m1()
}

/// δ(ε) of the mechanism whose two outputs are N(μ₁, s₁²) and N(μ₂, s₂²): the larger of the
/// two hockey-stick divergences.
pub fn two_gaussians_delta(first: GaussianFit, second: GaussianFit, epsilon: f64) -> f64 {
    let p = (first.mean, first.std);
    let q = (second.mean, second.std);
    hockey_stick(p, q, epsilon).max(hockey_stick(q, p, epsilon))
}

/// The smallest ε at which the mechanism with outputs `first` and `second` is (ε, δ)-DP.
///
/// Zero when the two are within δ of each other; `+∞` when one fit has no spread at all and
/// the means differ (the two are then perfectly distinguishable).
pub fn two_gaussians_epsilon(
    first: GaussianFit,
    second: GaussianFit,
    delta: f64,
) -> Result<f64, AuditError> {
    check_delta(delta)?;
    if delta == 0.0 {
        return Err(AuditError::InvalidDelta(delta));
    }
    for fit in [first, second] {
        if !(fit.mean.is_finite() && fit.std.is_finite() && fit.std >= 0.0) {
            return Err(AuditError::InvalidSample(format!(
                "a fit must have a finite mean and std, got N({}, {}²)",
                fit.mean, fit.std
            )));
        }
    }
    if first.std == 0.0 || second.std == 0.0 {
        return Ok(if first.mean == second.mean && first.std == second.std {
            0.0
        } else {
            f64::INFINITY
        });
    }
    let delta_at = |eps: f64| two_gaussians_delta(first, second, eps);
    if delta_at(0.0) <= delta {
        return Ok(0.0);
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while delta_at(hi) > delta {
        lo = hi;
        hi *= 2.0;
        if hi > 1e6 {
            return Ok(f64::INFINITY);
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if delta_at(mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// The one-shot estimate from the statistics of included canaries and of never-included ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneShotEstimate {
    /// The Gaussian fitted to the included canaries' statistics.
    pub observed: GaussianFit,
    /// The Gaussian fitted to the null (never-included canaries).
    pub null: GaussianFit,
    /// The estimated ε at `delta`.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
}

/// Fits both samples and returns the ε of the Gaussian mechanism between the fits.
pub fn estimate(observed: &[f64], null: &[f64], delta: f64) -> Result<OneShotEstimate, AuditError> {
    let observed = GaussianFit::of(observed)?;
    let null = GaussianFit::of(null)?;
    let epsilon = two_gaussians_epsilon(null, observed, delta)?;
    Ok(OneShotEstimate {
        observed,
        null,
        epsilon,
        delta,
    })
}

/// The cosine of two vectors of equal length, accumulated in f64; 0 when either is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

#[cfg(test)]
#[path = "one_shot_tests.rs"]
mod tests;
