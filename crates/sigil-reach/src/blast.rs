//! The blast-radius graph: what a compromised workload can reach and read, and how. Joins the
//! network (the [`Engine`]) with the other ways an attacker moves on: the mounted service-account
//! token and what RBAC lets it do, secrets in volumes and env, PVCs shared with other pods, and
//! escapes to the node, which give every pod that can run on that node.
//!
//! Model (documented in docs/reach.md): network reach is a terminal step (talking to a pod is not
//! running code in it); code execution spreads through `pods/exec`, creating pods, node escapes
//! and cluster-admin-like RBAC. Every finding carries the path of steps that gets there.

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde::Serialize;
use sigil_kube::k8s_openapi::api::rbac::v1::PolicyRule;
use sigil_policy::Policy;

use crate::engine::Engine;
use crate::ipset::non_public;
use crate::model::{Cluster, Subject, Workload};
use crate::query::{display_name, policy_workload};

/// Something an attacker can hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Item {
    /// Code execution in a workload's pods.
    Exec {
        workload: String,
    },
    /// Network connections to a workload.
    Reach {
        workload: String,
        ports: String,
    },
    /// A service-account token.
    ServiceAccount {
        namespace: String,
        name: String,
    },
    Secret {
        namespace: String,
        name: String,
    },
    Pvc {
        namespace: String,
        name: String,
    },
    /// Root on the node(s) a workload runs on.
    Node {
        of: String,
    },
    /// Can create pods in a namespace (any service account, secret or volume there).
    CreatePods {
        namespace: String,
    },
    /// Can rewrite NetworkPolicies in a namespace.
    EditNetworkPolicies {
        namespace: String,
    },
    /// Can relabel pods in a namespace (and so match other policies' selectors).
    RelabelPods {
        namespace: String,
    },
    /// Can grant itself any permission.
    ClusterAdmin,
    /// Can write files another workload reads (shared PVC).
    Tamper {
        workload: String,
    },
    /// Can send data to public addresses.
    Internet {
        addresses: String,
    },
    /// A data asset from sigil.yaml.
    Data {
        name: String,
        kind: String,
    },
}

impl Item {
    pub fn label(&self) -> String {
        match self {
            Self::Exec { workload } => format!("exec {workload}"),
            Self::Reach { workload, ports } => format!("connect {workload} ({ports})"),
            Self::ServiceAccount { namespace, name } => {
                format!("serviceaccount {namespace}/{name}")
            }
            Self::Secret { namespace, name } => format!("secret {namespace}/{name}"),
            Self::Pvc { namespace, name } => format!("pvc {namespace}/{name}"),
            Self::Node { of } => format!("node running {of}"),
            Self::CreatePods { namespace } => format!("create pods in {namespace}"),
            Self::EditNetworkPolicies { namespace } => {
                format!("edit networkpolicies in {namespace}")
            }
            Self::RelabelPods { namespace } => format!("relabel pods in {namespace}"),
            Self::ClusterAdmin => "cluster admin".into(),
            Self::Tamper { workload } => format!("write files read by {workload}"),
            Self::Internet { addresses } => format!("send to the internet ({addresses})"),
            Self::Data { name, kind } => format!("data {name} ({kind})"),
        }
    }

    pub fn is_data(&self) -> bool {
        matches!(self, Self::Data { .. })
    }
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub from: String,
    pub to: String,
    pub how: String,
}

/// Something reached, with the shortest path of steps found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub item: Item,
    pub label: String,
    pub path: Vec<Step>,
}

/// The result of `--compromised`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlastRadius {
    pub compromised: Vec<String>,
    pub findings: Vec<Finding>,
    /// Data assets still reached when every network step is removed: the paths no
    /// NetworkPolicy can close (RBAC, mounts, node escapes).
    pub without_network: Vec<Finding>,
}

impl BlastRadius {
    pub fn data(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.item.is_data())
    }
}

/// The permissions a rule grants, as (namespace scope, rule); `None` scope = every namespace.
type Grants<'a> = Vec<(Option<String>, &'a PolicyRule)>;

