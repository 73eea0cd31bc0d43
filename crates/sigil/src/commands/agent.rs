//! `sigil agent`: the node agent serving the SPIFFE Workload API (`run`), a Workload API client
//! (`fetch`), and a self-contained demo (`demo`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sigil_agent::attest::KubeletConfig;
use sigil_agent::authority::SvidAuthority;
use sigil_agent::cache::RotationSettings;
use sigil_agent::local::LocalAuthority;
use sigil_agent::metrics::Metrics;
use sigil_agent::proto::{JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest};
use sigil_agent::server::{NodeProof, ServerAuthority, ServerSettings};
use sigil_agent::{Agent, AgentConfig};
use sigil_policy::Policy;

use super::{EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::cli::{AgentCmd, AgentFetchArgs, AgentRunArgs, FetchOutput};
use crate::logging::{Color, paint};

pub fn run(cmd: AgentCmd) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cmd {
        AgentCmd::Run(a) => rt.block_on(run_agent(*a)),
        AgentCmd::Fetch(a) => rt.block_on(fetch(a)),
        AgentCmd::Demo => rt.block_on(demo()),
    }
}

fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    Policy::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn run_agent(a: AgentRunArgs) -> anyhow::Result<ExitCode> {
    let policy = load_policy(&a.policy)?;
    let metrics = Arc::new(Metrics::new());
    let (stop_node, stop_rx) = tokio::sync::watch::channel(false);
    let authority: Arc<dyn SvidAuthority> = if a.insecure_local_ca {
        tracing::warn!("--insecure-local-ca: issuing from an in-memory CA; for development only");
        Arc::new(LocalAuthority::generate(
            &policy.trust_domain,
            policy.svid.x509_ttl,
            policy.svid.jwt_ttl,
        )?)
    } else {
        let url = a
            .server
            .clone()
            .context("--server is required (or --insecure-local-ca for development)")?;
        let bundle_path = a
            .bundle
            .clone()
            .context("--bundle (the trust bundle PEM given out of band) is required")?;
        let bundle_pem = std::fs::read(&bundle_path)
            .with_context(|| format!("reading {}", bundle_path.display()))?;
        let node = match &a.node {
            Some(n) => n.clone(),
            None => std::fs::read_to_string("/etc/hostname")
                .map(|s| s.trim().to_owned())
                .context("--node is required (cannot read /etc/hostname)")?,
        };
        sigil_ca::client::check_node_name(&node).map_err(|e| {
            anyhow::anyhow!(
                "--node: {e}; hint: pass --node <name> (the name the join token was made for)"
            )
        })?;
        let proof = match (&a.join_token_file, &a.k8s_token_file) {
            (Some(f), None) => Some(NodeProof::JoinTokenFile(f.clone())),
            (None, Some(f)) => Some(NodeProof::KubernetesTokenFile(f.clone())),
            (None, None) => None,
            (Some(_), Some(_)) => {
                anyhow::bail!("pass either --join-token-file or --k8s-token-file, not both")
            }
        };
        let server = ServerAuthority::connect(
            ServerSettings {
                url,
                bundle_pem,
                trust_domain: policy.trust_domain.clone(),
                node,
                data_dir: a.data_dir.clone(),
                proof,
            },
            metrics.clone(),
        )
        .await?;
        let (id, exp) = server.node_identity().await;
        tracing::info!(node_id = %id, expires = %ts(exp), "node attested");
        tokio::spawn(server.clone().run_node_renewal(stop_rx));
        server
    };
    let kubelet = a.kubelet_url.clone().map(|url| KubeletConfig {
        url,
        ca_file: a.kubelet_ca.clone(),
        insecure_skip_verify: a.kubelet_insecure_skip_verify,
        token_file: a.kubelet_token_file.clone(),
    });
    let agent = Agent::start(AgentConfig {
        socket_path: a.socket.clone(),
        policy,
        authority,
        kubelet,
        metrics_addr: Some(a.metrics_addr),
        rotation: RotationSettings::default(),
        allow_unauthenticated_verifiers: a.allow_unauthenticated_verifiers,
        proc_root: PathBuf::from("/proc"),
        metrics,
    })
    .await?;
    eprintln!(
        "{} Workload API on unix://{} ({} SVIDs pre-issued); clients: export SPIFFE_ENDPOINT_SOCKET=unix://{}",
        paint("ready", Color::Green),
        a.socket.display(),
        agent.initial.issued,
        a.socket.display()
    );
    // SIGHUP re-reads the policy: new workloads are issued, removed ones stop being served.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = hup.recv() => match load_policy(&a.policy) {
                Ok(p) => {
                    agent.cache.set_ids(p.workloads.iter().map(|w| w.spiffe_id.clone()));
                    agent.api.set_workloads(p.workloads);
                    tracing::info!(policy = %a.policy.display(), "policy reloaded");
                }
                Err(e) => tracing::error!(error = %e, "policy reload failed; keeping the previous one"),
            },
        }
    }
    tracing::info!("shutting down");
    let _ = stop_node.send(true);
    agent.shutdown().await;
    Ok(ExitCode::from(EXIT_OK))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn ts(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Splits concatenated DER certificates.
fn split_der(mut der: &[u8]) -> anyhow::Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| anyhow::anyhow!("bad certificate: {e}"))?;
        let used = der.len() - rest.len();
        out.push(rustls_pki_types::CertificateDer::from(
            der.get(..used).unwrap_or_default().to_vec(),
        ));
        der = rest;
    }
    Ok(out)
}

