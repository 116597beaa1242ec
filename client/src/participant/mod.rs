/*!
The participation loop: what `cohort join` runs at a hospital.

# Brief overview
A [`Participant`] polls its federation for a task, and for each task:
1. checks its **local** privacy budget and records the round's spend in its ledger (fsynced)
   *before* training — fail closed: a crash later still counts the round, and a round already
   recorded is never trained again, so the budget is never counted twice nor undercounted;
2. downloads the global model and, meanwhile, runs SecAgg+ stages 1–2 (advertise keys, send
   the encrypted shares: [`secure::share_keys`]), which do not depend on the update;
3. trains locally with DP-SGD ([`LocalTrainer`]);
4. computes Δ = w_local − w_global, clips it to the round's update clip, adds its share of the
   distributed Skellam noise and quantises it ([`secure::encode_update`]);
5. masks and uploads it and answers the unmask request ([`secure::finish_secure_round`]), or
   uploads Δ in the clear when the federation opted out of secure aggregation.

With [`Participant::with_metrics_release`], after training it also releases the round's
training loss, accuracy and example count through `cohort_privacy::release` (opendp's Gaussian
mechanism): the release's (ε, δ) is charged to the local ledger (fsynced) before any noise is
drawn, nothing is sent when the ledger refuses, and the noised values go to the server.

All server calls go through the [`Transport`] trait: [`https::HttpsTransport`] over mutual
TLS, or an in-process implementation for a simulator. Calls are retried with exponential
backoff and jitter; every message is safe to re-send.
*/

pub mod evaluation;
pub mod https;
pub mod secure;
pub mod trainer;
pub mod transport;

use std::time::{Duration, Instant};

use cohort_privacy::EpsDelta;
use cohort_privacy::release::{MetricsRelease, ReleaseError, Statistic};
use cohort_privacy::secagg::SecAggError;
use cohort_protocol::frame::encode_f32;
use cohort_protocol::messages::{MetricsUpload, ReleasedMetric, Task, TaskPoll};

use crate::ledger::{LedgerError, LocalLedger};
pub use evaluation::{EvaluationOutcome, EvaluationReport, HeldOut};
pub use secure::{RetryPolicy, SecureOutcome, SecureReport};
pub use trainer::{
    DpSgdTrainer, LocalMetrics, LocalTrainer, MAX_RELEASED_LOSS, TrainOutput, train_round,
};
pub use transport::{Transport, TransportError};

/// Why the participant could not complete an operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum ParticipantError {
    /// The server could not be reached, or refused a call.
    Transport(TransportError),
    /// The local ledger failed (I/O or corruption): no training happens.
    Ledger(LedgerError),
    /// The task's parameters are inconsistent.
    BadTask(String),
    /// The trained update cannot be encoded (NaN, wrong length).
    BadUpdate(String),
    /// Local training failed.
    Training(String),
    /// The OS random generator failed: nothing is sent without secure randomness.
    Randomness(String),
    /// The server broke the SecAgg protocol (this client stops revealing anything).
    SecAgg(SecAggError),
    /// The server's messages do not decode or come out of order.
    Protocol(String),
}

impl std::fmt::Display for ParticipantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "{e}"),
            Self::Ledger(e) => write!(f, "local privacy ledger: {e}"),
            Self::BadTask(m) => write!(f, "the task is inconsistent: {m}"),
            Self::BadUpdate(m) => write!(f, "the update cannot be sent: {m}"),
            Self::Training(m) => write!(f, "local training failed: {m}"),
            Self::Randomness(m) => write!(f, "secure randomness unavailable: {m}"),
            Self::SecAgg(e) => write!(f, "secure aggregation: {e}"),
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for ParticipantError {}

impl From<TransportError> for ParticipantError {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}

impl From<SecAggError> for ParticipantError {
    fn from(e: SecAggError) -> Self {
        Self::SecAgg(e)
    }
}

impl From<LedgerError> for ParticipantError {
    fn from(e: LedgerError) -> Self {
        Self::Ledger(e)
    }
}

/// How one task ended for this client.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RoundOutcome {
    /// The update went into the round (masked or plain).
    Contributed,
    /// The round went on or ended without this client's update; the spend still counts.
    Dropped(String),
    /// The local budget does not allow this round: nothing was trained or sent.
    BudgetRefused(String),
    /// This round was already recorded in the ledger (a restart mid-round): it is not trained
    /// again, so its spend is neither repeated nor lost.
    AlreadyAttempted,
}

/// The largest example count a client may release (the count's declared upper bound).
pub const MAX_RELEASED_COUNT: u64 = 10_000_000;

