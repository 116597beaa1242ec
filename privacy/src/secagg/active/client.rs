//! The client side of the active mode: the plain client stages, with every directory entry's
//! signature checked before the directory is used, and the survivor set signed and
//! cross-checked before any share is revealed.
//!
//! `SignedAwaitingDirectory` → `SignedAwaitingRoutedShares` → `AwaitingSurvivorSet` →
//! `AwaitingSurvivorSignatures` → done.

use std::collections::BTreeSet;
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::{ChaCha20Rng, SysRng};

use super::super::client::{AwaitingDirectory, AwaitingRoutedShares, AwaitingUnmask, Step};
use super::super::mask::Lane;
use super::{
    ActiveClientMessage, ActiveServerMessage, Identities, IdentityKey, SignedDirectory, SignedKeys,
    SurvivorSignature, SurvivorSignatures, Unverified, keys_statement, survivors_statement,
    verify_keys,
};
use crate::secagg::{
    AbortReason, ApiMisuse, ClientId, EncryptedShares, MaskedInput, MessageKind, PeerMisbehaved,
    RoundConfig, RoutedShares, SecAggError, UnmaskRequest, UnmaskResponse,
};

/// Stage 1 done: signed keys sent, waiting for the signed directory.
#[derive(Debug)]
pub struct SignedAwaitingDirectory {
    inner: AwaitingDirectory,
    config: RoundConfig,
    identity: Arc<IdentityKey>,
    identities: Arc<Identities>,
}

/// Stage 2 done: shares sent, waiting for the shares addressed to this client.
#[derive(Debug)]
pub struct SignedAwaitingRoutedShares {
    inner: AwaitingRoutedShares,
    identity: Arc<IdentityKey>,
    identities: Arc<Identities>,
}

/// Stage 3 done: masked input sent, waiting for the unmask request to sign.
#[derive(Debug)]
pub struct AwaitingSurvivorSet {
    inner: AwaitingUnmask,
    identity: Arc<IdentityKey>,
    identities: Arc<Identities>,
}

/// The request is signed; waiting for the other survivors' signatures before answering it.
#[derive(Debug)]
pub struct AwaitingSurvivorSignatures {
    inner: AwaitingUnmask,
    request: UnmaskRequest,
    identities: Arc<Identities>,
}

impl SignedAwaitingDirectory {
    /// Starts a round: fresh round keys from the operating system's generator, signed with
    /// this client's long-term `identity`. `identities` holds every participant's identity key.
    pub fn start<L: Lane>(
        id: ClientId,
        config: RoundConfig,
        identity: Arc<IdentityKey>,
        identities: Arc<Identities>,
    ) -> Result<(Self, SignedKeys), SecAggError> {
        let mut rng =
            ChaCha20Rng::try_from_rng(&mut SysRng).map_err(|_| ApiMisuse::RandomnessUnavailable)?;
        Self::start_with_rng::<L>(id, config, identity, identities, &mut rng)
    }

