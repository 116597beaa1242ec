//! Mask expansion: a 256-bit seed becomes a vector uniform over `Z_{2^w}` (w = 32 or 64).
//!
//! The keystream of a cipher keyed with the whole seed ([`MaskPrg`]: AES-256-CTR by default,
//! or ChaCha20) is read as little-endian words and added (or subtracted) lane by lane with
//! wrapping arithmetic, straight into the caller's vector: no per-element allocation, no
//! intermediate mask vector. Because `2^b` divides `2^w`, the same mask reduced mod `2^b` is
//! uniform over `Z_{2^b}` for every `b <= w`.

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::{Aes256, Block};
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
        prg: MaskPrg,
        kind: MaskKind,
        sign: Sign,
        offset: usize,
        out: &mut [Self],
    );
    /// `acc[i] += x[i]` over the common length, compiled in this crate (see [`Keystream`]).
    #[doc(hidden)]
    fn add_all_here(acc: &mut [Self], x: &[Self]);
    /// Reduces every word modulo `2^bits`, compiled in this crate.
    #[doc(hidden)]
    fn reduce_all_here(v: &mut [Self], bits: u32);
    /// The index of the first word not below `2^bits`, compiled in this crate.
    #[doc(hidden)]
    fn first_out_of_range_here(v: &[Self], bits: u32) -> Option<usize>;
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
                prg: MaskPrg,
                kind: MaskKind,
                sign: Sign,
                offset: usize,
                out: &mut [Self],
            ) {
                const SIZE: usize = std::mem::size_of::<$t>();
                let mut stream = Keystream::new(seed, prg, kind, (offset as u64) * (SIZE as u64));
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
            #[inline(never)]
            fn add_all_here(acc: &mut [Self], x: &[Self]) {
                for (a, &b) in acc.iter_mut().zip(x) {
                    *a = a.wrapping_add(b);
                }
            }
            #[inline(never)]
            fn reduce_all_here(v: &mut [Self], bits: u32) {
                if bits < Self::BITS {
                    let keep: $t = (1 << bits) - 1;
                    v.iter_mut().for_each(|x| *x &= keep);
                }
            }
            #[inline(never)]
            fn first_out_of_range_here(v: &[Self], bits: u32) -> Option<usize> {
                if bits >= Self::BITS {
                    return None;
                }
                let limit: $t = 1 << bits;
                v.iter().position(|&x| x >= limit)
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

    /// The first counter block of AES-CTR: the kind in the upper 64 bits, the block counter
    /// (from 0) in the lower 64, so the two kinds' counter ranges never meet.
    fn counter_block(self) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(match self {
            MaskKind::SelfMask => b"cohort-s",
            MaskKind::Pairwise => b"cohort-p",
        });
        block
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
    prg: MaskPrg,
    kind: MaskKind,
    sign: Sign,
    offset: usize,
    out: &mut [L],
) {
    L::apply_mask_here(seed, prg, kind, sign, offset, out);
}

/// `acc += x` lane by lane (wrapping): the server's running sum.
pub(crate) fn add_into<L: Lane>(acc: &mut [L], x: &[L]) {
    L::add_all_here(acc, x);
}

/// Reduces every lane modulo `2^bits`.
pub(crate) fn reduce_all<L: Lane>(v: &mut [L], bits: u32) {
    L::reduce_all_here(v, bits);
}

/// The index of the first lane not below `2^bits`, if any.
pub(crate) fn first_out_of_range<L: Lane>(v: &[L], bits: u32) -> Option<usize> {
    L::first_out_of_range_here(v, bits)
}

/// The keystream of one mask, behind non-generic, never-inlined functions.
///
/// Why not call the cipher from a generic function directly: a generic function is
/// compiled in whichever crate instantiates it, and in debug builds rustc shares generic
/// instantiations with downstream crates. Once an unoptimised crate (the server, in the dev
/// profile) instantiated the cipher, every binary above it used that copy, and unmasking ran
/// ~15× slower. Concrete functions here are always compiled with this crate's optimisation.
// One keystream lives on the stack per mask application; boxing the AES key schedule would
// cost an allocation per mask and tile instead.
#[allow(clippy::large_enum_variant)]
enum Keystream {
    ChaCha20(ChaCha20),
    Aes256Ctr(AesCtr),
}

impl Keystream {
    #[inline(never)]
    fn new(seed: &[u8; 32], prg: MaskPrg, kind: MaskKind, byte_offset: u64) -> Self {
        match prg {
            MaskPrg::ChaCha20 => {
                let mut cipher = ChaCha20::new(&(*seed).into(), &kind.nonce().into());
                cipher.seek(byte_offset);
                Keystream::ChaCha20(cipher)
            }
            MaskPrg::Aes256Ctr => Keystream::Aes256Ctr(AesCtr::new(seed, kind, byte_offset)),
        }
    }

    #[inline(never)]
    fn fill(&mut self, bytes: &mut [u8]) {
        match self {
            Keystream::ChaCha20(c) => c.write_keystream(bytes),
            Keystream::Aes256Ctr(c) => c.fill(bytes),
        }
    }
}

/// AES-256 in counter mode (NIST SP 800-38A): keystream block `i` is
/// `AES_seed(kind prefix ‖ i as 64-bit big-endian)`.
///
/// Written out rather than taken from the `ctr` crate because that crate's keystream path runs
/// at ~3.0 GB/s on this machine, while encrypting whole runs of counter blocks in place (which
/// lets `aes` use its 4- or 8-block AES-NI/VAES pipelines) runs at ~5.2 GB/s. The
/// `ctr` crate stays the oracle: a test checks both give the same bytes at every offset.
struct AesCtr {
    cipher: Aes256,
    prefix: [u8; 8],
    /// The block the next byte comes from.
    block: u64,
    /// How many bytes of that block were already used.
    used: usize,
}

impl AesCtr {
    fn new(seed: &[u8; 32], kind: MaskKind, byte_offset: u64) -> Self {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&kind.counter_block()[..8]);
        AesCtr {
            cipher: Aes256::new(&(*seed).into()),
            prefix,
            block: byte_offset / 16,
            used: (byte_offset % 16) as usize,
        }
    }

    fn counter(&self, block: u64) -> Block {
        let mut b = Block::default();
        b[..8].copy_from_slice(&self.prefix);
        b[8..].copy_from_slice(&block.to_be_bytes());
        b
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        let mut rest = bytes;
        if self.used > 0 {
            // Finish a partly used block.
            let mut b = self.counter(self.block);
            self.cipher.encrypt_block(&mut b);
            let take = (16 - self.used).min(rest.len());
            let (head, tail) = rest.split_at_mut(take);
            head.copy_from_slice(&b[self.used..self.used + take]);
            b.zeroize();
            self.used += take;
            if self.used == 16 {
                self.block += 1;
                self.used = 0;
            }
            rest = tail;
        }
        let (blocks, tail) = Block::slice_as_chunks_mut(rest);
        let first = self.block;
        for (b, i) in blocks.iter_mut().zip(first..) {
            b[..8].copy_from_slice(&self.prefix);
            b[8..].copy_from_slice(&i.to_be_bytes());
        }
        self.cipher.encrypt_blocks(blocks);
        self.block += blocks.len() as u64;
        if !tail.is_empty() {
            let mut b = self.counter(self.block);
            self.cipher.encrypt_block(&mut b);
            let n = tail.len();
            tail.copy_from_slice(&b[..n]);
            b.zeroize();
            self.used = n;
        }
    }
}

