//! Builds a [`Cluster`] from objects loaded by `sigil-kube` (which owns reading files and finding
//! pod templates). Pure: objects in, model out.
//!
//! Workloads are the pods of one owner. Manifests give owners (a Deployment and its template);
//! cluster dumps (`kubectl get pods,rs,deploy -A -o yaml`) give running Pods with
//! `ownerReferences`, and maybe some of their owners. Each object with pod templates is followed
//! up its chain of controller owners while they are in the input (Pod -> ReplicaSet ->
//! Deployment, Pod -> Job -> CronJob); the top one names the workload. When the chain leaves the
//! input, the last object stands for its owner: pods of an absent ReplicaSet make the workload
//! `ReplicaSet/<name>`, with `owner_in_input = false`. A pod owned by a Node is a static (mirror)
//! pod: it is its own workload. When pods are present they are what runs: the workload takes the
//! labels all its pods carry, and pods with more or other labels are kept as [`LabelVariant`]s for
//! [`crate::groups::variant_notes`], which says when their labels change a decision.

use std::collections::{BTreeMap, HashMap};

use sigil_kube::k8s_openapi::api::core::v1::PodSpec;
use sigil_kube::{Object, PodTemplate, has_pod_templates, pod_templates};

use crate::error::ReachError;
use crate::model::{Cluster, LabelVariant, Settings};

/// Longest owner chain followed (Pod -> ReplicaSet -> Deployment is 2 steps); a longer or
/// circular chain stops there.
const MAX_OWNER_DEPTH: usize = 8;

/// `(kind, name)` of the controller owner in `metadata.ownerReferences`.
fn controller_of(obj: &Object) -> Option<(&str, &str)> {
    obj.raw
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(serde_json::Value::as_bool) == Some(true))
        .and_then(|r| {
            let kind = r.get("kind")?.as_str()?;
            let name = r.get("name")?.as_str()?;
            (!kind.is_empty() && !name.is_empty()).then_some((kind, name))
        })
}

fn namespace_of(obj: &Object) -> String {
    obj.namespace.clone().unwrap_or_else(|| "default".into())
}

/// The objects that make one workload.
#[derive(Debug)]
struct Group {
    namespace: String,
    kind: String,
    name: String,
    /// The owner object, when it is in the input.
    root: Option<usize>,
    /// Objects folded into the group (pods, intermediate owners), in input order.
    members: Vec<usize>,
    static_pod_of: Option<String>,
}

fn decode_error(obj: &Object, e: &sigil_kube::LoadError) -> ReachError {
    ReachError::Decode {
        object: format!("{} ({} {})", obj.source, obj.kind, obj.name),
        kind: obj.kind.clone(),
        reason: e.to_string(),
    }
}

impl Cluster {
    /// Builds the model: workload kinds become workloads (one per pod template, grouped by
    /// owner), everything else goes through [`Cluster::add_object`].
    pub fn from_objects(objects: &[Object], settings: Settings) -> Result<Self, ReachError> {
        let mut c = Cluster::new(settings);
        let owned = objects
            .iter()
            .any(|o| has_pod_templates(&o.kind) && controller_of(o).is_some());
        for obj in objects {
            if !has_pod_templates(&obj.kind) {
                c.add_object(
                    &obj.kind,
                    obj.namespace.as_deref(),
                    &obj.raw,
                    &obj.source.to_string(),
                )?;
            } else if !owned {
                // Manifests: every workload object is its own owner.
                c.add_owner(obj, &obj.kind, &obj.name)?;
            }
        }
        if owned {
            for g in groups(objects) {
                c.add_group(objects, &g)?;
            }
        }
        c.aggregate_cluster_roles();
        Ok(c)
    }