fn rule_allows(r: &PolicyRule, verbs: &[&str], group: &str, resource: &str) -> bool {
    let verb_ok = r
        .verbs
        .iter()
        .any(|v| v == "*" || verbs.contains(&v.as_str()));
    let group_ok = r
        .api_groups
        .iter()
        .flatten()
        .any(|g| g == "*" || g == group);
    let (base, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let res_ok = r
        .resources
        .iter()
        .flatten()
        .any(|x| x == "*" || x == resource || (!sub.is_empty() && *x == format!("{base}/*")));
    verb_ok && group_ok && res_ok
}

const SENSITIVE_HOST_PATHS: &[&str] = &[
    "/",
    "/etc",
    "/root",
    "/home",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/var/run",
    "/run",
    "/var/run/docker.sock",
    "/run/containerd",
    "/var/lib/kubelet",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/log",
];

const DANGEROUS_CAPS: &[&str] = &[
    "ALL",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "SYS_MODULE",
    "SYS_RAWIO",
    "DAC_READ_SEARCH",
    "BPF",
];

/// Why a workload can break out to its node, if it can.
pub fn node_escape(w: &Workload) -> Option<String> {
    let mut why = Vec::new();
    if w.privileged {
        why.push("privileged container".to_owned());
    }
    if w.host_pid {
        why.push("hostPID".to_owned());
    }
    if w.host_network {
        why.push("hostNetwork".to_owned());
    }
    if w.host_ipc {
        why.push("hostIPC".to_owned());
    }
    for p in &w.host_paths {
        let p = p.trim_end_matches('/');
        let p = if p.is_empty() { "/" } else { p };
        if SENSITIVE_HOST_PATHS.iter().any(|s| {
            *s == p
                || s.starts_with(&format!("{p}/"))
                || p.starts_with(&format!("{s}/")) && *s != "/"
        }) {
            why.push(format!("hostPath {p}"));
        }
    }
    for c in &w.capabilities {
        if DANGEROUS_CAPS.contains(&c.as_str()) {
            why.push(format!("capability {c}"));
        }
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// Whether two workloads' pods can be scheduled on the same node.
pub fn may_share_node(a: &Workload, b: &Workload) -> bool {
    if let (Some(x), Some(y)) = (&a.node_name, &b.node_name)
        && x != y
    {
        return false;
    }
    a.node_selector
        .iter()
        .all(|(k, v)| b.node_selector.get(k).is_none_or(|v2| v2 == v))
}

/// The blast-radius analysis of one cluster.
#[derive(Debug)]
pub struct Blast<'c> {
    engine: &'c Engine<'c>,
    cluster: &'c Cluster,
    policy: Option<&'c Policy>,
    names: Vec<String>,
    network: bool,
}

struct Search {
    parent: HashMap<Item, Option<(Item, String)>>,
    queue: VecDeque<Item>,
}

impl Search {
    fn add(&mut self, item: Item, from: &Item, how: String) {
        if self.parent.contains_key(&item) {
            return;
        }
        self.parent.insert(item.clone(), Some((from.clone(), how)));
        self.queue.push_back(item);
    }
    fn holds(&self, item: &Item) -> bool {
        self.parent.contains_key(item)
    }
}

impl<'c> Blast<'c> {
    pub fn new(engine: &'c Engine<'c>, policy: Option<&'c Policy>) -> Self {
        let cluster = engine.cluster;
        let names = cluster
            .workloads
            .iter()
            .map(|w| display_name(policy, w))
            .collect();
        Self {
            engine,
            cluster,
            policy,
            names,
            network: true,
        }
    }

    fn name(&self, i: usize) -> String {
        self.names.get(i).cloned().unwrap_or_default()
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// RBAC grants of a service account.
    fn grants(&self, ns: &str, sa: &str) -> Grants<'c> {
        let mut out = Vec::new();
        for b in &self.cluster.bindings {
            let bound = b.subjects.iter().any(|s| match s {
                Subject::ServiceAccount { namespace, name } => namespace == ns && name == sa,
                Subject::AllServiceAccounts(None) | Subject::Authenticated => true,
                Subject::AllServiceAccounts(Some(n)) => n == ns,
            });
            if !bound {
                continue;
            }
            let role = self.cluster.roles.iter().find(|r| {
                r.name == b.role_name
                    && match b.role_kind.as_str() {
                        "Role" => r.namespace.is_some() && r.namespace == b.namespace,
                        _ => r.namespace.is_none(),
                    }
            });
            if let Some(role) = role {
                for rule in &role.rules {
                    out.push((b.namespace.clone(), rule));
                }
            }
        }
        out
    }

    fn namespaces_in(&self, scope: &Option<String>) -> Vec<String> {
        match scope {
            Some(n) => vec![n.clone()],
            None => self.cluster.namespaces.keys().cloned().collect(),
        }
    }

    fn secrets_in(&self, ns: &str) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = self
            .cluster
            .secrets
            .iter()
            .filter(|(n, _)| n == ns)
            .map(|(_, name)| name.clone())
            .collect();
        for w in self.cluster.workloads.iter().filter(|w| w.namespace == ns) {
            s.extend(w.secrets.iter().map(|(n, _)| n.clone()));
        }
        if let Some(p) = self.policy {
            for d in &p.data {
                if let Some(k) = d.kubernetes.as_ref().filter(|k| k.namespace == ns) {
                    s.extend(k.secrets.iter().cloned());
                }
            }
        }
        s
    }

    fn pvcs_in(&self, ns: &str) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = self
            .cluster
            .pvcs
            .iter()
            .filter(|(n, _)| n == ns)
            .map(|(_, name)| name.clone())
            .collect();
        for w in self.cluster.workloads.iter().filter(|w| w.namespace == ns) {
            s.extend(w.pvcs.iter().cloned());
        }
        s
    }

    fn service_accounts_in(&self, ns: &str) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = self
            .cluster
            .service_accounts
            .keys()
            .filter(|(n, _)| n == ns)
            .map(|(_, name)| name.clone())
            .collect();
        s.extend(
            self.cluster
                .workloads
                .iter()
                .filter(|w| w.namespace == ns)
                .map(|w| w.service_account.clone()),
        );
        s.insert("default".into());
        s
    }

    /// Whether Pod Security admission in `ns` stops privileged pods.
    fn pss_blocks_privileged(&self, ns: &str) -> bool {
        self.cluster.namespaces.get(ns).is_some_and(|n| {
            matches!(
                n.labels
                    .get("pod-security.kubernetes.io/enforce")
                    .map(String::as_str),
                Some("baseline" | "restricted")
            )
        })
    }

    fn exec_item(&self, i: usize) -> Item {
        Item::Exec {
            workload: self.name(i),
        }
    }

    /// Everything that compromising `start` (workload indices) gives.
    pub fn compromised(&self, start: &[usize]) -> BlastRadius {
        let mut b = self.search(start);
        let offline = Self {
            network: false,
            names: self.names.clone(),
            ..*self
        };
        b.without_network = offline
            .search(start)
            .findings
            .into_iter()
            .filter(|f| f.item.is_data())
            .collect();
        b
    }

    fn search(&self, start: &[usize]) -> BlastRadius {
        let mut s = Search {
            parent: HashMap::new(),
            queue: VecDeque::new(),
        };
        for &i in start {
            let it = self.exec_item(i);
            s.parent.insert(it.clone(), None);
            s.queue.push_back(it);
        }
        while let Some(item) = s.queue.pop_front() {
            self.expand(&item, &mut s);
        }
        let mut findings: Vec<Finding> = s
            .parent
            .keys()
            .filter(|k| s.parent.get(*k).is_some_and(Option::is_some))
            .map(|item| {
                let mut path = Vec::new();
                let mut cur = item.clone();
                while let Some(Some((prev, how))) = s.parent.get(&cur) {
                    path.push(Step {
                        from: prev.label(),
                        to: cur.label(),
                        how: how.clone(),
                    });
                    cur = prev.clone();
                }
                path.reverse();
                Finding {
                    label: item.label(),
                    item: item.clone(),
                    path,
                }
            })
            .collect();
        findings.sort_by(|a, b| (a.path.len(), &a.item).cmp(&(b.path.len(), &b.item)));
        BlastRadius {
            compromised: start.iter().map(|i| self.name(*i)).collect(),
            findings,
            without_network: Vec::new(),
        }
    }

    fn expand(&self, item: &Item, s: &mut Search) {
        let c = self.cluster;
        match item {
            Item::Exec { workload } => {
                let Some(i) = self.index_of(workload) else {
                    return;
                };
                let Some(w) = c.workloads.get(i) else { return };
                for d in 0..c.workloads.len() {
                    if d == i || !self.network {
                        continue;
                    }
                    let ports = self.engine.verdict(i, d);
                    if !ports.is_empty() {
                        let how = self.engine.explain(i, d).because(workload, &self.name(d));
                        s.add(
                            Item::Reach {
                                workload: self.name(d),
                                ports: ports.to_string(),
                            },
                            item,
                            format!("network: {how}"),
                        );
                    }
                }
                let public = self.engine.egress_addresses(i).difference(&non_public());
                if !public.is_empty() && self.network {
                    s.add(
                        Item::Internet {
                            addresses: public.describe(),
                        },
                        item,
                        "network: egress to public addresses is allowed".into(),
                    );
                }
                if c.token_mounted(w) {
                    s.add(
                        Item::ServiceAccount {
                            namespace: w.namespace.clone(),
                            name: w.service_account.clone(),
                        },
                        item,
                        "reads the mounted service-account token".into(),
                    );
                }
                for (sec, how) in &w.secrets {
                    s.add(
                        Item::Secret {
                            namespace: w.namespace.clone(),
                            name: sec.clone(),
                        },
                        item,
                        format!(
                            "secret mounted in the pod ({})",
                            match how {
                                crate::model::SecretUse::Volume => "volume",
                                crate::model::SecretUse::Env => "environment",
                            }
                        ),
                    );
                }
                for pvc in &w.pvcs {
                    s.add(
                        Item::Pvc {
                            namespace: w.namespace.clone(),
                            name: pvc.clone(),
                        },
                        item,
                        "volume mounted in the pod".into(),
                    );
                }
                if let Some(why) = node_escape(w) {
                    s.add(
                        Item::Node {
                            of: workload.clone(),
                        },
                        item,
                        format!("escapes to the node: {why}"),
                    );
                }
                if s.holds(&Item::RelabelPods {
                    namespace: w.namespace.clone(),
                }) {
                    self.relabel(i, item, s);
                }
                if let Some(p) = self.policy
                    && let Some(pw) = policy_workload(p, w)
                {
                    for d in p
                        .data
                        .iter()
                        .filter(|d| d.served_by.as_deref() == Some(pw.name.as_str()))
                    {
                        s.add(
                            Item::Data {
                                name: d.name.clone(),
                                kind: d.kind.as_str().into(),
                            },
                            item,
                            format!("runs in the server of the data ({})", pw.name),
                        );
                    }
                }
            }
            Item::Reach { workload, ports } => {
                let (Some(p), Some(d)) = (self.policy, self.index_of(workload)) else {
                    return;
                };
                let Some(w) = c.workloads.get(d) else { return };
                let Some(pw) = policy_workload(p, w) else {
                    return;
                };
                for asset in p
                    .data
                    .iter()
                    .filter(|a| a.served_by.as_deref() == Some(pw.name.as_str()))
                {
                    s.add(
                        Item::Data {
                            name: asset.name.clone(),
                            kind: asset.kind.as_str().into(),
                        },
                        item,
                        format!("{} serves it on {ports}", pw.name),
                    );
                }
            }
            Item::ServiceAccount { namespace, name } => {
                for (scope, rule) in self.grants(namespace, name) {
                    self.apply_rule(&scope, rule, item, s);
                }
            }
            Item::Secret { namespace, name } => {
                if let Some(p) = self.policy {
                    for d in &p.data {
                        if d.kubernetes
                            .as_ref()
                            .is_some_and(|k| &k.namespace == namespace && k.secrets.contains(name))
                        {
                            s.add(
                                Item::Data {
                                    name: d.name.clone(),
                                    kind: d.kind.as_str().into(),
                                },
                                item,
                                "the secret grants access to the data".into(),
                            );
                        }
                    }
                }
            }
            Item::Pvc { namespace, name } => {
                if let Some(p) = self.policy {
                    for d in &p.data {
                        if d.kubernetes.as_ref().is_some_and(|k| {
                            &k.namespace == namespace && k.persistent_volume_claims.contains(name)
                        }) {
                            s.add(
                                Item::Data {
                                    name: d.name.clone(),
                                    kind: d.kind.as_str().into(),
                                },
                                item,
                                "the data lives on this volume".into(),
                            );
                        }
                    }
                }
                for (j, w) in c.workloads.iter().enumerate() {
                    if &w.namespace == namespace && w.pvcs.contains(name) {
                        s.add(
                            Item::Tamper {
                                workload: self.name(j),
                            },
                            item,
                            format!("{} mounts the same volume", self.name(j)),
                        );
                    }
                }
            }
            Item::Node { of } => {
                let Some(i) = self.index_of(of) else { return };
                let Some(w) = c.workloads.get(i) else { return };
                for (j, other) in c.workloads.iter().enumerate() {
                    if j != i && may_share_node(w, other) {
                        s.add(
                            self.exec_item(j),
                            item,
                            "runs on (or can be scheduled to) that node".into(),
                        );
                    }
                }
            }
            Item::CreatePods { namespace } => {
                for sa in self.service_accounts_in(namespace) {
                    s.add(
                        Item::ServiceAccount {
                            namespace: namespace.clone(),
                            name: sa,
                        },
                        item,
                        "creates a pod that mounts this service account".into(),
                    );
                }
                for sec in self.secrets_in(namespace) {
                    s.add(
                        Item::Secret {
                            namespace: namespace.clone(),
                            name: sec,
                        },
                        item,
                        "creates a pod that mounts this secret".into(),
                    );
                }
                for pvc in self.pvcs_in(namespace) {
                    s.add(
                        Item::Pvc {
                            namespace: namespace.clone(),
                            name: pvc,
                        },
                        item,
                        "creates a pod that mounts this volume".into(),
                    );
                }
                if !self.pss_blocks_privileged(namespace) {
                    // Any node: a privileged pod can be pinned with nodeName.
                    for j in 0..c.workloads.len() {
                        s.add(
                            self.exec_item(j),
                            item,
                            format!("creates a privileged pod on its node (no baseline/restricted Pod Security enforced in {namespace})"),
                        );
                    }
                }
            }
            Item::EditNetworkPolicies { .. } if !self.network => {}
            Item::EditNetworkPolicies { namespace } => {
                let holders: Vec<usize> = (0..c.workloads.len())
                    .filter(|j| s.holds(&self.exec_item(*j)))
                    .collect();
                for (d, w) in c.workloads.iter().enumerate() {
                    if &w.namespace != namespace {
                        continue;
                    }
                    if let Some(&h) = holders
                        .iter()
                        .find(|&&h| h != d && self.engine.egress_admits(h, d))
                    {
                        s.add(
                            Item::Reach { workload: self.name(d), ports: "any (after deleting its policies)".into() },
                            item,
                            format!("deletes the NetworkPolicies that isolate it; {}'s egress admits it", self.name(h)),
                        );
                    }
                }
            }
            Item::RelabelPods { namespace } => {
                for (j, w) in c.workloads.iter().enumerate() {
                    if &w.namespace == namespace && s.holds(&self.exec_item(j)) {
                        self.relabel(j, item, s);
                    }
                }
            }
            Item::ClusterAdmin => {
                for n in c.namespaces.keys() {
                    s.add(
                        Item::CreatePods {
                            namespace: n.clone(),
                        },
                        item,
                        "grants itself pod creation".into(),
                    );
                }
                for j in 0..c.workloads.len() {
                    s.add(self.exec_item(j), item, "grants itself pods/exec".into());
                }
            }
            Item::Tamper { .. } | Item::Internet { .. } | Item::Data { .. } => {}
        }
    }

    /// A pod that can change its own labels gets the network access of any workload in its
    /// namespace.
    fn relabel(&self, i: usize, from: &Item, s: &mut Search) {
        let c = self.cluster;
        if !self.network {
            return;
        }
        let Some(w) = c.workloads.get(i) else { return };
        for (u, other) in c.workloads.iter().enumerate() {
            if u == i || other.namespace != w.namespace {
                continue;
            }
            for d in 0..c.workloads.len() {
                if d == i {
                    continue;
                }
                let ports = self.engine.verdict(u, d);
                if !ports.is_empty() {
                    s.add(
                        Item::Reach {
                            workload: self.name(d),
                            ports: ports.to_string(),
                        },
                        from,
                        format!(
                            "relabels its pod like {} ({:?}), whose traffic is allowed",
                            self.name(u),
                            other.labels
                        ),
                    );
                }
            }
        }
    }

    fn apply_rule(&self, scope: &Option<String>, rule: &PolicyRule, from: &Item, s: &mut Search) {
        let c = self.cluster;
        let namespaces = self.namespaces_in(scope);
        let where_ = scope
            .as_deref()
            .map_or_else(|| "in every namespace".to_owned(), |n| format!("in {n}"));
        let names: Option<&Vec<String>> = rule.resource_names.as_ref().filter(|n| !n.is_empty());
        let rbac = |what: &str| format!("RBAC: may {what} {where_}");
        let escalate = rule_allows(
            rule,
            &["bind", "escalate"],
            "rbac.authorization.k8s.io",
            "clusterroles",
        ) || rule_allows(
            rule,
            &["bind", "escalate"],
            "rbac.authorization.k8s.io",
            "roles",
        ) || rule_allows(
            rule,
            &["create", "update", "patch"],
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
        ) || (rule_allows(
            rule,
            &["create", "update", "patch"],
            "rbac.authorization.k8s.io",
            "rolebindings",
        ) && scope.is_none());
        if escalate && names.is_none() {
            s.add(Item::ClusterAdmin, from, rbac("bind or escalate roles"));
        }
        if rule_allows(
            rule,
            &["create", "update", "patch"],
            "rbac.authorization.k8s.io",
            "rolebindings",
        ) && names.is_none()
        {
            for n in &namespaces {
                // A RoleBinding to the built-in `admin` ClusterRole makes it namespace admin.
                s.add(
                    Item::CreatePods {
                        namespace: n.clone(),
                    },
                    from,
                    rbac("create rolebindings (to admin)"),
                );
            }
        }
        if rule_allows(rule, &["get", "list", "watch"], "", "secrets") {
            for n in &namespaces {
                for sec in self.secrets_in(n) {
                    if names.is_none_or(|ns| ns.contains(&sec)) {
                        s.add(
                            Item::Secret {
                                namespace: n.clone(),
                                name: sec,
                            },
                            from,
                            rbac("read secrets"),
                        );
                    }
                }
            }
        }
        let exec = rule_allows(rule, &["create", "get"], "", "pods/exec")
            || rule_allows(rule, &["create", "get"], "", "pods/attach");
        if exec {
            for (j, w) in c.workloads.iter().enumerate() {
                if namespaces.contains(&w.namespace) {
                    s.add(self.exec_item(j), from, rbac("exec into pods"));
                }
            }
        }
        let create = rule_allows(rule, &["create"], "", "pods")
            || ["deployments", "statefulsets", "daemonsets", "replicasets"]
                .iter()
                .any(|r| rule_allows(rule, &["create", "update", "patch"], "apps", r))
            || ["jobs", "cronjobs"]
                .iter()
                .any(|r| rule_allows(rule, &["create", "update", "patch"], "batch", r));
        if create && names.is_none() {
            for n in &namespaces {
                s.add(
                    Item::CreatePods {
                        namespace: n.clone(),
                    },
                    from,
                    rbac("create pods or pod controllers"),
                );
            }
        }
        if rule_allows(
            rule,
            &["create", "update", "patch", "delete"],
            "networking.k8s.io",
            "networkpolicies",
        ) {
            for n in &namespaces {
                s.add(
                    Item::EditNetworkPolicies {
                        namespace: n.clone(),
                    },
                    from,
                    rbac("change networkpolicies"),
                );
            }
        }
        if rule_allows(rule, &["update", "patch"], "", "pods") {
            for n in &namespaces {
                s.add(
                    Item::RelabelPods {
                        namespace: n.clone(),
                    },
                    from,
                    rbac("patch pods (labels)"),
                );
            }
        }
        if rule_allows(rule, &["create", "get"], "", "nodes/proxy") {
            for j in 0..c.workloads.len() {
                s.add(
                    self.exec_item(j),
                    from,
                    rbac("use nodes/proxy (kubelet exec)"),
                );
            }
        }
    }
}
