//! Thin handlers: extract, call the service, answer. No logic lives here.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cohort_protocol::messages::{
    BudgetsView, ClientCreated, ClientView, CreateClient, EnrolRequest, EnrolResponse, RoundView,
    TaskPoll, UploadReceipt,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, ApiJson, ApiPath, ApiQuery, ClientCert, Reader, Viewer};
use crate::domain::{
    ClientId, Federation, FederationId, FederationState, RoundNumber, VersionNumber,
};
use crate::service::CreateFederation;

type ApiResult<T> = Result<ApiJson<T>, ApiError>;

/// A federation as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FederationView {
    /// Its name.
    #[schema(value_type = cohort_protocol::FederationId)]
    name: FederationId,
    /// `active`, or `stopped` (see `stopped_reason`).
    #[schema(value_type = FederationStateName)]
    state: &'static str,
    /// Why it stopped.
    stopped_reason: Option<String>,
    /// The architecture as clients understand it.
    model_spec: serde_json::Value,
    /// Training, privacy and aggregation settings.
    #[schema(value_type = crate::domain::TrainingConfigSpec)]
    config: crate::domain::TrainingConfig,
    /// SHA-256 of the initial weights (hex).
    initial_weights_sha256: String,
    /// Unix milliseconds it was created.
    created_at_ms: i64,
}

/// The names [`FederationView::state`] takes.
#[derive(Debug, ToSchema)]
#[schema(as = FederationState, rename_all = "snake_case")]
#[allow(dead_code, reason = "only its schema is used: the view sends the name")]
pub enum FederationStateName {
    /// Taking rounds.
    Active,
    /// Stopped for good.
    Stopped,
}

/// `GET /healthz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    status: &'static str,
    /// The server's version.
    version: &'static str,
}

