//! Every random choice of a simulation derives from its one seed: a stream per purpose,
//! round and client, so that the order in which clients happen to run cannot change a draw.
//!
//! These seeds are known to whoever runs the simulation; they replace the OS entropy that a
//! deployment uses for noise, sampling and rounding (see the `danger` functions they feed).

/// SplitMix64's finaliser: a bijection on `u64` that mixes every input bit into every output
/// bit, so nearby inputs give unrelated seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of stream `purpose` for `(round, client)`.
pub fn derive(seed: u64, purpose: &str, round: u64, client: usize) -> u64 {
    let mut h = mix(seed);
    for b in purpose.bytes() {
        h = mix(h ^ u64::from(b));
    }
    h = mix(h ^ round);
    mix(h ^ client as u64)
}

/// A 32-byte key for stream `purpose` of `(round, client)`.
pub fn derive32(seed: u64, purpose: &str, round: u64, client: usize) -> [u8; 32] {
    let mut out = [0u8; 32];
    let base = derive(seed, purpose, round, client);
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(base ^ (i as u64 + 1)).to_le_bytes());
    }
    out
}

/// A uniform draw in [0, 1) from a `u64` (53 bits).
pub fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_every_component_and_repeat_exactly() {
        let a = derive(1, "noise", 3, 4);
        assert_eq!(a, derive(1, "noise", 3, 4));
        assert_ne!(a, derive(2, "noise", 3, 4));
        assert_ne!(a, derive(1, "batches", 3, 4));
        assert_ne!(a, derive(1, "noise", 4, 4));
        assert_ne!(a, derive(1, "noise", 3, 5));
        assert_ne!(derive32(1, "x", 1, 1), derive32(1, "x", 1, 2));
        let u: Vec<f64> = (0..1000).map(|i| unit(derive(0, "u", 0, i))).collect();
        assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = u.iter().sum::<f64>() / u.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
    }
}
