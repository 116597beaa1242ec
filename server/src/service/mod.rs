//! The server's operations as plain async functions: HTTP handlers only extract and call
//! these. Storage is synchronous (every write fsyncs), so each call runs on the blocking pool.

mod bounded;
pub mod budgets;
mod evaluation;
pub mod released;
mod rounds;
pub mod secagg;
mod spool;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use cohort_privacy::EpsDelta;
use cohort_protocol::messages::{
    ClientCreated, ClientState, ClientView, EnrolRequest, EnrolResponse,
    RoundState as WireRoundState, RoundView,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore};

use crate::domain::{
    CertFingerprint, Client, ClientId, EnrolmentState, Federation, FederationId, ModelVersion,
    NewFederation, Round, RoundNumber, RoundState, Timestamp, TrainingConfig, VersionNumber,
};
use crate::http::error::ApiError;
use crate::metrics::Metrics;
use crate::model::ModelLayout;
use crate::pki::{CertificateAuthority, Validity};
use crate::storage::{LedgerSubject, Storage, StorageError};

pub use rounds::LiveRound;

/// Settings the service needs from the server configuration.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// A client counts as online if it polled within this window.
    pub online_window: Duration,
    /// `Retry-After` for clients without a task.
    pub poll_retry_after_s: u64,
    /// Validity of client certificates issued at enrolment.
    pub client_cert_days: u64,
    /// Pause between rounds; zero: rounds open only on an admin's request.
    pub round_interval: Duration,
    /// Uploads decoded at once (bounds memory to this many update buffers).
    pub upload_concurrency: usize,
    /// Largest update body, bytes.
    pub max_body_bytes: usize,
    /// Where update bodies wait (as unnamed temporary files) for an upload permit.
    pub spool_dir: std::path::PathBuf,
}

/// `POST /v1/federations`, the JSON part: everything but the weights.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFederation {
    /// Its name.
    #[schema(value_type = cohort_protocol::FederationId)]
    pub name: FederationId,
    /// The architecture as clients understand it; opaque to the server.
    #[serde(default)]
    pub model_spec: serde_json::Value,
    /// Training, privacy and aggregation settings (validated as a whole).
    #[schema(value_type = crate::domain::TrainingConfigSpec)]
    pub config: TrainingConfig,
}

/// Storage calls running at once (see `Service::storage_slots`): one on the connection, one
/// ready to take it.
const STORAGE_SLOTS: usize = 2;

/// The shared state behind every handler and the round scheduler.
#[derive(Debug)]
pub struct Service {
    store: Arc<dyn Storage>,
    ca: Arc<CertificateAuthority>,
    metrics: Arc<Metrics>,
    settings: ServiceSettings,
    live: Mutex<HashMap<FederationId, Arc<tokio::sync::Mutex<LiveRound>>>>,
    layouts: Mutex<HashMap<FederationId, Arc<ModelLayout>>>,
    upload_permits: Semaphore,
    /// Blocking file operations on spooled update bodies at once (see `spool`).
    spool_writers: Semaphore,
    /// Storage calls on the blocking pool at once. The SQLite store serialises them on one
    /// connection, so more would only park threads: 200 clients polling together used to
    /// hold ~200 blocking threads, which made the server's memory grow with the clients.
    storage_slots: Semaphore,
    /// Decode buffers for plain updates, reused across uploads.
    update_buffers: spool::UpdateBuffers,
    wake: Notify,
    /// When each federation's last round ended (or the timer last fired).
    last_closed: Mutex<HashMap<FederationId, std::time::Instant>>,
    /// The most recently served model of each federation, shared by every download so that
    /// N concurrent clients cost one copy of the weights, not N.
    model_cache: Mutex<HashMap<FederationId, (ModelVersion, Bytes)>>,
    /// A seeded generator for client sampling, set only by a simulator that must replay a
    /// run; `None` (always, in a deployment) samples from the OS.
    sampling_rng: Mutex<Option<rand_chacha::ChaCha20Rng>>,
    /// Open evaluations and their scheduling (see [`evaluation`]).
    evaluations: evaluation::Evaluations,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound { what } => ApiError::NotFound(format!("{what} does not exist")),
            StorageError::Duplicate { what } => ApiError::Conflict {
                slug: "already-exists",
                detail: format!("{what} already exists"),
            },
            StorageError::Conflict { reason } => ApiError::Conflict {
                slug: "state-conflict",
                detail: reason,
            },
            StorageError::Invalid(v) => ApiError::InvalidInput(v.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<crate::domain::ValidationError> for ApiError {
    fn from(e: crate::domain::ValidationError) -> Self {
        ApiError::InvalidInput(e.to_string())
    }
}

/// A wire id from a domain id; both accept the same names, so failure means a bug.
fn wire_client(id: &ClientId) -> Result<cohort_protocol::ClientId, ApiError> {
    cohort_protocol::ClientId::parse(id.as_str()).map_err(ApiError::internal)
}

fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 24];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::internal("the system random generator failed"))?;
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn sha256_hex(s: &str) -> String {
    crate::tls::fingerprint(s.as_bytes())
}

