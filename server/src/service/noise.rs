//! Central Gaussian noise for client-level DP (DP-FedAvg): added to the sum of clipped
//! updates before the strategy sees it, from the operating system's CSPRNG.

use ring::rand::{SecureRandom, SystemRandom};

/// The CSPRNG failed; the round must not commit without its noise.
#[derive(Debug)]
pub struct NoiseUnavailable;

impl std::fmt::Display for NoiseUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the system random generator failed; central noise could not be drawn")
    }
}

impl std::error::Error for NoiseUnavailable {}

const TWO_POW_53: f64 = 9_007_199_254_740_992.0;

/// Adds independent N(0, std²) to every element (Box–Muller over 53-bit uniforms).
pub fn add_gaussian(values: &mut [f64], std: f64) -> Result<(), NoiseUnavailable> {
    if std == 0.0 {
        return Ok(());
    }
    let rng = SystemRandom::new();
    let mut buf = vec![0u8; 16 * 4096];
    for chunk in values.chunks_mut(2 * 4096) {
        let needed = chunk.len().div_ceil(2) * 16;
        rng.fill(&mut buf[..needed]).map_err(|_| NoiseUnavailable)?;
        for (pair, bytes) in chunk.chunks_mut(2).zip(buf.chunks_exact(16)) {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&bytes[..8]);
            b.copy_from_slice(&bytes[8..]);
            // u1 in (0, 1] so ln(u1) is finite; u2 in [0, 1).
            let u1 = ((u64::from_le_bytes(a) >> 11) as f64 + 1.0) / TWO_POW_53;
            let u2 = (u64::from_le_bytes(b) >> 11) as f64 / TWO_POW_53;
            let r = (-2.0 * u1.ln()).sqrt() * std;
            let theta = std::f64::consts::TAU * u2;
            pair[0] += r * theta.cos();
            if let Some(second) = pair.get_mut(1) {
                *second += r * theta.sin();
            }
        }
    }
    buf.fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_match_the_requested_gaussian() {
        let n = 200_001;
        let mut v = vec![1.0; n];
        add_gaussian(&mut v, 2.0).unwrap();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // 5-sigma bands: the test fails with negligible probability when the sampler is right.
        assert!(
            (mean - 1.0).abs() < 5.0 * 2.0 / (n as f64).sqrt(),
            "mean {mean}"
        );
        assert!(
            (var - 4.0).abs() < 5.0 * 4.0 * (2.0 / n as f64).sqrt(),
            "var {var}"
        );
        assert!(v.iter().all(|x| x.is_finite()));
        let mut z = vec![0.0; 3];
        add_gaussian(&mut z, 0.0).unwrap();
        assert_eq!(z, vec![0.0; 3]);
    }
}
