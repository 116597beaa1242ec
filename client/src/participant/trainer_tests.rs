use cohort_protocol::messages::DpSgdConfig;
use cohort_protocol::training::{ImageAugmentation, LocalOptimizer, LrSchedule};
use cohort_protocol::{Epsilon, FederationId, RoundId};

use super::*;
use crate::dpsgd::{OptimizerKind, Schedule, danger};

const LR: f64 = 0.5;

/// A task of 5 epochs at q = 0.25 (20 DP-SGD steps), with FedProx's μ when given.
fn task(proximal_mu: Option<f64>, num_params: u64) -> Task {
    Task {
        federation: FederationId::parse("prox").unwrap(),
        round: RoundId::new(1).unwrap(),
        model_version: 0,
        dp_sgd: DpSgdConfig {
            noise_multiplier: 0.5,
            clip_norm: 1.0,
            local_epochs: 5,
            batch_sample_rate: 0.25,
        },
        update_clip: None,
        proximal_mu,
        num_params,
        upload_deadline_ms: 0,
        epsilon_after_round: Epsilon::new(0.0).unwrap(),
        model_spec: None,
        secure_aggregation: None,
        local_training: None,
    }
}

/// A small MLP's global weights and a linearly separable data set for it.
fn setup() -> (ModelSpec, Vec<u8>, Dataset) {
    tch::manual_seed(18);
    let spec = ModelSpec::mlp(6, &[8], 2);
    let vs = VarStore::new(Device::Cpu);
    model::build(&vs.root(), &spec).unwrap();
    let global = weights::to_safetensors(&vs).unwrap();
    let features = Tensor::randn([64, 6], (Kind::Float, Device::Cpu));
    let direction = Tensor::randn([6, 1], (Kind::Float, Device::Cpu));
    let labels = features
        .matmul(&direction)
        .gt(0.0)
        .to_kind(Kind::Int64)
        .squeeze_dim(1);
    let data = Dataset {
        features,
        labels,
        num_classes: 2,
    };
    (spec, global, data)
}

