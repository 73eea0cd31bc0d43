//! End-to-end tests of the agent: a real Workload API on a Unix socket in a temp dir, an
//! in-process CA (`sigil_ca`) as issuer, clients from this crate, the Rust `spiffe` crate,
//! py-spiffe, and child processes running under other uids.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sigil_agent::client;
use sigil_agent::proto::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, WitsvidRequest, X509BundlesRequest,
    X509svidRequest,
};
use tonic::Code;

#[tokio::test]
async fn caller_gets_its_x509_svid_with_matching_key_and_bundle() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mut c = client::connect(&h.socket, true).await.unwrap();
    let mut s = c
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let msg = next(&mut s).await;
    assert_eq!(msg.svids.len(), 1);
    let svid = &msg.svids[0];
    assert_eq!(svid.spiffe_id, "spiffe://example.org/workload/tester");
    check_svid(svid, "spiffe://example.org/workload/tester");
    assert!(
        h.agent
            .metrics
            .render()
            .contains("sigil_agent_svids_served_total{type=\"x509\"} 1")
    );
    h.stop().await;
}

#[tokio::test]
async fn request_without_security_header_is_invalid_argument() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mut c = client::connect(&h.socket, false).await.unwrap();
    let e = c.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("security header"), "{e:?}");
    let e = c
        .fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .fetch_x509_bundles(X509BundlesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    h.stop().await;
}

#[tokio::test]
async fn optional_wit_profile_is_unimplemented() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mut c = client::connect(&h.socket, true).await.unwrap();
    let e = c
        .fetch_witsvid(WitsvidRequest {
            spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    h.stop().await;
}

/// Runs this test binary again as a child under `uid`, executing only [`child_fetch_helper`].
fn fetch_as(uid: u32, exe: &Path, socket: &Path) -> std::process::Child {
    std::process::Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "child_fetch_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, socket)
        .uid(uid)
        .gid(uid)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The first ancestor directory of `exe` that other users cannot enter (mode lacks o+x), if any.
fn not_reachable_by_others(exe: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    exe.ancestors()
        .skip(1)
        .find(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        .map(Path::to_path_buf)
}

/// This test binary at a path that children under other uids can execute: itself where its
/// directories are searchable by others, else a copy in a fresh world-searchable directory
/// (a checkout under a 0700 home would otherwise stop the children from starting).
fn exe_for_other_uids() -> (std::path::PathBuf, Option<tempfile::TempDir>) {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().unwrap();
    if not_reachable_by_others(&exe).is_none() {
        return (exe, None);
    }
    let dir = tempfile::Builder::new()
        .prefix("sigil-agent-uids")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("agent-test");
    std::fs::copy(&exe, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        not_reachable_by_others(&copy).is_none(),
        "{} is not searchable by other users",
        dir.path().display()
    );
    (copy, Some(dir))
}

fn child_result(c: std::process::Child) -> String {
    let out = c.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.split_once("CHILD-RESULT ").map(|(_, r)| r.trim()))
        .unwrap_or_else(|| panic!("child printed no result: {text}"))
        .to_owned()
}

/// Not a test on its own: the body of the child process that [`fetch_as`] starts under another
/// uid. It fetches its X.509-SVID and prints what it got.
#[tokio::test]
#[ignore = "helper: run by different_uids_get_different_svids as a child process"]
async fn child_fetch_helper() {
    let socket = std::env::var(CHILD_ENV).expect("run by fetch_as");
    let mut c = client::connect(Path::new(&socket), true).await.unwrap();
    match c.fetch_x509svid(X509svidRequest {}).await {
        Ok(s) => {
            let mut s = s.into_inner();
            let msg = next(&mut s).await;
            let ids: Vec<_> = msg.svids.iter().map(|s| s.spiffe_id.clone()).collect();
            check_svid(&msg.svids[0], &ids[0]);
            println!("CHILD-RESULT id={}", ids.join(","));
        }
        Err(e) => println!("CHILD-RESULT code={:?}", e.code()),
    }
}

#[tokio::test]
async fn different_uids_get_different_svids_and_unregistered_is_denied() {
    // Tests run as root (here and in CI); children drop to uids 1001, 1002 and 1003 through
    // CommandExt::uid/gid (setuid in the child before exec). Skip, saying why, otherwise.
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "different_uids_get_different_svids must run as root under CI"
        );
        eprintln!(
            "SKIP different_uids_get_different_svids: needs root to start processes under other uids"
        );
        return;
    }
    let (exe, _copy) = exe_for_other_uids();
    let h = Harness::start(Duration::from_secs(3600)).await;
    let (a, b, x) = (
        fetch_as(1001, &exe, &h.socket),
        fetch_as(1002, &exe, &h.socket),
        fetch_as(1003, &exe, &h.socket),
    );
    let (ra, rb, rx) =
        tokio::task::spawn_blocking(move || (child_result(a), child_result(b), child_result(x)))
            .await
            .unwrap();
    assert_eq!(ra, "id=spiffe://example.org/workload/alice");
    assert_eq!(rb, "id=spiffe://example.org/workload/bob");
    assert_eq!(rx, "code=PermissionDenied");
    assert_eq!(
        h.agent
            .metrics
            .attestation_failures_count("no_matching_workload"),
        1
    );
    h.stop().await;
}

