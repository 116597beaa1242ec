//! The privacy-loss-distribution (PLD) accountant: tight ε that is still an upper bound.
//!
//! For one step of the subsampled Gaussian we know the exact hockey-stick curve δ(ε) in each
//! neighbouring direction (it reduces to the analytic Gaussian curve, see [`hockey_stick`]).
//! We discretise it by *connecting the dots* (Doroshenko, Ghazi, Kamath, Kumar & Manurangsi,
//! "Connect the Dots: Tighter Discrete Approximations of Privacy Loss Distributions", PETS
//! 2022): a distribution on the grid `{i·h}` whose δ curve equals the true one at every grid
//! point and interpolates linearly in e^ε between them. Since δ is convex in e^ε, the chord lies
//! above the curve, so the grid distribution *dominates* the true one, and domination survives
//! composition. Compositions are FFT convolutions ([`pmf`]); every truncation moves mass up or
//! to +∞, so the reported ε is never below the truth beyond floating-point round-off, for which
//! an allowance is added.

mod accountant;
pub(crate) mod pmf;

use super::SubsampledGaussian;
use super::analytic::gaussian_delta;
pub use accountant::PldAccountant;
use pmf::LossPmf;

/// Default grid spacing of the loss (dp_accounting's default `value_discretization_interval`).
pub const DEFAULT_DISCRETISATION: f64 = 1e-4;
/// Largest grid (in points) a composition may use before the spacing is doubled.
pub const MAX_BINS: usize = 1 << 21;
/// One-step δ allowed beyond the top of the grid (it becomes mass at +∞).
const ONE_STEP_TAIL: f64 = 1e-20;
/// Standard deviations kept below the mean where the loss has no lower bound.
const LOWER_TAIL_SIGMAS: f64 = 9.5;

/// Which of the two neighbouring relations a distribution describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The real data set has the extra record: P = (1−q)·N(0,σ²) + q·N(1,σ²), Q = N(0,σ²).
    Remove,
    /// The real data set lacks it: P = N(0,σ²), Q = (1−q)·N(0,σ²) + q·N(1,σ²).
    Add,
}

/// The exact δ(ε) of one step of `event` in `direction`, for any real ε.
///
/// Remove: `δ(ε) = q·δ_G(ε′)` with `e^ε′ = 1 + (e^ε − 1)/q`, and `1 − e^ε` when
/// `e^ε ≤ 1 − q`. Add: `δ(ε) = e^ε (e^−ε − 1 + q) · δ_G(v)` with `e^v = q / (e^−ε − 1 + q)`,
/// and 0 when `e^−ε ≤ 1 − q`. Here `δ_G` is the Gaussian curve of
/// [`gaussian_delta`](super::gaussian_delta) at noise σ. Both follow by substituting the
/// threshold at which the mixture's likelihood ratio crosses e^ε.
pub fn hockey_stick(event: SubsampledGaussian, direction: Direction, epsilon: f64) -> f64 {
    let q = event.sample_rate();
    let sigma = event.noise_multiplier();
    match direction {
        Direction::Remove => {
            let ratio = epsilon.exp_m1() / q; // (e^ε − 1)/q
            if ratio <= -1.0 {
                return -epsilon.exp_m1();
            }
            (q * gaussian_delta(sigma, ratio.ln_1p())).clamp(0.0, 1.0)
        }
        Direction::Add => {
            let excess = (-epsilon).exp_m1() + q; // e^−ε − (1 − q)
            if excess <= 0.0 {
                return 0.0;
            }
            let v = q.ln() - excess.ln();
            (epsilon.exp() * excess * gaussian_delta(sigma, v)).clamp(0.0, 1.0)
        }
    }
}

/// The range of losses worth a grid: below `lo` lies (almost) no probability, above `hi` at
/// most [`ONE_STEP_TAIL`] of δ.
fn loss_range(event: SubsampledGaussian, direction: Direction) -> (f64, f64) {
    let q = event.sample_rate();
    let sigma = event.noise_multiplier();
    let var = sigma * sigma;
    // Loss as a function of the output x: ln(1 − q + q·e^((2x−1)/(2σ²))).
    let mixture_loss = |x: f64| {
        let z = (2.0 * x - 1.0) / (2.0 * var);
        if q == 1.0 {
            z
        } else {
            // ln(1 − q + q e^z) = ln(1 − q) + ln(1 + e^(z + ln q − ln(1−q)))
            let a = z + q.ln() - (-q).ln_1p();
            (-q).ln_1p() + softplus(a)
        }
    };
    let lo = match direction {
        Direction::Remove if q < 1.0 => (-q).ln_1p(),
        // Under P = N(1, σ²) (q = 1) the loss is increasing in x: cut at 1 − 9.5σ.
        Direction::Remove => mixture_loss(1.0 - LOWER_TAIL_SIGMAS * sigma),
        // Under P = N(0, σ²) the loss −mixture_loss(x) is decreasing in x: cut at +9.5σ.
        Direction::Add => -mixture_loss(LOWER_TAIL_SIGMAS * sigma),
    };
    let hi = match direction {
        Direction::Add if q < 1.0 => -(-q).ln_1p(),
        _ => {
            let mut hi = lo.abs().max(1.0);
            while hockey_stick(event, direction, hi) > ONE_STEP_TAIL && hi < 1e6 {
                hi *= 1.5;
            }
            hi
        }
    };
    (lo, hi)
}

