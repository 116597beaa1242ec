//! [`DataSpec`]: one short string that names a data set and how to cut it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::dicom::{DicomOptions, load_dicom};
use super::idx::{IdxFlavour, load_idx_dir};
use super::images::{ImageOptions, load_images};
use super::parquet::load_parquet;
use super::query::{Options, decode, encode};
use super::table::{CsvOptions, load_csv};
use super::text::{TextLevel, TextOptions, default_text_test_fraction, load_text};
use super::timeseries::{SeriesOptions, load_timeseries};
use super::{DataError, Split};

/// Default context length of a `text:` spec.
const DEFAULT_CONTEXT: usize = 64;

/// A data set and its loading options, written as `KIND:PATH[?KEY=VALUE[&KEY=VALUE]...]`.
///
/// | kind | path | options (default) |
/// |---|---|---|
/// | `csv` | a CSV file with a header row | `label=COLUMN` (required), `test=FRACTION` (0.2), `seed=N` (0), `standardize=true\|false` (true), `drop=COL,COL` (none), `group=COLUMN` (none) |
/// | `mnist` | a directory of the four MNIST IDX files, plain or `.gz` | none |
/// | `fashion-mnist` | the same layout for Fashion-MNIST | none |
/// | `text` | a text file | `context=T` (64), `level=char\|byte` (char), `stride=S` (1), `test=FRACTION` (0.1) |
/// | `parquet` | a Parquet file of flat columns (uncompressed, Snappy or gzip pages) | as `csv` |
/// | `timeseries` | a CSV with one row per time step | `target=COLUMN`, `window=W` (both required), `horizon=H` (1), `group=COLUMN` (one series), `time=COLUMN` (file order), `drop=COL,COL`, `target_type=real\|class` (real), `test=FRACTION` (0.2, the end of each series), `standardize=true\|false` (true) |
/// | `dicom` | a directory of DICOM files (searched recursively) with a CSV label manifest keyed by `sop_instance_uid` or `file` | `labels=FILE.csv` (required, relative to the directory), `size=HxW` or `size=N` (required), `window=CENTER,WIDTH` (each file's own), `test=FRACTION` (0.2), `seed=N` (0) |
/// | `images` | a directory with one folder of PNG/JPEG files per class, or a CSV manifest with `path` and `label` columns | `size=HxW` or `size=N` (required), `color=gray\|rgb` (rgb), `test=FRACTION` (0.2), `seed=N` (0) |
///
/// Examples: `csv:client/data/breast_cancer.csv?label=diagnosis`,
/// `csv:sites.csv?label=outcome&group=hospital&drop=patient_id&test=0.25&seed=3`,
/// `mnist:data/mnist`, `fashion-mnist:data/fashion-mnist`, `text:book.txt?context=64&level=byte`,
/// `images:scans?size=64x64&color=gray`, `images:scans/labels.csv?size=128`,
/// `parquet:sites.parquet?label=outcome&group=hospital`,
/// `dicom:ct?labels=labels.csv&size=64&window=40,400`,
/// `timeseries:vitals.csv?target=heart_rate&window=24&horizon=6&group=patient&time=hour`.
///
/// The kind ends at the first `:` and the path at the first `?`; options are separated by `&`.
/// A `%`, `?`, `&`, `=` or `,` inside a path or value is written `%XX` (its hex code, e.g.
/// `%26` for `&`). Unknown kinds, unknown or repeated options and bad values are errors that
/// list what is accepted. `Display` writes the canonical form (non-default options only, in the
/// order of the table), which parses back to an equal spec; serde uses that string form too, so
/// a config file says `data = "mnist:data/mnist"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum DataSpec {
    /// A CSV table; see [`load_csv`].
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// Label, columns and split.
        options: CsvOptions,
    },
    /// An MNIST-layout IDX directory of handwritten digits; see [`load_idx_dir`].
    Mnist {
        /// The directory.
        path: PathBuf,
    },
    /// An MNIST-layout IDX directory of Fashion-MNIST garments.
    FashionMnist {
        /// The directory.
        path: PathBuf,
    },
    /// A text file for next-token prediction; see [`load_text`].
    Text {
        /// The text file.
        path: PathBuf,
        /// Windows, tokenisation and split.
        options: TextOptions,
    },
    /// A Parquet table, read with the CSV options; see [`load_parquet`].
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// Label, columns and split, as for `csv`.
        options: CsvOptions,
    },
    /// Sliding windows over time series; see [`load_timeseries`].
    TimeSeries {
        /// The CSV file.
        path: PathBuf,
        /// Target, windows and split.
        options: SeriesOptions,
    },
    /// DICOM images with a label manifest; see [`load_dicom`].
    Dicom {
        /// The directory.
        path: PathBuf,
        /// Manifest, size, window and split.
        options: DicomOptions,
    },
    /// PNG/JPEG images by class; see [`load_images`].
    Images {
        /// A directory of class folders, or a CSV manifest.
        path: PathBuf,
        /// Size, colour and split.
        options: ImageOptions,
    },
}

