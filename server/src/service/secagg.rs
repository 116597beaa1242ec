//! Secure aggregation (SecAgg+) of one round, coordinated over HTTPS.
//!
//! [`SecureRound`] wraps the pure [`ServerSession`] of `cohort_privacy::secagg` with what a
//! network service adds: client certificates mapped to SecAgg ids, a deadline per stage,
//! early closing once everyone who could answer has answered, idempotent re-sends (a client
//! retrying after a lost response gets the same receipt; a *different* message for a stage
//! it already answered gets 409), and the stage outputs kept for the clients to poll. It does
//! no I/O, so it is tested without a server.
//!
//! What it holds, and never more: public keys, encrypted shares in transit (opaque to the
//! server), the running masked sum (O(model)) and, after unmasking, the sum. A masked input
//! is added into the running sum inside [`ServerSession::handle`] and its buffer dropped; no
//! individual input is stored anywhere, in memory or on disk.
//!
//! Stage deadlines come from the federation's [`StageDeadlines`]. Keys and shares do not
//! depend on the update, so participants exchange them before (or while) they train: keys are
//! due `key_exchange_s` after the round opens (the stage closes earlier once every sampled
//! participant has advertised), shares `key_exchange_s` after that, masked inputs
//! `training_s + upload_s` after the shares stage closes (they carry the trained update), and
//! unmask shares `unmask_s` after that. Only the masked-input stage waits for training.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use cohort_privacy::quantize::Quantizer;
use cohort_privacy::secagg::server::Broadcast;
use cohort_privacy::secagg::{
    Aggregate, ClientMessage, MaskedInput, PeerMisbehaved, RoundConfig, SecAggError, ServerSession,
};
use cohort_protocol::frame::{Dtype, FrameView};
use cohort_protocol::secagg::{
    Directory, PublicKeys, Routed, SecAggTask, SharesUpload, StagePoll, StageReceipt, UnmaskList,
    UnmaskShares,
};

use super::Service;
use super::rounds::LiveRound;

use crate::aggregate::SummedUpdates;
use crate::domain::{
    ClientId, FederationId, RoundNumber, RoundStage, RoundState, StageDeadlines, Timestamp,
    TrainingConfig,
};
use crate::http::error::ApiError;

pub use crate::secure_plan::{SecurePlan, TOLERATED_CORRUPTION, TOLERATED_DROPOUT, plan};
/// How long a client waits before polling a stage again.
pub const POLL_RETRY_MS: u64 = 100;
/// How long the server holds a stage poll open waiting for the stage to close.
const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// The four client stages, plus the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecAggStage {
    /// Participants advertise their public keys (after training).
    AdvertiseKeys,
    /// Participants send encrypted shares.
    ShareKeys,
    /// Participants send masked inputs.
    MaskedInput,
    /// Survivors send the shares that remove the masks.
    Unmask,
    /// The session is done or aborted.
    Finished,
}

impl SecAggStage {
    /// A stable name for receipts, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdvertiseKeys => "advertise_keys",
            Self::ShareKeys => "share_keys",
            Self::MaskedInput => "masked_input",
            Self::Unmask => "unmask",
            Self::Finished => "finished",
        }
    }

    /// The round stage the store records.
    pub fn round_stage(self) -> RoundStage {
        match self {
            Self::AdvertiseKeys => RoundStage::AdvertiseKeys,
            Self::ShareKeys => RoundStage::ShareKeys,
            Self::MaskedInput => RoundStage::Upload,
            Self::Unmask => RoundStage::Unmask,
            Self::Finished => RoundStage::Aggregating,
        }
    }

    fn next(self) -> Self {
        match self {
            Self::AdvertiseKeys => Self::ShareKeys,
            Self::ShareKeys => Self::MaskedInput,
            Self::MaskedInput => Self::Unmask,
            Self::Unmask | Self::Finished => Self::Finished,
        }
    }
}

/// The decoded result of a finished secure aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureSum {
    /// Σ of the survivors' clipped, quantised (and noised) updates, decoded to reals.
    pub sum: Vec<f32>,
    /// How many clients' inputs are in the sum.
    pub survivors: usize,
}

