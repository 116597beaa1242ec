//! DICOM images with labels from a CSV manifest; identifying tags never leave this module.
//!
//! Every non-hidden file under the directory (recursively, except the manifest itself and
//! `DICOMDIR` indexes) must be a DICOM Part 10 file with one grayscale frame
//! (`MONOCHROME1`/`MONOCHROME2`, 8 or 16 bits allocated, signed or unsigned) in an uncompressed
//! little-endian transfer syntax; compressed ones are an error that names the transfer syntax
//! UID, since their codecs would cost every build. Stored values are masked to Bits Stored,
//! mapped to modality units with Rescale Slope/Intercept (e.g. Hounsfield units), windowed with
//! the spec's `window=C,W` or else the file's first Window Center/Width (DICOM PS3.3 C.11.2.1.2,
//! linear), inverted for `MONOCHROME1`, resized bilinearly to the spec's size and kept in
//! `[0, 1]`. Examples are `[N, 1, H, W]`.
//!
//! Labels come from a CSV manifest with a `label` column and a key column, `sop_instance_uid`
//! or `file` (a path relative to the directory). Every image needs exactly one label and every
//! manifest row one image.
//!
//! **Privacy.** The loader reads only the pixel module, rescale, window, transfer syntax and
//! (to match a manifest) the SOP Instance UID. No tag value reaches an error, a log line or the
//! returned [`Split`]: messages name the file path and the attribute, never its value (the
//! SOP Instance UID is an identifier under DICOM's confidentiality profile, so it is not
//! printed either), and the `dicom` crates' own error texts are not passed on. A test writes
//! files with patient name, id, birth date and institution set and checks that none of them
//! appears in any output or error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, Tag};
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::query::{MAX_SIDE, Options, RESERVED, encode, parse_size};
use super::split::split_indices;
use super::table::{class_order, default_test_fraction};
use super::{DataError, DataInfo, Dataset, Split};

/// Uncompressed little-endian transfer syntaxes: implicit and explicit VR.
const NATIVE_SYNTAXES: [&str; 2] = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"];

/// How to read a DICOM folder (the options of a `dicom:` [`DataSpec`](super::DataSpec)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomOptions {
    /// The label manifest; a relative path is relative to the DICOM directory.
    pub labels: PathBuf,
    /// Height every image is resized to, in pixels.
    pub height: u32,
    /// Width every image is resized to, in pixels.
    pub width: u32,
    /// Window center and width in modality units; `None` uses each file's own.
    #[serde(default)]
    pub window: Option<(f64, f64)>,
    /// Fraction of images held out for testing, in `(0, 1)`.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Seed of the train/test split.
    #[serde(default)]
    pub seed: u64,
}

impl DicomOptions {
    /// The option keys of a `dicom:` spec.
    pub(crate) const ACCEPTED: &'static str = "labels, size, window, test, seed";

    pub(crate) fn from_query(options: &mut Options<'_>) -> Result<Self, DataError> {
        let labels = options.require(
            "labels",
            "`labels=FILE.csv`, the label manifest (relative to the directory)",
        )?;
        let size = options.require("size", "`size=HxW` (or `size=N`), the pixel size")?;
        let (height, width) = parse_size(&size).ok_or_else(|| {
            options.error(format!(
                "`size={size}`: expected HxW such as 64x64, or N, with sides from 1 to {MAX_SIDE}"
            ))
        })?;
        let window = match options.take_list("window")?.as_slice() {
            [] => None,
            [center, width] => match (center.parse::<f64>(), width.parse::<f64>()) {
                (Ok(c), Ok(w)) if c.is_finite() && w.is_finite() && w >= 1.0 => Some((c, w)),
                _ => {
                    return Err(options.error(format!(
                        "`window={center},{width}`: expected CENTER,WIDTH numbers with WIDTH ≥ 1"
                    )));
                }
            },
            _ => {
                return Err(options.error(
                    "`window` takes two numbers, CENTER,WIDTH (e.g. window=40,400 for CT soft \
                     tissue)",
                ));
            }
        };
        let test_fraction = options.take_fraction(default_test_fraction())?;
        let seed = options.take_parsed("seed", "a whole number")?.unwrap_or(0);
        Ok(Self {
            labels: PathBuf::from(labels),
            height,
            width,
            window,
            test_fraction,
            seed,
        })
    }

    pub(crate) fn write_query(&self, out: &mut Vec<String>) {
        out.push(format!(
            "labels={}",
            encode(&self.labels.to_string_lossy(), &RESERVED)
        ));
        out.push(format!("size={}x{}", self.height, self.width));
        if let Some((center, width)) = self.window {
            out.push(format!("window={center},{width}"));
        }
        if self.test_fraction != default_test_fraction() {
            out.push(format!("test={}", self.test_fraction));
        }
        if self.seed != 0 {
            out.push(format!("seed={}", self.seed));
        }
    }
}

