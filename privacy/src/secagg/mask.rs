//! Mask expansion: a 256-bit seed becomes a vector uniform over `Z_{2^w}` (w = 32 or 64).
//!
//! The keystream of ChaCha20 keyed with the whole seed is read as little-endian words and added
//! (or subtracted) lane by lane with wrapping arithmetic, straight into the caller's vector:
//! no per-element allocation, no intermediate mask vector. Because `2^b` divides `2^w`, the
//! same mask reduced mod `2^b` is uniform over `Z_{2^b}` for every `b <= w`.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use zeroize::Zeroize;

/// Bytes of keystream produced per refill; small enough to stay in L1 cache.
const CHUNK_BYTES: usize = 4096;

/// An unsigned machine word holding one coordinate of a masked vector.
///
/// Implemented for `u32` (rings up to `Z_{2^32}`) and `u64` (up to `Z_{2^64}`).
pub trait Lane:
    Copy + Default + Eq + Send + Sync + std::fmt::Debug + Zeroize + 'static + private::Sealed
{
    /// Width of the word in bits.
    const BITS: u32;
    /// Width of the word in bytes.
    const BYTES: usize;
    /// Reads one word from exactly `Self::BYTES` little-endian bytes.
    fn from_le_slice(bytes: &[u8]) -> Self;
    /// Writes the word as little-endian bytes into `out` (exactly `Self::BYTES` long).
    fn write_le(self, out: &mut [u8]);
    /// `self + other` modulo `2^BITS`.
    fn wrapping_add(self, other: Self) -> Self;
    /// `self - other` modulo `2^BITS`.
    fn wrapping_sub(self, other: Self) -> Self;
    /// Reduces the word modulo `2^bits` (`bits <= BITS`).
    fn reduce(self, bits: u32) -> Self;
    /// Converts from `u64`, truncating to the word width.
    fn from_u64(value: u64) -> Self;
    /// Widens the word to `u64`.
    fn to_u64(self) -> u64;
    /// [`apply_mask`] for this lane type, compiled once in this crate: see [`Keystream`] for
    /// why the hot loop must not be a generic instantiated downstream.
    #[doc(hidden)]
    fn apply_mask_here(
        seed: &[u8; 32],
        kind: MaskKind,
        sign: Sign,
        offset: usize,
        out: &mut [Self],
    );
}

mod private {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

macro_rules! impl_lane {
    ($t:ty) => {
        impl Lane for $t {
            const BITS: u32 = <$t>::BITS;
            const BYTES: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn from_le_slice(bytes: &[u8]) -> Self {
                let mut word = [0u8; std::mem::size_of::<$t>()];
                word.copy_from_slice(bytes);
                <$t>::from_le_bytes(word)
            }
            #[inline(always)]
            fn write_le(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            #[inline(always)]
            fn wrapping_add(self, other: Self) -> Self {
                <$t>::wrapping_add(self, other)
            }
            #[inline(always)]
            fn wrapping_sub(self, other: Self) -> Self {
                <$t>::wrapping_sub(self, other)
            }
            #[inline(always)]
            fn reduce(self, bits: u32) -> Self {
                if bits >= Self::BITS {
                    self
                } else {
                    self & ((1 << bits) - 1)
                }
            }
            #[inline(never)]
            fn apply_mask_here(
                seed: &[u8; 32],
                kind: MaskKind,
                sign: Sign,
                offset: usize,
                out: &mut [Self],
            ) {
                const SIZE: usize = std::mem::size_of::<$t>();
                let mut stream = Keystream::new(seed, kind, (offset as u64) * (SIZE as u64));
                let mut buf = [0u8; CHUNK_BYTES];
                for block in out.chunks_mut(CHUNK_BYTES / SIZE) {
                    let bytes = &mut buf[..block.len() * SIZE];
                    stream.fill(bytes);
                    // Fixed-size word chunks let the compiler vectorise the add.
                    let (words, _) = bytes.as_chunks::<SIZE>();
                    match sign {
                        Sign::Add => {
                            for (lane, word) in block.iter_mut().zip(words) {
                                *lane = lane.wrapping_add(<$t>::from_le_bytes(*word));
                            }
                        }
                        Sign::Sub => {
                            for (lane, word) in block.iter_mut().zip(words) {
                                *lane = lane.wrapping_sub(<$t>::from_le_bytes(*word));
                            }
                        }
                    }
                }
                buf.zeroize();
            }
            #[inline(always)]
            fn from_u64(value: u64) -> Self {
                value as $t
            }
            #[inline(always)]
            fn to_u64(self) -> u64 {
                self as u64
            }
        }
    };
}
impl_lane!(u32);
impl_lane!(u64);

/// Which of the two mask kinds a keystream belongs to; each gets its own ChaCha20 nonce, so a
/// seed can never be expanded into the same stream for two purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// The self mask `PRG(b_u)`, removed when `u` survives.
    SelfMask,
    /// A pairwise mask `PRG(s_uv)`, which cancels between `u` and `v` or is removed when one
    /// of them drops out.
    Pairwise,
}

impl MaskKind {
    fn nonce(self) -> [u8; 12] {
        match self {
            MaskKind::SelfMask => *b"cohort-self\0",
            MaskKind::Pairwise => *b"cohort-pair\0",
        }
    }
}

/// Whether a mask is added to or subtracted from the target vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// `out += mask`.
    Add,
    /// `out -= mask`.
    Sub,
}

