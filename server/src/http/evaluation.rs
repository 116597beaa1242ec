//! Evaluation handlers: open one (admin), list them with their reports (viewer), and a site's
//! statistics upload (client certificate). Thin: extract, call, answer.

use axum::extract::State;
use axum::http::StatusCode;
use cohort_protocol::evaluation::{
    EvaluationView, OpenEvaluation, StatisticsReceipt, StatisticsUpload,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, ApiJson, ApiPath, ClientCert, Viewer};
use crate::domain::FederationId;

/// `POST /v1/federations/{fed}/evaluations` (admin): evaluate a model version now; the body
/// is `{}` (the latest version) or `{"model_version": V}`.
pub async fn open_evaluation(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(fed): ApiPath<FederationId>,
    ApiJson(req): ApiJson<OpenEvaluation>,
) -> Result<(StatusCode, ApiJson<EvaluationView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        ApiJson(s.service.open_evaluation(&fed, &req).await?),
    ))
}

/// `GET /v1/federations/{fed}/evaluations` (viewer): every evaluation, oldest first, with
/// its report once closed.
pub async fn list_evaluations(
    State(s): State<AppState>,
    _: Viewer,
    ApiPath(fed): ApiPath<FederationId>,
) -> Result<ApiJson<Vec<EvaluationView>>, ApiError> {
    Ok(ApiJson(s.service.evaluations(&fed).await?))
}

/// `POST /v1/federations/{fed}/evaluations/{evaluation}/statistics` (client): a site's
/// released statistics.
pub async fn upload_statistics(
    State(s): State<AppState>,
    cert: ClientCert,
    ApiPath((fed, evaluation)): ApiPath<(FederationId, u64)>,
    ApiJson(upload): ApiJson<StatisticsUpload>,
) -> Result<ApiJson<StatisticsReceipt>, ApiError> {
    Ok(ApiJson(
        s.service
            .upload_statistics(&fed, evaluation, &cert.fingerprint, upload)
            .await?,
    ))
}
