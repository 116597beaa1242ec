//! `cohort train`: DP-SGD on one site's own data, the way a hospital tries a model before it
//! joins a federation.
//!
//! Raw arguments are text ([`TrainArgs`]) and become a validated [`TrainPlan`] before anything
//! is trained, so every bad value gets one line on stderr and exit code 2. The job's privacy
//! cost is then checked against the site's local ledger and reserved there (fsynced) before
//! the first step: a job over the budget is refused with what is left (exit 1), and a job that
//! dies midway still counts. Training shows a progress bar (epoch, loss, ε so far) on a
//! terminal, prints the test accuracy and saves the weights as safetensors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use cohort_client::data::{self, DataSpec, Split};
use cohort_client::dpsgd::{self, ClippingMode, DpConfig, Network, OptimizerConfig, accuracy};
use cohort_client::ledger::{LedgerError, LocalLedger, RdpStepAccountant};
use cohort_client::model::torchscript::TorchScriptModel;
use cohort_client::model::{self, InputKind, ModelError, ModelSpec, Tape};
use cohort_client::weights;
use cohort_privacy::EpsDelta;
use cohort_privacy::accounting::{AccountantKind, noise_multiplier_for};
use cohort_protocol::training::{LocalOptimizer, LocalTraining};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tch::nn::VarStore;
use tch::{Device, Kind};

/// Options of `cohort train`. Values are parsed here rather than by clap so that each bad one
/// gets a single line saying what is wrong.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// The model (required): a preset (mnist-cnn, mlp, logistic, resnet, transformer) sized to
    /// the data, a model spec as JSON (`*.json`), or a TorchScript module (`*.pt`, trained with
    /// the slower per-example clipping).
    #[arg(long, value_name = "NAME|FILE")]
    model: Option<String>,
    /// The data (required), e.g. `csv:client/data/breast_cancer.csv?label=diagnosis` or
    /// `mnist:data/mnist`; the test split gives the reported accuracy.
    #[arg(long, value_name = "SPEC")]
    data: Option<String>,
    /// Passes over the training data; each is ⌈N / batch⌉ Poisson-sampled steps.
    #[arg(long, value_name = "N", default_value = "10")]
    epochs: String,
    /// Expected batch size B: every example joins every step with probability q = B / N.
    #[arg(long, value_name = "B", default_value = "256")]
    batch: String,
    /// Per-example gradient clipping norm C.
    #[arg(long, value_name = "C", default_value = "1.0")]
    clip: String,
    /// Noise multiplier σ (noise std σ·C). Give this or --epsilon, not both.
    #[arg(long, value_name = "SIGMA")]
    noise_multiplier: Option<String>,
    /// Target ε for this job: σ is calibrated (RDP accountant) so the job spends at most this.
    #[arg(long, value_name = "E")]
    epsilon: Option<String>,
    /// δ of the guarantee (and of the ledger's budget); keep it below 1 / N.
    #[arg(long, value_name = "D", default_value = "1e-5")]
    delta: String,
    /// Where to write the trained weights (safetensors; required).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`; CUDA is refused when no device is visible.
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    device: String,
    /// `sgd` (with --momentum) or `adam`.
    #[arg(long, value_name = "NAME", default_value = "sgd")]
    optimizer: String,
    /// Learning rate.
    #[arg(long, value_name = "LR", default_value = "0.1")]
    lr: String,
    /// SGD momentum in [0, 1).
    #[arg(long, value_name = "M", default_value = "0.9")]
    momentum: String,
    /// Freeze parameters whose name starts with this prefix (repeatable; transfer learning).
    #[arg(long, value_name = "PREFIX")]
    freeze: Vec<String>,
    /// The site's privacy ledger: every job's spend, composed, never beyond its budget.
    #[arg(
        long,
        value_name = "FILE",
        env = "COHORT_LEDGER",
        default_value = ".cohort/ledger.jsonl"
    )]
    ledger: PathBuf,
    /// The ledger's total ε budget at --delta; needed to create the ledger, and if given for an
    /// existing one it must match what the ledger records.
    #[arg(long, value_name = "E")]
    budget: Option<String>,
    /// Print one JSON object with the results instead of sentences.
    #[arg(long)]
    json: bool,
}

