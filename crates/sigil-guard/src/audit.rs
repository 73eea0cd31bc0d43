//! The audit engine: applies Pod Security Standards, the AI/GPU rules and users' Rego policies to
//! a set of objects, with the policy's exemptions. Pure: objects in, a [`Report`] out.

use std::collections::{BTreeMap, HashMap, HashSet};

use sigil_kube::k8s_openapi::api::core::v1::PodSpec;
use sigil_kube::{Object, PodTemplate};
use sigil_policy::{Exemption, ModelPolicy, PodSecurityLevel, Policy, Workload};

use crate::containers::{self, ContainerView};
use crate::finding::{Finding, ObjectRef, Report, Waived};
use crate::pss::{self, PssVersion};
use crate::rego::RegoPolicies;
use crate::{image, models, rules};

/// What the rules are configured with (from `sigil.yaml`, or defaults without one).
#[derive(Debug, Clone)]
pub struct Settings {
    pub level: PodSecurityLevel,
    pub version: PssVersion,
    /// Namespaces allowed to request GPUs; `None`: no policy, the rule is off.
    pub gpu_namespaces: Option<Vec<String>>,
    /// Allowed registry prefixes; empty: any registry.
    pub allowed_registries: Vec<String>,
    pub require_image_digest: bool,
    pub exemptions: Vec<Exemption>,
    pub models: ModelPolicy,
    pub workloads: Vec<Workload>,
}

impl Default for Settings {
    /// Without a policy: restricted at latest, digests required, no GPU/registry/workload lists.
    fn default() -> Self {
        Self {
            level: PodSecurityLevel::Restricted,
            version: PssVersion::LATEST,
            gpu_namespaces: None,
            allowed_registries: Vec::new(),
            require_image_digest: true,
            exemptions: Vec::new(),
            models: ModelPolicy::default(),
            workloads: Vec::new(),
        }
    }
}

impl Settings {
    /// Settings from a validated policy.
    pub fn from_policy(p: &Policy) -> Result<Self, String> {
        let g = &p.guardrails;
        Ok(Self {
            level: g.pod_security_level,
            version: PssVersion::parse(&g.pod_security_version)?,
            gpu_namespaces: Some(g.gpu_namespaces.clone()),
            allowed_registries: g.allowed_registries.clone(),
            require_image_digest: g.require_image_digest,
            exemptions: g.exemptions.clone(),
            models: p.models.clone(),
            workloads: p.workloads.clone(),
        })
    }

    fn exemption(&self, rule: &str, namespace: &str, name: &str) -> Option<&Exemption> {
        self.exemptions.iter().find(|e| {
            e.namespace == namespace
                && e.name.as_deref().is_none_or(|n| n == name)
                && (e.rules.is_empty() || e.rules.iter().any(|r| r == rule))
        })
    }
}

/// Parses a Pod Security level name.
pub fn parse_level(s: &str) -> Result<PodSecurityLevel, String> {
    match s {
        "privileged" => Ok(PodSecurityLevel::Privileged),
        "baseline" => Ok(PodSecurityLevel::Baseline),
        "restricted" => Ok(PodSecurityLevel::Restricted),
        other => Err(format!(
            "unknown Pod Security level {other:?}; use privileged, baseline or restricted"
        )),
    }
}

/// Why an audit could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Load(Box<sigil_kube::LoadError>),
    #[error(transparent)]
    Rego(#[from] crate::rego::RegoError),
}

/// Kinds that carry no pod template and that Sigil knows are not workloads.
const KNOWN_INERT: &[&str] = &[
    "Namespace",
    "Service",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "NetworkPolicy",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "StorageClass",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "Ingress",
    "IngressClass",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "ResourceQuota",
    "LimitRange",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "CustomResourceDefinition",
    "Endpoints",
    "EndpointSlice",
    "ConstraintTemplate",
    "ServingRuntime",
    "ClusterServingRuntime",
];

