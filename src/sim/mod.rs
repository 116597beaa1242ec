/*!
The local federation simulator behind `cohort simulate` and the examples.

# Brief overview
A simulation is one process holding cohort-server's [`Service`](cohort_server::service::Service)
and many virtual clients, each the deployment's
[`Participant`](cohort_client::participant::Participant) with the same ledger, DP-SGD engine,
Skellam noise, quantiser and SecAgg+ client. Only the wire is swapped: direct calls into the
service by default, or the real HTTPS server on 127.0.0.1 with mutual TLS.

Each round the server samples its participants and writes their ledger entries; the
simulator then runs exactly those clients:

- **bounded memory**: a client exists only for its round and trains only while holding one
  of `workers` slots; its data is cut from the shared training set inside the slot and
  dropped after. Training memory is O(workers × (model + client data)). Secure rounds also
  keep each sampled client's encoded update (4 bytes per parameter) from training until it
  is masked, because SecAgg+ cannot mask before every key is in: O(sampled × d) more.
- **faults**: per-stage dropouts and stragglers ([`config::Faults`]), with a per-client
  log-normal slowness that scales the straggler rates. A dropout or straggler costs the
  stage's real deadline in wall-clock time, as it would in a deployment.
- **reproducible**: every random draw (partition, initial weights, DP-SGD batches and noise,
  the federation's augmentation, quantisation, Skellam noise, client sampling, faults) comes from the seed through
  [`seeds`], so two runs with the same seed produce identical metrics except wall-clock
  durations. Plain (non-secure) rounds add their updates in participant order for the same
  reason; central noise added by the server in plain rounds comes from the OS and is not
  reproducible.
*/

pub mod backend;
pub mod client;
pub mod config;
pub mod eval;
pub mod example;
pub mod inprocess;
mod round;
pub mod seeds;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cohort_client::data::partition::{Partitioner, by_column};
use cohort_client::data::{self, Dataset, Split};
use cohort_client::model::{self, InputKind, ModelSpec};
use cohort_client::weights;
use indicatif::{ProgressBar, ProgressStyle};
use tch::Kind;

use crate::report::{ReportError, ReportWriter, RoundRecord, Summary};
use backend::{Backend, Credential};
pub use config::{ConfigError, SimConfig};

/// Why a simulation stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum SimError {
    /// The configuration is wrong (exit code 2).
    Config(ConfigError),
    /// The data set could not be loaded or partitioned.
    Data(String),
    /// The model could not be built or evaluated.
    Model(String),
    /// The server failed or refused.
    Server(String),
    /// Files could not be written.
    Io(String),
    /// The outputs could not be written.
    Report(ReportError),
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Data(m) => write!(f, "data: {m}"),
            Self::Model(m) => write!(f, "model: {m}"),
            Self::Server(m) => write!(f, "server: {m}"),
            Self::Io(m) => write!(f, "{m}"),
            Self::Report(e) => write!(f, "writing the outputs: {e}"),
        }
    }
}

impl std::error::Error for SimError {}

impl From<ConfigError> for SimError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<ReportError> for SimError {
    fn from(e: ReportError) -> Self {
        Self::Report(e)
    }
}

impl SimError {
    /// 2 for configuration errors (the user's to fix), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Where the outputs go and what to show while running.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The output directory (metrics, plots, TensorBoard, ledgers, server state).
    pub out: PathBuf,
    /// Show a progress bar and one line per round on stderr.
    pub progress: bool,
}

/// What a finished simulation hands back.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One record per round.
    pub records: Vec<RoundRecord>,
    /// The run as a whole (also in `summary.json`).
    pub summary: Summary,
}

/// The data, partition and model of a run, prepared before the server starts.
struct Prepared {
    train: Arc<Mutex<Dataset>>,
    test: Dataset,
    names: Vec<String>,
    partition: Vec<Vec<usize>>,
    spec: ModelSpec,
    initial: Vec<u8>,
    parameters: usize,
}

/// A client name the server accepts, from a site label.
fn site_name(key: &str) -> String {
    let cleaned: String = key
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(56)
        .collect();
    format!("site-{}", cleaned.trim_matches('-'))
}