/// One round's secure aggregation state; see the module docs.
#[derive(Debug)]
pub struct SecureRound {
    config: RoundConfig,
    template: SecAggTask,
    index: HashMap<ClientId, u32>,
    session: Option<ServerSession<u32>>,
    stage: SecAggStage,
    closing: bool,
    stage_deadline: Timestamp,
    deadlines: StageDeadlines,
    stage_opened: Instant,
    eligible: HashSet<u32>,
    accepted: HashMap<(SecAggStage, u32), [u8; 32]>,
    directory: Option<Directory>,
    routed: HashMap<u32, Routed>,
    unmask: Option<UnmaskList>,
    outcome: Option<Result<Aggregate<u32>, String>>,
    quantizer: Quantizer,
    stage_seconds: Vec<(SecAggStage, f64)>,
    server_work: std::time::Duration,
    noise_multiplier: f64,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn refusal(e: SecAggError) -> ApiError {
    match e {
        SecAggError::PeerMisbehaved(PeerMisbehaved::Duplicate { .. }) => ApiError::Conflict {
            slug: "duplicate-message",
            detail: format!("{e}; each participant sends one message per stage"),
        },
        SecAggError::PeerMisbehaved(PeerMisbehaved::NotInSurvivorSet { .. }) => {
            ApiError::Conflict {
                slug: "not-in-survivor-set",
                detail: e.to_string(),
            }
        }
        SecAggError::UnexpectedMessage { .. } => ApiError::Conflict {
            slug: "wrong-stage",
            detail: e.to_string(),
        },
        other => ApiError::InvalidInput(other.to_string()),
    }
}

impl SecureRound {
    /// Opens secure aggregation for round `round` over `participants` (any order) as `plan`
    /// (made by [`plan`] for this many participants when the round was scheduled and charged),
    /// with stage 1 due at `keys_due`.
    pub fn open(
        round: u64,
        participants: &[ClientId],
        plan: &SecurePlan,
        config: &TrainingConfig,
        keys_due: Timestamp,
    ) -> Result<Self, String> {
        if plan.task.participants as usize != participants.len() {
            return Err(format!(
                "the round's plan is for {} participants, not {}",
                plan.task.participants,
                participants.len()
            ));
        }
        let round_config = plan.task.round_config(round).map_err(|e| e.to_string())?;
        let session = ServerSession::<u32>::new(round_config).map_err(|e| e.to_string())?;
        let quantizer = plan.task.quantizer.quantizer().map_err(|e| e.to_string())?;
        let mut sorted: Vec<ClientId> = participants.to_vec();
        sorted.sort();
        let index: HashMap<ClientId, u32> = sorted
            .into_iter()
            .enumerate()
            .map(|(i, c)| (c, i as u32))
            .collect();
        Ok(Self {
            config: round_config,
            template: plan.task,
            eligible: index.values().copied().collect(),
            index,
            session: Some(session),
            stage: SecAggStage::AdvertiseKeys,
            closing: false,
            stage_deadline: keys_due,
            deadlines: *config.deadlines(),
            stage_opened: Instant::now(),
            accepted: HashMap::new(),
            directory: None,
            routed: HashMap::new(),
            unmask: None,
            outcome: None,
            quantizer,
            stage_seconds: Vec::new(),
            server_work: std::time::Duration::ZERO,
            noise_multiplier: plan.noise_multiplier,
        })
    }

    /// The current stage.
    pub fn stage(&self) -> SecAggStage {
        self.stage
    }

    /// The central noise multiplier the clients' shares guarantee (0 without noise).
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// Shamir threshold `t` of the round.
    pub fn threshold(&self) -> u32 {
        self.template.threshold
    }

    /// Server CPU time in the SecAgg state machine so far: handling messages (summing masked
    /// inputs) and closing stages (unmasking).
    pub fn server_seconds(&self) -> f64 {
        self.server_work.as_secs_f64()
    }

    /// Adds time spent closing a stage off the lock.
    pub fn add_server_work(&mut self, d: std::time::Duration) {
        self.server_work += d;
    }

    /// How many messages each client stage has accepted so far, as
    /// `("secagg_<stage>_received", count)`.
    pub fn received(&self) -> Vec<(String, f64)> {
        [
            SecAggStage::AdvertiseKeys,
            SecAggStage::ShareKeys,
            SecAggStage::MaskedInput,
            SecAggStage::Unmask,
        ]
        .into_iter()
        .map(|stage| {
            let n = self.accepted.keys().filter(|(s, _)| *s == stage).count();
            (format!("secagg_{}_received", stage.as_str()), n as f64)
        })
        .collect()
    }

