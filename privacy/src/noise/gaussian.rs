/*!
Single-precision Gaussian noise for DP-SGD, drawn fast from a CSPRNG.

A DP-SGD step adds one N(0, σ²C²) value to every parameter, so for a model of half a million
parameters the noise alone costs as much as a training step when it is drawn the usual way
(rand_distr's double-precision ziggurat, one 64-bit word per value). Training runs in `f32`,
and an `f32` needs only 23 bits of uniform mantissa, so this sampler spends one 32-bit
keystream word per value and keeps the common path to a table lookup, an integer compare and a
multiply.

# The method
The ziggurat of Marsaglia & Tsang (2000) with 256 layers of equal area `v` under the half
density `f(x) = exp(−x²/2)`. A 32-bit word splits into a layer index (bits 0–7), a sign
(bit 8) and a 23-bit uniform `u = (m + ½)/2²³` (bits 9–31), so the three never share bits.
The candidate `x = u · xᵢ` is accepted at once when it lies inside the layer's inner rectangle
(`x < xᵢ₊₁`, 98.5 % of draws), decided exactly in integers as `m < Kᵢ`. Otherwise, in double
precision and with fresh 64-bit words:
- in a wedge (layers 1–255), `x` is accepted if a uniform point under the layer falls below
  `f(x)`, and the draw is discarded if not;
- in the base layer, `x` beyond `r` is replaced by an exact sample of the tail `|z| > r`
  (Marsaglia's exponential method), so the tails are not truncated: a truncated Gaussian would
  leak privacy at the truncation point.

Discarded draws leave no gap: values are written in the order of the accepted draws, and since
draws are independent, accepted draws are i.i.d. N(0, 1).

The tables are computed from `r` alone on first use (the tail area by a continued fraction),
and a test checks that every layer has area `v` and that the top layer closes at `f = 1`.
The output's granularity is that of an `f32`: a value is `(m + ½) · xᵢ · σ / 2²³` rounded once.
*/

use std::sync::LazyLock;

use rand::Rng;
use zeroize::Zeroize;

use crate::rng::AesCtrRng;

/// Layers of the ziggurat: eight bits of each word pick one.
const LAYERS: usize = 256;
/// Where the base layer's tail begins for 256 layers (Marsaglia & Tsang 2000).
const R: f64 = 3.654_152_885_361_009;
/// 2²³: the uniform part of a word has 23 bits.
const MANTISSA_SCALE: f64 = 8_388_608.0;
/// Keystream words drawn from the generator at a time.
const CHUNK: usize = 1024;

/// The half density, unnormalised.
fn density(x: f64) -> f64 {
    (-0.5 * x * x).exp()
}

/// ∫ₓ^∞ exp(−t²/2) dt for x ≥ 3, by the continued fraction of Mills' ratio (its error at
/// x = r after 400 terms is far below an `f64` ulp).
fn tail_area(x: f64) -> f64 {
    let mut fraction = x;
    for k in (1..400).rev() {
        fraction = x + f64::from(k) / fraction;
    }
    density(x) / fraction
}

/// The ziggurat's layers.
#[derive(Debug)]
struct Tables {
    /// Right edges: `x[0] = v / f(r)` (the base layer's width, tail included), `x[1] = r`,
    /// decreasing to `x[256] = 0`.
    x: [f64; LAYERS + 1],
    /// `f(x[i])`, with `f[0] = 0` standing for the base layer's bottom.
    f: [f64; LAYERS + 1],
    /// Layer `i` accepts `m` at once when `m < inner[i]`: exactly the `m` with
    /// `(m + ½)/2²³ · x[i] < x[i+1]`.
    inner: [u32; LAYERS],
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let area = R * density(R) + tail_area(R);
    let mut x = [0f64; LAYERS + 1];
    x[0] = area / density(R);
    x[1] = R;
    for i in 1..LAYERS - 1 {
        x[i + 1] = (-2.0 * (area / x[i] + density(x[i])).ln()).sqrt();
    }
    x[LAYERS] = 0.0;
    let mut f = [0f64; LAYERS + 1];
    for (fi, xi) in f.iter_mut().zip(x.iter()).skip(1) {
        *fi = density(*xi);
    }
    let mut inner = [0u32; LAYERS];
    for (i, k) in inner.iter_mut().enumerate() {
        // Largest count of m with m + ½ < 2²³·x[i+1]/x[i]; at most 2²³, so it fits.
        let bound = MANTISSA_SCALE * x[i + 1] / x[i] - 0.5;
        *k = bound.ceil().clamp(0.0, MANTISSA_SCALE) as u32;
    }
    Tables { x, f, inner }
});

/// A uniform in (0, 1] from the top 53 bits of a word (never 0, so its logarithm is finite).
fn open_unit(word: u64) -> f64 {
    ((word >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The rare path for a draw outside its layer's inner rectangle: the magnitude it yields, or
/// `None` when the draw is rejected.
#[cold]
fn outside_inner(rng: &mut AesCtrRng, tables: &Tables, layer: usize, mantissa: u32) -> Option<f64> {
    let u = (f64::from(mantissa) + 0.5) / MANTISSA_SCALE;
    if layer == 0 {
        // Beyond r: the exact tail. Accepts with probability > 0.87 per try.
        loop {
            let a = -open_unit(rng.next_u64()).ln() / R;
            let b = -open_unit(rng.next_u64()).ln();
            if 2.0 * b >= a * a {
                return Some(R + a);
            }
        }
    }
    let x = u * tables.x[layer];
    let (top, bottom) = (tables.f[layer + 1], tables.f[layer]);
    let height = bottom + (top - bottom) * open_unit(rng.next_u64());
    (height < density(x)).then_some(x)
}

/// Fills `out` with i.i.d. N(0, `std`²) values from `rng`.
///
/// `std` must be finite and non-negative (the caller's DP configuration checks it); a zero
/// `std` gives zeros without drawing.
pub fn fill_normal_f32(rng: &mut AesCtrRng, std: f64, out: &mut [f32]) {
    if std == 0.0 {
        out.fill(0.0);
        return;
    }
    let tables = &*TABLES;
    // Per-layer scale so the common path is one multiply: x[i] · σ / 2²³.
    let mut scale = [0f32; LAYERS];
    for (s, x) in scale.iter_mut().zip(tables.x.iter()) {
        *s = (x * std / MANTISSA_SCALE) as f32;
    }
    let mut words = [0u32; CHUNK];
    let mut filled = 0;
    while filled < out.len() {
        rng.fill_u32(&mut words);
        for &word in &words {
            let Some(slot) = out.get_mut(filled) else {
                break;
            };
            let layer = (word & 0xff) as usize;
            // Bit 8 moved to the float's sign bit: a branch on a fair coin would be
            // mispredicted every other value, which cost more than the rest of the loop.
            let sign = (word & 0x100) << 23;
            let mantissa = word >> 9;
            let magnitude = if mantissa < tables.inner[layer] {
                (mantissa as f32 + 0.5) * scale[layer]
            } else {
                match outside_inner(rng, tables, layer, mantissa) {
                    Some(x) => (x * std) as f32,
                    None => continue,
                }
            };
            *slot = f32::from_bits(magnitude.to_bits() ^ sign);
            filled += 1;
        }
    }
    words.zeroize();
}

#[cfg(test)]
#[path = "gaussian_tests.rs"]
mod tests;
