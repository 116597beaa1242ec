//! A federation for each test: a fresh PKI and data dir, the real server over HTTPS on
//! 127.0.0.1 (started in-process), and participants from `cohort_client::participant` with
//! scripted updates instead of tch training, so rounds take milliseconds.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_client::ledger::LocalLedger;
use cohort_client::participant::https::{HttpsTransport, enrol, https_client};
use cohort_client::participant::transport::{Call, Transport, TransportError};
use cohort_client::participant::{
    LocalMetrics, LocalTrainer, Participant, RetryPolicy, TrainOutput,
};
use cohort_privacy::EpsDelta;
use cohort_protocol::messages::{MetricsUpload, Task, TaskPoll, UploadReceipt};
use cohort_protocol::secagg::{
    Directory, PublicKeys, Routed, SharesUpload, StagePoll, StageReceipt, UnmaskList, UnmaskShares,
};
use cohort_server::auth::Role;
use cohort_server::config::ServerConfig;
use cohort_server::pki::PkiDir;
use cohort_server::serve::Server;
use serde_json::{Value, json};

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cohort-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct World {
    pub root: TempDir,
    pub ca_pem: String,
    pub admin: String,
    pub viewer: String,
    pki: PkiDir,
}

pub struct Running {
    pub url: String,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

impl World {
    pub fn new(tag: &str) -> Self {
        let root = TempDir::new(tag);
        let pki = PkiDir::new(root.0.join("pki"));
        pki.init("E2E CA").unwrap();
        pki.issue_server(&["127.0.0.1".into(), "localhost".into()], 30)
            .unwrap();
        let ca_pem = std::fs::read_to_string(pki.ca_cert()).unwrap();
        let signer = pki.token_signer().unwrap();
        Self {
            admin: signer.issue("alice", Role::Admin, 3600),
            viewer: signer.issue("victor", Role::Viewer, 3600),
            root,
            ca_pem,
            pki,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.0.join("data")
    }

    pub fn config(&self, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir: self.data_dir(),
            pki_dir: self.pki.root().to_owned(),
            round_interval_s: 0,
            rate_limit_per_s: 0.0,
            poll_retry_after_s: 1,
            ..ServerConfig::default()
        }
    }

    pub async fn start_at(&self, listen: SocketAddr) -> Running {
        self.start_with(self.config(listen)).await
    }

