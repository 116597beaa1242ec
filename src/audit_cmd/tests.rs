// Test code: helpers may panic on fixture errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cohort_client::dpsgd::StepAccountant;
use cohort_client::ledger::RdpStepAccountant;

use super::*;

const DATA: &str = "csv:client/data/breast_cancer.csv?label=diagnosis";

/// The CI-sized audit: the mlp preset on the 455 training rows of the breast-cancer table,
/// expected batch 32 (q ≈ 0.07) for 10 epochs (150 steps), 1000 canaries.
fn args() -> DpSgdArgs {
    DpSgdArgs {
        model: Some("mlp".into()),
        data: Some(DATA.into()),
        canaries: "1000".into(),
        epsilon: None,
        noise_multiplier: Some("1".into()),
        mode: "white-box".into(),
        out: Some(std::env::temp_dir().join("cohort-audit-unit")),
        epochs: "10".into(),
        batch: "32".into(),
        clip: "1".into(),
        lr: "0.1".into(),
        delta: "1e-5".into(),
        confidence: "0.95".into(),
        seed: "0".into(),
        danger_no_noise: false,
        device: "cpu".into(),
        json: false,
    }
}

#[test]
fn bad_values_are_one_line_usage_errors_naming_the_flag() {
    let cases: Vec<(DpSgdArgs, &str)> = vec![
        (
            DpSgdArgs {
                model: None,
                ..args()
            },
            "--model",
        ),
        (
            DpSgdArgs {
                data: None,
                ..args()
            },
            "--data",
        ),
        (
            DpSgdArgs {
                out: None,
                ..args()
            },
            "--out",
        ),
        (
            DpSgdArgs {
                canaries: "1".into(),
                ..args()
            },
            "--canaries",
        ),
        (
            DpSgdArgs {
                mode: "grey-box".into(),
                ..args()
            },
            "--mode",
        ),
        (
            DpSgdArgs {
                epsilon: Some("2".into()),
                ..args()
            },
            "not both",
        ),
        (
            DpSgdArgs {
                noise_multiplier: None,
                ..args()
            },
            "--epsilon",
        ),
        (
            DpSgdArgs {
                confidence: "1".into(),
                ..args()
            },
            "--confidence",
        ),
        (
            DpSgdArgs {
                delta: "0".into(),
                ..args()
            },
            "--delta",
        ),
        (
            DpSgdArgs {
                seed: "-1".into(),
                ..args()
            },
            "--seed",
        ),
        (
            DpSgdArgs {
                device: "tpu".into(),
                ..args()
            },
            "--device",
        ),
    ];
    for (case, needle) in cases {
        match DpSgdPlan::parse(&case) {
            Err(Failure::Usage(message)) => {
                assert!(!message.contains('\n'), "{message}");
                assert!(message.contains(needle), "{needle}: {message}");
            }
            other => panic!("{needle}: expected a usage error, got {other:?}"),
        }
    }
}

/// The check: with correct noise at σ = 1 the audit never contradicts the accountant
/// (three canary seeds; a contradiction would be a false alarm, which the 95 % bound allows
/// in at most 5 % of runs and which the loose one-run bound makes far rarer).
#[test]
fn correct_noise_never_contradicts_the_accountant() {
    for seed in ["1", "2", "3"] {
        let plan = DpSgdPlan::parse(&DpSgdArgs {
            seed: seed.into(),
            ..args()
        })
        .unwrap();
        let audit = dp_sgd::run(&plan).unwrap();
        assert!(
            audit.accountant_epsilon.is_finite() && audit.accountant_epsilon > 1.0,
            "{}",
            audit.accountant_epsilon
        );
        assert!(
            !audit.contradicts(),
            "seed {seed}: ε_LB {} > ε {}",
            audit.audit.epsilon_lower_bound,
            audit.accountant_epsilon
        );
        assert_eq!(audit.scores.len(), 1000);
    }
}

/// An accountant that is told a ten times larger σ than the trainer used: the under-charging
/// bug of a ledger that records the wrong noise.
#[derive(Debug)]
struct UnderCharging(RdpStepAccountant);

impl StepAccountant for UnderCharging {
    fn step(&mut self, noise_multiplier: f64, sample_rate: f64) {
        self.0.step(10.0 * noise_multiplier, sample_rate);
    }

    fn epsilon(&self, delta: f64) -> Option<f64> {
        self.0.epsilon(delta)
    }
}

#[test]
fn an_under_charging_accountant_is_caught() {
    let plan = DpSgdPlan::parse(&DpSgdArgs {
        noise_multiplier: Some("0.3".into()),
        ..args()
    })
    .unwrap();
    let audit =
        run_with_accountant(&plan, Box::new(UnderCharging(RdpStepAccountant::new()))).unwrap();
    assert!(
        audit.contradicts(),
        "ε_LB {} ≤ claimed ε {}",
        audit.audit.epsilon_lower_bound,
        audit.accountant_epsilon
    );
}

#[test]
fn black_box_canaries_are_scored_by_their_loss() {
    let plan = DpSgdPlan::parse(&DpSgdArgs {
        mode: "black-box".into(),
        canaries: "100".into(),
        danger_no_noise: true,
        ..args()
    })
    .unwrap();
    let audit = dp_sgd::run(&plan).unwrap();
    assert_eq!(audit.scores.len(), 100);
    // 355 real rows kept, the included half of the 100 canaries appended.
    let inside = audit.included.iter().filter(|&&x| x).count() as i64;
    assert_eq!(audit.train_examples, 455 - 100 + inside);
    assert!(audit.scores.iter().all(|s| s.is_finite() && *s <= 0.0));
    // Without noise a memorised wrong label has a lower loss than an unseen one: the included
    // canaries' mean score is higher.
    let mean = |inside: bool| {
        let v: Vec<f64> = audit
            .scores
            .iter()
            .zip(&audit.included)
            .filter(|&(_, &x)| x == inside)
            .map(|(s, _)| *s)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(
        mean(true) > mean(false),
        "{} vs {}",
        mean(true),
        mean(false)
    );
}
