//! The task's serde form and its losses against values worked out by hand.

use tch::{Kind, Tensor};

use super::*;
use crate::model::{ModelSpec, TaskKind};

fn t(values: &[f64], shape: &[i64]) -> Tensor {
    Tensor::from_slice(values).view(shape)
}

fn close(got: &Tensor, want: &[f64]) {
    let got: Vec<f64> = Vec::try_from(&got.to_kind(Kind::Double).reshape([-1])).unwrap();
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
    }
}

#[test]
fn a_spec_without_a_task_is_a_classifier_and_tasks_round_trip() {
    let old = r#"{"input_shape":[3],"layers":[{"kind":"linear","out":2}]}"#;
    let spec = ModelSpec::from_json(old).unwrap();
    assert_eq!(spec.task, ModelTask::default());
    assert_eq!(spec.task.kind(), TaskKind::Classification);
    let tasks = [
        ModelTask::Classification {
            class_weights: Some(vec![1.0, 3.0]),
        },
        ModelTask::Binary {
            pos_weight: Some(4.0),
        },
        ModelTask::MultiLabel { pos_weights: None },
        ModelTask::Regression {
            loss: RegressionLoss::Huber { delta: 0.5 },
        },
    ];
    for task in tasks {
        let spec = ModelSpec {
            task: task.clone(),
            ..ModelSpec::mlp(3, &[], 2)
        };
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap().task, task);
    }
    let written = r#"{"kind":"regression","loss":{"function":"huber","delta":2}}"#;
    assert_eq!(
        serde_json::from_str::<ModelTask>(written).unwrap(),
        ModelTask::Regression {
            loss: RegressionLoss::Huber { delta: 2.0 }
        }
    );
    let plain: ModelTask = serde_json::from_str(r#"{"kind":"regression"}"#).unwrap();
    assert_eq!(plain, TaskKind::Regression.default_task());
    assert!(serde_json::from_str::<ModelTask>(r#"{"kind":"binary","pos":2}"#).is_err());
    for kind in TaskKind::ALL {
        assert_eq!(kind.name().parse::<TaskKind>().unwrap(), kind);
        assert_eq!(kind.default_task().kind(), kind);
    }
    assert_eq!(
        "multi-label".parse::<TaskKind>().unwrap(),
        TaskKind::MultiLabel
    );
    assert!(
        "ranking"
            .parse::<TaskKind>()
            .unwrap_err()
            .contains("regression")
    );
}

#[test]
fn output_widths_and_weights_are_checked_against_the_task() {
    let classify = TaskKind::Classification.default_task();
    assert!(classify.check_outputs(2).is_ok());
    assert!(classify.check_outputs(1).unwrap_err().contains("binary"));
    assert!(TaskKind::Binary.default_task().check_outputs(2).is_err());
    assert!(TaskKind::Binary.default_task().check_outputs(1).is_ok());
    let weighted = ModelTask::MultiLabel {
        pos_weights: Some(vec![1.0, 2.0]),
    };
    assert!(weighted.check_outputs(2).is_ok());
    assert!(weighted.check_outputs(3).unwrap_err().contains("2 entries"));
    let negative = ModelTask::Binary {
        pos_weight: Some(-1.0),
    };
    assert!(
        negative
            .check_outputs(1)
            .unwrap_err()
            .contains("pos_weight")
    );
    let huber = ModelTask::Regression {
        loss: RegressionLoss::Huber { delta: 0.0 },
    };
    assert!(huber.check_outputs(1).is_err());
}

#[test]
fn classification_loss_is_weighted_cross_entropy_per_example() {
    let logits = t(&[0.0, 0.0, 2.0, 0.0], &[2, 2]);
    let labels = Tensor::from_slice(&[1i64, 0]);
    let ln2 = 2f64.ln();
    let second = (1.0 + (-2f64).exp()).ln();
    let plain = TaskKind::Classification.default_task();
    close(
        &plain.per_example_loss(&logits, &labels).unwrap(),
        &[ln2, second],
    );
    let weighted = ModelTask::Classification {
        class_weights: Some(vec![1.0, 3.0]),
    };
    close(
        &weighted.per_example_loss(&logits, &labels).unwrap(),
        &[3.0 * ln2, second],
    );
    close(
        &weighted.summed_loss(&logits, &labels).unwrap(),
        &[3.0 * ln2 + second],
    );
}

#[test]
fn binary_and_multi_label_losses_are_bce_with_logits_and_positive_weights() {
    // BCE(x, y) = −w·y·log σ(x) − (1−y)·log(1−σ(x)).
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let logits = t(&[1.0, -2.0], &[2, 1]);
    let targets = Tensor::from_slice(&[1.0f64, 0.0]); // [B] accepted for one output
    let binary = ModelTask::Binary {
        pos_weight: Some(3.0),
    };
    close(
        &binary.per_example_loss(&logits, &targets).unwrap(),
        &[-3.0 * sig(1.0).ln(), -(1.0 - sig(-2.0)).ln()],
    );
    let logits = t(&[1.0, -2.0, 0.5, 0.0], &[2, 2]);
    let targets = t(&[1.0, 1.0, 0.0, 1.0], &[2, 2]);
    let multi = ModelTask::MultiLabel {
        pos_weights: Some(vec![1.0, 2.0]),
    };
    close(
        &multi.per_example_loss(&logits, &targets).unwrap(),
        &[
            (-sig(1.0).ln() - 2.0 * sig(-2.0).ln()) / 2.0,
            (-(1.0 - sig(0.5)).ln() - 2.0 * sig(0.0).ln()) / 2.0,
        ],
    );
    let wrong = t(&[1.0, 0.0, 1.0], &[1, 3]);
    assert!(multi.per_example_loss(&logits, &wrong).is_err());
    close(&multi.predictions(&t(&[0.0], &[1, 1])).unwrap(), &[0.5]);
}

#[test]
fn regression_losses_are_mse_and_huber_averaged_over_targets() {
    let outputs = t(&[1.0, 2.0, 0.0, 5.0], &[2, 2]);
    let targets = t(&[0.0, 2.0, 0.5, 1.0], &[2, 2]);
    let mse = TaskKind::Regression.default_task();
    close(
        &mse.per_example_loss(&outputs, &targets).unwrap(),
        &[0.5, (0.25 + 16.0) / 2.0],
    );
    close(
        &mse.mean_loss(&outputs, &targets).unwrap(),
        &[(0.5 + 8.125) / 2.0],
    );
    let huber = ModelTask::Regression {
        loss: RegressionLoss::Huber { delta: 1.0 },
    };
    // |r| ≤ 1: r²/2; beyond: |r| − 1/2.
    close(
        &huber.per_example_loss(&outputs, &targets).unwrap(),
        &[0.25, (0.125 + 3.5) / 2.0],
    );
    close(&huber.predictions(&outputs).unwrap(), &[1.0, 2.0, 0.0, 5.0]);
}
