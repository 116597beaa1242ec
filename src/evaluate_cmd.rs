//! `cohort evaluate` (open an evaluation of a model version and wait for its report) and
//! `cohort report` (every evaluation of a federation as text, JSON or CSV).
//!
//! Both talk to `/v1/federations/{fed}/evaluations` with a bearer token over HTTPS pinned to
//! the federation CA, like `cohort budgets`. Figures print with their 95 % interval; a
//! suppressed figure prints as `suppressed`, never as a number. Bad arguments: one line and
//! exit code 2; a server that refuses: one line with its reason and exit code 1.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use cohort_evaluation::{Figure, Report};
use cohort_protocol::FederationId;
use cohort_protocol::evaluation::{EvaluationState, EvaluationView, OpenEvaluation};

use crate::budgets_cmd::{ApiConnection, api_connection, http_client, root_cause};

/// Options of `cohort evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The server's base URL, e.g. https://127.0.0.1:8443.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// An admin bearer token (`cohort pki issue-token`); or set COHORT_TOKEN.
    #[arg(long, value_name = "T", env = "COHORT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The federation.
    #[arg(long, value_name = "F")]
    federation: Option<String>,
    /// The model version to evaluate (default: the latest).
    #[arg(long, value_name = "V")]
    model_version: Option<u64>,
    /// Seconds to wait for the evaluation to close before giving up (it keeps running).
    #[arg(long, value_name = "S", default_value_t = 300)]
    wait_s: u64,
    /// Print the evaluation as JSON.
    #[arg(long)]
    json: bool,
    /// The federation CA certificate (PEM) to trust; default .cohort/pki/ca.pem if present.
    #[arg(long, value_name = "PATH")]
    ca: Option<PathBuf>,
}

/// Options of `cohort report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The server's base URL, e.g. https://127.0.0.1:8443.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// A viewer or admin bearer token; or set COHORT_TOKEN.
    #[arg(long, value_name = "T", env = "COHORT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The federation.
    #[arg(long, value_name = "F")]
    federation: Option<String>,
    /// Print JSON (every evaluation, full precision).
    #[arg(long)]
    json: bool,
    /// Print CSV (one line per evaluation and figure, full precision).
    #[arg(long)]
    csv: bool,
    /// The federation CA certificate (PEM) to trust; default .cohort/pki/ca.pem if present.
    #[arg(long, value_name = "PATH")]
    ca: Option<PathBuf>,
}

fn federation(f: Option<&str>) -> Result<FederationId, String> {
    let f = f.ok_or("--federation F is required")?;
    FederationId::parse(f).map_err(|e| format!("--federation: {e}"))
}

