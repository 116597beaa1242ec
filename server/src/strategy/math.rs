//! The aggregation arithmetic as pure functions over flat parameter vectors.
//!
//! Updates are deltas Δ = w_local − w_global. Server optimisers treat the mean delta Δ̄ as a
//! pseudo-gradient step direction (Reddi et al., "Adaptive Federated Optimization", 2021,
//! Algorithm 2); moments are kept in `f64`.

/// w + η·step, rounded to `f32`.
pub fn apply_step(current: &[f32], step: &[f64], lr: f64) -> Vec<f32> {
    current
        .iter()
        .zip(step)
        .map(|(w, s)| (f64::from(*w) + lr * s) as f32)
        .collect()
}

/// Heavy-ball momentum: v ← β·v + Δ̄ (in place).
pub fn momentum_update(velocity: &mut [f64], mean_delta: &[f64], beta: f64) {
    for (v, d) in velocity.iter_mut().zip(mean_delta) {
        *v = beta * *v + d;
    }
}

/// First moment: m ← β₁·m + (1 − β₁)·Δ̄ (in place).
pub fn first_moment_update(m: &mut [f64], mean_delta: &[f64], beta1: f64) {
    for (m, d) in m.iter_mut().zip(mean_delta) {
        *m = beta1 * *m + (1.0 - beta1) * d;
    }
}

/// Adam's second moment: v ← β₂·v + (1 − β₂)·Δ̄² (in place).
pub fn adam_second_moment(v: &mut [f64], mean_delta: &[f64], beta2: f64) {
    for (v, d) in v.iter_mut().zip(mean_delta) {
        *v = beta2 * *v + (1.0 - beta2) * d * d;
    }
}

/// Yogi's second moment: v ← v − (1 − β₂)·Δ̄²·sign(v − Δ̄²) (in place).
pub fn yogi_second_moment(v: &mut [f64], mean_delta: &[f64], beta2: f64) {
    for (v, d) in v.iter_mut().zip(mean_delta) {
        let d2 = d * d;
        let sign = (*v - d2).partial_cmp(&0.0).map_or(0.0, |o| o as i8 as f64);
        *v -= (1.0 - beta2) * d2 * sign;
    }
}

/// Adagrad's second moment: v ← v + Δ̄² (in place).
pub fn adagrad_second_moment(v: &mut [f64], mean_delta: &[f64]) {
    for (v, d) in v.iter_mut().zip(mean_delta) {
        *v += d * d;
    }
}

/// The adaptive step m / (√v + τ).
pub fn adaptive_direction(m: &[f64], v: &[f64], tau: f64) -> Vec<f64> {
    m.iter().zip(v).map(|(m, v)| m / (v.sqrt() + tau)).collect()
}

/// Coordinate-wise median of `updates` (all the same length, at least one). For an even
/// count it is the mean of the two middle values.
pub fn coordinate_median(updates: &[Vec<f32>]) -> Vec<f64> {
    coordinate_map(updates, |column| {
        let n = column.len();
        if n % 2 == 1 {
            column[n / 2]
        } else {
            (column[n / 2 - 1] + column[n / 2]) / 2.0
        }
    })
}

/// Coordinate-wise mean after dropping ⌊fraction·n⌋ values from each end.
pub fn trimmed_mean(updates: &[Vec<f32>], fraction: f64) -> Vec<f64> {
    let n = updates.len();
    let cut = ((fraction * n as f64).floor() as usize).min(n.saturating_sub(1) / 2);
    coordinate_map(updates, |column| {
        let kept = &column[cut..column.len() - cut];
        kept.iter().sum::<f64>() / kept.len() as f64
    })
}

/// Applies `f` to each coordinate's sorted column of values.
fn coordinate_map(updates: &[Vec<f32>], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let len = updates.first().map_or(0, Vec::len);
    let mut column = Vec::with_capacity(updates.len());
    (0..len)
        .map(|i| {
            column.clear();
            column.extend(updates.iter().map(|u| f64::from(u[i])));
            column.sort_by(f64::total_cmp);
            f(&column)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn robust_statistics_resist_one_outlier() {
        let updates = vec![
            vec![1.0, 10.0],
            vec![2.0, 20.0],
            vec![3.0, 30.0],
            vec![1e9, -1e9],
        ];
        assert_eq!(coordinate_median(&updates), vec![2.5, 15.0]);
        assert_eq!(trimmed_mean(&updates, 0.25), vec![2.5, 15.0]);
        assert_eq!(trimmed_mean(&updates[..3], 0.0), vec![2.0, 20.0]);
        assert_eq!(coordinate_median(&updates[..3]), vec![2.0, 20.0]);
    }

    #[test]
    fn yogi_moves_toward_the_square() {
        let mut v = vec![1.0, 0.0, 4.0];
        yogi_second_moment(&mut v, &[1.0, 2.0, 1.0], 0.9);
        // v = 1: sign(0) = 0 keeps it; v = 0 < 4: +0.1·4; v = 4 > 1: −0.1·1.
        let expected = [1.0, 0.4, 3.9];
        assert!(
            v.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-12),
            "{v:?}"
        );
    }

    proptest! {
        #[test]
        fn median_and_trimmed_mean_stay_within_the_range(
            rows in proptest::collection::vec(proptest::collection::vec(-1e3f32..1e3, 3), 1..12),
            fraction in 0.0f64..0.5,
        ) {
            for stat in [coordinate_median(&rows), trimmed_mean(&rows, fraction)] {
                for (i, s) in stat.iter().enumerate() {
                    let lo = rows.iter().map(|r| f64::from(r[i])).fold(f64::INFINITY, f64::min);
                    let hi = rows.iter().map(|r| f64::from(r[i])).fold(f64::NEG_INFINITY, f64::max);
                    prop_assert!(*s >= lo - 1e-9 && *s <= hi + 1e-9);
                }
            }
        }

        #[test]
        fn identical_rows_are_their_own_robust_aggregate(
            row in proptest::collection::vec(-1e3f32..1e3, 1..8), n in 1usize..9,
        ) {
            let rows = vec![row.clone(); n];
            let expected: Vec<f64> = row.iter().map(|v| f64::from(*v)).collect();
            prop_assert_eq!(coordinate_median(&rows), expected.clone());
            prop_assert_eq!(trimmed_mean(&rows, 0.3), expected);
        }
    }
}
