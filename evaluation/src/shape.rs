//! The layout of the released vector: which coordinate holds which count, and how much one
//! record can change it.
//!
//! Server and clients derive the layout from the same [`Shape`], so a vector carries no field
//! names; its length alone is checked against the shape on arrival.

use std::fmt;

use cohort_privacy::integer_release::{Contribution, Sensitivity};
use serde::{Deserialize, Serialize};

/// The most classes, groups or bins a shape may have: keeps `G·K² + 2·K·B` far below what a
/// frame or a server's memory would notice (at most 4.3 M cells).
pub const MAX_DIMENSION: u32 = 1024;

/// The most integer units one record's loss or residual may add (the quantisation's
/// resolution). Larger values buy resolution with noise: the noise scales with them.
pub const MAX_UNITS: u32 = 1024;

/// What a shape refuses.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError(String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

fn check_dimension(name: &str, value: u32, least: u32) -> Result<(), ShapeError> {
    if value < least || value > MAX_DIMENSION {
        return Err(ShapeError(format!(
            "{name} must be between {least} and {MAX_DIMENSION}, got {value}"
        )));
    }
    Ok(())
}

fn check_clip(name: &str, value: f64) -> Result<(), ShapeError> {
    if !(value.is_finite() && value > 0.0) {
        return Err(ShapeError(format!(
            "{name} must be a finite number > 0, got {value}"
        )));
    }
    Ok(())
}

fn check_units(value: u32) -> Result<(), ShapeError> {
    if value == 0 || value > MAX_UNITS {
        return Err(ShapeError(format!(
            "units must be between 1 and {MAX_UNITS}, got {value}"
        )));
    }
    Ok(())
}

/// What a classification evaluation counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawClassification")]
pub struct ClassificationShape {
    classes: u32,
    groups: u32,
    bins: u32,
    loss_clip: f64,
    loss_units: u32,
}

#[derive(Deserialize)]
struct RawClassification {
    classes: u32,
    groups: u32,
    bins: u32,
    loss_clip: f64,
    loss_units: u32,
}

impl TryFrom<RawClassification> for ClassificationShape {
    type Error = ShapeError;
    fn try_from(r: RawClassification) -> Result<Self, ShapeError> {
        Self::new(r.classes, r.groups, r.bins, r.loss_clip, r.loss_units)
    }
}

impl ClassificationShape {
    /// `classes` K ≥ 2, `groups` G ≥ 1 (1 when no group column is set), `bins` B ≥ 2 of the
    /// score histograms; each record's loss is clipped to `loss_clip` and counted in
    /// `loss_units` steps of `loss_clip / loss_units`.
    pub fn new(
        classes: u32,
        groups: u32,
        bins: u32,
        loss_clip: f64,
        loss_units: u32,
    ) -> Result<Self, ShapeError> {
        check_dimension("classes", classes, 2)?;
        check_dimension("groups", groups, 1)?;
        check_dimension("bins", bins, 2)?;
        check_clip("loss_clip", loss_clip)?;
        check_units(loss_units)?;
        Ok(Self {
            classes,
            groups,
            bins,
            loss_clip,
            loss_units,
        })
    }

    /// K.
    pub fn classes(&self) -> usize {
        self.classes as usize
    }

    /// G.
    pub fn groups(&self) -> usize {
        self.groups as usize
    }

    /// B.
    pub fn bins(&self) -> usize {
        self.bins as usize
    }

    /// The largest loss one record counts with.
    pub fn loss_clip(&self) -> f64 {
        self.loss_clip
    }

    /// Units per `loss_clip`.
    pub fn loss_units(&self) -> u32 {
        self.loss_units
    }

    /// The classes whose score is histogrammed: with two classes the second one's score
    /// determines the first's, so only it is counted (half the cells, half the sensitivity).
    pub fn scored_classes(&self) -> std::ops::Range<usize> {
        if self.classes == 2 {
            1..2
        } else {
            0..self.classes()
        }
    }

    /// Index of confusion cell (group, true, predicted).
    pub fn confusion_index(&self, group: usize, truth: usize, predicted: usize) -> usize {
        let k = self.classes();
        group * k * k + truth * k + predicted
    }