    /// Seconds each closed stage lasted.
    pub fn stage_seconds(&self) -> &[(SecAggStage, f64)] {
        &self.stage_seconds
    }

    /// The SecAgg part of `client`'s task, if it is a participant.
    pub fn task_for(&self, client: &ClientId) -> Option<SecAggTask> {
        self.index.get(client).map(|&i| SecAggTask {
            client_index: i,
            ..self.template
        })
    }

    fn id_of(&self, client: &ClientId) -> Result<u32, ApiError> {
        self.index.get(client).copied().ok_or_else(|| {
            ApiError::Forbidden(format!(
                "client {client} was not sampled for round {}",
                self.config.round
            ))
        })
    }

    fn receipt(&self, stage: SecAggStage) -> StageReceipt {
        StageReceipt {
            round: self.config.round,
            stage: stage.as_str().to_owned(),
        }
    }

    fn wrong_stage(&self, stage: SecAggStage) -> ApiError {
        let round = self.config.round;
        if stage < self.stage || (stage == self.stage && self.closing) {
            ApiError::Conflict {
                slug: "late-message",
                detail: format!(
                    "stage {} of round {round} has closed; late messages are never used",
                    stage.as_str()
                ),
            }
        } else {
            ApiError::Conflict {
                slug: "stage-not-open",
                detail: format!(
                    "stage {} of round {round} is not open yet (the round is at {}); poll the previous stage first",
                    stage.as_str(),
                    self.stage.as_str()
                ),
            }
        }
    }

    fn accept(
        &mut self,
        stage: SecAggStage,
        client: &ClientId,
        digest: [u8; 32],
        message: impl FnOnce(u32) -> Result<ClientMessage<u32>, ApiError>,
    ) -> Result<StageReceipt, ApiError> {
        let id = self.id_of(client)?;
        if let Some(previous) = self.accepted.get(&(stage, id)) {
            return if *previous == digest {
                Ok(self.receipt(stage))
            } else {
                Err(ApiError::Conflict {
                    slug: "duplicate-message",
                    detail: format!(
                        "client {client} already sent a different {} message in round {}; each participant sends one per stage",
                        stage.as_str(),
                        self.config.round
                    ),
                })
            };
        }
        if stage != self.stage || self.closing {
            return Err(self.wrong_stage(stage));
        }
        if !self.eligible.contains(&id) {
            return Err(ApiError::Conflict {
                slug: "not-in-survivor-set",
                detail: format!(
                    "client {client} did not complete an earlier stage of round {} in time; it takes no further part",
                    self.config.round
                ),
            });
        }
        let message = message(id)?;
        let session = self.session.take().ok_or_else(|| self.wrong_stage(stage))?;
        let started = Instant::now();
        let handled = session.handle(message);
        self.server_work += started.elapsed();
        match handled {
            Ok(next) => {
                self.session = Some(next);
                self.accepted.insert((stage, id), digest);
                Ok(self.receipt(stage))
            }
            Err(rejection) => {
                self.session = Some(*rejection.session);
                Err(refusal(rejection.error))
            }
        }
    }

    /// Stage 1: a participant's public keys.
    pub fn submit_keys(
        &mut self,
        client: &ClientId,
        keys: PublicKeys,
    ) -> Result<StageReceipt, ApiError> {
        let d = digest(format!("{}\n{}", keys.cipher_pk, keys.mask_pk).as_bytes());
        self.accept(SecAggStage::AdvertiseKeys, client, d, |id| {
            keys.into_message(id)
                .map(ClientMessage::AdvertiseKeys)
                .map_err(|e| ApiError::InvalidInput(e.to_string()))
        })
    }

    /// Stage 2: a participant's encrypted shares.
    pub fn submit_shares(
        &mut self,
        client: &ClientId,
        shares: SharesUpload,
    ) -> Result<StageReceipt, ApiError> {
        let canonical = serde_json::to_vec(&shares).map_err(ApiError::internal)?;
        self.accept(SecAggStage::ShareKeys, client, digest(&canonical), |id| {
            shares
                .into_message(id)
                .map(ClientMessage::EncryptedShares)
                .map_err(|e| ApiError::InvalidInput(e.to_string()))
        })
    }

