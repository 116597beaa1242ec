//! Time series as sliding windows: per series, `W` past rows predict the target `H` steps on.
//!
//! A CSV holds one row per time step; a `group` column, when given, says which series (a
//! patient, a device) a row belongs to, and a `time` column, when given, orders each series'
//! rows (numerically when every value is a number, otherwise as text, which orders ISO-8601
//! dates and timestamps correctly); without it the file order is the time order. Every numeric
//! column except `group`, `time` and `drop`ped ones is an input feature, the target included
//! when it is real-valued (its past is what forecasting extrapolates). Example `e` of a series
//! has features `rows[e−W+1 ..= e]` (`[W, F]`) and label `target[e + H]`.
//!
//! The split is by time, never at random: overlapping windows share rows, so a random split
//! would put most of each test window into training. Each series is cut at
//! `c = round(L·(1 − test))`; training examples use only rows before `c` (inputs and label),
//! test examples only rows from `c` on, and the windows that would straddle the cut are not
//! used at all. Standardisation statistics come from the rows before the cuts only.
//!
//! A real-valued target gives `Float` labels `[N]` and `num_classes` 1 (a regression task,
//! see [`ModelTask`](crate::model::ModelTask)); `target_type=class` reads it as a class label
//! (monitoring: which state the series is in `H` steps on) with `Int64` labels like a CSV's.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::query::{Options, RESERVED, encode};
use super::split::check_fraction;
use super::table::class_order;
use super::{DataError, DataInfo, Dataset, GroupColumn, Split, Standardizer};

/// How the target column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetType {
    /// A number to forecast (regression).
    #[default]
    Real,
    /// A class label (values in [`class_order`], as for a CSV label).
    Class,
}

fn default_series_test_fraction() -> f64 {
    0.2
}

/// How to cut a table into windows (the options of a `timeseries:` [`DataSpec`](super::DataSpec)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesOptions {
    /// The column to predict.
    pub target: String,
    /// Rows of history per example, `W ≥ 1`.
    pub window: usize,
    /// Steps from the last input row to the predicted one, `H ≥ 1`.
    pub horizon: usize,
    /// The series-id column; without it the whole file is one series.
    #[serde(default)]
    pub group: Option<String>,
    /// The column that orders each series' rows; without it the file order does.
    #[serde(default)]
    pub time: Option<String>,
    /// Columns to leave out.
    #[serde(default)]
    pub drop: Vec<String>,
    /// How the target is read.
    #[serde(default)]
    pub target_type: TargetType,
    /// Fraction of each series, taken from its end, held out for testing, in `(0, 1)`.
    #[serde(default = "default_series_test_fraction")]
    pub test_fraction: f64,
    /// Whether to standardise the inputs with statistics of the training rows.
    #[serde(default = "default_true")]
    pub standardize: bool,
}

fn default_true() -> bool {
    true
}

impl SeriesOptions {
    /// The option keys of a `timeseries:` spec.
    pub(crate) const ACCEPTED: &'static str =
        "target, window, horizon, group, time, drop, target_type, test, standardize";

    /// Real-valued target, horizon 1, one series, 20% test tail, standardised.
    pub fn new(target: impl Into<String>, window: usize) -> Self {
        Self {
            target: target.into(),
            window,
            horizon: 1,
            group: None,
            time: None,
            drop: Vec::new(),
            target_type: TargetType::Real,
            test_fraction: default_series_test_fraction(),
            standardize: true,
        }
    }

    pub(crate) fn from_query(options: &mut Options<'_>) -> Result<Self, DataError> {
        let target = options.require("target", "`target=COLUMN`, the column to predict")?;
        let window: usize = options
            .take_parsed("window", "a whole number of rows, at least 1")?
            .ok_or_else(|| {
                options.error("`timeseries` needs `window=W`, the rows of history per example")
            })?;
        let horizon: usize = options
            .take_parsed("horizon", "a whole number of steps, at least 1")?
            .unwrap_or(1);
        if window == 0 || horizon == 0 {
            return Err(options.error("`window` and `horizon` must be at least 1"));
        }
        let group = options.take("group")?;
        let time = options.take("time")?;
        let drop = options.take_list("drop")?;
        let target_type = match options.take("target_type")?.as_deref() {
            None | Some("real") => TargetType::Real,
            Some("class") => TargetType::Class,
            Some(other) => {
                return Err(
                    options.error(format!("`target_type={other}`: expected `real` or `class`"))
                );
            }
        };
        let test_fraction = options.take_fraction(default_series_test_fraction())?;
        let standardize = options
            .take_parsed("standardize", "`true` or `false`")?
            .unwrap_or(true);
        Ok(Self {
            target,
            window,
            horizon,
            group,
            time,
            drop,
            target_type,
            test_fraction,
            standardize,
        })
    }

