//! Shamir secret sharing over a prime field.
//!
//! Production sharing uses the Mersenne prime `p = 2^61 − 1`: evaluation points are holder ids
//! plus one, so any number of holders up to `2^32` works (the `sharks` crate's GF(256) stops at
//! 255), and every coefficient is drawn uniformly from `[0, p)` by rejection sampling, so `t − 1`
//! shares are exactly independent of the secret. A 32-byte secret is cut into five 7-byte
//! limbs (each `< 2^56 < p`) that are shared independently.
//!
//! The field arithmetic is generic over the prime so tests can check the information-theoretic
//! claim statistically in a field small enough to enumerate.

use rand::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The production field modulus, `2^61 − 1`.
pub const PRIME: u64 = (1 << 61) - 1;
/// Limbs per 32-byte secret.
pub const LIMBS: usize = 5;
const LIMB_BYTES: usize = 7;

/// One holder's share of a 32-byte secret: the evaluation point and one value per limb.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Share {
    /// Evaluation point (holder id + 1; never 0, which would be the secret itself).
    pub x: u64,
    /// The polynomial values at `x`, one per limb.
    pub y: [u64; LIMBS],
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share {{ x: {}, y: <redacted> }}", self.x)
    }
}

/// Why shares could not be made or combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShamirError {
    /// `t` is zero or exceeds the number of holders.
    BadThreshold,
    /// An evaluation point is zero, not below the prime, or repeated.
    BadPoint(u64),
    /// Too few shares for the threshold.
    TooFewShares,
    /// The shares do not lie on one polynomial of a valid secret (a limb came out too large).
    Inconsistent,
}

/// `a · b mod P` for `a, b < P`. For the production prime the product is folded with
/// `2^61 ≡ 1 (mod p)` instead of a 128-bit division, which costs tens of nanoseconds and made
/// the server's reconstruction of hundreds of secrets visible next to the mask removal.
#[inline]
fn mul<const P: u64>(a: u64, b: u64) -> u64 {
    let product = a as u128 * b as u128;
    if P == PRIME {
        // product < 2^122, so both halves are below 2^61 and their sum below 2^62.
        let folded = (product as u64 & PRIME) + (product >> 61) as u64;
        let folded = (folded & PRIME) + (folded >> 61);
        if folded >= PRIME {
            folded - PRIME
        } else {
            folded
        }
    } else {
        (product % P as u128) as u64
    }
}
#[inline]
fn add<const P: u64>(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P { s - P } else { s }
}
#[inline]
fn sub<const P: u64>(a: u64, b: u64) -> u64 {
    if a >= b { a - b } else { a + P - b }
}
fn inv<const P: u64>(a: u64) -> u64 {
    // Fermat: a^(p-2); a != 0 is guaranteed by distinct, non-zero points.
    let (mut base, mut exp, mut acc) = (a % P, P - 2, 1u64);
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul::<P>(acc, base);
        }
        base = mul::<P>(base, base);
        exp >>= 1;
    }
    acc
}

/// A uniform element of `[0, P)`, by rejection sampling (never a biased modulo reduction).
pub fn uniform<const P: u64, R: CryptoRng + ?Sized>(rng: &mut R) -> u64 {
    let mask = u64::MAX >> P.leading_zeros();
    loop {
        let candidate = rng.next_u64() & mask;
        if candidate < P {
            return candidate;
        }
    }
}

fn check_points<const P: u64>(xs: &[u64]) -> Result<(), ShamirError> {
    let mut sorted = xs.to_vec();
    sorted.sort_unstable();
    for (i, &x) in sorted.iter().enumerate() {
        if x == 0 || x >= P || (i > 0 && sorted[i - 1] == x) {
            return Err(ShamirError::BadPoint(x));
        }
    }
    Ok(())
}

/// Shares each field element of `secret` with threshold `t` at the points `xs`. Returns, per
/// point, the values of all limbs.
pub fn split_field<const P: u64, R: CryptoRng + ?Sized>(
    secret: &[u64],
    t: usize,
    xs: &[u64],
    rng: &mut R,
) -> Result<Vec<Vec<u64>>, ShamirError> {
    if t == 0 || t > xs.len() {
        return Err(ShamirError::BadThreshold);
    }
    check_points::<P>(xs)?;
    let mut out = vec![vec![0u64; secret.len()]; xs.len()];
    let mut coeffs = vec![0u64; t];
    for (limb, &s) in secret.iter().enumerate() {
        coeffs[0] = s % P;
        for c in coeffs.iter_mut().skip(1) {
            *c = uniform::<P, R>(rng);
        }
        for (row, &x) in out.iter_mut().zip(xs) {
            // Horner evaluation of the degree t-1 polynomial at x.
            let mut acc = 0u64;
            for &c in coeffs.iter().rev() {
                acc = add::<P>(mul::<P>(acc, x), c);
            }
            row[limb] = acc;
        }
    }
    coeffs.zeroize();
    Ok(out)
}

