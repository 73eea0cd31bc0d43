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

impl ModelSource {
    /// The repository URI without any inline digest, and the pin: `revision`, or for an OCI
    /// reference written `repo@sha256:<hex>` the digest in it.
    fn repo_and_pin(&self) -> (String, Option<&str>) {
        match &self.repo {
            ModelRepo::Oci { reference } => match reference.split_once('@') {
                Some((name, digest)) => (
                    format!("oci://{name}"),
                    self.revision.as_deref().or(Some(digest)),
                ),
                None => (self.repo.uri(), self.revision.as_deref()),
            },
            _ => (self.repo.uri(), self.revision.as_deref()),
        }
    }
}

impl ModelPolicy {
    /// The allowed source matching `repo_uri` (`hf://org/name`, `oci://registry/repo`) pinned at
    /// `revision` (a commit SHA, or `sha256:<hex>` for OCI), if any. Default deny: a source with no
    /// pin never matches, and a source whose revision and inline digest disagree matches neither.
    /// Hugging Face repo names and commit SHAs compare case-insensitively (the Hub treats them so).
    pub fn allowed_source(&self, repo_uri: &str, revision: &str) -> Option<&ModelSource> {
        self.sources.iter().find(|s| {
            let (uri, pin) = s.repo_and_pin();
            let Some(pin) = pin else {
                return false;
            };
            match &s.repo {
                ModelRepo::HuggingFace { .. } => {
                    uri.eq_ignore_ascii_case(repo_uri) && pin.eq_ignore_ascii_case(revision)
                }
                ModelRepo::Oci { reference } => {
                    let inline_agrees = reference
                        .split_once('@')
                        .is_none_or(|(_, digest)| digest == pin);
                    uri == repo_uri && pin == revision && inline_agrees
                }
                ModelRepo::Storage { .. } => false,
            }
        })
    }

    /// The allowed storage source (`s3://`, `gs://`, `pvc://`, `https://`) that `uri` lies under,
    /// if any. A source covers its own URI and what is below it as a path: `s3://models/llama`
    /// covers `s3://models/llama/7b`, not `s3://models/llama-evil`.
    pub fn allowed_storage(&self, uri: &str) -> Option<&ModelSource> {
        self.sources.iter().find(|s| match &s.repo {
            ModelRepo::Storage { uri: base } => {
                let base = base.trim_end_matches('/');
                uri.strip_prefix(base)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            _ => false,
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

    fn oci(reference: &str, revision: Option<&str>) -> ModelPolicy {
        ModelPolicy {
            sources: vec![ModelSource {
                name: None,
                repo: ModelRepo::Oci {
                    reference: reference.into(),
                },
                revision: revision.map(Into::into),
            }],
            ..ModelPolicy::default()
        }
    }

    #[test]
    fn oci_sources_pin_by_revision_or_inline_digest() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let cases: &[(ModelPolicy, &str, &str, bool)] = &[
            (oci("reg.io/m", Some(&a)), "oci://reg.io/m", &a, true),
            (oci("reg.io/m", Some(&a)), "oci://reg.io/m", &b, false),
            (oci("reg.io/m", Some(&a)), "oci://reg.io/other", &a, false),
            (
                oci(&format!("reg.io/m@{a}"), None),
                "oci://reg.io/m",
                &a,
                true,
            ),
            (
                oci(&format!("reg.io/m@{a}"), None),
                "oci://reg.io/m",
                &b,
                false,
            ),
            // revision and inline digest disagree: nothing matches
            (
                oci(&format!("reg.io/m@{a}"), Some(&b)),
                "oci://reg.io/m",
                &b,
                false,
            ),
            (
                oci(&format!("reg.io/m@{a}"), Some(&b)),
                "oci://reg.io/m",
                &a,
                false,
            ),
            // unpinned: default deny
            (oci("reg.io/m", None), "oci://reg.io/m", &a, false),
        ];
        for (p, uri, rev, ok) in cases {
            assert_eq!(
                p.allowed_source(uri, rev).is_some(),
                *ok,
                "{uri} {rev} {p:?}"
            );
        }
    }

    #[test]
    fn storage_sources_cover_paths_below_them() {
        let p = ModelPolicy {
            sources: vec![ModelSource {
                name: None,
                repo: ModelRepo::Storage {
                    uri: "s3://models/llama/".into(),
                },
                revision: None,
            }],
            ..ModelPolicy::default()
        };
        for (uri, ok) in [
            ("s3://models/llama", true),
            ("s3://models/llama/7b/weights", true),
            ("s3://models/llama-evil", false),
            ("s3://models", false),
            ("gs://models/llama/7b", false),
        ] {
            assert_eq!(p.allowed_storage(uri).is_some(), ok, "{uri}");
        }
    }
}
