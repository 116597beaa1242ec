//! `cohort bench secure-round`: one secure round over HTTPS on loopback, with the server and N
//! participants (`cohort_client::participant` over `HttpsTransport`) in this process.
//!
//! Without `--train` the clients' updates are random vectors, so the round's time splits into
//! SecAgg client compute, transfer (upload calls), SecAgg server compute (summing and
//! unmasking) and waiting. With `--train` each client first trains one local epoch of DP-SGD
//! (`DpSgdTrainer`, as `cohort join` does) on generated MNIST-sized data (see
//! [`super::secure_round_train`]). `--compare-plain` runs the same round in a second
//! federation that opted out of secure aggregation, with the same clients' data, alternating
//! the order of the two (plain, secure, then secure, plain, …), and reports the overhead of
//! secure aggregation as (secure − plain) / plain round time. With `--train`, one untimed
//! round of each kind runs first (warm-up), and each training uses one libtorch thread.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use cohort_client::data::Dataset;
use cohort_client::ledger::LocalLedger;
use cohort_client::participant::https::{HttpsTransport, enrol, https_client};
use cohort_client::participant::{
    DpSgdTrainer, LocalTrainer, Participant, Poll, RoundOutcome, RoundReport, TrainOutput,
};
use cohort_privacy::EpsDelta;
use cohort_protocol::messages::Task;
use cohort_server::auth::Role;
use cohort_server::config::ServerConfig;
use cohort_server::pki::PkiDir;
use cohort_server::serve::Server;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::secure_round_train::{self as train, BlockingTrainer};

/// Options of `cohort bench secure-round`.
#[derive(Debug, Args)]
pub struct SecureRoundArgs {
    /// Participants.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Model parameters (with `--train`: the MLP's hidden width is chosen to come closest).
    #[arg(long, default_value_t = 100_000)]
    params: usize,
    /// Train one local epoch of DP-SGD per client on generated MNIST-sized data.
    #[arg(long)]
    train: bool,
    /// Examples per client with `--train`.
    #[arg(long, default_value_t = 600)]
    examples: i64,
    /// With `--train`: at most this many clients train at once (the others wait for a slot),
    /// as `cohort simulate`'s `workers`; unlimited by default. Tells the cost of 100 trainings
    /// contending for the cores apart from the cost of secure aggregation.
    #[arg(long)]
    train_slots: Option<usize>,
    /// Also run the same round with plain (unmasked) uploads, side by side.
    #[arg(long)]
    compare_plain: bool,
    /// Rounds of each kind (with `--compare-plain` the order alternates).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

struct RandomUpdate {
    params: usize,
}

impl LocalTrainer for RandomUpdate {
    fn train(&mut self, _global: &[u8], _task: &Task) -> Result<TrainOutput, String> {
        let scale = 1.0 / (self.params as f32).sqrt();
        Ok(TrainOutput {
            delta: (0..self.params)
                .map(|_| (rand::random::<f32>() - 0.5) * scale)
                .collect(),
            num_examples: 600,
        })
    }

    fn sample_count(&self) -> u64 {
        600
    }
}

fn mean_max(v: &[Duration]) -> (f64, f64) {
    let max = v.iter().copied().max().unwrap_or_default().as_secs_f64();
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64
    };
    (mean, max)
}

/// What a benchmark client runs in place of training.
enum BenchTrainer {
    Random(RandomUpdate),
    // Boxed: a DP-SGD trainer carries its data sets, the random one a seed.
    DpSgd(Box<BlockingTrainer>),
}

impl LocalTrainer for BenchTrainer {
    fn train(&mut self, global: &[u8], task: &Task) -> Result<TrainOutput, String> {
        match self {
            Self::Random(t) => t.train(global, task),
            Self::DpSgd(t) => t.train(global, task),
        }
    }

    fn sample_count(&self) -> u64 {
        match self {
            Self::Random(t) => t.sample_count(),
            Self::DpSgd(t) => t.sample_count(),
        }
    }
}

type Client = Participant<HttpsTransport, BenchTrainer>;

/// The running server and an admin's HTTPS client.
struct Bench {
    url: String,
    admin: String,
    ca_pem: String,
    http: reqwest::Client,
}

