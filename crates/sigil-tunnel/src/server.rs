//! The two tunnel ends: accept loops, per-connection handshake, authorization, upstream connect
//! and relay, with connection limits, timeouts and logging.
//!
//! - inbound: TLS from the network -> authorize the client SVID for (workload, port) -> plaintext
//!   to the local upstream;
//! - outbound: plaintext from a local client -> TLS to the remote, which must present the SPIFFE
//!   ID the policy gives the target workload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use sigil_identity::SpiffeId;
use sigil_policy::Policy;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use crate::authz::{self, InboundAuthorizer, Mode, Reason, Refusal};
use crate::creds::CredentialStore;
use crate::handshake::{self, Established, HandshakeError};
use crate::ktls::{self, KtlsMode};
use crate::metrics::{Failure, Metrics};
use crate::relay::{self, RelayError};
use crate::verify::{inbound_verifier, outbound_verifier};

/// Resource limits of one tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections relaying or handshaking at once; accepting pauses at the limit.
    pub max_connections: usize,
    /// A peer that has not finished the handshake by then is dropped (slow or stalled peers).
    pub handshake_timeout: Duration,
    /// Connecting to the upstream (inbound) or remote (outbound).
    pub connect_timeout: Duration,
    /// A connection is closed this long before the peer SVID that authorized it expires.
    pub expiry_margin: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            expiry_margin: Duration::from_secs(1),
        }
    }
}

/// Why a tunnel could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("{0}")]
    Config(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The inbound end.
#[derive(Debug)]
pub struct InboundSpec {
    pub listener: TcpListener,
    /// The plaintext service, usually on 127.0.0.1.
    pub upstream: SocketAddr,
    /// This workload's name in the policy.
    pub workload: String,
    /// The port of the workload that flows name (authorization is for this port).
    pub port: u16,
    pub mode: Mode,
    pub policy: Arc<Policy>,
    pub store: Arc<CredentialStore>,
    pub metrics: Arc<Metrics>,
    pub ktls: KtlsMode,
    pub limits: Limits,
}

/// The outbound end.
#[derive(Debug)]
pub struct OutboundSpec {
    pub listener: TcpListener,
    /// Where the inbound end of the target listens.
    pub remote: SocketAddr,
    /// The target workload's name in the policy.
    pub to: String,
    /// The target port that flows name.
    pub port: u16,
    pub policy: Arc<Policy>,
    pub store: Arc<CredentialStore>,
    pub metrics: Arc<Metrics>,
    pub ktls: KtlsMode,
    pub limits: Limits,
}

fn use_ktls(mode: KtlsMode) -> bool {
    match mode {
        KtlsMode::Off => false,
        KtlsMode::Auto => match ktls::detect() {
            ktls::KtlsSupport::Available => {
                tracing::info!("kernel TLS available: data path runs in the kernel (splice)");
                true
            }
            ktls::KtlsSupport::Unavailable(why) => {
                tracing::info!(reason = %why, "kernel TLS unavailable; using the user-space data path");
                false
            }
        },
    }
}

/// Verified identity and expiry of a peer, from the chain the verifier already accepted.
fn peer_of(certs: &[CertificateDer<'static>]) -> Option<(SpiffeId, SystemTime)> {
    let leaf = certs.first()?;
    sigil_identity::inspect_leaf(leaf)
        .ok()
        .map(|l| (l.spiffe_id, l.not_after))
}

fn deadline(not_after: SystemTime, margin: Duration) -> Instant {
    let left = not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(margin);
    Instant::now() + left
}

/// Logs a failed handshake as a refusal unless the verifier already did.
fn report_handshake_failure(e: &HandshakeError, target: &str, port: u16, metrics: &Metrics) {
    metrics.failure(Failure::Handshake);
    let (reason, rule) = match e {
        HandshakeError::Tls(rustls::Error::InvalidCertificate(_)) => return,
        HandshakeError::Tls(rustls::Error::NoCertificatesPresented) => (
            Reason::NoCertificate,
            "no client certificate presented; mTLS with an X.509-SVID is required".to_owned(),
        ),
        other => (Reason::Handshake, format!("handshake failed: {other}")),
    };
    Refusal {
        reason,
        peer: None,
        target: target.to_owned(),
        port,
        rule,
    }
    .report(metrics, false);
}

async fn relay_conn(
    tls: TcpStream,
    plain: TcpStream,
    est: Established,
    deadline: Instant,
    ktls_on: bool,
    metrics: &Arc<Metrics>,
) {
    let _active = metrics.active_guard();
    let result = if ktls_on {
        match ktls::enable(&tls, &est) {
            Ok(()) => {
                metrics.ktls();
                let limit = relay::confidentiality_limit(&est);
                drop(est);
                ktls::relay(tls, plain, limit, deadline, Arc::clone(metrics)).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "kernel TLS setup failed for this connection; using user space");
                relay::run(tls, plain, est, deadline, Arc::clone(metrics)).await
            }
        }
    } else {
        relay::run(tls, plain, est, deadline, Arc::clone(metrics)).await
    };
    match result {
        Ok(()) => tracing::debug!("connection closed"),
        Err(RelayError::Expired) => {
            tracing::info!("closed: the peer SVID that authorized this connection expired")
        }
        Err(e) => {
            metrics.failure(Failure::Relay);
            tracing::info!(error = %e, "connection ended with an error");
        }
    }
}

/// Waits for a connection slot, then accepts; accept errors (fd exhaustion, aborted handshakes
/// in the kernel queue) are logged and retried after a pause instead of ending the tunnel.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    metrics: &Metrics,
) -> Result<(OwnedSemaphorePermit, TcpStream, SocketAddr), TunnelError> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(|e| TunnelError::Config(e.to_string()))?;
    loop {
        match listener.accept().await {
            Ok((sock, addr)) => {
                metrics.accepted();
                let _ = sock.set_nodelay(true);
                return Ok((permit, sock, addr));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Connects within `timeout`; the error says which.
async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("connect timed out after {timeout:?}")),
    }
}