#[tokio::test]
async fn forced_rotation_pushes_a_fresh_snapshot_on_open_streams() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mut c = client::connect(&h.socket, true).await.unwrap();
    let mut s = c
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut s).await;
    h.agent.cache.force_rotation();
    let second = next(&mut s).await;
    assert_ne!(first.svids[0].x509_svid, second.svids[0].x509_svid);
    assert_ne!(first.svids[0].x509_svid_key, second.svids[0].x509_svid_key);
    check_svid(&second.svids[0], "spiffe://example.org/workload/tester");
    h.stop().await;
}

#[tokio::test]
async fn svids_rotate_at_half_life_without_prompting() {
    // 4 s lifetime: renewed between 1.6 s and 2 s after issuance (half-life minus jitter).
    let h = Harness::start(Duration::from_secs(4)).await;
    let mut c = client::connect(&h.socket, true).await.unwrap();
    let mut s = c
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let started = std::time::Instant::now();
    let first = next(&mut s).await;
    let second = next(&mut s).await;
    let took = started.elapsed();
    assert_ne!(first.svids[0].x509_svid, second.svids[0].x509_svid);
    assert!(took < Duration::from_millis(3500), "rotation took {took:?}");
    assert!(
        h.agent.metrics.rotations_count(true) >= 4,
        "3 pre-issued + at least 1 rotation"
    );
    h.stop().await;
}

#[tokio::test]
async fn cached_svids_are_served_during_an_outage_until_they_expire_then_recover() {
    let h = Harness::start(Duration::from_secs(5)).await;
    h.authority.set_available(false);
    h.agent.cache.force_rotation();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.agent.metrics.rotations_count(false) >= 1);
    // Still served from the cache.
    let mut c = client::connect(&h.socket, true).await.unwrap();
    let mut s = c
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let cached = next(&mut s).await;
    check_svid(&cached.svids[0], "spiffe://example.org/workload/tester");
    // After expiry the agent stops serving it: a new stream gets nothing while the issuer is down.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        h.agent.cache.snapshot().svids.is_empty(),
        "expired SVIDs must be dropped"
    );
    let mut s2 = c
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), s2.message())
            .await
            .is_err(),
        "an expired SVID was served"
    );
    // The issuer comes back: the waiting stream gets a fresh SVID without any restart.
    h.authority.set_available(true);
    let fresh = tokio::time::timeout(Duration::from_secs(40), s2.message())
        .await
        .expect("no SVID after the issuer came back")
        .unwrap()
        .unwrap();
    check_svid(&fresh.svids[0], "spiffe://example.org/workload/tester");
    h.stop().await;
}