fn prepare(config: &SimConfig) -> Result<Prepared, SimError> {
    let split = data::load(&config.data).map_err(|e| SimError::Data(e.to_string()))?;
    let labels = split
        .train
        .label_vec()
        .map_err(|e| SimError::Data(e.to_string()))?;
    let pseed = seeds::derive(config.seed, "partition", 0, 0);
    let (partition, names) = match config.partition {
        Partitioner::Column => {
            let groups = split.info.groups.as_ref().ok_or_else(|| {
                SimError::Config(ConfigError(
                    "data.partition = \"column\" needs a site column: add group=COLUMN to data.spec".into(),
                ))
            })?;
            let p = by_column(&groups.train).map_err(|e| SimError::Data(e.to_string()))?;
            if let Some(n) = config.clients
                && n != p.len()
            {
                return Err(SimError::Config(ConfigError(format!(
                    "data.clients = {n} but the site column has {} sites; drop data.clients or set it to {}",
                    p.len(),
                    p.len()
                ))));
            }
            let names: Vec<String> = p.keys.iter().map(|k| site_name(k)).collect();
            (p.clients, names)
        }
        other => {
            let n = config.clients.unwrap_or(1);
            let p = other
                .partition(&labels, None, n, pseed)
                .map_err(|e| SimError::Config(ConfigError(format!("data.partition: {e}"))))?;
            let width = n.to_string().len().max(2);
            let prefix = &config.name_prefix;
            let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:0width$}")).collect();
            (p.clients, names)
        }
    };
    if let Some(empty) = partition.iter().position(Vec::is_empty) {
        return Err(SimError::Config(ConfigError(format!(
            "client {} gets no training examples ({} examples for {} clients); use fewer clients or another partition",
            names[empty],
            labels.len(),
            partition.len()
        ))));
    }
    let shape = split.train.features.size().get(1..).unwrap_or(&[]).to_vec();
    let kind = if split.train.features.kind() == Kind::Int64 {
        InputKind::Tokens
    } else {
        InputKind::Float
    };
    let spec = match &config.model {
        config::ModelSource::Preset(name) => {
            model::preset(name, &shape, kind, split.train.num_classes)
                .map_err(|e| SimError::Config(ConfigError(format!("model.preset: {e}"))))?
        }
        config::ModelSource::SpecFile(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                SimError::Config(ConfigError(format!(
                    "model.spec: cannot read {}: {e}",
                    path.display()
                )))
            })?;
            ModelSpec::from_json(&text).map_err(|e| {
                SimError::Config(ConfigError(format!(
                    "model.spec {} is not a model spec: {e}",
                    path.display()
                )))
            })?
        }
    };
    // The initial weights are the one place tch's global generator is used: seed it.
    tch::manual_seed(seeds::derive(config.seed, "init", 0, 0) as i64);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    model::build(&vs.root(), &spec).map_err(|e| SimError::Model(e.to_string()))?;
    let initial = weights::to_safetensors(&vs).map_err(|e| SimError::Model(e.to_string()))?;
    let parameters = weights::ParameterLayout::of(&vs).len();
    let Split { train, test, .. } = split;
    Ok(Prepared {
        train: Arc::new(Mutex::new(train)),
        test,
        names,
        partition,
        spec,
        initial,
        parameters,
    })
}

/// Runs a simulation to the end and writes its outputs into `options.out`.
pub fn run(config: &SimConfig, options: &RunOptions) -> Result<Outcome, SimError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| SimError::Io(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run_async(config, options))
}

async fn run_async(config: &SimConfig, options: &RunOptions) -> Result<Outcome, SimError> {
    let started = Instant::now();
    tch::set_num_threads(config.threads);
    let prepared = tokio::task::block_in_place(|| prepare(config))?;
    let out = &options.out;
    // A previous run's client ledgers would make every client refuse its rounds as already
    // attempted, and its event file would mix into this run's TensorBoard curves.
    for stale in ["clients", "tensorboard"] {
        let _ = std::fs::remove_dir_all(out.join(stale));
    }
    std::fs::create_dir_all(out.join("clients"))
        .map_err(|e| SimError::Io(format!("cannot create {}: {e}", out.display())))?;
    let model_bytes = prepared.parameters * 4;
    let backend = Backend::start(
        config.transport,
        &out.join("server"),
        seeds::derive(config.seed, "sampling", 0, 0),
        (model_bytes * 2 + (1 << 20)).max(16 << 20),
        config.workers.max(2),
    )
    .await?;
    let result = drive(config, options, &prepared, &backend, started).await;
    backend.shutdown().await;
    result
}