    /// Stage 3: a participant's masked input as a u32 vector frame; it goes into the running
    /// sum and is dropped.
    pub fn submit_masked(
        &mut self,
        client: &ClientId,
        frame: &[u8],
    ) -> Result<StageReceipt, ApiError> {
        let dimension = self.config.dimension;
        self.accept(SecAggStage::MaskedInput, client, digest(frame), |id| {
            let view = FrameView::parse(frame).map_err(|e| {
                ApiError::BadRequest(format!("the body is not a valid vector frame: {e}"))
            })?;
            if view.dtype() != Dtype::U32 {
                return Err(ApiError::InvalidInput(format!(
                    "a masked input has dtype u32, got {}",
                    view.dtype().name()
                )));
            }
            if view.len() != dimension {
                return Err(ApiError::InvalidInput(format!(
                    "the masked input has {} values, the round's dimension is {dimension}",
                    view.len()
                )));
            }
            let vector = view
                .to_u32_vec()
                .ok_or_else(|| ApiError::internal("u32 frame without u32 values"))?;
            Ok(ClientMessage::MaskedInput(MaskedInput { from: id, vector }))
        })
    }

    /// Stage 4: a survivor's unmask shares.
    pub fn submit_unmask(
        &mut self,
        client: &ClientId,
        shares: UnmaskShares,
    ) -> Result<StageReceipt, ApiError> {
        let canonical = serde_json::to_vec(&shares).map_err(ApiError::internal)?;
        self.accept(SecAggStage::Unmask, client, digest(&canonical), |id| {
            Ok(ClientMessage::UnmaskResponse(shares.into_message(id)))
        })
    }

    fn poll<T: Clone>(
        &self,
        client: &ClientId,
        after: SecAggStage,
        ready: impl FnOnce(u32) -> Option<T>,
        excluded: &str,
    ) -> Result<StagePoll<T>, ApiError> {
        let id = self.id_of(client)?;
        if self.stage > after {
            if let Some(value) = ready(id) {
                return Ok(StagePoll::Ready { value });
            }
            if let Some(Err(reason)) = &self.outcome {
                return Ok(StagePoll::Aborted {
                    reason: reason.clone(),
                });
            }
            return Ok(StagePoll::Aborted {
                reason: format!(
                    "client {client} {excluded}; it takes no further part in round {}",
                    self.config.round
                ),
            });
        }
        Ok(StagePoll::Wait {
            retry_after_ms: POLL_RETRY_MS,
        })
    }

    /// After stage 1: the key directory.
    pub fn directory_for(&self, client: &ClientId) -> Result<StagePoll<Directory>, ApiError> {
        let dir = self.directory.as_ref();
        self.poll(
            client,
            SecAggStage::AdvertiseKeys,
            |id| {
                dir.filter(|d| d.entries.iter().any(|e| e.client == id))
                    .cloned()
            },
            "advertised no keys before stage 1 closed",
        )
    }

    /// After stage 2: the ciphertexts addressed to the client.
    pub fn routed_for(&self, client: &ClientId) -> Result<StagePoll<Routed>, ApiError> {
        self.poll(
            client,
            SecAggStage::ShareKeys,
            |id| self.routed.get(&id).cloned(),
            "sent no shares before stage 2 closed",
        )
    }

    /// After stage 3: which masks to remove.
    pub fn unmask_for(&self, client: &ClientId) -> Result<StagePoll<UnmaskList>, ApiError> {
        let list = self.unmask.as_ref();
        self.poll(
            client,
            SecAggStage::MaskedInput,
            |id| list.filter(|l| l.survivors.contains(&id)).cloned(),
            "sent no masked input before stage 3 closed",
        )
    }

    /// Whether the current stage should close now: its deadline passed, or everyone who may
    /// still answer it has.
    pub fn due(&self, now: Timestamp) -> bool {
        if self.closing || self.stage == SecAggStage::Finished {
            return false;
        }
        if now >= self.stage_deadline {
            return true;
        }
        let answered = self
            .accepted
            .keys()
            .filter(|(s, id)| *s == self.stage && self.eligible.contains(id))
            .count();
        answered == self.eligible.len()
    }

    /// Whether the session is done or aborted.
    pub fn is_finished(&self) -> bool {
        self.stage == SecAggStage::Finished
    }

    /// Takes the session out to close its stage (on a blocking thread: unmasking is heavy).
    /// Messages that arrive meanwhile are refused as late.
    pub fn begin_close(&mut self) -> Option<ServerSession<u32>> {
        if self.closing || self.stage == SecAggStage::Finished {
            return None;
        }
        let session = self.session.take()?;
        self.closing = true;
        Some(session)
    }

