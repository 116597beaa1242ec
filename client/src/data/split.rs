//! Seeded shuffling, train/test splitting and standardisation.
//!
//! Every random choice here comes from a ChaCha8 generator seeded with the caller's `u64`, so
//! the same seed gives the same permutation on every platform. These are reproducibility
//! seeds, not secrets: nothing here protects privacy, so a fast seeded generator is right.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{DataError, Dataset};

/// A seeded generator for data-handling randomness (shuffles, splits, partitions, augmentation).
pub(crate) fn seeded_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A uniformly random permutation of `0..n`, the same for the same `(n, seed)`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut seeded_rng(seed));
    order
}

/// How many of `n` examples go to the test side for a test fraction in `(0, 1)`.
///
/// Rounds to the nearest count but keeps at least one example on each side when `n >= 2`, so
/// a small table never yields an empty split.
pub fn test_count(n: usize, test_fraction: f64) -> usize {
    if n < 2 {
        return 0;
    }
    // `n` is far below 2^53, so the conversions are exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rounded = (n as f64 * test_fraction).round() as usize;
    rounded.clamp(1, n - 1)
}

/// Checks that a test fraction is a number strictly between 0 and 1.
pub(crate) fn check_fraction(test_fraction: f64) -> Result<(), DataError> {
    if test_fraction.is_finite() && test_fraction > 0.0 && test_fraction < 1.0 {
        Ok(())
    } else {
        Err(DataError::InvalidArgument(format!(
            "test fraction must be strictly between 0 and 1, got {test_fraction}"
        )))
    }
}

/// Index lists of a seeded train/test split of `n` examples: `(train, test)`.
///
/// The test side is the first [`test_count`] entries of [`permutation`]`(n, seed)`, the train
/// side the rest, so a loader that must split side data (a CSV's site column) in step with the
/// tensors uses these same lists.
pub fn split_indices(
    n: usize,
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    check_fraction(test_fraction)?;
    let mut order = permutation(n, seed);
    let train = order.split_off(test_count(n, test_fraction));
    Ok((train, order))
}

/// A seeded shuffle of a whole data set (every example kept, order permuted).
pub fn shuffle(dataset: &Dataset, seed: u64) -> Result<Dataset, DataError> {
    let n = usize::try_from(dataset.len()).unwrap_or(0);
    dataset.select(&permutation(n, seed))
}

/// A seeded random split into `(train, test)` data sets; see [`split_indices`].
pub fn train_test_split(
    dataset: &Dataset,
    test_fraction: f64,
    seed: u64,
) -> Result<(Dataset, Dataset), DataError> {
    let n = usize::try_from(dataset.len()).unwrap_or(0);
    let (train, test) = split_indices(n, test_fraction, seed)?;
    Ok((dataset.select(&train)?, dataset.select(&test)?))
}