async fn fetch(a: AgentFetchArgs) -> anyhow::Result<ExitCode> {
    let path = sigil_agent::client::socket_path(&a.socket)?;
    let mut c = sigil_agent::client::connect(&path, true).await?;
    let mut stream = match c.fetch_x509svid(X509svidRequest {}).await {
        Ok(s) => s.into_inner(),
        Err(e) => {
            eprintln!(
                "{}: {} ({:?})",
                paint("no identity", Color::Red),
                e.message(),
                e.code()
            );
            return Ok(ExitCode::from(EXIT_FINDINGS));
        }
    };
    let msg = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .context("the agent sent no X.509-SVID within 30 s")??
        .context("the agent closed the stream")?;
    let mut out = Vec::new();
    for s in &msg.svids {
        let chain = split_der(&s.x509_svid)?;
        let roots = split_der(&s.bundle)?;
        let id: sigil_identity::SpiffeId = s.spiffe_id.parse()?;
        let bundle = sigil_identity::X509Bundle::new(id.trust_domain(), roots)?;
        let v = sigil_identity::verify_x509_svid(
            &chain,
            &bundle,
            sigil_identity::SvidUsage::Client,
            rustls_pki_types::UnixTime::now(),
        )?;
        out.push(serde_json::json!({
            "spiffeId": s.spiffe_id,
            "expiresAt": ts(v.not_after()),
            "chainLength": chain.len(),
            "verified": true,
        }));
    }
    let mut jwt = None;
    if let Some(aud) = &a.jwt_audience {
        let r = c
            .fetch_jwtsvid(JwtsvidRequest {
                audience: vec![aud.clone()],
                spiffe_id: String::new(),
            })
            .await?
            .into_inner();
        let token = r.svids.first().context("no JWT-SVID")?.svid.clone();
        let v = c
            .validate_jwtsvid(ValidateJwtsvidRequest {
                audience: aud.clone(),
                svid: token,
            })
            .await?
            .into_inner();
        jwt = Some(
            serde_json::json!({"spiffeId": v.spiffe_id, "audience": aud, "validatedByAgent": true}),
        );
    }
    match a.output {
        FetchOutput::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"x509Svids": out, "jwtSvid": jwt})
                )?
            );
        }
        FetchOutput::Table => {
            for o in &out {
                println!(
                    "X.509-SVID  {}  expires {}  chain {}  verified against the bundle",
                    o["spiffeId"].as_str().unwrap_or_default(),
                    o["expiresAt"].as_str().unwrap_or_default(),
                    o["chainLength"]
                );
            }
            if let Some(j) = &jwt {
                println!(
                    "JWT-SVID    {}  audience {}  validated by the agent",
                    j["spiffeId"].as_str().unwrap_or_default(),
                    j["audience"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// `sigil agent demo`: an agent with an in-memory CA on a temporary socket; this process (by
/// uid) fetches its identity through a child `sigil agent fetch`, and, when run as root, a
/// process under uid 65534 is refused.
async fn demo() -> anyhow::Result<ExitCode> {
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m))?;
    let policy_text = format!(
        "apiVersion: sigil.dev/v1alpha1\nkind: Platform\ntrustDomain: ai.example.org\nworkloads:\n  - name: demo-workload\n    unix: {{ uid: {uid} }}\n  - name: model-sync\n    spiffeId: spiffe://ai.example.org/node/model-sync\n    unix: {{ uid: 2000, path: /usr/local/bin/model-sync }}\n"
    );
    let policy =
        Policy::parse(&policy_text, Path::new("demo.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let socket = dir.path().join("agent.sock");
    let authority = Arc::new(LocalAuthority::generate(
        &policy.trust_domain,
        Duration::from_secs(3600),
        Duration::from_secs(300),
    )?);
    let agent = Agent::start(AgentConfig {
        socket_path: socket.clone(),
        policy,
        authority,
        kubelet: None,
        metrics_addr: Some("127.0.0.1:0".parse()?),
        rotation: RotationSettings::default(),
        allow_unauthenticated_verifiers: false,
        proc_root: PathBuf::from("/proc"),
        metrics: Arc::new(Metrics::new()),
    })
    .await?;
    eprintln!(
        "{} agent on unix://{} with {} pre-issued SVIDs (workload `demo-workload` = uid {uid})",
        paint("1.", Color::Green),
        socket.display(),
        agent.initial.issued
    );
    let exe = std::env::current_exe()?;
    let endpoint = format!("unix://{}", socket.display());
    eprintln!(
        "{} a workload (uid {uid}) asks the agent for its identity:",
        paint("2.", Color::Green)
    );
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["agent", "fetch", "--jwt-audience", "s3.ai.example.org"])
        .env("SPIFFE_ENDPOINT_SOCKET", &endpoint);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let mut ok = out.status.success();
    if uid == 0 {
        eprintln!(
            "{} an unregistered process (uid 65534) asks too:",
            paint("3.", Color::Green)
        );
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["agent", "fetch"])
            .env("SPIFFE_ENDPOINT_SOCKET", &endpoint);
        std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
        std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
        let denied = tokio::task::spawn_blocking(move || cmd.output()).await??;
        eprint!("{}", String::from_utf8_lossy(&denied.stderr));
        ok &= denied.status.code() == Some(i32::from(EXIT_FINDINGS));
    }
    agent.cache.force_rotation();
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!(
        "{} rotations so far: {} (pre-issue + one forced rotation)",
        paint("4.", Color::Green),
        agent.metrics.rotations_count(true)
    );
    agent.shutdown().await;
    Ok(ExitCode::from(if ok { EXIT_OK } else { EXIT_ERROR }))
}