impl Service {
    /// A service over `store`, signing enrolment CSRs with `ca`.
    pub fn new(
        store: Arc<dyn Storage>,
        ca: CertificateAuthority,
        metrics: Arc<Metrics>,
        settings: ServiceSettings,
    ) -> Self {
        Self {
            store,
            ca: Arc::new(ca),
            metrics,
            upload_permits: Semaphore::new(settings.upload_concurrency.max(1)),
            update_buffers: spool::UpdateBuffers::default(),
            storage_slots: Semaphore::new(STORAGE_SLOTS),
            spool_writers: Semaphore::new(spool::WRITERS),
            settings,
            live: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            last_closed: Mutex::new(HashMap::new()),
            model_cache: Mutex::new(HashMap::new()),
            sampling_rng: Mutex::new(None),
            evaluations: evaluation::Evaluations::default(),
        }
    }

    /// Samples every later round's clients from a generator seeded with `seed` instead of the
    /// OS, so that a simulation replays bit for bit. Whoever knows the seed can predict the
    /// draws, which voids the amplification-by-sampling argument of client-level DP: only the
    /// simulator calls this (grep for `danger`).
    pub fn danger_seed_sampling(&self, seed: u64) {
        use rand::SeedableRng;
        *lock(&self.sampling_rng) = Some(rand_chacha::ChaCha20Rng::seed_from_u64(seed));
    }

    /// The sampler for the next round: from the OS, or the next child of the seeded
    /// generator (see [`Service::danger_seed_sampling`]).
    fn round_sampler(
        &self,
    ) -> Result<crate::sampling::ClientSampler<rand_chacha::ChaCha20Rng>, ApiError> {
        use rand::SeedableRng;
        match lock(&self.sampling_rng).as_mut() {
            Some(parent) => Ok(crate::sampling::ClientSampler::with_rng(
                rand_chacha::ChaCha20Rng::from_rng(parent),
            )),
            None => crate::sampling::ClientSampler::from_os().map_err(ApiError::internal),
        }
    }

