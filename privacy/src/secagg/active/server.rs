//! The server side of the active mode: the plain server session inside, with key signatures
//! checked on arrival (so only signed keys reach the directory) and a consistency stage
//! between the unmask request and the shares.
//!
//! `AwaitingKeys` → `Relaying` (shares, then masked inputs) → `AwaitingSurvivorSignatures` →
//! `AwaitingUnmask` → `Done` | `Aborted`. As in the plain server, a refused message hands the
//! untouched session back inside an [`ActiveRejection`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::super::mask::Lane;
use super::super::server::{Aggregate, Broadcast, Rejection, ServerSession};
use super::{
    ActiveClientMessage, Identities, SignatureBytes, SignedDirectory, SignedKeys,
    SurvivorSignature, SurvivorSignatures, Unverified, survivors_statement, verify_keys,
};
use crate::secagg::{
    AbortReason, ApiMisuse, ClientId, ClientMessage, MessageKind, PeerMisbehaved, RoundConfig,
    RoutedShares, SecAggError, UnmaskRequest, UnmaskResponse,
};

/// A message the active server refused, with the session exactly as it was before.
#[derive(Debug)]
pub struct ActiveRejection<L: Lane> {
    /// Why the message was refused.
    pub error: SecAggError,
    /// The unchanged session, to continue the round with.
    pub session: Box<ActiveServerSession<L>>,
}

impl<L: Lane> From<ActiveRejection<L>> for SecAggError {
    fn from(r: ActiveRejection<L>) -> Self {
        r.error
    }
}

/// What the active server sends after closing a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveBroadcast {
    /// To every client in the directory.
    KeyDirectory(SignedDirectory),
    /// One message per addressee.
    RoutedShares(Vec<RoutedShares>),
    /// To every survivor, to be signed.
    UnmaskRequest(UnmaskRequest),
    /// To every survivor that signed: the signatures; the shares may now be revealed.
    SurvivorSignatures(SurvivorSignatures),
}

/// The active server's state: a dispatcher over the stages.
#[derive(Debug)]
pub enum ActiveServerSession<L: Lane> {
    /// Collecting signed keys.
    AwaitingKeys(KeysStage<L>),
    /// Collecting shares, then masked inputs: the plain session does every check.
    Relaying(Relay<L>),
    /// Collecting the survivors' signatures over the unmask request.
    AwaitingSurvivorSignatures(SignatureStage<L>),
    /// Collecting the shares from survivors that signed.
    AwaitingUnmask(UnmaskStage<L>),
    /// The round produced its sum.
    Done(Aggregate<L>),
    /// The round ended without a result.
    Aborted(AbortReason),
}

/// Stage 1: keys are admitted only with a valid signature by their owner.
#[derive(Debug)]
pub struct KeysStage<L: Lane> {
    inner: ServerSession<L>,
    config: RoundConfig,
    identities: Arc<Identities>,
    signatures: BTreeMap<ClientId, SignatureBytes>,
}

/// Stages 2 and 3, unchanged from the plain protocol.
#[derive(Debug)]
pub struct Relay<L: Lane> {
    inner: ServerSession<L>,
    identities: Arc<Identities>,
}

/// The consistency check: survivors sign the unmask request they were sent.
#[derive(Debug)]
pub struct SignatureStage<L: Lane> {
    inner: ServerSession<L>,
    identities: Arc<Identities>,
    survivors: BTreeSet<ClientId>,
    statement: Vec<u8>,
    signatures: BTreeMap<ClientId, SignatureBytes>,
}

/// Stage 4: only survivors that signed may answer.
#[derive(Debug)]
pub struct UnmaskStage<L: Lane> {
    inner: ServerSession<L>,
    signers: BTreeSet<ClientId>,
}

impl<L: Lane> ActiveServerSession<L> {
    /// Opens a round whose clients' identity keys are in `identities`.
    pub fn new(config: RoundConfig, identities: Arc<Identities>) -> Result<Self, SecAggError> {
        Ok(ActiveServerSession::AwaitingKeys(KeysStage {
            inner: ServerSession::new(config)?,
            config,
            identities,
            signatures: BTreeMap::new(),
        }))
    }

    /// The message kind the current stage accepts.
    pub fn expects(&self) -> MessageKind {
        match self {
            ActiveServerSession::AwaitingKeys(_) => MessageKind::AdvertiseKeys,
            ActiveServerSession::Relaying(r) => r.inner.expects(),
            ActiveServerSession::AwaitingSurvivorSignatures(_) => MessageKind::SurvivorSignature,
            ActiveServerSession::AwaitingUnmask(_) => MessageKind::UnmaskResponse,
            ActiveServerSession::Done(_) | ActiveServerSession::Aborted(_) => MessageKind::Nothing,
        }
    }

