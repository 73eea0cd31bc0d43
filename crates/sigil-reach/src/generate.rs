//! Least-privilege NetworkPolicies from `sigil.yaml` flows: per namespace a default deny for
//! ingress and egress and DNS to kube-dns; per workload one ingress and one egress policy that
//! allow exactly its declared flows. Kubernetes NetworkPolicy or CiliumNetworkPolicy output.
//!
//! Exactly the declared flows: traffic between the pods of one workload (DDP rendezvous,
//! database replication) is allowed only when sigil.yaml declares it as a flow from the workload
//! to itself. Workloads on the host network (`hostNetwork: true`) are node traffic: NetworkPolicy
//! cannot select them, so flows to them become egress to the node addresses (`--node-cidr`) and
//! flows from them ingress from those addresses; their own traffic is reported as not
//! restrictable by NetworkPolicy.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sigil_policy::{Flow, Policy, Workload};

use crate::error::ReachError;
use crate::ipset::Cidr;
use crate::model::NS_NAME_LABEL;
use crate::ports::Proto;

/// Output flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Kubernetes,
    Cilium,
}

/// Options for generation.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Addresses of workloads outside Kubernetes (e.g. `model-sync` on GPU hosts), by name.
    pub external: BTreeMap<String, Vec<Cidr>>,
    /// Node addresses: where traffic of hostNetwork workloads comes from and goes to.
    pub node_cidrs: Vec<Cidr>,
    /// The namespace and labels of the cluster DNS pods.
    pub dns_namespace: Option<String>,
    pub dns_labels: Option<BTreeMap<String, String>>,
}

/// Generated objects and what could not be expressed.
#[derive(Debug, Clone)]
pub struct Generated {
    pub objects: Vec<Value>,
    /// Flows that could not be turned into policy, with the reason.
    pub warnings: Vec<String>,
}

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

fn k8s_of(w: &Workload) -> Option<&sigil_policy::K8sSelector> {
    w.kubernetes.as_ref()
}

fn ports_json(flow: &Flow) -> Vec<Value> {
    let proto = Proto::from(flow.protocol).as_str();
    flow.ports
        .iter()
        .map(|p| json!({"protocol": proto, "port": p}))
        .collect()
}

fn meta(name: &str, ns: &str, flow_note: Option<&str>) -> Value {
    let mut m = json!({
        "name": name,
        "namespace": ns,
        "labels": { MANAGED_BY: "sigil" },
    });
    if let (Some(n), Some(obj)) = (flow_note, m.as_object_mut()) {
        obj.insert("annotations".into(), json!({"sigil.dev/flows": n}));
    }
    m
}

fn describe(flows: &[&Flow]) -> String {
    flows
        .iter()
        .map(|f| {
            let ports: Vec<String> = f.ports.iter().map(u16::to_string).collect();
            format!("{}->{}:{}", f.from, f.to, ports.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Generates the policies.
pub fn generate(policy: &Policy, flavor: Flavor, opts: &Options) -> Result<Generated, ReachError> {
    let mut warnings = Vec::new();
    let dns_ns = opts
        .dns_namespace
        .clone()
        .unwrap_or_else(|| "kube-system".into());
    let dns_labels = opts
        .dns_labels
        .clone()
        .unwrap_or_else(|| BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]));
    // Workloads that live in Kubernetes must be selectable by labels: NetworkPolicy cannot select
    // by service account.
    for w in &policy.workloads {
        if let Some(k) = k8s_of(w)
            && k.pod_labels.is_empty()
        {
            return Err(ReachError::Generate(format!(
                "workload {:?} has no kubernetes.podLabels, so a NetworkPolicy cannot select it (it would select every pod in namespace {})\nhint: add podLabels to workloads[{}] in {}",
                w.name,
                k.namespace,
                policy
                    .workloads
                    .iter()
                    .position(|x| x.name == w.name)
                    .unwrap_or_default(),
                policy.source.display()
            )));
        }
    }
    let namespaces: BTreeSet<&str> = policy
        .workloads
        .iter()
        .filter_map(k8s_of)
        .map(|k| k.namespace.as_str())
        .collect();
    let mut objects = Vec::new();
    for ns in &namespaces {
        match flavor {
            Flavor::Kubernetes => {
                objects.push(json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": meta("sigil-default-deny", ns, None),
                    "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"] },
                }));
                objects.push(json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": meta("sigil-allow-dns", ns, None),
                    "spec": {
                        "podSelector": {},
                        "policyTypes": ["Egress"],
                        "egress": [{
                            "to": [{
                                "namespaceSelector": {"matchLabels": {NS_NAME_LABEL: dns_ns}},
                                "podSelector": {"matchLabels": dns_labels},
                            }],
                            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                        }],
                    },
                }));
            }
            Flavor::Cilium => {
                let mut dns_sel: BTreeMap<String, String> = dns_labels
                    .iter()
                    .map(|(k, v)| (format!("k8s:{k}"), v.clone()))
                    .collect();
                dns_sel.insert("k8s:io.kubernetes.pod.namespace".into(), dns_ns.clone());
                objects.push(json!({
                    "apiVersion": "cilium.io/v2",
                    "kind": "CiliumNetworkPolicy",
                    "metadata": meta("sigil-default-deny-allow-dns", ns, None),
                    "spec": {
                        "endpointSelector": {},
                        "ingress": [{}],
                        "egress": [{
                            "toEndpoints": [{"matchLabels": dns_sel}],
                            "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}]}],
                        }],
                    },
                }));
            }
        }
    }
    for w in &policy.workloads {
        let Some(k) = k8s_of(w) else { continue };
        if k.host_network {
            warnings.push(format!(
                "{} uses the host network: NetworkPolicy cannot select it, so traffic to and from it is restricted only on its peers' side; hint: a host firewall or Cilium host policies cover the node itself",
                w.name
            ));
            continue;
        }
        let mut ingress = Vec::new();
        let mut in_flows = Vec::new();
        for f in policy.flows_to(&w.name) {
            let Some(src) = policy.workload(&f.from) else {
                continue;
            };
            let Some(peers) = peers_of(flavor, src, opts, f, &mut warnings) else {
                continue;
            };
            ingress.push(rule(flavor, "from", peers, f));
            in_flows.push(f);
        }
        let mut egress = Vec::new();
        let mut out_flows = Vec::new();
        for f in policy.flows_from(&w.name) {
            let Some(dst) = policy.workload(&f.to) else {
                continue;
            };
            let Some(peers) = peers_of(flavor, dst, opts, f, &mut warnings) else {
                continue;
            };
            egress.push(rule(flavor, "to", peers, f));
            out_flows.push(f);
        }
        let sel = json!({"matchLabels": k.pod_labels});
        for (dir, rules, flows) in [
            ("ingress", ingress, in_flows),
            ("egress", egress, out_flows),
        ] {
            if rules.is_empty() {
                continue;
            }
            let name = format!("sigil-{}-{dir}", w.name);
            let note = describe(&flows);
            let obj = match flavor {
                Flavor::Kubernetes => json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": meta(&name, &k.namespace, Some(&note)),
                    "spec": {
                        "podSelector": sel,
                        "policyTypes": [if dir == "ingress" { "Ingress" } else { "Egress" }],
                        dir: rules,
                    },
                }),
                Flavor::Cilium => json!({
                    "apiVersion": "cilium.io/v2",
                    "kind": "CiliumNetworkPolicy",
                    "metadata": meta(&name, &k.namespace, Some(&note)),
                    "spec": { "endpointSelector": sel, dir: rules },
                }),
            };
            objects.push(obj);
        }
    }
    Ok(Generated { objects, warnings })
}

