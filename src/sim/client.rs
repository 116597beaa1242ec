//! A virtual client: the deployment's [`Participant`] with a seeded DP-SGD trainer and a
//! transport that injects the simulation's failures. It exists only for one round: its data
//! is cut from the shared training set when it trains, and all that outlives the round is
//! its privacy ledger on disk.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cohort_client::data::Dataset;
use cohort_client::dpsgd::danger;
use cohort_client::ledger::LocalLedger;
use cohort_client::model::ModelSpec;
use cohort_client::participant::transport::{Call, Transport, TransportError};
use cohort_client::participant::{
    LocalTrainer, Participant, Poll, RetryPolicy, RoundReport, TrainOutput, train_round,
};
use cohort_privacy::EpsDelta;
use cohort_protocol::messages::{Task, TaskPoll, UploadReceipt};
use cohort_protocol::secagg::{
    Directory, PublicKeys, Routed, SharesUpload, StagePoll, StageReceipt, UnmaskList, UnmaskShares,
};
use tokio::sync::{Notify, Semaphore};

use super::backend::SimTransport;
use super::seeds;

/// A stage of a round at which a client can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Local training (a straggler finishes after the upload deadline: the masked input's in a
    /// secure round, whose keys and shares went out before training).
    Training,
    /// SecAgg stage 2.
    Shares,
    /// The masked input (SecAgg stage 3) or the plain update.
    Upload,
    /// SecAgg stage 4.
    Unmask,
}

impl Stage {
    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Training => "training",
            Self::Shares => "shares",
            Self::Upload => "upload",
            Self::Unmask => "unmask",
        }
    }
}

/// How a client fails this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It stops answering at this stage (its spend still counts: it was reserved first).
    Dropout(Stage),
    /// It answers this stage only after the stage closed, and is refused as late.
    Straggler(Stage),
}

/// Orders plain uploads by rank so the server's floating-point running sum adds them in the
/// same order every run. Secure rounds sum integers mod 2^b, where order does not matter.
#[derive(Debug, Default)]
pub struct Turnstile {
    state: Mutex<(usize, BTreeSet<usize>)>,
    notify: Notify,
}

impl Turnstile {
    fn next(&self) -> usize {
        self.state.lock().map(|s| s.0).unwrap_or(usize::MAX)
    }

    /// Waits until every lower rank is done.
    pub async fn wait_turn(&self, rank: usize) {
        loop {
            let notified = self.notify.notified();
            if self.next() >= rank {
                return;
            }
            notified.await;
        }
    }

    /// Marks `rank` done (idempotent) and lets the next ranks through.
    pub fn done(&self, rank: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.1.insert(rank);
            loop {
                let next = s.0;
                if !s.1.remove(&next) {
                    break;
                }
                s.0 += 1;
            }
        }
        self.notify.notify_waiters();
    }
}

/// What a virtual client needs for one round.
#[derive(Debug)]
pub struct ClientJob {
    /// Its index in the partition.
    pub index: usize,
    /// Its position among this round's participants (upload order of plain rounds).
    pub rank: usize,
    /// The server's round number.
    pub round: u64,
    /// The round's failure, if any.
    pub fault: Option<Fault>,
    /// Its ledger file.
    pub ledger: PathBuf,
    /// Its record-level budget.
    pub budget: EpsDelta,
}

/// What every client of a round shares.
#[derive(Debug)]
pub struct RoundShared {
    /// The whole training split (a client selects its rows while training).
    pub data: Arc<Mutex<Dataset>>,
    /// Each client's example indices.
    pub partition: Arc<Vec<Vec<usize>>>,
    /// The architecture.
    pub spec: ModelSpec,
    /// Local learning rate.
    pub learning_rate: f64,
    /// The run's seed.
    pub seed: u64,
    /// The federation name (ledger labels).
    pub federation: String,
    /// Plain rounds: the upload order.
    pub turnstile: Option<Arc<Turnstile>>,
    /// Stage deadlines of the federation, seconds: (training, key exchange, upload, unmask).
    pub deadlines: [u64; 4],
    /// libtorch intra-op threads per training worker.
    pub threads: i32,
}

/// DP-SGD with every random draw seeded from the run's seed, the round and the client.
#[derive(Debug)]
struct SimTrainer {
    shared: Arc<RoundShared>,
    index: usize,
    round: u64,
    dropout: bool,
    /// Training slots: at most `workers` clients train at once.
    permits: Arc<Semaphore>,
}

