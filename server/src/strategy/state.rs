//! A small binary codec for strategy state (optimiser moment vectors).
//!
//! Layout (little-endian): magic `COHORTSS`, format version `u8` = 1, strategy name length
//! `u8` and UTF-8 bytes, vector count `u32`, then per vector a length `u64` and that many
//! `f64`. Binary rather than JSON because moments are model-sized (8 MB per million
//! parameters); the name guards against resuming one strategy's state in another.

use super::StrategyError;

const MAGIC: &[u8; 8] = b"COHORTSS";
const FORMAT: u8 = 1;

/// Encodes named vectors.
pub fn encode(name: &str, vectors: &[&[f64]]) -> Vec<u8> {
    let total: usize = vectors.iter().map(|v| 8 + 8 * v.len()).sum();
    let mut out = Vec::with_capacity(8 + 2 + name.len() + 4 + total);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&name.as_bytes()[..name.len().min(255)]);
    out.extend_from_slice(&(vectors.len() as u32).to_le_bytes());
    for v in vectors {
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        for x in v.iter() {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StrategyError> {
        if self.bytes.len() < n {
            return Err(StrategyError::BadState("truncated".to_owned()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StrategyError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// Decodes vectors written by [`encode`] for strategy `name`, each of length `len`.
pub fn decode(
    name: &str,
    len: usize,
    count: usize,
    bytes: &[u8],
) -> Result<Vec<Vec<f64>>, StrategyError> {
    let mut r = Reader { bytes };
    if r.take(8)? != MAGIC || r.array::<1>()?[0] != FORMAT {
        return Err(StrategyError::BadState(
            "not Cohort strategy state".to_owned(),
        ));
    }
    let name_len = usize::from(r.array::<1>()?[0]);
    if r.take(name_len)? != name.as_bytes() {
        return Err(StrategyError::BadState(format!(
            "state belongs to another strategy than {name}"
        )));
    }
    let n = u32::from_le_bytes(r.array()?) as usize;
    if n != count {
        return Err(StrategyError::BadState(format!(
            "expected {count} vectors, found {n}"
        )));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let l = u64::from_le_bytes(r.array()?);
        if l != len as u64 {
            return Err(StrategyError::BadState(format!(
                "vector of length {l}, model has {len}"
            )));
        }
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            let x = f64::from_le_bytes(r.array()?);
            if !x.is_finite() {
                return Err(StrategyError::BadState("non-finite value".to_owned()));
            }
            v.push(x);
        }
        out.push(v);
    }
    if !r.bytes.is_empty() {
        return Err(StrategyError::BadState("trailing bytes".to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let bytes = encode("fed_adam", &[&[1.0, -2.0], &[0.5, 0.25]]);
        assert_eq!(
            decode("fed_adam", 2, 2, &bytes).unwrap(),
            vec![vec![1.0, -2.0], vec![0.5, 0.25]]
        );
        assert!(decode("fed_yogi", 2, 2, &bytes).is_err());
        assert!(decode("fed_adam", 3, 2, &bytes).is_err());
        assert!(decode("fed_adam", 2, 1, &bytes).is_err());
        assert!(decode("fed_adam", 2, 2, &bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode("fed_adam", 2, 2, &extra).is_err());
    }
}
