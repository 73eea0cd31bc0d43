//! Container image references: registry, repository, tag and digest, normalised the way
//! container runtimes do (`nginx` is `docker.io/library/nginx`).

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    /// Repository path without the registry.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// `registry/repository`, the name registry allow-lists are matched against.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Whether the digest is a well-formed sha256 digest.
    pub fn pinned(&self) -> bool {
        self.digest
            .as_deref()
            .and_then(|d| d.strip_prefix("sha256:"))
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// Parses an image reference; `None` for an empty one.
pub fn parse(image: &str) -> Option<ImageRef> {
    let image = image.trim();
    if image.is_empty() {
        return None;
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d.to_owned())),
        None => (image, None),
    };
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest.get(last_slash..).and_then(|t| t.rfind(':')) {
        Some(i) => (
            rest.get(..last_slash + i).unwrap_or(rest),
            rest.get(last_slash + i + 1..).map(str::to_owned),
        ),
        None => (rest, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), path.to_owned())
        }
        Some(_) => ("docker.io".to_owned(), name.to_owned()),
        None => ("docker.io".to_owned(), format!("library/{name}")),
    };
    let registry = if registry == "index.docker.io" {
        "docker.io".to_owned()
    } else {
        registry
    };
    Some(ImageRef {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Whether `name` (`registry/repository`) is under one of the allowed prefixes.
pub fn allowed(name: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| {
        let p = p.trim_end_matches('/');
        name == p
            || name
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;

    #[test_case("nginx", "docker.io", "library/nginx", None, false)]
    #[test_case("nginx:1.27", "docker.io", "library/nginx", Some("1.27"), false)]
    #[test_case("localhost:5000/a/b:v1", "localhost:5000", "a/b", Some("v1"), false)]
    #[test_case(
        "vllm/vllm-openai:v0.6.3",
        "docker.io",
        "vllm/vllm-openai",
        Some("v0.6.3"),
        false
    )]
    #[test_case(
        "registry.ai.example.org/serve@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "registry.ai.example.org",
        "serve",
        None,
        true
    )]
    #[test_case("ghcr.io/org/x@sha256:short", "ghcr.io", "org/x", None, false)]
    fn parses(s: &str, reg: &str, repo: &str, tag: Option<&str>, pinned: bool) {
        let r = parse(s).unwrap();
        assert_eq!(r.registry, reg);
        assert_eq!(r.repository, repo);
        assert_eq!(r.tag.as_deref(), tag);
        assert_eq!(r.pinned(), pinned);
    }

    #[test]
    fn registry_prefixes() {
        let p = vec![
            "registry.ai.example.org".to_owned(),
            "ghcr.io/org/".to_owned(),
        ];
        assert!(allowed("registry.ai.example.org/serve", &p));
        assert!(allowed("ghcr.io/org/x", &p));
        assert!(!allowed("ghcr.io/orgevil/x", &p));
        assert!(!allowed("registry.ai.example.org.evil.com/x", &p));
        assert!(parse("  ").is_none());
    }
}
