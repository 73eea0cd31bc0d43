//! The control plane over real HTTPS on 127.0.0.1: attestation, refusals, agent endpoints,
//! bundles and discovery, restart, and `openssl verify` of issued SVIDs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::UnixTime;
use serde_json::{Value, json};
use sigil_ca::client::{Client, ClientError, KeyAndCsr, Proof};
use sigil_ca::fake_cluster::FakeCluster;
use sigil_ca::server::{AppState, Bound, ServerConfig};
use sigil_identity::{SvidUsage, X509Bundle, certs_from_pem, verify_x509_svid};
use sigil_policy::Policy;
use test_case::test_case;
use zeroize::Zeroizing;

const ISSUER: &str = "https://kubernetes.test";

const POLICY: &str = r#"
apiVersion: sigil.dev/v1alpha1
kind: Platform
trustDomain: test.example.org
svid: { x509Ttl: 1h, jwtTtl: 5m }
workloads:
  - name: rag-api
    kubernetes: { namespace: rag, serviceAccount: rag-api }
  - name: vector-db
    kubernetes: { namespace: vectordb, serviceAccount: qdrant }
  - name: twin-a
    kubernetes: { namespace: shared, serviceAccount: app, podLabels: { app: a } }
  - name: twin-b
    spiffeId: spiffe://test.example.org/ns/shared/sa/app/b
    kubernetes: { namespace: shared, serviceAccount: app, podLabels: { app: b } }
attestation:
  agentServiceAccounts:
    - { namespace: sigil-system, serviceAccount: sigil-agent }
  kubernetes:
    - cluster: test
      issuer: https://kubernetes.test
      audiences: [sigil]
      jwksFile: jwks.json
"#;

struct Running {
    url: String,
    bundle: Arc<X509Bundle>,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }

    fn client(&self) -> Client {
        Client::new(&self.url, &self.bundle, None).unwrap()
    }
}

async fn start(dir: &Path, cluster: &FakeCluster) -> Running {
    std::fs::write(
        dir.join("jwks.json"),
        serde_json::to_vec(&cluster.jwks()).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("sigil.yaml"), POLICY).unwrap();
    let policy = Policy::load(&dir.join("sigil.yaml")).unwrap();
    let bound = Bound::bind(ServerConfig {
        data_dir: dir.join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        policy,
        extra_sans: vec![],
        issuer_url: None,
        init_if_missing: true,
        require_jwks: true,
    })
    .await
    .unwrap();
    let url = format!("https://{}", bound.local_addr().unwrap());
    let bundle = bound.bundle().unwrap();
    let state = bound.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async {
        let _ = rx.await;
    }));
    Running {
        url,
        bundle,
        state,
        stop: Some(tx),
        task: Some(task),
    }
}

