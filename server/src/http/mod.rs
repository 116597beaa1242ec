//! The HTTP API (axum): routes, shared state and cross-cutting layers. Handlers live in
//! [`handlers`] and only extract, call the [`Service`](crate::service::Service) and answer.
//!
//! [`app`] builds the whole router from a state, so tests drive it with `oneshot` and no
//! socket; [`crate::conn::serve`] puts it behind HTTPS.

mod admin;
mod budgets;
pub mod error;
mod evaluation;
pub mod extract;
mod handlers;
pub mod limits;
pub mod openapi;
pub mod secagg;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRef, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::auth::TokenSigner;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::service::Service;
use crate::tls::{PeerIdentity, RemoteAddr};
use error::ApiError;

/// Everything a handler may need; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The operations.
    pub service: Arc<Service>,
    /// Verifies people's bearer tokens.
    pub tokens: Arc<TokenSigner>,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
    /// Per-caller rate limits.
    pub limiter: Arc<RateLimiter>,
    /// Largest JSON control message, bytes.
    pub max_json_bytes: usize,
    /// Largest binary body (model weights), bytes.
    pub max_body_bytes: usize,
}

impl FromRef<AppState> for Arc<TokenSigner> {
    fn from_ref(s: &AppState) -> Self {
        s.tokens.clone()
    }
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/v1/federations",
            get(handlers::list_federations).post(handlers::create_federation),
        )
        .route("/v1/federations/{fed}", get(handlers::get_federation))
        .route(
            "/v1/federations/{fed}/clients",
            get(handlers::list_clients).post(handlers::invite_client),
        )
        .route(
            "/v1/federations/{fed}/clients/{client}/revoke",
            post(budgets::revoke_client),
        )
        .route(
            "/v1/federations/{fed}/clients/{client}/budget",
            post(budgets::change_budget),
        )
        .route("/v1/federations/{fed}/audit", get(budgets::audit_log))
        .route("/v1/me/budget", get(budgets::my_budget))
        .route("/v1/federations/{fed}/enrol", post(handlers::enrol))
        .route(
            "/v1/federations/{fed}/rounds",
            get(handlers::list_rounds).post(handlers::open_round),
        )
        .route(
            "/v1/federations/{fed}/rounds/{round}",
            get(handlers::get_round),
        )
        .route(
            "/v1/federations/{fed}/rounds/{round}/update",
            put(handlers::upload_update),
        )
        .route("/v1/federations/{fed}/task", get(handlers::poll_task))
        .route(
            "/v1/federations/{fed}/evaluations",
            get(evaluation::list_evaluations).post(evaluation::open_evaluation),
        )
        .route(
            "/v1/federations/{fed}/evaluations/{evaluation}/statistics",
            post(evaluation::upload_statistics),
        )
        .route(
            "/v1/federations/{fed}/models/{version}",
            get(handlers::get_model),
        )
        .route("/v1/federations/{fed}/budgets", get(handlers::get_budgets))
        .route(
            "/v1/federations/{fed}/rounds/{round}/metrics",
            post(secagg::post_metrics),
        )
        .route(
            "/v1/federations/{fed}/rounds/{round}/secagg/keys",
            get(secagg::get_keys).post(secagg::post_keys),
        )
        .route(
            "/v1/federations/{fed}/rounds/{round}/secagg/shares",
            get(secagg::get_shares).post(secagg::post_shares),
        )
        .route(
            "/v1/federations/{fed}/rounds/{round}/secagg/masked",
            put(secagg::put_masked),
        )
        .route(
            "/v1/federations/{fed}/rounds/{round}/secagg/unmask",
            get(secagg::get_unmask).post(secagg::post_unmask),
        )
        // Body limits and membership before any handler reads a body; the rate limit first.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::enforce,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        .route("/admin", get(admin::index))
        .route("/admin/app.js", get(admin::script))
        .route("/admin/app.css", get(admin::style))
        .merge(api)
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Refuses callers over their rate: keyed by certificate for clients, by IP for the rest.
async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let key = match req.extensions().get::<PeerIdentity>() {
        Some(PeerIdentity::Verified { fingerprint }) => fingerprint.clone(),
        _ => req
            .extensions()
            .get::<RemoteAddr>()
            .map_or_else(|| "local".to_owned(), |a| a.0.ip().to_string()),
    };
    match state.limiter.check(&key) {
        Ok(()) => next.run(req).await,
        Err(retry_after_s) => ApiError::TooManyRequests { retry_after_s }.into_response(),
    }
}

/// Logs each request and counts responses by status.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    state.metrics.response(status.as_u16());
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if status.is_server_error() {
        tracing::error!(%method, %path, status = status.as_u16(), ms, "request");
    } else {
        tracing::info!(%method, %path, status = status.as_u16(), ms, "request");
    }
    resp
}
