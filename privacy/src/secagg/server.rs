//! The server side of SecAgg+, one struct per stage.
//!
//! [`ServerSession`] only dispatches. `AwaitingKeys` → `AwaitingShares` →
//! `AwaitingMaskedInputs` → `AwaitingUnmask` → `Done` | `Aborted`. `handle` takes one client
//! message; `close` ends the stage (the caller decides when: deadline or everyone answered),
//! which freezes its survivor set and yields what to send next. Masked inputs are added into
//! one running sum on arrival and then dropped, so memory is O(dimension + clients·k), never
//! O(clients·dimension).
//!
//! Rejecting a message does not end the round: unlike a TLS connection, a round has many
//! peers, and one misbehaving client must not abort everyone's. So `handle` returns the
//! untouched session inside a [`Rejection`] together with the error, and every check runs
//! before any state changes.

use std::collections::BTreeMap;

use super::crypto::SessionId;
use super::graph::Graph;
use super::mask::{self, Lane};
use super::shamir::Share;
use super::unmask;
pub use super::unmask::ThresholdMet;
use super::{
    AbortReason, AdvertiseKeys, ClientId, ClientMessage, EncryptedShare, EncryptedShares,
    KeyDirectory, MaskedInput, MessageKind, PeerMisbehaved, RoundConfig, RoutedShares, SecAggError,
    UnmaskRequest, UnmaskResponse,
};

/// A message the server refused, with the session exactly as it was before.
#[derive(Debug)]
pub struct Rejection<L: Lane> {
    /// Why the message was refused.
    pub error: SecAggError,
    /// The unchanged session, to continue the round with.
    pub session: Box<ServerSession<L>>,
}

impl<L: Lane> From<Rejection<L>> for SecAggError {
    fn from(r: Rejection<L>) -> Self {
        r.error
    }
}

/// What the server sends after closing a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broadcast {
    /// To every client in the directory.
    KeyDirectory(KeyDirectory),
    /// One message per addressee.
    RoutedShares(Vec<RoutedShares>),
    /// To every survivor.
    UnmaskRequest(UnmaskRequest),
}

/// The unmasked sum of the surviving inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate<L> {
    /// `Σ_{u ∈ survivors} x_u mod 2^bits`.
    pub sum: Vec<L>,
    /// The clients whose inputs are in the sum, sorted.
    pub survivors: Vec<ClientId>,
}

/// The server's state: a dispatcher over the stage structs.
#[derive(Debug)]
pub enum ServerSession<L: Lane> {
    /// Collecting public keys.
    AwaitingKeys(AwaitingKeys),
    /// Collecting encrypted shares.
    AwaitingShares(AwaitingShares),
    /// Summing masked inputs.
    AwaitingMaskedInputs(AwaitingMaskedInputs<L>),
    /// Collecting shares to remove the masks.
    AwaitingUnmask(AwaitingUnmask<L>),
    /// The round produced its sum.
    Done(Aggregate<L>),
    /// The round ended without a result.
    Aborted(AbortReason),
}

/// Stage 1: collecting public keys.
#[derive(Debug)]
pub struct AwaitingKeys {
    config: RoundConfig,
    keys: BTreeMap<ClientId, AdvertiseKeys>,
}

/// What every later stage knows: the frozen directory, the session and the graph.
#[derive(Debug)]
struct Round {
    config: RoundConfig,
    session: SessionId,
    graph: Graph,
    directory: Vec<AdvertiseKeys>,
}

/// Stage 2: collecting encrypted shares (indexed by dense graph index).
#[derive(Debug)]
pub struct AwaitingShares {
    round: Round,
    inbox: Vec<Option<Vec<EncryptedShare>>>,
}

/// Stage 3: summing masked inputs.
#[derive(Debug)]
pub struct AwaitingMaskedInputs<L> {
    round: Round,
    shared: Vec<bool>,
    submitted: Vec<bool>,
    sum: Vec<L>,
}

