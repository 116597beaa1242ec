/*!
Quantisation of model updates for secure aggregation: clip → scale → stochastic rounding to
integers mod `2^b`, and decoding of the sum with signed re-centring.

# Brief overview
An update `x ∈ R^d` is first clipped to L2 norm `C`, so every coordinate lies in `[−C, C]`.
It is scaled by `s = 2^p / C` (`p` = precision bits), so `C` maps to `2^p` quantisation steps,
and each coordinate `v = s·x_j` is rounded to `⌊v⌋ + 1` with probability `v − ⌊v⌋`, else `⌊v⌋`
(stochastic rounding: unbiased, randomness from a CSPRNG). Each client's integers lie in
`[−2^p, 2^p]`, so the sum of `n` clients plus distributed noise bounded by `H` in absolute value
(the noise headroom, in quantisation steps) lies in `[−M, M]` with `M = n·2^p + H`. The ring
width is the smallest `b` with `2^(b−1) > M`: the sum cannot wrap, and decoding maps
`[2^(b−1), 2^b)` back to negatives exactly.

# Error bound
For one coordinate, the decoded sum minus the sum of the clipped inputs is
`(Σ_i e_i + η)/s`, where `e_i ∈ (−1, 1)` is client `i`'s rounding error and `η` the integer
noise. The `e_i` are independent, zero-mean and each confined to an interval of length 1, so
- always: `|Σ e_i| / s < n / s`;
- with probability at least `1 − β` (Hoeffding): `|Σ e_i| / s ≤ sqrt(n·ln(2/β)/2) / s`;
- the variance is at most `n / (4 s²)`.

Decoding to `f32` adds a relative error of at most `2^−24`.

```
use cohort_privacy::quantize::{Quantizer, QuantizerConfig};
use rand::SeedableRng;

let q = Quantizer::new(QuantizerConfig { clients: 3, clip: 1.0, precision_bits: 16, noise_headroom: 0 }).unwrap();
assert_eq!(q.bits(), 19);
let mut rng = rand::rngs::ChaCha20Rng::from_seed([7; 32]);
let a: Vec<u32> = q.encode(&[0.5, -0.25], &mut rng).unwrap();
let b: Vec<u32> = q.encode(&[-0.75, -0.5], &mut rng).unwrap();
let sum: Vec<u32> = a.iter().zip(&b).map(|(x, y)| (x + y) & ((1 << q.bits()) - 1)).collect();
let decoded = q.decode(&sum);
assert!((decoded[0] + 0.25).abs() < 1e-4 && (decoded[1] + 0.75).abs() < 1e-4);
```
*/

use std::fmt;

use rand::CryptoRng;

use crate::secagg::Lane;

/// What the quantiser must accommodate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantizerConfig {
    /// Most clients whose inputs are summed.
    pub clients: usize,
    /// L2 clipping norm `C` of each update.
    pub clip: f32,
    /// `C` maps to `2^precision_bits` quantisation steps.
    pub precision_bits: u32,
    /// Bound on the absolute value of the summed integer noise, in quantisation steps
    /// (0 when no distributed noise is added).
    pub noise_headroom: u64,
}

/// Why a quantiser cannot be built or an input cannot be encoded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum QuantizeError {
    /// The configuration is unusable; the text says why and what to change.
    InvalidConfig(String),
    /// The ring needs more bits than the lane type holds.
    LaneTooNarrow {
        /// Bits needed.
        bits: u32,
        /// Bits of the lane type.
        lane_bits: u32,
    },
    /// An input coordinate is NaN or infinite.
    NonFinite {
        /// The first offending index.
        index: usize,
    },
}

impl fmt::Display for QuantizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantizeError::InvalidConfig(why) => write!(f, "invalid quantiser config: {why}"),
            QuantizeError::LaneTooNarrow { bits, lane_bits } => {
                write!(
                    f,
                    "the sum needs {bits} bits but the lane holds {lane_bits}: use u64 lanes"
                )
            }
            QuantizeError::NonFinite { index } => {
                write!(f, "input coordinate {index} is not finite")
            }
        }
    }
}

impl std::error::Error for QuantizeError {}

/// Encodes updates into `Z_{2^b}` and decodes their sum; see the module docs for the maths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    config: QuantizerConfig,
    scale: f64,
    max_abs: i64,
    bits: u32,
}

