use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn counts(m: u64, r: u64, v: u64) -> GuessCounts {
    GuessCounts::new(m, r, v).unwrap()
}

/// The paper's procedure (Theorem 5.2 in its ternary-guess form, the p-value and bisection of
/// its Appendix D) evaluated independently with scipy's binomial by
/// `scripts/audit/one_run_reference.py`: m = r = 100 with 75 correct (with and without δ),
/// 900 abstentions, a large white-box-sized audit (m = 10⁵, r = 1510, v = 1439), all correct,
/// and two middling ones. Agreement within 1e-3 (the tolerance); in practice 1e-6.
#[test]
fn reproduces_the_papers_procedure_evaluated_independently() {
    let cases = [
        (100, 100, 75, 0.0, 0.702214),
        (100, 100, 75, 1e-4, 0.699467),
        (1000, 100, 75, 1e-4, 0.672985),
        (100_000, 1510, 1439, 1e-5, 2.675851),
        (1000, 1000, 1000, 1e-5, 5.782283),
        (1000, 500, 400, 1e-5, 1.197969),
        (10_000, 200, 180, 1e-6, 1.796285),
    ];
    for (m, r, v, delta, reference) in cases {
        let eps = epsilon_lower_bound(counts(m, r, v), delta, 0.95).unwrap();
        assert!(
            (eps - reference).abs() < 1e-3,
            "m={m} r={r} v={v} δ={delta}: {eps} vs the reference {reference}"
        );
    }
}

#[test]
fn p_value_without_delta_is_the_binomial_tail() {
    // 75 of 100 correct is unsurprising for ε = ln 3 (q = 3/4): P[Bin(100, 3/4) ≥ 75], which
    // scipy puts at 0.553471 (scripts/audit/one_run_reference.py).
    let p = p_value(counts(100, 100, 75), 3f64.ln(), 0.0).unwrap();
    assert!((p - 0.553471).abs() < 1e-6, "{p}");
}

#[test]
fn all_correct_without_delta_has_a_closed_form() {
    // With v = r and δ = 0, p(ε) = q^r, so ε_LB solves q = β^{1/r}: ε = ln(q / (1 − q)).
    for r in [10u64, 100, 1000] {
        let q = 0.05f64.powf(1.0 / r as f64);
        let exact = (q / (1.0 - q)).ln();
        let eps = epsilon_lower_bound(counts(r, r, r), 0.0, 0.95).unwrap();
        // Both sides are rounded (the closed form by powf and ln), so "below" holds to 1e-12.
        assert!(
            (eps - exact).abs() < 1e-9 && eps <= exact + 1e-12,
            "r={r}: {eps} vs {exact}"
        );
    }
}

#[test]
fn chance_level_guessing_bounds_nothing() {
    assert_eq!(
        epsilon_lower_bound(counts(100, 100, 50), 1e-5, 0.95).unwrap(),
        0.0
    );
    assert_eq!(
        epsilon_lower_bound(counts(100, 0, 0), 1e-5, 0.95).unwrap(),
        0.0
    );
    assert_eq!(p_value(counts(10, 10, 0), 3.0, 0.0).unwrap(), 1.0);
}

#[test]
fn rejects_impossible_inputs() {
    assert!(GuessCounts::new(10, 11, 5).is_err());
    assert!(GuessCounts::new(10, 5, 6).is_err());
    assert!(epsilon_lower_bound(counts(10, 10, 9), 1.0, 0.95).is_err());
    assert!(epsilon_lower_bound(counts(10, 10, 9), f64::NAN, 0.95).is_err());
    assert!(epsilon_lower_bound(counts(10, 10, 9), 0.0, 1.0).is_err());
    assert!(p_value(counts(10, 10, 9), -1.0, 0.0).is_err());
    assert!(count_guesses(&[1.0, 2.0], &[true], Guess { k_in: 1, k_out: 0 }).is_err());
    assert!(
        count_guesses(
            &[1.0, f64::NAN],
            &[true, false],
            Guess { k_in: 1, k_out: 0 }
        )
        .is_err()
    );
    assert!(count_guesses(&[1.0, 2.0], &[true, false], Guess { k_in: 2, k_out: 1 }).is_err());
    assert!(GuessPlan::new(vec![]).is_err());
    assert!(GuessPlan::new(vec![Guess { k_in: 0, k_out: 0 }]).is_err());
}

