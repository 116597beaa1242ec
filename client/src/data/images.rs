//! Image classification sets: a folder per class, or a CSV manifest of `path,label`.
//!
//! Files are PNG or JPEG, recognised by their first bytes rather than their name (a `.png`
//! that is really a JPEG still decodes; a text file named `.png` is an error). Every image is
//! converted to the spec's colour mode (`gray` uses the `image` crate's BT.709 luma weights),
//! resized to the spec's `H×W` with a bilinear (triangle) filter when its size differs, and
//! scaled to `[0, 1]` (16-bit PNGs keep their precision through a float path). Examples are
//! `[C, H, W]` floats like the IDX sets, so the same convolutional models apply.
//!
//! Decoding runs on every core (rayon), each image written straight into its slot of one
//! buffer. Any file that cannot be read or decoded fails the whole load with the first bad
//! file in listing order, so the error is the same on every run and nothing partial is used.
//! The train/test split is a seeded permutation (images are independent examples).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageBuffer, ImageFormat, Pixel};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::query::{MAX_SIDE, Options, parse_size};
use super::split::split_indices;
use super::table::{class_order, default_test_fraction};
use super::{DataError, DataInfo, Dataset, Split};

/// The colour channels each example gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColorMode {
    /// One channel of luma.
    Gray,
    /// Three channels, red, green and blue (a grayscale file is repeated into all three).
    #[default]
    Rgb,
}

impl ColorMode {
    /// Channels per example.
    pub fn channels(self) -> usize {
        match self {
            Self::Gray => 1,
            Self::Rgb => 3,
        }
    }
}

/// How to read an image set (the options of an `images:` [`DataSpec`](super::DataSpec)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageOptions {
    /// Height every image is resized to, in pixels.
    pub height: u32,
    /// Width every image is resized to, in pixels.
    pub width: u32,
    /// Channels of each example.
    #[serde(default)]
    pub color: ColorMode,
    /// Fraction of images held out for testing, in `(0, 1)`.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Seed of the train/test split.
    #[serde(default)]
    pub seed: u64,
}

impl ImageOptions {
    /// RGB images of `height × width`, 20% held out, seed 0.
    pub fn new(height: u32, width: u32) -> Self {
        Self {
            height,
            width,
            color: ColorMode::Rgb,
            test_fraction: default_test_fraction(),
            seed: 0,
        }
    }

    /// Floats per example, `C·H·W`.
    fn example_len(&self) -> usize {
        self.color.channels() * self.height as usize * self.width as usize
    }

    pub(crate) fn from_query(options: &mut Options<'_>) -> Result<Self, DataError> {
        let size = options.require(
            "size",
            "`size=HxW` (or `size=N` for N×N), the pixel size every image is resized to",
        )?;
        let (height, width) = parse_size(&size).ok_or_else(|| {
            options.error(format!(
                "`size={size}`: expected HxW such as 64x64, or N, with sides from 1 to {MAX_SIDE}"
            ))
        })?;
        let color = match options.take("color")?.as_deref() {
            None | Some("rgb") => ColorMode::Rgb,
            Some("gray") => ColorMode::Gray,
            Some(other) => {
                return Err(options.error(format!("`color={other}`: expected `gray` or `rgb`")));
            }
        };
        let test_fraction = options.take_fraction(default_test_fraction())?;
        let seed = options.take_parsed("seed", "a whole number")?.unwrap_or(0);
        Ok(Self {
            height,
            width,
            color,
            test_fraction,
            seed,
        })
    }

    pub(crate) fn write_query(&self, out: &mut Vec<String>) {
        out.push(format!("size={}x{}", self.height, self.width));
        if self.color == ColorMode::Gray {
            out.push("color=gray".to_owned());
        }
        if self.test_fraction != default_test_fraction() {
            out.push(format!("test={}", self.test_fraction));
        }
        if self.seed != 0 {
            out.push(format!("seed={}", self.seed));
        }
    }
}

/// One image to decode and its class index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    path: PathBuf,
    class: i64,
}

/// The files of an image set and the name of each class index.
#[derive(Debug)]
struct Listing {
    entries: Vec<Entry>,
    class_names: Vec<String>,
}

fn image_error(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Entries of a directory, sorted by name, without hidden ones (`.DS_Store`, `.git`).
fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, std::fs::FileType)>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if is_hidden(&entry.file_name()) {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| DataError::io(entry.path(), e))?;
        out.push((entry.path(), kind));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A folder per class: the class names are the folder names, every non-hidden file inside one
