//! Each route's body policy, applied before any handler runs: the largest body it takes, whether
//! its handler holds the body in memory, and whether the caller's membership can be checked
//! before the body is read.
//!
//! A declared `Content-Length` over the route's limit is answered 413 at once, without reading
//! a byte (a 2 GB declaration used to hold its connection until the client gave up); a body
//! without a length is cut at the limit as it streams in (axum's extractors and the upload spool
//! enforce the limit set here). A client certificate's membership of the federation in the path
//! is checked before its body is read, so a certificate that is not a member cannot make the
//! server receive a masked input or a JSON message it would refuse anyway. Enrolment is the one
//! body-carrying route whose caller cannot be checked first (the token is in the body), so its
//! limit is small.

use std::sync::Arc;

use axum::extract::{
    DefaultBodyLimit, FromRequestParts, MatchedPath, RawPathParams, Request, State,
};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::conn::BodyControl;
use crate::domain::FederationId;
use crate::tls::PeerIdentity;

/// The largest enrolment body: a one-time token (~60 bytes) and a CSR (~1 KiB as PEM) leave
/// room to spare, and a caller that cannot be authenticated first gets no more.
pub const MAX_ENROL_BYTES: usize = 64 * 1024;

/// How a route treats its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPolicy {
    /// Largest body, bytes.
    pub limit: usize,
    /// The handler holds the whole body in memory (so it is charged to the body budgets).
    pub held_in_memory: bool,
    /// The caller must be a client certificate enrolled in `{fed}`, checked before the body.
    pub member_first: bool,
}

/// The body policy of `method` on the route `path` (as matched, with `{param}`s).
pub fn policy(state: &AppState, method: &Method, path: &str) -> BodyPolicy {
    let json = BodyPolicy {
        limit: state.max_json_bytes,
        held_in_memory: true,
        member_first: false,
    };
    let spooled = BodyPolicy {
        limit: state.max_body_bytes,
        held_in_memory: false,
        member_first: true,
    };
    let client_json = BodyPolicy {
        member_first: true,
        ..json
    };
    match (method.as_str(), path) {
        // An admin's multipart model upload: only read once the Admin extractor passed.
        ("POST", "/v1/federations") => BodyPolicy {
            limit: state.max_body_bytes,
            held_in_memory: false,
            member_first: false,
        },
        ("POST", "/v1/federations/{fed}/enrol") => BodyPolicy {
            limit: MAX_ENROL_BYTES.min(state.max_json_bytes),
            ..json
        },
        ("PUT", "/v1/federations/{fed}/rounds/{round}/update")
        | ("PUT", "/v1/federations/{fed}/rounds/{round}/secagg/masked") => spooled,
        ("POST", "/v1/federations/{fed}/rounds/{round}/metrics")
        | ("POST", "/v1/federations/{fed}/rounds/{round}/secagg/keys")
        | ("POST", "/v1/federations/{fed}/rounds/{round}/secagg/shares")
        | ("POST", "/v1/federations/{fed}/rounds/{round}/secagg/unmask") => client_json,
        _ => json,
    }
}

/// Applies the route's [`BodyPolicy`] to a request before its handler runs.
pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let p = policy(&state, req.method(), &route);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > p.limit as u64) {
        let mut resp = ApiError::PayloadTooLarge(format!(
            "the body declares {} bytes; this endpoint takes at most {}",
            declared.unwrap_or_default(),
            p.limit
        ))
        .into_response();
        // The body was not read: the connection cannot carry another request.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        if req.version() >= axum::http::Version::HTTP_2 {
            resp.headers_mut().remove(header::CONNECTION);
        }
        return resp;
    }
    let (mut parts, body) = req.into_parts();
    if p.member_first
        && let Some(PeerIdentity::Verified { fingerprint }) =
            parts.extensions.get::<PeerIdentity>().cloned()
        && let Ok(params) = RawPathParams::from_request_parts(&mut parts, &state).await
        && let Some(fed) = params
            .iter()
            .find(|(k, _)| *k == "fed")
            .and_then(|(_, v)| FederationId::parse(v).ok())
        && let Err(e) = state.service.check_client(&fed, &fingerprint).await
    {
        return e.into_response();
    }
    let mut req = Request::from_parts(parts, body);
    DefaultBodyLimit::max(p.limit).apply(&mut req);
    if let Some(control) = req.extensions().get::<Arc<BodyControl>>() {
        control.set_route(p.limit, p.held_in_memory);
    }
    next.run(req).await
}
