use super::*;
use opendp::{domains::VectorDomain, metrics::L2Distance};

fn budget(eps: f64, delta: f64) -> EpsDelta {
    EpsDelta::new(eps, delta).unwrap()
}

fn three_metrics(mechanism_budget: MetricsRelease) -> MetricsRelease {
    mechanism_budget
        .statistic(Statistic::accuracy(0.9, 1_000))
        .statistic(Statistic::mean_loss(0.4, 4.0, 1_000))
        .statistic(Statistic::count("examples", 1_000, 5_000))
}

#[test]
fn gaussian_charge_is_opendps_map_by_an_independent_route() {
    let b = budget(1.0, 1e-6);
    let prepared = three_metrics(MetricsRelease::gaussian(b))
        .prepare()
        .unwrap();
    // The same noise as one vector Gaussian over the normalised statistics: ℓ2 sensitivity √3
    // (each coordinate moves by ≤ 1), scale `prepared.scale`.
    let vector = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        prepared.scale,
        None,
    )
    .unwrap();
    let direct = make_fix_delta(&make_zCDP_to_approxDP(vector).unwrap(), 1e-6).unwrap();
    let (eps, delta) = direct.map(&3.0_f64.sqrt()).unwrap();
    let charged = prepared.charge();
    assert_eq!(charged.delta(), delta);
    assert!(
        (charged.epsilon() - eps).abs() <= 1e-9 * eps,
        "{charged:?} vs {eps}"
    );
    assert!(charged.fits_within(&b));
}

#[test]
fn single_statistic_charge_matches_opendp_in_original_units() {
    let b = budget(0.5, 1e-5);
    let stat = Statistic::accuracy(0.75, 400);
    let prepared = MetricsRelease::gaussian(b)
        .statistic(stat)
        .prepare()
        .unwrap();
    let std = prepared.noise_std()[0];
    let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        AtomDomain::<f64>::new_non_nan(),
        AbsoluteDistance::<f64>::default(),
        std,
        None,
    )
    .unwrap();
    let m = make_fix_delta(&make_zCDP_to_approxDP(m).unwrap(), 1e-5).unwrap();
    let (eps, _) = m.map(&(1.0 / 400.0)).unwrap();
    // opendp rounds d_in to its noise lattice, so a change of units may shift ε slightly.
    assert!((prepared.charge().epsilon() - eps).abs() <= 1e-6 * eps);
}

#[test]
fn calibration_spends_the_budget_and_no_more() {
    for (mechanism, b) in [
        (Mechanism::Gaussian, budget(0.8, 1e-7)),
        (Mechanism::Laplace, budget(0.8, 0.0)),
    ] {
        let release = match mechanism {
            Mechanism::Gaussian => MetricsRelease::gaussian(b),
            Mechanism::Laplace => MetricsRelease::laplace(b),
        };
        let prepared = three_metrics(release).prepare().unwrap();
        let charged = prepared.charge();
        assert!(charged.fits_within(&b), "{mechanism:?}: {charged:?}");
        // 0.1% less noise would overspend: the search is tight.
        let (_, tighter) = cost_at(mechanism, 3, prepared.scale * 0.999, b.delta()).unwrap();
        assert!(
            tighter.epsilon() > b.epsilon(),
            "{mechanism:?}: {tighter:?}"
        );
    }
}

#[test]
fn laplace_is_pure_and_matches_the_textbook_scale() {
    let prepared = MetricsRelease::laplace(budget(0.6, 0.0))
        .statistic(Statistic::count("n", 10, 100))
        .statistic(Statistic::count("m", 20, 100))
        .prepare()
        .unwrap();
    assert_eq!(prepared.charge().delta(), 0.0);
    // ε/2 per count of sensitivity 1: scale 2/ε = 3.33..., std √2 times that. opendp's
    // rounding slack may add a little noise, never remove it.
    let textbook = std::f64::consts::SQRT_2 * 2.0 / 0.6;
    for std in prepared.noise_std() {
        assert!(
            std >= textbook * (1.0 - 1e-9) && std <= textbook * 1.01,
            "{std}"
        );
    }
}

#[test]
fn gaussian_cost_is_within_the_classic_zcdp_conversion() {
    let prepared = MetricsRelease::gaussian(budget(1.0, 1e-6))
        .statistic(Statistic::count("n", 10, 100))
        .prepare()
        .unwrap();
    // ρ = Δ²/(2σ²) with Δ = 1; Bun & Steinke: ε ≤ ρ + 2√(ρ ln(1/δ)). opendp's conversion is
    // tighter, so its ε may not exceed this.
    let sigma = prepared.noise_std()[0];
    let rho = 1.0 / (2.0 * sigma * sigma);
    let classic = rho + 2.0 * (rho * (1e6_f64).ln()).sqrt();
    assert!(prepared.charge().epsilon() <= classic);
    assert!(prepared.charge().epsilon() > 0.9);
}