/// is an image of that class.
fn list_folders(dir: &Path) -> Result<Listing, DataError> {
    let mut classes: Vec<(String, PathBuf)> = Vec::new();
    for (path, kind) in sorted_entries(dir)? {
        // Follow symbolic links to folders; a link to a file is reported like a file.
        if !(kind.is_dir() || kind.is_symlink() && path.is_dir()) {
            return Err(image_error(
                &path,
                "expected only folders here, one per class (or point the spec at a CSV \
                 manifest of path,label)",
            ));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| image_error(&path, "a class folder's name must be valid UTF-8"))?;
        classes.push((name.to_owned(), path.clone()));
    }
    let order = class_order(classes.iter().map(|(name, _)| name.as_str()));
    let index: HashMap<&str, i64> = order.iter().copied().zip(0..).collect();
    let class_names: Vec<String> = order.iter().map(|s| (*s).to_owned()).collect();
    let mut entries = Vec::new();
    for (name, folder) in &classes {
        let class = index.get(name.as_str()).copied().unwrap_or(0);
        for (path, kind) in sorted_entries(folder)? {
            // One stat per file only for links: the listing is part of the load time.
            if kind.is_dir() || kind.is_symlink() && path.is_dir() {
                return Err(image_error(
                    &path,
                    "a class folder holds image files only, not further folders",
                ));
            }
            entries.push(Entry { path, class });
        }
    }
    Ok(Listing {
        entries,
        class_names,
    })
}

/// A CSV manifest with a header naming a `path` and a `label` column (other columns are
/// ignored); relative paths are relative to the manifest's folder.
fn read_manifest(manifest: &Path) -> Result<Listing, DataError> {
    let file = std::fs::File::open(manifest).map_err(|e| DataError::io(manifest, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
    let line_of = |e: &csv::Error| e.position().map_or(0, csv::Position::line);
    let csv_error = |e: csv::Error| DataError::Csv {
        path: manifest.to_path_buf(),
        line: line_of(&e),
        reason: format!("not a well-formed CSV manifest of path,label: {e}"),
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(str::to_owned)
        .collect();
    let find = |column: &str| {
        header
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| DataError::MissingColumn {
                path: manifest.to_path_buf(),
                column: column.to_owned(),
                available: header.clone(),
            })
    };
    let (path_at, label_at) = (find("path")?, find("label")?);
    let base = manifest.parent().unwrap_or(Path::new(""));
    let mut rows: Vec<(PathBuf, String)> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, csv::Position::line);
        let cell = |at: usize, column: &str| {
            let text = record.get(at).unwrap_or("");
            if text.is_empty() {
                Err(DataError::BadValue {
                    path: manifest.to_path_buf(),
                    line,
                    column: column.to_owned(),
                    value: String::new(),
                    problem: "missing value",
                })
            } else {
                Ok(text.to_owned())
            }
        };
        let file = cell(path_at, "path")?;
        rows.push((base.join(file), cell(label_at, "label")?));
    }
    let order = class_order(rows.iter().map(|(_, label)| label.as_str()));
    let index: HashMap<&str, i64> = order.iter().copied().zip(0..).collect();
    let class_names: Vec<String> = order.iter().map(|s| (*s).to_owned()).collect();
    let entries = rows
        .iter()
        .map(|(path, label)| Entry {
            path: path.clone(),
            class: index.get(label.as_str()).copied().unwrap_or(0),
        })
        .collect();
    Ok(Listing {
        entries,
        class_names,
    })
}

/// Copies an image's pixels into `out` in `[C, H, W]` order, divided by `full` (the value of
/// full intensity; a division, not a multiplication by 1/255, so 8-bit values land on the
/// nearest float to `v/255`).
fn write_planar<P>(image: &ImageBuffer<P, Vec<P::Subpixel>>, full: f32, out: &mut [f32])
where
    P: Pixel,
    P::Subpixel: Into<f32>,
{
    let plane = image.width() as usize * image.height() as usize;
    let channels = usize::from(P::CHANNEL_COUNT);
    for (i, pixel) in image.pixels().enumerate() {
        for (c, &value) in pixel.channels().iter().enumerate().take(channels) {
            if let Some(slot) = out.get_mut(c * plane + i) {
                *slot = value.into() / full;
            }
        }
    }
}

