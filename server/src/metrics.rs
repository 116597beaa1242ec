//! Prometheus metrics for `GET /metrics`, kept and rendered by `prometheus-client` in the
//! Prometheus text exposition format (version 0.0.4, what every scraper reads).
//!
//! The handles below are cheap atomics (counters, gauges) or one short mutex (a histogram's
//! buckets); a label set's series is created the first time it is touched, except for the
//! fixed label values (round outcomes, upload results, close reasons), which exist from the
//! start so that a dashboard sees a 0 rather than no series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Round stages whose latency is recorded.
pub const STAGES: [&str; 3] = ["open", "upload", "commit"];

/// Bucket bounds (seconds) of the stage-duration histogram: 1 ms to about 7 hours in
/// 1–2.5–5 steps, since opening a round takes milliseconds and an upload stage (training
/// included) minutes.
const STAGE_BUCKETS: [f64; 23] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0,
    100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0, 25_000.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UploadResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Stage {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Federation {
    federation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseReason {
    reason: &'static str,
}

fn stage_histogram() -> Histogram {
    Histogram::new(STAGE_BUCKETS)
}

/// The server's counters, gauges and histograms, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rounds: Family<Outcome, Counter>,
    uploads: Family<UploadResult, Counter>,
    upload_bytes: Counter,
    model_download_bytes: Counter,
    clients_enrolled: Counter,
    http_responses: Family<Status, Counter>,
    stage_seconds: Family<Stage, Histogram, fn() -> Histogram>,
    /// Client-level ε spent, per federation.
    federation_epsilon: Family<Federation, Gauge<f64, AtomicU64>>,
    /// Connections holding a slot (handshaking or served), and how many slots there are.
    connections_open: Gauge,
    connections_max: Gauge,
    /// New connections that found every slot taken and waited for one.
    connections_waited: Counter,
    /// Connections the server closed for being idle, and for making room (answers marked
    /// `Connection: close` while others waited).
    connections_closed: Family<CloseReason, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Registry::default(),
            rounds: Family::default(),
            uploads: Family::default(),
            upload_bytes: Counter::default(),
            model_download_bytes: Counter::default(),
            clients_enrolled: Counter::default(),
            http_responses: Family::default(),
            stage_seconds: Family::new_with_constructor(stage_histogram),
            federation_epsilon: Family::default(),
            connections_open: Gauge::default(),
            connections_max: Gauge::default(),
            connections_waited: Counter::default(),
            connections_closed: Family::default(),
        };
        for outcome in ["completed", "aborted"] {
            let _ = m.rounds.get_or_create(&Outcome { outcome });
        }
        for result in ["accepted", "rejected"] {
            let _ = m.uploads.get_or_create(&UploadResult { result });
        }
        for reason in ["idle", "crowded"] {
            let _ = m.connections_closed.get_or_create(&CloseReason { reason });
        }
        m.register()
    }
}

