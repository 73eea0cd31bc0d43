//! The barrier: every secret record is stored encrypted under the barrier key, and the barrier
//! key is stored encrypted under the unseal key, which only exists in memory while unsealed.
//!
//! Owns: init (a fresh barrier key; the unseal key split into Shamir shares that are returned
//! once and never stored, or taken from an auto-unseal key file), unseal (shares submitted until
//! the threshold, or the key file), seal, and the entry format:
//! `0x01 || term (u32 BE) || nonce || ciphertext || tag`, AES-256-GCM, associated data
//! `"sigil-barrier-v1" || 0x00 || term || record name`, so an entry copied to another name
//! does not decrypt. Must not: write a key, share or plaintext entry to the store, or answer
//! anything but a "sealed" error while sealed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{self, CryptoError, KEY_LEN, KeyType};
use crate::shamir::{self, ShamirError};
use crate::store::{Expect, Store, StoreError, Write};

/// Where the seal configuration lives (not secret).
pub const SEAL_CONFIG: &str = "core/seal-config";
/// Where the barrier key lives, encrypted under the unseal key.
pub const BARRIER_KEY: &str = "core/barrier-key";
const ENTRY_MAGIC: u8 = 0x01;
const TERM: u32 = 1;
const AD_LABEL: &[u8] = b"sigil-barrier-v1";

/// Why a barrier operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error(
        "the key service is sealed; hint: submit unseal key shares (`PUT /v1/sys/unseal`, the threshold given at init) or start it with its auto-unseal key file"
    )]
    Sealed,
    #[error("the key service is not initialized; hint: initialize it once (`PUT /v1/sys/init`)")]
    NotInitialized,
    #[error(
        "the key service is already initialized; its unseal shares were returned once, at init"
    )]
    AlreadyInitialized,
    #[error("the barrier is {found}-sealed; {hint}")]
    WrongSealKind {
        found: &'static str,
        hint: &'static str,
    },
    #[error(
        "unseal share is {len} bytes; this barrier's shares are {expected} bytes; hint: paste the share exactly as init returned it (hex or base64)"
    )]
    BadShareLength { len: usize, expected: usize },
    #[error("unseal share is not hex or base64")]
    BadShareEncoding,
    #[error("this unseal share was already submitted (progress {progress} of {threshold})")]
    DuplicateShare { progress: usize, threshold: usize },
    #[error(
        "the {count} unseal shares submitted do not open the barrier (wrong, mixed or corrupt shares); progress reset; hint: submit {count} shares from this key service's init"
    )]
    WrongShares { count: usize },
    #[error(
        "the unseal key does not open the barrier; hint: is this the key file this data directory was initialized with?"
    )]
    WrongKey,
    #[error(
        "record {name} does not decrypt under the barrier key: {reason}; hint: the record was altered or moved to another name"
    )]
    Tampered { name: String, reason: String },
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("seal configuration {SEAL_CONFIG} is corrupt: {0}")]
    BadConfig(String),
    #[error(transparent)]
    Shamir(#[from] ShamirError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the unseal key is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SealKind {
    /// Split into Shamir shares held by people.
    Shamir,
    /// Read from a key file at start (auto-unseal).
    KeyFile,
}

impl SealKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SealKind::Shamir => "shamir",
            SealKind::KeyFile => "key-file",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealConfig {
    kind: SealKind,
    shares: usize,
    threshold: usize,
}

/// What `sys/seal-status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealStatus {
    pub initialized: bool,
    pub sealed: bool,
    pub kind: Option<SealKind>,
    /// Shares needed (`t`).
    pub threshold: usize,
    /// Shares made at init (`n`).
    pub shares: usize,
    /// Shares submitted so far.
    pub progress: usize,
}

enum State {
    Sealed { progress: Vec<Zeroizing<Vec<u8>>> },
    Unsealed { key: Zeroizing<[u8; KEY_LEN]> },
}

/// A decrypted record and its store version.
pub type Secret = (Zeroizing<Vec<u8>>, u64);

/// The barrier over a store.
pub struct Barrier {
    store: Arc<dyn Store>,
    state: RwLock<State>,
    // Serializes unseal submissions (progress) without blocking readers of the state.
    submit: Mutex<()>,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("sealed", &self.is_sealed())
            .finish_non_exhaustive()
    }
}

