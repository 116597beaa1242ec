//! The fuzz cases that need `cohort-client` (and so link libtorch); see `cases.rs`.

use std::str::FromStr;

/// The client's safetensors loader (to a flat vector, without libtorch tensors).
pub fn safetensors_client(data: &[u8]) {
    if let Ok((layout, flat)) = cohort_client::weights::flat_from_safetensors(data) {
        assert_eq!(flat.len(), layout.len());
    }
}

/// The data-spec parser: an accepted spec prints in its canonical form, which parses back to
/// an equal spec and prints the same again.
pub fn data_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = cohort_client::data::DataSpec::from_str(text) else {
        return;
    };
    let canonical = spec.to_string();
    let again = cohort_client::data::DataSpec::from_str(&canonical)
        .unwrap_or_else(|e| panic!("{canonical:?} (from {text:?}) does not parse back: {e}"));
    assert_eq!(again, spec, "{text:?} -> {canonical:?}");
    assert_eq!(again.to_string(), canonical);
}
