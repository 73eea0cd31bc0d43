//! The webhook's listener: a cap on connections served at once and a deadline for every phase a
//! client controls, so that connections which never finish a request cannot hold descriptors.
//!
//! - **max connections**: a permit is taken before `accept()`; at the cap the loop stops
//!   accepting and new connections wait in the kernel's listen backlog (no descriptor of ours)
//!   until a served one closes, which the deadlines below bound.
//! - **header timeout**: accept to the end of the first request's headers, TLS handshake
//!   included, as one absolute deadline (trickling bytes does not extend it).
//! - **idle timeout**: a keep-alive connection must send its next request's headers within this
//!   long after the previous response (hyper's `header_read_timeout` starts when it goes idle).
//! - **body timeout**: from a request's headers to its answer; the review itself is synchronous
//!   and bounded by the Rego limits, so in practice this bounds the wait for the body. The
//!   answer is then a 408 AdmissionReview denial and the connection is closed.
//!
//! `sigil server` (`sigil-ca::server::conn`) applies the same rules with its own thin loop: the
//! two crates share no crate that does I/O, and this is a few lines over hyper and tokio.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{WebhookError, WebhookState};

/// Limits of the webhook's listener. See the module documentation for what each one bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
}

/// Default `max_connections`: well below the common soft limit of 1024 descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default header timeout (TLS handshake and first request headers).
pub const DEFAULT_HEADER_TIMEOUT: Duration = super::REQUEST_TIMEOUT;
/// Default keep-alive idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default body timeout.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

impl ConnLimits {
    /// Refuses a zero limit (it would refuse every connection or close it at once).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max connections is 0; hint: at least 1 (default 512)".to_owned());
        }
        for (name, d) in [
            ("header timeout", self.header_timeout),
            ("idle timeout", self.idle_timeout),
            ("body timeout", self.body_timeout),
        ] {
            if d.is_zero() {
                return Err(format!(
                    "{name} is 0s; hint: use a positive duration such as 10s"
                ));
            }
        }
        Ok(())
    }
}

const PHASES: [&str; 4] = ["handshake", "header", "idle", "body"];

/// Connection counters, rendered into `/metrics`.
#[derive(Debug, Default)]
pub struct ConnMetrics {
    open: AtomicI64,
    limited: AtomicU64,
    timed_out: [AtomicU64; 4],
}

impl ConnMetrics {
    fn timed_out(&self, phase: &str) {
        if let Some(i) = PHASES.iter().position(|p| *p == phase)
            && let Some(c) = self.timed_out.get(i)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connections being served now.
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = format!(
            "# HELP sigil_webhook_connections_open HTTPS connections being served.\n# TYPE sigil_webhook_connections_open gauge\nsigil_webhook_connections_open {}\n",
            self.open()
        );
        s.push_str(&format!(
            "# HELP sigil_webhook_connections_limited_total Times accepting waited because --max-connections connections were open.\n# TYPE sigil_webhook_connections_limited_total counter\nsigil_webhook_connections_limited_total {}\n",
            self.limited.load(Ordering::Relaxed)
        ));
        s.push_str("# HELP sigil_webhook_connections_timed_out_total Connections closed by a timeout, by phase.\n# TYPE sigil_webhook_connections_timed_out_total counter\n");
        for (phase, c) in PHASES.iter().zip(&self.timed_out) {
            s.push_str(&format!(
                "sigil_webhook_connections_timed_out_total{{phase=\"{phase}\"}} {}\n",
                c.load(Ordering::Relaxed)
            ));
        }
        s
    }
}

/// Counts a served connection in `connections_open` while it lives.
struct OpenGuard(Arc<WebhookState>);

impl OpenGuard {
    fn new(state: Arc<WebhookState>) -> Self {
        state.metrics.conn.open.fetch_add(1, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.metrics.conn.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The answer when the body did not arrive in time: an AdmissionReview denial (the uid is
/// unknown, the body was never read), and the connection is closed.
fn body_timeout(limit: Duration) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "",
            "allowed": false,
            "status": {
                "code": 408,
                "reason": "Timeout",
                "message": format!(
                    "sigil: request body not received within {}s of its headers (--body-timeout)",
                    limit.as_secs_f64()
                ),
            },
        },
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

/// The accept loop: see the module documentation.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<WebhookState>,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WebhookError> {
    limits
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                state.metrics.conn.limited.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("connection limit reached; new connections wait in the backlog");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return Ok(()),
                    },
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(tcp, peer, acceptor, state, limits).await;
        });
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<WebhookState>,
    limits: ConnLimits,
) {
    let _open = OpenGuard::new(state.clone());
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            state.metrics.conn.timed_out("handshake");
            tracing::debug!(%peer, "tls handshake timed out");
            return;
        }
    };
    let started = Arc::new(tokio::sync::Notify::new());
    let first = started.clone();
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        first.notify_one();
        let state = svc_state.clone();
        async move {
            match tokio::time::timeout(limits.body_timeout, super::handle(state.clone(), req)).await
            {
                Ok(r) => r,
                Err(_) => {
                    state.metrics.conn.timed_out("body");
                    tracing::debug!(%peer, "request body timed out");
                    Ok(body_timeout(limits.body_timeout))
                }
            }
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(served);
    let mut in_first = true;
    let ended = loop {
        tokio::select! {
            biased;
            r = served.as_mut() => break r,
            () = started.notified(), if in_first => in_first = false,
            () = tokio::time::sleep_until(deadline), if in_first => {
                state.metrics.conn.timed_out("header");
                tracing::debug!(%peer, "request headers not received in time");
                return;
            }
        }
    };
    if let Err(e) = ended {
        if e.is_timeout() {
            state
                .metrics
                .conn
                .timed_out(if in_first { "header" } else { "idle" });
        }
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_and_metrics_render_every_phase() {
        assert!(ConnLimits::default().validate().is_ok());
        let e = ConnLimits {
            idle_timeout: Duration::ZERO,
            ..ConnLimits::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("idle timeout"), "{e}");
        let m = ConnMetrics::default();
        m.timed_out("body");
        let text = m.render();
        assert!(
            text.contains("sigil_webhook_connections_timed_out_total{phase=\"body\"} 1"),
            "{text}"
        );
        assert!(text.contains("sigil_webhook_connections_open 0"), "{text}");
    }
}
