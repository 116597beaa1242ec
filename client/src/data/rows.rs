//! Rows of cells into a [`CsvTable`]: the column rules that `csv:` and `parquet:` share.
//!
//! Both readers hand over one row at a time, so a Parquet file is consumed row group by row
//! group and only the numbers kept here grow. The rules (label chosen by name, a column with
//! no number at all skipped as an id, any other bad cell an error naming its row and column)
//! live here once, so a table gives the same examples whichever format it was saved in.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::DataError;
use super::table::{CsvOptions, CsvTable, class_order};

/// One cell as a reader found it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell<'a> {
    /// Text, read with the CSV rules (missing-value words, then a number).
    Text(&'a str),
    /// A typed number (Parquet's ints, floats, booleans as 0/1).
    Number(f64),
    /// A null.
    Missing,
}

/// How a reader counts rows, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowUnit {
    /// 1-based line of a text file, the header being line 1.
    Line,
    /// 1-based data row (a Parquet file has no lines).
    Row,
}

/// Classifies one cell of a numeric column.
fn number(cell: Cell<'_>) -> Result<f32, &'static str> {
    const MISSING: [&str; 7] = ["", "na", "n/a", "nan", "null", "none", "?"];
    let narrow = match cell {
        Cell::Missing => return Err("missing value"),
        // A finite f64 beyond f32's range becomes ±inf, caught below.
        #[allow(clippy::cast_possible_truncation)]
        Cell::Number(value) => value as f32,
        Cell::Text(text) => {
            if MISSING.contains(&text.to_ascii_lowercase().as_str()) {
                return Err("missing value");
            }
            text.parse::<f32>().map_err(|_| "not a number")?
        }
    };
    if narrow.is_finite() {
        Ok(narrow)
    } else {
        Err("not finite")
    }
}

/// The text of a label or group cell.
fn text(cell: Cell<'_>) -> Option<String> {
    match cell {
        Cell::Text(text) if !text.is_empty() => Some(text.to_owned()),
        Cell::Number(value) => Some(format!("{value}")),
        Cell::Text(_) | Cell::Missing => None,
    }
}

/// What one candidate feature column has seen so far.
#[derive(Debug)]
struct ColumnScan {
    at: usize,
    name: String,
    values: Vec<f32>,
    any_number: bool,
    /// The first cell that is not a finite number: (row, text, problem).
    first_bad: Option<(u64, String, &'static str)>,
}

/// Accumulates rows into a [`CsvTable`].
#[derive(Debug)]
pub(crate) struct TableBuilder {
    path: PathBuf,
    unit: RowUnit,
    label: String,
    label_at: usize,
    group_at: Option<usize>,
    columns: Vec<ColumnScan>,
    raw_labels: Vec<String>,
    groups: Option<Vec<String>>,
}

impl TableBuilder {
    /// Resolves the options' column names against `header`.
    pub(crate) fn new(
        path: &Path,
        unit: RowUnit,
        header: &[String],
        options: &CsvOptions,
    ) -> Result<Self, DataError> {
        let find = |column: &str| {
            header
                .iter()
                .position(|h| h == column)
                .ok_or_else(|| DataError::MissingColumn {
                    path: path.to_path_buf(),
                    column: column.to_owned(),
                    available: header.to_vec(),
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
        let columns = header
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != label_at && Some(*i) != group_at && !dropped.contains(i))
            .map(|(at, name)| ColumnScan {
                at,
                name: name.clone(),
                values: Vec::new(),
                any_number: false,
                first_bad: None,
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            unit,
            label: options.label.clone(),
            label_at,
            group_at,
            columns,
            raw_labels: Vec::new(),
            groups: group_at.map(|_| Vec::new()),
        })
    }

    fn bad(&self, row: u64, column: &str, value: String, problem: &'static str) -> DataError {
        match self.unit {
            RowUnit::Line => DataError::BadValue {
                path: self.path.clone(),
                line: row,
                column: column.to_owned(),
                value,
                problem,
            },
            RowUnit::Row => DataError::BadCell {
                path: self.path.clone(),
                row,
                column: column.to_owned(),
                value,
                problem,
            },
        }
    }

    /// Adds one row; `cell(i)` is the cell of header column `i`.
    pub(crate) fn push<'c>(
        &mut self,
        row: u64,
        cell: impl Fn(usize) -> Cell<'c>,
    ) -> Result<(), DataError> {
        let Some(label) = text(cell(self.label_at)) else {
            return Err(self.bad(row, &self.label, String::new(), "missing value"));
        };
        if number(Cell::Text(&label)) == Err("missing value") {
            return Err(self.bad(row, &self.label, label, "missing value"));
        }
        self.raw_labels.push(label);
        if let (Some(at), Some(groups)) = (self.group_at, self.groups.as_mut()) {
            groups.push(text(cell(at)).unwrap_or_default());
        }
        for scan in &mut self.columns {
            let value = cell(scan.at);
            match number(value) {
                Ok(number) => {
                    scan.any_number = true;
                    scan.values.push(number);
                }
                Err(problem) => {
                    scan.values.push(f32::NAN);
                    if scan.first_bad.is_none() {
                        scan.first_bad = Some((row, text(value).unwrap_or_default(), problem));
                    }
                }
            }
        }
        Ok(())
    }

    /// The table, or the earliest bad cell of a numeric column.
    pub(crate) fn finish(self) -> Result<CsvTable, DataError> {
        let path = &self.path;
        if self.raw_labels.is_empty() {
            return Err(DataError::Empty {
                what: format!("{}", path.display()),
                hint: "the file has a header but no data rows".to_owned(),
            });
        }
        // A column with no number at all is text (an id, a name): skip it. A column with
        // numbers and some bad cells is damaged data: report the earliest bad cell.
        let mut skipped_columns = Vec::new();
        let mut kept = Vec::new();
        let mut earliest: Option<(u64, String, String, &'static str)> = None;
        for scan in self.columns {
            if !scan.any_number {
                skipped_columns.push(scan.name);
                continue;
            }
            if let Some((row, value, problem)) = scan.first_bad.clone()
                && earliest.as_ref().is_none_or(|(r, ..)| row < *r)
            {
                earliest = Some((row, scan.name.clone(), value, problem));
            }
            kept.push(scan);
        }
        if let Some((row, column, value, problem)) = earliest {
            return Err(match self.unit {
                RowUnit::Line => DataError::BadValue {
                    path: path.clone(),
                    line: row,
                    column,
                    value,
                    problem,
                },
                RowUnit::Row => DataError::BadCell {
                    path: path.clone(),
                    row,
                    column,
                    value,
                    problem,
                },
            });
        }
        if kept.is_empty() {
            return Err(DataError::Empty {
                what: format!("the feature columns of {}", path.display()),
                hint: "no column besides the label holds numbers".to_owned(),
            });
        }
        let (labels, class_names) = encode_labels(path, &self.label, &self.raw_labels)?;
        let rows = self.raw_labels.len();
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
            groups: self.groups,
        })
    }
}

/// Maps label text to class indices in [`class_order`].
fn encode_labels(
    path: &Path,
    column: &str,
    raw: &[String],
) -> Result<(Vec<i64>, Vec<String>), DataError> {
    let names = class_order(raw.iter().map(String::as_str));
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
