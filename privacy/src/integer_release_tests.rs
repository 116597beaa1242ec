use proptest::prelude::*;

use super::*;
use crate::accounting::RdpAccountant;
use crate::noise::skellam;

fn unit_blocks(cells: u64) -> Sensitivity {
    Sensitivity::of_record(&[Contribution {
        cells,
        max_units: 1,
    }])
    .unwrap()
}

fn budget(epsilon: f64, delta: f64) -> EpsDelta {
    EpsDelta::new(epsilon, delta).unwrap()
}

#[test]
fn sensitivity_adds_blocks_exactly() {
    // One confusion cell, K = 3 histogram cells, one loss cell worth up to 2 units.
    let s = Sensitivity::of_record(&[
        Contribution {
            cells: 1,
            max_units: 1,
        },
        Contribution {
            cells: 3,
            max_units: 1,
        },
        Contribution {
            cells: 1,
            max_units: 2,
        },
    ])
    .unwrap();
    assert_eq!(s.l1(), 6.0);
    assert_eq!(s.l2(), 8.0_f64.sqrt());
    assert!(
        Sensitivity::of_record(&[]).is_err(),
        "a vector no record changes"
    );
    assert!(
        Sensitivity::new(1.0, 2.0).is_err(),
        "L2 above L1 is impossible"
    );
    assert!(Sensitivity::new(f64::NAN, 1.0).is_err());
}

#[test]
fn calibration_meets_the_target_and_barely_more() {
    let sensitivity = unit_blocks(2);
    for (epsilon, delta) in [(0.1, 1e-6), (1.0, 1e-6), (4.0, 1e-5), (20.0, 1e-8)] {
        let plan =
            ReleasePlan::calibrate(budget(epsilon, delta), sensitivity, Placement::Local).unwrap();
        assert!(plan.epsilon() <= epsilon, "{} > {epsilon}", plan.epsilon());
        // 0.1 % less variance would already exceed the target: the plan is not wasteful.
        let tighter = ReleaseCharge::new(sensitivity, plan.charge().variance() * 0.999).unwrap();
        assert!(tighter.epsilon(delta).unwrap() > epsilon, "ε = {epsilon}");
    }
}

#[test]
fn the_charge_is_what_an_rdp_accountant_reports() {
    let plan = ReleasePlan::calibrate(budget(1.0, 1e-6), unit_blocks(3), Placement::Local).unwrap();
    let mut accountant = RdpAccountant::new();
    let rdp = plan.charge().rdp(accountant.orders()).unwrap();
    accountant.step_rdp(&rdp, 1).unwrap();
    let (epsilon, _) = accountant.epsilon_and_order(1e-6).unwrap();
    assert_eq!(epsilon, plan.epsilon());
    assert_eq!(epsilon, plan.charge().epsilon(1e-6).unwrap());
}

#[test]
fn distributed_noise_is_one_local_release_spread_over_the_survivors() {
    let target = budget(1.0, 1e-6);
    let s = unit_blocks(2);
    let local = ReleasePlan::calibrate(target, s, Placement::Local).unwrap();
    let spread =
        ReleasePlan::calibrate(target, s, Placement::Distributed { min_survivors: 8 }).unwrap();
    // Same accounted mechanism, an eighth of the noise per site.
    assert!((spread.charge().variance() / local.charge().variance() - 1.0).abs() < 1e-8);
    assert!((spread.per_site_mu() * 8.0 / local.per_site_mu() - 1.0).abs() < 1e-8);
    // The guarantee holds only for sums of at least 8 sites.
    assert_eq!(spread.sum_variance(7), None);
    assert!(spread.sum_variance(8).unwrap() >= spread.charge().variance());
    assert_eq!(local.sum_variance(0), None);
    assert!(local.sum_variance(1).unwrap() >= local.charge().variance());
    // Ten local sites: ten times the variance in the sum.
    let ten = local.sum_variance(10).unwrap();
    assert!((ten / (10.0 * local.charge().variance()) - 1.0).abs() < 1e-12);
}

#[test]
fn calibration_refuses_what_it_cannot_honour() {
    let s = unit_blocks(1);
    assert!(ReleasePlan::calibrate(budget(0.0, 1e-6), s, Placement::Local).is_err());
    assert!(ReleasePlan::calibrate(budget(1.0, 0.0), s, Placement::Local).is_err());
    assert!(
        ReleasePlan::calibrate(
            budget(1.0, 1e-6),
            s,
            Placement::Distributed { min_survivors: 0 }
        )
        .is_err()
    );
    // So little ε that the noise would exceed the sampler's range.
    assert!(ReleasePlan::calibrate(budget(1e-9, 1e-12), s, Placement::Local).is_err());
}

#[test]
fn a_refused_charge_draws_and_changes_nothing() {
    let plan = ReleasePlan::calibrate(budget(1.0, 1e-6), unit_blocks(1), Placement::Local).unwrap();
    let mut values = vec![5_i64, 7, 0];
    let mut sampler = skellam::danger::seeded(plan.per_site_mu(), [3; 32]).unwrap();
    let before = sampler.clone();
    let err = plan
        .release_after_charging(&mut values, &mut sampler, |_| Err("over budget"))
        .unwrap_err();
    assert!(matches!(err, ReleaseError::ChargeRefused("over budget")));
    assert_eq!(values, vec![5, 7, 0]);
    // The sampler's stream did not advance: no noise was drawn.
    assert_eq!(sampler.clone().sample(), before.clone().sample());

    let mut wrong = skellam::danger::seeded(1.0, [3; 32]).unwrap();
    let mut charged = false;
    let err = plan
        .release_after_charging(&mut values, &mut wrong, |_| {
            charged = true;
            Ok::<(), ()>(())
        })
        .unwrap_err();
    assert!(matches!(err, ReleaseError::WrongSampler { .. }));
    assert!(
        !charged,
        "a wrong sampler is found before anything is charged"
    );
}