/// Why the command stopped: bad input (exit 2), or a refusal or failure (exit 1).
#[derive(Debug)]
enum Failure {
    Usage(String),
    Refused(String),
}

type Outcome<T> = Result<T, Failure>;

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

/// Where σ comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Noise {
    Multiplier(f64),
    TargetEpsilon(f64),
}

/// Which network to build.
#[derive(Debug, Clone, PartialEq)]
enum ModelSource {
    Preset(String),
    SpecFile(PathBuf),
    TorchScript(PathBuf),
}

/// Validated settings that do not depend on the data.
#[derive(Debug)]
struct TrainPlan {
    model: ModelSource,
    data: DataSpec,
    epochs: u64,
    batch: i64,
    clip: f64,
    noise: Noise,
    delta: f64,
    out: PathBuf,
    device: Device,
    optimizer: OptimizerConfig,
    freeze: Vec<String>,
    ledger: PathBuf,
    budget: Option<f64>,
    json: bool,
}

/// Runs `cohort train`, printing results on stdout and one error line on stderr.
pub fn run(args: &TrainArgs) -> ExitCode {
    let outcome = plan(args).and_then(|plan| train(&plan));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Refused(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn number(flag: &str, text: &str) -> Outcome<f64> {
    match text.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(usage(format!(
            "{flag} must be a finite number, got '{text}'"
        ))),
    }
}

fn positive(flag: &str, text: &str) -> Outcome<f64> {
    let x = number(flag, text)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(usage(format!("{flag} must be greater than 0, got {text}")))
    }
}

fn whole(flag: &str, text: &str) -> Outcome<u64> {
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(usage(format!(
            "{flag} must be a whole number >= 1, got '{text}'"
        ))),
    }
}

fn required<'a, T>(flag: &str, value: &'a Option<T>, example: &str) -> Outcome<&'a T> {
    value
        .as_ref()
        .ok_or_else(|| usage(format!("{flag} is required, e.g. {flag} {example}")))
}

fn parse_device(text: &str) -> Outcome<Device> {
    let wanted = match text.trim() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => index,
            _ => {
                return Err(usage(format!(
                    "--device must be cpu, cuda or cuda:N, got '{text}'"
                )));
            }
        },
    };
    if !tch::Cuda::is_available() {
        return Err(usage(format!(
            "--device {text} was asked for but this libtorch sees no CUDA device (check the \
             NVIDIA driver and CUDA_VISIBLE_DEVICES, or use --device cpu)"
        )));
    }
    let count = tch::Cuda::device_count();
    if wanted as i64 >= count {
        return Err(usage(format!(
            "--device {text}: only {count} CUDA device(s) are visible"
        )));
    }
    Ok(Device::Cuda(wanted))
}

fn parse_model(text: &str) -> ModelSource {
    let lower = text.to_ascii_lowercase();
    if lower.ends_with(".json") {
        ModelSource::SpecFile(PathBuf::from(text))
    } else if lower.ends_with(".pt") || lower.ends_with(".pth") {
        ModelSource::TorchScript(PathBuf::from(text))
    } else {
        ModelSource::Preset(text.trim().to_owned())
    }
}

/// The optimiser a federation's `local_training` with this rule and rate would run: the same
/// mapping (`OptimizerConfig::for_round`) as `cohort join` and the simulator.
fn local_optimizer(optimizer: LocalOptimizer, lr: f64) -> OptimizerConfig {
    let local = LocalTraining {
        optimizer,
        ..LocalTraining::sgd(lr)
    };
    // A constant schedule: the step count does not enter.
    OptimizerConfig::for_round(&local, 0)
}

