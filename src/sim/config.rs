//! A simulation's configuration: a TOML file, edited by `--set key=value`, then validated
//! once into [`SimConfig`] (ripgrep's `LowArgs` → `HiArgs`). Nothing downstream re-checks.
//!
//! Every error is one line that names the key and says what would be accepted.

use std::path::{Path, PathBuf};

use cohort_client::data::DataSpec;
use cohort_client::data::partition::Partitioner;
use cohort_privacy::EpsDelta;
use cohort_server::domain::TrainingConfig;
use serde::Deserialize;

/// Why a configuration was refused; the message is one line with the fix.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// One line of a (possibly multi-line) parser message.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The file as written: every field optional where a default exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LowConfig {
    name: Option<String>,
    rounds: u64,
    seed: Option<u64>,
    workers: Option<usize>,
    transport: Option<String>,
    data: LowData,
    model: LowModel,
    #[serde(default)]
    training: LowTraining,
    #[serde(default)]
    clients: LowClients,
    #[serde(default)]
    faults: LowFaults,
    federation: toml::Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LowData {
    spec: String,
    clients: Option<usize>,
    partition: Option<String>,
    name_prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LowModel {
    preset: Option<String>,
    spec: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LowTraining {
    learning_rate: Option<f64>,
    threads: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LowClients {
    epsilon: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LowFaults {
    #[serde(default)]
    dropout: StageRates,
    #[serde(default)]
    straggler: StageRates,
    speed_sigma: Option<f64>,
}

/// A probability per stage of a round at which a client fails (drops out, or answers after
/// the stage's deadline). Stages a round does not have are ignored (plain rounds have only
/// `training` and `upload`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRates {
    /// While training (a straggler finishes training after the upload deadline).
    #[serde(default)]
    pub training: f64,
    /// SecAgg stage 2, sending the encrypted shares.
    #[serde(default)]
    pub shares: f64,
    /// Sending the update: the masked input (SecAgg stage 3) or the plain update.
    #[serde(default)]
    pub upload: f64,
    /// SecAgg stage 4, sending the unmask shares.
    #[serde(default)]
    pub unmask: f64,
}

impl StageRates {
    fn check(&self, what: &str) -> Result<(), ConfigError> {
        for (stage, p) in [
            ("training", self.training),
            ("shares", self.shares),
            ("upload", self.upload),
            ("unmask", self.unmask),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(err(format!(
                    "faults.{what}.{stage} must be a probability in [0, 1], got {p}"
                )));
            }
        }
        Ok(())
    }
}

/// Where the model's architecture comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A preset of `cohort_client::model::preset`, sized to the data.
    Preset(String),
    /// A JSON model spec file.
    SpecFile(PathBuf),
}

/// How virtual clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Direct calls into the server's service functions (the handlers' code, minus HTTP).
    InProcess,
    /// The real HTTPS server on 127.0.0.1 with a development PKI and mutual TLS.
    Https,
}

/// Client failures to inject.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Per-stage dropout probabilities.
    pub dropout: StageRates,
    /// Per-stage straggler probabilities, before scaling by each client's slowness.
    pub straggler: StageRates,
    /// σ of the log-normal slowness factor of each client (0: all equally fast).
    pub speed_sigma: f64,
}

/// A validated simulation: every value checked, every default filled in.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// A label for the run.
    pub name: String,
    /// Rounds to run.
    pub rounds: u64,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Virtual clients training at once (the memory bound).
    pub workers: usize,
    /// How clients reach the server.
    pub transport: TransportKind,
    /// The data set.
    pub data: DataSpec,
    /// Clients (`None` for the column partitioner: one per distinct site).
    pub clients: Option<usize>,
    /// How the training split is dealt out.
    pub partition: Partitioner,
    /// Client names are `<prefix>-<index>` (the column partitioner uses `site-<value>`).
    pub name_prefix: String,
    /// The model.
    pub model: ModelSource,
    /// Local SGD learning rate.
    pub learning_rate: f64,
    /// libtorch intra-op threads per training worker.
    pub threads: i32,
    /// Per-client record-level ε budgets (`None`: everyone gets the federation's default).
    pub client_epsilon: Option<Vec<f64>>,
    /// The federation's training config, as JSON for the server (already validated).
    pub federation: serde_json::Value,
    /// The same config, parsed.
    pub training: TrainingConfig,
    /// Failures to inject.
    pub faults: Faults,
}

impl SimConfig {
    /// The record-level budget of client `index`.
    pub fn budget_of(&self, index: usize) -> Result<EpsDelta, ConfigError> {
        let default = self.training.client_budget();
        match &self.client_epsilon {
            Some(list) => {
                let eps = list.get(index).copied().ok_or_else(|| {
                    err(format!(
                        "clients.epsilon has {} entries but the federation has more clients; give one per client",
                        list.len()
                    ))
                })?;
                EpsDelta::new(eps, default.delta())
                    .map_err(|e| err(format!("clients.epsilon[{index}]: {e}")))
            }
            None => Ok(default),
        }
    }
}

/// Parses `value` as a TOML value (`0.5`, `true`, `[1, 2]`, `"x"`), or takes it as a bare
/// string when it is not one (`--set data.partition=dirichlet:0.3`).
fn toml_value(value: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

/// Applies `key.path=value` to the document, creating tables on the way.
fn apply_set(doc: &mut toml::Table, assignment: &str) -> Result<(), ConfigError> {
    let (key, value) = assignment.split_once('=').ok_or_else(|| {
        err(format!(
            "--set {assignment:?}: write KEY=VALUE, e.g. --set federation.dp_sgd.noise_multiplier=1.1"
        ))
    })?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(format!(
            "--set {assignment:?}: the key has an empty part"
        )));
    }
    let mut table = doc;
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            table.insert((*part).to_owned(), toml_value(value.trim()));
            break;
        }
        let entry = table
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| {
            err(format!(
                "--set {assignment:?}: `{}` is a value, not a table",
                parts[..=i].join(".")
            ))
        })?;
    }
    Ok(())
}

