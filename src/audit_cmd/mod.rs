//! `cohort audit`: measure, in one training run, the privacy a run actually delivered, and set
//! it beside the ε its accountant claims.
//!
//! `cohort audit dp-sgd` trains once through the real DP-SGD trainer with M canaries, each
//! included with probability ½, scores them, and turns the scores into a 95 % lower bound on
//! ε with the one-run test of Steinke, Nasr and Jagielski 2023 (`cohort_privacy::audit`). A
//! lower bound above the accountant's ε is a contradiction: the run leaked more than it
//! claims. The command then exits with code 3 and prints a red line, so a CI job fails.
//!
//! Exit codes: 0 the audit is consistent with the accountant, 1 the run failed, 2 bad
//! arguments, 3 the audit contradicts the accountant.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use cohort_client::data::{self, DataSpec};
use tch::Device;

mod dp_sgd;
mod output;

pub use dp_sgd::{DpSgdAudit, run_with_accountant};

/// Options of `cohort audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Audit one DP-SGD training run with M canaries: accountant ε against an empirical 95 %
    /// lower bound. Trains on --data without charging any ledger: use public data.
    DpSgd(Box<DpSgdArgs>),
}

/// Options of `cohort audit dp-sgd`. Values are parsed here rather than by clap so that each
/// bad one gets a single line saying what is wrong.
#[derive(Debug, Clone, Args)]
#[command(allow_negative_numbers = true)]
pub struct DpSgdArgs {
    /// The model preset (mnist-cnn, mlp, logistic, resnet, transformer), sized to the data.
    #[arg(long, value_name = "PRESET")]
    pub model: Option<String>,
    /// The data, e.g. `mnist:data/mnist` or `csv:client/data/breast_cancer.csv?label=diagnosis`.
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,
    /// M: canaries planted, each included independently with probability ½.
    #[arg(long, value_name = "M", default_value = "1000")]
    pub canaries: String,
    /// Target ε: σ is calibrated (RDP) so the run claims this. Give this or --noise-multiplier.
    #[arg(long, value_name = "E")]
    pub epsilon: Option<String>,
    /// Noise multiplier σ (noise std σ·C).
    #[arg(long, value_name = "SIGMA")]
    pub noise_multiplier: Option<String>,
    /// `white-box`: gradient canaries scored by the final model change; `black-box`:
    /// mislabelled input canaries scored by their loss.
    #[arg(long, value_name = "MODE", default_value = "white-box")]
    pub mode: String,
    /// Where audit.json, scores.csv and scores.svg go (created; required).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Passes over the training data; each is ⌈N / batch⌉ Poisson-sampled steps.
    #[arg(long, value_name = "N", default_value = "5")]
    pub epochs: String,
    /// Expected batch size B (q = B / N).
    #[arg(long, value_name = "B", default_value = "256")]
    pub batch: String,
    /// Per-example clipping norm C (also each gradient canary's norm).
    #[arg(long, value_name = "C", default_value = "1.0")]
    pub clip: String,
    /// Learning rate of plain SGD.
    #[arg(long, value_name = "LR", default_value = "0.1")]
    pub lr: String,
    /// δ of the accountant's claim and of the audit.
    #[arg(long, value_name = "D", default_value = "1e-5")]
    pub delta: String,
    /// Confidence of the lower bound.
    #[arg(long, value_name = "P", default_value = "0.95")]
    pub confidence: String,
    /// Seed of the canaries, their inclusion and the model's initialisation (DP noise and
    /// batch sampling stay seeded by the operating system).
    #[arg(long, value_name = "N", default_value = "0")]
    pub seed: String,
    /// NEGATIVE CONTROL: train with no noise while the accountant still charges σ. The audit
    /// must then fail (exit 3).
    #[arg(long)]
    pub danger_no_noise: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
    /// Print one JSON object instead of sentences.
    #[arg(long)]
    pub json: bool,
}

/// Which canaries an audit plants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Gradient canaries added to the clipped sum, scored by the final model change.
    WhiteBox,
    /// Mislabelled training examples, scored by the final model's loss on them.
    BlackBox,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::WhiteBox => "white-box",
            Mode::BlackBox => "black-box",
        }
    }
}

/// Where σ comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Noise {
    /// σ given.
    Multiplier(f64),
    /// σ calibrated to this ε.
    TargetEpsilon(f64),
}

/// Validated settings of one DP-SGD audit.
#[derive(Debug, Clone)]
pub struct DpSgdPlan {
    /// Model preset.
    pub model: String,
    /// Data.
    pub data: DataSpec,
    /// M.
    pub canaries: usize,
    /// σ or target ε.
    pub noise: Noise,
    /// White- or black-box.
    pub mode: Mode,
    /// Output folder.
    pub out: PathBuf,
    /// Epochs.
    pub epochs: u64,
    /// Expected batch size.
    pub batch: i64,
    /// Clip norm.
    pub clip: f64,
    /// Learning rate.
    pub lr: f64,
    /// δ.
    pub delta: f64,
    /// Confidence of ε_LB.
    pub confidence: f64,
    /// Seed.
    pub seed: u64,
    /// Whether the noise is removed (negative control).
    pub danger_no_noise: bool,
    /// Device.
    pub device: Device,
    /// JSON output.
    pub json: bool,
}