#[tokio::test]
async fn jwt_svids_are_issued_validated_and_scoped_to_the_caller() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mut c = client::connect(&h.socket, true).await.unwrap();
    let r = c
        .fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["s3.example.org".into()],
            spiffe_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.svids.len(), 1);
    assert_eq!(r.svids[0].spiffe_id, "spiffe://example.org/workload/tester");
    let token = r.svids[0].svid.clone();
    let v = c
        .validate_jwtsvid(ValidateJwtsvidRequest {
            audience: "s3.example.org".into(),
            svid: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.spiffe_id, "spiffe://example.org/workload/tester");
    let claims = v.claims.unwrap();
    assert!(claims.fields.contains_key("exp") && claims.fields.contains_key("aud"));
    // Wrong audience, empty audience, tampered token, another workload's ID.
    let e = c
        .validate_jwtsvid(ValidateJwtsvidRequest {
            audience: "other".into(),
            svid: token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut tampered = token.clone();
    tampered.push('A');
    let e = c
        .validate_jwtsvid(ValidateJwtsvidRequest {
            audience: "s3.example.org".into(),
            svid: tampered,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .fetch_jwtsvid(JwtsvidRequest {
            audience: vec![],
            spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["s3.example.org".into()],
            spiffe_id: "spiffe://example.org/workload/alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // The JWT bundle stream carries the key that signed it.
    let mut jb = c
        .fetch_jwt_bundles(JwtBundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let b = next(&mut jb).await;
    let jwks = b
        .bundles
        .get("spiffe://example.org")
        .expect("bundle keyed by trust domain ID");
    let set: serde_json::Value = serde_json::from_slice(jwks).unwrap();
    assert!(!set["keys"].as_array().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn x509_bundle_stream_sends_the_trust_domain_roots() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mut c = client::connect(&h.socket, true).await.unwrap();
    let mut s = c
        .fetch_x509_bundles(X509BundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let b = next(&mut s).await;
    let der = b.bundles.get("spiffe://example.org").unwrap();
    let roots = h.agent.cache.snapshot().bundles.clone().unwrap();
    assert_eq!(der, &roots.x509_der);
    h.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_reports_served_rotations_and_failures() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mut c = client::connect(&h.socket, false).await.unwrap();
    let _ = c.fetch_x509svid(X509svidRequest {}).await;
    let addr = h.agent.metrics_addr.unwrap();
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("sigil_agent_rotations_total{result=\"ok\"} 3"),
        "{text}"
    );
    assert!(text.contains("sigil_agent_cached_svids 3"), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn rust_spiffe_x509_source_follows_the_agent_across_a_restart() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let source = spiffe::X509Source::builder()
        .endpoint(format!("unix://{}", h.socket.display()))
        .build()
        .await
        .unwrap();
    let svid1 = source.svid().unwrap();
    assert_eq!(
        svid1.spiffe_id().to_string(),
        "spiffe://example.org/workload/tester"
    );
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    assert!(source.bundle_set().unwrap().get(&td).is_some());
    let mut updates = source.updated();
    // Restart: a new agent process on the same socket pre-issues new SVIDs.
    let h = h.restart().await;
    let leaf1 = svid1.leaf().as_bytes().to_vec();
    tokio::time::timeout(
        Duration::from_secs(60),
        updates.wait_for(|_| {
            source
                .svid()
                .is_ok_and(|s| s.leaf().as_bytes() != leaf1.as_slice())
        }),
    )
    .await
    .expect("X509Source got no SVID from the restarted agent")
    .unwrap();
    let svid2 = source.svid().unwrap();
    assert_eq!(
        svid2.spiffe_id().to_string(),
        "spiffe://example.org/workload/tester"
    );
    source.shutdown().await;
    h.stop().await;
}

#[tokio::test]
async fn py_spiffe_fetches_validates_and_sees_rotation() {
    let Some(python) = python_with_spiffe() else {
        let why = "python package `spiffe` is not importable (pip install -r .ci/requirements.txt, or create .venv)";
        assert!(
            std::env::var_os("CI").is_none(),
            "py_spiffe interop cannot run under CI: {why}"
        );
        eprintln!("SKIP py_spiffe interop: {why}");
        return;
    };
    let h = Harness::start(Duration::from_secs(3600)).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/py_spiffe_client.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(format!("unix://{}", h.socket.display()))
        .arg("spiffe://example.org/workload/tester")
        .arg("s3.example.org")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut steps = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("py-spiffe client hung")
            .unwrap();
        let Some(line) = line else { break };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("bad line {line}"));
        if let Some(e) = v.get("error") {
            panic!("py-spiffe client failed: {e}");
        }
        let step = v["step"].as_str().unwrap().to_owned();
        if step == "stream-ready" {
            h.agent.cache.force_rotation();
        }
        steps.push(step);
    }
    let status = child.wait().await.unwrap();
    assert!(status.success());
    assert_eq!(steps, ["x509", "jwt", "stream-ready", "stream-rotated"]);
    h.stop().await;
}

#[tokio::test]
async fn many_concurrent_streams_all_get_each_rotation() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut c = client::connect(&h.socket, true).await.unwrap();
        let mut s = c
            .fetch_x509svid(X509svidRequest {})
            .await
            .unwrap()
            .into_inner();
        let first = next(&mut s).await;
        streams.push((c, s, first));
    }
    h.agent.cache.force_rotation();
    for (_, s, first) in &mut streams {
        let second = next(s).await;
        assert_ne!(first.svids[0].x509_svid, second.svids[0].x509_svid);
    }
    h.stop().await;
}

struct TestServer {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    admin: String,
    bundle_pem: String,
}

/// Starts `sigil server` in process on 127.0.0.1 with `policy`, keeping its state in `data_dir`.
async fn start_server(
    policy: &sigil_policy::Policy,
    data_dir: &Path,
    listen: std::net::SocketAddr,
) -> TestServer {
    let bound = sigil_ca::server::Bound::bind(sigil_ca::server::ServerConfig {
        data_dir: data_dir.to_owned(),
        listen,
        policy: policy.clone(),
        extra_sans: vec![],
        issuer_url: None,
        init_if_missing: true,
        require_jwks: false,
    })
    .await
    .unwrap();
    let addr = bound.local_addr().unwrap();
    let admin = bound.state().admin_token.to_string();
    let bundle_pem = bound.bundle().unwrap().to_pem();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        stop,
        task,
        admin,
        bundle_pem,
    }
}

const SERVER_POLICY: &str = r#"
apiVersion: sigil.dev/v1alpha1
kind: Platform
trustDomain: example.org
workloads:
  - name: tester
    unix: { uid: 0 }
"#;

#[tokio::test]
async fn agent_joins_the_real_server_serves_workloads_and_recovers_after_its_own_svid_expired() {
    use sigil_agent::server::{NodeProof, ServerAuthority, ServerSettings};
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut policy = sigil_policy::Policy::parse(SERVER_POLICY, Path::new("server.yaml")).unwrap();
    // Shorter than the policy file allows (1m), so the outage can outlive the agent's SVID quickly.
    policy.svid.x509_ttl = Duration::from_secs(6);
    let server_dir = dir.path().join("server");
    let srv = start_server(&policy, &server_dir, "127.0.0.1:0".parse().unwrap()).await;
    let url = format!("https://{}", srv.addr);
    // An operator creates a join token and hands it to the node.
    let bundle = sigil_identity::X509Bundle::from_pem(
        policy.trust_domain.clone(),
        srv.bundle_pem.as_bytes(),
    )
    .unwrap();
    let admin = sigil_ca::client::Client::new(&url, &bundle, None).unwrap();
    let tok = admin
        .create_join_token(&srv.admin, "node-1", Some("10m"))
        .await
        .unwrap();
    let token_file = dir.path().join("join-token");
    std::fs::write(&token_file, tok["token"].as_str().unwrap()).unwrap();

    let metrics = Arc::new(sigil_agent::metrics::Metrics::new());
    let authority = ServerAuthority::connect(
        ServerSettings {
            url: url.clone(),
            bundle_pem: srv.bundle_pem.clone().into_bytes(),
            trust_domain: policy.trust_domain.clone(),
            node: "node-1".into(),
            data_dir: dir.path().join("agent"),
            proof: Some(NodeProof::JoinTokenFile(token_file)),
        },
        metrics.clone(),
    )
    .await
    .unwrap();
    let (node_id, _) = authority.node_identity().await;
    assert_eq!(node_id, "spiffe://example.org/sigil/agent/node-1");
    let (stop_node, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(authority.clone().run_node_renewal(stop_rx));

    let socket = dir.path().join("agent.sock");
    let agent = sigil_agent::Agent::start(sigil_agent::AgentConfig {
        socket_path: socket.clone(),
        policy: policy.clone(),
        authority: authority.clone(),
        kubelet: None,
        metrics_addr: None,
        rotation: settings(),
        allow_unauthenticated_verifiers: false,
        proc_root: "/proc".into(),
        metrics,
    })
    .await
    .unwrap();
    assert_eq!(agent.initial.issued, 1);
    let mut c = client::connect(&socket, true).await.unwrap();
    let mut s = c
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut s).await;
    check_svid(&first.svids[0], "spiffe://example.org/workload/tester");
    let jwt = c
        .fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let v = c
        .validate_jwtsvid(ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: jwt.svids[0].svid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.spiffe_id, "spiffe://example.org/workload/tester");

    // Long outage: the server is down for longer than the agent's own 6 s SVID lives.
    let addr = srv.addr;
    let _ = srv.stop.send(());
    let _ = srv.task.await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, node_expiry) = authority.node_identity().await;
    assert!(
        node_expiry < std::time::SystemTime::now(),
        "the agent SVID should have expired during the outage"
    );
    let srv2 = start_server(&policy, &server_dir, addr).await;
    // The agent re-attests with its registered node key and resumes issuing, with no restart.
    let fresh = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let m = next(&mut s).await;
            if m.svids[0].x509_svid != first.svids[0].x509_svid {
                return m;
            }
        }
    })
    .await
    .expect("no fresh SVID after the server came back");
    check_svid(&fresh.svids[0], "spiffe://example.org/workload/tester");
    let (_, node_expiry) = authority.node_identity().await;
    assert!(node_expiry > std::time::SystemTime::now());
    let _ = stop_node.send(true);
    agent.shutdown().await;
    let _ = srv2.stop.send(());
}

