//! Running a tunnel as a process: load credentials, bind, start the credential watcher, the
//! policy reload (SIGHUP and file changes) and the metrics endpoint, serve until SIGINT/SIGTERM. The binary turns flags into [`TunnelOptions`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sigil_policy::Policy;
use tokio::net::TcpListener;

use crate::authz::Mode;
use crate::creds::{CredentialStore, FileSource};
use crate::ktls::KtlsMode;
use crate::live::LiveConnections;
use crate::metrics::{self, Metrics};
use crate::reload::PolicyStore;
use crate::server::{InboundSpec, Limits, OutboundSpec, TunnelError, run_inbound, run_outbound};
use crate::workload_api::WorkloadApiSource;

/// Which end to run.
#[derive(Debug, Clone)]
pub enum Side {
    Inbound {
        listen: SocketAddr,
        upstream: SocketAddr,
        workload: String,
        /// The policy port; default: the workload's only port, or the upstream's port.
        port: Option<u16>,
        mode: Mode,
    },
    Outbound {
        listen: SocketAddr,
        /// `host:port` of the target's inbound end.
        remote: String,
        to: String,
        /// The policy port; default: the target's only port.
        port: Option<u16>,
    },
}

/// Where credentials come from.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// A directory written by `sigil svid fetch --out DIR`, polled for rotation.
    Dir(PathBuf),
    /// A SPIFFE Workload API endpoint (`unix:///run/sigil/agent.sock`), streamed.
    WorkloadApi(String),
}

/// Everything a tunnel process needs.
#[derive(Debug, Clone)]
pub struct TunnelOptions {
    pub side: Side,
    pub policy: Policy,
    /// Where the SVID, key and bundle come from.
    pub credentials: CredentialSource,
    /// How often the credential files and the policy file are checked for changes.
    pub reload_interval: Duration,
    /// Where to serve `/metrics`.
    pub metrics: Option<SocketAddr>,
    pub ktls: KtlsMode,
    pub limits: Limits,
}

fn policy_port(policy: &Policy, workload: &str, fallback: Option<u16>) -> Result<u16, TunnelError> {
    let w = policy.workload(workload).ok_or_else(|| {
        let names: Vec<&str> = policy.workloads.iter().map(|w| w.name.as_str()).collect();
        TunnelError::Config(format!(
            "workload {workload:?} is not declared in {}; hint: one of {}",
            policy.source.display(),
            names.join(", ")
        ))
    })?;
    match w.ports.as_slice() {
        [only] => Ok(only.port),
        ports => match fallback {
            Some(p) if ports.iter().any(|wp| wp.port == p) => Ok(p),
            _ => Err(TunnelError::Config(format!(
                "workload {workload:?} serves ports {:?}; hint: pass --port to say which one this tunnel carries",
                ports.iter().map(|p| p.port).collect::<Vec<_>>()
            ))),
        },
    }
}

/// Runs the tunnel on a multi-threaded runtime (one worker per core) until a signal.
pub fn run_blocking(opts: TunnelOptions) -> Result<(), TunnelError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sigil-tunnel")
        .build()?;
    rt.block_on(serve(opts))
}

async fn shutdown_signal() -> std::io::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
        _ = term.recv() => Ok("SIGTERM"),
    }
}

/// Runs the tunnel until SIGINT/SIGTERM.
pub async fn serve(opts: TunnelOptions) -> Result<(), TunnelError> {
    let cfg = |e: crate::creds::CredError| TunnelError::Config(e.to_string());
    let (store, watch) = match &opts.credentials {
        CredentialSource::Dir(dir) => {
            let source = FileSource::new(dir);
            let creds = source.load().map_err(cfg)?;
            tracing::info!(id = %creds.spiffe_id(), not_after = %crate::creds::rfc3339(creds.not_after()), dir = %dir.display(), "loaded SVID");
            let store = CredentialStore::new(creds);
            let watch = tokio::spawn(source.watch(Arc::clone(&store), opts.reload_interval));
            (store, watch)
        }
        CredentialSource::WorkloadApi(endpoint) => {
            let source = WorkloadApiSource::new(endpoint).map_err(cfg)?;
            let (creds, rest) = source.first().await.map_err(cfg)?;
            tracing::info!(id = %creds.spiffe_id(), not_after = %crate::creds::rfc3339(creds.not_after()), endpoint, "SVID from the Workload API");
            let store = CredentialStore::new(creds);
            let watch = tokio::spawn(rest.watch(Arc::clone(&store)));
            (store, watch)
        }
    };
    let _watch = AbortOnDrop(watch);
    let policy = PolicyStore::new(opts.policy);
    let _policy_watch = AbortOnDrop(tokio::spawn(
        Arc::clone(&policy).watch(opts.reload_interval, true)?,
    ));
    let (kind, tunnel) = match opts.side {
        Side::Inbound {
            listen,
            upstream,
            workload,
            port,
            mode,
        } => {
            let port = match port {
                Some(p) => p,
                None => policy_port(&policy.current(), &workload, Some(upstream.port()))?,
            };
            let metrics = Metrics::new("inbound");
            let spec = InboundSpec {
                listener: bind(listen).await?,
                upstream,
                workload,
                port,
                mode,
                policy,
                store,
                metrics: Arc::clone(&metrics),
                live: LiveConnections::new(),
                ktls: opts.ktls,
                limits: opts.limits,
            };
            (metrics, tokio::spawn(run_inbound(spec)))
        }
        Side::Outbound {
            listen,
            remote,
            to,
            port,
        } => {
            let port = match port {
                Some(p) => p,
                None => policy_port(&policy.current(), &to, None)?,
            };
            let remote_addr = tokio::net::lookup_host(&remote)
                .await
                .map_err(|e| {
                    TunnelError::Config(format!("cannot resolve --remote {remote:?}: {e}"))
                })?
                .next()
                .ok_or_else(|| {
                    TunnelError::Config(format!("--remote {remote:?} resolves to nothing"))
                })?;
            let metrics = Metrics::new("outbound");
            let spec = OutboundSpec {
                listener: bind(listen).await?,
                remote: remote_addr,
                to,
                port,
                policy,
                store,
                metrics: Arc::clone(&metrics),
                live: LiveConnections::new(),
                ktls: opts.ktls,
                limits: opts.limits,
            };
            (metrics, tokio::spawn(run_outbound(spec)))
        }
    };
    let _metrics_task = match opts.metrics {
        Some(addr) => {
            let l = bind(addr).await?;
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
            Some(AbortOnDrop(tokio::spawn(metrics::serve(l, kind))))
        }
        None => None,
    };
    let mut tunnel = AbortOnDrop(tunnel);
    tokio::select! {
        r = &mut tunnel.0 => match r {
            Ok(res) => res,
            Err(e) => Err(TunnelError::Config(format!("tunnel task failed: {e}"))),
        },
        s = shutdown_signal() => {
            tracing::info!(signal = s?, "shutting down");
            Ok(())
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, TunnelError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| TunnelError::Config(format!("cannot listen on {addr}: {e}")))
}

/// Aborts the task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
