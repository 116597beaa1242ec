//! Canaries for the one-run privacy audit (`cohort audit dp-sgd`): gradient canaries for the
//! white-box mode, mislabelled examples ([`InputCanaries`]) for the black-box one.
//!
//! A gradient canary is what Steinke, Nasr and Jagielski 2023 plant in white-box audits: a
//! fake example whose clipped gradient is a fixed vector of norm C in a random direction.
//! Each canary is *included* with probability ½ (the bit the auditor guesses); an included
//! canary then joins every step with the trainer's sampling rate q, exactly as a real example
//! would, and its gradient is added to the clipped sum before the noise. DP-SGD's guarantee
//! covers it like any example, so an accountant's ε must bound what the canaries reveal.
//!
//! Directions are random sign vectors `±1/√d` over the trainable parameters, kept as packed
//! bits (M·d/8 bytes: 67 MB for 1000 canaries on the 536k-parameter MLP, where f32 vectors
//! would take 2 GiB) and unpacked by libtorch only for the canaries a step samples. A trainer
//! without canaries pays one `Option` check per step.

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, TchError, Tensor};

use super::{DpError, Network, PrivateTrainer};
use crate::data::Dataset;

/// The RNG stream of the inclusion bits.
const INCLUSION_STREAM: u64 = u64::MAX;
/// The RNG stream of the directions' sign bits.
const DIRECTION_STREAM: u64 = u64::MAX - 3;
/// The RNG stream of the per-step sampling of included canaries.
const SAMPLING_STREAM: u64 = u64::MAX - 1;
/// The RNG stream of the black-box canaries' choice, labels and inclusion.
const INPUT_STREAM: u64 = u64::MAX - 2;

/// M gradient canaries over a network's trainable parameters (see the module docs).
#[derive(Debug)]
pub struct GradientCanaries {
    included: Vec<bool>,
    /// Indices of the included canaries, the only ones a step may sample.
    members: Vec<i64>,
    /// The sign bits of every direction, `[M, ⌈d/8⌉]` bytes on the trainer's device.
    signs: Tensor,
    /// The eight bit masks 1, 2, …, 128 that unpack a byte.
    masks: Tensor,
    /// Element counts and shapes of the trainable parameters, in trainer order.
    shapes: Vec<Vec<i64>>,
    dimension: usize,
    norm: f64,
    rate: f64,
    sampler: ChaCha8Rng,
    /// Times each canary was sampled so far (0 for excluded ones).
    sampled: Vec<u32>,
}