/// Why an audit stopped: bad input (exit 2) or a failure (exit 1).
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or data that does not fit.
    Usage(String),
    /// The run failed.
    Failed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Failed(m) => f.write_str(m),
        }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

/// Runs `cohort audit`.
pub fn run(args: &AuditArgs) -> ExitCode {
    match &args.command {
        AuditCommand::DpSgd(args) => run_dp_sgd(args),
    }
}

fn run_dp_sgd(args: &DpSgdArgs) -> ExitCode {
    let outcome = DpSgdPlan::parse(args).and_then(|plan| {
        let audit = dp_sgd::run(&plan)?;
        output::write_files(&plan, &audit)?;
        Ok((plan, audit))
    });
    match outcome {
        Ok((plan, audit)) => {
            output::print(&plan, &audit);
            if audit.contradicts() {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn number(flag: &str, text: &str) -> Result<f64, Failure> {
    match text.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(usage(format!(
            "{flag} must be a finite number, got '{text}'"
        ))),
    }
}

fn positive(flag: &str, text: &str) -> Result<f64, Failure> {
    let x = number(flag, text)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(usage(format!("{flag} must be greater than 0, got {text}")))
    }
}

fn whole(flag: &str, text: &str) -> Result<u64, Failure> {
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(usage(format!(
            "{flag} must be a whole number >= 1, got '{text}'"
        ))),
    }
}

fn in_unit(flag: &str, text: &str, example: &str) -> Result<f64, Failure> {
    let x = number(flag, text)?;
    if x > 0.0 && x < 1.0 {
        Ok(x)
    } else {
        Err(usage(format!(
            "{flag} must be in (0, 1), e.g. {example}; got {text}"
        )))
    }
}

fn parse_device(text: &str) -> Result<Device, Failure> {
    match text.trim() {
        "cpu" => Ok(Device::Cpu),
        other => {
            let index = match other {
                "cuda" => 0,
                _ => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                    Some(Ok(i)) => i,
                    _ => {
                        return Err(usage(format!(
                            "--device must be cpu, cuda or cuda:N, got '{text}'"
                        )));
                    }
                },
            };
            if (index as i64) < tch::Cuda::device_count() {
                Ok(Device::Cuda(index))
            } else {
                Err(usage(format!(
                    "--device {text}: this libtorch sees {} CUDA device(s); use --device cpu",
                    tch::Cuda::device_count()
                )))
            }
        }
    }
}

impl DpSgdPlan {
    /// Checks every argument that can be checked without the data.
    pub fn parse(args: &DpSgdArgs) -> Result<Self, Failure> {
        let model = args
            .model
            .clone()
            .ok_or_else(|| usage("--model is required, e.g. --model mnist-cnn"))?;
        let data_text = args
            .data
            .as_ref()
            .ok_or_else(|| usage("--data is required, e.g. --data mnist:data/mnist"))?;
        let data: DataSpec = data_text
            .parse()
            .map_err(|e: data::DataError| usage(e.to_string()))?;
        let out = args
            .out
            .clone()
            .ok_or_else(|| usage("--out is required, e.g. --out audit-out"))?;
        let noise = match (&args.noise_multiplier, &args.epsilon) {
            (Some(sigma), None) => Noise::Multiplier(positive("--noise-multiplier", sigma)?),
            (None, Some(eps)) => Noise::TargetEpsilon(positive("--epsilon", eps)?),
            (Some(_), Some(_)) => {
                return Err(usage(
                    "give either --noise-multiplier or --epsilon, not both (--epsilon calibrates σ)",
                ));
            }
            (None, None) => {
                return Err(usage(
                    "give --noise-multiplier SIGMA or a target --epsilon E (σ is then calibrated)",
                ));
            }
        };
        let mode = match args.mode.trim() {
            "white-box" => Mode::WhiteBox,
            "black-box" => Mode::BlackBox,
            other => {
                return Err(usage(format!(
                    "--mode must be white-box or black-box, got '{other}'"
                )));
            }
        };
        let canaries = whole("--canaries", &args.canaries)?;
        let canaries = usize::try_from(canaries).map_err(|_| usage("--canaries is too large"))?;
        if canaries < 2 {
            return Err(usage(
                "--canaries must be at least 2 (e.g. --canaries 1000)",
            ));
        }
        let batch = i64::try_from(whole("--batch", &args.batch)?)
            .map_err(|_| usage("--batch is too large"))?;
        let seed = args.seed.trim().parse::<u64>().map_err(|_| {
            usage(format!(
                "--seed must be a whole number >= 0, got '{}'",
                args.seed
            ))
        })?;
        Ok(Self {
            model,
            data,
            canaries,
            noise,
            mode,
            out,
            epochs: whole("--epochs", &args.epochs)?,
            batch,
            clip: positive("--clip", &args.clip)?,
            lr: positive("--lr", &args.lr)?,
            delta: in_unit("--delta", &args.delta, "1e-5")?,
            confidence: in_unit("--confidence", &args.confidence, "0.95")?,
            seed,
            danger_no_noise: args.danger_no_noise,
            device: parse_device(&args.device)?,
            json: args.json,
        })
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
