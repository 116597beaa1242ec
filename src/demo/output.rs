//! What the demo prints and writes: one line per round, the final table, `demo.json` (the run
//! with each hospital's ε), and through [`crate::report`] — the simulator's writer, so the two
//! leave the same files — `metrics.csv`/`.json`, `summary.json`, the SVG plots and TensorBoard
//! events.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cohort_protocol::messages::{BudgetsView, RoundView};
use serde::Serialize;

use super::eval::Accuracy;
use super::{DemoConfig, DpPlan, state_name};
use crate::format::{fmt_delta, fmt_eps, plain_table};
use crate::report;

/// One round as the driver saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundRecord {
    /// The demo's round count, from 1.
    pub round: u32,
    /// The server's round number.
    pub server_round: u64,
    /// `completed` or `aborted`.
    pub state: String,
    /// Why it aborted.
    pub abort_reason: Option<String>,
    /// Hospitals sampled into it.
    pub participants: usize,
    /// Pooled test accuracy of the global model after it.
    pub accuracy: Option<f64>,
    /// Mean test cross-entropy of the global model after it.
    pub loss: Option<f64>,
    /// Updates that made it into the aggregate.
    pub contributed: u32,
    /// The server's round metrics (stage seconds, bytes).
    pub server_metrics: BTreeMap<String, f64>,
    /// Test accuracy on each hospital's held-out records, in hospital order.
    pub accuracy_per_hospital: Vec<f64>,
    /// Record-level ε each hospital has spent after it, from the server's budgets API, in
    /// hospital order.
    pub epsilon: Vec<f64>,
    /// Wall time from opening the round to having evaluated it.
    pub seconds: f64,
}

fn epsilons(budgets: &BudgetsView, names: &[String]) -> Vec<f64> {
    names
        .iter()
        .map(|n| {
            budgets
                .clients
                .iter()
                .find(|c| c.client.as_str() == n)
                .map_or(f64::NAN, |c| c.spent.epsilon())
        })
        .collect()
}

impl RoundRecord {
    /// Builds the record of demo round `round`.
    pub fn new(
        round: u32,
        view: &RoundView,
        accuracy: Option<Accuracy>,
        budgets: &BudgetsView,
        names: &[String],
        took: Duration,
    ) -> Self {
        Self {
            round,
            server_round: view.id.get(),
            state: state_name(view.state).to_owned(),
            abort_reason: view.abort_reason.clone(),
            participants: view.participants.len(),
            accuracy: accuracy.as_ref().map(|a| a.pooled),
            loss: accuracy.as_ref().map(|a| a.loss),
            contributed: view.accepted,
            server_metrics: view.metrics.clone(),
            accuracy_per_hospital: accuracy.map(|a| a.per_hospital).unwrap_or_default(),
            epsilon: epsilons(budgets, names),
            seconds: took.as_secs_f64(),
        }
    }

    /// The same round as the simulator's report records it.
    pub fn to_report(&self) -> report::RoundRecord {
        let finite: Vec<f64> = self
            .epsilon
            .iter()
            .copied()
            .filter(|e| e.is_finite())
            .collect();
        let max = finite.iter().copied().fold(0.0, f64::max);
        let mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
        let mut stage_s: BTreeMap<String, f64> = self
            .server_metrics
            .iter()
            .filter_map(|(k, v)| k.strip_suffix("_s").map(|k| (k.to_owned(), *v)))
            .collect();
        stage_s.insert("round_wall".into(), self.seconds);
        report::RoundRecord {
            round: self.server_round,
            status: match &self.abort_reason {
                Some(why) if self.state != "completed" => format!("{}: {why}", self.state),
                _ => self.state.clone(),
            },
            accuracy: self.accuracy.unwrap_or(f64::NAN),
            loss: self.loss.unwrap_or(f64::NAN),
            epsilon_record_max: max,
            epsilon_record_mean: mean,
            epsilon_client_level: None,
            participants: u32::try_from(self.participants).unwrap_or(u32::MAX),
            contributed: self.contributed,
            stage_s,
        }
    }
}

