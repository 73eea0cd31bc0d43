//! Prometheus metrics of the control plane.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub issued: Family<KindLabel, Counter>,
    pub refused: Family<ReasonLabel, Counter>,
    pub issue_seconds: Histogram,
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
        Self {
            registry,
            issued,
            refused,
            issue_seconds,
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