fn softplus(a: f64) -> f64 {
    if a > 30.0 {
        a + (-a).exp()
    } else {
        a.exp().ln_1p()
    }
}

/// The connect-the-dots grid distribution of one step, at spacing `h`.
pub(crate) fn one_step(event: SubsampledGaussian, direction: Direction, h: f64) -> LossPmf {
    let (lo, hi) = loss_range(event, direction);
    let first = (lo / h).floor() as i64;
    let last = ((hi / h).ceil() as i64).max(first + 1);
    let count = (last - first + 1) as usize;
    let losses: Vec<f64> = (0..count).map(|j| (first + j as i64) as f64 * h).collect();
    // δ at each grid point, never below the trivial bound 1 − e^ε.
    let deltas: Vec<f64> = losses
        .iter()
        .map(|&s| hockey_stick(event, direction, s).max(-s.exp_m1()))
        .collect();
    // Slopes of δ against γ = e^ε: before the grid (from (0, 1)), between points, after (0).
    let slope_before = (deltas[0] - 1.0) / losses[0].exp();
    let slopes: Vec<f64> = (0..count - 1)
        .map(|j| {
            let gap = losses[j].exp() * h.exp_m1();
            (deltas[j + 1] - deltas[j]) / gap
        })
        .collect();
    let mut mass = Vec::with_capacity(count);
    for j in 0..count {
        let left = if j == 0 { slope_before } else { slopes[j - 1] };
        let right = if j + 1 < count { slopes[j] } else { 0.0 };
        // Convexity makes this ≥ 0; round-off may not.
        mass.push((losses[j].exp() * (right - left)).max(0.0));
    }
    let infinity = deltas[count - 1];
    // Whatever round-off lost from the total goes to +∞ (pessimistic).
    let total: f64 = mass.iter().sum::<f64>() + infinity;
    let missing = (1.0 - total).max(0.0);
    let mut pmf = LossPmf {
        h,
        offset: first,
        mass,
        infinity: (infinity + missing).min(1.0),
    };
    pmf.trim();
    pmf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::gaussian_epsilon;

    fn event(q: f64, sigma: f64) -> SubsampledGaussian {
        SubsampledGaussian::new(q, sigma).unwrap()
    }

    #[test]
    fn full_batch_directions_agree_with_the_gaussian() {
        let e = event(1.0, 1.3);
        for &eps in &[-1.0, 0.0, 0.5, 2.0, 6.0] {
            let g = gaussian_delta(1.3, eps);
            assert!((hockey_stick(e, Direction::Remove, eps) - g).abs() < 1e-14);
            assert!((hockey_stick(e, Direction::Add, eps) - g).abs() < 1e-14);
        }
    }

    #[test]
    fn hockey_stick_has_the_trivial_shape_at_the_ends() {
        let e = event(0.1, 1.0);
        // For e^ε ≤ 1 − q the remove curve is exactly 1 − e^ε.
        let eps = (0.85f64).ln();
        assert!((hockey_stick(e, Direction::Remove, eps) - 0.15).abs() < 1e-15);
        // The add loss is bounded by −ln(1 − q).
        assert_eq!(hockey_stick(e, Direction::Add, 0.2), 0.0);
        assert!(hockey_stick(e, Direction::Add, 0.1) > 0.0);
    }

    #[test]
    fn one_step_grid_dominates_and_is_tight() {
        let e = event(0.05, 0.8);
        for direction in [Direction::Remove, Direction::Add] {
            let grid = one_step(e, direction, 1e-3);
            for &eps in &[0.0, 0.01, 0.1, 0.5, 1.0, 2.0] {
                let truth = hockey_stick(e, direction, eps);
                let bound = grid.delta(eps);
                assert!(bound >= truth * (1.0 - 1e-9) - 1e-15, "{direction:?} {eps}");
                assert!(
                    bound <= truth * 1.01 + 1e-12,
                    "{direction:?} {eps} {bound} {truth}"
                );
            }
        }
    }

    #[test]
    fn one_gaussian_step_matches_the_analytic_epsilon() {
        let exact = gaussian_epsilon(1.0, 1e-5).unwrap();
        let grid = one_step(event(1.0, 1.0), Direction::Remove, DEFAULT_DISCRETISATION);
        let eps = grid.epsilon(1e-5);
        assert!(eps >= exact && eps <= exact * 1.001, "{eps} vs {exact}");
    }
}
