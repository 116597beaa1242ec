//! The accept loop and each connection's life: who gets one of the `max_connections` slots,
//! what unauthenticated clients may hold instead, and a deadline for every phase, so that no
//! client without credentials can keep enrolled clients and admins from being served.
//!
//! **Two pools.** A slot (a semaphore permit) is what a connection of an *authenticated*
//! caller is served from: a client certificate that chains to the federation CA (known when
//! the TLS handshake ends) or a request with a valid bearer token (the connection is promoted
//! at its first such request). Every served connection costs its TLS and HTTP buffers, so the
//! slots bound memory; clients beyond them wait for one (see "crowding" below). Every other
//! connection (in its TLS handshake, or without credentials: enrolment, health checks, the
//! dashboard's static files) is held in the bounded, evicting pool of [`admission`], so silent
//! or slow unauthenticated connections never hold a slot. They used to: a slot was taken
//! before `accept`, and 128 connections that sent half a request line held every one.
//!
//! **A deadline for every phase.**
//! - TLS handshake: `handshake_timeout`.
//! - Request head: a connection that has not completed a request head `idle_timeout` after it
//!   opened or after its last answer is closed, whether or not it sent part of one (the idle
//!   shutdown below, and hyper's header read timeout as a backstop: it needs a timer to run,
//!   which the connection builder used not to set).
//! - Request body: a minimum rate ([`body`]), answered with a 408 problem.
//! - Response: a write that makes no progress for `send_timeout` ends the connection ([`io`]).
//! - Idle: a connection with no request in flight for `idle_timeout` is shut down, and dropped
//!   if it has not closed [`CLOSE_GRACE`] later (hyper's graceful shutdown waits for a request
//!   whose first bytes have arrived, and HTTP/2's for the client's ping answer).
//!
//! **Limits that bound memory per connection.** HTTP/1: a 64 KiB read buffer (a head must fit;
//! bodies stream through) and 100 header fields. HTTP/2: [`H2_MAX_STREAMS`] concurrent streams,
//! a 16 KiB header list, and a 1 MiB connection flow-control window, which bounds the body
//! bytes buffered on the connection before the router reads them. Bodies a handler holds in
//! memory are charged to a per-connection and a server-wide budget ([`body`]).
//!
//! **Crowding** (why authenticated clients cannot starve each other):
//! - while an authenticated connection waits for a slot, every answer on a slot carries
//!   `Connection: close` (HTTP/2 connections get a GOAWAY instead), so busy clients hand their
//!   slots over one request at a time, like Apache's event MPM turning keep-alive off when its
//!   workers are all busy. Telling the client in the answer itself keeps this race-free: it
//!   never sends another request on a connection the server is closing. Long polls answer
//!   early at that moment ([`Crowding`]), so they do not hold slots either;
//! - idle connections are left to the idle timeout rather than cut at once, because an
//!   HTTP/1.1 client may be sending on them at that very moment.
//!
//! **Errors.** hyper's own answers to malformed HTTP/1 requests are rewritten into problem
//! documents ([`h1_problems`]).

mod admission;
mod body;
mod h1_problems;
mod io;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{CONNECTION, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

pub use body::BodyControl;

use crate::metrics::Metrics;
use crate::tls::{PeerIdentity, RemoteAddr, TlsServer};
use admission::{Admission, Unauthenticated};
use body::{BodyBudget, GuardedBody, MinRate};
use h1_problems::Announced;
use io::{GuardedIo, Progress};

/// Largest HTTP/1 read buffer per connection (headers must fit; bodies stream through it).
const HTTP1_MAX_BUF: usize = 64 * 1024;
/// Concurrent HTTP/2 streams per connection. hyper's default, 200, let one connection run 200
/// handlers at once; our clients use one or two at a time.
pub const H2_MAX_STREAMS: u32 = 32;
/// The HTTP/2 header list a client may send (hyper's default, stated).
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// HTTP/2 flow-control windows: what a client may send before the server reads it.
const H2_WINDOW: u32 = 1024 * 1024;
/// How long in-flight requests may run after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection told to close, with no request in flight, has to close by itself.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How many connections are served at once and the deadlines and budgets each one gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections of authenticated callers served at once (slots).
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// The TLS handshake must end within this.
    pub handshake_timeout: Duration,
    /// A response write that makes no progress for this long ends the connection.
    pub send_timeout: Duration,
    /// Request bodies must arrive at least this fast (bytes/s) after a 10 s grace.
    pub min_body_rate: u64,
    /// Unauthenticated connections held at once, in total.
    pub max_unauthenticated: usize,
    /// Unauthenticated connections held at once from one address.
    pub max_unauthenticated_per_ip: usize,
    /// Bytes of request bodies held in memory by handlers, server-wide.
    pub max_buffered_body_bytes: usize,
    /// Bytes of request bodies held in memory by handlers, per connection.
    pub max_buffered_body_bytes_per_connection: usize,
}

