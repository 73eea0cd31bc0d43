//! Rule table: each case is a small change to a hardened Deployment and the rules it must trip
//! (and nothing else), under a policy like the example platform's.

use std::path::Path;

use serde_json::{Value, json};
use sigil_guard::audit::{Auditor, Settings};
use sigil_guard::rules;
use sigil_policy::Policy;
use test_case::test_case;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SHA: &str = "0e9e39f249a16976918f6564b8830bc894c89659";

fn settings() -> Settings {
    let policy = Policy::parse(
        &format!(
            r#"apiVersion: sigil.dev/v1alpha1
kind: Platform
trustDomain: ai.example.org
workloads:
  - name: inference
    kubernetes: {{ namespace: inference, serviceAccount: vllm, podLabels: {{ app: inference }} }}
  - name: operator
    kubernetes: {{ namespace: inference, serviceAccount: operator }}
    needsKubernetesApi: true
guardrails:
  podSecurity: {{ level: restricted, version: latest }}
  gpuNamespaces: [inference]
  allowedRegistries: [registry.ai.example.org]
  requireImageDigest: true
  exemptions:
    - namespace: inference
      name: exempt-me
      rules: [SIGIL-IMAGE-REGISTRY]
      reason: vendor image, mirrored next quarter
models:
  sources:
    - repo: hf://meta-llama/Llama-3.1-8B-Instruct
      revision: {SHA}
    - repo: s3://model-weights/
"#
        ),
        Path::new("sigil.yaml"),
    )
    .unwrap();
    Settings::from_policy(&policy).unwrap()
}

fn hardened() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "server", "namespace": "inference"},
        "spec": {"template": {
            "metadata": {"labels": {"app": "inference"}},
            "spec": {
                "serviceAccountName": "vllm",
                "automountServiceAccountToken": false,
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "vllm",
                    "image": format!("registry.ai.example.org/vllm@{DIGEST}"),
                    "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--revision", SHA],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
                }]
            }
        }}
    })
}

fn audit(v: Value) -> (Vec<String>, Vec<String>) {
    let text = serde_json::to_string(&v).unwrap();
    let objs = sigil_kube::load_str(&text, Path::new("t.json")).unwrap();
    let r = Auditor::new(settings(), None).audit(&objs).unwrap();
    let mut ids: Vec<String> = r.findings.iter().map(|f| f.rule.clone()).collect();
    ids.dedup();
    (
        ids,
        r.waived.iter().map(|w| w.finding.rule.clone()).collect(),
    )
}

fn set(v: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let p = v.pointer_mut(parent).unwrap();
    match p {
        Value::Array(a) => a.push(value),
        Value::Object(o) => {
            o.insert(key.to_owned(), value);
        }
        _ => panic!("{pointer}"),
    }
}

const C: &str = "/spec/template/spec/containers/0";
const S: &str = "/spec/template/spec";

#[test]
fn hardened_is_clean() {
    assert_eq!(audit(hardened()), (vec![], vec![]));
}

#[test_case("/metadata/namespace", json!("rag"), &["SIGIL-GPU-NAMESPACE", "SIGIL-WORKLOAD-MISMATCH"]; "gpu outside gpu namespaces")]
#[test_case("/spec/template/spec/containers/0/env", json!([{"name": "LD_PRELOAD", "value": "/tmp/x.so"}]), &["SIGIL-GPU-LD-PRELOAD"]; "ld preload in gpu pod")]
#[test_case("/spec/template/spec/containers/0/image", json!("registry.ai.example.org/vllm:v0.6"), &["SIGIL-IMAGE-DIGEST"]; "tag not digest")]
#[test_case("/spec/template/spec/containers/0/image", json!(format!("docker.io/vllm/vllm-openai@{DIGEST}")), &["SIGIL-IMAGE-REGISTRY"]; "foreign registry")]
#[test_case("/spec/template/spec/containers/0/args", json!(["--model", "meta-llama/Llama-3.1-8B-Instruct"]), &["SIGIL-MODEL-PINNED"]; "model without revision")]
#[test_case("/spec/template/spec/containers/0/args", json!(["--model", "evil/model", "--revision", SHA]), &["SIGIL-MODEL-PINNED"]; "model from unlisted source")]
#[test_case("/spec/template/spec/automountServiceAccountToken", json!(true), &["SIGIL-AUTOMOUNT-SA-TOKEN"]; "token mounted")]
#[test_case("/spec/template/spec/serviceAccountName", json!("default"), &["SIGIL-WORKLOAD-MISMATCH"]; "wrong service account")]
#[test_case("/spec/template/metadata/labels", json!({"app": "other"}), &["SIGIL-WORKLOAD-MISMATCH"]; "missing workload labels")]
#[test_case("/spec/template/spec/volumes", json!([{"name": "dev", "hostPath": {"path": "/dev/nvidia0"}}]), &["PSS-BASELINE-HOST-PATH", "PSS-RESTRICTED-VOLUMES", "SIGIL-GPU-DEVICE-HOSTPATH"]; "gpu device host path")]
#[test_case("/spec/template/spec/volumes", json!([{"name": "sock", "hostPath": {"path": "/run/containerd/containerd.sock"}}]), &["PSS-BASELINE-HOST-PATH", "PSS-RESTRICTED-VOLUMES", "SIGIL-GPU-DEVICE-HOSTPATH"]; "runtime socket")]
#[test_case("/spec/template/spec/volumes", json!([{"name": "dev", "hostPath": {"path": "/dev/"}}]), &["PSS-BASELINE-HOST-PATH", "PSS-RESTRICTED-VOLUMES", "SIGIL-GPU-DEVICE-HOSTPATH"]; "parent of gpu devices")]
#[test_case("/spec/template/spec/hostIPC", json!(true), &["PSS-BASELINE-HOST-NAMESPACES"]; "host ipc")]
#[test_case("/spec/template/spec/hostNetwork", json!(true), &["PSS-BASELINE-HOST-NAMESPACES", "SIGIL-WORKLOAD-MISMATCH"]; "host network not declared")]
fn single_change(pointer: &str, value: Value, expected: &[&str]) {
    let mut v = hardened();
    set(&mut v, pointer, value);
    let (mut ids, _) = audit(v);
    ids.sort();
    ids.dedup();
    assert_eq!(ids, expected);
}