    /// Adds the workload(s) of one owner object from its pod templates (several for the AI
    /// operators' kinds: `<name>-<role>`), named `kind`/`name`.
    fn add_owner(&mut self, obj: &Object, kind: &str, name: &str) -> Result<(), ReachError> {
        let templates = pod_templates(obj).map_err(|e| decode_error(obj, &e))?;
        let many = templates.len() > 1;
        let ns = namespace_of(obj);
        for t in &templates {
            let name = if many {
                format!("{name}-{}", role_of(t))
            } else {
                name.to_owned()
            };
            let replicas = obj
                .raw
                .pointer("/spec/replicas")
                .and_then(serde_json::Value::as_u64)
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(1);
            self.add_workload(
                kind,
                &ns,
                &name,
                &obj.source.to_string(),
                replicas,
                t.metadata.labels.clone().unwrap_or_default(),
                &t.spec,
            );
            self.add_claim_templates(obj);
        }
        Ok(())
    }

    /// StatefulSet volumeClaimTemplates: each pod mounts its own claim, named after the
    /// template; the template name is what sigil.yaml refers to.
    fn add_claim_templates(&mut self, obj: &Object) {
        let claims = obj
            .raw
            .pointer("/spec/volumeClaimTemplates")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| {
                v.pointer("/metadata/name")
                    .and_then(serde_json::Value::as_str)
            })
            .map(str::to_owned);
        if let Some(w) = self.workloads.last_mut() {
            w.pvcs.extend(claims);
            w.pvcs.sort();
            w.pvcs.dedup();
        }
    }

    fn add_group(&mut self, objects: &[Object], g: &Group) -> Result<(), ReachError> {
        let describe = |i: &usize| {
            objects
                .get(*i)
                .map(|o| format!("{} {}", o.kind, o.name))
                .unwrap_or_default()
        };
        let pods: Vec<&Object> = g
            .members
            .iter()
            .filter_map(|i| objects.get(*i))
            .filter(|o| o.kind == "Pod")
            .collect();
        let via: Vec<String> = g
            .members
            .iter()
            .filter(|i| objects.get(**i).is_some_and(|o| o.kind != "Pod"))
            .map(describe)
            .collect();
        let root = g.root.and_then(|i| objects.get(i));
        let first = self.workloads.len();
        // The owner's manifest decides when there are no pods, and for the operators' kinds
        // (several templates, one workload per role).
        let root_templates = match root {
            Some(r) => pod_templates(r).map_err(|e| decode_error(r, &e))?.len(),
            None => 0,
        };
        if let Some(r) = root
            && (pods.is_empty() || root_templates > 1)
        {
            self.add_owner(r, &g.kind, &g.name)?;
            if !pods.is_empty() {
                self.grouping_notes.push(format!(
                    "{} pods of {} {}/{} are analysed with its templates' labels (one workload per role); their own labels were not compared",
                    pods.len(),
                    g.kind,
                    g.namespace,
                    g.name
                ));
            }
        } else if pods.is_empty() {
            // Intermediate owners (ReplicaSets) of an owner that is not in the input: the ones
            // that run pods (replicas > 0) stand for it.
            let members: Vec<&Object> = g.members.iter().filter_map(|i| objects.get(*i)).collect();
            let active: Vec<&Object> = members
                .iter()
                .copied()
                .filter(|o| {
                    o.raw
                        .pointer("/spec/replicas")
                        .and_then(serde_json::Value::as_u64)
                        != Some(0)
                })
                .collect();
            let stand_in = active.first().or(members.first()).copied();
            if let Some(o) = stand_in {
                self.add_owner(o, &g.kind, &g.name)?;
            }
            if active.len() > 1 {
                self.grouping_notes.push(format!(
                    "{} {}/{} is not in the input; it is analysed with the template of {} {} ({} of its owned objects run pods)",
                    g.kind,
                    g.namespace,
                    g.name,
                    active.first().map_or("", |o| o.kind.as_str()),
                    active.first().map_or("", |o| o.name.as_str()),
                    active.len()
                ));
            }
        } else {
            self.add_pods(g, &pods)?;
            if let Some(r) = root {
                self.add_claim_templates(r);
            }
        }
        for w in self.workloads.iter_mut().skip(first) {
            w.via.clone_from(&via);
            w.owner_in_input = root.is_some();
            w.static_pod_of.clone_from(&g.static_pod_of);
        }
        Ok(())
    }

    /// One workload from running pods: the labels all of them carry, the spec of the pod whose
    /// name sorts first; every other label set among the pods becomes a [`LabelVariant`].
    fn add_pods(&mut self, g: &Group, pods: &[&Object]) -> Result<(), ReachError> {
        let mut by_labels: BTreeMap<BTreeMap<String, String>, Vec<String>> = BTreeMap::new();
        let mut first: Option<(&str, PodSpec, String)> = None;
        for pod in pods {
            let t = pod_templates(pod).map_err(|e| decode_error(pod, &e))?;
            let Some(t) = t.into_iter().next() else {
                continue;
            };
            by_labels
                .entry(t.metadata.labels.clone().unwrap_or_default())
                .or_default()
                .push(pod.name.clone());
            if first
                .as_ref()
                .is_none_or(|(n, _, _)| pod.name.as_str() < *n)
            {
                first = Some((pod.name.as_str(), t.spec, pod.source.to_string()));
            }
        }
        let Some((_, spec, source)) = first else {
            return Ok(());
        };
        let mut sets = by_labels.keys();
        let mut common = sets.next().cloned().unwrap_or_default();
        for l in sets {
            common.retain(|k, v| l.get(k) == Some(v));
        }
        let replicas = u32::try_from(pods.len()).unwrap_or(u32::MAX);
        self.add_workload(
            &g.kind,
            &g.namespace,
            &g.name,
            &source,
            replicas,
            common.clone(),
            &spec,
        );
        let index = self.workloads.len().saturating_sub(1);
        if let Some(w) = self.workloads.last_mut() {
            let mut names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
            names.sort();
            w.pods = names;
        }
        for (labels, mut names) in by_labels {
            if labels != common {
                names.sort();
                self.label_variants.push(LabelVariant {
                    workload: index,
                    labels,
                    pods: names,
                });
            }
        }
        Ok(())
    }
}