/// Interpolates the shared elements at 0 from `(x, values)` points; uses every point given
/// (callers pass exactly `t`, or more, which is equally correct for consistent shares).
pub fn reconstruct_field<const P: u64>(points: &[(u64, &[u64])]) -> Result<Vec<u64>, ShamirError> {
    let Some((_, first)) = points.first() else {
        return Err(ShamirError::TooFewShares);
    };
    let xs: Vec<u64> = points.iter().map(|(x, _)| *x).collect();
    check_points::<P>(&xs)?;
    let limbs = first.len();
    if points.iter().any(|(_, ys)| ys.len() != limbs) {
        return Err(ShamirError::Inconsistent);
    }
    // Lagrange basis at 0: λ_i = Π_{j≠i} x_j / (x_j − x_i). All denominators are inverted at
    // once (Montgomery's trick: one exponentiation instead of one per point).
    let mut nums = Vec::with_capacity(xs.len());
    let mut dens = Vec::with_capacity(xs.len());
    for (i, &xi) in xs.iter().enumerate() {
        let (mut num, mut den) = (1u64, 1u64);
        for (j, &xj) in xs.iter().enumerate() {
            if i != j {
                num = mul::<P>(num, xj);
                den = mul::<P>(den, sub::<P>(xj, xi));
            }
        }
        nums.push(num);
        dens.push(den);
    }
    let inverses = batch_inverse::<P>(&dens);
    let mut secret = vec![0u64; limbs];
    for ((num, inverse), (_, ys)) in nums.iter().zip(&inverses).zip(points) {
        let lambda = mul::<P>(*num, *inverse);
        for (acc, &y) in secret.iter_mut().zip(ys.iter()) {
            // Shares come from peers: reduce, so an out-of-range value cannot break `mul`.
            *acc = add::<P>(*acc, mul::<P>(lambda, y % P));
        }
    }
    Ok(secret)
}

/// Inverts every (non-zero) element with one exponentiation: prefix products, one inverse,
/// then unwinding.
fn batch_inverse<const P: u64>(values: &[u64]) -> Vec<u64> {
    let mut prefix = Vec::with_capacity(values.len());
    let mut acc = 1u64;
    for &v in values {
        prefix.push(acc);
        acc = mul::<P>(acc, v);
    }
    let mut inverse_of_all = inv::<P>(acc);
    let mut out = vec![0u64; values.len()];
    for i in (0..values.len()).rev() {
        out[i] = mul::<P>(inverse_of_all, prefix[i]);
        inverse_of_all = mul::<P>(inverse_of_all, values[i]);
    }
    out
}

fn to_limbs(secret: &[u8; 32]) -> [u64; LIMBS] {
    let mut limbs = [0u64; LIMBS];
    for (limb, chunk) in limbs.iter_mut().zip(secret.chunks(LIMB_BYTES)) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        *limb = u64::from_le_bytes(word);
        word.zeroize();
    }
    limbs
}

/// Shares a 32-byte secret among holders at points `xs` (each `holder id + 1`) with threshold `t`.
pub fn split_secret<R: CryptoRng + ?Sized>(
    secret: &[u8; 32],
    t: usize,
    xs: &[u64],
    rng: &mut R,
) -> Result<Vec<Share>, ShamirError> {
    let mut limbs = to_limbs(secret);
    let rows = split_field::<PRIME, R>(&limbs, t, xs, rng);
    limbs.zeroize();
    let mut rows = rows?;
    let shares = rows
        .iter()
        .zip(xs)
        .map(|(row, &x)| {
            let mut y = [0u64; LIMBS];
            y.copy_from_slice(row);
            Share { x, y }
        })
        .collect();
    rows.iter_mut().for_each(|r| r.zeroize());
    Ok(shares)
}

