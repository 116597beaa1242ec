//! The client side of SecAgg+, one struct per stage.
//!
//! `AwaitingDirectory` → `AwaitingRoutedShares` → `AwaitingInput` → `AwaitingUnmask` → done.
//! Each stage's `handle` consumes the stage and returns the next one with the message to send,
//! or an abort. The input enters only at [`AwaitingInput::mask`]: stages 1–2 (keys and shares)
//! do not depend on it, so a participant runs them before or while it trains, and the types
//! make it impossible to hold an input before the session is ready to mask it.
//! Every check an honest client owes the protocol sits in these transitions: its own keys in the
//! directory, non-contributory keys, authenticated shares, at least `t` live share holders,
//! and never both shares of one peer.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::{ChaCha20Rng, SysRng};
use zeroize::{Zeroize, Zeroizing};

use super::crypto::{self, SecretKey, SessionId, SharePair};
use super::graph::Graph;
use super::mask::{self, Lane, MaskKind, Sign};
use super::shamir;
use super::{
    AbortReason, AdvertiseKeys, ApiMisuse, ClientId, ClientMessage, EncryptedShare,
    EncryptedShares, KeyDirectory, MaskedInput, MessageKind, PeerMisbehaved, RoundConfig,
    RoutedShares, SecAggError, ServerMessage, UnmaskRequest, UnmaskResponse,
};

/// What a stage transition leads to: the next stage and the message to send, or an abort.
#[derive(Debug)]
pub enum Step<S, M> {
    /// Continue with stage `S` after sending `M` to the server.
    Next(S, M),
    /// The round cannot complete safely; nothing more is sent.
    Abort(AbortReason),
}

/// Stage 1 done: keys advertised, waiting for the key directory.
#[derive(Debug)]
pub struct AwaitingDirectory {
    id: ClientId,
    config: RoundConfig,
    cipher_sk: SecretKey,
    mask_sk: SecretKey,
    self_seed: Zeroizing<[u8; 32]>,
    rng: ChaCha20Rng,
}

/// Stage 2 done: shares sent, waiting for the shares addressed to this client.
#[derive(Debug)]
pub struct AwaitingRoutedShares {
    id: ClientId,
    config: RoundConfig,
    session: SessionId,
    self_seed: Zeroizing<[u8; 32]>,
    peers: BTreeMap<ClientId, PeerSecrets>,
}

/// What a client shares with one neighbour; both zeroized on drop.
#[derive(Debug)]
struct PeerSecrets {
    /// X25519 agreement of the cipher keys, from which the share-encryption key is derived.
    cipher_key: Zeroizing<[u8; 32]>,
    /// The pairwise mask seed.
    mask_seed: Zeroizing<[u8; 32]>,
}

/// Stage 2 closed: the shares addressed to this client are authenticated and held, and at
/// least `t` neighbours hold this client's secrets. Waiting for the input to mask (the trained,
/// encoded update); dropping this stage instead (training failed) zeroizes every secret.
#[derive(Debug)]
pub struct AwaitingInput {
    id: ClientId,
    config: RoundConfig,
    session: SessionId,
    self_seed: Zeroizing<[u8; 32]>,
    /// The pairwise seeds of exactly the neighbours in `held` (those that reached stage 3).
    mask_seeds: BTreeMap<ClientId, Zeroizing<[u8; 32]>>,
    held: BTreeMap<ClientId, SharePair>,
}

/// Stage 3 done: masked input sent, holding the neighbours' shares until the unmask request.
#[derive(Debug)]
pub struct AwaitingUnmask {
    id: ClientId,
    config: RoundConfig,
    session: SessionId,
    held: BTreeMap<ClientId, SharePair>,
}

impl AwaitingDirectory {
    /// Starts a round: draws fresh keys and the self-mask seed from the operating system's
    /// generator, and returns the keys to advertise.
    pub fn start<L: Lane>(
        id: ClientId,
        config: RoundConfig,
    ) -> Result<(Self, AdvertiseKeys), SecAggError> {
        let mut rng = ChaCha20Rng::try_from_rng(&mut SysRng)
            .map_err(|_| SecAggError::ApiMisuse(ApiMisuse::RandomnessUnavailable))?;
        Self::start_with_rng::<L>(id, config, &mut rng)
    }