/// Whether a request's headers carry credentials that authenticate its connection (a valid
/// bearer token). The router still authorises every request itself.
pub type Authenticator = Arc<dyn Fn(&hyper::HeaderMap) -> bool + Send + Sync>;

/// What the accept loop tells every connection.
#[derive(Debug, Clone, Copy, Default)]
struct Signals {
    /// An authenticated connection is waiting for a slot.
    crowded: bool,
    /// The server is shutting down.
    stopping: bool,
}

/// Resolves once a client is waiting for a connection slot (or the server is stopping). Every
/// request carries one as an extension, so that a handler holding a request open (a long
/// poll) can answer early and let its connection hand the slot over.
#[derive(Debug, Clone)]
pub struct Crowding(watch::Receiver<Signals>);

impl Crowding {
    /// Waits until someone waits for a slot.
    pub async fn wait(mut self) {
        // An error means the accept loop has gone: the server is stopping.
        let _ = self.0.wait_for(|s| s.crowded || s.stopping).await;
    }
}

/// A connection's slot: the semaphore permit, and the open-connections gauge while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.connection_opened();
        Self {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// Connection tasks alive, so that shutdown can wait for them.
#[derive(Debug, Default)]
struct Live {
    count: AtomicUsize,
    none: Notify,
}

struct LiveGuard(Arc<Live>);

impl Live {
    fn enter(self: &Arc<Self>) -> LiveGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        LiveGuard(self.clone())
    }

    async fn all_closed(&self) {
        loop {
            let notified = self.none.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none.notify_waiters();
        }
    }
}

/// What every connection shares.
struct Shared {
    app: Router,
    tls: Option<TlsServer>,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    signals: watch::Sender<Signals>,
    waiting: AtomicUsize,
    authenticate: Authenticator,
    server_budget: (Arc<Semaphore>, usize),
    live: Arc<Live>,
}

impl Shared {
    /// A slot for an authenticated connection, waiting (and telling busy connections to hand
    /// theirs over) when all are taken; `None` if the server stops meanwhile.
    async fn slot(&self) -> Option<Slot> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(Slot::new(permit, self.metrics.clone()));
        }
        self.metrics.connection_waited();
        if self.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            self.signals.send_modify(|s| s.crowded = true);
        }
        let mut signals = self.signals.subscribe();
        let permit = tokio::select! {
            permit = self.slots.clone().acquire_owned() => permit.ok(),
            _ = signals.wait_for(|s| s.stopping) => None,
        };
        if self.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.signals.send_modify(|s| s.crowded = false);
        }
        permit.map(|p| Slot::new(p, self.metrics.clone()))
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (up to 10 s) and returns. With `tls = None` it serves plain HTTP (only
/// behind `--insecure-http`).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsServer>,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    authenticate: Authenticator,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits
        .max_connections
        .clamp(1, crate::config::MAX_CONNECTIONS_LIMIT);
    metrics.connection_slots(max);
    let admission = Admission::new(
        limits.max_unauthenticated_per_ip,
        limits.max_unauthenticated,
    );
    let (signals, _) = watch::channel(Signals::default());
    let shared = Arc::new(Shared {
        app,
        tls,
        limits,
        metrics,
        slots: Arc::new(Semaphore::new(max)),
        signals,
        waiting: AtomicUsize::new(0),
        authenticate,
        server_budget: BodyBudget::server(limits.max_buffered_body_bytes),
        live: Arc::new(Live::default()),
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Some((tcp, remote)) = accepted_or_back_off(accepted).await else {
            continue;
        };
        match admission.admit(remote.ip()) {
            Ok(place) => {
                let live = shared.live.enter();
                tokio::spawn(connection(shared.clone(), tcp, remote, place, live));
            }
            Err(admission::Refused) => {
                tracing::debug!(%remote, "refused: the address holds its share of unauthenticated connections");
                drop(tcp);
            }
        }
    }
    shared.signals.send_modify(|s| s.stopping = true);
    drop(listener);
    let live = shared.live.clone();
    drop(shared);
    if tokio::time::timeout(DRAIN_TIMEOUT, live.all_closed())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; closing");
    }
}

