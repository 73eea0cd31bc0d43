//! Model lockfiles: path, size, SHA-256, source repo and revision of every file of a model
//! directory or Hugging Face cache, and the comparison that `sigil models verify` runs.
//!
//! The Hugging Face cache layout is `models--<org>--<name>/snapshots/<commit>/<file>`, each file
//! a symlink to `blobs/<id>`; `<id>` is the SHA-256 of LFS files and the Git blob SHA-1 of small
//! files. Both are re-verified offline, so a tampered blob is caught even before a lockfile
//! exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{self, DigestError};
use crate::walk::{self, Problem};

/// The lockfile format version this build writes and reads.
pub const LOCK_VERSION: u32 = 1;
/// Default lockfile name.
pub const DEFAULT_LOCKFILE: &str = "sigil-models.lock";

/// One locked file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    /// Path relative to the locked root, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// `hf://org/name` for files from the Hugging Face cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The snapshot commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A lockfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    pub version: u32,
    pub files: Vec<LockEntry>,
}

/// Lockfile and collection errors.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("{path} is not a valid lockfile: {msg}; hint: regenerate it with `sigil models lock`")]
    Parse { path: PathBuf, msg: String },
    #[error("{path}: {} paths cannot be followed:\n  {}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Walk {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// A file to lock.
#[derive(Debug, Clone)]
pub struct Target {
    pub rel: String,
    pub abs: PathBuf,
    pub repo: Option<String>,
    pub revision: Option<String>,
    /// The blob the cache symlink points at (its name is a digest).
    pub blob: Option<String>,
}

/// A difference between a lockfile and the files on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Drift {
    Changed {
        path: String,
        locked: String,
        found: String,
    },
    Missing {
        path: String,
    },
    Extra {
        path: String,
    },
    /// A Hugging Face cache blob whose content does not match its name.
    BlobMismatch {
        path: String,
        blob: String,
        found: String,
    },
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Changed {
                path,
                locked,
                found,
            } => {
                write!(f, "{path}: changed (locked {locked}, found {found})")
            }
            Self::Missing { path } => write!(f, "{path}: missing (in the lockfile, not on disk)"),
            Self::Extra { path } => write!(f, "{path}: extra (on disk, not in the lockfile)"),
            Self::BlobMismatch { path, blob, found } => write!(
                f,
                "{path}: cache blob {blob} does not match its content ({found}); the cache was tampered with"
            ),
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `models--org--name` to `org/name`.
pub fn hf_repo_from_dir(name: &str) -> Option<String> {
    let rest = name.strip_prefix("models--")?;
    Some(rest.replacen("--", "/", 1))
}

/// Files that are not part of a model: Git metadata and the lockfile itself. `sigil scan` still
/// scans them, but does not look their digests up in a lockfile.
const NOT_LOCKED: &[&str] = &[".github", ".gitattributes", ".gitignore", DEFAULT_LOCKFILE];

/// Whether a walked path (relative, `/`-separated) is one a lockfile pins.
pub fn in_lock_scope(rel: &str) -> bool {
    !rel.split('/').any(|c| NOT_LOCKED.contains(&c))
}

/// Where a file of a Hugging Face cache comes from, by the path components: the repo of the
/// last `models--org--name` directory, and the commit when the file is in its `snapshots/`;
/// the blob's name when the file is a link into `blobs/` or a blob itself.
fn origin(path: &Path) -> (Option<String>, Option<String>) {
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let Some(i) = parts.iter().rposition(|c| hf_repo_from_dir(c).is_some()) else {
        return (None, None);
    };
    let repo = parts.get(i).and_then(|c| hf_repo_from_dir(c));
    let revision = match (parts.get(i + 1), parts.get(i + 2)) {
        (Some(s), Some(rev)) if s == "snapshots" && parts.len() > i + 3 => Some(rev.clone()),
        _ => None,
    };
    (repo.map(|r| format!("hf://{r}")), revision)
}

/// Whether a path is in the `blobs/` directory of a Hugging Face cache repo.
fn in_blobs(path: &Path) -> bool {
    let parts: Vec<_> = path.components().map(|c| c.as_os_str()).collect();
    parts
        .windows(2)
        .any(|w| matches!(w, [repo, b] if walk::is_hf_repo_dir(&repo.to_string_lossy()) && *b == "blobs"))
}

