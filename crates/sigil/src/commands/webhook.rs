//! `sigil webhook`: the validating admission webhook (HTTPS, AdmissionReview v1).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use sigil_guard::webhook::{self, WebhookState};

use super::EXIT_ERROR;
use crate::cli::WebhookArgs;

pub fn run(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    let auditor = match super::audit::auditor(&args.rules) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let cert = webhook::ReloadingCert::load(&args.tls_cert, &args.tls_key)?;
    let tls = webhook::tls_config_with(cert.clone())?;
    let state = Arc::new(WebhookState::new(
        auditor,
        super::audit::severity(args.deny_on),
        args.exempt_namespace,
    ));
    let c = &args.conn;
    let limits = webhook::ConnLimits {
        max_connections: c.max_connections,
        header_timeout: c.header_timeout,
        idle_timeout: c.idle_timeout,
        body_timeout: c.body_timeout,
    };
    if let Err(e) = limits.validate() {
        eprintln!("error: --max-connections/--*-timeout: {e}");
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        // cert-manager rotates the Secret in place; pick up the new certificate without a restart.
        let _reloader = cert.spawn_reloader(std::time::Duration::from_secs(30));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        tracing::info!(listen = %args.listen, "sigil webhook serving POST /validate, GET /healthz, GET /metrics");
        // Kubernetes stops pods with SIGTERM; a terminal with Ctrl-C.
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        };
        webhook::serve_with(listener, Arc::new(tls), state, limits, shutdown).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