/// Runs a handshake on `sock` within `timeout` (slow or stalled peers are dropped).
async fn handshake_within<S: handshake::Side>(
    conn: Result<S, rustls::Error>,
    sock: &mut TcpStream,
    timeout: Duration,
) -> Result<Established, HandshakeError> {
    let hs = async { handshake::run(conn?, sock).await };
    tokio::time::timeout(timeout, hs).await.unwrap_or_else(|_| {
        Err(HandshakeError::Protocol(format!(
            "not finished within {timeout:?} (slow or stalled peer)"
        )))
    })
}

/// Runs the inbound end until the task is dropped.
pub async fn run_inbound(spec: InboundSpec) -> Result<(), TunnelError> {
    let InboundSpec {
        listener,
        upstream,
        workload,
        port,
        mode,
        policy,
        store,
        metrics,
        ktls,
        limits,
    } = spec;
    let w = policy.workload(&workload).ok_or_else(|| {
        TunnelError::Config(format!(
            "workload {workload:?} is not declared in {}; hint: `sigil policy check` lists them",
            policy.source.display()
        ))
    })?;
    let own = store.current().spiffe_id().clone();
    if own != w.spiffe_id {
        return Err(TunnelError::Config(format!(
            "this SVID is {own}, but workload {workload:?} is {} in the policy; peers would refuse it",
            w.spiffe_id
        )));
    }
    if !w.ports.is_empty() && !w.ports.iter().any(|p| p.port == port) {
        tracing::warn!(
            workload,
            port,
            "the workload does not declare this port; every connection will be refused"
        );
    }
    let authz = InboundAuthorizer::new(Arc::clone(&policy), workload.clone(), port, mode);
    let verifier = inbound_verifier(Arc::clone(&store), authz, Arc::clone(&metrics));
    let config = crate::tls::server_config(&store, verifier)?;
    let ktls_on = use_ktls(ktls);
    if mode == Mode::DryRun {
        tracing::warn!(
            "dry-run: policy refusals are logged but not enforced (chain failures are still refused)"
        );
    }
    tracing::info!(listen = %listener.local_addr()?, %upstream, workload, port, id = %own, "inbound tunnel ready");
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (permit, mut sock, remote) = accept(&listener, &permits, &metrics).await?;
        let config = Arc::clone(&config);
        let metrics = Arc::clone(&metrics);
        let workload = workload.clone();
        let span = tracing::info_span!("inbound", %remote);
        tokio::spawn(
            async move {
                let _permit = permit;
                let started = Instant::now();
                let conn = handshake::server(config);
                let est = match handshake_within(conn, &mut sock, limits.handshake_timeout).await {
                    Ok(est) => est,
                    Err(e) => return report_handshake_failure(&e, &workload, port, &metrics),
                };
                metrics.handshake(started.elapsed());
                let Some((peer, not_after)) = peer_of(&est.peer_certs) else {
                    return tracing::error!("handshake finished without a verified client SVID; closing");
                };
                let plain = match connect(upstream, limits.connect_timeout).await {
                    Ok(s) => s,
                    Err(e) => {
                        metrics.failure(Failure::Upstream);
                        return tracing::warn!(%peer, %upstream, error = %e, "upstream unavailable; closing the client connection");
                    }
                };
                tracing::debug!(%peer, suite = ?est.suite.suite(), kx = ?est.kx_group, "connection authorized");
                let deadline = deadline(not_after, limits.expiry_margin);
                relay_conn(sock, plain, est, deadline, ktls_on, &metrics).await;
            }
            .instrument(span),
        );
    }
}