    pub(crate) fn write_query(&self, out: &mut Vec<String>) {
        let value = |v: &str| encode(v, &RESERVED);
        out.push(format!("target={}", value(&self.target)));
        out.push(format!("window={}", self.window));
        if self.horizon != 1 {
            out.push(format!("horizon={}", self.horizon));
        }
        if let Some(group) = &self.group {
            out.push(format!("group={}", value(group)));
        }
        if let Some(time) = &self.time {
            out.push(format!("time={}", value(time)));
        }
        if !self.drop.is_empty() {
            let list: Vec<String> = self.drop.iter().map(|c| value(c)).collect();
            out.push(format!("drop={}", list.join(",")));
        }
        if self.target_type == TargetType::Class {
            out.push("target_type=class".to_owned());
        }
        if self.test_fraction != default_series_test_fraction() {
            out.push(format!("test={}", self.test_fraction));
        }
        if !self.standardize {
            out.push("standardize=false".to_owned());
        }
    }
}

/// One row as read: its line, series, time text, numeric inputs and target text.
#[derive(Debug)]
struct Row {
    line: u64,
    series: String,
    time: Option<String>,
    inputs: Vec<f32>,
    target: String,
}

/// The CSV as rows, before windowing.
#[derive(Debug)]
struct Table {
    feature_names: Vec<String>,
    rows: Vec<Row>,
}

fn csv_failure(path: &Path, e: &csv::Error) -> DataError {
    DataError::Csv {
        path: path.to_path_buf(),
        line: e.position().map_or(0, csv::Position::line),
        reason: format!("not a well-formed CSV table ({e})"),
    }
}

fn bad(path: &Path, line: u64, column: &str, value: &str, problem: &'static str) -> DataError {
    DataError::BadValue {
        path: path.to_path_buf(),
        line,
        column: column.to_owned(),
        value: value.to_owned(),
        problem,
    }
}

fn number(text: &str) -> Result<f32, &'static str> {
    const MISSING: [&str; 7] = ["", "na", "n/a", "nan", "null", "none", "?"];
    if MISSING.contains(&text.to_ascii_lowercase().as_str()) {
        return Err("missing value");
    }
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err("not finite"),
        Err(_) => Err("not a number"),
    }
}

/// Reads the table: a column with no number at all is skipped (an id), any other bad cell of
/// an input column is an error naming its line.
fn read_table(path: &Path, options: &SeriesOptions) -> Result<Table, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_failure(path, &e))?
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
    let target_at = find(&options.target)?;
    let group_at = options.group.as_deref().map(find).transpose()?;
    let time_at = options.time.as_deref().map(find).transpose()?;
    let mut excluded = vec![group_at, time_at];
    for column in &options.drop {
        excluded.push(Some(find(column)?));
    }
    if excluded.contains(&Some(target_at)) {
        return Err(DataError::InvalidArgument(
            "the target column cannot also be the group, time or a dropped column".to_owned(),
        ));
    }
    if options.target_type == TargetType::Class {
        excluded.push(Some(target_at));
    }
    let candidates: Vec<usize> = (0..header.len())
        .filter(|i| !excluded.contains(&Some(*i)))
        .collect();

    let mut raw: Vec<(u64, csv::StringRecord)> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_failure(path, &e))?;
        let line = record.position().map_or(0, csv::Position::line);
        raw.push((line, record));
    }
    // Input columns are the candidates with at least one number; the target always is one
    // when real-valued.
    let inputs: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| {
            i == target_at
                || raw
                    .iter()
                    .any(|(_, r)| number(r.get(i).unwrap_or("")).is_ok())
        })
        .collect();
    let mut rows = Vec::with_capacity(raw.len());
    for (line, record) in &raw {
        let cell = |i: usize| record.get(i).unwrap_or("");
        let mut values = Vec::with_capacity(inputs.len());
        for &i in &inputs {
            values.push(number(cell(i)).map_err(|p| bad(path, *line, &header[i], cell(i), p))?);
        }
        let target = cell(target_at);
        if number(target) == Err("missing value") {
            return Err(bad(path, *line, &options.target, target, "missing value"));
        }
        rows.push(Row {
            line: *line,
            series: group_at.map(|g| cell(g).to_owned()).unwrap_or_default(),
            time: time_at.map(|t| cell(t).to_owned()),
            inputs: values,
            target: target.to_owned(),
        });
    }
    if rows.is_empty() {
        return Err(DataError::Empty {
            what: format!("{}", path.display()),
            hint: "the file has a header but no data rows".to_owned(),
        });
    }
    Ok(Table {
        feature_names: inputs.iter().map(|&i| header[i].clone()).collect(),
        rows,
    })
}

