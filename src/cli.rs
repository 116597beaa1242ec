//! Argument parsing and dispatch. Every subcommand listed here does real work.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Federated, privacy-preserving learning on libtorch.
#[derive(Debug, Parser)]
#[command(name = "cohort", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check libtorch, threads, CUDA, and where data and certificates live.
    Doctor(crate::doctor::DoctorArgs),
    /// Measure performance (`cohort bench dp-sgd`).
    Bench(crate::bench::BenchArgs),
}

/// Parses the process arguments; exits with clap's usage message on bad input.
pub fn parse() -> Cli {
    Cli::parse()
}

/// Runs one command and maps its outcome to the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Doctor(args) => crate::doctor::run(&args),
        Command::Bench(args) => crate::bench::run(&args),
    }
}
