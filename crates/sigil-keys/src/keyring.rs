//! Named keys with versions, and the transit operations on one key: encrypt, decrypt, rewrap,
//! data keys, in Vault's `vault:v<N>:<base64(nonce || ciphertext || tag)>` format.
//!
//! Owns: a key's configuration and version rules (Vault's `min_decryption_version`,
//! `min_encryption_version`, `min_available_version` for trim, `deletion_allowed`, `derived`
//! with HKDF-SHA256 over the context, auto-rotation by age), and the per-version encryption
//! count that forces a rotation long before random 96-bit nonces get risky. Must not: persist
//! anything or decide who may call it (the service and [`crate::authz`] do).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{self, CryptoError, KEY_LEN, KeyType};

/// Default cap on encryptions under one key version: 2^30. With random 96-bit nonces the
/// probability of a nonce collision after q encryptions is about q^2 / 2^97; NIST SP 800-38D
/// caps random-nonce GCM at 2^32 invocations per key. 2^30 keeps the collision bound below
/// 2^-37 and leaves a 4x margin under the NIST cap even if every reserved block is lost to
/// restarts (see [`Limits::reservation_block`]).
pub const DEFAULT_MAX_ENCRYPTIONS: u64 = 1 << 30;
/// Default encryption-count reservation block (one durable write per 65,536 encryptions).
pub const DEFAULT_RESERVATION_BLOCK: u64 = 1 << 16;
/// Shortest auto-rotation period (as Vault: 0 disables, else at least an hour).
pub const MIN_AUTO_ROTATE_SECS: u64 = 3600;
/// Largest context or associated data accepted (bytes, decoded).
pub const MAX_CONTEXT_LEN: usize = 4096;

/// Limits the service applies to every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A version that reached this many encryptions is rotated before the next one.
    pub max_encryptions: u64,
    /// Encryption counts are made durable in blocks: a version's record says how many
    /// encryptions were reserved; after a crash counting resumes from the reservation, so an
    /// unclean stop over-counts by less than one block and never under-counts.
    pub reservation_block: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_encryptions: DEFAULT_MAX_ENCRYPTIONS,
            reservation_block: DEFAULT_RESERVATION_BLOCK,
        }
    }
}

/// A transit request that the key refuses; messages follow Vault's where Vault has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitError {
    #[error("invalid ciphertext: no prefix; hint: transit ciphertexts look like vault:v1:<base64>")]
    NoPrefix,
    #[error("invalid ciphertext: wrong number of fields")]
    WrongFields,
    #[error("invalid ciphertext: version number could not be decoded")]
    BadVersion,
    #[error(
        "invalid ciphertext: version is too new (v{version}; latest version of key {key} is {latest})"
    )]
    TooNew {
        key: String,
        version: u32,
        latest: u32,
    },
    #[error(
        "ciphertext or signature version is disallowed by policy (too old): v{version} is below min_decryption_version {min} of key {key}"
    )]
    TooOld { key: String, version: u32, min: u32 },
    #[error("no such key version: v{version} of key {key} was trimmed")]
    Trimmed { key: String, version: u32 },
    #[error("invalid ciphertext: could not decode base64")]
    BadBase64,
    #[error("{field} is not valid base64")]
    BadField { field: &'static str },
    #[error("{field} is {len} bytes; at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "ciphertext does not authenticate under key {key} v{version}; hint: wrong context or associated_data, or the ciphertext was altered"
    )]
    Authentication { key: String, version: u32 },
    #[error(
        "requested version for encryption is higher than the latest key version ({requested} > {latest})"
    )]
    EncryptVersionTooNew { requested: u32, latest: u32 },
    #[error(
        "requested version for encryption is less than the minimum encryption key version ({requested} < {min})"
    )]
    EncryptVersionTooOld { requested: u32, min: u32 },
    #[error(
        "missing 'context' for key derivation; the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key"
    )]
    MissingContext,
    #[error(
        "context given, but key {key} is not derived, so the context would not be bound to the ciphertext; hint: create the key with derived=true, or leave context out"
    )]
    ContextOnNonDerived { key: String },
    #[error(
        "convergent encryption is not supported; hint: leave convergent_encryption and nonce out"
    )]
    Convergent,
    #[error("{0}")]
    Config(String),
    #[error("bits must be 128, 256 or 512 (got {0})")]
    BadBits(u32),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A version's durable metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionMeta {
    pub created: u64,
    /// Encryptions reserved (an upper bound on those done) under this version.
    pub reserved: u64,
}