/// Stage 4: collecting the shares that remove the masks.
#[derive(Debug)]
pub struct AwaitingUnmask<L> {
    round: Round,
    shared: Vec<bool>,
    submitted: Vec<bool>,
    sum: Vec<L>,
    responded: Vec<bool>,
    /// Per owner: shares of its self-mask seed (owner survived) or mask key (owner dropped).
    shares: Vec<Vec<Share>>,
}

fn reject<L: Lane, S: Into<ServerSession<L>>>(
    session: S,
    error: impl Into<SecAggError>,
) -> Rejection<L> {
    Rejection {
        error: error.into(),
        session: Box::new(session.into()),
    }
}

impl<L: Lane> From<AwaitingKeys> for ServerSession<L> {
    fn from(s: AwaitingKeys) -> Self {
        ServerSession::AwaitingKeys(s)
    }
}
impl<L: Lane> From<AwaitingShares> for ServerSession<L> {
    fn from(s: AwaitingShares) -> Self {
        ServerSession::AwaitingShares(s)
    }
}
impl<L: Lane> From<AwaitingMaskedInputs<L>> for ServerSession<L> {
    fn from(s: AwaitingMaskedInputs<L>) -> Self {
        ServerSession::AwaitingMaskedInputs(s)
    }
}
impl<L: Lane> From<AwaitingUnmask<L>> for ServerSession<L> {
    fn from(s: AwaitingUnmask<L>) -> Self {
        ServerSession::AwaitingUnmask(s)
    }
}

impl<L: Lane> ServerSession<L> {
    /// Opens a round.
    pub fn new(config: RoundConfig) -> Result<Self, SecAggError> {
        config.validate::<L>()?;
        Ok(ServerSession::AwaitingKeys(AwaitingKeys {
            config,
            keys: BTreeMap::new(),
        }))
    }

    /// The message kind the current stage accepts.
    pub fn expects(&self) -> MessageKind {
        match self {
            ServerSession::AwaitingKeys(_) => MessageKind::AdvertiseKeys,
            ServerSession::AwaitingShares(_) => MessageKind::EncryptedShares,
            ServerSession::AwaitingMaskedInputs(_) => MessageKind::MaskedInput,
            ServerSession::AwaitingUnmask(_) => MessageKind::UnmaskResponse,
            ServerSession::Done(_) | ServerSession::Aborted(_) => MessageKind::Nothing,
        }
    }

    /// The session id, once the key directory is frozen (`None` before, and once the round
    /// has ended).
    pub fn session_id(&self) -> Option<&SessionId> {
        match self {
            ServerSession::AwaitingShares(s) => Some(&s.round.session),
            ServerSession::AwaitingMaskedInputs(s) => Some(&s.round.session),
            ServerSession::AwaitingUnmask(s) => Some(&s.round.session),
            _ => None,
        }
    }

    /// Takes one client message. A message for another stage (a late masked input, say) is
    /// refused with `UnexpectedMessage`, leaving the session as it was.
    pub fn handle(self, msg: ClientMessage<L>) -> Result<ServerSession<L>, Rejection<L>> {
        let expected = self.expects();
        match (self, msg) {
            (ServerSession::AwaitingKeys(s), ClientMessage::AdvertiseKeys(m)) => s.handle(m),
            (ServerSession::AwaitingShares(s), ClientMessage::EncryptedShares(m)) => s.handle(m),
            (ServerSession::AwaitingMaskedInputs(s), ClientMessage::MaskedInput(m)) => s.handle(m),
            (ServerSession::AwaitingUnmask(s), ClientMessage::UnmaskResponse(m)) => s.handle(m),
            (session, msg) => Err(Rejection {
                error: SecAggError::UnexpectedMessage {
                    expected,
                    got: msg.kind(),
                },
                session: Box::new(session),
            }),
        }
    }

