//! A site's exact counts (client side) and a released, possibly noisy vector (server side).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::shape::{ClassificationShape, RegressionShape, Shape};

/// Why a record or a released vector was refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StatsError {
    /// A record does not fit the shape (a label, group or score out of range).
    BadRecord(String),
    /// The vector's length is not the shape's.
    WrongLength {
        /// The shape's length.
        expected: usize,
        /// The vector's.
        got: usize,
    },
    /// A count that cannot come from records (negative where no noise was added, or below
    /// what the noise could produce).
    Impossible {
        /// The coordinate.
        index: usize,
        /// Its value.
        value: i64,
        /// What was expected of it.
        expected: String,
    },
    /// A sum overflowed `i64`.
    Overflow,
}

impl fmt::Display for StatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRecord(m) => f.write_str(m),
            Self::WrongLength { expected, got } => write!(
                f,
                "the statistics have {got} values, this evaluation's shape has {expected}"
            ),
            Self::Impossible {
                index,
                value,
                expected,
            } => write!(f, "value {value} at index {index}: expected {expected}"),
            Self::Overflow => f.write_str("the sum of the statistics overflows a 64-bit integer"),
        }
    }
}

impl std::error::Error for StatsError {}

/// A site's exact classification counts, filled one held-out record at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationCounts {
    shape: ClassificationShape,
    cells: Vec<i64>,
}

impl ClassificationCounts {
    /// All zero.
    pub fn new(shape: ClassificationShape) -> Self {
        Self {
            shape,
            cells: vec![0; shape.len()],
        }
    }

    /// Counts one record: its group index, true label, the model's class probabilities
    /// (`scores`, one per class, each in [0, 1]) and its loss. The prediction is the arg-max
    /// (the lowest class on ties, as `argmax` in libtorch). Nothing is counted on error.
    pub fn add(
        &mut self,
        group: usize,
        label: usize,
        scores: &[f64],
        loss: f64,
    ) -> Result<(), StatsError> {
        let s = self.shape;
        if group >= s.groups() {
            return Err(StatsError::BadRecord(format!(
                "group index {group} is not below the shape's {} groups",
                s.groups()
            )));
        }
        if label >= s.classes() {
            return Err(StatsError::BadRecord(format!(
                "label {label} is not below the shape's {} classes",
                s.classes()
            )));
        }
        if scores.len() != s.classes() {
            return Err(StatsError::BadRecord(format!(
                "{} scores for {} classes",
                scores.len(),
                s.classes()
            )));
        }
        if let Some(bad) = scores
            .iter()
            .find(|p| !(p.is_finite() && (0.0..=1.0).contains(*p)))
        {
            return Err(StatsError::BadRecord(format!(
                "score {bad} is not a probability in [0, 1]"
            )));
        }
        if loss.is_nan() || loss < 0.0 {
            return Err(StatsError::BadRecord(format!(
                "loss {loss} is not a number ≥ 0"
            )));
        }
        let mut predicted = 0;
        for (k, p) in scores.iter().enumerate() {
            if *p > scores[predicted] {
                predicted = k;
            }
        }
        self.cells[s.confusion_index(group, label, predicted)] += 1;
        for (n, class) in s.scored_classes().enumerate() {
            let bin = score_bin(scores[class], s.bins());
            self.cells[s.histogram_index(n, label == class, bin)] += 1;
        }
        self.cells[s.count_index()] += 1;
        self.cells[s.loss_index()] += loss_units(loss, s.loss_clip(), s.loss_units());
        Ok(())
    }

    /// The flat vector, in the shape's layout.
    pub fn to_vector(&self) -> Vec<i64> {
        self.cells.clone()
    }
}

/// The bin of a score in [0, 1]: `⌊p·B⌋`, with p = 1 in the last bin.
pub fn score_bin(p: f64, bins: usize) -> usize {
    ((p * bins as f64) as usize).min(bins - 1)
}

/// `min(value, clip)` in units of `clip / units`, rounded to nearest: bias at most half a unit.
fn loss_units(value: f64, clip: f64, units: u32) -> i64 {
    let scaled = (value.min(clip) / clip * f64::from(units)).round();
    scaled.clamp(0.0, f64::from(units)) as i64
}

/// A site's exact regression sums.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionCounts {
    shape: RegressionShape,
    cells: [i64; RegressionShape::LEN],
}

impl RegressionCounts {
    /// All zero.
    pub fn new(shape: RegressionShape) -> Self {
        Self {
            shape,
            cells: [0; RegressionShape::LEN],
        }
    }

