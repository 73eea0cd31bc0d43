//! The two tunnel ends: accept loops, per-connection handshake, authorization, upstream connect
//! and relay, with connection limits, timeouts and logging.
//!
//! - inbound: TLS from the network -> authorize the client SVID for (workload, port) -> plaintext
//!   to the local upstream;
//! - outbound: plaintext from a local client -> TLS to the remote, which must present the SPIFFE
//!   ID the policy gives the target workload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_identity::SvidUsage;
use sigil_identity::tls::BundleSource;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use crate::authz::{self, InboundAuthorizer, Mode, Reason, Refusal};
use crate::creds::CredentialStore;
use crate::handshake::{self, Established, HandshakeError};
use crate::ktls::{self, KtlsMode};
use crate::live::{LiveConnections, Peer, Stop, Verdict};
use crate::metrics::{Failure, Metrics};
use crate::relay::{self, RelayError};
use crate::reload::PolicyStore;
use crate::verify::{OutboundCheck, inbound_verifier, outbound_verifier};

/// Resource limits and connection settings of one tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections relaying or handshaking at once; accepting pauses at the limit.
    pub max_connections: usize,
    /// A peer that has not finished the handshake by then is dropped (slow or stalled peers).
    pub handshake_timeout: Duration,
    /// Connecting to the upstream (inbound) or remote (outbound).
    pub connect_timeout: Duration,
    /// Key exchange groups (post-quantum hybrid first by default).
    pub key_exchange: crate::tls::KeyExchange,
    /// Optional bound on a connection's life. Without it a connection lives as long as its
    /// peers keep it open and the policy and bundle keep authorizing it; the peer's SVID
    /// rotating or expiring does not end it.
    pub max_connection_age: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_connection_age: None,
            key_exchange: crate::tls::KeyExchange::default(),
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
    pub policy: Arc<PolicyStore>,
    pub store: Arc<CredentialStore>,
    pub metrics: Arc<Metrics>,
    /// The live connections, re-authorized when the policy or the bundle changes.
    pub live: Arc<LiveConnections>,
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
    pub policy: Arc<PolicyStore>,
    pub store: Arc<CredentialStore>,
    pub metrics: Arc<Metrics>,
    pub live: Arc<LiveConnections>,
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