/// Empirical spread of `draws` releases of the prepared statistics around their true values.
fn spread(prepared: &PreparedRelease, draws: usize) -> Vec<(f64, f64)> {
    let k = prepared.statistics.len();
    let mut sq = vec![0.0; k];
    let mut abs = vec![0.0; k];
    for _ in 0..draws {
        for (i, r) in prepared.draw().unwrap().iter().enumerate() {
            let e = r.value - prepared.statistics[i].value;
            sq[i] += e * e;
            abs[i] += e.abs();
        }
    }
    (0..k)
        .map(|i| ((sq[i] / draws as f64).sqrt(), abs[i] / draws as f64))
        .collect()
}

#[test]
fn empirical_noise_matches_the_declared_sensitivity() {
    let draws = 4_000;
    // Gaussian: RMS error ≈ σ; its relative standard error is 1/√(2n) ≈ 1.1%.
    let g = three_metrics(MetricsRelease::gaussian(budget(1.0, 1e-6)))
        .prepare()
        .unwrap();
    for ((rms, _), std) in spread(&g, draws).into_iter().zip(g.noise_std()) {
        assert!(
            (rms / std - 1.0).abs() < 0.06,
            "gaussian rms {rms} vs {std}"
        );
    }
    // Laplace: mean |error| = b = std/√2, relative standard error 1/√n ≈ 1.6%.
    let l = three_metrics(MetricsRelease::laplace(budget(1.5, 0.0)))
        .prepare()
        .unwrap();
    for (((_, mad), std), s) in spread(&l, draws)
        .into_iter()
        .zip(l.noise_std())
        .zip(&l.statistics)
    {
        let b = std / std::f64::consts::SQRT_2;
        assert!((mad / b - 1.0).abs() < 0.08, "laplace mad {mad} vs {b}");
        // And b is the textbook k·Δ/ε (3 statistics, ε = 1.5) up to opendp's rounding slack.
        let textbook = 3.0 * s.sensitivity / 1.5;
        assert!(b >= textbook * (1.0 - 1e-9) && b <= textbook * 1.01);
    }
}

#[test]
fn released_values_keep_names_and_order_and_charge_first() {
    let prepared = three_metrics(MetricsRelease::gaussian(budget(2.0, 1e-6)))
        .prepare()
        .unwrap();
    let expected = prepared.charge();
    let mut seen = None;
    let released = prepared
        .release_after_charging(|c| {
            seen = Some(c);
            Ok::<(), String>(())
        })
        .unwrap();
    assert_eq!(seen, Some(expected));
    assert_eq!(released.charged(), expected);
    let names: Vec<&str> = released.values().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["accuracy", "loss", "examples"]);
}

#[test]
fn a_refused_charge_releases_nothing() {
    let prepared = three_metrics(MetricsRelease::gaussian(budget(2.0, 1e-6)))
        .prepare()
        .unwrap();
    let err = prepared
        .release_after_charging(|_| Err("budget exhausted"))
        .unwrap_err();
    assert_eq!(err, ReleaseError::ChargeRefused("budget exhausted".into()));
}

#[test]
fn bad_declarations_and_budgets_are_typed_errors() {
    let ok = budget(1.0, 1e-6);
    let invalid = |stat: Statistic| {
        matches!(
            MetricsRelease::gaussian(ok).statistic(stat).prepare(),
            Err(ReleaseError::InvalidStatistic { .. })
        )
    };
    assert!(invalid(Statistic::accuracy(0.5, 0))); // n = 0: infinite sensitivity
    assert!(invalid(Statistic::accuracy(1.5, 10))); // outside [0, 1]
    assert!(invalid(Statistic::accuracy(f64::NAN, 10)));
    assert!(invalid(Statistic::mean_loss(0.1, -1.0, 10))); // upper below lower
    assert!(invalid(Statistic::bounded("x", 0.0, 0.0, 0.0, 1.0)));
    assert!(invalid(Statistic::bounded("x", 0.0, -1.0, 1.0, 0.0)));
    assert!(invalid(Statistic::bounded("x", 0.0, -1.0, 1.0, f64::NAN)));
    assert!(invalid(Statistic::bounded(
        "x",
        0.0,
        f64::NEG_INFINITY,
        1.0,
        1.0
    )));
    assert!(invalid(Statistic::count("n", 11, 10)));
    assert_eq!(
        MetricsRelease::gaussian(ok).prepare().unwrap_err(),
        ReleaseError::NoStatistics
    );
    let one = Statistic::count("n", 1, 10);
    assert!(matches!(
        MetricsRelease::gaussian(budget(1.0, 0.0))
            .statistic(one.clone())
            .prepare(),
        Err(ReleaseError::InvalidBudget(_))
    ));
    assert!(matches!(
        MetricsRelease::laplace(budget(0.0, 0.0))
            .statistic(one)
            .prepare(),
        Err(ReleaseError::InvalidBudget(_))
    ));
}