/// One hospital at the end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HospitalRow {
    /// Its name.
    pub name: String,
    /// Records it trained on.
    pub train_records: i64,
    /// Its held-out records.
    pub test_records: i64,
    /// Rounds charged, from the server's ledger.
    pub rounds: u32,
    /// ε spent, from the server's ledger.
    pub epsilon_spent: f64,
    /// Its ε budget.
    pub epsilon_budget: f64,
    /// δ.
    pub delta: f64,
    /// `eligible`, `exhausted`, ...
    pub status: String,
    /// ε after its last round as its own local ledger printed it.
    pub local_epsilon: Option<f64>,
    /// The final global model's accuracy on its held-out records.
    pub accuracy: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Every round.
    pub rounds: Vec<RoundRecord>,
    /// Every hospital at the end.
    pub hospitals: Vec<HospitalRow>,
    /// Pooled test accuracy after the last completed round.
    pub final_accuracy: Option<f64>,
    /// Held-out records in total.
    pub test_records: i64,
    /// σ the federation ran with.
    pub noise_multiplier: f64,
    /// q.
    pub sample_rate: f64,
    /// DP-SGD steps per round.
    pub steps_per_round: u64,
    /// C.
    pub clip_norm: f64,
    /// Local epochs per round.
    pub local_epochs: u32,
    /// Local learning rate.
    pub learning_rate: f64,
    /// Update clip.
    pub update_clip: f64,
    /// Hidden layers.
    pub hidden: Vec<i64>,
    /// Default ε budget.
    pub epsilon_budget: f64,
    /// δ.
    pub delta: f64,
    /// Seed.
    pub seed: u64,
}

impl Summary {
    /// Puts the run together from the records, the final budgets and the local ledgers' ε.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rounds: Vec<RoundRecord>,
        budgets: &BudgetsView,
        names: &[String],
        train_sizes: &[i64],
        test_sizes: &[i64],
        local_epsilon: &BTreeMap<String, f64>,
        dp: DpPlan,
        config: &DemoConfig,
    ) -> Self {
        let last = rounds.iter().rev().find(|r| r.accuracy.is_some());
        let hospitals = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let b = budgets.clients.iter().find(|c| c.client.as_str() == n);
                HospitalRow {
                    name: n.clone(),
                    train_records: train_sizes.get(i).copied().unwrap_or(0),
                    test_records: test_sizes.get(i).copied().unwrap_or(0),
                    rounds: b.map_or(0, |b| b.rounds),
                    epsilon_spent: b.map_or(f64::NAN, |b| b.spent.epsilon()),
                    epsilon_budget: b.map_or(f64::NAN, |b| b.budget.epsilon()),
                    delta: b.map_or(f64::NAN, |b| b.budget.delta()),
                    status: b.map_or_else(|| "unknown".into(), |b| b.status.as_str().to_owned()),
                    local_epsilon: local_epsilon.get(n).copied(),
                    accuracy: last.and_then(|r| r.accuracy_per_hospital.get(i).copied()),
                }
            })
            .collect();
        let t = &config.training;
        Self {
            final_accuracy: last.and_then(|r| r.accuracy),
            rounds,
            hospitals,
            test_records: test_sizes.iter().sum(),
            noise_multiplier: dp.noise_multiplier,
            sample_rate: dp.sample_rate,
            steps_per_round: dp.steps_per_round,
            clip_norm: t.clip_norm,
            local_epochs: t.local_epochs,
            learning_rate: t.learning_rate,
            update_clip: t.update_clip,
            hidden: t.hidden.clone(),
            epsilon_budget: config.epsilon,
            delta: config.delta,
            seed: config.seed,
        }
    }
}

fn pct(a: Option<f64>) -> String {
    a.map_or_else(|| "—".into(), |a| format!("{:.1}%", 100.0 * a))
}

/// The column titles above the round lines.
pub fn round_header(names: &[String]) -> String {
    let mut s = String::from("round   test acc  sampled");
    for i in 1..=names.len() {
        let _ = write!(s, "  {:>7}", format!("ε h{i}"));
    }
    s.push_str("   time");
    s
}

/// One round: pooled test accuracy, each hospital's ε (server ledger), time.
pub fn round_line(r: &RoundRecord, total: u32) -> String {
    let mut s = format!(
        "{:>2}/{:<2}  {:>8}  {:>7}",
        r.round,
        total,
        pct(r.accuracy),
        r.participants
    );
    for e in &r.epsilon {
        let _ = write!(s, "  {:>7}", fmt_eps(*e));
    }
    let _ = write!(s, "  {:>5.1}s", r.seconds);
    s
}

