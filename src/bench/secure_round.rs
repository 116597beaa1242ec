//! `cohort bench secure-round`: one secure round over HTTPS on loopback, with the server and N
//! participants (`cohort_client::participant` over `HttpsTransport`) in this process.
//!
//! The clients' updates are random vectors (no training: DP-SGD throughput is measured by
//! `cohort bench dp-sgd`), so the round's time splits into SecAgg client compute, transfer
//! (upload calls), SecAgg server compute (summing and unmasking) and waiting.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use cohort_client::ledger::LocalLedger;
use cohort_client::participant::https::{HttpsTransport, enrol, https_client};
use cohort_client::participant::{LocalTrainer, Participant, Poll, RoundOutcome, TrainOutput};
use cohort_privacy::EpsDelta;
use cohort_protocol::messages::Task;
use cohort_server::auth::Role;
use cohort_server::config::ServerConfig;
use cohort_server::pki::PkiDir;
use cohort_server::serve::Server;
use serde_json::{Value, json};

/// Options of `cohort bench secure-round`.
#[derive(Debug, Args)]
pub struct SecureRoundArgs {
    /// Participants.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Model parameters.
    #[arg(long, default_value_t = 100_000)]
    params: usize,
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

async fn bench(args: &SecureRoundArgs) -> Result<Value, String> {
    let dir = std::env::temp_dir().join(format!("cohort-bench-secure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
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
    let http = https_client(&ca_pem, None)?;
    let spec = json!({
        "name": "bench",
        "model_spec": {},
        "config": {
            "dp_sgd": { "noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1, "batch_sample_rate": 0.1 },
            "client_budget": { "epsilon": 1000.0, "delta": 1e-5 },
            "client_sampling_rate": 1.0,
            "min_clients": 2,
            "update_clip": 1.0,
            "deadlines": { "training_s": 120, "key_exchange_s": 120, "upload_s": 120, "unmask_s": 120 },
        }
    });
    let form = reqwest::multipart::Form::new()
        .part(
            "federation",
            reqwest::multipart::Part::text(spec.to_string()),
        )
        .part(
            "weights",
            reqwest::multipart::Part::bytes(cohort_server::model::single_tensor(&vec![
                0.0;
                args.params
            ])),
        );
    let resp = http
        .post(format!("{url}/v1/federations"))
        .bearer_auth(&admin)
        .multipart(form)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!(
            "creating the federation: {}",
            resp.text().await.unwrap_or_default()
        ));
    }
    let mut ps = Vec::new();
    for i in 0..args.clients {
        let resp: Value = http
            .post(format!("{url}/v1/federations/bench/clients"))
            .bearer_auth(&admin)
            .json(&json!({ "name": format!("c{i:04}") }))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let token = resp["enrolment_token"].as_str().unwrap_or_default();
        let id = enrol(&url, "bench", token, &ca_pem, Some(600))
            .await
            .map_err(|e| e.to_string())?;
        let ledger = LocalLedger::open(
            dir.join(format!("ledger-{i}.jsonl")),
            EpsDelta::new(1000.0, 1e-5).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let mut p = Participant::new(
            HttpsTransport::new(&url, &id)?,
            RandomUpdate {
                params: args.params,
            },
            ledger,
            "bench",
        );
        p.poll_once().await.map_err(|e| e.to_string())?;
        ps.push(p);
    }
    let resp = http
        .post(format!("{url}/v1/federations/bench/rounds"))
        .bearer_auth(&admin)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let opened: Value = resp.json().await.map_err(|e| e.to_string())?;
    let round = opened["id"].as_u64().unwrap_or(0);
    let started = Instant::now();
    let handles: Vec<_> = ps
        .into_iter()
        .map(|mut p| tokio::spawn(async move { p.poll_once().await.map_err(|e| e.to_string()) }))
        .collect();
    let mut reports = Vec::new();
    for h in handles {
        match h.await.map_err(|e| e.to_string())?? {
            Poll::Round(r) if r.outcome == RoundOutcome::Contributed => reports.push(r),
            other => return Err(format!("a participant did not contribute: {other:?}")),
        }
    }
    let view = loop {
        let v: Value = http
            .get(format!("{url}/v1/federations/bench/rounds/{round}"))
            .bearer_auth(&admin)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if v["state"] != "open" {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let round_s = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = serving.await;
    let _ = std::fs::remove_dir_all(&dir);
    if view["state"] != "completed" {
        return Err(format!("the round did not complete: {view}"));
    }
    let pick = |f: fn(&cohort_client::participant::RoundReport) -> Duration| {
        mean_max(&reports.iter().map(f).collect::<Vec<_>>())
    };
    let (compute_mean, compute_max) = pick(|r| r.secagg_compute);
    let (transfer_mean, transfer_max) = pick(|r| r.transfer);
    let (download_mean, download_max) = pick(|r| r.download);
    let (training_mean, _) = pick(|r| r.training);
    Ok(json!({
        "clients": args.clients,
        "params": args.params,
        "round_s": round_s,
        "training_s_mean": training_mean,
        "secagg_client_s_mean": compute_mean,
        "secagg_client_s_max": compute_max,
        "transfer_s_mean": transfer_mean,
        "transfer_s_max": transfer_max,
        "download_s_mean": download_mean,
        "download_s_max": download_max,
        "secagg_server_s": view["metrics"]["secagg_server_s"],
        "stage_s": {
            "advertise_keys": view["metrics"]["secagg_advertise_keys_s"],
            "share_keys": view["metrics"]["secagg_share_keys_s"],
            "masked_input": view["metrics"]["secagg_masked_input_s"],
            "unmask": view["metrics"]["secagg_unmask_s"],
        },
        "threshold": view["metrics"]["secagg_threshold"],
    }))
}

/// Runs the benchmark.
pub fn run(args: &SecureRoundArgs) -> ExitCode {
    if args.clients < 3 || args.params == 0 {
        eprintln!("error: --clients must be at least 3 and --params at least 1");
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
    match rt.block_on(bench(args)) {
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
