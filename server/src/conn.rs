//! The accept loop: at most `max_connections` connections are served at once, idle ones are
//! closed, and a full server makes room for waiting clients without refusing anyone.
//!
//! Why a cap: every connection being served costs its TLS and HTTP buffers, so without one the
//! server's peak memory grew with the number of clients uploading at once. A slot is taken
//! *before* a connection is accepted, so the extra clients wait in the kernel's listen queue
//! (their TCP connect completes, the TLS handshake waits) at no cost to the server's memory,
//! and are accepted in arrival order as slots free up. The handshake timeout starts only once
//! a connection has its slot.
//!
//! Why clients cannot starve each other:
//! - a connection with no request in flight for `idle_timeout` is closed, so a quiet
//!   keep-alive client does not keep a slot;
//! - while a client waits for a slot, every answer the server gives carries
//!   `Connection: close` (HTTP/2 connections get a GOAWAY instead), so busy clients hand
//!   their slots over one request at a time, like Apache's event MPM turning keep-alive off
//!   when its workers are all busy. Telling the client in the answer itself is what keeps
//!   this race-free: it never sends another request on a connection the server is closing.
//!   Long polls answer early at that moment ([`Crowding`]), so they do not hold slots either;
//! - idle connections are left to the idle timeout rather than cut at once, because an
//!   HTTP/1.1 client may be sending on them at that very moment.

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
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::metrics::Metrics;
use crate::tls::{PeerIdentity, RemoteAddr, TlsServer};

/// How long a client may take to complete the TLS handshake once it has a slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP/1 read buffer per connection (headers must fit; bodies stream through it).
const HTTP1_MAX_BUF: usize = 64 * 1024;
/// How long in-flight requests may run after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections are served at once and how long an idle one is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections holding a slot (handshaking or served) at most.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

/// What the accept loop tells every connection.
#[derive(Debug, Clone, Copy, Default)]
struct Signals {
    /// A new connection is waiting for a slot.
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

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (up to 10 s) and returns. With `tls = None` it serves plain HTTP (only
/// behind `--insecure-http`).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsServer>,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits
        .max_connections
        .clamp(1, crate::config::MAX_CONNECTIONS_LIMIT);
    let slots = Arc::new(Semaphore::new(max));
    metrics.connection_slots(max);
    let (signals, signals_rx) = watch::channel(Signals::default());
    let spawn = |tcp: TcpStream, remote: SocketAddr, permit: OwnedSemaphorePermit| {
        let conn = Conn {
            app: app.clone(),
            remote,
            signals: signals_rx.clone(),
            idle_timeout: limits.idle_timeout,
            metrics: metrics.clone(),
        };
        tokio::spawn(conn.handshake_and_serve(
            tcp,
            tls.clone(),
            Slot::new(permit, metrics.clone()),
        ));
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // The slot first: while none is free, new clients stay in the kernel's queue.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                // A client arrived with every slot taken. It is the one connection held
                // outside the kernel's queue; the others are asked to make room for it.
                accepted = listener.accept() => {
                    let Some((tcp, remote)) = accepted_or_back_off(accepted).await else {
                        continue;
                    };
                    metrics.connection_waited();
                    signals.send_modify(|s| s.crowded = true);
                    let permit = tokio::select! {
                        permit = slots.clone().acquire_owned() => permit,
                        () = &mut shutdown => break,
                    };
                    signals.send_modify(|s| s.crowded = false);
                    match permit {
                        Ok(permit) => spawn(tcp, remote, permit),
                        Err(_) => break,
                    }
                    continue;
                }
                () = &mut shutdown => break,
            },
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        if let Some((tcp, remote)) = accepted_or_back_off(accepted).await {
            spawn(tcp, remote, permit);
        }
    }
    signals.send_modify(|s| s.stopping = true);
    drop(listener);
    // Every slot back means every connection has ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all)).await;
    if drained.is_err() {
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

/// One accepted connection and what it needs to serve requests.
struct Conn {
    app: Router,
    remote: SocketAddr,
    signals: watch::Receiver<Signals>,
    idle_timeout: Duration,
    metrics: Arc<Metrics>,
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

/// A response body that keeps its request counted as in flight until it has been sent.
struct Tracked {
    body: Body,
    _busy: Busy,
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

impl Conn {
    /// The TLS handshake (its timeout counted from here, once the slot is held), then HTTP.
    async fn handshake_and_serve(self, tcp: TcpStream, tls: Option<TlsServer>, slot: Slot) {
        self.handshake_and_serve_until_closed(tcp, tls).await;
        // Only now, with every clone of the app this connection held dropped (and with them
        // the server state and its data-dir lock): the drain at shutdown waits for the slots,
        // and a server restarted on the same data dir right after must find it free.
        drop(slot);
    }

    async fn handshake_and_serve_until_closed(self, tcp: TcpStream, tls: Option<TlsServer>) {
        let _ = tcp.set_nodelay(true);
        let Some(tls) = tls else {
            return self.run(tcp, PeerIdentity::Anonymous).await;
        };
        let remote = self.remote;
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(tcp)).await
        {
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
        self.run(stream, identity).await;
    }

    async fn run<I>(self, io: I, identity: PeerIdentity)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            app,
            remote,
            mut signals,
            idle_timeout,
            metrics,
        } = self;
        let activity = Arc::new(Activity::new());
        let svc = {
            let activity = activity.clone();
            let signals = signals.clone();
            let metrics = metrics.clone();
            tower::service_fn(move |req: hyper::Request<Incoming>| {
                let busy = Busy::begin(&activity);
                if req.version() == hyper::Version::HTTP_2 {
                    activity.http2.store(true, Ordering::Relaxed);
                }
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(identity.clone());
                req.extensions_mut().insert(RemoteAddr(remote));
                req.extensions_mut().insert(Crowding(signals.clone()));
                let app = app.clone();
                let signals = signals.clone();
                let metrics = metrics.clone();
                async move {
                    let mut resp = app.oneshot(req).await?;
                    // Decided as the answer is made, so the client learns it with the answer.
                    if signals.borrow().crowded && resp.version() != hyper::Version::HTTP_2 {
                        resp.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                        metrics.connection_closed_crowded();
                    }
                    Ok::<_, std::convert::Infallible>(
                        resp.map(|body| Tracked { body, _busy: busy }),
                    )
                }
            })
        };
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's read buffer grows to ~400 KiB per connection by default while a body streams
        // in; with hundreds of clients uploading at once that alone outgrew the memory target.
        builder.http1().max_buf_size(HTTP1_MAX_BUF);
        let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
        let mut conn = std::pin::pin!(conn);
        let mut closing = false;
        let result = loop {
            if !closing {
                let now = *signals.borrow_and_update();
                let idle = activity
                    .idle_deadline(idle_timeout)
                    .is_some_and(|at| at <= Instant::now());
                let http2_crowded = now.crowded && activity.http2.load(Ordering::Relaxed);
                if now.stopping || idle || http2_crowded {
                    if idle && !now.stopping {
                        tracing::debug!(%remote, "closing an idle connection");
                        metrics.connection_closed_idle();
                    }
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            let idle_at = activity.idle_deadline(idle_timeout);
            tokio::select! {
                res = conn.as_mut() => break res,
                changed = signals.changed(), if !closing => {
                    if changed.is_err() {
                        // The accept loop is gone: the server has stopped.
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                () = activity.changed.notified(), if !closing => {}
                () = sleep_until(idle_at), if !closing && idle_at.is_some() => {}
            }
        };
        if let Err(e) = result {
            tracing::debug!(%remote, error = %e, "connection ended with an error");
        }
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
