//! The file-system edge: key files (0600 enforced), sealing and unsealing files and directories
//! with atomic replacement. Output is written to a temporary file (or directory) beside the
//! destination, synced, and renamed into place only when complete, so a crash or `kill -9` leaves
//! either the old state or the complete new one, never a partial file under the final name; the
//! input is only read. A killed run may leave a `.NAME.*.tmp` file beside the destination.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::envelope::{self, Expect, SealOptions, Summary};
use crate::error::SealError;
use crate::key::{DataKeySource, KEY_LEN, LocalKey, WrapContext};

/// Suffix of sealed files.
pub const SUFFIX: &str = ".sigil";

/// Load a 32-byte key file. It must be a regular file readable by its owner only (mode 0600 or
/// stricter): a key readable by others is refused, not used.
pub fn load_key_file(path: &Path, version: u32) -> Result<LocalKey, SealError> {
    let meta = std::fs::metadata(path).map_err(|e| SealError::io(path, "key file", e))?;
    if !meta.is_file() {
        return Err(SealError::usage(path, "key file is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SealError::usage(
            path,
            format!(
                "key file has mode {mode:04o}, readable by others; hint: chmod 600 {}",
                path.display()
            ),
        ));
    }
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
    File::open(path)
        .and_then(|f| f.take(KEY_LEN as u64 + 1).read_to_end(&mut buf))
        .map_err(|e| SealError::io(path, "read key file", e))?;
    LocalKey::from_bytes(&buf, version).map_err(|source| SealError::Key {
        path: path.to_path_buf(),
        source,
    })
}

/// A temporary file beside `dest`, created 0600.
fn temp_beside(dest: &Path) -> Result<tempfile::NamedTempFile, SealError> {
    let parent = parent_of(dest);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(|e| SealError::io(parent, "create a temporary file in", e))
}

fn parent_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn check_dest(input: &Path, dest: &Path, force: bool) -> Result<(), SealError> {
    if let (Ok(a), Ok(b)) = (input.canonicalize(), dest.canonicalize())
        && a == b
    {
        return Err(SealError::usage(
            dest,
            "the output is the input; hint: choose another -o",
        ));
    }
    if !force && std::fs::symlink_metadata(dest).is_ok() {
        return Err(SealError::usage(
            dest,
            "output exists; hint: remove it, choose another -o, or pass --force",
        ));
    }
    Ok(())
}

/// Sync the temporary file and rename it onto `dest`, then sync the directory.
fn commit(tmp: tempfile::NamedTempFile, dest: &Path, force: bool) -> Result<(), SealError> {
    tmp.as_file()
        .sync_all()
        .map_err(|e| SealError::io(tmp.path(), "sync", e))?;
    let r = if force {
        tmp.persist(dest).map(|_| ())
    } else {
        tmp.persist_noclobber(dest).map(|_| ())
    };
    r.map_err(|e| SealError::io(dest, "rename into place", e.error))?;
    sync_dir(parent_of(dest))
}

fn sync_dir(dir: &Path) -> Result<(), SealError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SealError::io(dir, "sync directory", e))
}

fn open_input(p: &Path) -> Result<File, SealError> {
    File::open(p).map_err(|e| SealError::io(p, "open", e))
}

