/*!
The active-security mode of SecAgg+: signed keys and a signed consistency check of the survivor
set (Bonawitz et al. 2017, §4 "active adversary"; Bell et al. 2020 for the sparse graph).

# Brief overview
Against an honest-but-curious server the plain protocol suffices. A *malicious* server can do
two more things, and this mode stops both:

1. **Substitute keys.** It relays every public key, so it could hand a client its own keys in
   place of a neighbour's, then decrypt that neighbour's shares and recompute its pairwise masks.
   Here every client signs its advertised keys (bound to the round and its parameters) under a
   long-term Ed25519 identity key, and every client checks the signature of *every* directory
   entry against [`Identities`], a registry of identity keys the caller obtained outside the
   server's control (pinned at enrolment, or certificates from a CA the server does not hold).
   Every entry, not only the neighbours': the graph is derived from the whole directory, so
   unsigned extra entries would let the server grind for a graph it likes.
2. **Split the survivor set.** It could tell some holders of a client's shares that the client
   survived (getting self-mask shares) and others that it dropped (getting mask-key shares).
   Here, before revealing any share, each survivor signs the unmask request it received (bound
   to the session id), the server relays the signatures, and each client reveals its shares
   only once at least `t` of its own share holders (its neighbours that reached stage 3) signed
   *exactly the request it saw*. A signature over any other request is proof that the server
   equivocated: [`PeerMisbehaved::InconsistentSurvivorSet`]. Too few matching signatures is an
   abort ([`AbortReason::TooFewSurvivorSignatures`]), which reveals nothing.

The privacy of a single client against a server that corrupts clients still rests on the
threshold: choose `t` with `2t − k` above the corrupted neighbours (see `params`, whose bound
already uses `2t − k` for a malicious server); the consistency check adds detection and makes
honest clients stop instead of answering a split view.

Both sides wrap the plain state machines ([`ActiveClientSession`], [`ActiveServerSession`]):
the masking, sharing and unmasking code is the same code. The mode is opt-in; over HTTPS it is
not wired yet (the wire types have no signature fields).

```
use std::sync::Arc;
use cohort_privacy::secagg::{MaskPrg, RoundConfig};
use cohort_privacy::secagg::active::{self, IdentityKey, Identities};
use cohort_privacy::secagg::harness::Dropouts;

let config = RoundConfig {
    round: 1,
    dimension: 4,
    bits: 16,
    neighbours: 4,
    threshold: 3,
    mask_prg: MaskPrg::default(),
};
let keys: Vec<IdentityKey> = (0..6).map(|_| IdentityKey::generate().unwrap()).collect();
let registry = Arc::new(
    Identities::new(keys.iter().enumerate().map(|(id, k)| (id as u32, k.public()))).unwrap(),
);
let outcome = active::run_round::<u32>(&config, keys, &registry, &Dropouts::none(), |id| {
    vec![id; 4]
}).unwrap();
assert_eq!(outcome.result.unwrap().sum, vec![(0..6).sum::<u32>(); 4]);
```
*/

mod client;
mod harness;
mod server;

pub use client::{
    ActiveClientSession, AwaitingSurvivorSet, AwaitingSurvivorSignatures, SignedAwaitingDirectory,
    SignedAwaitingRoutedShares,
};
pub use harness::{Outcome, run_round};
pub use server::{
    ActiveBroadcast, ActiveRejection, ActiveServerSession, KeysStage, Relay, SignatureStage,
    UnmaskStage,
};

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::rngs::SysRng;
use rand::{CryptoRng, TryRng};
use zeroize::Zeroizing;

use super::crypto::SessionId;
use super::{
    AdvertiseKeys, ApiMisuse, ClientId, EncryptedShares, KeyDirectory, MaskedInput, MessageKind,
    PeerMisbehaved, RoundConfig, RoutedShares, SecAggError, UnmaskRequest, UnmaskResponse,
};

/// An Ed25519 signature as it travels.
pub type SignatureBytes = [u8; 64];
/// An Ed25519 public (verifying) key as it travels.
pub type IdentityPublicKey = [u8; 32];

const KEYS_LABEL: &[u8] = b"cohort/secagg/v1/active/keys";
const SURVIVORS_LABEL: &[u8] = b"cohort/secagg/v1/active/survivors";