impl DataSpec {
    /// The file or directory the spec reads.
    pub fn path(&self) -> &Path {
        match self {
            Self::Csv { path, .. }
            | Self::Parquet { path, .. }
            | Self::Mnist { path }
            | Self::FashionMnist { path }
            | Self::Text { path, .. }
            | Self::TimeSeries { path, .. }
            | Self::Dicom { path, .. }
            | Self::Images { path, .. } => path,
        }
    }

    /// The kind word that starts the spec string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Csv { .. } => "csv",
            Self::Parquet { .. } => "parquet",
            Self::Mnist { .. } => "mnist",
            Self::FashionMnist { .. } => "fashion-mnist",
            Self::Text { .. } => "text",
            Self::TimeSeries { .. } => "timeseries",
            Self::Dicom { .. } => "dicom",
            Self::Images { .. } => "images",
        }
    }
}

/// Loads the data set a spec names.
pub fn load(spec: &DataSpec) -> Result<Split, DataError> {
    match spec {
        DataSpec::Csv { path, options } => load_csv(path, options),
        DataSpec::Parquet { path, options } => load_parquet(path, options),
        DataSpec::Mnist { path } => load_idx_dir(path, IdxFlavour::Mnist),
        DataSpec::FashionMnist { path } => load_idx_dir(path, IdxFlavour::FashionMnist),
        DataSpec::Text { path, options } => load_text(path, options),
        DataSpec::TimeSeries { path, options } => load_timeseries(path, options),
        DataSpec::Dicom { path, options } => load_dicom(path, options),
        DataSpec::Images { path, options } => load_images(path, options),
    }
}

const KINDS: &str = "csv, parquet, mnist, fashion-mnist, text, timeseries, images, dicom";
impl FromStr for DataSpec {
    type Err = DataError;

