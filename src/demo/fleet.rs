//! The driver's script: PKI, server, federation, hospitals, rounds, report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cohort_client::data::DataSpec;
use cohort_client::model::{self, ModelSpec};
use cohort_client::weights;
use cohort_protocol::messages::RoundState;
use cohort_server::auth::Role;
use cohort_server::pki::PkiDir;
use serde_json::json;

use super::admin::AdminApi;
use super::eval::Evaluator;
use super::output::{self, RoundRecord, Summary};
use super::process::{Line, Lines, Supervised, line_channel, stop_all};
use super::shards::{Shard, write_shards};
use super::{
    DemoConfig, DemoError, DpPlan, FEDERATION, eligible, failed, hospital_name, plan_dp,
    prepare_out, state_name, wait_until,
};
use crate::report::ReportWriter;
use std::sync::mpsc::Sender;

/// The children and what they said so far.
pub(super) struct Fleet {
    pub(super) server: Supervised,
    hospitals: Vec<Supervised>,
    lines: Lines,
    joined: BTreeSet<String>,
    /// Each hospital's ε after its latest round, as its own local ledger reports it.
    local_epsilon: BTreeMap<String, f64>,
}

impl Fleet {
    /// Takes in what the children printed: who joined, local ε, and the lines worth showing
    /// (a hospital the server no longer schedules, or one that stops).
    fn drain(&mut self) {
        while let Ok(Line { from, text }) = self.lines.try_recv() {
            if text.starts_with("joined federation") {
                self.joined.insert(from.clone());
            }
            if let Some(eps) = text
                .split_once("local epsilon spent ")
                .and_then(|(_, rest)| rest.split(';').next())
                .and_then(|v| v.trim().parse::<f64>().ok())
            {
                self.local_epsilon.insert(from.clone(), eps);
            }
            // Ctrl-C is how the driver itself stops them: not news.
            let notable = text.starts_with("not scheduled")
                || (text.starts_with("stopping") && !text.starts_with("stopping (Ctrl-C)"))
                || text.contains(": refused")
                || text.contains(": dropped");
            if notable && from != "server" {
                println!("  [{from}] {text}");
            }
        }
    }

    /// Fails if any child has exited: which one, its last error line and its log.
    fn check_alive(&mut self) -> Result<(), DemoError> {
        for c in std::iter::once(&mut self.server).chain(self.hospitals.iter_mut()) {
            if let Some(status) = c.exited() {
                return Err(failed(format!(
                    "{} exited ({status}): {} — see {}",
                    c.name(),
                    c.last_error(),
                    c.err_log().display()
                )));
            }
        }
        Ok(())
    }
}

fn path_arg(p: &Path) -> Result<String, DemoError> {
    p.to_str().map(str::to_owned).ok_or_else(|| {
        DemoError::Usage(format!(
            "{} is not valid UTF-8: choose an --out path with plain characters",
            p.display()
        ))
    })
}