    /// As [`start`](Self::start), seeding the round keys from `rng` (tests and simulations).
    pub fn start_with_rng<L: Lane>(
        id: ClientId,
        config: RoundConfig,
        identity: Arc<IdentityKey>,
        identities: Arc<Identities>,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<(Self, SignedKeys), SecAggError> {
        let (inner, keys) = AwaitingDirectory::start_with_rng::<L>(id, config, rng)?;
        let signature = identity.sign(&keys_statement(&config, &keys));
        let signed = SignedKeys { keys, signature };
        // A client whose own key is not registered would only learn that from every peer's
        // refusal; say so now.
        verify_keys(&identities, &config, &signed).map_err(|_| {
            SecAggError::InvalidConfig(format!(
                "client {id}'s identity key is not the one registered for it"
            ))
        })?;
        let next = SignedAwaitingDirectory {
            inner,
            config,
            identity,
            identities,
        };
        Ok((next, signed))
    }

    /// Checks that every entry of the directory is signed by its owner's registered identity
    /// key, then continues as the plain client (its own checks included).
    pub fn handle(
        self,
        signed: SignedDirectory,
    ) -> Result<Step<SignedAwaitingRoutedShares, EncryptedShares>, SecAggError> {
        let SignedDirectory {
            directory,
            signatures,
        } = signed;
        if signatures.len() != directory.entries.len() {
            return Err(PeerMisbehaved::BadDirectory("not one signature per entry").into());
        }
        for (keys, signature) in directory.entries.iter().zip(&signatures) {
            let signed = SignedKeys {
                keys: keys.clone(),
                signature: *signature,
            };
            verify_keys(&self.identities, &self.config, &signed)?;
        }
        Ok(match self.inner.handle(directory)? {
            Step::Next(inner, shares) => Step::Next(
                SignedAwaitingRoutedShares {
                    inner,
                    identity: self.identity,
                    identities: self.identities,
                },
                shares,
            ),
            Step::Abort(reason) => Step::Abort(reason),
        })
    }
}

impl SignedAwaitingRoutedShares {
    /// As the plain client: authenticates the routed shares and masks `input` in place.
    pub fn handle<L: Lane>(
        self,
        routed: RoutedShares,
        input: Vec<L>,
    ) -> Result<Step<AwaitingSurvivorSet, MaskedInput<L>>, SecAggError> {
        Ok(match self.inner.handle(routed, input)? {
            Step::Next(inner, masked) => Step::Next(
                AwaitingSurvivorSet {
                    inner,
                    identity: self.identity,
                    identities: self.identities,
                },
                masked,
            ),
            Step::Abort(reason) => Step::Abort(reason),
        })
    }
}

impl AwaitingSurvivorSet {
    /// Makes every check the plain client makes on the request, then signs it (bound to the
    /// session id). No share is revealed yet.
    pub fn handle(
        self,
        request: UnmaskRequest,
    ) -> Result<(AwaitingSurvivorSignatures, SurvivorSignature), SecAggError> {
        self.inner.check(&request)?;
        let signature = self
            .identity
            .sign(&survivors_statement(self.inner.session(), &request));
        let from = self.inner.id();
        Ok((
            AwaitingSurvivorSignatures {
                inner: self.inner,
                request,
                identities: self.identities,
            },
            SurvivorSignature { from, signature },
        ))
    }
}

impl AwaitingSurvivorSignatures {
    /// Verifies every relayed signature over the request this client saw, and answers the
    /// request only if at least `t` of its share holders signed it. A signature over anything
    /// else means the server showed clients different survivor sets: an error, and no shares.
    pub fn handle(
        self,
        relayed: SurvivorSignatures,
    ) -> Result<Step<(), UnmaskResponse>, SecAggError> {
        let statement = survivors_statement(self.inner.session(), &self.request);
        let survivors: BTreeSet<ClientId> = self.request.survivors.iter().copied().collect();
        let mut signers = BTreeSet::new();
        for (signer, signature) in &relayed.signatures {
            let signer = *signer;
            if !survivors.contains(&signer) {
                return Err(PeerMisbehaved::NotInSurvivorSet { client: signer }.into());
            }
            if !signers.insert(signer) {
                return Err(PeerMisbehaved::Duplicate { client: signer }.into());
            }
            self.identities
                .verify(signer, &statement, signature)
                .map_err(|why| match why {
                    Unverified::UnknownClient => PeerMisbehaved::UnknownIdentity { client: signer },
                    Unverified::BadSignature => PeerMisbehaved::InconsistentSurvivorSet { signer },
                })?;
        }
        let confirmed = self.inner.holders().filter(|h| signers.contains(h)).count();
        let threshold = self.inner.config().threshold;
        if confirmed < threshold {
            return Ok(Step::Abort(AbortReason::TooFewSurvivorSignatures {
                client: self.inner.id(),
                signatures: confirmed,
                threshold,
            }));
        }
        Ok(Step::Next((), self.inner.handle(self.request)?))
    }
}

/// The active client's state between messages: a dispatcher over the stage structs, for callers
/// that hold the input from the start.
#[derive(Debug)]
pub enum ActiveClientSession<L: Lane> {
    /// Waiting for the signed key directory.
    AwaitingDirectory(Box<SignedAwaitingDirectory>, Vec<L>),
    /// Waiting for the routed shares.
    AwaitingRoutedShares(SignedAwaitingRoutedShares, Vec<L>),
    /// Waiting for the unmask request, to sign it.
    AwaitingSurvivorSet(AwaitingSurvivorSet),
    /// Waiting for the survivors' signatures, to answer the request.
    AwaitingSurvivorSignatures(AwaitingSurvivorSignatures),
    /// The client has sent everything it will send.
    Done,
    /// The client stopped, revealing nothing more.
    Aborted(AbortReason),
}

impl<L: Lane> ActiveClientSession<L> {
    /// Starts a round for `input` (already quantised into `Z_{2^bits}`).
    pub fn start(
        id: ClientId,
        config: RoundConfig,
        identity: Arc<IdentityKey>,
        identities: Arc<Identities>,
        input: Vec<L>,
    ) -> Result<(Self, ActiveClientMessage<L>), SecAggError> {
        let (stage, keys) = SignedAwaitingDirectory::start::<L>(id, config, identity, identities)?;
        Ok((
            ActiveClientSession::AwaitingDirectory(Box::new(stage), input),
            ActiveClientMessage::SignedKeys(keys),
        ))
    }