    /// Takes one client message; a refused one leaves the session as it was.
    pub fn handle(self, msg: ActiveClientMessage<L>) -> Result<Self, ActiveRejection<L>> {
        use ActiveClientMessage as M;
        use ActiveServerSession as S;
        let expected = self.expects();
        match (self, msg) {
            (S::AwaitingKeys(s), M::SignedKeys(m)) => s.handle(m),
            (S::Relaying(s), M::EncryptedShares(m)) => s.handle(ClientMessage::EncryptedShares(m)),
            (S::Relaying(s), M::MaskedInput(m)) => s.handle(ClientMessage::MaskedInput(m)),
            (S::AwaitingSurvivorSignatures(s), M::SurvivorSignature(m)) => s.handle(m),
            (S::AwaitingUnmask(s), M::UnmaskResponse(m)) => s.handle(m),
            (session, msg) => Err(ActiveRejection {
                error: SecAggError::UnexpectedMessage {
                    expected,
                    got: msg.kind(),
                },
                session: Box::new(session),
            }),
        }
    }

    /// Closes the current stage and returns the next state with what to send.
    pub fn close(self) -> Result<(Self, Option<ActiveBroadcast>), SecAggError> {
        match self {
            ActiveServerSession::AwaitingKeys(s) => s.close(),
            ActiveServerSession::Relaying(s) => s.close(),
            ActiveServerSession::AwaitingSurvivorSignatures(s) => Ok(s.close()),
            ActiveServerSession::AwaitingUnmask(s) => s.close(),
            ActiveServerSession::Done(_) | ActiveServerSession::Aborted(_) => {
                Err(ApiMisuse::WrongState("the round is already over").into())
            }
        }
    }
}

/// Re-wraps a plain rejection: the plain session goes back into the same active stage.
fn rewrap<L: Lane>(
    rejection: Rejection<L>,
    rebuild: impl FnOnce(ServerSession<L>) -> ActiveServerSession<L>,
) -> ActiveRejection<L> {
    ActiveRejection {
        error: rejection.error,
        session: Box::new(rebuild(*rejection.session)),
    }
}

fn refuse<L: Lane>(
    session: ActiveServerSession<L>,
    error: impl Into<SecAggError>,
) -> ActiveRejection<L> {
    ActiveRejection {
        error: error.into(),
        session: Box::new(session),
    }
}

/// The plain session's state after a close, mapped onto the active stages.
fn after_close<L: Lane>(
    next: ServerSession<L>,
    identities: Arc<Identities>,
) -> ActiveServerSession<L> {
    match next {
        ServerSession::Aborted(reason) => ActiveServerSession::Aborted(reason),
        ServerSession::Done(aggregate) => ActiveServerSession::Done(aggregate),
        inner => ActiveServerSession::Relaying(Relay { inner, identities }),
    }
}

impl<L: Lane> KeysStage<L> {
    fn handle(self, m: SignedKeys) -> Result<ActiveServerSession<L>, ActiveRejection<L>> {
        if let Err(why) = verify_keys(&self.identities, &self.config, &m) {
            return Err(refuse(ActiveServerSession::AwaitingKeys(self), why));
        }
        let KeysStage {
            inner,
            config,
            identities,
            mut signatures,
        } = self;
        let client = m.keys.client;
        let rebuild = |inner| {
            ActiveServerSession::AwaitingKeys(KeysStage {
                inner,
                config,
                identities: identities.clone(),
                signatures: signatures.clone(),
            })
        };
        match inner.handle(ClientMessage::AdvertiseKeys(m.keys)) {
            Err(rejection) => Err(rewrap(rejection, rebuild)),
            Ok(inner) => {
                signatures.insert(client, m.signature);
                Ok(ActiveServerSession::AwaitingKeys(KeysStage {
                    inner,
                    config,
                    identities,
                    signatures,
                }))
            }
        }
    }

