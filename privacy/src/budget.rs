//! The (ε, δ) unit that every accountant, ledger entry and release is charged in.

use serde::{Deserialize, Serialize};

/// A validated (ε, δ) differential-privacy guarantee or budget.
///
/// Fields are private so that NaN, negative ε or δ outside [0, 1) can never reach a ledger:
/// a budget that cannot be trusted must fail at the boundary, not silently compare as "fits".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawEpsDelta", into = "RawEpsDelta")]
pub struct EpsDelta {
    epsilon: f64,
    delta: f64,
}

#[derive(Serialize, Deserialize)]
struct RawEpsDelta {
    epsilon: f64,
    delta: f64,
}

/// Why an (ε, δ) pair was rejected.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum InvalidEpsDelta {
    /// ε was NaN, infinite or negative.
    Epsilon(f64),
    /// δ was NaN or outside [0, 1).
    Delta(f64),
}

impl std::fmt::Display for InvalidEpsDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Epsilon(e) => write!(f, "epsilon must be a finite number >= 0, got {e}"),
            Self::Delta(d) => write!(f, "delta must be in [0, 1), got {d}"),
        }
    }
}

impl std::error::Error for InvalidEpsDelta {}

impl EpsDelta {
    /// Validates ε ≥ 0 (finite) and 0 ≤ δ < 1.
    pub fn new(epsilon: f64, delta: f64) -> Result<Self, InvalidEpsDelta> {
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(InvalidEpsDelta::Epsilon(epsilon));
        }
        if !(delta.is_finite() && (0.0..1.0).contains(&delta)) {
            return Err(InvalidEpsDelta::Delta(delta));
        }
        Ok(Self { epsilon, delta })
    }

    /// Nothing spent.
    pub const ZERO: Self = Self {
        epsilon: 0.0,
        delta: 0.0,
    };

    /// The ε part.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// The δ part.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// Basic (additive) composition: a valid upper bound for any two mechanisms, used where no
    /// tighter accountant applies (for example scalar releases next to DP-SGD).
    pub fn compose_basic(self, other: Self) -> Self {
        Self {
            epsilon: self.epsilon + other.epsilon,
            delta: (self.delta + other.delta).min(1.0 - f64::EPSILON),
        }
    }

    /// Whether this spend fits within `budget` in both coordinates.
    pub fn fits_within(&self, budget: &Self) -> bool {
        self.epsilon <= budget.epsilon && self.delta <= budget.delta
    }
}

impl TryFrom<RawEpsDelta> for EpsDelta {
    type Error = InvalidEpsDelta;
    fn try_from(raw: RawEpsDelta) -> Result<Self, Self::Error> {
        Self::new(raw.epsilon, raw.delta)
    }
}

impl From<EpsDelta> for RawEpsDelta {
    fn from(value: EpsDelta) -> Self {
        Self {
            epsilon: value.epsilon,
            delta: value.delta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_nan_negative_and_out_of_range() {
        assert!(EpsDelta::new(f64::NAN, 1e-5).is_err());
        assert!(EpsDelta::new(-0.1, 1e-5).is_err());
        assert!(EpsDelta::new(f64::INFINITY, 1e-5).is_err());
        assert!(EpsDelta::new(1.0, 1.0).is_err());
        assert!(EpsDelta::new(1.0, -1e-9).is_err());
        assert!(EpsDelta::new(1.0, 1e-5).is_ok());
    }

    #[test]
    fn deserialising_validates() {
        let bad: Result<EpsDelta, _> = serde_json::from_str(r#"{"epsilon":-1,"delta":0}"#);
        assert!(bad.is_err());
        let good: EpsDelta = serde_json::from_str(r#"{"epsilon":2.5,"delta":1e-5}"#).unwrap();
        assert_eq!(good.epsilon(), 2.5);
    }

    #[test]
    fn basic_composition_adds() {
        let a = EpsDelta::new(1.0, 1e-6).unwrap();
        let b = EpsDelta::new(0.5, 2e-6).unwrap();
        let c = a.compose_basic(b);
        assert_eq!(c.epsilon(), 1.5);
        assert!((c.delta() - 3e-6).abs() < 1e-18);
        assert!(a.fits_within(&c) && !c.fits_within(&a));
    }
}
