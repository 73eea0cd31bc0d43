//! The one walker of model trees: which files `sigil scan`, `sigil models lock|verify` and
//! `sigil models sign` read under a path, so that they agree on what is in scope.
//!
//! Owns: the walk (sorted; `.git` skipped), symlink rules and the Hugging Face cache layout.
//! Symlinks are followed only while they stay inside the scanned root; one that dangles or leads
//! out of it is a [`Problem`] for that path, and the walk goes on. A root inside a Hugging Face
//! repo directory (`models--org--name/snapshots/<rev>`) counts the whole repo directory as
//! inside, since its snapshot files are links into `../../blobs/`. Every file is listed once,
//! by its resolved identity (device, inode): the name first reached is kept and the others are
//! its `aliases`. In a repo directory `snapshots/` is walked before `blobs/`, so a cache blob is
//! reported under the snapshot path users know; `refs/` (branch names) and `.no_exist/` (markers
//! of absent files) are not model files, nor is a cache root's `.locks/`. Must not: open files
//! (only `stat`), or follow a link whose target it has not resolved.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One file in scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedFile {
    /// Path relative to the walked root, `/`-separated (the root's own name for a file root).
    pub rel: String,
    /// The root joined with `rel`.
    pub path: PathBuf,
    /// Other names of the same file (a second link to it, a cache blob reached through its
    /// snapshot link), relative to the root.
    pub aliases: Vec<String>,
}

/// A path the walk could not follow; the rest of the tree is still walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(
        "{path}: dangling symlink to {target}; nothing to read (hint: restore or remove the link)"
    )]
    Dangling { path: PathBuf, target: PathBuf },
    #[error(
        "{path}: symlink to {target}, outside the scanned root {root}; not followed (hint: scan or lock the target itself)"
    )]
    Outside {
        path: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
    #[error("{path}: cannot read: {error}")]
    Unreadable { path: PathBuf, error: String },
}

impl Problem {
    pub fn path(&self) -> &Path {
        match self {
            Self::Dangling { path, .. }
            | Self::Outside { path, .. }
            | Self::Unreadable { path, .. } => path,
        }
    }
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<WalkedFile>,
    pub problems: Vec<Problem>,
}

/// The root itself cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct WalkError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Most files one walk lists.
pub const MAX_FILES: usize = 1_000_000;

