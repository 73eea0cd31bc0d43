//! The validating admission webhook: AdmissionReview v1 over HTTPS (rustls, aws-lc-rs).
//!
//! [`review`] is pure (AdmissionReview JSON in, AdmissionReview JSON out); [`serve`] is the I/O
//! edge: TLS accept, HTTP/1.1, `POST /validate`, `GET /healthz`, `GET /metrics` (Prometheus).
//! Fails closed: a request it cannot parse or evaluate is denied, never allowed by default.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use sigil_kube::{Object, Source};
use tokio::net::TcpListener;

use crate::audit::Auditor;
use crate::finding::Finding;
use crate::rules::Severity;

pub mod conn;
pub use conn::ConnLimits;

/// Largest AdmissionReview body accepted (the API server sends at most ~3 MiB objects).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Default header timeout: TLS handshake plus the first request's headers ([`ConnLimits`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest single warning returned to the client (the API server truncates long ones).
pub const MAX_WARNING_CHARS: usize = 240;

/// Errors setting up or running the webhook.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}; hint: pass a PEM certificate chain and its PKCS#8, SEC1 or RSA private key", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// What the webhook enforces.
#[derive(Debug)]
pub struct WebhookState {
    pub auditor: Auditor,
    /// Findings at or above this severity deny; those below become warnings.
    pub deny_on: Severity,
    /// Namespaces never checked (e.g. kube-system), besides whole-namespace policy exemptions.
    pub exempt_namespaces: Vec<String>,
    pub metrics: Metrics,
}

impl WebhookState {
    pub fn new(auditor: Auditor, deny_on: Severity, exempt_namespaces: Vec<String>) -> Self {
        Self {
            auditor,
            deny_on,
            exempt_namespaces,
            metrics: Metrics::default(),
        }
    }

    fn namespace_exempt(&self, ns: &str) -> Option<String> {
        if self.exempt_namespaces.iter().any(|n| n == ns) {
            return Some(format!("namespace {ns} is exempt (--exempt-namespace)"));
        }
        self.auditor
            .settings
            .exemptions
            .iter()
            .find(|e| e.namespace == ns && e.name.is_none() && e.rules.is_empty())
            .map(|e| format!("namespace {ns} is exempt: {}", e.reason))
    }
}

/// Prometheus counters.
#[derive(Debug, Default)]
pub struct Metrics {
    allowed: AtomicU64,
    denied: AtomicU64,
    warned: AtomicU64,
    errors: AtomicU64,
    dry_run: AtomicU64,
    exempt: AtomicU64,
    /// Latency histogram buckets (upper bounds in microseconds), plus sum and count.
    buckets: [AtomicU64; 8],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    /// Listener counters (connections open, waits at the cap, timeouts).
    conn: conn::ConnMetrics,
}

const BUCKETS_US: [u64; 8] = [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000];

impl Metrics {
    fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        for (b, le) in self.buckets.iter().zip(BUCKETS_US) {
            if us <= le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::from(
            "# HELP sigil_webhook_reviews_total Admission reviews by result.\n# TYPE sigil_webhook_reviews_total counter\n",
        );
        for (result, a) in [
            ("allowed", &self.allowed),
            ("denied", &self.denied),
            ("error", &self.errors),
            ("exempt", &self.exempt),
        ] {
            s.push_str(&format!(
                "sigil_webhook_reviews_total{{result=\"{result}\"}} {}\n",
                g(a)
            ));
        }
        s.push_str(&format!(
            "# HELP sigil_webhook_warned_total Reviews allowed with warnings.\n# TYPE sigil_webhook_warned_total counter\nsigil_webhook_warned_total {}\n",
            g(&self.warned)
        ));
        s.push_str(&format!(
            "# HELP sigil_webhook_dry_run_total Dry-run reviews (answered, not counted as enforcement).\n# TYPE sigil_webhook_dry_run_total counter\nsigil_webhook_dry_run_total {}\n",
            g(&self.dry_run)
        ));
        s.push_str("# HELP sigil_webhook_review_seconds Time to evaluate one review.\n# TYPE sigil_webhook_review_seconds histogram\n");
        for (b, le) in self.buckets.iter().zip(BUCKETS_US) {
            s.push_str(&format!(
                "sigil_webhook_review_seconds_bucket{{le=\"{}\"}} {}\n",
                le as f64 / 1e6,
                g(b)
            ));
        }
        let count = g(&self.latency_count);
        s.push_str(&format!(
            "sigil_webhook_review_seconds_bucket{{le=\"+Inf\"}} {count}\nsigil_webhook_review_seconds_sum {}\nsigil_webhook_review_seconds_count {count}\n",
            g(&self.latency_sum_us) as f64 / 1e6
        ));
        s.push_str(&self.conn.render());
        s
    }
}

fn response(uid: &str, allowed: bool) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": allowed},
    })
}

