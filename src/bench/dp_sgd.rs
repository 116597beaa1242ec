//! `cohort bench dp-sgd`: examples per second of non-private training, DP-SGD with ghost
//! clipping and DP-SGD with the per-sample fallback, on one model and batch size.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use cohort_client::benchmark::{self, BenchSettings};
use cohort_client::model::ModelSpec;

/// Models the benchmark knows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BenchModel {
    /// The small MNIST CNN of the DP-SGD literature (26k parameters).
    MnistCnn,
    /// A 784-512-256-10 MLP (535k parameters).
    Mlp,
}

/// Options of `cohort bench dp-sgd`.
#[derive(Debug, Args)]
pub struct DpSgdArgs {
    /// Which model to train.
    #[arg(long, value_enum, default_value = "mnist-cnn")]
    model: BenchModel,
    /// Examples per step.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(i64).range(1..))]
    batch: i64,
    /// Minimum seconds measured per variant.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark and prints its report.
pub fn run(args: &DpSgdArgs) -> ExitCode {
    let (name, spec) = match args.model {
        BenchModel::MnistCnn => ("mnist-cnn", ModelSpec::mnist_cnn()),
        BenchModel::Mlp => ("mlp", ModelSpec::mlp(784, &[512, 256], 10)),
    };
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        eprintln!(
            "error: --seconds must be a positive number, got {}",
            args.seconds
        );
        return ExitCode::from(2);
    }
    let settings = BenchSettings {
        batch: args.batch,
        min_seconds: args.seconds,
        warmup_steps: 3,
        device: tch::Device::Cpu,
    };
    let report = match benchmark::dp_sgd(name, &spec, &settings) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: benchmark failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("error: cannot encode the report: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!(
            "model {} ({} parameters), batch {}, {} threads, CPU",
            report.model, report.parameters, report.batch, report.threads
        );
        println!(
            "non-private        {:>10.0} examples/s",
            report.samples_per_s_nonprivate
        );
        println!(
            "DP-SGD (ghost)     {:>10.0} examples/s  overhead {:.2}x",
            report.samples_per_s_dp, report.overhead
        );
        println!(
            "DP-SGD (fallback)  {:>10.0} examples/s  overhead {:.2}x",
            report.samples_per_s_dp_fallback,
            report.samples_per_s_nonprivate / report.samples_per_s_dp_fallback
        );
    }
    ExitCode::SUCCESS
}