    /// As [`start`](Self::start), seeding the client's generator from `rng` (tests and
    /// reproducible simulations; production code should use `start`).
    pub fn start_with_rng<L: Lane>(
        id: ClientId,
        config: RoundConfig,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<(Self, AdvertiseKeys), SecAggError> {
        config.validate::<L>()?;
        let mut rng = ChaCha20Rng::from_rng(rng);
        let cipher_sk = SecretKey::generate(&mut rng);
        let mask_sk = SecretKey::generate(&mut rng);
        let mut self_seed = Zeroizing::new([0u8; 32]);
        rand::Rng::fill_bytes(&mut rng, &mut self_seed[..]);
        let keys = AdvertiseKeys {
            client: id,
            cipher_pk: cipher_sk.public(),
            mask_pk: mask_sk.public(),
        };
        Ok((
            AwaitingDirectory {
                id,
                config,
                cipher_sk,
                mask_sk,
                self_seed,
                rng,
            },
            keys,
        ))
    }

    /// Checks the directory, derives the session and graph, and shares the self-mask seed and
    /// the mask secret key among the neighbours.
    pub fn handle(
        mut self,
        directory: KeyDirectory,
    ) -> Result<Step<AwaitingRoutedShares, EncryptedShares>, SecAggError> {
        let bad = |why| SecAggError::PeerMisbehaved(PeerMisbehaved::BadDirectory(why));
        if directory.round != self.config.round {
            return Err(bad("the directory is for another round"));
        }
        if directory
            .entries
            .windows(2)
            .any(|w| w[0].client >= w[1].client)
        {
            return Err(bad("entries are not sorted by distinct client id"));
        }
        let own = AdvertiseKeys {
            client: self.id,
            cipher_pk: self.cipher_sk.public(),
            mask_pk: self.mask_sk.public(),
        };
        if !directory.entries.contains(&own) {
            return Err(bad("this client's own keys are missing or altered"));
        }
        let session = SessionId::compute(
            self.config.round,
            &self.config.session_params(),
            directory
                .entries
                .iter()
                .map(|e| (e.client, e.cipher_pk, e.mask_pk)),
        );
        let ids: Vec<ClientId> = directory.entries.iter().map(|e| e.client).collect();
        let graph = Graph::harary(ids, self.config.neighbours, session.derive(b"graph"));
        let me = graph
            .index_of(self.id)
            .ok_or(bad("this client is missing"))?;
        let neighbours = graph.neighbours(me);
        if neighbours.len() < self.config.threshold {
            return Ok(Step::Abort(AbortReason::TooFewShareHolders {
                client: self.id,
                holders: neighbours.len(),
                threshold: self.config.threshold,
            }));
        }

        let mut peers = BTreeMap::new();
        for &j in neighbours {
            let entry = &directory.entries[j as usize];
            let low_order = || PeerMisbehaved::LowOrderKey {
                client: entry.client,
            };
            let cipher_key = self
                .cipher_sk
                .agree(&entry.cipher_pk)
                .ok_or_else(low_order)?;
            let mask_shared = self.mask_sk.agree(&entry.mask_pk).ok_or_else(low_order)?;
            let seed = crypto::pairwise_seed(&mask_shared, &session, self.id, entry.client);
            peers.insert(
                entry.client,
                PeerSecrets {
                    cipher_key,
                    mask_seed: seed,
                },
            );
        }

        let holders: Vec<ClientId> = peers.keys().copied().collect();
        let xs: Vec<u64> = holders.iter().map(|&h| u64::from(h) + 1).collect();
        let t = self.config.threshold;
        let share_err =
            |_| SecAggError::InvalidConfig("cannot Shamir-share among these neighbours".into());
        let seed_shares =
            shamir::split_secret(&self.self_seed, t, &xs, &mut self.rng).map_err(share_err)?;
        let key_shares = shamir::split_secret(&self.mask_sk.to_bytes(), t, &xs, &mut self.rng)
            .map_err(share_err)?;
        let shares = holders
            .iter()
            .zip(seed_shares.into_iter().zip(key_shares))
            .map(|(&to, (self_mask, mask_key))| {
                let pair = SharePair {
                    self_mask,
                    mask_key,
                };
                let ciphertext = crypto::encrypt_shares(
                    &peers[&to].cipher_key,
                    &session,
                    self.config.round,
                    self.id,
                    to,
                    &pair,
                );
                EncryptedShare {
                    from: self.id,
                    to,
                    ciphertext,
                }
            })
            .collect();
        let next = AwaitingRoutedShares {
            id: self.id,
            config: self.config,
            session,
            self_seed: self.self_seed,
            peers,
        };
        Ok(Step::Next(
            next,
            EncryptedShares {
                from: self.id,
                shares,
            },
        ))
        // The secret keys drop (and zeroize) here: the mask key survives only as shares.
    }
}

impl AwaitingRoutedShares {
    /// Authenticates the shares addressed to this client, then masks `input` in place: the
    /// returned message owns the very same buffer, now holding
    /// `x + PRG(b) + Σ_{v > u} PRG(s_uv) − Σ_{v < u} PRG(s_uv) mod 2^bits`.
    /// [`receive`](Self::receive) then [`AwaitingInput::mask`], for callers that already hold
    /// the input; `input` is zeroized if the round aborts or fails here.
    pub fn handle<L: Lane>(
        self,
        routed: RoutedShares,
        mut input: Vec<L>,
    ) -> Result<Step<AwaitingUnmask, MaskedInput<L>>, SecAggError> {
        match self.receive(routed) {
            Ok(Step::Next(ready, ())) => ready.mask(input).map(|(next, msg)| Step::Next(next, msg)),
            Ok(Step::Abort(reason)) => {
                input.zeroize();
                Ok(Step::Abort(reason))
            }
            Err(e) => {
                input.zeroize();
                Err(e)
            }
        }
    }

