//! AES-256 in counter mode as a `rand` generator: the CSPRNG behind DP-SGD's Gaussian noise.
//!
//! A DP-SGD step draws one Gaussian per model parameter, and the ziggurat sampler takes 64
//! random bits per draw, so the generator's throughput sets the floor of a step's noise cost.
//! With AES-NI (detected at run time by the `aes` crate) encrypting runs of counter blocks in
//! place produces keystream about twice as fast as ChaCha20 on the machines we measured (see
//! the SecAgg+ tables in docs/benchmarks.md), and it is as unpredictable: distinguishing
//! AES-256-CTR output from uniform bits breaks AES. The key comes from the operating system
//! (or, where a caller wants reproducible noise for simulation, from another CSPRNG), is never
//! printed, and the cipher and the unread keystream are zeroized on drop.

use std::convert::Infallible;

use aes::Aes256;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use rand::rngs::SysRng;
use rand::{TryCryptoRng, TryRng};
use zeroize::Zeroize;

/// 16-byte AES blocks encrypted per refill: several runs of the widest backend's pipeline
/// (64 blocks with VAES-512, 8 with AES-NI), so the per-call key broadcast is amortised, while
/// the 4 KiB of keystream and its words stay in L1.
const BLOCKS: usize = 256;
/// Keystream words per refill.
const WORDS: usize = BLOCKS * 2;

/// AES-256-CTR keystream read as little-endian `u64` words.
///
/// Keystream block `i` is `AES_k(i as 128-bit big-endian)`: each generator has its own random
/// key, so a zero starting counter is safe, and the 2^128-block period is never reached.
pub struct AesCtrRng {
    cipher: Aes256,
    /// Counter of the first block of the next refill.
    next_block: u128,
    /// Counter blocks, encrypted in place; copied to `words` straight after.
    blocks: Box<[aes::Block; BLOCKS]>,
    /// The keystream as little-endian words: the ones not yet handed out start at `used`.
    /// Reading a word is then one load, which keeps the ziggurat sampler's inner loop short.
    words: Box<[u64; WORDS]>,
    /// Words of `words` already handed out.
    used: usize,
}

impl std::fmt::Debug for AesCtrRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key schedule nor buffered keystream.
        f.debug_struct("AesCtrRng").finish_non_exhaustive()
    }
}

/// The operating system would not provide entropy for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntropyUnavailable(pub String);

impl std::fmt::Display for EntropyUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the operating system's random source failed: {}", self.0)
    }
}

impl std::error::Error for EntropyUnavailable {}

impl AesCtrRng {
    /// A generator keyed by `key`. The caller's copy of the key should be zeroized after.
    pub fn from_key(key: [u8; 32]) -> Self {
        let mut key = key;
        let cipher = Aes256::new(&key.into());
        key.zeroize();
        Self {
            cipher,
            next_block: 0,
            blocks: Box::new([aes::Block::default(); BLOCKS]),
            words: Box::new([0; WORDS]),
            used: WORDS,
        }
    }

    /// A generator keyed from the operating system's entropy source.
    pub fn from_os() -> Result<Self, EntropyUnavailable> {
        let mut key = [0u8; 32];
        SysRng
            .try_fill_bytes(&mut key)
            .map_err(|e| EntropyUnavailable(e.to_string()))?;
        let rng = Self::from_key(key);
        key.zeroize();
        Ok(rng)
    }

    /// A generator keyed from 32 bytes of another cryptographically secure generator (one
    /// independent stream per worker thread, or reproducible noise from a seeded parent).
    pub fn from_parent<R: TryCryptoRng<Error = Infallible> + ?Sized>(parent: &mut R) -> Self {
        let mut key = [0u8; 32];
        let Ok(()) = parent.try_fill_bytes(&mut key);
        let rng = Self::from_key(key);
        key.zeroize();
        rng
    }

    /// Fills `out` with keystream as 32-bit values: each word gives its low half, then its
    /// high half, in `next_u64` order (an odd `out` drops the high half of its last word, so no
    /// keystream is ever reused). That is the keystream read four bytes at a time, so whole
    /// refills go from the cipher's blocks straight into `out`. Bulk readers (the Gaussian
    /// sampler takes one value per parameter) save a call, a branch and a copy per value.
    pub fn fill_u32(&mut self, out: &mut [u32]) {
        let mut out = self.fill_u32_from_words(out);
        while out.len() >= BLOCKS * 4 {
            let (head, rest) = out.split_at_mut(BLOCKS * 4);
            self.encrypt_next_blocks();
            for (four, block) in head.chunks_exact_mut(4).zip(self.blocks.iter()) {
                for (value, bytes) in four.iter_mut().zip(block.chunks_exact(4)) {
                    *value = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                }
            }
            out = rest;
        }
        if !out.is_empty() {
            self.refill();
            let rest = self.fill_u32_from_words(out);
            debug_assert!(rest.is_empty());
        }
    }