/// A key's durable configuration (no key material; that lives in one record per version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub key_type: KeyType,
    pub derived: bool,
    pub latest_version: u32,
    pub min_decryption_version: u32,
    pub min_encryption_version: u32,
    pub min_available_version: u32,
    pub deletion_allowed: bool,
    /// Seconds; 0 disables auto-rotation by age.
    pub auto_rotate_period: u64,
    pub versions: BTreeMap<u32, VersionMeta>,
}

/// A configuration change (`keys/:name/config`); absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdate {
    pub min_decryption_version: Option<i64>,
    pub min_encryption_version: Option<i64>,
    pub deletion_allowed: Option<bool>,
    pub exportable: Option<bool>,
    pub allow_plaintext_backup: Option<bool>,
    pub auto_rotate_period: Option<serde_json::Value>,
}

/// Why a key must rotate before its next encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateReason {
    Age,
    EncryptionCount,
}

/// A named key: configuration plus the material of every available version.
pub struct NamedKey {
    pub config: KeyConfig,
    material: BTreeMap<u32, Zeroizing<[u8; KEY_LEN]>>,
    /// Encryptions done since load, per version (starts at the reservation after a restart).
    used: BTreeMap<u32, u64>,
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedKey")
            .field("config", &self.config)
            .field("material", &"<redacted>")
            .finish()
    }
}

/// Check a key name as Vault's transit engine does (letters, digits, `_`, `-`, `.`, `@`; first
/// and last a letter, digit or `_`), at most 128 bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| word(c) || matches!(c, '-' | '.' | '@'))
        && name.chars().next().is_some_and(word)
        && name.chars().last().is_some_and(word);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key name {name:?} is not valid; hint: use letters, digits, '_', '-', '.', '@' (first and last a letter, digit or '_'), at most 128 bytes"
        ))
    }
}

/// Decode an optional base64 request field with a size limit.
pub fn decode_b64(
    field: &'static str,
    v: Option<&str>,
    max: usize,
) -> Result<Vec<u8>, TransitError> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let d = B64
        .decode(v)
        .map_err(|_| TransitError::BadField { field })?;
    if d.len() > max {
        return Err(TransitError::TooLong {
            field,
            len: d.len(),
            max,
        });
    }
    Ok(d)
}

/// Split `vault:v<N>:<base64>` into the version and the blob.
pub fn parse_ciphertext(ct: &str) -> Result<(u32, Vec<u8>), TransitError> {
    let rest = ct.strip_prefix("vault:v").ok_or(TransitError::NoPrefix)?;
    let (ver, b64) = rest.split_once(':').ok_or(TransitError::WrongFields)?;
    if ver.is_empty() || !ver.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TransitError::BadVersion);
    }
    let ver: u32 = ver.parse().map_err(|_| TransitError::BadVersion)?;
    let blob = B64.decode(b64).map_err(|_| TransitError::BadBase64)?;
    // Vault's first implementation numbered versions from 0.
    Ok((ver.max(1), blob))
}

/// Render a ciphertext.
pub fn format_ciphertext(version: u32, blob: &[u8]) -> String {
    format!("vault:v{version}:{}", B64.encode(blob))
}

