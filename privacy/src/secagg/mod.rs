/*!
Secure aggregation: SecAgg+ (Bell, Bonawitz, Gascón, Lepoint & Raykova 2020) over the double
masking of Bonawitz et al. 2017.

# Brief overview
Each client adds to its quantised input a self mask `PRG(b_u)` and, for every neighbour `v` in
a random k-regular graph, a pairwise mask `±PRG(s_uv)` that `v` adds with the opposite sign.
It Shamir-shares `b_u` and its mask secret key among its neighbours. The server sums the masked
inputs as they arrive; pairwise masks between survivors cancel, and for the rest the server
asks each survivor, per neighbour, for exactly one kind of share: the self-mask share of a
survivor or the key share of a client that dropped out. An honest client never reveals both.

Both sides are typed state machines in the style of rustls: one struct per stage, transitions
consume `self`, a message for another stage is `UnexpectedMessage`, and unmasking requires a
[`server::ThresholdMet`] witness that only the share-count check creates.

```
use cohort_privacy::secagg::{harness, MaskPrg, RoundConfig};

let config = RoundConfig {
    round: 1,
    dimension: 4,
    bits: 16,
    neighbours: 4,
    threshold: 3,
    mask_prg: MaskPrg::default(),
};
let outcome = harness::run_round::<u32>(&config, 8, &harness::Dropouts::none(), |id| {
    vec![id; 4]
})
.unwrap();
let aggregate = outcome.result.unwrap();
assert_eq!(aggregate.sum, vec![(0..8).sum::<u32>(); 4]);
```
*/

pub mod active;
pub mod client;
pub mod crypto;
mod error;
pub mod graph;
pub mod harness;
pub mod mask;
pub mod params;
pub mod server;
pub mod shamir;
mod unmask;

pub use client::ClientSession;
pub use error::{AbortReason, ApiMisuse, MessageKind, PeerMisbehaved, SecAggError};
pub use mask::{Lane, MaskPrg};
pub use server::{Aggregate, Rejection, ServerSession};

use crypto::PublicKeyBytes;
use shamir::Share;

/// A client's identity within a round. Shamir evaluation points are `id + 1`.
pub type ClientId = u32;

/// The parameters of one round, fixed by the server and known to every client before it starts
/// (they are part of the session id, so a client given other parameters derives other keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundConfig {
    /// Round number; distinct rounds must use distinct numbers.
    pub round: u64,
    /// Number of coordinates of every input vector.
    pub dimension: usize,
    /// Inputs and the sum live in `Z_{2^bits}`.
    pub bits: u32,
    /// Degree `k` of the communication graph (`>= clients − 1` means the complete graph).
    pub neighbours: usize,
    /// Shamir threshold `t`: shares needed to reconstruct a secret.
    pub threshold: usize,
    /// The generator that expands mask seeds (client and server must agree).
    pub mask_prg: MaskPrg,
}

impl RoundConfig {
    /// Checks the parameters against the lane type `L`.
    pub fn validate<L: Lane>(&self) -> Result<(), SecAggError> {
        let bad = |why: String| Err(SecAggError::InvalidConfig(why));
        if self.bits == 0 || self.bits > L::BITS {
            return bad(format!(
                "bits must be in 1..={} for this lane type, got {}",
                L::BITS,
                self.bits
            ));
        }
        // The mask keystream (IETF ChaCha20, 32-bit block counter) covers 256 GiB: 2^32 lanes
        // of u64 stay well inside it.
        if self.dimension == 0 || self.dimension as u64 > 1 << 32 {
            return bad(format!(
                "dimension must be in 1..=2^32, got {}",
                self.dimension
            ));
        }
        if self.threshold == 0 || self.threshold > self.neighbours {
            return bad(format!(
                "threshold must be in 1..=neighbours ({}), got {}",
                self.neighbours, self.threshold
            ));
        }
        Ok(())
    }

