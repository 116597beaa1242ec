use super::*;
use proptest::prelude::*;

fn gaussian_rdp(alpha: f64, l2: f64, variance: f64) -> f64 {
    alpha * l2 * l2 / (2.0 * variance)
}

#[test]
fn order_grid_is_dp_accountings() {
    let orders = dp_accounting_orders();
    assert_eq!(orders.len(), 99 + 53 + 4);
    assert!((orders[0] - 1.1).abs() < 1e-12);
    assert!((orders[98] - 10.9).abs() < 1e-12);
    assert_eq!(orders[9], 2.0);
    assert_eq!(&orders[99..101], &[11.0, 12.0]);
    assert_eq!(orders[orders.len() - 1], 1024.0);
}

#[test]
fn known_value_at_an_integer_order() {
    // α = 2, Δ₂ = 3, Δ₁ = 9, V = 50: 2·9/100 + min((3·9 + 54)/10_000, 27/100) = 0.18 + 0.0081.
    let v = skellam_rdp_at(2.0, 9.0, 3.0, 50.0).unwrap();
    assert!((v - 0.1881).abs() < 1e-15);
    // Small V: the second branch of the min wins. α = 3, Δ₂ = 1, Δ₁ = 1, V = 1:
    // 1.5 + min((5 + 6)/4, 1.5) = 3.0.
    assert_eq!(skellam_rdp_at(3.0, 1.0, 1.0, 1.0).unwrap(), 3.0);
}

#[test]
fn matches_the_gaussian_in_the_large_variance_limit_at_integer_orders() {
    let (l2, l1) = (1_000.0, 30_000.0);
    for alpha in [2.0, 5.0, 32.0, 1024.0] {
        let mut previous_gap = f64::INFINITY;
        for variance in [1e6, 1e8, 1e10, 1e12] {
            let g = gaussian_rdp(alpha, l2, variance);
            let s = skellam_rdp_at(alpha, l1, l2, variance).unwrap();
            let gap = s / g - 1.0;
            assert!(
                gap >= 0.0 && gap < previous_gap,
                "α={alpha} V={variance}: {gap}"
            );
            previous_gap = gap;
        }
        assert!(previous_gap < 1e-6, "α={alpha}: {previous_gap}");
    }
}

#[test]
fn fractional_orders_interpolate_between_integer_neighbours() {
    let at = |a: f64| skellam_rdp_at(a, 40.0, 10.0, 500.0).unwrap();
    for a in [1.1_f64, 1.5, 2.3, 7.9] {
        assert!(at(a.floor().max(2.0)) <= at(a) + 1e-15 || a < 2.0);
        assert!(at(a) <= at(a.ceil()) + 1e-15);
    }
    // Between 1 and 2 the chord from K(1) = 0 gives exactly the order-2 value.
    assert!((at(1.5) - at(2.0)).abs() < 1e-15);
}

#[test]
fn rejects_bad_input() {
    for (o, l1, l2, v) in [
        (1.0, 1.0, 1.0, 1.0),
        (0.5, 1.0, 1.0, 1.0),
        (f64::NAN, 1.0, 1.0, 1.0),
        (f64::INFINITY, 1.0, 1.0, 1.0),
        (2.0, 0.0, 1.0, 1.0),
        (2.0, 1.0, -1.0, 1.0),
        (2.0, 1.0, 1.0, 0.0),
        (2.0, 1.0, 1.0, f64::NAN),
    ] {
        assert!(skellam_rdp_at(o, l1, l2, v).is_err(), "{o} {l1} {l2} {v}");
    }
    assert!(skellam_rdp(&[2.0, 0.9], 1.0, 1.0, 1.0).is_err());
}

/// log P(X = k) for X ~ Skellam(μ, μ) and k in -range..=range, from the Poisson convolution
/// in log space (index k + range).
fn skellam_log_pmf_table(mu: f64, range: i64) -> Vec<f64> {
    let terms_per_k = 400;
    let n = (range + terms_per_k + 1) as usize;
    let mut log_pois = vec![-mu; n];
    for j in 1..n {
        log_pois[j] = log_pois[j - 1] + mu.ln() - (j as f64).ln();
    }
    (-range..=range)
        .map(|k| {
            let terms: Vec<f64> = (0..terms_per_k as usize)
                .map(|j| log_pois[j + k.unsigned_abs() as usize] + log_pois[j])
                .collect();
            let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
        })
        .collect()
}

/// The exact Rényi divergence D_α(Sk + Δ ‖ Sk) in one dimension, summed numerically.
fn exact_scalar_divergence(alpha: f64, table: &[f64], range: i64, shift: i64) -> f64 {
    let at = |k: i64| table[(k + range) as usize];
    let terms: Vec<f64> = (-range + shift..=range)
        .map(|k| alpha * at(k - shift) + (1.0 - alpha) * at(k))
        .collect();
    let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()) / (alpha - 1.0)
}

#[test]
fn bound_is_above_the_exact_divergence_of_a_small_skellam() {
    // μ = 3 per Poisson (V = 6), shift 2: small enough that discreteness matters.
    let (mu, shift, range) = (3.0, 2_i64, 120_i64);
    let table = skellam_log_pmf_table(mu, range);
    let (l1, l2, variance) = (shift as f64, shift as f64, 2.0 * mu);
    for alpha in [1.1, 1.5, 2.0, 2.5, 3.0, 4.7, 8.0, 16.0] {
        let exact = exact_scalar_divergence(alpha, &table, range, shift);
        let bound = skellam_rdp_at(alpha, l1, l2, variance).unwrap();
        assert!(
            exact > 0.0 && bound >= exact,
            "α={alpha}: bound {bound} < exact {exact}"
        );
    }
}

proptest! {
    #[test]
    fn never_below_the_gaussian_and_monotone_in_order(
        l2 in 1.0_f64..1e4, l1_factor in 1.0_f64..100.0, variance in 1e-2_f64..1e12,
    ) {
        let l1 = l2 * l1_factor;
        let orders = dp_accounting_orders();
        let rdp = skellam_rdp(&orders, l1, l2, variance).unwrap();
        for (i, (&a, &e)) in orders.iter().zip(&rdp).enumerate() {
            prop_assert!(e >= gaussian_rdp(a, l2, variance), "order {a}");
            prop_assert!(e.is_finite());
            if i > 0 {
                prop_assert!(e >= rdp[i - 1] * (1.0 - 1e-12), "not monotone at {a}");
            }
        }
    }

    #[test]
    fn more_noise_never_costs_more(l2 in 1.0_f64..1e3, variance in 1.0_f64..1e9, alpha in 1.05_f64..300.0) {
        let a = skellam_rdp_at(alpha, l2 * 5.0, l2, variance).unwrap();
        let b = skellam_rdp_at(alpha, l2 * 5.0, l2, variance * 2.0).unwrap();
        prop_assert!(b <= a);
    }
}
