//! `cohort bench …`: measured runs of Cohort's hot paths, printed for people or as JSON.
//! Every number printed is measured in this process (or its server child) by the run it reports.

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub mod dp_sgd;
pub mod images;
pub mod secagg;
pub mod secure_round;
pub mod secure_round_train;
pub mod server;

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
    /// Load a freshly written folder of PNGs through an `images:` data spec and report
    /// images per second.
    Images(images::ImagesArgs),
    /// Run one whole SecAgg+ round in process and time the client and server sides.
    Secagg(secagg::SecaggArgs),
    /// One real FedAvg round over HTTPS on loopback: N clients upload D-parameter updates to a
    /// `cohort-server` child process (the libtorch-free binary built next to `cohort`); reports
    /// round time, upload throughput and the server's peak RSS.
    Server(server::ServerBenchArgs),
    /// One secure round over HTTPS on loopback with N in-process participants: time split
    /// into training, SecAgg client work, transfer and SecAgg server work, optionally beside
    /// the same round with plain uploads.
    SecureRound(secure_round::SecureRoundArgs),
}

/// Runs the chosen benchmark.
pub fn run(args: &BenchArgs) -> ExitCode {
    match &args.command {
        BenchCommand::DpSgd(a) => dp_sgd::run(a),
        BenchCommand::Images(a) => images::run(a),
        BenchCommand::Secagg(a) => secagg::run(a),
        BenchCommand::Server(a) => server::run(a),
        BenchCommand::SecureRound(a) => secure_round::run(a),
    }
}

/// Peak resident set size of this process so far, in MiB (`VmHWM` of `/proc/self/status`);
/// `None` where the kernel does not report it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
