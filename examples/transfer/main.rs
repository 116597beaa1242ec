//! Transfer learning with DP: a TorchScript model's body is frozen and only a new head is
//! fine-tuned with DP-SGD on a small private data set.
//!
//! 1. The project's venv writes a TorchScript MLP (`make_model.py`: `body` 30→16 with tanh,
//!    `head` 16→2); nothing is downloaded.
//! 2. It is pre-trained, non-privately, on 300 records treated as a public cohort.
//! 3. Its head is re-initialised (a new task's classifier), the body frozen, and the head
//!    fine-tuned with DP-SGD on 80 private records at ε = 1 (δ = 1e-5), clipping per example
//!    (TorchScript models use the per-example fallback, not ghost clipping).
//! 4. For comparison, the same architecture is trained from scratch, all layers, with DP-SGD at
//!    the same ε on the same 80 records.
//!
//! All accuracies are on 114 held-out records. Run with
//! `cargo run --release --example transfer` (or without `--release`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use cohort_client::data::{self, DataSpec, Dataset, permutation};
use cohort_client::dpsgd::{
    self, ClippingMode, DpConfig, Network, NonPrivateTrainer, OptimizerConfig, accuracy,
};
use cohort_client::ledger::RdpStepAccountant;
use cohort_client::model::torchscript::TorchScriptModel;
use cohort_privacy::EpsDelta;
use cohort_privacy::accounting::{AccountantKind, noise_multiplier_for};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const PUBLIC: usize = 300;
const PRIVATE: usize = 80;
const EPSILON: f64 = 1.0;
const DELTA: f64 = 1e-5;
const SEED: u64 = 3;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transfer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The venv's python: `$COHORT_VENV` or the checkout's `.venv` (made by `make setup`).
fn python() -> Result<PathBuf, String> {
    let venv = std::env::var_os("COHORT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let py = venv.join("bin").join("python");
    if py.exists() {
        Ok(py)
    } else {
        Err(format!(
            "{} not found: run `make setup` (or point COHORT_VENV at a venv with torch 2.13)",
            py.display()
        ))
    }
}

fn make_model(out: &Path) -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/transfer/make_model.py");
    // torch warns that numpy is missing; the script needs no numpy.
    let status = Command::new(python()?)
        .args(["-W", "ignore::UserWarning"])
        .arg(&script)
        .arg(out)
        .arg(SEED.to_string())
        .status()
        .map_err(|e| format!("cannot run python: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({status})", script.display()))
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Non-private mini-batch SGD over `data` for `epochs` passes, in a fixed order.
fn pretrain(
    net: TorchScriptModel,
    data: &Dataset,
    epochs: usize,
) -> Result<TorchScriptModel, String> {
    let mut trainer = NonPrivateTrainer::new(net, OptimizerConfig::sgd(0.1, 0.9).build());
    let n = data.len();
    for _ in 0..epochs {
        let mut start = 0;
        while start < n {
            let len = 32.min(n - start);
            let x = data.features.f_narrow(0, start, len).map_err(err)?;
            let y = data.labels.f_narrow(0, start, len).map_err(err)?;
            trainer.step(&x, &y).map_err(err)?;
            start += len;
        }
    }
    Ok(trainer.into_network())
}

/// PyTorch's default Linear initialisation, U(−1/√fan_in, 1/√fan_in), for every parameter
/// whose name starts with `prefix`.
fn reinitialise(net: &TorchScriptModel, prefix: &str, fan_in: f64) -> Result<(), String> {
    let bound = 1.0 / fan_in.sqrt();
    tch::no_grad(|| {
        for p in net
            .parameters()
            .iter()
            .filter(|p| p.name.starts_with(prefix))
        {
            let fresh = Tensor::f_rand(p.tensor.size(), (Kind::Float, Device::Cpu))?
                .f_mul_scalar(2.0 * bound)?
                .f_sub_scalar(bound)?;
            p.tensor.shallow_clone().f_copy_(&fresh)?;
        }
        Ok::<(), tch::TchError>(())
    })
    .map_err(err)
}

/// DP-SGD on `data` with σ calibrated so that `epochs` epochs spend exactly `EPSILON`.
fn fine_tune(
    net: TorchScriptModel,
    data: &Dataset,
    epochs: u64,
    lr: f64,
) -> Result<(TorchScriptModel, f64, f64), String> {
    let sample_rate = 16.0 / data.len() as f64;
    let steps = (1.0 / sample_rate).ceil() as u64 * epochs;
    let target = EpsDelta::new(EPSILON, DELTA).map_err(err)?;
    let sigma =
        noise_multiplier_for(target, sample_rate, steps, AccountantKind::Rdp).map_err(err)?;
    let config = DpConfig {
        noise_multiplier: sigma,
        max_grad_norm: 1.0,
        sample_rate,
        clipping: ClippingMode::Auto,
    };
    let mut trainer = dpsgd::make_private(
        net,
        OptimizerConfig::sgd(lr, 0.0).build(),
        config,
        data.len(),
        Box::new(RdpStepAccountant::new()),
    )
    .map_err(err)?;
    for _ in 0..epochs {
        trainer.train_epoch(data, |_| {}).map_err(err)?;
    }
    let spent = trainer.epsilon(DELTA).unwrap_or(f64::INFINITY);
    Ok((trainer.into_network(), sigma, spent))
}

fn trainable(net: &TorchScriptModel) -> i64 {
    net.param_tensors()
        .iter()
        .filter(|t| t.requires_grad())
        .map(|t| t.numel() as i64)
        .sum()
}

fn run() -> Result<(), String> {
    tch::manual_seed(SEED as i64);
    let dir = PathBuf::from("target/transfer");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let pt = dir.join("breast_cancer_mlp.pt");
    make_model(&pt)?;
    println!("wrote {} with the venv's torch", pt.display());

    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("client/data/breast_cancer.csv");
    let spec: DataSpec = format!("csv:{}?label=diagnosis&seed={SEED}", csv.display())
        .parse()
        .map_err(err)?;
    let split = data::load(&spec).map_err(err)?;
    let order = permutation(split.train.len() as usize, SEED);
    let public = split.train.select(&order[..PUBLIC]).map_err(err)?;
    let private = split
        .train
        .select(&order[PUBLIC..PUBLIC + PRIVATE])
        .map_err(err)?;
    let test = &split.test;

    // Pre-train the whole network on the public cohort.
    let vs = VarStore::new(Device::Cpu);
    let net = TorchScriptModel::load(&pt, &vs.root(), &[30]).map_err(err)?;
    let net = pretrain(net, &public, 30)?;
    let pretrained = accuracy(&net, test, 1024).map_err(err)?;
    println!(
        "pre-trained on {PUBLIC} public records (non-private): test accuracy {:.1}%",
        100.0 * pretrained
    );

    // A new head for the private site; the body stays as pre-trained.
    reinitialise(&net, "head.", 16.0)?;
    let fresh_head = accuracy(&net, test, 1024).map_err(err)?;
    let frozen = net.freeze("body.");
    let body_before: Vec<Tensor> = net
        .parameters()
        .iter()
        .filter(|p| p.name.starts_with("body."))
        .map(|p| p.tensor.copy())
        .collect();
    println!(
        "new head, {frozen} body tensors frozen: {} trainable parameters, test accuracy {:.1}% before fine-tuning",
        trainable(&net),
        100.0 * fresh_head
    );
    let (net, sigma, spent) = fine_tune(net, &private, 20, 0.5)?;
    let tuned = accuracy(&net, test, 1024).map_err(err)?;
    let body_moved = net
        .parameters()
        .iter()
        .filter(|p| p.name.starts_with("body."))
        .zip(&body_before)
        .any(|(p, before)| p.tensor.f_equal(before).map(|same| !same).unwrap_or(true));
    if body_moved {
        return Err("a frozen body parameter changed during fine-tuning".into());
    }
    println!(
        "fine-tuned the head with DP-SGD on {PRIVATE} private records (σ {sigma:.2}, ε {spent:.3}, δ {DELTA:e}): test accuracy {:.1}%; body unchanged",
        100.0 * tuned
    );

    // Baseline: no pre-training, every layer trained with DP at the same ε.
    let vs = VarStore::new(Device::Cpu);
    let scratch = TorchScriptModel::load(&pt, &vs.root(), &[30]).map_err(err)?;
    let params = trainable(&scratch);
    let (scratch, _, spent) = fine_tune(scratch, &private, 20, 0.5)?;
    let baseline = accuracy(&scratch, test, 1024).map_err(err)?;
    println!(
        "from scratch, all {params} parameters with DP-SGD at the same ε ({spent:.3}): test accuracy {:.1}%",
        100.0 * baseline
    );
    Ok(())
}
