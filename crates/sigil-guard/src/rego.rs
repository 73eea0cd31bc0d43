//! Users' Gatekeeper policies: ConstraintTemplates (Rego v0 or v1) and their Constraints,
//! evaluated with regorus under Gatekeeper's input contract: `input.review` (an AdmissionRequest
//! with the object), `input.parameters` (the Constraint's `spec.parameters`), and violations as
//! `violation[{"msg": msg}]`.
//!
//! Bounded: policy text size (regorus length limits), input size, wall-clock time and heap per
//! evaluation (regorus' execution timer and allocator-tracked memory limit), and the number of
//! violations kept per evaluation.
//!
//! `spec.match` is evaluated offline as Gatekeeper does: `kinds`, `scope`, `namespaces`,
//! `excludedNamespaces` (prefix/suffix globs), `name`, `labelSelector` and `namespaceSelector`
//! (against the labels of the Namespace objects in the same input, with the
//! `kubernetes.io/metadata.name` label implied; a Namespace is matched on its own labels, other
//! cluster-scoped objects are never skipped by namespace criteria).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use regorus::LimitError;
use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::{Value, json};
use sigil_kube::Object;

use crate::finding::{Finding, ObjectRef};
use crate::rules::Severity;

/// Wall-clock limit for one evaluation of one constraint against one object.
pub const EVAL_TIME_LIMIT: Duration = Duration::from_millis(250);
/// Heap one evaluation may add (tracked by the allocator) before it is stopped.
pub const EVAL_MEMORY_LIMIT: u64 = 64 * 1024 * 1024;
/// Largest object (serialised) handed to a policy.
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;
/// Most violations kept from one evaluation.
pub const MAX_VIOLATIONS: usize = 100;

/// Why users' policies could not be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum RegoError {
    #[error("{source_}: ConstraintTemplate {template}: {message}")]
    Template {
        source_: String,
        template: String,
        message: String,
    },
    #[error(
        "{source_}: {kind} {name}: no ConstraintTemplate defines kind {kind}; hint: add the template to the --policy directory"
    )]
    NoTemplate {
        source_: String,
        kind: String,
        name: String,
    },
    #[error("constraint {kind}/{name} on {object}: evaluation failed: {message}")]
    Eval {
        kind: String,
        name: String,
        object: String,
        message: String,
    },
}

/// Time and memory allowed to one evaluation of one constraint against one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalLimits {
    pub time: Duration,
    /// Bytes of heap the evaluation may add.
    pub memory: u64,
}

impl Default for EvalLimits {
    fn default() -> Self {
        Self {
            time: EVAL_TIME_LIMIT,
            memory: EVAL_MEMORY_LIMIT,
        }
    }
}

/// Namespace name → labels, from the Namespace objects of one input.
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// Namespace labels from the Namespace objects among `objects`.
pub fn namespace_labels(objects: &[Object]) -> NamespaceLabels {
    objects
        .iter()
        .filter(|o| o.kind == "Namespace" && o.group().is_empty())
        .map(|o| (o.name.clone(), o.labels()))
        .collect()
}

/// regorus enforces one process-wide heap ceiling; this admits evaluations under it. Each
/// evaluation in flight adds its budget to the ceiling, counted from the highest heap size at
/// which one of them started, so a lone runaway evaluation is stopped after its own budget and
/// concurrent ones (the webhook) cannot starve each other. No evaluation in flight: no ceiling.
mod memory_gate {
    use super::{Mutex, PoisonError};

    struct Gate {
        active: u64,
        base: u64,
        budgets: u64,
    }

    static GATE: Mutex<Gate> = Mutex::new(Gate {
        active: 0,
        base: 0,
        budgets: 0,
    });

    fn heap_in_use() -> u64 {
        regorus_mimalloc::global_allocation_stats_snapshot().allocated
    }

    pub(super) struct Admitted {
        budget: u64,
    }

    pub(super) fn admit(budget: u64) -> Admitted {
        let now = heap_in_use();
        let mut g = GATE.lock().unwrap_or_else(PoisonError::into_inner);
        g.base = if g.active == 0 { now } else { g.base.max(now) };
        g.active += 1;
        g.budgets = g.budgets.saturating_add(budget);
        regorus::set_global_memory_limit(Some(g.base.saturating_add(g.budgets)));
        Admitted { budget }
    }

