//! The identity commands as a user runs them: `sigil server`, `server join-token`,
//! `svid fetch`, `svid jwt`, `ca status/rotate`, `audit-log verify`, `policy check`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Child;

use common::{free_port, sigil_in as sigil, spawn_server};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(dir: &Path, port: u16) -> Server {
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "server",
        "--policy",
        "sigil.yaml",
        "--data-dir",
        "data",
        "--listen",
        &listen,
    ];
    Server(spawn_server(dir, &args, port))
}

fn setup(dir: &Path) {
    let cluster =
        sigil_ca::fake_cluster::FakeCluster::new(sigil_ca::fake_cluster::EXAMPLE_ISSUER).unwrap();
    std::fs::write(
        dir.join("cluster-jwks.json"),
        serde_json::to_vec(&cluster.jwks()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("sigil.yaml"),
        include_str!("../../../examples/ai-platform/sigil.yaml"),
    )
    .unwrap();
    std::fs::write(dir.join("token"), cluster.token("rag", "rag-api", "sigil")).unwrap();
}

#[test]
fn server_join_token_and_svid_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let server = start_server(dir, port);

    // A workload with a Kubernetes token.
    let out = sigil(
        dir,
        &[
            "svid",
            "fetch",
            "--server",
            &url,
            "--bundle",
            "data/bundle.pem",
            "--k8s-token-file",
            "token",
            "--out",
            "rag",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "spiffe://ai.example.org/ns/rag/sa/rag-api"
    );
    let mode = std::fs::metadata(dir.join("rag/svid.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(dir.join("rag/svid.pem"))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count()
            == 2
    );

    // A JWT-SVID on stdout.
    let out = sigil(
        dir,
        &[
            "svid",
            "jwt",
            "--server",
            &url,
            "--bundle",
            "data/bundle.pem",
            "--k8s-token-file",
            "token",
            "--audience",
            "s3",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split('.')
            .count(),
        3
    );

    // A node with a join token from the admin API; the token is single-use.
    let out = sigil(
        dir,
        &[
            "server",
            "join-token",
            "--node",
            "gpu-1",
            "--server",
            &url,
            "--data-dir",
            "data",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["token"].as_str().unwrap();
    // What `sigil server join-token` prints, redirected to a file as the README shows, is what
    // --join-token-file reads.
    std::fs::write(dir.join("gpu-1.token"), &out.stdout).unwrap();
    let out = sigil(
        dir,
        &[
            "svid",
            "fetch",
            "--server",
            &url,
            "--bundle",
            "data/bundle.pem",
            "--join-token-file",
            "gpu-1.token",
            "--out",
            "node",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "spiffe://ai.example.org/sigil/agent/gpu-1"
    );
    let out = sigil(
        dir,
        &[
            "svid",
            "fetch",
            "--server",
            &url,
            "--bundle",
            "data/bundle.pem",
            "--join-token",
            token,
            "--out",
            "node2",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already used"));
    // Plaintext is refused before anything is sent.
    let out = sigil(
        dir,
        &[
            "svid",
            "fetch",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--bundle",
            "data/bundle.pem",
            "--k8s-token-file",
            "token",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https"));
    drop(server);

    // The audit log verifies; a modified record is found.
    let out = sigil(dir, &["audit-log", "verify", "data/audit.jsonl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.join("data/audit.jsonl")).unwrap();
    std::fs::write(
        dir.join("data/audit.jsonl"),
        log.replacen("rag-api", "rag-apx", 1),
    )
    .unwrap();
    let out = sigil(dir, &["audit-log", "verify", "data/audit.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Offline CA rotation with the server stopped.
    let out = sigil(
        dir,
        &[
            "ca",
            "rotate",
            "prepare",
            "--policy",
            "sigil.yaml",
            "--data-dir",
            "data",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sigil(
        dir,
        &[
            "ca",
            "rotate",
            "activate",
            "--policy",
            "sigil.yaml",
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "activation right after prepare must wait"
    );
    let out = sigil(
        dir,
        &[
            "ca",
            "rotate",
            "activate",
            "--force",
            "--policy",
            "sigil.yaml",
            "--data-dir",
            "data",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sigil(
        dir,
        &[
            "ca",
            "status",
            "--policy",
            "sigil.yaml",
            "--data-dir",
            "data",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("retiring") && text.contains("active"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("data/bundle.pem"))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
}

#[test]
fn policy_check_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = sigil(dir, &["policy", "example"]);
    std::fs::write(dir.join("good.yaml"), &out.stdout).unwrap();
    let out = sigil(dir, &["policy", "check", "good.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: sigil.dev/v1alpha1\nkind: Platform\ntrustDomain: a.org\nworkloads:\n  - name: a\n    kubernetes: {namespace: n, serviceAccount: a}\nflows:\n  - {from: a, to: b, ports: [80]}\n",
    )
    .unwrap();
    let out = sigil(dir, &["policy", "check", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:8:")
            && err.contains("flows[0].to")
            && err.contains("unknown workload"),
        "{err}"
    );
}

#[test]
fn demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sigil(tmp.path(), &["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("every check behaved as the policy says"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn ca_init_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = sigil(dir, &["ca", "init", "--data-dir", "data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = std::fs::read_to_string(dir.join("data/bundle.pem")).unwrap();
    let out = sigil(dir, &["ca", "init", "--data-dir", "data"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has a CA"));
    assert_eq!(
        std::fs::read_to_string(dir.join("data/bundle.pem")).unwrap(),
        bundle,
        "nothing lost"
    );
    let mode = std::fs::metadata(dir.join("data"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

/// `sigil server --listen 0.0.0.0:...` without --issuer-url would advertise
/// `https://0.0.0.0:...` as OIDC issuer: it refuses to start, with the flag to use.
#[test]
fn server_on_any_address_needs_an_issuer_url() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .current_dir(dir)
        .args([
            "server",
            "--policy",
            "sigil.yaml",
            "--data-dir",
            "data",
            "--listen",
            "0.0.0.0:0",
        ])
        .env("NO_COLOR", "1")
        .env_remove("SIGIL_ISSUER_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sigil server started on 0.0.0.0 without --issuer-url");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--issuer-url") && err.contains("hint:"),
        "{err}"
    );
}
