//! Discretised privacy-loss distributions and their composition by FFT.
//!
//! A [`LossPmf`] puts probability mass on the grid `{(offset + j)·h}` plus a mass at +∞. Every
//! operation here keeps it a *pessimistic* estimate: for every ε, the δ(ε) it reports is at
//! least that of the distribution it stands for. The argument, used throughout: δ(ε) is
//! `E[g(L)]` for the increasing function `g(s) = (1 − e^(ε−s))₊ ∈ [0, 1]`, and `g(S + t)` is
//! again increasing in S, so moving mass *up* (or to +∞) never lowers δ, before or after further
//! composition.

use std::sync::Arc;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex64;

/// Chernoff bound on the probability mass cut off above the FFT window of a self-composition;
/// it is added to the mass at +∞.
const WINDOW_TAIL: f64 = 1e-18;
/// Cumulative mass that may be moved from the bottom of the grid up to the first kept bin, or
/// from the top of the grid to +∞, when trimming.
const TRIM_MASS: f64 = 1e-16;
/// Chernoff exponents tried when sizing a window (multiplied by 1/|loss scale|).
const CHERNOFF_LAMBDAS: usize = 24;

/// A privacy-loss distribution on a uniform grid, with mass at +∞.
///
/// Invariants: `h > 0`, every mass is finite and ≥ 0, and `infinity ∈ [0, 1]`.
#[derive(Debug, Clone)]
pub(crate) struct LossPmf {
    /// Grid spacing (the discretisation interval).
    pub(crate) h: f64,
    /// Grid index of `mass[0]`.
    pub(crate) offset: i64,
    /// Probability of loss `(offset + j)·h`.
    pub(crate) mass: Vec<f64>,
    /// Probability of infinite loss, plus every allowance for truncation and round-off.
    pub(crate) infinity: f64,
}

/// Why a composition was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// The result would need more grid points than allowed: coarsen the grid and retry.
    TooManyBins,
}

impl LossPmf {
    /// The loss at grid position `j`.
    fn loss(&self, j: usize) -> f64 {
        (self.offset + j as i64) as f64 * self.h
    }

