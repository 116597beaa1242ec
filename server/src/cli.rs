//! Command-line arguments shared by `cohort-server` and `cohort serve` / `cohort pki`, so the
//! two binaries cannot drift apart. Raw arguments become a validated [`ServerConfig`] here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::auth::Role;
use crate::config::{LogFormat, ServerConfig};
use crate::pki::PkiDir;
use crate::serve::{Server, init_logging, shutdown_signal};

/// `serve`: run the aggregation server.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML configuration file; `COHORT_*` environment variables override it, flags override both.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Data directory (database and model blobs).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PKI directory made by `cohort pki init`.
    #[arg(long)]
    pub pki_dir: Option<PathBuf>,
    /// Also offer TLS 1.2.
    #[arg(long)]
    pub tls12: bool,
    /// Serve plain HTTP (development only; logs a warning).
    #[arg(long)]
    pub insecure_http: bool,
    /// Log as JSON lines.
    #[arg(long)]
    pub json_logs: bool,
    /// Seconds between rounds (0: only when an admin opens one).
    #[arg(long)]
    pub round_interval_s: Option<u64>,
}

impl ServeArgs {
    /// File, then environment, then flags.
    pub fn to_config(&self) -> Result<ServerConfig, String> {
        let mut cfg = ServerConfig::load(self.config.as_deref()).map_err(|e| e.to_string())?;
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(d) = &self.pki_dir {
            cfg.pki_dir = d.clone();
        }
        cfg.tls12 |= self.tls12;
        cfg.insecure_http |= self.insecure_http;
        if self.json_logs {
            cfg.log_format = LogFormat::Json;
        }
        if let Some(s) = self.round_interval_s {
            cfg.round_interval_s = s;
        }
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }
}

/// Runs the server until Ctrl-C or SIGTERM. Prints `listening on <url>` to stdout once bound.
pub fn run_serve(args: &ServeArgs) -> ExitCode {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cfg.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match Server::build(&cfg).await {
            Ok(server) => {
                println!("listening on {}", server.url());
                server.run(shutdown_signal()).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `pki`: make a CA and credentials without openssl.
#[derive(Debug, Clone, Args)]
pub struct PkiArgs {
    /// The PKI directory.
    #[arg(long, global = true, default_value = PkiDir::DEFAULT)]
    pub dir: PathBuf,
    #[command(subcommand)]
    command: PkiCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum PkiCommand {
    /// Create the federation CA and the token-signing key.
    Init {
        /// The CA's common name.
        #[arg(long, default_value = "Cohort federation CA")]
        name: String,
    },
    /// Issue the server's certificate.
    IssueServer {
        /// DNS names or IP addresses the server is reached at.
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
    /// Issue a client certificate and key into clients/<name>.pem/.key.
    IssueClient {
        /// The client's name.
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
    /// Print a bearer token for a person.
    IssueToken {
        /// Who it is for (appears in logs).
        #[arg(long)]
        subject: String,
        /// admin or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Validity in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?}: use admin or viewer"))
}

/// Runs a `pki` subcommand.
pub fn run_pki(args: &PkiArgs) -> ExitCode {
    let pki = PkiDir::new(&args.dir);
    let result = match &args.command {
        PkiCommand::Init { name } => pki
            .init(name)
            .map(|_| format!("created CA and token key in {}", args.dir.display())),
        PkiCommand::IssueServer { hosts, days } => pki.issue_server(hosts, *days).map(|()| {
            format!(
                "wrote {} and {}",
                pki.server_cert().display(),
                pki.server_key().display()
            )
        }),
        PkiCommand::IssueClient { name, days } => pki
            .issue_client(name, *days)
            .map(|(c, k)| format!("wrote {} and {}", c.display(), k.display())),
        PkiCommand::IssueToken {
            subject,
            role,
            hours,
        } => pki
            .token_signer()
            .map(|s| s.issue(subject, *role, hours.saturating_mul(3600))),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