    impl Drop for Admitted {
        fn drop(&mut self) {
            let mut g = GATE.lock().unwrap_or_else(PoisonError::into_inner);
            g.active = g.active.saturating_sub(1);
            g.budgets = g.budgets.saturating_sub(self.budget);
            if g.active == 0 {
                regorus::set_global_memory_limit(None);
            } else {
                regorus::set_global_memory_limit(Some(g.base.saturating_add(g.budgets)));
            }
        }
    }
}

/// A readable message for a failed evaluation, naming the limit when one stopped it.
fn eval_failure(e: &(dyn std::error::Error + 'static), limits: EvalLimits) -> String {
    let limit =
        std::iter::successors(Some(e), |e| e.source()).find_map(|c| c.downcast_ref::<LimitError>());
    match limit {
        Some(LimitError::MemoryLimitExceeded { .. }) => format!(
            "stopped: the evaluation needed more than its {} MiB of memory; hint: the policy builds very large values (a comprehension over a huge range?)",
            limits.memory / (1024 * 1024)
        ),
        Some(LimitError::TimeLimitExceeded { .. }) => format!(
            "stopped: the evaluation ran longer than {} ms; hint: look for unbounded iteration in the policy",
            limits.time.as_millis()
        ),
        _ => e.to_string(),
    }
}

#[derive(Debug, Clone)]
struct Template {
    kind: String,
    package: String,
    engine: regorus::Engine,
}

#[derive(Debug, Clone)]
struct Constraint {
    kind: String,
    name: String,
    parameters: Value,
    action: String,
    matcher: Value,
}

/// Loaded templates and constraints.
#[derive(Debug, Clone, Default)]
pub struct RegoPolicies {
    templates: BTreeMap<String, Template>,
    constraints: Vec<Constraint>,
    limits: EvalLimits,
}

fn template_err(o: &Object, message: impl Into<String>) -> RegoError {
    RegoError::Template {
        source_: o.source.to_string(),
        template: o.name.clone(),
        message: message.into(),
    }
}

impl RegoPolicies {
    /// Builds policies from ConstraintTemplate and constraint objects (other kinds are ignored;
    /// the caller lists them).
    pub fn from_objects(objects: &[Object]) -> Result<Self, RegoError> {
        let mut out = Self::default();
        for o in objects.iter().filter(|o| o.kind == "ConstraintTemplate") {
            let t = compile_template(o)?;
            out.templates.insert(t.kind.clone(), t);
        }
        for o in objects
            .iter()
            .filter(|o| o.api_version.starts_with("constraints.gatekeeper.sh/"))
        {
            if !out.templates.contains_key(&o.kind) {
                return Err(RegoError::NoTemplate {
                    source_: o.source.to_string(),
                    kind: o.kind.clone(),
                    name: o.name.clone(),
                });
            }
            out.constraints.push(Constraint {
                kind: o.kind.clone(),
                name: o.name.clone(),
                parameters: o
                    .raw
                    .pointer("/spec/parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({})),
                action: o
                    .raw
                    .pointer("/spec/enforcementAction")
                    .and_then(Value::as_str)
                    .unwrap_or("deny")
                    .to_owned(),
                matcher: o.raw.pointer("/spec/match").cloned().unwrap_or(Value::Null),
            });
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }

    /// Sets the time and memory allowed to each evaluation (default [`EvalLimits::default`]).
    #[must_use]
    pub fn with_limits(mut self, limits: EvalLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How many templates and constraints are loaded.
    pub fn counts(&self) -> (usize, usize) {
        (self.templates.len(), self.constraints.len())
    }

    /// Evaluates every matching constraint against `obj`; `namespaces` gives the labels that
    /// `spec.match.namespaceSelector` sees (see [`namespace_labels`]).
    pub fn evaluate(
        &self,
        obj: &Object,
        namespaces: &NamespaceLabels,
    ) -> Result<Vec<Finding>, RegoError> {
        let mut out = Vec::new();
        if obj.kind == "ConstraintTemplate"
            || obj.api_version.starts_with("constraints.gatekeeper.sh/")
        {
            return Ok(out);
        }
        for c in &self.constraints {
            if c.action == "dryrun" || !matches(&c.matcher, obj, namespaces) {
                continue;
            }
            let Some(t) = self.templates.get(&c.kind) else {
                continue;
            };
            let eval_err = |message: String| RegoError::Eval {
                kind: c.kind.clone(),
                name: c.name.clone(),
                object: ObjectRef::of(obj).display(),
                message,
            };
            let review = review(obj);
            let input = json!({"review": review, "parameters": c.parameters});
            let text = input.to_string();
            if text.len() > MAX_INPUT_BYTES {
                return Err(eval_err(format!(
                    "input is {} bytes, more than {MAX_INPUT_BYTES}",
                    text.len()
                )));
            }
            let result = {
                let _admitted = memory_gate::admit(self.limits.memory);
                let mut engine = t.engine.clone();
                engine.set_execution_timer_config(ExecutionTimerConfig {
                    limit: self.limits.time,
                    check_interval: NonZeroU32::MIN,
                });
                engine
                    .set_input_json(&text)
                    .map_err(|e| eval_err(eval_failure(&*e, self.limits)))?;
                engine
                    .eval_rule(format!("{}.violation", t.package))
                    .map_err(|e| eval_err(eval_failure(&*e, self.limits)))?
            };
            let result = serde_json::to_value(&result).map_err(|e| eval_err(e.to_string()))?;
            let severity = if c.action == "warn" {
                Severity::Low
            } else {
                Severity::High
            };
            for v in result.as_array().into_iter().flatten().take(MAX_VIOLATIONS) {
                let msg = v
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or("violation without msg")
                    .to_owned();
                out.push(Finding {
                    rule: format!("REGO-{}", c.kind),
                    severity,
                    title: format!("Gatekeeper constraint {}/{}", c.kind, c.name),
                    object: ObjectRef::of(obj),
                    container: None,
                    field: String::new(),
                    message: format!("{msg} (constraint {}/{}, {})", c.kind, c.name, c.action),
                    hint: format!("see ConstraintTemplate for {}", c.kind),
                    help_uri: None,
                });
            }
        }
        Ok(out)
    }
}

/// The AdmissionRequest-shaped `input.review` for an object.
pub fn review(obj: &Object) -> Value {
    let (group, version) = match obj.api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", obj.api_version.as_str()),
    };
    json!({
        "kind": {"group": group, "version": version, "kind": obj.kind},
        "name": obj.name,
        "namespace": obj.namespace.clone().unwrap_or_default(),
        "operation": "CREATE",
        "object": obj.raw,
        "userInfo": {"username": "sigil-audit"},
    })
}

fn compile_template(o: &Object) -> Result<Template, RegoError> {
    let kind = o
        .raw
        .pointer("/spec/crd/spec/names/kind")
        .and_then(Value::as_str)
        .ok_or_else(|| template_err(o, "spec.crd.spec.names.kind is missing"))?
        .to_owned();
    let targets = o
        .raw
        .pointer("/spec/targets")
        .and_then(Value::as_array)
        .ok_or_else(|| template_err(o, "spec.targets is missing"))?;
    let target = targets
        .iter()
        .find(|t| t.get("target").and_then(Value::as_str) == Some("admission.k8s.gatekeeper.sh"))
        .ok_or_else(|| template_err(o, "no target admission.k8s.gatekeeper.sh"))?;
    // Gatekeeper 3.x: `code: [{engine: Rego, source: {rego, libs, version}}]` takes precedence over
    // the legacy `rego`/`libs` fields, which are Rego v0.
    let code = target
        .get("code")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|e| e.get("engine").and_then(Value::as_str) == Some("Rego"))
        })
        .and_then(|e| e.get("source"));
    let (rego, libs, v1) = match code {
        Some(src) => (
            src.get("rego").and_then(Value::as_str),
            src.get("libs"),
            src.get("version").and_then(Value::as_str) == Some("v1"),
        ),
        None => (
            target.get("rego").and_then(Value::as_str),
            target.get("libs"),
            false,
        ),
    };
    let rego = rego.ok_or_else(|| template_err(o, "the target has no rego"))?;
    // Compiling allocates through regorus too: it gets a budget while evaluations may be running.
    let _admitted = memory_gate::admit(EVAL_MEMORY_LIMIT);
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(!v1);
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: EVAL_TIME_LIMIT,
        check_interval: NonZeroU32::MIN,
    });
    let package = engine
        .add_policy(format!("{}.rego", o.name), rego.to_owned())
        .map_err(|e| template_err(o, format!("rego does not compile: {e}")))?;
    for (i, lib) in libs
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let text = lib
            .as_str()
            .ok_or_else(|| template_err(o, format!("libs[{i}] is not a string")))?;
        engine
            .add_policy(format!("{}.lib{i}.rego", o.name), text.to_owned())
            .map_err(|e| template_err(o, format!("libs[{i}] does not compile: {e}")))?;
    }
    engine
        .add_data(
            regorus::Value::from_json_str(r#"{"inventory": {}}"#)
                .map_err(|e| template_err(o, e.to_string()))?,
        )
        .map_err(|e| template_err(o, e.to_string()))?;
    Ok(Template {
        kind,
        package,
        engine,
    })
}