    pub async fn start_with(&self, config: ServerConfig) -> Running {
        let server = Server::build(&config).await.unwrap();
        let url = server.url();
        let addr = server.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Running {
            url,
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn start(&self) -> Running {
        self.start_at("127.0.0.1:0".parse().unwrap()).await
    }

    pub fn http(&self) -> reqwest::Client {
        https_client(&self.ca_pem, None).unwrap()
    }
}

/// A training config for secure rounds: update clip 1, short stage deadlines.
pub fn secure_config(min_clients: u32, budget_epsilon: f64) -> Value {
    json!({
        "dp_sgd": { "noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1, "batch_sample_rate": 0.5 },
        "client_budget": { "epsilon": budget_epsilon, "delta": 1e-5 },
        "client_sampling_rate": 1.0,
        "min_clients": min_clients,
        "update_clip": 1.0,
        "deadlines": { "training_s": 3, "key_exchange_s": 2, "upload_s": 2, "unmask_s": 2 },
        "strategy": { "name": "fed_avg" }
    })
}

/// The safetensors of one f32 tensor named "w".
pub fn weights(values: &[f32]) -> Vec<u8> {
    cohort_server::model::single_tensor(values)
}

pub fn read_weights(bytes: &[u8]) -> Vec<f32> {
    cohort_server::model::ModelLayout::parse(bytes).unwrap().1
}

pub async fn create_federation(
    world: &World,
    url: &str,
    name: &str,
    w: &[f32],
    config: Value,
) -> Value {
    let spec = json!({ "architecture": "scripted" });
    create_federation_with(world, url, name, weights(w), spec, config).await
}

/// Creates a federation from safetensors bytes and a model spec.
pub async fn create_federation_with(
    world: &World,
    url: &str,
    name: &str,
    weights_bytes: Vec<u8>,
    model_spec: Value,
    config: Value,
) -> Value {
    let spec = json!({ "name": name, "model_spec": model_spec, "config": config });
    let form = reqwest::multipart::Form::new()
        .part(
            "federation",
            reqwest::multipart::Part::text(spec.to_string())
                .mime_str("application/json")
                .unwrap(),
        )
        .part(
            "weights",
            reqwest::multipart::Part::bytes(weights_bytes)
                .mime_str("application/vnd.safetensors")
                .unwrap(),
        );
    let resp = world
        .http()
        .post(format!("{url}/v1/federations"))
        .bearer_auth(&world.admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status.as_u16(), 201, "{body}");
    body
}

/// Registers client `name` in federation `fed` as the admin; the answer carries its one-time
/// enrolment token.
pub async fn create_client(world: &World, url: &str, fed: &str, name: &str) -> Value {
    world
        .http()
        .post(format!("{url}/v1/federations/{fed}/clients"))
        .bearer_auth(&world.admin)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The federation's latest global model as served (safetensors bytes), read as a viewer.
pub async fn latest_model_bytes(world: &World, url: &str, fed: &str) -> Vec<u8> {
    world
        .http()
        .get(format!("{url}/v1/federations/{fed}/models/latest"))
        .bearer_auth(&world.viewer)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// The federation's latest global model as one flat vector.
pub async fn latest_model(world: &World, url: &str, fed: &str) -> Vec<f32> {
    read_weights(&latest_model_bytes(world, url, fed).await)
}

pub async fn admin_get(world: &World, url: &str, path: &str) -> Value {
    let resp = world
        .http()
        .get(format!("{url}{path}"))
        .bearer_auth(&world.viewer)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

pub async fn open_round(world: &World, url: &str, fed: &str) -> Value {
    let resp = world
        .http()
        .post(format!("{url}/v1/federations/{fed}/rounds"))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status.as_u16(), 201, "{body}");
    body
}

/// Polls a round until it is no longer open (at most `limit`).
pub async fn wait_round(world: &World, url: &str, fed: &str, round: u64, limit: Duration) -> Value {
    let started = std::time::Instant::now();
    loop {
        let r = admin_get(world, url, &format!("/v1/federations/{fed}/rounds/{round}")).await;
        if r["state"] != "open" {
            return r;
        }
        assert!(started.elapsed() < limit, "round {round} still open: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Updates by formula: client `index` sends `delta(index, round)`, and reports `metrics`.
pub struct Scripted {
    pub index: usize,
    pub delta: fn(usize, u64) -> Vec<f32>,
    pub metrics: Option<LocalMetrics>,
}

impl LocalTrainer for Scripted {
    fn train(&mut self, _global: &[u8], task: &Task) -> Result<TrainOutput, String> {
        Ok(TrainOutput {
            delta: (self.delta)(self.index, task.round.get()),
            num_examples: 100,
        })
    }

    fn sample_count(&self) -> u64 {
        100
    }

    fn metrics(&mut self) -> Option<LocalMetrics> {
        self.metrics
    }
}

/// Where a test client "dies": it never sends this stage's message (nor any later one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    Keys,
    Shares,
    Masked,
    Unmask,
}

/// A transport around HTTPS that can die at a stage, records every masked frame it sends,
/// and can hold its unmask message until the test releases it.
pub struct TestTransport {
    pub inner: HttpsTransport,
    pub kill: Option<Kill>,
    pub masked_sent: Arc<Mutex<Vec<Vec<u8>>>>,
    pub hold_unmask: Option<Arc<tokio::sync::Semaphore>>,
}

fn killed<'a, T: Send + 'a>() -> Call<'a, T> {
    Box::pin(async { Err(TransportError::Decode("killed by the test".into())) })
}

impl Transport for TestTransport {
    fn poll_task(&self, sample_count: Option<u64>) -> Call<'_, TaskPoll> {
        self.inner.poll_task(sample_count)
    }
    fn download_model(&self, version: u64) -> Call<'_, Vec<u8>> {
        self.inner.download_model(version)
    }
    fn upload_plain(&self, round: u64, frame: Vec<u8>, n: u64) -> Call<'_, UploadReceipt> {
        self.inner.upload_plain(round, frame, n)
    }
    fn send_metrics(&self, round: u64, metrics: MetricsUpload) -> Call<'_, ()> {
        self.inner.send_metrics(round, metrics)
    }
    fn send_keys(&self, round: u64, keys: PublicKeys) -> Call<'_, StageReceipt> {
        if self.kill == Some(Kill::Keys) {
            return killed();
        }
        self.inner.send_keys(round, keys)
    }
    fn poll_directory(&self, round: u64) -> Call<'_, StagePoll<Directory>> {
        self.inner.poll_directory(round)
    }
    fn send_shares(&self, round: u64, shares: SharesUpload) -> Call<'_, StageReceipt> {
        if self.kill == Some(Kill::Shares) {
            return killed();
        }
        self.inner.send_shares(round, shares)
    }
    fn poll_routed(&self, round: u64) -> Call<'_, StagePoll<Routed>> {
        self.inner.poll_routed(round)
    }
    fn send_masked(&self, round: u64, frame: Vec<u8>) -> Call<'_, StageReceipt> {
        if self.kill == Some(Kill::Masked) {
            return killed();
        }
        self.masked_sent.lock().unwrap().push(frame.clone());
        self.inner.send_masked(round, frame)
    }
    fn poll_unmask(&self, round: u64) -> Call<'_, StagePoll<UnmaskList>> {
        self.inner.poll_unmask(round)
    }
    fn send_unmask(&self, round: u64, shares: UnmaskShares) -> Call<'_, StageReceipt> {
        if self.kill == Some(Kill::Unmask) {
            return killed();
        }
        let hold = self.hold_unmask.clone();
        Box::pin(async move {
            if let Some(h) = hold {
                let _permit = h.acquire().await.unwrap();
            }
            self.inner.send_unmask(round, shares).await
        })
    }
}