    /// Authenticates the shares addressed to this client and checks that at least `t`
    /// neighbours hold its secrets; the result waits for the input to mask.
    pub fn receive(self, routed: RoutedShares) -> Result<Step<AwaitingInput, ()>, SecAggError> {
        if routed.to != self.id {
            return Err(PeerMisbehaved::NotNeighbours {
                from: self.id,
                to: routed.to,
            }
            .into());
        }
        let mut held = BTreeMap::new();
        for share in &routed.shares {
            let from = share.from;
            let Some(PeerSecrets { cipher_key, .. }) = self.peers.get(&from) else {
                return Err(PeerMisbehaved::NotNeighbours { from, to: self.id }.into());
            };
            if share.to != self.id {
                return Err(PeerMisbehaved::NotNeighbours { from, to: share.to }.into());
            }
            let pair = crypto::decrypt_shares(
                cipher_key,
                &self.session,
                self.config.round,
                from,
                self.id,
                &share.ciphertext,
            )
            .ok_or(PeerMisbehaved::DecryptionFailed { from })?;
            let my_x = u64::from(self.id) + 1;
            if pair.self_mask.x != my_x || pair.mask_key.x != my_x {
                return Err(PeerMisbehaved::BadShare { holder: self.id }.into());
            }
            if held.insert(from, pair).is_some() {
                return Err(PeerMisbehaved::Duplicate { client: from }.into());
            }
        }
        // This client's own secrets are held by exactly the neighbours that reached stage 3
        // with it: those whose shares were routed here.
        if held.len() < self.config.threshold {
            return Ok(Step::Abort(AbortReason::TooFewShareHolders {
                client: self.id,
                holders: held.len(),
                threshold: self.config.threshold,
            }));
        }
        let mut peers = self.peers;
        let mask_seeds = held
            .keys()
            .filter_map(|id| peers.remove(id).map(|p| (*id, p.mask_seed)))
            .collect();
        Ok(Step::Next(
            AwaitingInput {
                id: self.id,
                config: self.config,
                session: self.session,
                self_seed: self.self_seed,
                mask_seeds,
                held,
            },
            (),
        ))
        // The other neighbours' secrets (cipher keys, seeds of peers that dropped) zeroize here.
    }
}

impl AwaitingInput {
    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The round's parameters (the input must have `config().dimension` values below
    /// `2^config().bits`).
    pub fn config(&self) -> &RoundConfig {
        &self.config
    }

