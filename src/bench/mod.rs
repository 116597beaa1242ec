//! `cohort bench …`: performance measurements that print what ran, as text or JSON.

pub mod dp_sgd;

use std::process::ExitCode;

use clap::{Args, Subcommand};

/// Options of `cohort bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Throughput of DP-SGD (ghost clipping and the per-sample fallback) against non-private
    /// training on the same model and batch.
    DpSgd(dp_sgd::DpSgdArgs),
}

/// Runs one benchmark.
pub fn run(args: &BenchArgs) -> ExitCode {
    match &args.command {
        BenchCommand::DpSgd(args) => dp_sgd::run(args),
    }
}
