//! Model references in manifests (KServe `storageUri`, `--model`/`vllm serve` arguments,
//! `MODEL_ID` variables) and whether they are pinned and from an allowed source.

use sigil_policy::ModelPolicy;

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| is_hex(h, 64))
}

/// Why a model reference is not acceptable, or `None` if it is.
/// `revision` is a separately given revision (`--revision`, `HF_REVISION`).
///
/// Pinning is judged here; whether a pinned reference is an allowed source is
/// [`ModelPolicy::allowed_source`] / [`ModelPolicy::allowed_storage`], the same answer
/// `sigil models verify` uses. With no `models.sources` in the policy, only pinning is required.
pub fn judge(reference: &str, revision: Option<&str>, policy: &ModelPolicy) -> Option<String> {
    let r = reference.trim();
    if r.is_empty() || r.starts_with('/') || r.starts_with("./") || r.starts_with("file://") {
        return None; // a local path: what is mounted there is judged elsewhere
    }
    let unrestricted = policy.sources.is_empty();
    if let Some(rest) = r.strip_prefix("oci://") {
        let (name, digest) = rest.split_once('@').unwrap_or((rest, ""));
        if !is_digest(digest) {
            return Some(format!("OCI model {r} is not pinned by @sha256 digest"));
        }
        let ok = unrestricted
            || policy
                .allowed_source(&format!("oci://{name}"), digest)
                .is_some();
        return (!ok).then(|| format!("OCI model {r} is not an allowed source in models.sources"));
    }
    let hf = r.strip_prefix("hf://").or_else(|| {
        // A bare `org/name` is a Hugging Face repository id.
        let bare = !r.contains("://") && r.split('/').count() == 2 && !r.contains(' ');
        bare.then_some(r)
    });
    if let Some(hf) = hf {
        let (repo, inline_rev) = match hf.split_once([':', '@']) {
            Some((repo, rev)) => (repo, Some(rev)),
            None => (hf, None),
        };
        let rev = match inline_rev.or(revision) {
            Some(rev) if is_hex(rev, 40) => rev,
            Some(rev) => {
                return Some(format!(
                    "Hugging Face model {repo} uses revision {rev:?}, not a 40-hex commit SHA"
                ));
            }
            None => return Some(format!("Hugging Face model {repo} has no pinned revision")),
        };
        let ok = unrestricted
            || policy
                .allowed_source(&format!("hf://{repo}"), rev)
                .is_some();
        return (!ok).then(|| {
            format!("Hugging Face model {repo} at revision {rev} is not an allowed source in models.sources")
        });
    }
    if [
        "s3://", "gs://", "pvc://", "https://", "http://", "azure://",
    ]
    .iter()
    .any(|p| r.starts_with(p))
    {
        if r.starts_with("http://") {
            return Some(format!("model {r} is fetched over plain http"));
        }
        let ok = unrestricted || policy.allowed_storage(r).is_some();
        return (!ok).then(|| {
            format!("model storage {r} is not under an allowed source in models.sources")
        });
    }
    None
}

