//! The AI-platform scenario: the naive variant leaks (monitoring reaches the vector DB, a notebook
//! reaches model weights through RBAC); the hardened variant (generated policies) allows exactly
//! the declared flows plus DNS. Also the generation round trip through YAML text.

use std::collections::BTreeMap;
use std::path::Path;

use sigil_policy::Policy;
use sigil_reach::blast::{Blast, Item};
use sigil_reach::generate::{self, Flavor, Options};
use sigil_reach::{Cluster, Engine, PortSet, Proto, Settings};

use crate::common::idx;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ai-platform");
/// The example's node subnet: where hostNetwork traffic (node-exporter) comes from.
pub const NODE_CIDR: &str = "10.0.0.0/16";

pub fn node_settings() -> Settings {
    Settings {
        node_cidrs: vec![sigil_reach::ipset::Cidr::parse(NODE_CIDR).unwrap()],
    }
}

pub fn node_options() -> Options {
    Options {
        node_cidrs: vec![sigil_reach::ipset::Cidr::parse(NODE_CIDR).unwrap()],
        ..Options::default()
    }
}

fn policy() -> Policy {
    Policy::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/ai-platform/sigil.yaml"
    )))
    .unwrap()
}

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIX).join(name)).unwrap()
}

fn build(texts: &[String]) -> Cluster {
    let mut objs = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        objs.extend(sigil_kube::load_str(t, Path::new(&format!("doc{i}.yaml"))).unwrap());
    }
    Cluster::from_objects(&objs, node_settings()).unwrap()
}

fn naive() -> Cluster {
    build(&[
        read("workloads.yaml"),
        read("naive-netpol.yaml"),
        read("rbac-notebook-debug.yaml"),
    ])
}

pub fn hardened(p: &Policy) -> (Cluster, Vec<String>) {
    let g = generate::generate(p, Flavor::Kubernetes, &node_options()).unwrap();
    let yaml = generate::to_yaml(&g.objects).unwrap();
    (
        build(&[
            read("workloads.yaml"),
            read("rbac-notebook-debug.yaml"),
            yaml,
        ]),
        g.warnings,
    )
}

fn data_exposed(b: &sigil_reach::blast::BlastRadius, name: &str) -> Option<Vec<String>> {
    b.findings
        .iter()
        .find(|f| matches!(&f.item, Item::Data { name: n, .. } if n == name))
        .map(|f| {
            f.path
                .iter()
                .map(|s| format!("{} [{}]", s.to, s.how))
                .collect()
        })
}

#[test]
fn naive_monitoring_reaches_vector_db() {
    let p = policy();
    let c = naive();
    let e = Engine::new(&c);
    let v = e.verdict(
        idx(&c, "monitoring/prometheus"),
        idx(&c, "vectordb/vector-db"),
    );
    assert!(v.contains(Proto::Tcp, 6333), "{v}");
    let because = e
        .explain(
            idx(&c, "monitoring/prometheus"),
            idx(&c, "vectordb/vector-db"),
        )
        .because("prometheus", "vector-db");
    assert!(
        because.contains("vectordb/vector-db-cluster-only ingress[0].from[0]"),
        "{because}"
    );
    let b = Blast::new(&e, Some(&p)).compromised(&[idx(&c, "monitoring/prometheus")]);
    let path = data_exposed(&b, "rag-index").expect("rag-index exposed to prometheus");
    assert!(path[0].contains("connect vectordb/vector-db"), "{path:?}");
}

#[test]
fn naive_notebook_reaches_model_weights_through_rbac() {
    let p = policy();
    let c = naive();
    let e = Engine::new(&c);
    let b = Blast::new(&e, Some(&p)).compromised(&[idx(&c, "notebooks/notebook")]);
    assert!(data_exposed(&b, "model-weights").is_some());
    let exec = b
        .findings
        .iter()
        .find(|f| matches!(&f.item, Item::Exec { workload } if workload == "storage/object-store"))
        .expect("notebook can exec into the object store");
    let hows: Vec<&str> = exec.path.iter().map(|s| s.how.as_str()).collect();
    assert_eq!(
        hows,
        [
            "reads the mounted service-account token",
            "RBAC: may exec into pods in storage"
        ]
    );
    // From there: the volume that holds the weights.
    assert!(
        b.findings
            .iter()
            .any(|f| matches!(&f.item, Item::Pvc { name, .. } if name == "minio-data"))
    );
}

