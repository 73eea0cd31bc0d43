//! Guardrail settings: the admission and audit rules' knobs, and exemptions with reasons.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Diags};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawGuardrails {
    #[serde(default)]
    pod_security: Option<RawPodSecurity>,
    #[serde(default)]
    gpu_namespaces: Vec<String>,
    #[serde(default)]
    allowed_registries: Vec<String>,
    #[serde(default)]
    require_image_digest: Option<bool>,
    #[serde(default)]
    exemptions: Vec<RawExemption>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPodSecurity {
    level: Spanned<String>,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawExemption {
    #[serde(default)]
    rules: Vec<String>,
    namespace: Spanned<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    reason: Option<Spanned<String>>,
}

/// Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodSecurityLevel {
    Privileged,
    Baseline,
    Restricted,
}

/// Guardrail settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardrails {
    pub pod_security_level: PodSecurityLevel,
    /// `latest` or `v1.NN`, like `pod-security.kubernetes.io/enforce-version`.
    pub pod_security_version: String,
    /// Namespaces where GPU requests are allowed.
    pub gpu_namespaces: Vec<String>,
    /// Registry prefixes images may come from (`registry.example.org`, `ghcr.io/org`); empty: any.
    pub allowed_registries: Vec<String>,
    pub require_image_digest: bool,
    pub exemptions: Vec<Exemption>,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            pod_security_level: PodSecurityLevel::Restricted,
            pod_security_version: "latest".to_owned(),
            gpu_namespaces: Vec::new(),
            allowed_registries: Vec::new(),
            require_image_digest: true,
            exemptions: Vec::new(),
        }
    }
}

/// An exemption from some (or all) rules for a namespace, or one object in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemption {
    /// Rule IDs; empty means every rule.
    pub rules: Vec<String>,
    pub namespace: String,
    pub name: Option<String>,
    pub reason: String,
}

impl Guardrails {
    /// The exemption covering `rule` for the object `namespace/name`, if any.
    pub fn exemption(&self, rule: &str, namespace: &str, name: &str) -> Option<&Exemption> {
        self.exemptions.iter().find(|e| {
            e.namespace == namespace
                && e.name.as_deref().is_none_or(|n| n == name)
                && (e.rules.is_empty() || e.rules.iter().any(|r| r == rule))
        })
    }
}

pub(crate) fn validate(raw: RawGuardrails, d: &mut Diags) -> Guardrails {
    let mut g = Guardrails::default();
    if let Some(ps) = raw.pod_security {
        g.pod_security_level = match ps.level.value.as_str() {
            "privileged" => PodSecurityLevel::Privileged,
            "baseline" => PodSecurityLevel::Baseline,
            "restricted" => PodSecurityLevel::Restricted,
            other => {
                d.push(
                    Diagnostic::new(
                        &ps.level,
                        "guardrails.podSecurity.level",
                        other,
                        "unknown Pod Security level",
                    )
                    .hint("use privileged, baseline or restricted"),
                );
                PodSecurityLevel::Restricted
            }
        };
        if let Some(v) = ps.version {
            let ok = v == "latest"
                || v.strip_prefix("v1.")
                    .is_some_and(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                d.push(
                    Diagnostic::new(
                        &ps.level,
                        "guardrails.podSecurity.version",
                        &v,
                        "bad Pod Security version",
                    )
                    .hint("use `latest` or a Kubernetes minor version such as v1.30"),
                );
            }
            g.pod_security_version = v;
        }
    }
    g.gpu_namespaces = raw.gpu_namespaces;
    g.allowed_registries = raw.allowed_registries;
    if let Some(b) = raw.require_image_digest {
        g.require_image_digest = b;
    }
    for (i, e) in raw.exemptions.into_iter().enumerate() {
        let reason = match e.reason {
            Some(r) if !r.value.trim().is_empty() => r.value,
            other => {
                let at: crate::diag::Pos = other
                    .as_ref()
                    .map_or_else(|| (&e.namespace).into(), Into::into);
                d.push(
                    Diagnostic::new(
                        at,
                        format!("guardrails.exemptions[{i}].reason"),
                        "",
                        "exemption without a reason",
                    )
                    .hint("every exemption needs a `reason:` that a reviewer can check"),
                );
                String::new()
            }
        };
        g.exemptions.push(Exemption {
            rules: e.rules,
            namespace: e.namespace.value,
            name: e.name,
            reason,
        });
    }
    g
}
