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
    /// Run the aggregation server (HTTPS; the same code as the `cohort-server` binary).
    Serve(cohort_server::cli::ServeArgs),
    /// Make a CA, server and client certificates and bearer tokens (no openssl needed).
    Pki(cohort_server::cli::PkiArgs),
    /// Measure Cohort's hot paths (secure aggregation, the server) and print JSON or text.
    Bench(crate::bench::BenchArgs),
    /// Privacy accounting: the ε of a DP-SGD or DP-FedAvg configuration, or the σ for a target.
    Privacy(crate::privacy_cmd::PrivacyArgs),
    /// Per-client privacy budgets of a running server: spent and budget ε, δ, status.
    Budgets(crate::budgets_cmd::BudgetsArgs),
    /// Take part in a federation: enrol once, then train and upload securely each round.
    Join(crate::join_cmd::JoinArgs),
    /// Train a model with DP-SGD on this site's own data, within the local privacy budget.
    Train(Box<crate::train_cmd::TrainArgs>),
    /// A federation on this machine: an HTTPS server and hospitals as separate processes,
    /// trained with DP-SGD and secure aggregation; prints accuracy and ε per round.
    Demo(Box<crate::demo_cmd::DemoArgs>),
}

/// Parses the process arguments; exits with clap's usage message on bad input.
pub fn parse() -> Cli {
    Cli::parse()
}

/// Runs one command and maps its outcome to the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Doctor(args) => crate::doctor::run(&args),
        Command::Serve(args) => cohort_server::cli::run_serve(&args),
        Command::Pki(args) => cohort_server::cli::run_pki(&args),
        Command::Bench(args) => crate::bench::run(&args),
        Command::Privacy(args) => crate::privacy_cmd::run(&args),
        Command::Budgets(args) => crate::budgets_cmd::run(&args),
        Command::Join(args) => crate::join_cmd::run(&args),
        Command::Train(args) => crate::train_cmd::run(&args),
        Command::Demo(args) => crate::demo_cmd::run(&args),
    }
}
