//! Files written here with `dicom-object`'s writer (its encoder, not the reader under test),
//! with patient-identifying tags set, so every check also looks for leaked PHI.

use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::*;
use crate::data::{self, DataSpec};

/// Identifying values written into every file; none may appear in any output.
const PHI: [&str; 5] = [
    "Doe^Jane",
    "PHI-ID-93417",
    "19610427",
    "St Example Hospital",
    "Dr^Who^Referring",
];

/// One CT-like slice: signed 16-bit stored values (12 stored bits), HU = 1·v − 1024.
struct Slice<'a> {
    uid: &'a str,
    rows: u16,
    columns: u16,
    stored: Vec<i16>,
    window: Option<(&'a str, &'a str)>,
    photometric: &'a str,
}

impl Slice<'_> {
    fn write(&self, path: &Path) {
        let mut elements = vec![
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, self.uid),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PHI[0]),
            DataElement::new(tags::PATIENT_ID, VR::LO, PHI[1]),
            DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PHI[2]),
            DataElement::new(tags::INSTITUTION_NAME, VR::LO, PHI[3]),
            DataElement::new(tags::REFERRING_PHYSICIAN_NAME, VR::PN, PHI[4]),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, dicom_value!(U16, [1])),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, self.photometric),
            DataElement::new(tags::ROWS, VR::US, dicom_value!(U16, [self.rows])),
            DataElement::new(tags::COLUMNS, VR::US, dicom_value!(U16, [self.columns])),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, dicom_value!(U16, [16])),
            DataElement::new(tags::BITS_STORED, VR::US, dicom_value!(U16, [12])),
            DataElement::new(tags::HIGH_BIT, VR::US, dicom_value!(U16, [11])),
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, dicom_value!(U16, [1])),
            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, "1"),
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(self.stored.iter().map(|&v| v.cast_unsigned()).collect()),
            ),
        ];
        if let Some((center, width)) = self.window {
            elements.push(DataElement::new(tags::WINDOW_CENTER, VR::DS, center));
            elements.push(DataElement::new(tags::WINDOW_WIDTH, VR::DS, width));
        }
        InMemDicomObject::from_element_iter(elements)
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap()
            .write_to_file(path)
            .unwrap();
    }
}

/// Stored values for HU −1000, 40, 1000, 0 (stored = HU + 1024; 12-bit two's complement).
fn ct(uid: &str) -> Slice<'_> {
    Slice {
        uid,
        rows: 2,
        columns: 2,
        stored: vec![24, 1064, 2024, 1024],
        window: Some(("40", "400")),
        photometric: "MONOCHROME2",
    }
}

fn assert_no_phi(text: &str) {
    for value in PHI {
        assert!(!text.contains(value), "PHI {value:?} leaked into: {text}");
    }
}

fn load(text: &str) -> Result<Split, DataError> {
    data::load(
        &text
            .parse::<DataSpec>()
            .unwrap_or_else(|e| panic!("{text}: {e}")),
    )
}

fn load_err(text: &str) -> String {
    let err = load(text).map(|s| s.train.len()).unwrap_err().to_string();
    assert_no_phi(&err);
    err
}

/// A folder of four slices (two per class) in subfolders, labelled by SOP Instance UID.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("study/series")).unwrap();
    let mut manifest = String::from("sop_instance_uid,label\n");
    for k in 0..4 {
        let uid = format!("2.25.1000{k}");
        let mut slice = ct(&uid);
        if k % 2 == 1 {
            slice.stored.reverse();
        }
        slice.write(&dir.path().join(format!("study/series/IM{k}")));
        manifest.push_str(&format!("{uid},{}\n", if k % 2 == 1 { "b" } else { "a" }));
    }
    std::fs::write(dir.path().join("labels.csv"), manifest).unwrap();
    dir
}

#[test]
fn the_linear_window_matches_the_standard() {
    // PS3.3 C.11.2.1.2.1 with c = 40, w = 400: below −160 → 0, above 239 → 1.
    assert_eq!(window_linear(-1000.0, 40.0, 400.0), 0.0);
    assert_eq!(window_linear(1000.0, 40.0, 400.0), 1.0);
    assert!((window_linear(40.0, 40.0, 400.0) - (0.5 / 399.0 + 0.5)).abs() < 1e-12);
    assert!((window_linear(0.0, 40.0, 400.0) - (-39.5 / 399.0 + 0.5)).abs() < 1e-12);
}

#[test]
fn slices_round_trip_through_rescale_window_and_labels_without_phi() {
    let dir = folder();
    let split = load(&format!(
        "dicom:{}?labels=labels.csv&size=2&test=0.5",
        dir.path().display()
    ))
    .unwrap();
    assert_eq!(split.train.features.size(), [2, 1, 2, 2]);
    assert_eq!(split.info.class_names, ["a", "b"]);
    let mut got = Vec::new();
    for side in [&split.train, &split.test] {
        for (i, label) in side.label_vec().unwrap().into_iter().enumerate() {
            let pixels: Vec<f32> =
                Vec::try_from(&side.features.get(i as i64).flatten(0, -1)).unwrap();
            got.push((label, pixels));
        }
    }
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let forward = [0.0, 0.5 / 399.0 + 0.5, 1.0, -39.5 / 399.0 + 0.5];
    let backward: Vec<f64> = forward.iter().rev().copied().collect();
    for (label, pixels) in &got {
        let want: &[f64] = if *label == 0 { &forward } else { &backward };
        for (g, w) in pixels.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{pixels:?} vs {want:?}");
        }
    }
    assert_no_phi(&format!("{:?}", split.info));
    assert_no_phi(&format!("{split:?}"));
}

