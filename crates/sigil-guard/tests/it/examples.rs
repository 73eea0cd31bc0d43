//! The example platform's manifests: the naive variant has the real problems, the hardened one
//! none; the webhook's own deploy/ manifests pass at restricted.

use std::path::{Path, PathBuf};

use sigil_guard::audit::{Auditor, Settings};
use sigil_policy::Policy;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

fn audit(dir: &str) -> sigil_guard::Report {
    let policy = Policy::load(&repo("examples/ai-platform/sigil.yaml")).unwrap();
    let objs = sigil_kube::load_paths(&[repo(dir)]).unwrap();
    Auditor::new(Settings::from_policy(&policy).unwrap(), None)
        .audit(&objs)
        .unwrap()
}

#[test]
fn hardened_example_is_clean() {
    let r = audit("examples/ai-platform/manifests/hardened");
    let lines: Vec<String> = r.findings.iter().map(|f| f.summary()).collect();
    assert!(r.findings.is_empty(), "{lines:#?}");
    assert!(r.unknown_kinds.is_empty());
    assert!(r.pod_templates >= 12, "{}", r.pod_templates);
    // node-exporter's host namespaces are waived with the policy's reason, not silently passed.
    assert!(
        r.waived
            .iter()
            .all(|w| w.finding.object.name == "node-exporter")
    );
    assert!(!r.waived.is_empty());
}

#[test]
fn naive_example_has_the_real_problems() {
    let r = audit("examples/ai-platform/manifests/naive");
    let has = |rule: &str, name: &str| {
        r.findings
            .iter()
            .any(|f| f.rule == rule && f.object.name == name)
    };
    for (rule, name) in [
        ("SIGIL-GPU-LD-PRELOAD", "vllm"),
        ("SIGIL-GPU-LD-PRELOAD", "llama-finetune"),
        ("SIGIL-GPU-DEVICE-HOSTPATH", "llama-finetune"),
        ("SIGIL-GPU-DEVICE-HOSTPATH", "node-exporter"),
        ("SIGIL-GPU-VISIBLE-DEVICES", "sweep"),
        ("SIGIL-GPU-VISIBLE-DEVICES", "rag-api"),
        ("SIGIL-GPU-NAMESPACE", "jupyter"),
        ("SIGIL-MODEL-PINNED", "vllm"),
        ("SIGIL-MODEL-PINNED", "embedder"),
        ("SIGIL-TRAINING-DEADLINE", "llama-finetune"),
        ("SIGIL-WORKLOAD-MISMATCH", "rag-api"),
        ("SIGIL-IMAGE-DIGEST", "qdrant"),
        ("SIGIL-IMAGE-REGISTRY", "minio"),
        ("SIGIL-AUTOMOUNT-SA-TOKEN", "grafana"),
        ("PSS-BASELINE-PRIVILEGED", "sweep"),
        ("PSS-BASELINE-PRIVILEGED", "node-exporter"),
        ("PSS-BASELINE-HOST-PORTS", "minio"),
        ("PSS-RESTRICTED-RUN-AS-USER", "minio"),
        ("PSS-RESTRICTED-CAPABILITIES", "jupyter"),
    ] {
        assert!(has(rule, name), "naive example: expected {rule} on {name}");
    }
    // node-exporter's host namespaces are exempt in sigil.yaml; its privileged flag is not.
    assert!(!has("PSS-BASELINE-HOST-NAMESPACES", "node-exporter"));
}

#[test]
fn deploy_manifests_pass_restricted() {
    let objs = sigil_kube::load_paths(&[repo("deploy/webhook.yaml")]).unwrap();
    let kinds: Vec<&str> = objs.iter().map(|o| o.kind.as_str()).collect();
    for k in ["Deployment", "Service", "ValidatingWebhookConfiguration"] {
        assert!(kinds.contains(&k), "deploy/ lacks a {k}");
    }
    let r = Auditor::new(Settings::default(), None)
        .audit(&objs)
        .unwrap();
    let lines: Vec<String> = r.findings.iter().map(|f| f.summary()).collect();
    assert!(r.findings.is_empty(), "{lines:#?}");
    let vwc = objs
        .iter()
        .find(|o| o.kind == "ValidatingWebhookConfiguration")
        .unwrap();
    let w = &vwc.raw["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Fail");
    assert_eq!(w["sideEffects"], "None");
    assert!(w["timeoutSeconds"].as_i64().unwrap() <= 10);
    assert_eq!(w["admissionReviewVersions"][0], "v1");
}

#[test]
fn host_network_must_match_the_declaration() {
    let policy = Policy::load(&repo("examples/ai-platform/sigil.yaml")).unwrap();
    let auditor = Auditor::new(Settings::from_policy(&policy).unwrap(), None);
    let mut objs = sigil_kube::load_paths(&[repo(
        "examples/ai-platform/manifests/hardened/monitoring.yaml",
    )])
    .unwrap();
    let mismatches = |objs: &[sigil_kube::Object]| -> Vec<String> {
        let r = auditor.audit(objs).unwrap();
        r.findings
            .iter()
            .filter(|f| f.rule == "SIGIL-WORKLOAD-MISMATCH")
            .map(|f| format!("{} {}", f.object.name, f.field))
            .collect()
    };
    // Declared hostNetwork: true, and the manifest agrees.
    assert_eq!(mismatches(&objs), Vec::<String>::new());
    let exporter = objs.iter_mut().find(|o| o.name == "node-exporter").unwrap();
    exporter.raw["spec"]["template"]["spec"]["hostNetwork"] = false.into();
    assert_eq!(
        mismatches(&objs),
        ["node-exporter spec.template.spec.hostNetwork"]
    );
}
