//! Rényi DP of the Poisson-subsampled Gaussian mechanism, and the RDP accountant.
//!
//! The mathematics follow Mironov, Talwar & Zhang, "Rényi Differential Privacy of the Sampled
//! Gaussian Mechanism" (2019), Section 3.3: the RDP at order α is `ln(A_α) / (α − 1)`, where
//! `A_α` is a binomial expansion. At integer orders it is a finite sum, computed term by term
//! in log space. At fractional orders it is an infinite *signed* series (binomial coefficients
//! of a non-integer α alternate in sign), summed as Opacus sums it; dp_accounting 0.6 adds the
//! absolute values instead, which is a looser upper bound, so at fractional orders our values
//! match Opacus and are at most dp_accounting's.

use std::f64::consts::SQRT_2;
use std::sync::OnceLock;

use super::SubsampledGaussian;
use super::special::log_erfc;

mod accountant;

pub use accountant::RdpAccountant;

/// Stop the fractional series once terms fall below e^-30 (Opacus' rule), relative to a
/// total that is at least 1.
const FRACTIONAL_TAIL_LOG: f64 = -30.0;
/// Cap on fractional-series terms; an order that needs more, and whose tail is not a
/// bracketable alternating series, is reported as infinite RDP (never chosen), never truncated.
const FRACTIONAL_MAX_TERMS: usize = 5000;
/// If cancellation in the signed series loses more than this fraction of the digits, fall back
/// to the absolute-value series, which is an upper bound.
const CANCELLATION_LIMIT: f64 = 1e-6;
/// Stop the alternating tail once its bracket is this small relative to ln A (natural log).
const ALTERNATING_TOLERANCE_LOG: f64 = -25.3; // ln(1e-11)

/// dp_accounting's default orders: 1.1 to 10.9 in steps of 0.1, 11 to 63, 128, 256, 512, 1024.
///
/// Computed as `1 + x / 10` like the Python list so that orders compare bit for bit.
pub fn default_orders() -> &'static [f64] {
    static ORDERS: OnceLock<Vec<f64>> = OnceLock::new();
    ORDERS.get_or_init(|| {
        let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
        orders.extend((11..64).map(f64::from));
        orders.extend([128.0, 256.0, 512.0, 1024.0]);
        orders
    })
}

/// RDP of one step of `event` at `order`, i.e. the Rényi divergence of order α between the
/// mechanism's outputs on neighbouring data sets (add/remove one).
///
/// Orders must be finite and > 1; any other order gets `+inf`, which no conversion selects.
pub fn rdp_at_order(event: SubsampledGaussian, order: f64) -> f64 {
    if !(order.is_finite() && order > 1.0) {
        return f64::INFINITY;
    }
    let q = event.sample_rate();
    let sigma = event.noise_multiplier();
    if q == 1.0 {
        return order / (2.0 * sigma * sigma);
    }
    let log_a = if order.fract() == 0.0 && order <= f64::from(u32::MAX) {
        // The integer branch needs `order` as a loop bound; orders beyond u32 are absurd
        // (RDP at such orders is never the minimiser) and take the fractional branch.
        log_a_integer(q, sigma, order as u32)
    } else {
        log_a_fractional(q, sigma, order)
    };
    // A_α ≥ 1 for every α > 1, so a negative log is round-off; RDP is never negative.
    log_a.max(0.0) / (order - 1.0)
}

/// RDP of one step of `event` at each of `orders`.
pub fn rdp_vector(event: SubsampledGaussian, orders: &[f64]) -> Vec<f64> {
    orders.iter().map(|&a| rdp_at_order(event, a)).collect()
}