#[test]
fn the_spec_window_overrides_the_file_and_monochrome1_inverts() {
    let dir = tempfile::tempdir().unwrap();
    let mut plain = ct("2.25.1");
    plain.window = None;
    plain.write(&dir.path().join("a.dcm"));
    let mut inverted = ct("2.25.2");
    inverted.photometric = "MONOCHROME1";
    inverted.write(&dir.path().join("b.dcm"));
    std::fs::write(
        dir.path().join("labels.csv"),
        "file,label\na.dcm,x\nb.dcm,y\n",
    )
    .unwrap();
    let base = format!(
        "dicom:{}?labels=labels.csv&size=2&test=0.5",
        dir.path().display()
    );

    // No window in the file and none in the spec: an error that says what to add.
    let err = load_err(&base);
    assert!(
        err.contains("a.dcm") && err.contains("window=CENTER,WIDTH"),
        "{err}"
    );

    // window=0,2001 spans HU −1000.5 … 999.5: HU 1000 saturates, the rest are linear.
    let split = load(&format!("{base}&window=0,2001")).unwrap();
    for side in [&split.train, &split.test] {
        let label = side.label_vec().unwrap()[0];
        let pixels: Vec<f32> = Vec::try_from(&side.features.flatten(0, -1)).unwrap();
        let plain = [0.00025f32, 0.52025, 1.0, 0.50025];
        for (k, (g, w)) in pixels.iter().zip(plain).enumerate() {
            let w = if label == 0 { w } else { 1.0 - w };
            assert!((g - w).abs() < 1e-6, "label {label} pixel {k}: {g} vs {w}");
        }
    }
}

#[test]
fn malformed_folders_get_one_error_without_phi() {
    let dir = folder();
    let spec = format!("dicom:{}?labels=labels.csv&size=2", dir.path().display());

    // A stray non-DICOM file.
    let stray = dir.path().join("study/notes.txt");
    std::fs::write(&stray, "Doe^Jane was here").unwrap();
    let err = load(&spec).unwrap_err().to_string();
    assert!(
        err.contains("notes.txt") && err.contains("not a readable DICOM file"),
        "{err}"
    );
    std::fs::remove_file(&stray).unwrap();

    // A compressed transfer syntax: the meta group's UID rewritten in place (same length) to
    // RLE Lossless, whose codec this build leaves out.
    let compressed = dir.path().join("study/rle.dcm");
    ct("2.25.77").write(&compressed);
    let bytes = std::fs::read(&compressed).unwrap();
    let from = b"1.2.840.10008.1.2.1\0";
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    let mut patched = bytes.clone();
    patched[at..at + from.len()].copy_from_slice(b"1.2.840.10008.1.2.5\0");
    std::fs::write(&compressed, patched).unwrap();
    let err = load_err(&spec);
    assert!(
        err.contains("rle.dcm") && err.contains("1.2.840.10008.1.2.5"),
        "{err}"
    );
    std::fs::remove_file(&compressed).unwrap();

    // An image with no manifest row, and a manifest row with no image.
    ct("2.25.555").write(&dir.path().join("study/extra"));
    let err = load_err(&spec);
    assert!(
        err.contains("extra") && err.contains("needs a label"),
        "{err}"
    );
    assert!(
        !err.contains("2.25.555"),
        "the SOP Instance UID leaked: {err}"
    );
    std::fs::remove_file(dir.path().join("study/extra")).unwrap();
    let manifest = dir.path().join("labels.csv");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("2.25.999,a\n");
    std::fs::write(&manifest, &text).unwrap();
    let err = load_err(&spec);
    assert!(
        err.contains("line 6") && err.contains("names no DICOM file"),
        "{err}"
    );

    // Pixel Data shorter than Rows × Columns.
    std::fs::write(&manifest, text.replace("2.25.999,a\n", "")).unwrap();
    let mut short = ct("2.25.10000");
    short.rows = 3;
    short.write(&dir.path().join("study/series/IM0"));
    let err = load_err(&spec);
    assert!(err.contains("IM0") && err.contains("cut short"), "{err}");
}

#[test]
fn the_spec_round_trips_and_checks_its_options() {
    let text = "dicom:scans?labels=labels.csv&size=64x32&window=40,400&test=0.3&seed=2";
    let spec: DataSpec = text.parse().unwrap();
    assert_eq!(spec.to_string(), text);
    for (bad, says) in [
        ("dicom:scans?size=64", "labels=FILE.csv"),
        ("dicom:scans?labels=l.csv", "size=HxW"),
        ("dicom:scans?labels=l.csv&size=8&window=40", "CENTER,WIDTH"),
        ("dicom:scans?labels=l.csv&size=8&window=40,0", "WIDTH ≥ 1"),
    ] {
        let err = bad.parse::<DataSpec>().unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}
