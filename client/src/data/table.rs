//! Tables from CSV files: one label column, numeric feature columns, optional site column.
//!
//! The first line is a header of column names. The label column is chosen by name; every other
//! column becomes a feature unless it is the group column, is listed in `drop`, or holds no
//! number at all (an id or free-text column, reported in [`DataInfo::skipped_columns`]). A
//! feature column with a missing or non-numeric cell is an error naming the line and column:
//! silently imputing or dropping rows would change what the model learns without anyone
//! deciding it.

use std::collections::BTreeSet;
use std::path::Path;

use tch::Tensor;

use super::query::{Options, RESERVED, encode};
use super::rows::{Cell, RowUnit, TableBuilder};
use super::split::split_indices;
use super::{DataError, DataInfo, Dataset, GroupColumn, Split, Standardizer};

/// How to read a CSV table and split it (the options of a `csv:` [`DataSpec`](super::DataSpec)).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Name of the label column.
    pub label: String,
    /// Columns to leave out entirely.
    #[serde(default)]
    pub drop: Vec<String>,
    /// A column kept aside as each example's site (for partitioning by column), not a feature.
    #[serde(default)]
    pub group: Option<String>,
    /// Fraction of rows held out for testing, in `(0, 1)`.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Seed of the train/test split.
    #[serde(default)]
    pub seed: u64,
    /// Whether to standardise features with statistics of the training split.
    #[serde(default = "default_true")]
    pub standardize: bool,
}

pub(crate) fn default_test_fraction() -> f64 {
    0.2
}

fn default_true() -> bool {
    true
}

impl CsvOptions {
    /// Options with the defaults (20% test, seed 0, standardised) for a label column.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            drop: Vec::new(),
            group: None,
            test_fraction: default_test_fraction(),
            seed: 0,
            standardize: true,
        }
    }
}

impl CsvOptions {
    /// The option keys of a `csv:` or `parquet:` spec.
    pub(crate) const ACCEPTED: &'static str = "label, test, seed, standardize, drop, group";

    pub(crate) fn from_query(options: &mut Options<'_>) -> Result<Self, DataError> {
        let label = options.require("label", "`label=COLUMN`, the name of the label column")?;
        let test_fraction = options.take_fraction(default_test_fraction())?;
        let seed = options.take_parsed("seed", "a whole number")?.unwrap_or(0);
        let standardize = options
            .take_parsed("standardize", "`true` or `false`")?
            .unwrap_or(true);
        let drop = options.take_list("drop")?;
        let group = options.take("group")?;
        Ok(Self {
            label,
            drop,
            group,
            test_fraction,
            seed,
            standardize,
        })
    }

    pub(crate) fn write_query(&self, out: &mut Vec<String>) {
        let value = |v: &str| encode(v, &RESERVED);
        out.push(format!("label={}", value(&self.label)));
        if self.test_fraction != default_test_fraction() {
            out.push(format!("test={}", self.test_fraction));
        }
        if self.seed != 0 {
            out.push(format!("seed={}", self.seed));
        }
        if !self.standardize {
            out.push("standardize=false".to_owned());
        }
        if !self.drop.is_empty() {
            let list: Vec<String> = self.drop.iter().map(|c| value(c)).collect();
            out.push(format!("drop={}", list.join(",")));
        }
        if let Some(group) = &self.group {
            out.push(format!("group={}", value(group)));
        }
    }
}

/// A CSV table parsed into numbers, before splitting.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvTable {
    /// Names of the feature columns, in order.
    pub feature_names: Vec<String>,
    /// Row-major `[rows, feature_names.len()]` feature values.
    pub features: Vec<f32>,
    /// Class index of each row, in `0..class_names.len()`.
    pub labels: Vec<i64>,
    /// The label text of each class index (numeric labels sort numerically, others as text).
    pub class_names: Vec<String>,
    /// Columns skipped because none of their cells is a number.
    pub skipped_columns: Vec<String>,
    /// The group column's value for each row, when one was asked for.
    pub groups: Option<Vec<String>>,
}

impl CsvTable {
    /// Number of data rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }
}