/// ln A_α at integer α: `Σ_{i=0..α} C(α,i) q^i (1−q)^(α−i) exp((i² − i) / (2σ²))`.
fn log_a_integer(q: f64, sigma: f64, alpha: u32) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let inv_two_var = 1.0 / (2.0 * sigma * sigma);
    let n = f64::from(alpha);
    // Two passes (max, then sum) keep one exp per term and no overflow.
    let term = |i: f64, log_coef: f64| {
        log_coef + i * log_q + (n - i) * log_1mq + (i * i - i) * inv_two_var
    };
    let mut log_coef = 0.0;
    let mut max = f64::NEG_INFINITY;
    for k in 0..=alpha {
        let i = f64::from(k);
        if k > 0 {
            log_coef += (n - i + 1.0).ln() - i.ln();
        }
        max = max.max(term(i, log_coef));
    }
    let mut log_coef = 0.0;
    let mut sum = 0.0;
    for k in 0..=alpha {
        let i = f64::from(k);
        if k > 0 {
            log_coef += (n - i + 1.0).ln() - i.ln();
        }
        sum += (term(i, log_coef) - max).exp();
    }
    max + sum.ln()
}

/// ln A_α at fractional α: the signed series of MTZ 2019, Section 3.3, split at
/// `z0 = σ² ln(1/q − 1) + 1/2` into two integrals (terms s0 and s1).
///
/// Past i = α + 1 the binomial coefficients alternate in sign, and at small α their magnitudes
/// decay only like i^(−α−1): Opacus then sums thousands of terms until one drops below e^-30.
/// We stop much earlier with an *upper bound* instead: once the term magnitudes b_i are
/// decreasing and convex, the averages of consecutive partial sums bracket the limit (the
/// first Euler transform of an alternating series), so the larger of the last two averages is
/// an upper bound within |b_i − b_(i+1)| / 2 of the sum. We stop when that gap is below 1e-11 of
/// ln A (RDP is ln A / (α − 1), and ln A can be tiny), or at e^-30 as Opacus does.
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let var = sigma * sigma;
    let z0 = var * (1.0 / q - 1.0).ln() + 0.5;
    let scale = SQRT_2 * sigma;
    let log_half = 0.5f64.ln();

    let mut log_coef = 0.0; // ln |C(α, i)|
    let mut sign = 1.0; // sign of C(α, i)
    // Partial sums in linear space relative to `base` (the largest log-term so far).
    let mut base = f64::NEG_INFINITY;
    let (mut signed, mut absolute) = (0.0f64, 0.0f64);
    // The last three partial sums and term magnitudes, newest last (relative to `base`).
    let mut sums = [f64::NAN; 3];
    let mut mags = [f64::NAN; 3];
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for k in 0..FRACTIONAL_MAX_TERMS {
        let i = k as f64;
        if k > 0 {
            let factor = alpha - i + 1.0;
            log_coef += factor.abs().ln() - i.ln();
            if factor < 0.0 {
                sign = -sign;
            }
        }
        let j = alpha - i;
        let log_t0 = log_coef + i * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + i * log_1mq;
        let log_e0 = log_half + log_erfc((i - z0) / scale);
        let log_e1 = log_half + log_erfc((z0 - j) / scale);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * var) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * var) + log_e1;
        let biggest = log_s0.max(log_s1);
        if biggest > base {
            // Rescale everything kept so far to the new, larger base.
            let factor = if base.is_finite() {
                (base - biggest).exp()
            } else {
                0.0
            };
            signed *= factor;
            absolute *= factor;
            for x in sums.iter_mut().chain(mags.iter_mut()) {
                *x *= factor;
            }
            base = biggest;
        }
        let magnitude = (log_s0 - base).exp() + (log_s1 - base).exp();
        signed += sign * magnitude;
        absolute += magnitude;
        sums = [sums[1], sums[2], signed];
        mags = [mags[1], mags[2], magnitude];

        let log_total = base + absolute.ln();
        // Opacus' rule, plus: both terms shrinking and negligible against the total.
        if biggest < FRACTIONAL_TAIL_LOG
            && log_s0 < last_s0
            && log_s1 < last_s1
            && biggest < log_total + FRACTIONAL_TAIL_LOG
        {
            return finish(
                base,
                signed,
                absolute,
                alternating_upper(i, alpha, &sums, &mags),
            );
        }
        if let Some(upper) = alternating_upper(i, alpha, &sums, &mags) {
            let gap = 0.5 * (mags[1] - mags[2]);
            let log_a = base + upper.ln();
            if log_a > 0.0 && gap.ln() + base < log_a.ln() + ALTERNATING_TOLERANCE_LOG {
                return finish(base, signed, absolute, Some(upper));
            }
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    // Out of terms: an upper bound if the tail is a well-behaved alternating series, else
    // +inf (this order is then never chosen), never a truncated — possibly low — sum.
    match alternating_upper(FRACTIONAL_MAX_TERMS as f64, alpha, &sums, &mags) {
        Some(upper) => finish(base, signed, absolute, Some(upper)),
        None => f64::INFINITY,
    }
}