/// What became of a round's metrics release.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MetricsOutcome {
    /// No release was asked for.
    NotRequested,
    /// The trainer had no metrics to release (nothing charged, nothing sent).
    Unavailable,
    /// Charged to the local ledger, then sent.
    Released(EpsDelta),
    /// The local ledger refused the charge: nothing was released or sent.
    Refused(String),
    /// Charged, but the server did not take it (the charge stands: fail closed).
    NotSent(String),
    /// The release could not be prepared (nothing charged, nothing sent).
    Failed(String),
}

/// One line's worth of what a round did, with the time split the benchmarks report.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundReport {
    /// The round.
    pub round: u64,
    /// How it ended.
    pub outcome: RoundOutcome,
    /// Local ε after the round (at the budget's δ), from the local ledger.
    pub epsilon_spent: f64,
    /// Model download time.
    pub download: Duration,
    /// Local training time.
    pub training: Duration,
    /// SecAgg client compute (encoding, keys, shares, masking).
    pub secagg_compute: Duration,
    /// Time in upload calls.
    pub transfer: Duration,
    /// Time waiting for stages to close.
    pub waiting: Duration,
    /// The round's metrics release.
    pub metrics: MetricsOutcome,
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// Nothing to do; ask again after this long.
    Wait(Duration),
    /// A task was run.
    Round(RoundReport),
    /// An evaluation task was answered (or refused by the local budget).
    Evaluated(EvaluationReport),
    /// The server does not schedule this client, and says why (an exhausted budget).
    Ineligible {
        /// The server's reason.
        reason: String,
        /// When to ask again.
        retry: Duration,
    },
}

/// A federation member: transport, trainer and local ledger.
#[derive(Debug)]
pub struct Participant<T, L> {
    transport: T,
    trainer: L,
    ledger: LocalLedger,
    federation: String,
    retry: RetryPolicy,
    /// A known seed for the update's encoding randomness (simulations only).
    encoding_seed: Option<[u8; 32]>,
    metrics_release: Option<EpsDelta>,
    /// Evaluations answered by this process (noise-off ones leave no ledger line).
    answered: std::collections::BTreeSet<u64>,
}

impl<T: Transport, L: LocalTrainer> Participant<T, L> {
    /// A participant of `federation` (the ledger labels rounds with it).
    pub fn new(transport: T, trainer: L, ledger: LocalLedger, federation: &str) -> Self {
        Self {
            transport,
            trainer,
            ledger,
            federation: federation.to_owned(),
            retry: RetryPolicy::default(),
            encoding_seed: None,
            metrics_release: None,
            answered: Default::default(),
        }
    }

    /// Takes the secure update's stochastic rounding and Skellam noise from `seed` instead of
    /// the OS, so that a simulation replays bit for bit. Anyone who knows the seed can remove
    /// this client's noise: never use it outside a simulator (grep for `danger`).
    pub fn danger_seed_encoding(mut self, seed: [u8; 32]) -> Self {
        self.encoding_seed = Some(seed);
        self
    }

