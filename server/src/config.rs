//! Server settings: a TOML file, then `COHORT_*` environment variables, then command-line flags
//! (applied by the binary). Unknown keys in the file are errors, so a typo is not silently
//! ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The most `max_connections` may be: the semaphore behind it counts in `u32`, and far more
/// would exhaust file descriptors first.
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

/// Every setting of the server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the database and model blobs live (created on first start).
    pub data_dir: PathBuf,
    /// The PKI directory (`cohort pki init`): CA, server certificate, token key.
    pub pki_dir: PathBuf,
    /// Also offer TLS 1.2 (TLS 1.3 only by default).
    pub tls12: bool,
    /// Serve plain HTTP. For development only; logs a warning.
    pub insecure_http: bool,
    /// Log line format.
    pub log_format: LogFormat,
    /// Largest request body (model weights, update frames), bytes.
    pub max_body_bytes: usize,
    /// Largest JSON control message, bytes.
    pub max_json_bytes: usize,
    /// Sustained requests per second per caller (0 disables).
    pub rate_limit_per_s: f64,
    /// Burst size per caller.
    pub rate_limit_burst: u32,
    /// `Retry-After` for clients that poll without a task, seconds.
    pub poll_retry_after_s: u64,
    /// Uploads decoded and summed at once; bounds memory to this many update buffers.
    pub upload_concurrency: usize,
    /// A client counts as online if it polled within this many seconds.
    pub online_window_s: u64,
    /// Client certificates are valid this many days.
    pub client_cert_days: u64,
    /// Seconds between the end of one round and the opening of the next; 0 opens rounds only
    /// when an admin asks (`POST /v1/federations/{fed}/rounds`).
    pub round_interval_s: u64,
    /// Connections served at once. Further clients wait in the kernel's listen queue (their
    /// TCP connect succeeds; the TLS handshake waits), costing the server no memory.
    ///
    /// Each connection being served costs its TLS and HTTP buffers, ~0.2 MiB while it
    /// uploads, so without a cap the server's peak memory grew with the number of clients
    /// uploading at once (1M-parameter rounds, dev build: 66 MiB at 50 clients, 121–137 at
    /// 400, 422 at 1600). 128 keeps that part near 25 MiB (78–80 MiB at 200 clients, 91 at
    /// 800; 256 allowed 80–111 at 200 and 121–130 beyond), and a cap of 64 saved nothing more
    /// at 200 clients: what is left there does not come from connections. Throughput needs no
    /// more: updates are decoded `upload_concurrency` at a time, so further connections only
    /// queue inside the server (docs/benchmarks.md, "Connection cap").
    pub max_connections: usize,
    /// Seconds a connection may sit with no request in flight before the server closes it,
    /// so that idle keep-alive clients do not hold slots others wait for. Longer than the
    /// participants' connection-pool timeout (20 s), so they drop idle connections first
    /// instead of racing the server's close with a new request.
    pub idle_timeout_s: u64,
    /// Seconds a connection has to finish its TLS handshake.
    pub handshake_timeout_s: u64,
    /// Seconds a response write may make no progress (a client that stops reading) before
    /// the connection is closed.
    pub send_timeout_s: u64,
    /// Request bodies must arrive at least this fast, in bytes per second, once 10 s have
    /// passed; a slower one is answered 408. Only time the server spends waiting for the
    /// client counts.
    pub min_body_rate_bytes_per_s: u64,
    /// Connections that have not authenticated (TLS handshake not finished, or no client
    /// certificate and no bearer token yet) held at once, in total. They never take one of
    /// the `max_connections` slots; past this, the oldest connection of the address holding
    /// the most is closed to make room.
    pub max_unauthenticated_connections: usize,
    /// Unauthenticated connections held at once from one IP address; further ones are closed
    /// at once.
    pub max_unauthenticated_per_ip: usize,
    /// Bytes of request bodies that handlers hold in memory at once, server-wide (uploads
    /// spooled to disk and an admin's model upload are not counted). A body reserves its
    /// declared length before it is read; over HTTP/2 one connection runs many requests at
    /// once, so without this memory was bounded by neither the connection cap nor the stream
    /// limit.
    pub max_buffered_body_bytes: usize,
    /// The same, per connection.
    pub max_buffered_body_bytes_per_connection: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            data_dir: PathBuf::from(".cohort/data"),
            pki_dir: PathBuf::from(".cohort/pki"),
            tls12: false,
            insecure_http: false,
            log_format: LogFormat::Text,
            max_body_bytes: 256 << 20,
            max_json_bytes: 1 << 20,
            rate_limit_per_s: 50.0,
            rate_limit_burst: 100,
            poll_retry_after_s: 5,
            upload_concurrency: 2,
            online_window_s: 300,
            client_cert_days: 365,
            round_interval_s: 30,
            max_connections: 128,
            idle_timeout_s: 30,
            handshake_timeout_s: 10,
            send_timeout_s: 30,
            min_body_rate_bytes_per_s: 1024,
            max_unauthenticated_connections: 256,
            max_unauthenticated_per_ip: 16,
            max_buffered_body_bytes: 64 << 20,
            max_buffered_body_bytes_per_connection: 4 << 20,
        }
    }
}

