//! Round orchestration over HTTP: opening rounds (ledger first), handing out tasks, streaming
//! uploads into the running sum, and finishing rounds by deadline or when everyone uploaded.
//!
//! The in-memory [`LiveRound`] holds only the running sum (O(model)); everything durable goes
//! through the store, so a crash loses at most the in-flight round, which the store records as
//! aborted on restart while keeping its ledger entries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use cohort_protocol::frame::{Dtype, FrameError, FrameView};
use cohort_protocol::messages::{DpSgdConfig, RoundView, Task, TaskPoll, UploadReceipt};
use cohort_protocol::{Epsilon, RoundId};

use super::secagg::{SecAggStage, SecureRound};
use super::{Service, lock, spool};
use crate::aggregate::{AggregateError, CollectedUpdates, RoundKey, StreamingSum};
use crate::domain::{
    AbortReason, ClientId, FederationId, FederationState, RoundMetrics, RoundNumber, RoundState,
    Timestamp, VersionNumber,
};
use crate::http::error::ApiError;
use crate::ledger::DefaultAccountant;
use crate::scheduler::{self, RoundStart, ScheduleError, SchedulingPolicy};
use crate::storage::{LedgerSubject, NewModel, RoundCompletion};
use crate::strategy::{self, FitFailure, FitResults, InputKind};

/// Where accepted updates go: a running sum, (robust aggregators only) every update, or
/// the running masked sum of secure aggregation.
#[derive(Debug)]
enum Accumulator {
    Summed(StreamingSum),
    Individual(CollectedUpdates),
    Secure(Box<SecureRound>),
}

impl Accumulator {
    fn contributors(&self) -> usize {
        match self {
            Self::Summed(s) => s.contributors(),
            Self::Individual(c) => c.contributors(),
            Self::Secure(s) => s.inputs_summed(),
        }
    }
}

/// The in-memory part of a round in flight.
#[derive(Debug)]
pub struct LiveRound {
    pub(super) key: RoundKey,
    base_version: VersionNumber,
    /// Participants and the ε their ledger entry recorded.
    participants: HashMap<ClientId, f64>,
    contributed: HashSet<ClientId>,
    acc: Option<Accumulator>,
    task_deadline: Timestamp,
    upload_deadline: Timestamp,
    opened: Instant,
    bytes: u64,
    template: Task,
    /// Woken whenever a SecAgg stage closes or the round ends (long-polling clients wait on it).
    stage_changed: Arc<tokio::sync::Notify>,
    /// Participants' DP-released metrics so far.
    released: super::released::ReleasedMetrics,
}

impl LiveRound {
    fn is_due(&self, now: Timestamp) -> bool {
        if let Some(secure) = self.secure() {
            // Secure rounds end when their SecAgg session does; stage deadlines drive it.
            return secure.is_finished();
        }
        now >= self.upload_deadline || self.contributed.len() == self.participants.len()
    }

    /// Whether `client` was sampled for this round.
    pub(super) fn is_participant(&self, client: &ClientId) -> bool {
        self.participants.contains_key(client)
    }

    /// The participants' released metrics.
    pub(super) fn released_mut(&mut self) -> &mut super::released::ReleasedMetrics {
        &mut self.released
    }

    /// What long polls wait on.
    pub(super) fn stage_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.stage_changed)
    }

    /// Whether the round's aggregate has been taken for committing.
    pub(super) fn finishing(&self) -> bool {
        self.acc.is_none()
    }

    /// The round's secure aggregation, if it uses it.
    pub(super) fn secure(&self) -> Option<&SecureRound> {
        match &self.acc {
            Some(Accumulator::Secure(s)) => Some(s),
            _ => None,
        }
    }

    /// The round's secure aggregation, if it uses it.
    pub(super) fn secure_mut(&mut self) -> Option<&mut SecureRound> {
        match &mut self.acc {
            Some(Accumulator::Secure(s)) => Some(s),
            _ => None,
        }
    }

    /// Records that `client`'s input is in the sum (for the round view and failures).
    pub(super) fn mark_contributed(&mut self, client: &ClientId, input_summed: bool) {
        if input_summed {
            self.contributed.insert(client.clone());
        }
    }
}