impl Metrics {
    /// Registers every handle (each a shared reference to the same numbers) under its name.
    /// Counters get the `_total` suffix from the encoder.
    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "cohort_rounds",
            "Rounds that ended, by outcome",
            self.rounds.clone(),
        );
        r.register(
            "cohort_uploads",
            "Update uploads, by result",
            self.uploads.clone(),
        );
        r.register(
            "cohort_upload_bytes",
            "Bytes of accepted update uploads",
            self.upload_bytes.clone(),
        );
        r.register(
            "cohort_model_download_bytes",
            "Bytes of model weights sent",
            self.model_download_bytes.clone(),
        );
        r.register(
            "cohort_clients_enrolled",
            "Clients that completed enrolment",
            self.clients_enrolled.clone(),
        );
        r.register(
            "cohort_http_responses",
            "HTTP responses, by status",
            self.http_responses.clone(),
        );
        r.register(
            "cohort_stage_seconds",
            "Time spent in each round stage",
            self.stage_seconds.clone(),
        );
        r.register(
            "cohort_federation_epsilon",
            "Client-level epsilon spent by each federation",
            self.federation_epsilon.clone(),
        );
        r.register(
            "cohort_connections_open",
            "Connections holding a slot (TLS handshake or served)",
            self.connections_open.clone(),
        );
        r.register(
            "cohort_connections_max",
            "Connection slots (max_connections); further connections wait in the listen queue",
            self.connections_max.clone(),
        );
        r.register(
            "cohort_connections_waited",
            "New connections that found every slot taken and waited for one",
            self.connections_waited.clone(),
        );
        r.register(
            "cohort_connections_closed",
            "Connections the server closed, by reason",
            self.connections_closed.clone(),
        );
        self
    }

    /// A round committed.
    pub fn round_completed(&self) {
        self.rounds
            .get_or_create(&Outcome {
                outcome: "completed",
            })
            .inc();
    }
    /// A round aborted.
    pub fn round_aborted(&self) {
        self.rounds
            .get_or_create(&Outcome { outcome: "aborted" })
            .inc();
    }
    /// An update was added to a running sum.
    pub fn upload_accepted(&self, bytes: usize) {
        self.uploads
            .get_or_create(&UploadResult { result: "accepted" })
            .inc();
        self.upload_bytes.inc_by(bytes as u64);
    }
    /// An update was refused.
    pub fn upload_rejected(&self) {
        self.uploads
            .get_or_create(&UploadResult { result: "rejected" })
            .inc();
    }
    /// A model was downloaded.
    pub fn model_downloaded(&self, bytes: usize) {
        self.model_download_bytes.inc_by(bytes as u64);
    }
    /// A client enrolled.
    pub fn client_enrolled(&self) {
        self.clients_enrolled.inc();
    }
    /// An HTTP response was sent.
    pub fn response(&self, status: u16) {
        self.http_responses.get_or_create(&Status { status }).inc();
    }
    /// A round stage took `seconds`.
    pub fn stage(&self, stage: &'static str, seconds: f64) {
        self.stage_seconds
            .get_or_create(&Stage { stage })
            .observe(seconds);
    }
    /// The federation's client-level ε is now `eps`.
    pub fn federation_epsilon(&self, federation: &str, eps: f64) {
        self.federation_epsilon
            .get_or_create(&Federation {
                federation: federation.to_owned(),
            })
            .set(eps);
    }

    /// The number of connection slots (`max_connections`).
    pub fn connection_slots(&self, max: usize) {
        self.connections_max
            .set(i64::try_from(max).unwrap_or(i64::MAX));
    }
    /// A connection took a slot.
    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }
    /// A connection gave its slot back.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }
    /// A new connection found every slot taken.
    pub fn connection_waited(&self) {
        self.connections_waited.inc();
    }
    /// The server closed a connection that had been idle too long.
    pub fn connection_closed_idle(&self) {
        self.connections_closed
            .get_or_create(&CloseReason { reason: "idle" })
            .inc();
    }
    /// The server ended a connection after an answer to make room for a waiting one.
    pub fn connection_closed_crowded(&self) {
        self.connections_closed
            .get_or_create(&CloseReason { reason: "crowded" })
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and every label value here encodes; were the
        // encoder ever to stop half-way, a partial scrape is still better than none.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
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

    #[test]
    fn fixed_labels_exist_before_anything_happens() {
        let text = Metrics::default().render();
        for series in [
            "cohort_rounds_total{outcome=\"completed\"} 0",
            "cohort_rounds_total{outcome=\"aborted\"} 0",
            "cohort_uploads_total{result=\"accepted\"} 0",
            "cohort_uploads_total{result=\"rejected\"} 0",
            "cohort_connections_closed_total{reason=\"idle\"} 0",
            "cohort_connections_closed_total{reason=\"crowded\"} 0",
            "cohort_connections_waited_total 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }

    #[test]
    fn stage_durations_are_histograms_with_cumulative_buckets() {
        let m = Metrics::default();
        for secs in [0.003, 0.003, 0.7, 4000.0] {
            m.stage("commit", secs);
        }
        let text = m.render();
        assert!(
            text.contains("# TYPE cohort_stage_seconds histogram"),
            "{text}"
        );
        let bucket = |le: &str| {
            let key = format!("cohort_stage_seconds_bucket{{stage=\"commit\",le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&key));
            line.and_then(|l| l[key.len()..].parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no bucket le={le} in\n{text}"))
        };
        assert_eq!(bucket("0.001"), 0);
        assert_eq!(bucket("0.005"), 2);
        assert_eq!(bucket("1"), 3);
        assert_eq!(bucket("2500"), 3);
        assert_eq!(bucket("5000"), 4);
        assert_eq!(bucket("+Inf"), 4);
        assert!(text.contains("cohort_stage_seconds_count{stage=\"commit\"} 4"));
        assert!(text.contains("cohort_stage_seconds_sum{stage=\"commit\"} 4000.706"));
    }
}
