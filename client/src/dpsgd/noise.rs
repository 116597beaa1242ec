//! Gaussian noise for DP-SGD and the randomness of Poisson sampling.
//!
//! The default [`SecureGaussian`] draws from AES-256-CTR keyed by the operating system: noise
//! an adversary could predict protects nothing. Faster or reproducible sources are only in
//! [`super::danger`].

use std::convert::Infallible;

use cohort_privacy::noise::gaussian;
use cohort_privacy::rng::AesCtrRng;
use rand::SeedableRng;
use rand::TryCryptoRng;
use rand::rngs::SysRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, TchError, Tensor};

/// A source of i.i.d. N(0, std²) tensors.
pub trait GaussianSource: std::fmt::Debug + Send {
    /// A tensor of `shape` whose entries are independent N(0, `std`²).
    fn sample(
        &mut self,
        std: f64,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, TchError>;

    /// Whether the source is a CSPRNG seeded unpredictably (what a privacy claim needs).
    fn is_secure(&self) -> bool;

    /// Adds independent N(0, `std`²) to every entry of every tensor of `targets`, in place
    /// (one DP-SGD step's noise). Sources that can draw a whole step's noise at once override
    /// this; the default draws one tensor at a time.
    fn add_noise(&mut self, std: f64, targets: &mut [Tensor]) -> Result<(), TchError> {
        for target in targets.iter_mut() {
            let noise = self.sample(std, &target.size(), target.kind(), target.device())?;
            let _ = target.f_add_(&noise)?;
        }
        Ok(())
    }
}

/// N(0, σ²) from AES-256-CTR (a CSPRNG) keyed from the operating system.
///
/// AES-CTR rather than ChaCha20 because a step draws one keystream word per parameter and, with
/// AES-NI, AES-CTR makes those words about twice as fast (`cohort_privacy::rng`).
pub struct SecureGaussian {
    rng: AesCtrRng,
    /// Reused across steps so a step allocates nothing; zeroed after every use.
    buffer: Vec<f32>,
}

impl std::fmt::Debug for SecureGaussian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the generator's state nor the last noise is printed.
        f.debug_struct("SecureGaussian").finish_non_exhaustive()
    }
}

impl SecureGaussian {
    /// Keys AES-256-CTR from the operating system's entropy source.
    pub fn from_os() -> Result<Self, OsRandomError> {
        let rng = AesCtrRng::from_os().map_err(|e| OsRandomError(e.0))?;
        Ok(Self {
            rng,
            buffer: Vec::new(),
        })
    }

    /// Keys AES-256-CTR from `parent` (reproducible noise from a seeded CSPRNG; see
    /// [`super::danger`]).
    pub(crate) fn from_rng<R: TryCryptoRng<Error = Infallible>>(mut parent: R) -> Self {
        Self {
            rng: AesCtrRng::from_parent(&mut parent),
            buffer: Vec::new(),
        }
    }
}

/// Fills `out` with i.i.d. N(0, `std`²) in double precision by rand_distr's ziggurat (exact
/// tails), for models trained in `f64`.
///
/// One thread on purpose: during training libtorch's OpenMP workers spin on every other core
/// between operations, so a second noise thread only time-shares a core with a spinning
/// worker (measured: two threads drew a step's noise no faster than one).
fn fill_normals_f64(rng: &mut AesCtrRng, std: f64, out: &mut [f64]) {
    for x in out.iter_mut() {
        let z: f64 = StandardNormal.sample(rng);
        *x = z * std;
    }
}

/// The operating system refused to give entropy; training must not proceed without it.
#[derive(Debug, Clone)]
pub struct OsRandomError(pub String);

impl std::fmt::Display for OsRandomError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the operating system's random source failed: {}", self.0)
    }
}

impl std::error::Error for OsRandomError {}

/// A ChaCha20 generator seeded from the operating system.
pub(crate) fn os_seeded_chacha() -> Result<ChaCha20Rng, OsRandomError> {
    ChaCha20Rng::try_from_rng(&mut SysRng).map_err(|err| OsRandomError(err.to_string()))
}

impl SecureGaussian {
    /// `n` i.i.d. N(0, `std`²) values as a flat CPU tensor of `kind`.
    ///
    /// `Double` models get values drawn in double precision; every other kind gets the
    /// single-precision ziggurat ([`gaussian::fill_normal_f32`], one 32-bit word per value,
    /// exact tails), through the reused buffer, which is zeroed as soon as libtorch has its
    /// copy.
    fn normals(&mut self, std: f64, n: usize, kind: Kind) -> Result<Tensor, TchError> {
        if kind == Kind::Double {
            let mut values = vec![0f64; n];
            fill_normals_f64(&mut self.rng, std, &mut values);
            let tensor = Tensor::f_from_slice(&values);
            values.fill(0.0);
            std::hint::black_box(&values);
            return tensor;
        }
        if self.buffer.len() < n {
            self.buffer.resize(n, 0.0);
        }
        let values = &mut self.buffer[..n];
        gaussian::fill_normal_f32(&mut self.rng, std, values);
        let tensor = Tensor::f_from_slice(values);
        values.fill(0.0);
        std::hint::black_box(&self.buffer);
        tensor?.f_to_kind(kind)
    }
}