fn millis(t: Timestamp) -> u64 {
    u64::try_from(t.as_millis()).unwrap_or(0)
}

/// An upload for a round whose aggregate has been taken for committing: late.
fn aggregating_refusal(round: RoundNumber) -> ApiError {
    ApiError::Conflict {
        slug: "late-upload",
        detail: format!("round {round} is being aggregated; late updates are never used"),
    }
}

fn aggregate_error(e: AggregateError) -> ApiError {
    match e {
        AggregateError::WrongRound { .. } => ApiError::Conflict {
            slug: "wrong-round",
            detail: e.to_string(),
        },
        AggregateError::Duplicate(_) => ApiError::Conflict {
            slug: "duplicate-upload",
            detail: format!("{e}; each participant uploads once per round"),
        },
        AggregateError::NotParticipant(_) => ApiError::Forbidden(e.to_string()),
        other => ApiError::InvalidInput(other.to_string()),
    }
}

fn frame_error(e: FrameError) -> ApiError {
    ApiError::BadRequest(format!("the body is not a valid vector frame: {e}"))
}

impl Service {
    pub(super) fn live_round(
        &self,
        fed: &FederationId,
    ) -> Option<Arc<tokio::sync::Mutex<LiveRound>>> {
        lock(&self.live).get(fed).cloned()
    }

    /// Updates accepted so far in a live round, and for a secure round how many messages each
    /// SecAgg stage has accepted (`secagg_<stage>_received`), so operators (and tests) can see
    /// how far a round got.
    pub(super) async fn live_progress(
        &self,
        fed: &FederationId,
        number: RoundNumber,
    ) -> (u32, Vec<(String, f64)>) {
        let Some(lr) = self.live_round(fed) else {
            return (0, Vec::new());
        };
        let g = lr.lock().await;
        if g.key.round != number {
            return (0, Vec::new());
        }
        let accepted = u32::try_from(g.contributed.len()).unwrap_or(u32::MAX);
        let progress = g.secure().map(SecureRound::received).unwrap_or_default();
        (accepted, progress)
    }

