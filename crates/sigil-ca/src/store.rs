//! The embedded store (redb) under the data directory: CA generations, join tokens, nodes and
//! the record of every issued SVID. The file is created 0600: it holds CA private keys.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use sigil_identity::TrustDomain;

use crate::authority::{CertificateAuthority, Generation, StoredGeneration, unix};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const GENERATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("ca_generations");
const JOIN_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("join_tokens");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const ISSUED: TableDefinition<&str, &[u8]> = TableDefinition::new("issued");

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open store {path}: {reason}; hint: is another `sigil server` using this data directory?"
    )]
    Open { path: PathBuf, reason: String },
    #[error("store {path} is corrupt: {reason}; hint: restore the data directory from backup")]
    Corrupt { path: PathBuf, reason: String },
    #[error("store {path} has no CA; hint: run `sigil ca init --data-dir {dir}`")]
    NoCa { path: PathBuf, dir: String },
    #[error("store {path} already has a CA for trust domain {td}")]
    AlreadyInitialized { path: PathBuf, td: String },
    #[error("store {path} belongs to trust domain {found}, but the policy says {expected}")]
    WrongTrustDomain {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("store {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// A CA generation serialized for the store (id, JSON with private keys).
type SerializedGeneration = (u64, zeroize::Zeroizing<Vec<u8>>);

/// A join token's record (the token itself is stored only as its SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinTokenRecord {
    pub node: String,
    pub expires_at: u64,
    pub used_at: Option<u64>,
}

/// A node (agent) that joined.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    pub node: String,
    /// SHA-256 of the SubjectPublicKeyInfo registered at join; re-attestation must prove this key.
    pub key_sha256: String,
    pub joined_at: u64,
    pub revoked: bool,
}

/// One issued SVID.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedRecord {
    pub serial: String,
    pub spiffe_id: String,
    pub kind: String,
    pub not_after: u64,
    pub generation: u64,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

/// What consuming a join token gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The token was consumed and the key registered as the node's key.
    Joined {
        node: String,
    },
    Unknown,
    Expired,
    AlreadyUsed,
    /// The token names a revoked node: nothing was consumed or registered.
    NodeRevoked {
        node: String,
    },
}

/// What registering a node key gave. A revoked node stays revoked: no path un-revokes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKeyOutcome {
    Registered,
    Revoked,
    /// The node never joined (only when the node must exist).
    Unknown,
}