fn set_response(r: &mut Value, key: &str, value: Value) {
    if let Some(resp) = r.get_mut("response").and_then(Value::as_object_mut) {
        resp.insert(key.to_owned(), value);
    }
}

fn deny(uid: &str, code: u16, message: String) -> Value {
    let mut r = response(uid, false);
    let reason = if code == 400 {
        "BadRequest"
    } else {
        "Forbidden"
    };
    set_response(
        &mut r,
        "status",
        json!({"code": code, "reason": reason, "message": message}),
    );
    r
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Evaluates one AdmissionReview v1 request body and returns the AdmissionReview response.
pub fn review(state: &WebhookState, body: &[u8]) -> Value {
    let start = Instant::now();
    let out = review_inner(state, body);
    state.metrics.observe(start.elapsed());
    out
}

fn review_inner(state: &WebhookState, body: &[u8]) -> Value {
    let m = &state.metrics;
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            m.errors.fetch_add(1, Ordering::Relaxed);
            return deny("", 400, format!("sigil: request is not JSON: {e}"));
        }
    };
    let req = parsed.get("request").cloned().unwrap_or(Value::Null);
    let uid = req
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if parsed.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1")
        || parsed.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
        || uid.is_empty()
    {
        m.errors.fetch_add(1, Ordering::Relaxed);
        return deny(
            &uid,
            400,
            "sigil: expected an admission.k8s.io/v1 AdmissionReview with request.uid; hint: set admissionReviewVersions: [v1]".to_owned(),
        );
    }
    let dry_run = req.get("dryRun").and_then(Value::as_bool) == Some(true);
    if dry_run {
        m.dry_run.fetch_add(1, Ordering::Relaxed);
    }
    let count = |a: &AtomicU64| {
        if !dry_run {
            a.fetch_add(1, Ordering::Relaxed);
        }
    };
    let operation = req
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if operation == "DELETE" || operation == "CONNECT" {
        count(&m.allowed);
        return response(&uid, true);
    }
    let namespace = req
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut raw = match req.get("object") {
        Some(o) if o.is_object() => o.clone(),
        _ => {
            count(&m.errors);
            return deny(&uid, 400, "sigil: request has no object".to_owned());
        }
    };
    // On CREATE the object may not carry its namespace yet; the request does.
    if let Some(meta) = raw
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .filter(|_| !namespace.is_empty())
    {
        meta.entry("namespace").or_insert_with(|| json!(namespace));
    }
    let kind = raw
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = raw
        .pointer("/metadata/name")
        .or_else(|| raw.pointer("/metadata/generateName"))
        .or_else(|| req.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let what = format!("{kind} {namespace}/{name}");
    if let Some(why) = state.namespace_exempt(namespace) {
        count(&m.exempt);
        let mut r = response(&uid, true);
        set_response(&mut r, "auditAnnotations", json!({"exempt": why}));
        return r;
    }
    let obj = Object {
        source: Source {
            path: PathBuf::from(format!("admission:{uid}")),
            document: 0,
            line: 1,
        },
        api_version: raw
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        kind,
        namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
        name,
        raw,
    };
    let report = match state.auditor.audit(std::slice::from_ref(&obj)) {
        Ok(r) => r,
        Err(e) => {
            count(&m.errors);
            return deny(&uid, 400, format!("sigil: cannot check {what}: {e}"));
        }
    };
    let (deny_list, warn_list): (Vec<&Finding>, Vec<&Finding>) = report
        .findings
        .iter()
        .partition(|f| f.severity >= state.deny_on);
    let mut annotations = BTreeMap::new();
    annotations.insert("findings".to_owned(), report.findings.len().to_string());
    if !report.waived.is_empty() {
        let waived: Vec<String> = report
            .waived
            .iter()
            .map(|w| format!("{} ({})", w.finding.rule, w.reason))
            .collect();
        annotations.insert("exempted".to_owned(), waived.join("; "));
    }
    if dry_run {
        annotations.insert("dry-run".to_owned(), "true".to_owned());
    }
    let warnings: Vec<String> = warn_list
        .iter()
        .map(|f| truncate(&format!("sigil: {}", f.summary()), MAX_WARNING_CHARS))
        .collect();
    let mut r = if deny_list.is_empty() {
        count(&m.allowed);
        response(&uid, true)
    } else {
        count(&m.denied);
        let mut rules: Vec<&str> = deny_list.iter().map(|f| f.rule.as_str()).collect();
        rules.dedup();
        annotations.insert("denied-rules".to_owned(), rules.join(","));
        let lines: Vec<String> = deny_list
            .iter()
            .map(|f| match &f.container {
                Some(c) => format!(
                    "[{}] container {c:?}: {} (fix: {})",
                    f.rule, f.message, f.hint
                ),
                None => format!("[{}] {} (fix: {})", f.rule, f.message, f.hint),
            })
            .collect();
        deny(
            &uid,
            403,
            format!(
                "sigil denied {what}: {} violation(s): {}",
                deny_list.len(),
                lines.join("; ")
            ),
        )
    };
    if !warnings.is_empty() {
        count(&m.warned);
        set_response(&mut r, "warnings", json!(warnings));
    }
    set_response(&mut r, "auditAnnotations", json!(annotations));
    r
}