    /// Opens a round now (an admin's trigger, or the timer). The ledger entries of every
    /// sampled client are committed before this returns, so before any client sees a task.
    pub async fn open_round(&self, fed: &FederationId) -> Result<RoundView, ApiError> {
        let federation = self.federation(fed).await?;
        if let FederationState::Stopped { reason } = &federation.state {
            return Err(ApiError::Conflict {
                slug: "federation-stopped",
                detail: format!("federation {fed} is stopped: {reason}"),
            });
        }
        // A round being committed reads "completed" a moment before its live state is
        // dropped: wait for that (it is woken on removal) rather than answer 409.
        if let Some(lr) = self.live_round(fed) {
            let g = lr.lock().await;
            if g.finishing() {
                let changed = g.stage_changed();
                let removed = changed.notified();
                tokio::pin!(removed);
                removed.as_mut().enable();
                drop(g);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), removed).await;
            }
        }
        if self.live_round(fed).is_some() {
            return Err(ApiError::Conflict {
                slug: "round-in-progress",
                detail: format!("federation {fed} already has a round in progress"),
            });
        }
        let layout = self.layout(fed).await?;
        let dimension = layout.num_params();
        let policy = SchedulingPolicy {
            online_window: self.settings.online_window,
            ..SchedulingPolicy::default()
        };
        let f = fed.clone();
        let started = Instant::now();
        let store = self.store.clone();
        let mut sampler = self.round_sampler()?;
        let outcome = tokio::task::spawn_blocking(move || {
            let start = scheduler::open_round::<DefaultAccountant, _>(
                store.as_ref(),
                &mut sampler,
                &f,
                &policy,
                dimension,
                Timestamp::now(),
            );
            let entries = match &start {
                Ok(RoundStart::Opened { round, .. }) => store
                    .ledger_entries(&f, None)
                    .map_err(ApiError::from)?
                    .into_iter()
                    .filter(|e| e.round == round.number)
                    .collect(),
                _ => Vec::new(),
            };
            Ok::<_, ApiError>((start, entries))
        })
        .await
        .map_err(ApiError::internal)??;
        let (start, entries) = outcome;
        self.metrics.stage("open", started.elapsed().as_secs_f64());
        let (round, secure_plan) = match start {
            Ok(RoundStart::Opened { round, secure, .. }) => (round, secure),
            Ok(RoundStart::Skipped { round, .. }) => {
                self.metrics.round_aborted();
                tracing::info!(federation = %fed, round = %round.number, state = ?round.state, "round skipped before anyone was told");
                return self.round_view(&round, None).await;
            }
            Ok(RoundStart::FederationStopped { reason }) => {
                return Err(ApiError::Conflict {
                    slug: "federation-stopped",
                    detail: format!("federation {fed} stopped: {reason}"),
                });
            }
            Err(ScheduleError::RoundInProgress(r)) => {
                return Err(ApiError::Conflict {
                    slug: "round-in-progress",
                    detail: format!("round {} of federation {fed} is in progress", r.number),
                });
            }
            Err(ScheduleError::Stopped { reason }) => {
                return Err(ApiError::Conflict {
                    slug: "federation-stopped",
                    detail: format!("federation {fed} is stopped: {reason}"),
                });
            }
            Err(ScheduleError::Storage(e)) => return Err(e.into()),
            Err(other) => return Err(ApiError::internal(other)),
        };
        let mut fed_eps = None;
        let mut participants = HashMap::new();
        for e in &entries {
            match &e.subject {
                LedgerSubject::Client(c) => {
                    participants.insert(c.clone(), e.epsilon_after);
                }
                LedgerSubject::Federation => fed_eps = Some(e.epsilon_after),
            }
        }
        if let Some(eps) = fed_eps {
            self.metrics.federation_epsilon(fed.as_str(), eps);
        }
        let config = &federation.config;
        let deadlines = config.deadlines();
        let task_deadline = round.opened_at.plus(deadlines.training());
        let upload_deadline = task_deadline.plus(deadlines.upload());
        let key = RoundKey {
            federation: fed.clone(),
            round: round.number,
        };
        let strat = strategy::build(config.strategy(), config.secure_aggregation())
            .map_err(ApiError::internal)?;
        let mut acc = match strat.input_kind() {
            InputKind::Summed => Accumulator::Summed(StreamingSum::new(
                key.clone(),
                layout.num_params(),
                round.participants.iter().cloned(),
                strat.weighting(),
            )),
            InputKind::Individual => Accumulator::Individual(CollectedUpdates::new(
                key.clone(),
                layout.num_params(),
                round.participants.iter().cloned(),
            )),
        };
        if let Some(clip) = config.update_clip() {
            acc = match acc {
                Accumulator::Summed(s) => Accumulator::Summed(s.with_norm_bound(clip)),
                Accumulator::Individual(c) => Accumulator::Individual(c.with_norm_bound(clip)),
                secure => secure,
            };
        }
        if config.secure_aggregation() {
            // The scheduler planned (and charged) this round for exactly these participants;
            // a missing or mismatched plan is a bug, and the round aborts rather than run
            // with noise it was not charged for.
            let opened = match &secure_plan {
                // Keys come before training: the key stage is short, not the training's.
                Some(plan) => SecureRound::open(
                    round.number.get(),
                    &round.participants,
                    plan,
                    config,
                    round.opened_at.plus(deadlines.key_exchange()),
                ),
                None => Err("the scheduler made no plan for it".to_owned()),
            };
            match opened {
                Ok(secure) => acc = Accumulator::Secure(Box::new(secure)),
                Err(detail) => {
                    let (f, n) = (fed.clone(), round.number);
                    let reason = AbortReason::Failed {
                        detail: format!("secure aggregation cannot run: {detail}"),
                    };
                    let aborted = self
                        .blocking(move |s| s.abort_round(&f, n, &reason, Timestamp::now()))
                        .await?;
                    self.metrics.round_aborted();
                    lock(&self.last_closed).insert(fed.clone(), Instant::now());
                    tracing::info!(federation = %fed, round = %round.number, "round aborted: secure aggregation cannot run");
                    return self.round_view(&aborted, fed_eps).await;
                }
            }
        }
        let client_config = strat.configure_fit(round.number);
        let dp = config.dp_sgd();
        let template = Task {
            federation: cohort_protocol::FederationId::parse(fed.as_str())
                .map_err(ApiError::internal)?,
            round: RoundId::new(round.number.get()).map_err(ApiError::internal)?,
            model_version: round.base_version.get(),
            dp_sgd: DpSgdConfig {
                noise_multiplier: dp.noise_multiplier,
                clip_norm: dp.clip_norm,
                local_epochs: dp.local_epochs,
                batch_sample_rate: dp.batch_sample_rate,
            },
            update_clip: config.update_clip(),
            proximal_mu: client_config.proximal_mu,
            local_training: config.local_training().copied(),
            num_params: layout.num_params() as u64,
            upload_deadline_ms: millis(upload_deadline),
            epsilon_after_round: Epsilon::new(0.0).map_err(ApiError::internal)?,
            model_spec: (!federation.model_spec.is_null()).then(|| federation.model_spec.clone()),
            secure_aggregation: None,
        };
        let live = LiveRound {
            key,
            base_version: round.base_version,
            participants,
            contributed: HashSet::new(),
            acc: Some(acc),
            task_deadline,
            upload_deadline,
            opened: Instant::now(),
            bytes: 0,
            template,
            stage_changed: Arc::new(tokio::sync::Notify::new()),
            released: Default::default(),
        };
        lock(&self.live).insert(fed.clone(), Arc::new(tokio::sync::Mutex::new(live)));
        // Warm the download cache so the participants' concurrent downloads share one copy.
        if let Err(e) = self.model(fed, Some(round.base_version)).await {
            tracing::warn!(federation = %fed, error = %e, "could not preload the round's model");
        }
        tracing::info!(federation = %fed, round = %round.number, participants = round.participants.len(), "round opened");
        self.round_view(&round, fed_eps).await
    }

    /// A client's poll: its task if it is a participant of the open round that has not
    /// uploaded yet, else "wait" with `Retry-After`.
    pub async fn poll_task(
        &self,
        fed: &FederationId,
        fingerprint: &str,
        sample_count: Option<u64>,
    ) -> Result<TaskPoll, ApiError> {
        let client = self.client_for_cert(fed, fingerprint).await?;
        let (f, c) = (fed.clone(), client.id.clone());
        self.blocking(move |s| s.touch_client(&f, &c, sample_count, Timestamp::now()))
            .await?;
        if let Some(task) = self.evaluation_task(fed, &client.id).await? {
            return Ok(TaskPoll::Evaluate(task));
        }
        if let Some(lr) = self.live_round(fed) {
            let g = lr.lock().await;
            let now = Timestamp::now();
            if let Some(&eps) = g.participants.get(&client.id)
                && !g.contributed.contains(&client.id)
                && now < g.task_deadline
                // A secure round's task is useless once its key stage closed: the client could
                // no longer join the masks, and would only spend budget on a dropped round.
                && g
                    .secure()
                    .is_none_or(|s| s.stage() == SecAggStage::AdvertiseKeys)
            {
                let mut task = g.template.clone();
                task.epsilon_after_round = Epsilon::new(eps).map_err(ApiError::internal)?;
                task.secure_aggregation = g.secure().and_then(|s| s.task_for(&client.id));
                return Ok(TaskPoll::Train(task));
            }
        }
        let retry_after_s = self.settings.poll_retry_after_s;
        Ok(match self.ineligibility(fed, &client).await? {
            Some(reason) => TaskPoll::Ineligible {
                retry_after_s,
                reason,
            },
            None => TaskPoll::Wait { retry_after_s },
        })
    }

    /// Why the scheduler would not sample `client` into the next round, if it would not:
    /// its record-level budget cannot afford one more round (or cannot be verified).
    async fn ineligibility(
        &self,
        fed: &FederationId,
        client: &crate::domain::Client,
    ) -> Result<Option<String>, ApiError> {
        let f = fed.clone();
        let id = client.id.clone();
        let (federation, account) = self
            .blocking(move |s| {
                let account = s
                    .client_accounts(&f)?
                    .into_iter()
                    .find(|(c, _)| *c == id)
                    .map(|(_, a)| a);
                Ok((s.federation(&f)?, account))
            })
            .await?;
        let charge = crate::ledger::RoundCharge::for_config(&federation.config)
            .map_err(ApiError::internal)?;
        Ok(
            crate::ledger::admit_client::<DefaultAccountant>(client, account.as_ref(), &charge)
                .err()
                .map(|refusal| {
                    format!(
                        "client {} is not scheduled: its record-level budget cannot afford another round ({refusal})",
                        client.id
                    )
                }),
        )
    }

    /// Why an upload for `round` cannot go into the live round: the round does not exist
    /// (404), or it is closed (409: late if it was the latest, replayed if older).
    pub(super) async fn refuse_stale(&self, fed: &FederationId, round: RoundNumber) -> ApiError {
        let f = fed.clone();
        let found = self
            .blocking(move |s| Ok((s.round(&f, round)?, s.next_round_number(&f)?)))
            .await;
        match found {
            Ok((r, next)) => match r.state {
                RoundState::InProgress { .. } => ApiError::Conflict {
                    slug: "round-not-accepting",
                    detail: format!("round {round} is not accepting uploads on this server"),
                },
                _ if next.get() == round.get() + 1 => ApiError::Conflict {
                    slug: "late-upload",
                    detail: format!("round {round} has closed; late updates are never used"),
                },
                _ => ApiError::Conflict {
                    slug: "replayed-upload",
                    detail: format!(
                        "round {round} is an earlier round; updates are never mixed into another round"
                    ),
                },
            },
            Err(ApiError::NotFound(_)) => {
                ApiError::NotFound(format!("round {round} of federation {fed} does not exist"))
            }
            Err(e) => e,
        }
    }

    /// Validates an uploaded vector frame and adds it to the round's running sum. The body is
    /// received into a temporary file and read into memory only once an upload permit is
    /// held, so at most `upload_concurrency` update buffers exist at once however many
    /// clients upload, and no client's send waits on the permits.
    pub async fn upload(
        &self,
        fed: &FederationId,
        round: RoundNumber,
        fingerprint: &str,
        num_examples: Option<u64>,
        body: Body,
    ) -> Result<UploadReceipt, ApiError> {
        // Membership first: a certificate that is not a member must learn nothing about the
        // federation, not even whether it exists (403 either way, never 404).
        let client = self.client_for_cert(fed, fingerprint).await?;
        let federation = self.federation(fed).await?;
        if federation.config.secure_aggregation() {
            return Err(ApiError::Conflict {
                slug: "secure-aggregation-required",
                detail: format!(
                    "federation {fed} uses secure aggregation; plain updates are refused"
                ),
            });
        }
        let live = match self.live_round(fed) {
            Some(lr) if lr.lock().await.key.round == round => lr,
            _ => {
                self.metrics.upload_rejected();
                return Err(self.refuse_stale(fed, round).await);
            }
        };
        {
            let g = live.lock().await;
            // A round whose aggregate is being committed stays the live round until the commit
            // is stored, and its `contributed` still lists this client: without this check a
            // late re-upload in that window was answered as a duplicate.
            if g.finishing() {
                self.metrics.upload_rejected();
                return Err(aggregating_refusal(round));
            }
            if !g.participants.contains_key(&client.id) {
                self.metrics.upload_rejected();
                return Err(ApiError::Forbidden(format!(
                    "client {} was not sampled for round {round}",
                    client.id
                )));
            }
            if g.contributed.contains(&client.id) {
                self.metrics.upload_rejected();
                return Err(aggregate_error(AggregateError::Duplicate(
                    client.id.clone(),
                )));
            }
        }
        // Receive the whole body first (into a temporary file, not memory), then wait for a
        // permit: a body left unread behind the permits stalls the client's TCP send until
        // its keepalive aborts the connection (see `spool`).
        let spooled = spool::SpooledBody::receive(
            body,
            &self.settings.spool_dir,
            self.settings.max_body_bytes,
            &self.spool_writers,
        )
        .await
        .inspect_err(|_| self.metrics.upload_rejected())?;
        let _permit = self
            .upload_permits
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
        let mut lease = self.update_buffers.lease();
        lease.bytes = spooled.read_into(std::mem::take(&mut lease.bytes)).await?;
        let result = self
            .add_update(
                &live,
                fed,
                round,
                &client.id,
                num_examples.or(client.sample_count),
                &mut lease,
            )
            .await;
        match &result {
            Ok(_) => self.metrics.upload_accepted(lease.bytes.len()),
            Err(_) => self.metrics.upload_rejected(),
        }
        result
    }

    async fn add_update(
        &self,
        live: &tokio::sync::Mutex<LiveRound>,
        fed: &FederationId,
        round: RoundNumber,
        client: &ClientId,
        weight: Option<u64>,
        update: &mut spool::Lease<'_>,
    ) -> Result<UploadReceipt, ApiError> {
        let spool::Lease { bytes, values, .. } = update;
        let frame = FrameView::parse(bytes).map_err(frame_error)?;
        if frame.dtype() != Dtype::F32 {
            return Err(ApiError::InvalidInput(format!(
                "the update has dtype {}; this federation takes plain f32 updates",
                frame.dtype().name()
            )));
        }
        if let Some(i) = frame.first_non_finite() {
            return Err(aggregate_error(AggregateError::NonFinite(i)));
        }
        if !frame.f32_into(values) {
            return Err(ApiError::internal("f32 frame without f32 values"));
        }
        let values: &[f32] = values;
        let mut g = live.lock().await;
        if g.key.round != round {
            drop(g);
            return Err(self.refuse_stale(fed, round).await);
        }
        if Timestamp::now() >= g.upload_deadline {
            return Err(ApiError::Conflict {
                slug: "late-upload",
                detail: format!(
                    "the upload deadline of round {round} has passed; late updates are never used"
                ),
            });
        }
        let key = g.key.clone();
        match g.acc.as_mut() {
            Some(Accumulator::Summed(sum)) => {
                let w = weight.unwrap_or(0);
                sum.add(&key, client, values, w).map_err(|e| match e {
                    AggregateError::BadWeight(0) => ApiError::InvalidInput(
                        "FedAvg weights updates by sample count: send ?num_examples=N (N >= 1) with the upload".into(),
                    ),
                    other => aggregate_error(other),
                })?
            }
            Some(Accumulator::Individual(c)) => {
                c.add(&key, client, values).map_err(aggregate_error)?
            }
            Some(Accumulator::Secure(_)) => {
                return Err(ApiError::Conflict {
                    slug: "secure-aggregation-required",
                    detail: format!(
                        "federation {fed} uses secure aggregation; plain updates are refused"
                    ),
                });
            }
            None => return Err(aggregating_refusal(round)),
        }
        g.contributed.insert(client.clone());
        g.bytes += bytes.len() as u64;
        let accepted = u32::try_from(g.contributed.len()).unwrap_or(u32::MAX);
        if g.contributed.len() == g.participants.len() {
            self.wake.notify_one();
        }
        Ok(UploadReceipt {
            round: RoundId::new(round.get()).map_err(ApiError::internal)?,
            accepted,
        })
    }

    /// Ends `fed`'s live round: commits a new model if enough updates arrived, else aborts
    /// with the reason. Either way the ledger entries stay.
    async fn finish_round(&self, fed: &FederationId) -> Result<(), ApiError> {
        let Some(lr) = lock(&self.live).get(fed).cloned() else {
            return Ok(());
        };
        let (key, base_version, acc, failures, upload_secs, bytes, released) = {
            let mut g = lr.lock().await;
            let Some(acc) = g.acc.take() else {
                return Ok(());
            };
            let failures: Vec<FitFailure> = g
                .participants
                .keys()
                .filter(|c| !g.contributed.contains(*c))
                .map(|c| FitFailure {
                    client: c.clone(),
                    reason: "no update before the deadline".into(),
                })
                .collect();
            (
                g.key.clone(),
                g.base_version,
                acc,
                failures,
                g.opened.elapsed().as_secs_f64(),
                g.bytes,
                g.released.summary(),
            )
        };
        self.metrics.stage("upload", upload_secs);
        let federation = self.federation(fed).await?;
        let layout = self.layout(fed).await?;
        let min = federation.config.min_clients();
        let received = acc.contributors();
        let mut secure_metrics: Vec<(String, f64)> = released;
        if let Accumulator::Secure(s) = &acc {
            for (stage, secs) in s.stage_seconds() {
                secure_metrics.push((format!("secagg_{}_s", stage.as_str()), *secs));
            }
            secure_metrics.push(("secagg_threshold".into(), f64::from(s.threshold())));
            secure_metrics.push(("secagg_server_s".into(), s.server_seconds()));
            if s.noise_multiplier() > 0.0 {
                secure_metrics.push(("distributed_noise_multiplier".into(), s.noise_multiplier()));
            }
        }
        let started = Instant::now();
        let store = self.store.clone();
        let f = fed.clone();
        let config = federation.config.clone();
        let round_no = key.round;
        let result = tokio::task::spawn_blocking(move || -> Result<RoundState, ApiError> {
            let now = Timestamp::now();
            if let Accumulator::Secure(s) = &acc
                && let Some(detail) = s.failure()
            {
                let reason = AbortReason::Failed {
                    detail: detail.to_owned(),
                };
                return Ok(store.abort_round(&f, key.round, &reason, now)?.state);
            }
            if let Err(reason) = crate::sampling::check_received(received, min) {
                let r = store.abort_round(&f, key.round, &reason, now)?;
                return Ok(r.state);
            }
            let base = store.model_version(&f, base_version)?;
            let base_bytes = store.read_blob(&base.weights)?;
            let (_, current) =
                crate::model::ModelLayout::parse(&base_bytes).map_err(ApiError::internal)?;
            let mut strat = strategy::build(config.strategy(), config.secure_aggregation())
                .map_err(ApiError::internal)?;
            if let Some(state) = &base.strategy_state {
                let bytes = store.read_blob(state)?;
                strat
                    .restore_state(current.len(), &bytes)
                    .map_err(ApiError::internal)?;
            }
            let results = match acc {
                Accumulator::Summed(s) => {
                    let mut summed = s.finish();
                    // Client-level DP: the sum of clipped updates goes onto a lattice and
                    // gets exact discrete Gaussian noise, the mechanism the round's ledger
                    // entry charged (same plan, same dimension).
                    if let Some(noise) = crate::ledger::central_noise(&config, current.len())
                        .map_err(ApiError::internal)?
                    {
                        let mut sampler = noise.sampler().map_err(ApiError::internal)?;
                        noise
                            .apply(&mut summed.sum, &mut sampler)
                            .map_err(ApiError::internal)?;
                    }
                    FitResults::Summed(summed)
                }
                Accumulator::Individual(c) => FitResults::Individual(c.finish()),
                Accumulator::Secure(s) => {
                    // Under secure aggregation the clients' Skellam shares are the
                    // client-level noise; the server adds none and sees only the sum.
                    let secure = s.into_sum().map_err(ApiError::internal)?;
                    FitResults::Summed(secure.into_summed_updates()?)
                }
            };
            let mut metrics = RoundMetrics::new();
            metrics.insert("updates_accepted".into(), received as f64);
            metrics.insert("upload_bytes".into(), bytes as f64);
            metrics.insert("upload_stage_s".into(), upload_secs);
            metrics.extend(secure_metrics);
            match strat.aggregate_fit(key.round, &current, results, &failures) {
                Ok(new) => {
                    let weights = match &new {
                        Some(w) => Some(layout.serialize(w).map_err(ApiError::internal)?),
                        None => None,
                    };
                    let state = strat.state();
                    let completion = RoundCompletion {
                        new_model: weights.as_deref().map(|w| NewModel {
                            weights: w,
                            strategy_state: state.as_deref(),
                        }),
                        metrics,
                        completed_at: Timestamp::now(),
                    };
                    Ok(store.complete_round(&f, key.round, &completion)?.state)
                }
                Err(e) => {
                    let reason = AbortReason::Failed {
                        detail: e.to_string(),
                    };
                    Ok(store.abort_round(&f, key.round, &reason, now)?.state)
                }
            }
        })
        .await
        .map_err(ApiError::internal)?;
        lock(&self.live).remove(fed);
        lr.lock().await.stage_changed.notify_waiters();
        lock(&self.last_closed).insert(fed.clone(), Instant::now());
        self.metrics
            .stage("commit", started.elapsed().as_secs_f64());
        match result? {
            RoundState::Completed { version } => {
                self.metrics.round_completed();
                tracing::info!(federation = %fed, round = %round_no, ?version, received, "round completed");
            }
            RoundState::Aborted { reason } => {
                self.metrics.round_aborted();
                tracing::info!(federation = %fed, round = %round_no, %reason, "round aborted");
            }
            RoundState::InProgress { .. } => {}
        }
        Ok(())
    }

    /// One scheduler step: finish rounds that are due, open rounds whose interval passed.
    pub async fn tick(&self) {
        let now = Timestamp::now();
        let live: Vec<_> = lock(&self.live)
            .iter()
            .map(|(f, lr)| (f.clone(), lr.clone()))
            .collect();
        for (fed, lr) in live {
            self.advance_secure(&fed, &lr).await;
            let due = lr.lock().await.is_due(now);
            if due && let Err(e) = self.finish_round(&fed).await {
                tracing::error!(federation = %fed, error = %e, "finishing the round failed; aborting it");
                // Never retry a broken round: abort it (its ledger entries stand) so the
                // next round can open. If even that fails, the store aborts it as
                // "server restarted" at the next start.
                let number = lr.lock().await.key.round;
                let (f, detail) = (fed.clone(), e.to_string());
                let _ = self
                    .blocking(move |s| {
                        s.abort_round(
                            &f,
                            number,
                            &AbortReason::Failed { detail },
                            Timestamp::now(),
                        )
                    })
                    .await;
                lock(&self.live).remove(&fed);
                self.metrics.round_aborted();
            }
        }
        self.tick_evaluations().await;
        if self.settings.round_interval.is_zero() {
            return;
        }
        let Ok(feds) = self.federations().await else {
            return;
        };
        for fed in feds {
            if fed.state != FederationState::Active || self.live_round(&fed.id).is_some() {
                continue;
            }
            let ready = lock(&self.last_closed)
                .get(&fed.id)
                .is_none_or(|t| t.elapsed() >= self.settings.round_interval);
            if !ready {
                continue;
            }
            lock(&self.last_closed).insert(fed.id.clone(), Instant::now());
            if let Err(e) = self.open_round(&fed.id).await {
                tracing::debug!(federation = %fed.id, error = %e, "no round opened");
            }
        }
    }

    /// Runs [`Service::tick`] until `shutdown` resolves: every 200 ms, and at once when a
    /// round has all its updates.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                () = self.wake.notified() => {}
                () = &mut shutdown => return,
            }
            self.tick().await;
        }
    }
}