/// Each series' rows in time order, series in first-appearance order.
fn series_in_order<'t>(
    path: &Path,
    table: &'t Table,
    options: &SeriesOptions,
) -> Result<Vec<(&'t str, Vec<&'t Row>)>, DataError> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_series: HashMap<&str, Vec<&Row>> = HashMap::new();
    for row in &table.rows {
        let entry = by_series.entry(row.series.as_str()).or_insert_with(|| {
            order.push(row.series.as_str());
            Vec::new()
        });
        entry.push(row);
    }
    let numeric_time = table
        .rows
        .iter()
        .all(|r| r.time.as_deref().is_none_or(|t| t.parse::<f64>().is_ok()));
    let mut out = Vec::with_capacity(order.len());
    for name in order {
        let mut rows = by_series.remove(name).unwrap_or_default();
        if let Some(column) = &options.time {
            let key = |r: &Row| r.time.clone().unwrap_or_default();
            if numeric_time {
                let value = |r: &Row| key(r).parse::<f64>().unwrap_or(f64::NAN);
                rows.sort_by(|a, b| value(a).total_cmp(&value(b)));
            } else {
                rows.sort_by_key(|r| key(r));
            }
            if let Some(pair) = rows.windows(2).find(|p| key(p[0]) == key(p[1])) {
                return Err(DataError::Csv {
                    path: path.to_path_buf(),
                    line: pair[1].line,
                    reason: format!(
                        "series `{name}` has two rows at `{column}` = {:?} (lines {} and {}); \
                         each series needs one row per time step",
                        key(pair[0]),
                        pair[0].line,
                        pair[1].line
                    ),
                });
            }
        }
        out.push((name, rows));
    }
    Ok(out)
}

/// The examples of one side of the split as they are gathered.
#[derive(Debug, Default)]
struct Side {
    /// `[N, W, F]` inputs, row-major.
    features: Vec<f32>,
    /// Real-valued labels (empty for a class target).
    real: Vec<f32>,
    /// Class labels (empty for a real target).
    classes: Vec<i64>,
    /// The series of each example.
    groups: Vec<String>,
}

/// Where a series is cut, and its train and test window end rows.
pub(crate) fn window_ends(
    len: usize,
    window: usize,
    horizon: usize,
    test_fraction: f64,
) -> (usize, Vec<usize>, Vec<usize>) {
    // `len` is far below 2^53, so the conversions are exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let cut = ((len as f64) * (1.0 - test_fraction)).round() as usize;
    let cut = cut.min(len);
    // Train: inputs rows e−W+1..=e and label row e+H all before the cut.
    let train = ((window - 1)..cut.saturating_sub(horizon)).collect();
    // Test: every row used at or after the cut.
    let test = ((cut + window - 1)..len.saturating_sub(horizon)).collect();
    (cut, train, test)
}

