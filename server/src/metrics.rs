//! Prometheus metrics, rendered by hand in the text exposition format (version 0.0.4): a few
//! atomics and one small map need no metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Round stages whose latency is recorded.
pub const STAGES: [&str; 3] = ["open", "upload", "commit"];

/// The server's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    rounds_completed: AtomicU64,
    rounds_aborted: AtomicU64,
    uploads_accepted: AtomicU64,
    uploads_rejected: AtomicU64,
    upload_bytes: AtomicU64,
    model_download_bytes: AtomicU64,
    clients_enrolled: AtomicU64,
    http_responses: Mutex<BTreeMap<u16, u64>>,
    /// (sum of seconds, count) per stage.
    stage_seconds: Mutex<BTreeMap<&'static str, (f64, u64)>>,
    /// Client-level ε spent, per federation.
    federation_epsilon: Mutex<BTreeMap<String, f64>>,
    /// Connections holding a slot (handshaking or served), and how many slots there are.
    connections_open: AtomicU64,
    connections_max: AtomicU64,
    /// New connections that found every slot taken and waited for one.
    connections_waited: AtomicU64,
    /// Connections the server closed for being idle, and for making room (answers marked
    /// `Connection: close` while others waited).
    connections_closed_idle: AtomicU64,
    connections_closed_crowded: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock cannot leave the numbers inconsistent in a way
    // that matters; keep serving them.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// A round committed.
    pub fn round_completed(&self) {
        self.rounds_completed.fetch_add(1, Ordering::Relaxed);
    }
    /// A round aborted.
    pub fn round_aborted(&self) {
        self.rounds_aborted.fetch_add(1, Ordering::Relaxed);
    }
    /// An update was added to a running sum.
    pub fn upload_accepted(&self, bytes: usize) {
        self.uploads_accepted.fetch_add(1, Ordering::Relaxed);
        self.upload_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// An update was refused.
    pub fn upload_rejected(&self) {
        self.uploads_rejected.fetch_add(1, Ordering::Relaxed);
    }
    /// A model was downloaded.
    pub fn model_downloaded(&self, bytes: usize) {
        self.model_download_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// A client enrolled.
    pub fn client_enrolled(&self) {
        self.clients_enrolled.fetch_add(1, Ordering::Relaxed);
    }
    /// An HTTP response was sent.
    pub fn response(&self, status: u16) {
        *lock(&self.http_responses).entry(status).or_default() += 1;
    }
    /// A round stage took `seconds`.
    pub fn stage(&self, stage: &'static str, seconds: f64) {
        let mut m = lock(&self.stage_seconds);
        let e = m.entry(stage).or_default();
        e.0 += seconds;
        e.1 += 1;
    }
    /// The federation's client-level ε is now `eps`.
    pub fn federation_epsilon(&self, federation: &str, eps: f64) {
        lock(&self.federation_epsilon).insert(federation.to_owned(), eps);
    }

    /// The number of connection slots (`max_connections`).
    pub fn connection_slots(&self, max: usize) {
        self.connections_max.store(max as u64, Ordering::Relaxed);
    }
    /// A connection took a slot.
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }
    /// A connection gave its slot back.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
    /// A new connection found every slot taken.
    pub fn connection_waited(&self) {
        self.connections_waited.fetch_add(1, Ordering::Relaxed);
    }
    /// The server closed a connection that had been idle too long.
    pub fn connection_closed_idle(&self) {
        self.connections_closed_idle.fetch_add(1, Ordering::Relaxed);
    }
    /// The server ended a connection after an answer to make room for a waiting one.
    pub fn connection_closed_crowded(&self) {
        self.connections_closed_crowded
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP cohort_rounds_total Rounds that ended, by outcome.\n# TYPE cohort_rounds_total counter"
        );
        let _ = writeln!(
            out,
            "cohort_rounds_total{{outcome=\"completed\"}} {}",
            self.rounds_completed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "cohort_rounds_total{{outcome=\"aborted\"}} {}",
            self.rounds_aborted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cohort_uploads_total Update uploads, by result.\n# TYPE cohort_uploads_total counter"
        );
        let _ = writeln!(
            out,
            "cohort_uploads_total{{result=\"accepted\"}} {}",
            self.uploads_accepted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "cohort_uploads_total{{result=\"rejected\"}} {}",
            self.uploads_rejected.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "cohort_upload_bytes_total",
            "Bytes of accepted update uploads.",
            self.upload_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cohort_model_download_bytes_total",
            "Bytes of model weights sent.",
            self.model_download_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cohort_clients_enrolled_total",
            "Clients that completed enrolment.",
            self.clients_enrolled.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP cohort_http_responses_total HTTP responses, by status.\n# TYPE cohort_http_responses_total counter"
        );
        for (status, n) in lock(&self.http_responses).iter() {
            let _ = writeln!(
                out,
                "cohort_http_responses_total{{status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP cohort_stage_seconds Time spent in each round stage.\n# TYPE cohort_stage_seconds summary"
        );
        for (stage, (sum, count)) in lock(&self.stage_seconds).iter() {
            let _ = writeln!(out, "cohort_stage_seconds_sum{{stage=\"{stage}\"}} {sum}");
            let _ = writeln!(
                out,
                "cohort_stage_seconds_count{{stage=\"{stage}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP cohort_federation_epsilon Client-level epsilon spent by each federation.\n# TYPE cohort_federation_epsilon gauge"
        );
        for (fed, eps) in lock(&self.federation_epsilon).iter() {
            let _ = writeln!(
                out,
                "cohort_federation_epsilon{{federation=\"{fed}\"}} {eps}"
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut out,
            "cohort_connections_open",
            "Connections holding a slot (TLS handshake or served).",
            self.connections_open.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "cohort_connections_max",
            "Connection slots (max_connections); further connections wait in the listen queue.",
            self.connections_max.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cohort_connections_waited_total",
            "New connections that found every slot taken and waited for one.",
            self.connections_waited.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP cohort_connections_closed_total Connections the server closed, by reason.\n# TYPE cohort_connections_closed_total counter"
        );
        let _ = writeln!(
            out,
            "cohort_connections_closed_total{{reason=\"idle\"}} {}",
            self.connections_closed_idle.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "cohort_connections_closed_total{{reason=\"crowded\"}} {}",
            self.connections_closed_crowded.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_labels() {
        let m = Metrics::default();
        m.round_completed();
        m.upload_accepted(100);
        m.stage("upload", 0.5);
        m.federation_epsilon("mnist", 1.25);
        m.response(409);
        m.connection_slots(8);
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_closed_idle();
        let text = m.render();
        assert!(text.contains("cohort_connections_open 1"));
        assert!(text.contains("cohort_connections_max 8"));
        assert!(text.contains("cohort_connections_closed_total{reason=\"idle\"} 1"));
        assert!(text.contains("cohort_rounds_total{outcome=\"completed\"} 1"));
        assert!(text.contains("cohort_upload_bytes_total 100"));
        assert!(text.contains("cohort_stage_seconds_count{stage=\"upload\"} 1"));
        assert!(text.contains("cohort_federation_epsilon{federation=\"mnist\"} 1.25"));
        assert!(text.contains("cohort_http_responses_total{status=\"409\"} 1"));
    }
}
