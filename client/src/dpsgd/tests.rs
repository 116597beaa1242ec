//! Parity of ghost clipping with brute force, noise calibration, and the trainer's contract.

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::*;
use crate::model::{self, Activation, InputKind, LayerSpec, ModelSpec};

#[derive(Debug, Default)]
struct CountingAccountant {
    steps: Vec<(f64, f64)>,
}

impl StepAccountant for CountingAccountant {
    fn step(&mut self, noise_multiplier: f64, sample_rate: f64) {
        self.steps.push((noise_multiplier, sample_rate));
    }

    /// Not an ε: the number of steps recorded, so tests can see the accountant advance.
    fn epsilon(&self, _delta: f64) -> Option<f64> {
        Some(self.steps.len() as f64)
    }
}

fn build_double(spec: &ModelSpec, seed: i64) -> (VarStore, model::Model) {
    tch::manual_seed(seed);
    let mut vs = VarStore::new(Device::Cpu);
    let net = model::build(&vs.root(), spec).unwrap();
    vs.double();
    assert!(
        net.parameters()
            .iter()
            .all(|p| p.tensor.kind() == Kind::Double)
    );
    (vs, net)
}

fn inputs(spec: &ModelSpec, batch: i64, seed: i64) -> (Tensor, Tensor, i64) {
    tch::manual_seed(seed);
    let mut shape = vec![batch];
    shape.extend_from_slice(&spec.input_shape);
    let x = match spec.input {
        InputKind::Float => Tensor::randn(shape.as_slice(), (Kind::Double, Device::Cpu)),
        InputKind::Tokens => {
            let vocab = match spec.layers[0] {
                LayerSpec::Embedding { vocab, .. } => vocab,
                _ => unreachable!(),
            };
            // A small range of ids so that tokens repeat within a sequence.
            Tensor::randint(vocab.min(4), shape.as_slice(), (Kind::Int64, Device::Cpu))
        }
    };
    let classes = match spec.layers.last() {
        Some(LayerSpec::Linear { out, .. }) => *out,
        _ => unreachable!(),
    };
    let y = Tensor::randint(classes, [batch], (Kind::Int64, Device::Cpu));
    (x, y, classes)
}

