//! Byte sources: a cheap, cloneable window onto a file (positional reads, no shared cursor) or
//! onto memory, and spilling of decompressed streams to an anonymous temporary file so nothing
//! large is ever held in memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Spilled streams up to this size stay in memory.
const IN_MEMORY: u64 = 8 * 1024 * 1024;
/// Files up to this size are read whole when opened.
const SMALL_FILE: u64 = 256 * 1024;

#[derive(Debug, Clone)]
enum Backing {
    File(Arc<File>),
    Mem(Arc<[u8]>),
}

/// A zeroed read buffer for a stream of `len` bytes: `len` long, at most `cap`.
pub(crate) fn buffer_for(len: u64, cap: usize) -> Vec<u8> {
    vec![0u8; usize::try_from(len).map_or(cap, |l| l.min(cap))]
}

fn next_store() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A window `[start, start+len)` onto a file or buffer, with its own position.
#[derive(Debug, Clone)]
pub struct Slice {
    b: Backing,
    /// Unique per backing store for the life of the process (addresses are reused once a store
    /// is freed; this is not).
    store: u64,
    start: u64,
    len: u64,
    pos: u64,
}

impl Slice {
    pub fn file(f: File) -> io::Result<Self> {
        let len = f.metadata()?.len();
        Ok(Self {
            b: Backing::File(Arc::new(f)),
            store: next_store(),
            start: 0,
            len,
            pos: 0,
        })
    }

    /// Opens a file to scan: one read for a small file (the parsers then make many small reads,
    /// each a system call on a file backing), positioned reads for anything larger, so memory
    /// stays flat in file size.
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        if len <= SMALL_FILE {
            let mut v = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            // One byte more than the limit: a file that grew meanwhile is read by position.
            (&mut f).take(SMALL_FILE + 1).read_to_end(&mut v)?;
            if v.len() as u64 <= SMALL_FILE {
                return Ok(Self::mem(v));
            }
        }
        Self::file(f)
    }

    pub fn mem(v: Vec<u8>) -> Self {
        let len = v.len() as u64;
        Self {
            b: Backing::Mem(v.into()),
            store: next_store(),
            start: 0,
            len,
            pos: 0,
        }
    }

    /// The bytes this window covers: which backing store and the absolute range in it.
    pub(crate) fn identity(&self) -> (u64, u64, u64) {
        (self.store, self.start, self.len)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A sub-window; clamped to this window.
    pub fn sub(&self, off: u64, len: u64) -> Self {
        let off = off.min(self.len);
        let len = len.min(self.len - off);
        Self {
            b: self.b.clone(),
            store: self.store,
            start: self.start + off,
            len,
            pos: 0,
        }
    }

    /// Reads up to `buf.len()` bytes at `off` (relative to the window); returns bytes read.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        if off >= self.len {
            return Ok(0);
        }
        let n = usize::try_from((self.len - off).min(buf.len() as u64)).unwrap_or(buf.len());
        let dst = buf.get_mut(..n).unwrap_or_default();
        match &self.b {
            Backing::File(f) => {
                let mut done = 0;
                while done < n {
                    let slot = dst.get_mut(done..).unwrap_or_default();
                    let k = f.read_at(slot, self.start + off + done as u64)?;
                    if k == 0 {
                        break;
                    }
                    done += k;
                }
                Ok(done)
            }
            Backing::Mem(m) => {
                let s = usize::try_from(self.start + off).unwrap_or(usize::MAX);
                let src = m.get(s..s.saturating_add(n)).unwrap_or_default();
                let k = src.len().min(dst.len());
                dst.get_mut(..k)
                    .unwrap_or_default()
                    .copy_from_slice(src.get(..k).unwrap_or_default());
                Ok(k)
            }
        }
    }

    /// A zeroed buffer for streaming through this window: `cap` bytes, or the window's length
    /// when that is shorter. Most model files in a tree are small, and zeroing (and faulting in)
    /// a large buffer for each costs more than reading them.
    pub fn read_buf(&self, cap: usize) -> Vec<u8> {
        buffer_for(self.len, cap)
    }

    /// The `N` bytes at `off`, or `None` if the window is shorter (fixed-size fields).
    pub fn array_at<const N: usize>(&self, off: u64) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        (self.read_at(off, &mut a).ok()? == N).then_some(a)
    }

    /// Exactly `n` bytes at `off`, or `None` if the window is shorter.
    pub fn bytes_at(&self, off: u64, n: usize) -> io::Result<Option<Vec<u8>>> {
        // Checked before allocating: `n` often comes from the bytes being parsed.
        if off.checked_add(n as u64).is_none_or(|end| end > self.len) {
            return Ok(None);
        }
        let mut v = vec![0u8; n];
        let k = self.read_at(off, &mut v)?;
        Ok((k == n).then_some(v))
    }

    /// Up to `n` bytes from the start.
    pub fn head(&self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = self.read_buf(n);
        let k = self.read_at(0, &mut v)?;
        v.truncate(k);
        Ok(v)
    }
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.read_at(self.pos, buf)?;
        self.pos += k as u64;
        Ok(k)
    }
}

