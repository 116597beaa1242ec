//! Training data as libtorch tensors.
//!
//! Every loader (CSV, Parquet, IDX, text, time series, PNG/JPEG images, DICOM) produces the same [`Dataset`] shape, so the DP-SGD engine,
//! partitioners and evaluation never care where examples came from.
//!
//! # Brief overview
//! A [`DataSpec`] names a data set in one short string (`csv:path.csv?label=diagnosis`,
//! `mnist:data/mnist`, `text:book.txt?context=64`; the grammar is on [`DataSpec`]) and
//! [`load`] turns it into a [`Split`]: train and test [`Dataset`]s plus what a caller needs to
//! interpret them ([`DataInfo`]). [`partition`] deals a data set's examples out to the clients
//! of a simulated federation, and [`Augmenter`] applies seeded random crops and flips to image
//! batches during training.
//!
//! ```no_run
//! use cohort_client::data::{self, DataSpec};
//!
//! let spec: DataSpec = "csv:client/data/breast_cancer.csv?label=diagnosis".parse()?;
//! let split = data::load(&spec)?;
//! assert_eq!(split.train.num_classes, 2);
//! # Ok::<(), data::DataError>(())
//! ```

mod augment;
mod dicom;
mod error;
mod idx;
mod images;
mod parquet;
pub mod partition;
mod query;
mod rows;
mod spec;
mod split;
mod table;
mod text;
mod timeseries;

use tch::{Device, Kind, Tensor};

pub use self::parquet::{load_parquet, read_parquet};
pub use augment::{Augmentation, Augmenter};
pub use dicom::{DicomOptions, load_dicom};
pub use error::DataError;
pub use idx::{IdxFlavour, load_idx_dir, read_idx_images, read_idx_labels};
pub use images::{ColorMode, ImageOptions, load_images};
pub use spec::{DataSpec, load};
pub use split::{Standardizer, permutation, shuffle, split_indices, test_count, train_test_split};
pub use table::{CsvOptions, CsvTable, load_csv, read_csv};
pub use text::{TextLevel, TextOptions, Vocabulary, load_text};
pub use timeseries::{SeriesOptions, TargetType, load_timeseries};

/// A set of labelled examples held as two tensors on one device.
///
/// Invariant: `features.size()[0] == labels.size()[0]`; `labels` is `Int64` in
/// `0..num_classes` (for next-token prediction, the vocabulary size), except for a real-valued
/// time-series target, where it is `Float` and `num_classes` is 1.
#[derive(Debug)]
pub struct Dataset {
    /// Inputs, `[N, ...]`: `Float` for tables and images, `Int64` token ids for text.
    pub features: Tensor,
    /// Targets, `[N]`: `Int64` class indices, or `Float` values for a real-valued target.
    pub labels: Tensor,
    /// Number of distinct classes (or the vocabulary size for next-token prediction).
    pub num_classes: i64,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> i64 {
        self.labels.size().first().copied().unwrap_or(0)
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `indices`, in that order (a copy; indices may repeat).
    ///
    /// This is how a partition's index list (see [`partition`]) becomes one client's data.
    pub fn select(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        let n = self.len();
        let mut index = Vec::with_capacity(indices.len());
        for &i in indices {
            match i64::try_from(i) {
                Ok(i) if i < n => index.push(i),
                _ => {
                    return Err(DataError::InvalidArgument(format!(
                        "index {i} is out of range for a data set of {n} examples"
                    )));
                }
            }
        }
        let index = Tensor::from_slice(&index).f_to_device(self.labels.device())?;
        Ok(Dataset {
            features: self.features.f_index_select(0, &index)?,
            labels: self.labels.f_index_select(0, &index)?,
            num_classes: self.num_classes,
        })
    }

    /// The labels as a plain vector, the input the partitioners take.
    pub fn label_vec(&self) -> Result<Vec<i64>, DataError> {
        Ok(Vec::try_from(&self.labels.f_to_kind(Kind::Int64)?)?)
    }

    /// The same examples on another device (features and labels moved together).
    pub fn to_device(&self, device: Device) -> Result<Dataset, DataError> {
        Ok(Dataset {
            features: self.features.f_to_device(device)?,
            labels: self.labels.f_to_device(device)?,
            num_classes: self.num_classes,
        })
    }
}

/// A loaded data set: examples to train on, held-out examples to evaluate on, and metadata.
#[derive(Debug)]
pub struct Split {
    /// Examples to train on.
    pub train: Dataset,
    /// Held-out examples, never seen by training (and, for CSV, never by standardisation).
    pub test: Dataset,
    /// How to interpret the tensors.
    pub info: DataInfo,
}

/// What a caller needs besides the tensors: names, scaling, vocabulary and site labels.
#[derive(Debug, Clone, Default)]
pub struct DataInfo {
    /// Column names of the features, in tensor order (CSV only; empty otherwise).
    pub feature_names: Vec<String>,
    /// The text of each class index (`class_names[k]` is class `k`): the CSV label values, the
    /// digits or garment names for the IDX sets, empty for text (see `vocabulary`).
    pub class_names: Vec<String>,
    /// CSV columns left out of the features because none of their cells is a number.
    pub skipped_columns: Vec<String>,
    /// The standardisation fitted on the training split, if one was applied.
    pub standardizer: Option<Standardizer>,
    /// The token vocabulary of a text data set.
    pub vocabulary: Option<Vocabulary>,
    /// The group column of a CSV (natural sites such as a hospital id), split in step with the
    /// examples, for [`partition::by_column`].
    pub groups: Option<GroupColumn>,
}

/// The values of a CSV's group column for each example of each side of a [`Split`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupColumn {
    /// The column's name.
    pub name: String,
    /// `train[i]` is the value for example `i` of the training set.
    pub train: Vec<String>,
    /// `test[i]` is the value for example `i` of the test set.
    pub test: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_picks_rows_in_order_and_rejects_out_of_range() {
        let data = Dataset {
            features: Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]).view([3, 2]),
            labels: Tensor::from_slice(&[0i64, 1, 2]),
            num_classes: 3,
        };
        let picked = data.select(&[2, 0, 2]).unwrap();
        assert_eq!(picked.label_vec().unwrap(), vec![2, 0, 2]);
        let row: Vec<f32> = Vec::try_from(&picked.features.get(1)).unwrap();
        assert_eq!(row, vec![0.0, 1.0]);
        assert!(data.select(&[3]).is_err());
        assert!(data.select(&[]).unwrap().is_empty());
    }
}
