/*!
`cohort demo`: a federation of hospitals on this machine, every party a separate OS process.

# Brief overview
The driver plays the federation operator. It deals a CSV table out to `N` hospitals
([`shards`]), makes a development CA and the server's certificate with the same code as
`cohort pki` ([`cohort_server::pki::PkiDir`]), starts `cohort serve` on a free loopback port,
creates the federation and invites the hospitals over the admin API ([`admin`]), and starts one
`cohort join` per hospital, each with its own identity directory, one-time token, local
privacy ledger and data file ([`process`] supervises them). Then it opens each round, waits
for it to complete, evaluates the new global model on every hospital's held-out records
([`eval`]) and reads each hospital's ε from the server's budgets API. Nothing here trains or
aggregates: the children run the deployment code unchanged.

Every child runs in its own process group and is stopped (SIGINT, then SIGKILL) when the
driver returns, fails, panics or is interrupted. Everything is written under one work dir.
*/

pub mod admin;
pub mod eval;
mod fleet;
mod output;
pub mod process;
pub mod shards;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cohort_client::model::ModelSpec;
use cohort_privacy::EpsDelta;
use cohort_privacy::accounting::{AccountantKind, noise_multiplier_for};
use cohort_protocol::messages::{BudgetsView, RoundState};

pub use output::{HospitalRow, RoundRecord, Summary};

/// The federation's name on the demo server.
pub const FEDERATION: &str = "breast-cancer";

/// A file that marks a directory as the demo's own, so a rerun may clear it.
const MARKER: &str = ".cohort-demo";

/// Everything the demo needs, validated by the caller (`cohort demo` or an example).
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The work dir (cleared first if a previous demo made it).
    pub out: PathBuf,
    /// Rounds to train.
    pub rounds: u32,
    /// Hospitals (clients), each a `cohort join` process.
    pub hospitals: usize,
    /// The record-level ε every hospital may spend, and what σ is calibrated to.
    pub epsilon: f64,
    /// δ of every budget.
    pub delta: f64,
    /// Budgets that differ from `epsilon`: (hospital index from 0, ε).
    pub budget_overrides: Vec<(usize, f64)>,
    /// DP-SGD and federation settings.
    pub training: Training,
    /// The CSV table (text) and its label column.
    pub table: String,
    /// The label column of `table`.
    pub label: String,
    /// Fraction of each hospital's rows held out for evaluation.
    pub test_fraction: f64,
    /// Seeds the deal of rows, the splits and the initial model.
    pub seed: u64,
    /// Keep the server running after training until Ctrl-C.
    pub keep_serving: bool,
    /// The executable whose `serve` and `join` subcommands the children run.
    pub program: PathBuf,
}

impl DemoConfig {
    /// The demo's defaults: five hospitals sharing the vendored breast-cancer table, 20 rounds,
    /// ε = 2 per hospital at δ = 1e-5, children started from `program`, everything under `out`.
    pub fn breast_cancer(out: PathBuf, program: PathBuf) -> Self {
        Self {
            out,
            rounds: 20,
            hospitals: 5,
            epsilon: 2.0,
            delta: 1e-5,
            budget_overrides: Vec::new(),
            training: Training::default(),
            table: shards::BREAST_CANCER_CSV.to_owned(),
            label: shards::BREAST_CANCER_LABEL.to_owned(),
            test_fraction: 0.2,
            seed: 1,
            keep_serving: false,
            program,
        }
    }
}

/// For programs other than `cohort` that drive the demo (the examples): the children are the
/// same executable started as `PROGRAM serve ...` or `PROGRAM join ...`. Call this first in
/// `main`; when it returns `Some`, this process is a child and that is its exit code.
pub fn child_role() -> Option<std::process::ExitCode> {
    let first = std::env::args_os().nth(1)?;
    matches!(first.to_str(), Some("serve" | "join")).then(|| crate::cli::run(crate::cli::parse()))
}

