//! [`DataSpec`]: one short string that names a data set and how to cut it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::idx::{IdxFlavour, load_idx_dir};
use super::table::{CsvOptions, default_test_fraction, load_csv};
use super::text::{TextLevel, TextOptions, default_text_test_fraction, load_text};
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
///
/// Examples: `csv:client/data/breast_cancer.csv?label=diagnosis`,
/// `csv:sites.csv?label=outcome&group=hospital&drop=patient_id&test=0.25&seed=3`,
/// `mnist:data/mnist`, `fashion-mnist:data/fashion-mnist`, `text:book.txt?context=64&level=byte`.
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
}

impl DataSpec {
    /// The file or directory the spec reads.
    pub fn path(&self) -> &Path {
        match self {
            Self::Csv { path, .. }
            | Self::Mnist { path }
            | Self::FashionMnist { path }
            | Self::Text { path, .. } => path,
        }
    }

    /// The kind word that starts the spec string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Csv { .. } => "csv",
            Self::Mnist { .. } => "mnist",
            Self::FashionMnist { .. } => "fashion-mnist",
            Self::Text { .. } => "text",
        }
    }
}

/// Loads the data set a spec names.
pub fn load(spec: &DataSpec) -> Result<Split, DataError> {
    match spec {
        DataSpec::Csv { path, options } => load_csv(path, options),
        DataSpec::Mnist { path } => load_idx_dir(path, IdxFlavour::Mnist),
        DataSpec::FashionMnist { path } => load_idx_dir(path, IdxFlavour::FashionMnist),
        DataSpec::Text { path, options } => load_text(path, options),
    }
}

const KINDS: &str = "csv, mnist, fashion-mnist, text";
const RESERVED: [char; 5] = ['%', '?', '&', '=', ','];

fn encode(text: &str, reserved: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if reserved.contains(&c) {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn decode(spec: &str, text: &str) -> Result<String, DataError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).unwrap_or("");
            let byte = u8::from_str_radix(hex, 16).map_err(|_| {
                DataError::spec(
                    spec,
                    format!("`%{hex}` is not a %XX escape (use %25 for `%`)"),
                )
            })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| DataError::spec(spec, "a %XX escape does not form valid UTF-8"))
}

/// The `key=value` options of a spec, consumed one by one so leftovers can be reported.
struct Options<'a> {
    spec: &'a str,
    kind: &'static str,
    accepted: &'static str,
    values: BTreeMap<String, String>,
}

impl<'a> Options<'a> {
    fn parse(
        spec: &'a str,
        kind: &'static str,
        accepted: &'static str,
        query: &str,
    ) -> Result<Self, DataError> {
        let mut values = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                DataError::spec(spec, format!("option `{pair}` needs the form KEY=VALUE"))
            })?;
            let key = decode(spec, key)?;
            if values.insert(key.clone(), value.to_owned()).is_some() {
                return Err(DataError::spec(
                    spec,
                    format!("option `{key}` is given twice"),
                ));
            }
        }
        Ok(Self {
            spec,
            kind,
            accepted,
            values,
        })
    }

    /// The option's value as written (still %-encoded).
    fn take_raw(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    /// The option's decoded value.
    fn take(&mut self, key: &str) -> Result<Option<String>, DataError> {
        self.take_raw(key)
            .map(|v| decode(self.spec, &v))
            .transpose()
    }

    fn take_parsed<T: FromStr>(
        &mut self,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>, DataError> {
        match self.take(key)? {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                DataError::spec(self.spec, format!("`{key}={text}`: expected {expected}"))
            }),
        }
    }

    fn take_fraction(&mut self, default: f64) -> Result<f64, DataError> {
        let value = self
            .take_parsed::<f64>("test", "a fraction such as 0.2")?
            .unwrap_or(default);
        if value > 0.0 && value < 1.0 {
            Ok(value)
        } else {
            Err(DataError::spec(
                self.spec,
                format!("`test={value}`: the test fraction must be strictly between 0 and 1"),
            ))
        }
    }

    fn finish(self) -> Result<(), DataError> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(key) if self.accepted.is_empty() => Err(DataError::spec(
                self.spec,
                format!("`{}` takes no options, got `{key}`", self.kind),
            )),
            Some(key) => Err(DataError::spec(
                self.spec,
                format!(
                    "unknown option `{key}` for `{}` (accepted: {})",
                    self.kind, self.accepted
                ),
            )),
        }
    }
}

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
            "csv" => {
                let mut options = Options::parse(
                    spec,
                    "csv",
                    "label, test, seed, standardize, drop, group",
                    query,
                )?;
                let label = options.take("label")?.ok_or_else(|| {
                    DataError::spec(
                        spec,
                        "`csv` needs `label=COLUMN`, the name of the label column",
                    )
                })?;
                let test_fraction = options.take_fraction(default_test_fraction())?;
                let seed = options.take_parsed("seed", "a whole number")?.unwrap_or(0);
                let standardize = options
                    .take_parsed("standardize", "`true` or `false`")?
                    .unwrap_or(true);
                let drop = match options.take_raw("drop") {
                    None => Vec::new(),
                    Some(list) => list
                        .split(',')
                        .map(|c| decode(spec, c))
                        .collect::<Result<_, _>>()?,
                };
                let group = options.take("group")?;
                options.finish()?;
                let csv = CsvOptions {
                    label,
                    drop,
                    group,
                    test_fraction,
                    seed,
                    standardize,
                };
                Ok(Self::Csv { path, options: csv })
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
        let value = |v: &str| encode(v, &RESERVED);
        let mut options: Vec<String> = Vec::new();
        match self {
            Self::Csv { options: csv, .. } => {
                options.push(format!("label={}", value(&csv.label)));
                if csv.test_fraction != default_test_fraction() {
                    options.push(format!("test={}", csv.test_fraction));
                }
                if csv.seed != 0 {
                    options.push(format!("seed={}", csv.seed));
                }
                if !csv.standardize {
                    options.push("standardize=false".to_owned());
                }
                if !csv.drop.is_empty() {
                    let list: Vec<String> = csv.drop.iter().map(|c| value(c)).collect();
                    options.push(format!("drop={}", list.join(",")));
                }
                if let Some(group) = &csv.group {
                    options.push(format!("group={}", value(group)));
                }
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
