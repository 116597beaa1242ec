//! `cohort bench server`: one real round over HTTPS on loopback against the `cohort-server`
//! binary as a child process; the measurement itself is `cohort_server::bench`.
//!
//! The child is `cohort-server`, not `cohort serve`: this `cohort` executable links libtorch,
//! whose static initialisers alone leave ~110 MiB resident (idle `cohort serve` 124 MiB,
//! idle `cohort-server` 14 MiB, dev build, 2026-12-02) though the server never calls it. The
//! number an operator sizes a machine by is the deployable server's.

use std::path::{Path, PathBuf};
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

/// The `cohort-server` binary cargo builds next to `exe` (same target dir and profile), or a
/// one-line error saying how to build it.
fn server_next_to(exe: &Path) -> Result<PathBuf, String> {
    let name = format!("cohort-server{}", std::env::consts::EXE_SUFFIX);
    let dir = exe
        .parent()
        .ok_or_else(|| format!("cannot find the directory of {}", exe.display()))?;
    let server = dir.join(name);
    if server.is_file() {
        Ok(server)
    } else {
        Err(format!(
            "`cohort bench server` measures the libtorch-free cohort-server binary, which is not at {}; build it next to cohort: `cargo build -p cohort-server --bin cohort-server` (with --release for a release cohort), or `make build`",
            server.display()
        ))
    }
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
    let server = match server_next_to(&exe) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = BenchOptions {
        clients: args.clients,
        params: args.params,
        server_program: server,
        server_prefix: vec![],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cohort_server_beside_cohort_or_says_how_to_build_it() {
        let dir = std::env::temp_dir().join(format!("cohort-bench-lookup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("cohort");
        let err = server_next_to(&exe).unwrap_err();
        assert!(err.contains("cargo build -p cohort-server"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let server = dir.join(format!("cohort-server{}", std::env::consts::EXE_SUFFIX));
        std::fs::write(&server, b"").unwrap();
        assert_eq!(server_next_to(&exe).unwrap(), server);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