fn k8s(token: String) -> Proof {
    Proof::KubernetesToken(Zeroizing::new(token))
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String, String) {
    match r {
        Err(ClientError::Refused {
            status,
            code,
            reason,
        }) => (status, code, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_to_svid_verified_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let key = KeyAndCsr::generate().unwrap();
    let ans = srv
        .client()
        .attest_x509(&k8s(cluster.token("rag", "rag-api", "sigil")), &key.csr_pem)
        .await
        .unwrap();
    assert_eq!(ans.spiffe_id, "spiffe://test.example.org/ns/rag/sa/rag-api");

    // Our own verifier.
    let chain = certs_from_pem(ans.svid.as_bytes()).unwrap();
    assert_eq!(chain.len(), 2);
    let v = verify_x509_svid(&chain, &srv.bundle, SvidUsage::Client, UnixTime::now()).unwrap();
    assert_eq!(v.spiffe_id().as_str(), ans.spiffe_id);
    let ttl = v.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(
        ttl <= Duration::from_secs(3600) && ttl > Duration::from_secs(3500),
        "{ttl:?}"
    );

    // OpenSSL: leaf verifies against the bundle with the intermediate as untrusted.
    let d = dir.path();
    let pems: Vec<String> = sigil_identity::certs_to_pem(&chain)
        .split_inclusive("-----END CERTIFICATE-----\n")
        .map(str::to_owned)
        .collect();
    std::fs::write(d.join("leaf.pem"), &pems[0]).unwrap();
    std::fs::write(d.join("int.pem"), &pems[1]).unwrap();
    std::fs::write(d.join("bundle.pem"), &ans.bundle).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(d.join("bundle.pem"))
        .arg("-untrusted")
        .arg(d.join("int.pem"))
        .arg(d.join("leaf.pem"))
        .output()
        .expect("openssl must be installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(": OK"),
        "openssl verify: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the key usage is as the X509-SVID standard says.
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(d.join("leaf.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("X509v3 Key Usage: critical") && text.contains("Digital Signature"),
        "{text}"
    );
    assert!(
        text.contains("URI:spiffe://test.example.org/ns/rag/sa/rag-api"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    srv.stop().await;
}

#[derive(Debug, Clone, Copy)]
enum Bad {
    WrongIssuer,
    WrongAudience,
    Expired,
    NotYetValid,
    Forged,
    Unregistered,
    NoK8sClaims,
    SubMismatch,
    NoExp,
    Ambiguous,
    Garbage,
}

#[test_case(Bad::WrongIssuer, 401, "not a trusted cluster"; "wrong issuer")]
#[test_case(Bad::WrongAudience, 401, "audience"; "wrong audience")]
#[test_case(Bad::Expired, 401, "expired"; "expired")]
#[test_case(Bad::NotYetValid, 401, "not valid before"; "not yet valid")]
#[test_case(Bad::Forged, 401, "bad signature"; "forged signature")]
#[test_case(Bad::Unregistered, 403, "not a workload in the policy"; "unregistered service account")]
#[test_case(Bad::NoK8sClaims, 401, "kubernetes.io"; "no kubernetes claims")]
#[test_case(Bad::SubMismatch, 401, "does not match"; "sub mismatch")]
#[test_case(Bad::NoExp, 401, "`exp`"; "legacy token without exp")]
#[test_case(Bad::Ambiguous, 403, "pod labels"; "ambiguous service account")]
#[test_case(Bad::Garbage, 401, "malformed"; "garbage token")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_reason(case: Bad, status: u16, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let mut c = cluster.claims("rag", "rag-api", "sigil", Duration::from_secs(600));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signer_other = FakeCluster::new(ISSUER).unwrap();
    let mut signer = &cluster;
    match case {
        Bad::WrongIssuer => c["iss"] = json!("https://evil.example"),
        Bad::WrongAudience => c["aud"] = json!(["vault"]),
        Bad::Expired => c["exp"] = json!(now - 600),
        Bad::NotYetValid => c["nbf"] = json!(now + 600),
        Bad::Forged => signer = &signer_other,
        Bad::Unregistered => {
            c = cluster.claims("default", "default", "sigil", Duration::from_secs(600))
        }
        Bad::NoK8sClaims => {
            c.as_object_mut().unwrap().remove("kubernetes.io");
        }
        Bad::SubMismatch => c["sub"] = json!("system:serviceaccount:rag:other"),
        Bad::NoExp => {
            c.as_object_mut().unwrap().remove("exp");
        }
        Bad::Ambiguous => c = cluster.claims("shared", "app", "sigil", Duration::from_secs(600)),
        Bad::Garbage => {}
    }
    let token = if matches!(case, Bad::Garbage) {
        "not.a.jwt".to_owned()
    } else {
        signer.sign(&c)
    };
    let key = KeyAndCsr::generate().unwrap();
    let (got_status, _code, got_reason) =
        refused(srv.client().attest_x509(&k8s(token), &key.csr_pem).await);
    assert_eq!(got_status, status, "{case:?}: {got_reason}");
    assert!(got_reason.contains(reason), "{case:?}: {got_reason}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let c = srv.client();
    let proof = k8s(cluster.token("rag", "rag-api", "sigil"));
    let (s, code, _) = refused(c.attest_x509(&proof, "not a csr").await);
    assert_eq!((s, code.as_str()), (400, "bad_csr"));
    // A CSR whose signature does not verify.
    let key = KeyAndCsr::generate().unwrap();
    let tampered = key.csr_pem.replacen("MI", "MJ", 1);
    let (s, _, _) = refused(c.attest_x509(&proof, &tampered).await);
    assert_eq!(s, 400);
    // No proof at all.
    let raw = reqwest_like(
        &srv,
        "/v1/attest/x509",
        json!({"csr": key.csr_pem, "proof": {}}),
    )
    .await;
    assert_eq!(raw.0, 401, "{}", raw.1);
    // Unknown fields are refused, not ignored.
    let raw = reqwest_like(
        &srv,
        "/v1/attest/x509",
        json!({"csr": key.csr_pem, "proof": {}, "spiffeId": "spiffe://test.example.org/admin"}),
    )
    .await;
    assert_eq!(raw.0, 400, "{}", raw.1);
    // Oversized body.
    let raw = reqwest_like(
        &srv,
        "/v1/attest/x509",
        json!({"csr": "A".repeat(100_000), "proof": {}}),
    )
    .await;
    assert_eq!(raw.0, 413, "{}", raw.1);
    srv.stop().await;
}

/// Posts raw JSON (bypassing the typed client).
async fn reqwest_like(srv: &Running, path: &str, body: Value) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    for r in srv.bundle.roots() {
        roots.add(r.clone()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .build()
        .unwrap();
    let r = http
        .post(format!("{}{path}", srv.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_agent_flow_and_restart_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let admin = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    let meta = std::fs::metadata(dir.path().join("data/admin.token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let store_meta = std::fs::metadata(dir.path().join("data/sigil.redb")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&store_meta.permissions()) & 0o777,
        0o600
    );

    let c = srv.client();
    // Admin API needs the admin token.
    let (s, _, _) = refused(c.create_join_token("wrong", "gpu-1", None).await);
    assert_eq!(s, 401);
    let t = c
        .create_join_token(admin.trim(), "gpu-1", Some("10m"))
        .await
        .unwrap();
    let token = t["token"].as_str().unwrap().to_owned();
    let node_key = KeyAndCsr::generate().unwrap();
    let join = Proof::JoinToken(Zeroizing::new(token.clone()));
    let agent = c.attest_x509(&join, &node_key.csr_pem).await.unwrap();
    assert_eq!(
        agent.spiffe_id,
        "spiffe://test.example.org/sigil/agent/gpu-1"
    );
    // Single use.
    let (s, _, reason) = refused(
        c.attest_x509(&join, &KeyAndCsr::generate().unwrap().csr_pem)
            .await,
    );
    assert_eq!(s, 401);
    assert!(reason.contains("already used"), "{reason}");
    // Expired token.
    let short = c
        .create_join_token(admin.trim(), "gpu-2", Some("1s"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, _, reason) = refused(
        c.attest_x509(
            &Proof::JoinToken(Zeroizing::new(short["token"].as_str().unwrap().to_owned())),
            &node_key.csr_pem,
        )
        .await,
    );
    assert!(reason.contains("expired"), "{reason}");

    // The agent (mTLS) gets SVIDs for declared workloads only.
    let agent_client = Client::new(
        &srv.url,
        &srv.bundle,
        Some((&agent.svid, &node_key.key_pem)),
    )
    .unwrap();
    let wl = KeyAndCsr::generate().unwrap();
    let got = agent_client
        .agent_x509(
            "spiffe://test.example.org/ns/vectordb/sa/qdrant",
            &wl.csr_pem,
        )
        .await
        .unwrap();
    assert_eq!(
        got.spiffe_id,
        "spiffe://test.example.org/ns/vectordb/sa/qdrant"
    );
    let (s, _, _) = refused(
        agent_client
            .agent_x509("spiffe://test.example.org/ns/x/sa/y", &wl.csr_pem)
            .await,
    );
    assert_eq!(s, 403);
    let jwt = agent_client
        .agent_jwt(
            "spiffe://test.example.org/ns/rag/sa/rag-api",
            &["db".to_owned()],
        )
        .await
        .unwrap();
    assert_eq!(jwt.spiffe_id, "spiffe://test.example.org/ns/rag/sa/rag-api");
    // A workload SVID is not an agent; no certificate is not an agent.
    let wl_client = Client::new(&srv.url, &srv.bundle, Some((&got.svid, &wl.key_pem))).unwrap();
    let (s, code, _) = refused(
        wl_client
            .agent_x509("spiffe://test.example.org/ns/rag/sa/rag-api", &wl.csr_pem)
            .await,
    );
    assert_eq!((s, code.as_str()), (403, "not_an_agent"));
    let (s, _, _) = refused(
        c.agent_x509("spiffe://test.example.org/ns/rag/sa/rag-api", &wl.csr_pem)
            .await,
    );
    assert_eq!(s, 401);
    // Renewal over mTLS re-registers the node key: the new key re-attests, the old one no longer does.
    let renewed_key = KeyAndCsr::generate().unwrap();
    let renewed = agent_client.renew(&renewed_key.csr_pem).await.unwrap();
    assert_eq!(renewed.spiffe_id, agent.spiffe_id);
    let (s, code, _) = refused(
        c.reattest(
            "gpu-1",
            &KeyAndCsr::from_key_pem(&node_key.key_pem).unwrap().csr_pem,
        )
        .await,
    );
    assert_eq!((s, code.as_str()), (401, "wrong_node_key"));
    let node_key = renewed_key;
    // Re-attestation proves the registered node key; another key is refused.
    let same = KeyAndCsr::from_key_pem(&node_key.key_pem).unwrap();
    let re = c.reattest("gpu-1", &same.csr_pem).await.unwrap();
    assert_eq!(re.spiffe_id, agent.spiffe_id);
    let (s, code, _) = refused(
        c.reattest("gpu-1", &KeyAndCsr::generate().unwrap().csr_pem)
            .await,
    );
    assert_eq!((s, code.as_str()), (401, "wrong_node_key"));

    // Discovery and bundle endpoints.
    let bundle_json: Value =
        serde_json::from_str(&c.get_text("/bundle.json").await.unwrap()).unwrap();
    assert!(
        bundle_json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["use"] == "x509-svid")
    );
    assert!(
        bundle_json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["use"] == "jwt-svid")
    );
    assert!(bundle_json["spiffe_sequence"].as_u64().is_some());
    let oidc: Value = serde_json::from_str(
        &c.get_text("/.well-known/openid-configuration")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(oidc["jwks_uri"], format!("{}/keys", srv.url));
    let metrics = c.get_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("sigil_server_svids_issued_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sigil_server_requests_refused_total"),
        "{metrics}"
    );

    let before = srv.bundle.to_pem();
    let issued_before = srv.state.store.issued_count().unwrap();
    assert!(issued_before >= 3);
    srv.stop().await;

    // Restart on the same data directory: same CA, token still used, node still known.
    let srv = start(dir.path(), &cluster).await;
    assert_eq!(srv.bundle.to_pem(), before);
    assert_eq!(srv.state.store.issued_count().unwrap(), issued_before);
    let c = srv.client();
    let (_, _, reason) = refused(
        c.attest_x509(&join, &KeyAndCsr::generate().unwrap().csr_pem)
            .await,
    );
    assert!(reason.contains("already used"), "{reason}");
    let re = c.reattest("gpu-1", &same.csr_pem).await.unwrap();
    assert_eq!(re.spiffe_id, agent.spiffe_id);
    srv.stop().await;
    let v = sigil_ca::audit::verify(&dir.path().join("data/audit.jsonl")).unwrap();
    assert!(v.lines >= 8, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_daemonset_token_attests_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let key = KeyAndCsr::generate().unwrap();
    let ans = srv
        .client()
        .attest_x509(
            &k8s(cluster.token("sigil-system", "sigil-agent", "sigil")),
            &key.csr_pem,
        )
        .await
        .unwrap();
    // FakeCluster binds its tokens to node-1.
    assert_eq!(
        ans.spiffe_id,
        "spiffe://test.example.org/sigil/agent/node-1"
    );
    let agent = Client::new(&srv.url, &srv.bundle, Some((&ans.svid, &key.key_pem))).unwrap();
    let wl = KeyAndCsr::generate().unwrap();
    agent
        .agent_x509("spiffe://test.example.org/ns/rag/sa/rag-api", &wl.csr_pem)
        .await
        .unwrap();
    // Without a node claim the token attests nothing.
    let mut c = cluster.claims(
        "sigil-system",
        "sigil-agent",
        "sigil",
        Duration::from_secs(600),
    );
    c["kubernetes.io"].as_object_mut().unwrap().remove("node");
    let (s, _, reason) = refused(
        srv.client()
            .attest_x509(&k8s(cluster.sign(&c)), &key.csr_pem)
            .await,
    );
    assert_eq!(s, 401);
    assert!(reason.contains("node claim"), "{reason}");
    srv.stop().await;
}

#[test]
fn corrupt_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sigil.redb"), b"this is not a database").unwrap();
    let e = sigil_ca::store::Store::open(dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("sigil.redb"), "{e}");
}

#[test]
fn rotation_keeps_old_svids_valid_until_they_expire() {
    use sigil_ca::CertificateAuthority;
    let td = sigil_identity::TrustDomain::new("test.example.org").unwrap();
    let id = td.k8s_id("a", "b").unwrap();
    let t0 = SystemTime::now();
    let mut ca = CertificateAuthority::generate(&td, t0).unwrap();
    let (old, _) = ca
        .issue_x509_svid_with_new_key(&id, Duration::from_secs(3600), t0)
        .unwrap();
    // Prepare: the next CA is in the bundle before it signs anything.
    ca.prepare_rotation(t0).unwrap();
    assert_eq!(ca.bundle().unwrap().roots().len(), 2);
    assert!(
        ca.activate_rotation(t0, Duration::from_secs(600)).is_err(),
        "activation before propagation must wait"
    );
    let t1 = t0 + Duration::from_secs(700);
    ca.activate_rotation(t1, Duration::from_secs(600)).unwrap();
    let (new, _) = ca
        .issue_x509_svid_with_new_key(&id, Duration::from_secs(3600), t1)
        .unwrap();
    assert_ne!(old.generation, new.generation);
    let b = ca.bundle().unwrap();
    let at = |t: SystemTime| {
        UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
    };
    // Both old and new SVIDs verify after the switch.
    verify_x509_svid(&old.chain, &b, SvidUsage::Client, at(t1)).unwrap();
    verify_x509_svid(&new.chain, &b, SvidUsage::Client, at(t1)).unwrap();
    // The old CA is not pruned while its SVIDs live; it is once they have expired.
    assert!(ca.prune(t1).is_empty());
    let gone = ca.prune(t0 + Duration::from_secs(3700));
    assert_eq!(gone, vec![old.generation]);
    assert_eq!(ca.bundle().unwrap().roots().len(), 1);
}
