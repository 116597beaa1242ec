//! A world for each test: a fresh PKI and data dir, a server over real HTTPS on 127.0.0.1
//! (ephemeral port), and reqwest clients with or without a client certificate.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod hostile;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cohort_server::auth::Role;
use cohort_server::config::ServerConfig;
use cohort_server::pki::{CertificateAuthority, PkiDir, Validity, generate_csr};
use cohort_server::serve::Server;
use reqwest::{Client, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cohort-{tag}-{}-{n}", std::process::id()));
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
    pub pki: PkiDir,
    pub ca_pem: String,
    pub admin: String,
    pub viewer: String,
}

impl World {
    pub fn new(tag: &str) -> Self {
        let root = TempDir::new(tag);
        let pki = PkiDir::new(root.0.join("pki"));
        pki.init("Test CA").unwrap();
        pki.issue_server(&["127.0.0.1".into(), "localhost".into()], 30)
            .unwrap();
        let ca_pem = std::fs::read_to_string(pki.ca_cert()).unwrap();
        let signer = pki.token_signer().unwrap();
        Self {
            admin: signer.issue("alice", Role::Admin, 3600),
            viewer: signer.issue("victor", Role::Viewer, 3600),
            root,
            pki,
            ca_pem,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.0.join("data")
    }

    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: self.data_dir(),
            pki_dir: self.pki.root().to_owned(),
            round_interval_s: 0,
            rate_limit_per_s: 0.0,
            ..ServerConfig::default()
        }
    }

    pub fn ca(&self) -> CertificateAuthority {
        self.pki.ca().unwrap()
    }

    /// An HTTPS client trusting this world's CA, optionally presenting a certificate.
    pub fn client(&self, identity: Option<(&str, &str)>) -> Client {
        https_client(&self.ca_pem, identity)
    }
}

pub fn https_client(ca_pem: &str, identity: Option<(&str, &str)>) -> Client {
    https_client_with_versions(ca_pem, identity, rustls::DEFAULT_VERSIONS)
}

/// An HTTPS client that offers only `versions` of TLS.
pub fn https_client_with_versions(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

/// `GET /v1/federations/{fed}/task` with a client certificate; asserts 200.
pub async fn poll(c: &Client, url: &str, fed: &str) -> (reqwest::header::HeaderMap, Value) {
    let resp = c
        .get(format!("{url}/v1/federations/{fed}/task"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    (h, resp.json().await.unwrap())
}

/// `PUT` of an update body for `round`, trained on `n` records.
pub async fn upload(
    c: &Client,
    url: &str,
    fed: &str,
    round: u64,
    n: u64,
    body: Vec<u8>,
) -> Response {
    c.put(format!(
        "{url}/v1/federations/{fed}/rounds/{round}/update?num_examples={n}"
    ))
    .header("content-type", "application/vnd.cohort.vector")
    .body(body)
    .send()
    .await
    .unwrap()
}

/// `GET path` with a bearer token; asserts 200 and returns the JSON.
pub async fn get_json(c: &Client, url: &str, path: &str, token: &str) -> Value {
    let resp = c
        .get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.json().await.unwrap()
}

/// A running in-process server.
pub struct Running {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn start(config: &ServerConfig) -> Self {
        let server = Server::build(config).await.unwrap();
        let url = server.url();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            url,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// A one-tensor safetensors file.
pub fn weights(values: &[f32]) -> Vec<u8> {
    cohort_server::model::single_tensor(values)
}

pub fn training_config(min_clients: u32) -> Value {
    json!({
        "dp_sgd": { "noise_multiplier": 1.0, "clip_norm": 1.0, "local_epochs": 1, "batch_sample_rate": 0.1 },
        "client_budget": { "epsilon": 1000.0, "delta": 1e-5 },
        "client_sampling_rate": 1.0,
        "min_clients": min_clients,
        "deadlines": { "training_s": 60, "key_exchange_s": 60, "upload_s": 60, "unmask_s": 60 },
        "strategy": { "name": "fed_avg" },
        "secure_aggregation": false,
        // These tests check exact aggregates of unclipped updates: an explicit opt-out.
        "allow_unbounded_updates": true
    })
}

pub async fn create_federation(
    c: &Client,
    url: &str,
    token: &str,
    name: &str,
    w: &[f32],
    config: Value,
) -> Response {
    let spec =
        json!({ "name": name, "model_spec": { "architecture": "linear" }, "config": config });
    let form = reqwest::multipart::Form::new()
        .part(
            "federation",
            reqwest::multipart::Part::text(spec.to_string())
                .mime_str("application/json")
                .unwrap(),
        )
        .part(
            "weights",
            reqwest::multipart::Part::bytes(weights(w))
                .mime_str("application/vnd.safetensors")
                .unwrap(),
        );
    c.post(format!("{url}/v1/federations"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Invites and enrols `name`; returns its certificate and key PEM.
pub async fn enrol(
    world: &World,
    url: &str,
    fed: &str,
    name: &str,
    sample_count: u64,
) -> (String, String) {
    let c = world.client(None);
    let resp = c
        .post(format!("{url}/v1/federations/{fed}/clients"))
        .bearer_auth(&world.admin)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );
    let created: Value = resp.json().await.unwrap();
    let token = created["enrolment_token"].as_str().unwrap().to_owned();
    let (csr, key) = generate_csr(name).unwrap();
    let resp = c
        .post(format!("{url}/v1/federations/{fed}/enrol"))
        .json(&json!({ "token": token, "csr_pem": csr, "sample_count": sample_count }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text().await);
    let body: Value = resp.json().await.unwrap();
    (body["certificate_pem"].as_str().unwrap().to_owned(), key)
}

/// Asserts a 4xx problem document with `status`; returns it.
pub async fn problem(resp: Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:cohort:problem:")
    );
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}

pub fn read_f32_safetensors(bytes: &[u8]) -> Vec<f32> {
    cohort_server::model::ModelLayout::parse(bytes).unwrap().1
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A client certificate from another CA.
pub fn foreign_identity(name: &str) -> (String, String) {
    let other = CertificateAuthority::generate("Mallory CA").unwrap();
    let c = other.issue_client(name, Validity::days(1)).unwrap();
    (c.cert_pem, c.key_pem)
}