/// A kubelet stand-in: HTTPS on 127.0.0.1 (certificate from a fresh CA), serving the recorded
/// pod list at `/pods` to requests with the right bearer token, 401 otherwise.
async fn start_kubelet(
    dir: &Path,
) -> (
    String,
    std::path::PathBuf,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let ca_file = dir.join("kubelet-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let h = h.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = tls.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (status, body): (&str, &[u8]) =
                    if !head.contains("authorization: bearer kubelet-test-token") {
                        ("401 Unauthorized", b"Unauthorized")
                    } else if head.starts_with("get /pods ") {
                        ("200 OK", include_bytes!("../fixtures/kubelet/pods.json"))
                    } else {
                        ("404 Not Found", b"not found")
                    };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, ca_file, hits)
}

/// A fake `/proc/<pid>` with `stat`, `cgroup` and an `exe` link.
fn fake_proc(root: &Path, pid: i32, cgroup: &str) {
    let p = root.join(pid.to_string());
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("stat"),
        format!(
            "{pid} (api server) S 1 {pid} {pid} 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 1000 10"
        ),
    )
    .unwrap();
    std::fs::write(p.join("cgroup"), cgroup).unwrap();
    std::os::unix::fs::symlink("/usr/local/bin/rag-api", p.join("exe")).unwrap();
}