/// Loads a CSV of time series as sliding-window examples split by time.
pub fn load_timeseries(path: &Path, options: &SeriesOptions) -> Result<Split, DataError> {
    check_fraction(options.test_fraction)?;
    let table = read_table(path, options)?;
    let series = series_in_order(path, &table, options)?;
    let (window, horizon) = (options.window, options.horizon);
    let width = table.feature_names.len();
    if width == 0 {
        return Err(DataError::Empty {
            what: format!("the input columns of {}", path.display()),
            hint: "no column besides the target, group and time holds numbers".to_owned(),
        });
    }
    let (class_names, class_of) = match options.target_type {
        TargetType::Real => (Vec::new(), HashMap::new()),
        TargetType::Class => {
            let names = class_order(table.rows.iter().map(|r| r.target.as_str()));
            let index: HashMap<String, i64> =
                names.iter().map(|s| (*s).to_owned()).zip(0..).collect();
            (names.into_iter().map(str::to_owned).collect(), index)
        }
    };
    if options.target_type == TargetType::Class && class_names.len() < 2 {
        return Err(DataError::Csv {
            path: path.to_path_buf(),
            line: 0,
            reason: format!(
                "target column `{}` has one distinct value; a class target needs two",
                options.target
            ),
        });
    }

    // Statistics of the rows before each cut (mean and population std per input column).
    let mut cuts = Vec::with_capacity(series.len());
    let mut fit_rows: Vec<f32> = Vec::new();
    for (name, rows) in &series {
        let (cut, train, test) = window_ends(rows.len(), window, horizon, options.test_fraction);
        if train.is_empty() || test.is_empty() {
            return Err(DataError::Empty {
                what: format!("the split of series {name:?} of {}", path.display()),
                hint: format!(
                    "its {} rows cut at row {cut} leave {} training and {} test windows of \
                     {window} rows with horizon {horizon}; each side needs window + horizon \
                     rows (shorten the window, lower `test`, or drop the series)",
                    rows.len(),
                    train.len(),
                    test.len()
                ),
            });
        }
        for row in &rows[..cut] {
            fit_rows.extend_from_slice(&row.inputs);
        }
        cuts.push((train, test));
    }
    let standardizer = if options.standardize {
        let fit = Tensor::from_slice(&fit_rows).f_view([-1, i64::try_from(width).unwrap_or(1)])?;
        Some(Standardizer::fit(&fit)?)
    } else {
        None
    };
    let scale = |value: f32, column: usize| match &standardizer {
        Some(s) => (value - s.mean[column]) / s.std[column],
        None => value,
    };

    let mut sides: [Side; 2] = Default::default();
    for ((name, rows), (train, test)) in series.iter().zip(&cuts) {
        for (side, ends) in [(0, train), (1, test)] {
            let Side {
                features,
                real,
                classes,
                groups,
            } = &mut sides[side];
            for &end in ends {
                for row in &rows[end + 1 - window..=end] {
                    features.extend(row.inputs.iter().enumerate().map(|(c, &v)| scale(v, c)));
                }
                let label_row = rows[end + horizon];
                match options.target_type {
                    TargetType::Real => real.push(number(&label_row.target).map_err(|p| {
                        bad(path, label_row.line, &options.target, &label_row.target, p)
                    })?),
                    TargetType::Class => {
                        classes.push(class_of.get(&label_row.target).copied().unwrap_or(0));
                    }
                }
                groups.push((*name).to_owned());
            }
        }
    }
    let [train_side, test_side] = sides;
    let num_classes = match options.target_type {
        TargetType::Real => 1,
        TargetType::Class => i64::try_from(class_names.len()).unwrap_or(i64::MAX),
    };
    let dataset = |side: &Side| {
        let shape = [
            -1,
            i64::try_from(window).unwrap_or(1),
            i64::try_from(width).unwrap_or(1),
        ];
        let labels = match options.target_type {
            TargetType::Real => Tensor::from_slice(&side.real).f_to_kind(Kind::Float)?,
            TargetType::Class => Tensor::from_slice(&side.classes),
        };
        Ok::<_, DataError>(Dataset {
            features: Tensor::from_slice(&side.features).f_view(shape)?,
            labels,
            num_classes,
        })
    };
    let train = dataset(&train_side)?;
    let test = dataset(&test_side)?;
    let groups = options.group.as_ref().map(|name| GroupColumn {
        name: name.clone(),
        train: train_side.groups.clone(),
        test: test_side.groups.clone(),
    });
    Ok(Split {
        train,
        test,
        info: DataInfo {
            feature_names: table.feature_names,
            class_names,
            standardizer,
            groups,
            ..DataInfo::default()
        },
    })
}

#[cfg(test)]
#[path = "timeseries_tests.rs"]
mod tests;