/// Writes the server's settings: loopback, a port the OS picks, rounds only when the driver
/// opens them, and a one-second poll interval so rounds start promptly.
fn write_server_config(out: &Path, pki: &Path) -> Result<PathBuf, DemoError> {
    let quote = |p: &Path| -> Result<String, DemoError> {
        serde_json::to_string(&path_arg(p)?).map_err(|e| failed(e.to_string()))
    };
    let text = format!(
        "# Written by cohort demo.\nlisten = \"127.0.0.1:0\"\ndata_dir = {}\npki_dir = {}\n\
         round_interval_s = 0\npoll_retry_after_s = 1\n",
        quote(&out.join("server-data"))?,
        quote(pki)?
    );
    let path = out.join("server.toml");
    std::fs::write(&path, text)
        .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// The script up to the final report. The hospitals are stopped at the end; the server is
/// handed back still running (for `--keep-serving`). Children stop when this future is dropped.
pub(super) async fn drive(config: &DemoConfig) -> Result<(Summary, Fleet), DemoError> {
    let started = Instant::now();
    prepare_out(&config.out)?;
    let out = &config.out;
    println!("work dir: {}", out.display());

    // Data: one file per hospital, and the evaluator's held-out rows.
    let shards = write_shards(
        &config.table,
        &config.label,
        config.hospitals,
        config.test_fraction,
        config.seed,
        &out.join("data"),
    )
    .map_err(DemoError::Usage)?;
    let specs: Vec<DataSpec> = shards.iter().map(|s| s.spec.clone()).collect();
    let first = cohort_client::data::load(&specs[0]).map_err(|e| failed(e.to_string()))?;
    let features = first.train.features.size().get(1).copied().unwrap_or(0);
    let spec = super::model_spec(features, first.train.num_classes, &config.training.hidden);
    let evaluator = Evaluator::new(spec.clone(), &specs).map_err(failed)?;
    let smallest = evaluator.train_sizes().iter().copied().min().unwrap_or(1);
    let dp = plan_dp(config, smallest)?;

    // PKI through `cohort pki`'s code: CA, server certificate, an admin token.
    let pki = PkiDir::new(out.join("pki"));
    pki.init("Cohort demo CA (development only)")
        .map_err(|e| failed(e.to_string()))?;
    pki.issue_server(&["127.0.0.1".into(), "localhost".into()], 7)
        .map_err(|e| failed(e.to_string()))?;
    let ca_pem = std::fs::read_to_string(pki.ca_cert()).map_err(|e| failed(e.to_string()))?;
    let admin_token = pki
        .token_signer()
        .map_err(|e| failed(e.to_string()))?
        .issue("demo-admin", Role::Admin, 24 * 3600);

    // The server, as its own process.
    let server_toml = write_server_config(out, pki.root())?;
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| failed(e.to_string()))?;
    let (tx, lines) = line_channel();
    let server = Supervised::spawn(
        "server",
        &config.program,
        &["serve".into(), "--config".into(), path_arg(&server_toml)?],
        &logs,
        tx.clone(),
    )
    .map_err(failed)?;
    let mut fleet = Fleet {
        server,
        hospitals: Vec::new(),
        lines,
        joined: BTreeSet::new(),
        local_epsilon: BTreeMap::new(),
    };
    let mut url = None;
    wait_until(Duration::from_secs(60), "the server to listen", || {
        while let Ok(l) = fleet.lines.try_recv() {
            if let Some(u) = l.text.strip_prefix("listening on ") {
                url = Some(u.trim().to_owned());
            }
        }
        fleet.check_alive()?;
        Ok(url.is_some())
    })
    .await?;
    let url = url.unwrap_or_default();
    println!(
        "server: {url} (pid {}, logs in {})",
        fleet.server.pid().unwrap_or(0),
        logs.display()
    );

    // The federation, over the admin API.
    let api = AdminApi::new(&url, &ca_pem, &admin_token).map_err(failed)?;
    let parameters = create_federation(&api, config, &spec, dp).await?;

    let names: Vec<String> = (0..config.hospitals).map(hospital_name).collect();
    let enrolment = Enrolment {
        api: &api,
        url: &url,
        ca_pem: &ca_pem,
        logs: &logs,
    };
    start_hospitals(config, &shards, &enrolment, tx, &mut fleet).await?;
    wait_for_hospitals(&api, &mut fleet, &names).await?;
    println!(
        "{} hospitals enrolled and polling ({:.1}s since start)\n",
        config.hospitals,
        started.elapsed().as_secs_f64()
    );
    let mut writer = ReportWriter::create(out).map_err(|e| failed(e.to_string()))?;
    let records = run_rounds(config, &api, &evaluator, &mut fleet, &names, &mut writer).await?;
    let budgets = api.budgets(FEDERATION).await.map_err(failed)?;
    fleet.drain();
    let summary = Summary::new(
        records,
        &budgets,
        &names,
        evaluator.train_sizes(),
        &evaluator.test_sizes(),
        &fleet.local_epsilon,
        dp,
        config,
    );
    println!("\n{}", output::final_table(&summary));
    writer
        .finish(&summary.to_report(started.elapsed().as_secs_f64(), parameters))
        .map_err(|e| failed(e.to_string()))?;
    output::write_demo_json(&summary, out).map_err(failed)?;
    println!(
        "metrics and plots: {}",
        output::written_files(out)
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    print_dashboard(&url, &admin_token, &pki.ca_cert(), config.keep_serving);
    println!("finished in {:.1}s", started.elapsed().as_secs_f64());

    stop_all(&mut fleet.hospitals);
    Ok((summary, fleet))
}

/// Creates the federation over the admin API: the model (seeded initial weights), DP-SGD,
/// budget, SecAgg+ and FedAvg settings. Returns the model's parameter count.
async fn create_federation(
    api: &AdminApi,
    config: &DemoConfig,
    spec: &ModelSpec,
    dp: DpPlan,
) -> Result<usize, DemoError> {
    tch::manual_seed(config.seed as i64);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = model::build(&vs.root(), spec).map_err(|e| failed(e.to_string()))?;
    let initial = weights::to_safetensors(&vs).map_err(|e| failed(e.to_string()))?;
    let parameters: usize = vs.trainable_variables().iter().map(|t| t.numel()).sum();
    let t = &config.training;
    let federation_config = json!({
        "dp_sgd": {
            "noise_multiplier": dp.noise_multiplier,
            "clip_norm": t.clip_norm,
            "local_epochs": t.local_epochs,
            "batch_sample_rate": dp.sample_rate,
        },
        "client_budget": { "epsilon": config.epsilon, "delta": config.delta },
        "client_sampling_rate": 1.0,
        "min_clients": 3,
        "update_clip": t.update_clip,
        "secure_aggregation": true,
        "deadlines": { "training_s": 120, "key_exchange_s": 30, "upload_s": 30, "unmask_s": 30 },
        "strategy": { "name": "fed_avg", "weighting": "uniform" },
    });
    let model_json = serde_json::to_value(spec).map_err(|e| failed(e.to_string()))?;
    api.create_federation(FEDERATION, model_json, federation_config, initial)
        .await
        .map_err(failed)?;
    println!(
        "federation {FEDERATION}: {} hospitals, {} rounds of DP-SGD (σ {:.3}, C {}, q {:.3}, {} local epoch(s), lr {}) with SecAgg+, update clip {}; budget ε {} δ {:e} per hospital",
        config.hospitals,
        config.rounds,
        dp.noise_multiplier,
        t.clip_norm,
        dp.sample_rate,
        t.local_epochs,
        t.learning_rate,
        t.update_clip,
        config.epsilon,
        config.delta
    );

    Ok(parameters)
}

/// What every hospital's `cohort join` needs from the operator.
struct Enrolment<'a> {
    api: &'a AdminApi,
    url: &'a str,
    ca_pem: &'a str,
    logs: &'a Path,
}