impl SimTrainer {
    fn train_now(&self, global: &[u8], task: &Task) -> Result<TrainOutput, String> {
        if self.dropout {
            return Err("simulated dropout: the client stopped while training".into());
        }
        // OpenMP's thread count is per calling thread: set it on the thread that trains.
        tch::set_num_threads(self.shared.threads);
        let indices = &self.shared.partition[self.index];
        let data = {
            let all = self
                .shared
                .data
                .lock()
                .map_err(|_| "the shared data set is poisoned".to_owned())?;
            all.select(indices).map_err(|e| e.to_string())?
        };
        let (round, index, seed) = (self.round, self.index, self.shared.seed);
        let (output, _) = train_round(
            &self.shared.spec,
            tch::Device::Cpu,
            self.shared.learning_rate,
            &data,
            global,
            task,
            |trainer| {
                danger::replace_noise(
                    trainer,
                    Box::new(danger::seeded_gaussian(seeds::derive(
                        seed, "noise", round, index,
                    ))),
                );
                danger::seed_augmenter(trainer, seeds::derive(seed, "augment", round, index));
                danger::seed_sampler(trainer, seeds::derive(seed, "batches", round, index))
                    .map_err(|e| e.to_string())
            },
        )?;
        Ok(output)
    }
}

impl LocalTrainer for SimTrainer {
    fn train(&mut self, global: &[u8], task: &Task) -> Result<TrainOutput, String> {
        // Training is CPU-bound libtorch work: move it off the async workers (the server and
        // the other clients' SecAgg stages keep running) and give the worker slot back as
        // soon as it is done.
        // The slot is taken only now, not when the client starts: a secure round's clients
        // all exchange keys before any of them trains.
        tokio::task::block_in_place(|| {
            let permit = tokio::runtime::Handle::current()
                .block_on(self.permits.clone().acquire_owned())
                .map_err(|_| "the worker pool closed".to_owned())?;
            let result = self.train_now(global, task);
            drop(permit);
            result
        })
    }

    fn sample_count(&self) -> u64 {
        self.shared.partition[self.index].len() as u64
    }
}

fn simulated(stage: Stage) -> TransportError {
    TransportError::Status {
        status: 409,
        slug: Some("simulated-dropout".into()),
        detail: format!("simulated dropout at stage {}", stage.name()),
        retry_after: None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The client's transport with its failure injected.
#[derive(Debug)]
struct VirtualTransport {
    inner: SimTransport,
    fault: Option<Fault>,
    turnstile: Option<(Arc<Turnstile>, usize)>,
    deadlines: [u64; 4],
    upload_deadline_ms: Mutex<Option<u64>>,
}

impl VirtualTransport {
    fn is(&self, fault: Fault) -> bool {
        self.fault == Some(fault)
    }

    /// Out of the upload order: dropouts and stragglers must not hold the others back.
    fn leave_turnstile(&self) {
        if let Some((t, rank)) = &self.turnstile {
            t.done(*rank);
        }
    }

    async fn sleep_until_ms(&self, deadline_ms: u64) {
        let now = now_ms();
        if deadline_ms > now {
            tokio::time::sleep(Duration::from_millis(deadline_ms - now)).await;
        }
    }

    /// Waits until a stage's poll stops saying "wait": the stage closed without us.
    async fn wait_until_closed<'a, T>(&self, mut poll: impl FnMut() -> Call<'a, StagePoll<T>>) {
        loop {
            match poll().await {
                Ok(StagePoll::Wait { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => return,
            }
        }
    }
}

impl Transport for VirtualTransport {
    fn poll_task(&self, sample_count: Option<u64>) -> Call<'_, TaskPoll> {
        Box::pin(async move {
            let poll = self.inner.poll_task(sample_count).await?;
            if let TaskPoll::Train(task) = &poll
                && let Ok(mut g) = self.upload_deadline_ms.lock()
            {
                *g = Some(task.upload_deadline_ms);
            }
            Ok(poll)
        })
    }

    fn download_model(&self, version: u64) -> Call<'_, Vec<u8>> {
        self.inner.download_model(version)
    }

    fn upload_plain(&self, round: u64, frame: Vec<u8>, n: u64) -> Call<'_, UploadReceipt> {
        Box::pin(async move {
            if self.is(Fault::Dropout(Stage::Upload)) {
                self.leave_turnstile();
                return Err(simulated(Stage::Upload));
            }
            if self.is(Fault::Straggler(Stage::Training))
                || self.is(Fault::Straggler(Stage::Upload))
            {
                self.leave_turnstile();
                let deadline = self
                    .upload_deadline_ms
                    .lock()
                    .ok()
                    .and_then(|g| *g)
                    .unwrap_or(0);
                self.sleep_until_ms(deadline + 500).await;
            } else if let Some((t, rank)) = &self.turnstile {
                t.wait_turn(*rank).await;
            }
            self.inner.upload_plain(round, frame, n).await
        })
    }

    fn send_keys(&self, round: u64, keys: PublicKeys) -> Call<'_, StageReceipt> {
        self.inner.send_keys(round, keys)
    }

    fn poll_directory(&self, round: u64) -> Call<'_, StagePoll<Directory>> {
        self.inner.poll_directory(round)
    }

    fn send_shares(&self, round: u64, shares: SharesUpload) -> Call<'_, StageReceipt> {
        Box::pin(async move {
            if self.is(Fault::Dropout(Stage::Shares)) {
                return Err(simulated(Stage::Shares));
            }
            if self.is(Fault::Straggler(Stage::Shares)) {
                self.wait_until_closed(|| self.inner.poll_routed(round))
                    .await;
            }
            self.inner.send_shares(round, shares).await
        })
    }

    fn poll_routed(&self, round: u64) -> Call<'_, StagePoll<Routed>> {
        self.inner.poll_routed(round)
    }

    fn send_masked(&self, round: u64, frame: Vec<u8>) -> Call<'_, StageReceipt> {
        Box::pin(async move {
            if self.is(Fault::Dropout(Stage::Upload)) {
                return Err(simulated(Stage::Upload));
            }
            // Keys and shares went out before training: a training straggler is late with its
            // masked input, like an upload straggler.
            if self.is(Fault::Straggler(Stage::Training))
                || self.is(Fault::Straggler(Stage::Upload))
            {
                self.wait_until_closed(|| self.inner.poll_unmask(round))
                    .await;
            }
            self.inner.send_masked(round, frame).await
        })
    }

    fn poll_unmask(&self, round: u64) -> Call<'_, StagePoll<UnmaskList>> {
        self.inner.poll_unmask(round)
    }

    fn send_unmask(&self, round: u64, shares: UnmaskShares) -> Call<'_, StageReceipt> {
        Box::pin(async move {
            if self.is(Fault::Dropout(Stage::Unmask)) {
                return Err(simulated(Stage::Unmask));
            }
            if self.is(Fault::Straggler(Stage::Unmask)) {
                // The last stage has no later poll: wait out its deadline.
                tokio::time::sleep(Duration::from_millis(self.deadlines[3] * 1000 + 500)).await;
            }
            self.inner.send_unmask(round, shares).await
        })
    }
}