/// A setting that could not be read; says which and how to fix it.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ServerConfig {
    /// Reads `path` (if given) and applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("{}: {e}", p.display())))?;
                Self::from_toml(&text).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?
            }
            None => Self::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML; missing keys keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// Applies `COHORT_<KEY>` overrides (e.g. `COHORT_LISTEN=0.0.0.0:443`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.parse()
                .map_err(|e| ConfigError(format!("environment variable {key}={v:?}: {e}")))
        }
        macro_rules! env {
            ($key:literal, $field:expr) => {
                if let Some(v) = get($key) {
                    $field = parse($key, &v)?;
                }
            };
        }
        env!("COHORT_LISTEN", self.listen);
        env!("COHORT_DATA_DIR", self.data_dir);
        env!("COHORT_PKI_DIR", self.pki_dir);
        env!("COHORT_TLS12", self.tls12);
        env!("COHORT_INSECURE_HTTP", self.insecure_http);
        env!("COHORT_MAX_BODY_BYTES", self.max_body_bytes);
        env!("COHORT_MAX_JSON_BYTES", self.max_json_bytes);
        env!("COHORT_RATE_LIMIT_PER_S", self.rate_limit_per_s);
        env!("COHORT_RATE_LIMIT_BURST", self.rate_limit_burst);
        env!("COHORT_POLL_RETRY_AFTER_S", self.poll_retry_after_s);
        env!("COHORT_UPLOAD_CONCURRENCY", self.upload_concurrency);
        env!("COHORT_ONLINE_WINDOW_S", self.online_window_s);
        env!("COHORT_CLIENT_CERT_DAYS", self.client_cert_days);
        env!("COHORT_ROUND_INTERVAL_S", self.round_interval_s);
        env!("COHORT_MAX_CONNECTIONS", self.max_connections);
        env!("COHORT_IDLE_TIMEOUT_S", self.idle_timeout_s);
        env!("COHORT_HANDSHAKE_TIMEOUT_S", self.handshake_timeout_s);
        env!("COHORT_SEND_TIMEOUT_S", self.send_timeout_s);
        env!(
            "COHORT_MIN_BODY_RATE_BYTES_PER_S",
            self.min_body_rate_bytes_per_s
        );
        env!(
            "COHORT_MAX_UNAUTHENTICATED_CONNECTIONS",
            self.max_unauthenticated_connections
        );
        env!(
            "COHORT_MAX_UNAUTHENTICATED_PER_IP",
            self.max_unauthenticated_per_ip
        );
        env!(
            "COHORT_MAX_BUFFERED_BODY_BYTES",
            self.max_buffered_body_bytes
        );
        env!(
            "COHORT_MAX_BUFFERED_BODY_BYTES_PER_CONNECTION",
            self.max_buffered_body_bytes_per_connection
        );
        if let Some(v) = get("COHORT_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError(format!(
                        "environment variable COHORT_LOG_FORMAT={v:?}: use text or json"
                    )));
                }
            };
        }
        Ok(())
    }

    /// Checks ranges that types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.upload_concurrency == 0 {
            return Err(ConfigError("upload_concurrency must be at least 1".into()));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS_LIMIT {
            return Err(ConfigError(format!(
                "max_connections must be between 1 and {MAX_CONNECTIONS_LIMIT}"
            )));
        }
        if self.idle_timeout_s == 0 {
            return Err(ConfigError(
                "idle_timeout_s must be at least 1: idle connections would otherwise hold their slots forever".into(),
            ));
        }
        if !(self.rate_limit_per_s.is_finite() && self.rate_limit_per_s >= 0.0) {
            return Err(ConfigError("rate_limit_per_s must be a number >= 0".into()));
        }
        if self.max_json_bytes == 0 || self.max_body_bytes == 0 {
            return Err(ConfigError("body limits must be positive".into()));
        }
        for (key, v) in [
            ("handshake_timeout_s", self.handshake_timeout_s),
            ("send_timeout_s", self.send_timeout_s),
            ("min_body_rate_bytes_per_s", self.min_body_rate_bytes_per_s),
        ] {
            if v == 0 {
                return Err(ConfigError(format!(
                    "{key} must be at least 1: a zero would let slow clients hold connections forever"
                )));
            }
        }
        if self.max_unauthenticated_connections == 0 || self.max_unauthenticated_per_ip == 0 {
            return Err(ConfigError(
                "max_unauthenticated_connections and max_unauthenticated_per_ip must be at least 1: enrolment and the dashboard come in unauthenticated".into(),
            ));
        }
        // A JSON body reserves its size from both budgets before it is read, so each must hold
        // the largest one.
        if self.max_buffered_body_bytes_per_connection < self.max_json_bytes
            || self.max_buffered_body_bytes < self.max_buffered_body_bytes_per_connection
        {
            return Err(ConfigError(format!(
                "need max_json_bytes ({}) <= max_buffered_body_bytes_per_connection ({}) <= max_buffered_body_bytes ({})",
                self.max_json_bytes,
                self.max_buffered_body_bytes_per_connection,
                self.max_buffered_body_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let mut cfg = ServerConfig::from_toml("listen = \"0.0.0.0:9000\"\ntls12 = true\n").unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert!(cfg.tls12);
        cfg.apply_env(|k| (k == "COHORT_LISTEN").then(|| "127.0.0.1:1".to_owned()))
            .unwrap();
        assert_eq!(cfg.listen.port(), 1);
        assert!(ServerConfig::from_toml("lisen = \"x\"").is_err());
        let bad = cfg.apply_env(|k| (k == "COHORT_TLS12").then(|| "maybe".to_owned()));
        assert!(bad.unwrap_err().0.contains("COHORT_TLS12"));
    }

    #[test]
    fn connection_cap_and_idle_timeout_from_file_and_environment() {
        let defaults = ServerConfig::default();
        assert_eq!(defaults.max_connections, 128);
        assert_eq!(defaults.idle_timeout_s, 30);
        defaults.validate().unwrap();

        let mut cfg =
            ServerConfig::from_toml("max_connections = 16\nidle_timeout_s = 5\n").unwrap();
        assert_eq!((cfg.max_connections, cfg.idle_timeout_s), (16, 5));
        cfg.apply_env(|k| match k {
            "COHORT_MAX_CONNECTIONS" => Some("2".to_owned()),
            "COHORT_IDLE_TIMEOUT_S" => Some("1".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!((cfg.max_connections, cfg.idle_timeout_s), (2, 1));
        cfg.validate().unwrap();

        let bad = cfg.apply_env(|k| (k == "COHORT_MAX_CONNECTIONS").then(|| "-3".to_owned()));
        assert!(bad.unwrap_err().0.contains("COHORT_MAX_CONNECTIONS"));
        assert!(ServerConfig::from_toml("max_connections = \"many\"").is_err());
        assert!(
            ServerConfig::from_toml("max_conections = 3").is_err(),
            "typo refused"
        );

        for (text, what) in [
            ("max_connections = 0", "max_connections"),
            ("max_connections = 1048577", "max_connections"),
            ("idle_timeout_s = 0", "idle_timeout_s"),
        ] {
            let err = ServerConfig::from_toml(text)
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.0.contains(what), "{text}: {err}");
        }
    }
}