fn csv_error(path: &Path, error: &csv::Error) -> DataError {
    let line = error.position().map_or(0, csv::Position::line);
    let reason = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "this row has {len} fields but the header has {expected_len}; \
             every row needs one value per column"
        ),
        csv::ErrorKind::Utf8 { .. } => "the file is not valid UTF-8".to_owned(),
        csv::ErrorKind::Io(e) => format!("read failed: {e}"),
        _ => error.to_string(),
    };
    DataError::Csv {
        path: path.to_path_buf(),
        line,
        reason,
    }
}

/// Parses a CSV file into a [`CsvTable`] (no splitting, no scaling).
pub fn read_csv(path: &Path, options: &CsvOptions) -> Result<CsvTable, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, &e))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut builder = TableBuilder::new(path, RowUnit::Line, &header, options)?;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, &e)),
        }
        let line = record.position().map_or(0, csv::Position::line);
        builder.push(line, |i| Cell::Text(record.get(i).unwrap_or("")))?;
    }
    builder.finish()
}

/// The order of class indices for distinct label texts: numbers in numeric order when every
/// name is one, otherwise text in byte order. CSV labels, image folders and manifests share it,
/// so class `k` means the same thing whichever loader read the data.
pub(crate) fn class_order<'a>(distinct: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let distinct: BTreeSet<&str> = distinct.into_iter().collect();
    let names: Vec<&str> = distinct.into_iter().collect();
    let numeric: Option<Vec<f64>> = names.iter().map(|n| n.parse::<f64>().ok()).collect();
    match numeric {
        Some(values) => {
            let mut paired: Vec<(f64, &str)> = values.into_iter().zip(names).collect();
            paired.sort_by(|a, b| a.0.total_cmp(&b.0));
            paired.into_iter().map(|(_, name)| name).collect()
        }
        None => names,
    }
}

/// Loads a CSV file and splits it into train and test sets.
///
/// The split is seeded ([`split_indices`]); when `standardize` is set, the [`Standardizer`] is
/// fitted on the training rows only and applied to both sides.
pub fn load_csv(path: &Path, options: &CsvOptions) -> Result<Split, DataError> {
    split_table(path, read_csv(path, options)?, options)
}

/// Splits a parsed table and fits the standardisation on its training rows.
pub(crate) fn split_table(
    path: &Path,
    table: CsvTable,
    options: &CsvOptions,
) -> Result<Split, DataError> {
    let rows = table.rows();
    let width = table.feature_names.len();
    let (train_rows, test_rows) = split_indices(rows, options.test_fraction, options.seed)?;
    if train_rows.is_empty() || test_rows.is_empty() {
        return Err(DataError::Empty {
            what: format!("the split of {}", path.display()),
            hint: format!("{rows} row(s) cannot be split into train and test; add rows"),
        });
    }
    let num_classes = i64::try_from(table.class_names.len()).unwrap_or(i64::MAX);
    let width_i64 = i64::try_from(width).unwrap_or(i64::MAX);
    let all = Dataset {
        features: Tensor::from_slice(&table.features).f_view([-1, width_i64])?,
        labels: Tensor::from_slice(&table.labels),
        num_classes,
    };
    let mut train = all.select(&train_rows)?;
    let mut test = all.select(&test_rows)?;
    let standardizer = if options.standardize {
        let scaler = Standardizer::fit(&train.features)?;
        train.features = scaler.apply(&train.features)?;
        test.features = scaler.apply(&test.features)?;
        Some(scaler)
    } else {
        None
    };
    let groups = match (&options.group, table.groups) {
        (Some(name), Some(values)) => {
            let pick = |rows: &[usize]| rows.iter().map(|&r| values[r].clone()).collect();
            Some(GroupColumn {
                name: name.clone(),
                train: pick(&train_rows),
                test: pick(&test_rows),
            })
        }
        _ => None,
    };
    Ok(Split {
        train,
        test,
        info: DataInfo {
            feature_names: table.feature_names,
            class_names: table.class_names,
            skipped_columns: table.skipped_columns,
            standardizer,
            vocabulary: None,
            groups,
        },
    })
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
