//! What the kernel says about a process, read from `/proc/<pid>`: start time, executable path,
//! executable digest and cgroup membership.
//!
//! Owns: reading and bounding those files, and the executable digest cache. Must not: trust
//! anything the process says about itself; every value here comes from the kernel.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Largest executable hashed for `sha256` selectors.
pub const MAX_EXE_BYTES: u64 = 1024 * 1024 * 1024;
const MAX_STAT_BYTES: usize = 4096;

/// Why `/proc` could not tell us about a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid} is gone (it exited before attestation finished)")]
    Gone { pid: i32 },
    #[error(
        "cannot read {path}: {source}; hint: the agent needs root (or CAP_SYS_PTRACE) and the host PID namespace"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "executable {path} is {size} bytes, more than {MAX_EXE_BYTES}; its sha256 is not computed"
    )]
    ExeTooLarge { path: String, size: u64 },
}

/// Access to `/proc` (or a copy of it, in tests).
#[derive(Debug)]
pub struct ProcFs {
    root: PathBuf,
    digests: Mutex<HashMap<FileKey, [u8; 32]>>,
}

/// Identifies one version of a file: a changed file gets a new key and is hashed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

const MAX_DIGEST_CACHE: usize = 4096;

impl Default for ProcFs {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            digests: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, pid: i32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    fn read_err(pid: i32, path: &Path, e: std::io::Error) -> ProcError {
        if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3) {
            ProcError::Gone { pid }
        } else {
            ProcError::Read {
                path: path.to_owned(),
                source: e,
            }
        }
    }

    /// Process start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`). Two
    /// processes that ever had the same PID have different start times.
    pub fn start_time(&self, pid: i32) -> Result<u64, ProcError> {
        let path = self.path(pid, "stat");
        let text =
            read_bounded(&path, MAX_STAT_BYTES).map_err(|e| Self::read_err(pid, &path, e))?;
        parse_start_time(&text).ok_or_else(|| ProcError::Malformed {
            path,
            reason: "no start time in field 22".to_owned(),
        })
    }

    /// The executable's path as the kernel records it (`/proc/<pid>/exe`).
    pub fn exe_path(&self, pid: i32) -> Result<String, ProcError> {
        let path = self.path(pid, "exe");
        let target = std::fs::read_link(&path).map_err(|e| Self::read_err(pid, &path, e))?;
        Ok(target.to_string_lossy().into_owned())
    }

    /// SHA-256 of the executable the process runs: the file opened through `/proc/<pid>/exe`,
    /// which is the inode the kernel mapped even if the path was since replaced.
    pub fn exe_sha256(&self, pid: i32) -> Result<[u8; 32], ProcError> {
        let path = self.path(pid, "exe");
        let mut file = std::fs::File::open(&path).map_err(|e| Self::read_err(pid, &path, e))?;
        let meta = file.metadata().map_err(|e| Self::read_err(pid, &path, e))?;
        let key = FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        };
        if let Some(d) = self.digests.lock().ok().and_then(|m| m.get(&key).copied()) {
            return Ok(d);
        }
        if meta.size() > MAX_EXE_BYTES {
            return Err(ProcError::ExeTooLarge {
                path: path.display().to_string(),
                size: meta.size(),
            });
        }
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| Self::read_err(pid, &path, e))?;
            if n == 0 {
                break;
            }
            ctx.update(buf.get(..n).unwrap_or_default());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        if let Ok(mut m) = self.digests.lock() {
            if m.len() >= MAX_DIGEST_CACHE {
                m.clear();
            }
            m.insert(key, out);
        }
        Ok(out)
    }

    /// The text of `/proc/<pid>/cgroup`.
    pub fn cgroup(&self, pid: i32) -> Result<String, ProcError> {
        let path = self.path(pid, "cgroup");
        read_bounded(&path, super::cgroup::MAX_CGROUP_BYTES)
            .map_err(|e| Self::read_err(pid, &path, e))
    }
}

fn read_bounded(path: &Path, max: usize) -> std::io::Result<String> {
    let f = std::fs::File::open(path)?;
    let mut s = String::new();
    f.take(max as u64 + 1).read_to_string(&mut s)?;
    if s.len() > max {
        return Err(std::io::Error::other(format!("more than {max} bytes")));
    }
    Ok(s)
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself contain spaces and `)`, so fields are counted after the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    // After the `)`, field 3 (state) is the first; starttime is field 22, i.e. the 20th here.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_skips_tricky_comm() {
        let stat = "1234 (evil) 1 2 3) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
        assert_eq!(parse_start_time("no parens"), None);
    }

    #[test]
    fn reads_own_process() {
        let p = ProcFs::default();
        let me = i32::try_from(std::process::id()).unwrap();
        let t1 = p.start_time(me).unwrap();
        assert_eq!(t1, p.start_time(me).unwrap());
        let exe = p.exe_path(me).unwrap();
        assert_eq!(exe, std::env::current_exe().unwrap().to_string_lossy());
        let bytes = std::fs::read(&exe).unwrap();
        let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        assert_eq!(p.exe_sha256(me).unwrap().as_slice(), want.as_ref());
        // Second call is served from the cache and agrees.
        assert_eq!(p.exe_sha256(me).unwrap().as_slice(), want.as_ref());
        assert!(!p.cgroup(me).unwrap().is_empty());
    }

    #[test]
    fn gone_process_is_reported_as_gone() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProcFs::new(dir.path());
        assert!(matches!(p.start_time(42), Err(ProcError::Gone { pid: 42 })));
        assert!(matches!(p.exe_path(42), Err(ProcError::Gone { pid: 42 })));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_stat_never_panics(s in "\\PC{0,300}") {
            let _ = parse_start_time(&s);
        }
    }
}
