use super::*;
use crate::aggregate::{RoundKey, StreamingSum};
use crate::domain::FederationId;
use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

fn round(n: u64) -> RoundNumber {
    RoundNumber::new(n).unwrap()
}

/// Sums `(delta, weight)` pairs the way the server does.
fn summed(deltas: &[(Vec<f32>, u64)], weighting: Weighting) -> FitResults {
    let key = RoundKey {
        federation: FederationId::parse("f").unwrap(),
        round: round(1),
    };
    let ids: Vec<ClientId> = (0..deltas.len())
        .map(|i| ClientId::parse(&format!("c{i}")).unwrap())
        .collect();
    let len = deltas.first().map_or(0, |d| d.0.len());
    let mut sum = StreamingSum::new(key.clone(), len, ids.clone(), weighting);
    for (id, (d, w)) in ids.iter().zip(deltas) {
        sum.add(&key, id, d, *w).unwrap();
    }
    FitResults::Summed(sum.finish())
}

fn close(a: &[f32], b: &[f64]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (f64::from(*x) - y).abs() <= 1e-6 * y.abs().max(1.0))
}

#[test]
fn fedavg_weighted_mean_is_exact() {
    let mut s = FedAvg::new(Weighting::SampleCount);
    let results = summed(
        &[(vec![1.0, 2.0], 1), (vec![3.0, -2.0], 3)],
        Weighting::SampleCount,
    );
    let w = s
        .aggregate_fit(round(1), &[0.5, 0.5], results, &[])
        .unwrap()
        .unwrap();
    // mean Δ = ((1 + 9) / 4, (2 − 6) / 4) = (2.5, −1).
    assert_eq!(w, vec![3.0, -0.5]);
}

#[test]
fn fedavg_uniform_ignores_sample_counts() {
    let mut s = FedAvg::new(Weighting::Uniform);
    let results = summed(&[(vec![1.0], 1), (vec![3.0], 1000)], Weighting::Uniform);
    assert_eq!(
        s.aggregate_fit(round(1), &[0.0], results, &[])
            .unwrap()
            .unwrap(),
        vec![2.0]
    );
}

#[test]
fn nothing_arrived_keeps_the_model() {
    let mut s = FedAdam::new(Weighting::SampleCount, 0.1, 0.9, 0.99, 1e-9);
    let results = summed(&[], Weighting::SampleCount);
    let failure = FitFailure {
        client: ClientId::parse("c0").unwrap(),
        reason: "deadline".into(),
    };
    // An empty sum has length 0; the model has none either here.
    assert_eq!(
        s.aggregate_fit(round(1), &[], results, &[failure]).unwrap(),
        None
    );
    assert_eq!(s.state(), None, "no step taken, no state");
}

#[test]
fn fedadam_matches_a_hand_computation() {
    let (lr, b1, b2, tau) = (0.1, 0.9, 0.99, 1e-9);
    let mut s = FedAdam::new(Weighting::SampleCount, lr, b1, b2, tau);
    let current = vec![1.0f32, -1.0];
    let delta = [0.5f32, -0.2];
    let w1 = s
        .aggregate_fit(
            round(1),
            &current,
            summed(&[(delta.to_vec(), 7)], Weighting::SampleCount),
            &[],
        )
        .unwrap()
        .unwrap();
    // Round 1: m = 0.1Δ, v = 0.01Δ², m/√v = sign(Δ), so w = w ± η.
    assert!(close(&w1, &[1.1, -1.1]), "{w1:?}");
    let w2 = s
        .aggregate_fit(
            round(2),
            &w1,
            summed(&[(delta.to_vec(), 7)], Weighting::SampleCount),
            &[],
        )
        .unwrap()
        .unwrap();
    // Round 2 by hand for coordinate 0: m = 0.9·0.05 + 0.1·0.5 = 0.095,
    // v = 0.99·0.0025 + 0.01·0.25 = 0.004975, step = 0.1·0.095/√0.004975.
    let step0 = 0.1 * 0.095 / 0.004975f64.sqrt();
    let step1 = 0.1 * (-0.038) / (0.99 * 0.0004 + 0.01 * 0.04f64).sqrt();
    assert!(
        close(&w2, &[f64::from(w1[0]) + step0, f64::from(w1[1]) + step1]),
        "{w2:?}"
    );
}

