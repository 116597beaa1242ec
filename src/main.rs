//! The `cohort` command: glue between the command line and the library crates.

use std::process::ExitCode;

fn main() -> ExitCode {
    cohort::cli::run(cohort::cli::parse())
}
