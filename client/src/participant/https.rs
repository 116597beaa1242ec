//! [`Transport`] over HTTPS (reqwest on rustls) with the client certificate, plus enrolment
//! and the identity directory it produces.
//!
//! Identity directory layout: `ca.pem` (the federation CA, pins the server), `client.pem`
//! (the certificate issued at enrolment), `client.key` (its private key, written with mode
//! 0600 where the platform has modes; it never leaves the machine) and `identity.json`
//! (`{"federation": ..., "name": ...}`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cohort_protocol::messages::{
    EnrolRequest, EnrolResponse, MetricsUpload, TaskPoll, UploadReceipt,
};
use cohort_protocol::secagg::{
    Directory, PublicKeys, Routed, SharesUpload, StagePoll, StageReceipt, UnmaskList, UnmaskShares,
};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::transport::{Call, Transport, TransportError};

const VECTOR: &str = "application/vnd.cohort.vector";

/// What a client needs to talk to its federation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The federation it enrolled in.
    pub federation: String,
    /// Its name (the certificate's common name).
    pub name: String,
    /// The federation CA certificate.
    #[serde(skip)]
    pub ca_pem: String,
    /// Its certificate.
    #[serde(skip)]
    pub cert_pem: String,
    /// Its private key.
    #[serde(skip)]
    pub key_pem: String,
}

/// Why an identity directory could not be read or written.
#[derive(Debug)]
pub struct IdentityError(pub String);

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityError {}

fn read(dir: &Path, name: &str) -> Result<String, IdentityError> {
    let p = dir.join(name);
    std::fs::read_to_string(&p)
        .map_err(|e| IdentityError(format!("cannot read {}: {e}", p.display())))
}

fn write_synced(path: &Path, contents: &str, private: bool) -> Result<(), IdentityError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let err = |e: std::io::Error| IdentityError(format!("cannot write {}: {e}", path.display()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

impl Identity {
    /// Whether `dir` holds a complete identity.
    pub fn exists(dir: &Path) -> bool {
        ["identity.json", "ca.pem", "client.pem", "client.key"]
            .iter()
            .all(|f| dir.join(f).is_file())
    }

    /// Reads the identity in `dir`.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let meta: Identity = serde_json::from_str(&read(dir, "identity.json")?)
            .map_err(|e| IdentityError(format!("identity.json is malformed: {e}")))?;
        Ok(Self {
            ca_pem: read(dir, "ca.pem")?,
            cert_pem: read(dir, "client.pem")?,
            key_pem: read(dir, "client.key")?,
            ..meta
        })
    }

    /// Writes the identity into `dir` (each file fsynced; the key private to the user).
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| IdentityError(format!("cannot create {}: {e}", dir.display())))?;
        write_synced(&dir.join("client.key"), &self.key_pem, true)?;
        write_synced(&dir.join("client.pem"), &self.cert_pem, false)?;
        write_synced(&dir.join("ca.pem"), &self.ca_pem, false)?;
        let meta = serde_json::to_string_pretty(self)
            .map_err(|e| IdentityError(format!("cannot encode identity.json: {e}")))?;
        write_synced(&dir.join("identity.json"), &meta, false)
    }
}

/// How long connecting may take, TLS handshake included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// An HTTPS client that trusts only `ca_pem` and, if given, presents `(cert_pem, key_pem)`.
pub fn https_client(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the CA file is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificate is unusable: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA file holds no certificate".into());
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the client certificate is not PEM: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| format!("the client key is not PEM: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key do not match: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        // Covers the TLS handshake too. A server at its connection cap leaves new clients in
        // its listen queue (the TCP connect succeeds, the handshake waits for a free slot), so
        // this must outlast a plausible wait there, not just a dead host's silence.
        .connect_timeout(CONNECT_TIMEOUT)
        // Shorter than the server's idle timeout (30 s by default): the client drops an idle
        // connection first, rather than sending a request just as the server closes it.
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())
}

fn network(e: reqwest::Error) -> TransportError {
    TransportError::Network(e.to_string())
}

#[derive(Deserialize)]
struct ProblemBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    title: Option<String>,
    detail: Option<String>,
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, TransportError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp.text().await.unwrap_or_default();
    let (slug, detail) = match serde_json::from_str::<ProblemBody>(&text) {
        Ok(p) => (
            p.kind
                .and_then(|k| k.strip_prefix("urn:cohort:problem:").map(str::to_owned)),
            p.detail.or(p.title).unwrap_or_default(),
        ),
        Err(_) => (None, text.chars().take(300).collect()),
    };
    Err(TransportError::Status {
        status: status.as_u16(),
        slug,
        detail,
        retry_after,
    })
}

async fn json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, TransportError> {
    check(resp)
        .await?
        .json()
        .await
        .map_err(|e| TransportError::Decode(e.to_string()))
}

/// Makes a CSR and key pair for `name`; the key stays with the caller.
pub fn generate_csr(name: &str) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    Ok((csr.pem().map_err(|e| e.to_string())?, key.serialize_pem()))
}

