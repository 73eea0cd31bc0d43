//! `sigil demo`: Sigil's main job end to end on the embedded example policy, with no external
//! services. It starts the control plane on 127.0.0.1, lets workloads prove themselves with
//! (demo-cluster) Kubernetes tokens and a node with a join token, verifies what they got, shows
//! refusals, asks the policy who may talk to whom, and checks the audit log.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::Args;
use rustls_pki_types::UnixTime;
use sigil_ca::client::{Client, KeyAndCsr, Proof};
use sigil_ca::fake_cluster::{EXAMPLE_ISSUER, FakeCluster};
use sigil_ca::server::{Bound, ServerConfig};
use sigil_identity::{SvidUsage, certs_from_pem, verify_jwt_svid, verify_x509_svid};
use sigil_policy::Policy;
use zeroize::Zeroizing;

use super::{EXAMPLE_POLICY, EXIT_FINDINGS, EXIT_OK};
use crate::logging::{Color, paint};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the data directory here instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

struct Report {
    failures: usize,
}

impl Report {
    fn ok(&self, what: &str, detail: impl std::fmt::Display) {
        println!("  {} {what}: {detail}", paint("ok  ", Color::Green));
    }
    fn refused(&self, what: &str, detail: impl std::fmt::Display) {
        println!("  {} {what}: {detail}", paint("deny", Color::Yellow));
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display) {
        self.failures += 1;
        println!("  {} {what}: {detail}", paint("FAIL", Color::Red));
    }
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(demo(a))
}

async fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let dir = a.data_dir.unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let cluster = FakeCluster::new(EXAMPLE_ISSUER).context("demo cluster key")?;
    std::fs::write(
        dir.join("cluster-jwks.json"),
        serde_json::to_vec_pretty(&cluster.jwks())?,
    )?;
    // The example policy plus one workload for whoever runs the demo, so a process of theirs can
    // get an identity from the node agent (its selector is the caller's uid, checked by the kernel).
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?);
    let policy_text = EXAMPLE_POLICY.replacen(
        "workloads:\n",
        &format!("workloads:\n  - name: demo-shell\n    spiffeId: spiffe://ai.example.org/demo/shell\n    unix: {{ uid: {uid} }}\n"),
        1,
    );
    let policy =
        Policy::parse(&policy_text, &dir.join("sigil.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let td = policy.trust_domain.clone();

    println!(
        "Sigil demo: trust domain {td}, {} workloads, {} flows (embedded example policy)",
        policy.workloads.len(),
        policy.flows.len()
    );
    println!("data directory: {}\n", dir.display());

    let bound = Bound::bind(ServerConfig {
        data_dir: dir.clone(),
        listen: "127.0.0.1:0".parse()?,
        policy: policy.clone(),
        extra_sans: Vec::new(),
        issuer_url: None,
        init_if_missing: true,
        require_jwks: true,
    })
    .await?;
    let addr = bound.local_addr().context("server address")?;
    let bundle = bound.bundle().context("bundle")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    let url = format!("https://{addr}");
    let client = Client::new(&url, &bundle, None)?;
    let mut r = Report { failures: 0 };

    println!("1. Workloads prove themselves with Kubernetes service-account tokens ({url})");
    for (ns, sa) in [
        ("rag", "rag-api"),
        ("vectordb", "qdrant"),
        ("training", "trainer"),
    ] {
        let key = KeyAndCsr::generate()?;
        let proof = Proof::KubernetesToken(Zeroizing::new(cluster.token(ns, sa, "sigil")));
        match client.attest_x509(&proof, &key.csr_pem).await {
            Ok(ans) => {
                let chain = certs_from_pem(ans.svid.as_bytes())?;
                match verify_x509_svid(&chain, &bundle, SvidUsage::Client, UnixTime::now()) {
                    Ok(v) => r.ok(
                        &format!("{ns}/{sa}"),
                        format!(
                            "X.509-SVID {} verified, expires {}",
                            v.spiffe_id(),
                            ans.expires_at
                        ),
                    ),
                    Err(e) => r.fail(&format!("{ns}/{sa}"), e),
                }
            }
            Err(e) => r.fail(&format!("{ns}/{sa}"), e),
        }
    }

    println!("\n2. A JWT-SVID for an object store (verified against the server's JWKS)");
    let proof = Proof::KubernetesToken(Zeroizing::new(
        cluster.token("training", "trainer", "sigil"),
    ));
    match client
        .attest_jwt(&proof, &["s3.ai.example.org".to_owned()])
        .await
    {
        Ok(j) => {
            let mut bundles = std::collections::BTreeMap::new();
            let jwks: sigil_identity::JwkSet =
                serde_json::from_str(&client.get_text("/keys").await?)?;
            bundles.insert(
                td.clone(),
                sigil_identity::JwtBundle {
                    trust_domain: td.clone(),
                    keys: jwks,
                },
            );
            match verify_jwt_svid(&j.token, &bundles, "s3.ai.example.org", SystemTime::now()) {
                Ok(v) => r.ok(
                    "JWT-SVID",
                    format!("sub={} aud={:?}", v.spiffe_id(), v.audience()),
                ),
                Err(e) => r.fail("JWT-SVID", e),
            }
        }
        Err(e) => r.fail("JWT-SVID", e),
    }

    println!("\n3. Callers without a valid proof get nothing");
    let cases: Vec<(&str, String)> = vec![
        (
            "unregistered service account default/default",
            cluster.token("default", "default", "sigil"),
        ),
        (
            "token for another audience",
            cluster.token("rag", "rag-api", "vault"),
        ),
        ("forged token", {
            let other = FakeCluster::new(EXAMPLE_ISSUER).context("key")?;
            other.token("rag", "rag-api", "sigil")
        }),
    ];
    for (what, token) in cases {
        let key = KeyAndCsr::generate()?;
        match client
            .attest_x509(&Proof::KubernetesToken(Zeroizing::new(token)), &key.csr_pem)
            .await
        {
            Ok(ans) => r.fail(what, format!("was issued {}", ans.spiffe_id)),
            Err(e) => r.refused(what, e),
        }
    }

    println!("\n4. A GPU node joins with a single-use join token");
    let state = join_token_for(&dir, &url, &bundle, "gpu-node-1").await?;
    let key = KeyAndCsr::generate()?;
    match client
        .attest_x509(
            &Proof::JoinToken(Zeroizing::new(state.clone())),
            &key.csr_pem,
        )
        .await
    {
        Ok(ans) => r.ok(
            "node gpu-node-1",
            format!("agent identity {}", ans.spiffe_id),
        ),
        Err(e) => r.fail("node gpu-node-1", e),
    }
    let key = KeyAndCsr::generate()?;
    match client
        .attest_x509(&Proof::JoinToken(Zeroizing::new(state)), &key.csr_pem)
        .await
    {
        Ok(_) => r.fail("join token reuse", "was accepted"),
        Err(e) => r.refused("join token reuse", e),
    }

    println!("\n5. Micro-segmentation is policy: who may connect to the vector DB?");
    for (ns, sa, port) in [
        ("rag", "rag-api", 6333),
        ("monitoring", "prometheus", 6333),
        ("notebooks", "jupyter", 6333),
    ] {
        let id = td.k8s_id(ns, sa)?;
        match policy.authorize(&id, "vector-db", port) {
            Ok(f) => r.ok(
                &format!("{id} -> vector-db:{port}"),
                format!("allowed by flow {} -> {}", f.from, f.to),
            ),
            Err(e) => r.refused(&format!("{id} -> vector-db:{port}"), e),
        }
    }

    println!(
        "\n6. A process on a node gets its identity from the local agent (SPIFFE Workload API)"
    );
    if let Err(e) = agent_step(&mut r, &dir, &url, &bundle, &policy).await {
        r.fail("agent", format!("{e:#}"));
    }

    let _ = stop.send(());
    let _ = server.await;
    println!("\n7. Every issuance and refusal is in the hash-chained audit log");
    match sigil_ca::audit::verify(&dir.join("audit.jsonl")) {
        Ok(v) => r.ok("audit log", format!("{} records, chain intact", v.lines)),
        Err(e) => r.fail("audit log", e),
    }

    println!();
    if r.failures == 0 {
        println!("demo finished: every check behaved as the policy says.");
        Ok(ExitCode::from(EXIT_OK))
    } else {
        println!("demo finished with {} unexpected results", r.failures);
        Ok(ExitCode::from(EXIT_FINDINGS))
    }
}

/// Creates a join token through the admin API, as `sigil server join-token` does.
async fn join_token_for(
    dir: &std::path::Path,
    url: &str,
    bundle: &sigil_identity::X509Bundle,
    node: &str,
) -> anyhow::Result<String> {
    let admin = std::fs::read_to_string(dir.join("admin.token"))?;
    let client = Client::new(url, bundle, None)?;
    let v = client
        .create_join_token(admin.trim(), node, Some("10m"))
        .await?;
    v.get("token")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .context("no token in answer")
}

/// Starts `sigil agent` in-process against the demo server (join token), then runs
/// `sigil agent fetch` as a separate process over the Workload API socket.
async fn agent_step(
    r: &mut Report,
    dir: &std::path::Path,
    url: &str,
    bundle: &sigil_identity::X509Bundle,
    policy: &Policy,
) -> anyhow::Result<()> {
    use std::sync::Arc;

    use sigil_agent::cache::RotationSettings;
    use sigil_agent::metrics::Metrics;
    use sigil_agent::server::{NodeProof, ServerAuthority, ServerSettings};
    use sigil_agent::{Agent, AgentConfig};

    let token = join_token_for(dir, url, bundle, "gpu-node-2").await?;
    let token_file = dir.join("gpu-node-2.join-token");
    std::fs::write(&token_file, token)?;
    let metrics = Arc::new(Metrics::new());
    let authority = ServerAuthority::connect(
        ServerSettings {
            url: url.to_owned(),
            bundle_pem: bundle.to_pem().into_bytes(),
            trust_domain: policy.trust_domain.clone(),
            node: "gpu-node-2".to_owned(),
            data_dir: dir.join("agent"),
            proof: Some(NodeProof::JoinTokenFile(token_file)),
        },
        metrics.clone(),
    )
    .await?;
    let (node_id, _) = authority.node_identity().await;
    r.ok("agent attested", node_id);
    let socket = dir.join("agent.sock");
    let agent = Agent::start(AgentConfig {
        socket_path: socket.clone(),
        policy: policy.clone(),
        authority,
        kubelet: None,
        metrics_addr: None,
        rotation: RotationSettings::default(),
        allow_unauthenticated_verifiers: false,
        proc_root: std::path::PathBuf::from("/proc"),
        metrics,
    })
    .await?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["agent", "fetch", "--jwt-audience", "s3.ai.example.org"])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket.display()),
        )
        .env("NO_COLOR", "1");
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.contains("spiffe://ai.example.org/demo/shell") {
        r.ok(
            "workload (this process's uid)",
            "got and verified spiffe://ai.example.org/demo/shell and a JWT-SVID over the Workload API",
        );
    } else {
        r.fail(
            "workload via agent",
            format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        );
    }
    agent.shutdown().await;
    Ok(())
}