/// Reads `path`, applies the `--set` assignments and `--seed`, and validates.
pub fn load(path: &Path, sets: &[String], seed: Option<u64>) -> Result<SimConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "cannot read the config {}: {e}; see examples/sim/ for samples",
            path.display()
        ))
    })?;
    let fallback = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sim".into());
    from_toml(&text, sets, seed, &fallback)
}

/// Validates a config given as TOML text (examples build theirs in code).
pub fn from_toml(
    text: &str,
    sets: &[String],
    seed: Option<u64>,
    default_name: &str,
) -> Result<SimConfig, ConfigError> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| {
        err(format!(
            "the config is not valid TOML: {}",
            one_line(&e.to_string())
        ))
    })?;
    for s in sets {
        apply_set(&mut doc, s)?;
    }
    let low: LowConfig = toml::Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| err(format!("config: {}", one_line(&e.to_string()))))?;
    validate(low, seed, default_name)
}

fn validate(
    low: LowConfig,
    seed: Option<u64>,
    default_name: &str,
) -> Result<SimConfig, ConfigError> {
    if low.rounds == 0 {
        return Err(err("rounds must be at least 1"));
    }
    let workers = low.workers.unwrap_or(2);
    if workers == 0 {
        return Err(err(
            "workers must be at least 1 (virtual clients training at once)",
        ));
    }
    let transport = match low.transport.as_deref().unwrap_or("inprocess") {
        "inprocess" => TransportKind::InProcess,
        "https" => TransportKind::Https,
        other => {
            return Err(err(format!(
                "transport must be \"inprocess\" or \"https\", got {other:?}"
            )));
        }
    };
    let data: DataSpec = low
        .data
        .spec
        .parse()
        .map_err(|e: cohort_client::data::DataError| {
            err(format!(
                "data.spec {:?}: {}",
                low.data.spec,
                one_line(&e.to_string())
            ))
        })?;
    let partition: Partitioner = low
        .data
        .partition
        .as_deref()
        .unwrap_or("iid")
        .parse()
        .map_err(|e: cohort_client::data::partition::PartitionError| {
            err(format!("data.partition: {}", one_line(&e.to_string())))
        })?;
    let clients = match (partition, low.data.clients) {
        (Partitioner::Column, Some(_)) | (Partitioner::Column, None) => low.data.clients,
        (_, Some(0)) | (_, None) => {
            return Err(err(
                "data.clients must be at least 1 (only the `column` partitioner takes the count from the data)",
            ));
        }
        (_, Some(n)) => Some(n),
    };
    let name_prefix = low.data.name_prefix.unwrap_or_else(|| "client".into());
    let prefix_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if name_prefix.is_empty()
        || name_prefix.len() > 40
        || !name_prefix.chars().all(prefix_ok)
        || !name_prefix.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return Err(err(format!(
            "data.name_prefix must be 1 to 40 characters of a-z, 0-9 and '-', starting with a letter, got {name_prefix:?}"
        )));
    }
    let model = match (low.model.preset, low.model.spec) {
        (Some(p), None) => ModelSource::Preset(p),
        (None, Some(s)) => ModelSource::SpecFile(s),
        _ => {
            return Err(err(
                "model: give exactly one of model.preset (e.g. \"logistic\", \"mnist-cnn\") or model.spec (a JSON model spec file)",
            ));
        }
    };
    let learning_rate = low.training.learning_rate.unwrap_or(0.05);
    if !(learning_rate.is_finite() && learning_rate > 0.0) {
        return Err(err(format!(
            "training.learning_rate must be a positive number, got {learning_rate}"
        )));
    }
    let threads = low.training.threads.unwrap_or(1);
    if threads < 1 {
        return Err(err("training.threads must be at least 1"));
    }
    let federation =
        serde_json::to_value(&low.federation).map_err(|e| err(format!("federation: {e}")))?;
    let training: TrainingConfig = serde_json::from_value(federation.clone())
        .map_err(|e| err(format!("federation: {}", one_line(&e.to_string()))))?;
    if let (Some(list), Some(n)) = (&low.clients.epsilon, clients)
        && list.len() != n
    {
        return Err(err(format!(
            "clients.epsilon has {} entries for {n} clients; give one budget per client",
            list.len()
        )));
    }
    if let Some(list) = &low.clients.epsilon
        && let Some(bad) = list.iter().find(|e| !(e.is_finite() && **e > 0.0))
    {
        return Err(err(format!(
            "clients.epsilon entries must be positive numbers, got {bad}"
        )));
    }
    low.faults.dropout.check("dropout")?;
    low.faults.straggler.check("straggler")?;
    let speed_sigma = low.faults.speed_sigma.unwrap_or(0.0);
    if !(speed_sigma.is_finite() && speed_sigma >= 0.0) {
        return Err(err(format!(
            "faults.speed_sigma must be a number >= 0, got {speed_sigma}"
        )));
    }
    Ok(SimConfig {
        name: low.name.unwrap_or_else(|| default_name.to_owned()),
        rounds: low.rounds,
        seed: seed.or(low.seed).unwrap_or(0),
        workers,
        transport,
        data,
        clients,
        partition,
        name_prefix,
        model,
        learning_rate,
        threads,
        client_epsilon: low.clients.epsilon,
        federation,
        training,
        faults: Faults {
            dropout: low.faults.dropout,
            straggler: low.faults.straggler,
            speed_sigma,
        },
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