fn entry_ad(name: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_LABEL.len() + 5 + name.len());
    ad.extend_from_slice(AD_LABEL);
    ad.push(0);
    ad.extend_from_slice(&TERM.to_be_bytes());
    ad.extend_from_slice(name.as_bytes());
    ad
}

/// Decode an unseal share as hex (Vault's `keys`) or standard base64 (`keys_base64`).
pub fn decode_share(s: &str) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
    use base64::Engine;
    let s = s.trim();
    let hex = hex::decode(s).ok().map(Zeroizing::new);
    // A base64 share may consist of hex digits only; the share length decides.
    if let Some(h) = hex.as_ref().filter(|h| h.len() == KEY_LEN + 1) {
        return Ok(h.clone());
    }
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .map(Zeroizing::new)
        .or(hex)
        .ok_or(BarrierError::BadShareEncoding)
}

/// Parse an auto-unseal key file's content: 32 raw bytes, or 64 hex / 44 base64 characters
/// (surrounding whitespace ignored).
pub fn parse_key_file(bytes: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() == KEY_LEN {
        out.copy_from_slice(bytes);
        return Ok(out);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| {
            format!(
                "is {} bytes; expected 32 raw bytes, 64 hex or 44 base64 characters",
                bytes.len()
            )
        })?
        .trim();
    use base64::Engine;
    let decoded = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .map(Zeroizing::new)
        .ok_or_else(|| "is neither 64 hex nor 44 base64 characters".to_string())?;
    if decoded.len() != KEY_LEN {
        return Err(format!("decodes to {} bytes; expected 32", decoded.len()));
    }
    out.copy_from_slice(&decoded);
    Ok(out)
}

/// Read an auto-unseal key file; refuses a file that group or others may read.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, BarrierError> {
    let err = |reason: String| BarrierError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "mode is {mode:o}; hint: `chmod 600 {}` (the file is the key to every secret)",
            path.display()
        )));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
    parse_key_file(&bytes).map_err(err)
}

