//! The fast reachability engine. Policies and peers are turned into bitsets over workloads once;
//! a pair is then decided with a few word operations, and port sets are only computed for pairs
//! that both directions can possibly allow. Owns: verdicts and their explanations.
//!
//! Semantics (Kubernetes NetworkPolicy): a pod is isolated for a direction when some policy
//! selects it and has that policy type; allows are the union over the selecting policies; a
//! connection needs the source's egress and the destination's ingress. hostNetwork pods are node
//! traffic: no policy selects them, and only an `ipBlock` covering the node addresses matches them.

use std::net::IpAddr;

use crate::ipset::IpSet;
use crate::model::{Cluster, NsScope, Peer, Rule, Workload};
use crate::ports::PortSet;

/// A fixed-size bitset over workload indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits(Vec<u64>);

impl Bits {
    pub fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }
    pub fn full(n: usize) -> Self {
        let mut b = Self::new(n);
        for i in 0..n {
            b.set(i);
        }
        b
    }
    pub fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    pub fn or_with(&mut self, o: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a |= b;
        }
    }
    pub fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// Indices of set bits.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let t = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + t)
            })
        })
    }
}

/// A rule, located in the cluster, with the workloads its peers match.
#[derive(Debug, Clone)]
struct RuleRef {
    policy: usize,
    index: usize,
    /// Workloads matched by the rule's peers (`None`: every peer).
    members: Option<Bits>,
    /// Whether ports depend on the destination (named ports).
    constant_ports: Option<PortSet>,
}

/// Precomputed reachability of one cluster.
#[derive(Debug)]
pub struct Engine<'c> {
    pub cluster: &'c Cluster,
    n: usize,
    /// Per workload: rules of policies that select it for ingress; `None` = not isolated.
    ingress: Vec<Option<Vec<usize>>>,
    egress: Vec<Option<Vec<usize>>>,
    rules: Vec<RuleRef>,
    /// Per workload: sources some ingress rule could admit (all when not isolated).
    in_any: Vec<Bits>,
    /// Per workload: destinations some egress rule could admit.
    eg_any: Vec<Bits>,
    node_traffic: IpSet,
}

/// Which direction a rule or isolation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// One rule that admits a pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hit {
    pub policy: String,
    pub direction: Direction,
    pub rule: usize,
    /// Index of the matching peer (`None`: the rule has no peers, i.e. every peer).
    pub peer: Option<usize>,
    pub ports: PortSet,
}

impl std::fmt::Display for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peer_field = match self.direction {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        write!(
            f,
            "{} {}[{}]",
            self.policy,
            self.direction.as_str(),
            self.rule
        )?;
        match self.peer {
            Some(p) => write!(f, ".{peer_field}[{p}]")?,
            None => write!(f, " (any peer)")?,
        }
        write!(f, " ports {}", self.ports)
    }
}

/// The decision for one direction of a pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Side {
    pub direction: Direction,
    /// Policies that select the pod for this direction (empty: not isolated).
    pub isolating: Vec<String>,
    pub hits: Vec<Hit>,
    pub allowed: PortSet,
    /// Why the pod is not subject to policies (hostNetwork).
    pub note: Option<String>,
}

/// The full decision for a pair, with reasons.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    pub egress: Side,
    pub ingress: Side,
    pub allowed: PortSet,
}

impl Explanation {
    /// One line: why this verdict.
    pub fn because(&self, src: &str, dst: &str) -> String {
        let side = |s: &Side, who: &str| -> String {
            if let Some(n) = &s.note {
                return format!("{} of {who}: {n}", s.direction.as_str());
            }
            if s.isolating.is_empty() {
                return format!(
                    "{} of {who} not isolated (no policy selects it for {})",
                    s.direction.as_str(),
                    s.direction.as_str()
                );
            }
            if s.hits.is_empty() {
                return format!(
                    "{} of {who} isolated by {} and no rule matches",
                    s.direction.as_str(),
                    s.isolating.join(", ")
                );
            }
            let hits: Vec<String> = s.hits.iter().map(ToString::to_string).collect();
            format!("{} allowed by {}", s.direction.as_str(), hits.join("; "))
        };
        let e = side(&self.egress, src);
        let i = side(&self.ingress, dst);
        if self.allowed.is_empty()
            && !self.egress.allowed.is_empty()
            && !self.ingress.allowed.is_empty()
        {
            format!(
                "{e}; {i}; but no port is in both (egress {}, ingress {})",
                self.egress.allowed, self.ingress.allowed
            )
        } else {
            format!("{e}; {i}")
        }
    }
}

