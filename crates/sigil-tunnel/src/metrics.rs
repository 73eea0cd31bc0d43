//! Prometheus metrics for a tunnel, and a tiny `GET /metrics` endpoint.
//!
//! Counters are plain atomics (no locks on the data path); the text exposition format is written
//! by hand. The HTTP endpoint reads at most 8 KiB of request within 5 seconds and answers only
//! `GET /metrics` and `GET /healthz`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::authz::Reason;

/// Upper bounds (seconds) of the handshake latency histogram.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Where a connection failed after it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Handshake,
    Upstream,
    Relay,
}

impl Failure {
    const ALL: [Failure; 3] = [Failure::Handshake, Failure::Upstream, Failure::Relay];
    fn as_str(self) -> &'static str {
        match self {
            Failure::Handshake => "handshake",
            Failure::Upstream => "upstream",
            Failure::Relay => "relay",
        }
    }
}

/// The metrics of one tunnel (`kind` is `inbound` or `outbound`).
#[derive(Debug)]
pub struct Metrics {
    kind: &'static str,
    accepted: AtomicU64,
    established: AtomicU64,
    active: AtomicU64,
    ktls: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    revoked_closes: [AtomicU64; Reason::ALL.len()],
    max_age_closes: AtomicU64,
    key_updates: AtomicU64,
    failures: [AtomicU64; 3],
    refusals: [AtomicU64; Reason::ALL.len()],
    dry_run_refusals: [AtomicU64; Reason::ALL.len()],
    hs_buckets: [AtomicU64; BUCKETS.len()],
    hs_count: AtomicU64,
    hs_sum_micros: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn new(kind: &'static str) -> Arc<Self> {
        Arc::new(Self {
            kind,
            accepted: AtomicU64::new(0),
            established: AtomicU64::new(0),
            active: AtomicU64::new(0),
            ktls: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            revoked_closes: Default::default(),
            max_age_closes: AtomicU64::new(0),
            key_updates: AtomicU64::new(0),
            failures: Default::default(),
            refusals: Default::default(),
            dry_run_refusals: Default::default(),
            hs_buckets: Default::default(),
            hs_count: AtomicU64::new(0),
            hs_sum_micros: AtomicU64::new(0),
        })
    }

    pub(crate) fn accepted(&self) {
        add(&self.accepted, 1);
    }

