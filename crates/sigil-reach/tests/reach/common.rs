use std::net::IpAddr;
use std::path::Path;

use sigil_reach::model::Cluster;
use sigil_reach::reference::{RefPod, RefWorld};
use sigil_reach::{Engine, Proto, Settings};

pub fn cluster(yaml: &str, settings: Settings) -> Result<Cluster, sigil_reach::ReachError> {
    let objs = sigil_kube::load_str(yaml, Path::new("test.yaml")).unwrap();
    Cluster::from_objects(&objs, settings)
}

/// The same objects as the reference evaluator sees them.
pub fn ref_world(yaml: &str, c: &Cluster, node_ips: Vec<IpAddr>) -> RefWorld {
    let objs = sigil_kube::load_str(yaml, Path::new("test.yaml")).unwrap();
    let mut w = RefWorld {
        node_ips,
        ..RefWorld::default()
    };
    for o in &objs {
        match o.kind.as_str() {
            "Namespace" => {
                w.namespaces.insert(o.name.clone(), o.labels());
            }
            "NetworkPolicy" => {
                let mut np: sigil_kube::k8s_openapi::api::networking::v1::NetworkPolicy =
                    serde_json::from_value(o.raw.clone()).unwrap();
                np.metadata.namespace =
                    Some(o.namespace.clone().unwrap_or_else(|| "default".into()));
                w.policies.push(np);
            }
            _ => {}
        }
    }
    for n in c.namespaces.keys() {
        w.namespaces.entry(n.clone()).or_default();
    }
    for p in &c.workloads {
        w.pods.push(RefPod {
            namespace: p.namespace.clone(),
            labels: p.labels.clone(),
            host_network: p.host_network,
            named_ports: p
                .named_ports
                .iter()
                .map(|(n, pr, v)| (n.clone(), pr.as_str().to_owned(), i32::from(*v)))
                .collect(),
        });
    }
    w
}

pub fn idx(c: &Cluster, key: &str) -> usize {
    c.workloads
        .iter()
        .position(|w| w.key() == key)
        .unwrap_or_else(|| panic!("no workload {key}"))
}

/// Decides a connection with the fast engine and the reference, asserts they agree, returns it.
pub fn decide(
    yaml: &str,
    settings: Settings,
    node_ips: Vec<IpAddr>,
    src: &str,
    dst: &str,
    proto: Proto,
    port: u16,
) -> bool {
    let c = cluster(yaml, settings).unwrap();
    let e = Engine::new(&c);
    let (s, d) = (idx(&c, src), idx(&c, dst));
    let fast = e.verdict(s, d).contains(proto, port);
    let explained = e.explain(s, d).allowed.contains(proto, port);
    let w = ref_world(yaml, &c, node_ips);
    let slow = sigil_reach::reference::allowed(&w, s, d, proto.as_str(), i32::from(port));
    assert_eq!(
        fast, slow,
        "engine and reference disagree on {src}->{dst} {proto:?}/{port}"
    );
    assert_eq!(
        fast, explained,
        "verdict and explanation disagree on {src}->{dst}"
    );
    fast
}
