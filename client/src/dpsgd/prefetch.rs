//! Draws the next DP-SGD step's noise on a background thread while the current step computes.
//!
//! A step's noise depends on nothing but its size and standard deviation, so it can be drawn
//! before the step's gradient exists. For a model of half a million parameters the CSPRNG
//! Gaussians cost as much CPU as the forward pass (docs/benchmarks.md); drawn on their own
//! thread they overlap libtorch's forward and backward, which leave a core idle in the gaps
//! between small operators. A step whose noise is not ready yet waits for it; one whose size
//! or deviation changed discards (zeroizes) the prefetched values and draws afresh.
//!
//! The worker never calls into libtorch: a libtorch call from a new thread can start a second
//! OpenMP team for it, whose spinning threads then slow every later step. It hands over plain
//! `f32` values, which the training thread copies into a tensor.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use cohort_privacy::rng::AesCtrRng;
use rand_distr::{Distribution, StandardNormal};
use zeroize::Zeroize;

/// One request: `len` values of N(0, `std`²), written into `buffer` (recycled, so a steady
/// run of steps allocates nothing).
struct Job {
    std: f64,
    len: usize,
    buffer: Vec<f32>,
}

/// A background noise thread and the one request it may have in flight.
pub(super) struct Prefetcher {
    /// Dropping the sender ends the worker.
    jobs: Option<Sender<Job>>,
    ready: Receiver<Vec<f32>>,
    /// (std, len) of the request in flight, if any.
    pending: Option<(f64, usize)>,
    /// The pending request's values, once [`Prefetcher::settle`] has collected them.
    collected: Option<Vec<f32>>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Prefetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the noise itself.
        f.debug_struct("Prefetcher")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Prefetcher {
    /// Starts a worker that draws from its own AES-256-CTR stream, keyed from `parent`.
    /// `None` where the OS would not start a thread: the caller then draws every step itself.
    pub(super) fn start(parent: &mut AesCtrRng) -> Option<Self> {
        let mut rng = AesCtrRng::from_parent(parent);
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<Vec<f32>>();
        let worker = std::thread::Builder::new()
            .name("dp-noise".into())
            .spawn(move || {
                for Job {
                    std,
                    len,
                    mut buffer,
                } in job_rx
                {
                    buffer.clear();
                    buffer.extend((0..len).map(|_| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        (z * std) as f32
                    }));
                    if let Err(mpsc::SendError(mut unread)) = ready_tx.send(buffer) {
                        unread.zeroize();
                        return;
                    }
                }
            })
            .ok()?;
        Some(Self {
            jobs: Some(jobs),
            ready,
            pending: None,
            collected: None,
            worker: Some(worker),
        })
    }

    /// The prefetched values if a request for exactly (`std`, `len`) is in flight, waiting for
    /// it to finish. A request for anything else is collected and zeroized.
    pub(super) fn take(&mut self, std: f64, len: usize) -> Option<Vec<f32>> {
        let (pending_std, pending_len) = self.pending.take()?;
        let mut values = match self.collected.take() {
            Some(values) => values,
            None => self.ready.recv().ok()?,
        };
        if pending_std.to_bits() == std.to_bits() && pending_len == len && values.len() == len {
            Some(values)
        } else {
            values.zeroize();
            None
        }
    }

    /// Waits until the request in flight, if any, is drawn (kept for [`Prefetcher::take`]), so
    /// that a benchmark can charge the background work to the steps that caused it.
    pub(super) fn settle(&mut self) {
        if self.pending.is_some() && self.collected.is_none() {
            self.collected = self.ready.recv().ok();
        }
    }

    /// Asks for the next step's values, drawn into `buffer` (whose contents the caller has
    /// already zeroized). A request that cannot be taken (one is in flight, or the worker is
    /// gone) gives the buffer back.
    pub(super) fn request(
        &mut self,
        std: f64,
        len: usize,
        buffer: Vec<f32>,
    ) -> Result<(), Vec<f32>> {
        let Some(jobs) = &self.jobs else {
            return Err(buffer);
        };
        if self.pending.is_some() {
            return Err(buffer);
        }
        jobs.send(Job { std, len, buffer })
            .map_err(|mpsc::SendError(job)| job.buffer)?;
        self.pending = Some((std, len));
        Ok(())
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(mut values) = self.collected.take() {
            values.zeroize();
        } else if self.pending.is_some()
            && let Ok(mut unread) = self.ready.recv()
        {
            unread.zeroize();
        }
        self.pending = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    // Test code.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn moments(values: &[f32]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        (mean, var.sqrt())
    }

    #[test]
    fn a_matching_request_is_served_and_a_changed_one_is_refused() {
        let mut parent = AesCtrRng::from_key([3; 32]);
        let mut prefetcher = Prefetcher::start(&mut parent).unwrap();
        assert!(prefetcher.take(1.0, 10).is_none(), "nothing in flight yet");
        prefetcher.request(2.0, 50_000, Vec::new()).unwrap();
        assert!(
            prefetcher.request(2.0, 50_000, Vec::new()).is_err(),
            "one at a time"
        );
        let values = prefetcher.take(2.0, 50_000).unwrap();
        assert_eq!(values.len(), 50_000);
        let (mean, std) = moments(&values);
        assert!(mean.abs() < 5.0 * 2.0 / 50_000f64.sqrt(), "mean {mean}");
        assert!((std / 2.0 - 1.0).abs() < 0.02, "std {std}");
        // A different size or deviation is never served from the prefetch.
        prefetcher.request(2.0, 100, values).unwrap();
        assert!(prefetcher.take(2.0, 99).is_none());
        prefetcher.request(2.0, 100, Vec::new()).unwrap();
        assert!(prefetcher.take(1.0, 100).is_none());
        // A settled request is served like any other, once.
        prefetcher.request(1.5, 1000, Vec::new()).unwrap();
        prefetcher.settle();
        prefetcher.settle();
        assert_eq!(prefetcher.take(1.5, 1000).unwrap().len(), 1000);
        assert!(prefetcher.take(1.5, 1000).is_none(), "served once");
        // Dropping with a request in flight joins the worker.
        prefetcher.request(1.0, 100, Vec::new()).unwrap();
        drop(prefetcher);
    }

    #[test]
    fn successive_draws_are_fresh() {
        let mut parent = AesCtrRng::from_key([4; 32]);
        let mut prefetcher = Prefetcher::start(&mut parent).unwrap();
        prefetcher.request(1.0, 8, Vec::new()).unwrap();
        let first = prefetcher.take(1.0, 8).unwrap();
        let kept = first.clone();
        prefetcher.request(1.0, 8, first).unwrap();
        let second = prefetcher.take(1.0, 8).unwrap();
        assert_ne!(kept, second);
    }
}