#[test]
fn visible_devices_without_gpu_request() {
    let mut v = hardened();
    v.pointer_mut(C)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove("resources");
    set(
        &mut v,
        &format!("{C}/env"),
        json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]),
    );
    assert_eq!(audit(v.clone()).0, ["SIGIL-GPU-VISIBLE-DEVICES"]);
    // `void` hides GPUs: fine.
    set(
        &mut v,
        &format!("{C}/env"),
        json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]),
    );
    assert!(audit(v).0.is_empty());
}

#[test]
fn workloads_that_need_the_api_may_mount_tokens() {
    let mut v = hardened();
    set(
        &mut v,
        &format!("{S}/serviceAccountName"),
        json!("operator"),
    );
    set(
        &mut v,
        &format!("{S}/automountServiceAccountToken"),
        json!(true),
    );
    set(
        &mut v,
        "/spec/template/metadata/labels",
        json!({"app": "operator"}),
    );
    assert!(audit(v).0.is_empty());
}

#[test]
fn exemptions_waive_named_rules_only() {
    let mut v = hardened();
    set(&mut v, "/metadata/name", json!("exempt-me"));
    set(
        &mut v,
        &format!("{C}/image"),
        json!(format!("docker.io/vllm/vllm-openai@{DIGEST}")),
    );
    assert_eq!(
        audit(v.clone()),
        (vec![], vec!["SIGIL-IMAGE-REGISTRY".to_owned()])
    );
    set(
        &mut v,
        &format!("{C}/image"),
        json!("docker.io/vllm/vllm-openai:latest"),
    );
    assert_eq!(audit(v).0, ["SIGIL-IMAGE-DIGEST"]);
}

#[test]
fn training_jobs_need_deadlines_and_network_policies_must_select_pods() {
    let mut job = hardened();
    job["apiVersion"] = json!("batch/v1");
    job["kind"] = json!("Job");
    assert_eq!(audit(job.clone()).0, ["SIGIL-TRAINING-DEADLINE"]);
    job["spec"]["activeDeadlineSeconds"] = json!(86400);
    assert!(audit(job.clone()).0.is_empty());
    let np = |labels: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": "inference"},
        "spec": {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"]}})
    };
    let list = |np: Value| json!({"apiVersion": "v1", "kind": "List", "items": [hardened(), np]});
    assert_eq!(
        audit(list(np(json!({"app": "other"})))).0,
        ["SIGIL-NETWORK-POLICY"]
    );
    assert!(audit(list(np(json!({"app": "inference"})))).0.is_empty());
}

#[test]
fn kserve_storage_uris() {
    let isvc = |uri: &str| {
        json!({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "llm", "namespace": "inference", "labels": {"app": "inference"}},
            "spec": {"predictor": {
                "serviceAccountName": "vllm",
                "automountServiceAccountToken": false,
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "model": {"modelFormat": {"name": "huggingface"}, "storageUri": uri,
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}
            }}
        })
    };
    assert!(audit(isvc("s3://model-weights/llama/")).0.is_empty());
    assert_eq!(audit(isvc("s3://scratch/llama/")).0, ["SIGIL-MODEL-PINNED"]);
    assert_eq!(
        audit(isvc("hf://meta-llama/Llama-3.1-8B-Instruct")).0,
        ["SIGIL-MODEL-PINNED"]
    );
}

#[test]
fn every_rule_is_documented() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/rules.md"))
            .unwrap();
    let mut seen = std::collections::HashSet::new();
    for r in rules::ALL {
        assert!(seen.insert(r.id), "duplicate rule {}", r.id);
        assert!(
            docs.contains(&format!("## {}", r.id)),
            "docs/rules.md has no section for {}",
            r.id
        );
        assert!(!r.hint.is_empty() && !r.title.is_empty());
    }
}
