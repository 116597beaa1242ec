//! `cohort bench server`: one real round over HTTPS on loopback against `cohort serve` as a
//! child process; the measurement itself is `cohort_server::bench`.

use std::process::ExitCode;

use clap::Args;
use cohort_server::bench::{BenchOptions, run as run_bench};

/// Options of `cohort bench server`.
#[derive(Debug, Args)]
pub struct ServerBenchArgs {
    /// Clients taking part in the round.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Model parameters (f32).
    #[arg(long, default_value_t = 1_000_000)]
    params: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub fn run(args: &ServerBenchArgs) -> ExitCode {
    if args.clients == 0 || args.params == 0 {
        eprintln!("error: --clients and --params must be at least 1");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot locate the cohort executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = BenchOptions {
        clients: args.clients,
        params: args.params,
        server_program: exe,
        server_prefix: vec!["serve".into()],
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_bench(&opts)) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                println!("{}", report.text());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