/// `master` for `spec.pytorchReplicaSpecs.Master.template.spec`.
fn role_of(t: &PodTemplate<'_>) -> String {
    t.field_path
        .trim_end_matches(".spec")
        .trim_end_matches(".template")
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Groups the objects with pod templates by their top controller owner, in the order the groups
/// first appear in the input.
fn groups(objects: &[Object]) -> Vec<Group> {
    let index: HashMap<(String, &str, &str), usize> = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| has_pod_templates(&o.kind))
        .map(|(i, o)| ((namespace_of(o), o.kind.as_str(), o.name.as_str()), i))
        .collect();
    let mut out: Vec<Group> = Vec::new();
    let mut by_key: HashMap<(String, String, String), usize> = HashMap::new();
    for (i, obj) in objects.iter().enumerate() {
        if !has_pod_templates(&obj.kind) {
            continue;
        }
        let ns = namespace_of(obj);
        let mut chain = vec![i];
        let mut cur = obj;
        // (kind, name, root object)
        let mut top: (String, String, Option<usize>) =
            (obj.kind.clone(), obj.name.clone(), Some(i));
        let mut static_pod_of = None;
        while let Some((kind, name)) = controller_of(cur) {
            if kind == "Node" && cur.kind == "Pod" {
                static_pod_of = Some(name.to_owned());
                break;
            }
            match index.get(&(ns.clone(), kind, name)) {
                Some(&j) if chain.len() <= MAX_OWNER_DEPTH && !chain.contains(&j) => {
                    chain.push(j);
                    top = (kind.to_owned(), name.to_owned(), Some(j));
                    match objects.get(j) {
                        Some(o) => cur = o,
                        None => break,
                    }
                }
                _ => {
                    top = (kind.to_owned(), name.to_owned(), None);
                    break;
                }
            }
        }
        let (kind, name, root) = top;
        let key = (ns.clone(), kind.clone(), name.clone());
        let g = match by_key.get(&key) {
            Some(&g) => g,
            None => {
                out.push(Group {
                    namespace: ns,
                    kind,
                    name,
                    root,
                    members: Vec::new(),
                    static_pod_of: static_pod_of.clone(),
                });
                by_key.insert(key, out.len() - 1);
                out.len() - 1
            }
        };
        if let Some(group) = out.get_mut(g)
            && root != Some(i)
        {
            group.members.push(i);
        }
    }
    for g in &mut out {
        g.members.sort_unstable();
        g.members.dedup();
    }
    out
}
