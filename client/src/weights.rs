//! Model weights ↔ safetensors, and ↔ one flat `f32` vector for aggregation.
//!
//! # The flat parameter order
//! A model's parameters are laid end to end in one `Vec<f32>`:
//! 1. tensors in ascending order of their variable name, compared as byte strings (Rust's
//!    `str` ordering; tch names variables by path with `.` separators, e.g. `conv1.weight`);
//! 2. each tensor's elements in row-major (C) order of its shape; a scalar is one element.
//!
//! [`ParameterLayout`] records each tensor's name, shape and offset in that vector. The order
//! depends only on names and shapes, never on construction order or hash-map iteration, so
//! every client and the server agree on it given the same model spec. The same order is what
//! a safetensors file with these tensors lists when its names are sorted, so the flat vector
//! can also be computed from safetensors bytes without libtorch ([`flat_from_safetensors`]).
//!
//! # Loading is all-or-nothing
//! Every loader checks the whole input — names, shapes, dtypes, length, and that every value
//! is finite — before writing a single variable. A rejected update leaves the model untouched;
//! a NaN from a faulty or malicious peer never reaches training.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

#[cfg(target_endian = "big")]
compile_error!("weights.rs copies tensor bytes as little-endian safetensors data");

/// Why weights could not be exported or loaded. Callers should show the message; variants may
/// be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// The bytes are not a valid safetensors file.
    #[error("not a valid safetensors file: {0}")]
    Format(#[from] safetensors::SafeTensorError),
    /// The input lacks tensors the model has.
    #[error("the weights lack tensors the model has: {}", names.join(", "))]
    MissingTensors {
        /// Model variables absent from the input.
        names: Vec<String>,
    },
    /// The input has tensors the model does not.
    #[error("the weights have tensors the model does not: {}", names.join(", "))]
    UnexpectedTensors {
        /// Input tensors that match no model variable.
        names: Vec<String>,
    },
    /// A tensor's shape differs from the model variable's.
    #[error("tensor `{name}` has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// The tensor.
        name: String,
        /// The model variable's shape.
        expected: Vec<i64>,
        /// The input's shape.
        found: Vec<i64>,
    },
    /// A tensor's element type differs from the model variable's, or is not supported.
    #[error("tensor `{name}` is {found}, expected {expected}")]
    DtypeMismatch {
        /// The tensor.
        name: String,
        /// What was required.
        expected: String,
        /// What was found.
        found: String,
    },
    /// A flat vector's length differs from the layout's.
    #[error("flat vector has {found} values, the model has {expected} parameters")]
    LengthMismatch {
        /// Parameters in the layout.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A value is NaN or infinite.
    #[error("tensor `{name}` holds a non-finite value (NaN or ±inf) at element {index}")]
    NonFinite {
        /// The tensor.
        name: String,
        /// Row-major element index within the tensor.
        index: usize,
    },
    /// A weights file could not be read or written.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// libtorch refused a tensor operation.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] tch::TchError),
}

/// One tensor's place in the flat vector.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayoutEntry {
    /// Variable name.
    pub name: String,
    /// Shape (row-major).
    pub shape: Vec<i64>,
    /// Index of the tensor's first element in the flat vector.
    pub offset: usize,
    /// Number of elements (the product of `shape`; 1 for a scalar).
    pub numel: usize,
}

/// The flat parameter order of a model; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ParameterLayout {
    entries: Vec<LayoutEntry>,
    total: usize,
}

fn numel_of(shape: &[i64]) -> usize {
    shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .product()
}

impl ParameterLayout {
    /// The layout of named shapes: sorted by name, offsets assigned in that order.
    pub fn from_shapes<I, S>(shapes: I) -> Self
    where
        I: IntoIterator<Item = (S, Vec<i64>)>,
        S: Into<String>,
    {
        let sorted: BTreeMap<String, Vec<i64>> =
            shapes.into_iter().map(|(n, s)| (n.into(), s)).collect();
        let mut total = 0;
        let entries = sorted
            .into_iter()
            .map(|(name, shape)| {
                let numel = numel_of(&shape);
                let entry = LayoutEntry {
                    name,
                    shape,
                    offset: total,
                    numel,
                };
                total += numel;
                entry
            })
            .collect();
        Self { entries, total }
    }

