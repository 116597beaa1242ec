//! Model weights as safetensors on the wire and as one flat f32 vector in the aggregator.
//!
//! The flattening order is fixed: tensors sorted by name, each in row-major order. Clients
//! flatten the same way, so element i of an update frame always means the same weight.

use std::fmt;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// The shape of a model: tensor names and shapes in flattening order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLayout {
    tensors: Vec<(String, Vec<usize>)>,
    num_params: usize,
}

/// Why weights were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError(pub String);

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModelError {}

impl ModelLayout {
    /// Reads the layout of safetensors bytes and checks that every tensor is f32 and finite.
    pub fn parse(bytes: &[u8]) -> Result<(Self, Vec<f32>), ModelError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| ModelError(format!("not a valid safetensors file: {e}")))?;
        let mut named = st.tensors();
        if named.is_empty() {
            return Err(ModelError("the safetensors file holds no tensors".into()));
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tensors = Vec::with_capacity(named.len());
        let mut values = Vec::new();
        for (name, view) in &named {
            if view.dtype() != Dtype::F32 {
                return Err(ModelError(format!(
                    "tensor {name:?} has dtype {:?}; model weights must be F32",
                    view.dtype()
                )));
            }
            tensors.push((name.clone(), view.shape().to_vec()));
            values.extend(
                view.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(ModelError(format!(
                "weight {i} (in flattening order) is NaN or infinite"
            )));
        }
        let num_params = values.len();
        Ok((
            Self {
                tensors,
                num_params,
            },
            values,
        ))
    }

    /// Parameters in the flattened vector.
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// Serialises a flat vector back into safetensors with this layout.
    pub fn serialize(&self, values: &[f32]) -> Result<Vec<u8>, ModelError> {
        if values.len() != self.num_params {
            return Err(ModelError(format!(
                "{} values for a model of {} parameters",
                values.len(),
                self.num_params
            )));
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut offset = 0;
        let mut views = Vec::with_capacity(self.tensors.len());
        for (name, shape) in &self.tensors {
            let n: usize = shape.iter().product();
            let view = TensorView::new(
                Dtype::F32,
                shape.clone(),
                &bytes[offset * 4..(offset + n) * 4],
            )
            .map_err(|e| ModelError(e.to_string()))?;
            views.push((name.as_str(), view));
            offset += n;
        }
        safetensors::tensor::serialize(views, None).map_err(|e| ModelError(e.to_string()))
    }
}

/// Builds a one-tensor safetensors file named `weights` (tests, benchmarks, examples).
pub fn single_tensor(values: &[f32]) -> Vec<u8> {
    let layout = ModelLayout {
        tensors: vec![("weights".into(), vec![values.len()])],
        num_params: values.len(),
    };
    layout.serialize(values).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_name_order() {
        let a: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [3.0f32].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = safetensors::tensor::serialize(
            vec![
                ("z", TensorView::new(Dtype::F32, vec![2], &a).unwrap()),
                ("a", TensorView::new(Dtype::F32, vec![1, 1], &b).unwrap()),
            ],
            None,
        )
        .unwrap();
        let (layout, values) = ModelLayout::parse(&bytes).unwrap();
        assert_eq!(values, vec![3.0, 1.0, 2.0]);
        let again = layout.serialize(&[9.0, 8.0, 7.0]).unwrap();
        let (_, v2) = ModelLayout::parse(&again).unwrap();
        assert_eq!(v2, vec![9.0, 8.0, 7.0]);
        assert!(layout.serialize(&[1.0]).is_err());
    }

    #[test]
    fn refuses_garbage_and_nan() {
        assert!(ModelLayout::parse(b"nope").is_err());
        assert!(ModelLayout::parse(&single_tensor(&[1.0, f32::NAN])).is_err());
        assert_eq!(
            ModelLayout::parse(&single_tensor(&[0.5; 4]))
                .unwrap()
                .0
                .num_params(),
            4
        );
    }
}
