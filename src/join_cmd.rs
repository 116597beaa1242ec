//! `cohort join`: take part in a federation until stopped or out of budget.
//!
//! Glue only: the loop's logic is `cohort_client::participant`. This file validates the
//! arguments, enrols on first run, and prints one line per round.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use cohort_client::data::{self, DataSpec};
use cohort_client::ledger::LocalLedger;
use cohort_client::participant::https::{HttpsTransport, Identity, enrol};
use cohort_client::participant::{
    DpSgdTrainer, HeldOut, Participant, Poll, RetryPolicy, RoundOutcome, TransportError,
};
use cohort_privacy::EpsDelta;

/// Options of `cohort join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The federation server, e.g. `https://fl.example.org:8443`.
    #[arg(long, value_name = "URL")]
    server: String,
    /// This client's identity directory: certificate, key, CA and local privacy ledger. On
    /// first run it must hold `ca.pem` (the federation CA from the operator).
    #[arg(long, value_name = "DIR")]
    identity: PathBuf,
    /// The local training data, e.g. `csv:data.csv?label=outcome` or `mnist:data/mnist`.
    #[arg(long, value_name = "SPEC")]
    data: String,
    /// The federation to enrol in (first run only).
    #[arg(long, value_name = "NAME")]
    federation: Option<String>,
    /// The one-time enrolment token (first run only; or put it in `DIR/token`).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// This client's record-level ε budget (required on first run; fixed afterwards).
    #[arg(
        long = "budget-epsilon",
        value_name = "E",
        allow_negative_numbers = true
    )]
    budget_epsilon: Option<String>,
    /// This client's δ (required on first run; fixed afterwards).
    #[arg(long = "budget-delta", value_name = "D", allow_negative_numbers = true)]
    budget_delta: Option<String>,
    /// Where to train: `cpu` or `cuda`.
    #[arg(long, value_name = "cpu|cuda", default_value = "cpu")]
    device: String,
    /// Local SGD learning rate.
    #[arg(long, value_name = "LR", default_value = "0.05")]
    learning_rate: String,
    /// Release each round's training loss, accuracy and example count with DP, spending this
    /// ε of the local budget per round (charged before release; off when absent).
    #[arg(
        long = "metrics-epsilon",
        value_name = "E",
        allow_negative_numbers = true
    )]
    metrics_epsilon: Option<String>,
    /// The δ of each metrics release.
    #[arg(
        long = "metrics-delta",
        value_name = "D",
        default_value = "1e-8",
        allow_negative_numbers = true
    )]
    metrics_delta: String,
}

/// The validated arguments.
#[derive(Debug)]
struct JoinSettings {
    server: String,
    identity: PathBuf,
    data: DataSpec,
    budget: Option<EpsDelta>,
    device: tch::Device,
    learning_rate: f64,
    metrics: Option<EpsDelta>,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("cohort join: {msg}");
    ExitCode::from(2)
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("cohort join: {msg}");
    ExitCode::FAILURE
}

fn number(flag: &str, raw: &str) -> Result<f64, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{flag} must be a finite number, got {raw:?}"))
}

fn validate(args: &JoinArgs) -> Result<JoinSettings, String> {
    if !args.server.starts_with("https://") {
        return Err(format!(
            "--server must be an https:// URL (Cohort speaks HTTPS only), got {:?}",
            args.server
        ));
    }
    let data: DataSpec = args
        .data
        .parse()
        .map_err(|e| format!("--data {:?}: {e}", args.data))?;
    let budget = match (&args.budget_epsilon, &args.budget_delta) {
        (Some(e), Some(d)) => {
            let e = number("--budget-epsilon", e)?;
            let d = number("--budget-delta", d)?;
            if e <= 0.0 {
                return Err(format!("--budget-epsilon must be > 0, got {e}"));
            }
            if d <= 0.0 || d >= 1.0 {
                return Err(format!("--budget-delta must be in (0, 1), got {d}"));
            }
            Some(EpsDelta::new(e, d).map_err(|e| e.to_string())?)
        }
        (None, None) => None,
        _ => return Err("give --budget-epsilon and --budget-delta together".into()),
    };
    let device = match args.device.as_str() {
        "cpu" => tch::Device::Cpu,
        "cuda" => tch::Device::Cuda(0),
        other => return Err(format!("--device must be cpu or cuda, got {other:?}")),
    };
    let learning_rate = number("--learning-rate", &args.learning_rate)?;
    if learning_rate <= 0.0 {
        return Err(format!("--learning-rate must be > 0, got {learning_rate}"));
    }
    let metrics = match &args.metrics_epsilon {
        None => None,
        Some(e) => {
            let e = number("--metrics-epsilon", e)?;
            let d = number("--metrics-delta", &args.metrics_delta)?;
            if e <= 0.0 || d <= 0.0 || d >= 1.0 {
                return Err(format!(
                    "--metrics-epsilon must be > 0 and --metrics-delta in (0, 1), got {e} and {d}"
                ));
            }
            Some(EpsDelta::new(e, d).map_err(|e| e.to_string())?)
        }
    };
    Ok(JoinSettings {
        metrics,
        server: args.server.clone(),
        identity: args.identity.clone(),
        data,
        budget,
        device,
        learning_rate,
    })
}

fn ledger_path(dir: &Path) -> PathBuf {
    dir.join("ledger.jsonl")
}

