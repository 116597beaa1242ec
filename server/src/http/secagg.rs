//! Thin handlers for the SecAgg+ stages of a secure round, and for a participant's released
//! metrics of a round; the logic is in [`crate::service::secagg`] and
//! [`crate::service::released`]. Every endpoint needs the client certificate, and the sender of
//! each message is the certificate's client, never a field of the body.
//!
//! | stage | send | poll for the stage's output |
//! |---|---|---|
//! | 1 | `POST .../secagg/keys` (JSON) | `GET .../secagg/keys` → key directory |
//! | 2 | `POST .../secagg/shares` (JSON) | `GET .../secagg/shares` → shares routed to the caller |
//! | 3 | `PUT .../secagg/masked` (u32 vector frame) | `GET .../secagg/unmask` → survivors and dropouts |
//! | 4 | `POST .../secagg/unmask` (JSON) | `GET .../rounds/{round}` (viewer) or the next task |

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, header};
use cohort_protocol::messages::{MetricsUpload, UploadReceipt};
use cohort_protocol::secagg::{
    Directory, PublicKeys, Routed, SharesUpload, StagePoll, StageReceipt, UnmaskList, UnmaskShares,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ClientCert, VECTOR_MEDIA_TYPE};
use super::openapi::Caller::ClientCertificate;
use super::openapi::Method::{Get, Post, Put};
use super::openapi::{Content, Operation, json, op, stage_poll, with_body};
use crate::conn::Crowding;
use crate::domain::{FederationId, RoundNumber};

type Path = ApiPath<(FederationId, RoundNumber)>;
type ApiResult<T> = Result<ApiJson<T>, ApiError>;

/// The SecAgg operations (and the metrics report), for the OpenAPI document.
pub const OPERATIONS: &[Operation] = &[
    with_body(
        op(
            Post,
            "/v1/federations/{fed}/rounds/{round}/metrics",
            "A participant's training metrics for the open round, already noised on the client with DP (its local ledger paid the charge); once per client",
            ClientCertificate,
            Content::Json(json::<UploadReceipt>),
        ),
        Content::Json(json::<MetricsUpload>),
        200,
    ),
    with_body(
        op(
            Post,
            "/v1/federations/{fed}/rounds/{round}/secagg/keys",
            "SecAgg stage 1: advertise the client's two X25519 public keys (base64). Re-sending the same keys is safe; 409 if late or different",
            ClientCertificate,
            Content::Json(json::<StageReceipt>),
        ),
        Content::Json(json::<PublicKeys>),
        200,
    ),
    op(
        Get,
        "/v1/federations/{fed}/rounds/{round}/secagg/keys",
        "SecAgg: the key directory once stage 1 closed (`wait`, `ready` or `aborted`)",
        ClientCertificate,
        Content::Json(stage_poll::<Directory>),
    ),
    with_body(
        op(
            Post,
            "/v1/federations/{fed}/rounds/{round}/secagg/shares",
            "SecAgg stage 2: one encrypted share pair per neighbour",
            ClientCertificate,
            Content::Json(json::<StageReceipt>),
        ),
        Content::Json(json::<SharesUpload>),
        200,
    ),
    op(
        Get,
        "/v1/federations/{fed}/rounds/{round}/secagg/shares",
        "SecAgg: the encrypted shares addressed to the caller once stage 2 closed",
        ClientCertificate,
        Content::Json(stage_poll::<Routed>),
    ),
    with_body(
        op(
            Put,
            "/v1/federations/{fed}/rounds/{round}/secagg/masked",
            "SecAgg stage 3: the masked input (vector frame, u32); it is added into the running sum and dropped",
            ClientCertificate,
            Content::Json(json::<StageReceipt>),
        ),
        Content::Binary(&[VECTOR_MEDIA_TYPE, "application/octet-stream"]),
        200,
    ),
    op(
        Get,
        "/v1/federations/{fed}/rounds/{round}/secagg/unmask",
        "SecAgg: the survivors and dropouts whose masks must be removed, once stage 3 closed",
        ClientCertificate,
        Content::Json(stage_poll::<UnmaskList>),
    ),
    with_body(
        op(
            Post,
            "/v1/federations/{fed}/rounds/{round}/secagg/unmask",
            "SecAgg stage 4: the requested Shamir shares",
            ClientCertificate,
            Content::Json(json::<StageReceipt>),
        ),
        Content::Json(json::<UnmaskShares>),
        200,
    ),
];

