//! The cluster model: namespaces, workloads (grouped by owner, labels from the pod template),
//! NetworkPolicies compiled to rules, Services, RBAC and storage objects. Built from typed
//! k8s-openapi objects decoded from `serde_json::Value`; loading files is the caller's job
//! (`sigil-kube`). Owns: validation of the NetworkPolicy fields the API server would reject.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sigil_kube::k8s_openapi::api::core::v1::{Namespace, PodSpec, Service};
use sigil_kube::k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use sigil_kube::k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding,
};
use sigil_kube::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::error::ReachError;
use crate::ipset::{Cidr, IpSet};
use crate::ports::{PortSet, Proto};
use crate::selector::Selector;

/// The label every namespace carries implicitly.
pub const NS_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A namespace and its labels (always including `kubernetes.io/metadata.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ns {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Whether a Namespace object was given (otherwise it is implied by the objects in it).
    pub declared: bool,
}

/// Where a secret reaches a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretUse {
    Volume,
    Env,
}

/// A workload: the pods of one owner (Deployment, StatefulSet, Job, bare Pod, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `file:line` or similar, for messages.
    pub source: String,
    pub replicas: u32,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Whether the service-account token is mounted (pod setting; `None` = default, mounted).
    pub automount_token: Option<bool>,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub privileged: bool,
    pub capabilities: BTreeSet<String>,
    pub host_paths: Vec<String>,
    /// Named container ports: name -> (protocol, number).
    pub named_ports: Vec<(String, Proto, u16)>,
    pub secrets: Vec<(String, SecretUse)>,
    pub pvcs: Vec<String>,
    pub node_name: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    /// Names of the running Pods folded into this workload (empty for a workload known only from
    /// its owner's manifest).
    pub pods: Vec<String>,
    /// Owners in the input between the pods and this workload's owner, e.g.
    /// `ReplicaSet web-7d4b9c` for Pod -> ReplicaSet -> Deployment.
    pub via: Vec<String>,
    /// Whether the object this workload is named after is in the input; `false` when pods (or a
    /// ReplicaSet) stand for a controller owner that was not given.
    pub owner_in_input: bool,
    /// A static (mirror) pod: the Node whose kubelet runs it from a manifest file.
    pub static_pod_of: Option<String>,
}

impl Workload {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Resolves a named port on this pod.
    pub fn named_port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|(n, p, _)| n == name && *p == proto)
            .map(|(_, _, v)| *v)
    }
}

/// Which namespaces a pod peer looks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsScope {
    /// The policy's own namespace (no `namespaceSelector`).
    Own(String),
    Selector(Selector),
}

/// One entry of `from`/`to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Pods {
        namespaces: NsScope,
        pods: Selector,
    },
    Ip {
        cidr: Cidr,
        except: Vec<Cidr>,
        set: IpSet,
    },
}

/// One entry of `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRule {
    /// No `port`: every port of the protocol.
    All(Proto),
    Range(Proto, u16, u16),
    Named(Proto, String),
}

impl PortRule {
    /// The ports this entry allows on `dst` (named ports resolve on the destination pod).
    pub fn resolve(&self, dst: &Workload) -> PortSet {
        match self {
            Self::All(p) => PortSet::all_of(*p),
            Self::Range(p, a, b) => PortSet::range(*p, *a, *b),
            Self::Named(p, n) => dst
                .named_port(n, *p)
                .map_or_else(PortSet::empty, |v| PortSet::single(*p, v)),
        }
    }
}

impl std::fmt::Display for PortRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All(p) => write!(f, "{}/any", p.as_str()),
            Self::Range(p, a, b) if a == b => write!(f, "{}/{a}", p.as_str()),
            Self::Range(p, a, b) => write!(f, "{}/{a}-{b}", p.as_str()),
            Self::Named(p, n) => write!(f, "{}/{n}", p.as_str()),
        }
    }
}

/// One ingress or egress rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None`: `from`/`to` empty or absent, every peer.
    pub peers: Option<Vec<Peer>>,
    /// `None`: `ports` empty or absent, every port.
    pub ports: Option<Vec<PortRule>>,
}

