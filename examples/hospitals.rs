//! Five hospitals train one breast-cancer classifier without pooling their patients: DP-SGD
//! inside each hospital, SecAgg+ across them, and a record-level ε budget per hospital, all
//! through the deployment's server and client code (`cohort simulate` with
//! `examples/sim/hospitals.toml`).
//!
//! Run with `cargo run --release --example hospitals [-- --out DIR --seed N --set KEY=VALUE]`.
//! The target: at least 94 % test accuracy with every hospital at ε ≤ 2 (δ = 1e-5).

use std::path::PathBuf;
use std::process::ExitCode;

use cohort::sim::{self, RunOptions, config, example::ExampleArgs};

fn main() -> ExitCode {
    let args = match ExampleArgs::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hospitals: {e}");
            return ExitCode::from(2);
        }
    };
    let root = env!("CARGO_MANIFEST_DIR");
    // The data path is relative to the repository, wherever cargo was started from.
    let mut sets = vec![format!(
        "data.spec=\"csv:{root}/client/data/breast_cancer.csv?label=diagnosis&test=0.2&seed=0\""
    )];
    sets.extend(args.sets);
    let config = match config::from_toml(
        include_str!("sim/hospitals.toml"),
        &sets,
        args.seed,
        "hospitals",
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hospitals: {e}");
            return ExitCode::from(2);
        }
    };
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(root).join("target/sim/hospitals"));
    let outcome = match sim::run(
        &config,
        &RunOptions {
            out: out.clone(),
            progress: true,
        },
    ) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hospitals: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let s = &outcome.summary;
    println!("{}", sim::summary_text(s));
    println!();
    println!("{:<12} {:>10} {:>8}", "hospital", "epsilon", "budget");
    for (i, (name, eps)) in s.epsilon_by_client.iter().enumerate() {
        let budget = config.budget_of(i).map(|b| b.epsilon()).unwrap_or(f64::NAN);
        println!("{name:<12} {eps:>10.3} {budget:>8.2}");
    }
    let met = s.final_accuracy >= 0.94 && s.epsilon_record_max <= 2.0;
    println!();
    println!(
        "target (accuracy >= 0.94 at record-level epsilon <= 2, delta {:e}): {}",
        s.delta,
        if met { "met" } else { "NOT met" }
    );
    println!("metrics, plots and TensorBoard logs in {}", out.display());
    ExitCode::SUCCESS
}