    /// Closes the current stage: freezes who made it, checks the round can still finish, and
    /// returns the next state with what to send. Closing the unmask stage reconstructs the
    /// secrets and removes the masks (in parallel across the machine's cores).
    pub fn close(self) -> Result<(ServerSession<L>, Option<Broadcast>), SecAggError> {
        match self {
            ServerSession::AwaitingKeys(s) => Ok(s.close()),
            ServerSession::AwaitingShares(s) => Ok(s.close()),
            ServerSession::AwaitingMaskedInputs(s) => Ok(s.close()),
            ServerSession::AwaitingUnmask(s) => s.close().map(|next| (next, None)),
            ServerSession::Done(_) | ServerSession::Aborted(_) => {
                Err(super::ApiMisuse::WrongState("the round is already over").into())
            }
        }
    }
}

impl AwaitingKeys {
    /// Records a client's keys; a second advertisement from one client is refused.
    pub fn handle<L: Lane>(mut self, m: AdvertiseKeys) -> Result<ServerSession<L>, Rejection<L>> {
        if self.keys.contains_key(&m.client) {
            let client = m.client;
            return Err(reject(self, PeerMisbehaved::Duplicate { client }));
        }
        // Low-order keys are refused by every honest client's agreement check; refusing the
        // all-zero key here as well keeps an obviously broken client out of the directory.
        if m.cipher_pk == [0; 32] || m.mask_pk == [0; 32] {
            let client = m.client;
            return Err(reject(self, PeerMisbehaved::LowOrderKey { client }));
        }
        self.keys.insert(m.client, m);
        Ok(ServerSession::AwaitingKeys(self))
    }

    /// Freezes the directory and derives the session and graph from it.
    pub fn close<L: Lane>(self) -> (ServerSession<L>, Option<Broadcast>) {
        let config = self.config;
        let directory: Vec<AdvertiseKeys> = self.keys.into_values().collect();
        let needed = config.threshold + 1;
        if directory.len() < needed {
            return (
                ServerSession::Aborted(AbortReason::TooFewClients {
                    alive: directory.len(),
                    needed,
                }),
                None,
            );
        }
        let session = SessionId::compute(
            config.round,
            &config.session_params(),
            directory.iter().map(|e| (e.client, e.cipher_pk, e.mask_pk)),
        );
        let ids = directory.iter().map(|e| e.client).collect();
        let graph = Graph::harary(ids, config.neighbours, session.derive(b"graph"));
        let broadcast = KeyDirectory {
            round: config.round,
            entries: directory.clone(),
        };
        let inbox = vec![None; graph.len()];
        let round = Round {
            config,
            session,
            graph,
            directory,
        };
        (
            ServerSession::AwaitingShares(AwaitingShares { round, inbox }),
            Some(Broadcast::KeyDirectory(broadcast)),
        )
    }
}

/// Live holders of client `u`'s shares: its neighbours with `alive` set.
fn live_holders(graph: &Graph, alive: &[bool], u: usize) -> usize {
    graph
        .neighbours(u)
        .iter()
        .filter(|&&v| alive[v as usize])
        .count()
}

/// The first client in `needs` with fewer than `t` live holders, as an abort reason.
fn holder_shortfall(round: &Round, needs: &[bool], alive: &[bool]) -> Option<AbortReason> {
    let t = round.config.threshold;
    (0..round.graph.len()).filter(|&u| needs[u]).find_map(|u| {
        let holders = live_holders(&round.graph, alive, u);
        (holders < t).then(|| AbortReason::TooFewShareHolders {
            client: round.graph.ids()[u],
            holders,
            threshold: t,
        })
    })
}

