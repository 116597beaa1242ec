//! What the hostile-client tests share: the server in its own process (so that its memory is
//! its own to measure, and so that the same tests can be pointed at another build with
//! `COHORT_SERVER_BIN=/path/to/cohort-server`), and raw connections that behave as no
//! well-mannered client would: from a chosen loopback address, half a request, a body that
//! trickles, bytes that are not HTTP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use super::World;

/// `cohort-server` run as its own process.
pub struct ServerProcess {
    child: Child,
    pub url: String,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the server of `world` with `toml` as its configuration file (listen, data and
    /// PKI directories are set here; rounds open only when asked; no rate limit).
    pub fn spawn(world: &World, toml: &str) -> Self {
        let config = world.root.0.join("server.toml");
        std::fs::write(&config, toml).unwrap();
        let bin = std::env::var("COHORT_SERVER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_cohort-server").to_owned());
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--round-interval-s", "0"])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(world.data_dir())
            .arg("--pki-dir")
            .arg(world.pki.root())
            .env("COHORT_RATE_LIMIT_PER_S", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the server did not start: {line:?}"))
            .to_owned();
        let addr = url.trim_start_matches("https://").parse().unwrap();
        Self { child, url, addr }
    }

    fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/<pid>/status"))
    }

    /// Resident memory now, MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") as f64 / 1024.0
    }

    /// The most resident memory so far, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") as f64 / 1024.0
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `server` from the loopback address `from` (any 127.x.y.z is local on
/// Linux, so one machine can play many hosts).
pub async fn tcp_from(from: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(server).await
}

/// A TLS client configuration trusting `world`'s CA, offering `alpn`.
pub fn tls_config(world: &World, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(world.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection from `from` (no client certificate).
pub async fn tls_from(
    config: &Arc<rustls::ClientConfig>,
    from: IpAddr,
    server: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(from, server).await?;
    let name = ServerName::IpAddress(server.ip().into());
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body): status, head, body.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok((status, head, body))
}

/// Sends `request` as raw bytes on a new TLS connection and reads the answer.
pub async fn raw_exchange(
    world: &World,
    server: SocketAddr,
    request: &[u8],
) -> (u16, String, Vec<u8>) {
    let config = tls_config(world, &[b"http/1.1"]);
    let mut tls = tls_from(&config, "127.0.0.1".parse().unwrap(), server)
        .await
        .unwrap();
    tls.write_all(request).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), read_response(&mut tls))
        .await
        .expect("no answer within 10 s")
        .unwrap()
}

/// Asserts that `(status, head, body)` is a problem document with `status`; returns it.
pub fn assert_problem(answer: &(u16, String, Vec<u8>), status: u16) -> serde_json::Value {
    let (got, head, body) = answer;
    assert_eq!(*got, status, "{head}{}", String::from_utf8_lossy(body));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    let p: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(p["status"], status);
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:cohort:problem:")
    );
    p
}

/// Waits until the peer closes `stream` (EOF or an error), up to `limit`; how long it took,
/// or `None` if it stayed open.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut sink = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}
