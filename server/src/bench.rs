//! `cohort bench server`: one real FedAvg round over HTTPS on loopback against a server child
//! process, measuring what an operator cares about: how long the round takes, how fast updates
//! stream in, and the server's peak memory (VmHWM from `/proc/PID/status`), which must not
//! grow with the number of clients.
//!
//! Compiled with the `bench` feature (it pulls in the reqwest client). `cohort bench server`
//! and the `bench_server` example of this crate both call [`run`] with the `cohort-server`
//! binary built beside them: `cohort serve` would measure libtorch's pages too (~110 MiB that
//! the `cohort` executable maps whether or not it trains), not the server's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cohort_protocol::frame::encode_f32;
use reqwest::Client;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Role;
use crate::pki::{PkiDir, generate_csr};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Clients taking part in the round.
    pub clients: usize,
    /// Model parameters (f32).
    pub params: usize,
    /// The server program (`cohort-server`; `cohort` with the prefix `serve` works too).
    pub server_program: PathBuf,
    /// Arguments placed before the serve flags (`["serve"]` for `cohort`).
    pub server_prefix: Vec<String>,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Clients that uploaded.
    pub clients: usize,
    /// Model parameters.
    pub params: usize,
    /// Model size, MB (10^6 bytes).
    pub model_mb: f64,
    /// From opening the round to its commit, seconds.
    pub round_s: f64,
    /// From the first task poll to the last accepted upload, seconds (includes model downloads).
    pub upload_s: f64,
    /// Update bytes accepted per second over `upload_s`, MB/s.
    pub upload_mb_per_s: f64,
    /// The server's peak resident set (VmHWM), MiB.
    pub peak_rss_mb: f64,
    /// The target: 4 × model + 200 MiB.
    pub rss_limit_mb: f64,
}

impl Report {
    /// A human-readable summary.
    pub fn text(&self) -> String {
        format!(
            "server bench: {} clients x {} params ({:.1} MB model)\n  round        {:.2} s\n  uploads      {:.2} s, {:.1} MB/s\n  peak RSS     {:.1} MiB (target < 4 x model + 200 MiB = {:.1} MiB)",
            self.clients,
            self.params,
            self.model_mb,
            self.round_s,
            self.upload_s,
            self.upload_mb_per_s,
            self.peak_rss_mb,
            self.rss_limit_mb
        )
    }
}

struct Child9 {
    child: Child,
}

impl Drop for Child9 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peak_rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the server's /proc status (Linux only)")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM line in /proc/PID/status")?;
    Ok(kb / 1024.0)
}

fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?
        }
        None => builder.with_no_client_auth(),
    };
    // Idle connections are dropped before the server's idle timeout (30 s) would close them,
    // as participants do, so no request races that close.
    Ok(Client::builder()
        .tls_backend_preconfigured(config)
        .pool_idle_timeout(Duration::from_secs(20))
        .build()?)
}

