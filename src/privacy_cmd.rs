//! `cohort privacy epsilon|sigma`: what ε a DP-SGD or DP-FedAvg configuration spends, and what
//! noise a target ε needs.
//!
//! Arguments are taken as text and validated here, so that every bad value (NaN, q outside
//! (0, 1], σ ≤ 0, δ outside (0, 1), zero steps, a typo) gets one line on stderr saying what is
//! wrong, and exit code 2.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use cohort_privacy::EpsDelta;
use cohort_privacy::accounting::{
    Accountant, AccountantKind, AccountingError, PldAccountant, RdpAccountant, SubsampledGaussian,
    noise_multiplier_for,
};
use serde_json::json;

/// Options of `cohort privacy`.
#[derive(Debug, Args)]
pub struct PrivacyArgs {
    #[command(subcommand)]
    command: PrivacyCommand,
}

#[derive(Debug, Subcommand)]
enum PrivacyCommand {
    /// The ε spent by `steps` steps of the Poisson-subsampled Gaussian mechanism.
    Epsilon(EpsilonArgs),
    /// The smallest noise multiplier σ that keeps `steps` steps within a target (ε, δ).
    Sigma(SigmaArgs),
}

/// Negative numbers are accepted as values so that `--sigma -1` gets our one-line range error
/// rather than clap's "unexpected argument".
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
struct EpsilonArgs {
    /// Sampling rate in (0, 1]: records per batch / data set size (DP-SGD), or the client
    /// sampling rate (DP-FedAvg). 1 means the plain Gaussian mechanism.
    #[arg(long = "q", value_name = "Q")]
    q: String,
    /// Noise multiplier σ > 0: noise standard deviation / clipping norm.
    #[arg(long, value_name = "S")]
    sigma: String,
    /// Number of steps (DP-SGD iterations, or federated rounds), at least 1.
    #[arg(long, value_name = "T")]
    steps: String,
    /// Target δ in (0, 1), typically below 1 / data set size.
    #[arg(long, value_name = "D")]
    delta: String,
    /// `rdp` (Opacus' and dp_accounting's figure) or `pld` (tighter, slower).
    #[arg(long, value_name = "rdp|pld", default_value = "rdp")]
    accountant: String,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
struct SigmaArgs {
    /// Target ε > 0.
    #[arg(long, value_name = "E")]
    epsilon: String,
    /// Target δ in (0, 1).
    #[arg(long, value_name = "D")]
    delta: String,
    /// Sampling rate in (0, 1].
    #[arg(long = "q", value_name = "Q")]
    q: String,
    /// Number of steps, at least 1.
    #[arg(long, value_name = "T")]
    steps: String,
    /// `rdp` or `pld`.
    #[arg(long, value_name = "rdp|pld", default_value = "rdp")]
    accountant: String,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

/// Why a command failed: bad input (exit 2) or a question with no answer (exit 1).
#[derive(Debug)]
enum Failure {
    Usage(String),
    Unanswerable(String),
}

impl From<AccountingError> for Failure {
    fn from(error: AccountingError) -> Self {
        match error {
            AccountingError::TargetUnreachable { .. } | AccountingError::Unbounded => {
                Self::Unanswerable(error.to_string())
            }
            other => Self::Usage(other.to_string()),
        }
    }
}

/// Runs `cohort privacy ...`, printing the answer on stdout or one error line on stderr.
pub fn run(args: &PrivacyArgs) -> ExitCode {
    let outcome = match &args.command {
        PrivacyCommand::Epsilon(a) => epsilon(a),
        PrivacyCommand::Sigma(a) => sigma(a),
    };
    match outcome {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Unanswerable(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The validated inputs of `cohort privacy epsilon`.
struct EpsilonQuery {
    event: SubsampledGaussian,
    steps: u64,
    delta: f64,
    kind: AccountantKind,
}

fn parse_epsilon(args: &EpsilonArgs) -> Result<EpsilonQuery, Failure> {
    let q = number("--q", &args.q)?;
    let sigma = number("--sigma", &args.sigma)?;
    let event = SubsampledGaussian::new(q, sigma)?;
    Ok(EpsilonQuery {
        event,
        steps: steps(&args.steps)?,
        delta: delta(&args.delta)?,
        kind: kind(&args.accountant)?,
    })
}

fn epsilon(args: &EpsilonArgs) -> Result<String, Failure> {
    let query = parse_epsilon(args)?;
    let (epsilon, order) = match query.kind {
        AccountantKind::Pld => {
            let mut accountant = PldAccountant::new();
            accountant.step(query.event, query.steps);
            (accountant.epsilon(query.delta)?, None)
        }
        _ => {
            let mut accountant = RdpAccountant::new();
            accountant.step(query.event, query.steps);
            let (epsilon, order) = accountant.epsilon_and_order(query.delta)?;
            (epsilon, Some(order))
        }
    };
    let (q, sigma) = (query.event.sample_rate(), query.event.noise_multiplier());
    if args.json {
        let mut object = json!({
            "epsilon": finite_or_null(epsilon),
            "bounded": epsilon.is_finite(),
            "delta": query.delta,
            "accountant": query.kind.as_str(),
            "q": q,
            "sigma": sigma,
            "steps": query.steps,
        });
        if let Some(order) = order {
            object["order"] = finite_or_null(order);
        }
        return Ok(object.to_string());
    }
    let order_text = match order {
        Some(order) if order.is_finite() => format!(", optimal RDP order {order}"),
        _ => String::new(),
    };
    Ok(format!(
        "epsilon = {epsilon:.6} at delta = {} ({} accountant{order_text}; q = {q}, sigma = {sigma}, {} steps)",
        query.delta, query.kind, query.steps
    ))
}

fn sigma(args: &SigmaArgs) -> Result<String, Failure> {
    let target_epsilon = number("--epsilon", &args.epsilon)?;
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(AccountingError::InvalidEpsilon(target_epsilon).into());
    }
    let delta = delta(&args.delta)?;
    let q = number("--q", &args.q)?;
    SubsampledGaussian::new(q, 1.0)?;
    let steps = steps(&args.steps)?;
    let kind = kind(&args.accountant)?;
    let target = EpsDelta::new(target_epsilon, delta).map_err(|e| Failure::Usage(e.to_string()))?;
    let sigma = noise_multiplier_for(target, q, steps, kind)?;
    // Report what the returned σ actually spends, so the user sees it is within the target.
    let mut accountant = kind.new_accountant();
    accountant.step(SubsampledGaussian::new(q, sigma)?, steps);
    let achieved = accountant.epsilon(delta)?;
    if args.json {
        return Ok(json!({
            "sigma": sigma,
            "epsilon": target_epsilon,
            "achieved_epsilon": finite_or_null(achieved),
            "delta": delta,
            "accountant": kind.as_str(),
            "q": q,
            "steps": steps,
        })
        .to_string());
    }
    Ok(format!(
        "sigma = {sigma:.6} keeps {steps} steps at q = {q} within epsilon = {target_epsilon} at delta = {delta} ({kind} accountant; spends epsilon = {achieved:.6})"
    ))
}

fn number(flag: &str, text: &str) -> Result<f64, Failure> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| Failure::Usage(format!("{flag} must be a number, got '{text}'")))
}

fn steps(text: &str) -> Result<u64, Failure> {
    let steps = text.trim().parse::<u64>().map_err(|_| {
        Failure::Usage(format!("--steps must be a whole number >= 1, got '{text}'"))
    })?;
    if steps == 0 {
        return Err(AccountingError::ZeroSteps.into());
    }
    Ok(steps)
}

fn delta(text: &str) -> Result<f64, Failure> {
    let delta = number("--delta", text)?;
    if !(delta.is_finite() && delta > 0.0 && delta < 1.0) {
        return Err(AccountingError::InvalidDelta(delta).into());
    }
    Ok(delta)
}

fn kind(text: &str) -> Result<AccountantKind, Failure> {
    Ok(text.trim().parse::<AccountantKind>()?)
}

fn finite_or_null(x: f64) -> serde_json::Value {
    if x.is_finite() {
        json!(x)
    } else {
        serde_json::Value::Null
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epsilon_args(
        q: &str,
        sigma: &str,
        steps: &str,
        delta: &str,
        accountant: &str,
    ) -> EpsilonArgs {
        EpsilonArgs {
            q: q.into(),
            sigma: sigma.into(),
            steps: steps.into(),
            delta: delta.into(),
            accountant: accountant.into(),
            json: true,
        }
    }

    fn usage_message(result: Result<String, Failure>) -> String {
        match result {
            Err(Failure::Usage(message)) => message,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn epsilon_json_has_the_promised_fields() {
        let text = epsilon(&epsilon_args("0.01", "1.1", "1000", "1e-5", "rdp")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let eps = value["epsilon"].as_f64().unwrap();
        assert!((eps - 1.7118).abs() < 1e-4, "{eps}");
        assert_eq!(value["delta"].as_f64(), Some(1e-5));
        assert_eq!(value["accountant"], "rdp");
        assert!(value["order"].as_f64().is_some());
    }

    #[test]
    fn bad_inputs_are_usage_errors_with_one_line() {
        let cases = [
            epsilon_args("0", "1", "10", "1e-5", "rdp"),
            epsilon_args("1.5", "1", "10", "1e-5", "rdp"),
            epsilon_args("NaN", "1", "10", "1e-5", "rdp"),
            epsilon_args("0.1", "0", "10", "1e-5", "rdp"),
            epsilon_args("0.1", "-2", "10", "1e-5", "rdp"),
            epsilon_args("0.1", "nan", "10", "1e-5", "rdp"),
            epsilon_args("0.1", "1", "0", "1e-5", "rdp"),
            epsilon_args("0.1", "1", "-3", "1e-5", "rdp"),
            epsilon_args("0.1", "1", "10", "0", "rdp"),
            epsilon_args("0.1", "1", "10", "1", "rdp"),
            epsilon_args("0.1", "1", "10", "NaN", "rdp"),
            epsilon_args("0.1", "1", "10", "1e-5", "gdp"),
            epsilon_args("abc", "1", "10", "1e-5", "rdp"),
        ];
        for args in &cases {
            let message = usage_message(epsilon(args));
            assert!(!message.contains('\n'), "{message}");
        }
        assert!(usage_message(epsilon(&cases[0])).contains("sample rate q"));
        assert!(usage_message(epsilon(&cases[6])).contains("steps"));
        assert!(usage_message(epsilon(&cases[8])).contains("delta"));
    }

    #[test]
    fn sigma_round_trips_through_epsilon() {
        let args = SigmaArgs {
            epsilon: "1.7118".into(),
            delta: "1e-5".into(),
            q: "0.01".into(),
            steps: "1000".into(),
            accountant: "rdp".into(),
            json: true,
        };
        let value: serde_json::Value = serde_json::from_str(&sigma(&args).unwrap()).unwrap();
        let sigma = value["sigma"].as_f64().unwrap();
        assert!((sigma - 1.1).abs() < 1e-3, "{sigma}");
        assert!(value["achieved_epsilon"].as_f64().unwrap() <= 1.7118);
        let zero = SigmaArgs {
            epsilon: "0".into(),
            ..args
        };
        assert!(usage_message(super::sigma(&zero)).contains("epsilon"));
    }
}
