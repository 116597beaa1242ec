use super::*;
use crate::accounting::SubsampledGaussian;
use crate::accounting::rdp::{default_orders, rdp_vector};

fn gaussian(sigma: f64) -> impl Fn(u32) -> f64 {
    move |alpha| f64::from(alpha) / (2.0 * sigma * sigma)
}

#[test]
fn without_subsampling_it_is_the_mechanism_itself() {
    let orders = [1.5, 2.0, 7.0, 32.0];
    let got = poisson_subsampled_rdp(1.0, gaussian(2.0), &orders);
    assert_eq!(got[1], 2.0 / 8.0);
    assert_eq!(got[2], 7.0 / 8.0);
    assert!((got[0] - 2.0 / 8.0).abs() < 1e-15, "chord at 1.5 uses ε(2)");
}

#[test]
fn it_bounds_the_exact_sampled_gaussian_from_above_and_stays_close() {
    // For the continuous Gaussian the exact value is known (MTZ 2019): the general bound
    // must never be below it, and must stay within its own ln(3)/(α−1) slack.
    for (q, sigma) in [
        (0.01, 1.1),
        (0.1, 0.8),
        (0.25, 2.0),
        (0.5, 5.0),
        (0.001, 0.7),
    ] {
        let orders = default_orders();
        let exact = rdp_vector(SubsampledGaussian::new(q, sigma).unwrap(), orders);
        let general = poisson_subsampled_rdp(q, gaussian(sigma), orders);
        for ((&alpha, &e), &g) in orders.iter().zip(&exact).zip(&general) {
            if alpha.fract() != 0.0 {
                continue;
            }
            assert!(
                g >= e * (1.0 - 1e-9),
                "q {q} σ {sigma} α {alpha}: {g} < {e}"
            );
            assert!(
                g <= e + 3f64.ln() / (alpha - 1.0) + 1e-12,
                "q {q} σ {sigma} α {alpha}: {g} too loose against {e}"
            );
        }
    }
}

#[test]
fn small_sampling_rates_amplify() {
    // At σ = 1 the orders where subsampling helps are the low ones (at α = 32 the exact
    // sampled Gaussian is barely amplified either).
    let orders = [2.0, 4.0, 8.0];
    let amplified = poisson_subsampled_rdp(0.01, gaussian(1.0), &orders);
    for (a, &alpha) in amplified.iter().zip(&orders) {
        assert!(*a < alpha / 2.0 / 10.0, "α {alpha}: {a}");
        assert!(*a > 0.0);
    }
}

#[test]
fn fractional_orders_lie_on_the_chord_and_bad_input_is_infinite() {
    let f = |o: f64| poisson_subsampled_rdp(0.05, gaussian(1.0), &[o])[0];
    let (e3, e4) = (f(3.0), f(4.0));
    let chord = (2.0 * e3 + 0.5 * (3.0 * e4 - 2.0 * e3)) / 2.5;
    assert!((f(3.5) - chord).abs() < 1e-15);
    assert!(f(3.5) <= e4 && f(3.5) >= e3 * 0.99);
    assert_eq!(f(1.0), f64::INFINITY);
    assert_eq!(f(f64::NAN), f64::INFINITY);
    assert_eq!(
        poisson_subsampled_rdp(0.0, gaussian(1.0), &[2.0])[0],
        f64::INFINITY
    );
    assert_eq!(
        poisson_subsampled_rdp(0.5, |_| f64::NAN, &[2.0, 3.0])[1],
        f64::INFINITY
    );
}