/// Model references in a container's command line and environment: (where, reference, revision).
pub fn from_container(
    command: Option<&Vec<String>>,
    args: Option<&Vec<String>>,
    env: &[(String, Option<String>)],
) -> Vec<(String, String, Option<String>)> {
    let argv: Vec<&str> = command
        .into_iter()
        .flatten()
        .chain(args.into_iter().flatten())
        .flat_map(|a| a.split_whitespace())
        .collect();
    let flag = |name: &str| -> Option<String> {
        let eq = format!("{name}=");
        argv.iter().enumerate().find_map(|(i, a)| {
            if *a == name {
                argv.get(i + 1).map(|v| (*v).to_owned())
            } else {
                a.strip_prefix(eq.as_str()).map(str::to_owned)
            }
        })
    };
    let env_get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.clone())
    };
    let revision = flag("--revision")
        .or_else(|| env_get("HF_REVISION"))
        .or_else(|| env_get("MODEL_REVISION"));
    let mut out = Vec::new();
    if let Some(m) = flag("--model").or_else(|| flag("--model-id")) {
        out.push(("args --model".to_owned(), m, revision.clone()));
    } else if let Some(i) = argv.iter().position(|a| *a == "serve") {
        let is_vllm = argv.iter().take(i).any(|a| a.ends_with("vllm"));
        if let Some(m) = argv.get(i + 1).filter(|m| is_vllm && !m.starts_with('-')) {
            out.push(("args serve".to_owned(), (*m).to_owned(), revision.clone()));
        }
    }
    for k in ["MODEL_ID", "HF_MODEL_ID"] {
        if let Some(v) = env_get(k) {
            out.push((format!("env {k}"), v, revision.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use sigil_policy::{ModelRepo, ModelSource};
    use test_case::test_case;

    use super::*;

    const SHA: &str = "0e9e39f249a16976918f6564b8830bc894c89659";

    fn policy() -> ModelPolicy {
        ModelPolicy {
            sources: vec![
                ModelSource {
                    name: None,
                    repo: ModelRepo::HuggingFace {
                        repo: "meta-llama/Llama-3.1-8B-Instruct".into(),
                    },
                    revision: Some(SHA.into()),
                },
                ModelSource {
                    name: None,
                    repo: ModelRepo::Storage {
                        uri: "s3://model-weights/".into(),
                    },
                    revision: None,
                },
                ModelSource {
                    name: None,
                    repo: ModelRepo::Oci {
                        reference: format!("ghcr.io/acme/embedder@sha256:{}", "c".repeat(64)),
                    },
                    revision: None,
                },
            ],
            ..ModelPolicy::default()
        }
    }

    #[test_case("meta-llama/Llama-3.1-8B-Instruct", Some(SHA), true)]
    #[test_case("meta-llama/Llama-3.1-8B-Instruct", None, false)]
    #[test_case("meta-llama/Llama-3.1-8B-Instruct", Some("main"), false)]
    #[test_case(
        "hf://meta-llama/Llama-3.1-8B-Instruct:0e9e39f249a16976918f6564b8830bc894c89659",
        None,
        true
    )]
    #[test_case(
        "hf://evil/model:0e9e39f249a16976918f6564b8830bc894c89659",
        None,
        false
    )]
    // the Hub compares repo names and SHAs case-insensitively
    #[test_case(
        "hf://Meta-Llama/llama-3.1-8b-instruct@0E9E39F249A16976918F6564B8830BC894C89659",
        None,
        true
    )]
    #[test_case(
        "oci://ghcr.io/acme/embedder@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
        None,
        true
    )]
    #[test_case(
        "oci://ghcr.io/acme/embedder@sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
        None,
        false
    )]
    #[test_case("oci://ghcr.io/acme/embedder:latest", None, false)]
    #[test_case("s3://model-weights/llama/", None, true)]
    #[test_case("s3://model-weights-evil/llama/", None, false)]
    #[test_case("s3://other-bucket/llama/", None, false)]
    #[test_case("/models/llama", None, true)]
    #[test_case("http://weights.example.org/x", None, false)]
    fn judges(r: &str, rev: Option<&str>, ok: bool) {
        assert_eq!(judge(r, rev, &policy()).is_none(), ok, "{r}");
    }

    #[test]
    fn finds_references_in_command_lines() {
        let args = vec![
            "--model".to_owned(),
            "org/m".to_owned(),
            "--revision=abc".to_owned(),
        ];
        let refs = from_container(None, Some(&args), &[]);
        assert_eq!(
            refs,
            [(
                "args --model".to_owned(),
                "org/m".to_owned(),
                Some("abc".to_owned())
            )]
        );
        let cmd = vec!["vllm".to_owned(), "serve".to_owned(), "org/m".to_owned()];
        assert_eq!(from_container(Some(&cmd), None, &[]).len(), 1);
        let env = [("MODEL_ID".to_owned(), Some("org/m".to_owned()))];
        assert_eq!(from_container(None, None, &env).len(), 1);
    }
}
