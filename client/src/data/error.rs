//! Why a data set could not be loaded, said so that the operator knows what to fix.

use std::path::PathBuf;

/// An error from parsing a [`DataSpec`](super::DataSpec) or loading the data it names.
///
/// Every message names the file, and where it can the row and column, and says what would make
/// the input acceptable. Callers should show the message rather than branch on the variant;
/// variants may be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The spec string or one of its options is malformed.
    #[error("invalid data spec `{spec}`: {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong and what is accepted instead.
        reason: String,
    },
    /// A file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file is not well formed (for example a row has the wrong number of fields).
    #[error("{}: line {line}: {reason}", path.display())]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number in the file (the header is line 1); 0 when unknown.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A column named in the spec is not in the CSV header.
    #[error(
        "{}: no column named `{column}` (the header has: {}); check the spelling in the data spec",
        path.display(),
        available.join(", ")
    )]
    MissingColumn {
        /// The CSV file.
        path: PathBuf,
        /// The column that was asked for.
        column: String,
        /// The columns the header does have.
        available: Vec<String>,
    },
    /// A cell that must be a finite number is empty or is not one.
    #[error(
        "{}: line {line}, column `{column}`: {problem} (value {value:?}); \
         fix or remove the row, or leave the column out with `drop={column}`",
        path.display()
    )]
    BadValue {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number in the file (the header is line 1).
        line: u64,
        /// The column's name from the header.
        column: String,
        /// The cell's text.
        value: String,
        /// `missing value`, `not a number` or `not finite`.
        problem: &'static str,
    },
    /// A cell of a Parquet table that must be a finite number is null or is not one.
    #[error(
        "{}: data row {row}, column `{column}`: {problem} (value {value:?}); \
         fix or remove the row, or leave the column out with `drop={column}`",
        path.display()
    )]
    BadCell {
        /// The Parquet file.
        path: PathBuf,
        /// 1-based data row, counted across row groups.
        row: u64,
        /// The column's name from the schema.
        column: String,
        /// The cell's value as text (empty for a null).
        value: String,
        /// `missing value`, `not a number` or `not finite`.
        problem: &'static str,
    },
    /// A Parquet file cannot be read, or its schema is not a flat table.
    #[error("{}: {reason}", path.display())]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// An IDX (MNIST-format) file is malformed, truncated or inconsistent with its partner.
    #[error("{}: {reason}", path.display())]
    Idx {
        /// The IDX file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A directory lacks one of the files a data set needs.
    #[error(
        "{}: no `{name}` or `{name}.gz`; point the spec at the directory holding the four IDX \
         files (`make data` puts MNIST in data/mnist and Fashion-MNIST in data/fashion-mnist)",
        dir.display()
    )]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// The file name expected (without `.gz`).
        name: String,
    },
    /// A text file cannot be turned into next-token examples.
    #[error("{}: {reason}", path.display())]
    Text {
        /// The text file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An image file, an image folder's layout or an image manifest is not what an `images:`
    /// spec accepts.
    #[error("{}: {reason}", path.display())]
    Image {
        /// The image file, folder or manifest.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A DICOM file, or a DICOM folder's label manifest, is not what a `dicom:` spec accepts.
    /// The reason names attributes, never their values, so it carries no patient data.
    #[error("{}: {reason}", path.display())]
    Dicom {
        /// The DICOM file or folder.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// Loading produced no usable examples for one side of the split.
    #[error("{what} is empty: {hint}")]
    Empty {
        /// Which set (for example `the test split`).
        what: String,
        /// How to get examples into it.
        hint: String,
    },
    /// Arguments to a data function are inconsistent (a programming error, not bad input).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// libtorch refused a tensor operation.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] tch::TchError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn spec(spec: &str, reason: impl Into<String>) -> Self {
        Self::Spec {
            spec: spec.to_owned(),
            reason: reason.into(),
        }
    }
}
