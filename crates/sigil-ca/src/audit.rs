//! Append-only, hash-chained JSON-lines audit log.
//!
//! Each line is `{"body":{...},"prev":"<hex>","hash":"<hex>"}` where
//! `hash = SHA-256(prev || body-bytes-as-written)`; the first `prev` is 64 zeros. Changing,
//! removing, reordering or inserting any line breaks the chain, which [`verify`] reports with the
//! line number. Writes are batched: one `fdatasync` per batch.
//!
//! A failed append (disk full, file made immutable, I/O error on sync) leaves the log as it was:
//! the chain head advances only once a batch is durable, and a partly written batch is truncated
//! away before anything else is written, so the log stays verifiable and the chain continues
//! from the last durable record once writing works again.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest line accepted when verifying.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Why the audit log failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("audit log {path} line {line}: {reason}")]
    Tampered {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub time: String,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    body: &'a RawValue,
    prev: String,
    hash: String,
}

/// The file operations the writer needs: [`File`] in production; tests wrap it to inject
/// faults (a failing N-th write, half a batch written then an error).
pub trait LogFile: std::fmt::Debug + Send {
    /// Appends `buf` at the end of the file.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync`.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// The writer.
#[derive(Debug)]
pub struct AuditLog {
    file: Box<dyn LogFile>,
    path: PathBuf,
    last_hash: String,
    next_seq: u64,
    /// Length of the file up to the last durable record.
    durable_len: u64,
    /// A failed append may have left bytes past `durable_len`; they are cut before the next one.
    torn: bool,
}

fn chain_hash(prev: &str, body: &[u8]) -> String {
    let mut c = Context::new(&SHA256);
    c.update(prev.as_bytes());
    c.update(body);
    hex::encode(c.finish().as_ref())
}

impl AuditLog {
    /// Opens (creating 0600) the log and finds the chain head from its last line.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_with(path, |f| Box::new(f))
    }

    /// Like [`AuditLog::open`], writing through `wrap(file)` (a test seam for fault injection).
    pub fn open_with(
        path: &Path,
        wrap: impl FnOnce(File) -> Box<dyn LogFile>,
    ) -> Result<Self, AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let (last_hash, next_seq) = if len == 0 {
            (GENESIS.to_owned(), 1)
        } else {
            let start = len.saturating_sub(MAX_LINE_BYTES as u64 + 1);
            file.seek(SeekFrom::Start(start)).map_err(io)?;
            let mut tail = Vec::new();
            file.read_to_end(&mut tail).map_err(io)?;
            let text = String::from_utf8_lossy(&tail);
            let last = text.trim_end().rsplit('\n').next().unwrap_or_default();
            let line: Line<'_> = serde_json::from_str(last).map_err(|e| AuditError::Tampered {
                path: path.to_owned(),
                line: 0,
                reason: format!(
                    "last line is not an audit record: {e}; hint: run `sigil audit-log verify`"
                ),
            })?;
            let ev: Event =
                serde_json::from_str(line.body.get()).map_err(|e| AuditError::Tampered {
                    path: path.to_owned(),
                    line: 0,
                    reason: e.to_string(),
                })?;
            (line.hash, ev.seq + 1)
        };
        Ok(Self {
            file: wrap(file),
            path: path.to_owned(),
            last_hash,
            next_seq,
            durable_len: len,
            torn: false,
        })
    }

    /// Sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends events and syncs once. `seq` and `time` are filled in here. On error nothing of
    /// the batch counts: the chain head and sequence stay where they were, and whatever part of
    /// the batch reached the file is cut (now, or before the next append if cutting fails too).
    pub fn append(&mut self, events: Vec<Event>) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.torn {
            self.cut_torn_tail().map_err(|e| AuditError::Io {
                path: self.path.clone(),
                reason: format!(
                    "cannot remove the partly written records of an earlier failed append (cut to {} bytes): {e}; records are refused until it can; hint: free disk space, check `lsattr` and the mount",
                    self.durable_len
                ),
            })?;
        }
        let count = events.len();
        let (buf, head, next_seq) = self.encode(events)?;
        let written = self.file.append(&buf).and_then(|()| self.file.sync());
        if let Err(e) = written {
            self.torn = true;
            let cut = match self.cut_torn_tail() {
                Ok(()) => "the log is unchanged".to_owned(),
                Err(c) => format!(
                    "removing the partial write failed too ({c}); it is retried before the next append"
                ),
            };
            return Err(AuditError::Io {
                path: self.path.clone(),
                reason: format!(
                    "appending {count} record(s) failed: {e}; {cut}; hint: free disk space, check `lsattr` and the mount"
                ),
            });
        }
        self.durable_len = self
            .durable_len
            .saturating_add(u64::try_from(buf.len()).unwrap_or(u64::MAX));
        self.last_hash = head;
        self.next_seq = next_seq;
        Ok(())
    }

    /// Truncates the file back to its last durable record and syncs.
    fn cut_torn_tail(&mut self) -> io::Result<()> {
        self.file.truncate(self.durable_len)?;
        self.file.sync()?;
        self.torn = false;
        Ok(())
    }

    /// The lines of a batch, the chain head after them and the next sequence number; `self` is
    /// not changed.
    fn encode(&self, events: Vec<Event>) -> Result<(Vec<u8>, String, u64), AuditError> {
        let mut last_hash = self.last_hash.clone();
        let mut next_seq = self.next_seq;
        let mut buf = Vec::with_capacity(events.len() * 256);
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        for mut e in events {
            e.seq = next_seq;
            if e.time.is_empty() {
                e.time.clone_from(&now);
            }
            let body = serde_json::to_string(&e).map_err(|err| AuditError::Io {
                path: self.path.clone(),
                reason: err.to_string(),
            })?;
            let hash = chain_hash(&last_hash, body.as_bytes());
            buf.extend_from_slice(b"{\"body\":");
            buf.extend_from_slice(body.as_bytes());
            buf.extend_from_slice(
                format!(",\"prev\":\"{last_hash}\",\"hash\":\"{hash}\"}}\n").as_bytes(),
            );
            last_hash = hash;
            next_seq += 1;
        }
        Ok((buf, last_hash, next_seq))
    }
}