#[test]
fn naive_node_exporter_escapes_to_the_node() {
    let p = policy();
    let c = naive();
    let e = Engine::new(&c);
    let b = Blast::new(&e, Some(&p)).compromised(&[idx(&c, "monitoring/node-exporter")]);
    let node = b
        .findings
        .iter()
        .find(|f| matches!(f.item, Item::Node { .. }))
        .expect("node escape");
    assert!(node.path[0].how.contains("hostPID"), "{:?}", node.path);
    // Everything on the node: the training data through the object store's volume.
    assert!(data_exposed(&b, "training-data").is_some());
}

#[test]
fn hardened_allows_exactly_the_declared_flows_plus_dns() {
    let p = policy();
    let (c, warnings) = hardened(&p);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("model-sync->object-store")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("node-exporter uses the host network")),
        "{warnings:?}"
    );
    let checked = assert_exactly_declared(&p, &c);
    assert_eq!(
        checked, 117,
        "10 pod-network workloads (99 pairs without the unmanaged coredns->coredns), plus node-exporter (hostNetwork) to and from the 9 managed ones"
    );
}

/// Every pair of workloads where at least one side is a sigil.yaml workload: allowed ports are
/// exactly the declared flow, DNS to kube-dns, or nothing. hostNetwork workloads take part as
/// node traffic (only node-to-node pairs are skipped: no NetworkPolicy governs them). Returns the
/// number of pairs checked.
pub fn assert_exactly_declared(p: &Policy, c: &Cluster) -> usize {
    let e = Engine::new(c);
    let name_of =
        |i: usize| sigil_reach::query::policy_workload(p, &c.workloads[i]).map(|w| w.name.clone());
    let is_dns = |i: usize| {
        let w = &c.workloads[i];
        w.namespace == "kube-system"
            && w.labels.get("k8s-app").map(String::as_str) == Some("kube-dns")
    };
    let mut expected: BTreeMap<(String, String), PortSet> = BTreeMap::new();
    for f in &p.flows {
        let mut ports = PortSet::empty();
        for port in &f.ports {
            ports.union_with(&PortSet::single(f.protocol.into(), *port));
        }
        expected.insert((f.from.clone(), f.to.clone()), ports);
    }
    let mut checked = 0;
    let mut node_pairs = 0;
    for s in 0..c.workloads.len() {
        for d in 0..c.workloads.len() {
            let (sw, dw) = (&c.workloads[s], &c.workloads[d]);
            let (sn, dn) = (name_of(s), name_of(d));
            if (sw.host_network && dw.host_network) || (sn.is_none() && dn.is_none()) {
                continue; // node-to-node traffic has no NetworkPolicy; unmanaged pairs are not ours
            }
            let got = e.verdict(s, d);
            let want = match (&sn, &dn) {
                (Some(a), Some(b)) => expected
                    .get(&(a.clone(), b.clone()))
                    .cloned()
                    .unwrap_or_default(),
                (Some(_), None) if is_dns(d) && !sw.host_network => {
                    let mut p = PortSet::single(Proto::Udp, 53);
                    p.union_with(&PortSet::single(Proto::Tcp, 53));
                    p
                }
                // A hostNetwork workload's side is not restrictable: what it reaches among
                // unmanaged pods, and which unmanaged pods reach it, is theirs to decide.
                (Some(_), None) if sw.host_network => continue,
                (None, Some(_)) if dw.host_network => continue,
                _ => PortSet::empty(),
            };
            assert_eq!(
                got,
                want,
                "{} -> {}: {}",
                sw.key(),
                dw.key(),
                e.explain(s, d).because(&sw.key(), &dw.key())
            );
            checked += 1;
            if sw.host_network || dw.host_network {
                node_pairs += 1;
            }
        }
    }
    assert!(node_pairs > 0, "no node traffic was checked");
    checked
}

#[test]
fn hardened_monitoring_reads_no_data_but_rbac_still_exposes_weights() {
    let p = policy();
    let (c, _) = hardened(&p);
    let e = Engine::new(&c);
    let blast = Blast::new(&e, Some(&p));
    let b = blast.compromised(&[idx(&c, "monitoring/prometheus")]);
    assert_eq!(b.data().count(), 0, "{:#?}", b.data().collect::<Vec<_>>());
    assert!(
        !b.findings
            .iter()
            .any(|f| matches!(f.item, Item::Internet { .. }))
    );
    // The network is closed, but the notebook's RBAC still leads to the weights: the graph joins both.
    let b = blast.compromised(&[idx(&c, "notebooks/notebook")]);
    let path = data_exposed(&b, "model-weights").expect("weights via RBAC");
    assert!(
        path.iter()
            .any(|s| s.contains("RBAC: may exec into pods in storage")),
        "{path:?}"
    );
}

