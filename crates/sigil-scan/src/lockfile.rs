//! Model lockfiles: path, size, SHA-256, source repo and revision of every file of a model
//! directory or Hugging Face cache, and the comparison that `sigil models verify` runs.
//!
//! The Hugging Face cache layout is `models--<org>--<name>/snapshots/<commit>/<file>`, each file
//! a symlink to `blobs/<id>`; `<id>` is the SHA-256 of LFS files and the Git blob SHA-1 of small
//! files. Both are re-verified offline, so a tampered blob is caught even before a lockfile
//! exists.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{self, DigestError};

/// The lockfile format version this build writes and reads.
pub const LOCK_VERSION: u32 = 1;
/// Default lockfile name.
pub const DEFAULT_LOCKFILE: &str = "sigil-models.lock";
/// Most files one lock may cover.
const MAX_FILES: usize = 1_000_000;

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
    #[error("{path}: more than {MAX_FILES} files")]
    TooMany { path: PathBuf },
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

/// Lists the files below `dir` (symlinks followed, so the HF cache's snapshot links count), each
/// directory once: a directory reached again (a symlink loop, or a second link to it) is not
/// walked again.
fn walk(
    dir: &Path,
    rel: &str,
    out: &mut Vec<(String, PathBuf)>,
    skip: &[&str],
) -> Result<(), LockError> {
    let mut dirs = HashSet::new();
    let meta = std::fs::metadata(dir).map_err(io_err(dir))?;
    dirs.insert((meta.dev(), meta.ino()));
    walk_in(dir, rel, out, skip, &mut dirs)
}

fn walk_in(
    dir: &Path,
    rel: &str,
    out: &mut Vec<(String, PathBuf)>,
    skip: &[&str],
    dirs: &mut HashSet<(u64, u64)>,
) -> Result<(), LockError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let p = e.path();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let meta = std::fs::metadata(&p).map_err(io_err(&p))?;
        if meta.is_dir() {
            if dirs.insert((meta.dev(), meta.ino())) {
                walk_in(&p, &r, out, skip, dirs)?;
            }
        } else if meta.is_file() {
            out.push((r, p));
            if out.len() > MAX_FILES {
                return Err(LockError::TooMany {
                    path: dir.to_owned(),
                });
            }
        }
    }
    Ok(())
}

const SKIP: &[&str] = &[
    ".git",
    ".gitattributes",
    ".github",
    ".gitignore",
    DEFAULT_LOCKFILE,
];

fn snapshot_targets(
    repo_dir: &Path,
    rel_prefix: &str,
    repo: &str,
    out: &mut Vec<Target>,
) -> Result<(), LockError> {
    let snaps = repo_dir.join("snapshots");
    let mut commits: Vec<_> = std::fs::read_dir(&snaps)
        .map_err(io_err(&snaps))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    commits.sort();
    for c in commits {
        let prefix = format!("{rel_prefix}snapshots/{c}");
        snapshot_files(&snaps.join(&c), &prefix, repo, &c, out)?;
    }
    Ok(())
}

fn snapshot_files(
    dir: &Path,
    prefix: &str,
    repo: &str,
    commit: &str,
    out: &mut Vec<Target>,
) -> Result<(), LockError> {
    let mut files = Vec::new();
    walk(dir, "", &mut files, SKIP)?;
    for (r, abs) in files {
        let blob = std::fs::read_link(&abs)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        out.push(Target {
            rel: if prefix.is_empty() {
                r
            } else {
                format!("{prefix}/{r}")
            },
            abs,
            repo: Some(format!("hf://{repo}")),
            revision: Some(commit.to_owned()),
            blob,
        });
    }
    Ok(())
}

/// The files under `root`: a model directory, a single file, a Hugging Face cache (`hub/`), a
/// `models--org--name` directory or one of its snapshots.
pub fn collect(root: &Path) -> Result<Vec<Target>, LockError> {
    let meta = std::fs::metadata(root).map_err(io_err(root))?;
    let mut out = Vec::new();
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Target {
            rel: name,
            abs: root.to_owned(),
            repo: None,
            revision: None,
            blob: None,
        });
        return Ok(out);
    }
    let base = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = root.parent();
    let parent_name = parent
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    let grand = parent
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    if let Some(repo) = hf_repo_from_dir(&base) {
        snapshot_targets(root, "", &repo, &mut out)?;
        return Ok(out);
    }
    if parent_name.as_deref() == Some("snapshots")
        && let Some(repo) = grand.as_deref().and_then(hf_repo_from_dir)
    {
        snapshot_files(root, "", &repo, &base, &mut out)?;
        return Ok(out);
    }
    let mut repos: Vec<_> = std::fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("models--"))
        .collect();
    if !repos.is_empty() {
        repos.sort();
        for r in repos {
            if let Some(repo) = hf_repo_from_dir(&r) {
                snapshot_targets(&root.join(&r), &format!("{r}/"), &repo, &mut out)?;
            }
        }
        return Ok(out);
    }
    let mut files = Vec::new();
    walk(root, "", &mut files, SKIP)?;
    out.extend(files.into_iter().map(|(rel, abs)| Target {
        rel,
        abs,
        repo: None,
        revision: None,
        blob: None,
    }));
    Ok(out)
}

/// Every regular file under `dir` (symlinks followed), with no layout detection and no skips.
pub fn collect_plain(dir: &Path) -> Result<Vec<Target>, LockError> {
    let mut files = Vec::new();
    walk(dir, "", &mut files, &[])?;
    Ok(files
        .into_iter()
        .map(|(rel, abs)| Target {
            rel,
            abs,
            repo: None,
            revision: None,
            blob: None,
        })
        .collect())
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
