//! Errors of secure aggregation, sorted by who is to blame.
//!
//! `PeerMisbehaved` means the other side (the server, seen from a client; a client, seen from
//! the server) sent something an honest party never sends. Callers should log it and drop or
//! exclude that peer, not branch on its individual variants, which will grow.
//! `ApiMisuse` is a bug in the calling code. `InvalidConfig` is a parameter set that cannot give
//! the promised guarantees. An abort is not an error: it is a terminal state of a session
//! (`ServerSession::Aborted`, `ClientSession::Aborted`) carrying an [`AbortReason`].

use std::fmt;

use super::ClientId;

/// Names the messages of the protocol, for `UnexpectedMessage` errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// Client → server: public keys.
    AdvertiseKeys,
    /// Server → client: every advertised key.
    KeyDirectory,
    /// Client → server: encrypted Shamir shares for the neighbours.
    EncryptedShares,
    /// Server → client: the shares addressed to that client.
    RoutedShares,
    /// Client → server: the masked input vector.
    MaskedInput,
    /// Server → client: who survived and who dropped.
    UnmaskRequest,
    /// Client → server (active mode): a survivor's signature over the unmask request.
    SurvivorSignature,
    /// Server → client (active mode): every survivor signature collected.
    SurvivorSignatures,
    /// Client → server: the shares the server asked for.
    UnmaskResponse,
    /// Not a wire message: the caller's own quantised input, which a client session waits
    /// for once its shares are routed.
    Input,
    /// Nothing more is expected: the session has finished or aborted.
    Nothing,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Everything that can go wrong in a secure-aggregation session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecAggError {
    /// A message arrived in a stage that does not accept it (for example a masked input after
    /// the unmask request went out).
    UnexpectedMessage {
        /// What the current stage accepts.
        expected: MessageKind,
        /// What arrived.
        got: MessageKind,
    },
    /// The other side deviated from the protocol.
    PeerMisbehaved(PeerMisbehaved),
    /// The calling code used the API wrongly.
    ApiMisuse(ApiMisuse),
    /// The round parameters cannot give the promised guarantees.
    InvalidConfig(String),
}

/// Ways in which a peer deviated from the protocol. Do not branch on the variants: log them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// A public key of low order (or otherwise non-contributory) was advertised.
    LowOrderKey {
        /// Whose key it was.
        client: ClientId,
    },
    /// A client sent the same stage's message twice, or appears twice in a list.
    Duplicate {
        /// The client concerned.
        client: ClientId,
    },
    /// A message came from, or named, a client outside the stage's frozen survivor set.
    NotInSurvivorSet {
        /// The client concerned.
        client: ClientId,
    },
    /// A share or ciphertext was addressed between clients that are not neighbours.
    NotNeighbours {
        /// Sender.
        from: ClientId,
        /// Recipient.
        to: ClientId,
    },
    /// A vector had the wrong length.
    WrongLength {
        /// The client concerned.
        client: ClientId,
        /// The round's dimension.
        expected: usize,
        /// What arrived.
        got: usize,
    },
    /// A ciphertext failed authentication (tampered, misrouted, or replayed from another round).
    DecryptionFailed {
        /// The claimed sender.
        from: ClientId,
    },
    /// The server asked for both the self-mask share and the key share of one peer, which
    /// would let it unmask that peer's input.
    BothSharesRequested {
        /// The peer concerned.
        peer: ClientId,
    },
    /// The key directory does not contain this client's own keys unchanged, or is malformed.
    BadDirectory(&'static str),
    /// A mask key reconstructed from shares does not match the key the client advertised.
    ReconstructionMismatch {
        /// Whose key was reconstructed.
        client: ClientId,
    },
    /// A share carries an evaluation point other than its holder's.
    BadShare {
        /// The holder that sent it.
        holder: ClientId,
    },
    /// (Active mode) A message names a client that has no registered identity key.
    UnknownIdentity {
        /// The client concerned.
        client: ClientId,
    },
    /// (Active mode) An advertised key's signature does not verify under its owner's identity
    /// key: the key was substituted (or the signature forged) on the way.
    BadKeySignature {
        /// Whose key it claims to be.
        client: ClientId,
    },
    /// (Active mode) A survivor's signature does not verify over the unmask request this client
    /// received: the server showed different survivor sets to different clients.
    InconsistentSurvivorSet {
        /// Whose signature it claims to be.
        signer: ClientId,
    },
}

/// Mistakes of the calling code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// The input vector does not have the round's dimension.
    InputLength {
        /// The round's dimension.
        expected: usize,
        /// The caller's vector length.
        got: usize,
    },
    /// An input coordinate is not below `2^bits`.
    InputOutOfRange {
        /// The index of the first offending coordinate.
        index: usize,
    },
    /// The operation is not possible in the session's current state.
    WrongState(&'static str),
    /// The operating system's random number generator failed.
    RandomnessUnavailable,
}

/// Why a round ended without a result. Aborting is the fail-closed outcome: nothing about any
/// input is revealed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortReason {
    /// A client whose secret must be reconstructed has fewer than `t` live share holders.
    TooFewShareHolders {
        /// The client whose secret cannot be reconstructed.
        client: ClientId,
        /// How many of its share holders are still alive.
        holders: usize,
        /// The threshold `t`.
        threshold: usize,
    },
    /// (Active mode) Fewer than `t` of a client's share holders confirmed, by signature, the
    /// survivor set it was shown; it reveals no share.
    TooFewSurvivorSignatures {
        /// The client that stopped.
        client: ClientId,
        /// Matching signatures from its share holders.
        signatures: usize,
        /// The threshold `t`.
        threshold: usize,
    },
    /// Fewer clients than the protocol needs are left.
    TooFewClients {
        /// Clients left.
        alive: usize,
        /// The minimum.
        needed: usize,
    },
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::TooFewShareHolders {
                client,
                holders,
                threshold,
            } => write!(
                f,
                "client {client} has {holders} live share holders, below the threshold {threshold}"
            ),
            AbortReason::TooFewSurvivorSignatures {
                client,
                signatures,
                threshold,
            } => write!(
                f,
                "client {client} got {signatures} signatures on its survivor set from its share \
                 holders, below the threshold {threshold}"
            ),
            AbortReason::TooFewClients { alive, needed } => {
                write!(f, "{alive} clients left, at least {needed} needed")
            }
        }
    }
}

impl fmt::Display for SecAggError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecAggError::UnexpectedMessage { expected, got } => {
                write!(f, "unexpected {got} message (expected {expected})")
            }
            SecAggError::PeerMisbehaved(p) => write!(f, "peer misbehaved: {p:?}"),
            SecAggError::ApiMisuse(a) => write!(f, "API misuse: {a:?}"),
            SecAggError::InvalidConfig(why) => {
                write!(f, "invalid secure-aggregation config: {why}")
            }
        }
    }
}

impl std::error::Error for SecAggError {}

impl From<PeerMisbehaved> for SecAggError {
    fn from(p: PeerMisbehaved) -> Self {
        SecAggError::PeerMisbehaved(p)
    }
}

impl From<ApiMisuse> for SecAggError {
    fn from(a: ApiMisuse) -> Self {
        SecAggError::ApiMisuse(a)
    }
}