#[test]
fn an_accepted_charge_comes_before_the_noise() {
    let plan = ReleasePlan::calibrate(budget(2.0, 1e-6), unit_blocks(1), Placement::Local).unwrap();
    let mut values = vec![100_i64; 1000];
    let mut sampler = skellam::danger::seeded(plan.per_site_mu(), [4; 32]).unwrap();
    let mut seen = None;
    plan.release_after_charging(&mut values, &mut sampler, |c| {
        seen = Some(*c);
        Ok::<(), ()>(())
    })
    .unwrap();
    assert_eq!(seen, Some(plan.charge()));
    let moved = values.iter().filter(|&&v| v != 100).count();
    assert!(moved > 500, "noise was added ({moved} of 1000 changed)");
}

#[test]
fn released_counts_have_the_calibrated_spread() {
    // The empirical std of a released count over many releases matches √(2μ) within 5
    // standard errors (the sample std's is ≈ σ/√(2n) for a near-Gaussian).
    let plan = ReleasePlan::calibrate(budget(1.0, 1e-6), unit_blocks(2), Placement::Local).unwrap();
    let n = 20_000;
    let mut sampler = skellam::danger::seeded(plan.per_site_mu(), [5; 32]).unwrap();
    let mut released = Vec::with_capacity(n);
    for _ in 0..n {
        let mut count = [42_i64];
        plan.release_after_charging(&mut count, &mut sampler, |_| Ok::<(), ()>(()))
            .unwrap();
        released.push(count[0] as f64);
    }
    let mean = released.iter().sum::<f64>() / n as f64;
    let var = released.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    let calibrated = plan.charge().variance().sqrt();
    let se = calibrated / (2.0 * n as f64).sqrt();
    assert!(
        (var.sqrt() - calibrated).abs() < 5.0 * se,
        "std {} vs {calibrated} ± {}",
        var.sqrt(),
        5.0 * se
    );
    assert!((mean - 42.0).abs() < 5.0 * calibrated / (n as f64).sqrt());
}

#[test]
fn charges_round_trip_through_a_ledger_line_and_reject_bad_values() {
    let plan = ReleasePlan::calibrate(budget(1.0, 1e-6), unit_blocks(2), Placement::Local).unwrap();
    let line = serde_json::to_string(&plan.charge()).unwrap();
    assert!(line.contains("l2_sensitivity"), "{line}");
    let back: ReleaseCharge = serde_json::from_str(&line).unwrap();
    assert_eq!(back, plan.charge());
    for bad in [
        r#"{"l1_sensitivity":1,"l2_sensitivity":1,"variance":0}"#,
        r#"{"l1_sensitivity":1,"l2_sensitivity":2,"variance":1}"#,
        r#"{"l1_sensitivity":-1,"l2_sensitivity":1,"variance":1}"#,
    ] {
        assert!(serde_json::from_str::<ReleaseCharge>(bad).is_err(), "{bad}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Calibration never overshoots its target, whatever the sensitivity and placement, and
    /// always gives every site the same μ from the same inputs.
    #[test]
    fn calibration_never_overshoots(
        epsilon in 0.05_f64..30.0,
        delta_exp in 4_i32..12,
        cells in 1_u64..40,
        units in 1_u64..8,
        survivors in 1_u64..200,
        distributed in any::<bool>(),
    ) {
        let delta = 10f64.powi(-delta_exp);
        let sensitivity = Sensitivity::of_record(&[
            Contribution { cells: 1, max_units: 1 },
            Contribution { cells, max_units: units },
        ]).unwrap();
        let placement = if distributed {
            Placement::Distributed { min_survivors: survivors }
        } else {
            Placement::Local
        };
        let target = budget(epsilon, delta);
        let plan = ReleasePlan::calibrate(target, sensitivity, placement).unwrap();
        prop_assert!(plan.epsilon() <= epsilon);
        let again = ReleasePlan::calibrate(target, sensitivity, placement).unwrap();
        prop_assert_eq!(plan.per_site_mu().to_bits(), again.per_site_mu().to_bits());
        let sites = if distributed { survivors } else { 1 };
        prop_assert!(plan.sum_variance(sites).unwrap() >= plan.charge().variance());
    }

    /// More ε never needs more noise.
    #[test]
    fn noise_falls_as_epsilon_grows(a in 0.1_f64..10.0, b in 0.1_f64..10.0) {
        let (small, large) = if a < b { (a, b) } else { (b, a) };
        let s = unit_blocks(2);
        let v_small = ReleasePlan::calibrate(budget(small, 1e-6), s, Placement::Local)
            .unwrap().charge().variance();
        let v_large = ReleasePlan::calibrate(budget(large, 1e-6), s, Placement::Local)
            .unwrap().charge().variance();
        prop_assert!(v_large <= v_small * (1.0 + 2e-9));
    }
}