/// How one virtual client's round went.
#[derive(Debug)]
pub enum ClientOutcome {
    /// The participant ran the task (contributed, dropped or refused by its budget).
    Ran(RoundReport),
    /// It found no task (it was too late to the round).
    NoTask,
    /// The participant stopped with an error (a simulated training crash, a refused call).
    Failed(String),
}

/// Runs one virtual client through one round: waits for a training slot, builds the
/// participant, polls once, and is dropped.
pub async fn run_client(
    shared: Arc<RoundShared>,
    job: ClientJob,
    transport: SimTransport,
    permits: Arc<Semaphore>,
) -> ClientOutcome {
    let turnstile = shared.turnstile.clone().map(|t| (t, job.rank));
    let outcome = async {
        let ledger = match LocalLedger::open(&job.ledger, job.budget) {
            Ok(l) => l,
            Err(e) => return ClientOutcome::Failed(format!("local ledger: {e}")),
        };
        let trainer = SimTrainer {
            shared: shared.clone(),
            index: job.index,
            round: job.round,
            dropout: job.fault == Some(Fault::Dropout(Stage::Training)),
            permits,
        };
        let transport = VirtualTransport {
            inner: transport,
            fault: job.fault,
            turnstile: turnstile.clone(),
            deadlines: shared.deadlines,
            upload_deadline_ms: Mutex::new(None),
        };
        let retry = RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(500),
            give_up_after: Duration::from_secs(60),
        };
        let mut participant = Participant::new(transport, trainer, ledger, &shared.federation)
            .with_retry(retry)
            .danger_seed_encoding(seeds::derive32(shared.seed, "encode", job.round, job.index));
        match participant.poll_once().await {
            Ok(Poll::Round(report)) => ClientOutcome::Ran(report),
            Ok(_) => ClientOutcome::NoTask,
            Err(e) => ClientOutcome::Failed(e.to_string()),
        }
    }
    .await;
    if let Some((t, rank)) = turnstile {
        t.done(rank);
    }
    outcome
}
