//! The one API error type: every failure becomes an RFC 9457 problem document here, and
//! server-side faults are logged and answered with a generic 500 that reveals nothing.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cohort_protocol::problem::{CONTENT_TYPE, Problem};

/// An error a handler returns. Variants are sorted by blame: the first group is the caller's
/// fault (4xx, with a detail that says what to fix), the last is ours (5xx, detail hidden).
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// The request could not be parsed (malformed JSON, a bad path segment).
    BadRequest(String),
    /// The request parsed but a value is out of range or inconsistent.
    InvalidInput(String),
    /// No valid credentials: no or a bad bearer token, no or an unverifiable certificate.
    Unauthenticated(String),
    /// Valid credentials without the right (a viewer writing, a revoked client).
    Forbidden(String),
    /// The federation, round, client or model version does not exist.
    NotFound(String),
    /// The request conflicts with the current state (late, duplicate or replayed upload,
    /// a name taken). `slug` names the conflict for clients that branch on it.
    Conflict {
        /// Problem type slug, e.g. `late-upload`.
        slug: &'static str,
        /// What happened.
        detail: String,
    },
    /// The body is larger than allowed.
    PayloadTooLarge(String),
    /// The body has the wrong media type.
    UnsupportedMediaType(String),
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The caller exceeded its rate limit.
    TooManyRequests {
        /// Seconds until it may retry.
        retry_after_s: u64,
    },
    /// The server cannot serve this now (shutting down, storage unavailable).
    Unavailable(String),
    /// A fault on our side; logged, never shown.
    Internal(String),
}

impl ApiError {
    /// Wraps a server-side fault, logging nothing yet (the response does).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "Malformed request",
            ),
            Self::InvalidInput(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-input",
                "Invalid input",
            ),
            Self::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
            ),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::Conflict { slug, .. } => (
                StatusCode::CONFLICT,
                slug,
                "Conflict with the current state",
            ),
            Self::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::BadRequest(d)
            | Self::InvalidInput(d)
            | Self::Unauthenticated(d)
            | Self::Forbidden(d)
            | Self::NotFound(d)
            | Self::PayloadTooLarge(d)
            | Self::UnsupportedMediaType(d)
            | Self::Unavailable(d) => d.clone(),
            Self::Conflict { detail, .. } => detail.clone(),
            Self::MethodNotAllowed => {
                "this route does not accept that method; see /openapi.json".into()
            }
            Self::TooManyRequests { retry_after_s } => {
                format!("rate limit exceeded; retry after {retry_after_s} s")
            }
            Self::Internal(_) => {
                "the server failed to process the request; the error was logged".into()
            }
        }
    }

    /// The problem document this error answers with.
    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        Problem::new(slug, title, status.as_u16(), self.detail())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail())
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(%cause, "request failed on the server side");
        }
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        match &self {
            Self::TooManyRequests { retry_after_s } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            Self::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

/// A problem document for routes that do not exist.
pub async fn not_found_fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route {}; see /openapi.json", uri.path()))
}

/// A problem document for a known route with the wrong method.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let resp = ApiError::internal("SQLITE_CORRUPT at /var/lib/secret.db").into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            !text.contains("secret") && !text.contains("SQLITE"),
            "{text}"
        );
    }

    #[test]
    fn conflicts_carry_their_slug() {
        let p = ApiError::Conflict {
            slug: "late-upload",
            detail: "x".into(),
        }
        .problem();
        assert_eq!(p.kind, "urn:cohort:problem:late-upload");
        assert_eq!(p.status, 409);
    }
}