pub type TestParticipant = Participant<TestTransport, Scripted>;

/// Invites and enrols `count` clients named `site-00`, ... and gives each a participant.
pub async fn participants(
    world: &World,
    url: &str,
    fed: &str,
    count: usize,
    delta: fn(usize, u64) -> Vec<f32>,
    local_budget: EpsDelta,
) -> Vec<TestParticipant> {
    let mut out = Vec::new();
    for index in 0..count {
        let name = format!("site-{index:02}");
        let resp = world
            .http()
            .post(format!("{url}/v1/federations/{fed}/clients"))
            .bearer_auth(&world.admin)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let created: Value = resp.json().await.unwrap();
        let token = created["enrolment_token"].as_str().unwrap();
        let identity = enrol(url, fed, token, &world.ca_pem, Some(100))
            .await
            .unwrap();
        let dir = world.root.0.join(format!("clients/{name}"));
        identity.save(&dir).unwrap();
        let ledger = LocalLedger::open(dir.join("ledger.jsonl"), local_budget).unwrap();
        let transport = TestTransport {
            inner: HttpsTransport::new(url, &identity).unwrap(),
            kill: None,
            masked_sent: Arc::new(Mutex::new(Vec::new())),
            hold_unmask: None,
        };
        let p = Participant::new(
            transport,
            Scripted {
                index,
                delta,
                metrics: None,
            },
            ledger,
            fed,
        )
        .with_retry(RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            give_up_after: Duration::from_secs(20),
        });
        out.push(p);
    }
    out
}

/// Every participant polls once with nothing open, so the scheduler counts it as online.
pub async fn check_in(ps: &mut [TestParticipant]) {
    for p in ps.iter_mut() {
        let poll = p.poll_once().await.unwrap();
        assert!(
            !matches!(poll, cohort_client::participant::Poll::Round(_)),
            "{poll:?}"
        );
    }
}

/// Every participant polls once, concurrently; returns them with what their poll did.
pub async fn poll_all(
    ps: Vec<TestParticipant>,
) -> Vec<(
    TestParticipant,
    Result<cohort_client::participant::Poll, String>,
)> {
    let handles: Vec<_> = ps
        .into_iter()
        .map(|mut p| {
            tokio::spawn(async move {
                let r = p.poll_once().await.map_err(|e| e.to_string());
                (p, r)
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Sets up a federation with `count` checked-in participants; returns the server too.
pub async fn federation(
    world: &World,
    fed: &str,
    count: usize,
    w0: &[f32],
    config: Value,
    delta: fn(usize, u64) -> Vec<f32>,
) -> (Running, Vec<TestParticipant>) {
    let server = world.start().await;
    create_federation(world, &server.url, fed, w0, config).await;
    let budget = EpsDelta::new(1000.0, 1e-5).unwrap();
    let mut ps = participants(world, &server.url, fed, count, delta, budget).await;
    check_in(&mut ps).await;
    (server, ps)
}