/// Values drawn and handed to libtorch at a time when adding noise to `f32` CPU tensors.
const NOISE_CHUNK: usize = 1 << 16;

impl SecureGaussian {
    /// Adds noise to `f32` CPU tensors a chunk at a time: each chunk is drawn into the reused
    /// buffer (256 KiB, which stays in cache), copied by libtorch and added to its slice of the
    /// target. One step-sized draw instead makes libtorch allocate and copy a buffer as large
    /// as the model every step: for the 535,818-parameter MLP a step's noise took 1.76 ms that
    /// way and 1.55 ms in chunks (docs/benchmarks.md).
    fn add_noise_in_chunks(&mut self, std: f64, targets: &mut [Tensor]) -> Result<(), TchError> {
        if self.buffer.len() < NOISE_CHUNK {
            self.buffer.resize(NOISE_CHUNK, 0.0);
        }
        for target in targets.iter_mut() {
            if !target.is_contiguous() {
                let noise = self.sample(std, &target.size(), Kind::Float, Device::Cpu)?;
                let _ = target.f_add_(&noise)?;
                continue;
            }
            // A view shares the target's storage, so adding to it adds to the target.
            let flat = target.f_view([-1])?;
            let n = flat.numel();
            let mut offset = 0;
            while offset < n {
                let len = (n - offset).min(NOISE_CHUNK);
                let values = &mut self.buffer[..len];
                gaussian::fill_normal_f32(&mut self.rng, std, values);
                let noise = Tensor::f_from_slice(values);
                values.fill(0.0);
                let _ = flat
                    .f_narrow(0, offset as i64, len as i64)?
                    .f_add_(&noise?)?;
                offset += len;
            }
        }
        std::hint::black_box(&self.buffer);
        Ok(())
    }
}

