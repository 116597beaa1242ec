//! Extractors whose rejections are problem documents: JSON bodies, binary bodies, path
//! parameters, and the two kinds of caller (a person with a bearer token, a client with a
//! verified certificate).

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::{Claims, Role, TokenSigner};
use crate::tls::PeerIdentity;

/// A JSON body (request) or JSON answer (response); a bad body is a 400/413/415 problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => ApiError::InvalidInput(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("send the body as Content-Type: application/json".into())
        }
        JsonRejection::BytesRejection(b) => bytes_rejection(b),
        other => ApiError::BadRequest(other.body_text()),
    }
}

fn bytes_rejection(r: BytesRejection) -> ApiError {
    if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(
            "the request body exceeds this server's limit (max_body_bytes)".into(),
        )
    } else {
        ApiError::BadRequest(r.body_text())
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The media type of a vector frame.
pub const VECTOR_MEDIA_TYPE: &str = "application/vnd.cohort.vector";
/// The media type of safetensors model weights.
pub const SAFETENSORS_MEDIA_TYPE: &str = "application/vnd.safetensors";

/// A typed path; a segment that does not parse (e.g. round `0`) is a 400 problem.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| ApiError::BadRequest(e.body_text()))
    }
}

fn bearer_claims(parts: &Parts, signer: &TokenSigner) -> Result<Claims, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthenticated("send an Authorization: Bearer <token> header".into())
        })?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not ASCII".into()))?;
    let token = value.strip_prefix("Bearer ").ok_or_else(|| {
        ApiError::Unauthenticated("the Authorization header must use the Bearer scheme".into())
    })?;
    signer
        .verify(token.trim())
        .map_err(|e| ApiError::Unauthenticated(e.to_string()))
}

/// A person with at least the viewer role (admins may read too).
#[derive(Debug, Clone)]
pub struct Viewer(pub Claims);

/// A person with the admin role.
#[derive(Debug, Clone)]
pub struct Admin(pub Claims);

impl<S: Send + Sync> FromRequestParts<S> for Viewer
where
    Arc<TokenSigner>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let signer = Arc::<TokenSigner>::from_ref(state);
        bearer_claims(parts, &signer).map(Self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin
where
    Arc<TokenSigner>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let signer = Arc::<TokenSigner>::from_ref(state);
        let claims = bearer_claims(parts, &signer)?;
        if claims.role == Role::Admin {
            Ok(Self(claims))
        } else {
            Err(ApiError::Forbidden(format!(
                "this action needs the admin role; the token of {:?} has role {}",
                claims.sub,
                claims.role.as_str()
            )))
        }
    }
}

/// A caller that presented a certificate chaining to the federation CA. Which client it is
/// (and whether it is revoked) is decided by the service from the fingerprint.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// Hex SHA-256 of the certificate.
    pub fingerprint: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientCert {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<PeerIdentity>() {
            Some(PeerIdentity::Verified { fingerprint }) => Ok(Self {
                fingerprint: fingerprint.clone(),
            }),
            Some(PeerIdentity::Rejected { reason }) => Err(ApiError::Unauthenticated(format!(
                "{reason}; enrol again to get a valid certificate"
            ))),
            Some(PeerIdentity::Anonymous) | None => Err(ApiError::Unauthenticated(
                "this endpoint is for enrolled clients: connect with the client certificate issued at enrolment (mutual TLS)".into(),
            )),
        }
    }
}

/// A typed query string; a bad one is a 400 problem.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Someone allowed to read a federation's models: a person with a viewer (or admin) token,
/// or a client with a verified certificate (whose enrolment the handler checks).
#[derive(Debug, Clone)]
pub enum Reader {
    /// A person.
    Person(Claims),
    /// A client certificate.
    Client(ClientCert),
}

impl<S: Send + Sync> FromRequestParts<S> for Reader
where
    Arc<TokenSigner>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return Viewer::from_request_parts(parts, state)
                .await
                .map(|v| Self::Person(v.0));
        }
        ClientCert::from_request_parts(parts, state)
            .await
            .map(Self::Client)
            .map_err(|e| match e {
                ApiError::Unauthenticated(d) if d.starts_with("this endpoint") => {
                    ApiError::Unauthenticated(
                        "send a bearer token or connect with an enrolled client certificate".into(),
                    )
                }
                other => other,
            })
    }
}
