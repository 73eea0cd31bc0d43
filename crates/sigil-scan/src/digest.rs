//! Streaming file digests (aws-lc-rs SHA-256, which uses SHA-NI/AVX where the CPU has them;
//! SHA-1 only for Git blob names in the Hugging Face cache), and a parallel map over files.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::digest;

const CHUNK: usize = 1024 * 1024;

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct DigestError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// SHA-256 of a stream, hex, with the byte count.
pub fn sha256_reader(r: impl Read) -> std::io::Result<(String, u64)> {
    sha256_sized(r, CHUNK)
}

fn sha256_sized(mut r: impl Read, size_hint: usize) -> std::io::Result<(String, u64)> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = crate::source::buffer_for((size_hint as u64).max(1), CHUNK);
    let mut n: u64 = 0;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(buf.get(..k).unwrap_or_default());
        n += k as u64;
    }
    Ok((hex::encode(ctx.finish().as_ref()), n))
}

/// SHA-256 of a file, hex, with its size.
pub fn sha256_file(path: &Path) -> Result<(String, u64), DigestError> {
    let err = |source| DigestError {
        path: path.to_owned(),
        source,
    };
    let f = File::open(path).map_err(err)?;
    // The size only sizes the buffer; a file that grows meanwhile is still read to its end.
    let len = f.metadata().map_err(err)?.len();
    sha256_sized(f, usize::try_from(len).unwrap_or(CHUNK).saturating_add(1)).map_err(err)
}

/// Git's blob id (`sha1("blob <len>\0" + content)`), used for non-LFS files in the HF cache.
pub fn git_blob_sha1(path: &Path) -> Result<String, DigestError> {
    let err = |source| DigestError {
        path: path.to_owned(),
        source,
    };
    let mut f = File::open(path).map_err(err)?;
    let len = f.metadata().map_err(err)?.len();
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(format!("blob {len}\0").as_bytes());
    let mut buf = crate::source::buffer_for(len.saturating_add(1), CHUNK);
    loop {
        let k = f.read(&mut buf).map_err(err)?;
        if k == 0 {
            break;
        }
        ctx.update(buf.get(..k).unwrap_or_default());
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// SHA-256 of bytes in memory, hex.
pub fn sha256_bytes(b: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, b).as_ref())
}

/// Runs `f` over `items` on `threads` threads, keeping the input order; `tick` is called after
/// each item (progress).
pub fn par_map<T: Sync, U: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> U + Sync,
    tick: impl Fn() + Sync,
) -> Vec<U> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<U>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if let Ok(mut o) = out.lock()
                        && let Some(slot) = o.get_mut(i)
                    {
                        *slot = Some(r);
                    }
                    tick();
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        // `git hash-object` of "hello\n"
        assert_eq!(
            git_blob_sha1(&p).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(sha256_file(&p).unwrap().1, 6);
    }

    #[test]
    fn par_map_keeps_order() {
        let v: Vec<u32> = (0..100).collect();
        let out = par_map(&v, 4, |x| x * 2, || {});
        assert_eq!(out, v.iter().map(|x| x * 2).collect::<Vec<_>>());
    }
}