/// ln of the result: the alternating upper bound when there is one, else the signed sum
/// (falling back to the absolute-value sum when cancellation leaves too few digits).
fn finish(base: f64, signed: f64, absolute: f64, upper: Option<f64>) -> f64 {
    if let Some(upper) = upper
        && upper > CANCELLATION_LIMIT * absolute
    {
        return base + upper.ln();
    }
    if signed > CANCELLATION_LIMIT * absolute {
        base + signed.ln()
    } else {
        base + absolute.ln()
    }
}

/// If the series is in its alternating regime (i > α + 2) with the last three term magnitudes
/// decreasing and convex, the larger of the last two averaged partial sums: an upper bound on
/// the limit.
fn alternating_upper(i: f64, alpha: f64, sums: &[f64; 3], mags: &[f64; 3]) -> Option<f64> {
    let [b0, b1, b2] = *mags;
    if !(i > alpha + 2.0 && b0 > b1 && b1 > b2 && b0 - b1 >= b1 - b2) {
        return None;
    }
    let older = 0.5 * (sums[0] + sums[1]);
    let newer = 0.5 * (sums[1] + sums[2]);
    Some(older.max(newer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(q: f64, sigma: f64) -> SubsampledGaussian {
        SubsampledGaussian::new(q, sigma).unwrap()
    }

    #[test]
    fn default_orders_match_dp_accounting() {
        let orders = default_orders();
        assert_eq!(orders.len(), 99 + 53 + 4);
        assert_eq!(orders[0], 1.1);
        assert_eq!(orders[98], 1.0 + 99.0 / 10.0);
        assert_eq!(orders[99], 11.0);
        assert_eq!(orders[orders.len() - 1], 1024.0);
        assert!(orders.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn plain_gaussian_is_alpha_over_two_sigma_squared() {
        assert_eq!(rdp_at_order(event(1.0, 2.0), 3.0), 3.0 / 8.0);
    }

    #[test]
    fn integer_order_two_has_a_closed_form() {
        // A_2 = (1-q)² + 2q(1-q) + q² e^{1/σ²} = 1 + q²(e^{1/σ²} − 1).
        let (q, s): (f64, f64) = (0.1, 1.3);
        let expected = (q * q * (1.0 / (s * s)).exp_m1()).ln_1p();
        let got = rdp_at_order(event(q, s), 2.0);
        assert!((got - expected).abs() < 1e-15, "{got} vs {expected}");
    }

    #[test]
    fn fractional_orders_interpolate_their_integer_neighbours() {
        // RDP is non-decreasing in the order.
        let e = event(0.05, 0.9);
        let r2 = rdp_at_order(e, 2.0);
        let r25 = rdp_at_order(e, 2.5);
        let r3 = rdp_at_order(e, 3.0);
        assert!(r2 <= r25 && r25 <= r3, "{r2} {r25} {r3}");
    }

    #[test]
    fn invalid_orders_are_infinite_not_small() {
        let e = event(0.01, 1.0);
        assert_eq!(rdp_at_order(e, 1.0), f64::INFINITY);
        assert_eq!(rdp_at_order(e, f64::NAN), f64::INFINITY);
    }
}