/// Opens the local ledger: with the given budget (first run, or the same budget again), or
/// with the recorded one.
fn open_ledger(dir: &Path, budget: Option<EpsDelta>) -> Result<LocalLedger, String> {
    let path = ledger_path(dir);
    match budget {
        Some(b) => LocalLedger::open(&path, b).map_err(|e| format!("{}: {e}", path.display())),
        None if path.exists() => {
            LocalLedger::read(&path).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Err(
            "the first run needs this client's budget: add --budget-epsilon E --budget-delta D"
                .into(),
        ),
    }
}

async fn identity(
    args: &JoinArgs,
    settings: &JoinSettings,
    sample_count: u64,
) -> Result<Identity, String> {
    let dir = &settings.identity;
    if Identity::exists(dir) {
        return Identity::load(dir).map_err(|e| e.to_string());
    }
    let federation = args.federation.as_deref().ok_or(
        "this identity directory is not enrolled yet: add --federation NAME and --token TOKEN",
    )?;
    let token = match &args.token {
        Some(t) => t.clone(),
        None => std::fs::read_to_string(dir.join("token"))
            .map(|t| t.trim().to_owned())
            .map_err(|_| "first run: pass the one-time enrolment token with --token".to_owned())?,
    };
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).map_err(|_| {
        format!(
            "first run: put the federation CA certificate (from the operator) in {}",
            dir.join("ca.pem").display()
        )
    })?;
    let id = enrol(
        &settings.server,
        federation,
        &token,
        &ca_pem,
        Some(sample_count),
    )
    .await
    .map_err(|e| format!("enrolment failed: {e}"))?;
    id.save(dir).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(dir.join("token"));
    println!("enrolled as {} in federation {}", id.name, id.federation);
    Ok(id)
}

/// Runs `cohort join`.
pub fn run(args: &JoinArgs) -> ExitCode {
    let settings = match validate(args) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(join(args, settings))
}

async fn join(args: &JoinArgs, settings: JoinSettings) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&settings.identity) {
        return fail(format!(
            "cannot create {}: {e}",
            settings.identity.display()
        ));
    }
    let ledger = match open_ledger(&settings.identity, settings.budget) {
        Ok(l) => l,
        Err(e) => return usage(e),
    };
    let split = match data::load(&settings.data) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot load --data: {e}")),
    };
    let train = match split.train.to_device(settings.device) {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot move the data to the device: {e}")),
    };
    let sample_count = train.len().max(0) as u64;
    let id = match identity(args, &settings, sample_count).await {
        Ok(id) => id,
        Err(e) => return fail(e),
    };
    let transport = match HttpsTransport::new(&settings.server, &id) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    // The held-out split answers evaluation tasks; training never sees it.
    let held_out = match split.test.to_device(settings.device) {
        Ok(data) => HeldOut {
            data,
            groups: split.info.groups.map(|g| (g.name, g.test)),
        },
        Err(e) => return fail(format!("cannot move the held-out data to the device: {e}")),
    };
    let trainer = DpSgdTrainer::new(train, None, settings.device, settings.learning_rate)
        .with_held_out(held_out);
    let budget = ledger.budget();
    let spent = ledger.spent_epsilon().unwrap_or(f64::INFINITY);
    println!(
        "joined federation {} as {}: local budget epsilon {} (delta {}), spent {spent:.3}",
        id.federation,
        id.name,
        budget.epsilon(),
        budget.delta()
    );
    let mut participant = Participant::new(transport, trainer, ledger, &id.federation);
    if let Some(per_round) = settings.metrics {
        participant = participant.with_metrics_release(per_round);
    }
    let retry = RetryPolicy::default();
    let mut failures = 0u32;
    let mut last_refusal: Option<String> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let step = tokio::select! {
            r = participant.poll_once() => r,
            _ = &mut ctrl_c => {
                println!("stopping (Ctrl-C); the local ledger is up to date");
                return ExitCode::SUCCESS;
            }
        };
        let pause = match step {
            Ok(Poll::Wait(d)) => {
                failures = 0;
                d
            }
            Ok(Poll::Ineligible { reason, retry }) => {
                failures = 0;
                if last_refusal.as_deref() != Some(reason.as_str()) {
                    println!("not scheduled: {reason}");
                    last_refusal = Some(reason);
                }
                retry
            }
            Ok(Poll::Evaluated(report)) => {
                failures = 0;
                println!("{report}");
                Duration::from_millis(200)
            }
            Ok(Poll::Round(report)) => {
                failures = 0;
                println!("{report}");
                if let RoundOutcome::BudgetRefused(why) = &report.outcome {
                    println!(
                        "stopping: the local privacy budget cannot afford another round ({why})"
                    );
                    return ExitCode::SUCCESS;
                }
                Duration::from_millis(200)
            }
            Err(e) => {
                failures += 1;
                let pause = match &e {
                    cohort_client::participant::ParticipantError::Transport(
                        TransportError::Status { status, .. },
                    ) if (400..500).contains(status) && *status != 429 => {
                        eprintln!("cohort join: {e}");
                        if *status == 401 || *status == 403 {
                            return fail(
                                "the server refuses this client's certificate; re-enrol with a new token",
                            );
                        }
                        retry.delay(failures.min(6))
                    }
                    _ => retry.delay(failures.min(6)),
                };
                println!("{e}; retrying in {:.1}s", pause.as_secs_f64());
                pause
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = &mut ctrl_c => {
                println!("stopping (Ctrl-C); the local ledger is up to date");
                return ExitCode::SUCCESS;
            }
        }
    }
}
