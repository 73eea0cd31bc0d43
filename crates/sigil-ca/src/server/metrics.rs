//! Prometheus metrics of the control plane.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

/// Connection-level counters of the HTTPS listener (see `server::conn`).
#[derive(Debug, Clone, Default)]
pub struct ConnMetrics {
    /// Connections being served (TLS handshake onwards).
    pub open: Gauge,
    /// Times the accept loop waited because `--max-connections` were open.
    pub limited: Counter,
    /// Connections closed by a timeout, by phase (handshake, header, idle, body).
    pub timed_out: Family<PhaseLabel, Counter>,
}

impl ConnMetrics {
    pub fn timed_out(&self, phase: &str) {
        self.timed_out
            .get_or_create(&PhaseLabel {
                phase: phase.to_owned(),
            })
            .inc();
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub issued: Family<KindLabel, Counter>,
    pub refused: Family<ReasonLabel, Counter>,
    pub issue_seconds: Histogram,
    pub journal: super::journal::JournalMetrics,
    pub conn: ConnMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sigil_server");
        let issued = Family::<KindLabel, Counter>::default();
        let refused = Family::<ReasonLabel, Counter>::default();
        let issue_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "svids_issued",
            "SVIDs issued, by kind (x509, jwt, agent)",
            issued.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests refused, by reason",
            refused.clone(),
        );
        registry.register(
            "issue_duration_seconds",
            "Time to issue and durably record an SVID",
            issue_seconds.clone(),
        );
        let journal = super::journal::JournalMetrics::default();
        registry.register(
            "audit_write_failures",
            "Journal batches (audit log or store) that could not be made durable",
            journal.write_failures.clone(),
        );
        registry.register(
            "audit_records_lost",
            "Audit records that never reached the log (each is written to the server log instead)",
            journal.records_lost.clone(),
        );
        registry.register(
            "unrecorded_refused",
            "Requests refused because their record could not be made durable",
            journal.requests_refused.clone(),
        );
        let conn = ConnMetrics::default();
        registry.register(
            "connections_open",
            "HTTPS connections being served",
            conn.open.clone(),
        );
        registry.register(
            "connections_limited",
            "Times accepting waited because --max-connections connections were open",
            conn.limited.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed by a timeout, by phase (handshake, header, idle, body)",
            conn.timed_out.clone(),
        );
        Self {
            registry,
            issued,
            refused,
            issue_seconds,
            journal,
            conn,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
