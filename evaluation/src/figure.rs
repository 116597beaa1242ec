//! A derived figure with an interval that accounts for the noise and for the sampling of
//! records, or the reason it is not shown.
//!
//! The interval is a normal one from the delta method: the figure `f` is a smooth function of
//! noisy counts `x`; its variance is `Σᵢ (∂f/∂xᵢ)² (σᵢ² + sᵢ)`, where σᵢ² is the known
//! variance of the integer noise in `xᵢ` (exact, from the release plan) and the sampling term
//! treats the block's counts as one multinomial draw of `n = Σ x` records
//! (`Σ gᵢ² xᵢ − (Σ gᵢ xᵢ)²/n`). Gradients are central differences with a step of 10⁻⁴ of the
//! count (at least 10⁻⁴): far below the noise's scale, far above `f64` resolution, and exact to
//! ~10⁻⁸ relative for the ratios the figures are.

use serde::{Deserialize, Serialize};

/// z of a two-sided 95 % normal interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Why a figure is not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppressed {
    /// Its records (a noisy count) are below the minimum: showing it would describe too few.
    BelowMinimum,
    /// It is not defined for these counts (for example no positive records).
    Undefined,
    /// Its inputs were not released (per-site figures without per-site release).
    NotReleased,
}

/// A figure as reports show it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Figure {
    /// The estimate with a 95 % interval.
    Value {
        /// The estimate from the noisy counts.
        estimate: f64,
        /// Lower end of the interval.
        low: f64,
        /// Upper end.
        high: f64,
        /// The part of its standard error the noise contributes.
        noise_std: f64,
        /// The part the sampling of records contributes (`0` where not modelled).
        sampling_std: f64,
    },
    /// Not shown, and why.
    Suppressed {
        /// Why.
        reason: Suppressed,
    },
}

impl Figure {
    /// The estimate, when shown.
    pub fn estimate(&self) -> Option<f64> {
        match self {
            Self::Value { estimate, .. } => Some(*estimate),
            Self::Suppressed { .. } => None,
        }
    }

    /// The total standard error, when shown.
    pub fn std(&self) -> Option<f64> {
        match self {
            Self::Value {
                noise_std,
                sampling_std,
                ..
            } => Some(noise_std.hypot(*sampling_std)),
            Self::Suppressed { .. } => None,
        }
    }

    /// Not shown because of `reason`.
    pub fn suppressed(reason: Suppressed) -> Self {
        Self::Suppressed { reason }
    }

    /// An estimate with its two standard errors; the interval is clipped to `range`.
    pub fn with_std(estimate: f64, noise_std: f64, sampling_std: f64, range: (f64, f64)) -> Self {
        let half = Z95 * noise_std.hypot(sampling_std);
        Self::Value {
            estimate,
            low: (estimate - half).max(range.0),
            high: (estimate + half).min(range.1),
            noise_std,
            sampling_std,
        }
    }
}

/// Whether the sampling term is modelled for a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// The block's counts are one multinomial draw.
    Multinomial,
    /// Not modelled (sums of clipped losses): the interval covers the noise only.
    NotModelled,
}

/// The figure `f(x)` of one block of counts, with the delta-method interval.
///
/// `x` holds the block's noisy counts clamped at zero (post-processing, free of privacy cost),
/// `noise_variance` each count's noise variance, `support` the noisy number of records the
/// figure describes; below `min_count` it is suppressed. `f` returns `None` where undefined.
pub fn delta_method(
    x: &[f64],
    noise_variance: &[f64],
    support: f64,
    min_count: u64,
    sampling: Sampling,
    range: (f64, f64),
    f: impl Fn(&[f64]) -> Option<f64>,
) -> Figure {
    if support.is_nan() || support < min_count as f64 || support <= 0.0 {
        return Figure::suppressed(Suppressed::BelowMinimum);
    }
    let Some(estimate) = f(x).filter(|v| v.is_finite()) else {
        return Figure::suppressed(Suppressed::Undefined);
    };
    let mut point = x.to_vec();
    let mut noise = 0.0;
    let mut weighted = 0.0;
    let mut weighted_squares = 0.0;
    for i in 0..x.len() {
        let h = 1e-4 * x[i].max(1.0);
        point[i] = x[i] + h;
        let up = f(&point);
        point[i] = (x[i] - h).max(0.0);
        let down = f(&point);
        let width = x[i] + h - point[i];
        point[i] = x[i];
        let g = match (up, down) {
            (Some(u), Some(d)) if u.is_finite() && d.is_finite() => (u - d) / width,
            _ => 0.0,
        };
        noise += g * g * noise_variance[i];
        weighted += g * x[i];
        weighted_squares += g * g * x[i];
    }
    let n: f64 = x.iter().sum();
    let sampling_var = match sampling {
        Sampling::Multinomial if n > 0.0 => (weighted_squares - weighted * weighted / n).max(0.0),
        _ => 0.0,
    };
    Figure::with_std(estimate, noise.sqrt(), sampling_var.sqrt(), range)
}

/// `a / (a + b)`: the share of records in the first of two disjoint sets of counts.
pub fn share(a: f64, b: f64) -> Option<f64> {
    let total = a + b;
    (total > 0.0).then(|| a / total)
}