/// Seal the file `input` to `dest` atomically, bound to `ctx` (asset and relative path).
pub fn seal_file(
    input: &Path,
    dest: &Path,
    ctx: &WrapContext<'_>,
    keys: &dyn DataKeySource,
    opts: &SealOptions,
    force: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Summary, SealError> {
    check_dest(input, dest, force)?;
    let src = open_input(input)?;
    let tmp = temp_beside(dest)?;
    let s = envelope::seal(&src, tmp.as_file(), ctx, keys, opts, progress, input, dest)?;
    commit(tmp, dest, force)?;
    Ok(s)
}

/// Unseal the file `input` to `dest` atomically: `dest` appears only if every segment
/// authenticated and the file ended with its last segment.
pub fn unseal_file(
    input: &Path,
    dest: &Path,
    keys: &dyn DataKeySource,
    expect: &Expect<'_>,
    jobs: Option<usize>,
    force: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Summary, SealError> {
    check_dest(input, dest, force)?;
    let src = open_input(input)?;
    let tmp = temp_beside(dest)?;
    let s = envelope::unseal(
        &src,
        tmp.as_file(),
        keys,
        expect,
        jobs,
        progress,
        input,
        dest,
    )?;
    commit(tmp, dest, force)?;
    Ok(s)
}

/// The regular files under `root`, sorted, with their `/`-separated relative paths. File
/// symlinks are followed; directory symlinks, sockets, FIFOs and devices are refused (a loop or a
/// pipe would never end), as are names that are not UTF-8.
pub fn walk(root: &Path) -> Result<Vec<(PathBuf, String)>, SealError> {
    let mut out = Vec::new();
    walk_into(root, "", &mut out)?;
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn walk_into(dir: &Path, rel: &str, out: &mut Vec<(PathBuf, String)>) -> Result<(), SealError> {
    let rd = std::fs::read_dir(dir).map_err(|e| SealError::io(dir, "read directory", e))?;
    for entry in rd {
        let entry = entry.map_err(|e| SealError::io(dir, "read directory", e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(SealError::usage(&path, "file name is not UTF-8; rename it"));
        };
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry
            .file_type()
            .map_err(|e| SealError::io(&path, "stat", e))?;
        let is_file = if ft.is_symlink() {
            let m =
                std::fs::metadata(&path).map_err(|e| SealError::io(&path, "follow symlink", e))?;
            if m.is_dir() {
                return Err(SealError::usage(
                    &path,
                    "symlink to a directory is not followed; hint: seal its target separately",
                ));
            }
            m.is_file()
        } else if ft.is_dir() {
            walk_into(&path, &child, out)?;
            continue;
        } else {
            ft.is_file()
        };
        if !is_file {
            return Err(SealError::usage(
                &path,
                "not a regular file (socket, FIFO or device); hint: move it out of the directory",
            ));
        }
        out.push((path, child));
    }
    Ok(())
}

/// What a directory run did.
#[derive(Debug, Clone, Default)]
pub struct DirSummary {
    pub files: u64,
    pub plaintext_bytes: u64,
}

/// A temporary directory beside `dest`, renamed onto it when complete.
fn temp_dir_beside(dest: &Path) -> Result<tempfile::TempDir, SealError> {
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(SealError::usage(
            dest,
            "output directory exists; hint: remove it or choose another -o",
        ));
    }
    let parent = parent_of(dest);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempdir_in(parent)
        .map_err(|e| SealError::io(parent, "create a temporary directory in", e))
}

fn commit_dir(tmp: tempfile::TempDir, dest: &Path) -> Result<(), SealError> {
    sync_dir(tmp.path())?;
    // rename(2) onto a missing name is atomic; if dest appeared meanwhile it fails, and the
    // temporary directory is removed when `tmp` drops.
    std::fs::rename(tmp.path(), dest).map_err(|e| SealError::io(dest, "rename into place", e))?;
    let _ = tmp.keep();
    sync_dir(parent_of(dest))
}

fn create_parent(p: &Path) -> Result<(), SealError> {
    let d = parent_of(p);
    std::fs::create_dir_all(d).map_err(|e| SealError::io(d, "create directory", e))
}

fn create_file(p: &Path) -> Result<File, SealError> {
    create_parent(p)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .map_err(|e| SealError::io(p, "create", e))
}

fn finish_file(f: &File, p: &Path) -> Result<(), SealError> {
    f.sync_all().map_err(|e| SealError::io(p, "sync", e))
}

/// Seal every file under `input` into the new directory `dest` (`REL` becomes `REL.sigil`),
/// each with its own data key and bound to its relative path. `dest` appears only when all are
/// sealed. Empty directories are not kept.
pub fn seal_dir(
    input: &Path,
    dest: &Path,
    asset: &str,
    keys: &dyn DataKeySource,
    opts: &SealOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<DirSummary, SealError> {
    let files = walk(input)?;
    let tmp = temp_dir_beside(dest)?;
    let mut sum = DirSummary::default();
    for (path, rel) in &files {
        let out = tmp.path().join(format!("{rel}{SUFFIX}"));
        let f = create_file(&out)?;
        let src = open_input(path)?;
        let ctx = WrapContext { asset, path: rel };
        let s = envelope::seal(&src, &f, &ctx, keys, opts, progress, path, &out)?;
        finish_file(&f, &out)?;
        sum.files += 1;
        sum.plaintext_bytes += s.plaintext_bytes;
    }
    commit_dir(tmp, dest)?;
    Ok(sum)
}

/// Unseal a directory written by [`seal_dir`] into the new directory `dest`. Every file must be
/// `REL.sigil` and its header must name `REL` and one asset (the expected one if given): a file
/// moved, renamed or swapped inside the sealed tree is refused. `dest` appears only when all
/// files unsealed.
pub fn unseal_dir(
    input: &Path,
    dest: &Path,
    keys: &dyn DataKeySource,
    asset: Option<&str>,
    jobs: Option<usize>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<DirSummary, SealError> {
    let files = walk(input)?;
    let tmp = temp_dir_beside(dest)?;
    let mut sum = DirSummary::default();
    let mut first_asset: Option<String> = asset.map(str::to_owned);
    for (path, rel) in &files {
        let Some(plain_rel) = rel.strip_suffix(SUFFIX) else {
            return Err(SealError::usage(
                path,
                format!("not a sealed file (no {SUFFIX} suffix) inside a sealed directory"),
            ));
        };
        let out = tmp.path().join(plain_rel);
        let f = create_file(&out)?;
        let src = open_input(path)?;
        let expect = Expect {
            asset: first_asset.as_deref(),
            path: Some(plain_rel),
        };
        let s = envelope::unseal(&src, &f, keys, &expect, jobs, progress, path, &out)?;
        finish_file(&f, &out)?;
        if first_asset.is_none() {
            first_asset = Some(s.header.asset.clone());
        }
        sum.files += 1;
        sum.plaintext_bytes += s.plaintext_bytes;
    }
    commit_dir(tmp, dest)?;
    Ok(sum)
}