async fn call<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    conn: &ApiConnection,
    path: &str,
    body: Option<&OpenEvaluation>,
) -> Result<T, String> {
    let url = format!("{}{path}", conn.server.as_str().trim_end_matches('/'));
    let request = match body {
        Some(b) => client.post(&url).json(b),
        None => client.get(&url),
    };
    let resp = request
        .bearer_auth(&conn.token)
        .send()
        .await
        .map_err(|e| format!("cannot reach {}: {}", conn.server, root_cause(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        let detail = resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("the server answered {}: {detail}", status.as_u16()));
    }
    resp.json::<T>()
        .await
        .map_err(|e| format!("{url} answered something that is not an evaluation: {e}"))
}

fn figure_text(f: &Figure) -> String {
    match f {
        Figure::Value {
            estimate,
            low,
            high,
            ..
        } => format!("{estimate:.4} [{low:.4}, {high:.4}]"),
        Figure::Suppressed { .. } => "suppressed".to_owned(),
    }
}

/// The figures of a report, named as the CSV and the table name them.
fn figures(report: &Report) -> Vec<(&'static str, Figure)> {
    match report {
        Report::Classification(c) => vec![
            ("records", c.records),
            ("accuracy", c.accuracy),
            ("balanced_accuracy", c.balanced_accuracy),
            ("macro_f1", c.macro_f1),
            ("auroc", c.auroc),
            ("ece", c.ece),
            ("loss", c.loss),
            ("equalized_odds_gap", c.equalized_odds_gap),
            (
                "demographic_parity_difference",
                c.demographic_parity_difference,
            ),
        ],
        Report::Regression(r) => vec![("records", r.records), ("mae", r.mae), ("mse", r.mse)],
    }
}

/// Aligned text: each evaluation's header, its figures, and its per-group rates.
pub fn render_table(views: &[EvaluationView]) -> String {
    let mut out = String::new();
    for v in views {
        let state = match v.state {
            EvaluationState::Open => "open",
            EvaluationState::Completed => "completed",
            EvaluationState::Aborted => "aborted",
            _ => "unknown",
        };
        let noise = match (v.noise.placement.as_str(), v.noise.per_site) {
            ("off", _) => "noise OFF (no privacy; tests only)".to_owned(),
            (p, Some(b)) => format!(
                "{p} noise, each site paid epsilon {:.3} (delta {:e})",
                b.epsilon(),
                b.delta()
            ),
            (p, None) => format!("{p} noise"),
        };
        let _ = writeln!(
            out,
            "evaluation {} of model version {}: {state}, {} of {} site(s) answered, {noise}",
            v.evaluation,
            v.model_version,
            v.accepted,
            v.participants.len()
        );
        for s in &v.skipped {
            let _ = writeln!(out, "  not asked: {}: {}", s.client.as_str(), s.reason);
        }
        if let Some(reason) = &v.abort_reason {
            let _ = writeln!(out, "  aborted: {reason}");
        }
        if let Some(report) = &v.report {
            for (name, f) in figures(report) {
                let _ = writeln!(out, "  {name:<30} {}", figure_text(&f));
            }
            if let Report::Classification(c) = report {
                for g in &c.groups {
                    let name = v.group_values.get(g.group).map_or("?", String::as_str);
                    for r in &g.rates {
                        let _ = writeln!(
                            out,
                            "  group {name:<12} class {}: TPR {}  FPR {}  selection {}",
                            r.class,
                            figure_text(&r.tpr),
                            figure_text(&r.fpr),
                            figure_text(&r.selection_rate)
                        );
                    }
                }
            }
        }
        for site in &v.sites {
            for (name, f) in figures(&site.report) {
                if name == "accuracy" || name == "auroc" {
                    let _ = writeln!(
                        out,
                        "  site {:<12} {name:<10} {}",
                        site.client.as_str(),
                        figure_text(&f)
                    );
                }
            }
        }
    }
    out
}

/// CSV: one line per evaluation and figure, with its interval; suppressed figures have empty
/// numbers and the reason.
pub fn render_csv(views: &[EvaluationView]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "evaluation",
        "model_version",
        "figure",
        "estimate",
        "low",
        "high",
        "noise_std",
        "sampling_std",
        "suppressed",
    ])?;
    for v in views {
        let Some(report) = &v.report else { continue };
        for (name, f) in figures(report) {
            let (evaluation, version) = (v.evaluation.to_string(), v.model_version.to_string());
            let row = match f {
                Figure::Value {
                    estimate,
                    low,
                    high,
                    noise_std,
                    sampling_std,
                } => [
                    evaluation,
                    version,
                    name.to_owned(),
                    estimate.to_string(),
                    low.to_string(),
                    high.to_string(),
                    noise_std.to_string(),
                    sampling_std.to_string(),
                    String::new(),
                ],
                Figure::Suppressed { reason } => [
                    evaluation,
                    version,
                    name.to_owned(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    serde_json::to_string(&reason)
                        .unwrap_or_default()
                        .replace('"', ""),
                ],
            };
            w.write_record(&row)?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    // Every cell is a Rust string, so the bytes are UTF-8.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn finish(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cohort evaluate`.
pub fn run_evaluate(args: &EvaluateArgs) -> ExitCode {
    let settings = api_connection(
        args.server.as_deref(),
        args.token.as_deref(),
        args.ca.as_deref(),
    )
    .and_then(|c| Ok((c, federation(args.federation.as_deref())?)));
    let (conn, fed) = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let json = args.json;
    let wait = Duration::from_secs(args.wait_s);
    let body = OpenEvaluation {
        model_version: args.model_version,
    };
    finish(runtime().and_then(|rt| {
        rt.block_on(async {
            let client = http_client(&conn.ca_pem)?;
            let path = format!("/v1/federations/{}/evaluations", fed.as_str());
            let opened: EvaluationView = call(&client, &conn, &path, Some(&body)).await?;
            let started = Instant::now();
            let view = loop {
                let all: Vec<EvaluationView> = call(&client, &conn, &path, None).await?;
                let current = all
                    .into_iter()
                    .find(|v| v.evaluation == opened.evaluation)
                    .ok_or("the evaluation vanished from the server's list")?;
                if current.state != EvaluationState::Open {
                    break current;
                }
                if started.elapsed() >= wait {
                    return Err(format!(
                        "evaluation {} is still open after {}s; see `cohort report` later",
                        opened.evaluation,
                        wait.as_secs()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            if json {
                serde_json::to_string_pretty(&view)
                    .map(|j| j + "\n")
                    .map_err(|e| e.to_string())
            } else {
                Ok(render_table(std::slice::from_ref(&view)))
            }
        })
    }))
}

/// Runs `cohort report`.
pub fn run_report(args: &ReportArgs) -> ExitCode {
    let settings = api_connection(
        args.server.as_deref(),
        args.token.as_deref(),
        args.ca.as_deref(),
    )
    .and_then(|c| Ok((c, federation(args.federation.as_deref())?)))
    .and_then(|s| {
        if args.json && args.csv {
            Err("--json and --csv cannot be combined; pick one".to_owned())
        } else {
            Ok(s)
        }
    });
    let (conn, fed) = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (json, csv) = (args.json, args.csv);
    finish(runtime().and_then(|rt| {
        rt.block_on(async {
            let client = http_client(&conn.ca_pem)?;
            let path = format!("/v1/federations/{}/evaluations", fed.as_str());
            let views: Vec<EvaluationView> = call(&client, &conn, &path, None).await?;
            if json {
                serde_json::to_string_pretty(&views)
                    .map(|j| j + "\n")
                    .map_err(|e| e.to_string())
            } else if csv {
                render_csv(&views).map_err(|e| format!("cannot write the CSV: {e}"))
            } else {
                Ok(render_table(&views))
            }
        })
    }))
}
