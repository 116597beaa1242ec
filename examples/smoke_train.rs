//! A libtorch smoke job: trains a small MLP on generated data through tch and prints the loss
//! as it falls. The quickest check that this machine's libtorch works end to end.
//!
//! Run with `cargo run --example smoke_train`.

use std::process::ExitCode;

use cohort_client::runtime::RuntimeInfo;
use cohort_client::smoke::{SmokeConfig, train_synthetic};

fn main() -> ExitCode {
    println!("libtorch training smoke job: a 2-layer MLP on generated, separable data.");
    let info = RuntimeInfo::probe();
    println!(
        "libtorch {} with {} threads, CUDA {}",
        info.version.as_deref().unwrap_or("?"),
        info.intra_op_threads,
        if info.cuda_available {
            "available"
        } else {
            "not available"
        }
    );
    let config = SmokeConfig {
        steps: 100,
        ..SmokeConfig::default()
    };
    let report = match train_synthetic(&config) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: training failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    for (step, loss) in report.losses.iter().enumerate() {
        if step % 10 == 0 || step + 1 == report.losses.len() {
            println!("step {step:>3}  loss {loss:.4}");
        }
    }
    println!("training accuracy {:.1}%", 100.0 * report.final_accuracy);
    let (first, last) = (report.losses.first(), report.losses.last());
    if last < first {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: the loss did not fall ({first:?} -> {last:?})");
        ExitCode::FAILURE
    }
}