    fn close(self) -> Result<(ActiveServerSession<L>, Option<ActiveBroadcast>), SecAggError> {
        let (next, out) = self.inner.close()?;
        let next = after_close(next, self.identities);
        let Some(Broadcast::KeyDirectory(directory)) = out else {
            return Ok((next, None));
        };
        let signatures = directory
            .entries
            .iter()
            .map(|e| {
                self.signatures
                    .get(&e.client)
                    .copied()
                    .ok_or(ApiMisuse::WrongState("a directory entry has no signature"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            next,
            Some(ActiveBroadcast::KeyDirectory(SignedDirectory {
                directory,
                signatures,
            })),
        ))
    }
}

impl<L: Lane> Relay<L> {
    fn handle(self, m: ClientMessage<L>) -> Result<ActiveServerSession<L>, ActiveRejection<L>> {
        let Relay { inner, identities } = self;
        match inner.handle(m) {
            Ok(inner) => Ok(ActiveServerSession::Relaying(Relay { inner, identities })),
            Err(rejection) => Err(rewrap(rejection, |inner| {
                ActiveServerSession::Relaying(Relay { inner, identities })
            })),
        }
    }

    fn close(self) -> Result<(ActiveServerSession<L>, Option<ActiveBroadcast>), SecAggError> {
        let (next, out) = self.inner.close()?;
        match out {
            Some(Broadcast::RoutedShares(routed)) => Ok((
                after_close(next, self.identities),
                Some(ActiveBroadcast::RoutedShares(routed)),
            )),
            Some(Broadcast::UnmaskRequest(request)) => {
                let session = next
                    .session_id()
                    .ok_or(ApiMisuse::WrongState("no session after the masked inputs"))?;
                let stage = SignatureStage {
                    statement: survivors_statement(session, &request),
                    survivors: request.survivors.iter().copied().collect(),
                    inner: next,
                    identities: self.identities,
                    signatures: BTreeMap::new(),
                };
                Ok((
                    ActiveServerSession::AwaitingSurvivorSignatures(stage),
                    Some(ActiveBroadcast::UnmaskRequest(request)),
                ))
            }
            _ => Ok((after_close(next, self.identities), None)),
        }
    }
}

impl<L: Lane> SignatureStage<L> {
    fn handle(
        mut self,
        m: SurvivorSignature,
    ) -> Result<ActiveServerSession<L>, ActiveRejection<L>> {
        let from = m.from;
        let error: Option<PeerMisbehaved> = if !self.survivors.contains(&from) {
            Some(PeerMisbehaved::NotInSurvivorSet { client: from })
        } else if self.signatures.contains_key(&from) {
            Some(PeerMisbehaved::Duplicate { client: from })
        } else {
            match self.identities.verify(from, &self.statement, &m.signature) {
                Ok(()) => None,
                Err(Unverified::UnknownClient) => {
                    Some(PeerMisbehaved::UnknownIdentity { client: from })
                }
                // The client signed some other request than the one it was sent.
                Err(Unverified::BadSignature) => {
                    Some(PeerMisbehaved::InconsistentSurvivorSet { signer: from })
                }
            }
        };
        if let Some(error) = error {
            return Err(refuse(
                ActiveServerSession::AwaitingSurvivorSignatures(self),
                error,
            ));
        }
        self.signatures.insert(from, m.signature);
        Ok(ActiveServerSession::AwaitingSurvivorSignatures(self))
    }

    /// Freezes the signers; they alone are sent the signatures and may answer. Whether each
    /// has `t` signing holders is for the clients to check and for the unmask stage's
    /// threshold check to feel.
    fn close(self) -> (ActiveServerSession<L>, Option<ActiveBroadcast>) {
        let signers = self.signatures.keys().copied().collect();
        let relayed = SurvivorSignatures {
            signatures: self.signatures.into_iter().collect(),
        };
        (
            ActiveServerSession::AwaitingUnmask(UnmaskStage {
                inner: self.inner,
                signers,
            }),
            Some(ActiveBroadcast::SurvivorSignatures(relayed)),
        )
    }
}

impl<L: Lane> UnmaskStage<L> {
    fn handle(self, m: UnmaskResponse) -> Result<ActiveServerSession<L>, ActiveRejection<L>> {
        if !self.signers.contains(&m.from) {
            let client = m.from;
            return Err(refuse(
                ActiveServerSession::AwaitingUnmask(self),
                PeerMisbehaved::NotInSurvivorSet { client },
            ));
        }
        let UnmaskStage { inner, signers } = self;
        match inner.handle(ClientMessage::UnmaskResponse(m)) {
            Ok(inner) => Ok(ActiveServerSession::AwaitingUnmask(UnmaskStage {
                inner,
                signers,
            })),
            Err(rejection) => Err(rewrap(rejection, |inner| {
                ActiveServerSession::AwaitingUnmask(UnmaskStage { inner, signers })
            })),
        }
    }

    fn close(self) -> Result<(ActiveServerSession<L>, Option<ActiveBroadcast>), SecAggError> {
        let (next, _) = self.inner.close()?;
        match next {
            ServerSession::Done(aggregate) => Ok((ActiveServerSession::Done(aggregate), None)),
            ServerSession::Aborted(reason) => Ok((ActiveServerSession::Aborted(reason), None)),
            _ => Err(ApiMisuse::WrongState("the unmask stage did not finish").into()),
        }
    }
}
