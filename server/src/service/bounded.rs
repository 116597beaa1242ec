//! Blocking work on tokio's blocking pool, a bounded number of calls at a time.
//!
//! `spawn_blocking` starts a thread whenever every pool thread is busy, up to 512. A call that
//! then waits on a lock (the SQLite connection) or queues behind other writes holds its thread
//! all the while, and with 200 clients arriving together the server ran ~220 threads, each
//! with its stack and, past glibc's arena limit, its share of malloc arenas that keep freed
//! memory: the server's memory grew with the number of clients. Waiting for a permit here
//! costs a parked task instead of a thread.

use tokio::sync::Semaphore;

use crate::http::error::ApiError;

/// Runs `f` on the blocking pool once one of `slots`' permits is free.
pub(super) async fn run<T: Send + 'static>(
    slots: &Semaphore,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = slots
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_runs_more_calls_than_permits() {
        let slots = Arc::new(Semaphore::new(3));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                run(&slots, move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                })
                .await
            }));
        }
        let mut sum = 0;
        for t in tasks {
            sum += t.await.unwrap().unwrap();
        }
        assert_eq!(sum, (0..40).sum::<i32>(), "every call ran once");
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 3, "{most} calls ran at once with 3 permits");
        assert!(most >= 2, "the calls did run concurrently ({most})");
    }

    #[tokio::test]
    async fn a_closed_semaphore_is_a_503_not_a_hang() {
        let slots = Semaphore::new(1);
        slots.close();
        let err = run(&slots, || ()).await.unwrap_err();
        assert!(matches!(err, ApiError::Unavailable(_)), "{err:?}");
    }
}