/// Δ of one round with the same seeded noise and batches whatever μ is.
fn delta(spec: &ModelSpec, global: &[u8], data: &Dataset, mu: Option<f64>) -> Vec<f32> {
    let (_, flat) = weights::flat_from_safetensors(global).unwrap();
    let (output, _) = train_round(
        spec,
        Device::Cpu,
        LR,
        data,
        global,
        &task(mu, flat.len() as u64),
        |trainer| {
            danger::replace_noise(trainer, Box::new(danger::seeded_gaussian(3)));
            danger::seed_sampler(trainer, 4).map_err(|e| e.to_string())
        },
    )
    .unwrap();
    output.delta
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn a_fedprox_update_is_shorter_than_fedavgs_when_mu_is_positive_and_the_same_at_zero() {
    let (spec, global, data) = setup();
    let fedavg = delta(&spec, &global, &data, None);
    assert!(norm(&fedavg) > 0.0);
    // μ = 0 is FedAvg, bit for bit.
    assert_eq!(delta(&spec, &global, &data, Some(0.0)), fedavg);
    // μ > 0 pulls every step back toward w_global: shorter, and more so as μ grows.
    let weak = delta(&spec, &global, &data, Some(0.1));
    let strong = delta(&spec, &global, &data, Some(1.0));
    assert!(
        norm(&weak) < norm(&fedavg),
        "μ = 0.1: {} vs FedAvg {}",
        norm(&weak),
        norm(&fedavg)
    );
    assert!(
        norm(&strong) < norm(&weak),
        "μ = 1: {} vs μ = 0.1 {}",
        norm(&strong),
        norm(&weak)
    );
}

#[test]
fn the_proximal_gradient_is_mu_times_the_distance_from_the_global_model() {
    // One step from w ≠ w_global with no data signal (σ = 0, an empty Poisson batch) moves
    // w by exactly −lr·μ(w − w_global) under plain SGD.
    let (spec, global, _) = setup();
    let vs = VarStore::new(Device::Cpu);
    let network = model::build(&vs.root(), &spec).unwrap();
    let mut vs = vs;
    weights::load_safetensors(&mut vs, &global).unwrap();
    let config = DpConfig {
        noise_multiplier: 0.0,
        max_grad_norm: 1.0,
        sample_rate: 0.5,
        clipping: ClippingMode::Auto,
    };
    let mut trainer = dpsgd::make_private(
        network,
        OptimizerConfig::sgd(LR, 0.0).build(),
        config,
        10,
        Box::new(RdpStepAccountant::new()),
    )
    .unwrap();
    trainer.add_proximal_term(0.4).unwrap();
    let (_, w_global) = weights::flat_from_safetensors(&global).unwrap();
    // Move the weights by a known offset, then take a step on an empty batch.
    tch::no_grad(|| {
        for (_, p) in dpsgd::trainable_parameters(trainer.network()) {
            let _ = p.shallow_clone().f_add_scalar_(1.0).unwrap();
        }
    });
    let empty_x = Tensor::zeros([0, 6], (Kind::Float, Device::Cpu));
    let empty_y = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
    trainer.step(&empty_x, &empty_y).unwrap();
    drop(trainer);
    let (_, after) =
        weights::flat_from_safetensors(&weights::to_safetensors(&vs).unwrap()).unwrap();
    let expected = 1.0 - LR * 0.4 * 1.0;
    for (a, g) in after.iter().zip(&w_global) {
        assert!(
            (f64::from(a - g) - expected).abs() < 1e-5,
            "moved {} from w_global, expected {expected}",
            a - g
        );
    }
    let mut bad = task(Some(-1.0), w_global.len() as u64);
    bad.proximal_mu = Some(f64::NAN);
    let (spec, global, data) = setup();
    let refused = train_round(&spec, Device::Cpu, LR, &data, &global, &bad, |_| Ok(()));
    assert!(refused.unwrap_err().contains("proximal coefficient"));
}

/// Δ of a one-step round (E = 1, q = 1, σ = 0: the whole data set, no noise) through
/// `train_round` with the task's local training settings.
fn participant_step(
    spec: &ModelSpec,
    global: &[u8],
    data: &Dataset,
    local: LocalTraining,
) -> Vec<f32> {
    let (_, flat) = weights::flat_from_safetensors(global).unwrap();
    let mut t = task(None, flat.len() as u64);
    t.dp_sgd = DpSgdConfig {
        noise_multiplier: 0.0,
        clip_norm: 1.0,
        local_epochs: 1,
        batch_sample_rate: 1.0,
    };
    t.local_training = Some(local);
    // The fallback rate must not be what runs.
    let (output, _) = train_round(spec, Device::Cpu, 123.0, data, global, &t, |trainer| {
        danger::seed_sampler(trainer, 4).map_err(|e| e.to_string())
    })
    .unwrap();
    output.delta
}

/// The same step with an optimiser written out by hand from the library's own types.
fn library_step(
    spec: &ModelSpec,
    global: &[u8],
    data: &Dataset,
    optimizer: OptimizerConfig,
) -> Vec<f32> {
    let mut vs = VarStore::new(Device::Cpu);
    let network = model::build(&vs.root(), spec).unwrap();
    weights::load_safetensors(&mut vs, global).unwrap();
    let config = DpConfig {
        noise_multiplier: 0.0,
        max_grad_norm: 1.0,
        sample_rate: 1.0,
        clipping: ClippingMode::Auto,
    };
    let mut trainer = dpsgd::make_private(
        network,
        optimizer.build(),
        config,
        data.len(),
        Box::new(RdpStepAccountant::new()),
    )
    .unwrap();
    danger::seed_sampler(&mut trainer, 4).unwrap();
    trainer.train_steps(data, 1, |_| {}).unwrap();
    drop(trainer);
    let (_, before) = weights::flat_from_safetensors(global).unwrap();
    let (_, after) =
        weights::flat_from_safetensors(&weights::to_safetensors(&vs).unwrap()).unwrap();
    after.iter().zip(&before).map(|(a, b)| a - b).collect()
}

#[test]
fn each_optimiser_and_schedule_a_federation_picks_is_the_one_that_runs() {
    let (spec, global, data) = setup();
    let lr = 0.05;
    let base = LocalTraining::sgd(lr);
    let cases: Vec<(LocalTraining, OptimizerConfig)> = vec![
        (
            LocalTraining {
                optimizer: LocalOptimizer::Sgd { momentum: 0.9 },
                weight_decay: 0.01,
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::Sgd { momentum: 0.9 },
                learning_rate: lr,
                weight_decay: 0.01,
                schedule: Schedule::Constant,
                warmup_steps: 0,
            },
        ),
        (
            LocalTraining {
                optimizer: LocalOptimizer::Adam {
                    beta1: 0.8,
                    beta2: 0.99,
                    eps: 1e-6,
                },
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::Adam {
                    beta1: 0.8,
                    beta2: 0.99,
                    eps: 1e-6,
                },
                ..OptimizerConfig::sgd(lr, 0.0)
            },
        ),
        (
            LocalTraining {
                optimizer: LocalOptimizer::RmsProp {
                    alpha: 0.9,
                    eps: 1e-8,
                },
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::RmsProp {
                    alpha: 0.9,
                    eps: 1e-8,
                },
                ..OptimizerConfig::sgd(lr, 0.0)
            },
        ),
        (
            LocalTraining {
                optimizer: LocalOptimizer::AdaGrad { eps: 1e-10 },
                ..base
            },
            OptimizerConfig {
                kind: OptimizerKind::AdaGrad { eps: 1e-10 },
                ..OptimizerConfig::sgd(lr, 0.0)
            },
        ),
        (
            LocalTraining {
                schedule: LrSchedule::Step {
                    every: 1,
                    gamma: 0.5,
                },
                warmup_steps: 4,
                ..base
            },
            OptimizerConfig {
                schedule: Schedule::Step {
                    every: 1,
                    gamma: 0.5,
                },
                warmup_steps: 4,
                ..OptimizerConfig::sgd(lr, 0.0)
            },
        ),
        (
            LocalTraining {
                schedule: LrSchedule::Cosine { min_lr: 0.0 },
                ..base
            },
            OptimizerConfig {
                schedule: Schedule::Cosine {
                    total: 1,
                    min_lr: 0.0,
                },
                ..OptimizerConfig::sgd(lr, 0.0)
            },
        ),
    ];
    let mut seen: Vec<Vec<f32>> = Vec::new();
    for (local, library) in cases {
        let got = participant_step(&spec, &global, &data, local);
        assert_eq!(
            got,
            library_step(&spec, &global, &data, library),
            "{local:?}"
        );
        assert!(
            !seen.contains(&got),
            "{local:?} ran like an earlier setting"
        );
        seen.push(got);
    }
    // Independent of the library: Adam's bias-corrected first step moves each coordinate with
    // a gradient by the rate, and warm-up over 4 steps makes SGD's first step a quarter of
    // plain SGD's.
    let adam = &seen[1];
    assert!(adam.iter().all(|d| f64::from(d.abs()) <= lr * 1.001));
    assert!(
        adam.iter()
            .filter(|d| (f64::from(d.abs()) - lr).abs() < lr * 0.01)
            .count()
            > adam.len() / 2
    );
    let plain = participant_step(&spec, &global, &data, base);
    for (w, p) in seen[4].iter().zip(&plain) {
        assert!((w * 4.0 - p).abs() <= 1e-6 + 1e-4 * p.abs(), "{w} vs {p}");
    }
}

#[test]
fn a_round_with_augmentation_augments_and_still_trains() {
    // A 1×6×6 "image" data set: augmentation must run on the batches (a flat data set would
    // be refused by the augmenter, so success here means the image path ran).
    tch::manual_seed(3);
    let spec = ModelSpec {
        input_shape: vec![1, 6, 6],
        layers: vec![
            crate::model::LayerSpec::Flatten,
            crate::model::LayerSpec::Linear { out: 2, bias: true },
        ],
        ..ModelSpec::mlp(36, &[], 2)
    };
    let vs = VarStore::new(Device::Cpu);
    model::build(&vs.root(), &spec).unwrap();
    let global = weights::to_safetensors(&vs).unwrap();
    let data = Dataset {
        features: Tensor::rand([32, 1, 6, 6], (Kind::Float, Device::Cpu)),
        labels: Tensor::randint(2, [32], (Kind::Int64, Device::Cpu)),
        num_classes: 2,
    };
    let local = LocalTraining {
        augmentation: ImageAugmentation {
            crop_padding: 1,
            horizontal_flip: true,
            rotation_degrees: 15.0,
        },
        ..LocalTraining::sgd(0.1)
    };
    let plain = participant_step(&spec, &global, &data, LocalTraining::sgd(0.1));
    let augmented = participant_step(&spec, &global, &data, local);
    assert_eq!(augmented.len(), plain.len());
    assert_ne!(
        augmented, plain,
        "the augmented batch trained like the raw one"
    );
    // On flat features the augmenter refuses, and so does the round: no silent skip.
    let (flat_spec, flat_global, flat_data) = setup();
    let (_, flat) = weights::flat_from_safetensors(&flat_global).unwrap();
    let mut t = task(None, flat.len() as u64);
    t.local_training = Some(local);
    let refused = train_round(
        &flat_spec,
        Device::Cpu,
        0.1,
        &flat_data,
        &flat_global,
        &t,
        |_| Ok(()),
    );
    assert!(refused.unwrap_err().contains("augmentation"));
}