    /// δ(ε) = infinity + Σ mass_j (1 − e^(ε − s_j))₊.
    pub(crate) fn delta(&self, epsilon: f64) -> f64 {
        let mut delta = self.infinity;
        for (j, &m) in self.mass.iter().enumerate().rev() {
            let s = self.loss(j);
            if s <= epsilon {
                break;
            }
            delta += m * -(epsilon - s).exp_m1();
        }
        delta.min(1.0)
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ `delta` (exact for this discrete distribution, then
    /// nudged up by a few ulps), or +∞ when the mass at +∞ alone exceeds `delta`.
    pub(crate) fn epsilon(&self, delta: f64) -> f64 {
        if self.infinity >= delta {
            return f64::INFINITY;
        }
        let h = self.h;
        // Walking down from the top: above = Σ_{i>j} m_i, scaled = Σ_{i>j} m_i e^(s_j − s_i);
        // on [s_j, s_{j+1}], δ(s_j + t) = infinity + above − e^t · scaled.
        let decay = (-h).exp();
        let (mut above, mut scaled) = (0.0f64, 0.0f64);
        let mut j = self.mass.len();
        while j > 0 {
            j -= 1;
            scaled = decay * (scaled + self.mass.get(j + 1).copied().unwrap_or(0.0));
            above += self.mass.get(j + 1).copied().unwrap_or(0.0);
            let at_grid = self.infinity + above - scaled;
            if at_grid > delta {
                // The answer lies in (s_j, s_{j+1}]: solve infinity + above − e^t·scaled = δ.
                let t = ((self.infinity + above - delta) / scaled).ln();
                let t = if t.is_finite() { t.clamp(0.0, h) } else { h };
                return round_up(self.loss(j) + t).max(0.0);
            }
        }
        // δ(s_0) ≤ target: the answer is at or below the lowest grid point, where
        // δ(s_0 − t) = infinity + total − e^(−t)·Σ m_i e^(s_0 − s_i).
        let total = above + self.mass.first().copied().unwrap_or(0.0);
        let weighted = scaled + self.mass.first().copied().unwrap_or(0.0);
        if weighted <= 0.0 {
            return 0.0;
        }
        let t = ((self.infinity + total - delta) / weighted).ln();
        round_up(self.loss(0) + t).max(0.0)
    }

    /// Moves negligible mass off both ends: the bottom into the first kept bin (up, so
    /// pessimistic), the top to +∞.
    pub(crate) fn trim(&mut self) {
        let mut low_mass = 0.0;
        let mut start = 0;
        while start + 1 < self.mass.len() && low_mass + self.mass[start] <= TRIM_MASS {
            low_mass += self.mass[start];
            start += 1;
        }
        let mut high_mass = 0.0;
        let mut end = self.mass.len();
        while end > start + 1 && high_mass + self.mass[end - 1] <= TRIM_MASS {
            high_mass += self.mass[end - 1];
            end -= 1;
        }
        if start > 0 || end < self.mass.len() {
            self.mass.truncate(end);
            self.mass.drain(..start);
            if let Some(first) = self.mass.first_mut() {
                *first += low_mass;
            }
            self.offset += start as i64;
            self.infinity = (self.infinity + high_mass).min(1.0);
        }
    }

    /// Doubles the grid spacing, rounding every loss *up* to the coarser grid.
    pub(crate) fn coarsen(&mut self) {
        let new_offset = self.offset.div_euclid(2) + i64::from(self.offset.rem_euclid(2) != 0);
        let mut mass = vec![0.0; self.mass.len() / 2 + 2];
        for (j, &m) in self.mass.iter().enumerate() {
            let index = self.offset + j as i64;
            let coarse = index.div_euclid(2) + i64::from(index.rem_euclid(2) != 0);
            mass[(coarse - new_offset) as usize] += m;
        }
        while mass.len() > 1 && mass.last() == Some(&0.0) {
            mass.pop();
        }
        self.h *= 2.0;
        self.offset = new_offset;
        self.mass = mass;
    }

    /// The distribution of the sum of `k` independent copies, computed by raising the FFT of
    /// one copy to the k-th power on a window sized by Chernoff bounds.
    ///
    /// Mass that the circular FFT wraps around from below the window lands higher than it
    /// belongs (pessimistic); mass wrapped from above the window is bounded by
    /// [`WINDOW_TAIL`] and added to +∞, as is an allowance for FFT round-off.
    pub(crate) fn self_compose(&self, k: u64, max_bins: usize) -> Result<LossPmf, Overflow> {
        if k == 1 {
            return Ok(self.clone());
        }
        let n = self.mass.len() as i128;
        let k_wide = i128::from(k);
        let lowest = k_wide * i128::from(self.offset);
        let highest = k_wide * (i128::from(self.offset) + n - 1);
        let (window_lo, window_hi) = self.chernoff_window(k);
        let lo = window_lo.max(lowest);
        let hi = window_hi.min(highest).max(lo);
        let width = hi - lo + 1;
        if width > max_bins as i128 {
            return Err(Overflow::TooManyBins);
        }
        // One copy wider than the window simply wraps as well; the argument above covers it.
        let size = (width as usize).next_power_of_two();
        let mut buffer = vec![Complex64::new(0.0, 0.0); size];
        for (j, &m) in self.mass.iter().enumerate() {
            buffer[j % size].re += m;
        }
        let mut planner = FftPlanner::new();
        planner.plan_fft_forward(size).process(&mut buffer);
        for z in buffer.iter_mut() {
            *z = complex_pow(*z, k);
        }
        planner.plan_fft_inverse(size).process(&mut buffer);
        // Position r of the circular result holds true sums ≡ r + k·offset (mod size); the
        // representative inside [lo, lo + size) is lo + ((r + k·offset − lo) mod size).
        let size_wide = size as i128;
        let shift = (lowest - lo).rem_euclid(size_wide) as usize;
        let scale = 1.0 / size as f64;
        let mut mass = vec![0.0; size];
        let mut most_negative = 0.0f64;
        for (r, z) in buffer.iter().enumerate() {
            let value = z.re * scale;
            if value < 0.0 {
                most_negative = most_negative.min(value);
            }
            mass[(r + shift) % size] = value.max(0.0);
        }
        let infinity_from_steps = -(k as f64 * (-self.infinity).ln_1p()).exp_m1();
        let round_off = -most_negative * size as f64;
        let mut composed = LossPmf {
            h: self.h,
            offset: i64::try_from(lo).map_err(|_| Overflow::TooManyBins)?,
            mass,
            infinity: (infinity_from_steps + WINDOW_TAIL + round_off).min(1.0),
        };
        composed.trim();
        Ok(composed)
    }

    /// The distribution of the sum of one draw from `self` and one from `other` (same grid),
    /// by linear (zero-padded) FFT convolution.
    pub(crate) fn convolve(&self, other: &LossPmf, max_bins: usize) -> Result<LossPmf, Overflow> {
        debug_assert_eq!(self.h.to_bits(), other.h.to_bits());
        let out_len = self.mass.len() + other.mass.len() - 1;
        if out_len > max_bins {
            return Err(Overflow::TooManyBins);
        }
        let size = out_len.next_power_of_two();
        let mut a = vec![Complex64::new(0.0, 0.0); size];
        let mut b = vec![Complex64::new(0.0, 0.0); size];
        for (slot, &m) in a.iter_mut().zip(&self.mass) {
            slot.re = m;
        }
        for (slot, &m) in b.iter_mut().zip(&other.mass) {
            slot.re = m;
        }
        let mut planner = FftPlanner::new();
        let forward = planner.plan_fft_forward(size);
        forward.process(&mut a);
        forward.process(&mut b);
        for (x, y) in a.iter_mut().zip(&b) {
            *x *= *y;
        }
        planner.plan_fft_inverse(size).process(&mut a);
        let scale = 1.0 / size as f64;
        let mut most_negative = 0.0f64;
        let mass: Vec<f64> = a[..out_len]
            .iter()
            .map(|z| {
                let value = z.re * scale;
                most_negative = most_negative.min(value);
                value.max(0.0)
            })
            .collect();
        let infinity = 1.0 - (1.0 - self.infinity) * (1.0 - other.infinity);
        let mut composed = LossPmf {
            h: self.h,
            offset: self.offset + other.offset,
            mass,
            infinity: (infinity - most_negative * size as f64).min(1.0),
        };
        composed.trim();
        Ok(composed)
    }

    /// Grid indices [lo, hi] outside which the k-fold sum has mass at most [`WINDOW_TAIL`]
    /// on each side, by Chernoff: P(S ≥ u) ≤ M(λ)^k e^(−λu) for λ > 0, minimised over λ.
    fn chernoff_window(&self, k: u64) -> (i128, i128) {
        let h = self.h;
        let losses: Vec<(f64, f64)> = self
            .mass
            .iter()
            .enumerate()
            .filter(|(_, m)| **m > 0.0)
            .map(|(j, &m)| (m.ln(), self.loss(j)))
            .collect();
        let scale = losses.iter().map(|&(_, s)| s.abs()).fold(h, f64::max);
        let log_tail = WINDOW_TAIL.ln();
        let k = k as f64;
        let mut best_hi = f64::INFINITY;
        let mut best_lo = f64::NEG_INFINITY;
        for step in 0..CHERNOFF_LAMBDAS {
            // λ from 1e-3/scale to ~8e3/scale, doubling.
            let lambda = 1e-3 * 2f64.powi(step as i32) / scale;
            let log_mgf_up = log_sum_exp_by(&losses, lambda);
            let log_mgf_down = log_sum_exp_by(&losses, -lambda);
            best_hi = best_hi.min((k * log_mgf_up - log_tail) / lambda);
            best_lo = best_lo.max(-(k * log_mgf_down - log_tail) / lambda);
        }
        let to_index = |x: f64, up: bool| -> i128 {
            let v = if up { (x / h).ceil() } else { (x / h).floor() };
            if v.is_finite() {
                v.clamp(-1e30, 1e30) as i128
            } else if v > 0.0 {
                i128::MAX / 4
            } else {
                i128::MIN / 4
            }
        };
        (to_index(best_lo, false), to_index(best_hi, true))
    }
}

/// ln Σ e^(ln m + λ s) over (ln m, s) pairs.
fn log_sum_exp_by(losses: &[(f64, f64)], lambda: f64) -> f64 {
    let max = losses
        .iter()
        .map(|&(lm, s)| lm + lambda * s)
        .fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = losses
        .iter()
        .map(|&(lm, s)| (lm + lambda * s - max).exp())
        .sum();
    max + sum.ln()
}

/// z^k by binary powering: about 2·log2(k) complex products, so round-off grows with log k.
fn complex_pow(z: Complex64, mut k: u64) -> Complex64 {
    let mut result = Complex64::new(1.0, 0.0);
    let mut base = z;
    while k > 0 {
        if k & 1 == 1 {
            result *= base;
        }
        k >>= 1;
        if k > 0 {
            base *= base;
        }
    }
    result
}

/// Rounds a reported ε up by a relative 1e-12 so that round-off in the final solve never
/// reports less than the discrete distribution implies.
fn round_up(epsilon: f64) -> f64 {
    epsilon + 1e-12 * epsilon.abs().max(1e-3)
}

/// A pair of composed distributions, one per neighbouring direction.
#[derive(Debug, Clone)]
pub(crate) struct Composed {
    /// Loss of the data set *with* the record against the one without (remove adjacency).
    pub(crate) remove: Arc<LossPmf>,
    /// Loss of the data set without the record against the one with it (add adjacency).
    pub(crate) add: Arc<LossPmf>,
}

impl Composed {
    pub(crate) fn epsilon(&self, delta: f64) -> f64 {
        self.remove.epsilon(delta).max(self.add.epsilon(delta))
    }

    pub(crate) fn delta(&self, epsilon: f64) -> f64 {
        self.remove.delta(epsilon).max(self.add.delta(epsilon))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pmf(offset: i64, mass: Vec<f64>) -> LossPmf {
        LossPmf {
            h: 0.1,
            offset,
            mass,
            infinity: 0.0,
        }
    }

    #[test]
    fn self_composition_matches_direct_convolution() {
        let one = pmf(-3, vec![0.1, 0.2, 0.3, 0.25, 0.15]);
        let mut direct = one.clone();
        for _ in 1..6 {
            direct = direct.convolve(&one, 1 << 20).unwrap();
        }
        let fft = one.self_compose(6, 1 << 20).unwrap();
        for &eps in &[0.0, 0.3, 0.7, 1.2] {
            let (a, b) = (direct.delta(eps), fft.delta(eps));
            assert!(b >= a - 1e-15, "{eps}: {b} < {a}");
            assert!(b - a < 1e-12, "{eps}: {b} vs {a}");
        }
    }

    #[test]
    fn epsilon_inverts_delta() {
        let one = pmf(-2, vec![0.2, 0.2, 0.2, 0.2, 0.1, 0.1]);
        let composed = one.self_compose(10, 1 << 20).unwrap();
        for &target in &[1e-2, 1e-4, 1e-6] {
            let eps = composed.epsilon(target);
            assert!(composed.delta(eps) <= target * (1.0 + 1e-9), "{target}");
            assert!(composed.delta(eps - 1e-6) > target, "{target}");
        }
    }

    #[test]
    fn coarsening_and_trimming_never_lower_delta() {
        let one = pmf(-5, vec![1e-20, 0.1, 0.2, 0.3, 0.2, 0.1, 0.1 - 1e-20, 1e-20]);
        let mut coarse = one.clone();
        coarse.coarsen();
        let mut trimmed = one.clone();
        trimmed.trim();
        for &eps in &[-0.2, 0.0, 0.05, 0.1, 0.15, 0.25] {
            assert!(coarse.delta(eps) >= one.delta(eps) - 1e-16, "{eps}");
            assert!(trimmed.delta(eps) >= one.delta(eps) - 1e-16, "{eps}");
        }
        assert_eq!(coarse.h, 0.2);
    }

    #[test]
    fn complex_power_matches_repeated_product() {
        let z = Complex64::new(0.6, -0.3);
        let mut expected = Complex64::new(1.0, 0.0);
        for _ in 0..13 {
            expected *= z;
        }
        assert!((complex_pow(z, 13) - expected).norm() < 1e-15);
        assert_eq!(complex_pow(z, 0), Complex64::new(1.0, 0.0));
    }
}
