//! Benchmark: X.509-SVID issuance including the durable store write and audit record.
//!
//! Two figures: the library path (`issue_x509_recorded`: CSR already validated, sign, group
//! commit to redb + audit log) with many concurrent callers, and the full HTTPS API path
//! (`POST /v1/attest/x509` with a Kubernetes token, keep-alive connections).
//! Usage: cargo run --release -p sigil-ca --example issue_bench -- [N] [CONCURRENCY]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Instant;

use sigil_ca::ValidCsr;
use sigil_ca::client::{Client, KeyAndCsr, Proof};
use sigil_ca::fake_cluster::FakeCluster;
use sigil_ca::server::{Bound, ServerConfig, issue_x509_recorded};
use sigil_policy::Policy;
use zeroize::Zeroizing;

const POLICY: &str = r#"
apiVersion: sigil.dev/v1alpha1
kind: Platform
trustDomain: bench.example.org
workloads:
  - name: app
    kubernetes: { namespace: bench, serviceAccount: app }
attestation:
  kubernetes:
    - { cluster: bench, issuer: "https://kubernetes.bench", audiences: [sigil], jwksFile: jwks.json }
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let conc: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n, conc));
}

async fn run(n: usize, conc: usize) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new("https://kubernetes.bench").unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_vec(&cluster.jwks()).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("sigil.yaml"), POLICY).unwrap();
    let policy = Policy::load(&dir.path().join("sigil.yaml")).unwrap();
    let id = policy.workloads[0].spiffe_id.clone();
    let bound = Bound::bind(ServerConfig {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        policy,
        extra_sans: vec![],
        issuer_url: None,
        init_if_missing: true,
        require_jwks: true,
    })
    .await
    .unwrap();
    let state = bound.state();
    let url = format!("https://{}", bound.local_addr().unwrap());
    let bundle = bound.bundle().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));

    // Workload keys are made by workloads, not the CA: prepare CSRs outside the timed part.
    let keys: Vec<KeyAndCsr> = (0..conc.max(1))
        .map(|_| KeyAndCsr::generate().unwrap())
        .collect();
    let csrs: Arc<Vec<ValidCsr>> = Arc::new(
        keys.iter()
            .map(|k| ValidCsr::from_pem(&k.csr_pem).unwrap())
            .collect(),
    );

    // 1. Library path.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let state = state.clone();
        let csrs = csrs.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                issue_x509_recorded(&state, &id, &csrs[w % csrs.len()], String::new(), "x509")
                    .await
                    .unwrap();
                i += conc;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let lib_rate = n as f64 / t.elapsed().as_secs_f64();
    assert!(state.store.issued_count().unwrap() as usize >= n);

    // 2. HTTPS API path (token validation, CSR verification, TLS, JSON), fewer requests.
    let m = (n / 4).max(100);
    let clients: Vec<Client> = (0..conc)
        .map(|_| Client::new(&url, &bundle, None).unwrap())
        .collect();
    let token = cluster.token("bench", "app", "sigil");
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (w, c) in clients.into_iter().enumerate() {
        let csr = keys[w % keys.len()].csr_pem.clone();
        let proof = Proof::KubernetesToken(Zeroizing::new(token.clone()));
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < m {
                c.attest_x509(&proof, &csr).await.unwrap();
                i += conc;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let api_rate = m as f64 / t.elapsed().as_secs_f64();
    let _ = stop.send(());
    drop(state);
    let _ = server.await;
    let v = sigil_ca::audit::verify(&dir.path().join("data/audit.jsonl")).unwrap();
    assert!(v.lines as usize >= n + m);
    println!(
        "issued {n} SVIDs (library path) and {m} (HTTPS API), concurrency {conc}; audit log {} records, chain intact",
        v.lines
    );
    println!("RESULT svid_issue_rate {lib_rate:.0} svid/s");
    println!("RESULT svid_issue_api_rate {api_rate:.0} svid/s");
}