impl Store {
    /// Opens (creating 0600 if missing) the store at `<dir>/sigil.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("sigil.redb");
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        restrict_dir(dir)?;
        if !path.exists() {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| StoreError::Io {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        }
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::Storage(s) => StoreError::Corrupt {
                path: path.clone(),
                reason: s.to_string(),
            },
            other => StoreError::Open {
                path: path.clone(),
                reason: other.to_string(),
            },
        })?;
        let s = Self { db, path };
        // Create tables so reads never see "table does not exist".
        s.write(|tx| {
            tx.open_table(META)?;
            tx.open_table(GENERATIONS)?;
            tx.open_table(JOIN_TOKENS)?;
            tx.open_table(NODES)?;
            tx.open_table(ISSUED)?;
            Ok(())
        })?;
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let out = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(META).map_err(|e| self.err(e))?;
        Ok(t.get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_vec()))
    }

    /// The trust domain this store belongs to, if initialized.
    pub fn trust_domain(&self) -> Result<Option<TrustDomain>, StoreError> {
        match self.get_meta("trust_domain")? {
            None => Ok(None),
            Some(b) => {
                let s = String::from_utf8(b).map_err(|e| self.err(e))?;
                TrustDomain::new(&s).map(Some).map_err(|e| self.err(e))
            }
        }
    }

    /// Saves a new CA; refuses if one exists.
    pub fn init_ca(&self, ca: &CertificateAuthority) -> Result<(), StoreError> {
        if let Some(td) = self.trust_domain()? {
            return Err(StoreError::AlreadyInitialized {
                path: self.path.clone(),
                td: td.to_string(),
            });
        }
        self.save_ca(ca)
    }

    /// Writes every generation and the bundle sequence.
    pub fn save_ca(&self, ca: &CertificateAuthority) -> Result<(), StoreError> {
        let gens: Result<Vec<SerializedGeneration>, _> = ca
            .generations()
            .iter()
            .map(|g| serde_json::to_vec(&g.to_stored()).map(|v| (g.id, zeroize::Zeroizing::new(v))))
            .collect();
        let gens = gens.map_err(|e| self.err(e))?;
        let td = ca.trust_domain().to_string();
        let seq = ca.sequence;
        self.write(|tx| {
            let mut meta = tx.open_table(META)?;
            meta.insert("trust_domain", td.as_bytes())?;
            meta.insert("sequence", seq.to_be_bytes().as_slice())?;
            let mut t = tx.open_table(GENERATIONS)?;
            let live: Vec<u64> = gens.iter().map(|(id, _)| *id).collect();
            let stale: Vec<u64> = t
                .iter()?
                .filter_map(Result::ok)
                .map(|(k, _)| k.value())
                .filter(|k| !live.contains(k))
                .collect();
            for k in stale {
                t.remove(k)?;
            }
            for (id, json) in &gens {
                t.insert(*id, json.as_slice())?;
            }
            Ok(())
        })
    }

    /// Loads the CA; `expected` is the policy's trust domain.
    pub fn load_ca(&self, expected: &TrustDomain) -> Result<CertificateAuthority, StoreError> {
        let td = self.trust_domain()?.ok_or_else(|| StoreError::NoCa {
            path: self.path.clone(),
            dir: self
                .path
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        })?;
        if &td != expected {
            return Err(StoreError::WrongTrustDomain {
                path: self.path.clone(),
                found: td.to_string(),
                expected: expected.to_string(),
            });
        }
        let seq = self
            .get_meta("sequence")?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(1, u64::from_be_bytes);
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(GENERATIONS).map_err(|e| self.err(e))?;
        let mut gens = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (_, v) = row.map_err(|e| self.err(e))?;
            let sg: StoredGeneration =
                serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
            gens.push(Generation::from_stored(&sg).map_err(|e| self.err(e))?);
        }
        CertificateAuthority::from_generations(td, gens, seq).map_err(|e| self.err(e))
    }

    pub fn put_join_token(
        &self,
        token_sha256: &str,
        rec: &JoinTokenRecord,
    ) -> Result<(), StoreError> {
        let v = serde_json::to_vec(rec).map_err(|e| self.err(e))?;
        self.write(|tx| {
            tx.open_table(JOIN_TOKENS)?
                .insert(token_sha256, v.as_slice())?;
            Ok(())
        })
    }

    /// Atomically checks and consumes a join token (single use) and registers `key_sha256` as
    /// the key of the node it names, in one transaction. A token for a revoked node is refused
    /// and left as it was.
    pub fn consume_join_token(
        &self,
        token_sha256: &str,
        key_sha256: &str,
        now: SystemTime,
    ) -> Result<JoinOutcome, StoreError> {
        let now = unix(now);
        let mut bad: Option<String> = None;
        let out = self.write(|tx| {
            let mut t = tx.open_table(JOIN_TOKENS)?;
            let rec = t
                .get(token_sha256)?
                .map(|v| serde_json::from_slice::<JoinTokenRecord>(v.value()));
            let mut rec = match rec {
                None => return Ok(JoinOutcome::Unknown),
                Some(Err(e)) => {
                    bad = Some(e.to_string());
                    return Ok(JoinOutcome::Unknown);
                }
                Some(Ok(r)) => r,
            };
            if rec.used_at.is_some() {
                return Ok(JoinOutcome::AlreadyUsed);
            }
            if rec.expires_at <= now {
                return Ok(JoinOutcome::Expired);
            }
            let mut nodes = tx.open_table(NODES)?;
            match set_key(&mut nodes, &rec.node, key_sha256, now, true) {
                Ok(NodeKeyOutcome::Registered) => {}
                Ok(_) => return Ok(JoinOutcome::NodeRevoked { node: rec.node }),
                Err(SetKeyError::Db(e)) => return Err(e),
                Err(SetKeyError::Json(e)) => {
                    bad = Some(e);
                    return Ok(JoinOutcome::Unknown);
                }
            }
            rec.used_at = Some(now);
            match serde_json::to_vec(&rec) {
                Ok(v) => t.insert(token_sha256, v.as_slice())?,
                Err(e) => {
                    bad = Some(e.to_string());
                    return Ok(JoinOutcome::Unknown);
                }
            };
            Ok(JoinOutcome::Joined { node: rec.node })
        })?;
        match bad {
            Some(e) => Err(self.err(e)),
            None => Ok(out),
        }
    }

    /// Registers `key_sha256` as the key of `node` in one transaction. `join`: a node that never
    /// joined is created (Kubernetes node attestation); otherwise it is [`NodeKeyOutcome::Unknown`]
    /// (renewal). A revoked node is never changed.
    pub fn set_node_key(
        &self,
        node: &str,
        key_sha256: &str,
        now: SystemTime,
        join: bool,
    ) -> Result<NodeKeyOutcome, StoreError> {
        let mut bad: Option<String> = None;
        let out = self.write(|tx| {
            let mut nodes = tx.open_table(NODES)?;
            match set_key(&mut nodes, node, key_sha256, unix(now), join) {
                Ok(o) => Ok(o),
                Err(SetKeyError::Db(e)) => Err(e),
                Err(SetKeyError::Json(e)) => {
                    bad = Some(e);
                    Ok(NodeKeyOutcome::Unknown)
                }
            }
        })?;
        match bad {
            Some(e) => Err(self.err(e)),
            None => Ok(out),
        }
    }

    /// Marks `node` revoked, for good; `false` if it never joined.
    pub fn revoke_node(&self, node: &str) -> Result<bool, StoreError> {
        let mut bad: Option<String> = None;
        let out = self.write(|tx| {
            let mut nodes = tx.open_table(NODES)?;
            let rec = nodes
                .get(node)?
                .map(|v| serde_json::from_slice::<NodeRecord>(v.value()));
            let mut rec = match rec {
                None => return Ok(false),
                Some(Err(e)) => {
                    bad = Some(e.to_string());
                    return Ok(false);
                }
                Some(Ok(r)) => r,
            };
            rec.revoked = true;
            match serde_json::to_vec(&rec) {
                Ok(v) => {
                    nodes.insert(node, v.as_slice())?;
                }
                Err(e) => bad = Some(e.to_string()),
            }
            Ok(true)
        })?;
        match bad {
            Some(e) => Err(self.err(e)),
            None => Ok(out),
        }
    }

    pub fn node(&self, node: &str) -> Result<Option<NodeRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(NODES).map_err(|e| self.err(e))?;
        match t.get(node).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| self.err(e)),
        }
    }

    /// Records issued SVIDs in one transaction (group commit).
    pub fn record_issued(&self, recs: &[IssuedRecord]) -> Result<(), StoreError> {
        let rows: Result<Vec<(String, Vec<u8>)>, _> = recs
            .iter()
            .map(|r| serde_json::to_vec(r).map(|v| (r.serial.clone(), v)))
            .collect();
        let rows = rows.map_err(|e| self.err(e))?;
        self.write(|tx| {
            let mut t = tx.open_table(ISSUED)?;
            for (k, v) in &rows {
                t.insert(k.as_str(), v.as_slice())?;
            }
            Ok(())
        })
    }

    pub fn issued_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(ISSUED).map_err(|e| self.err(e))?;
        t.len().map_err(|e| self.err(e))
    }
}

