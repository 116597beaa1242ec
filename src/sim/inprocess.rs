//! The in-process transport: a participant's calls go straight into the server's
//! [`Service`], the same functions the HTTPS handlers call, with the client's certificate
//! fingerprint standing in for the TLS peer identity. Only the HTTP framing is skipped, so a
//! simulated round runs the deployment's scheduling, ledger, SecAgg and strategy code.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use cohort_client::participant::transport::{Call, Transport, TransportError};
use cohort_protocol::messages::{TaskPoll, UploadReceipt};
use cohort_protocol::secagg::{
    Directory, PublicKeys, Routed, SharesUpload, StagePoll, StageReceipt, UnmaskList, UnmaskShares,
};
use cohort_server::domain::{FederationId, RoundNumber, VersionNumber};
use cohort_server::http::error::ApiError;
use cohort_server::service::Service;

/// What the HTTPS transport would have decoded from the problem document.
pub fn transport_error(e: ApiError) -> TransportError {
    let problem = e.problem();
    let retry_after = match &e {
        ApiError::TooManyRequests { retry_after_s } => Some(Duration::from_secs(*retry_after_s)),
        _ => None,
    };
    TransportError::Status {
        status: problem.status,
        slug: problem.slug().map(str::to_owned),
        detail: e.to_string(),
        retry_after,
    }
}

fn round_number(round: u64) -> Result<RoundNumber, TransportError> {
    RoundNumber::new(round).map_err(|e| TransportError::Status {
        status: 400,
        slug: Some("malformed-request".into()),
        detail: e.to_string(),
        retry_after: None,
    })
}

/// One virtual client's connection to an in-process server.
#[derive(Debug, Clone)]
pub struct InProcessTransport {
    service: Arc<Service>,
    federation: FederationId,
    fingerprint: String,
}

impl InProcessTransport {
    /// The client holding the certificate with `fingerprint` (hex SHA-256 of its DER).
    pub fn new(service: Arc<Service>, federation: FederationId, fingerprint: String) -> Self {
        Self {
            service,
            federation,
            fingerprint,
        }
    }
}

impl Transport for InProcessTransport {
    fn poll_task(&self, sample_count: Option<u64>) -> Call<'_, TaskPoll> {
        Box::pin(async move {
            self.service
                .poll_task(&self.federation, &self.fingerprint, sample_count)
                .await
                .map_err(transport_error)
        })
    }

    fn download_model(&self, version: u64) -> Call<'_, Vec<u8>> {
        Box::pin(async move {
            self.service
                .check_client(&self.federation, &self.fingerprint)
                .await
                .map_err(transport_error)?;
            let v = VersionNumber::new(version)
                .map_err(|e| transport_error(ApiError::BadRequest(e.to_string())))?;
            let (_, bytes) = self
                .service
                .model(&self.federation, Some(v))
                .await
                .map_err(transport_error)?;
            Ok(bytes.to_vec())
        })
    }

    fn upload_plain(
        &self,
        round: u64,
        frame: Vec<u8>,
        num_examples: u64,
    ) -> Call<'_, UploadReceipt> {
        Box::pin(async move {
            self.service
                .upload(
                    &self.federation,
                    round_number(round)?,
                    &self.fingerprint,
                    Some(num_examples),
                    Body::from(frame),
                )
                .await
                .map_err(transport_error)
        })
    }

    fn send_keys(&self, round: u64, keys: PublicKeys) -> Call<'_, StageReceipt> {
        Box::pin(async move {
            self.service
                .secagg_keys(
                    &self.federation,
                    round_number(round)?,
                    &self.fingerprint,
                    keys,
                )
                .await
                .map_err(transport_error)
        })
    }

    fn poll_directory(&self, round: u64) -> Call<'_, StagePoll<Directory>> {
        Box::pin(async move {
            self.service
                .secagg_directory(
                    &self.federation,
                    round_number(round)?,
                    &self.fingerprint,
                    std::future::pending(),
                )
                .await
                .map_err(transport_error)
        })
    }

    fn send_shares(&self, round: u64, shares: SharesUpload) -> Call<'_, StageReceipt> {
        Box::pin(async move {
            self.service
                .secagg_shares(
                    &self.federation,
                    round_number(round)?,
                    &self.fingerprint,
                    shares,
                )
                .await
                .map_err(transport_error)
        })
    }

    fn poll_routed(&self, round: u64) -> Call<'_, StagePoll<Routed>> {
        Box::pin(async move {
            self.service
                .secagg_routed(
                    &self.federation,
                    round_number(round)?,
                    &self.fingerprint,
                    std::future::pending(),
                )
                .await
                .map_err(transport_error)
        })
    }

    fn send_masked(&self, round: u64, frame: Vec<u8>) -> Call<'_, StageReceipt> {
        Box::pin(async move {
            self.service
                .secagg_masked(
                    &self.federation,
                    round_number(round)?,
                    &self.fingerprint,
                    Body::from(frame),
                )
                .await
                .map_err(transport_error)
        })
    }

    fn poll_unmask(&self, round: u64) -> Call<'_, StagePoll<UnmaskList>> {
        Box::pin(async move {
            self.service
                .secagg_unmask_list(
                    &self.federation,
                    round_number(round)?,
                    &self.fingerprint,
                    std::future::pending(),
                )
                .await
                .map_err(transport_error)
        })
    }

    fn send_unmask(&self, round: u64, shares: UnmaskShares) -> Call<'_, StageReceipt> {
        Box::pin(async move {
            self.service
                .secagg_unmask(
                    &self.federation,
                    round_number(round)?,
                    &self.fingerprint,
                    shares,
                )
                .await
                .map_err(transport_error)
        })
    }
}