/// Which workloads a peer matches (hostNetwork workloads only through node addresses).
fn peer_members(c: &Cluster, peer: &Peer, node_traffic: &IpSet, out: &mut Bits) {
    match peer {
        Peer::Pods { namespaces, pods } => {
            let ns_ok: std::collections::BTreeMap<&str, bool> = c
                .namespaces
                .values()
                .map(|n| {
                    let ok = match namespaces {
                        NsScope::Own(own) => &n.name == own,
                        NsScope::Selector(s) => s.matches(&n.labels),
                    };
                    (n.name.as_str(), ok)
                })
                .collect();
            for (i, w) in c.workloads.iter().enumerate() {
                if !w.host_network
                    && ns_ok.get(w.namespace.as_str()).copied().unwrap_or(false)
                    && pods.matches(&w.labels)
                {
                    out.set(i);
                }
            }
        }
        Peer::Ip { set, .. } => {
            if !node_traffic.is_empty() && set.covers(node_traffic) {
                for (i, w) in c.workloads.iter().enumerate() {
                    if w.host_network {
                        out.set(i);
                    }
                }
            }
        }
    }
}

impl<'c> Engine<'c> {
    pub fn new(cluster: &'c Cluster) -> Self {
        let n = cluster.workloads.len();
        let node_traffic = cluster
            .settings
            .node_cidrs
            .iter()
            .fold(IpSet::empty(), |s, c| s.union(&IpSet::from_cidr(c)));
        let mut rules = Vec::new();
        let mut ingress: Vec<Option<Vec<usize>>> = vec![None; n];
        let mut egress: Vec<Option<Vec<usize>>> = vec![None; n];
        // Workloads by namespace, for selecting.
        let mut by_ns: std::collections::HashMap<&str, Vec<usize>> = Default::default();
        for (i, w) in cluster.workloads.iter().enumerate() {
            by_ns.entry(w.namespace.as_str()).or_default().push(i);
        }
        for (pi, p) in cluster.policies.iter().enumerate() {
            let selected: Vec<usize> = by_ns
                .get(p.namespace.as_str())
                .into_iter()
                .flatten()
                .copied()
                .filter(|&i| {
                    cluster
                        .workloads
                        .get(i)
                        .is_some_and(|w| !w.host_network && p.selector.matches(&w.labels))
                })
                .collect();
            for (list, table) in [(&p.ingress, &mut ingress), (&p.egress, &mut egress)] {
                let Some(list) = list else { continue };
                let first = rules.len();
                for (ri, r) in list.iter().enumerate() {
                    let members = r.peers.as_ref().map(|peers| {
                        let mut b = Bits::new(n);
                        for peer in peers {
                            peer_members(cluster, peer, &node_traffic, &mut b);
                        }
                        b
                    });
                    let constant_ports = match &r.ports {
                        None => Some(PortSet::all()),
                        Some(ports)
                            if ports
                                .iter()
                                .all(|p| !matches!(p, crate::model::PortRule::Named(..))) =>
                        {
                            cluster.workloads.first().map(|w| r.ports_on(w))
                        }
                        Some(_) => None,
                    };
                    rules.push(RuleRef {
                        policy: pi,
                        index: ri,
                        members,
                        constant_ports,
                    });
                }
                let ids: Vec<usize> = (first..rules.len()).collect();
                for &w in &selected {
                    if let Some(slot) = table.get_mut(w) {
                        slot.get_or_insert_with(Vec::new).extend(&ids);
                    }
                }
            }
        }
        let any = |table: &[Option<Vec<usize>>], rules: &[RuleRef]| -> Vec<Bits> {
            table
                .iter()
                .map(|t| match t {
                    None => Bits::full(n),
                    Some(ids) => {
                        let mut b = Bits::new(n);
                        for id in ids {
                            match rules.get(*id).map(|r| &r.members) {
                                Some(Some(m)) => b.or_with(m),
                                Some(None) => return Bits::full(n),
                                None => {}
                            }
                        }
                        b
                    }
                })
                .collect()
        };
        let in_any = any(&ingress, &rules);
        let eg_any = any(&egress, &rules);
        Self {
            cluster,
            n,
            ingress,
            egress,
            rules,
            in_any,
            eg_any,
            node_traffic,
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn workload(&self, i: usize) -> Option<&'c Workload> {
        self.cluster.workloads.get(i)
    }

    fn ports_of(&self, rr: &RuleRef, rule: &Rule, dst: &Workload) -> PortSet {
        match &rr.constant_ports {
            Some(p) => p.clone(),
            None => rule.ports_on(dst),
        }
    }

    /// Ports on which `src` may connect to `dst` (empty: denied). Self-pairs are evaluated like any
    /// other pair (pods of one workload talking to each other).
    pub fn verdict(&self, src: usize, dst: usize) -> PortSet {
        let (Some(in_any), Some(eg_any)) = (self.in_any.get(dst), self.eg_any.get(src)) else {
            return PortSet::empty();
        };
        if !in_any.get(src) || !eg_any.get(dst) {
            return PortSet::empty();
        }
        let Some(d) = self.workload(dst) else {
            return PortSet::empty();
        };
        let side =
            |table: &Vec<Option<Vec<usize>>>, me: usize, peer: usize, dir: Direction| match table
                .get(me)
            {
                Some(Some(ids)) => {
                    let mut acc = PortSet::empty();
                    for &id in ids {
                        let Some(rr) = self.rules.get(id) else {
                            continue;
                        };
                        if rr.members.as_ref().is_none_or(|m| m.get(peer))
                            && let Some(rule) = self.rule_at(rr, dir)
                        {
                            acc.union_with(&self.ports_of(rr, rule, d));
                        }
                        if acc.is_all() {
                            break;
                        }
                    }
                    acc
                }
                _ => PortSet::all(),
            };
        let i = side(&self.ingress, dst, src, Direction::Ingress);
        if i.is_empty() {
            return i;
        }
        let e = side(&self.egress, src, dst, Direction::Egress);
        i.intersection(&e)
    }

    fn rule_at(&self, rr: &RuleRef, dir: Direction) -> Option<&'c Rule> {
        let p = self.cluster.policies.get(rr.policy)?;
        let list = match dir {
            Direction::Ingress => p.ingress.as_ref(),
            Direction::Egress => p.egress.as_ref(),
        };
        list?.get(rr.index)
    }