    /// Masks `input` (already quantised into `Z_{2^bits}`) in place: the returned message owns
    /// the very same buffer, now holding
    /// `x + PRG(b) + Σ_{v > u} PRG(s_uv) − Σ_{v < u} PRG(s_uv) mod 2^bits`.
    /// A wrong length or an out-of-range value is the caller's error; `input` is zeroized then.
    pub fn mask<L: Lane>(
        self,
        mut input: Vec<L>,
    ) -> Result<(AwaitingUnmask, MaskedInput<L>), SecAggError> {
        let misuse = if input.len() != self.config.dimension {
            Some(ApiMisuse::InputLength {
                expected: self.config.dimension,
                got: input.len(),
            })
        } else {
            mask::first_out_of_range(&input, self.config.bits)
                .map(|index| ApiMisuse::InputOutOfRange { index })
        };
        if let Some(e) = misuse {
            input.zeroize();
            return Err(e.into());
        }
        let prg = self.config.mask_prg;
        mask::apply_mask(
            &self.self_seed,
            prg,
            MaskKind::SelfMask,
            Sign::Add,
            0,
            &mut input,
        );
        for (peer, seed) in &self.mask_seeds {
            let sign = if self.id < *peer {
                Sign::Add
            } else {
                Sign::Sub
            };
            mask::apply_mask(seed, prg, MaskKind::Pairwise, sign, 0, &mut input);
        }
        mask::reduce_all(&mut input, self.config.bits);
        Ok((
            AwaitingUnmask {
                id: self.id,
                config: self.config,
                session: self.session,
                held: self.held,
            },
            MaskedInput {
                from: self.id,
                vector: input,
            },
        ))
        // The self-mask seed and the pairwise seeds zeroize here.
    }
}

impl AwaitingUnmask {
    #[cfg(test)]
    pub(crate) fn held_for_tests(&self) -> &BTreeMap<ClientId, SharePair> {
        &self.held
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The session this client derived from the key directory (what its signatures bind to).
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// The round's parameters.
    pub fn config(&self) -> &RoundConfig {
        &self.config
    }

    /// The neighbours whose shares this client holds: exactly those that reached stage 3.
    pub fn holders(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.held.keys().copied()
    }

    /// Checks an unmask request without answering it: every check [`handle`](Self::handle)
    /// makes, so the active mode can sign the survivor set only once it is acceptable.
    pub fn check(&self, request: &UnmaskRequest) -> Result<(), SecAggError> {
        self.classify(request).map(|_| ())
    }

    /// Who the request says survived (`true`) or dropped (`false`), after refusing any request
    /// that names a peer twice, omits this client, or lists fewer survivors than `t`.
    fn classify(&self, request: &UnmaskRequest) -> Result<BTreeMap<ClientId, bool>, SecAggError> {
        let mut seen = BTreeMap::new();
        for (&id, survived) in request
            .survivors
            .iter()
            .map(|id| (id, true))
            .chain(request.dropped.iter().map(|id| (id, false)))
        {
            if let Some(previous) = seen.insert(id, survived) {
                return Err(if previous != survived {
                    PeerMisbehaved::BothSharesRequested { peer: id }
                } else {
                    PeerMisbehaved::Duplicate { client: id }
                }
                .into());
            }
        }
        if seen.get(&self.id) != Some(&true) {
            return Err(PeerMisbehaved::NotInSurvivorSet { client: self.id }.into());
        }
        if request.survivors.len() < self.config.threshold {
            return Err(SecAggError::PeerMisbehaved(PeerMisbehaved::BadDirectory(
                "fewer survivors than the threshold: the sum would expose too few inputs",
            )));
        }
        Ok(seen)
    }

    /// Answers the unmask request with one share per listed neighbour: the self-mask share of a
    /// survivor, the key share of a dropped client. Refuses any request that would reveal both
    /// for one peer, or that contradicts what this client saw.
    pub fn handle(self, request: UnmaskRequest) -> Result<UnmaskResponse, SecAggError> {
        let seen = self.classify(&request)?;
        let mut response = UnmaskResponse {
            from: self.id,
            self_mask_shares: Vec::new(),
            mask_key_shares: Vec::new(),
        };
        for (&peer, pair) in &self.held {
            match seen.get(&peer) {
                Some(true) => response
                    .self_mask_shares
                    .push((peer, pair.self_mask.clone())),
                Some(false) => response.mask_key_shares.push((peer, pair.mask_key.clone())),
                None => {}
            }
        }
        Ok(response)
    }
}

/// The client's state between messages: a dispatcher over the stage structs. The input is
/// supplied only once the shares are routed ([`ClientSession::mask`]), so a participant can run
/// stages 1–2 while it trains.
#[derive(Debug)]
pub enum ClientSession {
    /// Waiting for the key directory.
    AwaitingDirectory(Box<AwaitingDirectory>),
    /// Waiting for the routed shares.
    AwaitingRoutedShares(AwaitingRoutedShares),
    /// Waiting for the caller's input to mask.
    AwaitingInput(Box<AwaitingInput>),
    /// Waiting for the unmask request.
    AwaitingUnmask(AwaitingUnmask),
    /// The client has sent everything it will send.
    Done,
    /// The client stopped, revealing nothing more.
    Aborted(AbortReason),
}

impl ClientSession {
    /// Starts a round: fresh keys, and the message advertising them.
    pub fn start<L: Lane>(
        id: ClientId,
        config: RoundConfig,
    ) -> Result<(Self, ClientMessage<L>), SecAggError> {
        let (stage, keys) = AwaitingDirectory::start::<L>(id, config)?;
        Ok((
            ClientSession::AwaitingDirectory(Box::new(stage)),
            ClientMessage::AdvertiseKeys(keys),
        ))
    }

