//! `cohort budgets`: the dashboard's per-client privacy table in a terminal, as aligned text,
//! JSON or CSV.
//!
//! It reads `GET /v1/federations/{fed}/budgets` (and `GET /v1/federations` to list them) with
//! a viewer or admin token, over HTTPS pinned to the federation CA. The text table prints ε
//! with three decimals and δ in shortest exponent form, exactly as the dashboard does, so the
//! two show the same strings; JSON and CSV carry the full-precision values.
//!
//! Bad arguments get one line on stderr and exit code 2; a server that cannot be reached or
//! refuses the token gets one line saying so and exit code 1.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use cohort_protocol::FederationId;
use cohort_protocol::messages::{BudgetView, BudgetsView};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;

use crate::format::{fmt_delta, fmt_eps, fmt_utc, plain_table};

/// Options of `cohort budgets`.
#[derive(Debug, Args)]
pub struct BudgetsArgs {
    /// The server's base URL, e.g. https://127.0.0.1:8443.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// A viewer or admin bearer token (`cohort pki issue-token`); or set COHORT_TOKEN.
    #[arg(long, value_name = "T", env = "COHORT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Only this federation (default: every federation).
    #[arg(long, value_name = "F")]
    federation: Option<String>,
    /// Print JSON (one object per federation, full precision).
    #[arg(long)]
    json: bool,
    /// Print CSV (one line per client, full precision).
    #[arg(long)]
    csv: bool,
    /// The federation CA certificate (PEM) to trust; default .cohort/pki/ca.pem if present.
    #[arg(long, value_name = "PATH")]
    ca: Option<PathBuf>,
}

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text.
    Table,
    /// JSON.
    Json,
    /// CSV.
    Csv,
}

/// Validated settings.
#[derive(Debug)]
struct Settings {
    server: reqwest::Url,
    token: String,
    federation: Option<FederationId>,
    format: Format,
    ca_pem: String,
}

/// One federation's budgets as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FederationBudgets {
    /// The federation.
    pub federation: String,
    /// What the server answered.
    #[serde(flatten)]
    pub budgets: BudgetsView,
}

const DEFAULT_CA: &str = ".cohort/pki/ca.pem";

/// Where and how a command reaches the API: the base URL, a bearer token and the CA to pin.
#[derive(Debug, Clone)]
pub(crate) struct ApiConnection {
    pub(crate) server: reqwest::Url,
    pub(crate) token: String,
    pub(crate) ca_pem: String,
}