    fn session_params(&self) -> [u64; 5] {
        [
            self.dimension as u64,
            self.bits as u64,
            self.neighbours as u64,
            self.threshold as u64,
            self.mask_prg.code(),
        ]
    }
}

/// Client → server, stage 1: the client's two public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertiseKeys {
    /// The sender.
    pub client: ClientId,
    /// X25519 key used to encrypt shares sent to this client.
    pub cipher_pk: PublicKeyBytes,
    /// X25519 key from which pairwise mask seeds are agreed.
    pub mask_pk: PublicKeyBytes,
}

/// Server → clients: every key advertised in time, sorted by client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDirectory {
    /// The round these keys belong to.
    pub round: u64,
    /// The advertised keys, sorted by client id.
    pub entries: Vec<AdvertiseKeys>,
}

/// One encrypted share pair from `from` to `to`, relayed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShare {
    /// Sender.
    pub from: ClientId,
    /// Recipient.
    pub to: ClientId,
    /// ChaCha20-Poly1305 ciphertext of the share pair.
    pub ciphertext: Vec<u8>,
}

/// Client → server, stage 2: one ciphertext per neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShares {
    /// The sender.
    pub from: ClientId,
    /// One ciphertext per neighbour.
    pub shares: Vec<EncryptedShare>,
}

/// Server → one client: the ciphertexts addressed to it by clients that finished stage 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedShares {
    /// The recipient.
    pub to: ClientId,
    /// The ciphertexts.
    pub shares: Vec<EncryptedShare>,
}

/// Client → server, stage 3: the masked input, in `Z_{2^bits}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedInput<L> {
    /// The sender.
    pub from: ClientId,
    /// `x + PRG(b) ± Σ PRG(s_uv) mod 2^bits`.
    pub vector: Vec<L>,
}

/// Server → surviving clients: which clients' self masks and which clients' pairwise masks
/// must be removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// Clients whose masked input was summed (their self-mask shares are wanted).
    pub survivors: Vec<ClientId>,
    /// Clients that shared keys but sent no input (their mask-key shares are wanted).
    pub dropped: Vec<ClientId>,
}

/// Client → server, stage 4: the requested shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskResponse {
    /// The sender (the share holder).
    pub from: ClientId,
    /// Shares of survivors' self-mask seeds, by owner.
    pub self_mask_shares: Vec<(ClientId, Share)>,
    /// Shares of dropped clients' mask secret keys, by owner.
    pub mask_key_shares: Vec<(ClientId, Share)>,
}

/// Every message a client sends the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage<L> {
    /// Stage 1.
    AdvertiseKeys(AdvertiseKeys),
    /// Stage 2.
    EncryptedShares(EncryptedShares),
    /// Stage 3.
    MaskedInput(MaskedInput<L>),
    /// Stage 4.
    UnmaskResponse(UnmaskResponse),
}

impl<L> ClientMessage<L> {
    /// The message's kind, for errors and logs.
    pub fn kind(&self) -> MessageKind {
        match self {
            ClientMessage::AdvertiseKeys(_) => MessageKind::AdvertiseKeys,
            ClientMessage::EncryptedShares(_) => MessageKind::EncryptedShares,
            ClientMessage::MaskedInput(_) => MessageKind::MaskedInput,
            ClientMessage::UnmaskResponse(_) => MessageKind::UnmaskResponse,
        }
    }
}

/// Every message the server sends a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// After stage 1.
    KeyDirectory(KeyDirectory),
    /// After stage 2.
    RoutedShares(RoutedShares),
    /// After stage 3.
    UnmaskRequest(UnmaskRequest),
}

impl ServerMessage {
    /// The message's kind, for errors and logs.
    pub fn kind(&self) -> MessageKind {
        match self {
            ServerMessage::KeyDirectory(_) => MessageKind::KeyDirectory,
            ServerMessage::RoutedShares(_) => MessageKind::RoutedShares,
            ServerMessage::UnmaskRequest(_) => MessageKind::UnmaskRequest,
        }
    }
}

#[cfg(test)]
mod tests;
