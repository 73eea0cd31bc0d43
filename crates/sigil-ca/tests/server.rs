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
    start_with(dir, cluster, "127.0.0.1:0", None).await.unwrap()
}

async fn start_with(
    dir: &Path,
    cluster: &FakeCluster,
    listen: &str,
    issuer_url: Option<&str>,
) -> Result<Running, sigil_ca::server::ServerError> {
    std::fs::write(
        dir.join("jwks.json"),
        serde_json::to_vec(&cluster.jwks()).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("sigil.yaml"), POLICY).unwrap();
    let policy = Policy::load(&dir.join("sigil.yaml")).unwrap();
    let bound = Bound::bind(ServerConfig {
        data_dir: dir.join("data"),
        listen: listen.parse().unwrap(),
        policy,
        extra_sans: vec![],
        issuer_url: issuer_url.map(str::to_owned),
        init_if_missing: true,
        require_jwks: true,
    })
    .await?;
    let url = format!("https://{}", bound.local_addr().unwrap());
    let bundle = bound.bundle().unwrap();
    let state = bound.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async {
        let _ = rx.await;
    }));
    Ok(Running {
        url,
        bundle,
        state,
        stop: Some(tx),
        task: Some(task),
    })
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
    let r = raw_client(srv)
        .post(format!("{}{path}", srv.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A plain HTTPS client trusting the server's bundle (no client certificate).
fn raw_client(srv: &Running) -> reqwest::Client {
    raw_client_builder(srv).build().unwrap()
}

fn raw_client_builder(srv: &Running) -> reqwest::ClientBuilder {
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
    reqwest::Client::builder().tls_backend_preconfigured(cfg)
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

fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

async fn join_token(c: &Client, admin: &str, node: &str) -> Proof {
    let t = c.create_join_token(admin, node, Some("10m")).await.unwrap();
    Proof::JoinToken(Zeroizing::new(t["token"].as_str().unwrap().to_owned()))
}

/// Issue 12 item 1: once revoked, a node gets nothing on any path: not by a Kubernetes
/// agent token (which used to rewrite the record as not revoked), a join token made before the
/// revocation, re-attestation with its registered key, or renewal over mTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_final_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let admin = admin_token(dir.path());
    let c = srv.client();
    let agent_token = || k8s(cluster.token("sigil-system", "sigil-agent", "sigil"));

    // node-1 attests with its DaemonSet token (FakeCluster binds tokens to node-1).
    let k8s_key = KeyAndCsr::generate().unwrap();
    let k8s_svid = c
        .attest_x509(&agent_token(), &k8s_key.csr_pem)
        .await
        .unwrap();
    // gpu-1 joins with a join token; a second token for gpu-1 is made before the revocation.
    let gpu_key = KeyAndCsr::generate().unwrap();
    let gpu_svid = c
        .attest_x509(&join_token(&c, &admin, "gpu-1").await, &gpu_key.csr_pem)
        .await
        .unwrap();
    let spare = join_token(&c, &admin, "gpu-1").await;

    for node in ["node-1", "gpu-1"] {
        let v = c.revoke_node(&admin, node).await.unwrap();
        assert_eq!(v["revoked"], true);
    }

    // Kubernetes agent token: refused, and the record stays revoked.
    let (s, code, reason) = refused(
        c.attest_x509(&agent_token(), &KeyAndCsr::generate().unwrap().csr_pem)
            .await,
    );
    assert_eq!((s, code.as_str()), (403, "node_revoked"), "{reason}");
    assert!(
        reason.contains("final") && reason.contains("hint:"),
        "{reason}"
    );
    assert!(srv.state.store.node("node-1").unwrap().unwrap().revoked);
    // Join token made before the revocation: refused.
    let (s, code, _) = refused(
        c.attest_x509(&spare, &KeyAndCsr::generate().unwrap().csr_pem)
            .await,
    );
    assert_eq!((s, code.as_str()), (403, "node_revoked"));
    // No new join token for a revoked node.
    let (s, code, _) = refused(c.create_join_token(&admin, "gpu-1", None).await);
    assert_eq!((s, code.as_str()), (409, "node_revoked"));
    // Re-attestation with the registered key: refused.
    for (node, key) in [("node-1", &k8s_key), ("gpu-1", &gpu_key)] {
        let same = KeyAndCsr::from_key_pem(&key.key_pem).unwrap();
        let (s, code, _) = refused(c.reattest(node, &same.csr_pem).await);
        assert_eq!((s, code.as_str()), (403, "node_revoked"), "{node}");
    }
    // Renewal and workload issuance over mTLS with the still-unexpired agent SVIDs: refused.
    for (svid, key) in [(&k8s_svid, &k8s_key), (&gpu_svid, &gpu_key)] {
        let agent = Client::new(&srv.url, &srv.bundle, Some((&svid.svid, &key.key_pem))).unwrap();
        let (s, code, _) = refused(agent.renew(&KeyAndCsr::generate().unwrap().csr_pem).await);
        assert_eq!((s, code.as_str()), (403, "node_revoked"));
        let (s, code, _) = refused(
            agent
                .agent_x509(
                    "spiffe://test.example.org/ns/rag/sa/rag-api",
                    &KeyAndCsr::generate().unwrap().csr_pem,
                )
                .await,
        );
        assert_eq!((s, code.as_str()), (403, "node_revoked"));
    }
    for node in ["node-1", "gpu-1"] {
        assert!(
            srv.state.store.node(node).unwrap().unwrap().revoked,
            "{node}"
        );
    }
    srv.stop().await;
}

/// The store itself never un-revokes: Kubernetes join, renewal and join tokens all refuse a
/// revoked node, and a refused join token is not spent.
#[test]
fn store_keeps_revoked_nodes_revoked() {
    use sigil_ca::store::{JoinOutcome, JoinTokenRecord, NodeKeyOutcome, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = SystemTime::now();
    assert_eq!(
        store.set_node_key("n1", "k1", now, false).unwrap(),
        NodeKeyOutcome::Unknown
    );
    assert_eq!(
        store.set_node_key("n1", "k1", now, true).unwrap(),
        NodeKeyOutcome::Registered
    );
    assert!(store.revoke_node("n1").unwrap());
    assert!(!store.revoke_node("never-joined").unwrap());
    for join in [true, false] {
        assert_eq!(
            store.set_node_key("n1", "k2", now, join).unwrap(),
            NodeKeyOutcome::Revoked
        );
    }
    let rec = JoinTokenRecord {
        node: "n1".to_owned(),
        expires_at: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600,
        used_at: None,
    };
    store.put_join_token("t1", &rec).unwrap();
    assert_eq!(
        store.consume_join_token("t1", "k3", now).unwrap(),
        JoinOutcome::NodeRevoked {
            node: "n1".to_owned()
        }
    );
    let n = store.node("n1").unwrap().unwrap();
    assert!(n.revoked);
    assert_eq!(n.key_sha256, "k1");
    // A join token for a node in good standing registers its key in the same transaction.
    store
        .put_join_token(
            "t2",
            &JoinTokenRecord {
                node: "n2".to_owned(),
                ..rec
            },
        )
        .unwrap();
    assert_eq!(
        store.consume_join_token("t2", "k4", now).unwrap(),
        JoinOutcome::Joined {
            node: "n2".to_owned()
        }
    );
    assert_eq!(store.node("n2").unwrap().unwrap().key_sha256, "k4");
    assert_eq!(
        store.consume_join_token("t2", "k5", now).unwrap(),
        JoinOutcome::AlreadyUsed
    );
}

/// Issue 12 item 2: a relying party (cloud IAM, an object store) is configured with the issuer
/// URL, fetches `<issuer>/.well-known/openid-configuration`, requires its `issuer` to be exactly
/// that URL, fetches `jwks_uri`, verifies the JWT-SVID's signature with the key its `kid` names,
/// and requires `iss` == the discovery issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_svid_validates_against_oidc_discovery_like_a_relying_party() {
    // The issuer names a host that is not the listen address: its certificate must name it too.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let configured = format!("https://sigil.test:{port}");
    let srv = start_with(
        dir.path(),
        &cluster,
        &format!("127.0.0.1:{port}"),
        Some(&format!("{configured}/")),
    )
    .await
    .unwrap();
    let ans = srv
        .client()
        .attest_jwt(
            &k8s(cluster.token("rag", "rag-api", "sigil")),
            &["s3.example.org".to_owned()],
        )
        .await
        .unwrap();

    // The relying party: resolves the issuer's host, trusts the bundle, knows nothing else.
    let rp = raw_client_builder(&srv)
        .resolve("sigil.test", format!("127.0.0.1:{port}").parse().unwrap())
        .https_only(true)
        .build()
        .unwrap();
    let get = |url: String| {
        let rp = rp.clone();
        async move {
            let r = rp.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            assert!(
                r.headers()[reqwest::header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json"),
                "{url}"
            );
            r.json::<Value>().await.unwrap()
        }
    };
    let discovery = get(format!("{configured}/.well-known/openid-configuration")).await;
    assert_eq!(discovery["issuer"], configured.as_str(), "{discovery}");
    for field in [
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ] {
        assert!(!discovery[field].is_null(), "discovery lacks {field}");
    }
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
    assert!(jwks_uri.starts_with(&configured), "{jwks_uri}");
    let jwks: sigil_identity::JwkSet =
        serde_json::from_value(get(jwks_uri.to_owned()).await).unwrap();

    let verified = sigil_identity::jwt::verify_jws(&ans.token, &jwks).unwrap();
    assert!(
        discovery["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == verified.header.alg.as_str()),
        "{}",
        verified.header.alg
    );
    assert_eq!(verified.claims["iss"], discovery["issuer"]);
    assert_eq!(verified.claims["sub"], ans.spiffe_id.as_str());
    assert_eq!(verified.claims["aud"], "s3.example.org");
    sigil_identity::jwt::check_times(&verified.claims, SystemTime::now()).unwrap();
    // A token signed by another key is not accepted by the same relying party.
    let other = FakeCluster::new(ISSUER).unwrap();
    let forged = other.sign(&json!({"iss": configured, "sub": ans.spiffe_id}));
    assert!(sigil_identity::jwt::verify_jws(&forged, &jwks).is_err());

    // JWT-SVIDs issued through the agent carry the same issuer.
    let admin = admin_token(dir.path());
    let c = srv.client();
    let key = KeyAndCsr::generate().unwrap();
    let node = c
        .attest_x509(&join_token(&c, &admin, "gpu-1").await, &key.csr_pem)
        .await
        .unwrap();
    let agent = Client::new(&srv.url, &srv.bundle, Some((&node.svid, &key.key_pem))).unwrap();
    let via_agent = agent
        .agent_jwt(
            "spiffe://test.example.org/ns/rag/sa/rag-api",
            &["db".to_owned()],
        )
        .await
        .unwrap();
    let v = sigil_identity::jwt::verify_jws(&via_agent.token, &jwks).unwrap();
    assert_eq!(v.claims["iss"], configured.as_str());
    srv.stop().await;
}

/// Without --issuer-url the issuer is the listen address, the same in discovery and tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_issuer_is_the_listen_address_in_tokens_and_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let c = srv.client();
    let discovery: Value = serde_json::from_str(
        &c.get_text("/.well-known/openid-configuration")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(discovery["issuer"], srv.url.as_str());
    let ans = c
        .attest_jwt(
            &k8s(cluster.token("rag", "rag-api", "sigil")),
            &["s3".to_owned()],
        )
        .await
        .unwrap();
    let (_, claims) = sigil_identity::jwt::decode_unverified(&ans.token).unwrap();
    assert_eq!(claims["iss"], discovery["issuer"]);
    srv.stop().await;
}

/// An unspecified listen address has no issuer to derive: refused before anything is bound.
#[test_case("0.0.0.0:0", None, "--issuer-url"; "any address without issuer")]
#[test_case("127.0.0.1:0", Some("https://0.0.0.0:8443"), "unspecified address"; "issuer on any address")]
#[test_case("127.0.0.1:0", Some("http://sigil.example.org"), "not https"; "plaintext issuer")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_issuer_is_refused_at_start(listen: &str, issuer: Option<&str>, want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let e = match start_with(dir.path(), &cluster, listen, issuer).await {
        Ok(srv) => {
            srv.stop().await;
            panic!("started with issuer {issuer:?} on {listen}");
        }
        Err(e) => e.to_string(),
    };
    assert!(e.contains(want) && e.contains("hint:"), "{e}");
    assert!(
        !dir.path().join("data/sigil.redb").exists(),
        "nothing is created before the issuer is checked"
    );
}

/// Issue 12 item 5: the CSR is checked before the join token is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csr_does_not_burn_the_join_token() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let admin = admin_token(dir.path());
    let c = srv.client();
    let token = join_token(&c, &admin, "gpu-1").await;
    let key = KeyAndCsr::generate().unwrap();
    let (s, code, _) = refused(c.attest_x509(&token, "not a csr").await);
    assert_eq!((s, code.as_str()), (400, "bad_csr"));
    let tampered = key.csr_pem.replacen("MI", "MJ", 1);
    let (s, code, _) = refused(c.attest_x509(&token, &tampered).await);
    assert_eq!((s, code.as_str()), (400, "bad_csr"));
    let ok = c.attest_x509(&token, &key.csr_pem).await.unwrap();
    assert_eq!(ok.spiffe_id, "spiffe://test.example.org/sigil/agent/gpu-1");
    srv.stop().await;
}

#[test_case("99999999999h", "maximum 7d"; "eleven million years")]
#[test_case("8d", "maximum 7d"; "eight days")]
#[test_case("604801s", "maximum 7d"; "a second over")]
#[test_case("0s", "at least 1s"; "zero")]
#[test_case("99999999999999999999h", "whole number"; "does not fit")]
#[test_case("1w", "unit"; "unknown unit")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_ttl_is_bounded(ttl: &str, want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let admin = admin_token(dir.path());
    let c = srv.client();
    let (s, code, reason) = refused(c.create_join_token(&admin, "gpu-1", Some(ttl)).await);
    assert_eq!((s, code.as_str()), (400, "bad_ttl"), "{reason}");
    assert!(reason.contains(want), "{reason}");
    // The bound itself is allowed, with a real expiry.
    let t = c
        .create_join_token(&admin, "gpu-1", Some("7d"))
        .await
        .unwrap();
    let exp = t["expiresAt"].as_str().unwrap();
    assert!(exp.len() >= 20 && exp.ends_with('Z'), "{exp}");
    srv.stop().await;
}