/// A client's long-term Ed25519 identity key: it outlives rounds and never leaves the client.
/// Zeroized on drop (by `ed25519-dalek`).
pub struct IdentityKey(SigningKey);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey(public: {:02x?})", &self.public()[..4])
    }
}

impl IdentityKey {
    /// Draws a fresh identity key from the operating system's generator.
    pub fn generate() -> Result<Self, SecAggError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SysRng
            .try_fill_bytes(&mut seed[..])
            .map_err(|_| ApiMisuse::RandomnessUnavailable)?;
        Ok(Self::from_seed(&seed))
    }

    /// Draws an identity key from `rng` (tests and reproducible simulations).
    pub fn generate_with_rng(rng: &mut impl CryptoRng) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut seed[..]);
        Self::from_seed(&seed)
    }

    /// Rebuilds a key from its 32-byte seed (as stored in the client's identity directory).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        IdentityKey(SigningKey::from_bytes(seed))
    }

    /// The public key to register with the federation.
    pub fn public(&self) -> IdentityPublicKey {
        self.0.verifying_key().to_bytes()
    }

    fn sign(&self, message: &[u8]) -> SignatureBytes {
        self.0.sign(message).to_bytes()
    }
}

/// The identity keys of a round's clients, by SecAgg id: the trust anchor of the active mode.
/// It must come from outside the server's control, or the server can register keys of its own.
#[derive(Debug, Clone, Default)]
pub struct Identities(BTreeMap<ClientId, VerifyingKey>);

impl Identities {
    /// Builds the registry; refuses a key that is not a valid Ed25519 point or is weak (of small
    /// order), and a client listed twice.
    pub fn new(
        keys: impl IntoIterator<Item = (ClientId, IdentityPublicKey)>,
    ) -> Result<Self, SecAggError> {
        let mut map = BTreeMap::new();
        for (client, bytes) in keys {
            let key = VerifyingKey::from_bytes(&bytes)
                .ok()
                .filter(|k| !k.is_weak())
                .ok_or_else(|| {
                    SecAggError::InvalidConfig(format!(
                        "client {client}'s identity key is not a valid Ed25519 public key"
                    ))
                })?;
            if map.insert(client, key).is_some() {
                return Err(SecAggError::InvalidConfig(format!(
                    "client {client} has two identity keys"
                )));
            }
        }
        Ok(Identities(map))
    }

    /// Verifies `signature` by `client` over `message`, strictly (no malleable signatures, no
    /// small-order keys).
    fn verify(
        &self,
        client: ClientId,
        message: &[u8],
        signature: &SignatureBytes,
    ) -> Result<(), Unverified> {
        let key = self.0.get(&client).ok_or(Unverified::UnknownClient)?;
        key.verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| Unverified::BadSignature)
    }
}

/// Why a signature was not accepted; the caller turns it into the right `PeerMisbehaved`.
enum Unverified {
    UnknownClient,
    BadSignature,
}

/// What a client signs when it advertises its keys: the round, the round's parameters, its id
/// and both keys. Binding the round stops the server from replaying keys of a round in which
/// it reconstructed this client's mask key (the client dropped out then).
fn keys_statement(config: &RoundConfig, keys: &AdvertiseKeys) -> Vec<u8> {
    let params = config.session_params();
    let mut m = Vec::with_capacity(KEYS_LABEL.len() + 8 * (2 + params.len()) + 4 + 64);
    m.extend_from_slice(KEYS_LABEL);
    m.extend_from_slice(&config.round.to_le_bytes());
    m.extend_from_slice(&(params.len() as u64).to_le_bytes());
    for p in params {
        m.extend_from_slice(&p.to_le_bytes());
    }
    m.extend_from_slice(&keys.client.to_le_bytes());
    m.extend_from_slice(&keys.cipher_pk);
    m.extend_from_slice(&keys.mask_pk);
    m
}