    /// Counts one record's residual (prediction − target).
    pub fn add(&mut self, residual: f64) -> Result<(), StatsError> {
        if !residual.is_finite() {
            return Err(StatsError::BadRecord(format!(
                "residual {residual} is not finite"
            )));
        }
        let clip = self.shape.residual_clip();
        let units = self.shape.units();
        let r = residual.abs().min(clip);
        self.cells[0] += 1;
        self.cells[1] += loss_units(r, clip, units);
        self.cells[2] += loss_units(r * r, clip * clip, units);
        Ok(())
    }

    /// The flat vector.
    pub fn to_vector(&self) -> Vec<i64> {
        self.cells.to_vec()
    }
}

/// How far below zero a released value may be and still be believed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plausibility {
    /// No noise was added: every count is ≥ 0 and the blocks agree (each histogram holds as
    /// many records as the count, and so does the confusion matrix).
    Exact,
    /// Noise of this standard deviation per coordinate was added: no value may be below
    /// `-TAIL_STDS·std`, which integer noise of that spread reaches with probability < 10⁻³⁰.
    Noisy {
        /// Per-coordinate noise standard deviation.
        std: f64,
    },
}

/// Standard deviations beyond which a negative noisy count is refused as impossible.
pub const TAIL_STDS: f64 = 12.0;

/// A released vector that passed the shape's checks: what the server sums and derives from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Released {
    shape: Shape,
    values: Vec<i64>,
}

impl Released {
    /// Checks `values` against `shape` under `plausibility`; refused vectors change nothing.
    pub fn parse(
        shape: Shape,
        values: Vec<i64>,
        plausibility: Plausibility,
    ) -> Result<Self, StatsError> {
        if values.len() != shape.len() {
            return Err(StatsError::WrongLength {
                expected: shape.len(),
                got: values.len(),
            });
        }
        let floor = match plausibility {
            Plausibility::Exact => 0,
            Plausibility::Noisy { std } => {
                let bound = (TAIL_STDS * std).ceil();
                if !(bound.is_finite() && bound >= 0.0) {
                    return Err(StatsError::BadRecord(format!(
                        "noise std {std} is not a finite number ≥ 0"
                    )));
                }
                -(bound.min(i64::MAX as f64) as i64)
            }
        };
        if let Some((index, value)) = values.iter().enumerate().find(|(_, v)| **v < floor) {
            return Err(StatsError::Impossible {
                index,
                value: *value,
                expected: format!("a count ≥ {floor}"),
            });
        }
        if plausibility == Plausibility::Exact {
            check_consistency(&shape, &values)?;
        }
        Ok(Self { shape, values })
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The values, in the shape's layout.
    pub fn values(&self) -> &[i64] {
        &self.values
    }

    /// Adds another release of the same shape (the server's running sum of plain uploads).
    pub fn add(&mut self, other: &Released) -> Result<(), StatsError> {
        if other.shape != self.shape {
            return Err(StatsError::WrongLength {
                expected: self.values.len(),
                got: other.values.len(),
            });
        }
        let mut sum = self.values.clone();
        for (s, o) in sum.iter_mut().zip(&other.values) {
            *s = s.checked_add(*o).ok_or(StatsError::Overflow)?;
        }
        self.values = sum;
        Ok(())
    }

    /// All zero: the identity of [`Released::add`].
    pub fn zero(shape: Shape) -> Self {
        Self {
            shape,
            values: vec![0; shape.len()],
        }
    }
}

/// Without noise, every block counts the same records: a vector that disagrees with itself
/// was not computed by the protocol.
fn check_consistency(shape: &Shape, values: &[i64]) -> Result<(), StatsError> {
    let Shape::Classification(c) = shape else {
        return Ok(());
    };
    let count = values[c.count_index()];
    let confusion: i64 = values[..c.groups() * c.classes() * c.classes()]
        .iter()
        .sum();
    if confusion != count {
        return Err(StatsError::Impossible {
            index: c.count_index(),
            value: count,
            expected: format!("the confusion matrix's total {confusion}"),
        });
    }
    for n in 0..c.scored_classes().len() {
        let start = c.histogram_index(n, true, 0);
        let in_histogram: i64 = values[start..start + 2 * c.bins()].iter().sum();
        if in_histogram != count {
            return Err(StatsError::Impossible {
                index: start,
                value: in_histogram,
                expected: format!("a score histogram holding the {count} records counted"),
            });
        }
    }
    let max_loss = count.saturating_mul(i64::from(c.loss_units()));
    let loss = values[c.loss_index()];
    if loss > max_loss {
        return Err(StatsError::Impossible {
            index: c.loss_index(),
            value: loss,
            expected: format!("at most {max_loss} loss units for {count} records"),
        });
    }
    Ok(())
}
