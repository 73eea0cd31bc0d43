//! Pods of one workload that carry different labels ([`LabelVariant`]s, found when a cluster dump's
//! pods are grouped by owner; see `load.rs`). A workload is analysed with one label set; this says
//! when another pod's labels would change a decision, so the matrix is never silently wrong for
//! those pods. Most variants are harmless (`statefulset.kubernetes.io/pod-name`,
//! `pod-template-hash` during a rollout) and produce no note. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::engine::Engine;
use crate::model::{Cluster, LabelVariant, Peer};
use crate::selector::{Requirement, Selector};

/// Most differing peers named in one note.
const MAX_EXAMPLES: usize = 3;

/// One note per label variant whose labels change a decision: isolation, or the ports allowed
/// to or from some workload (the workload itself included). Variants that change nothing give no
/// note. Costs one engine build over the workloads plus the variants that differ in a key some
/// pod selector names (none at all when no variant does).
pub fn variant_notes(cluster: &Cluster) -> Vec<String> {
    if cluster.label_variants.is_empty() {
        return Vec::new();
    }
    // A selector reads only the keys it names: a variant that differs from its workload only in
    // keys no pod selector names (`statefulset.kubernetes.io/pod-name`, usually) cannot change a
    // decision, and is not evaluated.
    let keys = selector_keys(cluster);
    let relevant: Vec<&LabelVariant> = cluster
        .label_variants
        .iter()
        .filter(|v| {
            cluster
                .workloads
                .get(v.workload)
                .is_some_and(|w| differing_keys(&w.labels, &v.labels).any(|k| keys.contains(k)))
        })
        .collect();
    if relevant.is_empty() {
        return Vec::new();
    }
    let n = cluster.workloads.len();
    let mut extended = cluster.clone();
    let mut kept: Vec<(usize, &LabelVariant)> = Vec::new();
    for v in relevant {
        if let Some(w) = cluster.workloads.get(v.workload) {
            let mut pod = w.clone();
            pod.labels.clone_from(&v.labels);
            extended.workloads.push(pod);
            kept.push((extended.workloads.len().saturating_sub(1), v));
        }
    }
    let engine = Engine::new(&extended);
    let name = |i: usize| {
        extended
            .workloads
            .get(i)
            .map(|w| w.key())
            .unwrap_or_default()
    };
    let mut notes = Vec::new();
    for (vi, v) in kept {
        let g = v.workload;
        let mut diffs: Vec<String> = Vec::new();
        let (gi, ge) = engine.isolation(g);
        let (vi_in, vi_eg) = engine.isolation(vi);
        if gi != vi_in {
            diffs.push(format!(
                "ingress isolated: workload {}, these pods {}",
                yes(gi),
                yes(vi_in)
            ));
        }
        if ge != vi_eg {
            diffs.push(format!(
                "egress isolated: workload {}, these pods {}",
                yes(ge),
                yes(vi_eg)
            ));
        }
        for o in 0..n {
            // The variant's peers: other workloads, and the rest of its own workload.
            let (to_group, to_variant) = (engine.verdict(g, o), engine.verdict(vi, o));
            if to_group != to_variant {
                diffs.push(format!(
                    "to {}: workload {to_group}, these pods {to_variant}",
                    name(o)
                ));
            }
            let (from_group, from_variant) = (engine.verdict(o, g), engine.verdict(o, vi));
            if from_group != from_variant {
                diffs.push(format!(
                    "from {}: workload {from_group}, these pods {from_variant}",
                    name(o)
                ));
            }
        }
        if diffs.is_empty() {
            continue;
        }
        let w = cluster.workloads.get(g);
        let mut note = format!(
            "pods {} of {} {} have labels {} that change decisions: ",
            v.pods.join(", "),
            w.map_or("", |w| w.kind.as_str()),
            name(g),
            label_diff(w.map(|w| &w.labels), &v.labels)
        );
        let shown: Vec<&str> = diffs
            .iter()
            .take(MAX_EXAMPLES)
            .map(String::as_str)
            .collect();
        note.push_str(&shown.join("; "));
        if diffs.len() > MAX_EXAMPLES {
            let _ = write!(note, "; and {} more", diffs.len() - MAX_EXAMPLES);
        }
        note.push_str(" (the matrix uses the labels all of the workload's pods carry)");
        notes.push(note);
    }
    notes
}

/// Label keys named by the pod selectors of every policy (the policy's own and its peers').
fn selector_keys(cluster: &Cluster) -> BTreeSet<&str> {
    fn add<'c>(keys: &mut BTreeSet<&'c str>, s: &'c Selector) {
        for r in &s.requirements {
            let (Requirement::Equals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k)) = r;
            keys.insert(k.as_str());
        }
    }
    let mut keys = BTreeSet::new();
    for p in &cluster.policies {
        add(&mut keys, &p.selector);
        for rule in p.ingress.iter().chain(p.egress.iter()).flatten() {
            for peer in rule.peers.iter().flatten() {
                if let Peer::Pods { pods, .. } = peer {
                    add(&mut keys, pods);
                }
            }
        }
    }
    keys
}

/// Keys whose presence or value differs between two label sets.
fn differing_keys<'a>(
    a: &'a BTreeMap<String, String>,
    b: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = &'a str> {
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).map(String::as_str))
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `{+role=leader, -tier, tier: web->db}` relative to the workload's labels.
fn label_diff(
    base: Option<&BTreeMap<String, String>>,
    labels: &BTreeMap<String, String>,
) -> String {
    let empty = BTreeMap::new();
    let base = base.unwrap_or(&empty);
    let mut parts = Vec::new();
    for (k, v) in labels {
        match base.get(k) {
            None => parts.push(format!("+{k}={v}")),
            Some(b) if b != v => parts.push(format!("{k}: {b}->{v}")),
            Some(_) => {}
        }
    }
    for k in base.keys() {
        if !labels.contains_key(k) {
            parts.push(format!("-{k}"));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

/// How a workload was grouped, for listings: `2 pods via ReplicaSet web-5c9f8d7b6`,
/// `2 pods (DaemonSet not in the input)`, `static pod of Node cp1`; `None` for a workload known
/// only from its own manifest.
pub fn describe(w: &crate::model::Workload) -> Option<String> {
    if let Some(node) = &w.static_pod_of {
        return Some(format!("static pod of Node {node}"));
    }
    if w.pods.is_empty() && w.via.is_empty() && w.owner_in_input {
        return None;
    }
    let mut parts = Vec::new();
    if !w.pods.is_empty() {
        parts.push(format!(
            "{} pod{}",
            w.pods.len(),
            if w.pods.len() == 1 { "" } else { "s" }
        ));
    }
    if !w.via.is_empty() {
        parts.push(format!("via {}", w.via.join(", ")));
    }
    if !w.owner_in_input {
        parts.push(format!("({} not in the input)", w.kind));
    }
    Some(parts.join(" "))
}