async fn accepted_or_back_off(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok(pair) => Some(pair),
        Err(e) => {
            // Out of file descriptors and the like: back off instead of spinning.
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Whether a connection is still in the unauthenticated pool or holds a slot.
struct Standing {
    place: Mutex<Option<Unauthenticated>>,
    slot: tokio::sync::OnceCell<Slot>,
}

impl Standing {
    fn holds_slot(&self) -> bool {
        self.slot.initialized()
    }

    /// Leaves the unauthenticated pool (so the connection can no longer be evicted) and takes
    /// a slot; `false` if the server stopped first.
    async fn authenticate(&self, shared: &Shared) -> bool {
        self.place
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        self.slot
            .get_or_try_init(|| async { shared.slot().await.ok_or(()) })
            .await
            .is_ok()
    }
}

/// One accepted connection, from its handshake to its close.
async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    place: Unauthenticated,
    live: LiveGuard,
) {
    let eviction = place.eviction();
    let standing = Arc::new(Standing {
        place: Mutex::new(Some(place)),
        slot: tokio::sync::OnceCell::new(),
    });
    tokio::select! {
        () = handshake_and_serve(&shared, tcp, remote, &standing) => {}
        () = eviction.wait() => {
            tracing::debug!(%remote, "evicted: too many unauthenticated connections");
        }
    }
    // Only now, with every clone of the app this connection held dropped (and with them
    // the server state and its data-dir lock): the drain at shutdown waits for the live
    // count, and a server restarted on the same data dir right after must find it free.
    drop(standing);
    drop(shared);
    drop(live);
}

async fn handshake_and_serve(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    standing: &Arc<Standing>,
) {
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &shared.tls else {
        return serve_connection(shared, tcp, remote, PeerIdentity::Anonymous, standing).await;
    };
    let handshake =
        tokio::time::timeout(shared.limits.handshake_timeout, tls.acceptor().accept(tcp));
    let stream = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let identity = tls.classify_peer(stream.get_ref().1.peer_certificates());
    if matches!(identity, PeerIdentity::Verified { .. }) && !standing.authenticate(shared).await {
        return;
    }
    serve_connection(shared, stream, remote, identity, standing).await;
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    /// Counted from the request's arrival until its response body is sent or dropped, so a
    /// long poll or a slow upload is never taken for idleness.
    in_flight: AtomicUsize,
    /// HTTP/2 has no `Connection: close`; a crowded HTTP/2 connection gets a GOAWAY instead.
    http2: AtomicBool,
    idle_since: Mutex<Instant>,
    /// Wakes the connection's task to recompute its idle deadline.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            changed: Notify::new(),
        }
    }

    fn idle_since(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When the connection will have been idle for `timeout`, if it is idle now.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| *self.idle_since() + timeout)
    }
}

/// Marks a request as in flight until the response body is finished or dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_one();
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in flight, and its body reservation
/// held, until it has been sent.
struct Tracked {
    body: Body,
    _busy: Busy,
    _control: Arc<BodyControl>,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The 408 problem for a body sent below the minimum rate.
fn too_slow(min_rate: u64) -> axum::response::Response {
    let problem = cohort_protocol::problem::Problem::new(
        "request-timeout",
        "Request timeout",
        408,
        format!(
            "the request body arrived slower than {min_rate} bytes/s (after a {} s grace); send it faster",
            body::BODY_GRACE.as_secs()
        ),
    );
    let mut resp =
        axum::response::Response::new(Body::from(serde_json::to_vec(&problem).unwrap_or_default()));
    *resp.status_mut() = hyper::StatusCode::REQUEST_TIMEOUT;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(cohort_protocol::problem::CONTENT_TYPE),
    );
    resp
}