/// Everything the rules need to know about the other objects in the input.
#[derive(Debug, Default)]
struct Context<'a> {
    network_policies: Vec<&'a Object>,
    /// Labels of the Namespace objects in the input (for Gatekeeper `namespaceSelector`).
    namespace_labels: crate::rego::NamespaceLabels,
    /// `(namespace, name)` of ServiceAccounts with `automountServiceAccountToken: false`.
    sa_no_automount: HashSet<(String, String)>,
    /// Namespace → (level, version) from `pod-security.kubernetes.io/enforce*` labels.
    ns_levels: HashMap<String, (PodSecurityLevel, PssVersion)>,
}

/// The audit engine.
#[derive(Debug, Default)]
pub struct Auditor {
    pub settings: Settings,
    pub rego: Option<RegoPolicies>,
}

impl Auditor {
    pub fn new(settings: Settings, rego: Option<RegoPolicies>) -> Self {
        Self { settings, rego }
    }

    /// Audits a set of objects (one input: NetworkPolicies and ServiceAccounts in it are context).
    pub fn audit(&self, objects: &[Object]) -> Result<Report, AuditError> {
        let ctx = self.context(objects);
        let mut report = Report {
            objects: objects.len(),
            ..Report::default()
        };
        let mut raw = Vec::new();
        for obj in objects {
            let templates =
                sigil_kube::pod_templates(obj).map_err(|e| AuditError::Load(Box::new(e)))?;
            if templates.is_empty()
                && !sigil_kube::has_pod_templates(&obj.kind)
                && !KNOWN_INERT.contains(&obj.kind.as_str())
            {
                report.unknown_kinds.push(ObjectRef::of(obj));
            }
            report.pod_templates += templates.len();
            for t in &templates {
                self.check_template(t, &ctx, &mut raw);
            }
            self.check_object(obj, &templates, &mut raw);
            if let Some(rego) = &self.rego {
                raw.extend(rego.evaluate(obj, &ctx.namespace_labels)?);
            }
        }
        for f in raw {
            let ns = f.object.namespace.clone();
            match self.settings.exemption(&f.rule, &ns, &f.object.name) {
                Some(e) => report.waived.push(Waived {
                    finding: f,
                    reason: e.reason.clone(),
                }),
                None => report.findings.push(f),
            }
        }
        report.sort();
        Ok(report)
    }

