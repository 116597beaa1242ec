//! Throughput of non-private training, DP-SGD with ghost clipping, and the per-sample
//! fallback, on the same model, batch and optimiser (what `cohort bench dp-sgd` reports).
//!
//! Inputs are random tensors of the model's input shape: throughput does not depend on pixel
//! values, and this keeps the benchmark free of data files. Each variant gets warm-up steps,
//! then runs for at least `min_seconds` of wall time. Non-private and ghost-clipping steps
//! alternate in short blocks, so the overhead ratio holds even on a machine whose load changes
//! during the run.

use std::time::{Duration, Instant};

use serde::Serialize;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::dpsgd::{
    self, ClippingMode, DpConfig, DpError, NonPrivateTrainer, OptimizerConfig, StepAccountant,
};
use crate::model::{self, InputKind, ModelSpec};

/// Measured throughputs, in examples per second.
#[derive(Debug, Clone, Serialize)]
pub struct DpSgdBenchReport {
    /// The model's name.
    pub model: String,
    /// Examples per step.
    pub batch: i64,
    /// Parameters in the model.
    pub parameters: i64,
    /// Non-private training (mean loss, one backward, SGD).
    pub samples_per_s_nonprivate: f64,
    /// DP-SGD with ghost clipping and the default noise (AES-256-CTR, a CSPRNG).
    pub samples_per_s_dp: f64,
    /// DP-SGD with the per-sample fallback (one backward per example).
    pub samples_per_s_dp_fallback: f64,
    /// DP time / non-private time per example.
    pub overhead: f64,
    /// libtorch intra-op threads.
    pub threads: i32,
}

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    /// Examples per step.
    pub batch: i64,
    /// Minimum measured wall time per variant.
    pub min_seconds: f64,
    /// Untimed steps before measuring.
    pub warmup_steps: usize,
    /// Where to run.
    pub device: Device,
}

#[derive(Debug)]
struct Uncounted;

impl StepAccountant for Uncounted {
    fn step(&mut self, _: f64, _: f64) {}
    fn epsilon(&self, _: f64) -> Option<f64> {
        None
    }
}

fn timed(
    settings: &BenchSettings,
    mut step: impl FnMut() -> Result<(), DpError>,
) -> Result<f64, DpError> {
    for _ in 0..settings.warmup_steps {
        step()?;
    }
    let start = Instant::now();
    let mut steps = 0u64;
    let budget = Duration::from_secs_f64(settings.min_seconds);
    while steps == 0 || start.elapsed() < budget {
        step()?;
        steps += 1;
    }
    Ok(steps as f64 * settings.batch as f64 / start.elapsed().as_secs_f64())
}

/// Steps of one variant run back to back before the other's turn, as in training, where one
/// step follows another of the same kind (per-step alternation measured the non-private step
/// slower than it runs on its own, with the DP step's buffers in the caches); few enough that a
/// change in load hits both alike.
const BLOCK_STEPS: usize = 8;

/// Throughputs of two variants measured in alternating blocks of [`BLOCK_STEPS`] steps, so
/// that a change in machine load (a shared CI runner, other builds) hits both alike and their
/// ratio stays meaningful. `first` and `second` each run the number of steps they are given.
/// Runs until each variant has had `min_seconds`.
fn timed_pair(
    settings: &BenchSettings,
    mut first: impl FnMut(usize) -> Result<(), DpError>,
    mut second: impl FnMut(usize) -> Result<(), DpError>,
) -> Result<(f64, f64), DpError> {
    first(settings.warmup_steps)?;
    second(settings.warmup_steps)?;
    let budget = Duration::from_secs_f64(settings.min_seconds);
    let (mut spent_first, mut spent_second) = (Duration::ZERO, Duration::ZERO);
    let mut steps = 0u64;
    while steps == 0 || spent_first < budget || spent_second < budget {
        let start = Instant::now();
        first(BLOCK_STEPS)?;
        let middle = Instant::now();
        second(BLOCK_STEPS)?;
        spent_first += middle - start;
        spent_second += middle.elapsed();
        steps += BLOCK_STEPS as u64;
    }
    let examples = steps as f64 * settings.batch as f64;
    Ok((
        examples / spent_first.as_secs_f64(),
        examples / spent_second.as_secs_f64(),
    ))
}