enum SetKeyError {
    Db(redb::Error),
    Json(String),
}

impl From<redb::StorageError> for SetKeyError {
    fn from(e: redb::StorageError) -> Self {
        Self::Db(e.into())
    }
}

/// The one place a node's key is written: refuses revoked nodes, creates a node only on `join`.
fn set_key(
    nodes: &mut redb::Table<'_, &'static str, &'static [u8]>,
    node: &str,
    key_sha256: &str,
    now: u64,
    join: bool,
) -> Result<NodeKeyOutcome, SetKeyError> {
    let existing = nodes
        .get(node)?
        .map(|v| serde_json::from_slice::<NodeRecord>(v.value()))
        .transpose()
        .map_err(|e| SetKeyError::Json(format!("node {node:?}: {e}")))?;
    let rec = match existing {
        Some(r) if r.revoked => return Ok(NodeKeyOutcome::Revoked),
        Some(r) if join => NodeRecord {
            key_sha256: key_sha256.to_owned(),
            joined_at: now,
            ..r
        },
        Some(r) => NodeRecord {
            key_sha256: key_sha256.to_owned(),
            ..r
        },
        None if join => NodeRecord {
            node: node.to_owned(),
            key_sha256: key_sha256.to_owned(),
            joined_at: now,
            revoked: false,
        },
        None => return Ok(NodeKeyOutcome::Unknown),
    };
    let v = serde_json::to_vec(&rec).map_err(|e| SetKeyError::Json(e.to_string()))?;
    nodes.insert(node, v.as_slice())?;
    Ok(NodeKeyOutcome::Registered)
}

fn restrict_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
        StoreError::Io {
            path: dir.to_owned(),
            reason: e.to_string(),
        }
    })
}