fn parse_optimizer(args: &TrainArgs) -> Outcome<OptimizerConfig> {
    let lr = positive("--lr", &args.lr)?;
    match args.optimizer.trim() {
        "sgd" => {
            let momentum = number("--momentum", &args.momentum)?;
            if !(0.0..1.0).contains(&momentum) {
                return Err(usage(format!(
                    "--momentum must be in [0, 1), got {}",
                    args.momentum
                )));
            }
            Ok(local_optimizer(LocalOptimizer::Sgd { momentum }, lr))
        }
        "adam" => Ok(local_optimizer(
            LocalOptimizer::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            lr,
        )),
        other => Err(usage(format!(
            "--optimizer must be sgd or adam, got '{other}'"
        ))),
    }
}

/// Checks every argument that can be checked without the data.
fn plan(args: &TrainArgs) -> Outcome<TrainPlan> {
    let model = parse_model(required("--model", &args.model, "mnist-cnn")?);
    let data_text = required("--data", &args.data, "mnist:data/mnist")?;
    let data: DataSpec = data_text
        .parse()
        .map_err(|e: data::DataError| usage(e.to_string()))?;
    let out = required("--out", &args.out, "weights.safetensors")?.clone();
    let noise = match (&args.noise_multiplier, &args.epsilon) {
        (Some(sigma), None) => {
            Noise::Multiplier(positive("--noise-multiplier", sigma).map_err(|_| {
                usage(format!(
                    "--noise-multiplier must be a number greater than 0, got '{sigma}'"
                ))
            })?)
        }
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
    let delta = number("--delta", &args.delta)?;
    if !(delta > 0.0 && delta < 1.0) {
        return Err(usage(format!(
            "--delta must be in (0, 1), got {}",
            args.delta
        )));
    }
    let batch = whole("--batch", &args.batch)?;
    let batch = i64::try_from(batch).map_err(|_| usage("--batch is too large"))?;
    let budget = match &args.budget {
        Some(text) => Some(positive("--budget", text)?),
        None => None,
    };
    Ok(TrainPlan {
        model,
        data,
        epochs: whole("--epochs", &args.epochs)?,
        batch,
        clip: positive("--clip", &args.clip)?,
        noise,
        delta,
        out,
        device: parse_device(&args.device)?,
        optimizer: parse_optimizer(args)?,
        freeze: args.freeze.clone(),
        ledger: args.ledger.clone(),
        budget,
        json: args.json,
    })
}

/// One example's shape and kind, as the model sees it.
fn example_shape(split: &Split) -> (Vec<i64>, InputKind) {
    let shape = split.train.features.size().get(1..).unwrap_or(&[]).to_vec();
    let kind = if split.train.features.kind() == Kind::Int64 {
        InputKind::Tokens
    } else {
        InputKind::Float
    };
    (shape, kind)
}

fn model_message(err: ModelError) -> Failure {
    match err {
        ModelError::InvalidSpec(why) => usage(why),
        other => usage(other.to_string()),
    }
}

fn load_spec(path: &Path, shape: &[i64], kind: InputKind) -> Outcome<ModelSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "cannot read the model spec {}: {e}",
            path.display()
        ))
    })?;
    let spec = ModelSpec::from_json(&text).map_err(|e| {
        usage(format!(
            "{} is not a valid model spec: {}",
            path.display(),
            e.to_string().replace('\n', " ")
        ))
    })?;
    if spec.input_shape != shape || spec.input != kind {
        return Err(usage(format!(
            "the model spec {} takes {:?} inputs of shape {:?}, but the data's examples are \
             {kind:?} of shape {shape:?}",
            path.display(),
            spec.input,
            spec.input_shape
        )));
    }
    Ok(spec)
}

