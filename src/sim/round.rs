//! One simulated round: the server opens it and samples; the sampled virtual clients run on
//! the worker pool; the round closes; the global model is evaluated and the spend read back.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cohort_client::data::Dataset;
use cohort_client::model::ModelSpec;
use cohort_client::participant::RoundOutcome;
use cohort_privacy::EpsDelta;
use cohort_protocol::messages::{RoundState, RoundView};
use tokio::task::JoinSet;

use super::backend::{Backend, Credential};
use super::client::{ClientJob, ClientOutcome, Fault, RoundShared, Stage, Turnstile, run_client};
use super::config::SimConfig;
use super::{SimError, eval, seeds};
use crate::report::RoundRecord;

/// Everything a round needs that lives for the whole run.
pub(super) struct RunContext<'a> {
    pub config: &'a SimConfig,
    pub backend: &'a Backend,
    pub spec: &'a ModelSpec,
    pub test: &'a Dataset,
    pub train: Arc<Mutex<Dataset>>,
    pub partition: Arc<Vec<Vec<usize>>>,
    pub names: &'a [String],
    pub index_of: &'a HashMap<&'a str, usize>,
    pub budgets: &'a [EpsDelta],
    pub credentials: &'a [Credential],
    pub slowness: &'a [f64],
    pub ledgers: PathBuf,
}

/// Client `i`'s slowness factor: log-normal with σ = `faults.speed_sigma`, fixed for the run.
pub(super) fn slowness(config: &SimConfig, i: usize) -> f64 {
    let sigma = config.faults.speed_sigma;
    if sigma == 0.0 {
        return 1.0;
    }
    // Box–Muller from two seeded uniforms.
    let u1 = seeds::unit(seeds::derive(config.seed, "speed", 0, i)).max(f64::MIN_POSITIVE);
    let u2 = seeds::unit(seeds::derive(config.seed, "speed", 1, i));
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (sigma * z).exp()
}

/// The fault of client `i` in `round`: the first stage at which it drops out or straggles.
/// A straggler rate is scaled by the client's slowness (a client twice as slow misses
/// deadlines twice as often), capped at 1.
fn plan_fault(
    config: &SimConfig,
    round: u64,
    i: usize,
    slowness: f64,
    secure: bool,
) -> Option<Fault> {
    let stages: &[Stage] = if secure {
        &[Stage::Training, Stage::Shares, Stage::Upload, Stage::Unmask]
    } else {
        &[Stage::Training, Stage::Upload]
    };
    let f = &config.faults;
    for (k, &stage) in stages.iter().enumerate() {
        let (drop, late) = match stage {
            Stage::Training => (f.dropout.training, f.straggler.training),
            Stage::Shares => (f.dropout.shares, f.straggler.shares),
            Stage::Upload => (f.dropout.upload, f.straggler.upload),
            Stage::Unmask => (f.dropout.unmask, f.straggler.unmask),
        };
        let u = seeds::unit(seeds::derive(config.seed, "dropout", round, i * 8 + k));
        if u < drop {
            return Some(Fault::Dropout(stage));
        }
        let v = seeds::unit(seeds::derive(config.seed, "straggler", round, i * 8 + k));
        if v < (late * slowness).min(1.0) {
            return Some(Fault::Straggler(stage));
        }
    }
    None
}

/// One line per round for the terminal.
pub(super) fn line(r: &RoundRecord) -> String {
    let client_level = r
        .epsilon_client_level
        .map(|e| format!(", client-level epsilon {e:.3}"))
        .unwrap_or_default();
    format!(
        "round {:>3}: {}; accuracy {:.4}, loss {:.4}; record-level epsilon max {:.3} mean {:.3}{client_level}; {} of {} updates",
        r.round,
        r.status,
        r.accuracy,
        r.loss,
        r.epsilon_record_max,
        r.epsilon_record_mean,
        r.contributed,
        r.participants
    )
}

fn status(view: &RoundView) -> String {
    match view.state {
        RoundState::Completed => "completed".into(),
        RoundState::Aborted => format!(
            "aborted: {}",
            view.abort_reason.as_deref().unwrap_or("no reason given")
        ),
        _ => "open".into(),
    }
}

/// What a round attempt produced.
pub(super) enum RoundResult {
    /// The round ran (completed or aborted).
    Ran(RoundRecord),
    /// The federation refuses further rounds, for this reason.
    Stopped(String),
}

