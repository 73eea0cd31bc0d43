//! Wires the agent together: cache and rotation loop, Workload API on the Unix socket, metrics
//! endpoint. [`Agent::start`] returns once the socket is listening.
//!
//! Owns: task lifecycles and shutdown. Must not: contain policy or attestation logic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sigil_policy::Policy;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::attest::{Attestor, KubeletClient, KubeletConfig, ProcFs};
use crate::authority::SvidAuthority;
use crate::cache::{PassReport, RotationSettings, SvidCache};
use crate::metrics::Metrics;
use crate::service::WorkloadApi;
use crate::socket;

/// Everything the agent needs to run.
#[derive(Debug)]
pub struct AgentConfig {
    /// Path of the Workload API socket.
    pub socket_path: PathBuf,
    pub policy: Policy,
    pub authority: Arc<dyn SvidAuthority>,
    /// Kubernetes workload attestation through the kubelet; `None` off Kubernetes.
    pub kubelet: Option<KubeletConfig>,
    /// `/metrics` listener (127.0.0.1 by default in the CLI).
    pub metrics_addr: Option<SocketAddr>,
    pub rotation: RotationSettings,
    /// Lets callers without an identity fetch bundles and validate JWT-SVIDs. Off by default.
    pub allow_unauthenticated_verifiers: bool,
    /// `/proc`, replaceable in tests.
    pub proc_root: PathBuf,
    pub metrics: Arc<Metrics>,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error(transparent)]
    Kubelet(#[from] crate::attest::kubelet::KubeletError),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    pub cache: Arc<SvidCache>,
    pub metrics: Arc<Metrics>,
    pub api: WorkloadApi,
    /// The first rotation pass (pre-issuance of every workload's SVID).
    pub initial: PassReport,
    pub metrics_addr: Option<SocketAddr>,
    socket_path: PathBuf,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let metrics = config.metrics.clone();
        let need_sha256 = config
            .policy
            .workloads
            .iter()
            .any(|w| w.unix.as_ref().is_some_and(|u| u.sha256.is_some()));
        let kubelet = config.kubelet.map(KubeletClient::new).transpose()?;
        let attestor = Arc::new(Attestor::new(
            ProcFs::new(&config.proc_root),
            kubelet,
            need_sha256,
        ));
        let ids: Vec<_> = config
            .policy
            .workloads
            .iter()
            .map(|w| w.spiffe_id.clone())
            .collect();
        let cache = SvidCache::new(config.authority, ids, config.rotation, metrics.clone());
        let initial = cache.rotate_once().await;
        if initial.failed > 0 {
            tracing::warn!(
                issued = initial.issued,
                failed = initial.failed,
                "some SVIDs could not be pre-issued; retrying in the background"
            );
        } else {
            tracing::info!(issued = initial.issued, "pre-issued workload SVIDs");
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(cache.clone().run(shutdown_rx.clone())));

        let api = WorkloadApi::new(
            cache.clone(),
            attestor.clone(),
            config.policy.workloads.clone(),
            config.policy.trust_domain.clone(),
            config.allow_unauthenticated_verifiers,
        );
        let listener = socket::bind(&config.socket_path)?;
        let incoming = socket::incoming(listener, attestor);
        let server = api.clone().into_server();
        let mut rx = shutdown_rx.clone();
        let socket_path = config.socket_path.clone();
        tasks.push(tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(server)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, socket = %socket_path.display(), "Workload API server stopped");
            }
        }));
        tracing::info!(socket = %config.socket_path.display(), "Workload API listening");

        let mut metrics_addr = None;
        if let Some(addr) = config.metrics_addr {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?;
            metrics_addr = l.local_addr().ok();
            let m = metrics.clone();
            let router = axum::Router::new()
                .route(
                    "/metrics",
                    axum::routing::get(move || {
                        let m = m.clone();
                        async move {
                            (
                                [(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )],
                                m.render(),
                            )
                        }
                    }),
                )
                .route("/healthz", axum::routing::get(|| async { "ok" }));
            let mut rx = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(l, router)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await;
            }));
            tracing::info!(addr = ?metrics_addr, "metrics listening");
        }
        Ok(Self {
            cache,
            metrics,
            api,
            initial,
            metrics_addr,
            socket_path: config.socket_path,
            shutdown,
            tasks,
        })
    }

    /// Stops every task and removes the socket.
    pub async fn shutdown(self) {
        let path = self.socket_path.clone();
        self.shutdown_keep_socket().await;
        let _ = std::fs::remove_file(&path);
    }

    /// Stops every task; the socket file stays (a successor has already bound the path).
    pub async fn shutdown_keep_socket(self) {
        let _ = self.shutdown.send(true);
        for mut t in self.tasks {
            // Graceful first; open Workload API streams never end by themselves, so then abort.
            if tokio::time::timeout(Duration::from_secs(2), &mut t)
                .await
                .is_err()
            {
                t.abort();
                let _ = t.await;
            }
        }
    }

    /// Resolves when shutdown has been requested elsewhere (never, for now) — waits forever.
    pub async fn wait(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}