    /// The layout of every variable in `store` (trainable, frozen and buffers alike).
    pub fn of(store: &VarStore) -> Self {
        Self::from_shapes(
            store
                .variables()
                .into_iter()
                .map(|(name, tensor)| (name, tensor.size())),
        )
    }

    /// The layout of the variables of `store` that require gradients: what federated
    /// averaging should exchange when some layers are frozen for fine-tuning.
    pub fn trainable(store: &VarStore) -> Self {
        Self::from_shapes(
            store
                .variables()
                .into_iter()
                .filter(|(_, tensor)| tensor.requires_grad())
                .map(|(name, tensor)| (name, tensor.size())),
        )
    }

    /// Tensors in flat order.
    pub fn entries(&self) -> &[LayoutEntry] {
        &self.entries
    }

    /// Total number of parameters (the flat vector's length).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the layout holds no parameters.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The entry of a named tensor.
    pub fn get(&self, name: &str) -> Option<&LayoutEntry> {
        self.entries
            .binary_search_by(|entry| entry.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

fn kind_name(kind: Kind) -> String {
    format!("{kind:?}")
}

/// The variables of `store` named in `layout`, checked to have the layout's shapes and `Float`.
fn float_variables<'a>(
    store: &VarStore,
    layout: &'a ParameterLayout,
) -> Result<Vec<(&'a LayoutEntry, Tensor)>, WeightsError> {
    let mut variables = store.variables();
    let missing: Vec<String> = layout
        .entries
        .iter()
        .filter(|e| !variables.contains_key(&e.name))
        .map(|e| e.name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(WeightsError::MissingTensors { names: missing });
    }
    layout
        .entries
        .iter()
        .map(|entry| {
            let tensor =
                variables
                    .remove(&entry.name)
                    .ok_or_else(|| WeightsError::MissingTensors {
                        names: vec![entry.name.clone()],
                    })?;
            if tensor.size() != entry.shape {
                return Err(WeightsError::ShapeMismatch {
                    name: entry.name.clone(),
                    expected: entry.shape.clone(),
                    found: tensor.size(),
                });
            }
            let kind = tensor.f_kind()?;
            if kind != Kind::Float {
                return Err(WeightsError::DtypeMismatch {
                    name: entry.name.clone(),
                    expected: "Float (f32), as the flat vector is f32".to_owned(),
                    found: kind_name(kind),
                });
            }
            Ok((entry, tensor))
        })
        .collect()
}

/// All variables of `store` as one flat vector in [`ParameterLayout::of`] order.
pub fn flatten(store: &VarStore) -> Result<Vec<f32>, WeightsError> {
    flatten_with(store, &ParameterLayout::of(store))
}

/// The variables named in `layout` as one flat vector in that layout's order.
pub fn flatten_with(store: &VarStore, layout: &ParameterLayout) -> Result<Vec<f32>, WeightsError> {
    let mut flat = vec![0f32; layout.len()];
    for (entry, tensor) in float_variables(store, layout)? {
        let host = tensor.f_detach()?.f_to_device(Device::Cpu)?;
        host.f_copy_data(
            &mut flat[entry.offset..entry.offset + entry.numel],
            entry.numel,
        )?;
    }
    Ok(flat)
}

/// The first non-finite value of each layout tensor in `flat`, if any.
fn check_finite(layout: &ParameterLayout, flat: &[f32]) -> Result<(), WeightsError> {
    match flat.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(at) => {
            let entry = layout
                .entries
                .iter()
                .find(|e| at >= e.offset && at < e.offset + e.numel);
            Err(WeightsError::NonFinite {
                name: entry.map_or_else(String::new, |e| e.name.clone()),
                index: entry.map_or(at, |e| at - e.offset),
            })
        }
    }
}

/// Loads a flat vector (in [`ParameterLayout::of`] order) into every variable of `store`.
pub fn load_flat(store: &mut VarStore, flat: &[f32]) -> Result<(), WeightsError> {
    let layout = ParameterLayout::of(store);
    load_flat_with(store, &layout, flat)
}

/// Loads a flat vector in `layout`'s order into the variables `layout` names; variables not in
/// the layout are left alone. Nothing is written unless the whole vector is valid.
pub fn load_flat_with(
    store: &mut VarStore,
    layout: &ParameterLayout,
    flat: &[f32],
) -> Result<(), WeightsError> {
    if flat.len() != layout.len() {
        return Err(WeightsError::LengthMismatch {
            expected: layout.len(),
            found: flat.len(),
        });
    }
    check_finite(layout, flat)?;
    let targets = float_variables(store, layout)?;
    tch::no_grad(|| {
        for (entry, mut variable) in targets {
            let source = Tensor::f_from_slice(&flat[entry.offset..entry.offset + entry.numel])?
                .f_view(entry.shape.as_slice())?
                .f_to_device(variable.device())?;
            variable.f_copy_(&source)?;
        }
        Ok(())
    })
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    match kind {
        Kind::Float => Some(Dtype::F32),
        Kind::Double => Some(Dtype::F64),
        Kind::Half => Some(Dtype::F16),
        Kind::BFloat16 => Some(Dtype::BF16),
        _ => None,
    }
}

fn shape_usize(shape: &[i64]) -> Vec<usize> {
    shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .collect()
}

fn shape_i64(shape: &[usize]) -> Vec<i64> {
    shape
        .iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect()
}

/// Every variable of `store` as safetensors bytes (floating-point variables only: f32, f64,
/// f16, bf16, each stored in its own dtype).
pub fn to_safetensors(store: &VarStore) -> Result<Vec<u8>, WeightsError> {
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let sorted: BTreeMap<String, Tensor> = store.variables().into_iter().collect();
    for (name, tensor) in sorted {
        let kind = tensor.f_kind()?;
        let dtype = dtype_of(kind).ok_or_else(|| WeightsError::DtypeMismatch {
            name: name.clone(),
            expected: "a floating-point kind (Float, Double, Half, BFloat16)".to_owned(),
            found: kind_name(kind),
        })?;
        let numel = tensor.numel();
        let mut bytes = vec![0u8; numel * kind.elt_size_in_bytes()];
        let host = tensor.f_detach()?.f_to_device(Device::Cpu)?;
        host.f_copy_data_u8(&mut bytes, numel)?;
        buffers.push((name, dtype, shape_usize(&tensor.size()), bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((
                name.as_str(),
                TensorView::new(*dtype, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, WeightsError>>()?;
    Ok(safetensors::serialize(views, None)?)
}

/// Loads safetensors bytes into `store`. The file must hold exactly the store's variables, each
/// with the variable's shape and dtype and only finite values; otherwise nothing is written.
pub fn load_safetensors(store: &mut VarStore, bytes: &[u8]) -> Result<(), WeightsError> {
    let file = SafeTensors::deserialize(bytes)?;
    let variables: HashMap<String, Tensor> = store.variables();
    let in_file: BTreeSet<&str> = file.iter().map(|(name, _)| name).collect();
    let in_model: BTreeSet<&str> = variables.keys().map(String::as_str).collect();
    let missing: Vec<String> = in_model
        .difference(&in_file)
        .map(|s| (*s).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(WeightsError::MissingTensors { names: missing });
    }
    let unexpected: Vec<String> = in_file
        .difference(&in_model)
        .map(|s| (*s).to_owned())
        .collect();
    if !unexpected.is_empty() {
        return Err(WeightsError::UnexpectedTensors { names: unexpected });
    }
    let mut staged = Vec::with_capacity(variables.len());
    for (name, view) in file.iter() {
        let Some(variable) = variables.get(name) else {
            continue; // unreachable: the name sets are equal
        };
        let kind = variable.f_kind()?;
        if dtype_of(kind) != Some(view.dtype()) {
            return Err(WeightsError::DtypeMismatch {
                name: name.to_owned(),
                expected: format!("{kind:?}"),
                found: format!("{:?}", view.dtype()),
            });
        }
        let found = shape_i64(view.shape());
        if found != variable.size() {
            return Err(WeightsError::ShapeMismatch {
                name: name.to_owned(),
                expected: variable.size(),
                found,
            });
        }
        // safetensors has checked that the data length is shape × dtype size; check again,
        // since `from_data_size` reads exactly that many bytes.
        if view.data().len() != variable.numel() * kind.elt_size_in_bytes() {
            return Err(WeightsError::LengthMismatch {
                expected: variable.numel(),
                found: view.data().len() / kind.elt_size_in_bytes().max(1),
            });
        }
        let tensor = Tensor::f_from_data_size(view.data(), &found, kind)?;
        let finite = tensor.f_isfinite()?;
        if finite.f_all()?.f_int64_value(&[])? == 0 {
            let bad = finite
                .f_logical_not()?
                .f_to_kind(Kind::Uint8)?
                .f_view([-1])?
                .f_argmax(0, false)?;
            return Err(WeightsError::NonFinite {
                name: name.to_owned(),
                index: usize::try_from(bad.f_int64_value(&[])?).unwrap_or(0),
            });
        }
        staged.push((variable.shallow_clone(), tensor));
    }
    tch::no_grad(|| {
        for (mut variable, tensor) in staged {
            variable.f_copy_(&tensor.f_to_device(variable.device())?)?;
        }
        Ok(())
    })
}

/// Writes [`to_safetensors`] to a file (via a temporary file and rename, so a crash never
/// leaves a half-written model behind).
pub fn save_safetensors_file(store: &VarStore, path: &Path) -> Result<(), WeightsError> {
    let bytes = to_safetensors(store)?;
    let io = |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, &bytes).map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

/// Reads a safetensors file and loads it with [`load_safetensors`].
pub fn load_safetensors_file(store: &mut VarStore, path: &Path) -> Result<(), WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_safetensors(store, &bytes)
}

/// The flat vector and layout of safetensors bytes whose tensors are all `F32`, without
/// libtorch: what an aggregator needs from a model file.
pub fn flat_from_safetensors(bytes: &[u8]) -> Result<(ParameterLayout, Vec<f32>), WeightsError> {
    let file = SafeTensors::deserialize(bytes)?;
    let mut views: Vec<(&str, TensorView<'_>)> = file.iter().collect();
    views.sort_by(|a, b| a.0.cmp(b.0));
    for (name, view) in &views {
        if view.dtype() != Dtype::F32 {
            return Err(WeightsError::DtypeMismatch {
                name: (*name).to_owned(),
                expected: "F32".to_owned(),
                found: format!("{:?}", view.dtype()),
            });
        }
    }
    let layout = ParameterLayout::from_shapes(
        views
            .iter()
            .map(|(name, view)| (*name, shape_i64(view.shape()))),
    );
    let mut flat = Vec::with_capacity(layout.len());
    for (_, view) in &views {
        flat.extend(
            view.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    if flat.len() != layout.len() {
        return Err(WeightsError::LengthMismatch {
            expected: layout.len(),
            found: flat.len(),
        });
    }
    check_finite(&layout, &flat)?;
    Ok((layout, flat))
}

/// Safetensors bytes (all `F32`) of a flat vector in `layout`'s order, without libtorch.
pub fn safetensors_from_flat(
    layout: &ParameterLayout,
    flat: &[f32],
) -> Result<Vec<u8>, WeightsError> {
    if flat.len() != layout.len() {
        return Err(WeightsError::LengthMismatch {
            expected: layout.len(),
            found: flat.len(),
        });
    }
    check_finite(layout, flat)?;
    let buffers: Vec<Vec<u8>> = layout
        .entries
        .iter()
        .map(|e| {
            flat[e.offset..e.offset + e.numel]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let views = layout
        .entries
        .iter()
        .zip(&buffers)
        .map(|(e, bytes)| {
            Ok((
                e.name.as_str(),
                TensorView::new(Dtype::F32, shape_usize(&e.shape), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, WeightsError>>()?;
    Ok(safetensors::serialize(views, None)?)
}

#[cfg(test)]
#[path = "weights_tests.rs"]
mod tests;
