//! Receiving update bodies at network speed without holding them in memory.
//!
//! Uploads are decoded a few at a time (the upload permits bound memory to that many update
//! buffers), but the bodies must not wait for a permit on the wire: a client whose request body
//! sits unread has its TCP send stalled behind a zero receive window, and with 200 clients
//! queued behind two permits that lasts long enough for the client's TCP keepalive to abort
//! the connection ("connection timed out", os error 110). So every body is first copied, in
//! small chunks, into an unnamed temporary file (deleted by the OS when closed, even after a
//! crash); only then is a permit taken and the file read back. Memory per waiting upload is one
//! chunk; the page cache, not the heap, holds the queued bytes.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::http::error::ApiError;

/// Largest write into the spool file, so the buffer per body being received.
const CHUNK: usize = 64 * 1024;

/// An update body received in full and parked in an unnamed temporary file.
#[derive(Debug)]
pub(super) struct SpooledBody {
    file: std::fs::File,
    len: usize,
}

impl SpooledBody {
    /// Reads `body` to the end into a temporary file under `dir`, refusing bodies over `limit`
    /// bytes as soon as they pass it.
    pub(super) async fn receive(body: Body, dir: &Path, limit: usize) -> Result<Self, ApiError> {
        let dir = dir.to_path_buf();
        let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(&dir))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        // Written in slices of at most CHUNK: tokio's File copies each write into a buffer of
        // its own, which would otherwise grow to the largest frame hyper hands over.
        let mut out = tokio::fs::File::from_std(file);
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
            for slice in data.chunks(CHUNK) {
                out.write_all(slice).await.map_err(ApiError::internal)?;
            }
        }
        out.flush().await.map_err(ApiError::internal)?;
        let file = out.into_std().await;
        Ok(Self { file, len })
    }

    /// The body's bytes, read back into memory (call this while holding an upload permit).
    pub(super) async fn into_bytes(self) -> Result<Vec<u8>, ApiError> {
        let Self { mut file, len } = self;
        tokio::task::spawn_blocking(move || {
            file.seek(SeekFrom::Start(0))?;
            let mut bytes = Vec::with_capacity(len);
            file.take(len as u64).read_to_end(&mut bytes)?;
            Ok::<_, std::io::Error>(bytes)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_a_body_and_refuses_one_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let spooled = SpooledBody::receive(Body::from(data.clone()), dir.path(), data.len())
            .await
            .unwrap();
        assert_eq!(spooled.into_bytes().await.unwrap(), data);
        // The file is unnamed: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let err = SpooledBody::receive(Body::from(data.clone()), dir.path(), data.len() - 1)
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge(_)), "{err:?}");
    }
}