#[test]
fn fedavgm_fedyogi_fedadagrad_by_hand() {
    let current = [0.0f32];
    let d = || summed(&[(vec![0.2], 1)], Weighting::SampleCount);
    let mut m = FedAvgM::new(Weighting::SampleCount, 1.0, 0.5);
    let w1 = m
        .aggregate_fit(round(1), &current, d(), &[])
        .unwrap()
        .unwrap();
    let w2 = m.aggregate_fit(round(2), &w1, d(), &[]).unwrap().unwrap();
    assert!(
        close(&w1, &[0.2]) && close(&w2, &[0.2 + 0.3]),
        "{w1:?} {w2:?}"
    );

    // Yogi from v = 0: v = 0 − 0.01·0.04·sign(−0.04) = 0.0004; m = 0.02; step = η·m/(√v + τ).
    let mut y = FedYogi::new(Weighting::SampleCount, 0.01, 0.9, 0.99, 1e-3);
    let w = y
        .aggregate_fit(round(1), &current, d(), &[])
        .unwrap()
        .unwrap();
    assert!(close(&w, &[0.01 * 0.02 / (0.02 + 1e-3)]), "{w:?}");

    // Adagrad: v = 0.04, m = Δ (β₁ = 0): step = η·0.2/(0.2 + τ).
    let mut a = FedAdagrad::new(Weighting::SampleCount, 0.1, 1e-9);
    let w = a
        .aggregate_fit(round(1), &current, d(), &[])
        .unwrap()
        .unwrap();
    assert!(close(&w, &[0.1 * 0.2 / (0.2 + 1e-9)]), "{w:?}");
}

#[test]
fn restored_state_continues_identically() {
    let delta = || summed(&[(vec![0.3, -0.1, 0.0], 2)], Weighting::SampleCount);
    let mut a = FedYogi::new(Weighting::SampleCount, 0.01, 0.9, 0.99, 1e-3);
    let w1 = a
        .aggregate_fit(round(1), &[1.0, 2.0, 3.0], delta(), &[])
        .unwrap()
        .unwrap();
    let saved = a.state().unwrap();
    let mut b = FedYogi::new(Weighting::SampleCount, 0.01, 0.9, 0.99, 1e-3);
    b.restore_state(3, &saved).unwrap();
    let wa = a.aggregate_fit(round(2), &w1, delta(), &[]).unwrap();
    let wb = b.aggregate_fit(round(2), &w1, delta(), &[]).unwrap();
    assert_eq!(wa, wb);
    let mut adam = FedAdam::new(Weighting::SampleCount, 0.1, 0.9, 0.99, 1e-9);
    assert!(
        adam.restore_state(3, &saved).is_err(),
        "Yogi state must not load into Adam"
    );
    assert!(
        FedAvg::new(Weighting::Uniform)
            .restore_state(3, &saved)
            .is_err()
    );
}

#[test]
fn fedprox_sends_mu_and_averages() {
    let mut p = FedProx::new(Weighting::SampleCount, 0.01);
    assert_eq!(p.configure_fit(round(1)).proximal_mu, Some(0.01));
    let w = p
        .aggregate_fit(
            round(1),
            &[1.0],
            summed(&[(vec![1.0], 1)], Weighting::SampleCount),
            &[],
        )
        .unwrap();
    assert_eq!(w, Some(vec![2.0]));
}