    /// The message kind the current stage accepts.
    pub fn expects(&self) -> MessageKind {
        match self {
            ActiveClientSession::AwaitingDirectory(..) => MessageKind::KeyDirectory,
            ActiveClientSession::AwaitingRoutedShares(..) => MessageKind::RoutedShares,
            ActiveClientSession::AwaitingSurvivorSet(_) => MessageKind::UnmaskRequest,
            ActiveClientSession::AwaitingSurvivorSignatures(_) => MessageKind::SurvivorSignatures,
            ActiveClientSession::Done | ActiveClientSession::Aborted(_) => MessageKind::Nothing,
        }
    }

    /// Feeds one server message; returns the next state and the reply, if any.
    pub fn handle(
        self,
        msg: ActiveServerMessage,
    ) -> Result<(Self, Option<ActiveClientMessage<L>>), SecAggError> {
        use ActiveClientSession as S;
        use ActiveServerMessage as M;
        let expected = self.expects();
        Ok(match (self, msg) {
            (S::AwaitingDirectory(stage, input), M::KeyDirectory(d)) => match stage.handle(d)? {
                Step::Next(next, out) => (
                    S::AwaitingRoutedShares(next, input),
                    Some(ActiveClientMessage::EncryptedShares(out)),
                ),
                Step::Abort(reason) => (S::Aborted(reason), None),
            },
            (S::AwaitingRoutedShares(stage, input), M::RoutedShares(r)) => {
                match stage.handle(r, input)? {
                    Step::Next(next, out) => (
                        S::AwaitingSurvivorSet(next),
                        Some(ActiveClientMessage::MaskedInput(out)),
                    ),
                    Step::Abort(reason) => (S::Aborted(reason), None),
                }
            }
            (S::AwaitingSurvivorSet(stage), M::UnmaskRequest(r)) => {
                let (next, signature) = stage.handle(r)?;
                (
                    S::AwaitingSurvivorSignatures(next),
                    Some(ActiveClientMessage::SurvivorSignature(signature)),
                )
            }
            (S::AwaitingSurvivorSignatures(stage), M::SurvivorSignatures(s)) => {
                match stage.handle(s)? {
                    Step::Next((), out) => {
                        (S::Done, Some(ActiveClientMessage::UnmaskResponse(out)))
                    }
                    Step::Abort(reason) => (S::Aborted(reason), None),
                }
            }
            (_, msg) => {
                return Err(SecAggError::UnexpectedMessage {
                    expected,
                    got: msg.kind(),
                });
            }
        })
    }
}
