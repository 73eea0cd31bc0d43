//! `sigil server`: the control-plane HTTPS API (see docs/api.md).
//!
//! Trust boundaries: every request body is untrusted (size-limited, parsed strictly); a caller's
//! identity comes only from an attestation proof (Kubernetes token, join token, registered node
//! key) or from a verified client X.509-SVID, never from a field of the request. The server's own
//! TLS certificate is issued by the Sigil CA and renewed in the background.

pub mod conn;
mod handlers;
pub mod issuer;

pub use handlers::{ApiError, MAX_JOIN_TOKEN_TTL, issue_x509_recorded};
pub mod journal;
pub mod metrics;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sigil_identity::tls::{SharedBundle, SpiffeClientCertVerifier};
use sigil_identity::{JwkSet, X509Bundle, certs_to_pem};
use sigil_policy::Policy;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use conn::ConnLimits;

use crate::audit::{AuditLog, LogFile};
use crate::authority::CertificateAuthority;
use crate::k8s::TrustedCluster;
use crate::store::Store;

/// Lifetime of the server's own TLS certificate; renewed at half-life.
pub const SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Ca(#[from] crate::authority::CaError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Issuer(#[from] issuer::IssuerError),
    #[error(
        "cannot read JWKS {path} of cluster {cluster}: {reason}; hint: export it with `kubectl get --raw /openid/v1/jwks`"
    )]
    Jwks {
        cluster: String,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("connection limits: {0}")]
    Limits(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub policy: Policy,
    /// Extra DNS names or IPs for the server's certificate.
    pub extra_sans: Vec<String>,
    /// Public base URL: the OIDC issuer (`iss` of JWT-SVIDs, `issuer` of discovery). Default
    /// `https://<listen>`, refused when `listen` is an unspecified address (see `issuer`).
    pub issuer_url: Option<String>,
    /// Initialize the CA in the data directory if it has none.
    pub init_if_missing: bool,
    /// Whether a cluster whose JWKS file is missing is an error (true) or skipped with a warning.
    pub require_jwks: bool,
}

/// Loads the JWKS of every cluster in the policy.
pub fn load_clusters(policy: &Policy, require: bool) -> Result<Vec<TrustedCluster>, ServerError> {
    let mut out = Vec::new();
    for c in &policy.attestation.kubernetes {
        let path = policy.base_dir().join(&c.jwks_file);
        let loaded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| JwkSet::from_json(&b).map_err(|e| e.to_string()));
        match loaded {
            Ok(keys) => out.push(TrustedCluster {
                trust: c.clone(),
                keys,
            }),
            Err(reason) if require => {
                return Err(ServerError::Jwks {
                    cluster: c.cluster.clone(),
                    path,
                    reason,
                });
            }
            Err(reason) => tracing::warn!(
                cluster = %c.cluster, path = %path.display(), %reason,
                "Kubernetes attestation for this cluster is disabled: its JWKS cannot be read"
            ),
        }
    }
    Ok(out)
}

/// Shared state of the running server.
#[derive(Debug)]
pub struct AppState {
    pub ca: Mutex<CertificateAuthority>,
    pub bundle: Arc<SharedBundle>,
    /// PEM of `bundle`, kept in step with it (returned with every SVID).
    pub bundle_pem: RwLock<String>,
    pub store: Arc<Store>,
    pub journal: journal::Journal,
    pub policy: Policy,
    pub clusters: Vec<TrustedCluster>,
    pub metrics: metrics::Metrics,
    pub admin_token: zeroize::Zeroizing<String>,
    /// The OIDC issuer, no trailing `/`: `iss` of every JWT-SVID and `issuer` of discovery.
    pub issuer_url: String,
}

/// Serves the current server certificate; replaced on renewal.
#[derive(Debug)]
struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|g| Arc::clone(&g))
    }
}

/// A bound server, ready to serve.
pub struct Bound {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<AppState>,
    certs: Arc<CertSlot>,
    sans: (Vec<String>, Vec<IpAddr>),
    limits: ConnLimits,
}

/// Wraps the audit log's file (see [`Bound::bind_with_audit_file`]).
pub type AuditFileWrap = Box<dyn FnOnce(std::fs::File) -> Box<dyn LogFile> + Send>;

fn random_token() -> Result<String, ServerError> {
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| ServerError::Tls("random number generator failed".to_owned()))?;
    Ok(hex::encode(b))
}

