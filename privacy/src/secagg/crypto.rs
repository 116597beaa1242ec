//! Key agreement, key derivation and share encryption.
//!
//! - X25519 for both key pairs of a client (one to encrypt shares, one for pairwise masks).
//!   Every agreement checks that the result is contributory, which rejects the low-order points
//!   a malicious server could substitute to force a known shared secret.
//! - HKDF-SHA256 with the session id as salt and a labelled `info`, so keys from different
//!   rounds, purposes or client pairs never coincide.
//! - ChaCha20-Poly1305 for shares routed through the server, with the session, round, sender
//!   and recipient in the associated data: a ciphertext replayed from another round, or
//!   delivered to the wrong client, fails authentication.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use hkdf::Hkdf;
use rand::CryptoRng;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use super::ClientId;
use super::shamir::{LIMBS, Share};

const PROTOCOL: &[u8] = b"cohort/secagg/v1";

/// A 32-byte X25519 public key as advertised on the wire.
pub type PublicKeyBytes = [u8; 32];

/// A client's X25519 secret key; zeroized on drop (by `x25519-dalek`).
pub struct SecretKey(StaticSecret);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// Draws a fresh key from a cryptographically secure generator.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        SecretKey(StaticSecret::random_from_rng(rng))
    }

    /// Rebuilds a key from its bytes (after Shamir reconstruction).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(StaticSecret::from(bytes))
    }

    /// The raw key, wrapped so it is zeroized when dropped (to be Shamir-shared).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKeyBytes {
        PublicKey::from(&self.0).to_bytes()
    }

    /// X25519 with `peer`, refusing non-contributory results (low-order or identity points).
    pub fn agree(&self, peer: &PublicKeyBytes) -> Option<Zeroizing<[u8; 32]>> {
        let shared = self.0.diffie_hellman(&PublicKey::from(*peer));
        shared
            .was_contributory()
            .then(|| Zeroizing::new(shared.to_bytes()))
    }
}

/// Binds every derived key to one round: the hash of the round parameters and of every
/// advertised key, in client-id order. Clients compute it themselves from the key directory,
/// so a server that shows different clients different directories splits them into sessions
/// whose keys do not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; 32]);

impl SessionId {
    /// Hashes the round number, the round parameters and every `(id, cipher key, mask key)`.
    /// `entries` must be sorted by id (the key directory guarantees it).
    pub fn compute(
        round: u64,
        params: &[u64],
        entries: impl Iterator<Item = (ClientId, PublicKeyBytes, PublicKeyBytes)>,
    ) -> Self {
        let mut h = Sha256::new();
        h.update(PROTOCOL);
        h.update(b"/session");
        h.update(round.to_le_bytes());
        h.update((params.len() as u64).to_le_bytes());
        for p in params {
            h.update(p.to_le_bytes());
        }
        for (id, cipher_pk, mask_pk) in entries {
            h.update(id.to_le_bytes());
            h.update(cipher_pk);
            h.update(mask_pk);
        }
        SessionId(h.finalize().into())
    }

    /// A 32-byte value derived from the session for `label` (for example, the graph's seed).
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        // Infallible: 32 bytes is far below HKDF-SHA256's 8160-byte limit.
        let _ = Hkdf::<Sha256>::new(Some(&self.0), PROTOCOL)
            .expand_multi_info(&[b"/", label], &mut out);
        out
    }
}

/// Derives a pair key for clients `a` and `b` (order-independent) from a DH result.
fn pair_key(
    shared: &[u8; 32],
    session: &SessionId,
    label: &[u8],
    a: ClientId,
    b: ClientId,
) -> Zeroizing<[u8; 32]> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut out = Zeroizing::new([0u8; 32]);
    // Infallible: the output length is fixed and small.
    let _ = Hkdf::<Sha256>::new(Some(&session.0), shared).expand_multi_info(
        &[PROTOCOL, b"/", label, &lo.to_le_bytes(), &hi.to_le_bytes()],
        &mut out[..],
    );
    out
}

/// The seed of the pairwise mask between `a` and `b`, from their mask-key agreement.
pub fn pairwise_seed(
    shared: &[u8; 32],
    session: &SessionId,
    a: ClientId,
    b: ClientId,
) -> Zeroizing<[u8; 32]> {
    pair_key(shared, session, b"pair-mask", a, b)
}

fn aad(session: &SessionId, round: u64, from: ClientId, to: ClientId) -> [u8; 16 + 32 + 16] {
    let mut out = [0u8; 64];
    out[..16].copy_from_slice(b"cohort/secagg/v1");
    out[16..48].copy_from_slice(&session.0);
    out[48..56].copy_from_slice(&round.to_le_bytes());
    out[56..60].copy_from_slice(&from.to_le_bytes());
    out[60..64].copy_from_slice(&to.to_le_bytes());
    out
}

fn nonce(from: ClientId, to: ClientId) -> Nonce {
    // One message per direction per session key: (from, to) is unique for the key.
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&from.to_le_bytes());
    n[4..8].copy_from_slice(&to.to_le_bytes());
    Nonce::from(n)
}

/// The plaintext a client sends one neighbour: its share of the self-mask seed and its share
/// of the mask secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePair {
    /// Share of the self-mask seed `b_u`.
    pub self_mask: Share,
    /// Share of the mask secret key `s_u^SK`.
    pub mask_key: Share,
}

