//! On-the-fly image augmentation: random crop with zero padding, horizontal flip, rotation.
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
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
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
    /// Rotate each image about its centre by an angle uniform in [−d, d] degrees (bilinear,
    /// zero fill; 0 disables).
    #[serde(default)]
    pub rotation_degrees: f64,
}

impl Augmentation {
    /// Whether this configuration changes anything.
    pub fn is_identity(&self) -> bool {
        self.pad == 0 && !self.flip && self.rotation_degrees == 0.0
    }
}

impl From<cohort_protocol::training::ImageAugmentation> for Augmentation {
    fn from(a: cohort_protocol::training::ImageAugmentation) -> Self {
        Self {
            pad: a.crop_padding,
            flip: a.horizontal_flip,
            rotation_degrees: a.rotation_degrees,
        }
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
    /// (each uniform in `0..=2·pad`), then, if flipping is on, the flip, then, if rotation is
    /// on, the angle. Rotation is one `affine_grid` + `grid_sample` over the whole batch.
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
        let max_angle = self.config.rotation_degrees.to_radians();
        let mut angles = Vec::new();
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
            if max_angle > 0.0 {
                angles.push(self.rng.random_range(-max_angle..=max_angle));
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
        let cropped = padded
            .f_gather(2, &rows, false)?
            .f_gather(3, &cols, false)?;
        if angles.is_empty() {
            return Ok(cropped);
        }
        // One 2×3 affine matrix per image, [[cos, −sin, 0], [sin, cos, 0]] in normalised
        // coordinates, so each output pixel samples its rotated source (zero outside).
        let theta: Vec<f64> = angles
            .iter()
            .flat_map(|a| [a.cos(), -a.sin(), 0.0, a.sin(), a.cos(), 0.0])
            .collect();
        let theta = Tensor::from_slice(&theta)
            .f_view([batch, 2, 3])?
            .f_to_kind(images.kind())?
            .f_to_device(device)?;
        let grid =
            Tensor::f_affine_grid_generator(&theta, [batch, channels, height, width], false)?;
        Ok(cropped.f_grid_sampler(&grid, 0, 0, false)?)
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
        let config = Augmentation {
            pad: 2,
            flip: true,
            ..Default::default()
        };
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
        let config = Augmentation {
            pad: 0,
            flip: true,
            ..Default::default()
        };
        let out = Augmenter::new(config, 3).apply(&images).unwrap();
        for i in 0..16 {
            let (o, x) = (out.get(i), images.get(i));
            assert!(o.equal(&x) || o.equal(&x.flip([2])), "image {i}");
        }
    }

    #[test]
    fn seeded_augmenters_agree_and_different_seeds_differ() {
        let images = batch(8);
        let config = Augmentation {
            pad: 3,
            flip: true,
            ..Default::default()
        };
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
    fn rotation_turns_each_image_by_an_angle_within_the_bound() {
        // A 9×9 image with one bright pixel right of centre: rotated by θ it lands at angle θ.
        let image = Tensor::zeros([1, 1, 9, 9], (Kind::Float, Device::Cpu));
        let _ = image.get(0).get(0).get(4).get(7).fill_(1.0);
        let images = image.repeat([64, 1, 1, 1]);
        let config = Augmentation {
            rotation_degrees: 30.0,
            ..Default::default()
        };
        let out = Augmenter::new(config, 5).apply(&images).unwrap();
        assert_eq!(out.size(), images.size());
        let mut angles = Vec::new();
        for i in 0..64 {
            let o = out.get(i).get(0);
            // The centre of mass of the moved pixel, relative to the image centre.
            let total = o.sum(Kind::Double).double_value(&[]);
            assert!(total > 0.5, "image {i} lost its pixel");
            let ys = Tensor::arange(9, (Kind::Double, Device::Cpu)).view([9, 1]) - 4.0;
            let xs = Tensor::arange(9, (Kind::Double, Device::Cpu)).view([1, 9]) - 4.0;
            let o = o.to_kind(Kind::Double);
            let y = (&o * &ys).sum(Kind::Double).double_value(&[]) / total;
            let x = (&o * &xs).sum(Kind::Double).double_value(&[]) / total;
            angles.push(y.atan2(x).to_degrees());
        }
        assert!(angles.iter().all(|a| a.abs() <= 31.0), "{angles:?}");
        // Both directions and more than a handful of distinct angles.
        assert!(angles.iter().any(|a| *a > 10.0) && angles.iter().any(|a| *a < -10.0));
        let identity = Augmenter::new(Augmentation::default(), 5)
            .apply(&images)
            .unwrap();
        assert!(identity.equal(&images));
    }

    #[test]
    fn rejects_batches_that_are_not_images() {
        let flat = Tensor::zeros([4, 10], (Kind::Float, Device::Cpu));
        let mut augmenter = Augmenter::new(
            Augmentation {
                pad: 1,
                ..Default::default()
            },
            0,
        );
        assert!(augmenter.apply(&flat).is_err());
    }
}
