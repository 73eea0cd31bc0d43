//! The store trait for the key service's persisted records, and an in-memory backend for tests.
//!
//! Owns: the contract every backend keeps (redb here, the control plane's own store and
//! PostgreSQL later): string keys, opaque byte values, a version per key that starts at 1 and
//! grows by one on every write, and [`Store::commit`], which applies a batch of conditional
//! writes atomically and durably or not at all. That one primitive is get/put/compare-and-swap
//! and a multi-record transaction at once, and maps onto both an embedded B-tree (one write
//! transaction) and SQL (`BEGIN; SELECT .. FOR UPDATE; UPDATE .. WHERE version = $n; COMMIT`).
//! Must not: interpret values (the barrier encrypts them before they get here).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Longest key a backend must accept (PostgreSQL `text` and redb have no small limit; this
/// keeps record names sane).
pub const MAX_KEY_LEN: usize = 512;

/// A stored value and its version (1 after the first write).
#[derive(Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
}

impl std::fmt::Debug for Versioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Versioned")
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("version", &self.version)
            .finish()
    }
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist at exactly this version.
    Version(u64),
}

/// One conditional write of a [`Store::commit`] batch.
#[derive(Clone, PartialEq, Eq)]
pub struct Write {
    pub key: String,
    pub expect: Expect,
    /// `Some(value)` to put, `None` to delete.
    pub value: Option<Vec<u8>>,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("key", &self.key)
            .field("expect", &self.expect)
            .field("value", &self.value.as_ref().map(Vec::len))
            .finish()
    }
}

impl Write {
    pub fn put(key: impl Into<String>, expect: Expect, value: Vec<u8>) -> Self {
        Self {
            key: key.into(),
            expect,
            value: Some(value),
        }
    }

    pub fn delete(key: impl Into<String>, expect: Expect) -> Self {
        Self {
            key: key.into(),
            expect,
            value: None,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "record {key} changed concurrently (expected {expected}, found {found}); nothing was written; hint: retry the operation"
    )]
    Conflict {
        key: String,
        expected: String,
        found: String,
    },
    #[error("record name {key:?} is not valid: {reason}")]
    BadKey { key: String, reason: &'static str },
    #[error("store {what}: {reason}")]
    Backend { what: String, reason: String },
}

impl StoreError {
    pub(crate) fn conflict(key: &str, expect: Expect, found: Option<u64>) -> Self {
        let show =
            |v: Option<u64>| v.map_or_else(|| "no record".to_string(), |v| format!("version {v}"));
        let expected = match expect {
            Expect::Any => "anything".to_string(),
            Expect::Absent => "no record".to_string(),
            Expect::Version(v) => show(Some(v)),
        };
        StoreError::Conflict {
            key: key.to_string(),
            expected,
            found: show(found),
        }
    }
}

/// Check a write's expectation against the version found.
pub fn check_expect(key: &str, expect: Expect, found: Option<u64>) -> Result<(), StoreError> {
    let ok = match expect {
        Expect::Any => true,
        Expect::Absent => found.is_none(),
        Expect::Version(v) => found == Some(v),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::conflict(key, expect, found))
    }
}

/// Check a record name: non-empty, at most [`MAX_KEY_LEN`] bytes, no NUL or control characters.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        "empty"
    } else if key.len() > MAX_KEY_LEN {
        "longer than 512 bytes"
    } else if key.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(StoreError::BadKey {
        key: key.chars().take(80).collect(),
        reason,
    })
}

/// A durable, versioned key-value store. Implementations are shared between threads; every
/// method is blocking (async callers use `spawn_blocking`).
pub trait Store: Send + Sync {
    /// The record under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// The names of all records starting with `prefix`, in byte order.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Apply `writes` atomically: every expectation holds and every write is durable when this
    /// returns `Ok`; otherwise nothing was written. A key appears at most once per batch.
    fn commit(&self, writes: &[Write]) -> Result<(), StoreError>;

    /// Put unconditionally.
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.commit(&[Write::put(key, Expect::Any, value)])
    }

    /// Compare-and-swap one record.
    fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.commit(&[Write {
            key: key.to_string(),
            expect,
            value,
        }])
    }
}