/// Node names follow one rule on every path: admin tokens, Kubernetes agent tokens,
/// re-attestation, revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_names_are_validated_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let admin = admin_token(dir.path());
    let c = srv.client();
    let long = "a".repeat(300);
    for bad in ["a/b", "GPU-1", long.as_str(), "", "-x"] {
        let (s, code, reason) = refused(c.create_join_token(&admin, bad, None).await);
        assert_eq!((s, code.as_str()), (400, "bad_node"), "{bad:?}: {reason}");
        assert!(reason.contains("DNS-1123"), "{reason}");

        // An agent service-account token whose node claim is not a valid node name.
        let mut claims = cluster.claims(
            "sigil-system",
            "sigil-agent",
            "sigil",
            Duration::from_secs(600),
        );
        claims["kubernetes.io"]["node"]["name"] = json!(bad);
        let (s, code, reason) = refused(
            c.attest_x509(
                &k8s(cluster.sign(&claims)),
                &KeyAndCsr::generate().unwrap().csr_pem,
            )
            .await,
        );
        assert_eq!((s, code.as_str()), (400, "bad_node"), "{bad:?}: {reason}");

        let (s, code, _) = refused(
            c.reattest(bad, &KeyAndCsr::generate().unwrap().csr_pem)
                .await,
        );
        assert_eq!((s, code.as_str()), (400, "bad_node"), "{bad:?}");
    }
    for bad in ["GPU-1", "x_y"] {
        let (s, code, _) = refused(c.revoke_node(&admin, bad).await);
        assert_eq!((s, code.as_str()), (400, "bad_node"), "{bad:?}");
    }
    srv.stop().await;
}