/// The verified peer of a finished handshake, from the chain the verifier already accepted.
fn peer_of(certs: &[CertificateDer<'static>]) -> Option<Peer> {
    let leaf = certs.first()?;
    let id = sigil_identity::inspect_leaf(leaf).ok()?.spiffe_id;
    Some(Peer {
        id,
        chain: certs.to_vec(),
        verified_at: UnixTime::now(),
    })
}

/// The chain a live connection was authorized with, checked against the bundle in force now, at
/// the time it was verified: a CA removed from the bundle refuses it, its leaf's expiry since
/// does not.
fn recheck_chain(
    store: &CredentialStore,
    peer: &Peer,
    usage: SvidUsage,
    target: &str,
    port: u16,
) -> Result<(), Refusal> {
    verify_chain(store, peer, usage, peer.verified_at, target, port).map_err(|mut r| {
        r.rule = format!("trust bundle changed: {}", r.rule);
        r
    })
}

/// Verifies `peer`'s chain against the bundle in force, at `at`.
fn verify_chain(
    store: &CredentialStore,
    peer: &Peer,
    usage: SvidUsage,
    at: UnixTime,
    target: &str,
    port: u16,
) -> Result<(), Refusal> {
    let td = peer.id.trust_domain();
    let refusal = |reason, rule| Refusal {
        reason,
        peer: Some(peer.id.to_string()),
        target: target.to_owned(),
        port,
        rule,
    };
    let bundle = store.x509_bundle(&td).ok_or_else(|| {
        refusal(
            Reason::ForeignTrustDomain,
            format!("no trust bundle for trust domain {td}"),
        )
    })?;
    sigil_identity::verify_x509_svid(&peer.chain, &bundle, usage, at)
        .map(|_| ())
        .map_err(|e| {
            refusal(
                Reason::from_svid_error(&e),
                format!("the peer's SVID chain does not verify: {e}"),
            )
        })
}

/// A resumed session's peer certificates come from its ticket and no verifier ran: the chain
/// must verify now against the bundle in force (an SVID that expired since the ticket was issued
/// is refused, so the peer falls back to a full handshake with its renewed SVID next time).
fn verify_resumed(
    store: &CredentialStore,
    peer: &Peer,
    usage: SvidUsage,
    target: &str,
    port: u16,
) -> Result<(), Refusal> {
    verify_chain(store, peer, usage, UnixTime::now(), target, port).map_err(|mut r| {
        r.rule = format!("resumed session: {}", r.rule);
        r
    })
}

/// Re-authorizes `live` whenever the policy is reloaded or the trust bundle changes, until
/// dropped.
async fn reauthorize_on_change(
    policy: Arc<PolicyStore>,
    store: Arc<CredentialStore>,
    live: Arc<LiveConnections>,
    metrics: Arc<Metrics>,
    decide: impl Fn(&Peer) -> Verdict,
) {
    let mut policies = policy.subscribe();
    let mut creds = store.subscribe();
    let mut bundle = Arc::clone(store.current().bundle());
    loop {
        let why = tokio::select! {
            r = policies.changed() => match r {
                Ok(()) => "policy reloaded",
                Err(_) => return,
            },
            r = creds.changed() => match r {
                Ok(()) => {
                    let now = Arc::clone(store.current().bundle());
                    if now == bundle {
                        continue;
                    }
                    bundle = now;
                    "trust bundle changed"
                }
                Err(_) => return,
            },
        };
        let before = live.len();
        let closed = live.reauthorize(&metrics, &decide);
        tracing::info!(why, live = before, closed, "re-authorized live connections");
    }
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
    stop: Stop,
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
                ktls::relay(tls, plain, limit, stop, Arc::clone(metrics)).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "kernel TLS setup failed for this connection; using user space");
                relay::run(tls, plain, est, stop, Arc::clone(metrics)).await
            }
        }
    } else {
        relay::run(tls, plain, est, stop, Arc::clone(metrics)).await
    };
    match result {
        Ok(()) => tracing::debug!("connection closed"),
        // Logged with peer, target and rule when it was decided.
        Err(RelayError::Revoked(_)) => tracing::debug!("closed: no longer authorized"),
        Err(e @ RelayError::MaxAge(_)) => tracing::info!("{e}"),
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

/// Authorizes a resumed inbound session again (chain now, policy in force); logs a refusal.
fn resumed_inbound_allowed(
    store: &CredentialStore,
    authz: &InboundAuthorizer,
    peer: &Peer,
    metrics: &Metrics,
) -> bool {
    let (target, port) = authz.target();
    if let Err(r) = verify_resumed(store, peer, SvidUsage::Client, target, port) {
        r.report(metrics, false);
        return false;
    }
    match authz.authorize(&peer.id) {
        Ok(_) => true,
        Err(r) => {
            let dry = authz.mode() == Mode::DryRun;
            r.report(metrics, dry);
            dry
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
        live,
        ktls,
        limits,
    } = spec;
    let current = policy.current();
    let w = current.workload(&workload).ok_or_else(|| {
        TunnelError::Config(format!(
            "workload {workload:?} is not declared in {}; hint: `sigil policy check` lists them",
            current.source.display()
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
    let verifier = inbound_verifier(Arc::clone(&store), authz.clone(), Arc::clone(&metrics));
    let config = crate::tls::server_config(&store, verifier, limits.key_exchange)?;
    let ktls_on = use_ktls(ktls);
    if mode == Mode::DryRun {
        tracing::warn!(
            "dry-run: policy refusals are logged but not enforced (chain failures are still refused)"
        );
    }
    let decide = {
        let store = Arc::clone(&store);
        let workload = workload.clone();
        let authz = authz.clone();
        move |peer: &Peer| {
            if let Err(r) = recheck_chain(&store, peer, SvidUsage::Client, &workload, port) {
                return Verdict::Close(r);
            }
            match authz.authorize(&peer.id) {
                Ok(_) => Verdict::Keep,
                Err(r) if authz.mode() == Mode::DryRun => Verdict::WouldClose(r),
                Err(r) => Verdict::Close(r),
            }
        }
    };
    let _reauth = AbortOnDrop(tokio::spawn(reauthorize_on_change(
        Arc::clone(&policy),
        Arc::clone(&store),
        Arc::clone(&live),
        Arc::clone(&metrics),
        decide,
    )));
    tracing::info!(listen = %listener.local_addr()?, %upstream, workload, port, id = %own, "inbound tunnel ready");
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (permit, mut sock, remote) = accept(&listener, &permits, &metrics).await?;
        let config = Arc::clone(&config);
        let metrics = Arc::clone(&metrics);
        let live = Arc::clone(&live);
        let workload = workload.clone();
        let (store, authz) = (Arc::clone(&store), authz.clone());
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
                let Some(peer) = peer_of(&est.peer_certs) else {
                    return tracing::error!("handshake finished without a verified client SVID; closing");
                };
                if est.resumed && !resumed_inbound_allowed(&store, &authz, &peer, &metrics) {
                    return;
                }
                let plain = match connect(upstream, limits.connect_timeout).await {
                    Ok(s) => s,
                    Err(e) => {
                        metrics.failure(Failure::Upstream);
                        return tracing::warn!(peer = %peer.id, %upstream, error = %e, "upstream unavailable; closing the client connection");
                    }
                };
                tracing::debug!(peer = %peer.id, suite = ?est.suite.suite(), kx = ?est.kx_group, resumed = est.resumed, "connection authorized");
                let stop = live.register(peer, limits.max_connection_age);
                relay_conn(sock, plain, est, stop, ktls_on, &metrics).await;
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
        live,
        ktls,
        limits,
    } = spec;
    let own = store.current().spiffe_id().clone();
    let current = policy.current();
    let expected = authz::expected_server(&current, &own, &to, port).map_err(|r| {
        r.report(&metrics, false);
        TunnelError::Config(format!(
            "{r}; hint: add a flow to {}",
            current.source.display()
        ))
    })?;
    let check = Arc::new(OutboundCheck {
        policy: Arc::clone(&policy),
        own: own.clone(),
        target: to.clone(),
        port,
        metrics: Arc::clone(&metrics),
    });
    let verifier = outbound_verifier(Arc::clone(&store), Arc::clone(&check));
    let config = crate::tls::client_config(&store, verifier, limits.key_exchange)?;
    let ktls_on = use_ktls(ktls);
    let decide = {
        let store = Arc::clone(&store);
        let check = Arc::clone(&check);
        move |peer: &Peer| {
            if let Err(r) = recheck_chain(&store, peer, SvidUsage::Server, &check.target, port) {
                return Verdict::Close(r);
            }
            match check.decide(&peer.id) {
                Ok(()) => Verdict::Keep,
                Err(r) => Verdict::Close(r),
            }
        }
    };
    let _reauth = AbortOnDrop(tokio::spawn(reauthorize_on_change(
        Arc::clone(&policy),
        Arc::clone(&store),
        Arc::clone(&live),
        Arc::clone(&metrics),
        decide,
    )));
    tracing::info!(listen = %listener.local_addr()?, %remote, to, port, %expected, id = %own, "outbound tunnel ready");
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (permit, plain, local) = accept(&listener, &permits, &metrics).await?;
        let config = Arc::clone(&config);
        let metrics = Arc::clone(&metrics);
        let live = Arc::clone(&live);
        let to = to.clone();
        let (store, check) = (Arc::clone(&store), Arc::clone(&check));
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
                let Some(peer) = peer_of(&est.peer_certs) else {
                    relay::reset_on_close(&plain);
                    return tracing::error!(
                        "handshake finished without a verified server SVID; closing"
                    );
                };
                if est.resumed {
                    let decided = verify_resumed(&store, &peer, SvidUsage::Server, &to, port)
                        .and_then(|()| check.decide(&peer.id));
                    if let Err(r) = decided {
                        r.report(&metrics, false);
                        relay::reset_on_close(&plain);
                        return;
                    }
                }
                tracing::debug!(peer = %peer.id, suite = ?est.suite.suite(), kx = ?est.kx_group, resumed = est.resumed, "connected");
                let stop = live.register(peer, limits.max_connection_age);
                relay_conn(tls, plain, est, stop, ktls_on, &metrics).await;
            }
            .instrument(span),
        );
    }
}