impl Bench {
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, String> {
        let resp = req
            .bearer_auth(&self.admin)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| e.to_string())
    }

    /// Creates federation `name` and enrols one participant per trainer.
    async fn federation(
        &self,
        dir: &Path,
        name: &str,
        secure: bool,
        weights: Vec<u8>,
        model_spec: Value,
        trainers: Vec<BenchTrainer>,
    ) -> Result<Vec<Client>, String> {
        let spec = json!({
            "name": name,
            "model_spec": model_spec,
            "config": {
                "dp_sgd": { "noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1, "batch_sample_rate": 0.1 },
                "client_budget": { "epsilon": 1000.0, "delta": 1e-5 },
                "client_sampling_rate": 1.0,
                "min_clients": 2,
                "update_clip": 1.0,
                "secure_aggregation": secure,
                "deadlines": { "training_s": 600, "key_exchange_s": 120, "upload_s": 120, "unmask_s": 120 },
            }
        });
        let form = reqwest::multipart::Form::new()
            .part(
                "federation",
                reqwest::multipart::Part::text(spec.to_string()),
            )
            .part("weights", reqwest::multipart::Part::bytes(weights));
        self.call(
            self.http
                .post(format!("{}/v1/federations", self.url))
                .multipart(form),
        )
        .await
        .map_err(|e| format!("creating federation {name}: {e}"))?;
        let mut clients = Vec::new();
        for (i, trainer) in trainers.into_iter().enumerate() {
            let resp = self
                .call(
                    self.http
                        .post(format!("{}/v1/federations/{name}/clients", self.url))
                        .json(&json!({ "name": format!("c{i:04}") })),
                )
                .await?;
            let token = resp["enrolment_token"].as_str().unwrap_or_default();
            let id = enrol(&self.url, name, token, &self.ca_pem, Some(600))
                .await
                .map_err(|e| e.to_string())?;
            let ledger = LocalLedger::open(
                dir.join(format!("ledger-{name}-{i}.jsonl")),
                EpsDelta::new(1000.0, 1e-5).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            let mut p =
                Participant::new(HttpsTransport::new(&self.url, &id)?, trainer, ledger, name);
            p.poll_once().await.map_err(|e| e.to_string())?;
            clients.push(p);
        }
        Ok(clients)
    }

    /// Opens one round of `name`, lets every client run it, and reports its times.
    async fn round(
        &self,
        name: &str,
        clients: Vec<Client>,
    ) -> Result<(Vec<Client>, Value), String> {
        // The previous round's view turns "completed" a moment before the server drops its
        // live state, and opening in between answers 409 round-in-progress: retry briefly.
        let mut tries = 0;
        let opened = loop {
            let url = format!("{}/v1/federations/{name}/rounds", self.url);
            match self.call(self.http.post(url)).await {
                Err(e) if e.contains("round-in-progress") && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other?,
            }
        };
        let round = opened["id"].as_u64().unwrap_or(0);
        let started = Instant::now();
        let handles: Vec<_> = clients
            .into_iter()
            .map(|mut p| {
                tokio::spawn(async move {
                    let r = p.poll_once().await.map_err(|e| e.to_string());
                    (p, r)
                })
            })
            .collect();
        let mut reports: Vec<RoundReport> = Vec::new();
        let mut clients = Vec::new();
        for h in handles {
            let (p, r) = h.await.map_err(|e| e.to_string())?;
            match r? {
                Poll::Round(r) if r.outcome == RoundOutcome::Contributed => reports.push(r),
                other => return Err(format!("a participant did not contribute: {other:?}")),
            }
            clients.push(p);
        }
        let view = loop {
            let v = self
                .call(
                    self.http
                        .get(format!("{}/v1/federations/{name}/rounds/{round}", self.url)),
                )
                .await?;
            if v["state"] != "open" {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let round_s = started.elapsed().as_secs_f64();
        if view["state"] != "completed" {
            return Err(format!("round {round} of {name} did not complete: {view}"));
        }
        let pick =
            |f: fn(&RoundReport) -> Duration| mean_max(&reports.iter().map(f).collect::<Vec<_>>());
        let (training_mean, training_max) = pick(|r| r.training);
        let (compute_mean, compute_max) = pick(|r| r.secagg_compute);
        let (transfer_mean, transfer_max) = pick(|r| r.transfer);
        let (download_mean, download_max) = pick(|r| r.download);
        let m = &view["metrics"];
        Ok((
            clients,
            json!({
                "federation": name,
                "round_s": round_s,
                "training_s_mean": training_mean,
                "training_s_max": training_max,
                "secagg_client_s_mean": compute_mean,
                "secagg_client_s_max": compute_max,
                "transfer_s_mean": transfer_mean,
                "transfer_s_max": transfer_max,
                "download_s_mean": download_mean,
                "download_s_max": download_max,
                "secagg_server_s": m["secagg_server_s"],
                "stage_s": {
                    "advertise_keys": m["secagg_advertise_keys_s"],
                    "share_keys": m["secagg_share_keys_s"],
                    "masked_input": m["secagg_masked_input_s"],
                    "unmask": m["secagg_unmask_s"],
                },
                "threshold": m["secagg_threshold"],
            }),
        ))
    }
}

/// The clients' trainers: DP-SGD on `data`, or random updates of `params` values.
fn trainers(
    data: Option<&[Dataset]>,
    spec: &Value,
    clients: usize,
    params: usize,
    slots: Option<&Arc<Semaphore>>,
) -> Result<Vec<BenchTrainer>, String> {
    let Some(data) = data else {
        return Ok((0..clients)
            .map(|_| BenchTrainer::Random(RandomUpdate { params }))
            .collect());
    };
    let spec: cohort_client::model::ModelSpec =
        serde_json::from_value(spec.clone()).map_err(|e| e.to_string())?;
    Ok(data
        .iter()
        .map(|d| {
            let t = DpSgdTrainer::new(train::share(d), Some(spec.clone()), tch::Device::Cpu, 0.1);
            BenchTrainer::DpSgd(Box::new(BlockingTrainer(t, slots.cloned())))
        })
        .collect())
}

async fn bench(args: &SecureRoundArgs, dir: &Path) -> Result<Value, String> {
    let pki = PkiDir::new(dir.join("pki"));
    pki.init("Bench CA").map_err(|e| e.to_string())?;
    pki.issue_server(&["127.0.0.1".into()], 1)
        .map_err(|e| e.to_string())?;
    let admin = pki
        .token_signer()
        .map_err(|e| e.to_string())?
        .issue("bench", Role::Admin, 3600);
    let ca_pem = std::fs::read_to_string(pki.ca_cert()).map_err(|e| e.to_string())?;
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        data_dir: dir.join("data"),
        pki_dir: pki.root().to_owned(),
        round_interval_s: 0,
        rate_limit_per_s: 0.0,
        poll_retry_after_s: 1,
        upload_concurrency: 4,
        ..ServerConfig::default()
    };
    let server = Server::build(&config).await.map_err(|e| e.to_string())?;
    let url = server.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let b = Bench {
        http: https_client(&ca_pem, None)?,
        url,
        admin,
        ca_pem,
    };
    let result = measure(args, dir, &b).await;
    let _ = stop.send(());
    let _ = serving.await;
    result
}

async fn measure(args: &SecureRoundArgs, dir: &Path, b: &Bench) -> Result<Value, String> {
    let (weights, spec, data, params) = if args.train {
        // Each simulated client stands for a device with its own CPU: one libtorch thread per
        // training, with the clients' trainings spread over the cores by the OS.
        tch::set_num_threads(1);
        let spec = train::mlp_near(args.params);
        let weights = train::initial_weights(&spec)?;
        let params = cohort_client::weights::flat_from_safetensors(&weights)
            .map_err(|e| e.to_string())?
            .1
            .len();
        let data = train::client_data(args.clients, args.examples)?;
        let spec = serde_json::to_value(&spec).map_err(|e| e.to_string())?;
        (weights, spec, Some(data), params)
    } else {
        let weights = cohort_server::model::single_tensor(&vec![0.0; args.params]);
        (weights, json!({}), None, args.params)
    };
    let slots = args.train_slots.map(|n| Arc::new(Semaphore::new(n.max(1))));
    let mut secure = b
        .federation(
            dir,
            "secure",
            true,
            weights.clone(),
            spec.clone(),
            trainers(data.as_deref(), &spec, args.clients, params, slots.as_ref())?,
        )
        .await?;
    let mut plain = if args.compare_plain {
        b.federation(
            dir,
            "plain",
            false,
            weights,
            spec.clone(),
            trainers(data.as_deref(), &spec, args.clients, params, slots.as_ref())?,
        )
        .await?
    } else {
        Vec::new()
    };
    if args.train {
        // One untimed round of each kind first: libtorch's thread pools and allocator, and
        // every client's first model build, would otherwise land on whichever round runs first.
        let (back, _) = b.round("secure", secure).await?;
        secure = back;
        if args.compare_plain {
            let (back, _) = b.round("plain", plain).await?;
            plain = back;
        }
    }
    let mut rounds = Vec::new();
    let (mut secure_s, mut plain_s) = (0.0, 0.0);
    for i in 0..args.repeat {
        let plain_first = args.compare_plain && i % 2 == 0;
        for kind in if plain_first {
            ["plain", "secure"]
        } else {
            ["secure", "plain"]
        } {
            if kind == "plain" && !args.compare_plain {
                continue;
            }
            let clients = if kind == "plain" {
                std::mem::take(&mut plain)
            } else {
                std::mem::take(&mut secure)
            };
            let (back, report) = b.round(kind, clients).await?;
            let t = report["round_s"].as_f64().unwrap_or(f64::NAN);
            if kind == "plain" {
                plain = back;
                plain_s += t;
            } else {
                secure = back;
                secure_s += t;
            }
            rounds.push(report);
        }
    }
    let n = f64::from(args.repeat.max(1));
    let mut out = json!({
        "clients": args.clients,
        "params": params,
        "train": args.train,
        "examples_per_client": if args.train { json!(args.examples) } else { Value::Null },
        "threads": tch::get_num_threads(),
        "train_slots": args.train_slots,
        "secure_round_s_mean": secure_s / n,
        "rounds": rounds,
    });
    if args.compare_plain {
        out["plain_round_s_mean"] = json!(plain_s / n);
        out["secure_overhead"] = json!((secure_s - plain_s) / plain_s);
    }
    Ok(out)
}

/// Runs the benchmark.
pub fn run(args: &SecureRoundArgs) -> ExitCode {
    if args.clients < 3 || args.params == 0 || args.repeat == 0 || args.examples < 1 {
        eprintln!(
            "error: --clients must be at least 3, and --params, --repeat and --examples at least 1"
        );
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = std::env::temp_dir().join(format!("cohort-bench-secure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = rt.block_on(bench(args, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(v) => {
            if args.json {
                println!("{v}");
            } else {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