impl AwaitingShares {
    /// Stores one client's ciphertexts: exactly one per neighbour, all from the sender.
    pub fn handle<L: Lane>(mut self, m: EncryptedShares) -> Result<ServerSession<L>, Rejection<L>> {
        let from = m.from;
        let Some(u) = self.round.graph.index_of(from) else {
            return Err(reject(
                self,
                PeerMisbehaved::NotInSurvivorSet { client: from },
            ));
        };
        if self.inbox[u].is_some() {
            return Err(reject(self, PeerMisbehaved::Duplicate { client: from }));
        }
        let neighbours = self.round.graph.neighbours(u);
        let mut targets: Vec<u32> = Vec::with_capacity(m.shares.len());
        for share in &m.shares {
            match self.round.graph.index_of(share.to) {
                Some(v) if share.from == from && neighbours.binary_search(&(v as u32)).is_ok() => {
                    targets.push(v as u32)
                }
                _ => {
                    let to = share.to;
                    return Err(reject(self, PeerMisbehaved::NotNeighbours { from, to }));
                }
            }
        }
        targets.sort_unstable();
        if targets != neighbours {
            return Err(reject(self, PeerMisbehaved::Duplicate { client: from }));
        }
        self.inbox[u] = Some(m.shares);
        Ok(ServerSession::AwaitingShares(self))
    }

    /// Freezes the set of clients that shared (U2) and routes each its ciphertexts.
    pub fn close<L: Lane>(self) -> (ServerSession<L>, Option<Broadcast>) {
        let AwaitingShares { round, inbox } = self;
        let shared: Vec<bool> = inbox.iter().map(Option::is_some).collect();
        if let Some(reason) = holder_shortfall(&round, &shared, &shared) {
            return (ServerSession::Aborted(reason), None);
        }
        let mut routed: Vec<RoutedShares> = round
            .graph
            .ids()
            .iter()
            .map(|&to| RoutedShares {
                to,
                shares: Vec::new(),
            })
            .collect();
        for share in inbox.into_iter().flatten().flatten() {
            if let Some(v) = round.graph.index_of(share.to).filter(|&v| shared[v]) {
                routed[v].shares.push(share);
            }
        }
        let routed = routed
            .into_iter()
            .zip(&shared)
            .filter(|(_, s)| **s)
            .map(|(r, _)| r)
            .collect();
        let n = round.graph.len();
        let sum = vec![L::default(); round.config.dimension];
        let next = AwaitingMaskedInputs {
            round,
            shared,
            submitted: vec![false; n],
            sum,
        };
        (
            ServerSession::AwaitingMaskedInputs(next),
            Some(Broadcast::RoutedShares(routed)),
        )
    }
}

impl<L: Lane> AwaitingMaskedInputs<L> {
    /// Adds one masked input into the running sum, then drops it.
    pub fn handle(mut self, m: MaskedInput<L>) -> Result<ServerSession<L>, Rejection<L>> {
        let from = m.from;
        let u = match self.round.graph.index_of(from) {
            Some(u) if self.shared[u] => u,
            _ => {
                return Err(reject(
                    self,
                    PeerMisbehaved::NotInSurvivorSet { client: from },
                ));
            }
        };
        if self.submitted[u] {
            return Err(reject(self, PeerMisbehaved::Duplicate { client: from }));
        }
        let expected = self.round.config.dimension;
        if m.vector.len() != expected {
            let got = m.vector.len();
            return Err(reject(
                self,
                PeerMisbehaved::WrongLength {
                    client: from,
                    expected,
                    got,
                },
            ));
        }
        // A concrete loop compiled here: a generic one would be compiled, unoptimised, in
        // whichever debug-build crate instantiates the session (the server, the bench).
        mask::add_into(&mut self.sum, &m.vector);
        self.submitted[u] = true;
        Ok(ServerSession::AwaitingMaskedInputs(self))
    }

