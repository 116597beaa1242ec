use proptest::prelude::*;

use super::*;
use crate::accounting::gaussian_epsilon;

fn fit(mean: f64, std: f64) -> GaussianFit {
    GaussianFit {
        mean,
        std,
        count: 0,
    }
}

#[test]
fn equal_variances_are_the_gaussian_mechanism() {
    // N(0, s²) against N(Δ, s²) is the Gaussian mechanism with noise multiplier s/Δ.
    for (shift, std, delta) in [
        (1.0, 1.0, 1e-5),
        (0.3, 1.0, 1e-5),
        (2.0, 0.5, 1e-3),
        (1.0, 4.0, 1e-2),
    ] {
        let ours = two_gaussians_epsilon(fit(0.0, std), fit(shift, std), delta).unwrap();
        let exact = gaussian_epsilon(std / shift, delta).unwrap();
        assert!(
            (ours - exact).abs() < 1e-9,
            "{shift} {std} {delta}: {ours} vs {exact}"
        );
    }
}

#[test]
fn reproduces_the_reference_implementations_worked_number() {
    // Andrew et al.'s code (google-research/federated, one_shot_epe) pins: canary cosines
    // N(s, s²) against the null N(0, 1/d) with s = d^-1/2, δ = 1e-2, gives ε = 2.317789.
    let d = 2000usize;
    let s = (d as f64).powf(-0.5);
    let eps = two_gaussians_epsilon(GaussianFit::random_cosine(d), fit(s, s), 1e-2).unwrap();
    assert!((eps - 2.317789).abs() < 1e-6, "{eps}");
}

#[test]
fn nearly_equal_variances_are_continuous() {
    let base = two_gaussians_epsilon(fit(0.0, 1.0), fit(1.0, 1.0), 1e-5).unwrap();
    for diff in [-1e-12, 1e-12, -1e-9, 1e-9] {
        let near = two_gaussians_epsilon(fit(0.0, 1.0), fit(1.0, 1.0 + diff), 1e-5).unwrap();
        assert!((near - base).abs() < 1e-6, "{diff}: {near} vs {base}");
    }
}

/// δ(ε) by brute force: ∫ max(0, p − e^ε q) over a fine grid, both directions.
fn numeric_delta(p: GaussianFit, q: GaussianFit, eps: f64) -> f64 {
    let pdf = |x: f64, g: GaussianFit| {
        (-(x - g.mean).powi(2) / (2.0 * g.std * g.std)).exp()
            / (g.std * (2.0 * std::f64::consts::PI).sqrt())
    };
    let lo = (p.mean - 12.0 * p.std).min(q.mean - 12.0 * q.std);
    let hi = (p.mean + 12.0 * p.std).max(q.mean + 12.0 * q.std);
    let n = 400_000;
    let h = (hi - lo) / n as f64;
    let (mut forward, mut backward) = (0.0, 0.0);
    for i in 0..=n {
        let x = lo + i as f64 * h;
        let w = if i == 0 || i == n { 0.5 } else { 1.0 };
        let (a, b) = (pdf(x, p), pdf(x, q));
        forward += w * (a - eps.exp() * b).max(0.0);
        backward += w * (b - eps.exp() * a).max(0.0);
    }
    forward.max(backward) * h
}

#[test]
fn unequal_variances_match_numerical_integration() {
    let cases = [
        (fit(0.0, 1.0), fit(1.0, 2.0), 0.5),
        (fit(0.0, 1.0), fit(2.0, 0.5), 1.0),
        (fit(1.0, 3.0), fit(-1.0, 1.0), 0.2),
        (fit(0.0, 0.02), fit(0.05, 0.03), 2.0),
    ];
    for (p, q, eps) in cases {
        let exact = two_gaussians_delta(p, q, eps);
        let numeric = numeric_delta(p, q, eps);
        assert!(
            (exact - numeric).abs() < 1e-6,
            "{p:?} {q:?} ε={eps}: {exact} vs {numeric}"
        );
    }
}

#[test]
fn degenerate_and_invalid_fits() {
    assert_eq!(
        two_gaussians_epsilon(fit(0.0, 0.0), fit(1.0, 1.0), 1e-5).unwrap(),
        f64::INFINITY
    );
    assert_eq!(
        two_gaussians_epsilon(fit(0.0, 1.0), fit(0.0, 1.0), 1e-5).unwrap(),
        0.0
    );
    assert!(two_gaussians_epsilon(fit(0.0, 1.0), fit(f64::NAN, 1.0), 1e-5).is_err());
    assert!(two_gaussians_epsilon(fit(0.0, 1.0), fit(1.0, 1.0), 0.0).is_err());
    assert!(GaussianFit::of(&[1.0]).is_err());
    assert!(GaussianFit::of(&[1.0, f64::INFINITY]).is_err());
}

#[test]
fn estimate_fits_both_samples() {
    let observed = [1.0, 2.0, 3.0];
    let null = [-1.0, 0.0, 1.0];
    let e = estimate(&observed, &null, 1e-5).unwrap();
    assert_eq!((e.observed.mean, e.observed.std), (2.0, 1.0));
    assert_eq!((e.null.mean, e.null.std), (0.0, 1.0));
    let expected = gaussian_epsilon(0.5, 1e-5).unwrap();
    assert!((e.epsilon - expected).abs() < 1e-9);
}

#[test]
fn cosine_of_simple_vectors() {
    assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
    assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    assert!((cosine(&[1.0, 2.0, 3.0], &[-1.0, -2.0, -3.0]) + 1.0).abs() < 1e-12);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Shifting and scaling both fits together changes nothing: ε depends on the shapes only.
    #[test]
    fn invariant_under_affine_maps(
        m1 in -2.0f64..2.0, s1 in 0.2f64..3.0, m2 in -2.0f64..2.0, s2 in 0.2f64..3.0,
        shift in -5.0f64..5.0, scale in 0.1f64..10.0,
    ) {
        let a = two_gaussians_epsilon(fit(m1, s1), fit(m2, s2), 1e-3).unwrap();
        let b = two_gaussians_epsilon(
            fit(m1 * scale + shift, s1 * scale),
            fit(m2 * scale + shift, s2 * scale),
            1e-3,
        )
        .unwrap();
        prop_assert!((a - b).abs() <= 1e-6 * a.max(1.0), "{a} vs {b}");
    }

    /// A canary distribution further from the null never lowers the estimate.
    #[test]
    fn grows_with_the_shift(shift in 0.0f64..4.0, std in 0.3f64..2.0, delta_exp in 2i32..8) {
        let delta = 10f64.powi(-delta_exp);
        let near = two_gaussians_epsilon(fit(0.0, 1.0), fit(shift, std), delta).unwrap();
        let far = two_gaussians_epsilon(fit(0.0, 1.0), fit(shift + 0.25, std), delta).unwrap();
        prop_assert!(far >= near - 1e-9, "{near} then {far}");
    }

    /// A larger δ never raises ε (the curve δ(ε) is decreasing).
    #[test]
    fn falls_with_delta(shift in 0.0f64..4.0, std in 0.3f64..2.0) {
        let tight = two_gaussians_epsilon(fit(0.0, 1.0), fit(shift, std), 1e-6).unwrap();
        let loose = two_gaussians_epsilon(fit(0.0, 1.0), fit(shift, std), 1e-2).unwrap();
        prop_assert!(loose <= tight + 1e-9);
    }
}