    /// Whether `dst`'s ingress alone would admit `src` on some port (for "what if the source's
    /// egress were open" questions).
    pub fn ingress_admits(&self, src: usize, dst: usize) -> bool {
        self.in_any.get(dst).is_some_and(|b| b.get(src))
            && !self
                .explain_side(dst, src, Direction::Ingress)
                .allowed
                .is_empty()
    }

    /// Whether `src`'s egress alone would admit `dst` on some port.
    pub fn egress_admits(&self, src: usize, dst: usize) -> bool {
        self.eg_any.get(src).is_some_and(|b| b.get(dst))
            && !self
                .explain_side(src, dst, Direction::Egress)
                .allowed
                .is_empty()
    }

    /// Every allowed pair with its ports.
    pub fn matrix(&self) -> Vec<(usize, usize, PortSet)> {
        let mut out = Vec::new();
        for s in 0..self.n {
            let Some(eg) = self.eg_any.get(s) else {
                continue;
            };
            for d in eg.iter() {
                if d >= self.n {
                    break;
                }
                let p = self.verdict(s, d);
                if !p.is_empty() {
                    out.push((s, d, p));
                }
            }
        }
        out
    }

    /// Number of allowed pairs, without keeping them (for benchmarks).
    pub fn count_allowed(&self) -> usize {
        let mut count = 0;
        for s in 0..self.n {
            let Some(eg) = self.eg_any.get(s) else {
                continue;
            };
            for d in eg.iter() {
                if d < self.n && !self.verdict(s, d).is_empty() {
                    count += 1;
                }
            }
        }
        count
    }

