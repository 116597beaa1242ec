//! The participant's view of the server: one method per API call, nothing else.
//!
//! [`Transport`] is what the round logic talks to, so an in-process simulator can drive the
//! very same participant code without HTTP by implementing it over channels or direct calls.
//! [`super::https::HttpsTransport`] implements it over HTTPS with the client certificate.

use std::future::Future;
use std::time::Duration;

use cohort_protocol::messages::{MetricsUpload, TaskPoll, UploadReceipt};
use cohort_protocol::secagg::{
    Directory, PublicKeys, Routed, SharesUpload, StagePoll, StageReceipt, UnmaskList, UnmaskShares,
};

/// Why a call failed. Only [`TransportError::is_retryable`] errors are worth repeating.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TransportError {
    /// The server could not be reached or the connection broke (restart, network).
    Network(String),
    /// The server answered with an error status and (usually) a problem document.
    Status {
        /// HTTP status.
        status: u16,
        /// The problem type's slug (`urn:cohort:problem:<slug>`), if any.
        slug: Option<String>,
        /// What the server said is wrong.
        detail: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The answer could not be decoded.
    Decode(String),
}

impl TransportError {
    /// Network failures, 5xx, 429 and 503 may succeed later; other 4xx will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Decode(_) => false,
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Network(m) => write!(f, "network error: {m}"),
            Self::Status { status, detail, .. } => write!(f, "server answered {status}: {detail}"),
            Self::Decode(m) => write!(f, "could not decode the server's answer: {m}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// Shorthand for a transport call's future.
pub type Call<'a, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, TransportError>> + Send + 'a>>;

/// Every call a participant makes. Rounds are numbered as the server numbers them.
///
/// Implementations must make re-sending a message safe: the server answers an identical
/// re-send with the same receipt, so a transport may retry after a lost answer.
pub trait Transport: Send + Sync {
    /// `GET /task`, reporting the client's current record count.
    fn poll_task(&self, sample_count: Option<u64>) -> Call<'_, TaskPoll>;
    /// The model version's safetensors bytes.
    fn download_model(&self, version: u64) -> Call<'_, Vec<u8>>;
    /// A plain (unmasked) update, for federations without secure aggregation.
    fn upload_plain(
        &self,
        round: u64,
        frame: Vec<u8>,
        num_examples: u64,
    ) -> Call<'_, UploadReceipt>;
    /// The round's DP-released training metrics. Transports that cannot carry them keep this
    /// default, which refuses, so a participant never charges a release it cannot send
    /// without being told.
    fn send_metrics(&self, round: u64, metrics: MetricsUpload) -> Call<'_, ()> {
        let _ = (round, metrics);
        Box::pin(async {
            Err(TransportError::Decode(
                "this transport does not carry released metrics".into(),
            ))
        })
    }
    /// An evaluation's released statistics. Transports that cannot carry them keep this
    /// default, which refuses.
    fn send_statistics(
        &self,
        evaluation: u64,
        upload: cohort_protocol::evaluation::StatisticsUpload,
    ) -> Call<'_, cohort_protocol::evaluation::StatisticsReceipt> {
        let _ = (evaluation, upload);
        Box::pin(async {
            Err(TransportError::Decode(
                "this transport does not carry evaluation statistics".into(),
            ))
        })
    }
    /// SecAgg stage 1.
    fn send_keys(&self, round: u64, keys: PublicKeys) -> Call<'_, StageReceipt>;
    /// The key directory.
    fn poll_directory(&self, round: u64) -> Call<'_, StagePoll<Directory>>;
    /// SecAgg stage 2.
    fn send_shares(&self, round: u64, shares: SharesUpload) -> Call<'_, StageReceipt>;
    /// The shares routed to this client.
    fn poll_routed(&self, round: u64) -> Call<'_, StagePoll<Routed>>;
    /// SecAgg stage 3: the masked input as a u32 vector frame.
    fn send_masked(&self, round: u64, frame: Vec<u8>) -> Call<'_, StageReceipt>;
    /// The unmask request.
    fn poll_unmask(&self, round: u64) -> Call<'_, StagePoll<UnmaskList>>;
    /// SecAgg stage 4.
    fn send_unmask(&self, round: u64, shares: UnmaskShares) -> Call<'_, StageReceipt>;
}