/// Invites each hospital and starts its `cohort join` with its identity dir, one-time token,
/// budget and data file.
async fn start_hospitals(
    config: &DemoConfig,
    shards: &[Shard],
    e: &Enrolment<'_>,
    tx: Sender<Line>,
    fleet: &mut Fleet,
) -> Result<(), DemoError> {
    for (i, shard) in shards.iter().enumerate() {
        let name = hospital_name(i);
        let budget = config
            .budget_overrides
            .iter()
            .rev()
            .find(|(h, _)| *h == i)
            .map_or(config.epsilon, |(_, e)| *e);
        let token = e
            .api
            .invite(FEDERATION, &name, Some((budget, config.delta)))
            .await
            .map_err(failed)?;
        let dir = config.out.join("hospitals").join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
        std::fs::write(dir.join("ca.pem"), e.ca_pem).map_err(|e| failed(e.to_string()))?;
        // The token goes in a file, not on the command line where `ps` would show it.
        std::fs::write(dir.join("token"), &token).map_err(|e| failed(e.to_string()))?;
        let args = vec![
            "join".into(),
            "--server".into(),
            e.url.to_owned(),
            "--identity".into(),
            path_arg(&dir)?,
            "--data".into(),
            shard.spec.to_string(),
            "--federation".into(),
            FEDERATION.into(),
            "--budget-epsilon".into(),
            budget.to_string(),
            "--budget-delta".into(),
            config.delta.to_string(),
            "--learning-rate".into(),
            config.training.learning_rate.to_string(),
        ];
        let child =
            Supervised::spawn(&name, &config.program, &args, e.logs, tx.clone()).map_err(failed)?;
        fleet.hospitals.push(child);
    }
    Ok(())
}

