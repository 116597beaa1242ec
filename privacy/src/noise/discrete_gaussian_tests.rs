use super::*;

fn seeded(sigma: f64, tag: u8) -> DiscreteGaussianSampler {
    danger::seeded(variance_at_least(sigma).unwrap(), [tag; 32]).unwrap()
}

/// The exact pmf of N_ℤ(0, v) on −limit..=limit (the mass beyond is negligible for the σ used).
fn pmf(variance: f64, limit: i64) -> Vec<f64> {
    let weights: Vec<f64> = (-limit..=limit)
        .map(|k| (-(k * k) as f64 / (2.0 * variance)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

#[test]
fn variance_is_rounded_up_to_whole_steps_and_out_of_range_sigma_is_refused() {
    assert_eq!(seeded(1.5, 1).variance(), 3, "1.5² = 2.25 rounds up to 3");
    assert_eq!(seeded(2.0, 1).variance(), 4);
    assert_eq!(seeded(1.0, 1).scale, 2);
    assert_eq!(seeded(3.0, 1).scale, 4, "t = ⌊σ⌋ + 1");
    for bad in [0.5, 0.0, -1.0, f64::NAN, f64::INFINITY, MAX_SIGMA * 2.0] {
        assert!(variance_at_least(bad).is_err(), "{bad}");
    }
    assert!(danger::seeded(0, [0; 32]).is_err());
    assert!(danger::seeded(MAX_VARIANCE + 1, [0; 32]).is_err());
    assert_eq!(variance_at_least(MAX_SIGMA).unwrap(), MAX_VARIANCE);
    assert_eq!(isqrt(15), 3);
    assert_eq!(isqrt(16), 4);
    assert_eq!(isqrt(u64::MAX), u64::from(u32::MAX));
}

#[test]
fn bernoulli_exp_has_probability_exp_minus_gamma() {
    let mut s = seeded(2.0, 7);
    let n = 200_000;
    for (num, den) in [(3u128, 10u128), (17, 10), (5, 2), (0, 1), (1, 1)] {
        let hits = (0..n).filter(|_| s.bernoulli_exp(num, den)).count() as f64 / n as f64;
        let p = (-(num as f64) / den as f64).exp();
        let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-9;
        assert!((hits - p).abs() <= tol, "γ = {num}/{den}: {hits} vs {p}");
    }
}

#[test]
fn frequencies_match_the_exact_pmf() {
    // Small σ, where the discrete distribution differs most from a rounded continuous one.
    for (sigma, tag) in [(1.0, 3u8), (1.8, 4), (4.0, 5)] {
        let mut s = seeded(sigma, tag);
        let variance = s.variance() as f64;
        let limit = (12.0 * variance.sqrt()).ceil() as i64;
        let expected = pmf(variance, limit);
        let n = 200_000;
        let mut counts = vec![0u64; expected.len()];
        for _ in 0..n {
            let x = s.sample();
            assert!(x.abs() <= limit, "σ² {variance}: draw {x} beyond 12σ");
            counts[(x + limit) as usize] += 1;
        }
        for (i, (&c, &p)) in counts.iter().zip(&expected).enumerate() {
            let observed = c as f64 / n as f64;
            let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt() + 2e-5;
            assert!(
                (observed - p).abs() <= tol,
                "σ² {variance}, k = {}: {observed} vs {p}",
                i as i64 - limit
            );
        }
    }
}

#[test]
fn large_sigma_has_mean_zero_and_variance_sigma_squared() {
    // For σ this large the variance of N_ℤ(0, σ²) equals σ² to far below the test's resolution
    // (the gap decays like exp(−2π²σ²)).
    for (sigma, tag) in [(37.5, 8u8), (1.0e4, 9), (MAX_SIGMA, 10)] {
        let mut s = seeded(sigma, tag);
        let n = 100_000;
        let mut xs = vec![0i64; n];
        s.fill(&mut xs);
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        let v = s.variance() as f64;
        // Standard errors: the mean's σ/√n, the sample variance's σ²·√(2/n) (kurtosis 3).
        assert!(
            mean.abs() < 5.0 * (v / n as f64).sqrt(),
            "σ {sigma}: mean {mean}"
        );
        assert!(
            (var - v).abs() < 5.0 * v * (2.0 / n as f64).sqrt(),
            "σ {sigma}: variance {var} vs {v}"
        );
        // Symmetric: as many positive as negative draws.
        let positive = xs.iter().filter(|&&x| x > 0).count() as f64;
        let negative = xs.iter().filter(|&&x| x < 0).count() as f64;
        assert!((positive - negative).abs() < 5.0 * (n as f64).sqrt());
    }
}

#[test]
fn a_seed_replays_and_another_seed_differs() {
    let draw = |tag| {
        let mut s = seeded(100.0, tag);
        (0..64).map(|_| s.sample()).collect::<Vec<_>>()
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
    let debug = format!("{:?}", seeded(100.0, 1));
    assert!(!debug.contains("rng"), "{debug}");
}
