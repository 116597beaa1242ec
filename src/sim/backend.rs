//! The server side of a simulation: cohort-server's [`Service`] in this process, reached
//! directly (`inprocess`) or through the real HTTPS server on 127.0.0.1 with a development
//! PKI and mutual TLS (`https`). The simulator acts as the federation's admin: it creates the
//! federation, invites and enrols the virtual clients, and opens each round.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cohort_client::participant::https::{
    HttpsTransport, Identity, enrol, generate_csr, https_client,
};
use cohort_client::participant::transport::{Call, Transport};
use cohort_privacy::EpsDelta;
use cohort_protocol::messages::{
    BudgetsView, ClientCreated, EnrolRequest, RoundView, TaskPoll, UploadReceipt,
};
use cohort_protocol::secagg::{
    Directory, PublicKeys, Routed, SharesUpload, StagePoll, StageReceipt, UnmaskList, UnmaskShares,
};
use cohort_server::auth::Role;
use cohort_server::config::ServerConfig;
use cohort_server::domain::{ClientId, FederationId, RoundNumber};
use cohort_server::metrics::Metrics;
use cohort_server::pki::{CertificateAuthority, PkiDir};
use cohort_server::serve::Server;
use cohort_server::service::{CreateFederation, Service, ServiceSettings};
use cohort_server::storage::SqliteStorage;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::SimError;
use super::config::TransportKind;
use super::inprocess::InProcessTransport;

/// The federation every simulation creates.
pub const FEDERATION: &str = "sim";

/// How a virtual client proves who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Its certificate's fingerprint (in-process calls).
    Fingerprint(String),
    /// Its full identity: key, certificate and CA (HTTPS).
    Identity(Box<Identity>),
}

/// A virtual client's transport: in-process or HTTPS.
#[derive(Debug)]
pub enum SimTransport {
    /// Direct calls.
    InProcess(InProcessTransport),
    /// Mutual TLS to the loopback server.
    Https(HttpsTransport),
}

macro_rules! delegate {
    ($self:ident, $t:ident => $call:expr) => {
        match $self {
            SimTransport::InProcess($t) => $call,
            SimTransport::Https($t) => $call,
        }
    };
}

impl Transport for SimTransport {
    fn poll_task(&self, sample_count: Option<u64>) -> Call<'_, TaskPoll> {
        delegate!(self, t => t.poll_task(sample_count))
    }
    fn download_model(&self, version: u64) -> Call<'_, Vec<u8>> {
        delegate!(self, t => t.download_model(version))
    }
    fn upload_plain(&self, round: u64, frame: Vec<u8>, n: u64) -> Call<'_, UploadReceipt> {
        delegate!(self, t => t.upload_plain(round, frame, n))
    }
    fn send_keys(&self, round: u64, keys: PublicKeys) -> Call<'_, StageReceipt> {
        delegate!(self, t => t.send_keys(round, keys))
    }
    fn poll_directory(&self, round: u64) -> Call<'_, StagePoll<Directory>> {
        delegate!(self, t => t.poll_directory(round))
    }
    fn send_shares(&self, round: u64, shares: SharesUpload) -> Call<'_, StageReceipt> {
        delegate!(self, t => t.send_shares(round, shares))
    }
    fn poll_routed(&self, round: u64) -> Call<'_, StagePoll<Routed>> {
        delegate!(self, t => t.poll_routed(round))
    }
    fn send_masked(&self, round: u64, frame: Vec<u8>) -> Call<'_, StageReceipt> {
        delegate!(self, t => t.send_masked(round, frame))
    }
    fn poll_unmask(&self, round: u64) -> Call<'_, StagePoll<UnmaskList>> {
        delegate!(self, t => t.poll_unmask(round))
    }
    fn send_unmask(&self, round: u64, shares: UnmaskShares) -> Call<'_, StageReceipt> {
        delegate!(self, t => t.send_unmask(round, shares))
    }
}

#[derive(Debug)]
struct HttpsAdmin {
    url: String,
    http: reqwest::Client,
    token: String,
    ca_pem: String,
}

/// The running server and the simulator's admin access to it.
#[derive(Debug)]
pub struct Backend {
    service: Arc<Service>,
    federation: FederationId,
    https: Option<HttpsAdmin>,
    stop: Option<oneshot::Sender<()>>,
    running: Option<JoinHandle<()>>,
}

fn fail(what: &str) -> impl Fn(String) -> SimError + '_ {
    move |e| SimError::Server(format!("{what}: {e}"))
}

fn api(what: &str) -> impl Fn(cohort_server::http::error::ApiError) -> SimError + '_ {
    move |e| SimError::Server(format!("{what}: {e}"))
}

