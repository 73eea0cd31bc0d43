//! Append-only, hash-chained JSON-lines audit log.
//!
//! Each line is `{"body":{...},"prev":"<hex>","hash":"<hex>"}` where
//! `hash = SHA-256(prev || body-bytes-as-written)`; the first `prev` is 64 zeros. Changing,
//! removing, reordering or inserting any line breaks the chain, which [`verify`] reports with the
//! line number. Writes are batched: one `fdatasync` per batch.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
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

/// The writer.
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    path: PathBuf,
    last_hash: String,
    next_seq: u64,
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
            file,
            path: path.to_owned(),
            last_hash,
            next_seq,
        })
    }

    /// Appends events and syncs once. `seq` and `time` are filled in here.
    pub fn append(&mut self, events: Vec<Event>) -> Result<(), AuditError> {
        let mut buf = Vec::with_capacity(events.len() * 256);
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        for mut e in events {
            e.seq = self.next_seq;
            if e.time.is_empty() {
                e.time.clone_from(&now);
            }
            let body = serde_json::to_string(&e).map_err(|err| AuditError::Io {
                path: self.path.clone(),
                reason: err.to_string(),
            })?;
            let hash = chain_hash(&self.last_hash, body.as_bytes());
            buf.extend_from_slice(b"{\"body\":");
            buf.extend_from_slice(body.as_bytes());
            buf.extend_from_slice(
                format!(",\"prev\":\"{}\",\"hash\":\"{hash}\"}}\n", self.last_hash).as_bytes(),
            );
            self.last_hash = hash;
            self.next_seq += 1;
        }
        let io = |e: std::io::Error| AuditError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)
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
