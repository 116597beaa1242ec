//! Parquet tables with the CSV options: the same label, group, drop, split and scaling rules.
//!
//! The file is read one row group at a time through the `parquet` crate's row reader, and each
//! row goes straight into the shared [`TableBuilder`], so memory holds the decoded numbers and
//! one row group's pages, never a second copy of the table. Booleans and integers of any width
//! are numbers (true = 1), floats are numbers, strings are read like CSV text (so a string
//! column of numbers is a feature and one of names is skipped as an id), nulls are missing
//! values; other logical types (dates, timestamps, decimals) are read as their text and are
//! numbers only when that text is one. Nested columns (lists, maps, structs) are an error: a
//! table for training is flat.
//!
//! Pages may be uncompressed, Snappy (pyarrow's and pandas' default) or gzip; a file written
//! with another codec is an error that names the codec, since compiling every codec costs
//! every build time.

use std::fs::File;
use std::path::Path;

use ::parquet::errors::ParquetError;
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::record::Field;

use super::DataError;
use super::Split;
use super::rows::{Cell, RowUnit, TableBuilder};
use super::table::{CsvOptions, CsvTable, split_table};

fn parquet_error(path: &Path, e: &ParquetError) -> DataError {
    let reason = match e {
        ParquetError::NYI(what) => format!(
            "{what}; this build reads uncompressed, Snappy and gzip Parquet pages (rewrite the \
             file with one of those codecs)"
        ),
        other => format!("not a readable Parquet file ({other})"),
    };
    DataError::Parquet {
        path: path.to_path_buf(),
        reason,
    }
}

/// A cell as owned data, so a row's text can be borrowed as [`Cell`]s.
enum Value {
    Number(f64),
    Text(String),
    Null,
}

impl Value {
    #[allow(clippy::cast_precision_loss)]
    fn of(field: &Field) -> Value {
        match field {
            Field::Null => Value::Null,
            Field::Bool(b) => Value::Number(if *b { 1.0 } else { 0.0 }),
            Field::Byte(v) => Value::Number(f64::from(*v)),
            Field::Short(v) => Value::Number(f64::from(*v)),
            Field::Int(v) => Value::Number(f64::from(*v)),
            Field::Long(v) => Value::Number(*v as f64),
            Field::UByte(v) => Value::Number(f64::from(*v)),
            Field::UShort(v) => Value::Number(f64::from(*v)),
            Field::UInt(v) => Value::Number(f64::from(*v)),
            Field::ULong(v) => Value::Number(*v as f64),
            Field::Float(v) => Value::Number(f64::from(*v)),
            Field::Double(v) => Value::Number(*v),
            Field::Str(s) => Value::Text(s.clone()),
            other => Value::Text(other.to_string()),
        }
    }

    fn cell(&self) -> Cell<'_> {
        match self {
            Value::Number(v) => Cell::Number(*v),
            Value::Text(t) => Cell::Text(t),
            Value::Null => Cell::Missing,
        }
    }
}

/// Reads a Parquet file into a [`CsvTable`] (no splitting, no scaling).
pub fn read_parquet(path: &Path, options: &CsvOptions) -> Result<CsvTable, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| parquet_error(path, &e))?;
    let metadata = reader.metadata();
    let schema = metadata.file_metadata().schema_descr();
    let mut header = Vec::new();
    for field in schema.root_schema().get_fields() {
        if field.is_group() {
            return Err(DataError::Parquet {
                path: path.to_path_buf(),
                reason: format!(
                    "column `{}` is nested (a list, map or struct); expected flat columns of \
                     numbers or strings",
                    field.name()
                ),
            });
        }
        header.push(field.name().to_owned());
    }
    let mut builder = TableBuilder::new(path, RowUnit::Row, &header, options)?;
    let mut row_number = 0u64;
    let mut values: Vec<Value> = Vec::with_capacity(header.len());
    for group in 0..metadata.num_row_groups() {
        let row_group = reader
            .get_row_group(group)
            .map_err(|e| parquet_error(path, &e))?;
        let rows = row_group
            .get_row_iter(None)
            .map_err(|e| parquet_error(path, &e))?;
        for row in rows {
            let row = row.map_err(|e| parquet_error(path, &e))?;
            row_number += 1;
            values.clear();
            values.extend(row.get_column_iter().map(|(_, field)| Value::of(field)));
            builder.push(row_number, |i| {
                values.get(i).map_or(Cell::Missing, Value::cell)
            })?;
        }
    }
    builder.finish()
}

/// Loads a Parquet file and splits it into train and test sets exactly as
/// [`load_csv`](super::load_csv) does a CSV file with the same options.
pub fn load_parquet(path: &Path, options: &CsvOptions) -> Result<Split, DataError> {
    split_table(path, read_parquet(path, options)?, options)
}

#[cfg(test)]
#[path = "parquet_tests.rs"]
mod tests;