/// DP-SGD and aggregation settings of the federation.
#[derive(Debug, Clone, PartialEq)]
pub struct Training {
    /// σ; `None` calibrates it so that `rounds` rounds spend the whole budget `epsilon`.
    pub noise_multiplier: Option<f64>,
    /// Per-example gradient clip C.
    pub clip_norm: f64,
    /// Local epochs per round.
    pub local_epochs: u32,
    /// Expected Poisson batch size; q = 1/k with k = round(smallest hospital's training
    /// records / batch).
    pub batch_size: f64,
    /// Local SGD learning rate.
    pub learning_rate: f64,
    /// L2 clip of each hospital's update (the secure-aggregation quantiser's range).
    pub update_clip: f64,
    /// Hidden layer widths of the MLP (empty: logistic regression).
    pub hidden: Vec<i64>,
}

/// The demo's settings, chosen by a sweep over learning rate, batch and epochs on several seeds
/// (docs/benchmarks.md, "The five-hospital demo").
impl Default for Training {
    fn default() -> Self {
        Self {
            noise_multiplier: None,
            clip_norm: 1.0,
            local_epochs: 2,
            batch_size: 32.0,
            learning_rate: 0.3,
            update_clip: 2.0,
            hidden: Vec::new(),
        }
    }
}

/// How the demo ended badly.
#[derive(Debug)]
pub enum DemoError {
    /// A setting cannot work; the message says which and how to fix it.
    Usage(String),
    /// Something failed while running; the message says what and where to look.
    Failed(String),
    /// Ctrl-C or SIGTERM; every child was stopped.
    Interrupted,
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usage(m) | Self::Failed(m) => f.write_str(m),
            Self::Interrupted => f.write_str("interrupted; every child process was stopped"),
        }
    }
}

impl std::error::Error for DemoError {}

fn failed(m: impl Into<String>) -> DemoError {
    DemoError::Failed(m.into())
}

/// The DP-SGD parameters the federation runs with, after calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpPlan {
    /// σ.
    pub noise_multiplier: f64,
    /// q.
    pub sample_rate: f64,
    /// DP-SGD steps each round charges (⌈E / q⌉, as the server and clients count them).
    pub steps_per_round: u64,
}

/// Picks q from the smallest hospital (so its batches hold about `batch_size` records) and σ
/// from the budget (when not given): the smallest σ
/// whose `rounds` rounds stay within `epsilon` under the RDP accountant that both the server's
/// ledger and each hospital's local ledger use.
pub fn plan_dp(config: &DemoConfig, smallest_train: i64) -> Result<DpPlan, DemoError> {
    let t = &config.training;
    // q = 1/k, so that a round is E whole epochs of k Poisson batches: ⌈E/q⌉ = E·k steps,
    // which the hospitals train and both ledgers charge.
    let batches = (smallest_train.max(1) as f64 / t.batch_size)
        .round()
        .max(1.0);
    let sample_rate = 1.0 / batches;
    let steps_per_round =
        cohort_protocol::messages::dp_sgd_steps_per_round(t.local_epochs, sample_rate);
    let noise_multiplier = match t.noise_multiplier {
        Some(s) => s,
        None => {
            // A hair under the budget: the ledgers compose round by round, and float rounding
            // must not make the last planned round look one ulp over.
            let target = EpsDelta::new(config.epsilon * (1.0 - 1e-6), config.delta)
                .map_err(|e| DemoError::Usage(format!("--epsilon/--delta: {e}")))?;
            let steps = steps_per_round.saturating_mul(u64::from(config.rounds));
            noise_multiplier_for(target, sample_rate, steps, AccountantKind::Rdp).map_err(|e| {
                DemoError::Usage(format!(
                    "no noise multiplier fits ε {} over {} rounds: {e}; raise --epsilon or lower --rounds",
                    config.epsilon, config.rounds
                ))
            })?
        }
    };
    Ok(DpPlan {
        noise_multiplier,
        sample_rate,
        steps_per_round,
    })
}

/// Empties (or creates) the work dir; refuses a non-empty directory the demo did not make.
fn prepare_out(out: &Path) -> Result<(), DemoError> {
    if out.exists() {
        let ours = out.join(MARKER).exists();
        let empty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !ours && !empty {
            return Err(DemoError::Usage(format!(
                "{} exists and was not made by cohort demo: choose a new or empty --out directory",
                out.display()
            )));
        }
        std::fs::remove_dir_all(out)
            .map_err(|e| failed(format!("cannot clear {}: {e}", out.display())))?;
    }
    std::fs::create_dir_all(out)
        .map_err(|e| failed(format!("cannot create {}: {e}", out.display())))?;
    std::fs::write(
        out.join(MARKER),
        "made by cohort demo; rerunning the demo clears this directory\n",
    )
    .map_err(|e| failed(format!("cannot write in {}: {e}", out.display())))
}

