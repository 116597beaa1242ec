//! A hospital runs out of privacy budget and leaves the schedule, while the others go on.
//!
//! Four hospitals share the breast-cancer table, each a `cohort join` process talking to a real
//! `cohort serve` over HTTPS (the demo's machinery). Three may spend ε = 2 over 8 rounds;
//! hospital-4's privacy officer allowed only ε = 1.1. After the round that brings hospital-4
//! as close to 1.1 as whole rounds allow, the server's ledger marks it `exhausted`, stops
//! sampling it, and its `cohort join` prints why it is not scheduled. The remaining three keep
//! training (secure aggregation needs three).
//!
//! Run with `cargo run --release --example budget_exhaustion` (or without `--release`).
//! The children are this example's own executable started as `serve` and `join`.

use std::path::PathBuf;
use std::process::ExitCode;

use cohort::demo::{self, DemoConfig};

/// The hospital with the small budget (index from 0) and its budget.
const SMALL: (usize, f64) = (3, 1.1);

fn main() -> ExitCode {
    if let Some(code) = demo::child_role() {
        return code;
    }
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("budget_exhaustion: cannot find this program's path: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = DemoConfig::breast_cancer(PathBuf::from("target/budget-exhaustion"), program);
    config.hospitals = 4;
    config.rounds = 8;
    config.budget_overrides = vec![SMALL];
    println!(
        "hospital-{} may spend ε {} (the others {}); watch its ε column stop and its status turn exhausted\n",
        SMALL.0 + 1,
        SMALL.1,
        config.epsilon
    );
    let summary = match demo::run(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("budget_exhaustion: {e}");
            return ExitCode::FAILURE;
        }
    };
    let small = &summary.hospitals[SMALL.0];
    let participants: Vec<String> = summary
        .rounds
        .iter()
        .map(|r| r.participants.to_string())
        .collect();
    println!(
        "\n{}: rounds charged {}, ε {:.3} of {} — {} by the server's ledger; hospitals per round: {}",
        small.name,
        small.rounds,
        small.epsilon_spent,
        small.epsilon_budget,
        small.status,
        participants.join(" ")
    );
    if small.status != "exhausted" || small.epsilon_spent > small.epsilon_budget {
        eprintln!(
            "budget_exhaustion: expected {} to end exhausted within its budget",
            small.name
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