#[test]
fn guesses_take_the_extremes() {
    let scores = [0.9, 0.1, 0.5, 0.8, 0.2, 0.3];
    let included = [true, false, false, true, true, false];
    // Top 2 (0.9, 0.8) both in; bottom 2 (0.1, 0.2): one out, one in.
    let c = count_guesses(&scores, &included, Guess { k_in: 2, k_out: 2 }).unwrap();
    assert_eq!((c.canaries(), c.guesses(), c.correct()), (6, 4, 3));
    let c = count_guesses(&scores, &included, Guess { k_in: 3, k_out: 0 }).unwrap();
    assert_eq!(c.correct(), 2);
}

#[test]
fn default_plan_covers_every_scale_and_splits_the_significance() {
    let plan = GuessPlan::default_for(1000).unwrap();
    assert!(plan.guesses().contains(&Guess { k_in: 5, k_out: 5 }));
    assert!(plan.guesses().contains(&Guess {
        k_in: 500,
        k_out: 500
    }));
    assert!(plan.guesses().contains(&Guess {
        k_in: 150,
        k_out: 0
    }));
    let scores: Vec<f64> = (0..1000).map(|i| i as f64).collect();
    let included: Vec<bool> = (0..1000).map(|i| i >= 500).collect();
    let result = audit(&scores, &included, 1e-5, 0.95, &plan).unwrap();
    assert!(
        (result.per_rule_confidence - (1.0 - 0.05 / plan.guesses().len() as f64)).abs() < 1e-15
    );
    // Perfect separation: the best rule guesses all 1000 canaries right.
    assert_eq!(result.best.counts.correct(), 1000);
    let alone =
        epsilon_lower_bound(counts(1000, 1000, 1000), 1e-5, result.per_rule_confidence).unwrap();
    assert_eq!(result.epsilon_lower_bound, alone);
    // The correction costs something: the same counts at 95 % bound more.
    assert!(epsilon_lower_bound(counts(1000, 1000, 1000), 1e-5, 0.95).unwrap() > alone);
}

