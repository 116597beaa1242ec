//! Round trips through files written here by the `parquet` crate's low-level column writer
//! (its encoder, not the row reader under test), checked against the same table as CSV.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use ::parquet::basic::Compression;
use ::parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DoubleType, FloatType, Int32Type, Int64Type,
};
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::writer::SerializedFileWriter;
use ::parquet::schema::parser::parse_message_type;

use super::*;
use crate::data::{self, DataError, DataSpec};

const SCHEMA: &str = "
    message table {
        required double age;
        optional float dose;
        required int64 visits;
        required boolean smoker;
        required binary patient (UTF8);
        required binary site (UTF8);
        required binary label (UTF8);
    }";

/// Row `i` of the test table; `age` is a multiple of 1/2 so CSV text and a double agree in f32.
fn row(i: usize) -> (f64, Option<f32>, i64, bool, String, String, String) {
    (
        20.0 + 0.5 * i as f64,
        Some(0.1 * (i % 7) as f32 + 1.0 / 3.0),
        (i * i % 11) as i64,
        i.is_multiple_of(3),
        format!("p{i:03}"),
        if i.is_multiple_of(4) { "A" } else { "B" }.to_owned(),
        if (i * 7) % 5 < 2 { "yes" } else { "no" }.to_owned(),
    )
}

fn bytes(values: impl Iterator<Item = String>) -> Vec<ByteArray> {
    values.map(|s| ByteArray::from(s.as_str())).collect()
}

/// Writes rows `0..n` in row groups of `per_group`, with `dose` null at the rows in `nulls`.
fn write_parquet(path: &Path, n: usize, per_group: usize, nulls: &[usize], codec: Compression) {
    let schema = Arc::new(parse_message_type(SCHEMA).unwrap());
    let props = Arc::new(WriterProperties::builder().set_compression(codec).build());
    let mut writer = SerializedFileWriter::new(File::create(path).unwrap(), schema, props).unwrap();
    let all: Vec<usize> = (0..n).collect();
    for chunk in all.chunks(per_group) {
        let rows: Vec<_> = chunk.iter().map(|&i| row(i)).collect();
        let mut group = writer.next_row_group().unwrap();
        let mut index = 0;
        while let Some(mut column) = group.next_column().unwrap() {
            match index {
                0 => {
                    let v: Vec<f64> = rows.iter().map(|r| r.0).collect();
                    column
                        .typed::<DoubleType>()
                        .write_batch(&v, None, None)
                        .unwrap();
                }
                1 => {
                    let present: Vec<bool> = chunk.iter().map(|i| !nulls.contains(i)).collect();
                    let v: Vec<f32> = rows
                        .iter()
                        .zip(&present)
                        .filter(|(_, p)| **p)
                        .map(|(r, _)| r.1.unwrap())
                        .collect();
                    let def: Vec<i16> = present.iter().map(|&p| i16::from(p)).collect();
                    column
                        .typed::<FloatType>()
                        .write_batch(&v, Some(&def), None)
                        .unwrap();
                }
                2 => {
                    let v: Vec<i64> = rows.iter().map(|r| r.2).collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&v, None, None)
                        .unwrap();
                }
                3 => {
                    let v: Vec<bool> = rows.iter().map(|r| r.3).collect();
                    column
                        .typed::<BoolType>()
                        .write_batch(&v, None, None)
                        .unwrap();
                }
                k => {
                    let v = bytes(rows.iter().map(|r| match k {
                        4 => r.4.clone(),
                        5 => r.5.clone(),
                        _ => r.6.clone(),
                    }));
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&v, None, None)
                        .unwrap();
                }
            }
            column.close().unwrap();
            index += 1;
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
}

