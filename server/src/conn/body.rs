//! Request bodies as the connection hands them to the router: each must arrive at a minimum
//! rate, and each body the handler will hold in memory first reserves its size from a
//! per-connection and a server-wide budget.
//!
//! Why a rate and not a plain timeout: a client trickling one byte a second defeats any
//! "no data for N seconds" rule while holding its request open for as long as it likes.
//! Why only the time the server waits counts: a handler that pauses (a spool write, an upload
//! permit) must not make its client look slow.
//!
//! Why a budget: over HTTP/2 one connection may run many requests at once, and a handler that
//! buffers a JSON body holds all of it, so memory was bounded by neither the connection cap
//! nor the stream limit (200 enrolment streams of 1 MB on one connection cost ~195 MiB). A
//! body reserves its declared length (or its route's limit when no length is declared) before
//! its first byte is read, all at once, so two half-read bodies can never wait on each other;
//! while it waits, flow control stops its client. Bodies spooled to disk (updates, masked
//! inputs) and an admin's model upload are not charged: they do not sit in memory, or come
//! from someone trusted with `max_body_bytes`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How long the server waits on a request body before it must keep up the minimum rate.
pub(crate) const BODY_GRACE: Duration = Duration::from_secs(10);

/// What the router tells the connection about a request's body, and what the connection tells
/// the router when the body stalled. Every request carries one as an extension.
#[derive(Debug)]
pub struct BodyControl {
    /// The route's limit; `usize::MAX` until the router sets it.
    limit: AtomicUsize,
    /// Whether the body is held in memory by its handler (charged to the budgets).
    charged: AtomicBool,
    timed_out: AtomicBool,
    timeout: Notify,
    /// The reservation, held until the request is answered (the handler holds the bytes).
    held: Mutex<Option<Reservation>>,
}

impl Default for BodyControl {
    fn default() -> Self {
        Self {
            limit: AtomicUsize::new(usize::MAX),
            charged: AtomicBool::new(true),
            timed_out: AtomicBool::new(false),
            timeout: Notify::new(),
            held: Mutex::new(None),
        }
    }
}

impl BodyControl {
    /// The route's body limit, and whether its handler keeps the body in memory.
    pub fn set_route(&self, limit: usize, held_in_memory: bool) {
        self.limit.store(limit, Ordering::Relaxed);
        self.charged.store(held_in_memory, Ordering::Relaxed);
    }

    /// Whether the client sent its body too slowly.
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }

    /// Resolves when the client's body falls below the minimum rate.
    pub(crate) async fn wait_timed_out(&self) {
        loop {
            let notified = self.timeout.notified();
            if self.timed_out() {
                return;
            }
            notified.await;
        }
    }

    fn time_out(&self) {
        self.timed_out.store(true, Ordering::Release);
        self.timeout.notify_waiters();
    }
}

/// The per-connection and server-wide budgets of bytes held by request bodies.
#[derive(Debug, Clone)]
pub(crate) struct BodyBudget {
    connection: Arc<Semaphore>,
    connection_size: usize,
    server: Arc<Semaphore>,
    server_size: usize,
}

impl BodyBudget {
    /// The server-wide budget of `bytes`.
    pub(crate) fn server(bytes: usize) -> (Arc<Semaphore>, usize) {
        let bytes = bytes.min(Semaphore::MAX_PERMITS);
        (Arc::new(Semaphore::new(bytes)), bytes)
    }

    /// A budget of `per_connection` bytes for one connection, drawing on `server`.
    pub(crate) fn for_connection(per_connection: usize, server: &(Arc<Semaphore>, usize)) -> Self {
        let per_connection = per_connection.min(Semaphore::MAX_PERMITS);
        Self {
            connection: Arc::new(Semaphore::new(per_connection)),
            connection_size: per_connection,
            server: server.0.clone(),
            server_size: server.1,
        }
    }

    /// Reserves `bytes` from the connection's budget, then from the server's. Always in that
    /// order, so that two requests can never hold what the other waits for.
    async fn reserve(self, bytes: u32) -> Option<Reservation> {
        let connection = self.connection.acquire_many_owned(bytes).await.ok()?;
        let server = self.server.acquire_many_owned(bytes).await.ok()?;
        Some((connection, server))
    }
}

type Reservation = (OwnedSemaphorePermit, OwnedSemaphorePermit);
type Reserving = Pin<Box<dyn Future<Output = Option<Reservation>> + Send>>;

/// The body was not sent at the minimum rate.
#[derive(Debug)]
pub(crate) struct BodyTooSlow;

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body was sent below the minimum rate")
    }
}

impl std::error::Error for BodyTooSlow {}

/// How fast bodies must come.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MinRate {
    /// Bytes per second after [`BODY_GRACE`].
    pub(crate) bytes_per_s: u64,
}

impl MinRate {
    /// How long the server may wait on a client that has sent `received` bytes.
    fn allowance(self, received: u64) -> Duration {
        BODY_GRACE + Duration::from_secs_f64(received as f64 / self.bytes_per_s.max(1) as f64)
    }
}

enum Stage {
    Unreserved,
    Reserving(Reserving),
    Reading,
}

/// A request body with a minimum rate and a memory reservation.
pub(crate) struct GuardedBody {
    inner: Incoming,
    control: Arc<BodyControl>,
    budget: BodyBudget,
    declared: Option<u64>,
    stage: Stage,
    rate: MinRate,
    received: u64,
    /// Time spent waiting on the client, over the completed waits.
    waited: Duration,
    /// When the current wait began.
    waiting_since: Option<Instant>,
    deadline: Pin<Box<Sleep>>,
}

impl std::fmt::Debug for GuardedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedBody")
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl GuardedBody {
    pub(crate) fn new(
        inner: Incoming,
        control: Arc<BodyControl>,
        budget: BodyBudget,
        rate: MinRate,
    ) -> Self {
        let declared = inner.size_hint().exact();
        Self {
            inner,
            control,
            budget,
            declared,
            stage: Stage::Unreserved,
            rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// Bytes to reserve: the declared length, else the route's limit, never more than the
    /// connection's whole budget (a larger request could never be served otherwise).
    fn reservation_size(&self) -> u32 {
        let limit = self.control.limit.load(Ordering::Relaxed) as u64;
        let want = self.declared.unwrap_or(limit).min(limit);
        let cap = self.budget.connection_size.min(self.budget.server_size) as u64;
        u32::try_from(want.min(cap)).unwrap_or(u32::MAX)
    }
}

impl HttpBody for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        loop {
            match &mut this.stage {
                Stage::Unreserved => {
                    if this.inner.is_end_stream() || !this.control.charged.load(Ordering::Relaxed) {
                        this.stage = Stage::Reading;
                        continue;
                    }
                    let bytes = this.reservation_size();
                    this.stage = Stage::Reserving(Box::pin(this.budget.clone().reserve(bytes)));
                }
                Stage::Reserving(reserving) => {
                    let reservation = ready!(reserving.as_mut().poll(cx));
                    *this
                        .control
                        .held
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = reservation;
                    this.stage = Stage::Reading;
                }
                Stage::Reading => break,
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                if let Some(Ok(f)) = &frame
                    && let Some(data) = f.data_ref()
                {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let now = Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let left = this
                    .rate
                    .allowance(this.received)
                    .saturating_sub(this.waited);
                let at = since + left;
                if this.deadline.deadline() != at {
                    this.deadline.as_mut().reset(at);
                }
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.control.time_out();
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