impl GaussianSource for SecureGaussian {
    fn sample(
        &mut self,
        std: f64,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, TchError> {
        let n: i64 = shape.iter().product();
        let n = usize::try_from(n).map_err(|_| TchError::Shape(format!("bad shape {shape:?}")))?;
        if n == 0 {
            return Tensor::f_zeros(shape, (kind, device));
        }
        self.normals(std, n, kind)?
            .f_reshape(shape)?
            .f_to_device(device)
    }

    /// One draw for the whole step, added to each tensor as a slice of it: a few libtorch calls
    /// per step instead of several per parameter.
    fn add_noise(&mut self, std: f64, targets: &mut [Tensor]) -> Result<(), TchError> {
        let Some(first) = targets.first() else {
            return Ok(());
        };
        let (kind, device) = (first.kind(), first.device());
        if targets
            .iter()
            .any(|t| t.kind() != kind || t.device() != device)
        {
            for target in targets.iter_mut() {
                let noise = self.sample(std, &target.size(), target.kind(), target.device())?;
                let _ = target.f_add_(&noise)?;
            }
            return Ok(());
        }
        if kind == Kind::Float && device == Device::Cpu {
            return self.add_noise_in_chunks(std, targets);
        }
        let total: usize = targets.iter().map(Tensor::numel).sum();
        if total == 0 {
            return Ok(());
        }
        let noise = self.normals(std, total, kind)?.f_to_device(device)?;
        let mut offset = 0i64;
        for target in targets.iter_mut() {
            let n = target.numel() as i64;
            let slice = noise
                .f_narrow(0, offset, n)?
                .f_view(target.size().as_slice())?;
            let _ = target.f_add_(&slice)?;
            offset += n;
        }
        Ok(())
    }

    fn is_secure(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_standard_normal() {
        let mut source = SecureGaussian::from_rng(ChaCha20Rng::seed_from_u64(9));
        let z = source
            .sample(1.0, &[400, 501], Kind::Double, Device::Cpu)
            .unwrap();
        assert_eq!(z.size(), [400, 501]);
        let n = z.numel() as f64;
        let mean = z.mean(Kind::Double).double_value(&[]);
        let std = z.std(true).double_value(&[]);
        assert!(mean.abs() < 5.0 / n.sqrt(), "mean {mean}");
        assert!((std - 1.0).abs() < 0.005, "std {std}");
        let within = |k: f64| {
            z.abs()
                .le(k)
                .to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[])
        };
        assert!((within(1.0) - 0.682_689).abs() < 0.005);
        assert!((within(2.0) - 0.954_500).abs() < 0.003);
        assert!((within(3.0) - 0.997_300).abs() < 0.001);
    }

    #[test]
    fn bulk_noise_is_independent_standard_normal_in_every_tensor() {
        let mut source = SecureGaussian::from_rng(ChaCha20Rng::seed_from_u64(5));
        // Odd sizes check the slicing of one draw into the targets.
        let shapes: [&[i64]; 4] = [&[300, 301], &[7], &[20, 3, 5, 5], &[1]];
        let mut targets: Vec<Tensor> = shapes
            .iter()
            .map(|s| Tensor::full(*s, 2.0, (Kind::Float, Device::Cpu)))
            .collect();
        source.add_noise(0.5, &mut targets).unwrap();
        let flat = Tensor::cat(
            &targets
                .iter()
                .map(|t| t.flatten(0, -1).to_kind(Kind::Double) - 2.0)
                .collect::<Vec<_>>(),
            0,
        );
        let n = flat.numel() as f64;
        assert_eq!(targets[2].size(), [20, 3, 5, 5]);
        let mean = flat.mean(Kind::Double).double_value(&[]);
        let std = flat.std(true).double_value(&[]);
        assert!(mean.abs() < 5.0 * 0.5 / n.sqrt(), "mean {mean}");
        assert!((std / 0.5 - 1.0).abs() < 0.01, "std {std}");
        // Cosine and sine halves are uncorrelated (neighbouring slices share no values).
        let big = &targets[0].flatten(0, -1) - 2.0;
        let half = big.numel() as i64 / 2;
        let a = big.narrow(0, 0, half).to_kind(Kind::Double);
        let b = big.narrow(0, half, half).to_kind(Kind::Double);
        let corr = (&a * &b).mean(Kind::Double).double_value(&[]) / 0.25;
        assert!(
            corr.abs() < 5.0 / (half as f64).sqrt(),
            "correlation {corr}"
        );
        for t in &targets {
            assert!(t.ne(2.0).all().int64_value(&[]) == 1);
        }
        // The big target takes two chunks; the second is fresh noise, not the first again.
        let tail = big.numel() as i64 - NOISE_CHUNK as i64;
        let first = big.narrow(0, 0, tail).to_kind(Kind::Double);
        let second = big
            .narrow(0, NOISE_CHUNK as i64, tail)
            .to_kind(Kind::Double);
        let corr = (&first * &second).mean(Kind::Double).double_value(&[]) / 0.25;
        assert!(
            corr.abs() < 5.0 / (tail as f64).sqrt(),
            "chunks correlate: {corr}"
        );
    }

    #[test]
    fn successive_steps_are_fresh_and_follow_a_changed_deviation() {
        // Several keystream refills per step; every step's noise is new and a changed
        // deviation takes effect at once.
        let mut source = SecureGaussian::from_rng(ChaCha20Rng::seed_from_u64(11));
        let shapes: [&[i64]; 2] = [&[300, 200], &[101]];
        let mut draws = Vec::new();
        for std in [0.5, 0.5, 0.5, 2.0, 2.0] {
            let mut targets: Vec<Tensor> = shapes
                .iter()
                .map(|s| Tensor::zeros(*s, (Kind::Float, Device::Cpu)))
                .collect();
            source.add_noise(std, &mut targets).unwrap();
            let flat = Tensor::cat(
                &targets
                    .iter()
                    .map(|t| t.flatten(0, -1).to_kind(Kind::Double))
                    .collect::<Vec<_>>(),
                0,
            );
            let got = flat.std(true).double_value(&[]);
            assert!((got / std - 1.0).abs() < 0.02, "std {got}, wanted {std}");
            draws.push(flat);
        }
        let n = draws[0].numel() as f64;
        for pair in draws.windows(2) {
            let corr = (&pair[0] * &pair[1]).mean(Kind::Double).double_value(&[])
                / (pair[0].std(true).double_value(&[]) * pair[1].std(true).double_value(&[]));
            assert!(
                corr.abs() < 5.0 / n.sqrt(),
                "consecutive steps correlate: {corr}"
            );
        }
    }

    #[test]
    fn non_contiguous_targets_get_their_noise_in_place() {
        let mut source = SecureGaussian::from_rng(ChaCha20Rng::seed_from_u64(13));
        let mut targets = vec![Tensor::zeros([400, 300], (Kind::Float, Device::Cpu)).tr()];
        assert!(!targets[0].is_contiguous());
        source.add_noise(1.5, &mut targets).unwrap();
        let std = targets[0].std(true).double_value(&[]);
        assert!((std / 1.5 - 1.0).abs() < 0.02, "std {std}");
    }

    #[test]
    fn sources_seeded_from_the_os_differ() {
        let mut a = SecureGaussian::from_os().unwrap();
        let mut b = SecureGaussian::from_os().unwrap();
        let x = a.sample(1.0, &[8], Kind::Float, Device::Cpu).unwrap();
        let y = b.sample(1.0, &[8], Kind::Float, Device::Cpu).unwrap();
        assert!(!x.allclose(&y, 0.0, 0.0, false));
        assert!(a.is_secure());
    }
}