/// The bound's promise, checked by simulation: canaries scored by ε-DP randomised response
/// (each answer truthful with probability e^ε/(1+e^ε)) may give ε_LB > ε in at most 5 % of
/// runs at 95 % confidence. Twenty runs each at three ε; the bound is far from tight, so in
/// practice none exceeds.
#[test]
fn randomised_response_never_contradicts_its_epsilon() {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let mut exceeded = 0;
    let mut total = 0;
    for eps in [0.5f64, 1.0, 2.0] {
        let truthful = eps.exp() / (1.0 + eps.exp());
        for _ in 0..20 {
            let m = 1000;
            let included: Vec<bool> = (0..m).map(|_| rng.random_bool(0.5)).collect();
            let scores: Vec<f64> = included
                .iter()
                .map(|&inside| {
                    let says_in = if rng.random_bool(truthful) {
                        inside
                    } else {
                        !inside
                    };
                    // A score that ranks the "in" answers first, ties broken at random.
                    f64::from(u8::from(says_in)) + rng.random::<f64>() * 1e-3
                })
                .collect();
            let plan = GuessPlan::default_for(m).unwrap();
            let result = audit(&scores, &included, 0.0, 0.95, &plan).unwrap();
            total += 1;
            if result.epsilon_lower_bound > eps {
                exceeded += 1;
            }
            // A strong mechanism is still found: ε = 2 randomised response gives a real bound.
            if eps == 2.0 {
                assert!(result.epsilon_lower_bound > 1.0, "{result:?}");
            }
        }
    }
    assert!(
        exceeded * 20 <= total,
        "{exceeded} of {total} runs exceeded their ε"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// More correct guesses never lower the bound.
    #[test]
    fn more_correct_never_lowers_the_bound(r in 1u64..400, v in 0u64..400, extra_m in 0u64..2000) {
        let v = v.min(r);
        let m = r + extra_m;
        let delta = 1e-5;
        let low = epsilon_lower_bound(counts(m, r, v), delta, 0.95).unwrap();
        if v < r {
            let high = epsilon_lower_bound(counts(m, r, v + 1), delta, 0.95).unwrap();
            prop_assert!(high >= low - 1e-9, "v={v}: {low} then {high}");
        }
    }

    /// A larger δ, more abstentions (m) or a higher confidence never raise the bound.
    #[test]
    fn weaker_evidence_never_raises_the_bound(r in 1u64..300, frac in 0.5f64..1.0, extra_m in 0u64..3000) {
        let v = ((r as f64) * frac).round() as u64;
        let m = r + extra_m;
        let base = epsilon_lower_bound(counts(m, r, v), 1e-6, 0.95).unwrap();
        let bigger_delta = epsilon_lower_bound(counts(m, r, v), 1e-3, 0.95).unwrap();
        let more_canaries = epsilon_lower_bound(counts(m + 1000, r, v), 1e-6, 0.95).unwrap();
        let surer = epsilon_lower_bound(counts(m, r, v), 1e-6, 0.99).unwrap();
        prop_assert!(bigger_delta <= base + 1e-9);
        prop_assert!(more_canaries <= base + 1e-9);
        prop_assert!(surer <= base + 1e-9);
    }

    /// p(ε) grows with ε: a larger claimed ε explains more correct guesses.
    #[test]
    fn p_value_grows_with_epsilon(r in 1u64..300, frac in 0.0f64..1.0, e in 0.0f64..8.0) {
        let v = ((r as f64) * frac).round() as u64;
        let c = counts(r * 3, r, v);
        let a = p_value(c, e, 1e-5).unwrap();
        let b = p_value(c, e + 0.25, 1e-5).unwrap();
        prop_assert!(b >= a - 1e-12, "{a} then {b}");
    }

    /// The bound is a rejected ε: p(ε_LB) is below the significance whenever ε_LB > 0.
    #[test]
    fn the_bound_is_itself_rejected(r in 1u64..500, frac in 0.5f64..1.0) {
        let v = ((r as f64) * frac).round() as u64;
        let c = counts(2 * r, r, v);
        let eps = epsilon_lower_bound(c, 1e-5, 0.95).unwrap();
        if eps > 0.0 {
            prop_assert!(p_value(c, eps, 1e-5).unwrap() < 1.0 - 0.95);
        }
    }

    /// Raising one "in" canary's score above everyone can only help the auditor.
    #[test]
    fn promoting_an_included_canary_never_lowers_the_audit(
        seed in 0u64..1000, m in 20usize..200,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let included: Vec<bool> = (0..m).map(|_| rng.random_bool(0.5)).collect();
        let mut scores: Vec<f64> = included
            .iter()
            .map(|&i| f64::from(u8::from(i)) + rng.random::<f64>() * 2.0)
            .collect();
        let plan = GuessPlan::default_for(m).unwrap();
        let before = audit(&scores, &included, 1e-5, 0.95, &plan).unwrap();
        if let Some(i) = included.iter().position(|&x| x) {
            scores[i] = 1e9;
            let after = audit(&scores, &included, 1e-5, 0.95, &plan).unwrap();
            prop_assert!(after.epsilon_lower_bound >= before.epsilon_lower_bound - 1e-9);
        }
    }
}