impl NamedKey {
    /// A new key with version 1.
    pub fn create(
        name: &str,
        key_type: KeyType,
        derived: bool,
        now: u64,
    ) -> Result<Self, TransitError> {
        check_name(name).map_err(TransitError::Config)?;
        let mut k = Self {
            config: KeyConfig {
                name: name.to_string(),
                key_type,
                derived,
                latest_version: 0,
                min_decryption_version: 1,
                min_encryption_version: 0,
                min_available_version: 0,
                deletion_allowed: false,
                auto_rotate_period: 0,
                versions: BTreeMap::new(),
            },
            material: BTreeMap::new(),
            used: BTreeMap::new(),
        };
        k.add_version(aead::random_key()?, now);
        Ok(k)
    }

    /// Rebuild from the stored configuration and version material.
    pub fn from_parts(
        config: KeyConfig,
        material: BTreeMap<u32, Zeroizing<[u8; KEY_LEN]>>,
    ) -> Self {
        let used = config
            .versions
            .iter()
            .map(|(v, m)| (*v, m.reserved))
            .collect();
        Self {
            config,
            material,
            used,
        }
    }

    /// The material of `version`, for the service to persist.
    pub fn material(&self, version: u32) -> Option<&[u8; KEY_LEN]> {
        self.material.get(&version).map(|k| &**k)
    }

    fn add_version(&mut self, key: Zeroizing<[u8; KEY_LEN]>, now: u64) -> u32 {
        let v = self.config.latest_version + 1;
        self.config.latest_version = v;
        self.config.versions.insert(
            v,
            VersionMeta {
                created: now,
                reserved: 0,
            },
        );
        self.material.insert(v, key);
        self.used.insert(v, 0);
        v
    }

    /// A copy of this key with one more version (the caller persists it, then swaps it in).
    pub fn rotated(&self, now: u64) -> Result<Self, TransitError> {
        let mut next = self.clone_inner();
        next.add_version(aead::random_key()?, now);
        Ok(next)
    }

    fn clone_inner(&self) -> Self {
        Self {
            config: self.config.clone(),
            material: self.material.clone(),
            used: self.used.clone(),
        }
    }

    /// Whether the latest version must be replaced before the next encryption.
    pub fn rotation_due(&self, now: u64, limits: &Limits) -> Option<RotateReason> {
        let latest = self.config.latest_version;
        let meta = self.config.versions.get(&latest)?;
        if self.used.get(&latest).copied().unwrap_or(meta.reserved) >= limits.max_encryptions {
            return Some(RotateReason::EncryptionCount);
        }
        let p = self.config.auto_rotate_period;
        (p > 0 && now.saturating_sub(meta.created) >= p).then_some(RotateReason::Age)
    }

    /// The version an encryption with `requested` (0 = latest) uses, checked as Vault does.
    pub fn encryption_version(&self, requested: u32) -> Result<u32, TransitError> {
        let latest = self.config.latest_version;
        match requested {
            0 => Ok(latest),
            r if r > latest => Err(TransitError::EncryptVersionTooNew {
                requested: r,
                latest,
            }),
            r if r < self.config.min_encryption_version => {
                Err(TransitError::EncryptVersionTooOld {
                    requested: r,
                    min: self.config.min_encryption_version,
                })
            }
            r if r < self.config.min_available_version => Err(TransitError::Trimmed {
                key: self.config.name.clone(),
                version: r,
            }),
            r => Ok(r),
        }
    }

    /// Count `n` encryptions under `version`; returns the new reservation to persist first when
    /// the current one is used up (`None`: nothing to write).
    pub fn reserve(&mut self, version: u32, n: u64, limits: &Limits) -> Option<u64> {
        let reserved = self.config.versions.get(&version).map_or(0, |m| m.reserved);
        let used = self.used.get(&version).copied().unwrap_or(reserved);
        let want = used.saturating_add(n);
        if want <= reserved {
            None
        } else {
            Some(want.saturating_add(limits.reservation_block))
        }
    }

