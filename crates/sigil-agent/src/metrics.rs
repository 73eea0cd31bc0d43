//! Prometheus metrics of the agent, served on `--metrics-addr` at `/metrics`.
//!
//! Owns: metric names and labels. Must not: carry SPIFFE IDs of callers or any secret as labels
//! (label sets stay small and fixed).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    served: Family<Labels, Counter>,
    rotations: Family<Labels, Counter>,
    attestation_failures: Family<Labels, Counter>,
    cached_svids: Gauge<i64, AtomicI64>,
    agent_svid_expiry: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sigil_agent");
        let served = Family::<Labels, Counter>::default();
        let rotations = Family::<Labels, Counter>::default();
        let attestation_failures = Family::<Labels, Counter>::default();
        let cached_svids = Gauge::<i64, AtomicI64>::default();
        let agent_svid_expiry = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "svids_served",
            "SVIDs sent to workloads over the Workload API, by type",
            served.clone(),
        );
        registry.register(
            "rotations",
            "X.509-SVID issuances by the rotation loop, by result",
            rotations.clone(),
        );
        registry.register(
            "attestation_failures",
            "Callers that got no identity, by reason",
            attestation_failures.clone(),
        );
        registry.register(
            "cached_svids",
            "Valid X.509-SVIDs held by the agent",
            cached_svids.clone(),
        );
        registry.register(
            "own_svid_expiry_timestamp_seconds",
            "When the agent's own SVID expires (unix seconds)",
            agent_svid_expiry.clone(),
        );
        Self {
            registry,
            served,
            rotations,
            attestation_failures,
            cached_svids,
            agent_svid_expiry,
        }
    }

    pub fn served(&self, kind: &'static str, n: u64) {
        self.served.get_or_create(&vec![("type", kind)]).inc_by(n);
    }

    pub fn rotation(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.rotations
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    pub fn attestation_failure(&self, reason: &'static str) {
        self.attestation_failures
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    pub fn set_cached_svids(&self, n: usize) {
        self.cached_svids.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_own_svid_expiry(&self, unix_seconds: i64) {
        self.agent_svid_expiry.set(unix_seconds);
    }

    /// Count of rotations with `result` (for tests and the benchmark).
    pub fn rotations_count(&self, ok: bool) -> u64 {
        let result = if ok { "ok" } else { "error" };
        self.rotations
            .get_or_create(&vec![("result", result)])
            .get()
    }

    /// Count of attestation failures with `reason`.
    pub fn attestation_failures_count(&self, reason: &'static str) -> u64 {
        self.attestation_failures
            .get_or_create(&vec![("reason", reason)])
            .get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.served("x509", 2);
        m.rotation(true);
        m.attestation_failure("no_matching_workload");
        let text = m.render();
        assert!(
            text.contains("sigil_agent_svids_served_total{type=\"x509\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sigil_agent_rotations_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "sigil_agent_attestation_failures_total{reason=\"no_matching_workload\"} 1"
            ),
            "{text}"
        );
        assert_eq!(m.rotations_count(true), 1);
    }
}
