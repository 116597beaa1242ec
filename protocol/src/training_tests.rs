use super::*;

fn parse(json: &str) -> LocalTraining {
    serde_json::from_str(json).unwrap()
}

#[test]
fn defaults_are_pytorchs_and_plain_sgd_round_trips() {
    let adam = parse(r#"{"optimizer": {"name": "adam"}, "learning_rate": 0.01}"#);
    assert_eq!(
        adam.optimizer,
        LocalOptimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8
        }
    );
    assert_eq!(adam.schedule, LrSchedule::Constant);
    assert_eq!(adam.augmentation, ImageAugmentation::default());
    assert!(adam.validate().is_ok());
    let sgd = LocalTraining::sgd(0.1);
    let text = serde_json::to_string(&sgd).unwrap();
    assert_eq!(serde_json::from_str::<LocalTraining>(&text).unwrap(), sgd);
    let full = parse(
        r#"{"optimizer": {"name": "sgd", "momentum": 0.9}, "learning_rate": 0.1,
            "weight_decay": 5e-4, "schedule": {"name": "cosine", "min_lr": 0.001},
            "warmup_steps": 10,
            "augmentation": {"crop_padding": 4, "horizontal_flip": true, "rotation_degrees": 15}}"#,
    );
    assert!(full.validate().is_ok());
    assert!(serde_json::from_str::<LocalTraining>(r#"{"learning_rate": 0.1}"#).is_err());
    assert!(
        serde_json::from_str::<LocalTraining>(
            r#"{"optimizer": {"name": "lbfgs"}, "learning_rate": 0.1}"#
        )
        .is_err()
    );
}

#[test]
fn each_out_of_range_field_is_named() {
    let ok = LocalTraining::sgd(0.1);
    let cases: Vec<(LocalTraining, &str)> = vec![
        (
            LocalTraining {
                learning_rate: 0.0,
                ..ok
            },
            "local_training.learning_rate",
        ),
        (
            LocalTraining {
                learning_rate: f64::NAN,
                ..ok
            },
            "local_training.learning_rate",
        ),
        (
            LocalTraining {
                weight_decay: -1.0,
                ..ok
            },
            "local_training.weight_decay",
        ),
        (
            LocalTraining {
                optimizer: LocalOptimizer::Sgd { momentum: 1.0 },
                ..ok
            },
            "local_training.optimizer.momentum",
        ),
        (
            LocalTraining {
                optimizer: LocalOptimizer::Adam {
                    beta1: 0.9,
                    beta2: 1.5,
                    eps: 1e-8,
                },
                ..ok
            },
            "local_training.optimizer.beta2",
        ),
        (
            LocalTraining {
                optimizer: LocalOptimizer::RmsProp {
                    alpha: 0.9,
                    eps: 0.0,
                },
                ..ok
            },
            "local_training.optimizer.eps",
        ),
        (
            LocalTraining {
                schedule: LrSchedule::Step {
                    every: 0,
                    gamma: 0.5,
                },
                ..ok
            },
            "local_training.schedule.every",
        ),
        (
            LocalTraining {
                schedule: LrSchedule::Step {
                    every: 3,
                    gamma: 2.0,
                },
                ..ok
            },
            "local_training.schedule.gamma",
        ),
        (
            LocalTraining {
                schedule: LrSchedule::Cosine { min_lr: 0.5 },
                ..ok
            },
            "local_training.schedule.min_lr",
        ),
        (
            LocalTraining {
                augmentation: ImageAugmentation {
                    crop_padding: 40,
                    ..Default::default()
                },
                ..ok
            },
            "local_training.augmentation.crop_padding",
        ),
        (
            LocalTraining {
                augmentation: ImageAugmentation {
                    rotation_degrees: 200.0,
                    ..Default::default()
                },
                ..ok
            },
            "local_training.augmentation.rotation_degrees",
        ),
    ];
    for (config, field) in cases {
        let err = config.validate().unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}