    /// Puts the closed session back with what it broadcasts; moves to the next stage.
    pub fn finish_close(
        &mut self,
        closed: Result<(ServerSession<u32>, Option<Broadcast>), String>,
        now: Timestamp,
    ) {
        self.closing = false;
        let stage = self.stage;
        self.stage_seconds
            .push((stage, self.stage_opened.elapsed().as_secs_f64()));
        self.stage_opened = Instant::now();
        let fail = |me: &mut Self, why: String| {
            me.outcome = Some(Err(format!(
                "secure aggregation aborted at stage {}: {why}",
                stage.as_str()
            )));
            me.stage = SecAggStage::Finished;
            me.session = None;
            me.eligible.clear();
        };
        let (next, broadcast) = match closed {
            Ok(pair) => pair,
            Err(why) => return fail(self, why),
        };
        match next {
            ServerSession::Aborted(reason) => return fail(self, reason.to_string()),
            ServerSession::Done(aggregate) => {
                self.outcome = Some(Ok(aggregate));
                self.stage = SecAggStage::Finished;
                self.session = None;
                self.eligible.clear();
                return;
            }
            other => self.session = Some(other),
        }
        match broadcast {
            Some(Broadcast::KeyDirectory(d)) => {
                self.eligible = d.entries.iter().map(|e| e.client).collect();
                self.directory = Some(Directory::from_message(&d));
            }
            Some(Broadcast::RoutedShares(routed)) => {
                self.eligible = routed.iter().map(|r| r.to).collect();
                self.routed = routed
                    .iter()
                    .map(|r| (r.to, Routed::from_message(r)))
                    .collect();
            }
            Some(Broadcast::UnmaskRequest(r)) => {
                self.eligible = r.survivors.iter().copied().collect();
                self.unmask = Some(UnmaskList::from_message(&r));
            }
            None => return fail(self, "the stage closed without output".into()),
        }
        // Shares relayed in stage 2 are no longer needed once routed.
        if stage == SecAggStage::ShareKeys {
            self.directory = None;
        }
        if stage == SecAggStage::MaskedInput {
            self.routed.clear();
        }
        self.stage = stage.next();
        let allowed = match self.stage {
            SecAggStage::ShareKeys => self.deadlines.key_exchange(),
            // Participants train between their shares and their masked input.
            SecAggStage::MaskedInput => self.deadlines.training() + self.deadlines.upload(),
            _ => self.deadlines.unmask(),
        };
        self.stage_deadline = now.plus(allowed);
    }

    /// How many inputs have been summed so far.
    pub fn inputs_summed(&self) -> usize {
        self.accepted
            .keys()
            .filter(|(s, _)| *s == SecAggStage::MaskedInput)
            .count()
    }

    /// The decoded sum, or why the session ended without one.
    pub fn into_sum(self) -> Result<SecureSum, String> {
        match self.outcome {
            Some(Ok(aggregate)) => Ok(SecureSum {
                sum: self.quantizer.decode(&aggregate.sum),
                survivors: aggregate.survivors.len(),
            }),
            Some(Err(reason)) => Err(reason),
            None => Err(format!(
                "secure aggregation did not finish (stopped at stage {})",
                self.stage.as_str()
            )),
        }
    }

    /// The failure, if the session ended without a sum.
    pub fn failure(&self) -> Option<&str> {
        match &self.outcome {
            Some(Err(reason)) => Some(reason),
            _ => None,
        }
    }
}

impl SecureSum {
    /// The sum as the strategy takes it: uniform weights (under secure aggregation the
    /// server cannot see who contributed how many records).
    pub fn into_summed_updates(self) -> Result<SummedUpdates, ApiError> {
        let n = self.survivors;
        SummedUpdates::from_decoded(self.sum.into_iter().map(f64::from).collect(), n, n as f64)
            .map_err(|e| ApiError::internal(format!("decoded secure sum: {e}")))
    }
}

type Live = Arc<tokio::sync::Mutex<LiveRound>>;

impl Service {
    /// The live secure round `round` of `fed` and the calling client.
    async fn secure_live(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
    ) -> Result<(Option<Live>, ClientId), ApiError> {
        let client = self.client_for_cert(fed, fingerprint).await?;
        let live = match self.live_round(fed) {
            Some(lr) if lr.lock().await.key.round == round => Some(lr),
            _ => None,
        };
        Ok((live, client.id))
    }