/// The final table: per hospital, records, rounds, ε (server and local ledger), status and
/// accuracy; then the global model's accuracy.
pub fn final_table(s: &Summary) -> String {
    let headers = [
        "HOSPITAL",
        "TRAIN",
        "TEST",
        "ROUNDS",
        "EPS_SPENT",
        "EPS_LOCAL",
        "EPS_BUDGET",
        "DELTA",
        "STATUS",
        "ACCURACY",
    ];
    let rows = s.hospitals.iter().map(|h| {
        [
            h.name.clone(),
            h.train_records.to_string(),
            h.test_records.to_string(),
            h.rounds.to_string(),
            fmt_eps(h.epsilon_spent),
            h.local_epsilon.map_or_else(|| "—".into(), fmt_eps),
            fmt_eps(h.epsilon_budget),
            fmt_delta(h.delta),
            h.status.clone(),
            pct(h.accuracy),
        ]
    });
    let mut right = [true; 10];
    // The hospital's name and its status read from the left.
    right[0] = false;
    right[8] = false;
    let mut out = plain_table(headers, rows, right);
    let completed = s.rounds.iter().filter(|r| r.state == "completed").count();
    let _ = writeln!(
        out,
        "global model after {completed} completed round(s): {} test accuracy on {} held-out records; \
         EPS_SPENT is the server's ledger, EPS_LOCAL each hospital's own",
        pct(s.final_accuracy),
        s.test_records
    );
    out
}

impl Summary {
    /// The run as the simulator's report summarises one.
    pub fn to_report(&self, wall_s: f64, parameters: usize) -> report::Summary {
        let completed = self
            .rounds
            .iter()
            .filter(|r| r.state == "completed")
            .count();
        let best = self
            .rounds
            .iter()
            .filter_map(|r| r.accuracy)
            .fold(f64::NAN, f64::max);
        let spent: Vec<f64> = self.hospitals.iter().map(|h| h.epsilon_spent).collect();
        let mut settings = BTreeMap::new();
        for (k, v) in [
            ("transport", "https, one OS process per party".to_owned()),
            ("noise_multiplier", self.noise_multiplier.to_string()),
            ("sample_rate", self.sample_rate.to_string()),
            ("clip_norm", self.clip_norm.to_string()),
            ("local_epochs", self.local_epochs.to_string()),
            ("learning_rate", self.learning_rate.to_string()),
            ("update_clip", self.update_clip.to_string()),
            ("secure_aggregation", "true".to_owned()),
        ] {
            settings.insert(k.to_owned(), v);
        }
        report::Summary {
            name: "demo".into(),
            seed: self.seed,
            clients: self.hospitals.len(),
            rounds: self.rounds.len(),
            rounds_completed: completed,
            parameters,
            final_accuracy: self.final_accuracy.unwrap_or(f64::NAN),
            best_accuracy: best,
            epsilon_record_max: spent.iter().copied().fold(0.0, f64::max),
            epsilon_record_mean: spent.iter().sum::<f64>() / spent.len().max(1) as f64,
            delta: self.delta,
            epsilon_client_level: None,
            epsilon_by_client: self
                .hospitals
                .iter()
                .map(|h| (h.name.clone(), h.epsilon_spent))
                .collect(),
            wall_s,
            peak_rss_mb: None,
            settings,
        }
    }
}

/// The files the demo leaves in its work dir besides the hospitals' and server's own.
pub fn written_files(out: &Path) -> Vec<PathBuf> {
    [
        "demo.json",
        "summary.json",
        "metrics.csv",
        "metrics.json",
        "accuracy_vs_round.svg",
        "accuracy_vs_epsilon.svg",
        "tensorboard",
    ]
    .iter()
    .map(|f| out.join(f))
    .collect()
}

/// Writes `demo.json`: the run with every hospital's ε per round and the final table.
pub fn write_demo_json(s: &Summary, out: &Path) -> Result<(), String> {
    let path = out.join("demo.json");
    let text = serde_json::to_string_pretty(s).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