/// Runs the outbound end until the task is dropped.
pub async fn run_outbound(spec: OutboundSpec) -> Result<(), TunnelError> {
    let OutboundSpec {
        listener,
        remote,
        to,
        port,
        policy,
        store,
        metrics,
        ktls,
        limits,
    } = spec;
    let own = store.current().spiffe_id().clone();
    let expected = authz::expected_server(&policy, &own, &to, port).map_err(|r| {
        r.report(&metrics, false);
        TunnelError::Config(format!(
            "{r}; hint: add a flow to {}",
            policy.source.display()
        ))
    })?;
    let verifier = outbound_verifier(
        Arc::clone(&store),
        expected.clone(),
        to.clone(),
        port,
        Arc::clone(&metrics),
    );
    let config = crate::tls::client_config(&store, verifier)?;
    let ktls_on = use_ktls(ktls);
    tracing::info!(listen = %listener.local_addr()?, %remote, to, port, %expected, id = %own, "outbound tunnel ready");
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (permit, plain, local) = accept(&listener, &permits, &metrics).await?;
        let config = Arc::clone(&config);
        let metrics = Arc::clone(&metrics);
        let to = to.clone();
        let span = tracing::info_span!("outbound", %local);
        tokio::spawn(
            async move {
                let _permit = permit;
                // Any failure resets the local connection, so the client sees an error and not
                // an empty response.
                let mut tls = match connect(remote, limits.connect_timeout).await {
                    Ok(s) => s,
                    Err(e) => {
                        metrics.failure(Failure::Upstream);
                        relay::reset_on_close(&plain);
                        return tracing::warn!(%remote, error = %e, "remote unavailable");
                    }
                };
                let started = Instant::now();
                let conn = handshake::client(config, remote.ip());
                let est = match handshake_within(conn, &mut tls, limits.handshake_timeout).await {
                    Ok(est) => est,
                    Err(e) => {
                        relay::reset_on_close(&plain);
                        return report_handshake_failure(&e, &to, port, &metrics);
                    }
                };
                metrics.handshake(started.elapsed());
                let Some((peer, not_after)) = peer_of(&est.peer_certs) else {
                    relay::reset_on_close(&plain);
                    return tracing::error!(
                        "handshake finished without a verified server SVID; closing"
                    );
                };
                tracing::debug!(%peer, suite = ?est.suite.suite(), kx = ?est.kx_group, "connected");
                let deadline = deadline(not_after, limits.expiry_margin);
                relay_conn(tls, plain, est, deadline, ktls_on, &metrics).await;
            }
            .instrument(span),
        );
    }
}
