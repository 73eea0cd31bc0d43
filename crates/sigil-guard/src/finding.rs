//! Findings: one violation of one rule by one object, with where it is and how to fix it.

use std::path::PathBuf;

use serde::Serialize;

use crate::rules::{Rule, Severity};

/// The object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub path: PathBuf,
    /// 0-based document index.
    pub document: usize,
    /// 1-based line where the object starts.
    pub line: u64,
}

impl ObjectRef {
    pub fn of(o: &sigil_kube::Object) -> Self {
        Self {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone().unwrap_or_default(),
            name: o.name.clone(),
            path: o.source.path.clone(),
            document: o.source.document,
            line: o.source.line,
        }
    }

    /// `Kind namespace/name`.
    pub fn display(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One violation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Rule ID (built-in, or `REGO-<ConstraintKind>` for users' Gatekeeper constraints).
    pub rule: String,
    pub severity: Severity,
    pub title: String,
    pub object: ObjectRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Dotted path of the offending field in the object.
    pub field: String,
    pub message: String,
    pub hint: String,
    pub help_uri: Option<String>,
}

impl Finding {
    pub fn new(
        rule: &Rule,
        object: ObjectRef,
        container: Option<&str>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            rule: rule.id.to_owned(),
            severity: rule.severity,
            title: rule.title.to_owned(),
            object,
            container: container.map(str::to_owned),
            field: field.into(),
            message: message.into(),
            hint: rule.hint.to_owned(),
            help_uri: Some(rule.help_uri()),
        }
    }

    /// One line for humans: `Deployment ns/name: container "c": message (RULE)`.
    pub fn summary(&self) -> String {
        match &self.container {
            Some(c) => format!(
                "{}: container {c:?}: {} [{}]",
                self.object.display(),
                self.message,
                self.rule
            ),
            None => format!(
                "{}: {} [{}]",
                self.object.display(),
                self.message,
                self.rule
            ),
        }
    }
}

/// An exempted finding, kept for the record (reports say what was waived and why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waived {
    pub finding: Finding,
    pub reason: String,
}

/// The result of auditing a set of objects.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub findings: Vec<Finding>,
    pub waived: Vec<Waived>,
    /// Objects of kinds Sigil does not know, listed (never silently skipped).
    pub unknown_kinds: Vec<ObjectRef>,
    /// How many objects and pod templates were checked.
    pub objects: usize,
    pub pod_templates: usize,
}

impl Report {
    /// Whether any finding is at or above `threshold`.
    pub fn fails(&self, threshold: Severity) -> bool {
        self.findings.iter().any(|f| f.severity >= threshold)
    }

    /// Sorts findings by file, line, rule, container for stable output.
    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            (
                &a.object.path,
                a.object.document,
                &a.rule,
                &a.container,
                &a.field,
            )
                .cmp(&(
                    &b.object.path,
                    b.object.document,
                    &b.rule,
                    &b.container,
                    &b.field,
                ))
        });
    }
}
