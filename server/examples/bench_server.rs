//! The server benchmark without libtorch: the same measurement as `cohort bench server`, with
//! the `cohort-server` binary as the server child.
//!
//! ```sh
//! cargo build --release -p cohort-server --features bench --bin cohort-server --example bench_server
//! target/release/examples/bench_server --clients 50 --params 1000000 [--json]
//! ```

use std::process::ExitCode;

use cohort_server::bench::{BenchOptions, run};

fn arg(args: &[String], name: &str, default: usize) -> Result<usize, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| format!("{name} needs a positive integer")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (clients, params) = match (
        arg(&args, "--clients", 50),
        arg(&args, "--params", 1_000_000),
    ) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // target/<profile>/examples/bench_server → target/<profile>/cohort-server
    let server = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("cohort-server")));
    let Some(server) = server.filter(|p| p.exists()) else {
        eprintln!("error: build the cohort-server binary first (cargo build -p cohort-server)");
        return ExitCode::FAILURE;
    };
    let opts = BenchOptions {
        clients,
        params,
        server_program: server,
        server_prefix: vec![],
    };
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    match rt.block_on(run(&opts)) {
        Ok(r) if args.iter().any(|a| a == "--json") => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!("{}", r.text());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