    /// Fills the front of `out` from the buffered words; returns what is left of `out` (empty,
    /// or everything after the buffer ran dry).
    fn fill_u32_from_words<'a>(&mut self, out: &'a mut [u32]) -> &'a mut [u32] {
        let available = &self.words[self.used..];
        let take = available.len().min(out.len().div_ceil(2));
        let (head, rest) = out.split_at_mut((2 * take).min(out.len()));
        for (pair, word) in head.chunks_mut(2).zip(&available[..take]) {
            pair[0] = *word as u32;
            if let Some(high) = pair.get_mut(1) {
                *high = (*word >> 32) as u32;
            }
        }
        self.used += take;
        rest
    }

    /// Encrypts the next [`BLOCKS`] counter blocks into `blocks` and advances the counter.
    fn encrypt_next_blocks(&mut self) {
        for (offset, block) in self.blocks.iter_mut().enumerate() {
            *block = (self.next_block + offset as u128).to_be_bytes().into();
        }
        self.cipher.encrypt_blocks(self.blocks.as_mut_slice());
        self.next_block = self.next_block.wrapping_add(BLOCKS as u128);
    }

    fn refill(&mut self) {
        self.encrypt_next_blocks();
        for (pair, block) in self.words.chunks_exact_mut(2).zip(self.blocks.iter()) {
            // Bytes 0..8 of the block are the low word, as little-endian reading defines.
            let both = u128::from_le_bytes((*block).into());
            pair[0] = both as u64;
            pair[1] = (both >> 64) as u64;
        }
        self.used = 0;
    }
}

impl TryRng for AesCtrRng {
    type Error = Infallible;

    /// The low half of the next word (the high half is dropped: no keystream is reused).
    #[inline]
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.try_next_u64().map(|w| w as u32)
    }

    #[inline]
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        if self.used == WORDS {
            self.refill();
        }
        let word = self.words[self.used];
        self.used += 1;
        Ok(word)
    }

    /// Whole words, in keystream order; a partly used last word is dropped.
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let Ok(word) = self.try_next_u64();
            let bytes = word.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

impl TryCryptoRng for AesCtrRng {}

impl Drop for AesCtrRng {
    fn drop(&mut self) {
        for block in self.blocks.iter_mut() {
            block.as_mut_slice().zeroize();
        }
        self.words.as_mut_slice().zeroize();
        // `aes` with its `zeroize` feature wipes the key schedule when the cipher drops.
    }
}

#[cfg(test)]
mod tests {
    // Test code.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use aes::cipher::{KeyIvInit, StreamCipher};
    use proptest::prelude::*;
    use rand::Rng;

    fn reference_keystream(key: [u8; 32], bytes: usize) -> Vec<u8> {
        let mut out = vec![0u8; bytes];
        let mut oracle = ctr::Ctr128BE::<Aes256>::new(&key.into(), &[0u8; 16].into());
        oracle.apply_keystream(&mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The words are the `ctr` crate's AES-256-CTR keystream (128-bit big-endian counter
        /// from zero), read 8 bytes at a time as little-endian, across refills (512 words each).
        #[test]
        fn words_are_the_aes_256_ctr_keystream(key in any::<[u8; 32]>(), words in 1usize..1600) {
            let reference = reference_keystream(key, words * 8);
            let mut rng = AesCtrRng::from_key(key);
            for (i, chunk) in reference.chunks_exact(8).enumerate() {
                let expected = u64::from_le_bytes(chunk.try_into().unwrap());
                prop_assert_eq!(rng.next_u64(), expected, "word {}", i);
            }
        }

        /// `fill_u32` splits the same words, low half first, in any pieces, never reusing one.
        #[test]
        fn u32_fills_split_the_words(
            key in any::<[u8; 32]>(),
            cuts in proptest::collection::vec(0usize..5000, 1..8),
        ) {
            let mut filled = AesCtrRng::from_key(key);
            let mut words = AesCtrRng::from_key(key);
            for cut in cuts {
                let mut got = vec![0u32; cut];
                filled.fill_u32(&mut got);
                let mut expected = Vec::new();
                for _ in 0..cut.div_ceil(2) {
                    let word = words.next_u64();
                    expected.push(word as u32);
                    expected.push((word >> 32) as u32);
                }
                prop_assert_eq!(&got[..], &expected[..cut]);
            }
        }

        /// Byte fills in any pieces read the same words as `next_u64`, never reusing one.
        #[test]
        fn fills_in_pieces_consume_whole_words(
            key in any::<[u8; 32]>(),
            cuts in proptest::collection::vec(0usize..2000, 1..8),
        ) {
            let mut filled = AesCtrRng::from_key(key);
            let mut words = AesCtrRng::from_key(key);
            for cut in cuts {
                let mut got = vec![0u8; cut];
                filled.fill_bytes(&mut got);
                let mut expected = Vec::new();
                for _ in 0..cut.div_ceil(8) {
                    expected.extend_from_slice(&words.next_u64().to_le_bytes());
                }
                prop_assert_eq!(&got[..], &expected[..cut]);
            }
        }
    }

    #[test]
    fn keys_from_the_os_differ() {
        let mut a = AesCtrRng::from_os().unwrap();
        let mut b = AesCtrRng::from_os().unwrap();
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_ne!(xs, ys);
    }

    #[test]
    fn children_of_one_parent_are_distinct_streams() {
        let mut parent = AesCtrRng::from_key([7; 32]);
        let mut a = AesCtrRng::from_parent(&mut parent);
        let mut b = AesCtrRng::from_parent(&mut parent);
        assert_ne!(a.next_u64(), b.next_u64());
        // And a seeded parent gives the same children again (reproducible simulation noise).
        let mut again = AesCtrRng::from_key([7; 32]);
        let mut a2 = AesCtrRng::from_parent(&mut again);
        let mut fresh = AesCtrRng::from_key([7; 32]);
        let mut a3 = AesCtrRng::from_parent(&mut fresh);
        assert_eq!(a2.next_u64(), a3.next_u64());
    }

    #[test]
    fn debug_prints_no_state() {
        let rng = AesCtrRng::from_key([9; 32]);
        assert_eq!(format!("{rng:?}"), "AesCtrRng { .. }");
    }
}