    /// Record a reservation that is now durable.
    pub fn set_reserved(&mut self, version: u32, reserved: u64) {
        if let Some(m) = self.config.versions.get_mut(&version) {
            m.reserved = m.reserved.max(reserved);
        }
    }

    /// Mark `n` encryptions as done under `version` (after a successful reservation).
    pub fn count(&mut self, version: u32, n: u64) {
        let reserved = self.config.versions.get(&version).map_or(0, |m| m.reserved);
        let e = self.used.entry(version).or_insert(reserved);
        *e = e.saturating_add(n);
    }

    /// Encryptions counted under `version` (durable upper bound after a restart).
    pub fn encryptions(&self, version: u32) -> u64 {
        self.used.get(&version).copied().unwrap_or(0)
    }

    fn version_key(
        &self,
        version: u32,
        context: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, TransitError> {
        let key = self
            .material
            .get(&version)
            .ok_or_else(|| TransitError::Trimmed {
                key: self.config.name.clone(),
                version,
            })?;
        if self.config.derived {
            if context.is_empty() {
                return Err(TransitError::MissingContext);
            }
            Ok(aead::derive(key.as_ref(), context)?)
        } else if !context.is_empty() {
            Err(TransitError::ContextOnNonDerived {
                key: self.config.name.clone(),
            })
        } else {
            Ok(key.clone())
        }
    }

    /// Encrypt under `version` (already chosen with [`NamedKey::encryption_version`]).
    pub fn encrypt(
        &self,
        version: u32,
        plaintext: &[u8],
        context: &[u8],
        associated_data: &[u8],
    ) -> Result<String, TransitError> {
        let key = self.version_key(version, context)?;
        let blob = aead::seal(
            self.config.key_type,
            key.as_ref(),
            plaintext,
            associated_data,
        )?;
        Ok(format_ciphertext(version, &blob))
    }

    /// Decrypt a `vault:v<N>:` ciphertext; returns the plaintext and N.
    pub fn decrypt(
        &self,
        ciphertext: &str,
        context: &[u8],
        associated_data: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, u32), TransitError> {
        let (version, blob) = parse_ciphertext(ciphertext)?;
        let c = &self.config;
        if version > c.latest_version {
            return Err(TransitError::TooNew {
                key: c.name.clone(),
                version,
                latest: c.latest_version,
            });
        }
        if version < c.min_decryption_version {
            return Err(TransitError::TooOld {
                key: c.name.clone(),
                version,
                min: c.min_decryption_version,
            });
        }
        let key = self.version_key(version, context)?;
        let plain =
            aead::open(c.key_type, key.as_ref(), &blob, associated_data).map_err(|e| match e {
                CryptoError::Authentication | CryptoError::TooShort { .. } => {
                    TransitError::Authentication {
                        key: c.name.clone(),
                        version,
                    }
                }
                other => TransitError::Crypto(other),
            })?;
        Ok((plain, version))
    }

    /// Apply a configuration change with Vault's rules; returns a warning, if any.
    pub fn configure(&mut self, u: &ConfigUpdate) -> Result<Option<String>, TransitError> {
        let bad = |m: String| Err(TransitError::Config(m));
        let mut next = self.config.clone();
        let mut warning = None;
        let latest = i64::from(next.latest_version);
        if let Some(v) = u.min_decryption_version {
            if v < 0 {
                return bad("min decryption version cannot be negative".into());
            }
            let v = if v == 0 {
                warning = Some(
                    "key numbering starts at 1; forcing min_decryption_version to 1".to_string(),
                );
                1
            } else {
                v
            };
            if v > latest {
                return bad(format!(
                    "cannot set min decryption version of {v}, latest key version is {latest}"
                ));
            }
            next.min_decryption_version = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if let Some(v) = u.min_encryption_version {
            if v < 0 {
                return bad("min encryption version cannot be negative".into());
            }
            if v > latest {
                return bad(format!(
                    "cannot set min encryption version of {v}, latest key version is {latest}"
                ));
            }
            next.min_encryption_version = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if next.min_encryption_version > 0
            && next.min_encryption_version < next.min_decryption_version
        {
            return bad(format!(
                "cannot set min encryption/decryption values; min encryption version of {} must be greater than or equal to min decryption version of {}",
                next.min_encryption_version, next.min_decryption_version
            ));
        }
        if next.min_available_version > next.min_decryption_version
            || (next.min_encryption_version > 0
                && next.min_available_version > next.min_encryption_version)
        {
            return bad(format!(
                "min versions cannot go below min_available_version {} (versions before it were trimmed)",
                next.min_available_version
            ));
        }
        if let Some(d) = u.deletion_allowed {
            next.deletion_allowed = d;
        }
        if u.exportable == Some(true) || u.allow_plaintext_backup == Some(true) {
            return bad("key export and plaintext backup are not offered; key material never leaves the key service".into());
        }
        if let Some(p) = &u.auto_rotate_period {
            let secs = parse_duration(p).map_err(TransitError::Config)?;
            if secs != 0 && secs < MIN_AUTO_ROTATE_SECS {
                return bad("auto rotate period must be 0 to disable or at least an hour".into());
            }
            next.auto_rotate_period = secs;
        }
        self.config = next;
        Ok(warning)
    }

    /// Delete versions below `min_available_version` (Vault's trim rules); returns them.
    pub fn trim(&mut self, min_available: i64) -> Result<Vec<u32>, TransitError> {
        let c = &self.config;
        let bad = |m: &str| Err(TransitError::Config(m.to_string()));
        if min_available < i64::from(c.min_available_version) {
            return bad("minimum available version cannot be decremented");
        }
        if c.min_encryption_version == 0 {
            return bad(
                "minimum available version cannot be set when minimum encryption version is not set",
            );
        }
        if min_available > i64::from(c.min_encryption_version) {
            return bad(
                "minimum available version cannot be greater than minimum encryption version",
            );
        }
        if min_available > i64::from(c.min_decryption_version) {
            return bad(
                "minimum available version cannot be greater than minimum decryption version",
            );
        }
        if min_available <= 0 {
            return bad("minimum available version should be positive");
        }
        let m = u32::try_from(min_available).unwrap_or(u32::MAX);
        let gone: Vec<u32> = self.material.keys().copied().filter(|v| *v < m).collect();
        for v in &gone {
            self.material.remove(v);
            self.config.versions.remove(v);
            self.used.remove(v);
        }
        self.config.min_available_version = m;
        Ok(gone)
    }
}

/// A duration as Vault accepts it: seconds as a number or string, or `90m`, `24h`, `7d` style.
pub fn parse_duration(v: &serde_json::Value) -> Result<u64, String> {
    let err =
        || format!("auto_rotate_period {v} is not a duration; hint: seconds, or e.g. 24h, 30d");
    match v {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(err),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (num, mult) = match s.char_indices().last() {
                Some((i, 's')) => (s.get(..i), 1),
                Some((i, 'm')) => (s.get(..i), 60),
                Some((i, 'h')) => (s.get(..i), 3600),
                Some((i, 'd')) => (s.get(..i), 86400),
                _ => (Some(s), 1),
            };
            num.and_then(|n| n.parse::<u64>().ok())
                .and_then(|n| n.checked_mul(mult))
                .ok_or_else(err)
        }
        _ => Err(err()),
    }
}

/// A fresh data key of `bits` (128, 256 or 512).
pub fn data_key(bits: u32) -> Result<Zeroizing<Vec<u8>>, TransitError> {
    if !matches!(bits, 128 | 256 | 512) {
        return Err(TransitError::BadBits(bits));
    }
    let mut k = Zeroizing::new(vec![0u8; (bits / 8) as usize]);
    aead::random_fill(&mut k)?;
    Ok(k)
}
