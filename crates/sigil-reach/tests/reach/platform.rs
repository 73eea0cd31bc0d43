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
    Cluster::from_objects(&objs, Settings::default()).unwrap()
}

fn naive() -> Cluster {
    build(&[
        read("workloads.yaml"),
        read("naive-netpol.yaml"),
        read("rbac-notebook-debug.yaml"),
    ])
}

pub fn hardened(p: &Policy) -> (Cluster, Vec<String>) {
    let g = generate::generate(p, Flavor::Kubernetes, &Options::default()).unwrap();
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
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("model-sync->object-store"),
        "{warnings:?}"
    );
    let checked = assert_exactly_declared(&p, &c);
    assert_eq!(
        checked, 99,
        "10 pod-network workloads, minus the unmanaged coredns->coredns pair"
    );
}

/// Every pair of pod-network workloads where at least one side is a sigil.yaml workload: allowed
/// ports are exactly the declared flow (or the workload's own ports inside one workload), DNS to
/// kube-dns, or nothing. Returns the number of pairs checked.
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
    // Traffic inside one workload: its own declared ports.
    for w in &p.workloads {
        let mut ports = PortSet::empty();
        for port in &w.ports {
            ports.union_with(&PortSet::single(port.protocol.into(), port.port));
        }
        expected.insert((w.name.clone(), w.name.clone()), ports);
    }
    let mut checked = 0;
    for s in 0..c.workloads.len() {
        for d in 0..c.workloads.len() {
            let (sw, dw) = (&c.workloads[s], &c.workloads[d]);
            let (sn, dn) = (name_of(s), name_of(d));
            if sw.host_network || dw.host_network || (sn.is_none() && dn.is_none()) {
                continue; // node traffic is checked separately; unmanaged pairs are not ours
            }
            let got = e.verdict(s, d);
            let want = match (&sn, &dn) {
                (Some(a), Some(b)) => expected
                    .get(&(a.clone(), b.clone()))
                    .cloned()
                    .unwrap_or_default(),
                (Some(_), None) if is_dns(d) => {
                    let mut p = PortSet::single(Proto::Udp, 53);
                    p.union_with(&PortSet::single(Proto::Tcp, 53));
                    p
                }
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
        }
    }
    // node-exporter is hostNetwork: pod selectors cannot match it, so the declared flow
    // prometheus->node-exporter needs an ipBlock for the node addresses. Reported, not hidden.
    for (s, sw) in c.workloads.iter().enumerate() {
        for (d, dw) in c.workloads.iter().enumerate() {
            if dw.host_network && !sw.host_network && name_of(s).is_some() {
                let x = e.explain(s, d);
                assert!(
                    x.ingress
                        .note
                        .as_deref()
                        .unwrap_or_default()
                        .contains("hostNetwork")
                );
            }
        }
    }
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
    let g = generate::generate(&p, Flavor::Cilium, &Options::default()).unwrap();
    let yaml = generate::to_yaml(&g.objects).unwrap();
    let objs = sigil_kube::load_str(&yaml, Path::new("cilium.yaml")).unwrap();
    assert!(objs.iter().all(|o| o.kind == "CiliumNetworkPolicy"));
    let vdb = objs
        .iter()
        .find(|o| o.name == "sigil-vector-db-ingress")
        .unwrap();
    let from = &vdb.raw["spec"]["ingress"];
    // rag-api, rag-ingest, and the vector DB's own two ports (traffic inside the workload).
    assert_eq!(from.as_array().unwrap().len(), 4);
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
    let mut opts = Options::default();
    opts.external.insert(
        "model-sync".into(),
        vec![sigil_reach::ipset::Cidr::parse("10.20.0.0/24").unwrap()],
    );
    let g = generate::generate(&p, Flavor::Kubernetes, &opts).unwrap();
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
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