fn dicom_error(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Dicom {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Every candidate file under `dir`, sorted, skipping hidden entries, `DICOMDIR` and `skip`.
fn walk(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().first() == Some(&b'.') || name == "DICOMDIR" {
            continue;
        }
        entries.push(entry.path());
    }
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, skip, out)?;
        } else if path != skip {
            out.push(path);
        }
    }
    Ok(())
}

/// What one file contributes: its pixels (already windowed and resized) and its keys.
struct Decoded {
    pixels: Vec<f32>,
    sop_instance_uid: Option<String>,
}

/// A required attribute as an unsigned number.
fn uint(object: &DefaultDicomObject, path: &Path, tag: Tag, name: &str) -> Result<u32, DataError> {
    object
        .element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
        .ok_or_else(|| dicom_error(path, format!("{name} is missing or not a whole number")))
}

/// An optional attribute's first numeric value.
fn first_number(object: &DefaultDicomObject, tag: Tag) -> Option<f64> {
    let element = object.element_opt(tag).ok().flatten()?;
    element.to_multi_float64().ok()?.first().copied()
}

/// The stored values as integers, masked to Bits Stored and sign-extended when signed.
fn stored_values(
    object: &DefaultDicomObject,
    path: &Path,
    count: usize,
    bits_allocated: u32,
    bits_stored: u32,
    signed: bool,
) -> Result<Vec<i32>, DataError> {
    let element = object
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| dicom_error(path, "there is no Pixel Data; expected an image"))?;
    let raw: Vec<u32> = match (element.value(), bits_allocated) {
        (Value::Primitive(PrimitiveValue::U8(bytes)), 8) => {
            bytes.iter().map(|&b| u32::from(b)).collect()
        }
        (Value::Primitive(PrimitiveValue::U8(bytes)), 16) => bytes
            .chunks_exact(2)
            .map(|pair| u32::from(u16::from_le_bytes([pair[0], pair[1]])))
            .collect(),
        (Value::Primitive(PrimitiveValue::U16(words)), 16) => {
            words.iter().map(|&w| u32::from(w)).collect()
        }
        (Value::Primitive(PrimitiveValue::I16(words)), 16) => words
            .iter()
            .map(|&w| u32::from(w.cast_unsigned()))
            .collect(),
        (Value::PixelSequence(_), _) => {
            return Err(dicom_error(
                path,
                "Pixel Data is encapsulated (compressed); expected native pixel data",
            ));
        }
        _ => {
            return Err(dicom_error(
                path,
                format!(
                    "Pixel Data does not match Bits Allocated = {bits_allocated}; expected 8- \
                     or 16-bit samples"
                ),
            ));
        }
    };
    if raw.len() < count {
        return Err(dicom_error(
            path,
            format!(
                "Pixel Data holds {} samples but Rows × Columns is {count}; the file is cut \
                 short or its dimensions are wrong",
                raw.len()
            ),
        ));
    }
    let mask = if bits_stored >= 32 {
        u32::MAX
    } else {
        (1u32 << bits_stored) - 1
    };
    let sign_bit = 1u32 << (bits_stored - 1);
    Ok(raw[..count]
        .iter()
        .map(|&v| {
            let v = v & mask;
            if signed && v & sign_bit != 0 {
                i32::try_from(i64::from(v) - (1i64 << bits_stored)).unwrap_or(i32::MIN)
            } else {
                i32::try_from(v).unwrap_or(i32::MAX)
            }
        })
        .collect())
}

/// The DICOM linear VOI function (PS3.3 C.11.2.1.2.1) onto `[0, 1]`.
pub(crate) fn window_linear(x: f64, center: f64, width: f64) -> f64 {
    let low = center - 0.5 - (width - 1.0) / 2.0;
    let high = center - 0.5 + (width - 1.0) / 2.0;
    if x <= low {
        0.0
    } else if x > high {
        1.0
    } else {
        (x - (center - 0.5)) / (width - 1.0) + 0.5
    }
}