impl Backend {
    /// Starts the server with its state under `dir` (SQLite, blobs, PKI). Client sampling is
    /// seeded from `seed` so that runs replay.
    pub async fn start(
        kind: TransportKind,
        dir: &Path,
        seed: u64,
        max_body_bytes: usize,
        upload_concurrency: usize,
    ) -> Result<Self, SimError> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| SimError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let federation =
            FederationId::parse(FEDERATION).map_err(|e| SimError::Server(e.to_string()))?;
        // A virtual client is "online" for the whole run: it polls once after enrolment.
        let online_window = Duration::from_secs(30 * 24 * 3600);
        match kind {
            TransportKind::InProcess => {
                let (store, _) = SqliteStorage::open(dir.join("data"))
                    .map_err(|e| SimError::Server(format!("storage: {e}")))?;
                let ca = CertificateAuthority::generate("Cohort simulation CA")
                    .map_err(|e| SimError::Server(format!("CA: {e}")))?;
                let settings = ServiceSettings {
                    online_window,
                    poll_retry_after_s: 1,
                    client_cert_days: 30,
                    round_interval: Duration::ZERO,
                    upload_concurrency,
                    max_body_bytes,
                    spool_dir: dir.join("data"),
                };
                let service = Arc::new(Service::new(
                    Arc::new(store),
                    ca,
                    Arc::new(Metrics::default()),
                    settings,
                ));
                service.danger_seed_sampling(seed);
                let (stop, stopped) = oneshot::channel::<()>();
                let running = tokio::spawn(service.clone().run_scheduler(async move {
                    let _ = stopped.await;
                }));
                Ok(Self {
                    service,
                    federation,
                    https: None,
                    stop: Some(stop),
                    running: Some(running),
                })
            }
            TransportKind::Https => {
                let pki = PkiDir::new(dir.join("pki"));
                pki.init("Cohort simulation CA")
                    .map_err(|e| SimError::Server(format!("PKI: {e}")))?;
                pki.issue_server(&["127.0.0.1".into()], 30)
                    .map_err(|e| SimError::Server(format!("PKI: {e}")))?;
                let token = pki
                    .token_signer()
                    .map_err(|e| SimError::Server(format!("PKI: {e}")))?
                    .issue("simulator", Role::Admin, 7 * 24 * 3600);
                let ca_pem = std::fs::read_to_string(pki.ca_cert())
                    .map_err(|e| SimError::Io(format!("CA certificate: {e}")))?;
                let config = ServerConfig {
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    data_dir: dir.join("data"),
                    pki_dir: pki.root().to_owned(),
                    rate_limit_per_s: 0.0,
                    poll_retry_after_s: 1,
                    upload_concurrency,
                    online_window_s: online_window.as_secs(),
                    round_interval_s: 0,
                    max_body_bytes,
                    ..ServerConfig::default()
                };
                let server = Server::build(&config)
                    .await
                    .map_err(|e| SimError::Server(e.to_string()))?;
                let service = server.service();
                service.danger_seed_sampling(seed);
                let url = server.url();
                let (stop, stopped) = oneshot::channel::<()>();
                let running = tokio::spawn(server.run(async move {
                    let _ = stopped.await;
                }));
                let http = https_client(&ca_pem, None).map_err(fail("HTTPS client"))?;
                Ok(Self {
                    service,
                    federation,
                    https: Some(HttpsAdmin {
                        url,
                        http,
                        token,
                        ca_pem,
                    }),
                    stop: Some(stop),
                    running: Some(running),
                })
            }
        }
    }

    async fn admin_json<T: serde::de::DeserializeOwned>(
        admin: &HttpsAdmin,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, SimError> {
        let resp = req
            .bearer_auth(&admin.token)
            .send()
            .await
            .map_err(|e| SimError::Server(format!("{what}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(SimError::Server(format!("{what}: {status}: {text}")));
        }
        resp.json()
            .await
            .map_err(|e| SimError::Server(format!("{what}: {e}")))
    }

    /// Creates the federation with its model spec, training config and initial weights.
    pub async fn create_federation(
        &self,
        model_spec: Value,
        config: Value,
        weights: Vec<u8>,
    ) -> Result<(), SimError> {
        let spec = json!({ "name": FEDERATION, "model_spec": model_spec, "config": config });
        match &self.https {
            None => {
                let req: CreateFederation = serde_json::from_value(spec)
                    .map_err(|e| SimError::Server(format!("federation config: {e}")))?;
                self.service
                    .create_federation(req, weights)
                    .await
                    .map_err(api("creating the federation"))?;
            }
            Some(a) => {
                let form = reqwest::multipart::Form::new()
                    .part(
                        "federation",
                        reqwest::multipart::Part::text(spec.to_string()),
                    )
                    .part("weights", reqwest::multipart::Part::bytes(weights));
                let _: Value = Self::admin_json(
                    a,
                    a.http
                        .post(format!("{}/v1/federations", a.url))
                        .multipart(form),
                    "creating the federation",
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Invites and enrols a client with its own budget, then polls once so the scheduler
    /// counts it as online.
    pub async fn add_client(
        &self,
        name: &str,
        budget: EpsDelta,
        sample_count: u64,
    ) -> Result<Credential, SimError> {
        let id = ClientId::parse(name)
            .map_err(|e| SimError::Server(format!("client name {name:?}: {e}")))?;
        let credential = match &self.https {
            None => {
                let created = self
                    .service
                    .invite_client(&self.federation, id, Some(budget))
                    .await
                    .map_err(api("inviting a client"))?;
                let (csr_pem, _key) = generate_csr(name).map_err(fail("CSR"))?;
                let enrolled = self
                    .service
                    .enrol(
                        &self.federation,
                        EnrolRequest {
                            token: created.enrolment_token,
                            csr_pem,
                            sample_count: Some(sample_count),
                        },
                    )
                    .await
                    .map_err(api("enrolling a client"))?;
                let der = CertificateDer::from_pem_slice(enrolled.certificate_pem.as_bytes())
                    .map_err(|e| SimError::Server(format!("certificate: {e}")))?;
                Credential::Fingerprint(cohort_server::tls::fingerprint(der.as_ref()))
            }
            Some(a) => {
                let created: ClientCreated = Self::admin_json(
                    a,
                    a.http
                        .post(format!("{}/v1/federations/{FEDERATION}/clients", a.url))
                        .json(&json!({ "name": name, "budget": budget })),
                    "inviting a client",
                )
                .await?;
                let identity = enrol(
                    &a.url,
                    FEDERATION,
                    &created.enrolment_token,
                    &a.ca_pem,
                    Some(sample_count),
                )
                .await
                .map_err(|e| SimError::Server(format!("enrolling {name}: {e}")))?;
                Credential::Identity(Box::new(identity))
            }
        };
        self.transport(&credential)?
            .poll_task(Some(sample_count))
            .await
            .map_err(|e| SimError::Server(format!("first poll of {name}: {e}")))?;
        Ok(credential)
    }

    /// A transport for the client with `credential`.
    pub fn transport(&self, credential: &Credential) -> Result<SimTransport, SimError> {
        match (credential, &self.https) {
            (Credential::Fingerprint(fp), None) => Ok(SimTransport::InProcess(
                InProcessTransport::new(self.service.clone(), self.federation.clone(), fp.clone()),
            )),
            (Credential::Identity(id), Some(a)) => Ok(SimTransport::Https(
                HttpsTransport::new(&a.url, id).map_err(fail("client transport"))?,
            )),
            _ => Err(SimError::Server(
                "a credential of the other transport".into(),
            )),
        }
    }

    /// Opens the next round (sampling and the write-ahead ledger happen here).
    pub async fn open_round(&self) -> Result<RoundView, SimError> {
        match &self.https {
            None => self
                .service
                .open_round(&self.federation)
                .await
                .map_err(api("opening a round")),
            Some(a) => {
                Self::admin_json(
                    a,
                    a.http
                        .post(format!("{}/v1/federations/{FEDERATION}/rounds", a.url)),
                    "opening a round",
                )
                .await
            }
        }
    }

    /// A round as the server reports it.
    pub async fn round(&self, number: u64) -> Result<RoundView, SimError> {
        match &self.https {
            None => {
                let n = RoundNumber::new(number).map_err(|e| SimError::Server(e.to_string()))?;
                self.service
                    .round(&self.federation, n)
                    .await
                    .map_err(api("reading a round"))
            }
            Some(a) => {
                Self::admin_json(
                    a,
                    a.http.get(format!(
                        "{}/v1/federations/{FEDERATION}/rounds/{number}",
                        a.url
                    )),
                    "reading a round",
                )
                .await
            }
        }
    }

    /// Waits until round `number` has completed or aborted.
    pub async fn wait_closed(&self, number: u64) -> Result<RoundView, SimError> {
        loop {
            let view = self.round(number).await?;
            if view.state != cohort_protocol::messages::RoundState::Open {
                return Ok(view);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The latest global model (safetensors).
    pub async fn latest_model(&self) -> Result<Vec<u8>, SimError> {
        match &self.https {
            None => {
                let (_, bytes) = self
                    .service
                    .model(&self.federation, None)
                    .await
                    .map_err(api("reading the model"))?;
                Ok(bytes.to_vec())
            }
            Some(a) => {
                let resp = a
                    .http
                    .get(format!(
                        "{}/v1/federations/{FEDERATION}/models/latest",
                        a.url
                    ))
                    .bearer_auth(&a.token)
                    .send()
                    .await
                    .map_err(|e| SimError::Server(format!("reading the model: {e}")))?;
                if !resp.status().is_success() {
                    return Err(SimError::Server(format!(
                        "reading the model: {}",
                        resp.status()
                    )));
                }
                Ok(resp
                    .bytes()
                    .await
                    .map_err(|e| SimError::Server(format!("reading the model: {e}")))?
                    .to_vec())
            }
        }
    }

    /// Every client's budget and spend, as the dashboard shows them.
    pub async fn budgets(&self) -> Result<BudgetsView, SimError> {
        match &self.https {
            None => self
                .service
                .budgets(&self.federation)
                .await
                .map_err(api("reading the budgets")),
            Some(a) => {
                Self::admin_json(
                    a,
                    a.http
                        .get(format!("{}/v1/federations/{FEDERATION}/budgets", a.url)),
                    "reading the budgets",
                )
                .await
            }
        }
    }

    /// Stops the scheduler (and the HTTPS server).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
    }
}