impl Quantizer {
    /// Chooses the ring width `b` so that the sum of `clients` inputs plus noise cannot wrap.
    pub fn new(config: QuantizerConfig) -> Result<Self, QuantizeError> {
        let bad = |why: String| Err(QuantizeError::InvalidConfig(why));
        if !(config.clip.is_finite() && config.clip > 0.0) {
            return bad(format!(
                "clip must be a positive finite number, got {}",
                config.clip
            ));
        }
        if config.clients == 0 {
            return bad("clients must be at least 1".into());
        }
        if config.precision_bits > 52 {
            return bad(format!(
                "precision_bits must be at most 52, got {}",
                config.precision_bits
            ));
        }
        let max_abs = 1i64 << config.precision_bits;
        let bound = config.clients as u128 * max_abs as u128 + u128::from(config.noise_headroom);
        // Smallest b with 2^(b-1) > bound.
        let bits = 128 - bound.leading_zeros() + 1;
        if bits > 64 {
            return bad(format!(
                "{} clients at {} precision bits with noise headroom {} need {bits} bits, more than 64: \
                 lower precision_bits",
                config.clients, config.precision_bits, config.noise_headroom
            ));
        }
        let scale = max_abs as f64 / f64::from(config.clip);
        Ok(Quantizer {
            config,
            scale,
            max_abs,
            bits,
        })
    }

    /// The ring width `b`: inputs and sums live in `Z_{2^b}`.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Quantisation steps per unit of the input.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The configuration this quantiser was built for.
    pub fn config(&self) -> &QuantizerConfig {
        &self.config
    }

    /// The worst-case absolute error of one decoded coordinate of the sum of `n` inputs (noise
    /// aside): `n / s`.
    pub fn worst_case_error(&self, n: usize) -> f64 {
        n as f64 / self.scale
    }

    /// The error of one decoded coordinate of the sum of `n` inputs that is exceeded with
    /// probability at most `beta` (Hoeffding): `sqrt(n·ln(2/β)/2) / s`.
    pub fn error_bound(&self, n: usize, beta: f64) -> f64 {
        (n as f64 * (2.0 / beta).ln() / 2.0).sqrt() / self.scale
    }

