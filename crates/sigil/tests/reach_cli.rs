//! `sigil reach` and `sigil netpol generate` as a user runs them on the shipped example:
//! CI gates (`--deny-path`), explanations, JSON/DOT output, input errors, and generation that
//! reproduces the committed hardened policies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Output;

use common::{HARDENED, NAIVE, PLATFORM, repo, sigil, text};
const NODES: &str = "10.0.0.0/16";

fn deny_path(manifests: &str, path: &str) -> Output {
    sigil(&[
        "reach",
        manifests,
        "--policy",
        PLATFORM,
        "--node-cidr",
        NODES,
        "--deny-path",
        path,
    ])
}

#[test]
fn deny_path_gates_ci_on_the_example() {
    // (manifests, path, exit code)
    let cases = [
        (NAIVE, "prometheus->rag-index", 1),
        (NAIVE, "notebook->model-weights", 1),
        (HARDENED, "prometheus->rag-index", 0),
        (HARDENED, "prometheus->training-data", 0),
        (HARDENED, "notebook->model-weights", 0),
        // node-exporter (hostPID, hostNetwork) escapes to the node: the monitoring namespace as a
        // whole still reaches the vector DB's data, and the path says how.
        (HARDENED, "monitoring->rag-index", 1),
    ];
    for (manifests, path, code) in cases {
        let out = deny_path(manifests, path);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{manifests} {path}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        if code == 1 {
            assert!(
                text(&out.stdout).contains(&format!("path {path} exists")),
                "{}",
                text(&out.stdout)
            );
        }
    }
    let out = deny_path(HARDENED, "monitoring->rag-index");
    assert!(
        text(&out.stdout).contains("escapes to the node: hostPID, hostNetwork"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn explain_json_and_dot() {
    let out = sigil(&[
        "reach",
        NAIVE,
        "--explain",
        "monitoring/prometheus",
        "vectordb/qdrant",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let explained = text(&out.stdout);
    assert!(
        explained.starts_with("monitoring/prometheus -> vectordb/qdrant: ALLOW"),
        "{explained}"
    );
    assert!(explained.contains("not isolated"), "{explained}");

    let out = sigil(&[
        "reach",
        HARDENED,
        "--policy",
        PLATFORM,
        "--node-cidr",
        NODES,
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pairs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let has = |src: &str, dst: &str| {
        pairs.iter().any(|p| {
            p["verdict"] == "allow"
                && p["src"].as_str().unwrap().starts_with(src)
                && p["dst"].as_str().unwrap().starts_with(dst)
        })
    };
    assert!(has("rag/rag-api", "vectordb/qdrant"));
    assert!(has("monitoring/prometheus", "monitoring/node-exporter"));
    assert!(!has("monitoring/prometheus", "vectordb/qdrant"));
    assert!(!has("notebooks/jupyter", "storage/minio"));
    for p in &pairs {
        for key in [
            "src", "src_kind", "dst", "dst_kind", "ports", "verdict", "because",
        ] {
            assert!(p.get(key).is_some(), "{key} missing in {p}");
        }
    }

    let out = sigil(&["reach", NAIVE, "-o", "dot"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("digraph sigil {"));
}

const DUMP: &str = "crates/sigil-reach/tests/fixtures/cluster-dumps/kubectl-get-all.yaml";
const TYPED: &str = "crates/sigil-reach/tests/fixtures/cluster-dumps/typed-lists";

/// A `kubectl get -o yaml` dump of running pods: every pair is listed with both peers' kinds, the
/// grouping is said on stderr, and so is the pod whose labels change a decision.
#[test]
fn cluster_dump_json_names_each_peers_kind() {
    let out = sigil(&["reach", DUMP, "--all", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pairs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pairs.len(), 36);
    let pair = |src: &str, dst: &str| {
        pairs
            .iter()
            .find(|p| p["src"] == src && p["dst"] == dst)
            .unwrap_or_else(|| panic!("no {src} -> {dst}"))
    };
    let p = pair("monitoring/node-agent", "shop/web");
    assert_eq!(
        (&p["src_kind"], &p["dst_kind"], &p["ports"], &p["verdict"]),
        (
            &serde_json::json!("DaemonSet"),
            &serde_json::json!("Deployment"),
            &serde_json::json!("TCP/8080"),
            &serde_json::json!("allow")
        )
    );
    let p = pair("kube-system/kube-apiserver-cp1", "shop/api-6f7d9c8b5");
    assert_eq!(
        (&p["src_kind"], &p["dst_kind"]),
        (&serde_json::json!("Pod"), &serde_json::json!("ReplicaSet"))
    );
    assert_eq!(p["verdict"], "deny");
    let err = text(&out.stderr);
    assert!(err.contains("pods grouped by controller owner"), "{err}");
    assert!(
        err.contains("shop/web [Deployment]: 2 pods via ReplicaSet web-5c9f8d7b6"),
        "{err}"
    );
    assert!(
        err.contains("pods db-0 of StatefulSet shop/db have labels")
            && err.contains("+role=primary"),
        "{err}"
    );

    let out = sigil(&["reach", TYPED, "--to", "203.0.113.9", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pairs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pairs.len(), 5);
    assert!(pairs.iter().all(|p| p["dst_kind"] == "IP"));
    let kinds: std::collections::BTreeSet<&str> = pairs
        .iter()
        .map(|p| p["src_kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["CronJob", "DaemonSet", "Deployment", "Pod", "StatefulSet"]
    );

    let out = sigil(&["reach", TYPED, "--list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    assert!(
        list.contains("1 pod via Job etl-29000000 (CronJob not in the input)"),
        "{list}"
    );
}

/// A list item that is not an object points at the item's line, with a hint about lists.
#[test]
fn bad_list_item_points_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dump.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- metadata:\n    name: p\n    namespace: a\n",
    )
    .unwrap();
    let out = sigil(&["reach", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("dump.yaml:7: document 1: item 1 of the List has no apiVersion"),
        "{err}"
    );
    assert!(err.contains("typed list") && !err.contains("helm"), "{err}");
}

#[test]
fn reach_input_errors_exit_2() {
    let out = sigil(&["reach", NAIVE, "--node-cidr", "10.0.0/99"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("\"10.0.0/99\" is not a CIDR"));
    let out = deny_path(NAIVE, "nobody->rag-index");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no workload, namespace or data asset matches \"nobody\""));
    let out = sigil(&["reach", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no/such/dir"));
}

#[test]
fn netpol_generate_reproduces_the_hardened_example() {
    let out = sigil(&[
        "netpol",
        "generate",
        "--policy",
        PLATFORM,
        "--node-cidr",
        NODES,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shipped =
        std::fs::read_to_string(repo().join(HARDENED).join("netpol-generated.yaml")).unwrap();
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&text(&out.stdout)), body(&shipped));
    // The hostNetwork workload is reported: its side cannot be restricted by NetworkPolicy.
    assert!(text(&out.stderr).contains("node-exporter uses the host network"));

    // Without node addresses the flow to node-exporter cannot be expressed: said, not dropped.
    let out = sigil(&["netpol", "generate", "--policy", PLATFORM]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("flow prometheus->node-exporter not generated"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("ipBlock"));

    let cilium = sigil(&[
        "netpol",
        "generate",
        "--policy",
        PLATFORM,
        "--node-cidr",
        NODES,
        "--cilium",
    ]);
    assert_eq!(cilium.status.code(), Some(0));
    let y = text(&cilium.stdout);
    assert!(
        y.contains("kind: CiliumNetworkPolicy") && y.contains("toCIDR"),
        "{y}"
    );
}