/// Runs the three variants on `spec` and reports their throughputs.
pub fn dp_sgd(
    name: &str,
    spec: &ModelSpec,
    settings: &BenchSettings,
) -> Result<DpSgdBenchReport, DpError> {
    let batch = settings.batch;
    let mut shape = vec![batch];
    shape.extend_from_slice(&spec.input_shape);
    let features = match spec.input {
        InputKind::Float => Tensor::f_randn(shape.as_slice(), (Kind::Float, settings.device))?,
        InputKind::Tokens => Tensor::f_zeros(shape.as_slice(), (Kind::Int64, settings.device))?,
    };
    let build = || -> Result<model::Model, DpError> {
        let vs = VarStore::new(settings.device);
        model::build(&vs.root(), spec).map_err(|e| DpError::Unsupported(e.to_string()))
    };
    let probe = build()?;
    let parameters: i64 = probe
        .parameters()
        .iter()
        .map(|p| p.tensor.numel() as i64)
        .sum();
    let classes = probe
        .forward_t(&features.f_narrow(0, 0, 1)?, false, &mut model::Tape::off())?
        .size()[1];
    let labels = Tensor::f_randint(classes, [batch], (Kind::Int64, settings.device))?;
    let optimizer = OptimizerConfig::sgd(0.05, 0.0);

    let mut plain = NonPrivateTrainer::new(probe, optimizer.build());

    // A data set of 60 000 with q = batch/60 000, as in MNIST; the step itself sees the batch.
    let make = |mode| -> Result<_, DpError> {
        dpsgd::make_private(
            build()?,
            optimizer.build(),
            DpConfig {
                noise_multiplier: 1.0,
                max_grad_norm: 1.0,
                sample_rate: batch as f64 / 60_000.0,
                clipping: mode,
            },
            60_000,
            Box::new(Uncounted),
        )
    };
    let mut ghost = make(ClippingMode::Ghost)?;
    let (nonprivate, dp) = timed_pair(
        settings,
        |steps| {
            for _ in 0..steps {
                plain.step(&features, &labels)?;
            }
            Ok(())
        },
        |steps| {
            for _ in 0..steps {
                ghost.step(&features, &labels)?;
            }
            Ok(())
        },
    )?;
    let mut fallback = make(ClippingMode::PerSample)?;
    let fallback_settings = BenchSettings {
        warmup_steps: 1,
        ..settings.clone()
    };
    let dp_fallback = timed(&fallback_settings, || {
        fallback.step(&features, &labels).map(|_| ())
    })?;
    Ok(DpSgdBenchReport {
        model: name.to_owned(),
        batch,
        parameters,
        samples_per_s_nonprivate: nonprivate,
        samples_per_s_dp: dp,
        samples_per_s_dp_fallback: dp_fallback,
        overhead: nonprivate / dp,
        threads: tch::get_num_threads(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_runs_all_three_variants() {
        let settings = BenchSettings {
            batch: 8,
            min_seconds: 0.01,
            warmup_steps: 1,
            device: Device::Cpu,
        };
        let report = dp_sgd("tiny", &ModelSpec::mlp(6, &[5], 3), &settings).unwrap();
        assert_eq!(report.batch, 8);
        assert_eq!(report.parameters, 6 * 5 + 5 + 5 * 3 + 3);
        for rate in [
            report.samples_per_s_nonprivate,
            report.samples_per_s_dp,
            report.samples_per_s_dp_fallback,
        ] {
            assert!(rate.is_finite() && rate > 0.0);
        }
        assert!(
            (report.overhead - report.samples_per_s_nonprivate / report.samples_per_s_dp).abs()
                < 1e-9
        );
    }

    /// The full measurement, for machines where the CLI is not built:
    /// `cargo test -p cohort-client --lib measure_dp_sgd -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark, minutes of CPU"]
    fn measure_dp_sgd() {
        let settings = BenchSettings {
            batch: 256,
            min_seconds: 3.0,
            warmup_steps: 3,
            device: Device::Cpu,
        };
        for (name, spec) in [
            ("mnist-cnn", ModelSpec::mnist_cnn()),
            ("mlp", ModelSpec::mlp(784, &[512, 256], 10)),
        ] {
            let report = dp_sgd(name, &spec, &settings).unwrap();
            println!("{}", serde_json::to_string(&report).unwrap());
        }
    }
}