/// Per-feature standardisation `(x - mean) / std`, fitted on one split and reused for others.
///
/// Fit it on the training split only: statistics taken over the test split would leak it into
/// training. It is serialisable so a trained model can be shipped with the scaling it expects.
/// A constant feature (standard deviation 0) gets `std = 1`, so it maps to 0 instead of NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Mean of each feature over the data it was fitted on.
    pub mean: Vec<f32>,
    /// Population standard deviation of each feature (never 0; see above).
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fits the statistics of `features`, a `[N, F]` float tensor with `N >= 1`.
    pub fn fit(features: &Tensor) -> Result<Self, DataError> {
        let size = features.size();
        if size.len() != 2 || size[0] < 1 {
            return Err(DataError::InvalidArgument(format!(
                "standardisation needs a non-empty [N, F] table, got shape {size:?}"
            )));
        }
        let as_double = features.f_to_kind(Kind::Double)?;
        let mean = as_double.f_mean_dim(0, false, Kind::Double)?;
        let std = as_double.f_std_dim(0, false, false)?;
        let mean: Vec<f64> = Vec::try_from(&mean)?;
        let std: Vec<f64> = Vec::try_from(&std)?;
        #[allow(clippy::cast_possible_truncation)]
        let std = std
            .into_iter()
            .map(|s| {
                if s > 0.0 && s.is_finite() {
                    s as f32
                } else {
                    1.0
                }
            })
            .collect();
        #[allow(clippy::cast_possible_truncation)]
        let mean = mean.into_iter().map(|m| m as f32).collect();
        Ok(Self { mean, std })
    }

    /// Number of features the statistics describe.
    pub fn features(&self) -> usize {
        self.mean.len()
    }

    /// Standardises a `[N, F]` float tensor with these statistics.
    pub fn apply(&self, features: &Tensor) -> Result<Tensor, DataError> {
        let size = features.size();
        let width = i64::try_from(self.features()).unwrap_or(i64::MAX);
        if size.len() != 2 || size[1] != width {
            return Err(DataError::InvalidArgument(format!(
                "standardiser fitted on {width} features cannot scale a tensor of shape {size:?}"
            )));
        }
        let device = features.device();
        let mean = Tensor::from_slice(&self.mean).f_to_device(device)?;
        let std = Tensor::from_slice(&self.std).f_to_device(device)?;
        Ok(features.f_to_kind(Kind::Float)?.f_sub(&mean)?.f_div(&std)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: i64) -> Dataset {
        let features = Tensor::arange(n * 2, (Kind::Float, tch::Device::Cpu)).view([n, 2]);
        let labels = Tensor::arange(n, (Kind::Int64, tch::Device::Cpu));
        Dataset {
            features,
            labels,
            num_classes: n,
        }
    }

    #[test]
    fn permutation_is_a_seeded_bijection() {
        let a = permutation(100, 5);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, permutation(100, 5));
        assert_ne!(a, permutation(100, 6));
    }

    #[test]
    fn test_count_keeps_both_sides_non_empty() {
        assert_eq!(test_count(10, 0.2), 2);
        assert_eq!(test_count(10, 0.01), 1);
        assert_eq!(test_count(10, 0.99), 9);
        assert_eq!(test_count(1, 0.5), 0);
        assert_eq!(test_count(569, 0.2), 114);
    }

    #[test]
    fn split_rejects_fractions_outside_the_open_interval() {
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(split_indices(10, bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn train_test_split_partitions_rows_and_keeps_pairs() {
        let data = toy(20);
        let (train, test) = train_test_split(&data, 0.25, 3).unwrap();
        assert_eq!((train.len(), test.len()), (15, 5));
        let mut seen: Vec<i64> = Vec::try_from(&train.labels).unwrap();
        seen.extend(Vec::<i64>::try_from(&test.labels).unwrap());
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        // Row i of the toy table is [2i, 2i+1]: features must travel with their label.
        let first: Vec<f32> = Vec::try_from(&train.features.get(0)).unwrap();
        let label = train.labels.int64_value(&[0]);
        #[allow(clippy::cast_precision_loss)]
        let expected = vec![2.0 * label as f32, 2.0 * label as f32 + 1.0];
        assert_eq!(first, expected);
    }

    #[test]
    fn shuffle_is_reproducible() {
        let data = toy(30);
        let a: Vec<i64> = Vec::try_from(&shuffle(&data, 9).unwrap().labels).unwrap();
        let b: Vec<i64> = Vec::try_from(&shuffle(&data, 9).unwrap().labels).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, (0..30).collect::<Vec<_>>());
    }

    #[test]
    fn standardizer_fits_train_and_reuses_statistics() {
        let train = Tensor::from_slice(&[1.0f32, 10.0, 3.0, 10.0]).view([2, 2]);
        let scaler = Standardizer::fit(&train).unwrap();
        assert_eq!(scaler.mean, vec![2.0, 10.0]);
        // Column 1 is constant: std 1 instead of 0, so it maps to 0 and not NaN.
        assert_eq!(scaler.std, vec![1.0, 1.0]);
        let test = Tensor::from_slice(&[5.0f32, 12.0]).view([1, 2]);
        let scaled: Vec<f32> = Vec::try_from(&scaler.apply(&test).unwrap().view([-1])).unwrap();
        assert_eq!(scaled, vec![3.0, 2.0]);
        let wrong = Tensor::zeros([1, 3], (Kind::Float, tch::Device::Cpu));
        assert!(scaler.apply(&wrong).is_err());
    }
}