impl Rule {
    pub fn ports_on(&self, dst: &Workload) -> PortSet {
        match &self.ports {
            None => PortSet::all(),
            Some(list) => list.iter().fold(PortSet::empty(), |mut acc, p| {
                acc.union_with(&p.resolve(dst));
                acc
            }),
        }
    }
}

/// A compiled NetworkPolicy. `ingress`/`egress` is `None` when the policy does not have that
/// policy type (after Kubernetes' defaulting), `Some(rules)` when it isolates that direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    pub source: String,
    pub selector: Selector,
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A Service port mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcPort {
    pub name: Option<String>,
    pub port: u16,
    pub proto: Proto,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Number(u16),
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    pub namespace: String,
    pub name: String,
    /// `None`: no selector (endpoints managed elsewhere).
    pub selector: Option<BTreeMap<String, String>>,
    pub ports: Vec<SvcPort>,
}

/// Role or ClusterRole rules by name.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacRole {
    /// `None` for a ClusterRole.
    pub namespace: Option<String>,
    pub name: String,
    pub rules: Vec<PolicyRule>,
    /// `metadata.labels` (what aggregation selectors match).
    pub labels: BTreeMap<String, String>,
    /// A ClusterRole's `aggregationRule.clusterRoleSelectors`: its rules are those of every
    /// ClusterRole matched (see [`Cluster::aggregate_cluster_roles`]).
    pub aggregate_from: Vec<crate::selector::Selector>,
}

/// A RoleBinding (namespace set) or ClusterRoleBinding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacBinding {
    pub namespace: Option<String>,
    pub name: String,
    pub role_kind: String,
    pub role_name: String,
    /// Service accounts bound: (namespace, name); groups `system:serviceaccounts[:ns]` included.
    pub subjects: Vec<Subject>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    ServiceAccount {
        namespace: String,
        name: String,
    },
    /// `system:serviceaccounts` (`None`) or `system:serviceaccounts:<ns>`.
    AllServiceAccounts(Option<String>),
    /// `system:authenticated`: every service account too.
    Authenticated,
}

/// Settings that the manifests cannot tell.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Addresses node (hostNetwork) traffic comes from; an `ipBlock` covering all of them admits
    /// hostNetwork pods. Empty: node traffic is matched by no `ipBlock`.
    pub node_cidrs: Vec<Cidr>,
}

/// Everything the analysis knows about a cluster.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, Ns>,
    pub workloads: Vec<Workload>,
    pub policies: Vec<Policy>,
    pub services: Vec<Svc>,
    pub roles: Vec<RbacRole>,
    pub bindings: Vec<RbacBinding>,
    /// ServiceAccount objects: (namespace, name) -> automountServiceAccountToken.
    pub service_accounts: BTreeMap<(String, String), Option<bool>>,
    /// Secrets by (namespace, name).
    pub secrets: BTreeSet<(String, String)>,
    pub pvcs: BTreeSet<(String, String)>,
    pub settings: Settings,
    /// Kinds that were not used, with counts (reported, not an error).
    pub ignored: BTreeMap<String, usize>,
    /// Pods of one workload whose labels differ from the workload's (see
    /// [`crate::groups::variant_notes`], which says when that changes a decision).
    pub label_variants: Vec<LabelVariant>,
    /// What grouping could not do (reported, not an error).
    pub grouping_notes: Vec<String>,
}

/// Pods folded into a workload whose labels differ from the labels the workload is analysed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelVariant {
    /// Index into [`Cluster::workloads`].
    pub workload: usize,
    pub labels: BTreeMap<String, String>,
    pub pods: Vec<String>,
}

fn decode<T: serde::de::DeserializeOwned>(
    raw: &Value,
    kind: &str,
    object: &str,
) -> Result<T, ReachError> {
    serde_json::from_value(raw.clone()).map_err(|e| ReachError::Decode {
        object: object.to_owned(),
        kind: kind.to_owned(),
        reason: e.to_string(),
    })
}

