//! Privacy amounts as they travel on the wire.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A privacy-loss amount ε: finite and ≥ 0.
///
/// JSON has no NaN, but a peer can still send `1e999` (parsed as infinity) or a negative number;
/// either would make every budget comparison meaningless, so both are rejected when parsed.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Epsilon(f64);

/// ε was NaN, infinite or negative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvalidEpsilon(pub f64);

impl fmt::Display for InvalidEpsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epsilon must be a finite number >= 0, got {}", self.0)
    }
}

impl std::error::Error for InvalidEpsilon {}

impl Epsilon {
    /// Validates ε.
    pub fn new(e: f64) -> Result<Self, InvalidEpsilon> {
        if e.is_finite() && e >= 0.0 {
            Ok(Self(e))
        } else {
            Err(InvalidEpsilon(e))
        }
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Epsilon {
    type Error = InvalidEpsilon;
    fn try_from(e: f64) -> Result<Self, InvalidEpsilon> {
        Self::new(e)
    }
}

impl From<Epsilon> for f64 {
    fn from(e: Epsilon) -> f64 {
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_nan_infinity_and_negatives() {
        assert!(Epsilon::new(f64::NAN).is_err());
        assert!(Epsilon::new(f64::INFINITY).is_err());
        assert!(Epsilon::new(-0.1).is_err());
        assert_eq!(Epsilon::new(1.5).map(Epsilon::get), Ok(1.5));
        assert!(serde_json::from_str::<Epsilon>("1e999").is_err());
        assert!(serde_json::from_str::<Epsilon>("-1").is_err());
    }
}