/// Writes `contents` to `path` with mode 0600, atomically (temp file + rename).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| ServerError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn certified_key(
    ca: &mut CertificateAuthority,
    sans: &(Vec<String>, Vec<IpAddr>),
) -> Result<Arc<CertifiedKey>, ServerError> {
    let (chain, key) =
        ca.issue_server_cert(&sans.0, &sans.1, SERVER_CERT_TTL, SystemTime::now())?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| ServerError::Tls(e.to_string()))
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// Opens the store (initializing the CA if asked), loads keys, binds the listener.
    pub async fn bind(cfg: ServerConfig) -> Result<Self, ServerError> {
        Self::bind_with_audit_file(cfg, Box::new(|f| Box::new(f))).await
    }

    /// Like [`Bound::bind`], writing the audit log through `wrap` (a test seam: fault injection).
    pub async fn bind_with_audit_file(
        cfg: ServerConfig,
        wrap: AuditFileWrap,
    ) -> Result<Self, ServerError> {
        // An unusable issuer is refused before anything is opened or bound.
        issuer::resolve(cfg.issuer_url.as_deref(), cfg.listen)?;
        let store = Arc::new(Store::open(&cfg.data_dir)?);
        let td = cfg.policy.trust_domain.clone();
        let ca = match store.load_ca(&td) {
            Ok(ca) => ca,
            Err(crate::store::StoreError::NoCa { .. }) if cfg.init_if_missing => {
                let ca = CertificateAuthority::generate(&td, SystemTime::now())?;
                store.init_ca(&ca)?;
                tracing::info!(trust_domain = %td, "initialized a new CA in {}", cfg.data_dir.display());
                ca
            }
            Err(e) => return Err(e.into()),
        };
        let clusters = load_clusters(&cfg.policy, cfg.require_jwks)?;
        let audit = AuditLog::open_with(&cfg.data_dir.join("audit.jsonl"), wrap)?;
        let admin_path = cfg.data_dir.join("admin.token");
        let admin_token = match std::fs::read_to_string(&admin_path) {
            Ok(t) if !t.trim().is_empty() => zeroize::Zeroizing::new(t.trim().to_owned()),
            _ => {
                let t = random_token()?;
                write_private(&admin_path, t.as_bytes())?;
                zeroize::Zeroizing::new(t)
            }
        };
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| ServerError::Bind {
                addr: cfg.listen,
                reason: e.to_string(),
            })?;
        let local = listener.local_addr().map_err(|e| ServerError::Bind {
            addr: cfg.listen,
            reason: e.to_string(),
        })?;
        let issuer = issuer::resolve(cfg.issuer_url.as_deref(), local)?;
        let mut dns = vec!["localhost".to_owned()];
        let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
        if !local.ip().is_unspecified() && !ips.contains(&local.ip()) {
            ips.push(local.ip());
        }
        for s in &cfg.extra_sans {
            match s.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => dns.push(s.clone()),
            }
        }
        // Relying parties fetch discovery from the issuer's host: the certificate names it.
        match &issuer.host {
            issuer::IssuerHost::Dns(d) if !dns.contains(d) => dns.push(d.clone()),
            issuer::IssuerHost::Ip(ip) if !ips.contains(ip) => ips.push(*ip),
            _ => {}
        }
        let sans = (dns, ips);
        let mut ca = ca;
        let bundle_now = ca.bundle()?;
        let certs = Arc::new(CertSlot(RwLock::new(certified_key(&mut ca, &sans)?)));
        store.save_ca(&ca)?;
        std::fs::write(cfg.data_dir.join("bundle.pem"), bundle_now.to_pem()).map_err(|e| {
            ServerError::Io {
                path: cfg.data_dir.join("bundle.pem"),
                reason: e.to_string(),
            }
        })?;
        let bundle_pem = RwLock::new(bundle_now.to_pem());
        let bundle = SharedBundle::new(bundle_now);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Tls(e.to_string()))?
            .with_client_cert_verifier(SpiffeClientCertVerifier::optional(bundle.clone()))
            .with_cert_resolver(certs.clone());
        let mut tls = tls;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let issuer_url = issuer.url;
        tracing::info!(issuer = %issuer_url, "OIDC issuer of JWT-SVIDs");
        let metrics = metrics::Metrics::new();
        let state = Arc::new(AppState {
            ca: Mutex::new(ca),
            bundle,
            bundle_pem,
            journal: journal::Journal::start(store.clone(), audit, metrics.journal.clone()),
            store,
            policy: cfg.policy,
            clusters,
            metrics,
            admin_token,
            issuer_url,
        });
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            state,
            certs,
            sans,
            limits: ConnLimits::default(),
        })
    }

    /// Sets the connection limits (default [`ConnLimits::default`]).
    pub fn with_limits(mut self, limits: ConnLimits) -> Result<Self, ServerError> {
        limits.validate().map_err(ServerError::Limits)?;
        self.limits = limits;
        Ok(self)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// The trust bundle clients need to talk to this server.
    pub fn bundle(&self) -> Option<Arc<X509Bundle>> {
        self.state.bundle.current()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let app = handlers::router(self.state.clone());
        let maintenance = tokio::spawn(maintain(
            self.state.clone(),
            self.certs.clone(),
            self.sans.clone(),
        ));
        let mut conns = tokio::task::JoinSet::new();
        let limits = self.limits;
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        tokio::pin!(shutdown);
        loop {
            // At the cap, stop accepting: new connections wait in the kernel's backlog.
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = conn::permit(&slots, &self.state.metrics.conn) => p,
            };
            let Some(permit) = permit else { break };
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                a = self.listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            let app = app.clone();
            let state = self.state.clone();
            while conns.try_join_next().is_some() {}
            conns.spawn(async move {
                let _permit = permit;
                serve_connection(tcp, peer, acceptor, app, state, limits).await;
            });
        }
        maintenance.abort();
        let _ = maintenance.await;
        // Open connections (keep-alive) hold the state; end them so the store is released.
        conns.shutdown().await;
        drop(app);
    }
}