impl GradientCanaries {
    /// Draws `count` canaries of norm `norm` (the clip norm C) for the trainable parameters of
    /// `network`, each included with probability ½, sampled at rate `rate` per step.
    ///
    /// Everything is derived from `seed`, so a run can be replayed; the seed must not depend
    /// on the data.
    pub fn new<N: Network>(
        network: &N,
        count: usize,
        norm: f64,
        rate: f64,
        seed: u64,
    ) -> Result<Self, DpError> {
        if count == 0 {
            return Err(DpError::InvalidConfig(
                "an audit needs at least one canary".into(),
            ));
        }
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(DpError::InvalidConfig(format!(
                "the canary norm must be finite and > 0, got {norm}"
            )));
        }
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(DpError::InvalidConfig(format!(
                "the canary sampling rate must be in (0, 1], got {rate}"
            )));
        }
        let trainable = super::clip::trainable_parameters(network);
        let device = trainable.first().map(|(_, t)| t.device()).ok_or_else(|| {
            DpError::InvalidConfig(
                "the network has no trainable parameter to plant canaries in".into(),
            )
        })?;
        let shapes: Vec<Vec<i64>> = trainable.iter().map(|(_, t)| t.size()).collect();
        let dimension: usize = shapes
            .iter()
            .map(|s| s.iter().product::<i64>().max(0) as usize)
            .sum();
        let mut bits = stream(seed, INCLUSION_STREAM);
        let included: Vec<bool> = (0..count).map(|_| bits.random_bool(0.5)).collect();
        let members = (0..count as i64)
            .filter(|&i| included[i as usize])
            .collect();
        let row = dimension.div_ceil(8);
        let mut packed = vec![0u8; count * row];
        stream(seed, DIRECTION_STREAM).fill_bytes(&mut packed);
        let signs = Tensor::f_from_slice(&packed)?
            .f_view([count as i64, row as i64])?
            .f_to_device(device)?;
        let masks = Tensor::f_from_slice(&[1u8, 2, 4, 8, 16, 32, 64, 128])?.f_to_device(device)?;
        Ok(Self {
            included,
            members,
            signs,
            masks,
            shapes,
            dimension,
            norm,
            rate,
            sampler: stream(seed, SAMPLING_STREAM),
            sampled: vec![0; count],
        })
    }

    /// Whether each canary was included (the secret the audit guesses).
    pub fn included(&self) -> &[bool] {
        &self.included
    }

    /// How many steps sampled each canary.
    pub fn times_sampled(&self) -> &[u32] {
        &self.sampled
    }

    /// d: the number of trainable parameters the directions span.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// The ±1 sign vectors (unscaled directions) of the canaries at `index`, `[k, d]` floats.
    fn sign_rows(&self, index: &[i64]) -> Result<Tensor, TchError> {
        let rows = Tensor::f_from_slice(index)?.f_to_device(self.signs.device())?;
        let k = index.len() as i64;
        self.signs
            .f_index_select(0, &rows)?
            .f_unsqueeze(-1)?
            .f_bitwise_and_tensor(&self.masks)?
            .f_ne(0)?
            .f_reshape([k, -1])?
            .f_narrow(1, 0, self.dimension as i64)?
            .f_to_kind(Kind::Float)?
            .f_mul_scalar(2.0)?
            .f_sub_scalar(1.0)
    }

    /// Canary `index`'s unit direction u_i, flattened in trainable-parameter order.
    pub fn direction(&self, index: usize) -> Result<Vec<f32>, DpError> {
        let row = self
            .sign_rows(&[index as i64])?
            .f_div_scalar((self.dimension as f64).sqrt())?
            .f_to_device(tch::Device::Cpu)?
            .f_reshape([-1])?;
        Ok(Vec::<f32>::try_from(&row)?)
    }

    /// Adds `scale · C · u_i` to `grads` for each included canary this step samples; `grads`
    /// are the clipped sums in trainable-parameter order (before the noise).
    pub fn add_sampled(&mut self, grads: &mut [Tensor], scale: f64) -> Result<(), DpError> {
        let mut chosen = Vec::new();
        for &i in &self.members {
            if self.sampler.random_bool(self.rate) {
                chosen.push(i);
            }
        }
        if chosen.is_empty() {
            return Ok(());
        }
        if grads.len() != self.shapes.len() {
            return Err(DpError::InvalidConfig(format!(
                "the canaries were made for {} trainable parameters, the step has {}",
                self.shapes.len(),
                grads.len()
            )));
        }
        for &i in &chosen {
            self.sampled[i as usize] += 1;
        }
        let unit = self.norm * scale / (self.dimension as f64).sqrt();
        let sum = self
            .sign_rows(&chosen)?
            .f_sum_dim_intlist([0i64].as_slice(), false, Kind::Float)?
            .f_mul_scalar(unit)?;
        let sizes: Vec<i64> = self.shapes.iter().map(|s| s.iter().product()).collect();
        let parts = sum.f_split_with_sizes(sizes.as_slice(), 0)?;
        for ((grad, shape), part) in grads.iter_mut().zip(&self.shapes).zip(parts) {
            let add = part.f_view(shape.as_slice())?.f_to_kind(grad.kind())?;
            let _ = grad.f_add_(&add)?;
        }
        Ok(())
    }

    /// The white-box scores: `−⟨Δ, u_i⟩` for each canary, where `delta` is the final model
    /// change (trained minus initial) flattened in trainable-parameter order. Descent moves
    /// against a planted gradient, so an included canary tends to score high.
    pub fn scores(&self, delta: &[f32]) -> Result<Vec<f64>, DpError> {
        if delta.len() != self.dimension {
            return Err(DpError::InvalidConfig(format!(
                "the model change has {} values, the canaries span {}",
                delta.len(),
                self.dimension
            )));
        }
        let change = Tensor::f_from_slice(delta)?
            .f_to_device(self.signs.device())?
            .f_to_kind(Kind::Double)?;
        let scale = -1.0 / (self.dimension as f64).sqrt();
        let count = self.included.len() as i64;
        let mut scores = Vec::with_capacity(self.included.len());
        // Blocks of 256 rows keep the unpacked signs small (256·d floats).
        let mut start = 0;
        while start < count {
            let index: Vec<i64> = (start..(start + 256).min(count)).collect();
            let dots = self
                .sign_rows(&index)?
                .f_to_kind(Kind::Double)?
                .f_mv(&change)?
                .f_mul_scalar(scale)?
                .f_to_device(tch::Device::Cpu)?;
            scores.extend(Vec::<f64>::try_from(&dots)?);
            start += 256;
        }
        Ok(scores)
    }
}

fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Black-box canaries: M training examples taken out of the data and given a wrong label,
/// each put back (included) with probability ½; the auditor scores them by the trained
/// model's loss, which an included mislabelled example tends to lower.
#[derive(Debug)]
pub struct InputCanaries {
    examples: Dataset,
    included: Vec<bool>,
}

impl InputCanaries {
    /// Takes `count` examples out of `train` (a seeded choice), relabels each to a uniformly
    /// drawn wrong class, and returns the remaining data with the included canaries appended,
    /// beside the canaries.
    pub fn plant(train: &Dataset, count: usize, seed: u64) -> Result<(Dataset, Self), DpError> {
        let n = usize::try_from(train.len()).unwrap_or(0);
        if count == 0 || count >= n {
            return Err(DpError::InvalidConfig(format!(
                "black-box canaries must be between 1 and the {} training examples, got {count}",
                n.saturating_sub(1)
            )));
        }
        let classes = train.num_classes;
        if classes < 2 {
            return Err(DpError::InvalidConfig(
                "black-box canaries need at least two classes to mislabel".into(),
            ));
        }
        let data = |e: crate::data::DataError| DpError::InvalidConfig(e.to_string());
        let mut rng = stream(seed, INPUT_STREAM);
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        let (kept, chosen) = order.split_at(n - count);
        let mut examples = train.select(chosen).map_err(data)?;
        let wrong: Vec<i64> = examples
            .label_vec()
            .map_err(data)?
            .iter()
            .map(|&y| (y + rng.random_range(1..classes)) % classes)
            .collect();
        examples.labels = Tensor::f_from_slice(&wrong)?.f_to_device(train.labels.device())?;
        let included: Vec<bool> = (0..count).map(|_| rng.random_bool(0.5)).collect();
        let inside: Vec<usize> = (0..count).filter(|&i| included[i]).collect();
        let base = train.select(kept).map_err(data)?;
        let planted = examples.select(&inside).map_err(data)?;
        let joined = Dataset {
            features: Tensor::f_cat(&[&base.features, &planted.features], 0)?,
            labels: Tensor::f_cat(&[&base.labels, &planted.labels], 0)?,
            num_classes: classes,
        };
        Ok((joined, Self { examples, included }))
    }

    /// All canaries, with their wrong labels, in canary order.
    pub fn examples(&self) -> &Dataset {
        &self.examples
    }

    /// Whether each canary was put into the training data.
    pub fn included(&self) -> &[bool] {
        &self.included
    }
}

/// Plants `canaries` in `trainer`: from its next step on, each step adds the included
/// canaries it samples to the clipped sum before the noise.
pub fn plant<N: Network>(trainer: &mut PrivateTrainer<N>, canaries: GradientCanaries) {
    trainer.canaries = Some(canaries);
}

/// Takes the canaries back out of `trainer` (to score them after training).
pub fn remove<N: Network>(trainer: &mut PrivateTrainer<N>) -> Option<GradientCanaries> {
    trainer.canaries.take()
}

/// The trainable parameters of `network`, flattened in trainer order into one vector (f32).
pub fn flat_trainable<N: Network>(network: &N) -> Result<Vec<f32>, DpError> {
    let mut out = Vec::new();
    for (_, t) in super::clip::trainable_parameters(network) {
        let flat = t
            .f_detach()?
            .f_to_kind(Kind::Float)?
            .f_to_device(tch::Device::Cpu)?
            .f_reshape([-1])?;
        out.extend(Vec::<f32>::try_from(&flat)?);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "canary_tests.rs"]
mod tests;