/// What ends a stage's long poll early: clients queueing for a connection slot, which the
/// held poll's connection should hand over (see [`crate::conn`]).
async fn give_up(crowding: Option<Extension<Crowding>>) {
    match crowding {
        Some(Extension(c)) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// `POST .../rounds/{round}/metrics`.
pub async fn post_metrics(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath((fed, round)): Path,
    ApiJson(upload): ApiJson<MetricsUpload>,
) -> ApiResult<UploadReceipt> {
    let receipt = s
        .service
        .report_metrics(&fed, round, &cert.fingerprint, upload)
        .await?;
    Ok(ApiJson(receipt))
}

/// `POST .../secagg/keys`.
pub async fn post_keys(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath((fed, round)): Path,
    ApiJson(keys): ApiJson<PublicKeys>,
) -> ApiResult<StageReceipt> {
    let receipt = s
        .service
        .secagg_keys(&fed, round, &cert.fingerprint, keys)
        .await?;
    Ok(ApiJson(receipt))
}

/// `GET .../secagg/keys`.
pub async fn get_keys(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath((fed, round)): Path,
    crowding: Option<Extension<Crowding>>,
) -> ApiResult<StagePoll<Directory>> {
    let poll = s
        .service
        .secagg_directory(&fed, round, &cert.fingerprint, give_up(crowding))
        .await?;
    Ok(ApiJson(poll))
}

/// `POST .../secagg/shares`.
pub async fn post_shares(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath((fed, round)): Path,
    ApiJson(shares): ApiJson<SharesUpload>,
) -> ApiResult<StageReceipt> {
    let receipt = s
        .service
        .secagg_shares(&fed, round, &cert.fingerprint, shares)
        .await?;
    Ok(ApiJson(receipt))
}

/// `GET .../secagg/shares`.
pub async fn get_shares(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath((fed, round)): Path,
    crowding: Option<Extension<Crowding>>,
) -> ApiResult<StagePoll<Routed>> {
    let poll = s
        .service
        .secagg_routed(&fed, round, &cert.fingerprint, give_up(crowding))
        .await?;
    Ok(ApiJson(poll))
}

/// `PUT .../secagg/masked`: a u32 vector frame.
pub async fn put_masked(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath((fed, round)): Path,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StageReceipt> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !matches!(ct, Some(VECTOR_MEDIA_TYPE | "application/octet-stream")) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "send the masked input as Content-Type: {VECTOR_MEDIA_TYPE}"
        )));
    }
    let receipt = s
        .service
        .secagg_masked(&fed, round, &cert.fingerprint, body)
        .await?;
    Ok(ApiJson(receipt))
}

/// `GET .../secagg/unmask`.
pub async fn get_unmask(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath((fed, round)): Path,
    crowding: Option<Extension<Crowding>>,
) -> ApiResult<StagePoll<UnmaskList>> {
    let poll = s
        .service
        .secagg_unmask_list(&fed, round, &cert.fingerprint, give_up(crowding))
        .await?;
    Ok(ApiJson(poll))
}

/// `POST .../secagg/unmask`.
pub async fn post_unmask(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath((fed, round)): Path,
    ApiJson(shares): ApiJson<UnmaskShares>,
) -> ApiResult<StageReceipt> {
    let receipt = s
        .service
        .secagg_unmask(&fed, round, &cert.fingerprint, shares)
        .await?;
    Ok(ApiJson(receipt))
}
