//! `cohort demo`: glue between the command line and [`crate::demo`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::demo::{self, DemoConfig, DemoError};

/// Options of `cohort demo`. Values are parsed here, not by clap, so each bad one gets one line.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct DemoArgs {
    /// Rounds of federated training [default: 20].
    #[arg(long, value_name = "N")]
    rounds: Option<String>,
    /// Hospitals, each a `cohort join` process with its own share of the data [default: 5].
    #[arg(long, value_name = "N")]
    hospitals: Option<String>,
    /// The work dir: PKI, server data, hospitals' identities and ledgers, logs, metrics, plots.
    /// A directory a previous demo made is cleared first.
    #[arg(long, value_name = "DIR", default_value = "target/demo")]
    out: PathBuf,
    /// Keep the server (and its dashboard) running after training until Ctrl-C.
    #[arg(long)]
    keep_serving: bool,
    /// Each hospital's record-level ε budget; σ is calibrated to spend it over --rounds
    /// [default: 2].
    #[arg(long, value_name = "E")]
    epsilon: Option<String>,
    /// δ of every budget [default: 1e-5].
    #[arg(long, value_name = "D")]
    delta: Option<String>,
    /// Noise multiplier σ instead of calibrating it to --epsilon.
    #[arg(long, value_name = "SIGMA")]
    noise_multiplier: Option<String>,
    /// Per-example gradient clip C [default: 1].
    #[arg(long, value_name = "C")]
    clip: Option<String>,
    /// Local epochs per round [default: 2].
    #[arg(long, value_name = "N")]
    epochs: Option<String>,
    /// Expected Poisson batch size at each hospital; q = 1/round(records / B) [default: 32].
    #[arg(long, value_name = "B")]
    batch: Option<String>,
    /// Local SGD learning rate [default: 0.3].
    #[arg(long, value_name = "LR")]
    lr: Option<String>,
    /// L2 clip of each hospital's update [default: 2].
    #[arg(long, value_name = "U")]
    update_clip: Option<String>,
    /// Hidden layer widths, comma-separated; none (logistic regression) by default.
    #[arg(long, value_name = "W,W")]
    hidden: Option<String>,
    /// Seeds the deal of rows to hospitals, the splits and the initial model [default: 1].
    /// DP noise and SecAgg masks always come from the OS's random generator.
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: DemoArgs,
    }

    fn parse(args: &[&str]) -> Result<DemoConfig, String> {
        let w = Wrapper::try_parse_from(std::iter::once("demo").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        validate(&w.args)
    }

    #[test]
    fn no_flags_give_the_documented_defaults() {
        let c = parse(&[]).unwrap();
        let d = DemoConfig::breast_cancer(PathBuf::new(), PathBuf::new());
        assert_eq!(c.out, PathBuf::from("target/demo"));
        assert_eq!(
            (c.rounds, c.hospitals, c.seed),
            (d.rounds, d.hospitals, d.seed)
        );
        assert_eq!((c.epsilon, c.delta), (d.epsilon, d.delta));
        assert_eq!(c.training, d.training);
        // The help text states each default; it must be the one the demo uses.
        let help = Wrapper::command().render_long_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let t = &d.training;
        for value in [
            d.rounds.to_string(),
            d.hospitals.to_string(),
            d.epsilon.to_string(),
            format!("{:e}", d.delta),
            t.clip_norm.to_string(),
            t.local_epochs.to_string(),
            t.batch_size.to_string(),
            t.learning_rate.to_string(),
            t.update_clip.to_string(),
            d.seed.to_string(),
        ] {
            assert!(
                help.contains(&format!("[default: {value}]")),
                "{value} in {help}"
            );
        }
    }

    #[test]
    fn flags_override_and_bad_values_name_the_flag() {
        let c = parse(&[
            "--rounds",
            "3",
            "--lr",
            "0.1",
            "--hidden",
            "8, 4",
            "--keep-serving",
        ])
        .unwrap();
        assert_eq!(c.rounds, 3);
        assert_eq!(c.training.learning_rate, 0.1);
        assert_eq!(c.training.hidden, vec![8, 4]);
        assert!(c.keep_serving);
        for (args, flag) in [
            (&["--rounds", "0"][..], "--rounds"),
            (&["--hospitals", "2"][..], "--hospitals"),
            (&["--delta", "1"][..], "--delta"),
            (&["--batch", "nan"][..], "--batch"),
            (&["--noise-multiplier", "-1"][..], "--noise-multiplier"),
            (&["--hidden", "8,x"][..], "--hidden"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.starts_with(flag) && !e.contains('\n'), "{args:?}: {e}");
        }
    }
}