/// Resizes to `width × height` unless the image already has that size.
fn fit<P>(
    image: ImageBuffer<P, Vec<P::Subpixel>>,
    width: u32,
    height: u32,
) -> ImageBuffer<P, Vec<P::Subpixel>>
where
    P: Pixel + 'static,
    P::Subpixel: 'static,
{
    if image.dimensions() == (width, height) {
        image
    } else {
        imageops::resize(&image, width, height, FilterType::Triangle)
    }
}

/// Decodes one file into its example slot.
fn decode_into(path: &Path, options: &ImageOptions, out: &mut [f32]) -> Result<(), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let format = match image::guess_format(&bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg)) => format,
        _ => {
            return Err(image_error(
                path,
                "not a PNG or JPEG file (its first bytes are neither signature); an `images:` \
                 set holds PNG or JPEG files only",
            ));
        }
    };
    let image = image::load_from_memory_with_format(&bytes, format).map_err(|e| {
        image_error(
            path,
            format!("cannot decode this {format:?} file ({e}); expected a complete, valid image"),
        )
    })?;
    let (width, height) = (options.width, options.height);
    // 8-bit sources stay in u8 through the resize (fast); deeper ones go through f32 so a
    // 16-bit scan keeps its 65,536 levels.
    let eight_bit = matches!(
        image,
        DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageRgb8(_)
            | DynamicImage::ImageRgba8(_)
    );
    let byte = 255.0;
    match (options.color, eight_bit) {
        (ColorMode::Gray, true) => write_planar(&fit(image.to_luma8(), width, height), byte, out),
        (ColorMode::Gray, false) => {
            write_planar(&fit(image.to_luma32f(), width, height), 1.0, out);
        }
        (ColorMode::Rgb, true) => write_planar(&fit(image.to_rgb8(), width, height), byte, out),
        (ColorMode::Rgb, false) => write_planar(&fit(image.to_rgb32f(), width, height), 1.0, out),
    }
    Ok(())
}

/// Decodes every listed image into one `[N, C, H, W]` buffer, in parallel; the first failing
/// file in listing order is the error.
fn decode_all(entries: &[Entry], options: &ImageOptions) -> Result<Vec<f32>, DataError> {
    let per_image = options.example_len();
    let mut pixels = vec![0.0f32; per_image * entries.len()];
    let results: Vec<Result<(), DataError>> = pixels
        .par_chunks_mut(per_image)
        .zip(entries.par_iter())
        .map(|(slot, entry)| decode_into(&entry.path, options, slot))
        .collect();
    results.into_iter().collect::<Result<(), DataError>>()?;
    Ok(pixels)
}

/// Loads an image set: `path` is a directory with one folder per class, or a `.csv` manifest.
pub fn load_images(path: &Path, options: &ImageOptions) -> Result<Split, DataError> {
    let listing = if path.is_dir() {
        list_folders(path)?
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        read_manifest(path)?
    } else if path.exists() {
        return Err(image_error(
            path,
            "expected a directory with one folder of images per class, or a CSV manifest \
             (a .csv file with `path` and `label` columns)",
        ));
    } else {
        return Err(DataError::io(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    };
    if listing.class_names.len() < 2 {
        return Err(image_error(
            path,
            format!(
                "found {} class(es); a classifier needs at least two (one folder, or one \
                 distinct manifest label, per class)",
                listing.class_names.len()
            ),
        ));
    }
    let n = listing.entries.len();
    let (train_rows, test_rows) = split_indices(n, options.test_fraction, options.seed)?;
    if train_rows.is_empty() || test_rows.is_empty() {
        return Err(DataError::Empty {
            what: format!("the split of {}", path.display()),
            hint: format!("{n} image(s) cannot be split into train and test; add images"),
        });
    }
    let pixels = decode_all(&listing.entries, options)?;
    let labels: Vec<i64> = listing.entries.iter().map(|e| e.class).collect();
    let shape = [
        i64::try_from(n).unwrap_or(i64::MAX),
        i64::try_from(options.color.channels()).unwrap_or(3),
        i64::from(options.height),
        i64::from(options.width),
    ];
    let all = Dataset {
        features: Tensor::from_slice(&pixels).f_view(shape)?,
        labels: Tensor::from_slice(&labels),
        num_classes: i64::try_from(listing.class_names.len()).unwrap_or(i64::MAX),
    };
    Ok(Split {
        train: all.select(&train_rows)?,
        test: all.select(&test_rows)?,
        info: DataInfo {
            class_names: listing.class_names,
            ..DataInfo::default()
        },
    })
}

#[cfg(test)]
#[path = "images_tests.rs"]
mod tests;