#[tokio::test]
async fn kubernetes_attestation_through_cgroups_and_the_kubelet_pod_list() {
    use sigil_agent::attest::{Attestor, KubeletClient, KubeletConfig, PeerCred, ProcFs};
    let dir = tempfile::tempdir().unwrap();
    let (url, ca_file, hits) = start_kubelet(dir.path()).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "kubelet-test-token\n").unwrap();
    let proc_root = dir.path().join("proc");
    let layouts = [
        (
            "v1-cgroupfs",
            include_str!("../fixtures/cgroup/v1-cgroupfs.txt"),
        ),
        (
            "v1-systemd",
            include_str!("../fixtures/cgroup/v1-systemd.txt"),
        ),
        (
            "v2-systemd",
            include_str!("../fixtures/cgroup/v2-systemd.txt"),
        ),
        (
            "v2-cgroupfs",
            include_str!("../fixtures/cgroup/v2-cgroupfs.txt"),
        ),
    ];
    for (i, (_, cg)) in layouts.iter().enumerate() {
        fake_proc(&proc_root, 4242 + i32::try_from(i).unwrap(), cg);
    }
    fake_proc(
        &proc_root,
        5000,
        "0::/user.slice/user-1000.slice/session-1.scope\n",
    );
    let unknown = include_str!("../fixtures/cgroup/v2-systemd.txt").replace("9bca8d63", "00000000");
    fake_proc(&proc_root, 5001, &unknown);
    let kubelet = KubeletClient::new(KubeletConfig {
        url: url.clone(),
        ca_file: Some(ca_file.clone()),
        insecure_skip_verify: false,
        token_file: Some(token_file),
    })
    .unwrap()
    .with_attempts(2, Duration::from_millis(50));
    let attestor = Attestor::new(ProcFs::new(&proc_root), Some(kubelet), false);
    let policy = sigil_policy::Policy::parse(
        include_str!("../../../examples/ai-platform/sigil.yaml"),
        Path::new("sigil.yaml"),
    )
    .unwrap();
    let peer = |pid| PeerCred {
        pid: Some(pid),
        uid: 1000,
        gid: 1000,
        start_time: Some(777),
    };
    for (i, (name, _)) in layouts.iter().enumerate() {
        let facts = attestor
            .attest(&peer(4242 + i32::try_from(i).unwrap()))
            .await
            .unwrap();
        let k = facts
            .kubernetes
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no pod facts"));
        assert_eq!(
            (k.namespace.as_str(), k.service_account.as_str()),
            ("rag", "rag-api"),
            "{name}"
        );
        assert_eq!(k.container_name, "api");
        assert_eq!(facts.exe_path.as_deref(), Some("/usr/local/bin/rag-api"));
        let ids: Vec<String> = sigil_agent::selector::select(&policy.workloads, &facts)
            .iter()
            .map(|w| w.spiffe_id.to_string())
            .collect();
        assert_eq!(ids, ["spiffe://ai.example.org/ns/rag/sa/rag-api"], "{name}");
    }
    // The pod list is cached: four lookups of the same pod, one request.
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A host process is not in a pod: attested, but no Kubernetes facts, so no k8s workload.
    let host = attestor.attest(&peer(5000)).await.unwrap();
    assert!(host.kubernetes.is_none());
    assert!(sigil_agent::selector::select(&policy.workloads, &host).is_empty());
    // A container the kubelet does not list: refused after refetching.
    let e = attestor.attest(&peer(5001)).await.unwrap_err();
    assert_eq!(e.reason(), "kubelet");
    // PID reuse: the process at this PID started at another time than the one that connected.
    let mut reused = peer(4242);
    reused.start_time = Some(778);
    assert_eq!(
        attestor.attest(&reused).await.unwrap_err().reason(),
        "pid_reused"
    );
    // A wrong token is refused by the kubelet, and so is the caller.
    let bad_token = dir.path().join("bad-token");
    std::fs::write(&bad_token, "nope").unwrap();
    let refused = Attestor::new(
        ProcFs::new(&proc_root),
        Some(
            KubeletClient::new(KubeletConfig {
                url: url.clone(),
                ca_file: Some(ca_file),
                insecure_skip_verify: false,
                token_file: Some(bad_token),
            })
            .unwrap(),
        ),
        false,
    );
    let e = refused.attest(&peer(4242)).await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    // Without the kubelet's CA the TLS handshake fails (no plaintext, no skipping by default).
    let untrusted = Attestor::new(
        ProcFs::new(&proc_root),
        Some(
            KubeletClient::new(KubeletConfig {
                url,
                ca_file: None,
                insecure_skip_verify: false,
                token_file: None,
            })
            .unwrap(),
        ),
        false,
    );
    assert_eq!(
        untrusted.attest(&peer(4242)).await.unwrap_err().reason(),
        "kubelet"
    );
}