/// The serving certificate, re-read from its files when they change (cert-manager rotates the
/// Secret in place), so short-lived certificates need no restart.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    state: std::sync::RwLock<(Arc<rustls::sign::CertifiedKey>, [u8; 32])>,
}

fn read_file(p: &std::path::Path) -> Result<zeroize::Zeroizing<Vec<u8>>, WebhookError> {
    std::fs::read(p)
        .map(zeroize::Zeroizing::new)
        .map_err(|source| WebhookError::Read {
            path: p.to_owned(),
            source,
        })
}

fn fingerprint(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(a);
    ctx.update(b);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn certified_key(
    cert_path: &std::path::Path,
    cert_pem: &[u8],
    key_path: &std::path::Path,
    key_pem: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, WebhookError> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WebhookError::Pem {
            path: cert_path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(WebhookError::Pem {
            path: cert_path.to_owned(),
            message: "no CERTIFICATE block".to_owned(),
        });
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| WebhookError::Pem {
            path: key_path.to_owned(),
            message: e.to_string(),
        })?
        .ok_or_else(|| WebhookError::Pem {
            path: key_path.to_owned(),
            message: "no PRIVATE KEY block".to_owned(),
        })?;
    let signing = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)?;
    let ck = rustls::sign::CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| WebhookError::Pem {
        path: key_path.to_owned(),
        message: format!("the key does not belong to the certificate: {e}"),
    })?;
    Ok(Arc::new(ck))
}

impl ReloadingCert {
    /// Loads the certificate chain and key (PEM).
    pub fn load(
        cert_path: &std::path::Path,
        key_path: &std::path::Path,
    ) -> Result<Arc<Self>, WebhookError> {
        let cert = read_file(cert_path)?;
        let key = read_file(key_path)?;
        let ck = certified_key(cert_path, &cert, key_path, &key)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            state: std::sync::RwLock::new((ck, fingerprint(&cert, &key))),
        }))
    }

    /// Re-reads the files; swaps the certificate in when they changed and parse. Returns whether
    /// it changed. On error the old certificate stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, WebhookError> {
        let cert = read_file(&self.cert_path)?;
        let key = read_file(&self.key_path)?;
        let fp = fingerprint(&cert, &key);
        let same = self.state.read().map(|s| s.1 == fp).unwrap_or(false);
        if same {
            return Ok(false);
        }
        let ck = certified_key(&self.cert_path, &cert, &self.key_path, &key)?;
        if let Ok(mut s) = self.state.write() {
            *s = (ck, fp);
        }
        Ok(true)
    }

    /// Checks the files every `every` until the runtime stops.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match me.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %me.cert_path.display(), "serving certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "serving certificate not reloaded; keeping the current one")
                    }
                }
            }
        })
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.state.read().ok().map(|s| s.0.clone())
    }
}

/// A rustls server configuration (aws-lc-rs provider, TLS 1.2/1.3, ALPN http/1.1) serving the
/// certificate of `cert`.
pub fn tls_config_with(cert: Arc<ReloadingCert>) -> Result<rustls::ServerConfig, WebhookError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Reads a PEM certificate chain and private key into a rustls server configuration.
pub fn tls_config(
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<rustls::ServerConfig, WebhookError> {
    tls_config_with(ReloadingCert::load(cert_path, key_path)?)
}

fn text(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    state: Arc<WebhookState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            state.metrics.render(),
            "text/plain; version=0.0.4",
        ),
        (&Method::POST, "/validate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Ok(text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("{{\"error\": \"body\", \"reason\": \"{e}\"}}"),
                        "application/json",
                    ));
                }
            };
            let out = review(&state, &body);
            text(StatusCode::OK, out.to_string(), "application/json")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "{\"error\": \"not_found\", \"reason\": \"use POST /validate\"}".to_owned(),
            "application/json",
        ),
    })
}

/// Serves until `shutdown` resolves, with the default [`ConnLimits`]. Each connection: TLS
/// handshake, then HTTP/1.1 keep-alive.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<WebhookState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WebhookError> {
    serve_with(listener, tls, state, ConnLimits::default(), shutdown).await
}

/// Serves until `shutdown` resolves, under `limits` (connection cap, header, idle and body
/// timeouts; see [`conn`]).
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<WebhookState>,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WebhookError> {
    conn::serve(listener, tls, state, limits, shutdown).await
}
