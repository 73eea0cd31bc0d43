//! Pod templates inside objects: the core workload kinds and the AI operators' resources.
//!
//! Each template is typed as k8s-openapi `ObjectMeta` + `PodSpec`, with the JSON path of the pod
//! spec in its owner (`spec.template.spec`, `spec.pytorchReplicaSpecs.Worker.template.spec`), so
//! findings can name the exact field.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::{LoadError, Object};

/// A pod template found in an object.
#[derive(Debug, Clone)]
pub struct PodTemplate<'a> {
    pub owner: &'a Object,
    /// Dotted path of the pod spec in the owner, e.g. `spec.template.spec`.
    pub field_path: String,
    /// The template's metadata; `namespace` is filled in from the owner when the template has none.
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

/// Kinds (by `kind`, any API group among the known operators) that carry pod templates.
const KINDS: &[&str] = &[
    "Pod",
    "PodTemplate",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
    // Kubeflow training operator.
    "PyTorchJob",
    "TFJob",
    "MPIJob",
    "XGBoostJob",
    "PaddleJob",
    "JAXJob",
    // KubeRay.
    "RayCluster",
    "RayJob",
    "RayService",
    // KServe.
    "InferenceService",
];

/// Whether objects of `kind` carry pod templates that [`pod_templates`] extracts.
pub fn has_pod_templates(kind: &str) -> bool {
    KINDS.contains(&kind)
}

/// The pod templates in `obj`; empty for kinds without pod templates.
pub fn pod_templates(obj: &Object) -> Result<Vec<PodTemplate<'_>>, LoadError> {
    let mut out = Vec::new();
    let raw = &obj.raw;
    match obj.kind.as_str() {
        "Pod" => add(obj, raw.get("metadata"), raw.get("spec"), "spec", &mut out)?,
        "PodTemplate" => template(obj, raw.get("template"), "template", &mut out)?,
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => {
            template(obj, at(raw, "spec.template"), "spec.template", &mut out)?
        }
        "CronJob" => template(
            obj,
            at(raw, "spec.jobTemplate.spec.template"),
            "spec.jobTemplate.spec.template",
            &mut out,
        )?,
        "PyTorchJob" | "TFJob" | "MPIJob" | "XGBoostJob" | "PaddleJob" | "JAXJob" => {
            if let Some(Value::Object(spec)) = raw.get("spec") {
                for (key, specs) in spec {
                    if !key.ends_with("ReplicaSpecs") {
                        continue;
                    }
                    if let Value::Object(roles) = specs {
                        for (role, rs) in roles {
                            let path = format!("spec.{key}.{role}.template");
                            template(obj, rs.get("template"), &path, &mut out)?;
                        }
                    }
                }
            }
        }
        "RayCluster" => ray_cluster(obj, raw.get("spec"), "spec", &mut out)?,
        "RayJob" => {
            ray_cluster(
                obj,
                at(raw, "spec.rayClusterSpec"),
                "spec.rayClusterSpec",
                &mut out,
            )?;
            template(
                obj,
                at(raw, "spec.submitterPodTemplate"),
                "spec.submitterPodTemplate",
                &mut out,
            )?;
        }
        "RayService" => ray_cluster(
            obj,
            at(raw, "spec.rayClusterConfig"),
            "spec.rayClusterConfig",
            &mut out,
        )?,
        "InferenceService" => {
            for component in ["predictor", "transformer", "explainer"] {
                kserve_component(obj, component, &mut out)?;
            }
        }
        _ => {}
    }
    Ok(out)
}

fn at<'v>(v: &'v Value, dotted: &str) -> Option<&'v Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

fn template<'a>(
    obj: &'a Object,
    tpl: Option<&Value>,
    path: &str,
    out: &mut Vec<PodTemplate<'a>>,
) -> Result<(), LoadError> {
    let Some(tpl) = tpl.filter(|t| !t.is_null()) else {
        return Ok(());
    };
    add(
        obj,
        tpl.get("metadata"),
        tpl.get("spec"),
        &format!("{path}.spec"),
        out,
    )
}

fn ray_cluster<'a>(
    obj: &'a Object,
    spec: Option<&Value>,
    path: &str,
    out: &mut Vec<PodTemplate<'a>>,
) -> Result<(), LoadError> {
    let Some(spec) = spec else { return Ok(()) };
    template(
        obj,
        at(spec, "headGroupSpec.template"),
        &format!("{path}.headGroupSpec.template"),
        out,
    )?;
    if let Some(Value::Array(groups)) = spec.get("workerGroupSpecs") {
        for (i, g) in groups.iter().enumerate() {
            template(
                obj,
                g.get("template"),
                &format!("{path}.workerGroupSpecs[{i}].template"),
                out,
            )?;
        }
    }
    Ok(())
}

/// KServe model-framework keys whose value is a container-like spec run in `kserve-container`.
const KSERVE_FRAMEWORKS: &[&str] = &[
    "model",
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
];

/// A KServe component (`spec.predictor`, ...) is a PodSpec inline, plus a framework spec that
/// becomes the `kserve-container`.
fn kserve_component<'a>(
    obj: &'a Object,
    component: &str,
    out: &mut Vec<PodTemplate<'a>>,
) -> Result<(), LoadError> {
    let path = format!("spec.{component}");
    let Some(c) = at(&obj.raw, &path).filter(|c| c.is_object()) else {
        return Ok(());
    };
    let mut spec: PodSpec = parse(obj, c, &path)?;
    for fw in KSERVE_FRAMEWORKS {
        if let Some(m) = c.get(*fw).filter(|m| m.is_object()) {
            let mut container: Container = parse(obj, m, &format!("{path}.{fw}"))?;
            if container.name.is_empty() {
                "kserve-container".clone_into(&mut container.name);
            }
            spec.containers.insert(0, container);
        }
    }
    let metadata = owner_meta(obj)?;
    out.push(PodTemplate {
        owner: obj,
        field_path: path,
        metadata,
        spec,
    });
    Ok(())
}

fn owner_meta(obj: &Object) -> Result<ObjectMeta, LoadError> {
    let mut m: ObjectMeta = match obj.raw.get("metadata") {
        Some(m) if !m.is_null() => parse(obj, m, "metadata")?,
        _ => ObjectMeta::default(),
    };
    if m.namespace.is_none() {
        m.namespace.clone_from(&obj.namespace);
    }
    Ok(m)
}

fn parse<T: serde::de::DeserializeOwned>(
    obj: &Object,
    v: &Value,
    path: &str,
) -> Result<T, LoadError> {
    T::deserialize(v).map_err(|e| obj.invalid(path, e.to_string()))
}

fn add<'a>(
    obj: &'a Object,
    meta: Option<&Value>,
    spec: Option<&Value>,
    path: &str,
    out: &mut Vec<PodTemplate<'a>>,
) -> Result<(), LoadError> {
    let meta_path = path
        .strip_suffix("spec")
        .map_or_else(|| "metadata".to_owned(), |p| format!("{p}metadata"));
    let mut metadata: ObjectMeta = match meta {
        Some(m) if !m.is_null() => parse(obj, m, &meta_path)?,
        _ => ObjectMeta::default(),
    };
    if metadata.namespace.is_none() {
        metadata.namespace.clone_from(&obj.namespace);
    }
    let spec: PodSpec = match spec {
        Some(s) if !s.is_null() => parse(obj, s, path)?,
        _ => return Err(obj.invalid(path, "missing pod spec".to_owned())),
    };
    out.push(PodTemplate {
        owner: obj,
        field_path: path.to_owned(),
        metadata,
        spec,
    });
    Ok(())
}