/// Exchanges a one-time enrolment token for a certificate. `ca_pem` (from the operator,
/// with the token) pins the server for this first contact.
pub async fn enrol(
    server: &str,
    federation: &str,
    token: &str,
    ca_pem: &str,
    sample_count: Option<u64>,
) -> Result<Identity, TransportError> {
    let client = https_client(ca_pem, None).map_err(TransportError::Decode)?;
    let name = token.split('.').next().unwrap_or_default();
    let (csr_pem, key_pem) = generate_csr(name).map_err(TransportError::Decode)?;
    let req = EnrolRequest {
        token: token.to_owned(),
        csr_pem,
        sample_count,
    };
    let url = format!(
        "{}/v1/federations/{federation}/enrol",
        server.trim_end_matches('/')
    );
    let resp: EnrolResponse =
        json(client.post(url).json(&req).send().await.map_err(network)?).await?;
    Ok(Identity {
        federation: federation.to_owned(),
        name: resp.name.as_str().to_owned(),
        ca_pem: resp.ca_pem,
        cert_pem: resp.certificate_pem,
        key_pem,
    })
}

/// The participant's HTTPS connection to its federation.
#[derive(Debug, Clone)]
pub struct HttpsTransport {
    client: reqwest::Client,
    base: String,
}

impl HttpsTransport {
    /// A transport to `server` (e.g. `https://127.0.0.1:8443`) for `identity`.
    pub fn new(server: &str, identity: &Identity) -> Result<Self, String> {
        let client = https_client(
            &identity.ca_pem,
            Some((&identity.cert_pem, &identity.key_pem)),
        )?;
        Ok(Self {
            client,
            base: format!(
                "{}/v1/federations/{}",
                server.trim_end_matches('/'),
                identity.federation
            ),
        })
    }

    /// The identity directory's default location under a data directory.
    pub fn identity_dir(root: &Path) -> PathBuf {
        root.join("identity")
    }

    fn round_url(&self, round: u64, tail: &str) -> String {
        format!("{}/rounds/{round}/{tail}", self.base)
    }

    fn get_json<'a, T: DeserializeOwned + Send + 'a>(&'a self, url: String) -> Call<'a, T> {
        Box::pin(async move { json(self.client.get(url).send().await.map_err(network)?).await })
    }

    fn post_json<'a, B: Serialize + Send + Sync + 'a, T: DeserializeOwned + Send + 'a>(
        &'a self,
        url: String,
        body: B,
    ) -> Call<'a, T> {
        Box::pin(async move {
            json(
                self.client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .map_err(network)?,
            )
            .await
        })
    }

    fn put_frame<'a, T: DeserializeOwned + Send + 'a>(
        &'a self,
        url: String,
        frame: Vec<u8>,
    ) -> Call<'a, T> {
        Box::pin(async move {
            json(
                self.client
                    .put(url)
                    .header(CONTENT_TYPE, VECTOR)
                    .body(frame)
                    .send()
                    .await
                    .map_err(network)?,
            )
            .await
        })
    }
}

impl Transport for HttpsTransport {
    fn poll_task(&self, sample_count: Option<u64>) -> Call<'_, TaskPoll> {
        let url = match sample_count {
            Some(n) => format!("{}/task?sample_count={n}", self.base),
            None => format!("{}/task", self.base),
        };
        self.get_json(url)
    }

    fn download_model(&self, version: u64) -> Call<'_, Vec<u8>> {
        let url = format!("{}/models/{version}", self.base);
        Box::pin(async move {
            let resp = check(self.client.get(url).send().await.map_err(network)?).await?;
            Ok(resp.bytes().await.map_err(network)?.to_vec())
        })
    }

    fn upload_plain(
        &self,
        round: u64,
        frame: Vec<u8>,
        num_examples: u64,
    ) -> Call<'_, UploadReceipt> {
        let url = self.round_url(round, &format!("update?num_examples={num_examples}"));
        self.put_frame(url, frame)
    }

    fn send_metrics(&self, round: u64, metrics: MetricsUpload) -> Call<'_, ()> {
        let call =
            self.post_json::<_, serde_json::Value>(self.round_url(round, "metrics"), metrics);
        Box::pin(async move { call.await.map(|_| ()) })
    }

    fn send_statistics(
        &self,
        evaluation: u64,
        upload: cohort_protocol::evaluation::StatisticsUpload,
    ) -> Call<'_, cohort_protocol::evaluation::StatisticsReceipt> {
        self.post_json(
            format!("{}/evaluations/{evaluation}/statistics", self.base),
            upload,
        )
    }

    fn send_keys(&self, round: u64, keys: PublicKeys) -> Call<'_, StageReceipt> {
        self.post_json(self.round_url(round, "secagg/keys"), keys)
    }

    fn poll_directory(&self, round: u64) -> Call<'_, StagePoll<Directory>> {
        self.get_json(self.round_url(round, "secagg/keys"))
    }

    fn send_shares(&self, round: u64, shares: SharesUpload) -> Call<'_, StageReceipt> {
        self.post_json(self.round_url(round, "secagg/shares"), shares)
    }

    fn poll_routed(&self, round: u64) -> Call<'_, StagePoll<Routed>> {
        self.get_json(self.round_url(round, "secagg/shares"))
    }

    fn send_masked(&self, round: u64, frame: Vec<u8>) -> Call<'_, StageReceipt> {
        self.put_frame(self.round_url(round, "secagg/masked"), frame)
    }

    fn poll_unmask(&self, round: u64) -> Call<'_, StagePoll<UnmaskList>> {
        self.get_json(self.round_url(round, "secagg/unmask"))
    }

    fn send_unmask(&self, round: u64, shares: UnmaskShares) -> Call<'_, StageReceipt> {
        self.post_json(self.round_url(round, "secagg/unmask"), shares)
    }
}