/// Applies the mask expanded from `seed` to `out`, where `out[0]` is coordinate `offset` of the
/// full vector. Splitting a vector into ranges and calling this per range gives the same result
/// as one call over the whole vector, which is how unmasking runs in parallel.
pub fn apply_mask<L: Lane>(
    seed: &[u8; 32],
    kind: MaskKind,
    sign: Sign,
    offset: usize,
    out: &mut [L],
) {
    L::apply_mask_here(seed, kind, sign, offset, out);
}

/// The ChaCha20 keystream of one mask, behind non-generic, never-inlined functions.
///
/// Why not call `ChaCha20` from a generic function directly: a generic function is
/// compiled in whichever crate instantiates it, and in debug builds rustc shares generic
/// instantiations with downstream crates. Once an unoptimised crate (the server, in the dev
/// profile) instantiated the cipher, every binary above it used that copy, and unmasking ran
/// ~15× slower. Concrete functions here are always compiled with this crate's optimisation.
struct Keystream(ChaCha20);

impl Keystream {
    #[inline(never)]
    fn new(seed: &[u8; 32], kind: MaskKind, byte_offset: u64) -> Self {
        let mut cipher = ChaCha20::new(&(*seed).into(), &kind.nonce().into());
        cipher.seek(byte_offset);
        Self(cipher)
    }

    #[inline(never)]
    fn fill(&mut self, bytes: &mut [u8]) {
        self.0.write_keystream(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_sub_is_identity_and_ranges_compose() {
        let seed = [7u8; 32];
        let original: Vec<u32> = (0..5000u32).collect();
        let mut whole = original.clone();
        apply_mask(&seed, MaskKind::Pairwise, Sign::Add, 0, &mut whole);
        assert_ne!(whole, original);
        let mut pieces = original.clone();
        let (a, b) = pieces.split_at_mut(1234);
        apply_mask(&seed, MaskKind::Pairwise, Sign::Add, 0, a);
        apply_mask(&seed, MaskKind::Pairwise, Sign::Add, 1234, b);
        assert_eq!(pieces, whole);
        apply_mask(&seed, MaskKind::Pairwise, Sign::Sub, 0, &mut whole);
        assert_eq!(whole, original);
    }

    #[test]
    fn kinds_give_different_streams() {
        let seed = [1u8; 32];
        let mut a = vec![0u64; 16];
        let mut b = vec![0u64; 16];
        apply_mask(&seed, MaskKind::Pairwise, Sign::Add, 0, &mut a);
        apply_mask(&seed, MaskKind::SelfMask, Sign::Add, 0, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn every_seed_bit_matters() {
        // The whole 256-bit seed keys the stream (unlike a 32-bit fold of it).
        let base = [0u8; 32];
        let mut reference = vec![0u32; 8];
        apply_mask(&base, MaskKind::SelfMask, Sign::Add, 0, &mut reference);
        for byte in [0, 4, 31] {
            let mut seed = base;
            seed[byte] ^= 0x80;
            let mut other = vec![0u32; 8];
            apply_mask(&seed, MaskKind::SelfMask, Sign::Add, 0, &mut other);
            assert_ne!(
                other, reference,
                "flipping byte {byte} must change the mask"
            );
        }
    }

    #[test]
    fn low_bits_are_roughly_uniform() {
        // Chi-squared over the 16 residues mod 2^4 of 64k words: a gross-bias smoke test.
        let mut v = vec![0u32; 1 << 16];
        apply_mask(&[3u8; 32], MaskKind::SelfMask, Sign::Add, 0, &mut v);
        let mut counts = [0f64; 16];
        for x in &v {
            counts[(x.reduce(4)) as usize] += 1.0;
        }
        let expected = v.len() as f64 / 16.0;
        let chi2: f64 = counts
            .iter()
            .map(|c| (c - expected).powi(2) / expected)
            .sum();
        // 15 degrees of freedom: P(chi2 > 50) < 1e-5.
        assert!(chi2 < 50.0, "chi2 = {chi2}");
    }
}