    fn context<'a>(&self, objects: &'a [Object]) -> Context<'a> {
        let mut ctx = Context::default();
        for o in objects {
            match o.kind.as_str() {
                "NetworkPolicy" => ctx.network_policies.push(o),
                "ServiceAccount"
                    if o.raw.get("automountServiceAccountToken")
                        == Some(&serde_json::Value::Bool(false)) =>
                {
                    let ns = o.namespace.clone().unwrap_or_else(|| "default".into());
                    ctx.sa_no_automount.insert((ns, o.name.clone()));
                }
                "Namespace" => {
                    let labels = o.labels();
                    ctx.namespace_labels.insert(o.name.clone(), labels.clone());
                    let level = labels
                        .get("pod-security.kubernetes.io/enforce")
                        .and_then(|l| parse_level(l).ok());
                    let version = labels
                        .get("pod-security.kubernetes.io/enforce-version")
                        .and_then(|v| PssVersion::parse(v).ok())
                        .unwrap_or(PssVersion::LATEST);
                    if let Some(level) = level {
                        ctx.ns_levels.insert(o.name.clone(), (level, version));
                    }
                }
                _ => {}
            }
        }
        ctx
    }

    fn check_template(&self, t: &PodTemplate<'_>, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let obj = ObjectRef::of(t.owner);
        let ns = t
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let spec = &t.spec;
        let base = &t.field_path;
        let meta_base = base
            .strip_suffix(".spec")
            .map_or_else(|| "metadata".to_owned(), |p| format!("{p}.metadata"));
        let field = |f: &str| {
            f.strip_prefix("metadata.")
                .map_or_else(|| format!("{base}.{f}"), |m| format!("{meta_base}.{m}"))
        };

        // Pod Security Standards, at the namespace's enforce label if the input has one.
        let (level, version) = ctx
            .ns_levels
            .get(&ns)
            .copied()
            .unwrap_or((self.settings.level, self.settings.version));
        for v in pss::check(&t.metadata, spec, level, version) {
            out.push(Finding::new(
                v.rule,
                obj.clone(),
                v.container.as_deref(),
                field(&v.field),
                format!("{} (Pod Security {level:?} {version})", v.message),
            ));
        }

        let cs = containers::all(spec);
        let gpu_pod = cs.iter().any(requests_gpu);
        for c in &cs {
            let cfield = |f: &str| field(&format!("{}.{f}", c.path()));
            let gpu = requests_gpu(c);
            let gpu_ns_ok = self
                .settings
                .gpu_namespaces
                .as_ref()
                .is_none_or(|allowed| allowed.contains(&ns));
            if gpu && !gpu_ns_ok {
                out.push(Finding::new(
                    &rules::GPU_NAMESPACE,
                    obj.clone(),
                    Some(c.name),
                    cfield("resources"),
                    format!("requests GPUs in namespace {ns:?}, which guardrails.gpuNamespaces does not list"),
                ));
            }
            for (i, e) in c.env.into_iter().flatten().enumerate() {
                let value = e.value.as_deref();
                if !gpu
                    && VISIBLE_DEVICES.contains(&e.name.as_str())
                    && !harmless_visibility(value, e.value_from.is_some())
                {
                    out.push(Finding::new(
                        &rules::GPU_VISIBLE_DEVICES,
                        obj.clone(),
                        Some(c.name),
                        cfield(&format!("env[{i}]")),
                        format!("sets {}={:?} without requesting a GPU: it would see every GPU on the node", e.name, value.unwrap_or("<valueFrom>")),
                    ));
                }
                if gpu_pod && (e.name == "LD_PRELOAD" || e.name == "LD_LIBRARY_PATH") {
                    out.push(Finding::new(
                        &rules::GPU_LD_PRELOAD,
                        obj.clone(),
                        Some(c.name),
                        cfield(&format!("env[{i}]")),
                        format!("sets {} in a GPU pod; the NVIDIA hook can be made to load it on the host (CVE-2025-23266)", e.name),
                    ));
                }
            }
            if let Some(img) = c.image {
                self.check_image(img, &obj, c, &cfield("image"), out);
            }
            let env: Vec<(String, Option<String>)> = c
                .env
                .into_iter()
                .flatten()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect();
            for (where_, reference, revision) in models::from_container(c.command, c.args, &env) {
                if let Some(why) =
                    models::judge(&reference, revision.as_deref(), &self.settings.models)
                {
                    out.push(Finding::new(
                        &rules::MODEL_PINNED,
                        obj.clone(),
                        Some(c.name),
                        cfield(if where_.starts_with("env") {
                            "env"
                        } else {
                            "args"
                        }),
                        format!("{why} ({where_})"),
                    ));
                }
            }
        }
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            if let Some((hp, what)) = v
                .host_path
                .as_ref()
                .and_then(|hp| sensitive_host_path(&hp.path).map(|w| (hp, w)))
            {
                {
                    out.push(Finding::new(
                        &rules::GPU_DEVICE_HOST_PATH,
                        obj.clone(),
                        None,
                        field(&format!("volumes[{i}].hostPath.path")),
                        format!(
                            "volume {:?} mounts {} from the host ({what})",
                            v.name, hp.path
                        ),
                    ));
                }
            }
        }
        self.check_identity(t, &ns, &obj, ctx, &field, out);
        if !ctx.network_policies.is_empty() {
            let labels = t.metadata.labels.clone().unwrap_or_default();
            let selected = ctx.network_policies.iter().any(|np| {
                np.namespace.as_deref().unwrap_or("default") == ns
                    && np
                        .raw
                        .pointer("/spec/podSelector")
                        .is_some_and(|sel| selector_matches(sel, &labels))
            });
            if !selected {
                out.push(Finding::new(
                    &rules::NETWORK_POLICY,
                    obj,
                    None,
                    meta_base.clone() + ".labels",
                    format!("no NetworkPolicy in namespace {ns:?} selects this pod; its traffic is unrestricted"),
                ));
            }
        }
    }

    fn check_image(
        &self,
        img: &str,
        obj: &ObjectRef,
        c: &ContainerView<'_>,
        field: &str,
        out: &mut Vec<Finding>,
    ) {
        let Some(r) = image::parse(img) else { return };
        if self.settings.require_image_digest && !r.pinned() {
            out.push(Finding::new(
                &rules::IMAGE_DIGEST,
                obj.clone(),
                Some(c.name),
                field,
                format!("image {img} is not pinned by sha256 digest; tags can be moved"),
            ));
        }
        if !self.settings.allowed_registries.is_empty()
            && !image::allowed(&r.name(), &self.settings.allowed_registries)
        {
            out.push(Finding::new(
                &rules::IMAGE_REGISTRY,
                obj.clone(),
                Some(c.name),
                field,
                format!(
                    "image {img} comes from {}, not from an allowed registry ({})",
                    r.registry,
                    self.settings.allowed_registries.join(", ")
                ),
            ));
        }
    }

    /// Service-account token and the workload declared in sigil.yaml.
    fn check_identity(
        &self,
        t: &PodTemplate<'_>,
        ns: &str,
        obj: &ObjectRef,
        ctx: &Context<'_>,
        field: &dyn Fn(&str) -> String,
        out: &mut Vec<Finding>,
    ) {
        let spec: &PodSpec = &t.spec;
        let sa = spec
            .service_account_name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let labels: BTreeMap<String, String> = t.metadata.labels.clone().unwrap_or_default();
        let declared = self.settings.workloads.iter().find(|w| {
            w.kubernetes
                .as_ref()
                .is_some_and(|k| k.namespace == ns && k.service_account == sa)
        });
        let needs_api = declared.is_some_and(|w| w.needs_kubernetes_api);
        let sa_off = ctx.sa_no_automount.contains(&(ns.to_owned(), sa.clone()));
        match spec.automount_service_account_token {
            Some(false) => {}
            Some(true) if !needs_api => out.push(Finding::new(
                &rules::AUTOMOUNT_TOKEN,
                obj.clone(),
                None,
                field("automountServiceAccountToken"),
                format!("mounts the token of service account {sa:?}, but the workload does not declare needsKubernetesApi"),
            )),
            None if !needs_api && !sa_off => out.push(Finding::new(
                &rules::AUTOMOUNT_TOKEN,
                obj.clone(),
                None,
                field("automountServiceAccountToken"),
                format!("automountServiceAccountToken is not false, so the token of service account {sa:?} is mounted"),
            )),
            _ => {}
        }
        // Workloads declared in sigil.yaml: the manifest that carries a workload's labels must
        // run in its namespace as its service account, and the reverse.
        for w in &self.settings.workloads {
            let Some(k) = &w.kubernetes else { continue };
            let labelled = !k.pod_labels.is_empty()
                && k.pod_labels
                    .iter()
                    .all(|(key, v)| labels.get(key) == Some(v));
            let same_identity = k.namespace == ns && k.service_account == sa;
            if labelled && !same_identity {
                out.push(Finding::new(
                    &rules::WORKLOAD_MISMATCH,
                    obj.clone(),
                    None,
                    field("serviceAccountName"),
                    format!(
                        "pod has the labels of workload {:?} but runs as {ns}/{sa}; sigil.yaml declares {}/{}",
                        w.name, k.namespace, k.service_account
                    ),
                ));
            } else if same_identity
                && (labelled || k.pod_labels.is_empty())
                && spec.host_network.unwrap_or(false) != k.host_network
            {
                // The reachability analysis and the generated NetworkPolicies treat a
                // host-network workload as node traffic and every other one as a pod that
                // policies select: a pod that differs escapes its segmentation, or is cut off.
                let (pod, declared) = if k.host_network {
                    ("does not use", "true")
                } else {
                    ("uses", "false")
                };
                out.push(Finding::new(
                    &rules::WORKLOAD_MISMATCH,
                    obj.clone(),
                    None,
                    field("hostNetwork"),
                    format!(
                        "pod runs as {ns}/{sa} (workload {:?}) and {pod} the node's network, but sigil.yaml declares hostNetwork: {declared}; NetworkPolicies and `sigil reach` follow the declaration",
                        w.name
                    ),
                ));
            }
            if same_identity && !k.pod_labels.is_empty() && !labelled {
                out.push(Finding::new(
                    &rules::WORKLOAD_MISMATCH,
                    obj.clone(),
                    None,
                    field("metadata.labels"),
                    format!(
                        "pod runs as {ns}/{sa} (workload {:?}) but lacks its podLabels {:?}",
                        w.name, k.pod_labels
                    ),
                ));
            }
        }
    }

    /// Rules about the object as a whole: training deadlines, KServe model sources.
    fn check_object(&self, obj: &Object, templates: &[PodTemplate<'_>], out: &mut Vec<Finding>) {
        let r = ObjectRef::of(obj);
        let raw = &obj.raw;
        let gpu = templates
            .iter()
            .any(|t| containers::all(&t.spec).iter().any(requests_gpu));
        let pod_deadline = |t: &PodTemplate<'_>| t.spec.active_deadline_seconds.is_some();
        let deadline_field = match obj.kind.as_str() {
            "PyTorchJob" | "TFJob" | "MPIJob" | "XGBoostJob" | "PaddleJob" | "JAXJob" => {
                Some("spec.runPolicy.activeDeadlineSeconds")
            }
            "RayJob" => Some("spec.activeDeadlineSeconds"),
            "Job" if gpu => Some("spec.activeDeadlineSeconds"),
            "CronJob" if gpu => Some("spec.jobTemplate.spec.activeDeadlineSeconds"),
            _ => None,
        };
        if let Some(f) = deadline_field {
            let pointer = format!("/{}", f.replace('.', "/"));
            let set = raw.pointer(&pointer).is_some_and(|v| !v.is_null());
            let every_pod_bounded = !templates.is_empty() && templates.iter().all(pod_deadline);
            if !set && !every_pod_bounded {
                out.push(Finding::new(
                    &rules::TRAINING_DEADLINE,
                    r.clone(),
                    None,
                    f,
                    format!(
                        "{} has no activeDeadlineSeconds; a hung run holds its GPUs forever",
                        obj.kind
                    ),
                ));
            }
        }
        if obj.kind == "InferenceService" {
            for component in ["predictor", "transformer", "explainer"] {
                let Some(c) = raw.pointer(&format!("/spec/{component}")) else {
                    continue;
                };
                let Some(map) = c.as_object() else { continue };
                for (key, v) in map {
                    let Some(uri) = v.get("storageUri").and_then(serde_json::Value::as_str) else {
                        continue;
                    };
                    if let Some(why) = models::judge(uri, None, &self.settings.models) {
                        out.push(Finding::new(
                            &rules::MODEL_PINNED,
                            r.clone(),
                            None,
                            format!("spec.{component}.{key}.storageUri"),
                            why,
                        ));
                    }
                }
            }
        }
    }
}

