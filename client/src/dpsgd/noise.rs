//! Gaussian noise for DP-SGD and the randomness of Poisson sampling.
//!
//! The default [`SecureGaussian`] draws from ChaCha20 seeded by the operating system: noise an
//! adversary could predict protects nothing. Faster or reproducible sources are only in
//! [`super::danger`].

use rand::rngs::SysRng;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
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
}

/// N(0, σ²) from ChaCha20 (a CSPRNG) seeded from the operating system.
#[derive(Debug)]
pub struct SecureGaussian {
    rng: ChaCha20Rng,
}

impl SecureGaussian {
    /// Seeds ChaCha20 from the operating system's entropy source.
    pub fn from_os() -> Result<Self, OsRandomError> {
        os_seeded_chacha().map(|rng| Self { rng })
    }

    pub(crate) fn from_rng(rng: ChaCha20Rng) -> Self {
        Self { rng }
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

impl GaussianSource for SecureGaussian {
    /// Box–Muller on ChaCha20 output, vectorised by libtorch: each pair of normals takes a
    /// 53-bit uniform u₁ ∈ (0, 1] and a 32-bit uniform u₂, giving r = √(−2 ln u₁) (tails to
    /// ~8.6σ) and (r cos 2πu₂, r sin 2πu₂). This is much faster than
    /// drawing normals one at a time in Rust, which matters for models with millions of weights.
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
        let pairs = n.div_ceil(2);
        let pairs_i64 = pairs as i64;
        let mut wide = vec![0u8; pairs * 8];
        let mut narrow = vec![0u8; pairs * 4];
        self.rng.fill_bytes(&mut wide);
        self.rng.fill_bytes(&mut narrow);
        // Keystream bytes become integers without a Rust loop (fast even in debug builds).
        // u₁ = (k + 1) / 2⁵³ with k the low 53 bits of a 64-bit word: in (0, 1], never 0.
        let step = 1.0 / (1u64 << 53) as f64;
        let u1 = Tensor::f_from_data_size(&wide, &[pairs_i64], Kind::Int64)?
            .f_bitwise_and((1i64 << 53) - 1)?
            .f_to_kind(Kind::Double)?
            .f_mul_scalar(step)?
            .f_add_scalar(step)?;
        // u₂ ∈ [0, 1) from a 32-bit word read as signed.
        let u2 = Tensor::f_from_data_size(&narrow, &[pairs_i64], Kind::Int)?
            .f_to_kind(Kind::Double)?
            .f_add_scalar(2_147_483_648.0)?
            .f_mul_scalar(1.0 / 4_294_967_296.0)?;
        let radius = u1
            .f_log()?
            .f_mul_scalar(-2.0)?
            .f_sqrt()?
            .f_mul_scalar(std)?;
        let angle = u2.f_mul_scalar(2.0 * std::f64::consts::PI)?;
        let normals = Tensor::f_cat(
            &[
                radius.f_mul(&angle.f_cos()?)?,
                radius.f_mul(&angle.f_sin()?)?,
            ],
            0,
        )?;
        normals
            .f_narrow(0, 0, n as i64)?
            .f_reshape(shape)?
            .f_to_kind(kind)?
            .f_to_device(device)
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
    fn sources_seeded_from_the_os_differ() {
        let mut a = SecureGaussian::from_os().unwrap();
        let mut b = SecureGaussian::from_os().unwrap();
        let x = a.sample(1.0, &[8], Kind::Float, Device::Cpu).unwrap();
        let y = b.sample(1.0, &[8], Kind::Float, Device::Cpu).unwrap();
        assert!(!x.allclose(&y, 0.0, 0.0, false));
        assert!(a.is_secure());
    }
}
