//! `sigil agent --join-token-file` reads what `sigil server join-token` writes (its JSON), or a
//! file holding only the token; anything else is a clear error that names the file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::Arc;

use sigil_agent::server::{NodeError, NodeProof, ServerAuthority, ServerSettings};

const POLICY: &str = r#"
apiVersion: sigil.dev/v1alpha1
kind: Platform
trustDomain: example.org
workloads:
  - name: tester
    unix: { uid: 0 }
"#;

async fn connect(
    url: &str,
    bundle_pem: &str,
    node: &str,
    data_dir: &Path,
    token_file: &Path,
) -> Result<Arc<ServerAuthority>, NodeError> {
    ServerAuthority::connect(
        ServerSettings {
            url: url.to_owned(),
            bundle_pem: bundle_pem.as_bytes().to_vec(),
            trust_domain: sigil_identity::TrustDomain::new("example.org").unwrap(),
            node: node.to_owned(),
            data_dir: data_dir.to_owned(),
            proof: Some(NodeProof::JoinTokenFile(token_file.to_owned())),
        },
        Arc::new(sigil_agent::metrics::Metrics::new()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reads_the_json_that_server_join_token_prints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let policy = sigil_policy::Policy::parse(POLICY, Path::new("server.yaml")).unwrap();
    let bound = sigil_ca::server::Bound::bind(sigil_ca::server::ServerConfig {
        data_dir: d.join("server"),
        listen: "127.0.0.1:0".parse().unwrap(),
        policy: policy.clone(),
        extra_sans: vec![],
        issuer_url: None,
        init_if_missing: true,
        require_jwks: false,
    })
    .await
    .unwrap();
    let url = format!("https://{}", bound.local_addr().unwrap());
    let admin_token = bound.state().admin_token.to_string();
    let bundle_pem = bound.bundle().unwrap().to_pem();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    let bundle =
        sigil_identity::X509Bundle::from_pem(policy.trust_domain.clone(), bundle_pem.as_bytes())
            .unwrap();
    let admin = sigil_ca::client::Client::new(&url, &bundle, None).unwrap();
    // Exactly what `sigil server join-token` prints (crates/sigil/src/commands/server.rs).
    let json_of = |v: &serde_json::Value| format!("{}\n", serde_json::to_string_pretty(v).unwrap());

    // The JSON, redirected to a file as the README shows.
    let tok = admin
        .create_join_token(&admin_token, "node-1", Some("10m"))
        .await
        .unwrap();
    let f1 = d.join("node-1.token");
    std::fs::write(&f1, json_of(&tok)).unwrap();
    let a = connect(&url, &bundle_pem, "node-1", &d.join("agent-1"), &f1)
        .await
        .unwrap();
    assert_eq!(
        a.node_identity().await.0,
        "spiffe://example.org/sigil/agent/node-1"
    );

    // A bare token with a trailing newline (`jq -r .token > file`).
    let tok = admin
        .create_join_token(&admin_token, "node-2", Some("10m"))
        .await
        .unwrap();
    let f2 = d.join("node-2.token");
    std::fs::write(&f2, format!("{}\n", tok["token"].as_str().unwrap())).unwrap();
    let a = connect(&url, &bundle_pem, "node-2", &d.join("agent-2"), &f2)
        .await
        .unwrap();
    assert_eq!(
        a.node_identity().await.0,
        "spiffe://example.org/sigil/agent/node-2"
    );

    // A token made for another node is refused before it is sent (and so not spent).
    let tok = admin
        .create_join_token(&admin_token, "node-3", Some("10m"))
        .await
        .unwrap();
    let f3 = d.join("node-3.token");
    std::fs::write(&f3, json_of(&tok)).unwrap();
    let e = connect(&url, &bundle_pem, "node-4", &d.join("agent-4"), &f3)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("node-3.token") && e.contains("\"node-3\"") && e.contains("--node node-3"),
        "{e}"
    );
    connect(&url, &bundle_pem, "node-3", &d.join("agent-3"), &f3)
        .await
        .unwrap();

    // Not a token: an error naming the file, without its contents.
    let f5 = d.join("wrong.pem");
    std::fs::write(&f5, &bundle_pem).unwrap();
    let e = connect(&url, &bundle_pem, "node-5", &d.join("agent-5"), &f5)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("wrong.pem") && e.contains("sigil server join-token") && !e.contains("MII"),
        "{e}"
    );

    let _ = stop.send(());
    task.await.unwrap();
}