impl Cluster {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// Adds the pods of one owner. `labels` are the pod template's labels.
    #[allow(clippy::too_many_arguments)]
    pub fn add_workload(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        source: &str,
        replicas: u32,
        labels: BTreeMap<String, String>,
        spec: &PodSpec,
    ) {
        let mut w = Workload {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: source.to_owned(),
            replicas,
            labels,
            service_account: spec
                .service_account_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            automount_token: spec.automount_service_account_token,
            host_network: spec.host_network.unwrap_or(false),
            host_pid: spec.host_pid.unwrap_or(false),
            host_ipc: spec.host_ipc.unwrap_or(false),
            privileged: false,
            capabilities: BTreeSet::new(),
            host_paths: Vec::new(),
            named_ports: Vec::new(),
            secrets: Vec::new(),
            pvcs: Vec::new(),
            node_name: spec.node_name.clone(),
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            pods: Vec::new(),
            via: Vec::new(),
            owner_in_input: true,
            static_pod_of: None,
        };
        for v in spec.volumes.iter().flatten() {
            if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                w.secrets.push((s, SecretUse::Volume));
            }
            if let Some(p) = &v.projected {
                for src in p.sources.iter().flatten() {
                    if let Some(s) = src.secret.as_ref().map(|s| s.name.clone()) {
                        w.secrets.push((s, SecretUse::Volume));
                    }
                }
            }
            if let Some(c) = &v.persistent_volume_claim {
                w.pvcs.push(c.claim_name.clone());
            }
            if let Some(h) = &v.host_path {
                w.host_paths.push(h.path.clone());
            }
        }
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in containers {
            for p in c.ports.iter().flatten() {
                let (Some(n), Some(proto), Ok(num)) = (
                    p.name.as_ref(),
                    Proto::parse(p.protocol.as_deref()),
                    u16::try_from(p.container_port),
                ) else {
                    continue;
                };
                w.named_ports.push((n.clone(), proto, num));
            }
            for e in c.env.iter().flatten() {
                if let Some(r) = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                {
                    w.secrets.push((r.name.clone(), SecretUse::Env));
                }
            }
            for e in c.env_from.iter().flatten() {
                if let Some(r) = &e.secret_ref {
                    w.secrets.push((r.name.clone(), SecretUse::Env));
                }
            }
            if let Some(sc) = &c.security_context {
                if sc.privileged == Some(true) {
                    w.privileged = true;
                }
                for cap in sc.capabilities.iter().flat_map(|c| c.add.iter().flatten()) {
                    let cap = cap.trim_start_matches("CAP_").to_ascii_uppercase();
                    w.capabilities.insert(cap);
                }
            }
        }
        w.secrets.sort();
        w.secrets.dedup();
        w.pvcs.sort();
        w.pvcs.dedup();
        self.implied_namespace(namespace);
        self.workloads.push(w);
    }

    fn implied_namespace(&mut self, ns: &str) {
        self.namespaces.entry(ns.to_owned()).or_insert_with(|| Ns {
            name: ns.to_owned(),
            labels: BTreeMap::from([(NS_NAME_LABEL.to_owned(), ns.to_owned())]),
            declared: false,
        });
    }

    /// Adds a non-workload object (Namespace, NetworkPolicy, Service, RBAC, ServiceAccount, Secret,
    /// PersistentVolumeClaim); other kinds are counted in `ignored`. `source` names it in errors.
    pub fn add_object(
        &mut self,
        kind: &str,
        namespace: Option<&str>,
        raw: &Value,
        source: &str,
    ) -> Result<(), ReachError> {
        let ns = namespace.unwrap_or("default").to_owned();
        let name = raw
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let object = format!("{source} ({kind} {ns}/{name})");
        match kind {
            "Namespace" => {
                let n: Namespace = decode(raw, kind, &object)?;
                let mut labels = n.metadata.labels.unwrap_or_default();
                labels.insert(NS_NAME_LABEL.into(), name.clone());
                self.namespaces.insert(
                    name.clone(),
                    Ns {
                        name,
                        labels,
                        declared: true,
                    },
                );
            }
            "NetworkPolicy" => {
                let np: NetworkPolicy = decode(raw, kind, &object)?;
                self.implied_namespace(&ns);
                let p = compile_policy(&np, &ns, &name, &object).map_err(|e| match e {
                    ReachError::BadSelector {
                        field,
                        value,
                        reason,
                    } => ReachError::BadObject {
                        object: object.clone(),
                        field,
                        value,
                        reason,
                    },
                    other => other,
                })?;
                self.policies.push(p);
            }
            "Service" => {
                let s: Service = decode(raw, kind, &object)?;
                let spec = s.spec.unwrap_or_default();
                let mut ports = Vec::new();
                for (i, p) in spec.ports.iter().flatten().enumerate() {
                    let field = format!("spec.ports[{i}]");
                    let proto = parse_proto(p.protocol.as_deref(), &object, &field)?;
                    let port = u16::try_from(p.port)
                        .ok()
                        .filter(|v| *v > 0)
                        .ok_or_else(|| {
                            bad(
                                &object,
                                &format!("{field}.port"),
                                p.port,
                                "port must be 1-65535",
                            )
                        })?;
                    let target = match &p.target_port {
                        None => Target::Number(port),
                        Some(IntOrString::Int(t)) => Target::Number(
                            u16::try_from(*t).ok().filter(|v| *v > 0).ok_or_else(|| {
                                bad(
                                    &object,
                                    &format!("{field}.targetPort"),
                                    t,
                                    "port must be 1-65535",
                                )
                            })?,
                        ),
                        Some(IntOrString::String(t)) => Target::Named(t.clone()),
                    };
                    ports.push(SvcPort {
                        name: p.name.clone(),
                        port,
                        proto,
                        target,
                    });
                }
                self.services.push(Svc {
                    namespace: ns,
                    name,
                    selector: spec.selector.filter(|s| !s.is_empty()),
                    ports,
                });
            }
            "Role" | "ClusterRole" => {
                let (rules, labels, aggregate_from) = if kind == "Role" {
                    let r = decode::<Role>(raw, kind, &object)?;
                    (r.rules, r.metadata.labels, Vec::new())
                } else {
                    let r = decode::<ClusterRole>(raw, kind, &object)?;
                    let selectors = r
                        .aggregation_rule
                        .and_then(|a| a.cluster_role_selectors)
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                        .map(|(i, sel)| {
                            crate::selector::Selector::compile(
                                sel,
                                &format!("{object} aggregationRule.clusterRoleSelectors[{i}]"),
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    (r.rules, r.metadata.labels, selectors)
                };
                self.roles.push(RbacRole {
                    namespace: (kind == "Role").then_some(ns),
                    name,
                    rules: rules.unwrap_or_default(),
                    labels: labels.unwrap_or_default(),
                    aggregate_from,
                });
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                let (role_ref, subjects) = if kind == "RoleBinding" {
                    let b: RoleBinding = decode(raw, kind, &object)?;
                    (b.role_ref, b.subjects)
                } else {
                    let b: ClusterRoleBinding = decode(raw, kind, &object)?;
                    (b.role_ref, b.subjects)
                };
                let binding_ns = (kind == "RoleBinding").then(|| ns.clone());
                let subjects = subjects
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| match (s.kind.as_str(), s.name.as_str()) {
                        ("ServiceAccount", _) => Some(Subject::ServiceAccount {
                            namespace: s
                                .namespace
                                .clone()
                                .or_else(|| binding_ns.clone())
                                .unwrap_or_else(|| "default".into()),
                            name: s.name.clone(),
                        }),
                        ("Group", "system:serviceaccounts") => {
                            Some(Subject::AllServiceAccounts(None))
                        }
                        ("Group", "system:authenticated") => Some(Subject::Authenticated),
                        ("Group", g) => g
                            .strip_prefix("system:serviceaccounts:")
                            .map(|n| Subject::AllServiceAccounts(Some(n.to_owned()))),
                        _ => None,
                    })
                    .collect();
                self.bindings.push(RbacBinding {
                    namespace: binding_ns,
                    name,
                    role_kind: role_ref.kind,
                    role_name: role_ref.name,
                    subjects,
                });
            }
            "ServiceAccount" => {
                let automount = raw
                    .get("automountServiceAccountToken")
                    .and_then(Value::as_bool);
                self.service_accounts.insert((ns, name), automount);
            }
            "Secret" => {
                self.secrets.insert((ns, name));
            }
            "PersistentVolumeClaim" => {
                self.pvcs.insert((ns, name));
            }
            _ => *self.ignored.entry(kind.to_owned()).or_default() += 1,
        }
        Ok(())
    }

    /// Gives every aggregated ClusterRole the rules of the ClusterRoles its
    /// `aggregationRule` selects, as the cluster's aggregation controller does (its own `rules`
    /// are replaced). Aggregated roles may select other aggregated roles; this repeats until
    /// nothing changes (bounded by the number of roles).
    pub fn aggregate_cluster_roles(&mut self) {
        let aggregated: Vec<usize> = self
            .roles
            .iter()
            .enumerate()
            .filter(|(_, r)| r.namespace.is_none() && !r.aggregate_from.is_empty())
            .map(|(i, _)| i)
            .collect();
        for _ in 0..=aggregated.len() {
            let mut changed = false;
            for &i in &aggregated {
                let Some(target) = self.roles.get(i) else {
                    continue;
                };
                let mut rules: Vec<PolicyRule> = Vec::new();
                for (j, r) in self.roles.iter().enumerate() {
                    if j != i
                        && r.namespace.is_none()
                        && target.aggregate_from.iter().any(|s| s.matches(&r.labels))
                    {
                        for rule in &r.rules {
                            if !rules.contains(rule) {
                                rules.push(rule.clone());
                            }
                        }
                    }
                }
                if let Some(target) = self.roles.get_mut(i)
                    && target.rules != rules
                {
                    target.rules = rules;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// Whether `w`'s service-account token is mounted (pod setting wins over the ServiceAccount's).
    pub fn token_mounted(&self, w: &Workload) -> bool {
        w.automount_token
            .or_else(|| {
                self.service_accounts
                    .get(&(w.namespace.clone(), w.service_account.clone()))
                    .copied()
                    .flatten()
            })
            .unwrap_or(true)
    }

    /// Labels of a namespace (implied ones for unknown namespaces).
    pub fn ns_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces.get(ns).map_or_else(
            || BTreeMap::from([(NS_NAME_LABEL.to_owned(), ns.to_owned())]),
            |n| n.labels.clone(),
        )
    }
}

fn bad(object: &str, field: &str, value: impl std::fmt::Display, reason: &str) -> ReachError {
    ReachError::BadObject {
        object: object.to_owned(),
        field: field.to_owned(),
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

fn parse_proto(p: Option<&str>, object: &str, field: &str) -> Result<Proto, ReachError> {
    Proto::parse(p).ok_or_else(|| {
        bad(
            object,
            &format!("{field}.protocol"),
            p.unwrap_or_default(),
            "unknown protocol; use TCP, UDP or SCTP",
        )
    })
}

/// One rule as written: (`from`/`to`, `ports`).
type RawRule = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

/// Compiles a NetworkPolicy, applying the API server's defaulting and validation.
pub fn compile_policy(
    np: &NetworkPolicy,
    ns: &str,
    name: &str,
    object: &str,
) -> Result<Policy, ReachError> {
    let spec = np.spec.clone().unwrap_or_default();
    let selector = match &spec.pod_selector {
        Some(s) => Selector::compile(s, "spec.podSelector")?,
        None => Selector::default(),
    };
    // Defaulting (k8s.io/kubernetes pkg/apis/networking/v1/defaults.go): no policyTypes means
    // Ingress, plus Egress when there is at least one egress rule. `egress: []` is no rule.
    let types: Vec<String> = match &spec.policy_types {
        Some(t) if !t.is_empty() => t.clone(),
        _ => {
            let mut t = vec!["Ingress".to_owned()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".into());
            }
            t
        }
    };
    for (i, t) in types.iter().enumerate() {
        if t != "Ingress" && t != "Egress" {
            return Err(bad(
                object,
                &format!("spec.policyTypes[{i}]"),
                t,
                "use Ingress or Egress",
            ));
        }
    }
    let compile_rules = |dir: &str, rules: Option<Vec<RawRule>>| -> Result<Vec<Rule>, ReachError> {
        let mut out = Vec::new();
        let peer_field = if dir == "ingress" { "from" } else { "to" };
        for (i, (peers, ports)) in rules.into_iter().flatten().enumerate() {
            let field = format!("spec.{dir}[{i}]");
            let peers = match peers {
                Some(p) if !p.is_empty() => Some(
                    p.iter()
                        .enumerate()
                        .map(|(j, peer)| {
                            compile_peer(peer, ns, object, &format!("{field}.{peer_field}[{j}]"))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                _ => None,
            };
            let ports = match ports {
                Some(p) if !p.is_empty() => Some(
                    p.iter()
                        .enumerate()
                        .map(|(j, port)| compile_port(port, object, &format!("{field}.ports[{j}]")))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                _ => None,
            };
            out.push(Rule { peers, ports });
        }
        Ok(out)
    };
    let ingress = if types.iter().any(|t| t == "Ingress") {
        let rules = spec
            .ingress
            .map(|v| v.into_iter().map(|r| (r.from, r.ports)).collect());
        Some(compile_rules("ingress", rules)?)
    } else {
        None
    };
    let egress = if types.iter().any(|t| t == "Egress") {
        let rules = spec
            .egress
            .map(|v| v.into_iter().map(|r| (r.to, r.ports)).collect());
        Some(compile_rules("egress", rules)?)
    } else {
        None
    };
    Ok(Policy {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        source: object.to_owned(),
        selector,
        ingress,
        egress,
    })
}

fn compile_peer(
    p: &NetworkPolicyPeer,
    ns: &str,
    object: &str,
    field: &str,
) -> Result<Peer, ReachError> {
    if let Some(ip) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(bad(
                object,
                field,
                "ipBlock + selector",
                "ipBlock cannot be combined with podSelector or namespaceSelector in one peer; make them separate peers",
            ));
        }
        let cidr = Cidr::parse(&ip.cidr).ok_or_else(|| {
            bad(
                object,
                &format!("{field}.ipBlock.cidr"),
                &ip.cidr,
                "not a CIDR like 10.0.0.0/8",
            )
        })?;
        let mut except = Vec::new();
        let mut set = IpSet::from_cidr(&cidr);
        for (k, e) in ip.except.iter().flatten().enumerate() {
            let c = Cidr::parse(e).ok_or_else(|| {
                bad(
                    object,
                    &format!("{field}.ipBlock.except[{k}]"),
                    e,
                    "not a CIDR like 10.1.0.0/16",
                )
            })?;
            let (lo, hi) = c.range();
            let (clo, chi) = cidr.range();
            if lo < clo || hi > chi || (lo == clo && hi == chi) {
                return Err(bad(
                    object,
                    &format!("{field}.ipBlock.except[{k}]"),
                    e,
                    &format!("must be a strict subset of the cidr {cidr}"),
                ));
            }
            set = set.difference(&IpSet::from_cidr(&c));
            except.push(c);
        }
        return Ok(Peer::Ip { cidr, except, set });
    }
    let pods = match &p.pod_selector {
        Some(s) => Selector::compile(s, &format!("{field}.podSelector"))?,
        None => Selector::default(),
    };
    let namespaces = match &p.namespace_selector {
        Some(s) => NsScope::Selector(Selector::compile(s, &format!("{field}.namespaceSelector"))?),
        None if p.pod_selector.is_some() => NsScope::Own(ns.to_owned()),
        None => {
            return Err(bad(
                object,
                field,
                "{}",
                "a peer needs podSelector, namespaceSelector or ipBlock (the API server rejects an empty peer)",
            ));
        }
    };
    Ok(Peer::Pods { namespaces, pods })
}

fn compile_port(p: &NetworkPolicyPort, object: &str, field: &str) -> Result<PortRule, ReachError> {
    let proto = parse_proto(p.protocol.as_deref(), object, field)?;
    let num = |v: i32, f: &str| {
        u16::try_from(v)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| bad(object, &format!("{field}.{f}"), v, "port must be 1-65535"))
    };
    match (&p.port, p.end_port) {
        (None, None) => Ok(PortRule::All(proto)),
        (None, Some(e)) => Err(bad(
            object,
            &format!("{field}.endPort"),
            e,
            "endPort needs a numeric port",
        )),
        (Some(IntOrString::String(_)), Some(e)) => Err(bad(
            object,
            &format!("{field}.endPort"),
            e,
            "endPort cannot be used with a named port",
        )),
        (Some(IntOrString::String(n)), None) => Ok(PortRule::Named(proto, n.clone())),
        (Some(IntOrString::Int(a)), end) => {
            let lo = num(*a, "port")?;
            let hi = match end {
                Some(e) => num(e, "endPort")?,
                None => lo,
            };
            if hi < lo {
                return Err(bad(
                    object,
                    &format!("{field}.endPort"),
                    hi,
                    "endPort must not be below port",
                ));
            }
            Ok(PortRule::Range(proto, lo, hi))
        }
    }
}
