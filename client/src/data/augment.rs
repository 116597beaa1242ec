//! On-the-fly image augmentation: random crop with zero padding, and horizontal flip.
//!
//! Augmentation is applied to each training batch as it is drawn, so every epoch sees fresh
//! variants without storing them. Under DP-SGD it is applied before per-sample clipping: the
//! augmented image is simply that example's input for the step, which leaves the privacy
//! analysis unchanged.
//!
//! The whole batch is transformed with two `gather`s (rows, then columns), so the cost is a
//! couple of tensor kernels on the batch's own device, not a loop over images.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::DataError;
use super::split::seeded_rng;

/// Which random transformations to apply to image batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augmentation {
    /// Zero-pad each side by this many pixels, then crop back to the original size at a
    /// uniformly random offset (0 disables cropping; 4 is usual for 32×32 images, 2 for 28×28).
    #[serde(default)]
    pub pad: u32,
    /// Mirror each image left–right with probability 1/2 (wrong for digits and text, right for
    /// natural images and most garments).
    #[serde(default)]
    pub flip: bool,
}

impl Augmentation {
    /// Whether this configuration changes anything.
    pub fn is_identity(&self) -> bool {
        self.pad == 0 && !self.flip
    }
}

/// Applies an [`Augmentation`] to successive batches, drawing offsets and flips from a seeded
/// generator: the same seed and batch sequence give the same augmented batches.
#[derive(Debug, Clone)]
pub struct Augmenter {
    config: Augmentation,
    rng: ChaCha8Rng,
}

impl Augmenter {
    /// An augmenter whose random choices are determined by `seed`.
    pub fn new(config: Augmentation, seed: u64) -> Self {
        Self {
            config,
            rng: seeded_rng(seed),
        }
    }

    /// The configuration applied.
    pub fn config(&self) -> Augmentation {
        self.config
    }

    /// Augments a `[B, C, H, W]` batch; the result has the same shape, kind and device.
    ///
    /// For each image in order, the generator draws the vertical offset, the horizontal offset
    /// (each uniform in `0..=2·pad`) and then, if flipping is on, the flip.
    pub fn apply(&mut self, images: &Tensor) -> Result<Tensor, DataError> {
        let size = images.size();
        let [batch, channels, height, width] = size[..] else {
            return Err(DataError::InvalidArgument(format!(
                "augmentation needs a [B, C, H, W] image batch, got shape {size:?}"
            )));
        };
        if self.config.is_identity() || batch == 0 {
            return Ok(images.shallow_clone());
        }
        let pad = i64::from(self.config.pad);
        let mut rows = Vec::with_capacity(usize::try_from(batch * height).unwrap_or(0));
        let mut cols = Vec::with_capacity(usize::try_from(batch * width).unwrap_or(0));
        for _ in 0..batch {
            let dy = self.rng.random_range(0..=2 * pad);
            let dx = self.rng.random_range(0..=2 * pad);
            let flip = self.config.flip && self.rng.random_bool(0.5);
            rows.extend((0..height).map(|i| dy + i));
            if flip {
                cols.extend((0..width).map(|j| dx + width - 1 - j));
            } else {
                cols.extend((0..width).map(|j| dx + j));
            }
        }
        let device = images.device();
        let padded = if pad > 0 {
            images.f_constant_pad_nd([pad, pad, pad, pad])?
        } else {
            images.shallow_clone()
        };
        let rows = Tensor::from_slice(&rows)
            .f_to_device(device)?
            .f_view([batch, 1, height, 1])?
            .f_expand([batch, channels, height, width + 2 * pad], false)?;
        let cols = Tensor::from_slice(&cols)
            .f_to_device(device)?
            .f_view([batch, 1, 1, width])?
            .f_expand([batch, channels, height, width], false)?;
        Ok(padded
            .f_gather(2, &rows, false)?
            .f_gather(3, &cols, false)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn batch(b: i64) -> Tensor {
        // Distinct positive values so every crop and flip is recognisable.
        Tensor::arange(b * 2 * 5 * 6, (Kind::Float, Device::Cpu)).view([b, 2, 5, 6]) + 1.0
    }

    /// Whether `out` is the window of `padded` at `(dy, dx)`, possibly mirrored.
    fn matches_some_window(out: &Tensor, padded: &Tensor, pad: i64) -> Option<(i64, i64, bool)> {
        let (h, w) = (out.size()[1], out.size()[2]);
        for dy in 0..=2 * pad {
            for dx in 0..=2 * pad {
                let window = padded.narrow(1, dy, h).narrow(2, dx, w);
                for flip in [false, true] {
                    let candidate = if flip {
                        window.flip([2])
                    } else {
                        window.shallow_clone()
                    };
                    if candidate.equal(out) {
                        return Some((dy, dx, flip));
                    }
                }
            }
        }
        None
    }

    #[test]
    fn identity_config_returns_the_batch() {
        let images = batch(3);
        let mut augmenter = Augmenter::new(Augmentation::default(), 1);
        assert!(augmenter.apply(&images).unwrap().equal(&images));
    }

    #[test]
    fn every_output_is_a_crop_of_the_padded_input() {
        let images = batch(40);
        let config = Augmentation { pad: 2, flip: true };
        let out = Augmenter::new(config, 7).apply(&images).unwrap();
        assert_eq!(out.size(), images.size());
        let padded = images.constant_pad_nd([2, 2, 2, 2]);
        let mut flips = 0;
        let mut offsets = std::collections::BTreeSet::new();
        for i in 0..40 {
            let found = matches_some_window(&out.get(i), &padded.get(i), 2);
            let (dy, dx, flip) = found.unwrap_or_else(|| panic!("image {i} is no crop"));
            flips += i32::from(flip);
            offsets.insert((dy, dx));
        }
        // 40 fair coins and 25 offsets: all-or-nothing outcomes mean the draws are broken.
        assert!((5..=35).contains(&flips), "{flips} flips of 40");
        assert!(offsets.len() > 5, "only offsets {offsets:?}");
    }

    #[test]
    fn flip_without_padding_mirrors_or_keeps_each_image() {
        let images = batch(16);
        let config = Augmentation { pad: 0, flip: true };
        let out = Augmenter::new(config, 3).apply(&images).unwrap();
        for i in 0..16 {
            let (o, x) = (out.get(i), images.get(i));
            assert!(o.equal(&x) || o.equal(&x.flip([2])), "image {i}");
        }
    }

    #[test]
    fn seeded_augmenters_agree_and_different_seeds_differ() {
        let images = batch(8);
        let config = Augmentation { pad: 3, flip: true };
        let mut a = Augmenter::new(config, 11);
        let mut b = Augmenter::new(config, 11);
        let mut c = Augmenter::new(config, 12);
        for _ in 0..3 {
            let (xa, xb, xc) = (
                a.apply(&images).unwrap(),
                b.apply(&images).unwrap(),
                c.apply(&images).unwrap(),
            );
            assert!(xa.equal(&xb));
            assert!(!xa.equal(&xc));
        }
    }

    #[test]
    fn rejects_batches_that_are_not_images() {
        let flat = Tensor::zeros([4, 10], (Kind::Float, Device::Cpu));
        let mut augmenter = Augmenter::new(
            Augmentation {
                pad: 1,
                flip: false,
            },
            0,
        );
        assert!(augmenter.apply(&flat).is_err());
    }
}
