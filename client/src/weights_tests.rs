use super::*;
use proptest::prelude::*;

/// Adds a variable under a dotted path (`segment.segment.name`), which tch builds from
/// sub-paths (a plain name may not contain `.`).
fn add(store: &VarStore, path: &str, tensor: Tensor, trainable: bool) {
    let mut segments: Vec<&str> = path.split('.').collect();
    let name = segments.pop().unwrap();
    let mut at = store.root();
    for segment in segments {
        at = at / segment;
    }
    let _ = at.add(name, tensor, trainable);
}

/// A store holding `(path, shape)` variables filled with `0, 1, 2, …` in creation order.
fn store_with(vars: &[(&str, &[i64])]) -> VarStore {
    let store = VarStore::new(Device::Cpu);
    let mut next = 0.0f32;
    for (path, shape) in vars {
        let numel = numel_of(shape);
        let values: Vec<f32> = (0..numel).map(|i| next + i as f32).collect();
        next += numel as f32;
        add(&store, path, Tensor::from_slice(&values).view(*shape), true);
    }
    store
}

fn zeros_like(store: &VarStore) -> VarStore {
    let fresh = VarStore::new(Device::Cpu);
    for (name, tensor) in store.variables() {
        let zeros = Tensor::zeros(tensor.size(), (Kind::Float, Device::Cpu));
        add(&fresh, &name, zeros, tensor.requires_grad());
    }
    fresh
}

#[test]
fn flat_order_is_by_name_then_row_major() {
    // Created out of order; "b.bias" < "b.w" bytewise, and "a" first.
    let store = store_with(&[("b.w", &[2, 3]), ("a", &[4]), ("b.bias", &[2]), ("s", &[])]);
    let layout = ParameterLayout::of(&store);
    let names: Vec<&str> = layout.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b.bias", "b.w", "s"]);
    assert_eq!(layout.get("b.w").map(|e| (e.offset, e.numel)), Some((6, 6)));
    assert_eq!(layout.len(), 13);
    let flat = flatten(&store).unwrap();
    // Values were assigned in creation order: b.w = 0..6, a = 6..10, b.bias = 10..12, s = 12.
    let expected: Vec<f32> = [
        6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 12.0,
    ]
    .to_vec();
    assert_eq!(flat, expected);
    // Row-major: b.w[1][0] is element 3 of the tensor.
    assert_eq!(
        flat[6 + 3],
        store.variables()["b.w"].double_value(&[1, 0]) as f32
    );
}

#[test]
fn load_flat_round_trips_and_validates() {
    let store = store_with(&[("layer.weight", &[3, 2]), ("layer.bias", &[3])]);
    let flat = flatten(&store).unwrap();
    let mut fresh = zeros_like(&store);
    load_flat(&mut fresh, &flat).unwrap();
    assert_eq!(flatten(&fresh).unwrap(), flat);

    let mut fresh = zeros_like(&store);
    let err = load_flat(&mut fresh, &flat[1..]).unwrap_err();
    assert!(
        matches!(
            err,
            WeightsError::LengthMismatch {
                expected: 9,
                found: 8
            }
        ),
        "{err:?}"
    );

    let mut poisoned = flat.clone();
    poisoned[5] = f32::NAN;
    let err = load_flat(&mut fresh, &poisoned).unwrap_err();
    // Element 5 is layer.weight[2] (layer.bias holds elements 0..3).
    assert!(
        matches!(&err, WeightsError::NonFinite { name, index: 2 } if name == "layer.weight"),
        "{err:?}"
    );
    assert!(
        flatten(&fresh).unwrap().iter().all(|&v| v == 0.0),
        "a rejected load wrote values"
    );
    poisoned[5] = f32::INFINITY;
    assert!(load_flat(&mut fresh, &poisoned).is_err());
}

#[test]
fn loading_keeps_gradient_tracking_and_works_in_place() {
    let store = store_with(&[("w", &[2])]);
    let mut fresh = zeros_like(&store);
    let before = fresh.variables()["w"].shallow_clone();
    load_flat(&mut fresh, &[3.0, 4.0]).unwrap();
    // The same tensor (the one a model holds) sees the new values.
    assert_eq!(Vec::<f32>::try_from(&before).unwrap(), vec![3.0, 4.0]);
    assert!(before.requires_grad());
}

