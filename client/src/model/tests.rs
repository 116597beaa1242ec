//! Building specs: shapes, JSON, validation, initialisation, freezing.

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::*;

fn forward_shape(spec: &ModelSpec, batch: i64) -> Vec<i64> {
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), spec).unwrap();
    let mut shape = vec![batch];
    shape.extend_from_slice(&spec.input_shape);
    let x = match spec.input {
        InputKind::Float => Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)),
        InputKind::Tokens => Tensor::zeros(shape.as_slice(), (Kind::Int64, Device::Cpu)),
    };
    net.forward_t(&x, true, &mut Tape::off()).unwrap().size()
}

#[test]
fn presets_build_and_produce_logits() {
    assert_eq!(
        forward_shape(&ModelSpec::mlp(784, &[128, 64], 10), 3),
        [3, 10]
    );
    assert_eq!(forward_shape(&ModelSpec::mnist_cnn(), 2), [2, 10]);
    assert_eq!(
        forward_shape(&ModelSpec::small_resnet([3, 16, 16], &[8, 16], 5), 2),
        [2, 5]
    );
    assert_eq!(
        forward_shape(&ModelSpec::transformer(50, 12, 16, 4, 2), 2),
        [2, 50]
    );
}

#[test]
fn mnist_cnn_has_the_literature_parameter_count() {
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), &ModelSpec::mnist_cnn()).unwrap();
    let count: i64 = net
        .parameters()
        .iter()
        .map(|p| p.tensor.numel() as i64)
        .sum();
    // conv 16·1·8·8+16, conv 32·16·4·4+32, fc 512·32+32, fc 32·10+10.
    assert_eq!(count, 1040 + 8224 + 16416 + 330);
    assert_eq!(net.parameters()[0].name, "layers.0.weight");
}

#[test]
fn specs_round_trip_through_json() {
    for spec in [
        ModelSpec::mnist_cnn(),
        ModelSpec::small_resnet([1, 8, 8], &[4], 2),
        ModelSpec::transformer(10, 4, 8, 2, 1),
    ] {
        let text = spec.to_json();
        assert_eq!(ModelSpec::from_json(&text).unwrap(), spec);
    }
    let unknown = r#"{"input_shape":[3],"layers":[{"kind":"linear","out":2},{"kind":"softmax"}]}"#;
    assert!(
        ModelSpec::from_json(unknown).is_err(),
        "unknown layers are rejected"
    );
    let ok = r#"{"input_shape":[3],"layers":[{"kind":"dropout","p":0.1},{"kind":"linear","out":2},
        {"kind":"activation","function":"tempered_sigmoid","scale":2,"temperature":2,"offset":1}]}"#;
    let spec = ModelSpec::from_json(ok).unwrap();
    assert_eq!(spec.init, Init::He);
    assert_eq!(forward_shape(&spec, 4), [4, 2]);
}

#[test]
fn inconsistent_specs_are_refused_with_reasons() {
    let bad = |layers: Vec<LayerSpec>, input_shape: Vec<i64>, input: InputKind| {
        let vs = VarStore::new(Device::Cpu);
        let spec = ModelSpec {
            input_shape,
            input,
            layers,
            init: Init::He,
            task: ModelTask::default(),
        };
        match build(&vs.root(), &spec) {
            Err(ModelError::InvalidSpec(why)) => why,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    };
    let why = bad(
        vec![LayerSpec::Conv2d {
            out_channels: 2,
            kernel: 9,
            stride: 1,
            padding: 0,
        }],
        vec![1, 4, 4],
        InputKind::Float,
    );
    assert!(why.contains("does not fit"), "{why}");
    let why = bad(
        vec![LayerSpec::GroupNorm { groups: 3 }],
        vec![4, 2, 2],
        InputKind::Float,
    );
    assert!(why.contains("divisible"), "{why}");
    let why = bad(
        vec![LayerSpec::Linear { out: 2, bias: true }],
        vec![5],
        InputKind::Tokens,
    );
    assert!(why.contains("Embedding"), "{why}");
    let why = bad(vec![], vec![2, 3], InputKind::Float);
    assert!(why.contains("one vector of logits"), "{why}");
    let why = bad(
        vec![LayerSpec::Dropout { p: 1.0 }],
        vec![3],
        InputKind::Float,
    );
    assert!(why.contains("Dropout"), "{why}");
}

#[test]
fn xavier_and_he_initialisations_have_their_scales() {
    let wide = |init| ModelSpec {
        input_shape: vec![400],
        input: InputKind::Float,
        layers: vec![LayerSpec::Linear {
            out: 600,
            bias: true,
        }],
        init,
        task: ModelTask::default(),
    };
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), &wide(Init::Xavier)).unwrap();
    let w = &net.parameters()[0].tensor;
    let bound = (6.0f64 / 1000.0).sqrt();
    assert!(w.abs().max().double_value(&[]) <= bound);
    let std = w.std(true).double_value(&[]);
    assert!(
        (std / (bound / 3f64.sqrt()) - 1.0).abs() < 0.02,
        "xavier std {std}"
    );
    assert_eq!(
        net.parameters()[1]
            .tensor
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );

    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), &wide(Init::He)).unwrap();
    let std = net.parameters()[0].tensor.std(true).double_value(&[]);
    assert!(
        (std / (2.0f64 / 400.0).sqrt() - 1.0).abs() < 0.02,
        "he std {std}"
    );
}

#[test]
fn frozen_parameters_stop_requiring_gradients() {
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), &ModelSpec::mlp(4, &[3], 2)).unwrap();
    assert_eq!(net.freeze("layers.0."), 2);
    let trainable: Vec<_> = net
        .parameters()
        .iter()
        .filter(|p| p.tensor.requires_grad())
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(trainable, ["layers.2.weight", "layers.2.bias"]);
}

#[test]
fn tempered_sigmoid_with_scale_two_temperature_two_is_tanh() {
    let x = Tensor::linspace(-3.0, 3.0, 13, (Kind::Double, Device::Cpu));
    let t = layers::apply_activation(
        Activation::TemperedSigmoid {
            scale: 2.0,
            temperature: 2.0,
            offset: 1.0,
        },
        &x,
    )
    .unwrap();
    assert!((t - x.tanh()).abs().max().double_value(&[]) < 1e-12);
}