    /// Releases each round's training metrics with DP, spending `per_round` of the local
    /// budget on them every round (charged before release).
    pub fn with_metrics_release(mut self, per_round: EpsDelta) -> Self {
        self.metrics_release = Some(per_round);
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The local ledger.
    pub fn ledger(&self) -> &LocalLedger {
        &self.ledger
    }

    /// Why this client cannot afford another round of the given DP-SGD settings under its
    /// local budget, if it cannot (what `cohort join` prints when it stops).
    pub fn local_refusal(&self, dp: &cohort_protocol::messages::DpSgdConfig) -> Option<String> {
        let steps = dp.steps_per_round();
        let budget = self.ledger.budget();
        match self
            .ledger
            .projected_epsilon(dp.noise_multiplier, dp.batch_sample_rate, steps)
        {
            Ok(p) if p <= budget.epsilon() => None,
            Ok(p) => Some(format!(
                "one more round would bring local epsilon to {p:.3}, over the budget {} (delta {})",
                budget.epsilon(),
                budget.delta()
            )),
            Err(e) => Some(format!("the local ledger cannot be verified: {e}")),
        }
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The trainer, to reconfigure it (tests and simulators).
    pub fn trainer_mut(&mut self) -> &mut L {
        &mut self.trainer
    }

    /// The transport, to reconfigure it (tests and simulators).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    fn label(&self, round: u64) -> String {
        format!("{}/round-{round}", self.federation)
    }

    /// Polls once; runs the task if there is one.
    pub async fn poll_once(&mut self) -> Result<Poll, ParticipantError> {
        let sample_count = Some(self.trainer.sample_count());
        let poll =
            secure::with_retries(&self.retry, || self.transport.poll_task(sample_count)).await?;
        match poll {
            TaskPoll::Train(task) => Ok(Poll::Round(self.run_task(task).await?)),
            TaskPoll::Evaluate(task) => Ok(Poll::Evaluated(self.run_evaluation(task).await?)),
            TaskPoll::Wait { retry_after_s } => {
                Ok(Poll::Wait(Duration::from_secs(retry_after_s.max(1))))
            }
            TaskPoll::Ineligible {
                retry_after_s,
                reason,
            } => Ok(Poll::Ineligible {
                reason,
                retry: Duration::from_secs(retry_after_s.max(1)),
            }),
            _ => Ok(Poll::Wait(Duration::from_secs(5))),
        }
    }

    fn report(&self, round: u64, outcome: RoundOutcome) -> RoundReport {
        RoundReport {
            round,
            outcome,
            epsilon_spent: self.ledger.spent_epsilon().unwrap_or(f64::INFINITY),
            download: Duration::ZERO,
            training: Duration::ZERO,
            secagg_compute: Duration::ZERO,
            transfer: Duration::ZERO,
            waiting: Duration::ZERO,
            metrics: MetricsOutcome::NotRequested,
        }
    }

    /// Charges, noises and sends the last training's metrics (see the module docs).
    async fn release_metrics(&mut self, round: u64, per_round: EpsDelta) -> MetricsOutcome {
        let Some(m) = self.trainer.metrics() else {
            return MetricsOutcome::Unavailable;
        };
        let n = m.examples.max(1);
        let prepared = match MetricsRelease::gaussian(per_round)
            .statistic(Statistic::mean_loss(m.mean_loss, MAX_RELEASED_LOSS, n))
            .statistic(Statistic::accuracy(m.accuracy, n))
            .statistic(Statistic::count("examples", m.examples, MAX_RELEASED_COUNT))
            .prepare()
        {
            Ok(p) => p,
            Err(e) => return MetricsOutcome::Failed(e.to_string()),
        };
        let label = format!("{}/metrics", self.label(round));
        let ledger = &mut self.ledger;
        let released = match prepared
            .release_after_charging(|cost| ledger.record_release(&label, cost).map(|_| ()))
        {
            Ok(r) => r,
            Err(ReleaseError::ChargeRefused(why)) => return MetricsOutcome::Refused(why),
            Err(e) => return MetricsOutcome::Failed(e.to_string()),
        };
        let upload = MetricsUpload {
            values: released
                .values()
                .iter()
                .map(|v| ReleasedMetric {
                    name: v.name.clone(),
                    value: v.value,
                    noise_std: v.noise_std,
                })
                .collect(),
            charged: released.charged(),
        };
        match secure::with_retries(&self.retry, || {
            self.transport.send_metrics(round, upload.clone())
        })
        .await
        {
            Ok(()) => MetricsOutcome::Released(released.charged()),
            Err(e) => MetricsOutcome::NotSent(e.to_string()),
        }
    }

    fn add_secure(report: &mut RoundReport, s: &SecureReport) {
        report.secagg_compute += s.compute;
        report.transfer += s.transfer;
        report.waiting += s.waiting;
    }

    /// Runs one task: budget check and reservation, then SecAgg keys and shares while the
    /// model downloads, training, and the masked (or plain) upload.
    pub async fn run_task(&mut self, task: Task) -> Result<RoundReport, ParticipantError> {
        let round = task.round.get();
        let label = self.label(round);
        if self.ledger.entries().iter().any(|e| e.label == label) {
            return Ok(self.report(round, RoundOutcome::AlreadyAttempted));
        }
        let dp = task.dp_sgd;
        let steps = dp.steps_per_round();
        match self
            .ledger
            .reserve(&label, dp.noise_multiplier, dp.batch_sample_rate, steps)
        {
            Ok(_) => {}
            Err(e @ LedgerError::BudgetExceeded { .. }) => {
                return Ok(self.report(round, RoundOutcome::BudgetRefused(e.to_string())));
            }
            Err(e) => return Err(e.into()),
        }
        let mut report = self.report(round, RoundOutcome::Contributed);

        // SecAgg stages 1–2 (keys, shares) do not depend on the update: run them while the
        // model downloads, so that the key stage closes when every client has its task, not
        // when the slowest has trained.
        let version = task.model_version;
        let download = async {
            let started = Instant::now();
            let global =
                secure::with_retries(&self.retry, || self.transport.download_model(version)).await;
            (global, started.elapsed())
        };
        let (downloaded, keys) = match &task.secure_aggregation {
            Some(secagg) => {
                let exchange = secure::share_keys(&self.transport, round, secagg, &self.retry);
                let (downloaded, keys) = tokio::join!(download, exchange);
                (downloaded, Some(keys?))
            }
            None => (download.await, None),
        };
        let (global, took) = downloaded;
        report.download = took;
        let keys = match keys {
            Some(secure::KeyExchange::Dropped(s)) => {
                // Out of the round before training: nothing to train for. The spend recorded
                // above stands (fail closed).
                Self::add_secure(&mut report, &s);
                if let SecureOutcome::Dropped(why) = s.outcome {
                    report.outcome = RoundOutcome::Dropped(why);
                }
                report.epsilon_spent = self.ledger.spent_epsilon()?;
                return Ok(report);
            }
            Some(secure::KeyExchange::Shared(k)) => Some(k),
            None => None,
        };
        let global = global?;

        let started = Instant::now();
        let trained = self
            .trainer
            .train(&global, &task)
            .map_err(ParticipantError::Training)?;
        report.training = started.elapsed();
        drop(global);
        // Before the upload, while the round is certainly still open on the server.
        if let Some(per_round) = self.metrics_release {
            report.metrics = self.release_metrics(round, per_round).await;
        }

        match (&task.secure_aggregation, keys) {
            (Some(secagg), Some(keys)) => {
                let started = Instant::now();
                let input = match self.encoding_seed {
                    Some(seed) => {
                        secure::danger::encode_update_seeded(&trained.delta, secagg, seed)?
                    }
                    None => secure::encode_update(&trained.delta, secagg)?,
                };
                report.secagg_compute = started.elapsed();
                drop(trained);
                let s =
                    secure::finish_secure_round(&self.transport, secagg, keys, input, &self.retry)
                        .await?;
                Self::add_secure(&mut report, &s);
                if let SecureOutcome::Dropped(why) = s.outcome {
                    report.outcome = RoundOutcome::Dropped(why);
                }
            }
            (Some(_), None) => {
                // Unreachable today (keys are shared for every secure task above), but a secure
                // task must never fall through to a plain upload: fail closed.
                return Err(ParticipantError::Protocol(
                    "a secure task reached upload without its key exchange".into(),
                ));
            }
            (None, _) => {
                let mut delta = trained.delta;
                if let Some(clip) = task.update_clip {
                    clip_l2(&mut delta, clip);
                }
                let frame = encode_f32(&delta);
                let n = trained.num_examples.max(1);
                let started = Instant::now();
                let sent = secure::with_retries(&self.retry, || {
                    self.transport.upload_plain(round, frame.clone(), n)
                })
                .await;
                report.transfer = started.elapsed();
                match sent {
                    Ok(_) => {}
                    Err(TransportError::Status {
                        status: 409 | 404,
                        detail,
                        ..
                    }) => report.outcome = RoundOutcome::Dropped(detail),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        report.epsilon_spent = self.ledger.spent_epsilon()?;
        Ok(report)
    }
}

/// Scales `v` down to L2 norm `clip` if it is longer.
pub fn clip_l2(v: &mut [f32], clip: f64) {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > clip && norm > 0.0 {
        let f = (clip / norm) as f32;
        v.iter_mut().for_each(|x| *x *= f);
    }
}

impl std::fmt::Display for RoundReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.outcome {
            RoundOutcome::Contributed => "contributed".to_owned(),
            RoundOutcome::Dropped(why) => format!("dropped ({why})"),
            RoundOutcome::BudgetRefused(why) => format!("refused: {why}"),
            RoundOutcome::AlreadyAttempted => {
                "already attempted before a restart; not trained again".to_owned()
            }
        };
        let metrics = match &self.metrics {
            MetricsOutcome::NotRequested | MetricsOutcome::Unavailable => String::new(),
            MetricsOutcome::Released(c) => format!(
                "; metrics released (epsilon {:.3}, delta {})",
                c.epsilon(),
                c.delta()
            ),
            MetricsOutcome::Refused(why) => format!("; metrics not released: {why}"),
            MetricsOutcome::NotSent(why) => format!("; metrics charged but not sent: {why}"),
            MetricsOutcome::Failed(why) => format!("; metrics not released: {why}"),
        };
        write!(
            f,
            "round {}: {what}; local epsilon spent {:.3}; train {:.2}s, secagg {:.2}s, upload {:.2}s, waiting {:.2}s{metrics}",
            self.round,
            self.epsilon_spent,
            self.training.as_secs_f64(),
            self.secagg_compute.as_secs_f64(),
            self.transfer.as_secs_f64(),
            self.waiting.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_scales_long_vectors_only() {
        let mut v = vec![3.0, 4.0];
        clip_l2(&mut v, 1.0);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut w = vec![0.3, 0.4];
        clip_l2(&mut w, 1.0);
        assert_eq!(w, vec![0.3, 0.4]);
    }
}