#[test]
fn trainable_layout_skips_frozen_variables() {
    let store = store_with(&[("head.w", &[2])]);
    let _ = store.root().sub("body").zeros_no_train("w", &[3]);
    assert_eq!(ParameterLayout::of(&store).len(), 5);
    let trainable = ParameterLayout::trainable(&store);
    assert_eq!(trainable.len(), 2);
    let mut store = store;
    load_flat_with(&mut store, &trainable, &[7.0, 8.0]).unwrap();
    assert_eq!(flatten(&store).unwrap(), vec![0.0, 0.0, 0.0, 7.0, 8.0]);
}

#[test]
fn non_float_variables_are_refused_by_the_flat_codec() {
    let store = VarStore::new(Device::Cpu);
    add(
        &store,
        "d",
        Tensor::zeros([2], (Kind::Double, Device::Cpu)),
        true,
    );
    let err = flatten(&store).unwrap_err();
    assert!(matches!(err, WeightsError::DtypeMismatch { .. }), "{err:?}");
}

#[test]
fn safetensors_round_trip_and_interoperates_with_tch() {
    let store = store_with(&[
        ("conv.weight", &[2, 1, 3, 3]),
        ("conv.bias", &[2]),
        ("fc.w", &[4, 2]),
    ]);
    let bytes = to_safetensors(&store).unwrap();
    let mut fresh = zeros_like(&store);
    load_safetensors(&mut fresh, &bytes).unwrap();
    assert_eq!(flatten(&fresh).unwrap(), flatten(&store).unwrap());

    // Another implementation (tch's own reader, safetensors 0.3) reads our file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    save_safetensors_file(&store, &path).unwrap();
    let read = Tensor::read_safetensors(&path).unwrap();
    assert_eq!(read.len(), 3);
    for (name, tensor) in read {
        assert!(tensor.equal(&store.variables()[&name]), "{name}");
    }
    // And we read tch's.
    let theirs = dir.path().join("theirs.safetensors");
    store.save(&theirs).unwrap();
    let mut fresh = zeros_like(&store);
    load_safetensors_file(&mut fresh, &theirs).unwrap();
    assert_eq!(flatten(&fresh).unwrap(), flatten(&store).unwrap());
}

#[test]
fn safetensors_loading_rejects_mismatches_without_writing() {
    let store = store_with(&[("a", &[2]), ("b", &[3])]);
    let bytes = to_safetensors(&store).unwrap();

    let fewer = store_with(&[("a", &[2])]);
    let err = load_safetensors(&mut zeros_like(&fewer), &bytes).unwrap_err();
    assert!(
        matches!(&err, WeightsError::UnexpectedTensors { names } if names == &["b"]),
        "{err:?}"
    );

    let more = store_with(&[("a", &[2]), ("b", &[3]), ("c", &[1])]);
    let err = load_safetensors(&mut zeros_like(&more), &bytes).unwrap_err();
    assert!(
        matches!(&err, WeightsError::MissingTensors { names } if names == &["c"]),
        "{err:?}"
    );

    let reshaped = store_with(&[("a", &[2]), ("b", &[1, 3])]);
    let mut target = zeros_like(&reshaped);
    let err = load_safetensors(&mut target, &bytes).unwrap_err();
    assert!(
        matches!(&err, WeightsError::ShapeMismatch { name, .. } if name == "b"),
        "{err:?}"
    );
    assert!(
        flatten(&target).unwrap().iter().all(|&v| v == 0.0),
        "a rejected load wrote `a`"
    );

    let doubles = VarStore::new(Device::Cpu);
    add(
        &doubles,
        "a",
        Tensor::zeros([2], (Kind::Double, Device::Cpu)),
        true,
    );
    add(
        &doubles,
        "b",
        Tensor::zeros([3], (Kind::Double, Device::Cpu)),
        true,
    );
    let mut doubles = doubles;
    let err = load_safetensors(&mut doubles, &bytes).unwrap_err();
    assert!(matches!(err, WeightsError::DtypeMismatch { .. }), "{err:?}");

    let err = load_safetensors(&mut zeros_like(&store), b"definitely not safetensors").unwrap_err();
    assert!(matches!(err, WeightsError::Format(_)), "{err:?}");
}

