use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::*;
use crate::dpsgd::{ClippingMode, DpConfig, OptimizerConfig, StepAccountant, make_private};
use crate::model::{self, ModelSpec};

#[derive(Debug, Default)]
struct NoAccountant;

impl StepAccountant for NoAccountant {
    fn step(&mut self, _noise_multiplier: f64, _sample_rate: f64) {}

    fn epsilon(&self, _delta: f64) -> Option<f64> {
        None
    }
}

fn network(spec: &ModelSpec) -> model::Model {
    let vs = VarStore::new(Device::Cpu);
    model::build(&vs.root(), spec).unwrap()
}

#[test]
fn inclusion_is_a_fair_coin_and_directions_are_reproducible_unit_vectors() {
    let net = network(&ModelSpec::mlp(20, &[30], 3));
    let a = GradientCanaries::new(&net, 2000, 1.0, 0.1, 7).unwrap();
    let b = GradientCanaries::new(&net, 2000, 1.0, 0.1, 7).unwrap();
    assert_eq!(a.included(), b.included());
    let inside = a.included().iter().filter(|&&x| x).count();
    // Bin(2000, ½) lies within 4.5 standard deviations (±100) except with chance 1e-5.
    assert!((900..=1100).contains(&inside), "{inside} of 2000 included");
    assert_eq!(a.dimension(), 20 * 30 + 30 + 30 * 3 + 3);
    // A model change equal to −u_0 scores 1 for canary 0 and about ±1/√d for the others.
    let d = a.dimension();
    let u0: Vec<f32> = a.direction(0).unwrap().iter().map(|x| -x).collect();
    let norm: f32 = u0.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-5, "|u_0|² = {norm}");
    assert_eq!(a.direction(3).unwrap(), b.direction(3).unwrap());
    let scores = a.scores(&u0).unwrap();
    assert!((scores[0] - 1.0).abs() < 1e-5, "{}", scores[0]);
    let cross = scores[1..].iter().map(|s| s * s).sum::<f64>() / (scores.len() - 1) as f64;
    assert!(
        (cross * d as f64 - 1.0).abs() < 0.2,
        "mean squared cosine × d = {}",
        cross * d as f64
    );
    assert!(a.scores(&u0[1..]).is_err());
    assert!(GradientCanaries::new(&net, 0, 1.0, 0.1, 7).is_err());
    assert!(GradientCanaries::new(&net, 10, 0.0, 0.1, 7).is_err());
    assert!(GradientCanaries::new(&net, 10, 1.0, 0.0, 7).is_err());
}

/// Without noise and with an empty batch, a step's gradient is exactly the sampled included
/// canaries' `C·u_i / (qN)`, and excluded canaries are never sampled.
#[test]
fn a_step_adds_exactly_the_sampled_included_canaries() {
    let spec = ModelSpec::mlp(6, &[5], 2);
    let (q, len, clip_norm) = (0.5, 10, 0.7);
    let mut trainer = make_private(
        network(&spec),
        OptimizerConfig::sgd(0.1, 0.0).build(),
        DpConfig {
            noise_multiplier: 0.0,
            max_grad_norm: clip_norm,
            sample_rate: q,
            clipping: ClippingMode::Auto,
        },
        len,
        Box::<NoAccountant>::default(),
    )
    .unwrap();
    let canaries = GradientCanaries::new(trainer.network(), 40, clip_norm, q, 3).unwrap();
    let d = canaries.dimension();
    plant(&mut trainer, canaries);
    let empty_x = Tensor::zeros([0, 6], (Kind::Float, Device::Cpu));
    let empty_y = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
    let mut total = vec![0f64; d];
    for _ in 0..20 {
        let (grads, _) = trainer.private_gradient(&empty_x, &empty_y).unwrap();
        let flat = Tensor::cat(
            &grads.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(),
            0,
        )
        .to_kind(Kind::Double);
        let flat: Vec<f64> = Vec::try_from(&flat).unwrap();
        for (t, x) in total.iter_mut().zip(flat) {
            *t += x;
        }
    }
    let canaries = remove(&mut trainer).unwrap();
    let mut want = vec![0f64; d];
    for (i, (&count, &inside)) in canaries
        .times_sampled()
        .iter()
        .zip(canaries.included())
        .enumerate()
    {
        if !inside {
            assert_eq!(count, 0, "excluded canary {i} was sampled");
        }
        let unit = f64::from(count) * clip_norm / (q * len as f64);
        for (w, u) in want.iter_mut().zip(canaries.direction(i).unwrap()) {
            *w += unit * f64::from(u);
        }
    }
    let sampled: u32 = canaries.times_sampled().iter().sum();
    let members = canaries.included().iter().filter(|&&x| x).count() as f64;
    // 20 steps at q = ½: about 10 samplings per included canary.
    assert!(
        (f64::from(sampled) / members - 10.0).abs() < 2.5,
        "{sampled} samplings"
    );
    for (g, w) in total.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{g} vs {w}");
    }
}

#[test]
fn flat_trainable_follows_the_trainer_order() {
    let net = network(&ModelSpec::mlp(3, &[2], 2));
    let flat = flat_trainable(&net).unwrap();
    assert_eq!(flat.len(), 3 * 2 + 2 + 2 * 2 + 2);
    let first = crate::dpsgd::trainable_parameters(&net)[0]
        .1
        .flatten(0, -1)
        .to_kind(Kind::Float);
    let first: Vec<f32> = Vec::try_from(&first).unwrap();
    assert_eq!(&flat[..first.len()], first.as_slice());
}
