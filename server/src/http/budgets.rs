//! Budget handlers: audited operations for admins, the audit log for viewers, and a client's
//! own budget for its certificate. Thin, like [`super::handlers`]: extract, call, answer.

use axum::body::Bytes;
use axum::extract::State;
use cohort_protocol::budgets::{
    AuditEntry, BudgetChangeRequest, BudgetChanged, MyBudget, RevokeRequest,
};
use cohort_protocol::messages::ClientView;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, ApiJson, ApiPath, ApiQuery, ClientCert, Viewer};
use crate::domain::{ClientId, FederationId};

type ApiResult<T> = Result<ApiJson<T>, ApiError>;

/// `POST /v1/federations/{fed}/clients/{client}/budget` (admin): set or raise ε, audited.
pub async fn change_budget(
    State(s): State<AppState>,
    Admin(claims): Admin,
    ApiPath((fed, client)): ApiPath<(FederationId, ClientId)>,
    ApiJson(req): ApiJson<BudgetChangeRequest>,
) -> ApiResult<BudgetChanged> {
    Ok(ApiJson(
        s.service
            .change_budget(&fed, &client, &claims, &req)
            .await?,
    ))
}

/// `POST /v1/federations/{fed}/clients/{client}/revoke` (admin): the body is empty or
/// `{"reason": "..."}`; audited.
pub async fn revoke_client(
    State(s): State<AppState>,
    Admin(claims): Admin,
    ApiPath((fed, client)): ApiPath<(FederationId, ClientId)>,
    body: Bytes,
) -> ApiResult<ClientView> {
    let req: RevokeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_data() {
                ApiError::InvalidInput(format!("revoke: {e}"))
            } else {
                ApiError::BadRequest(format!("revoke: malformed JSON: {e}"))
            }
        })?
    };
    Ok(ApiJson(
        s.service
            .revoke_audited(&fed, &client, &claims, req.reason.as_deref())
            .await?,
    ))
}

/// Query of the audit log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this client's lines.
    client: Option<ClientId>,
}

/// `GET /v1/federations/{fed}/audit` (viewer): budget operations, oldest first.
pub async fn audit_log(
    State(s): State<AppState>,
    _: Viewer,
    ApiPath(fed): ApiPath<FederationId>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Vec<AuditEntry>> {
    Ok(ApiJson(s.service.audit_log(&fed, q.client).await?))
}

/// `GET /v1/me/budget` (client certificate): the caller's own budget and nothing else.
pub async fn my_budget(State(s): State<AppState>, cert: ClientCert) -> ApiResult<MyBudget> {
    Ok(ApiJson(s.service.my_budget(&cert.fingerprint).await?))
}