/// The peers a flow's other end `other` is selected by: its pods, the node addresses for a
/// hostNetwork workload, the given addresses for one outside Kubernetes. `None` (with a warning)
/// when it cannot be expressed.
fn peers_of(
    flavor: Flavor,
    other: &Workload,
    opts: &Options,
    f: &Flow,
    warnings: &mut Vec<String>,
) -> Option<Vec<Value>> {
    let (cidrs, hint) = match (k8s_of(other), opts.external.get(&other.name)) {
        (Some(k), _) if !k.host_network => return Some(vec![peer(flavor, k)]),
        (Some(_), _) => (
            &opts.node_cidrs,
            format!(
                "{} uses the host network; hint: pass --node-cidr with the node addresses",
                other.name
            ),
        ),
        (None, Some(cidrs)) => return Some(cidrs.iter().map(|c| ip_peer(flavor, c)).collect()),
        (None, None) => {
            warnings.push(format!(
                "flow {}->{} not generated: {} runs outside Kubernetes; hint: pass --external {}=CIDR",
                f.from, f.to, other.name, other.name
            ));
            return None;
        }
    };
    if cidrs.is_empty() {
        warnings.push(format!("flow {}->{} not generated: {hint}", f.from, f.to));
        return None;
    }
    Some(cidrs.iter().map(|c| ip_peer(flavor, c)).collect())
}

fn peer(flavor: Flavor, k: &sigil_policy::K8sSelector) -> Value {
    match flavor {
        Flavor::Kubernetes => json!({
            "namespaceSelector": {"matchLabels": {NS_NAME_LABEL: k.namespace}},
            "podSelector": {"matchLabels": k.pod_labels},
        }),
        Flavor::Cilium => {
            let mut m: BTreeMap<String, String> = k
                .pod_labels
                .iter()
                .map(|(a, b)| (format!("k8s:{a}"), b.clone()))
                .collect();
            m.insert(
                "k8s:io.kubernetes.pod.namespace".into(),
                k.namespace.clone(),
            );
            json!({"matchLabels": m})
        }
    }
}

fn ip_peer(flavor: Flavor, c: &Cidr) -> Value {
    match flavor {
        Flavor::Kubernetes => json!({"ipBlock": {"cidr": c.to_string()}}),
        Flavor::Cilium => json!(c.to_string()),
    }
}

fn rule(flavor: Flavor, dir: &str, peers: Vec<Value>, f: &Flow) -> Value {
    match flavor {
        Flavor::Kubernetes => json!({ dir: peers, "ports": ports_json(f) }),
        Flavor::Cilium => {
            let is_ip = peers.iter().all(Value::is_string);
            let key = match (dir, is_ip) {
                ("from", false) => "fromEndpoints",
                ("from", true) => "fromCIDR",
                (_, false) => "toEndpoints",
                (_, true) => "toCIDR",
            };
            let proto = Proto::from(f.protocol).as_str();
            let ports: Vec<Value> = f
                .ports
                .iter()
                .map(|p| json!({"port": p.to_string(), "protocol": proto}))
                .collect();
            json!({ key: peers, "toPorts": [{"ports": ports}] })
        }
    }
}

/// Renders objects as a multi-document YAML stream.
pub fn to_yaml(objects: &[Value]) -> Result<String, ReachError> {
    let mut out = String::from(
        "# Generated by `sigil netpol generate` from sigil.yaml flows. Do not edit.\n",
    );
    for o in objects {
        out.push_str("---\n");
        let s = serde_saphyr::to_string(o).map_err(|e| ReachError::Render(e.to_string()))?;
        out.push_str(&s);
        if !s.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
