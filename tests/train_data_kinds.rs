//! `cohort train` end to end on each data kind added for issue 24: the real binary, on files
//! written here by independent writers (the `image` crate's PNG encoder, the `parquet`
//! crate's column writer), reaches a test accuracy that only learning explains.
// Test code: helpers may panic on fixture errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use image::{ImageBuffer, Luma};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// Runs `cohort train --json` with a fixed noise multiplier, a fresh ledger and the given data
/// and model; returns the parsed report (the test fails with stderr if the command did).
fn train(dir: &Path, data: &str, model: &str, extra: &[&str]) -> serde_json::Value {
    let out = dir.join("weights.safetensors");
    let ledger = dir.join("ledger.jsonl");
    let mut args = vec![
        "train",
        "--data",
        data,
        "--model",
        model,
        "--noise-multiplier",
        "0.5",
        "--clip",
        "1",
        "--budget",
        "100",
        "--out",
        out.to_str().unwrap(),
        "--ledger",
        ledger.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let output = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .env_remove("COHORT_LEDGER")
        .args(&args)
        .output()
        .expect("cohort runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stderr}");
    assert!(out.exists(), "no weights written");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Shown with `--nocapture`; examples/README.md quotes these lines.
    eprintln!(
        "cohort {}
{}",
        args.join(" "),
        stdout.trim()
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn trains_on_a_folder_of_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    // Two classes told apart by where the bright square is: left half or right half.
    for (class, offset) in [("left", 0u32), ("right", 8u32)] {
        std::fs::create_dir_all(images.join(class)).unwrap();
        for k in 0..60u32 {
            let image = ImageBuffer::from_fn(16, 16, |x, y| {
                let inside = (offset..offset + 8).contains(&x) && (4..12).contains(&y);
                Luma([if inside {
                    200
                } else {
                    ((x * 3 + y * 5 + k) % 40) as u8
                }])
            });
            image
                .save(images.join(class).join(format!("{k}.png")))
                .unwrap();
        }
    }
    let data = format!("images:{}?size=8x8&color=gray&seed=1", images.display());
    let report = train(
        dir.path(),
        &data,
        "logistic",
        &["--epochs", "8", "--batch", "32", "--lr", "0.5"],
    );
    assert_eq!(report["test_examples"].as_i64(), Some(24));
    let accuracy = report["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "accuracy {accuracy}: {report}");
}

#[test]
fn trains_on_a_parquet_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sites.parquet");
    let schema = Arc::new(
        parse_message_type(
            "message t { required double x; required double noise; required binary site (UTF8);
                         required binary label (UTF8); }",
        )
        .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut writer =
        SerializedFileWriter::new(File::create(&path).unwrap(), schema, props).unwrap();
    // 400 rows in 4 row groups; the label is the sign of x.
    for group_start in (0..400).step_by(100) {
        let rows: Vec<usize> = (group_start..group_start + 100).collect();
        let x: Vec<f64> = rows
            .iter()
            .map(|&i| ((i * 37) % 200) as f64 - 99.5)
            .collect();
        let noise: Vec<f64> = rows.iter().map(|&i| ((i * 13) % 17) as f64).collect();
        let site: Vec<ByteArray> = rows
            .iter()
            .map(|&i| ByteArray::from(if i.is_multiple_of(2) { "a" } else { "b" }))
            .collect();
        let label: Vec<ByteArray> = x
            .iter()
            .map(|&v| ByteArray::from(if v > 0.0 { "high" } else { "low" }))
            .collect();
        let mut group = writer.next_row_group().unwrap();
        let mut index = 0;
        while let Some(mut column) = group.next_column().unwrap() {
            match index {
                0 => {
                    column
                        .typed::<DoubleType>()
                        .write_batch(&x, None, None)
                        .unwrap();
                }
                1 => {
                    column
                        .typed::<DoubleType>()
                        .write_batch(&noise, None, None)
                        .unwrap();
                }
                2 => {
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&site, None, None)
                        .unwrap();
                }
                _ => {
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&label, None, None)
                        .unwrap();
                }
            }
            column.close().unwrap();
            index += 1;
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
    let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 4);
    let data = format!(
        "parquet:{}?label=label&group=site&test=0.25",
        path.display()
    );
    let report = train(
        dir.path(),
        &data,
        "logistic",
        &["--epochs", "5", "--batch", "64"],
    );
    assert_eq!(report["test_examples"].as_i64(), Some(100));
    let accuracy = report["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "accuracy {accuracy}: {report}");
}

#[test]
fn trains_on_time_series_windows_split_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vitals.csv");
    // Three series of a periodic signal; the class is whether the next value is high, which a
    // window shows by whether the signal is rising.
    let wave = [0, 1, 2, 3, 2, 1];
    let mut text = String::from("device,step,signal,state\n");
    for (device, phase) in [("d1", 0), ("d2", 2), ("d3", 4)] {
        for step in 0..120 {
            let now = wave[(step + phase) % 6];
            let state = if now >= 2 { "high" } else { "low" };
            text.push_str(&format!("{device},{step},{now},{state}\n"));
        }
    }
    std::fs::write(&path, text).unwrap();
    let data = format!(
        "timeseries:{}?target=state&target_type=class&window=4&group=device&time=step&test=0.25",
        path.display()
    );
    let report = train(
        dir.path(),
        &data,
        "logistic",
        &["--epochs", "10", "--batch", "32", "--lr", "0.5"],
    );
    // Per series: cut at 90, train windows end at 3..=88, test windows at 93..=118.
    assert_eq!(report["test_examples"].as_i64(), Some(3 * 26));
    let accuracy = report["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "accuracy {accuracy}: {report}");
}

/// Identifying values written into every DICOM file; none may reach any output.
const PHI: [&str; 4] = [
    "Doe^Jane",
    "PHI-ID-93417",
    "19610427",
    "St Example Hospital",
];

#[test]
fn trains_on_dicom_slices_and_no_phi_reaches_any_output() {
    use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    let dir = tempfile::tempdir().unwrap();
    let scans = dir.path().join("scans");
    std::fs::create_dir_all(&scans).unwrap();
    let mut manifest = String::from("file,label\n");
    // 8×8 CT-like slices, HU = stored − 1024: "lesion" slices have a bright 4×4 block in the
    // top-left corner, "clear" ones in the bottom-right.
    for k in 0..80u16 {
        let lesion = k.is_multiple_of(2);
        let stored: Vec<u16> = (0..64u16)
            .map(|i| {
                let (r, c) = (i / 8, i % 8);
                let top_left = r < 4 && c < 4;
                let bright = if lesion { top_left } else { r >= 4 && c >= 4 };
                if bright {
                    1024 + 200 + k % 7
                } else {
                    1024 - 50 + k % 5
                }
            })
            .collect();
        let object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, format!("2.25.4242{k}")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PHI[0]),
            DataElement::new(tags::PATIENT_ID, VR::LO, PHI[1]),
            DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PHI[2]),
            DataElement::new(tags::INSTITUTION_NAME, VR::LO, PHI[3]),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, dicom_value!(U16, [1])),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            DataElement::new(tags::ROWS, VR::US, dicom_value!(U16, [8])),
            DataElement::new(tags::COLUMNS, VR::US, dicom_value!(U16, [8])),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, dicom_value!(U16, [16])),
            DataElement::new(tags::BITS_STORED, VR::US, dicom_value!(U16, [16])),
            DataElement::new(tags::HIGH_BIT, VR::US, dicom_value!(U16, [15])),
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, dicom_value!(U16, [0])),
            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, "1"),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(stored.into())),
        ]);
        let name = format!("slice{k:03}.dcm");
        object
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap()
            .write_to_file(scans.join(&name))
            .unwrap();
        manifest.push_str(&format!(
            "{name},{}\n",
            if lesion { "lesion" } else { "clear" }
        ));
    }
    std::fs::write(scans.join("labels.csv"), manifest).unwrap();
    let data = format!(
        "dicom:{}?labels=labels.csv&size=8&window=40,400&seed=2",
        scans.display()
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let report = train(
        &out,
        &data,
        "logistic",
        &["--epochs", "6", "--batch", "16", "--lr", "0.5"],
    );
    assert_eq!(report["test_examples"].as_i64(), Some(16));
    let accuracy = report["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "accuracy {accuracy}: {report}");

    // The same run without --json, for the human-readable lines, and a failing one.
    let output = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .env_remove("COHORT_LEDGER")
        .args([
            "train",
            "--data",
            &data,
            "--model",
            "logistic",
            "--noise-multiplier",
            "0.5",
            "--epochs",
            "1",
            "--batch",
            "16",
            "--ledger",
            out.join("ledger.jsonl").to_str().unwrap(),
            "--out",
            out.join("w2.safetensors").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut texts = vec![
        report.to_string(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ];
    std::fs::remove_file(scans.join("slice000.dcm")).unwrap();
    let failed = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args([
            "train",
            "--data",
            &data,
            "--model",
            "logistic",
            "--noise-multiplier",
            "0.5",
            "--out",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(2));
    let failure = String::from_utf8_lossy(&failed.stderr).into_owned();
    assert!(
        failure.contains("labels.csv") && failure.contains("names no DICOM file"),
        "{failure}"
    );
    texts.push(failure);
    // Every file the runs wrote: weights and the ledger.
    for entry in std::fs::read_dir(&out).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    for text in &texts {
        for value in PHI {
            assert!(!text.contains(value), "PHI {value:?} leaked into: {text}");
        }
    }
}