    /// Freezes the survivors (U3): later inputs are refused. Asks them for the shares.
    pub fn close(self) -> (ServerSession<L>, Option<Broadcast>) {
        let AwaitingMaskedInputs {
            round,
            shared,
            submitted,
            sum,
        } = self;
        if let Some(reason) = holder_shortfall(&round, &shared, &submitted) {
            return (ServerSession::Aborted(reason), None);
        }
        let ids = round.graph.ids();
        let request = UnmaskRequest {
            survivors: (0..ids.len())
                .filter(|&u| submitted[u])
                .map(|u| ids[u])
                .collect(),
            dropped: (0..ids.len())
                .filter(|&u| shared[u] && !submitted[u])
                .map(|u| ids[u])
                .collect(),
        };
        let n = ids.len();
        let next = AwaitingUnmask {
            round,
            shared,
            submitted,
            sum,
            responded: vec![false; n],
            shares: vec![Vec::new(); n],
        };
        (
            ServerSession::AwaitingUnmask(next),
            Some(Broadcast::UnmaskRequest(request)),
        )
    }
}

impl<L: Lane> AwaitingUnmask<L> {
    /// Records one survivor's shares after checking each is one the server asked it for.
    pub fn handle(mut self, m: UnmaskResponse) -> Result<ServerSession<L>, Rejection<L>> {
        let from = m.from;
        let v = match self.round.graph.index_of(from) {
            Some(v) if self.submitted[v] => v,
            _ => {
                return Err(reject(
                    self,
                    PeerMisbehaved::NotInSurvivorSet { client: from },
                ));
            }
        };
        if self.responded[v] {
            return Err(reject(self, PeerMisbehaved::Duplicate { client: from }));
        }
        let x = u64::from(from) + 1;
        let mut accepted = Vec::with_capacity(m.self_mask_shares.len() + m.mask_key_shares.len());
        let wanted = m
            .self_mask_shares
            .into_iter()
            .map(|s| (s, true))
            .chain(m.mask_key_shares.into_iter().map(|s| (s, false)));
        for ((owner, share), owner_survived) in wanted {
            let valid = self.round.graph.index_of(owner).filter(|&u| {
                self.round.graph.are_neighbours(u, v)
                    && self.shared[u]
                    && self.submitted[u] == owner_survived
                    && !accepted.iter().any(|(w, _)| *w == u)
            });
            match valid {
                Some(_) if share.x != x => {
                    return Err(reject(self, PeerMisbehaved::BadShare { holder: from }));
                }
                Some(u) => accepted.push((u, share)),
                None => {
                    return Err(reject(
                        self,
                        PeerMisbehaved::NotNeighbours {
                            from: owner,
                            to: from,
                        },
                    ));
                }
            }
        }
        for (u, share) in accepted {
            self.shares[u].push(share);
        }
        self.responded[v] = true;
        Ok(ServerSession::AwaitingUnmask(self))
    }

    /// Checks every needed secret has `t` shares (creating the [`ThresholdMet`] witness), then
    /// reconstructs and removes the masks; aborts if some client has too few live holders.
    pub fn close(self) -> Result<ServerSession<L>, SecAggError> {
        let needs: Vec<bool> = self.shared.clone();
        match unmask::check_threshold(
            &self.round.graph,
            &needs,
            &self.shares,
            self.round.config.threshold,
        ) {
            Err(reason) => Ok(ServerSession::Aborted(reason)),
            Ok(witness) => self.unmask(witness).map(ServerSession::Done),
        }
    }

    fn unmask(self, witness: ThresholdMet) -> Result<Aggregate<L>, SecAggError> {
        let AwaitingUnmask {
            round,
            shared,
            submitted,
            mut sum,
            shares,
            ..
        } = self;
        let plan = unmask::Plan {
            config: &round.config,
            session: &round.session,
            graph: &round.graph,
            directory: &round.directory,
            shared: &shared,
            submitted: &submitted,
            shares: &shares,
        };
        unmask::remove_masks(witness, &plan, &mut sum)?;
        let ids = round.graph.ids();
        let survivors = (0..ids.len())
            .filter(|&u| submitted[u])
            .map(|u| ids[u])
            .collect();
        Ok(Aggregate { sum, survivors })
    }
}