async fn serve_connection<I>(
    shared: &Arc<Shared>,
    io: I,
    remote: SocketAddr,
    identity: PeerIdentity,
    standing: &Arc<Standing>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits;
    let activity = Arc::new(Activity::new());
    let announced = Announced::default();
    let budget = BodyBudget::for_connection(
        limits.max_buffered_body_bytes_per_connection,
        &shared.server_budget,
    );
    let rate = MinRate {
        bytes_per_s: limits.min_body_rate,
    };
    let svc = {
        let activity = activity.clone();
        let shared = shared.clone();
        let standing = standing.clone();
        let announced = announced.clone();
        tower::service_fn(move |req: hyper::Request<Incoming>| {
            let busy = Busy::begin(&activity);
            let http2 = req.version() == hyper::Version::HTTP_2;
            if http2 {
                activity.http2.store(true, Ordering::Relaxed);
            } else {
                announced.push(req.method().clone());
            }
            let control = Arc::new(BodyControl::default());
            let mut req = {
                let (control, budget) = (control.clone(), budget.clone());
                req.map(|incoming| Body::new(GuardedBody::new(incoming, control, budget, rate)))
            };
            req.extensions_mut().insert(identity.clone());
            req.extensions_mut().insert(RemoteAddr(remote));
            req.extensions_mut()
                .insert(Crowding(shared.signals.subscribe()));
            req.extensions_mut().insert(control.clone());
            let (shared, standing) = (shared.clone(), standing.clone());
            async move {
                if !standing.holds_slot()
                    && (shared.authenticate)(req.headers())
                    && !standing.authenticate(&shared).await
                {
                    let mut resp = axum::response::IntoResponse::into_response(
                        crate::http::error::ApiError::Unavailable(
                            "the server is shutting down".into(),
                        ),
                    );
                    resp.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                    return Ok(resp.map(|body| Tracked {
                        body,
                        _busy: busy,
                        _control: control,
                    }));
                }
                let mut resp = tokio::select! {
                    resp = shared.app.clone().oneshot(req) => match resp {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    },
                    () = control.wait_timed_out() => too_slow(rate.bytes_per_s),
                };
                if control.timed_out() {
                    resp = too_slow(rate.bytes_per_s);
                }
                // Decided as the answer is made, so the client learns it with the answer.
                let crowded = shared.signals.borrow().crowded && standing.holds_slot();
                if !http2 && (crowded || control.timed_out()) {
                    resp.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                    if crowded {
                        shared.metrics.connection_closed_crowded();
                    }
                }
                Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                    body,
                    _busy: busy,
                    _control: control,
                }))
            }
        })
    };
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // A backstop to the idle shutdown below, which fires first (and is counted as such).
        .header_read_timeout(limits.idle_timeout + CLOSE_GRACE)
        // hyper's read buffer grows to ~400 KiB per connection by default while a body
        // streams in; with hundreds of clients uploading at once that alone outgrew the
        // memory target.
        .max_buf_size(HTTP1_MAX_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .initial_connection_window_size(H2_WINDOW)
        .initial_stream_window_size(H2_WINDOW)
        .adaptive_window(false);
    let progress = Progress::new();
    let io = GuardedIo::new(io, announced, limits.send_timeout, progress.clone());
    let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
    let mut conn = std::pin::pin!(conn);
    let mut signals = shared.signals.subscribe();
    let mut closing: Option<Instant> = None;
    let result = loop {
        if closing.is_none() {
            let now = *signals.borrow_and_update();
            let idle = activity
                .idle_deadline(limits.idle_timeout)
                .is_some_and(|at| at <= Instant::now());
            let http2_crowded =
                now.crowded && activity.http2.load(Ordering::Relaxed) && standing.holds_slot();
            if now.stopping || idle || http2_crowded {
                if idle && !now.stopping {
                    tracing::debug!(%remote, "closing an idle connection");
                    shared.metrics.connection_closed_idle();
                }
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
        }
        let idle_at = activity.idle_deadline(limits.idle_timeout);
        // Once told to close, a connection with nothing in flight gets CLOSE_GRACE after it
        // last wrote (an answer may still be flushing) to close by itself.
        let drop_at = closing.and_then(|since| {
            (activity.in_flight.load(Ordering::Acquire) == 0)
                .then(|| since.max(*activity.idle_since()).max(progress.last_write()) + CLOSE_GRACE)
        });
        tokio::select! {
            res = conn.as_mut() => break res,
            changed = signals.changed(), if closing.is_none() => {
                if changed.is_err() {
                    // The accept loop is gone: the server has stopped.
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
            }
            () = activity.changed.notified() => {}
            () = sleep_until(idle_at), if closing.is_none() && idle_at.is_some() => {}
            () = sleep_until(drop_at), if drop_at.is_some() => {
                // Only if it has not written since the deadline was computed.
                if progress.last_write() + CLOSE_GRACE <= Instant::now() {
                    tracing::debug!(%remote, "dropping a connection that did not close");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_in_flight_is_never_idle_and_idleness_counts_from_the_last_response() {
        let activity = Arc::new(Activity::new());
        let timeout = Duration::from_secs(30);
        let opened = activity.idle_deadline(timeout).unwrap();
        let first = Busy::begin(&activity);
        let second = Busy::begin(&activity);
        assert_eq!(activity.idle_deadline(timeout), None);
        std::thread::sleep(Duration::from_millis(5));
        drop(first);
        assert_eq!(
            activity.idle_deadline(timeout),
            None,
            "one is still in flight"
        );
        drop(second);
        let after = activity.idle_deadline(timeout).unwrap();
        assert!(
            after >= opened + Duration::from_millis(5),
            "{after:?} vs {opened:?}"
        );
    }
}
