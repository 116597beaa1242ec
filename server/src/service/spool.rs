//! Receiving update bodies at network speed without holding them in memory.
//!
//! Uploads are decoded a few at a time (the upload permits bound memory to that many update
//! buffers), but the bodies must not wait for a permit on the wire: a client whose request body
//! sits unread has its TCP send stalled behind a zero receive window, and with 200 clients
//! queued behind two permits that lasts long enough for the client's TCP keepalive to abort
//! the connection ("connection timed out", os error 110). So every body is first copied into
//! an unnamed temporary file (deleted by the OS when closed, even after a crash); only then is
//! a permit taken and the file read back. Memory per waiting upload is one frame (hyper's,
//! written straight from its buffer); the page cache, not the heap, holds the queued bytes.
//! The file operations run a few at a time ([`WRITERS`]), and the buffers an upload is decoded
//! into are reused ([`UpdateBuffers`]), so what the server's peak memory still gains per
//! client is its connection's TLS and HTTP buffers (~0.15 MiB in release while every client
//! uploads at once), whatever the model size.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use super::bounded;
use crate::http::error::ApiError;

/// Blocking file operations (creating, writing a spool file) at once, across all uploads.
pub(super) const WRITERS: usize = 4;

/// An update body received in full and parked in an unnamed temporary file.
#[derive(Debug)]
pub(super) struct SpooledBody {
    file: Arc<std::fs::File>,
    len: usize,
}

impl SpooledBody {
    /// Reads `body` to the end into a temporary file under `dir`, refusing bodies over `limit`
    /// bytes as soon as they pass it.
    ///
    /// Each frame hyper hands over is written as it is, from hyper's own buffer, and dropped
    /// before the next is read: no buffer of ours exists per upload. (tokio's `fs::File`
    /// copied every write into a buffer of its own that grew to ~116 KiB per upload, a third
    /// of what each of 200 concurrent uploads cost the server.)
    pub(super) async fn receive(
        body: Body,
        dir: &Path,
        limit: usize,
        writers: &Semaphore,
    ) -> Result<Self, ApiError> {
        let dir = dir.to_path_buf();
        let file = bounded::run(writers, move || tempfile::tempfile_in(&dir))
            .await?
            .map_err(ApiError::internal)?;
        let file = Arc::new(file);
        let mut body = body;
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| {
                ApiError::BadRequest("the body could not be read completely".into())
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            len = len.saturating_add(data.len());
            if len > limit {
                return Err(ApiError::PayloadTooLarge(
                    "the update exceeds max_body_bytes".into(),
                ));
            }
            let out = file.clone();
            bounded::run(writers, move || (&*out).write_all(&data))
                .await?
                .map_err(ApiError::internal)?;
        }
        Ok(Self { file, len })
    }

    /// Reads the body back into `buf` (its old contents dropped, its allocation kept); call
    /// this while holding an upload permit.
    pub(super) async fn read_into(self, mut buf: Vec<u8>) -> Result<Vec<u8>, ApiError> {
        let Self { file, len } = self;
        tokio::task::spawn_blocking(move || {
            let mut file = &*file;
            file.seek(SeekFrom::Start(0))?;
            buf.clear();
            buf.reserve_exact(len);
            file.take(len as u64).read_to_end(&mut buf)?;
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
    }
}

/// The buffers updates are decoded in, reused from one upload to the next.
///
/// Decoding needs an update's bytes and its values in memory at once (it must be checked in
/// full before anything is added to the sum). Allocating and freeing two model-sized buffers
/// per upload fragmented glibc's heap: once one such buffer has been freed, glibc serves the
/// next from its per-thread arenas rather than from a fresh mapping, and what the arenas kept
/// grew with the number of uploads (at 200 clients x 4 MB, ~45 MiB more peak memory than at
/// 50). Leases are taken under an upload permit, so the pool holds at most
/// `upload_concurrency` pairs, each as large as the largest update seen.
#[derive(Debug, Default)]
pub(super) struct UpdateBuffers {
    free: std::sync::Mutex<Vec<(Vec<u8>, Vec<f32>)>>,
}

impl UpdateBuffers {
    /// A pair of buffers, returned to the pool when the lease drops.
    pub(super) fn lease(&self) -> Lease<'_> {
        let (bytes, values) = self.lock().pop().unwrap_or_default();
        Lease {
            pool: self,
            bytes,
            values,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Vec<u8>, Vec<f32>)>> {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Buffers borrowed from [`UpdateBuffers`].
#[derive(Debug)]
pub(super) struct Lease<'a> {
    pool: &'a UpdateBuffers,
    /// The update's wire bytes.
    pub(super) bytes: Vec<u8>,
    /// Its decoded values.
    pub(super) values: Vec<f32>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.bytes);
        let mut values = std::mem::take(&mut self.values);
        // Cleared so no update outlives its upload; the allocations stay.
        bytes.clear();
        values.clear();
        self.pool.lock().push((bytes, values));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_a_body_and_refuses_one_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let writers = Semaphore::new(WRITERS);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let spooled =
            SpooledBody::receive(Body::from(data.clone()), dir.path(), data.len(), &writers)
                .await
                .unwrap();
        let garbage = vec![7u8; 10];
        assert_eq!(spooled.read_into(garbage).await.unwrap(), data);
        // The file is unnamed: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let err = SpooledBody::receive(
            Body::from(data.clone()),
            dir.path(),
            data.len() - 1,
            &writers,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge(_)), "{err:?}");
    }

    #[test]
    fn leases_reuse_the_buffers_and_hand_them_back_empty() {
        let pool = UpdateBuffers::default();
        let ptrs = {
            let mut a = pool.lease();
            a.bytes.extend_from_slice(&[1; 1000]);
            a.values.extend_from_slice(&[2.0; 500]);
            (a.bytes.as_ptr(), a.values.as_ptr())
        };
        let b = pool.lease();
        assert!(
            b.bytes.is_empty() && b.values.is_empty(),
            "no update outlives its upload"
        );
        assert!(b.bytes.capacity() >= 1000 && b.values.capacity() >= 500);
        assert_eq!(
            (b.bytes.as_ptr(), b.values.as_ptr()),
            ptrs,
            "the same allocations"
        );
        // A second lease while the first is out gets fresh buffers; both come back.
        let c = pool.lease();
        assert_eq!(c.bytes.capacity(), 0);
        drop((b, c));
        assert_eq!(pool.lock().len(), 2);
    }
}