    /// What the current stage accepts: a server message, or ([`MessageKind::Input`]) the
    /// caller's input through [`mask`](Self::mask).
    pub fn expects(&self) -> MessageKind {
        match self {
            ClientSession::AwaitingDirectory(_) => MessageKind::KeyDirectory,
            ClientSession::AwaitingRoutedShares(_) => MessageKind::RoutedShares,
            ClientSession::AwaitingInput(_) => MessageKind::Input,
            ClientSession::AwaitingUnmask(_) => MessageKind::UnmaskRequest,
            ClientSession::Done | ClientSession::Aborted(_) => MessageKind::Nothing,
        }
    }

    /// Feeds one server message; returns the next state and the reply, if any (routed shares
    /// get none: the session then waits for [`mask`](Self::mask)).
    pub fn handle<L: Lane>(
        self,
        msg: ServerMessage,
    ) -> Result<(Self, Option<ClientMessage<L>>), SecAggError> {
        let expected = self.expects();
        match (self, msg) {
            (ClientSession::AwaitingDirectory(stage), ServerMessage::KeyDirectory(d)) => {
                Ok(match stage.handle(d)? {
                    Step::Next(next, out) => (
                        ClientSession::AwaitingRoutedShares(next),
                        Some(ClientMessage::EncryptedShares(out)),
                    ),
                    Step::Abort(reason) => (ClientSession::Aborted(reason), None),
                })
            }
            (ClientSession::AwaitingRoutedShares(stage), ServerMessage::RoutedShares(r)) => {
                Ok(match stage.receive(r)? {
                    Step::Next(next, ()) => (ClientSession::AwaitingInput(Box::new(next)), None),
                    Step::Abort(reason) => (ClientSession::Aborted(reason), None),
                })
            }
            (ClientSession::AwaitingUnmask(stage), ServerMessage::UnmaskRequest(r)) => Ok((
                ClientSession::Done,
                Some(ClientMessage::UnmaskResponse(stage.handle(r)?)),
            )),
            (_, msg) => Err(SecAggError::UnexpectedMessage {
                expected,
                got: msg.kind(),
            }),
        }
    }

    /// Masks `input` (already quantised into `Z_{2^bits}`) once the shares are routed, and
    /// returns the masked-input message. In any other stage `input` is zeroized and refused.
    pub fn mask<L: Lane>(self, mut input: Vec<L>) -> Result<(Self, ClientMessage<L>), SecAggError> {
        match self {
            ClientSession::AwaitingInput(stage) => {
                let (next, out) = stage.mask(input)?;
                Ok((
                    ClientSession::AwaitingUnmask(next),
                    ClientMessage::MaskedInput(out),
                ))
            }
            other => {
                input.zeroize();
                Err(SecAggError::UnexpectedMessage {
                    expected: other.expects(),
                    got: MessageKind::Input,
                })
            }
        }
    }
}
