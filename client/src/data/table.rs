//! Tables from CSV files: one label column, numeric feature columns, optional site column.
//!
//! The first line is a header of column names. The label column is chosen by name; every other
//! column becomes a feature unless it is the group column, is listed in `drop`, or holds no
//! number at all (an id or free-text column, reported in [`DataInfo::skipped_columns`]). A
//! feature column with a missing or non-numeric cell is an error naming the line and column:
//! silently imputing or dropping rows would change what the model learns without anyone
//! deciding it.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::path::Path;

use tch::Tensor;

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

/// What one candidate feature column has seen so far.
struct ColumnScan {
    name: String,
    values: Vec<f32>,
    any_number: bool,
    /// The first cell that is not a finite number: (line, text, problem).
    first_bad: Option<(u64, String, &'static str)>,
}

/// Classifies one cell of a numeric column.
fn parse_cell(text: &str) -> Result<f32, &'static str> {
    const MISSING: [&str; 7] = ["", "na", "n/a", "nan", "null", "none", "?"];
    if MISSING.contains(&text.to_ascii_lowercase().as_str()) {
        return Err("missing value");
    }
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() => Ok(value),
        Ok(_) => Err("not finite"),
        Err(_) => Err("not a number"),
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
    let find = |column: &str| {
        header
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                column: column.to_owned(),
                available: header.clone(),
            })
    };
    let label_at = find(&options.label)?;
    let group_at = options.group.as_deref().map(find).transpose()?;
    let mut dropped = BTreeSet::new();
    for column in &options.drop {
        dropped.insert(find(column)?);
    }
    if dropped.contains(&label_at) || group_at.is_some_and(|g| dropped.contains(&g)) {
        return Err(DataError::InvalidArgument(
            "a dropped column cannot also be the label or group column".to_owned(),
        ));
    }
    if group_at == Some(label_at) {
        return Err(DataError::InvalidArgument(
            "the group column cannot be the label column".to_owned(),
        ));
    }
    let mut columns: Vec<(usize, ColumnScan)> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != label_at && Some(*i) != group_at && !dropped.contains(i))
        .map(|(i, name)| {
            let scan = ColumnScan {
                name: name.clone(),
                values: Vec::new(),
                any_number: false,
                first_bad: None,
            };
            (i, scan)
        })
        .collect();

    let mut raw_labels = Vec::new();
    let mut groups = group_at.map(|_| Vec::new());
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, &e)),
        }
        let line = record.position().map_or(0, csv::Position::line);
        let label = record.get(label_at).unwrap_or("");
        if parse_cell(label) == Err("missing value") {
            return Err(DataError::BadValue {
                path: path.to_path_buf(),
                line,
                column: options.label.clone(),
                value: label.to_owned(),
                problem: "missing value",
            });
        }
        raw_labels.push(label.to_owned());
        if let (Some(at), Some(groups)) = (group_at, groups.as_mut()) {
            groups.push(record.get(at).unwrap_or("").to_owned());
        }
        for (at, scan) in &mut columns {
            let text = record.get(*at).unwrap_or("");
            match parse_cell(text) {
                Ok(value) => {
                    scan.any_number = true;
                    scan.values.push(value);
                }
                Err(problem) => {
                    scan.values.push(f32::NAN);
                    if scan.first_bad.is_none() {
                        scan.first_bad = Some((line, text.to_owned(), problem));
                    }
                }
            }
        }
    }
    if raw_labels.is_empty() {
        return Err(DataError::Empty {
            what: format!("{}", path.display()),
            hint: "the file has a header but no data rows".to_owned(),
        });
    }

    // A column with no number at all is text (an id, a name): skip it. A column with numbers
    // and some bad cells is damaged data: report the earliest bad cell.
    let mut skipped_columns = Vec::new();
    let mut kept = Vec::new();
    let mut earliest: Option<(u64, String, String, &'static str)> = None;
    for (_, scan) in columns {
        if !scan.any_number {
            skipped_columns.push(scan.name);
            continue;
        }
        if let Some((line, value, problem)) = scan.first_bad.clone()
            && earliest.as_ref().is_none_or(|(l, ..)| line < *l)
        {
            earliest = Some((line, scan.name.clone(), value, problem));
        }
        kept.push(scan);
    }
    if let Some((line, column, value, problem)) = earliest {
        return Err(DataError::BadValue {
            path: path.to_path_buf(),
            line,
            column,
            value,
            problem,
        });
    }
    if kept.is_empty() {
        return Err(DataError::Empty {
            what: format!("the feature columns of {}", path.display()),
            hint: "no column besides the label holds numbers".to_owned(),
        });
    }

    let (labels, class_names) = encode_labels(path, &options.label, &raw_labels)?;
    let rows = raw_labels.len();
    let mut features = Vec::with_capacity(rows * kept.len());
    for row in 0..rows {
        features.extend(kept.iter().map(|scan| scan.values[row]));
    }
    Ok(CsvTable {
        feature_names: kept.into_iter().map(|scan| scan.name).collect(),
        features,
        labels,
        class_names,
        skipped_columns,
        groups,
    })
}

/// Maps label text to class indices: numbers in numeric order, otherwise text in byte order.
fn encode_labels(
    path: &Path,
    column: &str,
    raw: &[String],
) -> Result<(Vec<i64>, Vec<String>), DataError> {
    let distinct: BTreeSet<&str> = raw.iter().map(String::as_str).collect();
    let mut names: Vec<&str> = distinct.into_iter().collect();
    let numeric: Option<Vec<f64>> = names.iter().map(|n| n.parse::<f64>().ok()).collect();
    if let Some(values) = numeric {
        let mut paired: Vec<(f64, &str)> = values.into_iter().zip(names).collect();
        paired.sort_by(|a, b| a.0.total_cmp(&b.0));
        names = paired.into_iter().map(|(_, name)| name).collect();
    }
    if names.len() < 2 {
        return Err(DataError::Csv {
            path: path.to_path_buf(),
            line: 0,
            reason: format!(
                "label column `{column}` has only one distinct value; \
                 a classifier needs at least two classes"
            ),
        });
    }
    let index: HashMap<&str, i64> = names.iter().copied().zip(0..).collect();
    let labels = raw
        .iter()
        .map(|label| index.get(label.as_str()).copied().unwrap_or(0))
        .collect();
    Ok((labels, names.into_iter().map(str::to_owned).collect()))
}

/// Loads a CSV file and splits it into train and test sets.
///
/// The split is seeded ([`split_indices`]); when `standardize` is set, the [`Standardizer`] is
/// fitted on the training rows only and applied to both sides.
pub fn load_csv(path: &Path, options: &CsvOptions) -> Result<Split, DataError> {
    let table = read_csv(path, options)?;
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