async fn raw_admin(
    srv: &Running,
    bearer: Option<&str>,
    body: &'static str,
) -> (u16, Option<String>, Value) {
    let mut req = raw_client(srv)
        .post(format!("{}/v1/admin/join-tokens", srv.url))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, ct, v)
}

/// The admin endpoint checks the bearer token before it reads the body, answers JSON, and
/// audits every refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_checks_the_token_first_answers_json_and_audits_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let admin = admin_token(dir.path());
    // A malformed body without (or with a wrong) token: 401, not a parse error.
    for bearer in [None, Some("wrong")] {
        for body in [
            "{not json",
            r#"{"node": 7}"#,
            r#"{"node": "gpu-1", "extra": 1}"#,
        ] {
            let (s, ct, v) = raw_admin(&srv, bearer, body).await;
            assert_eq!(s, 401, "{bearer:?} {body}: {v}");
            assert_eq!(v["error"], "not_admin", "{v}");
            assert!(ct.unwrap().starts_with("application/json"));
        }
    }
    // With the token, a malformed body is a JSON 400.
    let (s, ct, v) = raw_admin(&srv, Some(&admin), "{not json").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_request")), "{v}");
    assert!(ct.unwrap().starts_with("application/json"));
    let (s, _, v) = raw_admin(&srv, Some(&admin), r#"{"node": "gpu-1", "extra": 1}"#).await;
    assert_eq!(s, 400, "{v}");
    let (s, _, v) = raw_admin(&srv, Some(&admin), r#"{"node": "gpu-1"}"#).await;
    assert_eq!(s, 200, "{v}");
    // Revocation needs the token too.
    let r = raw_client(&srv)
        .post(format!("{}/v1/admin/nodes/gpu-1/revoke", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let metrics = srv.client().get_text("/metrics").await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("sigil_server_requests_refused_total{reason=\"not_admin\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(" 7"), "{line}");
    srv.stop().await;
    let log = std::fs::read_to_string(dir.path().join("data/audit.jsonl")).unwrap();
    let not_admin = log
        .lines()
        .filter(|l| l.contains("\"refused\"") && l.contains("not_admin"))
        .count();
    assert_eq!(not_admin, 7, "{log}");
    assert!(log.lines().any(|l| l.contains("bad_request")), "{log}");
    sigil_ca::audit::verify(&dir.path().join("data/audit.jsonl")).unwrap();
}

/// 404 and 405 answer the same JSON error body as every other refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster).await;
    let http = raw_client(&srv);
    let cases = [
        (reqwest::Method::GET, "/nope", 404, "not_found"),
        (reqwest::Method::POST, "/v1/attest", 404, "not_found"),
        (
            reqwest::Method::GET,
            "/v1/attest/x509",
            405,
            "method_not_allowed",
        ),
        (reqwest::Method::DELETE, "/keys", 405, "method_not_allowed"),
        (
            reqwest::Method::GET,
            "/v1/admin/join-tokens",
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, status, code) in cases {
        let r = http
            .request(method.clone(), format!("{}{path}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        if status == 405 {
            assert!(
                r.headers().contains_key(reqwest::header::ALLOW),
                "{method} {path}: no Allow header"
            );
        }
        assert!(
            r.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{method} {path}"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], code, "{method} {path}: {v}");
        assert!(v["reason"].as_str().unwrap().contains(path), "{v}");
    }
    srv.stop().await;
}