/// Recombines a 32-byte secret from at least `t` shares (pass exactly the ones to use).
pub fn reconstruct_secret(shares: &[&Share]) -> Result<[u8; 32], ShamirError> {
    let points: Vec<(u64, &[u64])> = shares.iter().map(|s| (s.x, &s.y[..])).collect();
    let mut limbs = reconstruct_field::<PRIME>(&points)?;
    let mut secret = [0u8; 32];
    let mut ok = true;
    for (limb, chunk) in limbs.iter().zip(secret.chunks_mut(LIMB_BYTES)) {
        let bytes = limb.to_le_bytes();
        ok &= bytes[chunk.len()..].iter().all(|&b| b == 0);
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    limbs.zeroize();
    if ok {
        Ok(secret)
    } else {
        secret.zeroize();
        Err(ShamirError::Inconsistent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::ChaCha20Rng;

    proptest! {
        #[test]
        fn mersenne_folding_matches_division(a in 0..PRIME, b in 0..PRIME) {
            prop_assert_eq!(mul::<PRIME>(a, b), ((a as u128 * b as u128) % PRIME as u128) as u64);
        }
    }

    #[test]
    fn mersenne_folding_at_the_edges() {
        for (a, b) in [
            (PRIME - 1, PRIME - 1),
            (PRIME - 1, 1),
            (0, PRIME - 1),
            (1 << 60, 2),
        ] {
            assert_eq!(
                mul::<PRIME>(a, b),
                ((a as u128 * b as u128) % PRIME as u128) as u64
            );
        }
        let values = [3, PRIME - 1, 1 << 40, 12345];
        for (v, i) in values.iter().zip(batch_inverse::<PRIME>(&values)) {
            assert_eq!(mul::<PRIME>(*v, i), 1);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_t_shares_reconstruct(
            secret in any::<[u8; 32]>(),
            holders in 1usize..400,
            t_frac in 0.0f64..1.0,
            seed in any::<u64>(),
            pick in any::<u64>(),
        ) {
            let t = 1 + ((holders - 1) as f64 * t_frac) as usize;
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            // Holder ids beyond 255 on purpose.
            let xs: Vec<u64> = (0..holders as u64).map(|i| 1000 + 3 * i).collect();
            let shares = split_secret(&secret, t, &xs, &mut rng).unwrap();
            // A pseudo-random subset of exactly t shares.
            let mut order: Vec<usize> = (0..holders).collect();
            let mut pick_rng = ChaCha20Rng::seed_from_u64(pick);
            for i in (1..order.len()).rev() {
                let j = (rand::Rng::next_u64(&mut pick_rng) % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            let chosen: Vec<&Share> = order[..t].iter().map(|&i| &shares[i]).collect();
            prop_assert_eq!(reconstruct_secret(&chosen).unwrap(), secret);
        }
    }

    #[test]
    fn t_minus_one_shares_reveal_nothing_in_a_small_field() {
        // In GF(11) with t = 3, the pair of shares at x = 1, 2 must be uniform over all 121
        // pairs whatever the secret. Chi-squared test per secret (120 degrees of freedom).
        const P: u64 = 11;
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let draws = 121 * 200;
        for secret in [0u64, 7] {
            let mut counts = vec![0f64; 121];
            for _ in 0..draws {
                let rows = split_field::<P, _>(&[secret], 3, &[1, 2, 3], &mut rng).unwrap();
                counts[(rows[0][0] * 11 + rows[1][0]) as usize] += 1.0;
            }
            let expected = draws as f64 / 121.0;
            let chi2: f64 = counts
                .iter()
                .map(|c| (c - expected).powi(2) / expected)
                .sum();
            // 99.99th percentile of chi2(120) is about 183.
            assert!(chi2 < 183.0, "secret {secret}: chi2 = {chi2}");
        }
        // Sanity check that the test has power: t shares do determine the secret.
        let rows = split_field::<P, _>(&[5], 3, &[1, 2, 3], &mut rng).unwrap();
        let points: Vec<(u64, &[u64])> = (0..3).map(|i| (i as u64 + 1, &rows[i][..])).collect();
        assert_eq!(reconstruct_field::<P>(&points).unwrap(), vec![5]);
    }

    #[test]
    fn rejects_bad_points_and_thresholds() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let s = [9u8; 32];
        assert_eq!(
            split_secret(&s, 0, &[1, 2], &mut rng),
            Err(ShamirError::BadThreshold)
        );
        assert_eq!(
            split_secret(&s, 3, &[1, 2], &mut rng),
            Err(ShamirError::BadThreshold)
        );
        assert_eq!(
            split_secret(&s, 1, &[0, 2], &mut rng),
            Err(ShamirError::BadPoint(0))
        );
        assert_eq!(
            split_secret(&s, 1, &[2, 2], &mut rng),
            Err(ShamirError::BadPoint(2))
        );
        assert_eq!(
            split_secret(&s, 1, &[PRIME], &mut rng),
            Err(ShamirError::BadPoint(PRIME))
        );
    }

    #[test]
    fn t_minus_one_shares_give_a_wrong_secret() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let secret = [0x5au8; 32];
        let xs: Vec<u64> = (1..=10).collect();
        let shares = split_secret(&secret, 5, &xs, &mut rng).unwrap();
        let four: Vec<&Share> = shares[..4].iter().collect();
        assert_ne!(reconstruct_secret(&four).ok(), Some(secret));
    }
}