/// One backward per example, clip, sum: the definition ghost clipping must match.
fn brute_force(
    net: &model::Model,
    x: &Tensor,
    y: &Tensor,
    clip_norm: f64,
) -> (Vec<Tensor>, Vec<f64>) {
    let params: Vec<Tensor> = trainable_parameters(net)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut sums: Vec<Tensor> = params.iter().map(|p| p.zeros_like()).collect();
    let mut norms = Vec::new();
    for i in 0..x.size()[0] {
        let logits = net
            .forward_t(&x.narrow(0, i, 1), true, &mut crate::model::Tape::off())
            .unwrap();
        let loss = clip::summed_loss(&logits, &y.narrow(0, i, 1)).unwrap();
        let grads = Tensor::run_backward(&[&loss], &params, false, false);
        let norm = grads
            .iter()
            .map(|g| g.square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt();
        norms.push(norm);
        let factor = (clip_norm / (norm + ghost::STABILITY)).min(1.0);
        for (s, g) in sums.iter_mut().zip(&grads) {
            *s = &*s + g * factor;
        }
    }
    (sums, norms)
}

fn assert_parity(spec: &ModelSpec, batch: i64) {
    let (_vs, net) = build_double(spec, 11);
    let (x, y, _) = inputs(spec, batch, 12);
    // Pick C at the median per-sample norm so that some examples are clipped and some not.
    let (_, norms) = brute_force(&net, &x, &y, f64::INFINITY);
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let clip_norm = sorted[sorted.len() / 2];
    let (want, _) = brute_force(&net, &x, &y, clip_norm);
    let got = clipped_gradient_sum(&net, &x, &y, clip_norm, ClippingMode::Ghost).unwrap();
    assert_eq!(got.grads.len(), want.len());
    let names: Vec<String> = trainable_parameters(&net)
        .iter()
        .map(|(id, _)| net.parameters()[*id].name.clone())
        .collect();
    for ((g, w), name) in got.grads.iter().zip(&want).zip(&names) {
        assert_eq!(g.size(), w.size(), "{name}");
        let err = (g - w).norm().double_value(&[]);
        let scale = w.norm().double_value(&[]);
        assert!(
            err <= 1e-5 * scale + 1e-12,
            "{name}: ghost differs from brute force by {err} (norm {scale})"
        );
    }
    // And the fallback computes the same thing.
    let fallback = clipped_gradient_sum(&net, &x, &y, clip_norm, ClippingMode::PerSample).unwrap();
    for (g, w) in fallback.grads.iter().zip(&want) {
        assert!((g - w).norm().double_value(&[]) <= 1e-9 * (1.0 + w.norm().double_value(&[])));
    }
}

fn lin(out: i64) -> LayerSpec {
    LayerSpec::Linear { out, bias: true }
}

fn act(a: Activation) -> LayerSpec {
    LayerSpec::Activation(a)
}

#[test]
fn ghost_matches_brute_force_for_linear() {
    assert_parity(&ModelSpec::mlp(5, &[7, 6], 3), 9);
}

#[test]
fn ghost_matches_brute_force_for_linear_without_bias_and_tempered_sigmoid() {
    let spec = ModelSpec {
        input_shape: vec![6],
        input: InputKind::Float,
        layers: vec![
            LayerSpec::Linear {
                out: 5,
                bias: false,
            },
            act(Activation::TemperedSigmoid {
                scale: 2.0,
                temperature: 1.5,
                offset: 1.0,
            }),
            lin(4),
        ],
        init: model::Init::Xavier,
        task: model::ModelTask::default(),
    };
    assert_parity(&spec, 7);
}

#[test]
fn ghost_matches_brute_force_for_conv2d_explicit_branch() {
    let spec = ModelSpec {
        input_shape: vec![2, 6, 6],
        input: InputKind::Float,
        layers: vec![
            LayerSpec::Conv2d {
                out_channels: 3,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            act(Activation::Relu),
            LayerSpec::MaxPool2d {
                kernel: 2,
                stride: None,
            },
            LayerSpec::Flatten,
            lin(4),
        ],
        init: model::Init::He,
        task: model::ModelTask::default(),
    };
    assert_parity(&spec, 6);
}

/// One convolution (`[out, kernel, stride, padding]`) over `input_shape`, an activation, and
/// a linear head of 3: the shape of the per-branch convolution parity tests.
fn conv_net(input_shape: [i64; 3], conv: [i64; 4], activation: Activation) -> ModelSpec {
    let [out_channels, kernel, stride, padding] = conv;
    ModelSpec {
        input_shape: input_shape.to_vec(),
        input: InputKind::Float,
        layers: vec![
            LayerSpec::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
            },
            act(activation),
            LayerSpec::Flatten,
            lin(3),
        ],
        init: model::Init::He,
        task: model::ModelTask::default(),
    }
}

#[test]
fn ghost_matches_brute_force_for_conv2d_grouped_branch_strided_padded_non_square() {
    // One channel: per-sample gradients by grouped convolution, with a stride (the dilation of
    // the gradient kernel) and padding, on a non-square image whose last rows the stride skips.
    assert_parity(&conv_net([1, 9, 8], [4, 4, 2, 1], Activation::Tanh), 8);
}

#[test]
fn ghost_matches_brute_force_for_conv2d_patch_branch() {
    // Five channels: explicit per-sample gradients from patches and a batched product.
    assert_parity(&conv_net([5, 6, 6], [2, 3, 1, 1], Activation::Relu), 9);
}

#[test]
fn ghost_matches_brute_force_for_conv2d_gram_branch() {
    // 3×4×4 input, 8 filters of 3×3, stride 2 → one output position: Gram (L = 1) is cheaper.
    assert_parity(&conv_net([3, 4, 4], [8, 3, 2, 0], Activation::Tanh), 5);
}

/// Two convolutions: the first hands the second a channels-last map, whose patches are copied
/// in `[k, k, C]` order (`[first, second]` each `[out, kernel, stride, padding]`).
fn two_conv_net(input_shape: [i64; 3], first: [i64; 4], second: [i64; 4]) -> ModelSpec {
    let conv = |[out_channels, kernel, stride, padding]: [i64; 4]| LayerSpec::Conv2d {
        out_channels,
        kernel,
        stride,
        padding,
    };
    ModelSpec {
        input_shape: input_shape.to_vec(),
        input: InputKind::Float,
        layers: vec![
            conv(first),
            act(Activation::Tanh),
            conv(second),
            act(Activation::Relu),
            LayerSpec::Flatten,
            lin(3),
        ],
        init: model::Init::He,
        task: model::ModelTask::default(),
    }
}

#[test]
fn ghost_matches_brute_force_for_channels_last_patch_branch() {
    // Second convolution: 4 channels in, 2 out, 3×3 padded: explicit per-sample gradients.
    assert_parity(&two_conv_net([1, 6, 6], [4, 3, 1, 1], [2, 3, 1, 1]), 6);
}

#[test]
fn ghost_matches_brute_force_for_channels_last_gram_branch() {
    // Second convolution: 4 channels in, 8 out, stride 2, padded, 2×2 output: Gram matrices.
    assert_parity(&two_conv_net([1, 5, 5], [4, 2, 1, 0], [8, 3, 2, 1]), 6);
}

#[test]
fn ghost_matches_brute_force_for_group_norm_and_avg_pool() {
    let spec = ModelSpec {
        input_shape: vec![2, 5, 5],
        input: InputKind::Float,
        layers: vec![
            LayerSpec::Conv2d {
                out_channels: 4,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            LayerSpec::GroupNorm { groups: 2 },
            act(Activation::Gelu),
            LayerSpec::AvgPool2d {
                kernel: 2,
                stride: Some(1),
            },
            LayerSpec::GlobalAvgPool,
            lin(3),
        ],
        init: model::Init::He,
        task: model::ModelTask::default(),
    };
    assert_parity(&spec, 6);
}

#[test]
fn ghost_matches_brute_force_for_layer_norm() {
    let spec = ModelSpec {
        input_shape: vec![6],
        input: InputKind::Float,
        layers: vec![lin(8), LayerSpec::LayerNorm, act(Activation::Tanh), lin(3)],
        init: model::Init::Xavier,
        task: model::ModelTask::default(),
    };
    assert_parity(&spec, 8);
}

#[test]
fn ghost_matches_brute_force_for_embedding_and_sequence_linear_gram() {
    // T = 4, in·out = 6·5 > T²: Gram matrices.
    let spec = ModelSpec {
        input_shape: vec![4],
        input: InputKind::Tokens,
        layers: vec![
            LayerSpec::Embedding { vocab: 9, dim: 6 },
            lin(5),
            act(Activation::Relu),
            LayerSpec::SequenceMean,
            lin(3),
        ],
        init: model::Init::Xavier,
        task: model::ModelTask::default(),
    };
    assert_parity(&spec, 7);
}

#[test]
fn ghost_matches_brute_force_for_sequence_linear_explicit_branch() {
    // T = 9, in·out = 2·3 < T²: explicit per-sample gradients.
    let spec = ModelSpec {
        input_shape: vec![9],
        input: InputKind::Tokens,
        layers: vec![
            LayerSpec::Embedding { vocab: 5, dim: 2 },
            lin(3),
            act(Activation::Tanh),
            LayerSpec::SequenceLast,
            lin(2),
        ],
        init: model::Init::Xavier,
        task: model::ModelTask::default(),
    };
    assert_parity(&spec, 6);
}

#[test]
fn ghost_matches_brute_force_for_a_transformer() {
    assert_parity(&ModelSpec::transformer(7, 5, 8, 2, 1), 5);
}

#[test]
fn ghost_matches_brute_force_for_a_small_resnet() {
    assert_parity(&ModelSpec::small_resnet([2, 6, 6], &[4, 8], 3), 4);
}

#[test]
fn ghost_matches_brute_force_for_a_mixed_model() {
    let spec = ModelSpec {
        input_shape: vec![1, 8, 8],
        input: InputKind::Float,
        layers: vec![
            LayerSpec::Conv2d {
                out_channels: 4,
                kernel: 3,
                stride: 1,
                padding: 0,
            },
            LayerSpec::GroupNorm { groups: 2 },
            act(Activation::Relu),
            LayerSpec::Residual {
                body: vec![
                    LayerSpec::Conv2d {
                        out_channels: 4,
                        kernel: 3,
                        stride: 1,
                        padding: 1,
                    },
                    act(Activation::Tanh),
                ],
            },
            LayerSpec::MaxPool2d {
                kernel: 2,
                stride: None,
            },
            LayerSpec::Flatten,
            LayerSpec::Dropout { p: 0.0 },
            lin(10),
            LayerSpec::LayerNorm,
            act(Activation::Gelu),
            lin(3),
        ],
        init: model::Init::He,
        task: model::ModelTask::default(),
    };
    assert_parity(&spec, 6);
}

fn trainer_for(spec: &ModelSpec, config: DpConfig, len: i64) -> PrivateTrainer<model::Model> {
    trainer_with(spec, config, len, OptimizerConfig::sgd(0.1, 0.0))
}

fn trainer_with(
    spec: &ModelSpec,
    config: DpConfig,
    len: i64,
    optimizer: OptimizerConfig,
) -> PrivateTrainer<model::Model> {
    let vs = VarStore::new(Device::Cpu);
    let net = model::build(&vs.root(), spec).unwrap();
    // Dropping the VarStore is fine: the model holds its own handles to the tensors.
    drop(vs);
    make_private(
        net,
        optimizer.build(),
        config,
        len,
        Box::<CountingAccountant>::default(),
    )
    .unwrap()
}

#[test]
fn noise_standard_deviation_is_sigma_times_clip() {
    let (sigma, clip_norm, q, len) = (1.3, 0.7, 0.01, 1000);
    // 77,710 parameters: many keystream refills in one step.
    let mut trainer = trainer_for(
        &ModelSpec::mlp(100, &[700], 10),
        DpConfig {
            noise_multiplier: sigma,
            max_grad_norm: clip_norm,
            sample_rate: q,
            clipping: ClippingMode::Auto,
        },
        len,
    );
    assert!(trainer.noise_is_secure());
    let empty_x = Tensor::zeros([0, 100], (Kind::Float, Device::Cpu));
    let empty_y = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
    let mut steps = Vec::new();
    for _ in 0..2 {
        let (grads, report) = trainer.private_gradient(&empty_x, &empty_y).unwrap();
        assert_eq!(report.batch_size, 0);
        // An empty batch leaves only the noise, divided by the expected batch size q·N.
        let flat = Tensor::cat(
            &grads.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(),
            0,
        )
        .to_kind(Kind::Double)
            * (q * len as f64);
        let n = flat.numel();
        assert_eq!(n, 77_710);
        let std = flat.std(true).double_value(&[]);
        let mean = flat.mean(Kind::Double).double_value(&[]);
        let want = sigma * clip_norm;
        assert!((std / want - 1.0).abs() < 0.02, "std {std}, want {want}");
        assert!(mean.abs() < 5.0 * want / (n as f64).sqrt(), "mean {mean}");
        steps.push(flat);
    }
    let corr =
        (&steps[0] * &steps[1]).mean(Kind::Double).double_value(&[]) / (sigma * clip_norm).powi(2);
    assert!(corr.abs() < 0.02, "two steps' noise correlates: {corr}");
}

#[test]
fn without_noise_the_step_is_the_clipped_sum_over_the_expected_batch() {
    let spec = ModelSpec::mlp(4, &[5], 2);
    let (q, len, clip_norm) = (0.25, 40, 0.5);
    let mut trainer = trainer_for(
        &spec,
        DpConfig {
            noise_multiplier: 0.0,
            max_grad_norm: clip_norm,
            sample_rate: q,
            clipping: ClippingMode::Ghost,
        },
        len,
    );
    let x = Tensor::randn([6, 4], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(2, [6], (Kind::Int64, Device::Cpu));
    let want =
        clipped_gradient_sum(trainer.network(), &x, &y, clip_norm, ClippingMode::Ghost).unwrap();
    let (got, _) = trainer.private_gradient(&x, &y).unwrap();
    for (g, w) in got.iter().zip(&want.grads) {
        let expected = w / (q * len as f64);
        assert!((g - &expected).abs().max().double_value(&[]) < 1e-7);
    }
}

#[test]
fn batch_norm_is_refused_with_a_pointer_to_group_norm() {
    let spec = ModelSpec {
        input_shape: vec![1, 4, 4],
        input: InputKind::Float,
        layers: vec![
            LayerSpec::Conv2d {
                out_channels: 2,
                kernel: 3,
                stride: 1,
                padding: 0,
            },
            LayerSpec::BatchNorm2d,
            LayerSpec::Flatten,
            lin(2),
        ],
        init: model::Init::He,
        task: model::ModelTask::default(),
    };
    let vs = VarStore::new(Device::Cpu);
    let net = model::build(&vs.root(), &spec).unwrap();
    let err = make_private(
        net,
        OptimizerConfig::sgd(0.1, 0.0).build(),
        DpConfig {
            noise_multiplier: 1.0,
            max_grad_norm: 1.0,
            sample_rate: 0.1,
            clipping: ClippingMode::Auto,
        },
        100,
        Box::<CountingAccountant>::default(),
    )
    .unwrap_err();
    assert!(matches!(err, DpError::BatchNorm));
    assert!(err.to_string().contains("GroupNorm"), "{err}");
}

#[test]
fn bad_settings_are_refused() {
    let spec = ModelSpec::mlp(2, &[], 2);
    for (sigma, clip_norm, q) in [
        (-1.0, 1.0, 0.1),
        (1.0, 0.0, 0.1),
        (1.0, 1.0, 0.0),
        (f64::NAN, 1.0, 0.1),
    ] {
        let vs = VarStore::new(Device::Cpu);
        let net = model::build(&vs.root(), &spec).unwrap();
        let result = make_private(
            net,
            OptimizerConfig::sgd(0.1, 0.0).build(),
            DpConfig {
                noise_multiplier: sigma,
                max_grad_norm: clip_norm,
                sample_rate: q,
                clipping: ClippingMode::Auto,
            },
            10,
            Box::<CountingAccountant>::default(),
        );
        assert!(
            matches!(result, Err(DpError::InvalidConfig(_))),
            "{sigma} {clip_norm} {q}"
        );
    }
}

#[test]
fn private_training_learns_separable_data_and_charges_every_step() {
    tch::manual_seed(3);
    let n = 512;
    let x = Tensor::randn([n, 8], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([8, 1], (Kind::Float, Device::Cpu));
    let y = x.matmul(&w).gt(0.0).to_kind(Kind::Int64).squeeze_dim(1);
    let data = crate::data::Dataset {
        features: x,
        labels: y,
        num_classes: 2,
    };
    let mut trainer = trainer_with(
        &ModelSpec::mlp(8, &[16], 2),
        DpConfig {
            noise_multiplier: 0.5,
            max_grad_norm: 1.0,
            sample_rate: 0.125,
            clipping: ClippingMode::Auto,
        },
        n,
        OptimizerConfig::sgd(0.5, 0.9),
    );
    danger::seed_sampler(&mut trainer, 5).unwrap();
    let mut seen = 0;
    for _ in 0..10 {
        let report = trainer.train_epoch(&data, |_| seen += 1).unwrap();
        assert_eq!(report.steps, 8);
    }
    assert_eq!(seen, 80);
    assert_eq!(trainer.steps(), 80);
    assert_eq!(
        trainer.epsilon(1e-5),
        Some(80.0),
        "the accountant saw every step"
    );
    let acc = accuracy(trainer.network(), &data, 128).unwrap();
    assert!(acc > 0.85, "accuracy {acc}");
}

/// Regression (found by the demo): a round of E epochs at rate q is charged ⌈E/q⌉ steps by both
/// ledgers, and `train_steps` trains exactly that many — E whole epochs of ⌈1/q⌉ steps would be
/// one step more than charged at q = 0.3, E = 2.
#[test]
fn a_round_trains_exactly_the_steps_its_ledgers_charge() {
    let n = 40;
    let data = crate::data::Dataset {
        features: Tensor::randn([n, 4], (Kind::Float, Device::Cpu)),
        labels: Tensor::zeros([n], (Kind::Int64, Device::Cpu)),
        num_classes: 2,
    };
    let (epochs, q) = (2, 0.3);
    let charged = cohort_protocol::messages::dp_sgd_steps_per_round(epochs, q);
    assert_eq!(charged, 7);
    let mut trainer = trainer_for(
        &ModelSpec::mlp(4, &[3], 2),
        DpConfig {
            noise_multiplier: 1.0,
            max_grad_norm: 1.0,
            sample_rate: q,
            clipping: ClippingMode::Auto,
        },
        n,
    );
    let mut seen = 0;
    let report = trainer.train_steps(&data, charged, |_| seen += 1).unwrap();
    assert_eq!((report.steps, seen, trainer.steps()), (7, 7, 7));
    assert_eq!(trainer.epsilon(1e-5), Some(7.0), "one charge per step");
}
