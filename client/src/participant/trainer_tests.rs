use cohort_protocol::messages::DpSgdConfig;
use cohort_protocol::{Epsilon, FederationId, RoundId};

use super::*;
use crate::dpsgd::danger;

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