/// Waits until every hospital has enrolled and the server has seen it poll (only then does
/// the scheduler count it as online).
async fn wait_for_hospitals(
    api: &AdminApi,
    fleet: &mut Fleet,
    names: &[String],
) -> Result<(), DemoError> {
    wait_until(Duration::from_secs(120), "every hospital to enrol", || {
        fleet.drain();
        fleet.check_alive()?;
        Ok(names.iter().all(|n| fleet.joined.contains(n)))
    })
    .await?;
    let seen_limit = Instant::now() + Duration::from_secs(30);
    loop {
        let b = api.budgets(FEDERATION).await.map_err(failed)?;
        if b.clients.iter().all(|c| c.last_seen_ms.is_some()) {
            return Ok(());
        }
        fleet.drain();
        fleet.check_alive()?;
        if Instant::now() > seen_limit {
            return Err(failed("timed out waiting for every hospital's first poll"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens each round, waits for it, evaluates the new global model and reads the budgets;
/// prints and records a line per round. Stops early when secure aggregation could no longer
/// find three hospitals with budget left.
async fn run_rounds(
    config: &DemoConfig,
    api: &AdminApi,
    evaluator: &Evaluator,
    fleet: &mut Fleet,
    names: &[String],
    writer: &mut ReportWriter,
) -> Result<Vec<RoundRecord>, DemoError> {
    // Rounds.
    println!("{}", output::round_header(names));
    let mut records: Vec<RoundRecord> = Vec::new();
    for r in 1..=config.rounds {
        let round_started = Instant::now();
        let opened = api.open_round(FEDERATION).await.map_err(failed)?;
        let id = opened.id.get();
        let mut view = opened;
        while view.state == RoundState::Open {
            tokio::time::sleep(Duration::from_millis(100)).await;
            fleet.drain();
            fleet.check_alive()?;
            view = api.round(FEDERATION, id).await.map_err(failed)?;
            if round_started.elapsed() > Duration::from_secs(300) {
                return Err(failed(format!(
                    "round {id} did not finish within 5 minutes"
                )));
            }
        }
        fleet.drain();
        let budgets = api.budgets(FEDERATION).await.map_err(failed)?;
        // After an aborted round this is the unchanged model: the curve stays flat there.
        let model = api.latest_model(FEDERATION).await.map_err(failed)?;
        let accuracy = Some(evaluator.evaluate(&model).map_err(failed)?);
        let record = RoundRecord::new(r, &view, accuracy, &budgets, names, round_started.elapsed());
        println!("{}", output::round_line(&record, config.rounds));
        if view.state != RoundState::Completed {
            println!(
                "  round {id} {}: {}",
                state_name(view.state),
                view.abort_reason.as_deref().unwrap_or("no reason given")
            );
        }
        writer
            .record(record.to_report())
            .map_err(|e| failed(e.to_string()))?;
        records.push(record);
        if r < config.rounds && eligible(&budgets) < 3 {
            println!(
                "stopping after round {r}: fewer than 3 hospitals can afford another round (secure aggregation needs 3)"
            );
            break;
        }
    }
    Ok(records)
}

impl Fleet {
    /// Waits until the server exits on its own (an error while serving the dashboard).
    pub(super) async fn server_exited(&mut self) -> String {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.drain();
            if self.server.exited().is_some() {
                return format!(
                    "the server exited: {} — see {}",
                    self.server.last_error(),
                    self.server.err_log().display()
                );
            }
        }
    }
}

fn print_dashboard(url: &str, token: &str, ca: &Path, keep_serving: bool) {
    println!("\ndashboard: {url}/admin");
    println!("admin token (valid 24 h): {token}");
    println!(
        "the server's certificate comes from the demo's development CA ({}); your browser will warn about it",
        ca.display()
    );
    if !keep_serving {
        println!(
            "the server stops when the demo ends: run `make demo ARGS=--keep-serving` to keep it up"
        );
    }
}
