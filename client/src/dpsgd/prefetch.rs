//! Draws the next DP-SGD step's noise on a background thread while the current step computes.
//!
//! A step's noise depends on nothing but its size and standard deviation, so it can be drawn
//! before the step's gradient exists. For a model of half a million parameters the CSPRNG
//! Gaussians cost as much CPU as the forward pass (docs/benchmarks.md); drawn on their own
//! thread they overlap libtorch's forward and backward, which leave a core idle in the gaps
//! between small operators. A step whose noise is not ready yet waits for it; one whose size
//! or deviation changed discards (zeroizes) the prefetched values and draws afresh.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use cohort_privacy::rng::AesCtrRng;
use rand_distr::{Distribution, StandardNormal};
use tch::Tensor;
use zeroize::Zeroize;

/// One request: a flat `Float` tensor of `len` values of N(0, `std`²).
struct Job {
    std: f64,
    len: usize,
}

/// A background noise thread and the one request it may have in flight.
pub(super) struct Prefetcher {
    /// Dropping the sender ends the worker.
    jobs: Option<Sender<Job>>,
    /// `None` where libtorch refused the tensor (the step then draws its own).
    ready: Receiver<Option<Tensor>>,
    /// (std, len) of the request in flight, if any.
    pending: Option<(f64, usize)>,
    /// The pending request's result, once [`Prefetcher::settle`] has collected it.
    collected: Option<Option<Tensor>>,
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
        let (ready_tx, ready) = mpsc::channel::<Option<Tensor>>();
        let worker = std::thread::Builder::new()
            .name("dp-noise".into())
            .spawn(move || {
                // Reused by every job; zeroed as soon as libtorch has its copy.
                let mut buffer: Vec<f32> = Vec::new();
                for Job { std, len } in job_rx {
                    buffer.clear();
                    buffer.extend((0..len).map(|_| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        (z * std) as f32
                    }));
                    let tensor = Tensor::f_from_slice(&buffer).ok();
                    buffer.as_mut_slice().zeroize();
                    if ready_tx.send(tensor).is_err() {
                        break;
                    }
                }
                buffer.zeroize();
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

    /// The prefetched tensor if a request for exactly (`std`, `len`) is in flight, waiting for
    /// it to finish. A request for anything else is collected and dropped.
    pub(super) fn take(&mut self, std: f64, len: usize) -> Option<Tensor> {
        let (pending_std, pending_len) = self.pending.take()?;
        let tensor = match self.collected.take() {
            Some(result) => result?,
            None => self.ready.recv().ok()??,
        };
        let matches = pending_std.to_bits() == std.to_bits() && pending_len == len;
        (matches && tensor.numel() == len).then_some(tensor)
    }

    /// Waits until the request in flight, if any, is drawn (kept for [`Prefetcher::take`]), so
    /// that a benchmark can charge the background work to the steps that caused it.
    pub(super) fn settle(&mut self) {
        if self.pending.is_some() && self.collected.is_none() {
            self.collected = Some(self.ready.recv().ok().flatten());
        }
    }

    /// Asks for the next step's values. Returns whether the request was taken (not when one
    /// is already in flight, or the worker is gone).
    pub(super) fn request(&mut self, std: f64, len: usize) -> bool {
        let Some(jobs) = &self.jobs else {
            return false;
        };
        if self.pending.is_some() || jobs.send(Job { std, len }).is_err() {
            return false;
        }
        self.pending = Some((std, len));
        true
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.jobs = None;
        if self.pending.take().is_some() && self.collected.take().is_none() {
            let _ = self.ready.recv();
        }
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    // Test code.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tch::Kind;

    use super::*;

    #[test]
    fn a_matching_request_is_served_and_a_changed_one_is_refused() {
        let mut parent = AesCtrRng::from_key([3; 32]);
        let mut prefetcher = Prefetcher::start(&mut parent).unwrap();
        assert!(prefetcher.take(1.0, 10).is_none(), "nothing in flight yet");
        assert!(prefetcher.request(2.0, 50_000));
        assert!(!prefetcher.request(2.0, 50_000), "one at a time");
        let values = prefetcher.take(2.0, 50_000).unwrap();
        assert_eq!(values.size(), [50_000]);
        assert_eq!(values.kind(), Kind::Float);
        let n = 50_000f64;
        let mean = values.mean(Kind::Double).double_value(&[]);
        let std = values.std(true).double_value(&[]);
        assert!(mean.abs() < 5.0 * 2.0 / n.sqrt(), "mean {mean}");
        assert!((std / 2.0 - 1.0).abs() < 0.02, "std {std}");
        // A different size or deviation is never served from the prefetch.
        assert!(prefetcher.request(2.0, 100));
        assert!(prefetcher.take(2.0, 99).is_none());
        assert!(prefetcher.request(2.0, 100));
        assert!(prefetcher.take(1.0, 100).is_none());
        // A settled request is served like any other.
        assert!(prefetcher.request(1.5, 1000));
        prefetcher.settle();
        prefetcher.settle();
        assert_eq!(prefetcher.take(1.5, 1000).unwrap().size(), [1000]);
        assert!(prefetcher.take(1.5, 1000).is_none(), "served once");
        // Dropping with a request in flight joins the worker.
        assert!(prefetcher.request(1.0, 100));
        drop(prefetcher);
    }

    #[test]
    fn successive_draws_are_fresh() {
        let mut parent = AesCtrRng::from_key([4; 32]);
        let mut prefetcher = Prefetcher::start(&mut parent).unwrap();
        assert!(prefetcher.request(1.0, 8));
        let first = prefetcher.take(1.0, 8).unwrap();
        assert!(prefetcher.request(1.0, 8));
        let second = prefetcher.take(1.0, 8).unwrap();
        assert!(!first.allclose(&second, 0.0, 0.0, false));
    }
}
