//! Cluster dumps: `kubectl get pods,deploy,rs,sts,ds,ns,netpol -A -o yaml` (a `kind: List`) and the
//! API server's typed lists (`PodList`, ... whose items carry no apiVersion/kind). Running pods
//! are grouped by their controller owner; each fixture's full matrix is compared with the one
//! written by hand beside it (`tests/fixtures/cluster-dumps/*.expected`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sigil_reach::{Cluster, Engine, Settings, Workload};

const DUMPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cluster-dumps");

fn load(name: &str) -> Cluster {
    let objs = sigil_kube::load_paths(&[PathBuf::from(DUMPS).join(name)]).unwrap();
    Cluster::from_objects(&objs, Settings::default()).unwrap()
}

/// `SRC -> DST: PORTS` lines of an `.expected` file.
fn expected(name: &str) -> BTreeMap<(String, String), String> {
    let text = std::fs::read_to_string(Path::new(DUMPS).join(name)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (pair, ports) = l.split_once(": ").unwrap();
            let (src, dst) = pair.split_once(" -> ").unwrap();
            ((src.to_owned(), dst.to_owned()), ports.to_owned())
        })
        .collect()
}

/// Every ordered pair's verdict.
fn matrix(c: &Cluster) -> BTreeMap<(String, String), String> {
    let e = Engine::new(c);
    let mut out = BTreeMap::new();
    for (s, sw) in c.workloads.iter().enumerate() {
        for (d, dw) in c.workloads.iter().enumerate() {
            out.insert((sw.key(), dw.key()), e.verdict(s, d).to_string());
        }
    }
    out
}

fn assert_matrix(c: &Cluster, expected_file: &str) {
    let want = expected(expected_file);
    let got = matrix(c);
    let wrong: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|((s, d), v)| {
            format!(
                "{s} -> {d}: want {v}, got {:?}",
                got.get(&(s.clone(), d.clone()))
            )
        })
        .chain(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|(s, d)| format!("{s} -> {d}: not in {expected_file}")),
        )
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn workload<'c>(c: &'c Cluster, key: &str) -> &'c Workload {
    c.workloads
        .iter()
        .find(|w| w.key() == key)
        .unwrap_or_else(|| panic!("no workload {key}: {:?}", keys(c)))
}

fn keys(c: &Cluster) -> Vec<String> {
    c.workloads
        .iter()
        .map(|w| format!("{} [{}]", w.key(), w.kind))
        .collect()
}

fn label(w: &Workload, k: &str) -> Option<String> {
    w.labels.get(k).cloned()
}

#[test]
fn kubectl_dump_of_running_pods_groups_them_by_owner() {
    let c = load("kubectl-get-all.yaml");
    assert_eq!(
        keys(&c),
        [
            "shop/web [Deployment]",
            "shop/api-6f7d9c8b5 [ReplicaSet]",
            "shop/db [StatefulSet]",
            "shop/report-28901234 [Job]",
            "monitoring/node-agent [DaemonSet]",
            "kube-system/kube-apiserver-cp1 [Pod]",
        ]
    );
    // Pod -> ReplicaSet -> Deployment: named after the top owner, the ReplicaSets folded in (the
    // scaled-down old one too), labels from the running pods.
    let web = workload(&c, "shop/web");
    assert_eq!(web.pods, ["web-5c9f8d7b6-abcde", "web-5c9f8d7b6-fghij"]);
    assert_eq!(
        web.via,
        ["ReplicaSet web-5c9f8d7b6", "ReplicaSet web-84d7c6f5a"]
    );
    assert!(web.owner_in_input);
    assert_eq!(web.replicas, 2);
    assert_eq!(
        label(web, "pod-template-hash").as_deref(),
        Some("5c9f8d7b6")
    );
    assert_eq!(label(web, "version"), None);
    // Owners not in the dump: the pods stand for them.
    for (key, kind) in [
        ("shop/api-6f7d9c8b5", "ReplicaSet"),
        ("shop/report-28901234", "Job"),
        ("monitoring/node-agent", "DaemonSet"),
    ] {
        let w = workload(&c, key);
        assert_eq!((w.kind.as_str(), w.owner_in_input), (kind, false), "{key}");
        assert!(w.via.is_empty(), "{key}");
    }
    assert_eq!(workload(&c, "monitoring/node-agent").pods.len(), 2);
    // StatefulSet: the labels every pod carries; db-0's extra role=primary is a variant.
    let db = workload(&c, "shop/db");
    assert_eq!(db.pods, ["db-0", "db-1"]);
    assert_eq!(label(db, "role"), None);
    assert_eq!(label(db, "statefulset.kubernetes.io/pod-name"), None);
    assert_eq!(
        label(db, "controller-revision-hash").as_deref(),
        Some("db-6d5c8b9f7")
    );
    assert!(db.pvcs.contains(&"data".to_owned()), "{:?}", db.pvcs);
    // The static pod is its own workload, node traffic.
    let api = workload(&c, "kube-system/kube-apiserver-cp1");
    assert_eq!(api.static_pod_of.as_deref(), Some("cp1"));
    assert!(api.host_network);
    assert_matrix(&c, "kubectl-get-all.expected");
}