#[tokio::test]
async fn policy_reload_adds_and_removes_identities() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    let reloaded = sigil_policy::Policy::parse(
        "apiVersion: sigil.dev/v1alpha1\nkind: Platform\ntrustDomain: example.org\nworkloads:\n  - name: renamed\n    unix: { uid: 0 }\n",
        Path::new("reloaded.yaml"),
    )
    .unwrap();
    h.agent
        .cache
        .set_ids(reloaded.workloads.iter().map(|w| w.spiffe_id.clone()));
    h.agent.api.set_workloads(reloaded.workloads);
    let mut c = client::connect(&h.socket, true).await.unwrap();
    let mut s = c
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let m = next(&mut s).await;
    check_svid(&m.svids[0], "spiffe://example.org/workload/renamed");
    let snap = h.agent.cache.snapshot();
    assert_eq!(
        snap.svids.len(),
        1,
        "removed workloads are no longer served"
    );
    h.stop().await;
}

#[tokio::test]
async fn large_header_blocks_survive_the_authority_repair() {
    // A 40 KiB metadata value makes the client send HEADERS + CONTINUATION frames; the agent's
    // re-encoded block is split again into HEADERS + CONTINUATION for tonic, which parses it and
    // answers 431 (its 16 KiB header-list limit) instead of a protocol error.
    let h = Harness::start(Duration::from_secs(3600)).await;
    let mut c = client::connect(&h.socket, true).await.unwrap();
    let with_padding = |n: usize| {
        let mut req = tonic::Request::new(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        });
        req.metadata_mut()
            .insert("x-padding", "x".repeat(n).parse().unwrap());
        req
    };
    let e = c.fetch_jwtsvid(with_padding(40 * 1024)).await.unwrap_err();
    assert!(e.message().contains("431"), "{e:?}");
    // A large header within the limit passes, and the connection stays usable (HPACK tables on
    // both sides of the repair stayed in sync).
    let r = c
        .fetch_jwtsvid(with_padding(12 * 1024))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.svids[0].spiffe_id, "spiffe://example.org/workload/tester");
    for aud in ["b", "c", "b"] {
        let r = c
            .fetch_jwtsvid(JwtsvidRequest {
                audience: vec![aud.into()],
                spiffe_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.svids.len(), 1);
    }
    h.stop().await;
}

