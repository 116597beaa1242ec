/*!
What a federated run leaves behind: per-round metrics, a summary, plots and TensorBoard logs.

# Brief overview
A run produces one [`RoundRecord`] per round and a [`Summary`] at the end. [`ReportWriter`]
owns an output directory and writes, as the run goes:

| file | what |
|---|---|
| `metrics.csv` | one row per round (stage durations as `stage_<name>_s` columns) |
| `metrics.json` | the same rounds as a JSON array |
| `summary.json` | the run as a whole ([`Summary`]) |
| `accuracy_vs_round.svg`, `accuracy_vs_epsilon.svg` | plots ([`plot`]) |
| `tensorboard/events.out.tfevents.*` | scalars per round for `tensorboard --logdir DIR` ([`tensorboard`]) |

Files are rewritten after every round, so a run stopped half-way still leaves readable
metrics; the TensorBoard file is appended to, so TensorBoard can follow a live run.

Everything except wall-clock durations (`stage_s`, `wall_s`) is a deterministic function of
a simulation's configuration and seed; [`RoundRecord::without_timings`] strips the rest so
that two runs can be compared bit for bit.
*/

pub mod plot;
pub mod tensorboard;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One round as the run saw it. ε values are record-level (DP-SGD inside each client) unless
/// named client-level (DP-FedAvg across clients).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// The server's round number (1-based).
    pub round: u64,
    /// `completed`, or `aborted: <reason>`.
    pub status: String,
    /// Accuracy of the global model after the round on the held-out test split.
    pub accuracy: f64,
    /// Mean cross-entropy of the global model on the test split.
    pub loss: f64,
    /// The largest record-level ε any client has spent so far (at its δ).
    pub epsilon_record_max: f64,
    /// The mean record-level ε spent so far over every client of the federation.
    pub epsilon_record_mean: f64,
    /// The federation's client-level ε so far, when it tracks one (central noise on).
    pub epsilon_client_level: Option<f64>,
    /// Clients sampled into the round.
    pub participants: u32,
    /// Updates that made it into the aggregate.
    pub contributed: u32,
    /// Wall-clock seconds per stage (`open`, `train_mean`, `secagg_keys`, …, `evaluate`).
    pub stage_s: BTreeMap<String, f64>,
}