impl Seek for Slice {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        self.pos = new;
        Ok(new)
    }
}

/// Why a spill stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("decompressed data exceeds the {limit}-byte limit (possible decompression bomb)")]
    TooLarge { limit: u64 },
    #[error("decompression failed after {at} bytes: {source}")]
    Io { at: u64, source: io::Error },
}

/// A bounded writer that keeps small output in memory and spills large output to an anonymous
/// temporary file.
#[derive(Debug)]
pub struct SpillWriter {
    mem: Vec<u8>,
    file: Option<File>,
    total: u64,
    limit: u64,
}

impl SpillWriter {
    pub fn new(limit: u64) -> Self {
        Self {
            mem: Vec::new(),
            file: None,
            total: 0,
            limit,
        }
    }

    /// What was written so far, as a source.
    pub fn finish(self) -> io::Result<Slice> {
        match self.file {
            Some(mut f) => {
                f.flush()?;
                f.seek(SeekFrom::Start(0))?;
                Slice::file(f)
            }
            None => Ok(Slice::mem(self.mem)),
        }
    }
}

impl Write for SpillWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.total);
        if room == 0 && !buf.is_empty() {
            return Err(io::Error::other(SpillError::TooLarge { limit: self.limit }));
        }
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
        let chunk = buf.get(..n).unwrap_or_default();
        match &mut self.file {
            Some(f) => f.write_all(chunk)?,
            None if self.total + n as u64 > IN_MEMORY => {
                let mut f = tempfile::tempfile()?;
                f.write_all(&self.mem)?;
                f.write_all(chunk)?;
                self.mem = Vec::new();
                self.file = Some(f);
            }
            None => self.mem.extend_from_slice(chunk),
        }
        self.total += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies `r` (a decompressor) into a [`SpillWriter`]. Returns what was produced, even when the
/// stream broke or hit the limit: a loader consumes a broken stream up to the break.
pub fn spill(mut r: impl Read, limit: u64) -> (Option<Slice>, Option<SpillError>) {
    let mut w = SpillWriter::new(limit);
    // Starts small and doubles while reads fill it: most streams are small.
    let mut buf = vec![0u8; 16 * 1024];
    let mut err = None;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                err = Some(SpillError::Io {
                    at: w.total,
                    source,
                });
                break;
            }
        };
        let at = w.total;
        if let Err(e) = w.write_all(buf.get(..n).unwrap_or_default()) {
            err = Some(if w.total >= w.limit {
                SpillError::TooLarge { limit: w.limit }
            } else {
                SpillError::Io { at, source: e }
            });
            break;
        }
        if n == buf.len() && buf.len() < 256 * 1024 {
            buf.resize(buf.len() * 2, 0);
        }
    }
    match w.finish() {
        Ok(s) => (Some(s), err),
        Err(source) => (None, Some(SpillError::Io { at: 0, source })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buffers_fit_the_window() {
        let s = Slice::mem(vec![7u8; 10]);
        assert_eq!(s.read_buf(4).len(), 4);
        assert_eq!(s.read_buf(64).len(), 10);
        assert_eq!(s.head(64).unwrap(), vec![7u8; 10]);
        // Empty windows and zero-byte requests: empty buffers, no panic.
        let empty = Slice::mem(Vec::new());
        assert!(empty.read_buf(64).is_empty());
        assert!(empty.head(0).unwrap().is_empty());
        assert!(s.head(0).unwrap().is_empty());
        assert!(s.sub(3, 0).read_buf(1024).is_empty());
    }

    #[test]
    fn spill_grows_its_buffer_and_keeps_every_byte() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let (s, err) = spill(&data[..], 1 << 20);
        assert!(err.is_none());
        let s = s.unwrap();
        assert_eq!(s.len(), data.len() as u64);
        assert_eq!(s.bytes_at(0, data.len()).unwrap().unwrap(), data);
    }
}