/// The same rows as CSV text.
fn write_csv(path: &Path, n: usize) {
    let mut text = String::from("age,dose,visits,smoker,patient,site,label\n");
    for i in 0..n {
        let r = row(i);
        text.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            r.0,
            r.1.unwrap(),
            r.2,
            u8::from(r.3),
            r.4,
            r.5,
            r.6
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn load(text: &str) -> Result<Split, DataError> {
    data::load(
        &text
            .parse::<DataSpec>()
            .unwrap_or_else(|e| panic!("{text}: {e}")),
    )
}

#[test]
fn a_parquet_file_loads_exactly_like_the_same_table_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    let (pq, csv) = (dir.path().join("t.parquet"), dir.path().join("t.csv"));
    write_parquet(&pq, 50, 20, &[], Compression::SNAPPY);
    write_csv(&csv, 50);
    let options = "label=label&group=site&test=0.3&seed=5";
    let a = load(&format!("parquet:{}?{options}", pq.display())).unwrap();
    let b = load(&format!("csv:{}?{options}", csv.display())).unwrap();
    assert_eq!(a.info.feature_names, ["age", "dose", "visits", "smoker"]);
    assert_eq!(a.info.skipped_columns, ["patient"]);
    assert_eq!(a.info.class_names, ["no", "yes"]);
    assert_eq!(a.info.feature_names, b.info.feature_names);
    assert_eq!(a.info.standardizer, b.info.standardizer);
    assert_eq!(a.info.groups, b.info.groups);
    for (x, y) in [(&a.train, &b.train), (&a.test, &b.test)] {
        assert_eq!(x.label_vec().unwrap(), y.label_vec().unwrap());
        assert!(x.features.equal(&y.features));
    }
    assert_eq!(a.train.len() + a.test.len(), 50);
}

#[test]
fn every_value_arrives_across_row_groups_and_codecs() {
    let dir = tempfile::tempdir().unwrap();
    for codec in [
        Compression::UNCOMPRESSED,
        Compression::SNAPPY,
        Compression::GZIP(Default::default()),
    ] {
        let path = dir.path().join("t.parquet");
        write_parquet(&path, 23, 4, &[], codec);
        let table = read_parquet(&path, &CsvOptions::new("label")).unwrap();
        assert_eq!(table.rows(), 23);
        for i in 0..23 {
            let r = row(i);
            let want = [
                r.0 as f32,
                r.1.unwrap(),
                r.2 as f32,
                f32::from(u8::from(r.3)),
            ];
            assert_eq!(
                &table.features[4 * i..4 * i + 4],
                &want,
                "{codec:?} row {i}"
            );
            assert_eq!(table.class_names[table.labels[i] as usize], r.6);
        }
    }
}

#[test]
fn malformed_files_get_one_error_naming_the_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    write_parquet(&path, 30, 8, &[26], Compression::SNAPPY);
    let err = load(&format!("parquet:{}?label=label", path.display()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.parquet: data row 27, column `dose`: missing value"),
        "{err}"
    );

    let err = load(&format!("parquet:{}?label=outcome", path.display()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no column named `outcome`") && err.contains("label"),
        "{err}"
    );

    // A CSV file named .parquet, and a Parquet file cut short.
    let fake = dir.path().join("fake.parquet");
    std::fs::write(&fake, "a,b\n1,2\n").unwrap();
    let err = load(&format!("parquet:{}?label=b", fake.display()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fake.parquet: not a readable Parquet file"),
        "{err}"
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&fake, &bytes[..bytes.len() - 40]).unwrap();
    let err = load(&format!("parquet:{}?label=label", fake.display()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fake.parquet: not a readable Parquet file"),
        "{err}"
    );
}

#[test]
fn a_nested_column_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.parquet");
    let schema = parse_message_type(
        "message t {
            optional group tags (LIST) { repeated group list { optional int32 element; } }
            required int32 label;
        }",
    )
    .unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer =
        SerializedFileWriter::new(File::create(&path).unwrap(), Arc::new(schema), props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut index = 0;
    while let Some(mut column) = group.next_column().unwrap() {
        let typed = column.typed::<Int32Type>();
        if index == 0 {
            typed
                .write_batch(&[7, 8], Some(&[3, 3]), Some(&[0, 0]))
                .unwrap();
        } else {
            typed.write_batch(&[0, 1], None, None).unwrap();
        }
        column.close().unwrap();
        index += 1;
    }
    group.close().unwrap();
    writer.close().unwrap();
    let err = load(&format!("parquet:{}?label=label", path.display()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("column `tags` is nested"), "{err}");
}

#[test]
fn the_spec_takes_the_csv_options() {
    let spec: DataSpec = "parquet:t.parquet?label=y&drop=a,b&standardize=false"
        .parse()
        .unwrap();
    assert_eq!(spec.kind(), "parquet");
    assert_eq!(
        spec.to_string(),
        "parquet:t.parquet?label=y&standardize=false&drop=a,b"
    );
    let err = "parquet:t.parquet"
        .parse::<DataSpec>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("`parquet` needs `label=COLUMN`"), "{err}");
}
