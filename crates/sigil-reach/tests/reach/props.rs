//! Property tests: the fast engine agrees with the reference evaluator on random namespaces, pods
//! and NetworkPolicies, for every pair and a set of probe ports; and arbitrary bytes never make
//! model building panic.

use proptest::prelude::*;
use serde_json::{Value, json};
use sigil_reach::ipset::Cidr;
use sigil_reach::{Engine, Proto, Settings};

use crate::common::{cluster, ref_world};

const KEYS: &[&str] = &["app", "tier", "team"];
const VALS: &[&str] = &["x", "y", "z"];
const PORT_NAMES: &[&str] = &["http", "pg", "dns"];
const POLICY_TYPES: &[&[&str]] = &[&["Ingress"], &["Egress"], &["Ingress", "Egress"], &[]];
const PROBES: &[u16] = &[53, 80, 443, 5432, 5433, 8080, 8081, 9000];

fn labels() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(
        proptest::sample::select(KEYS).prop_map(str::to_owned),
        proptest::sample::select(VALS).prop_map(str::to_owned),
        0..3,
    )
    .prop_map(|m| json!(m))
}

fn selector() -> impl Strategy<Value = Value> {
    let expr = (
        proptest::sample::select(KEYS),
        proptest::sample::select(&["In", "NotIn", "Exists", "DoesNotExist"][..]),
        proptest::collection::vec(proptest::sample::select(VALS), 1..3),
    )
        .prop_map(|(k, op, vals)| match op {
            "In" | "NotIn" => json!({"key": k, "operator": op, "values": vals}),
            _ => json!({"key": k, "operator": op}),
        });
    (labels(), proptest::collection::vec(expr, 0..2)).prop_map(|(ml, ex)| {
        let mut s = serde_json::Map::new();
        if ml.as_object().is_some_and(|m| !m.is_empty()) {
            s.insert("matchLabels".into(), ml);
        }
        if !ex.is_empty() {
            s.insert("matchExpressions".into(), json!(ex));
        }
        Value::Object(s)
    })
}

fn peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        selector().prop_map(|p| json!({"podSelector": p})),
        selector().prop_map(|n| json!({"namespaceSelector": n})),
        (selector(), selector())
            .prop_map(|(n, p)| json!({"namespaceSelector": n, "podSelector": p})),
        (
            proptest::sample::select(
                &["10.0.0.0/8", "10.0.0.0/24", "0.0.0.0/0", "192.168.0.0/16"][..]
            ),
            any::<bool>()
        )
            .prop_map(|(c, ex)| if ex && c != "10.0.0.0/24" {
                json!({"ipBlock": {"cidr": c, "except": ["10.0.0.0/28"]}})
            } else {
                json!({"ipBlock": {"cidr": c}})
            }),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    let proto = proptest::option::of(proptest::sample::select(&["TCP", "UDP"][..]));
    let value = prop_oneof![
        Just(Value::Null),
        proptest::sample::select(PROBES).prop_map(|p| json!(p)),
        proptest::sample::select(PORT_NAMES).prop_map(|n| json!(n)),
        (proptest::sample::select(PROBES), 0u16..3000)
            .prop_map(|(p, w)| json!({"range": [p, p.saturating_add(w)]})),
    ];
    (proto, value).prop_map(|(pr, v)| {
        let mut m = serde_json::Map::new();
        if let Some(pr) = pr {
            m.insert("protocol".into(), json!(pr));
        }
        match v {
            Value::Null => {}
            Value::Object(r) => {
                let r = r.get("range").cloned().unwrap_or_default();
                m.insert("port".into(), r[0].clone());
                m.insert("endPort".into(), r[1].clone());
            }
            other => {
                m.insert("port".into(), other);
            }
        }
        Value::Object(m)
    })
}

/// `None` = absent; otherwise a list (possibly empty).
fn list<T: Strategy<Value = Value>>(s: T, max: usize) -> impl Strategy<Value = Option<Vec<Value>>> {
    proptest::option::of(proptest::collection::vec(s, 0..max))
}

fn rule(peer_key: &'static str) -> impl Strategy<Value = Value> {
    (list(peer(), 3), list(port(), 3)).prop_map(move |(peers, ports)| {
        let mut m = serde_json::Map::new();
        if let Some(p) = peers {
            m.insert(peer_key.into(), json!(p));
        }
        if let Some(p) = ports {
            m.insert("ports".into(), json!(p));
        }
        Value::Object(m)
    })
}