    fn from_str(spec: &str) -> Result<Self, DataError> {
        let (kind, rest) = spec.split_once(':').ok_or_else(|| {
            DataError::spec(
                spec,
                format!("expected KIND:PATH such as `mnist:data/mnist` (kinds: {KINDS})"),
            )
        })?;
        let (raw_path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = PathBuf::from(decode(spec, raw_path)?);
        if path.as_os_str().is_empty() {
            return Err(DataError::spec(spec, "the path after `:` is empty"));
        }
        match kind {
            "csv" | "parquet" => {
                let kind_name = if kind == "csv" { "csv" } else { "parquet" };
                let mut options = Options::parse(spec, kind_name, CsvOptions::ACCEPTED, query)?;
                let table = CsvOptions::from_query(&mut options)?;
                options.finish()?;
                Ok(if kind == "csv" {
                    Self::Csv {
                        path,
                        options: table,
                    }
                } else {
                    Self::Parquet {
                        path,
                        options: table,
                    }
                })
            }
            "mnist" | "fashion-mnist" => {
                let kind_name = if kind == "mnist" {
                    "mnist"
                } else {
                    "fashion-mnist"
                };
                Options::parse(spec, kind_name, "", query)?.finish()?;
                Ok(if kind == "mnist" {
                    Self::Mnist { path }
                } else {
                    Self::FashionMnist { path }
                })
            }
            "text" => {
                let mut options =
                    Options::parse(spec, "text", "context, level, stride, test", query)?;
                let context = options
                    .take_parsed("context", "a whole number of tokens, at least 1")?
                    .unwrap_or(DEFAULT_CONTEXT);
                let stride = options
                    .take_parsed("stride", "a whole number of tokens, at least 1")?
                    .unwrap_or(1);
                if context == 0 || stride == 0 {
                    return Err(DataError::spec(
                        spec,
                        "`context` and `stride` must be at least 1",
                    ));
                }
                let level = match options.take("level")?.as_deref() {
                    None | Some("char") => TextLevel::Char,
                    Some("byte") => TextLevel::Byte,
                    Some(other) => {
                        return Err(DataError::spec(
                            spec,
                            format!("`level={other}`: expected `char` or `byte`"),
                        ));
                    }
                };
                let test_fraction = options.take_fraction(default_text_test_fraction())?;
                options.finish()?;
                let text = TextOptions {
                    context,
                    level,
                    stride,
                    test_fraction,
                };
                Ok(Self::Text {
                    path,
                    options: text,
                })
            }
            "timeseries" => {
                let mut options =
                    Options::parse(spec, "timeseries", SeriesOptions::ACCEPTED, query)?;
                let series = SeriesOptions::from_query(&mut options)?;
                options.finish()?;
                Ok(Self::TimeSeries {
                    path,
                    options: series,
                })
            }
            "dicom" => {
                let mut options = Options::parse(spec, "dicom", DicomOptions::ACCEPTED, query)?;
                let dicom = DicomOptions::from_query(&mut options)?;
                options.finish()?;
                Ok(Self::Dicom {
                    path,
                    options: dicom,
                })
            }
            "images" => {
                let mut options = Options::parse(spec, "images", "size, color, test, seed", query)?;
                let images = ImageOptions::from_query(&mut options)?;
                options.finish()?;
                Ok(Self::Images {
                    path,
                    options: images,
                })
            }
            other => Err(DataError::spec(
                spec,
                format!("unknown kind `{other}` (kinds: {KINDS})"),
            )),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = encode(&self.path().to_string_lossy(), &['%', '?']);
        write!(f, "{}:{path}", self.kind())?;
        let mut options: Vec<String> = Vec::new();
        match self {
            Self::Csv { options: table, .. } | Self::Parquet { options: table, .. } => {
                table.write_query(&mut options);
            }
            Self::Text { options: text, .. } => {
                if text.context != DEFAULT_CONTEXT {
                    options.push(format!("context={}", text.context));
                }
                if text.level == TextLevel::Byte {
                    options.push("level=byte".to_owned());
                }
                if text.stride != 1 {
                    options.push(format!("stride={}", text.stride));
                }
                if text.test_fraction != default_text_test_fraction() {
                    options.push(format!("test={}", text.test_fraction));
                }
            }
            Self::TimeSeries {
                options: series, ..
            } => series.write_query(&mut options),
            Self::Dicom { options: dicom, .. } => dicom.write_query(&mut options),
            Self::Images {
                options: images, ..
            } => images.write_query(&mut options),
            Self::Mnist { .. } | Self::FashionMnist { .. } => {}
        }
        if !options.is_empty() {
            write!(f, "?{}", options.join("&"))?;
        }
        Ok(())
    }
}

impl TryFrom<String> for DataSpec {
    type Error = DataError;

    fn try_from(spec: String) -> Result<Self, DataError> {
        spec.parse()
    }
}

impl From<DataSpec> for String {
    fn from(spec: DataSpec) -> String {
        spec.to_string()
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