/// Summary of a verified log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub lines: u64,
    pub head: String,
}

/// Verifies the whole chain.
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    let f = File::open(path).map_err(|e| AuditError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let tampered = |line: u64, reason: String| AuditError::Tampered {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut n = 0;
    let mut reader = BufReader::new(f);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut raw)
            .map_err(|e| tampered(n + 1, e.to_string()))?;
        if read == 0 {
            break;
        }
        n += 1;
        if raw.len() > MAX_LINE_BYTES {
            return Err(tampered(n, "line too long".to_owned()));
        }
        let text = std::str::from_utf8(&raw).map_err(|e| tampered(n, e.to_string()))?;
        let line: Line<'_> = serde_json::from_str(text.trim_end())
            .map_err(|e| tampered(n, format!("not an audit record: {e}")))?;
        if line.prev != prev {
            return Err(tampered(n, "`prev` does not match the previous line's hash (line removed, inserted or reordered)".to_owned()));
        }
        let want = chain_hash(&prev, line.body.get().as_bytes());
        if line.hash != want {
            return Err(tampered(
                n,
                "hash mismatch (the record was modified)".to_owned(),
            ));
        }
        let ev: Event =
            serde_json::from_str(line.body.get()).map_err(|e| tampered(n, e.to_string()))?;
        if ev.seq != expected_seq {
            return Err(tampered(
                n,
                format!("sequence {} where {expected_seq} was expected", ev.seq),
            ));
        }
        expected_seq += 1;
        prev = line.hash;
    }
    Ok(Verified {
        lines: n,
        head: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str) -> Event {
        Event {
            seq: 0,
            time: String::new(),
            event: name.to_owned(),
            spiffe_id: Some("spiffe://a.org/x".to_owned()),
            serial: None,
            peer: None,
            reason: None,
            detail: None,
        }
    }

    #[test]
    fn chain_verifies_across_reopen_and_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&p).unwrap();
        log.append(vec![ev("a"), ev("b")]).unwrap();
        drop(log);
        let mut log = AuditLog::open(&p).unwrap();
        log.append(vec![ev("c")]).unwrap();
        assert_eq!(verify(&p).unwrap().lines, 3);

        let text = std::fs::read_to_string(&p).unwrap();
        // Modify a record.
        std::fs::write(&p, text.replacen("\"event\":\"b\"", "\"event\":\"x\"", 1)).unwrap();
        let e = verify(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("modified"), "{e}");
        // Remove a record.
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&p, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(verify(&p).unwrap_err().to_string().contains("line 2"));
        // Truncate the tail is detectable only against a known head; a reordered log is not.
        std::fs::write(&p, format!("{}\n{}\n{}\n", lines[1], lines[0], lines[2])).unwrap();
        assert!(verify(&p).unwrap_err().to_string().contains("line 1"));
    }
}