const VISIBLE_DEVICES: &[&str] = &[
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
];

/// `void`/`none`/empty/`-1` hide GPUs rather than expose them.
fn harmless_visibility(value: Option<&str>, from_ref: bool) -> bool {
    !from_ref
        && matches!(
            value.map(str::trim),
            None | Some("" | "void" | "none" | "-1")
        )
}

/// Extended resources that are GPUs.
pub fn is_gpu_resource(name: &str) -> bool {
    name == "nvidia.com/gpu"
        || name == "amd.com/gpu"
        || name.starts_with("nvidia.com/mig-")
        || name == "gpu.intel.com/i915"
        || name == "gpu.intel.com/xe"
}

fn requests_gpu(c: &ContainerView<'_>) -> bool {
    let Some(r) = c.resources else { return false };
    r.limits
        .iter()
        .chain(r.requests.iter())
        .flatten()
        .any(|(k, q)| is_gpu_resource(k) && !matches!(q.0.trim(), "0" | "" | "0.0"))
}

/// Host paths that expose GPU devices, driver state or a container runtime: the path itself, or
/// any directory above one.
fn sensitive_host_path(path: &str) -> Option<&'static str> {
    const SENSITIVE: &[(&str, &str)] = &[
        ("/dev/nvidia", "NVIDIA device nodes"),
        ("/dev/dri", "GPU render nodes"),
        ("/dev/infiniband", "RDMA devices"),
        ("/dev/kfd", "AMD GPU compute device"),
        ("/run/nvidia", "NVIDIA driver and toolkit state"),
        ("/var/run/nvidia", "NVIDIA driver and toolkit state"),
        ("/var/run/docker.sock", "the Docker socket"),
        ("/run/docker.sock", "the Docker socket"),
        ("/run/containerd", "the containerd socket"),
        ("/var/run/containerd", "the containerd socket"),
        ("/run/crio", "the CRI-O socket"),
        ("/var/run/crio", "the CRI-O socket"),
        ("/var/run/cri-dockerd.sock", "the cri-dockerd socket"),
        ("/run/cri-dockerd.sock", "the cri-dockerd socket"),
        (
            "/var/lib/kubelet/device-plugins",
            "the device plugin sockets",
        ),
    ];
    let mut p = String::new();
    for part in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        p.push('/');
        p.push_str(part);
    }
    if p.is_empty() {
        return Some("the node's root file system");
    }
    SENSITIVE.iter().find_map(|(s, what)| {
        // /dev/nvidia0, /dev/nvidiactl, /dev/nvidia-uvm all start with /dev/nvidia.
        let hit = p.starts_with(s) || s.starts_with(&format!("{p}/"));
        hit.then_some(*what)
    })
}

/// Kubernetes label-selector semantics (`matchLabels` and `matchExpressions`); an empty
/// selector selects everything.
pub fn selector_matches(sel: &serde_json::Value, labels: &BTreeMap<String, String>) -> bool {
    let ml_ok = sel
        .get("matchLabels")
        .and_then(serde_json::Value::as_object)
        .is_none_or(|m| {
            m.iter().all(|(k, v)| {
                v.as_str()
                    .is_some_and(|v| labels.get(k).map(String::as_str) == Some(v))
            })
        });
    let me_ok = sel
        .get("matchExpressions")
        .and_then(serde_json::Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e
                    .get("key")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                let values: Vec<&str> = e
                    .get("values")
                    .and_then(serde_json::Value::as_array)
                    .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
                    .unwrap_or_default();
                let have = labels.get(key).map(String::as_str);
                match e.get("operator").and_then(serde_json::Value::as_str) {
                    Some("In") => have.is_some_and(|h| values.contains(&h)),
                    Some("NotIn") => have.is_none_or(|h| !values.contains(&h)),
                    Some("Exists") => have.is_some(),
                    Some("DoesNotExist") => have.is_none(),
                    _ => false,
                }
            })
        });
    ml_ok && me_ok
}