    pub(crate) fn handshake(&self, took: Duration) {
        add(&self.established, 1);
        add(&self.hs_count, 1);
        add(
            &self.hs_sum_micros,
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
        let secs = took.as_secs_f64();
        for (b, upper) in self.hs_buckets.iter().zip(BUCKETS) {
            if secs <= upper {
                add(b, 1);
            }
        }
    }

    pub(crate) fn ktls(&self) {
        add(&self.ktls, 1);
    }

    pub(crate) fn sent(&self, n: usize) {
        add(&self.bytes_sent, n as u64);
    }

    pub(crate) fn received(&self, n: usize) {
        add(&self.bytes_received, n as u64);
    }

    pub(crate) fn revoked_close(&self, r: Reason) {
        if let Some(c) = self.revoked_closes.get(r.index()) {
            add(c, 1);
        }
    }

    pub(crate) fn max_age_close(&self) {
        add(&self.max_age_closes, 1);
    }

    /// Live connections closed because a new policy or bundle refuses them.
    pub fn revoked_closes(&self, reason: Reason) -> u64 {
        self.revoked_closes
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub(crate) fn key_update(&self) {
        add(&self.key_updates, 1);
    }

    pub(crate) fn failure(&self, f: Failure) {
        if let Some(c) = self
            .failures
            .get(Failure::ALL.iter().position(|x| *x == f).unwrap_or(0))
        {
            add(c, 1);
        }
    }

    pub(crate) fn refusal(&self, r: Reason) {
        if let Some(c) = self.refusals.get(r.index()) {
            add(c, 1);
        }
    }

    pub(crate) fn dry_run_refusal(&self, r: Reason) {
        if let Some(c) = self.dry_run_refusals.get(r.index()) {
            add(c, 1);
        }
    }

    /// A guard that counts one active connection while it lives.
    pub(crate) fn active_guard(self: &Arc<Self>) -> ActiveGuard {
        add(&self.active, 1);
        ActiveGuard(Arc::clone(self))
    }

    /// Refusals counted for `reason` (enforced, not dry-run).
    pub fn refusals(&self, reason: Reason) -> u64 {
        self.refusals
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Connections currently relaying.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let k = self.kind;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_connections_accepted_total TCP connections accepted.\n# TYPE sigil_tunnel_connections_accepted_total counter\nsigil_tunnel_connections_accepted_total{{tunnel=\"{k}\"}} {}",
            g(&self.accepted)
        );
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_connections_established_total Connections that completed the mTLS handshake and authorization.\n# TYPE sigil_tunnel_connections_established_total counter\nsigil_tunnel_connections_established_total{{tunnel=\"{k}\"}} {}",
            g(&self.established)
        );
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_connections_active Connections relaying now.\n# TYPE sigil_tunnel_connections_active gauge\nsigil_tunnel_connections_active{{tunnel=\"{k}\"}} {}",
            g(&self.active)
        );
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_ktls_connections_total Connections whose data path ran in kernel TLS.\n# TYPE sigil_tunnel_ktls_connections_total counter\nsigil_tunnel_ktls_connections_total{{tunnel=\"{k}\"}} {}",
            g(&self.ktls)
        );
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_bytes_total Application bytes through the tunnel (sent: encrypted to the peer; received: decrypted from the peer).\n# TYPE sigil_tunnel_bytes_total counter\nsigil_tunnel_bytes_total{{tunnel=\"{k}\",direction=\"sent\"}} {}\nsigil_tunnel_bytes_total{{tunnel=\"{k}\",direction=\"received\"}} {}",
            g(&self.bytes_sent),
            g(&self.bytes_received)
        );
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_max_age_closes_total Connections closed at --max-connection-age.\n# TYPE sigil_tunnel_max_age_closes_total counter\nsigil_tunnel_max_age_closes_total{{tunnel=\"{k}\"}} {}",
            g(&self.max_age_closes)
        );
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_revoked_closes_total Live connections closed because a reloaded policy or a changed trust bundle refuses them, by reason.\n# TYPE sigil_tunnel_revoked_closes_total counter"
        );
        for (r, c) in Reason::ALL.iter().zip(&self.revoked_closes) {
            let _ = writeln!(
                s,
                "sigil_tunnel_revoked_closes_total{{tunnel=\"{k}\",reason=\"{r}\"}} {}",
                g(c)
            );
        }
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_key_updates_total TLS 1.3 KeyUpdates processed.\n# TYPE sigil_tunnel_key_updates_total counter\nsigil_tunnel_key_updates_total{{tunnel=\"{k}\"}} {}",
            g(&self.key_updates)
        );
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_failures_total Accepted connections that failed, by stage.\n# TYPE sigil_tunnel_failures_total counter"
        );
        for (f, c) in Failure::ALL.iter().zip(&self.failures) {
            let _ = writeln!(
                s,
                "sigil_tunnel_failures_total{{tunnel=\"{k}\",stage=\"{}\"}} {}",
                f.as_str(),
                g(c)
            );
        }
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_refusals_total Connections refused, by reason.\n# TYPE sigil_tunnel_refusals_total counter"
        );
        for (r, c) in Reason::ALL.iter().zip(&self.refusals) {
            let _ = writeln!(
                s,
                "sigil_tunnel_refusals_total{{tunnel=\"{k}\",reason=\"{r}\"}} {}",
                g(c)
            );
        }
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_dry_run_refusals_total Connections the policy would refuse (dry-run), by reason.\n# TYPE sigil_tunnel_dry_run_refusals_total counter"
        );
        for (r, c) in Reason::ALL.iter().zip(&self.dry_run_refusals) {
            let _ = writeln!(
                s,
                "sigil_tunnel_dry_run_refusals_total{{tunnel=\"{k}\",reason=\"{r}\"}} {}",
                g(c)
            );
        }
        let _ = writeln!(
            s,
            "# HELP sigil_tunnel_handshake_seconds mTLS handshake latency.\n# TYPE sigil_tunnel_handshake_seconds histogram"
        );
        for (b, upper) in self.hs_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                s,
                "sigil_tunnel_handshake_seconds_bucket{{tunnel=\"{k}\",le=\"{upper}\"}} {}",
                g(b)
            );
        }
        let count = g(&self.hs_count);
        let _ = writeln!(
            s,
            "sigil_tunnel_handshake_seconds_bucket{{tunnel=\"{k}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "sigil_tunnel_handshake_seconds_sum{{tunnel=\"{k}\"}} {}",
            g(&self.hs_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "sigil_tunnel_handshake_seconds_count{{tunnel=\"{k}\"}} {count}"
        );
        s
    }
}

/// Decrements the active gauge on drop.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<Metrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(buf.get(..n).unwrap_or_default()),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let (status, body) = if req.starts_with(b"GET /metrics ") {
                ("200 OK", metrics.render())
            } else if req.starts_with(b"GET /healthz ") {
                ("200 OK", "ok\n".to_owned())
            } else {
                ("404 Not Found", "not found; try /metrics\n".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// Binds the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