/// db-0's labels (role=primary) admit the report Job, which the workload's do not: said once,
/// naming the pod, the label and the peer. db-1's extra pod-name label changes nothing: no note.
#[test]
fn pods_whose_labels_change_a_decision_are_reported() {
    let c = load("kubectl-get-all.yaml");
    let variants: Vec<&[String]> = c.label_variants.iter().map(|v| v.pods.as_slice()).collect();
    assert_eq!(variants, [["db-0"], ["db-1"]]);
    let notes = sigil_reach::groups::variant_notes(&c);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    let n = &notes[0];
    assert!(n.starts_with("pods db-0 of StatefulSet shop/db"), "{n}");
    assert!(n.contains("+role=primary"), "{n}");
    assert!(
        n.contains("from shop/report-28901234: workload none, these pods TCP/5432"),
        "{n}"
    );
    assert!(!n.contains("db-1"), "{n}");
}

#[test]
fn typed_lists_load_and_group_by_owner() {
    let c = load("typed-lists");
    let mut got = keys(&c);
    got.sort();
    assert_eq!(
        got,
        [
            "data/vectordb [StatefulSet]",
            "kube-system/node-cache [DaemonSet]",
            "ml/etl [CronJob]",
            "ml/notebook [Pod]",
            "ml/trainer [Deployment]",
        ]
    );
    let trainer = workload(&c, "ml/trainer");
    assert_eq!(trainer.via, ["ReplicaSet trainer-7c6b5a4d3"]);
    assert_eq!(trainer.pods.len(), 2);
    assert!(trainer.owner_in_input);
    // Pod -> Job (in the input) -> CronJob (not): the CronJob's group.
    let etl = workload(&c, "ml/etl");
    assert_eq!(etl.via, ["Job etl-29000000"]);
    assert!(!etl.owner_in_input);
    assert_eq!(etl.pods, ["etl-29000000-zzzzz"]);
    let cache = workload(&c, "kube-system/node-cache");
    assert!(cache.owner_in_input);
    assert_eq!(cache.replicas, 2);
    assert_eq!(c.policies.len(), 5);
    assert_eq!(c.namespaces["data"].labels["tier"], "data");
    // vectordb's pods differ only in statefulset.kubernetes.io/pod-name: variants, no note.
    assert_eq!(c.label_variants.len(), 2);
    assert!(sigil_reach::groups::variant_notes(&c).is_empty());
    assert_matrix(&c, "typed-lists.expected");
}

/// Manifests without pods are unchanged: a Deployment is one workload with its template's labels.
#[test]
fn manifests_without_owner_references_are_one_workload_per_owner() {
    let objs = sigil_kube::load_str(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: a}\nspec:\n  replicas: 3\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: []}\n---\napiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web-1, namespace: a, ownerReferences: [{kind: Deployment, name: web, controller: true, apiVersion: apps/v1, uid: u}]}\nspec:\n  template:\n    metadata: {labels: {app: web, pod-template-hash: '1'}}\n    spec: {containers: []}\n",
        Path::new("m.yaml"),
    )
    .unwrap();
    let c = Cluster::from_objects(&objs, Settings::default()).unwrap();
    assert_eq!(keys(&c), ["a/web [Deployment]"]);
    let w = &c.workloads[0];
    assert_eq!(
        (w.replicas, w.via.as_slice()),
        (3, ["ReplicaSet web-1".to_owned()].as_slice())
    );
    assert_eq!(
        w.labels,
        BTreeMap::from([("app".to_owned(), "web".to_owned())])
    );
}