impl Barrier {
    /// A barrier over `store`, sealed.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            state: RwLock::new(State::Sealed {
                progress: Vec::new(),
            }),
            submit: Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn config(&self) -> Result<Option<SealConfig>, BarrierError> {
        self.store
            .get(SEAL_CONFIG)?
            .map(|v| {
                serde_json::from_slice(&v.value).map_err(|e| BarrierError::BadConfig(e.to_string()))
            })
            .transpose()
    }

    pub fn is_sealed(&self) -> bool {
        self.state
            .read()
            .map_or(true, |s| matches!(*s, State::Sealed { .. }))
    }

    /// The seal status (never fails on a sealed barrier; a store error reads as uninitialized
    /// only if the store itself cannot be read, which is reported).
    pub fn status(&self) -> Result<SealStatus, BarrierError> {
        let cfg = self.config()?;
        let state = self.state.read().map_err(|_| BarrierError::Sealed)?;
        let (sealed, progress) = match &*state {
            State::Sealed { progress } => (true, progress.len()),
            State::Unsealed { .. } => (false, 0),
        };
        Ok(SealStatus {
            initialized: cfg.is_some(),
            sealed,
            kind: cfg.as_ref().map(|c| c.kind),
            threshold: cfg.as_ref().map_or(0, |c| c.threshold),
            shares: cfg.as_ref().map_or(0, |c| c.shares),
            progress,
        })
    }

    fn write_init(&self, cfg: &SealConfig, unseal_key: &[u8]) -> Result<(), BarrierError> {
        let barrier_key = aead::random_key()?;
        let wrapped = aead::seal(
            KeyType::Aes256Gcm96,
            unseal_key,
            barrier_key.as_ref(),
            &entry_ad(BARRIER_KEY),
        )?;
        let cfg_json =
            serde_json::to_vec(cfg).map_err(|e| BarrierError::BadConfig(e.to_string()))?;
        let r = self.store.commit(&[
            Write::put(SEAL_CONFIG, Expect::Absent, cfg_json),
            Write::put(BARRIER_KEY, Expect::Absent, wrapped),
        ]);
        match r {
            Err(StoreError::Conflict { .. }) => Err(BarrierError::AlreadyInitialized),
            other => Ok(other?),
        }
    }

    /// Initialize with Shamir shares: returns the `shares` shares (any `threshold` unseal).
    /// They are shown once and never stored. The barrier stays sealed.
    pub fn init_shamir(
        &self,
        shares: usize,
        threshold: usize,
    ) -> Result<Vec<Zeroizing<Vec<u8>>>, BarrierError> {
        if self.config()?.is_some() {
            return Err(BarrierError::AlreadyInitialized);
        }
        let unseal_key = aead::random_key()?;
        let out = shamir::split(unseal_key.as_ref(), threshold, shares)?;
        self.write_init(
            &SealConfig {
                kind: SealKind::Shamir,
                shares,
                threshold,
            },
            unseal_key.as_ref(),
        )?;
        Ok(out)
    }

    /// Initialize for auto-unseal with `key` (the key file's content). The barrier stays sealed.
    pub fn init_key_file(&self, key: &[u8; KEY_LEN]) -> Result<(), BarrierError> {
        if self.config()?.is_some() {
            return Err(BarrierError::AlreadyInitialized);
        }
        self.write_init(
            &SealConfig {
                kind: SealKind::KeyFile,
                shares: 1,
                threshold: 1,
            },
            key,
        )
    }

    fn open_with(&self, unseal_key: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, BarrierError> {
        let wrapped = self
            .store
            .get(BARRIER_KEY)?
            .ok_or(BarrierError::NotInitialized)?;
        let plain = aead::open(
            KeyType::Aes256Gcm96,
            unseal_key,
            &wrapped.value,
            &entry_ad(BARRIER_KEY),
        )
        .map_err(|_| BarrierError::WrongKey)?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if plain.len() != KEY_LEN {
            return Err(BarrierError::WrongKey);
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }

    /// Unseal with the auto-unseal key.
    pub fn unseal_key_file(&self, key: &[u8; KEY_LEN]) -> Result<SealStatus, BarrierError> {
        let cfg = self.config()?.ok_or(BarrierError::NotInitialized)?;
        if cfg.kind != SealKind::KeyFile {
            return Err(BarrierError::WrongSealKind {
                found: "shamir",
                hint: "unseal it with its shares, not a key file",
            });
        }
        let barrier_key = self.open_with(key)?;
        *self.state.write().map_err(|_| BarrierError::Sealed)? =
            State::Unsealed { key: barrier_key };
        self.status()
    }

    /// Submit one Shamir share; unseals when the threshold is reached.
    pub fn submit_share(&self, share: &[u8]) -> Result<SealStatus, BarrierError> {
        let _one = self.submit.lock().map_err(|_| BarrierError::Sealed)?;
        let cfg = self.config()?.ok_or(BarrierError::NotInitialized)?;
        if cfg.kind != SealKind::Shamir {
            return Err(BarrierError::WrongSealKind {
                found: "key-file",
                hint: "it unseals from its key file at start",
            });
        }
        if !self.is_sealed() {
            return self.status();
        }
        let expected = KEY_LEN + 1;
        if share.len() != expected {
            return Err(BarrierError::BadShareLength {
                len: share.len(),
                expected,
            });
        }
        let ready = {
            let mut state = self.state.write().map_err(|_| BarrierError::Sealed)?;
            let State::Sealed { progress } = &mut *state else {
                return Err(BarrierError::Sealed);
            };
            if progress.iter().any(|p| p.last() == share.last()) {
                return Err(BarrierError::DuplicateShare {
                    progress: progress.len(),
                    threshold: cfg.threshold,
                });
            }
            progress.push(Zeroizing::new(share.to_vec()));
            if progress.len() < cfg.threshold {
                None
            } else {
                Some(std::mem::take(progress))
            }
        };
        if let Some(shares) = ready {
            let count = shares.len();
            let unseal_key = shamir::combine(&shares)?;
            let barrier_key = self.open_with(&unseal_key).map_err(|e| match e {
                BarrierError::WrongKey => BarrierError::WrongShares { count },
                other => other,
            })?;
            *self.state.write().map_err(|_| BarrierError::Sealed)? =
                State::Unsealed { key: barrier_key };
        }
        self.status()
    }

    /// Forget submitted shares.
    pub fn reset_progress(&self) -> Result<(), BarrierError> {
        let mut state = self.state.write().map_err(|_| BarrierError::Sealed)?;
        if let State::Sealed { progress } = &mut *state {
            progress.clear();
        }
        Ok(())
    }

    /// Seal: the barrier key is dropped (zeroized) from memory.
    pub fn seal(&self) -> Result<(), BarrierError> {
        *self.state.write().map_err(|_| BarrierError::Sealed)? = State::Sealed {
            progress: Vec::new(),
        };
        Ok(())
    }

    fn with_key<T>(
        &self,
        f: impl FnOnce(&[u8]) -> Result<T, BarrierError>,
    ) -> Result<T, BarrierError> {
        let state = self.state.read().map_err(|_| BarrierError::Sealed)?;
        match &*state {
            State::Unsealed { key } => f(key.as_ref()),
            State::Sealed { .. } => Err(BarrierError::Sealed),
        }
    }

    /// Encrypt `plaintext` as the entry stored under `name`.
    pub fn encrypt_entry(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, BarrierError> {
        self.with_key(|key| {
            let blob = aead::seal(KeyType::Aes256Gcm96, key, plaintext, &entry_ad(name))?;
            let mut out = Vec::with_capacity(5 + blob.len());
            out.push(ENTRY_MAGIC);
            out.extend_from_slice(&TERM.to_be_bytes());
            out.extend_from_slice(&blob);
            Ok(out)
        })
    }

    /// Decrypt the entry stored under `name`.
    pub fn decrypt_entry(
        &self,
        name: &str,
        entry: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
        self.with_key(|key| {
            let tampered = |reason: &str| BarrierError::Tampered {
                name: name.to_string(),
                reason: reason.to_string(),
            };
            let (magic, rest) = entry.split_first().ok_or_else(|| tampered("empty entry"))?;
            if *magic != ENTRY_MAGIC {
                return Err(tampered("unknown entry format"));
            }
            let (term, blob) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| tampered("truncated header"))?;
            if u32::from_be_bytes(*term) != TERM {
                return Err(tampered("unknown barrier key term"));
            }
            aead::open(KeyType::Aes256Gcm96, key, blob, &entry_ad(name))
                .map_err(|e| tampered(&e.to_string()))
        })
    }

    /// Read and decrypt a secret record; its store version comes with it.
    pub fn get(&self, name: &str) -> Result<Option<Secret>, BarrierError> {
        if self.is_sealed() {
            return Err(BarrierError::Sealed);
        }
        match self.store.get(name)? {
            None => Ok(None),
            Some(v) => Ok(Some((self.decrypt_entry(name, &v.value)?, v.version))),
        }
    }

    /// A put of a secret record, encrypted, for a [`Store::commit`] batch.
    pub fn put_write(
        &self,
        name: &str,
        expect: Expect,
        plaintext: &[u8],
    ) -> Result<Write, BarrierError> {
        Ok(Write::put(
            name,
            expect,
            self.encrypt_entry(name, plaintext)?,
        ))
    }

    /// Commit writes made with [`Barrier::put_write`] (refused while sealed).
    pub fn commit(&self, writes: &[Write]) -> Result<(), BarrierError> {
        if self.is_sealed() {
            return Err(BarrierError::Sealed);
        }
        Ok(self.store.commit(writes)?)
    }

    /// Names of records under `prefix` (refused while sealed).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        if self.is_sealed() {
            return Err(BarrierError::Sealed);
        }
        Ok(self.store.list(prefix)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn shamir_barrier(n: usize, k: usize) -> (Arc<MemStore>, Barrier, Vec<Zeroizing<Vec<u8>>>) {
        let store = Arc::new(MemStore::new());
        let b = Barrier::new(store.clone());
        let shares = b.init_shamir(n, k).unwrap();
        (store, b, shares)
    }

    #[test]
    fn init_unseal_seal_cycle() {
        let (_s, b, shares) = shamir_barrier(5, 3);
        assert_eq!(shares.len(), 5);
        let st = b.status().unwrap();
        assert!(st.initialized && st.sealed && st.threshold == 3 && st.shares == 5);
        assert!(matches!(
            b.encrypt_entry("x", b"v"),
            Err(BarrierError::Sealed)
        ));
        assert_eq!(b.submit_share(&shares[4]).unwrap().progress, 1);
        assert!(matches!(
            b.submit_share(&shares[4]),
            Err(BarrierError::DuplicateShare {
                progress: 1,
                threshold: 3
            })
        ));
        assert_eq!(b.submit_share(&shares[0]).unwrap().progress, 2);
        let st = b.submit_share(&shares[2]).unwrap();
        assert!(!st.sealed && st.progress == 0);
        let e = b.encrypt_entry("keys/a", b"secret").unwrap();
        assert_eq!(&b.decrypt_entry("keys/a", &e).unwrap()[..], b"secret");
        b.seal().unwrap();
        assert!(matches!(
            b.decrypt_entry("keys/a", &e),
            Err(BarrierError::Sealed)
        ));
        assert!(matches!(b.get("keys/a"), Err(BarrierError::Sealed)));
        assert!(matches!(
            b.init_shamir(1, 1),
            Err(BarrierError::AlreadyInitialized)
        ));
    }

    #[test]
    fn shares_of_another_barrier_do_not_unseal_and_progress_resets() {
        let (_s, b, _) = shamir_barrier(3, 2);
        let (_s2, _b2, other) = shamir_barrier(3, 2);
        b.submit_share(&other[0]).unwrap();
        assert!(matches!(
            b.submit_share(&other[1]),
            Err(BarrierError::WrongShares { count: 2 })
        ));
        let st = b.status().unwrap();
        assert!(st.sealed && st.progress == 0);
    }

    #[test]
    fn an_entry_moved_to_another_name_does_not_decrypt() {
        let (store, b, shares) = shamir_barrier(1, 1);
        b.submit_share(&shares[0]).unwrap();
        b.commit(&[b
            .put_write("keys/a/v/1", Expect::Absent, b"key-one")
            .unwrap()])
            .unwrap();
        let raw = store.get("keys/a/v/1").unwrap().unwrap().value;
        assert!(
            !raw.windows(7).any(|w| w == b"key-one"),
            "plaintext in the store"
        );
        store.put("keys/b/v/1", raw.clone()).unwrap();
        assert!(
            matches!(b.get("keys/b/v/1"), Err(BarrierError::Tampered { name, .. }) if name == "keys/b/v/1")
        );
        let mut flipped = raw.clone();
        *flipped.last_mut().unwrap() ^= 1;
        store.put("keys/a/v/1", flipped).unwrap();
        assert!(matches!(
            b.get("keys/a/v/1"),
            Err(BarrierError::Tampered { .. })
        ));
    }

    #[test]
    fn key_file_auto_unseal() {
        let store = Arc::new(MemStore::new());
        let b = Barrier::new(store.clone());
        let key = aead::random_key().unwrap();
        b.init_key_file(&key).unwrap();
        assert!(matches!(
            b.submit_share(&[0u8; 33]),
            Err(BarrierError::WrongSealKind { .. })
        ));
        let wrong = aead::random_key().unwrap();
        assert!(matches!(
            b.unseal_key_file(&wrong),
            Err(BarrierError::WrongKey)
        ));
        assert!(b.is_sealed());
        assert!(!b.unseal_key_file(&key).unwrap().sealed);
        // a second process over the same store unseals with the same file
        let b2 = Barrier::new(store);
        b2.unseal_key_file(&key).unwrap();
        let e = b.encrypt_entry("n", b"v").unwrap();
        assert_eq!(&b2.decrypt_entry("n", &e).unwrap()[..], b"v");
    }

    #[test]
    fn key_file_parsing_and_permissions() {
        let k = [7u8; 32];
        assert_eq!(*parse_key_file(&k).unwrap(), k);
        assert_eq!(
            *parse_key_file(format!("{}\n", hex::encode(k)).as_bytes()).unwrap(),
            k
        );
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(k);
        assert_eq!(*parse_key_file(b64.as_bytes()).unwrap(), k);
        assert!(parse_key_file(b"short").unwrap_err().contains("neither"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("unseal.key");
        std::fs::write(&p, hex::encode(k)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(*read_key_file(&p).unwrap(), k);
    }

    #[test]
    fn share_encodings() {
        let (_s, b, shares) = shamir_barrier(2, 2);
        use base64::Engine;
        let h = hex::encode(&shares[0]);
        let s64 = base64::engine::general_purpose::STANDARD.encode(&shares[1]);
        b.submit_share(&decode_share(&h).unwrap()).unwrap();
        assert!(!b.submit_share(&decode_share(&s64).unwrap()).unwrap().sealed);
        assert!(matches!(
            decode_share("!!"),
            Err(BarrierError::BadShareEncoding)
        ));
    }
}
