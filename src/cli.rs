//! Argument parsing and dispatch. Every subcommand listed here does real work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    /// Run the aggregation server (HTTPS; the same code as the `cohort-server` binary, which is
    /// what to deploy: this executable maps libtorch, ~110 MiB more resident memory).
    Serve(cohort_server::cli::ServeArgs),
    /// Make a CA, server and client certificates and bearer tokens (no openssl needed).
    Pki(cohort_server::cli::PkiArgs),
    /// Measure Cohort's hot paths (secure aggregation, the server) and print JSON or text.
    Bench(crate::bench::BenchArgs),
    /// Privacy accounting: the ε of a DP-SGD or DP-FedAvg configuration, or the σ for a target.
    Privacy(crate::privacy_cmd::PrivacyArgs),
    /// Per-client privacy budgets of a running server: spent and budget ε, δ, status.
    Budgets(crate::budgets_cmd::BudgetsArgs),
    /// Evaluate a federation's model on the sites' held-out records (noised statistics, charged
    /// to every asked site's budget) and print the report when it closes.
    Evaluate(crate::evaluate_cmd::EvaluateArgs),
    /// Every evaluation of a federation: accuracy, AUROC, calibration, per-group rates and gaps,
    /// each with its noise-aware interval.
    Report(crate::evaluate_cmd::ReportArgs),
    /// Take part in a federation: enrol once, then train and upload securely each round.
    Join(crate::join_cmd::JoinArgs),
    /// Train a model with DP-SGD on this site's own data, within the local privacy budget.
    Train(Box<crate::train_cmd::TrainArgs>),
    /// A federation on this machine: an HTTPS server and hospitals as separate processes,
    /// trained with DP-SGD and secure aggregation; prints accuracy and ε per round.
    Demo(Box<crate::demo_cmd::DemoArgs>),
    /// Audit a training run in one run: the accountant's ε beside an empirical 95 % lower
    /// bound from planted canaries; exit code 3 when the audit contradicts the accountant.
    Audit(crate::audit_cmd::AuditArgs),
    /// Run a whole federation on this machine: virtual clients, the real server, DP and
    /// SecAgg code; writes metrics, plots and TensorBoard logs.
    Simulate(SimulateArgs),
}

/// Options of `cohort simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The simulation config (TOML); samples in examples/sim/.
    #[arg(long, value_name = "FILE.toml")]
    config: PathBuf,
    /// Override a config value, e.g. `--set federation.dp_sgd.noise_multiplier=1.2`
    /// (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Where metrics.csv/json, summary.json, the plots, TensorBoard logs, client ledgers and
    /// the server's state go.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The seed of every random choice (overrides the config's `seed`).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// How virtual clients reach the server (overrides the config's `transport`).
    #[arg(long, value_name = "inprocess|https")]
    transport: Option<String>,
    /// No progress bar or per-round lines (the summary is still printed).
    #[arg(long)]
    quiet: bool,
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
        Command::Evaluate(args) => crate::evaluate_cmd::run_evaluate(&args),
        Command::Report(args) => crate::evaluate_cmd::run_report(&args),
        Command::Join(args) => crate::join_cmd::run(&args),
        Command::Train(args) => crate::train_cmd::run(&args),
        Command::Demo(args) => crate::demo_cmd::run(&args),
        Command::Audit(args) => crate::audit_cmd::run(&args),
        Command::Simulate(args) => simulate(&args),
    }
}

/// `cohort simulate`: config in, [`crate::sim::run`], summary out.
fn simulate(args: &SimulateArgs) -> ExitCode {
    let mut sets = args.set.clone();
    if let Some(t) = &args.transport {
        sets.push(format!("transport=\"{t}\""));
    }
    let config = match crate::sim::config::load(&args.config, &sets, args.seed) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cohort simulate: {e}");
            return ExitCode::from(2);
        }
    };
    let options = crate::sim::RunOptions {
        out: args.out.clone(),
        progress: !args.quiet,
    };
    match crate::sim::run(&config, &options) {
        Ok(outcome) => {
            println!("{}", crate::sim::summary_text(&outcome.summary));
            println!("outputs in {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cohort simulate: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