#[test]
fn cilium_flavor_has_one_policy_per_direction_and_dns() {
    let p = policy();
    let g = generate::generate(&p, Flavor::Cilium, &node_options()).unwrap();
    let yaml = generate::to_yaml(&g.objects).unwrap();
    let objs = sigil_kube::load_str(&yaml, Path::new("cilium.yaml")).unwrap();
    assert!(objs.iter().all(|o| o.kind == "CiliumNetworkPolicy"));
    let vdb = objs
        .iter()
        .find(|o| o.name == "sigil-vector-db-ingress")
        .unwrap();
    let from = &vdb.raw["spec"]["ingress"];
    // rag-api and rag-ingest: nothing else, not even the vector DB's own pods.
    assert_eq!(from.as_array().unwrap().len(), 2);
    assert_eq!(from[0]["toPorts"][0]["ports"][0]["port"], "6333");
    let deny = objs
        .iter()
        .find(|o| {
            o.name == "sigil-default-deny-allow-dns" && o.namespace.as_deref() == Some("vectordb")
        })
        .unwrap();
    assert_eq!(
        deny.raw["spec"]["egress"][0]["toPorts"][0]["ports"][0]["port"],
        "53"
    );
}

#[test]
fn external_workloads_get_ip_blocks() {
    let p = policy();
    let mut opts = node_options();
    opts.external.insert(
        "model-sync".into(),
        vec![sigil_reach::ipset::Cidr::parse("10.20.0.0/24").unwrap()],
    );
    let g = generate::generate(&p, Flavor::Kubernetes, &opts).unwrap();
    assert_eq!(g.warnings.len(), 1, "{:?}", g.warnings);
    assert!(g.warnings[0].contains("host network"), "{:?}", g.warnings);
    let yaml = generate::to_yaml(&g.objects).unwrap();
    let c = build(&[read("workloads.yaml"), yaml]);
    let e = Engine::new(&c);
    let os = idx(&c, "storage/object-store");
    assert!(
        e.ingress_from_ip(os, "10.20.0.9".parse().unwrap())
            .contains(Proto::Tcp, 9000)
    );
    assert!(
        e.ingress_from_ip(os, "10.21.0.9".parse().unwrap())
            .is_empty()
    );
}

/// Aggregated ClusterRoles carry the rules of the ClusterRoles their `aggregationRule` selects
/// (as the cluster's aggregation controller fills them in), through more than one level.
#[test]
fn aggregated_cluster_roles_grant_the_selected_rules() {
    let rbac = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: debug-exec, labels: {rbac.example.org/aggregate-to-debug: "true"}}
rules:
  - {apiGroups: [""], resources: [pods/exec], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: debug, labels: {rbac.example.org/aggregate-to-support: "true"}}
aggregationRule:
  clusterRoleSelectors:
    - matchLabels: {rbac.example.org/aggregate-to-debug: "true"}
rules: []   # filled in by the controller
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: support}
aggregationRule:
  clusterRoleSelectors:
    - matchExpressions: [{key: rbac.example.org/aggregate-to-support, operator: Exists}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: notebooks-support, namespace: storage}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: support}
subjects:
  - {kind: ServiceAccount, name: jupyter, namespace: notebooks}
"#;
    let p = policy();
    let c = build(&[read("workloads.yaml"), rbac.to_owned()]);
    let support = c.roles.iter().find(|r| r.name == "support").unwrap();
    assert_eq!(support.rules.len(), 1, "{:?}", support.rules);
    let e = Engine::new(&c);
    let b = Blast::new(&e, Some(&p)).compromised(&[idx(&c, "notebooks/notebook")]);
    let exec = b
        .findings
        .iter()
        .find(|f| matches!(&f.item, Item::Exec { workload } if workload == "storage/object-store"))
        .expect("exec into the object store through the aggregated role");
    assert!(
        exec.path
            .iter()
            .any(|s| s.how == "RBAC: may exec into pods in storage"),
        "{:?}",
        exec.path
    );
    // Without the aggregation the same binding grants nothing.
    let plain = rbac.replace(
        "aggregationRule:\n  clusterRoleSelectors:\n    - matchExpressions: [{key: rbac.example.org/aggregate-to-support, operator: Exists}]\n",
        "",
    );
    assert_ne!(plain, rbac);
    let c = build(&[read("workloads.yaml"), plain]);
    let e = Engine::new(&c);
    let b = Blast::new(&e, Some(&p)).compromised(&[idx(&c, "notebooks/notebook")]);
    assert!(
        !b.findings.iter().any(
            |f| matches!(&f.item, Item::Exec { workload } if workload == "storage/object-store")
        )
    );
}