    /// Why a poll for a round that is no longer live gets nothing more.
    async fn round_over(&self, fed: &FederationId, round: RoundNumber) -> Result<String, ApiError> {
        let f = fed.clone();
        let r = self
            .blocking(move |s| s.round(&f, round))
            .await
            .map_err(|e| match e {
                ApiError::NotFound(_) => {
                    ApiError::NotFound(format!("round {round} of federation {fed} does not exist"))
                }
                other => other,
            })?;
        Ok(match r.state {
            RoundState::Aborted { reason } => format!("round {round} aborted: {reason}"),
            RoundState::Completed { .. } => format!("round {round} has completed"),
            RoundState::InProgress { .. } => {
                format!("round {round} is not coordinated by this server process")
            }
        })
    }

    async fn secure_submit(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        submit: impl FnOnce(&mut SecureRound, &ClientId) -> Result<StageReceipt, ApiError>,
    ) -> Result<StageReceipt, ApiError> {
        let (live, client) = self.secure_live(fed, round, fingerprint).await?;
        let Some(live) = live else {
            return Err(self.refuse_stale(fed, round).await);
        };
        let mut g = live.lock().await;
        let Some(secure) = g.secure_mut() else {
            return Err(ApiError::Conflict {
                slug: "plain-aggregation",
                detail: format!("federation {fed} does not use secure aggregation"),
            });
        };
        let receipt = submit(secure, &client)?;
        let due = secure.due(Timestamp::now());
        let summed = secure.inputs_summed();
        g.mark_contributed(&client, receipt.stage == SecAggStage::MaskedInput.as_str());
        drop(g);
        if due {
            self.wake.notify_one();
        }
        tracing::debug!(federation = %fed, round = %round, client = %client, stage = %receipt.stage, summed, "secagg message accepted");
        Ok(receipt)
    }

    /// A stage poll, held open (long poll) for up to [`LONG_POLL`] while the stage it waits
    /// for has not closed, so that clients learn of a closed stage at once instead of after
    /// their retry pause, and 100 waiting clients do not cost the server 1,000 requests a
    /// second. The wait ends early, with the `wait` answer, when `give_up` resolves: the
    /// transport uses it when other clients queue for a connection slot, which a held poll
    /// would otherwise keep from them until a stage deadline passed.
    async fn secure_poll<T>(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        poll: impl Fn(&SecureRound, &ClientId) -> Result<StagePoll<T>, ApiError>,
        give_up: impl Future<Output = ()>,
    ) -> Result<StagePoll<T>, ApiError> {
        let started = Instant::now();
        let mut give_up = std::pin::pin!(give_up);
        loop {
            let (live, client) = self.secure_live(fed, round, fingerprint).await?;
            let Some(live) = live else {
                return Ok(StagePoll::Aborted {
                    reason: self.round_over(fed, round).await?,
                });
            };
            let g = live.lock().await;
            let answer = match g.secure() {
                Some(secure) => poll(secure, &client)?,
                // The round is being committed: nothing more to hand out yet.
                None if g.finishing() => StagePoll::Wait {
                    retry_after_ms: POLL_RETRY_MS,
                },
                None => {
                    return Err(ApiError::Conflict {
                        slug: "plain-aggregation",
                        detail: format!("federation {fed} does not use secure aggregation"),
                    });
                }
            };
            let left = LONG_POLL.saturating_sub(started.elapsed());
            if !matches!(answer, StagePoll::Wait { .. }) || left.is_zero() {
                return Ok(answer);
            }
            // Registered before the lock is released, so a close in between still wakes us.
            let changed = g.stage_changed();
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            drop(g);
            tokio::select! {
                _ = tokio::time::timeout(left, notified) => {}
                () = give_up.as_mut() => return Ok(answer),
            }
        }
    }

    /// `POST .../secagg/keys`.
    pub async fn secagg_keys(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        keys: PublicKeys,
    ) -> Result<StageReceipt, ApiError> {
        self.secure_submit(fed, round, fingerprint, |s, c| s.submit_keys(c, keys))
            .await
    }

