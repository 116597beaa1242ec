//! The byte stream under hyper: a deadline on writes that make no progress, and (on HTTP/1)
//! hyper's own error answers rewritten into problem documents ([`super::h1_problems`]).
//!
//! Why a write deadline: a client that stops reading (a model download it never drains, a
//! response it ignores) keeps its response parked in the socket buffer, and the request
//! counts as in flight, so the idle timeout never fires. nginx's `send_timeout` makes the
//! same cut: the time between two writes that made progress, not the whole response.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::h1_problems::{Announced, ResponseStream, Step};

/// The HTTP/2 connection preface starts so; no HTTP/1 request does (there is no `PRI` method).
const H2_PREFACE_START: &[u8] = b"PRI ";

enum Mode {
    /// The first bytes have not been read yet.
    Sniffing(Vec<u8>),
    Http1(ResponseStream),
    /// HTTP/2 (framed and compressed: hyper's errors there are frames, not answers).
    Http2,
}

/// When the connection last wrote something: a connection told to close is dropped only once
/// it has stopped writing (a long answer may still be flushing).
#[derive(Debug)]
pub(crate) struct Progress(Mutex<Instant>);

impl Progress {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Instant::now())))
    }

    /// When bytes last went out.
    pub(crate) fn last_write(&self) -> Instant {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wrote(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }
}

/// hyper's transport: any async byte stream (TLS or, behind `--insecure-http`, TCP).
pub(crate) struct GuardedIo<T> {
    inner: T,
    mode: Mode,
    announced: Announced,
    /// Bytes taken from hyper that still have to reach `inner`, before anything else.
    out: Vec<u8>,
    out_at: usize,
    send_timeout: Duration,
    /// Armed while a write (or flush) is pending.
    stalled: Option<Pin<Box<Sleep>>>,
    progress: Arc<Progress>,
}

impl<T> std::fmt::Debug for GuardedIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedIo").finish_non_exhaustive()
    }
}

impl<T> GuardedIo<T> {
    pub(crate) fn new(
        inner: T,
        announced: Announced,
        send_timeout: Duration,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            progress,
            inner,
            mode: Mode::Sniffing(Vec::new()),
            announced,
            out: Vec::new(),
            out_at: 0,
            send_timeout,
            stalled: None,
        }
    }

    /// A write made no progress: time out once it has made none for `send_timeout`.
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let timeout = self.send_timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read its response",
        ))
    }
}

impl<T: AsyncWrite + Unpin> GuardedIo<T> {
    /// Writes `buf` to the stream, under the stall deadline.
    fn write_inner(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.stalled = None;
                if matches!(r, Ok(n) if n > 0) {
                    self.progress.wrote();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx).map(Err),
        }
    }

    /// Writes out what was taken from hyper earlier.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.out_at < self.out.len() {
            let pending = std::mem::take(&mut self.out);
            let written = self.write_inner(cx, &pending[self.out_at..]);
            self.out = pending;
            match ready!(written) {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => self.out_at += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out.clear();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Mode::Sniffing(seen) = &mut this.mode {
            let new = &buf.filled()[before..];
            let want = H2_PREFACE_START.len() - seen.len();
            seen.extend_from_slice(&new[..new.len().min(want)]);
            if new.is_empty() || seen.len() == H2_PREFACE_START.len() {
                this.mode = if seen.as_slice() == H2_PREFACE_START {
                    Mode::Http2
                } else {
                    Mode::Http1(ResponseStream::new(this.announced.clone()))
                };
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        let Mode::Http1(stream) = &mut this.mode else {
            return this.write_inner(cx, buf);
        };
        match stream.step(buf, &mut this.out) {
            Step::Pass(n) => this.write_inner(cx, &buf[..n]),
            Step::Took(n) => {
                // Best effort now; whatever is left goes out before the next write or flush.
                if let Poll::Ready(Err(e)) = this.drain(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                this.stalled = None;
                // A TLS stream accepts a write before its records are out; the flush is
                // when they went.
                if r.is_ok() {
                    this.progress.wrote();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.stall(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(r) => {
                this.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => this.stall(cx).map(Err),
        }
    }
}

#[cfg(test)]
#[path = "io_tests.rs"]
mod tests;