/// Gatekeeper's prefix/suffix glob: `kube-*` and `*-system`.
fn glob(pat: &str, s: &str) -> bool {
    if let Some(prefix) = pat.strip_suffix('*') {
        s.starts_with(prefix)
    } else if let Some(suffix) = pat.strip_prefix('*') {
        s.ends_with(suffix)
    } else {
        pat == s
    }
}

/// Gatekeeper's `spec.match`: kinds, scope, namespaces, excludedNamespaces, name,
/// labelSelector, namespaceSelector.
fn matches(m: &Value, obj: &Object, namespaces: &NamespaceLabels) -> bool {
    if m.is_null() {
        return true;
    }
    if let Some(kinds) = m.get("kinds").and_then(Value::as_array) {
        let group = obj.group();
        let ok = kinds.iter().any(|k| {
            let in_list = |field: &str, v: &str| {
                k.get(field).and_then(Value::as_array).is_none_or(|a| {
                    a.iter()
                        .any(|x| x.as_str() == Some(v) || x.as_str() == Some("*"))
                })
            };
            in_list("apiGroups", group) && in_list("kinds", &obj.kind)
        });
        if !ok {
            return false;
        }
    }
    let is_namespace = obj.kind == "Namespace" && obj.group().is_empty();
    let cluster_scoped = obj.is_cluster_scoped();
    let in_scope = match m.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => cluster_scoped,
        "Namespaced" => !cluster_scoped,
        _ => true,
    };
    // The namespace the namespace criteria look at: a Namespace's own name, a namespaced
    // object's namespace; other cluster-scoped objects have none and are never skipped by them.
    let ns = if is_namespace {
        Some(obj.name.as_str())
    } else if cluster_scoped {
        None
    } else {
        Some(obj.namespace.as_deref().unwrap_or_default())
    };
    let included = m
        .get("namespaces")
        .and_then(Value::as_array)
        .is_none_or(|list| {
            ns.is_none_or(|ns| list.iter().filter_map(Value::as_str).any(|p| glob(p, ns)))
        });
    let excluded = m
        .get("excludedNamespaces")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            ns.is_some_and(|ns| list.iter().filter_map(Value::as_str).any(|p| glob(p, ns)))
        });
    let ns_selected = m.get("namespaceSelector").is_none_or(|sel| match ns {
        None => true,
        Some(ns) => {
            let mut labels = if is_namespace {
                obj.labels()
            } else {
                namespaces.get(ns).cloned().unwrap_or_default()
            };
            labels.insert("kubernetes.io/metadata.name".to_owned(), ns.to_owned());
            crate::audit::selector_matches(sel, &labels)
        }
    });
    let named = m
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(|name| glob(name, &obj.name));
    let labelled = m
        .get("labelSelector")
        .is_none_or(|sel| crate::audit::selector_matches(sel, &obj.labels()));
    in_scope && included && !excluded && ns_selected && named && labelled
}