/// What the training run reports.
struct Trained {
    parameters: i64,
    steps: u64,
    sample_rate: f64,
    noise_multiplier: f64,
    epsilon: f64,
    final_loss: f64,
    test_accuracy: f64,
    test_examples: i64,
    seconds: f64,
    ledger_spent: f64,
    ledger_budget: EpsDelta,
}

fn train(plan: &TrainPlan) -> Outcome<()> {
    let split = data::load(&plan.data)
        .map_err(|e| usage(format!("cannot load --data {}: {e}", plan.data)))?;
    let split = Split {
        train: split
            .train
            .to_device(plan.device)
            .map_err(|e| Failure::Refused(e.to_string()))?,
        test: split
            .test
            .to_device(plan.device)
            .map_err(|e| Failure::Refused(e.to_string()))?,
        info: split.info,
    };
    let (shape, kind) = example_shape(&split);
    let classes = split.train.num_classes;
    let vs = VarStore::new(plan.device);
    let (name, trained) = match &plan.model {
        ModelSource::Preset(name) => {
            let spec = model::preset(name, &shape, kind, classes).map_err(model_message)?;
            let net = model::build(&vs.root(), &spec).map_err(model_message)?;
            freeze(plan, |prefix| net.freeze(prefix))?;
            (name.clone(), run_private(plan, net, &split)?)
        }
        ModelSource::SpecFile(path) => {
            let spec = load_spec(path, &shape, kind)?;
            let net = model::build(&vs.root(), &spec).map_err(model_message)?;
            freeze(plan, |prefix| net.freeze(prefix))?;
            (path.display().to_string(), run_private(plan, net, &split)?)
        }
        ModelSource::TorchScript(path) => {
            let net = TorchScriptModel::load(path, &vs.root(), &shape).map_err(|e| {
                usage(format!(
                    "cannot load the TorchScript module {}: {}",
                    path.display(),
                    first_line(&e.to_string())
                ))
            })?;
            freeze(plan, |prefix| net.freeze(prefix))?;
            (path.display().to_string(), run_private(plan, net, &split)?)
        }
    };
    weights::save_safetensors_file(&vs, &plan.out).map_err(|e| {
        Failure::Refused(format!(
            "training finished but the weights could not be saved: {e}"
        ))
    })?;
    report(plan, &name, &trained);
    Ok(())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn freeze(plan: &TrainPlan, freeze: impl Fn(&str) -> usize) -> Outcome<()> {
    for prefix in &plan.freeze {
        if freeze(prefix) == 0 {
            return Err(usage(format!(
                "--freeze {prefix}: no parameter name starts with it"
            )));
        }
    }
    Ok(())
}

/// Opens the ledger (creating it when a budget is given) and checks its δ and budget.
fn open_ledger(plan: &TrainPlan) -> Outcome<LocalLedger> {
    let path = &plan.ledger;
    if !path.exists() {
        let Some(budget) = plan.budget else {
            return Err(usage(format!(
                "there is no privacy ledger at {} yet: give --budget E, the total ε this site \
                 may ever spend at δ = {}, to create it (or --ledger FILE for an existing one)",
                path.display(),
                plan.delta
            )));
        };
        let budget = EpsDelta::new(budget, plan.delta).map_err(|e| usage(e.to_string()))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                usage(format!(
                    "cannot create the ledger's folder {}: {e}",
                    parent.display()
                ))
            })?;
        }
        return LocalLedger::open(path, budget).map_err(ledger_failure);
    }
    let ledger = LocalLedger::read(path).map_err(ledger_failure)?;
    let recorded = ledger.budget();
    if recorded.delta() != plan.delta {
        return Err(usage(format!(
            "the ledger {} accounts at δ = {}; pass --delta {} (got {})",
            path.display(),
            recorded.delta(),
            recorded.delta(),
            plan.delta
        )));
    }
    if let Some(budget) = plan.budget
        && budget != recorded.epsilon()
    {
        return Err(usage(format!(
            "the ledger {} has the budget ε = {}; a budget cannot be changed by asking for ε = \
             {budget} (leave --budget out to use the recorded one)",
            path.display(),
            recorded.epsilon()
        )));
    }
    Ok(ledger)
}