#[test]
fn robust_strategies_need_individual_updates_and_no_secagg() {
    let mut med = CoordinateMedian;
    let results = FitResults::Individual(vec![vec![1.0], vec![2.0], vec![100.0]]);
    assert_eq!(
        med.aggregate_fit(round(1), &[0.0], results, &[]).unwrap(),
        Some(vec![2.0])
    );
    assert_eq!(
        med.aggregate_fit(
            round(1),
            &[0.0],
            summed(&[(vec![1.0], 1)], Weighting::Uniform),
            &[]
        ),
        Err(StrategyError::WrongInput {
            expected: InputKind::Individual
        })
    );
    let mut tm = TrimmedMean::new(0.34);
    let results = FitResults::Individual(vec![vec![-50.0], vec![1.0], vec![3.0]]);
    assert_eq!(
        tm.aggregate_fit(round(1), &[0.0], results, &[]).unwrap(),
        Some(vec![1.0])
    );

    let err = build(&StrategyConfig::TrimmedMean { trim_fraction: 0.1 }, true).unwrap_err();
    assert!(err.to_string().contains("secure aggregation"), "{err}");
    assert_eq!(
        build(&StrategyConfig::CoordinateMedian, false)
            .unwrap()
            .input_kind(),
        InputKind::Individual
    );
    assert_eq!(
        build(&StrategyConfig::default(), true).unwrap().name(),
        "fed_avg"
    );
}

#[test]
fn overflow_is_refused_not_committed() {
    let mut s = FedAvg::new(Weighting::SampleCount);
    let results = summed(&[(vec![f32::MAX], 1)], Weighting::SampleCount);
    assert_eq!(
        s.aggregate_fit(round(1), &[f32::MAX], results, &[]),
        Err(StrategyError::NonFinite)
    );
}

#[test]
fn the_default_evaluation_derives_the_report_from_the_sum() {
    use cohort_evaluation::{
        ClassificationShape, Derivation, Plausibility, Released, Report, Shape,
    };
    let shape = ClassificationShape::new(2, 1, 4, 1.0, 1).unwrap();
    let mut v = vec![0; shape.len()];
    v[shape.confusion_index(0, 0, 0)] = 30;
    v[shape.confusion_index(0, 1, 1)] = 10;
    v[shape.count_index()] = 40;
    let summed = Released::parse(
        Shape::Classification(shape),
        v,
        Plausibility::Noisy { std: 1.0 },
    )
    .unwrap();
    let derivation = Derivation {
        noise_variance: 1.0,
        min_count: 0,
    };
    let results = EvaluateResults {
        summed: &summed,
        derivation,
        sites: 2,
    };
    let strategy = FedAvg::new(Weighting::Uniform);
    assert!(strategy.configure_evaluate(1).is_empty());
    let report = strategy.aggregate_evaluate(1, &results, &[]).unwrap();
    assert_eq!(report, Report::derive(&summed, derivation));
    let Report::Classification(c) = report else {
        panic!("classification")
    };
    assert_eq!(c.accuracy.estimate(), Some(1.0));
}

proptest! {
    #[test]
    fn fedavg_of_identical_updates_is_that_update(
        delta in proptest::collection::vec(-100f32..100.0, 1..16),
        weights in proptest::collection::vec(1u64..10_000, 1..10),
    ) {
        let current = vec![0.0f32; delta.len()];
        let results = summed(&weights.iter().map(|w| (delta.clone(), *w)).collect::<Vec<_>>(), Weighting::SampleCount);
        let w = FedAvg::new(Weighting::SampleCount).aggregate_fit(round(1), &current, results, &[]).unwrap().unwrap();
        prop_assert_eq!(w, delta);
    }

    #[test]
    fn fedavg_mean_lies_within_the_updates(
        rows in proptest::collection::vec((proptest::collection::vec(-10f32..10.0, 4), 1u64..100), 1..8),
    ) {
        let current = vec![0.0f32; 4];
        let w = FedAvg::new(Weighting::SampleCount)
            .aggregate_fit(round(1), &current, summed(&rows, Weighting::SampleCount), &[]).unwrap().unwrap();
        for (i, wi) in w.iter().enumerate() {
            let lo = rows.iter().map(|r| r.0[i]).fold(f32::INFINITY, f32::min);
            let hi = rows.iter().map(|r| r.0[i]).fold(f32::NEG_INFINITY, f32::max);
            prop_assert!(*wi >= lo - 1e-5 && *wi <= hi + 1e-5);
        }
    }
}