const SHARE_BYTES: usize = 8 + 8 * LIMBS;
const PLAINTEXT_BYTES: usize = 8 + 2 * SHARE_BYTES;

fn put_share(out: &mut Vec<u8>, s: &Share) {
    out.extend_from_slice(&s.x.to_le_bytes());
    for y in &s.y {
        out.extend_from_slice(&y.to_le_bytes());
    }
}

fn get_share(bytes: &[u8]) -> Share {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[8 * i..8 * i + 8]);
        u64::from_le_bytes(w)
    };
    let mut y = [0u64; LIMBS];
    for (i, v) in y.iter_mut().enumerate() {
        *v = word(i + 1);
    }
    Share { x: word(0), y }
}

/// Encrypts a share pair from `from` to `to` under the key agreed with `to`'s cipher key.
pub fn encrypt_shares(
    shared: &[u8; 32],
    session: &SessionId,
    round: u64,
    from: ClientId,
    to: ClientId,
    shares: &SharePair,
) -> Vec<u8> {
    let key = pair_key(shared, session, b"share-enc", from, to);
    let cipher = ChaCha20Poly1305::new(&(*key).into());
    let mut plain = Vec::with_capacity(PLAINTEXT_BYTES);
    plain.extend_from_slice(&from.to_le_bytes());
    plain.extend_from_slice(&to.to_le_bytes());
    put_share(&mut plain, &shares.self_mask);
    put_share(&mut plain, &shares.mask_key);
    let aad = aad(session, round, from, to);
    let out = cipher.encrypt(
        &nonce(from, to),
        Payload {
            msg: &plain,
            aad: &aad,
        },
    );
    plain.zeroize();
    // Encryption of a 104-byte message cannot fail (only oversize inputs are rejected).
    out.unwrap_or_default()
}

/// Decrypts and parses what `from` sent to `to`; `None` if authentication fails or the
/// plaintext names other clients.
pub fn decrypt_shares(
    shared: &[u8; 32],
    session: &SessionId,
    round: u64,
    from: ClientId,
    to: ClientId,
    ciphertext: &[u8],
) -> Option<SharePair> {
    let key = pair_key(shared, session, b"share-enc", from, to);
    let cipher = ChaCha20Poly1305::new(&(*key).into());
    let aad = aad(session, round, from, to);
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &nonce(from, to),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()?,
    );
    if plain.len() != PLAINTEXT_BYTES
        || plain[..4] != from.to_le_bytes()
        || plain[4..8] != to.to_le_bytes()
    {
        return None;
    }
    Some(SharePair {
        self_mask: get_share(&plain[8..8 + SHARE_BYTES]),
        mask_key: get_share(&plain[8 + SHARE_BYTES..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::ChaCha20Rng;

    fn share(x: u64) -> Share {
        Share { x, y: [x; LIMBS] }
    }

    #[test]
    fn agreement_is_symmetric_and_rejects_low_order_points() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let a = SecretKey::generate(&mut rng);
        let b = SecretKey::generate(&mut rng);
        assert_eq!(
            *a.agree(&b.public()).unwrap(),
            *b.agree(&a.public()).unwrap()
        );
        // The identity and a point of order 8 on Curve25519 (from the X25519 test vectors).
        let zero = [0u8; 32];
        let mut one = [0u8; 32];
        one[0] = 1;
        let order8: [u8; 32] = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ];
        for bad in [zero, one, order8] {
            assert!(a.agree(&bad).is_none());
        }
    }

    #[test]
    fn shares_roundtrip_and_bind_round_sender_recipient_and_session() {
        let shared = [9u8; 32];
        let s1 = SessionId::compute(1, &[3], [(1, [1; 32], [2; 32])].into_iter());
        let s2 = SessionId::compute(2, &[3], [(1, [1; 32], [2; 32])].into_iter());
        assert_ne!(s1, s2);
        let pair = SharePair {
            self_mask: share(3),
            mask_key: share(4),
        };
        let ct = encrypt_shares(&shared, &s1, 1, 7, 8, &pair);
        assert_eq!(decrypt_shares(&shared, &s1, 1, 7, 8, &ct), Some(pair));
        // Replayed in another round (other session id and round number).
        assert_eq!(decrypt_shares(&shared, &s2, 2, 7, 8, &ct), None);
        // Same session, but claimed from another sender or delivered to another recipient.
        assert_eq!(decrypt_shares(&shared, &s1, 1, 6, 8, &ct), None);
        assert_eq!(decrypt_shares(&shared, &s1, 1, 7, 9, &ct), None);
        // Tampered.
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(decrypt_shares(&shared, &s1, 1, 7, 8, &bad), None);
    }

    #[test]
    fn pair_seeds_are_symmetric_and_session_bound() {
        let s1 = SessionId([1; 32]);
        let s2 = SessionId([2; 32]);
        let k = [4u8; 32];
        assert_eq!(*pairwise_seed(&k, &s1, 3, 9), *pairwise_seed(&k, &s1, 9, 3));
        assert_ne!(*pairwise_seed(&k, &s1, 3, 9), *pairwise_seed(&k, &s2, 3, 9));
        assert_ne!(*pairwise_seed(&k, &s1, 3, 9), *pairwise_seed(&k, &s1, 3, 8));
    }
}