fn ledger_failure(err: LedgerError) -> Failure {
    match err {
        LedgerError::Io(e) => Failure::Refused(format!("privacy ledger I/O failed: {e}")),
        other => Failure::Refused(other.to_string()),
    }
}

fn run_private<N: Network>(plan: &TrainPlan, net: N, split: &Split) -> Outcome<Trained> {
    let train_len = split.train.len();
    if train_len == 0 {
        return Err(usage("the training split is empty"));
    }
    if plan.batch > train_len {
        return Err(usage(format!(
            "--batch {} is larger than the {train_len} training examples",
            plan.batch
        )));
    }
    // Probe one example so a model that does not fit the data fails here with a clear line,
    // not inside libtorch halfway through the first step.
    let probe = tch::no_grad(|| {
        net.forward_t(
            &split.train.features.narrow(0, 0, 1),
            false,
            &mut Tape::off(),
        )
    })
    .map_err(|e| {
        usage(format!(
            "the model cannot run on this data: {}",
            first_line(&e.to_string())
        ))
    })?;
    let classes = split.train.num_classes;
    if probe.size() != [1, classes] {
        return Err(usage(format!(
            "the model outputs shape {:?} per example, but the data has {classes} classes (it \
             must output [1, {classes}])",
            probe.size().get(1..).unwrap_or(&[])
        )));
    }
    let parameters: i64 = net.param_tensors().iter().map(|t| t.numel() as i64).sum();

    let sample_rate = plan.batch as f64 / train_len as f64;
    let steps_per_epoch = (1.0 / sample_rate).ceil() as u64;
    let steps = steps_per_epoch
        .checked_mul(plan.epochs)
        .ok_or_else(|| usage("--epochs is too large"))?;
    let noise_multiplier = match plan.noise {
        Noise::Multiplier(sigma) => sigma,
        Noise::TargetEpsilon(target) => {
            let target = EpsDelta::new(target, plan.delta).map_err(|e| usage(e.to_string()))?;
            noise_multiplier_for(target, sample_rate, steps, AccountantKind::Rdp)
                .map_err(|e| Failure::Refused(format!("cannot calibrate σ: {e}")))?
        }
    };

    let mut ledger = open_ledger(plan)?;
    let label = format!(
        "cohort train --model {} --data {} ({} epochs)",
        match &plan.model {
            ModelSource::Preset(name) => name.clone(),
            ModelSource::SpecFile(p) | ModelSource::TorchScript(p) => p.display().to_string(),
        },
        plan.data,
        plan.epochs
    );
    // From here on the job counts against the budget, even if it fails.
    ledger
        .reserve(&label, noise_multiplier, sample_rate, steps)
        .map_err(ledger_failure)?;
    let ledger_spent = ledger.spent_epsilon().map_err(ledger_failure)?;

    let config = DpConfig {
        noise_multiplier,
        max_grad_norm: plan.clip,
        sample_rate,
        clipping: ClippingMode::Auto,
    };
    let mut trainer = dpsgd::make_private(
        net,
        plan.optimizer.build(),
        config,
        train_len,
        Box::new(RdpStepAccountant::new()),
    )
    .map_err(|e| Failure::Refused(e.to_string()))?;

    if !plan.json {
        println!(
            "training {parameters} parameters on {train_len} examples: {} epochs of {} steps, \
             expected batch {}, σ = {noise_multiplier:.4}, C = {}, δ = {}",
            plan.epochs, steps_per_epoch, plan.batch, plan.clip, plan.delta
        );
    }
    let bar = ProgressBar::new(steps);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {msg} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let start = Instant::now();
    let mut final_loss = f64::NAN;
    for epoch in 1..=plan.epochs {
        bar.set_prefix(format!("epoch {epoch}/{}", plan.epochs));
        let mut recent = f64::NAN;
        let report = trainer
            .train_epoch(&split.train, |step| {
                if step.mean_loss.is_finite() {
                    recent = if recent.is_finite() {
                        0.9 * recent + 0.1 * step.mean_loss
                    } else {
                        step.mean_loss
                    };
                }
                bar.set_message(format!("loss {recent:.4}"));
                bar.inc(1);
            })
            .map_err(|e| Failure::Refused(format!("training failed in epoch {epoch}: {e}")))?;
        final_loss = report.mean_loss;
        let eps = trainer.epsilon(plan.delta).unwrap_or(f64::INFINITY);
        bar.set_message(format!("loss {:.4} ε {eps:.3}", report.mean_loss));
        bar.suspend(|| {
            eprintln!(
                "epoch {epoch}/{}: loss {:.4}, ε so far {eps:.4} (δ = {}), {:.0} s",
                plan.epochs,
                report.mean_loss,
                plan.delta,
                start.elapsed().as_secs_f64()
            );
        });
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let epsilon = trainer.epsilon(plan.delta).unwrap_or(f64::INFINITY);
    let net = trainer.into_network();
    let test_accuracy = accuracy(&net, &split.test, 1024)
        .map_err(|e| Failure::Refused(format!("evaluation failed: {e}")))?;
    Ok(Trained {
        parameters,
        steps,
        sample_rate,
        noise_multiplier,
        epsilon,
        final_loss,
        test_accuracy,
        test_examples: split.test.len(),
        seconds,
        ledger_spent,
        ledger_budget: ledger.budget(),
    })
}

fn report(plan: &TrainPlan, name: &str, t: &Trained) {
    let target = match plan.noise {
        Noise::TargetEpsilon(e) => Some(e),
        Noise::Multiplier(_) => None,
    };
    let left = (t.ledger_budget.epsilon() - t.ledger_spent).max(0.0);
    if plan.json {
        let finite = |x: f64| if x.is_finite() { json!(x) } else { json!(null) };
        println!(
            "{}",
            json!({
                "model": name,
                "data": plan.data.to_string(),
                "parameters": t.parameters,
                "epochs": plan.epochs,
                "steps": t.steps,
                "batch": plan.batch,
                "sample_rate": t.sample_rate,
                "noise_multiplier": t.noise_multiplier,
                "clip": plan.clip,
                "epsilon": finite(t.epsilon),
                "target_epsilon": target,
                "delta": plan.delta,
                "final_loss": finite(t.final_loss),
                "test_accuracy": finite(t.test_accuracy),
                "test_examples": t.test_examples,
                "train_seconds": t.seconds,
                "ledger": plan.ledger.display().to_string(),
                "ledger_spent_epsilon": t.ledger_spent,
                "ledger_budget_epsilon": t.ledger_budget.epsilon(),
                "out": plan.out.display().to_string(),
            })
        );
        return;
    }
    let correct = (t.test_accuracy * t.test_examples as f64).round() as i64;
    println!(
        "test accuracy: {:.4} ({correct} of {} held-out examples)",
        t.test_accuracy, t.test_examples
    );
    let target_text = target.map_or(String::new(), |e| format!(" (target {e})"));
    println!(
        "privacy: ε = {:.4} at δ = {} for this job{target_text}; the ledger {} has spent ε = \
         {:.4} of {} (left {left:.4})",
        t.epsilon,
        plan.delta,
        plan.ledger.display(),
        t.ledger_spent,
        t.ledger_budget.epsilon()
    );
    println!(
        "weights saved to {} ({} parameters, {} steps in {:.1} s)",
        plan.out.display(),
        t.parameters,
        t.steps,
        t.seconds
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> TrainArgs {
        TrainArgs {
            model: Some("mlp".into()),
            data: Some("csv:x.csv?label=y".into()),
            epochs: "2".into(),
            batch: "16".into(),
            clip: "1".into(),
            noise_multiplier: Some("1.0".into()),
            epsilon: None,
            delta: "1e-5".into(),
            out: Some("w.safetensors".into()),
            device: "cpu".into(),
            optimizer: "sgd".into(),
            lr: "0.1".into(),
            momentum: "0.9".into(),
            freeze: Vec::new(),
            ledger: "ledger.jsonl".into(),
            budget: Some("5".into()),
            json: false,
        }
    }

    fn usage_message(args: &TrainArgs) -> String {
        match plan(args) {
            Err(Failure::Usage(message)) => message,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_command_line_becomes_a_plan() {
        let plan = plan(&args()).unwrap();
        assert_eq!(plan.model, ModelSource::Preset("mlp".into()));
        assert_eq!(plan.noise, Noise::Multiplier(1.0));
        assert_eq!((plan.epochs, plan.batch), (2, 16));
        assert_eq!(plan.device, Device::Cpu);
        assert_eq!(
            parse_model("nets/cnn.JSON"),
            ModelSource::SpecFile("nets/cnn.JSON".into())
        );
        assert_eq!(parse_model("m.pt"), ModelSource::TorchScript("m.pt".into()));
    }

    #[test]
    fn bad_values_are_one_line_usage_errors_naming_the_flag() {
        let cases: Vec<(TrainArgs, &str)> = vec![
            (
                TrainArgs {
                    model: None,
                    ..args()
                },
                "--model",
            ),
            (
                TrainArgs {
                    data: None,
                    ..args()
                },
                "--data",
            ),
            (
                TrainArgs {
                    data: Some("zip:a".into()),
                    ..args()
                },
                "zip",
            ),
            (
                TrainArgs {
                    out: None,
                    ..args()
                },
                "--out",
            ),
            (
                TrainArgs {
                    epochs: "0".into(),
                    ..args()
                },
                "--epochs",
            ),
            (
                TrainArgs {
                    batch: "-4".into(),
                    ..args()
                },
                "--batch",
            ),
            (
                TrainArgs {
                    clip: "NaN".into(),
                    ..args()
                },
                "--clip",
            ),
            (
                TrainArgs {
                    delta: "1".into(),
                    ..args()
                },
                "--delta",
            ),
            (
                TrainArgs {
                    noise_multiplier: Some("0".into()),
                    ..args()
                },
                "--noise-multiplier",
            ),
            (
                TrainArgs {
                    epsilon: Some("3".into()),
                    ..args()
                },
                "not both",
            ),
            (
                TrainArgs {
                    noise_multiplier: None,
                    ..args()
                },
                "--epsilon",
            ),
            (
                TrainArgs {
                    noise_multiplier: None,
                    epsilon: Some("-1".into()),
                    ..args()
                },
                "--epsilon",
            ),
            (
                TrainArgs {
                    device: "tpu".into(),
                    ..args()
                },
                "--device",
            ),
            (
                TrainArgs {
                    optimizer: "lbfgs".into(),
                    ..args()
                },
                "--optimizer",
            ),
            (
                TrainArgs {
                    momentum: "1".into(),
                    ..args()
                },
                "--momentum",
            ),
            (
                TrainArgs {
                    budget: Some("inf".into()),
                    ..args()
                },
                "--budget",
            ),
        ];
        for (case, needle) in &cases {
            let message = usage_message(case);
            assert!(!message.contains('\n'), "{message}");
            assert!(message.contains(needle), "{needle}: {message}");
        }
    }

    #[test]
    fn cuda_is_refused_with_a_clear_line_when_absent() {
        if tch::Cuda::is_available() {
            return;
        }
        let message = usage_message(&TrainArgs {
            device: "cuda".into(),
            ..args()
        });
        assert!(message.contains("no CUDA device"), "{message}");
    }
}