/// The generator that expands a 256-bit seed into a mask. Client and server must use the same
/// one, so it is a round parameter and the session id commits to it: peers that disagree fail
/// to decrypt each other's shares instead of producing a wrong sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MaskPrg {
    /// ChaCha20 (IETF, 96-bit nonce per mask kind) keyed by the whole seed: the generator of
    /// the first protocol version, and the one to pick for devices without AES instructions
    /// (it is fast and constant-time in plain SIMD code).
    ChaCha20,
    /// AES-256 in counter mode keyed by the whole seed, with the AES instructions detected at
    /// run time (AES-NI and VAES on x86-64, the ARMv8 crypto extensions on Linux and macOS;
    /// constant-time software otherwise). ~2.8× ChaCha20's throughput on this 2-core Xeon,
    /// which is what brings the server's unmasking of n = 500 under half a second.
    #[default]
    Aes256Ctr,
}

impl MaskPrg {
    /// The number the session id commits to.
    pub fn code(self) -> u64 {
        match self {
            MaskPrg::ChaCha20 => 1,
            MaskPrg::Aes256Ctr => 2,
        }
    }

    /// Whether this machine runs the generator with hardware support (always true for
    /// ChaCha20, which needs none).
    pub fn hardware_accelerated(self) -> bool {
        match self {
            MaskPrg::ChaCha20 => true,
            MaskPrg::Aes256Ctr => aes::hardware_accelerated(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PRGS: [MaskPrg; 2] = [MaskPrg::ChaCha20, MaskPrg::Aes256Ctr];

    #[test]
    fn add_then_sub_is_identity_and_ranges_compose() {
        for prg in PRGS {
            let seed = [7u8; 32];
            let original: Vec<u32> = (0..5000u32).collect();
            let mut whole = original.clone();
            apply_mask(&seed, prg, MaskKind::Pairwise, Sign::Add, 0, &mut whole);
            assert_ne!(whole, original);
            let mut pieces = original.clone();
            // 1234 u32 lanes: a cut in the middle of an AES block.
            let (a, b) = pieces.split_at_mut(1234);
            apply_mask(&seed, prg, MaskKind::Pairwise, Sign::Add, 0, a);
            apply_mask(&seed, prg, MaskKind::Pairwise, Sign::Add, 1234, b);
            assert_eq!(pieces, whole, "{prg:?}");
            apply_mask(&seed, prg, MaskKind::Pairwise, Sign::Sub, 0, &mut whole);
            assert_eq!(whole, original, "{prg:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The hand-written CTR loop gives exactly the `ctr` crate's AES-256-CTR keystream
        /// (64-bit big-endian counter under the kind prefix), from any offset, in any pieces.
        #[test]
        fn aes_ctr_matches_the_ctr_crate(
            seed in any::<[u8; 32]>(),
            offset in 0u64..5000,
            cuts in proptest::collection::vec(0usize..300, 1..6),
        ) {
            let total: usize = cuts.iter().sum();
            let mut reference = vec![0u8; total];
            let mut oracle =
                ctr::Ctr64BE::<Aes256>::new(&seed.into(), &MaskKind::Pairwise.counter_block().into());
            oracle.seek(offset);
            oracle.apply_keystream(&mut reference);
            let mut ours = vec![0u8; total];
            let mut stream = AesCtr::new(&seed, MaskKind::Pairwise, offset);
            let mut at = 0;
            for cut in cuts {
                stream.fill(&mut ours[at..at + cut]);
                at += cut;
            }
            prop_assert_eq!(ours, reference);
        }
    }

    #[test]
    fn kinds_and_generators_give_different_streams() {
        let seed = [1u8; 32];
        let mut seen = Vec::new();
        for prg in PRGS {
            for kind in [MaskKind::Pairwise, MaskKind::SelfMask] {
                let mut v = vec![0u64; 16];
                apply_mask(&seed, prg, kind, Sign::Add, 0, &mut v);
                assert!(
                    !seen.contains(&v),
                    "{prg:?} {kind:?} repeats another stream"
                );
                seen.push(v);
            }
        }
    }

    #[test]
    fn every_seed_bit_matters() {
        // The whole 256-bit seed keys the stream (unlike a 32-bit fold of it).
        for prg in PRGS {
            let base = [0u8; 32];
            let mut reference = vec![0u32; 8];
            apply_mask(&base, prg, MaskKind::SelfMask, Sign::Add, 0, &mut reference);
            for byte in [0, 4, 15, 16, 31] {
                let mut seed = base;
                seed[byte] ^= 0x80;
                let mut other = vec![0u32; 8];
                apply_mask(&seed, prg, MaskKind::SelfMask, Sign::Add, 0, &mut other);
                assert_ne!(
                    other, reference,
                    "{prg:?}: flipping byte {byte} must change the mask"
                );
            }
        }
    }

    #[test]
    fn low_bits_are_roughly_uniform() {
        // Chi-squared over the 16 residues mod 2^4 of 64k words: a gross-bias smoke test.
        for prg in PRGS {
            let mut v = vec![0u32; 1 << 16];
            apply_mask(&[3u8; 32], prg, MaskKind::SelfMask, Sign::Add, 0, &mut v);
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
            assert!(chi2 < 50.0, "{prg:?}: chi2 = {chi2}");
        }
    }
}