fn blob_name(abs: &Path, repo: bool) -> Option<String> {
    if let Ok(t) = std::fs::read_link(abs) {
        return t.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    // A blob itself (one no snapshot links to): its name is its digest.
    let parent = abs.parent().and_then(Path::file_name)?;
    (repo && parent == "blobs")
        .then(|| abs.file_name().map(|n| n.to_string_lossy().into_owned()))?
}

/// The files under `root` as [`crate::walk`] lists them (a model directory, a single file, a
/// Hugging Face cache root, a `models--org--name` directory or one of its snapshots), with the
/// paths the walk could not follow. Each name of a file is a target, except a cache blob's own
/// name when a snapshot links to it (the lock pins the names loaders open).
pub fn collect_all(root: &Path) -> Result<(Vec<Target>, Vec<Problem>), LockError> {
    let w = walk::walk(root).map_err(|e| LockError::Io {
        path: e.path,
        source: e.source,
    })?;
    let canonical = std::fs::canonicalize(root).map_err(io_err(root))?;
    let base = if std::fs::metadata(root).map_err(io_err(root))?.is_file() {
        canonical.parent().map(Path::to_owned).unwrap_or_default()
    } else {
        canonical
    };
    let mut out = Vec::new();
    for f in w.files {
        let names = std::iter::once(f.rel.clone()).chain(
            f.aliases
                .iter()
                .filter(|a| !in_blobs(&base.join(a)))
                .cloned(),
        );
        for rel in names.filter(|r| in_lock_scope(r)) {
            let logical = base.join(&rel);
            let (repo, revision) = origin(&logical);
            let abs = if rel == f.rel {
                f.path.clone()
            } else {
                root.join(&rel)
            };
            let blob = blob_name(&abs, repo.is_some());
            out.push(Target {
                rel,
                abs,
                repo,
                revision,
                blob,
            });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((out, w.problems))
}

/// [`collect_all`], refusing a tree with paths the walk could not follow.
pub fn collect(root: &Path) -> Result<Vec<Target>, LockError> {
    let (targets, problems) = collect_all(root)?;
    if problems.is_empty() {
        Ok(targets)
    } else {
        Err(LockError::Walk {
            path: root.to_owned(),
            problems,
        })
    }
}

/// Every regular file under `dir`, each name of it, with no layout detection and no skips
/// (model-signing's view of a directory); a link that dangles or leaves `dir` is an error.
pub fn collect_plain(dir: &Path) -> Result<Vec<Target>, LockError> {
    let w = walk::walk(dir).map_err(|e| LockError::Io {
        path: e.path,
        source: e.source,
    })?;
    if !w.problems.is_empty() {
        return Err(LockError::Walk {
            path: dir.to_owned(),
            problems: w.problems,
        });
    }
    let mut out: Vec<Target> = w
        .files
        .into_iter()
        .flat_map(|f| {
            std::iter::once(f.rel).chain(f.aliases).map(|rel| Target {
                abs: dir.join(&rel),
                rel,
                repo: None,
                revision: None,
                blob: None,
            })
        })
        .collect();
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Hashes one target and checks its cache blob name.
pub fn hash_target(t: &Target) -> Result<(LockEntry, Option<Drift>), LockError> {
    let (sha, size) = digest::sha256_file(&t.abs)?;
    let mut drift = None;
    if let Some(blob) = &t.blob {
        let is_hex = |n: usize| blob.len() == n && blob.chars().all(|c| c.is_ascii_hexdigit());
        let found = if is_hex(64) {
            Some(sha.clone())
        } else if is_hex(40) {
            Some(digest::git_blob_sha1(&t.abs)?)
        } else {
            None
        };
        if let Some(found) = found
            && !found.eq_ignore_ascii_case(blob)
        {
            drift = Some(Drift::BlobMismatch {
                path: t.rel.clone(),
                blob: blob.clone(),
                found,
            });
        }
    }
    Ok((
        LockEntry {
            path: t.rel.clone(),
            size,
            sha256: sha,
            repo: t.repo.clone(),
            revision: t.revision.clone(),
        },
        drift,
    ))
}

impl Lockfile {
    pub fn new(mut files: Vec<LockEntry>) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            version: LOCK_VERSION,
            files,
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, LockError> {
        let l: Self = serde_json::from_str(text).map_err(|e| LockError::Parse {
            path: path.to_owned(),
            msg: e.to_string(),
        })?;
        if l.version != LOCK_VERSION {
            return Err(LockError::Parse {
                path: path.to_owned(),
                msg: format!("version {} (this build reads {LOCK_VERSION})", l.version),
            });
        }
        for f in &l.files {
            if f.sha256.len() != 64 || !f.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(LockError::Parse {
                    path: path.to_owned(),
                    msg: format!(
                        "entry {:?} has sha256 {:?}, not 64 hex digits",
                        f.path, f.sha256
                    ),
                });
            }
        }
        Ok(l)
    }

    pub fn load(path: &Path) -> Result<Self, LockError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Self::parse(&text, path)
    }

    /// The set of locked digests.
    pub fn digests(&self) -> std::collections::HashSet<&str> {
        self.files.iter().map(|f| f.sha256.as_str()).collect()
    }

    /// Compares the lock with the current files: changed, missing and extra files.
    pub fn compare(&self, current: &[LockEntry]) -> Vec<Drift> {
        let locked: BTreeMap<&str, &LockEntry> =
            self.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let now: BTreeMap<&str, &LockEntry> =
            current.iter().map(|f| (f.path.as_str(), f)).collect();
        let mut out = Vec::new();
        for (p, l) in &locked {
            match now.get(p) {
                None => out.push(Drift::Missing {
                    path: (*p).to_owned(),
                }),
                Some(c) if c.sha256 != l.sha256 || c.size != l.size => out.push(Drift::Changed {
                    path: (*p).to_owned(),
                    locked: format!("{} bytes sha256:{}", l.size, l.sha256),
                    found: format!("{} bytes sha256:{}", c.size, c.sha256),
                }),
                Some(_) => {}
            }
        }
        for p in now.keys() {
            if !locked.contains_key(p) {
                out.push(Drift::Extra {
                    path: (*p).to_owned(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str, sha: &str) -> LockEntry {
        LockEntry {
            path: p.into(),
            size: 1,
            sha256: sha.repeat(64),
            repo: None,
            revision: None,
        }
    }

    #[test]
    fn compare_reports_every_kind() {
        let lock = Lockfile::new(vec![entry("a", "1"), entry("b", "2"), entry("c", "3")]);
        let now = vec![entry("a", "1"), entry("b", "9"), entry("d", "4")];
        let d = lock.compare(&now);
        assert_eq!(d.len(), 3);
        assert!(matches!(&d[0], Drift::Changed { path, .. } if path == "b"));
        assert!(matches!(&d[1], Drift::Missing { path } if path == "c"));
        assert!(matches!(&d[2], Drift::Extra { path } if path == "d"));
        assert!(lock.compare(&lock.files).is_empty());
    }

    #[test]
    fn a_directory_symlink_loop_is_walked_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/w.bin"), b"x").unwrap();
        std::os::unix::fs::symlink("..", d.path().join("sub/up")).unwrap();
        let files: Vec<String> = collect_plain(d.path())
            .unwrap()
            .into_iter()
            .map(|t| t.rel)
            .collect();
        assert_eq!(files, vec!["sub/w.bin".to_owned()]);
    }

    #[test]
    fn repo_names() {
        assert_eq!(
            hf_repo_from_dir("models--meta-llama--Llama-3.1-8B").as_deref(),
            Some("meta-llama/Llama-3.1-8B")
        );
        assert_eq!(hf_repo_from_dir("models--gpt2").as_deref(), Some("gpt2"));
        assert_eq!(hf_repo_from_dir("datasets--x--y"), None);
    }

    #[test]
    fn parse_rejects_bad_digest() {
        let e = Lockfile::parse(
            r#"{"version":1,"files":[{"path":"a","size":1,"sha256":"xyz"}]}"#,
            Path::new("l"),
        );
        assert!(e.is_err());
        let e = Lockfile::parse(r#"{"version":2,"files":[]}"#, Path::new("l"));
        assert!(e.is_err());
    }
}