/// Reads one file: checks, rescale, window, resize. Errors name the attribute, never a value.
fn decode(path: &Path, options: &DicomOptions) -> Result<Decoded, DataError> {
    let object = dicom_object::open_file(path).map_err(|_| {
        dicom_error(
            path,
            "not a readable DICOM file; expected the 128-byte preamble, `DICM`, a file meta \
             group and a data set",
        )
    })?;
    let syntax = object
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' ']);
    if !NATIVE_SYNTAXES.contains(&syntax) {
        return Err(dicom_error(
            path,
            format!(
                "transfer syntax {syntax} is not supported; expected uncompressed little-endian \
                 (1.2.840.10008.1.2 or 1.2.840.10008.1.2.1): decompress the file first, e.g. \
                 with `gdcmconv --raw`"
            ),
        ));
    }
    let photometric = object
        .element_opt(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_owned()))
        .unwrap_or_default();
    let invert = match photometric.as_str() {
        "MONOCHROME2" => false,
        "MONOCHROME1" => true,
        _ => {
            return Err(dicom_error(
                path,
                "Photometric Interpretation is not MONOCHROME1 or MONOCHROME2; expected a \
                 grayscale image",
            ));
        }
    };
    if let Some(samples) = first_number(&object, tags::SAMPLES_PER_PIXEL)
        && samples != 1.0
    {
        return Err(dicom_error(
            path,
            "Samples per Pixel is not 1; expected grayscale",
        ));
    }
    if let Some(frames) = first_number(&object, tags::NUMBER_OF_FRAMES)
        && frames > 1.0
    {
        return Err(dicom_error(
            path,
            "Number of Frames is above 1; expected one image per file",
        ));
    }
    let rows = uint(&object, path, tags::ROWS, "Rows")?;
    let columns = uint(&object, path, tags::COLUMNS, "Columns")?;
    let bits_allocated = uint(&object, path, tags::BITS_ALLOCATED, "Bits Allocated")?;
    let bits_stored = uint(&object, path, tags::BITS_STORED, "Bits Stored")?;
    let signed = uint(
        &object,
        path,
        tags::PIXEL_REPRESENTATION,
        "Pixel Representation",
    )? == 1;
    if rows == 0 || columns == 0 || !(1..=bits_allocated).contains(&bits_stored) {
        return Err(dicom_error(
            path,
            "Rows, Columns or Bits Stored is out of range; expected positive sizes and \
             1 ≤ Bits Stored ≤ Bits Allocated",
        ));
    }
    let count = rows as usize * columns as usize;
    let stored = stored_values(&object, path, count, bits_allocated, bits_stored, signed)?;
    let slope = first_number(&object, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = first_number(&object, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    let (center, width) = match options.window {
        Some(window) => window,
        None => match (
            first_number(&object, tags::WINDOW_CENTER),
            first_number(&object, tags::WINDOW_WIDTH),
        ) {
            (Some(c), Some(w)) if w >= 1.0 => (c, w),
            _ => {
                return Err(dicom_error(
                    path,
                    "no usable Window Center/Width in the file; give the spec a \
                     `window=CENTER,WIDTH` in modality units",
                ));
            }
        },
    };
    #[allow(clippy::cast_possible_truncation)]
    let windowed: Vec<f32> = stored
        .iter()
        .map(|&v| {
            let y = window_linear(f64::from(v) * slope + intercept, center, width);
            (if invert { 1.0 - y } else { y }) as f32
        })
        .collect();
    let image: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(columns, rows, windowed)
        .ok_or_else(|| {
            dicom_error(
                path,
                "Rows × Columns does not match the decoded pixel count",
            )
        })?;
    let pixels = if image.dimensions() == (options.width, options.height) {
        image.into_raw()
    } else {
        imageops::resize(&image, options.width, options.height, FilterType::Triangle).into_raw()
    };
    let sop_instance_uid = object
        .element_opt(tags::SOP_INSTANCE_UID)
        .ok()
        .flatten()
        .and_then(|e| {
            e.to_str()
                .ok()
                .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        });
    Ok(Decoded {
        pixels,
        sop_instance_uid,
    })
}

/// How the manifest names an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    SopInstanceUid,
    File,
}

/// The label manifest as read.
#[derive(Debug)]
struct Manifest {
    /// How rows name images.
    key: Key,
    /// Key → (label, line of the row).
    labels: HashMap<String, (String, u64)>,
}