/// The model every hospital trains: an MLP over the table's features.
pub fn model_spec(features: i64, classes: i64, hidden: &[i64]) -> ModelSpec {
    ModelSpec::mlp(features, hidden, classes)
}

/// Runs the demo to the end (or to Ctrl-C) and returns what it measured.
pub fn run(config: &DemoConfig) -> Result<Summary, DemoError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| failed(format!("cannot watch SIGTERM: {e}")))?;
        // Dropping the driver's future (on a signal) drops its children's handles, which stop
        // their process groups.
        let (summary, mut fleet) = tokio::select! {
            r = fleet::drive(config) => r?,
            _ = tokio::signal::ctrl_c() => return Err(DemoError::Interrupted),
            _ = term.recv() => return Err(DemoError::Interrupted),
        };
        if config.keep_serving {
            println!("the server keeps running; press Ctrl-C to stop it");
            tokio::select! {
                why = fleet.server_exited() => return Err(failed(why)),
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        fleet.server.stop();
        Ok(summary)
    })
}

/// The hospitals' names, `hospital-1` … `hospital-N`.
pub fn hospital_name(index: usize) -> String {
    format!("hospital-{}", index + 1)
}

/// Waits for `f` to hold, polling every 100 ms, up to `limit`.
async fn wait_until<F: FnMut() -> Result<bool, DemoError>>(
    limit: Duration,
    what: &str,
    mut f: F,
) -> Result<(), DemoError> {
    let started = Instant::now();
    loop {
        if f()? {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(failed(format!(
                "timed out after {}s waiting for {what}",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the federation can run another round: enough eligible hospitals.
fn eligible(budgets: &BudgetsView) -> usize {
    budgets
        .clients
        .iter()
        .filter(|c| c.status.as_str() == "eligible")
        .count()
}

fn state_name(s: RoundState) -> &'static str {
    match s {
        RoundState::Open => "open",
        RoundState::Completed => "completed",
        RoundState::Aborted => "aborted",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cohort_client::ledger::LocalLedger;

    /// Every planned round fits a hospital's own ledger, reserved round by round exactly as
    /// `cohort join` does, and the plan spends nearly all of the budget.
    #[test]
    fn the_planned_sigma_lets_every_round_through_the_local_ledger() {
        let mut c = DemoConfig::breast_cancer(PathBuf::new(), PathBuf::new());
        for (rounds, epochs, smallest, batch) in [
            (20, 2, 91, 32.0),
            (2, 1, 91, 32.0),
            (8, 1, 114, 32.0),
            (7, 3, 50, 16.0),
        ] {
            c.rounds = rounds;
            c.training.local_epochs = epochs;
            c.training.batch_size = batch;
            let plan = plan_dp(&c, smallest).unwrap();
            let k = (smallest as f64 / batch).round();
            assert_eq!(plan.sample_rate, 1.0 / k);
            assert_eq!(plan.steps_per_round, u64::from(epochs) * k as u64);
            let path = std::env::temp_dir().join(format!(
                "cohort-demo-plan-{}-{rounds}-{epochs}.jsonl",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&path);
            let budget = EpsDelta::new(c.epsilon, c.delta).unwrap();
            let mut ledger = LocalLedger::open(&path, budget).unwrap();
            for r in 0..rounds {
                ledger
                    .reserve(
                        &format!("round-{r}"),
                        plan.noise_multiplier,
                        plan.sample_rate,
                        plan.steps_per_round,
                    )
                    .unwrap();
            }
            let spent = ledger.spent_epsilon().unwrap();
            assert!(spent <= c.epsilon && spent > 0.999 * c.epsilon, "{spent}");
            assert!(
                ledger
                    .reserve(
                        "one-more",
                        plan.noise_multiplier,
                        plan.sample_rate,
                        plan.steps_per_round
                    )
                    .is_err()
            );
            let _ = std::fs::remove_file(&path);
        }
    }
}
