//! Putting the server together: storage, PKI, TLS, the router and the round scheduler, with
//! graceful shutdown. The `cohort-server` binary and `cohort serve` both call [`Server`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::config::{LogFormat, ServerConfig};
use crate::conn::ConnectionLimits;
use crate::http::{AppState, app};
use crate::metrics::Metrics;
use crate::pki::PkiDir;
use crate::ratelimit::RateLimiter;
use crate::service::{Service, ServiceSettings};
use crate::storage::SqliteStorage;
use crate::tls::TlsServer;

/// Why the server could not start; the message says what to fix.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Installs the global tracing subscriber (`RUST_LOG` filters; default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A bound, ready server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsServer>,
    state: AppState,
    addr: SocketAddr,
    limits: ConnectionLimits,
}

impl Server {
    /// Opens the data dir (running migrations and crash recovery), loads the PKI and binds
    /// the listener.
    pub async fn build(config: &ServerConfig) -> Result<Self, StartError> {
        let (store, report) = SqliteStorage::open(&config.data_dir)
            .map_err(|e| StartError(format!("data dir {}: {e}", config.data_dir.display())))?;
        for (fed, round) in &report.aborted_rounds {
            tracing::warn!(federation = %fed, %round, "round was in flight when the server stopped; recorded as aborted (its ledger entries stand)");
        }
        tracing::info!(
            created = report.created,
            migrations = report.migrations_applied,
            "storage ready at {}",
            config.data_dir.display()
        );
        let pki = PkiDir::new(&config.pki_dir);
        let ca = pki.ca().map_err(|e| {
            StartError(format!(
                "{e}; run `cohort pki init --dir {}` first",
                config.pki_dir.display()
            ))
        })?;
        let tokens = pki.token_signer().map_err(|e| StartError(e.to_string()))?;
        let tls = if config.insecure_http {
            tracing::warn!(
                "--insecure-http: serving PLAIN HTTP. Tokens, certificates and updates travel unencrypted; never use this outside development"
            );
            None
        } else {
            Some(
                TlsServer::load(
                    &pki.server_cert(),
                    &pki.server_key(),
                    &pki.ca_cert(),
                    config.tls12,
                )
                .map_err(|e| StartError(format!("{e}; run `cohort pki issue-server`")))?,
            )
        };
        let metrics = Arc::new(Metrics::default());
        let settings = ServiceSettings {
            online_window: Duration::from_secs(config.online_window_s),
            poll_retry_after_s: config.poll_retry_after_s,
            client_cert_days: config.client_cert_days,
            round_interval: Duration::from_secs(config.round_interval_s),
            upload_concurrency: config.upload_concurrency,
            max_body_bytes: config.max_body_bytes,
            spool_dir: config.data_dir.clone(),
        };
        let service = Arc::new(Service::new(Arc::new(store), ca, metrics.clone(), settings));
        let state = AppState {
            service,
            tokens: Arc::new(tokens),
            metrics,
            limiter: Arc::new(RateLimiter::new(
                config.rate_limit_per_s,
                config.rate_limit_burst,
            )),
            max_json_bytes: config.max_json_bytes,
            max_body_bytes: config.max_body_bytes,
        };
        let listener = listen(config.listen)
            .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError(format!("cannot read the bound address: {e}")))?;
        Ok(Self {
            listener,
            tls,
            state,
            addr,
            limits: ConnectionLimits {
                max_connections: config.max_connections,
                idle_timeout: Duration::from_secs(config.idle_timeout_s),
                handshake_timeout: Duration::from_secs(config.handshake_timeout_s),
                send_timeout: Duration::from_secs(config.send_timeout_s),
                min_body_rate: config.min_body_rate_bytes_per_s,
                max_unauthenticated: config.max_unauthenticated_connections,
                max_unauthenticated_per_ip: config.max_unauthenticated_per_ip,
                max_buffered_body_bytes: config.max_buffered_body_bytes,
                max_buffered_body_bytes_per_connection: config
                    .max_buffered_body_bytes_per_connection,
            },
        })
    }

    /// The service behind the router: a simulator that drives rounds over real HTTPS uses
    /// it to seed client sampling ([`Service::danger_seed_sampling`]).
    pub fn service(&self) -> Arc<Service> {
        self.state.service.clone()
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients use.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests and stops the
    /// scheduler. An in-flight round is left to the store's recovery at the next start.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let service = self.state.service.clone();
        let mut sched_rx = rx.clone();
        let scheduler = tokio::spawn(service.run_scheduler(async move {
            let _ = sched_rx.wait_for(|stop| *stop).await;
        }));
        let mut serve_rx = rx;
        let metrics = self.state.metrics.clone();
        let tokens = self.state.tokens.clone();
        let authenticate: crate::conn::Authenticator =
            Arc::new(move |headers: &hyper::HeaderMap| bearer_is_valid(&tokens, headers));
        let router = app(self.state);
        let stop = async move {
            let _ = serve_rx.wait_for(|stop| *stop).await;
        };
        let signal = tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        crate::conn::serve(
            self.listener,
            self.tls,
            router,
            self.limits,
            metrics,
            authenticate,
            stop,
        )
        .await;
        signal.abort();
        let _ = scheduler.await;
        tracing::info!("server stopped");
    }
}

/// Whether `headers` carry a bearer token this server signed and that has not expired: such
/// a request authenticates its connection, which then leaves the unauthenticated pool. (The
/// role is checked by each route.)
fn bearer_is_valid(tokens: &crate::auth::TokenSigner, headers: &hyper::HeaderMap) -> bool {
    headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| tokens.verify(token.trim()).is_ok())
}

/// Connections the kernel queues for `accept` (it clamps this to `net.core.somaxconn`, 4096 by
/// default since Linux 5.4). Clients beyond `max_connections` wait here, so it must hold a
/// crowd: tokio's `TcpListener::bind` asks for 1024, and a full queue makes the kernel drop
/// new handshakes, which clients only retry after a second or more.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with a [`LISTEN_BACKLOG`]-deep accept queue.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server can take its port back at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