    fn histograms_start(&self) -> usize {
        self.groups() * self.classes() * self.classes()
    }

    /// Index of histogram cell: the score of `scored` (the n-th scored class), for records
    /// whose true label is that class (`positive`) or not, in `bin`.
    pub fn histogram_index(&self, scored: usize, positive: bool, bin: usize) -> usize {
        let side = usize::from(!positive);
        self.histograms_start() + (scored * 2 + side) * self.bins() + bin
    }

    /// Index of the record count.
    pub fn count_index(&self) -> usize {
        self.histograms_start() + 2 * self.scored_classes().len() * self.bins()
    }

    /// Index of the clipped loss sum, in units.
    pub fn loss_index(&self) -> usize {
        self.count_index() + 1
    }

    /// Length of the released vector: `G·K² + 2·S·B + 2` (S scored classes).
    pub fn len(&self) -> usize {
        self.loss_index() + 1
    }

    /// Never empty; here so `len` has its pair.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// How one record changes the vector: one confusion cell, one histogram cell per scored
    /// class, the count, and the loss by at most `loss_units`.
    pub fn contributions(&self) -> [Contribution; 4] {
        [
            Contribution {
                cells: 1,
                max_units: 1,
            },
            Contribution {
                cells: self.scored_classes().len() as u64,
                max_units: 1,
            },
            Contribution {
                cells: 1,
                max_units: 1,
            },
            Contribution {
                cells: 1,
                max_units: u64::from(self.loss_units),
            },
        ]
    }
}

/// What a regression evaluation counts: records, and the sums of the clipped absolute and
/// squared residuals in integer units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRegression")]
pub struct RegressionShape {
    residual_clip: f64,
    units: u32,
}

#[derive(Deserialize)]
struct RawRegression {
    residual_clip: f64,
    units: u32,
}

impl TryFrom<RawRegression> for RegressionShape {
    type Error = ShapeError;
    fn try_from(r: RawRegression) -> Result<Self, ShapeError> {
        Self::new(r.residual_clip, r.units)
    }
}

impl RegressionShape {
    /// |residual| is clipped to `residual_clip`; |r| and r² are counted in `units` steps of
    /// `residual_clip` and `residual_clip²`.
    pub fn new(residual_clip: f64, units: u32) -> Result<Self, ShapeError> {
        check_clip("residual_clip", residual_clip)?;
        check_units(units)?;
        Ok(Self {
            residual_clip,
            units,
        })
    }

    /// The clip.
    pub fn residual_clip(&self) -> f64 {
        self.residual_clip
    }

    /// Units per clip.
    pub fn units(&self) -> u32 {
        self.units
    }

    /// `[count, Σ|r| units, Σr² units]`.
    pub const LEN: usize = 3;

    /// The count, then the two sums each moved by at most `units`.
    pub fn contributions(&self) -> [Contribution; 2] {
        [
            Contribution {
                cells: 1,
                max_units: 1,
            },
            Contribution {
                cells: 2,
                max_units: u64::from(self.units),
            },
        ]
    }
}

/// What an evaluation counts, fixed by the federation's config for every site.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Shape {
    /// Classification (binary or multi-class).
    Classification(ClassificationShape),
    /// Regression.
    Regression(RegressionShape),
}

impl Shape {
    /// Length of the released vector.
    pub fn len(&self) -> usize {
        match self {
            Self::Classification(c) => c.len(),
            Self::Regression(_) => RegressionShape::LEN,
        }
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Index of the record count.
    pub fn count_index(&self) -> usize {
        match self {
            Self::Classification(c) => c.count_index(),
            Self::Regression(_) => 0,
        }
    }

    /// The exact L1/L2 sensitivity of the vector under adding or removing one record.
    pub fn sensitivity(&self) -> Result<Sensitivity, ShapeError> {
        let result = match self {
            Self::Classification(c) => Sensitivity::of_record(&c.contributions()),
            Self::Regression(r) => Sensitivity::of_record(&r.contributions()),
        };
        result.map_err(|e| ShapeError(e.to_string()))
    }
}