/// Validates `--server`, `--token` and `--ca` as every API command takes them.
pub(crate) fn api_connection(
    server: Option<&str>,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
) -> Result<ApiConnection, String> {
    let server = server.ok_or("--server URL is required, e.g. --server https://127.0.0.1:8443")?;
    let server = reqwest::Url::parse(server.trim_end_matches('/')).map_err(|e| {
        format!("--server {server:?} is not a URL ({e}); use e.g. https://127.0.0.1:8443")
    })?;
    let loopback = matches!(server.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match server.scheme() {
        "https" => {}
        "http" if loopback => {}
        other => {
            return Err(format!(
                "--server must use https:// (got {other}://); plain http is accepted only on loopback"
            ));
        }
    }
    let token = token.map(str::trim).filter(|t| !t.is_empty()).ok_or(
        "--token T is required (or set COHORT_TOKEN); make one with `cohort pki issue-token`",
    )?;
    if !(token.starts_with("cohort1.") && token.split('.').count() == 3) {
        return Err(
            "--token does not look like a Cohort token (cohort1.<payload>.<signature>); make one with `cohort pki issue-token`"
                .into(),
        );
    }
    let ca_path = match ca {
        Some(p) => p.to_path_buf(),
        None if std::path::Path::new(DEFAULT_CA).exists() => PathBuf::from(DEFAULT_CA),
        None if server.scheme() == "http" => PathBuf::new(),
        None => {
            return Err(format!(
                "--ca PATH is required: the federation CA certificate (no {DEFAULT_CA} here)"
            ));
        }
    };
    let ca_pem = if ca_path.as_os_str().is_empty() {
        String::new()
    } else {
        let pem = std::fs::read_to_string(&ca_path)
            .map_err(|e| format!("--ca {}: {e}", ca_path.display()))?;
        if CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .is_none()
        {
            return Err(format!(
                "--ca {}: no PEM certificate in it",
                ca_path.display()
            ));
        }
        pem
    };
    Ok(ApiConnection {
        server,
        token: token.to_owned(),
        ca_pem,
    })
}

fn validate(args: &BudgetsArgs) -> Result<Settings, String> {
    // Flags first, files last: a mistyped flag is reported before a missing CA file.
    let federation = args
        .federation
        .as_deref()
        .map(|f| FederationId::parse(f).map_err(|e| format!("--federation: {e}")))
        .transpose()?;
    let format = match (args.json, args.csv) {
        (true, true) => return Err("--json and --csv cannot be combined; pick one".into()),
        (true, false) => Format::Json,
        (false, true) => Format::Csv,
        (false, false) => Format::Table,
    };
    let ApiConnection {
        server,
        token,
        ca_pem,
    } = api_connection(
        args.server.as_deref(),
        args.token.as_deref(),
        args.ca.as_deref(),
    )?;
    Ok(Settings {
        server,
        token,
        federation,
        format,
        ca_pem,
    })
}

pub(crate) fn http_client(ca_pem: &str) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("--ca: bad PEM certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("--ca: unusable certificate: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot set up HTTPS: {e}"))
}

/// The innermost cause of a reqwest error: "connection refused", "certificate not trusted".
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn get<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    s: &Settings,
    path: &str,
) -> Result<T, String> {
    let url = format!("{}{path}", s.server.as_str().trim_end_matches('/'));
    let resp = client
        .get(&url)
        .bearer_auth(&s.token)
        .send()
        .await
        .map_err(|e| format!("cannot reach {}: {}", s.server, root_cause(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        let detail = resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(match status.as_u16() {
            401 => format!("the server refused the token (401): {detail}"),
            403 => format!("the token may not read budgets (403): {detail}"),
            404 => format!("not found (404): {detail}"),
            code => format!("{url} answered {code}: {detail}"),
        });
    }
    resp.json::<T>()
        .await
        .map_err(|e| format!("{url} answered something that is not a budget table: {e}"))
}

async fn fetch(s: &Settings) -> Result<Vec<FederationBudgets>, String> {
    let client = http_client(&s.ca_pem)?;
    let names: Vec<String> = match &s.federation {
        Some(f) => vec![f.as_str().to_owned()],
        None => {
            let feds: Vec<serde_json::Value> = get(&client, s, "/v1/federations").await?;
            feds.iter()
                .filter_map(|f| f["name"].as_str().map(str::to_owned))
                .collect()
        }
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let budgets: BudgetsView =
            get(&client, s, &format!("/v1/federations/{name}/budgets")).await?;
        out.push(FederationBudgets {
            federation: name,
            budgets,
        });
    }
    Ok(out)
}

const HEADERS: [&str; 9] = [
    "FEDERATION",
    "CLIENT",
    "STATUS",
    "EPS_SPENT",
    "EPS_BUDGET",
    "DELTA",
    "ROUNDS",
    "EPS_NEXT_ROUND",
    "LAST_SEEN",
];
/// Columns printed flush right.
const NUMERIC: [bool; 9] = [false, false, false, true, true, true, true, true, false];
/// The CSV columns (snake case, full precision).
const CSV_HEADERS: [&str; 9] = [
    "federation",
    "client",
    "status",
    "epsilon_spent",
    "epsilon_budget",
    "delta",
    "rounds",
    "epsilon_next_round",
    "last_seen_ms",
];

fn row(fed: &str, c: &BudgetView) -> [String; 9] {
    [
        fed.to_owned(),
        c.client.as_str().to_owned(),
        c.status.as_str().to_owned(),
        fmt_eps(c.spent.epsilon()),
        fmt_eps(c.budget.epsilon()),
        fmt_delta(c.budget.delta()),
        c.rounds.to_string(),
        c.next_round_epsilon.map_or_else(|| "—".into(), fmt_eps),
        c.last_seen_ms.map_or_else(|| "never".into(), fmt_utc),
    ]
}

/// The aligned table: one line per federation with its client-level spend, then the clients.
pub fn render_table(feds: &[FederationBudgets]) -> String {
    let mut out = String::new();
    for f in feds {
        let b = &f.budgets;
        let _ = match &b.federation_budget {
            Some(budget) => writeln!(
                out,
                "federation {}: client-level ε {} of {} (δ {})",
                f.federation,
                fmt_eps(b.federation_spent.epsilon()),
                fmt_eps(budget.epsilon()),
                fmt_delta(budget.delta())
            ),
            None => writeln!(
                out,
                "federation {}: no client-level budget (no central noise)",
                f.federation
            ),
        };
    }
    let rows = feds
        .iter()
        .flat_map(|f| f.budgets.clients.iter().map(|c| row(&f.federation, c)));
    out.push('\n');
    out.push_str(&plain_table(HEADERS, rows, NUMERIC));
    out
}

/// CSV with full-precision numbers (Rust's shortest round-trip form).
pub fn render_csv(feds: &[FederationBudgets]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADERS)?;
    for f in feds {
        for c in &f.budgets.clients {
            w.write_record([
                f.federation.clone(),
                c.client.as_str().to_owned(),
                c.status.as_str().to_owned(),
                c.spent.epsilon().to_string(),
                c.budget.epsilon().to_string(),
                c.budget.delta().to_string(),
                c.rounds.to_string(),
                c.next_round_epsilon
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
                c.last_seen_ms.map(|t| t.to_string()).unwrap_or_default(),
            ])?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    // Every cell is a Rust string, so the bytes are UTF-8.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Runs `cohort budgets`.
pub fn run(args: &BudgetsArgs) -> ExitCode {
    let settings = match validate(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let feds = match rt.block_on(fetch(&settings)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = match settings.format {
        Format::Table => render_table(&feds),
        Format::Csv => match render_csv(&feds) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("error: cannot write CSV: {e}");
                return ExitCode::FAILURE;
            }
        },
        Format::Json => match serde_json::to_string_pretty(&feds) {
            Ok(j) => j + "\n",
            Err(e) => {
                eprintln!("error: cannot encode JSON: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    print!("{text}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_privacy::EpsDelta;
    use cohort_protocol::budgets::{BudgetStatus, EpsilonPoint};

    fn view(name: &str, spent: f64, budget: f64, status: BudgetStatus) -> BudgetView {
        BudgetView {
            client: cohort_protocol::ClientId::parse(name).unwrap(),
            budget: EpsDelta::new(budget, 1e-5).unwrap(),
            spent: EpsDelta::new(spent, 1e-5).unwrap(),
            rounds: 2,
            status,
            next_round_epsilon: Some(spent * 2.0),
            last_seen_ms: Some(1_795_000_000_123),
            history: vec![EpsilonPoint {
                round: 1,
                epsilon: spent,
                recorded_at_ms: 1,
            }],
        }
    }

    fn sample() -> Vec<FederationBudgets> {
        vec![FederationBudgets {
            federation: "mnist".into(),
            budgets: BudgetsView {
                federation_budget: Some(EpsDelta::new(8.0, 1e-5).unwrap()),
                federation_spent: EpsDelta::new(1.23456, 1e-5).unwrap(),
                clients: vec![
                    view("hospital-a", 0.123456, 4.0, BudgetStatus::Eligible),
                    view("b", 12.5, 10.0, BudgetStatus::Exhausted),
                ],
            },
        }]
    }

    #[test]
    fn table_is_aligned_and_uses_the_dashboards_formats() {
        let text = render_table(&sample());
        assert!(text.starts_with("federation mnist: client-level ε 1.235 of 8.000 (δ 1e-5)\n"));
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].contains("hospital-a") && lines[1].contains("0.123"));
        assert!(lines[2].contains("12.500") && lines[2].contains("exhausted"));
        // Right-aligned numeric columns end at the same character offset.
        let end_of = |l: &str, s: &str| l.find(s).unwrap() + s.len();
        assert_eq!(end_of(lines[0], "EPS_SPENT"), end_of(lines[1], "0.123"));
        assert_eq!(end_of(lines[0], "EPS_SPENT"), end_of(lines[2], "12.500"));
        assert!(lines[1].contains("2026-11-18T"), "{}", lines[1]);
    }

    #[test]
    fn csv_keeps_full_precision() {
        let csv = render_csv(&sample()).unwrap();
        let second = csv.lines().nth(1).unwrap();
        assert_eq!(
            second,
            "mnist,hospital-a,eligible,0.123456,4,0.00001,2,0.246912,1795000000123"
        );
    }

    fn args(extra: &[&str]) -> BudgetsArgs {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Wrap {
            #[command(flatten)]
            a: BudgetsArgs,
        }
        let mut argv = vec!["budgets"];
        argv.extend_from_slice(extra);
        Wrap::try_parse_from(argv).unwrap().a
    }

    #[test]
    fn bad_input_is_one_clear_line() {
        let token = "cohort1.e30.AAAA";
        let cases: [(&[&str], &str); 6] = [
            (&["--token", token], "--server URL is required"),
            (
                &["--server", "ftp://x", "--token", token],
                "must use https://",
            ),
            (
                &["--server", "https://h:1", "--token", "nope"],
                "does not look like a Cohort token",
            ),
            (
                &[
                    "--server",
                    "https://h:1",
                    "--token",
                    token,
                    "--json",
                    "--csv",
                ],
                "cannot be combined",
            ),
            (
                &[
                    "--server",
                    "https://h:1",
                    "--token",
                    token,
                    "--federation",
                    "../x",
                ],
                "--federation",
            ),
            (
                &[
                    "--server",
                    "https://h:1",
                    "--token",
                    token,
                    "--ca",
                    "/nonexistent/ca.pem",
                ],
                "--ca /nonexistent/ca.pem",
            ),
        ];
        for (argv, want) in cases {
            let err = validate(&args(argv)).unwrap_err();
            assert!(err.contains(want), "{argv:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