impl RoundRecord {
    /// The record with its wall-clock durations removed: what must be identical between two
    /// runs with the same seed.
    pub fn without_timings(&self) -> Self {
        Self {
            stage_s: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// The run as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// A label for the run (the config file's stem, or the example's name).
    pub name: String,
    /// The seed every random choice of the simulation derives from.
    pub seed: u64,
    /// Clients in the federation.
    pub clients: usize,
    /// Rounds attempted.
    pub rounds: usize,
    /// Rounds that committed a new model.
    pub rounds_completed: usize,
    /// Trainable parameters of the model.
    pub parameters: usize,
    /// Accuracy after the last round.
    pub final_accuracy: f64,
    /// Best accuracy after any round.
    pub best_accuracy: f64,
    /// Largest record-level ε of any client at the end.
    pub epsilon_record_max: f64,
    /// Mean record-level ε over clients at the end.
    pub epsilon_record_mean: f64,
    /// Record-level δ.
    pub delta: f64,
    /// Client-level ε at the end, if tracked.
    pub epsilon_client_level: Option<f64>,
    /// Each client's record-level ε at the end, by name.
    pub epsilon_by_client: BTreeMap<String, f64>,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
    /// Peak resident set size of the process, MiB (Linux `VmHWM`), if known.
    pub peak_rss_mb: Option<f64>,
    /// Settings worth keeping beside the numbers (transport, workers, partitioner, …).
    pub settings: BTreeMap<String, String>,
}

/// Why a report file could not be written.
#[derive(Debug)]
pub struct ReportError {
    path: PathBuf,
    message: String,
}

impl ReportError {
    fn new(path: &Path, message: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_owned(),
            message: message.to_string(),
        }
    }
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ReportError {}

/// Writes a run's outputs into one directory as the rounds come in.
#[derive(Debug)]
pub struct ReportWriter {
    dir: PathBuf,
    records: Vec<RoundRecord>,
    events: tensorboard::EventWriter,
}

impl ReportWriter {
    /// Creates `dir` (and its `tensorboard/` folder) and opens a fresh event file.
    pub fn create(dir: &Path) -> Result<Self, ReportError> {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::new(dir, e))?;
        let tb = dir.join("tensorboard");
        let events = tensorboard::EventWriter::create(&tb).map_err(|e| ReportError::new(&tb, e))?;
        Ok(Self {
            dir: dir.to_owned(),
            records: Vec::new(),
            events,
        })
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The rounds recorded so far.
    pub fn records(&self) -> &[RoundRecord] {
        &self.records
    }

    /// Records a round: appends its scalars to the event file and rewrites the metrics
    /// files and plots.
    pub fn record(&mut self, record: RoundRecord) -> Result<(), ReportError> {
        let step = i64::try_from(record.round).unwrap_or(i64::MAX);
        let mut scalars = vec![
            ("accuracy".to_owned(), record.accuracy),
            ("loss".to_owned(), record.loss),
            ("epsilon/record_max".to_owned(), record.epsilon_record_max),
            ("epsilon/record_mean".to_owned(), record.epsilon_record_mean),
            (
                "clients/participants".to_owned(),
                f64::from(record.participants),
            ),
            (
                "clients/contributed".to_owned(),
                f64::from(record.contributed),
            ),
        ];
        if let Some(eps) = record.epsilon_client_level {
            scalars.push(("epsilon/client_level".to_owned(), eps));
        }
        for (stage, secs) in &record.stage_s {
            scalars.push((format!("time/{stage}_s"), *secs));
        }
        let path = self.events.path().to_owned();
        self.events
            .write_scalars(step, &scalars)
            .map_err(|e| ReportError::new(&path, e))?;
        self.records.push(record);
        self.write_metrics()?;
        plot::write_plots(&self.dir, &self.records)
    }

    fn write_metrics(&self) -> Result<(), ReportError> {
        let json = self.dir.join("metrics.json");
        let text =
            serde_json::to_string_pretty(&self.records).map_err(|e| ReportError::new(&json, e))?;
        write_atomically(&json, text.as_bytes())?;
        let csv = self.dir.join("metrics.csv");
        let text = metrics_csv(&self.records).map_err(|e| ReportError::new(&csv, e))?;
        write_atomically(&csv, text.as_bytes())
    }

    /// Writes `summary.json`.
    pub fn finish(&mut self, summary: &Summary) -> Result<(), ReportError> {
        let path = self.dir.join("summary.json");
        let text = serde_json::to_string_pretty(summary).map_err(|e| ReportError::new(&path, e))?;
        write_atomically(&path, text.as_bytes())
    }
}

/// Replaces `path` with `bytes` through a temporary file, so a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.flush()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| ReportError::new(path, e))
}

/// A number as CSV shows it: shortest round-trip form, empty when absent.
fn csv_number(v: Option<f64>) -> String {
    v.map(|x| format!("{x}")).unwrap_or_default()
}

/// The CSV text of `records`: fixed columns, then one `stage_<name>_s` column per stage any
/// round reported (sorted by name; empty where a round did not have that stage).
pub fn metrics_csv(records: &[RoundRecord]) -> Result<String, csv::Error> {
    let mut stages: Vec<&str> = records
        .iter()
        .flat_map(|r| r.stage_s.keys().map(String::as_str))
        .collect();
    stages.sort_unstable();
    stages.dedup();
    let mut w = csv::Writer::from_writer(Vec::new());
    let fixed = [
        "round",
        "status",
        "accuracy",
        "loss",
        "epsilon_record_max",
        "epsilon_record_mean",
        "epsilon_client_level",
        "participants",
        "contributed",
    ];
    let header = fixed
        .iter()
        .map(|h| (*h).to_owned())
        .chain(stages.iter().map(|s| format!("stage_{s}_s")));
    w.write_record(header)?;
    for r in records {
        let fixed = [
            r.round.to_string(),
            r.status.clone(),
            csv_number(Some(r.accuracy)),
            csv_number(Some(r.loss)),
            csv_number(Some(r.epsilon_record_max)),
            csv_number(Some(r.epsilon_record_mean)),
            csv_number(r.epsilon_client_level),
            r.participants.to_string(),
            r.contributed.to_string(),
        ];
        let stage_cells = stages
            .iter()
            .map(|s| csv_number(r.stage_s.get(*s).copied()));
        w.write_record(fixed.into_iter().chain(stage_cells))?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    // Every cell is a Rust string, so the bytes are UTF-8.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests;