/// Reads the label manifest.
fn read_labels(manifest: &Path) -> Result<Manifest, DataError> {
    let file = std::fs::File::open(manifest).map_err(|e| DataError::io(manifest, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
    let csv_error = |e: csv::Error| DataError::Csv {
        path: manifest.to_path_buf(),
        line: e.position().map_or(0, csv::Position::line),
        reason: "not a well-formed CSV label manifest".to_owned(),
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(str::to_owned)
        .collect();
    let at = |name: &str| header.iter().position(|h| h == name);
    let label_at = at("label").ok_or_else(|| DataError::MissingColumn {
        path: manifest.to_path_buf(),
        column: "label".to_owned(),
        available: header.clone(),
    })?;
    let (key, key_at) = match (at("sop_instance_uid"), at("file")) {
        (Some(i), None) => (Key::SopInstanceUid, i),
        (None, Some(i)) => (Key::File, i),
        _ => {
            return Err(DataError::Csv {
                path: manifest.to_path_buf(),
                line: 1,
                reason: "the header needs exactly one key column, `sop_instance_uid` or \
                         `file`, beside `label`"
                    .to_owned(),
            });
        }
    };
    let mut labels = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, csv::Position::line);
        let key_text = record.get(key_at).unwrap_or("");
        let label = record.get(label_at).unwrap_or("");
        if key_text.is_empty() || label.is_empty() {
            return Err(DataError::Csv {
                path: manifest.to_path_buf(),
                line,
                reason: "an empty key or label; every row needs both".to_owned(),
            });
        }
        let previous = labels.insert(key_text.to_owned(), (label.to_owned(), line));
        if let Some((_, first)) = previous {
            return Err(DataError::Csv {
                path: manifest.to_path_buf(),
                line,
                reason: format!("this row's key is already on line {first}; keys must be unique"),
            });
        }
    }
    Ok(Manifest { key, labels })
}

/// Loads a DICOM directory with its label manifest.
pub fn load_dicom(dir: &Path, options: &DicomOptions) -> Result<Split, DataError> {
    if !dir.is_dir() {
        return Err(dicom_error(
            dir,
            "expected a directory of DICOM files (with the label manifest)",
        ));
    }
    let manifest = dir.join(&options.labels);
    let Manifest { key, mut labels } = read_labels(&manifest)?;
    let mut files = Vec::new();
    walk(dir, &manifest, &mut files)?;
    let decoded: Vec<Result<Decoded, DataError>> =
        files.par_iter().map(|path| decode(path, options)).collect();
    let mut pixels =
        Vec::with_capacity(files.len() * options.height as usize * options.width as usize);
    let mut names = Vec::with_capacity(files.len());
    for (path, result) in files.iter().zip(decoded) {
        let image = result?;
        let lookup = match key {
            Key::File => path
                .strip_prefix(dir)
                .ok()
                .and_then(|p| p.to_str())
                .map(str::to_owned),
            Key::SopInstanceUid => image.sop_instance_uid,
        };
        let label = lookup.and_then(|k| labels.remove(&k)).ok_or_else(|| {
            dicom_error(
                path,
                format!(
                    "no row of {} names this file (matched by {}); every image needs a label",
                    manifest.display(),
                    match key {
                        Key::File => "its path relative to the directory",
                        Key::SopInstanceUid => "its SOP Instance UID",
                    }
                ),
            )
        })?;
        pixels.extend_from_slice(&image.pixels);
        names.push(label.0);
    }
    if let Some(line) = labels.values().map(|(_, line)| *line).min() {
        return Err(DataError::Csv {
            path: manifest,
            line,
            reason: "this row names no DICOM file in the directory; every manifest row needs \
                     its image"
                .to_owned(),
        });
    }
    let order = class_order(names.iter().map(String::as_str));
    if order.len() < 2 {
        return Err(DataError::Csv {
            path: manifest,
            line: 0,
            reason: "the labels have one distinct value; a classifier needs two".to_owned(),
        });
    }
    let index: HashMap<&str, i64> = order.iter().copied().zip(0..).collect();
    let classes: Vec<i64> = names
        .iter()
        .map(|n| index.get(n.as_str()).copied().unwrap_or(0))
        .collect();
    let n = classes.len();
    let (train_rows, test_rows) = split_indices(n, options.test_fraction, options.seed)?;
    if train_rows.is_empty() || test_rows.is_empty() {
        return Err(DataError::Empty {
            what: format!("the split of {}", dir.display()),
            hint: format!("{n} image(s) cannot be split into train and test; add images"),
        });
    }
    let shape = [
        i64::try_from(n).unwrap_or(i64::MAX),
        1,
        i64::from(options.height),
        i64::from(options.width),
    ];
    let all = Dataset {
        features: Tensor::from_slice(&pixels).f_view(shape)?,
        labels: Tensor::from_slice(&classes),
        num_classes: i64::try_from(order.len()).unwrap_or(i64::MAX),
    };
    Ok(Split {
        train: all.select(&train_rows)?,
        test: all.select(&test_rows)?,
        info: DataInfo {
            class_names: order.into_iter().map(str::to_owned).collect(),
            ..DataInfo::default()
        },
    })
}

#[cfg(test)]
#[path = "dicom_tests.rs"]
mod tests;