    /// Clips `x` to L2 norm `C`, scales and rounds it stochastically into `Z_{2^b}`.
    pub fn encode<L: Lane, R: CryptoRng + ?Sized>(
        &self,
        x: &[f32],
        rng: &mut R,
    ) -> Result<Vec<L>, QuantizeError> {
        if self.bits > L::BITS {
            return Err(QuantizeError::LaneTooNarrow {
                bits: self.bits,
                lane_bits: L::BITS,
            });
        }
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(QuantizeError::NonFinite { index });
        }
        let norm = x
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let clip = f64::from(self.config.clip);
        let factor = if norm > clip { clip / norm } else { 1.0 } * self.scale;
        Ok(x.iter()
            .map(|&v| {
                let scaled = f64::from(v) * factor;
                let floor = scaled.floor();
                let uniform = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                let rounded = floor as i64 + i64::from(uniform < scaled - floor);
                // Float rounding can push a coordinate a hair past the clip; never past 2^p.
                let q = rounded.clamp(-self.max_abs, self.max_abs);
                L::from_u64(q as u64).reduce(self.bits)
            })
            .collect())
    }

    /// Maps a sum in `Z_{2^b}` back to real numbers, reading `[2^(b−1), 2^b)` as negative.
    pub fn decode<L: Lane>(&self, sum: &[L]) -> Vec<f32> {
        let half = 1u64 << (self.bits - 1);
        sum.iter()
            .map(|&x| {
                let v = x.to_u64() & (u64::MAX >> (64 - self.bits));
                let signed = if v >= half {
                    v as i128 - (1i128 << self.bits)
                } else {
                    v as i128
                };
                (signed as f64 / self.scale) as f32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::ChaCha20Rng;

    fn q(clients: usize, precision_bits: u32, noise_headroom: u64) -> Quantizer {
        Quantizer::new(QuantizerConfig {
            clients,
            clip: 2.0,
            precision_bits,
            noise_headroom,
        })
        .unwrap()
    }

    fn add<L: Lane>(acc: &mut [L], x: &[L], bits: u32) {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a = a.wrapping_add(v).reduce(bits);
        }
    }

    #[test]
    fn bits_grow_with_clients_precision_and_headroom() {
        assert_eq!(q(1, 0, 0).bits(), 2); // values in [-1, 1]
        assert_eq!(q(1000, 16, 0).bits(), 27); // 1000·2^16 < 2^26
        assert_eq!(q(1024, 16, 0).bits(), 28); // 2^26 needs 2^(b-1) > 2^26
        assert_eq!(q(1000, 16, 1 << 27).bits(), 29);
        assert!(
            Quantizer::new(QuantizerConfig {
                clients: 1 << 20,
                clip: 1.0,
                precision_bits: 50,
                noise_headroom: 0
            })
            .is_err()
        );
        assert!(
            Quantizer::new(QuantizerConfig {
                clients: 1,
                clip: f32::NAN,
                precision_bits: 8,
                noise_headroom: 0
            })
            .is_err()
        );
    }

    #[test]
    fn extreme_sums_plus_noise_do_not_wrap() {
        // Every client at +C (or −C) on one coordinate, plus noise at the headroom: exact.
        let (n, h) = (37, 1000u64);
        let quant = q(n, 12, h);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for sign in [1.0f32, -1.0] {
            let x = [2.0 * sign, 0.0];
            let mut acc = vec![0u32; 2];
            for _ in 0..n {
                add(
                    &mut acc,
                    &quant.encode::<u32, _>(&x, &mut rng).unwrap(),
                    quant.bits(),
                );
            }
            let noise = if sign > 0.0 { h } else { h.wrapping_neg() };
            add(
                &mut acc,
                &[u32::from_u64(noise).reduce(quant.bits()), 0],
                quant.bits(),
            );
            let decoded = quant.decode(&acc);
            let expected = sign * (n as f32 * 2.0 + h as f32 / quant.scale() as f32);
            assert!(
                (decoded[0] - expected).abs() < 1e-3,
                "{decoded:?} vs {expected}"
            );
        }
    }

    #[test]
    fn clipping_scales_long_vectors_to_the_norm() {
        let quant = q(1, 20, 0);
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let out = quant.decode(&quant.encode::<u64, _>(&[30.0, 40.0], &mut rng).unwrap());
        // Norm 50 clipped to 2: (1.2, 1.6).
        assert!(
            (out[0] - 1.2).abs() < 1e-5 && (out[1] - 1.6).abs() < 1e-5,
            "{out:?}"
        );
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        // 0.3 of a step: the mean of many encodings must be 0.3 steps (±5 standard errors).
        let quant = q(1, 4, 0);
        let step = 1.0 / quant.scale();
        let x = [(0.3 * step) as f32];
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let draws = 20_000;
        let mean = (0..draws)
            .map(|_| f64::from(quant.decode(&quant.encode::<u32, _>(&x, &mut rng).unwrap())[0]))
            .sum::<f64>()
            / f64::from(draws);
        let se = (0.21f64 / f64::from(draws)).sqrt() * step;
        assert!(
            (mean - 0.3 * step).abs() < 5.0 * se,
            "mean {mean}, expected {}",
            0.3 * step
        );
    }

    #[test]
    fn non_finite_inputs_and_narrow_lanes_are_refused() {
        let quant = q(4, 8, 0);
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        assert_eq!(
            quant.encode::<u32, _>(&[0.0, f32::INFINITY], &mut rng),
            Err(QuantizeError::NonFinite { index: 1 })
        );
        let wide = q(1 << 20, 40, 0);
        assert!(matches!(
            wide.encode::<u32, _>(&[0.0], &mut rng),
            Err(QuantizeError::LaneTooNarrow { .. })
        ));
    }

    #[test]
    fn the_high_probability_bound_holds_at_its_rate() {
        // 20 clients, 2000 coordinates, beta = 0.01: expect about 20 coordinates over the
        // bound at most (Hoeffding is conservative); far more would mean a biased rounding.
        let n = 20;
        let quant = q(n, 3, 0);
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let d = 2000;
        let x: Vec<f32> = (0..d).map(|j| ((j * 7919) % 1000) as f32 * 1e-5).collect();
        let mut acc = vec![0u32; d];
        for _ in 0..n {
            add(
                &mut acc,
                &quant.encode::<u32, _>(&x, &mut rng).unwrap(),
                quant.bits(),
            );
        }
        let bound = quant.error_bound(n, 0.01);
        let over = quant
            .decode(&acc)
            .iter()
            .zip(&x)
            .filter(|&(s, &v)| (f64::from(*s) - n as f64 * f64::from(v)).abs() > bound)
            .count();
        assert!(
            over <= 20,
            "{over} of {d} coordinates exceed the 99% bound {bound}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn decoded_sum_is_within_the_worst_case_bound(
            inputs in proptest::collection::vec(proptest::collection::vec(-3.0f32..3.0, 4), 1..20),
            precision in 2u32..20,
            seed in any::<u64>(),
        ) {
            let n = inputs.len();
            let quant = q(n, precision, 0);
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut acc = vec![0u64; 4];
            let mut truth = [0f64; 4];
            for x in &inputs {
                add(&mut acc, &quant.encode::<u64, _>(x, &mut rng).unwrap(), quant.bits());
                let norm = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
                let f = if norm > 2.0 { 2.0 / norm } else { 1.0 };
                for (t, &v) in truth.iter_mut().zip(x) {
                    *t += f64::from(v) * f;
                }
            }
            let bound = quant.worst_case_error(n);
            for (d, t) in quant.decode(&acc).iter().zip(truth) {
                prop_assert!((f64::from(*d) - t).abs() <= bound + 1e-5 * t.abs().max(1.0));
            }
        }
    }
}
