//! Builds a [`Cluster`] from objects loaded by `sigil-kube` (which owns reading files and finding
//! pod templates). Pure: objects in, model out.

use sigil_kube::{Object, has_pod_templates, pod_templates};

use crate::error::ReachError;
use crate::model::{Cluster, Settings};

impl Cluster {
    /// Builds the model: workload kinds become workloads (one per pod template, grouped by
    /// owner), everything else goes through [`Cluster::add_object`].
    pub fn from_objects(objects: &[Object], settings: Settings) -> Result<Self, ReachError> {
        let mut c = Cluster::new(settings);
        for obj in objects {
            let source = obj.source.to_string();
            if has_pod_templates(&obj.kind) {
                // Pods owned by a controller in the same input are that controller's replicas.
                if obj.kind == "Pod"
                    && obj
                        .raw
                        .pointer("/metadata/ownerReferences/0/controller")
                        .and_then(serde_json::Value::as_bool)
                        == Some(true)
                {
                    continue;
                }
                let templates = pod_templates(obj).map_err(|e| ReachError::Decode {
                    object: format!("{source} ({} {})", obj.kind, obj.name),
                    kind: obj.kind.clone(),
                    reason: e.to_string(),
                })?;
                let many = templates.len() > 1;
                for t in &templates {
                    let ns = obj
                        .namespace
                        .clone()
                        .or_else(|| t.metadata.namespace.clone())
                        .unwrap_or_else(|| "default".into());
                    let name = if many {
                        let role = t
                            .field_path
                            .trim_end_matches(".spec")
                            .trim_end_matches(".template")
                            .rsplit('.')
                            .next()
                            .unwrap_or_default()
                            .to_ascii_lowercase();
                        format!("{}-{role}", obj.name)
                    } else {
                        obj.name.clone()
                    };
                    let replicas = obj
                        .raw
                        .pointer("/spec/replicas")
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|r| u32::try_from(r).ok())
                        .unwrap_or(1);
                    c.add_workload(
                        &obj.kind,
                        &ns,
                        &name,
                        &source,
                        replicas,
                        t.metadata.labels.clone().unwrap_or_default(),
                        &t.spec,
                    );
                    // StatefulSet volumeClaimTemplates: each pod mounts its own claim, named
                    // after the template; the template name is what sigil.yaml refers to.
                    let claims: Vec<String> = obj
                        .raw
                        .pointer("/spec/volumeClaimTemplates")
                        .and_then(serde_json::Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|v| {
                            v.pointer("/metadata/name")
                                .and_then(serde_json::Value::as_str)
                        })
                        .map(str::to_owned)
                        .collect();
                    if let Some(w) = c.workloads.last_mut() {
                        w.pvcs.extend(claims);
                        w.pvcs.sort();
                        w.pvcs.dedup();
                    }
                }
            } else {
                c.add_object(&obj.kind, obj.namespace.as_deref(), &obj.raw, &source)?;
            }
        }
        c.aggregate_cluster_roles();
        Ok(c)
    }
}