/// The agent as a DaemonSet: its projected service-account token attests the node it runs on
/// (the token's `kubernetes.io.node` claim); the agent then serves workloads from the real server.
#[tokio::test]
async fn daemonset_agent_attests_its_node_with_a_service_account_token() {
    use sigil_agent::server::{NodeProof, ServerAuthority, ServerSettings};
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cluster = sigil_ca::fake_cluster::FakeCluster::new("https://kubernetes.test").unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_vec(&cluster.jwks()).unwrap(),
    )
    .unwrap();
    let policy_path = dir.path().join("sigil.yaml");
    std::fs::write(
        &policy_path,
        format!(
            "{SERVER_POLICY}attestation:\n  agentServiceAccounts:\n    - {{ namespace: sigil-system, serviceAccount: sigil-agent }}\n  kubernetes:\n    - {{ cluster: t, issuer: \"https://kubernetes.test\", audiences: [sigil], jwksFile: jwks.json }}\n"
        ),
    )
    .unwrap();
    let policy = sigil_policy::Policy::load(&policy_path).unwrap();
    let srv = start_server(
        &policy,
        &dir.path().join("server"),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let token_file = dir.path().join("sa-token");
    std::fs::write(
        &token_file,
        cluster.token("sigil-system", "sigil-agent", "sigil"),
    )
    .unwrap();
    let metrics = Arc::new(sigil_agent::metrics::Metrics::new());
    let authority = ServerAuthority::connect(
        ServerSettings {
            url: format!("https://{}", srv.addr),
            bundle_pem: srv.bundle_pem.clone().into_bytes(),
            trust_domain: policy.trust_domain.clone(),
            node: "node-1".into(),
            data_dir: dir.path().join("agent"),
            proof: Some(NodeProof::KubernetesTokenFile(token_file.clone())),
        },
        metrics.clone(),
    )
    .await
    .unwrap();
    let (node_id, _) = authority.node_identity().await;
    assert_eq!(node_id, "spiffe://example.org/sigil/agent/node-1");
    let socket = dir.path().join("agent.sock");
    let agent = sigil_agent::Agent::start(sigil_agent::AgentConfig {
        socket_path: socket.clone(),
        policy: policy.clone(),
        authority: authority.clone(),
        kubelet: None,
        metrics_addr: None,
        rotation: settings(),
        allow_unauthenticated_verifiers: false,
        proc_root: "/proc".into(),
        metrics,
    })
    .await
    .unwrap();
    assert_eq!(agent.initial.issued, 1);
    // A service account that is not the agent's attests no node.
    std::fs::write(&token_file, cluster.token("default", "default", "sigil")).unwrap();
    let refused = ServerAuthority::connect(
        ServerSettings {
            url: format!("https://{}", srv.addr),
            bundle_pem: srv.bundle_pem.clone().into_bytes(),
            trust_domain: policy.trust_domain.clone(),
            node: "node-1".into(),
            data_dir: dir.path().join("agent2"),
            proof: Some(NodeProof::KubernetesTokenFile(token_file)),
        },
        Arc::new(sigil_agent::metrics::Metrics::new()),
    )
    .await;
    assert!(refused.is_err());
    agent.shutdown().await;
    let _ = srv.stop.send(());
    let _ = srv.task.await;
}
