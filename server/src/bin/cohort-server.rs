//! The `cohort-server` binary: the aggregation server, deployable without libtorch.
//! `cohort-server --help` lists the flags; `cohort pki` (or this binary's `pki`) makes
//! the certificates it needs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cohort_server::cli::{PkiArgs, ServeArgs, run_pki, run_serve};

/// The Cohort aggregation server (HTTPS, mutual TLS for clients).
#[derive(Debug, Parser)]
#[command(name = "cohort-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a CA and credentials.
    Pki(PkiArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Pki(args)) => run_pki(args),
        None => run_serve(&cli.serve),
    }
}