/// Whether a directory name is a Hugging Face cache repo (`models--org--name`, and the same
/// layout for datasets and spaces).
pub fn is_hf_repo_dir(name: &str) -> bool {
    ["models--", "datasets--", "spaces--"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The directory whose inside links may point into: the root, or the Hugging Face repo
/// directory that holds it.
fn boundary(canonical_root: &Path) -> PathBuf {
    canonical_root
        .ancestors()
        .find(|a| {
            a.file_name()
                .is_some_and(|n| is_hf_repo_dir(&n.to_string_lossy()))
        })
        .unwrap_or(canonical_root)
        .to_owned()
}

struct Walker {
    boundary: PathBuf,
    dirs: HashSet<(u64, u64)>,
    seen: HashMap<(u64, u64), usize>,
    out: Walk,
}

/// Walks `root` (a file or a directory).
pub fn walk(root: &Path) -> Result<Walk, WalkError> {
    let err = |source| WalkError {
        path: root.to_owned(),
        source,
    };
    let meta = std::fs::metadata(root).map_err(err)?;
    let canonical = std::fs::canonicalize(root).map_err(err)?;
    let mut w = Walker {
        boundary: boundary(&canonical),
        dirs: HashSet::new(),
        seen: HashMap::new(),
        out: Walk::default(),
    };
    if meta.is_dir() {
        w.dirs.insert((meta.dev(), meta.ino()));
        w.dir(root, "");
    } else if meta.is_file() {
        let rel = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        w.file(root.to_owned(), rel, &meta);
    }
    Ok(w.out)
}

impl Walker {
    fn problem(&mut self, p: Problem) {
        self.out.problems.push(p);
    }

    fn file(&mut self, path: PathBuf, rel: String, meta: &std::fs::Metadata) {
        let id = (meta.dev(), meta.ino());
        if let Some(&i) = self.seen.get(&id) {
            if let Some(f) = self.out.files.get_mut(i) {
                f.aliases.push(rel);
            }
            return;
        }
        if self.out.files.len() >= MAX_FILES {
            self.problem(Problem::Unreadable {
                path,
                error: format!("more than {MAX_FILES} files; the rest are not listed"),
            });
            return;
        }
        self.seen.insert(id, self.out.files.len());
        self.out.files.push(WalkedFile {
            rel,
            path,
            aliases: Vec::new(),
        });
    }

    fn dir(&mut self, dir: &Path, rel: &str) {
        let listing = match std::fs::read_dir(dir) {
            Ok(l) => l,
            Err(e) => {
                self.problem(Problem::Unreadable {
                    path: dir.to_owned(),
                    error: e.to_string(),
                });
                return;
            }
        };
        let mut entries = Vec::new();
        for e in listing {
            match e {
                Ok(e) => entries.push(e),
                Err(e) => self.problem(Problem::Unreadable {
                    path: dir.to_owned(),
                    error: e.to_string(),
                }),
            }
        }
        let name_of = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().into_owned();
        let here = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let repo = is_hf_repo_dir(&here);
        let cache_root = entries.iter().any(|e| is_hf_repo_dir(&name_of(e)));
        // In a repo directory: snapshots first (their names are the ones users know), blobs
        // last (only the ones no snapshot links to are still new then).
        let rank = |n: &str| match n {
            "snapshots" if repo => 0,
            "blobs" if repo => 2,
            _ => 1,
        };
        entries.sort_by_cached_key(|e| {
            let n = name_of(e);
            (rank(&n), n)
        });
        for e in entries {
            let name = name_of(&e);
            if name == ".git"
                || (repo && (name == "refs" || name == ".no_exist"))
                || (cache_root && name == ".locks")
            {
                continue;
            }
            let path = e.path();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Some(meta) = self.resolve(&e, &path) else {
                continue;
            };
            if meta.is_dir() {
                if self.dirs.insert((meta.dev(), meta.ino())) {
                    self.dir(&path, &r);
                }
            } else if meta.is_file() {
                self.file(path, r, &meta);
            }
            // FIFOs, sockets and devices are not model files (and opening a FIFO blocks).
        }
    }

    /// The metadata of an entry, links followed when they stay inside the boundary.
    fn resolve(&mut self, e: &std::fs::DirEntry, path: &Path) -> Option<std::fs::Metadata> {
        let unreadable = |error: std::io::Error| Problem::Unreadable {
            path: path.to_owned(),
            error: error.to_string(),
        };
        let ft = match e.file_type() {
            Ok(t) => t,
            Err(err) => {
                self.problem(unreadable(err));
                return None;
            }
        };
        if !ft.is_symlink() {
            return match e.metadata() {
                Ok(m) => Some(m),
                Err(err) => {
                    self.problem(unreadable(err));
                    None
                }
            };
        }
        let real = match std::fs::canonicalize(path) {
            Ok(r) => r,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let target = std::fs::read_link(path).unwrap_or_default();
                self.problem(Problem::Dangling {
                    path: path.to_owned(),
                    target,
                });
                return None;
            }
            Err(err) => {
                // ELOOP (a link to itself), EACCES on the way.
                self.problem(unreadable(err));
                return None;
            }
        };
        if !real.starts_with(&self.boundary) {
            self.problem(Problem::Outside {
                path: path.to_owned(),
                target: real,
                root: self.boundary.clone(),
            });
            return None;
        }
        match std::fs::metadata(&real) {
            Ok(m) => Some(m),
            Err(err) => {
                self.problem(unreadable(err));
                None
            }
        }
    }
}