/// One connection under [`ConnLimits`]: TLS handshake and first request headers before one
/// deadline, keep-alive idle and body timeouts after.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: axum::Router,
    state: Arc<AppState>,
    limits: ConnLimits,
) {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::response::IntoResponse;

    let m = state.metrics.conn.clone();
    let _open = conn::OpenGuard::new(&m);
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            m.timed_out("handshake");
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let peer_id = tls.get_ref().1.peer_certificates().and_then(|c| {
        sigil_identity::tls::peer_spiffe_id(
            state.bundle.as_ref(),
            Some(c),
            sigil_identity::SvidUsage::Client,
        )
        .ok()
    });
    let app = app.layer(axum::Extension(handlers::Peer(peer_id)));
    let started = Arc::new(tokio::sync::Notify::new());
    let first = started.clone();
    let body_m = m.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        first.notify_one();
        let fired = Arc::new(AtomicBool::new(false));
        let req = req.map(|b| {
            axum::body::Body::new(conn::DeadlineBody::new(
                b,
                limits.body_timeout,
                fired.clone(),
            ))
        });
        let mut app = app.clone();
        let m = body_m.clone();
        async move {
            let resp = tower::Service::call(&mut app, req).await;
            if !fired.load(Ordering::Relaxed) {
                return resp;
            }
            m.timed_out("body");
            tracing::debug!(%peer, "request body timed out");
            let body = serde_json::json!({
                "error": "body_timeout",
                "reason": format!(
                    "request body not received within {}s of its headers; hint: send the whole body at once (--body-timeout)",
                    limits.body_timeout.as_secs_f64()
                ),
            });
            let mut r = (axum::http::StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            Ok(r)
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
    tokio::pin!(served);
    let mut in_first = true;
    let ended = loop {
        tokio::select! {
            biased;
            r = served.as_mut() => break r,
            () = started.notified(), if in_first => in_first = false,
            () = tokio::time::sleep_until(deadline), if in_first => {
                m.timed_out("header");
                tracing::debug!(%peer, "request headers not received in time");
                return;
            }
        }
    };
    if let Err(e) = ended {
        if e.is_timeout() {
            m.timed_out(if in_first { "header" } else { "idle" });
        }
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Background upkeep: renew the server certificate, retire expired CA generations.
async fn maintain(state: Arc<AppState>, certs: Arc<CertSlot>, sans: (Vec<String>, Vec<IpAddr>)) {
    let mut issued_at = SystemTime::now();
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let now = SystemTime::now();
        let Ok(mut ca) = state.ca.lock() else { return };
        let pruned = ca.prune(now);
        if !pruned.is_empty() {
            tracing::info!(?pruned, "retired CA generations whose last SVID expired");
            if let Ok(b) = ca.bundle() {
                if let Ok(mut pem) = state.bundle_pem.write() {
                    *pem = b.to_pem();
                }
                state.bundle.replace(b);
            }
            if let Err(e) = state.store.save_ca(&ca) {
                tracing::error!(error = %e, "saving CA after pruning failed");
            }
        }
        if now.duration_since(issued_at).unwrap_or_default() > SERVER_CERT_TTL / 2 {
            match certified_key(&mut ca, &sans) {
                Ok(k) => {
                    if let Ok(mut slot) = certs.0.write() {
                        *slot = k;
                        issued_at = now;
                    }
                }
                Err(e) => tracing::error!(error = %e, "renewing the server certificate failed"),
            }
        }
    }
}

/// PEM of a chain (re-exported for handlers and clients).
pub fn chain_pem(chain: &[rustls_pki_types::CertificateDer<'_>]) -> String {
    certs_to_pem(chain)
}