async fn ok_json(resp: reqwest::Response, what: &str) -> Result<Value> {
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {body}");
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn spawn_server(
    opts: &BenchOptions,
    dir: &Path,
    pki: &Path,
    body_limit: usize,
) -> Result<(Child9, String)> {
    let mut child = Command::new(&opts.server_program)
        .args(&opts.server_prefix)
        .args(["--listen", "127.0.0.1:0", "--round-interval-s", "0"])
        .arg("--data-dir")
        .arg(dir)
        .arg("--pki-dir")
        .arg(pki)
        .env("COHORT_RATE_LIMIT_PER_S", "0")
        .env("COHORT_MAX_BODY_BYTES", body_limit.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", opts.server_program.display()))?;
    let stdout = child.stdout.take().context("no stdout from the server")?;
    let child = Child9 { child };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line from the server: {line:?}"))?
        .to_owned();
    Ok((child, url))
}

/// Runs one round and reports; the server child and the temporary directory are removed.
pub async fn run(args: &BenchOptions) -> Result<Report> {
    let root: PathBuf =
        std::env::temp_dir().join(format!("cohort-bench-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let result = bench_in(args, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn bench_in(args: &BenchOptions, root: &Path) -> Result<Report> {
    let pki = PkiDir::new(root.join("pki"));
    pki.init("Bench CA")?;
    pki.issue_server(&["127.0.0.1".into()], 1)?;
    let signer = pki.token_signer()?;
    let admin_token = signer.issue("bench", Role::Admin, 3600);
    let ca_pem = std::fs::read_to_string(pki.ca_cert())?;
    let model_bytes = args.params * 4;
    let (server, url) = spawn_server(
        args,
        &root.join("data"),
        pki.root(),
        model_bytes * 2 + (1 << 20),
    )?;
    let admin = client(&ca_pem, None)?;

    let w0: Vec<f32> = (0..args.params).map(|i| (i % 97) as f32 * 0.01).collect();
    let spec = json!({
        "name": "bench",
        "model_spec": { "architecture": "flat" },
        "config": {
            "dp_sgd": { "noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1, "batch_sample_rate": 0.01 },
            "client_budget": { "epsilon": 1.0e6, "delta": 1e-5 },
            "client_sampling_rate": 1.0,
            "min_clients": args.clients,
            "deadlines": { "training_s": 3600, "key_exchange_s": 60, "upload_s": 3600, "unmask_s": 60 },
            "strategy": { "name": "fed_avg" },
            "secure_aggregation": false,
            // The path measured since the first runs (no per-update norm): an explicit opt-out.
            "allow_unbounded_updates": true
        }
    });
    let form = reqwest::multipart::Form::new()
        .part(
            "federation",
            reqwest::multipart::Part::text(spec.to_string()).mime_str("application/json")?,
        )
        .part(
            "weights",
            reqwest::multipart::Part::bytes(crate::model::single_tensor(&w0))
                .mime_str("application/vnd.safetensors")?,
        );
    ok_json(
        admin
            .post(format!("{url}/v1/federations"))
            .bearer_auth(&admin_token)
            .multipart(form)
            .send()
            .await?,
        "creating the federation",
    )
    .await?;

    let mut clients = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let name = format!("site-{i}");
        let created = ok_json(
            admin
                .post(format!("{url}/v1/federations/bench/clients"))
                .bearer_auth(&admin_token)
                .json(&json!({ "name": name }))
                .send()
                .await?,
            "inviting a client",
        )
        .await?;
        let token = created["enrolment_token"].as_str().context("no token")?;
        let (csr, key) = generate_csr(&name)?;
        let enrolled = ok_json(
            admin
                .post(format!("{url}/v1/federations/bench/enrol"))
                .json(&json!({ "token": token, "csr_pem": csr, "sample_count": 100 }))
                .send()
                .await?,
            "enrolling",
        )
        .await?;
        let cert = enrolled["certificate_pem"]
            .as_str()
            .context("no certificate")?;
        let c = client(&ca_pem, Some((cert, &key)))?;
        ok_json(
            c.get(format!("{url}/v1/federations/bench/task"))
                .send()
                .await?,
            "first poll",
        )
        .await?;
        clients.push(c);
    }

    let update: Vec<f32> = (0..args.params)
        .map(|i| ((i % 13) as f32 - 6.0) * 1e-3)
        .collect();
    let frame = axum::body::Bytes::from(encode_f32(&update));
    let frame_len = frame.len();

    let round_start = Instant::now();
    ok_json(
        admin
            .post(format!("{url}/v1/federations/bench/rounds"))
            .bearer_auth(&admin_token)
            .send()
            .await?,
        "opening the round",
    )
    .await?;
    let mut tasks = Vec::with_capacity(clients.len());
    let upload_start = Instant::now();
    for c in clients {
        let url = url.clone();
        let frame = frame.clone();
        tasks.push(tokio::spawn(async move {
            let task = ok_json(
                c.get(format!("{url}/v1/federations/bench/task"))
                    .send()
                    .await?,
                "polling",
            )
            .await?;
            if task["kind"] != "train" {
                bail!("a sampled client got no task: {task}");
            }
            let model = c
                .get(format!(
                    "{url}/v1/federations/bench/models/{}",
                    task["model_version"]
                ))
                .send()
                .await?;
            if !model.status().is_success() {
                bail!("model download: HTTP {}", model.status());
            }
            let _ = model.bytes().await?;
            ok_json(
                c.put(format!(
                    "{url}/v1/federations/bench/rounds/1/update?num_examples=100"
                ))
                .header("content-type", "application/vnd.cohort.vector")
                .body(frame)
                .send()
                .await?,
                "uploading",
            )
            .await?;
            Ok(Instant::now())
        }));
    }
    let mut last_upload = upload_start;
    for t in tasks {
        last_upload = last_upload.max(t.await??);
    }
    let upload_s = last_upload.duration_since(upload_start).as_secs_f64();
    loop {
        let r = ok_json(
            admin
                .get(format!("{url}/v1/federations/bench/rounds/1"))
                .bearer_auth(&admin_token)
                .send()
                .await?,
            "reading the round",
        )
        .await?;
        match r["state"].as_str() {
            Some("completed") => break,
            Some("aborted") => bail!("the round aborted: {}", r["abort_reason"]),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        if round_start.elapsed() > Duration::from_secs(3600) {
            bail!("the round did not complete within an hour");
        }
    }
    let round_s = round_start.elapsed().as_secs_f64();
    let peak = peak_rss_mb(server.child.id())?;
    drop(server);
    let model_mb = model_bytes as f64 / 1e6;
    Ok(Report {
        clients: args.clients,
        params: args.params,
        model_mb,
        round_s,
        upload_s,
        upload_mb_per_s: (frame_len * args.clients) as f64 / 1e6 / upload_s.max(1e-9),
        peak_rss_mb: peak,
        rss_limit_mb: 4.0 * model_bytes as f64 / (1024.0 * 1024.0) + 200.0,
    })
}
