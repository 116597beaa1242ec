use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::*;

#[tokio::test]
async fn progress_moves_only_when_bytes_go_out() {
    // A 16-byte pipe: the second write finds it full until the peer reads.
    let (server, mut peer) = tokio::io::duplex(16);
    let progress = Progress::new();
    let mut io = GuardedIo::new(
        server,
        Announced::default(),
        Duration::from_secs(30),
        progress.clone(),
    );
    let opened = progress.last_write();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // HTTP/2's preface switches the rewriter off, so bytes pass through unchanged.
    peer.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut preface = [0u8; 16];
    io.read_exact(&mut preface).await.unwrap();
    io.write_all(&[1; 16]).await.unwrap();
    let first = progress.last_write();
    assert!(
        first >= opened + Duration::from_millis(20),
        "{first:?} vs {opened:?}"
    );

    // The pipe is full: a write is pending and progress stays where it was.
    let blocked = tokio::time::timeout(Duration::from_millis(50), io.write_all(&[2; 16])).await;
    assert!(blocked.is_err(), "the write should wait for the peer");
    assert_eq!(progress.last_write(), first);

    let mut drained = [0u8; 16];
    peer.read_exact(&mut drained).await.unwrap();
    io.write_all(&[3; 16]).await.unwrap();
    io.flush().await.unwrap();
    assert!(progress.last_write() > first);
    assert!(progress.last_write() <= Instant::now());
}