pub(crate) fn check_batch(writes: &[Write]) -> Result<(), StoreError> {
    for (i, w) in writes.iter().enumerate() {
        check_key(&w.key)?;
        if writes.iter().take(i).any(|o| o.key == w.key) {
            return Err(StoreError::BadKey {
                key: w.key.clone(),
                reason: "appears twice in one transaction",
            });
        }
    }
    Ok(())
}

/// An in-memory backend (tests, and `sigil server --dev` later). Not durable.
#[derive(Debug, Default)]
pub struct MemStore {
    map: Mutex<BTreeMap<String, Versioned>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Versioned>>, StoreError> {
        self.map.lock().map_err(|_| StoreError::Backend {
            what: "memory".to_string(),
            reason: "a writer panicked".to_string(),
        })
    }
}

impl Store for MemStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock()?.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .lock()?
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        check_batch(writes)?;
        let mut map = self.lock()?;
        for w in writes {
            check_expect(&w.key, w.expect, map.get(&w.key).map(|v| v.version))?;
        }
        for w in writes {
            match &w.value {
                Some(value) => {
                    let version = map.get(&w.key).map_or(1, |v| v.version + 1);
                    map.insert(
                        w.key.clone(),
                        Versioned {
                            value: value.clone(),
                            version,
                        },
                    );
                }
                None => {
                    map.remove(&w.key);
                }
            }
        }
        Ok(())
    }
}

/// The suite every backend must pass; the redb tests and (later) the PostgreSQL tests call it.
pub fn conformance_suite(store: &dyn Store) -> Result<(), String> {
    let fail = |what: &str| Err(format!("store conformance: {what}"));
    let err = |e: StoreError| format!("store conformance: {e}");
    if store.get("t/a").map_err(err)?.is_some() {
        return fail("fresh store has t/a");
    }
    store
        .commit(&[Write::put("t/a", Expect::Absent, b"1".to_vec())])
        .map_err(err)?;
    match store.get("t/a").map_err(err)? {
        Some(v) if v.version == 1 && v.value == b"1" => {}
        other => return fail(&format!("after first put: {other:?}")),
    }
    if store
        .commit(&[Write::put("t/a", Expect::Absent, b"2".to_vec())])
        .is_ok()
    {
        return fail("Absent on an existing key succeeded");
    }
    if store
        .compare_and_swap("t/a", Expect::Version(7), Some(b"2".to_vec()))
        .is_ok()
    {
        return fail("CAS with a wrong version succeeded");
    }
    store
        .compare_and_swap("t/a", Expect::Version(1), Some(b"2".to_vec()))
        .map_err(err)?;
    if store.get("t/a").map_err(err)?.map(|v| v.version) != Some(2) {
        return fail("version did not grow to 2");
    }
    // A batch whose second expectation fails writes nothing.
    let r = store.commit(&[
        Write::put("t/b", Expect::Absent, b"b".to_vec()),
        Write::put("t/a", Expect::Version(1), b"3".to_vec()),
    ]);
    if !matches!(r, Err(StoreError::Conflict { .. })) {
        return fail(&format!("conflicting batch: {r:?}"));
    }
    if store.get("t/b").map_err(err)?.is_some() {
        return fail("a failed batch wrote t/b");
    }
    store
        .commit(&[
            Write::put("t/b", Expect::Absent, b"b".to_vec()),
            Write::put("t/c", Expect::Any, b"c".to_vec()),
            Write::put("u/x", Expect::Any, b"x".to_vec()),
        ])
        .map_err(err)?;
    if store.list("t/").map_err(err)? != ["t/a", "t/b", "t/c"] {
        return fail("list t/");
    }
    store
        .commit(&[Write::delete("t/b", Expect::Version(1))])
        .map_err(err)?;
    if store.get("t/b").map_err(err)?.is_some() || store.list("t/").map_err(err)?.len() != 2 {
        return fail("delete");
    }
    if store.commit(&[Write::put("", Expect::Any, vec![])]).is_ok() {
        return fail("empty key accepted");
    }
    if store
        .commit(&[
            Write::put("t/d", Expect::Any, vec![]),
            Write::put("t/d", Expect::Any, vec![]),
        ])
        .is_ok()
    {
        return fail("a key twice in one batch accepted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_store_passes_the_conformance_suite() {
        conformance_suite(&MemStore::new()).unwrap();
    }
}