fn policy(i: usize) -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(&["n0", "n1", "n2"][..]),
        selector(),
        proptest::option::of(proptest::sample::select(POLICY_TYPES)),
        list(rule("from"), 3),
        list(rule("to"), 3),
    )
        .prop_map(move |(ns, sel, types, ing, eg)| {
            let mut spec = serde_json::Map::new();
            spec.insert("podSelector".into(), sel);
            if let Some(t) = types {
                spec.insert("policyTypes".into(), json!(t));
            }
            if let Some(r) = ing {
                spec.insert("ingress".into(), json!(r));
            }
            if let Some(r) = eg {
                spec.insert("egress".into(), json!(r));
            }
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": format!("p{i}"), "namespace": ns}, "spec": spec})
        })
}

fn pod(i: usize) -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(&["n0", "n1", "n2"][..]),
        labels(),
        proptest::collection::vec((proptest::sample::select(PORT_NAMES), proptest::sample::select(PROBES), any::<bool>()), 0..3),
        proptest::bool::weighted(0.15),
    )
        .prop_map(move |(ns, labels, ports, host)| {
            let mut seen = std::collections::BTreeSet::new();
            let ports: Vec<Value> = ports
                .into_iter()
                .filter(|(n, _, _)| seen.insert(*n))
                .map(|(n, p, udp)| json!({"name": n, "containerPort": p, "protocol": if udp { "UDP" } else { "TCP" }}))
                .collect();
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("pod{i}"), "namespace": ns, "labels": labels},
                   "spec": {"hostNetwork": host, "containers": [{"name": "c", "image": "x", "ports": ports}]}})
        })
}

fn world() -> impl Strategy<Value = (String, bool)> {
    (
        proptest::collection::vec(labels(), 3),
        (0usize..7).prop_flat_map(|n| (0..n).map(pod).collect::<Vec<_>>()),
        (0usize..5).prop_flat_map(|n| (0..n).map(policy).collect::<Vec<_>>()),
        any::<bool>(),
    )
        .prop_map(|(ns_labels, pods, pols, node)| {
            let mut docs = Vec::new();
            for (i, l) in ns_labels.into_iter().enumerate() {
                docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("n{i}"), "labels": l}}));
            }
            docs.extend(pods);
            docs.extend(pols);
            let text = docs.iter().map(|d| format!("---\n{d}\n")).collect::<String>();
            (text, node)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_reference((yaml, node) in world()) {
        let node_ip = "10.0.0.5";
        let settings = if node {
            Settings { node_cidrs: vec![Cidr::parse(node_ip).unwrap()] }
        } else {
            Settings::default()
        };
        // Random policies may be invalid (the API server would reject them); then both sides
        // have nothing to compare.
        let Ok(c) = cluster(&yaml, settings) else { return Ok(()) };
        let e = Engine::new(&c);
        let w = ref_world(&yaml, &c, if node { vec![node_ip.parse().unwrap()] } else { vec![] });
        let matrix: std::collections::BTreeMap<(usize, usize), sigil_reach::PortSet> =
            e.matrix().into_iter().map(|(s, d, p)| ((s, d), p)).collect();
        for s in 0..c.workloads.len() {
            for d in 0..c.workloads.len() {
                let v = e.verdict(s, d);
                let x = e.explain(s, d);
                prop_assert_eq!(&v, &x.allowed, "verdict vs explain {}->{}", s, d);
                prop_assert_eq!(matrix.get(&(s, d)).cloned().unwrap_or_default(), v.clone());
                for proto in [Proto::Tcp, Proto::Udp] {
                    for &port in PROBES.iter().chain(&[1u16, 65535, 3000]) {
                        let slow = sigil_reach::reference::allowed(&w, s, d, proto.as_str(), i32::from(port));
                        prop_assert_eq!(v.contains(proto, port), slow, "{}->{} {:?}/{}\n{}", s, d, proto, port, yaml);
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_objects_never_panic(kind in proptest::sample::select(&["NetworkPolicy", "Namespace", "Service", "Role", "RoleBinding", "ClusterRoleBinding", "ServiceAccount", "Deployment", "Pod"][..]),
                                     junk in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&junk).replace("---", "");
        let doc = format!("apiVersion: v1\nkind: {kind}\nmetadata: {{name: a, namespace: b}}\nspec: {}\n", serde_json::to_string(&text).unwrap());
        if let Ok(objs) = sigil_kube::load_str(&doc, std::path::Path::new("junk.yaml")) {
            let _ = sigil_reach::Cluster::from_objects(&objs, Settings::default());
        }
    }
}
