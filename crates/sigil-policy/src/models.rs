//! Model sources the platform allows (pinned by revision or digest) and pickle allow/deny lists.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Diags};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawModels {
    #[serde(default)]
    sources: Vec<RawSource>,
    #[serde(default)]
    pickle: RawPickle,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    name: Option<String>,
    repo: Spanned<String>,
    #[serde(default)]
    revision: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPickle {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// Where a model may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRepo {
    /// `hf://org/name`: a Hugging Face repository.
    HuggingFace { repo: String },
    /// `oci://registry/repository`.
    Oci { reference: String },
    /// `s3://bucket/prefix`, `gs://...`, `pvc://...`: a storage location.
    Storage { uri: String },
}

/// An allowed model source, pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    pub name: Option<String>,
    pub repo: ModelRepo,
    /// A 40-hex commit SHA for Hugging Face, `sha256:<hex>` for OCI; absent for storage URIs.
    pub revision: Option<String>,
}

/// Model policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelPolicy {
    pub sources: Vec<ModelSource>,
    /// Extra `module.name` globals a pickle may use (on top of the weights-only profile).
    pub pickle_allow: Vec<String>,
    /// Globals always refused.
    pub pickle_deny: Vec<String>,
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit())
}

pub(crate) fn validate(raw: RawModels, d: &mut Diags) -> ModelPolicy {
    let mut out = ModelPolicy {
        pickle_allow: raw.pickle.allow,
        pickle_deny: raw.pickle.deny,
        ..ModelPolicy::default()
    };
    for (i, s) in raw.sources.into_iter().enumerate() {
        let field = |k: &str| format!("models.sources[{i}].{k}");
        let v = &s.repo.value;
        let repo = if let Some(r) = v.strip_prefix("hf://") {
            if r.split('/').count() != 2 || r.split('/').any(str::is_empty) {
                d.push(Diagnostic::new(
                    &s.repo,
                    field("repo"),
                    v,
                    "Hugging Face repo must be hf://<org>/<name>",
                ));
            }
            ModelRepo::HuggingFace { repo: r.to_owned() }
        } else if let Some(r) = v.strip_prefix("oci://") {
            ModelRepo::Oci {
                reference: r.to_owned(),
            }
        } else if ["s3://", "gs://", "pvc://", "https://"]
            .iter()
            .any(|p| v.starts_with(p))
        {
            ModelRepo::Storage { uri: v.clone() }
        } else {
            d.push(
                Diagnostic::new(&s.repo, field("repo"), v, "unknown model source scheme")
                    .hint("use hf://org/name, oci://registry/repo, s3://bucket/prefix, gs://..., pvc://... or https://..."),
            );
            continue;
        };
        match (&repo, &s.revision) {
            (ModelRepo::HuggingFace { .. }, Some(r)) if !is_hex(&r.value, 40) => d.push(
                Diagnostic::new(r, field("revision"), &r.value, "Hugging Face revision must be a commit SHA")
                    .hint("branch and tag names move; pin the 40-hex commit (see `huggingface-cli repo info`)"),
            ),
            (ModelRepo::HuggingFace { .. }, None) => d.push(
                Diagnostic::new(&s.repo, field("revision"), "", "Hugging Face source is not pinned")
                    .hint("add `revision: <40-hex commit SHA>`"),
            ),
            (ModelRepo::Oci { .. }, Some(r))
                if !r.value.strip_prefix("sha256:").is_some_and(|h| is_hex(h, 64)) =>
            {
                d.push(
                    Diagnostic::new(r, field("revision"), &r.value, "OCI revision must be a digest")
                        .hint("write sha256:<64 hex>"),
                );
            }
            (ModelRepo::Oci { reference }, None) if !reference.contains("@sha256:") => d.push(
                Diagnostic::new(&s.repo, field("revision"), "", "OCI source is not pinned by digest")
                    .hint("add `revision: sha256:<64 hex>` or write the reference as repo@sha256:<hex>"),
            ),
            _ => {}
        }
        out.sources.push(ModelSource {
            name: s.name,
            repo,
            revision: s.revision.map(|r| r.value),
        });
    }
    out
}

impl ModelRepo {
    /// The source as a URI: `hf://org/name`, `oci://...`, or the storage URI.
    pub fn uri(&self) -> String {
        match self {
            Self::HuggingFace { repo } => format!("hf://{repo}"),
            Self::Oci { reference } => format!("oci://{reference}"),
            Self::Storage { uri } => uri.clone(),
        }
    }
}

impl ModelPolicy {
    /// The allowed source matching `repo_uri` (`hf://org/name`, ...) pinned at `revision`, if
    /// any. Default deny: a source with no pinned revision never matches a concrete revision,
    /// and Hugging Face repo names compare case-insensitively (the Hub treats them so).
    pub fn allowed_source(&self, repo_uri: &str, revision: &str) -> Option<&ModelSource> {
        self.sources.iter().find(|s| {
            let same_repo = match &s.repo {
                ModelRepo::HuggingFace { .. } => s.repo.uri().eq_ignore_ascii_case(repo_uri),
                _ => s.repo.uri() == repo_uri,
            };
            same_repo
                && s.revision
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(revision))
        })
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;

    #[test]
    fn allowed_source_needs_repo_and_revision() {
        let p = ModelPolicy {
            sources: vec![ModelSource {
                name: None,
                repo: ModelRepo::HuggingFace {
                    repo: "org/m".into(),
                },
                revision: Some("a".repeat(40)),
            }],
            ..ModelPolicy::default()
        };
        assert!(p.allowed_source("hf://org/m", &"a".repeat(40)).is_some());
        assert!(p.allowed_source("hf://Org/M", &"A".repeat(40)).is_some());
        assert!(p.allowed_source("hf://org/m", &"b".repeat(40)).is_none());
        assert!(
            p.allowed_source("hf://org/other", &"a".repeat(40))
                .is_none()
        );
    }
}