    /// The metrics this service records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs a storage call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Storage) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        bounded::run(&self.storage_slots, move || f(store.as_ref()))
            .await?
            .map_err(ApiError::from)
    }

    /// Creates a federation with its initial weights (safetensors, f32 tensors).
    pub async fn create_federation(
        &self,
        req: CreateFederation,
        weights: Vec<u8>,
    ) -> Result<Federation, ApiError> {
        if req.config.secure_aggregation() && req.config.update_clip().is_none() {
            return Err(ApiError::InvalidInput(
                "secure aggregation (on by default) quantises each update to the update clip: set \"update_clip\", or opt out with \"secure_aggregation\": false".into(),
            ));
        }
        if req.config.central_noise_multiplier() > 0.0
            && req.config.strategy().needs_individual_updates()
        {
            return Err(ApiError::InvalidInput(
                "central noise is added to the sum of updates; robust aggregators (median, trimmed mean) cannot be combined with it".into(),
            ));
        }
        let (layout, _) = ModelLayout::parse(&weights)
            .map_err(|e| ApiError::InvalidInput(format!("weights: {e}")))?;
        let new = NewFederation {
            id: req.name.clone(),
            model_spec: req.model_spec,
            config: req.config,
        };
        let fed = self
            .blocking(move |s| s.create_federation(&new, &weights, Timestamp::now()))
            .await?;
        lock(&self.layouts).insert(fed.id.clone(), Arc::new(layout));
        Ok(fed)
    }

    /// Every federation.
    pub async fn federations(&self) -> Result<Vec<Federation>, ApiError> {
        self.blocking(|s| s.federations()).await
    }

    /// One federation.
    pub async fn federation(&self, id: &FederationId) -> Result<Federation, ApiError> {
        let id = id.clone();
        self.blocking(move |s| s.federation(&id)).await
    }

    /// The layout of a federation's model (cached; read from version 0 on first use).
    async fn layout(&self, fed: &FederationId) -> Result<Arc<ModelLayout>, ApiError> {
        if let Some(l) = lock(&self.layouts).get(fed) {
            return Ok(l.clone());
        }
        let id = fed.clone();
        let bytes = self
            .blocking(move |s| {
                let v = s.model_version(&id, VersionNumber::INITIAL)?;
                s.read_blob(&v.weights)
            })
            .await?;
        let (layout, _) = ModelLayout::parse(&bytes).map_err(ApiError::internal)?;
        let layout = Arc::new(layout);
        lock(&self.layouts).insert(fed.clone(), layout.clone());
        Ok(layout)
    }

    /// Invites a client and returns its one-time enrolment token. The token names the
    /// client (`<name>.<random>`); only its SHA-256 is stored.
    pub async fn invite_client(
        &self,
        fed: &FederationId,
        name: ClientId,
        budget: Option<EpsDelta>,
    ) -> Result<ClientCreated, ApiError> {
        let budget = budget
            .map(|b| {
                crate::domain::validate_budget(
                    crate::domain::BudgetFields {
                        epsilon: "budget.epsilon",
                        delta: "budget.delta",
                    },
                    b,
                )
            })
            .transpose()?;
        let token = format!("{}.{}", name.as_str(), random_token()?);
        let hash = sha256_hex(&token);
        let (f, n) = (fed.clone(), name.clone());
        self.blocking(move |s| s.invite_client(&f, &n, budget, &hash, Timestamp::now()))
            .await?;
        Ok(ClientCreated {
            name: wire_client(&name)?,
            enrolment_token: token,
        })
    }

    /// Exchanges a one-time token and a CSR for a certificate. The CSR's subject is ignored:
    /// the certificate names the client the token was issued to.
    pub async fn enrol(
        &self,
        fed: &FederationId,
        req: EnrolRequest,
    ) -> Result<EnrolResponse, ApiError> {
        let bad_token =
            || ApiError::Forbidden("the enrolment token is unknown or already used".into());
        let (name, _) = req.token.split_once('.').ok_or_else(bad_token)?;
        let name = ClientId::parse(name).map_err(|_| bad_token())?;
        let cert_pem = self
            .ca
            .sign_client_csr(
                &req.csr_pem,
                name.as_str(),
                Validity::days(self.settings.client_cert_days),
            )
            .map_err(|e| ApiError::InvalidInput(e.to_string()))?;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(ApiError::internal)?;
        let fingerprint = CertFingerprint::of_der(der.as_ref());
        let hash = sha256_hex(&req.token);
        let f = fed.clone();
        let sample_count = req.sample_count;
        let client = self
            .blocking(move |s| {
                s.enrol_client(&f, &hash, &fingerprint, sample_count, Timestamp::now())
            })
            .await
            .map_err(|e| match e {
                ApiError::NotFound(_) => bad_token(),
                other => other,
            })?;
        if client.id != name {
            // The hash covers the name, so this cannot happen unless the store is wrong.
            return Err(ApiError::internal(
                "enrolled client does not match its token",
            ));
        }
        self.metrics.client_enrolled();
        Ok(EnrolResponse {
            name: wire_client(&client.id)?,
            certificate_pem: cert_pem,
            ca_pem: self.ca.cert_pem().to_owned(),
        })
    }

    /// A federation's clients.
    pub async fn clients(&self, fed: &FederationId) -> Result<Vec<ClientView>, ApiError> {
        let f = fed.clone();
        let clients = self.blocking(move |s| s.clients(&f)).await?;
        clients.iter().map(client_view).collect()
    }

    /// The enrolled, unrevoked client holding this certificate.
    async fn client_for_cert(
        &self,
        fed: &FederationId,
        fingerprint: &str,
    ) -> Result<Client, ApiError> {
        let fp = CertFingerprint::parse(fingerprint).map_err(ApiError::internal)?;
        let f = fed.clone();
        let client = self
            .blocking(move |s| s.client_by_fingerprint(&f, &fp))
            .await
            .map_err(|e| match e {
                ApiError::NotFound(_) => ApiError::Forbidden(format!(
                    "this certificate is not enrolled in federation {fed}"
                )),
                other => other,
            })?;
        if client.revoked {
            return Err(ApiError::Forbidden(format!(
                "client {} has been revoked",
                client.id
            )));
        }
        Ok(client)
    }

    /// Whether a certificate belongs to an unrevoked client of `fed` (model downloads).
    pub async fn check_client(
        &self,
        fed: &FederationId,
        fingerprint: &str,
    ) -> Result<(), ApiError> {
        self.client_for_cert(fed, fingerprint).await.map(|_| ())
    }

    /// A model version (`None`: the latest) with its bytes.
    pub async fn model(
        &self,
        fed: &FederationId,
        version: Option<VersionNumber>,
    ) -> Result<(ModelVersion, Bytes), ApiError> {
        let f = fed.clone();
        let mv = self
            .blocking(move |s| match version {
                Some(n) => s.model_version(&f, n),
                None => s.latest_model(&f),
            })
            .await?;
        let cached = lock(&self.model_cache)
            .get(fed)
            .filter(|(v, _)| v.weights == mv.weights)
            .map(|(_, b)| b.clone());
        let bytes = match cached {
            Some(b) => b,
            None => {
                let blob = mv.weights.clone();
                let bytes = Bytes::from(self.blocking(move |s| s.read_blob(&blob)).await?);
                lock(&self.model_cache).insert(fed.clone(), (mv.clone(), bytes.clone()));
                bytes
            }
        };
        Ok((mv, bytes))
    }

    /// A federation's rounds, oldest first.
    pub async fn rounds(&self, fed: &FederationId) -> Result<Vec<RoundView>, ApiError> {
        let f = fed.clone();
        let (rounds, entries) = self
            .blocking(move |s| Ok((s.rounds(&f)?, s.ledger_entries(&f, None)?)))
            .await?;
        let fed_eps: HashMap<RoundNumber, f64> = entries
            .iter()
            .filter(|e| e.subject == LedgerSubject::Federation)
            .map(|e| (e.round, e.epsilon_after))
            .collect();
        let mut out = Vec::with_capacity(rounds.len());
        for r in &rounds {
            out.push(self.round_view(r, fed_eps.get(&r.number).copied()).await?);
        }
        Ok(out)
    }

    /// One round.
    pub async fn round(
        &self,
        fed: &FederationId,
        number: RoundNumber,
    ) -> Result<RoundView, ApiError> {
        let f = fed.clone();
        let (round, entries) = self
            .blocking(move |s| Ok((s.round(&f, number)?, s.ledger_entries(&f, None)?)))
            .await?;
        let eps = entries
            .iter()
            .find(|e| e.subject == LedgerSubject::Federation && e.round == number)
            .map(|e| e.epsilon_after);
        self.round_view(&round, eps).await
    }

    async fn round_view(
        &self,
        r: &Round,
        federation_epsilon: Option<f64>,
    ) -> Result<RoundView, ApiError> {
        let (state, result, abort) = match &r.state {
            RoundState::InProgress { .. } => (WireRoundState::Open, None, None),
            RoundState::Completed { version } => (
                WireRoundState::Completed,
                version.map(VersionNumber::get),
                None,
            ),
            RoundState::Aborted { reason } => {
                (WireRoundState::Aborted, None, Some(reason.to_string()))
            }
        };
        let mut metrics = r.metrics.clone();
        let accepted = if r.state.is_in_progress() {
            let (accepted, progress) = self.live_progress(&r.federation, r.number).await;
            metrics.extend(progress);
            accepted
        } else {
            r.metrics.get("updates_accepted").map_or(0, |v| *v as u32)
        };
        Ok(RoundView {
            id: cohort_protocol::RoundId::new(r.number.get()).map_err(ApiError::internal)?,
            state,
            base_model_version: r.base_version.get(),
            result_model_version: result,
            participants: r
                .participants
                .iter()
                .map(wire_client)
                .collect::<Result<_, _>>()?,
            accepted,
            metrics,
            abort_reason: abort,
            opened_at_ms: u64::try_from(r.opened_at.as_millis()).unwrap_or(0),
            closed_at_ms: r
                .closed_at
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(0)),
            federation_epsilon,
        })
    }
}

fn client_view(c: &Client) -> Result<ClientView, ApiError> {
    let state = if c.revoked {
        ClientState::Revoked
    } else if c.enrolment == EnrolmentState::Enrolled {
        ClientState::Enrolled
    } else {
        ClientState::Pending
    };
    Ok(ClientView {
        name: wire_client(&c.id)?,
        state,
        last_seen: c
            .last_seen
            .map(|t| u64::try_from(t.as_millis() / 1000).unwrap_or(0)),
    })
}
