//! `sigil audit` and `sigil webhook` as a user runs them: exit codes, report formats, input
//! errors, users' Gatekeeper policies, and the webhook answering AdmissionReview v1 over HTTPS
//! (posted with curl).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::{Child, Command, Stdio};

use common::{HARDENED, NAIVE, PLATFORM, SIGIL, free_port, repo, sigil, spawn_server, text};

#[test]
fn audit_exit_codes_follow_findings_and_fail_on() {
    let naive = sigil(&["audit", NAIVE, "--platform", PLATFORM]);
    assert_eq!(naive.status.code(), Some(1), "{}", text(&naive.stderr));
    let out = text(&naive.stdout);
    // A few of the real problems in the naive platform, each by rule ID.
    for rule in [
        "PSS-BASELINE-PRIVILEGED",
        "SIGIL-IMAGE-DIGEST",
        "SIGIL-MODEL-PINNED",
    ] {
        assert!(out.contains(rule), "no {rule} finding in:\n{out}");
    }
    let hardened = sigil(&["audit", HARDENED, "--platform", PLATFORM]);
    assert_eq!(
        hardened.status.code(),
        Some(0),
        "{}{}",
        text(&hardened.stdout),
        text(&hardened.stderr)
    );
    // --fail-on critical: only critical findings fail the build.
    let json = sigil(&["audit", NAIVE, "--platform", PLATFORM, "-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(!findings.is_empty());
    let any_critical = findings.iter().any(|f| f["severity"] == "critical");
    let critical_only = sigil(&[
        "audit",
        NAIVE,
        "--platform",
        PLATFORM,
        "--fail-on",
        "critical",
    ]);
    assert_eq!(
        critical_only.status.code(),
        Some(if any_critical { 1 } else { 0 })
    );
}

#[test]
fn audit_sarif_is_2_1_0_with_a_named_driver() {
    let out = sigil(&["audit", NAIVE, "--platform", PLATFORM, "--output", "sarif"]);
    assert_eq!(out.status.code(), Some(1));
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "sigil");
    let results = run["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for r in results {
        assert!(r["ruleId"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
        let loc = &r["locations"][0]["physicalLocation"];
        assert!(
            loc["artifactLocation"]["uri"]
                .as_str()
                .is_some_and(|u| u.contains("naive/")),
            "{r}"
        );
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1, "{r}");
    }
}

#[test]
fn audit_reads_stdin_and_junit() {
    let mut child = Command::new(SIGIL)
        .current_dir(repo())
        .args(["audit", "-", "--output", "junit"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: root}\nspec:\n  containers:\n    - name: c\n      image: nginx\n      securityContext: {privileged: true}\n",
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let xml = text(&out.stdout);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains("<testsuite") && xml.contains("<failure"),
        "{xml}"
    );
    assert!(xml.contains("privileged"), "{xml}");
}

#[test]
fn audit_input_errors_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n",
    )
    .unwrap();
    let out = sigil(&["audit", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("broken.yaml"), "{err}");
    assert!(err.contains("document 2"), "{err}");
    assert!(err.contains(":7") || err.contains("line 7"), "{err}");
    assert!(out.stdout.is_empty(), "no report on input errors");

    let missing = sigil(&["audit", "no/such/dir"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no/such/dir"));

    let bad_policy = sigil(&["audit", HARDENED, "--platform", bad.to_str().unwrap()]);
    assert_eq!(bad_policy.status.code(), Some(2));
}

#[test]
fn audit_runs_users_gatekeeper_policies() {
    let gk = "crates/sigil-guard/tests/data/gatekeeper";
    let out = sigil(&[
        "audit",
        &format!("{gk}/examples.yaml"),
        "--policy",
        &format!("{gk}/requiredlabels.yaml"),
        "--policy",
        &format!("{gk}/allowedrepos.yaml"),
        "--level",
        "privileged",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .filter(|r| r.starts_with("REGO-"))
        .collect();
    assert!(rules.contains(&"REGO-K8sRequiredLabels"), "{rules:?}");
    assert!(rules.contains(&"REGO-K8sAllowedRepos"), "{rules:?}");

    // A template without any constraint is a usage error, not a silent pass.
    let lonely = sigil(&[
        "audit",
        HARDENED,
        "--policy",
        "crates/sigil-guard/tests/data/gatekeeper/examples.yaml",
    ]);
    assert_eq!(lonely.status.code(), Some(2), "{}", text(&lonely.stderr));
}

// ---------- webhook ----------

struct Webhook {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_webhook(extra: &[&str]) -> Webhook {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "tls.key",
            "-out",
            "tls.crt",
            "-days",
            "1",
            "-subj",
            "/CN=sigil-webhook",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", text(&st.stderr));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "webhook",
        "--listen",
        &listen,
        "--tls-cert",
        "tls.crt",
        "--tls-key",
        "tls.key",
    ];
    args.extend_from_slice(extra);
    let child = spawn_server(dir.path(), &args, port);
    Webhook { child, port, dir }
}

fn curl(w: &Webhook, path: &str, body: Option<&serde_json::Value>) -> String {
    let url = format!("https://127.0.0.1:{}{path}", w.port);
    let ca = w.dir.path().join("tls.crt");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "--cacert", ca.to_str().unwrap(), &url]);
    if let Some(b) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &b.to_string(),
        ]);
    }
    let out = cmd
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert!(out.status.success(), "curl {path}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn review(uid: &str, namespace: &str, pod: serde_json::Value, dry_run: bool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": pod,
            "dryRun": dry_run,
        }
    })
}

fn pod(privileged: bool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "rag"},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app",
                "image": "registry.example.org/rag/api@sha256:1111111111111111111111111111111111111111111111111111111111111111",
                "securityContext": {
                    "privileged": privileged,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                    "runAsNonRoot": true,
                },
            }],
        }
    })
}

#[test]
fn webhook_serves_admission_review_over_https() {
    let w = start_webhook(&["--level", "restricted", "--exempt-namespace", "kube-system"]);
    assert_eq!(curl(&w, "/healthz", None).trim(), "ok");

    let denied: serde_json::Value = serde_json::from_str(&curl(
        &w,
        "/validate",
        Some(&review("u-1", "rag", pod(true), false)),
    ))
    .unwrap();
    assert_eq!(denied["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(denied["kind"], "AdmissionReview");
    assert_eq!(denied["response"]["uid"], "u-1");
    assert_eq!(denied["response"]["allowed"], false);
    let msg = denied["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("privileged"), "{msg}");

    let allowed: serde_json::Value = serde_json::from_str(&curl(
        &w,
        "/validate",
        Some(&review("u-2", "rag", pod(false), false)),
    ))
    .unwrap();
    assert_eq!(allowed["response"]["uid"], "u-2");
    assert_eq!(allowed["response"]["allowed"], true, "{allowed}");

    let exempt: serde_json::Value = serde_json::from_str(&curl(
        &w,
        "/validate",
        Some(&review("u-3", "kube-system", pod(true), false)),
    ))
    .unwrap();
    assert_eq!(exempt["response"]["allowed"], true, "{exempt}");

    let metrics = curl(&w, "/metrics", None);
    assert!(metrics.contains("sigil_webhook_"), "{metrics}");
}

#[test]
fn webhook_with_bad_arguments_exits_2() {
    let out = sigil(&[
        "webhook",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent.crt",
        "--tls-key",
        "/nonexistent.key",
        "--platform",
        "no/such/sigil.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no/such/sigil.yaml"));
}