/// What a survivor signs before revealing shares: the session and the whole unmask request.
fn survivors_statement(session: &SessionId, request: &UnmaskRequest) -> Vec<u8> {
    let ids = request.survivors.len() + request.dropped.len();
    let mut m = Vec::with_capacity(SURVIVORS_LABEL.len() + 32 + 16 + 4 * ids);
    m.extend_from_slice(SURVIVORS_LABEL);
    m.extend_from_slice(&session.0);
    for list in [&request.survivors, &request.dropped] {
        m.extend_from_slice(&(list.len() as u64).to_le_bytes());
        for id in list {
            m.extend_from_slice(&id.to_le_bytes());
        }
    }
    m
}

/// Checks that `keys` carry a valid signature by their owner for this round.
fn verify_keys(
    identities: &Identities,
    config: &RoundConfig,
    signed: &SignedKeys,
) -> Result<(), PeerMisbehaved> {
    let client = signed.keys.client;
    identities
        .verify(
            client,
            &keys_statement(config, &signed.keys),
            &signed.signature,
        )
        .map_err(|why| match why {
            Unverified::UnknownClient => PeerMisbehaved::UnknownIdentity { client },
            Unverified::BadSignature => PeerMisbehaved::BadKeySignature { client },
        })
}

/// Client → server, stage 1 of the active mode: the keys and the owner's signature over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedKeys {
    /// The advertised keys.
    pub keys: AdvertiseKeys,
    /// Ed25519 signature by the owner's identity key over the keys, round and parameters.
    pub signature: SignatureBytes,
}

/// Server → clients: the key directory with every entry's signature, in entry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDirectory {
    /// The directory as in the plain protocol.
    pub directory: KeyDirectory,
    /// `signatures[i]` signs `directory.entries[i]`.
    pub signatures: Vec<SignatureBytes>,
}

/// Client → server: a survivor's signature over the unmask request it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurvivorSignature {
    /// The signer.
    pub from: ClientId,
    /// Ed25519 signature over the session id and the whole request.
    pub signature: SignatureBytes,
}

/// Server → survivors: every survivor signature it collected, sorted by signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurvivorSignatures {
    /// `(signer, signature)` pairs.
    pub signatures: Vec<(ClientId, SignatureBytes)>,
}

/// Every message a client sends the server in the active mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveClientMessage<L> {
    /// Stage 1: signed keys.
    SignedKeys(SignedKeys),
    /// Stage 2: as in the plain protocol.
    EncryptedShares(EncryptedShares),
    /// Stage 3: as in the plain protocol.
    MaskedInput(MaskedInput<L>),
    /// Consistency check: the signed unmask request.
    SurvivorSignature(SurvivorSignature),
    /// Stage 4: as in the plain protocol.
    UnmaskResponse(UnmaskResponse),
}

impl<L> ActiveClientMessage<L> {
    /// The message's kind, for errors and logs.
    pub fn kind(&self) -> MessageKind {
        match self {
            ActiveClientMessage::SignedKeys(_) => MessageKind::AdvertiseKeys,
            ActiveClientMessage::EncryptedShares(_) => MessageKind::EncryptedShares,
            ActiveClientMessage::MaskedInput(_) => MessageKind::MaskedInput,
            ActiveClientMessage::SurvivorSignature(_) => MessageKind::SurvivorSignature,
            ActiveClientMessage::UnmaskResponse(_) => MessageKind::UnmaskResponse,
        }
    }
}

/// Every message the server sends a client in the active mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveServerMessage {
    /// After stage 1.
    KeyDirectory(SignedDirectory),
    /// After stage 2.
    RoutedShares(RoutedShares),
    /// After stage 3: the request, to be signed first.
    UnmaskRequest(UnmaskRequest),
    /// After the consistency check: the signatures; now the shares may be revealed.
    SurvivorSignatures(SurvivorSignatures),
}

impl ActiveServerMessage {
    /// The message's kind, for errors and logs.
    pub fn kind(&self) -> MessageKind {
        match self {
            ActiveServerMessage::KeyDirectory(_) => MessageKind::KeyDirectory,
            ActiveServerMessage::RoutedShares(_) => MessageKind::RoutedShares,
            ActiveServerMessage::UnmaskRequest(_) => MessageKind::UnmaskRequest,
            ActiveServerMessage::SurvivorSignatures(_) => MessageKind::SurvivorSignatures,
        }
    }
}

#[cfg(test)]
mod tests;