    /// `GET .../secagg/keys`.
    pub async fn secagg_directory(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        give_up: impl Future<Output = ()>,
    ) -> Result<StagePoll<Directory>, ApiError> {
        self.secure_poll(fed, round, fingerprint, |s, c| s.directory_for(c), give_up)
            .await
    }

    /// `POST .../secagg/shares`.
    pub async fn secagg_shares(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        shares: SharesUpload,
    ) -> Result<StageReceipt, ApiError> {
        self.secure_submit(fed, round, fingerprint, |s, c| s.submit_shares(c, shares))
            .await
    }

    /// `GET .../secagg/shares`.
    pub async fn secagg_routed(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        give_up: impl Future<Output = ()>,
    ) -> Result<StagePoll<Routed>, ApiError> {
        self.secure_poll(fed, round, fingerprint, |s, c| s.routed_for(c), give_up)
            .await
    }

    /// `PUT .../secagg/masked`: the body is parked in a temporary file, then read back and
    /// checked under an upload permit, so at most `upload_concurrency` masked buffers exist
    /// at once and a slow sender holds no permit.
    pub async fn secagg_masked(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        body: Body,
    ) -> Result<StageReceipt, ApiError> {
        // Received in full (into a temporary file) before the permit, as plain uploads are: a
        // body left unread behind the permits stalls the client's TCP send (see `spool`).
        let spooled = super::spool::SpooledBody::receive(
            body,
            &self.settings.spool_dir,
            self.settings.max_body_bytes,
            &self.spool_writers,
        )
        .await
        .map_err(|e| match e {
            ApiError::PayloadTooLarge(_) => {
                ApiError::PayloadTooLarge("the masked input exceeds max_body_bytes".into())
            }
            other => other,
        })
        .inspect_err(|_| self.metrics.upload_rejected())?;
        let _permit = self
            .upload_permits
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
        let mut lease = self.update_buffers.lease();
        lease.bytes = spooled.read_into(std::mem::take(&mut lease.bytes)).await?;
        let bytes = &lease.bytes;
        let result = self
            .secure_submit(fed, round, fingerprint, |s, c| s.submit_masked(c, bytes))
            .await;
        match &result {
            Ok(_) => self.metrics.upload_accepted(bytes.len()),
            Err(_) => self.metrics.upload_rejected(),
        }
        result
    }

    /// `GET .../secagg/unmask`.
    pub async fn secagg_unmask_list(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        give_up: impl Future<Output = ()>,
    ) -> Result<StagePoll<UnmaskList>, ApiError> {
        self.secure_poll(fed, round, fingerprint, |s, c| s.unmask_for(c), give_up)
            .await
    }

    /// `POST .../secagg/unmask`.
    pub async fn secagg_unmask(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        shares: UnmaskShares,
    ) -> Result<StageReceipt, ApiError> {
        self.secure_submit(fed, round, fingerprint, |s, c| s.submit_unmask(c, shares))
            .await
    }

    /// Closes the live round's SecAgg stage if it is due (deadline, or everyone answered).
    /// The close itself (heavy when unmasking) runs on the blocking pool.
    pub(super) async fn advance_secure(&self, fed: &FederationId, live: &Live) {
        let taken = {
            let mut g = live.lock().await;
            let number = g.key.round;
            match g.secure_mut() {
                Some(s) if s.due(Timestamp::now()) => s.begin_close().map(|x| (x, number)),
                _ => None,
            }
        };
        let Some((session, number)) = taken else {
            return;
        };
        let mut close_time = std::time::Duration::ZERO;
        let closed = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let closed = session.close();
            (closed, started.elapsed())
        })
        .await
        .map(|(closed, took)| {
            close_time = took;
            closed
        })
        .map_err(|e| format!("the stage could not close: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
        let stage = {
            let mut g = live.lock().await;
            let stage = match g.secure_mut() {
                Some(s) => {
                    s.add_server_work(close_time);
                    s.finish_close(closed, Timestamp::now());
                    s.stage()
                }
                None => return,
            };
            g.stage_changed().notify_waiters();
            stage
        };
        tracing::info!(federation = %fed, round = %number, stage = stage.as_str(), "secagg stage opened");
        let f = fed.clone();
        if let Err(e) = self
            .blocking(move |s| s.set_round_stage(&f, number, stage.round_stage()))
            .await
        {
            tracing::warn!(federation = %fed, error = %e, "could not record the round's stage");
        }
    }
}

#[cfg(test)]
#[path = "secagg_tests.rs"]
mod tests;