impl From<Federation> for FederationView {
    fn from(f: Federation) -> Self {
        let (state, stopped_reason) = match f.state {
            FederationState::Active => ("active", None),
            FederationState::Stopped { reason } => ("stopped", Some(reason)),
        };
        Self {
            name: f.id,
            state,
            stopped_reason,
            model_spec: f.model_spec,
            config: f.config,
            initial_weights_sha256: f.initial_weights.sha256,
            created_at_ms: f.created_at.as_millis(),
        }
    }
}

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> ApiJson<Health> {
    ApiJson(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /metrics`: Prometheus text format (viewer).
pub async fn metrics(State(s): State<AppState>, _: Viewer) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// `GET /openapi.json`.
pub async fn openapi() -> ApiResult<serde_json::Value> {
    Ok(ApiJson(
        super::openapi::document().map_err(ApiError::internal)?,
    ))
}

/// `GET /v1/federations` (viewer).
pub async fn list_federations(
    State(s): State<AppState>,
    _: Viewer,
) -> ApiResult<Vec<FederationView>> {
    let feds = s.service.federations().await?;
    Ok(ApiJson(feds.into_iter().map(Into::into).collect()))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the upload exceeds max_body_bytes".into())
    } else {
        ApiError::BadRequest(e.body_text())
    }
}

/// `POST /v1/federations` (admin): multipart with a `federation` JSON part and a `weights`
/// safetensors part.
pub async fn create_federation(
    State(s): State<AppState>,
    _: Admin,
    req: Request,
) -> Result<(StatusCode, ApiJson<FederationView>), ApiError> {
    let mut mp = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::UnsupportedMediaType(format!(
            "{}; send multipart/form-data with parts \"federation\" (JSON) and \"weights\" (safetensors)",
            e.body_text()
        ))
    })?;
    let (mut spec, mut weights) = (None, None);
    while let Some(field) = mp.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("federation") => {
                let bytes = field.bytes().await.map_err(multipart_error)?;
                let parsed: CreateFederation = serde_json::from_slice(&bytes).map_err(|e| {
                    if e.is_data() {
                        ApiError::InvalidInput(format!("federation: {e}"))
                    } else {
                        ApiError::BadRequest(format!("federation: malformed JSON: {e}"))
                    }
                })?;
                spec = Some(parsed);
            }
            Some("weights") => {
                weights = Some(field.bytes().await.map_err(multipart_error)?.to_vec())
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unexpected part {other:?}; send \"federation\" (JSON) and \"weights\" (safetensors)"
                )));
            }
        }
    }
    let spec =
        spec.ok_or_else(|| ApiError::BadRequest("the \"federation\" part is missing".into()))?;
    let weights =
        weights.ok_or_else(|| ApiError::BadRequest("the \"weights\" part is missing".into()))?;
    let fed = s.service.create_federation(spec, weights).await?;
    Ok((StatusCode::CREATED, ApiJson(fed.into())))
}

/// `GET /v1/federations/{fed}` (viewer).
pub async fn get_federation(
    State(s): State<AppState>,
    _: Viewer,
    ApiPath(fed): ApiPath<FederationId>,
) -> ApiResult<FederationView> {
    Ok(ApiJson(s.service.federation(&fed).await?.into()))
}

/// `GET /v1/federations/{fed}/clients` (viewer).
pub async fn list_clients(
    State(s): State<AppState>,
    _: Viewer,
    ApiPath(fed): ApiPath<FederationId>,
) -> ApiResult<Vec<ClientView>> {
    Ok(ApiJson(s.service.clients(&fed).await?))
}

/// `POST /v1/federations/{fed}/clients` (admin): invite a client, get its one-time token.
pub async fn invite_client(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(fed): ApiPath<FederationId>,
    ApiJson(req): ApiJson<CreateClient>,
) -> Result<(StatusCode, ApiJson<ClientCreated>), ApiError> {
    let name = ClientId::parse(req.name.as_str())?;
    let created = s.service.invite_client(&fed, name, req.budget).await?;
    Ok((StatusCode::CREATED, ApiJson(created)))
}

/// `POST /v1/federations/{fed}/enrol`: the one-time token authenticates.
pub async fn enrol(
    State(s): State<AppState>,
    ApiPath(fed): ApiPath<FederationId>,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> ApiResult<EnrolResponse> {
    Ok(ApiJson(s.service.enrol(&fed, req).await?))
}

/// `GET /v1/federations/{fed}/rounds` (viewer).
pub async fn list_rounds(
    State(s): State<AppState>,
    _: Viewer,
    ApiPath(fed): ApiPath<FederationId>,
) -> ApiResult<Vec<RoundView>> {
    Ok(ApiJson(s.service.rounds(&fed).await?))
}

/// `POST /v1/federations/{fed}/rounds` (admin): open a round now.
pub async fn open_round(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(fed): ApiPath<FederationId>,
) -> Result<(StatusCode, ApiJson<RoundView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        ApiJson(s.service.open_round(&fed).await?),
    ))
}

/// `GET /v1/federations/{fed}/rounds/{round}` (viewer).
pub async fn get_round(
    State(s): State<AppState>,
    _: Viewer,
    ApiPath((fed, round)): ApiPath<(FederationId, RoundNumber)>,
) -> ApiResult<RoundView> {
    Ok(ApiJson(s.service.round(&fed, round).await?))
}

/// Query of a task poll.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollQuery {
    /// The client's current number of training records.
    sample_count: Option<u64>,
}

/// `GET /v1/federations/{fed}/task` (client certificate): a task, or wait with Retry-After.
pub async fn poll_task(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath(fed): ApiPath<FederationId>,
    ApiQuery(q): ApiQuery<PollQuery>,
) -> Result<Response, ApiError> {
    let poll = s
        .service
        .poll_task(&fed, &cert.fingerprint, q.sample_count)
        .await?;
    let mut resp = ApiJson(&poll).into_response();
    if let TaskPoll::Wait { retry_after_s } = poll {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    }
    Ok(resp)
}

/// Query of an upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Records the update was trained on (FedAvg's weight).
    num_examples: Option<u64>,
}

/// `PUT /v1/federations/{fed}/rounds/{round}/update` (client certificate): a vector frame.
pub async fn upload_update(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath((fed, round)): ApiPath<(FederationId, RoundNumber)>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<UploadReceipt> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !matches!(
        ct,
        Some(super::extract::VECTOR_MEDIA_TYPE | "application/octet-stream")
    ) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "send the update as Content-Type: {}",
            super::extract::VECTOR_MEDIA_TYPE
        )));
    }
    let receipt = s
        .service
        .upload(&fed, round, &cert.fingerprint, q.num_examples, body)
        .await?;
    Ok(ApiJson(receipt))
}

/// `GET /v1/federations/{fed}/models/{version}` (viewer or client): safetensors with an
/// ETag; `If-None-Match` with the same tag gets 304. `{version}` is a number or `latest`.
pub async fn get_model(
    State(s): State<AppState>,
    reader: Reader,
    ApiPath((fed, version)): ApiPath<(FederationId, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Reader::Client(cert) = &reader {
        s.service.check_client(&fed, &cert.fingerprint).await?;
    }
    let version = if version == "latest" {
        None
    } else {
        let n: u64 = version.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "model version must be a number or \"latest\", got {version:?}"
            ))
        })?;
        Some(VersionNumber::new(n)?)
    };
    let (mv, bytes) = s.service.model(&fed, version).await?;
    let etag = format!("\"{}\"", mv.weights.sha256);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::internal)?;
    let version_value = HeaderValue::from(mv.version.get());
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    s.metrics.model_downloaded(bytes.len());
    let mut resp = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(super::extract::SAFETENSORS_MEDIA_TYPE),
            ),
            (header::ETAG, etag_value),
        ],
        bytes,
    )
        .into_response();
    resp.headers_mut()
        .insert("cohort-model-version", version_value);
    Ok(resp)
}

/// `GET /v1/federations/{fed}/budgets` (viewer).
pub async fn get_budgets(
    State(s): State<AppState>,
    _: Viewer,
    ApiPath(fed): ApiPath<FederationId>,
) -> ApiResult<BudgetsView> {
    Ok(ApiJson(s.service.budgets(&fed).await?))
}
