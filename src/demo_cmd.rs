//! `cohort demo`: glue between the command line and [`crate::demo`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::demo::{self, DemoConfig, DemoError};

/// Options of `cohort demo`. Values are parsed here, not by clap, so each bad one gets one line.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct DemoArgs {
    /// Rounds of federated training.
    #[arg(long, value_name = "N")]
    rounds: Option<String>,
    /// Hospitals, each a `cohort join` process with its own share of the data.
    #[arg(long, value_name = "N")]
    hospitals: Option<String>,
    /// The work dir: PKI, server data, hospitals' identities and ledgers, logs, metrics, plots.
    /// A directory a previous demo made is cleared first.
    #[arg(long, value_name = "DIR", default_value = "target/demo")]
    out: PathBuf,
    /// Keep the server (and its dashboard) running after training until Ctrl-C.
    #[arg(long)]
    keep_serving: bool,
    /// Each hospital's record-level ε budget; σ is calibrated to spend it over --rounds.
    #[arg(long, value_name = "E")]
    epsilon: Option<String>,
    /// δ of every budget.
    #[arg(long, value_name = "D")]
    delta: Option<String>,
    /// Noise multiplier σ instead of calibrating it to --epsilon.
    #[arg(long, value_name = "SIGMA")]
    noise_multiplier: Option<String>,
    /// Per-example gradient clip C.
    #[arg(long, value_name = "C")]
    clip: Option<String>,
    /// Local epochs per round.
    #[arg(long, value_name = "N")]
    epochs: Option<String>,
    /// Expected Poisson batch size at each hospital.
    #[arg(long, value_name = "B")]
    batch: Option<String>,
    /// Local SGD learning rate.
    #[arg(long, value_name = "LR")]
    lr: Option<String>,
    /// L2 clip of each hospital's update.
    #[arg(long, value_name = "U")]
    update_clip: Option<String>,
    /// Hidden layer widths, comma-separated ("" for logistic regression).
    #[arg(long, value_name = "W,W")]
    hidden: Option<String>,
    /// Seeds the deal of rows to hospitals, the splits and the initial model.
    #[arg(long, value_name = "N")]
    seed: Option<String>,
}

fn number(flag: &str, raw: &str) -> Result<f64, String> {
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{flag} must be a number, got {raw:?}"))
}

fn positive(flag: &str, raw: &str) -> Result<f64, String> {
    let v = number(flag, raw)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{flag} must be > 0, got {raw}"))
    }
}

fn whole(flag: &str, raw: &str, min: u64, max: u64) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "{flag} must be a whole number from {min} to {max}, got {raw:?}"
        )),
    }
}

fn validate(args: &DemoArgs) -> Result<DemoConfig, String> {
    let program = std::env::current_exe()
        .map_err(|e| format!("cannot find this program's own path to start the children: {e}"))?;
    let mut c = DemoConfig::breast_cancer(args.out.clone(), program);
    if let Some(v) = &args.rounds {
        c.rounds = whole("--rounds", v, 1, 10_000)? as u32;
    }
    if let Some(v) = &args.hospitals {
        // Secure aggregation needs three survivors in every round.
        c.hospitals = whole("--hospitals", v, 3, 50)? as usize;
    }
    if let Some(v) = &args.epsilon {
        c.epsilon = positive("--epsilon", v)?;
    }
    if let Some(v) = &args.delta {
        c.delta = positive("--delta", v)?;
        if c.delta >= 1.0 {
            return Err(format!("--delta must be below 1, got {v}"));
        }
    }
    let t = &mut c.training;
    if let Some(v) = &args.noise_multiplier {
        t.noise_multiplier = Some(positive("--noise-multiplier", v)?);
    }
    if let Some(v) = &args.clip {
        t.clip_norm = positive("--clip", v)?;
    }
    if let Some(v) = &args.epochs {
        t.local_epochs = whole("--epochs", v, 1, 1000)? as u32;
    }
    if let Some(v) = &args.batch {
        t.batch_size = positive("--batch", v)?;
    }
    if let Some(v) = &args.lr {
        t.learning_rate = positive("--lr", v)?;
    }
    if let Some(v) = &args.update_clip {
        t.update_clip = positive("--update-clip", v)?;
    }
    if let Some(v) = &args.hidden {
        t.hidden = v
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(|w| whole("--hidden", w, 1, 4096).map(|v| v as i64))
            .collect::<Result<Vec<_>, _>>()?;
    }
    if let Some(v) = &args.seed {
        c.seed = whole("--seed", v, 0, u64::MAX)?;
    }
    c.keep_serving = args.keep_serving;
    Ok(c)
}

/// Runs `cohort demo`.
pub fn run(args: &DemoArgs) -> ExitCode {
    let config = match validate(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cohort demo: {e}");
            return ExitCode::from(2);
        }
    };
    match demo::run(&config) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e @ DemoError::Usage(_)) => {
            eprintln!("cohort demo: {e}");
            ExitCode::from(2)
        }
        Err(e @ DemoError::Interrupted) => {
            eprintln!("cohort demo: {e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("cohort demo: {e}");
            ExitCode::FAILURE
        }
    }
}
