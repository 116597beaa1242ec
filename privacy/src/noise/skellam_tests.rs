use super::*;

fn seeded(mu: f64, tag: u8) -> SkellamSampler {
    danger::seeded(mu, [tag; 32]).unwrap()
}

/// Mean and unbiased variance of `n` draws.
fn moments(sampler: &mut SkellamSampler, n: usize) -> (f64, f64) {
    let mut xs = vec![0_i64; n];
    sampler.fill(&mut xs);
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    (mean, var)
}

#[test]
fn mean_is_zero_and_variance_is_two_mu() {
    // Knuth branch (μ < 12), rejection branch, and a large μ.
    for (tag, mu) in [(1_u8, 0.3), (2, 5.0), (3, 40.0), (4, 1.0e6)] {
        let n = 100_000;
        let (mean, var) = moments(&mut seeded(mu, tag), n);
        let sigma2 = 2.0 * mu;
        // 5 standard errors: the mean's is √(2μ/n); the sample variance's is
        // σ²·√((2 + 1/(2μ))/n) since Skellam(μ, μ) has excess kurtosis 1/(2μ).
        let mean_tol = 5.0 * (sigma2 / n as f64).sqrt();
        let var_tol = 5.0 * sigma2 * ((2.0 + 1.0 / (2.0 * mu)) / n as f64).sqrt();
        assert!(
            mean.abs() < mean_tol,
            "mu={mu}: mean {mean} beyond {mean_tol}"
        );
        assert!(
            (var - sigma2).abs() < var_tol,
            "mu={mu}: variance {var} vs {sigma2} ± {var_tol}"
        );
    }
}

/// P(X = k) for X ~ Skellam(μ, μ), as a convolution of two Poisson pmfs.
fn skellam_pmf(mu: f64, k: i64) -> f64 {
    let pois = |j: i64| -> f64 {
        let mut log_p = -mu + j as f64 * mu.ln();
        for i in 1..=j {
            log_p -= (i as f64).ln();
        }
        log_p.exp()
    };
    (0..200).map(|j| pois(j + k.abs()) * pois(j)).sum()
}

#[test]
fn frequencies_match_the_skellam_pmf() {
    let mu = 2.0;
    let n = 200_000;
    let mut xs = vec![0_i64; n];
    seeded(mu, 9).fill(&mut xs);
    for k in -6..=6 {
        let p = skellam_pmf(mu, k);
        let observed = xs.iter().filter(|&&x| x == k).count() as f64 / n as f64;
        let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-6;
        assert!((observed - p).abs() < tol, "k={k}: {observed} vs {p}");
    }
}

#[test]
fn os_seeded_samplers_differ() {
    let mut a = vec![0_i64; 64];
    let mut b = vec![0_i64; 64];
    SkellamSampler::from_os_entropy(100.0).unwrap().fill(&mut a);
    SkellamSampler::from_os_entropy(100.0).unwrap().fill(&mut b);
    assert_ne!(a, b);
}

#[test]
fn forks_are_independent_streams() {
    let mut parent = seeded(50.0, 7);
    let mut child = parent.fork();
    let mut a = vec![0_i64; 64];
    let mut b = vec![0_i64; 64];
    parent.fill(&mut a);
    child.fill(&mut b);
    assert_ne!(a, b);
    assert_eq!(child.mu(), 50.0);
}

#[test]
fn rejects_bad_mu() {
    for mu in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_MU * 2.0] {
        assert!(
            matches!(
                SkellamSampler::from_os_entropy(mu),
                Err(NoiseError::InvalidParameter { name: "mu", .. })
            ),
            "{mu}"
        );
    }
}

#[test]
fn add_to_adds_the_same_draws_fill_would() {
    let mut update: Vec<i64> = (0..100).map(|i| i * 1000 - 7).collect();
    let original = update.clone();
    seeded(30.0, 5).add_to(&mut update).unwrap();
    let mut noise = vec![0_i64; 100];
    seeded(30.0, 5).fill(&mut noise);
    for i in 0..100 {
        assert_eq!(update[i], original[i] + noise[i]);
    }
}

#[test]
fn add_to_fails_closed_on_overflow() {
    // Each coordinate overflows when its draw has the wrong sign (probability ≈ 1/2 at this μ),
    // so some coordinate of 64 must, and the error must say which.
    let mut update: Vec<i64> = (0..64)
        .map(|i| if i % 2 == 0 { i64::MAX } else { i64::MIN })
        .collect();
    let err = seeded(1.0e6, 3).add_to(&mut update).unwrap_err();
    assert!(matches!(err, NoiseError::Overflow { index } if index < 64));
}

#[test]
fn modular_addition_matches_reducing_the_integer_sum() {
    let bits = 20;
    let modulus = 1_i64 << bits;
    let plain: Vec<i64> = (0..500).map(|i| (i * 7919) % modulus).collect();
    let mut ring: Vec<u64> = plain.iter().map(|&x| x as u64).collect();
    seeded(1.0e4, 11).add_to_modular(&mut ring, bits).unwrap();
    let mut noise = vec![0_i64; 500];
    seeded(1.0e4, 11).fill(&mut noise);
    for i in 0..500 {
        assert_eq!(ring[i] as i64, (plain[i] + noise[i]).rem_euclid(modulus));
    }
    assert!(seeded(1.0, 1).add_to_modular(&mut ring, 0).is_err());
    assert!(seeded(1.0, 1).add_to_modular(&mut ring, 65).is_err());
}
