//! A deliberately simple reference evaluator of NetworkPolicy semantics, written straight from
//! the Kubernetes documentation, one connection at a time, on the k8s-openapi objects themselves.
//! It shares no code with [`crate::engine`]; property tests compare the two on random policies.
//! Slow on purpose: no precomputation, no bitsets.

use std::collections::BTreeMap;
use std::net::IpAddr;

use sigil_kube::k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use sigil_kube::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use sigil_kube::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A pod as the reference sees it.
#[derive(Debug, Clone)]
pub struct RefPod {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub host_network: bool,
    /// (name, protocol, number)
    pub named_ports: Vec<(String, String, i32)>,
}

/// The world the reference evaluates in.
#[derive(Debug, Clone, Default)]
pub struct RefWorld {
    /// Namespace name -> labels as written (the metadata.name label is added here).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub pods: Vec<RefPod>,
    pub policies: Vec<NetworkPolicy>,
    /// Node addresses (as single IPs) that hostNetwork traffic comes from.
    pub node_ips: Vec<IpAddr>,
}

fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &sel.match_labels {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return false;
            }
        }
    }
    if let Some(me) = &sel.match_expressions {
        for e in me {
            let vals = e.values.clone().unwrap_or_default();
            let ok = match e.operator.as_str() {
                "In" => labels
                    .get(&e.key)
                    .map(|v| vals.contains(v))
                    .unwrap_or(false),
                "NotIn" => match labels.get(&e.key) {
                    Some(v) => !vals.contains(v),
                    None => true,
                },
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

fn ns_labels(w: &RefWorld, ns: &str) -> BTreeMap<String, String> {
    let mut l = w.namespaces.get(ns).cloned().unwrap_or_default();
    l.insert("kubernetes.io/metadata.name".into(), ns.into());
    l
}

fn policy_ns(p: &NetworkPolicy) -> String {
    p.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

fn selects(p: &NetworkPolicy, pod: &RefPod) -> bool {
    if pod.host_network || policy_ns(p) != pod.namespace {
        return false;
    }
    let spec = p.spec.clone().unwrap_or_default();
    selector_matches(&spec.pod_selector.unwrap_or_default(), &pod.labels)
}

fn has_type(p: &NetworkPolicy, t: &str) -> bool {
    let spec = p.spec.clone().unwrap_or_default();
    match spec.policy_types {
        Some(types) if !types.is_empty() => types.iter().any(|x| x == t),
        _ => t == "Ingress" || (t == "Egress" && spec.egress.map(|e| e.len()).unwrap_or(0) > 0),
    }
}

fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let Some((a, p)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(a), Ok(p)) = (a.parse::<IpAddr>(), p.parse::<u32>()) else {
        return false;
    };
    match (a, ip) {
        (IpAddr::V4(a), IpAddr::V4(ip)) => {
            if p == 0 {
                return true;
            }
            let mask = u32::MAX << (32 - p.min(32));
            (u32::from(a) & mask) == (u32::from(ip) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(ip)) => {
            if p == 0 {
                return true;
            }
            let mask = u128::MAX << (128 - p.min(128));
            (u128::from(a) & mask) == (u128::from(ip) & mask)
        }
        _ => false,
    }
}

/// Whether the peer matches `other` (the pod at the far end), seen from a policy in `pol_ns`.
fn peer_matches(w: &RefWorld, peer: &NetworkPolicyPeer, pol_ns: &str, other: &RefPod) -> bool {
    if let Some(b) = &peer.ip_block {
        if !other.host_network || w.node_ips.is_empty() {
            return false;
        }
        // Node traffic matches when every node address is inside cidr and outside the excepts.
        return w.node_ips.iter().all(|ip| {
            cidr_contains(&b.cidr, *ip)
                && !b
                    .except
                    .clone()
                    .unwrap_or_default()
                    .iter()
                    .any(|e| cidr_contains(e, *ip))
        });
    }
    if other.host_network {
        return false;
    }
    let ns_ok = match &peer.namespace_selector {
        Some(ns) => selector_matches(ns, &ns_labels(w, &other.namespace)),
        None => other.namespace == pol_ns,
    };
    let pod_ok = match &peer.pod_selector {
        Some(ps) => selector_matches(ps, &other.labels),
        None => true,
    };
    ns_ok && pod_ok
}

fn port_matches(
    ports: &Option<Vec<NetworkPolicyPort>>,
    dst: &RefPod,
    proto: &str,
    port: i32,
) -> bool {
    let Some(ports) = ports else { return true };
    if ports.is_empty() {
        return true;
    }
    ports.iter().any(|pp| {
        if pp.protocol.clone().unwrap_or_else(|| "TCP".into()) != proto {
            return false;
        }
        match &pp.port {
            None => true,
            Some(IntOrString::Int(p)) => {
                let end = pp.end_port.unwrap_or(*p);
                *p <= port && port <= end
            }
            Some(IntOrString::String(name)) => dst
                .named_ports
                .iter()
                .any(|(n, pr, v)| n == name && pr == proto && *v == port),
        }
    })
}

fn peers_match(
    w: &RefWorld,
    peers: &Option<Vec<NetworkPolicyPeer>>,
    pol_ns: &str,
    other: &RefPod,
) -> bool {
    match peers {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list.iter().any(|p| peer_matches(w, p, pol_ns, other)),
    }
}

/// Whether `src` may open a connection to `dst` on `proto`/`port`.
pub fn allowed(w: &RefWorld, src: usize, dst: usize, proto: &str, port: i32) -> bool {
    let (Some(s), Some(d)) = (w.pods.get(src), w.pods.get(dst)) else {
        return false;
    };
    // Egress of the source.
    let eg_pols: Vec<&NetworkPolicy> = w
        .policies
        .iter()
        .filter(|p| selects(p, s) && has_type(p, "Egress"))
        .collect();
    let egress_ok = eg_pols.is_empty()
        || eg_pols.iter().any(|p| {
            let ns = policy_ns(p);
            p.spec
                .clone()
                .unwrap_or_default()
                .egress
                .unwrap_or_default()
                .iter()
                .any(|r| peers_match(w, &r.to, &ns, d) && port_matches(&r.ports, d, proto, port))
        });
    if !egress_ok {
        return false;
    }
    let in_pols: Vec<&NetworkPolicy> = w
        .policies
        .iter()
        .filter(|p| selects(p, d) && has_type(p, "Ingress"))
        .collect();
    in_pols.is_empty()
        || in_pols.iter().any(|p| {
            let ns = policy_ns(p);
            p.spec
                .clone()
                .unwrap_or_default()
                .ingress
                .unwrap_or_default()
                .iter()
                .any(|r| peers_match(w, &r.from, &ns, s) && port_matches(&r.ports, d, proto, port))
        })
}