    fn explain_side(&self, me: usize, peer: usize, dir: Direction) -> Side {
        let table = match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        };
        // The rule's peers are matched against the far end; ports resolve on the destination.
        let (dst_idx, peer_idx) = match dir {
            Direction::Ingress => (me, peer),
            Direction::Egress => (peer, peer),
        };
        let note = self.workload(me).filter(|w| w.host_network).map(|_| {
            "hostNetwork pod: NetworkPolicies do not select it; its traffic is node traffic"
                .to_owned()
        });
        let mut side = Side {
            direction: dir,
            isolating: Vec::new(),
            hits: Vec::new(),
            allowed: PortSet::all(),
            note,
        };
        let Some(Some(ids)) = table.get(me) else {
            return side;
        };
        let Some(dst) = self.workload(dst_idx) else {
            return side;
        };
        side.allowed = PortSet::empty();
        for &id in ids {
            let Some(rr) = self.rules.get(id) else {
                continue;
            };
            let Some(p) = self.cluster.policies.get(rr.policy) else {
                continue;
            };
            let key = p.key();
            if !side.isolating.contains(&key) {
                side.isolating.push(key.clone());
            }
            let Some(rule) = self.rule_at(rr, dir) else {
                continue;
            };
            let peer_hit = match (&rule.peers, &rr.members) {
                (None, _) => Some(None),
                (Some(peers), Some(m)) if m.get(peer_idx) => {
                    // Name the first peer that matches.
                    let one = peers.iter().position(|pe| {
                        let mut b = Bits::new(self.n);
                        peer_members(self.cluster, pe, &self.node_traffic, &mut b);
                        b.get(peer_idx)
                    });
                    Some(one)
                }
                _ => None,
            };
            if let Some(peer) = peer_hit {
                let ports = self.ports_of(rr, rule, dst);
                side.allowed.union_with(&ports);
                side.hits.push(Hit {
                    policy: key,
                    direction: dir,
                    rule: rr.index,
                    peer,
                    ports,
                });
            }
        }
        // Policies with this type but no rules isolate too.
        for p in &self.cluster.policies {
            let list = match dir {
                Direction::Ingress => &p.ingress,
                Direction::Egress => &p.egress,
            };
            if matches!(list, Some(l) if l.is_empty())
                && self.workload(me).is_some_and(|w| {
                    !w.host_network && w.namespace == p.namespace && p.selector.matches(&w.labels)
                })
                && !side.isolating.contains(&p.key())
            {
                side.isolating.push(p.key());
            }
        }
        side
    }

    /// Why `src` may or may not connect to `dst`.
    pub fn explain(&self, src: usize, dst: usize) -> Explanation {
        let egress = self.explain_side(src, dst, Direction::Egress);
        let ingress = self.explain_side(dst, src, Direction::Ingress);
        let allowed = egress.allowed.intersection(&ingress.allowed);
        Explanation {
            egress,
            ingress,
            allowed,
        }
    }

    /// Ports `src` may use towards an address outside the cluster.
    pub fn egress_to_ip(&self, src: usize, ip: IpAddr) -> PortSet {
        self.ip_side(&self.egress, src, ip, Direction::Egress)
    }

    /// Ports on which an outside address may connect to `dst`.
    pub fn ingress_from_ip(&self, dst: usize, ip: IpAddr) -> PortSet {
        self.ip_side(&self.ingress, dst, ip, Direction::Ingress)
    }

    fn ip_side(
        &self,
        table: &[Option<Vec<usize>>],
        me: usize,
        ip: IpAddr,
        dir: Direction,
    ) -> PortSet {
        let Some(Some(ids)) = table.get(me) else {
            return PortSet::all();
        };
        let mut acc = PortSet::empty();
        for &id in ids {
            let Some(rr) = self.rules.get(id) else {
                continue;
            };
            let Some(rule) = self.rule_at(rr, dir) else {
                continue;
            };
            let hit = match &rule.peers {
                None => true,
                Some(peers) => peers
                    .iter()
                    .any(|p| matches!(p, Peer::Ip { set, .. } if set.contains(ip))),
            };
            if hit {
                // Named ports cannot be resolved on an outside address: only numbered ones count.
                let ports = match &rule.ports {
                    None => PortSet::all(),
                    Some(list) => list.iter().fold(PortSet::empty(), |mut a, p| {
                        match p {
                            crate::model::PortRule::All(pr) => a.union_with(&PortSet::all_of(*pr)),
                            crate::model::PortRule::Range(pr, x, y) => {
                                a.union_with(&PortSet::range(*pr, *x, *y))
                            }
                            crate::model::PortRule::Named(..) => {}
                        }
                        a
                    }),
                };
                acc.union_with(&ports);
            }
        }
        acc
    }

    /// Outside addresses `src` may send to on some port (all when egress is not isolated).
    pub fn egress_addresses(&self, src: usize) -> IpSet {
        let Some(Some(ids)) = self.egress.get(src) else {
            return IpSet::all();
        };
        let mut acc = IpSet::empty();
        for &id in ids {
            let Some(rr) = self.rules.get(id) else {
                continue;
            };
            let Some(rule) = self.rule_at(rr, Direction::Egress) else {
                continue;
            };
            match &rule.peers {
                None => return IpSet::all(),
                Some(peers) => {
                    for p in peers {
                        if let Peer::Ip { set, .. } = p {
                            acc = acc.union(set);
                        }
                    }
                }
            }
        }
        acc
    }

    /// Whether the workload is isolated for ingress / egress.
    pub fn isolation(&self, i: usize) -> (bool, bool) {
        (
            matches!(self.ingress.get(i), Some(Some(_))),
            matches!(self.egress.get(i), Some(Some(_))),
        )
    }
}
