//! `cohort bench …`: performance measurements that print what ran, as text or JSON.

pub mod server;

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
    /// One real FedAvg round over HTTPS on loopback: N clients upload D-parameter updates to a
    /// server child process; reports round time, upload throughput and the server's peak RSS.
    Server(server::ServerBenchArgs),
}

/// Runs one benchmark.
pub fn run(args: &BenchArgs) -> ExitCode {
    match &args.command {
        BenchCommand::Server(args) => server::run(args),
    }
}
