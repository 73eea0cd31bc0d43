//! Users' Gatekeeper policies: ConstraintTemplates (Rego v0 or v1) and their Constraints,
//! evaluated with regorus under Gatekeeper's input contract: `input.review` (an AdmissionRequest
//! with the object), `input.parameters` (the Constraint's `spec.parameters`), and violations as
//! `violation[{"msg": msg}]`.
//!
//! Bounded: policy text size (regorus length limits), input size, wall-clock time per evaluation
//! (regorus execution timer), and the number of violations kept per evaluation.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::{Value, json};
use sigil_kube::Object;

use crate::finding::{Finding, ObjectRef};
use crate::rules::Severity;

/// Wall-clock limit for one evaluation of one constraint against one object.
pub const EVAL_TIME_LIMIT: Duration = Duration::from_millis(250);
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

    /// How many templates and constraints are loaded.
    pub fn counts(&self) -> (usize, usize) {
        (self.templates.len(), self.constraints.len())
    }

    /// Evaluates every matching constraint against `obj`.
    pub fn evaluate(&self, obj: &Object) -> Result<Vec<Finding>, RegoError> {
        let mut out = Vec::new();
        if obj.kind == "ConstraintTemplate"
            || obj.api_version.starts_with("constraints.gatekeeper.sh/")
        {
            return Ok(out);
        }
        for c in &self.constraints {
            if c.action == "dryrun" || !matches(&c.matcher, obj) {
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
            let mut engine = t.engine.clone();
            engine
                .set_input_json(&text)
                .map_err(|e| eval_err(e.to_string()))?;
            let result = engine
                .eval_rule(format!("{}.violation", t.package))
                .map_err(|e| eval_err(e.to_string()))?;
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

/// Gatekeeper's `spec.match`: kinds, namespaces, excludedNamespaces, labelSelector, name.
fn matches(m: &Value, obj: &Object) -> bool {
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
    let ns = obj.namespace.as_deref().unwrap_or_default();
    let glob = |pat: &str, s: &str| {
        pat.strip_suffix('*')
            .map_or(pat == s, |prefix| s.starts_with(prefix))
    };
    let included = m
        .get("namespaces")
        .and_then(Value::as_array)
        .is_none_or(|list| list.iter().filter_map(Value::as_str).any(|p| glob(p, ns)));
    let excluded = m
        .get("excludedNamespaces")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().filter_map(Value::as_str).any(|p| glob(p, ns)));
    let named = m
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(|name| glob(name, &obj.name));
    let labelled = m
        .get("labelSelector")
        .is_none_or(|sel| crate::audit::selector_matches(sel, &obj.labels()));
    included && !excluded && named && labelled
}