async fn drive(
    config: &SimConfig,
    options: &RunOptions,
    prepared: &Prepared,
    backend: &Backend,
    started: Instant,
) -> Result<Outcome, SimError> {
    let spec_json =
        serde_json::to_value(&prepared.spec).map_err(|e| SimError::Model(e.to_string()))?;
    backend
        .create_federation(
            spec_json,
            config.federation.clone(),
            prepared.initial.clone(),
        )
        .await?;
    let bar = if options.progress {
        ProgressBar::new(prepared.names.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("enrolling");
    let mut credentials: Vec<Credential> = Vec::with_capacity(prepared.names.len());
    let mut budgets = Vec::with_capacity(prepared.names.len());
    for (i, name) in prepared.names.iter().enumerate() {
        let budget = config.budget_of(i)?;
        credentials.push(
            backend
                .add_client(name, budget, prepared.partition[i].len() as u64)
                .await?,
        );
        budgets.push(budget);
        bar.inc(1);
    }
    let index_of: HashMap<&str, usize> = prepared
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let slowness: Vec<f64> = (0..prepared.names.len())
        .map(|i| round::slowness(config, i))
        .collect();
    let mut writer = ReportWriter::create(&options.out)?;
    bar.set_prefix("rounds");
    bar.set_length(config.rounds);
    bar.set_position(0);
    let partition = Arc::new(prepared.partition.clone());
    let ctx = round::RunContext {
        config,
        backend,
        spec: &prepared.spec,
        test: &prepared.test,
        train: prepared.train.clone(),
        partition,
        names: &prepared.names,
        index_of: &index_of,
        budgets: &budgets,
        credentials: &credentials,
        slowness: &slowness,
        ledgers: options.out.join("clients"),
    };
    let mut last_eval = tokio::task::block_in_place(|| {
        eval::evaluate(&prepared.spec, &prepared.initial, &prepared.test)
    })
    .map_err(SimError::Model)?;
    let mut stopped = None;
    for _ in 0..config.rounds {
        let record = match round::run_round(&ctx, last_eval).await? {
            round::RoundResult::Ran(r) => r,
            round::RoundResult::Stopped(reason) => {
                stopped = Some(reason);
                break;
            }
        };
        last_eval = (record.accuracy, record.loss);
        bar.inc(1);
        bar.set_message(format!(
            "accuracy {:.4}, max record-level epsilon {:.3}",
            record.accuracy, record.epsilon_record_max
        ));
        if options.progress {
            // Above the bar on a terminal; plain lines when stdout is a pipe.
            bar.suspend(|| println!("{}", round::line(&record)));
        }
        writer.record(record)?;
    }
    bar.finish_and_clear();
    let budgets_view = backend.budgets().await?;
    let records = writer.records().to_vec();
    let completed = records.iter().filter(|r| r.status == "completed").count();
    let last = records.last();
    let mut settings = BTreeMap::new();
    settings.insert("data".into(), config.data.to_string());
    settings.insert("partition".into(), config.partition.to_string());
    settings.insert(
        "model".into(),
        match &config.model {
            config::ModelSource::Preset(p) => p.clone(),
            config::ModelSource::SpecFile(p) => p.display().to_string(),
        },
    );
    settings.insert(
        "transport".into(),
        format!("{:?}", config.transport).to_lowercase(),
    );
    settings.insert("workers".into(), config.workers.to_string());
    settings.insert(
        "secure_aggregation".into(),
        config.training.secure_aggregation().to_string(),
    );
    if let Some(reason) = &stopped {
        settings.insert("stopped".into(), reason.clone());
    }
    let eps: BTreeMap<String, f64> = budgets_view
        .clients
        .iter()
        .map(|c| (c.client.as_str().to_owned(), c.spent.epsilon()))
        .collect();
    let summary = Summary {
        name: config.name.clone(),
        seed: config.seed,
        clients: prepared.names.len(),
        rounds: records.len(),
        rounds_completed: completed,
        parameters: prepared.parameters,
        final_accuracy: last.map_or(f64::NAN, |r| r.accuracy),
        best_accuracy: records.iter().map(|r| r.accuracy).fold(f64::NAN, f64::max),
        epsilon_record_max: last.map_or(0.0, |r| r.epsilon_record_max),
        epsilon_record_mean: last.map_or(0.0, |r| r.epsilon_record_mean),
        delta: config.training.client_budget().delta(),
        epsilon_client_level: last.and_then(|r| r.epsilon_client_level),
        epsilon_by_client: eps,
        wall_s: started.elapsed().as_secs_f64(),
        peak_rss_mb: crate::bench::peak_rss_mb(),
        settings,
    };
    writer.finish(&summary)?;
    Ok(Outcome { records, summary })
}

/// The few lines a person reads at the end of a run.
pub fn summary_text(s: &Summary) -> String {
    let client_level = s
        .epsilon_client_level
        .map(|e| format!("; client-level epsilon {e:.3}"))
        .unwrap_or_default();
    let mut out = format!(
        "{}: {} clients, {} of {} rounds completed in {:.1} s; test accuracy {:.4} (best {:.4}); \
         record-level epsilon max {:.3}, mean {:.3} at delta {:e}{client_level}",
        s.name,
        s.clients,
        s.rounds_completed,
        s.rounds,
        s.wall_s,
        s.final_accuracy,
        s.best_accuracy,
        s.epsilon_record_max,
        s.epsilon_record_mean,
        s.delta
    );
    if let Some(rss) = s.peak_rss_mb {
        out.push_str(&format!("; peak RSS {rss:.0} MiB"));
    }
    if let Some(reason) = s.settings.get("stopped") {
        out.push_str(&format!("\nstopped early: {reason}"));
    }
    out
}