/// Runs one round.
pub(super) async fn run_round(
    ctx: &RunContext<'_>,
    previous: (f64, f64),
) -> Result<RoundResult, SimError> {
    let config = ctx.config;
    let secure = config.training.secure_aggregation();
    let mut stage_s = BTreeMap::new();
    let started = Instant::now();
    let view = match ctx.backend.open_round().await {
        Ok(v) => v,
        Err(SimError::Server(m)) if m.contains("stopped") => return Ok(RoundResult::Stopped(m)),
        Err(e) => return Err(e),
    };
    stage_s.insert("open".to_owned(), started.elapsed().as_secs_f64());
    let number = view.id.get();
    let participants: Vec<usize> = view
        .participants
        .iter()
        .filter_map(|c| ctx.index_of.get(c.as_str()).copied())
        .collect();
    let mut train_s: Vec<f64> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let view = if view.state == RoundState::Open {
        let clients_started = Instant::now();
        let d = config.training.deadlines();
        let shared = Arc::new(RoundShared {
            data: ctx.train.clone(),
            partition: ctx.partition.clone(),
            spec: ctx.spec.clone(),
            learning_rate: config.learning_rate,
            seed: config.seed,
            federation: super::backend::FEDERATION.to_owned(),
            turnstile: (!secure).then(|| Arc::new(Turnstile::default())),
            deadlines: [d.training_s, d.key_exchange_s, d.upload_s, d.unmask_s],
            threads: config.threads,
        });
        let permits = Arc::new(tokio::sync::Semaphore::new(config.workers));
        let mut set = JoinSet::new();
        let mut outcomes = Vec::with_capacity(participants.len());
        for (rank, &i) in participants.iter().enumerate() {
            // Plain rounds keep at most `workers` clients alive (each holds its update until
            // its turn to upload); secure rounds need every participant through the stages.
            while !secure && set.len() >= config.workers {
                if let Some(r) = set.join_next().await {
                    outcomes.push(r);
                }
            }
            let job = ClientJob {
                index: i,
                rank,
                round: number,
                fault: plan_fault(config, number, i, ctx.slowness[i], secure),
                ledger: ctx.ledgers.join(format!("{}.ledger.jsonl", ctx.names[i])),
                budget: ctx.budgets[i],
            };
            let transport = ctx.backend.transport(&ctx.credentials[i])?;
            set.spawn(run_client(shared.clone(), job, transport, permits.clone()));
        }
        while let Some(r) = set.join_next().await {
            outcomes.push(r);
        }
        for outcome in outcomes {
            match outcome {
                Ok(ClientOutcome::Ran(report)) => {
                    if report.outcome == RoundOutcome::Contributed {
                        train_s.push(report.training.as_secs_f64());
                    }
                }
                Ok(ClientOutcome::NoTask) => {
                    failures.push("a sampled client found no task".into());
                }
                // Simulated faults are the experiment; anything else is a problem to show.
                Ok(ClientOutcome::Failed(m)) if !m.contains("simulated") => failures.push(m),
                Ok(ClientOutcome::Failed(_)) => {}
                Err(e) => {
                    return Err(SimError::Server(format!("a virtual client panicked: {e}")));
                }
            }
        }
        if !participants.is_empty() && failures.len() == participants.len() {
            return Err(SimError::Server(format!(
                "every client of round {number} failed: {}",
                failures[0]
            )));
        }
        failures.sort();
        failures.dedup();
        for f in failures.iter().take(3) {
            eprintln!("round {number}: a client failed: {f}");
        }
        stage_s.insert(
            "clients".to_owned(),
            clients_started.elapsed().as_secs_f64(),
        );
        let closing = Instant::now();
        let view = ctx.backend.wait_closed(number).await?;
        stage_s.insert("close_wait".to_owned(), closing.elapsed().as_secs_f64());
        view
    } else {
        view
    };
    if !train_s.is_empty() {
        let mean = train_s.iter().sum::<f64>() / train_s.len() as f64;
        let max = train_s.iter().copied().fold(0.0, f64::max);
        stage_s.insert("train_mean".to_owned(), mean);
        stage_s.insert("train_max".to_owned(), max);
    }
    for (k, v) in &view.metrics {
        if let Some(stage) = k.strip_suffix("_s") {
            stage_s.insert(format!("server_{stage}"), *v);
        }
    }
    let evaluated = Instant::now();
    let (accuracy, loss) = if view.state == RoundState::Completed {
        let weights = ctx.backend.latest_model().await?;
        tokio::task::block_in_place(|| eval::evaluate(ctx.spec, &weights, ctx.test))
            .map_err(SimError::Model)?
    } else {
        previous
    };
    stage_s.insert("evaluate".to_owned(), evaluated.elapsed().as_secs_f64());
    let budgets = ctx.backend.budgets().await?;
    let spent: Vec<f64> = budgets.clients.iter().map(|c| c.spent.epsilon()).collect();
    let max = spent.iter().copied().fold(0.0, f64::max);
    let mean = if spent.is_empty() {
        0.0
    } else {
        spent.iter().sum::<f64>() / spent.len() as f64
    };
    stage_s.insert("round".to_owned(), started.elapsed().as_secs_f64());
    let client_level = budgets
        .federation_budget
        .map(|_| budgets.federation_spent.epsilon());
    let record = RoundRecord {
        round: number,
        status: status(&view),
        accuracy,
        loss,
        epsilon_record_max: max,
        epsilon_record_mean: mean,
        epsilon_client_level: client_level,
        participants: u32::try_from(view.participants.len()).unwrap_or(u32::MAX),
        contributed: view.accepted,
        stage_s,
    };
    Ok(RoundResult::Ran(record))
}
