//! The [`Store`] trait over redb: one table, `sigil_keys`, whose values are the record's version
//! (8 bytes, big-endian) followed by the record. Every commit is one redb write transaction
//! with the default (immediate) durability, so a commit that returned survives kill -9 and power
//! loss. Must not: hold any secret in the clear (the barrier encrypts values first).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::store::{Store, StoreError, Versioned, Write, check_batch, check_expect};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("sigil_keys");

/// A redb-backed store.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// Open or create the database file at `path` (created 0600).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let backend = |reason: String| StoreError::Backend {
            what: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| backend(format!("cannot create: {e}")))?;
        }
        let db = Database::create(path).map_err(|e| {
            backend(format!(
                "{e}; hint: is another process using this data directory?"
            ))
        })?;
        Self::from_database(Arc::new(db), path)
    }

    /// Use a database another component already opened (the control plane's `sigil.redb`).
    pub fn from_database(db: Arc<Database>, path: &Path) -> Result<Self, StoreError> {
        let s = Self {
            db,
            path: path.to_path_buf(),
        };
        let tx = s.db.begin_write().map_err(|e| s.err(e))?;
        tx.open_table(KV).map_err(|e| s.err(e))?;
        tx.commit().map_err(|e| s.err(e))?;
        Ok(s)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            what: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }

    fn decode(&self, key: &str, raw: &[u8]) -> Result<Versioned, StoreError> {
        let (ver, value) = raw.split_first_chunk::<8>().ok_or_else(|| {
            self.err(format!(
                "record {key} is {} bytes, shorter than its version header; hint: restore the data directory from backup",
                raw.len()
            ))
        })?;
        Ok(Versioned {
            value: value.to_vec(),
            version: u64::from_be_bytes(*ver),
        })
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(KV).map_err(|e| self.err(e))?;
        let got = t.get(key).map_err(|e| self.err(e))?;
        got.map(|v| self.decode(key, v.value())).transpose()
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(KV).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(|e| self.err(e))? {
            let (k, _) = item.map_err(|e| self.err(e))?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k.to_string());
        }
        Ok(out)
    }

    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        check_batch(writes)?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(KV).map_err(|e| self.err(e))?;
            let mut found = Vec::with_capacity(writes.len());
            for w in writes {
                let cur = t
                    .get(w.key.as_str())
                    .map_err(|e| self.err(e))?
                    .map(|v| self.decode(&w.key, v.value()).map(|v| v.version))
                    .transpose()?;
                check_expect(&w.key, w.expect, cur)?;
                found.push(cur);
            }
            for (w, cur) in writes.iter().zip(found) {
                match &w.value {
                    Some(value) => {
                        let mut raw = Vec::with_capacity(8 + value.len());
                        raw.extend_from_slice(&cur.map_or(1, |v| v + 1).to_be_bytes());
                        raw.extend_from_slice(value);
                        t.insert(w.key.as_str(), raw.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        t.remove(w.key.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        // Dropping an uncommitted transaction (an expectation failed above) aborts it.
        tx.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance_suite;

    #[test]
    fn redb_store_passes_the_conformance_suite_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            conformance_suite(&s).unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(s.get("t/a").unwrap().unwrap().version, 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
