//! Named models sized to a data set: what `cohort train --model NAME` builds.
//!
//! A preset fixes the architecture; the data set fixes the input shape and the number of
//! classes. Every preset is an ordinary [`ModelSpec`], so ghost clipping covers all of them and
//! the spec can be saved next to the weights.

use super::ModelError;
use super::spec::{InputKind, LayerSpec, ModelSpec};

/// The preset names [`preset`] accepts, with what each builds.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "mnist-cnn",
        "the tanh CNN of the DP-SGD literature for 1×28×28 images (26k parameters)",
    ),
    ("mlp", "two ReLU hidden layers of 512 and 256 units"),
    (
        "logistic",
        "one linear layer (multinomial logistic regression)",
    ),
    (
        "resnet",
        "a small ResNet with GroupNorm (widths 16, 32) for [C, H, W] images",
    ),
    (
        "transformer",
        "a 2-block Transformer encoder (width 64, 4 heads) for token windows (text data)",
    ),
];

fn names() -> String {
    PRESETS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn invalid(why: String) -> ModelError {
    ModelError::InvalidSpec(why)
}

/// The spec of preset `name` for examples of shape `input_shape` (without the batch
/// dimension), of kind `input`, with `classes` output classes.
///
/// Fails with [`ModelError::InvalidSpec`] for an unknown name (the message lists the known
/// ones) or a preset that does not fit the data (a CNN on a table, an MLP on tokens).
pub fn preset(
    name: &str,
    input_shape: &[i64],
    input: InputKind,
    classes: i64,
) -> Result<ModelSpec, ModelError> {
    if classes < 2 {
        return Err(invalid(format!(
            "a classifier needs at least 2 classes, the data has {classes}"
        )));
    }
    let float_only = |what: &str| -> Result<(), ModelError> {
        if input == InputKind::Tokens {
            Err(invalid(format!(
                "{what} needs real-valued features, but the data holds token ids; use \
                 `transformer` for text"
            )))
        } else {
            Ok(())
        }
    };
    let mut spec = match name {
        "mnist-cnn" => {
            float_only("mnist-cnn")?;
            if input_shape != [1, 28, 28] {
                return Err(invalid(format!(
                    "mnist-cnn needs 1×28×28 images, but the examples have shape \
                     {input_shape:?}"
                )));
            }
            ModelSpec::mnist_cnn()
        }
        "mlp" | "logistic" => {
            float_only(name)?;
            let inputs: i64 = input_shape.iter().product();
            let hidden: &[i64] = if name == "mlp" { &[512, 256] } else { &[] };
            let mut spec = ModelSpec::mlp(inputs, hidden, classes);
            if input_shape.len() > 1 {
                spec.layers.insert(0, LayerSpec::Flatten);
                spec.input_shape = input_shape.to_vec();
            }
            spec
        }
        "resnet" => {
            float_only("resnet")?;
            match *input_shape {
                [c, h, w] => ModelSpec::small_resnet([c, h, w], &[16, 32], classes),
                _ => {
                    return Err(invalid(format!(
                        "resnet needs [C, H, W] images, but the examples have shape \
                         {input_shape:?}"
                    )));
                }
            }
        }
        "transformer" => match (input, input_shape) {
            (InputKind::Tokens, [sequence]) => ModelSpec::transformer(classes, *sequence, 64, 4, 2),
            _ => {
                return Err(invalid(format!(
                    "transformer needs token windows (a `text:` data set), but the examples \
                     have shape {input_shape:?}"
                )));
            }
        },
        other => {
            return Err(invalid(format!(
                "unknown model `{other}`; presets are {} (or give a .json model spec or a .pt \
                 TorchScript file)",
                names()
            )));
        }
    };
    // The presets end in a Linear head: size it to the data's classes.
    if let Some(LayerSpec::Linear { out, .. }) = spec.layers.last_mut() {
        *out = classes;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{self, Tape};
    use tch::{Device, Kind, Tensor};

    fn logits_shape(spec: &ModelSpec, batch: i64) -> Vec<i64> {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let net = model::build(&vs.root(), spec).unwrap();
        let mut shape = vec![batch];
        shape.extend_from_slice(&spec.input_shape);
        let x = match spec.input {
            InputKind::Float => Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu)),
            InputKind::Tokens => Tensor::zeros(shape.as_slice(), (Kind::Int64, Device::Cpu)),
        };
        net.forward_t(&x, false, &mut Tape::off()).unwrap().size()
    }

    #[test]
    fn every_preset_builds_for_data_it_fits_with_one_logit_per_class() {
        let image = [1, 28, 28];
        for (name, _) in PRESETS {
            let (shape, kind, classes): (&[i64], _, _) = match *name {
                "transformer" => (&[12], InputKind::Tokens, 20),
                "resnet" => (&[3, 8, 8], InputKind::Float, 4),
                _ => (&image, InputKind::Float, 10),
            };
            let spec = preset(name, shape, kind, classes).unwrap();
            assert_eq!(logits_shape(&spec, 2), [2, classes], "{name}");
        }
        let table = preset("mlp", &[30], InputKind::Float, 2).unwrap();
        assert_eq!(logits_shape(&table, 3), [3, 2]);
        assert!(!table.layers.contains(&LayerSpec::Flatten));
    }

    #[test]
    fn presets_that_do_not_fit_the_data_are_refused_with_the_reason() {
        let cases = [
            ("mnist-cnn", vec![30], InputKind::Float, "1×28×28"),
            ("mlp", vec![16], InputKind::Tokens, "transformer"),
            ("resnet", vec![30], InputKind::Float, "[C, H, W]"),
            ("transformer", vec![1, 28, 28], InputKind::Float, "token"),
            ("vgg", vec![30], InputKind::Float, "presets are"),
        ];
        for (name, shape, kind, needle) in cases {
            let message = preset(name, &shape, kind, 10).unwrap_err().to_string();
            assert!(message.contains(needle), "{name}: {message}");
        }
        assert!(preset("mlp", &[30], InputKind::Float, 1).is_err());
    }
}