#[test]
fn safetensors_with_nan_is_rejected_naming_the_element() {
    let layout = ParameterLayout::from_shapes([("a", vec![2]), ("b", vec![2, 2])]);
    // Write the poisoned file by hand: our own writers refuse non-finite values.
    let values = [1.0f32, 2.0, 3.0, 4.0, f32::NEG_INFINITY, 6.0];
    let a: Vec<u8> = values[..2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let b: Vec<u8> = values[2..].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = safetensors::serialize(
        [
            ("a", TensorView::new(Dtype::F32, vec![2], &a).unwrap()),
            ("b", TensorView::new(Dtype::F32, vec![2, 2], &b).unwrap()),
        ],
        None,
    )
    .unwrap();
    let store = store_with(&[("a", &[2]), ("b", &[2, 2])]);
    let mut target = zeros_like(&store);
    let err = load_safetensors(&mut target, &bytes).unwrap_err();
    assert!(
        matches!(&err, WeightsError::NonFinite { name, index: 2 } if name == "b"),
        "{err:?}"
    );
    let err = flat_from_safetensors(&bytes).unwrap_err();
    assert!(
        matches!(&err, WeightsError::NonFinite { name, index: 2 } if name == "b"),
        "{err:?}"
    );
    assert!(safetensors_from_flat(&layout, &values).is_err());
}

#[test]
fn flat_vector_from_safetensors_matches_the_store() {
    let store = store_with(&[("z", &[3]), ("m.k", &[2, 2]), ("a", &[1])]);
    let (layout, flat) = flat_from_safetensors(&to_safetensors(&store).unwrap()).unwrap();
    assert_eq!(layout, ParameterLayout::of(&store));
    assert_eq!(flat, flatten(&store).unwrap());
}

/// Random models: up to 5 distinctly named tensors of rank 0–3.
fn model() -> impl Strategy<Value = Vec<(String, Vec<i64>, Vec<f32>)>> {
    prop::collection::btree_map(
        "[a-c]{1,3}(\\.[a-c]{1,2})?",
        prop::collection::vec(1i64..4, 0..4),
        1..5,
    )
    .prop_flat_map(|shapes| {
        let shapes: Vec<(String, Vec<i64>)> = shapes.into_iter().collect();
        let values: Vec<_> = shapes
            .iter()
            .map(|(_, shape)| prop::collection::vec(-1e6f32..1e6, numel_of(shape)))
            .collect();
        (Just(shapes), values)
    })
    .prop_map(|(shapes, values)| {
        shapes
            .into_iter()
            .zip(values)
            .map(|((name, shape), values)| (name, shape, values))
            .collect()
    })
}

fn build(model: &[(String, Vec<i64>, Vec<f32>)]) -> VarStore {
    let store = VarStore::new(Device::Cpu);
    for (name, shape, values) in model {
        add(
            &store,
            name,
            Tensor::from_slice(values).view(shape.as_slice()),
            true,
        );
    }
    store
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn flat_vector_round_trip(model in model()) {
        // A name that is a prefix path of another ("a" and "a.b") is legal in a VarStore.
        let store = build(&model);
        let flat = flatten(&store).unwrap();
        let mut expected = model.clone();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        let concatenated: Vec<f32> = expected.into_iter().flat_map(|(_, _, v)| v).collect();
        prop_assert_eq!(&flat, &concatenated);
        let mut fresh = zeros_like(&store);
        load_flat(&mut fresh, &flat).unwrap();
        prop_assert_eq!(flatten(&fresh).unwrap(), flat);
    }

    #[test]
    fn safetensors_round_trip(model in model()) {
        let store = build(&model);
        let bytes = to_safetensors(&store).unwrap();
        let mut fresh = zeros_like(&store);
        load_safetensors(&mut fresh, &bytes).unwrap();
        prop_assert_eq!(flatten(&fresh).unwrap(), flatten(&store).unwrap());
        let (layout, flat) = flat_from_safetensors(&bytes).unwrap();
        prop_assert_eq!(&layout, &ParameterLayout::of(&store));
        let again = safetensors_from_flat(&layout, &flat).unwrap();
        prop_assert_eq!(flat_from_safetensors(&again).unwrap().1, flat);
    }
}
