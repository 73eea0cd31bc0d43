//! Data keys and where they come from. Each sealed file has its own random 256-bit data key; a
//! [`DataKeySource`] wraps it under the asset's key when sealing and unwraps it when unsealing.
//! Today's source is [`LocalKey`] (the offline `--key-file` mode); the key service's client
//! (identity-bound, policy-checked, Vault-transit `datakey`) implements the same trait.
//!
//! Keys live in `Zeroizing` buffers and never appear in `Debug`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::format::KeyRef;

/// Bytes of a data key and of a local wrapping key (AES-256).
pub const KEY_LEN: usize = 32;

/// A file's plaintext data key.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// A fresh random key from the system generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(k.as_mut())
            .map_err(|_| KeyError::Random)?;
        Ok(Self(k))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A key from a slice of exactly [`KEY_LEN`] bytes (a service's plaintext `datakey`).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let a: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self::from_bytes(a))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// What a data key is bound to: the asset and the file's relative path. A source must refuse to
/// unwrap under a different context (the local key uses it as associated data; the key service
/// passes it as the transit `context`/associated data and checks the asset against the policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrapContext<'a> {
    pub asset: &'a str,
    pub path: &'a str,
}

impl WrapContext<'_> {
    /// `"sigil-seal/v1\0" ‖ asset ‖ "\0" ‖ path`: the bytes a source binds the wrapped key to.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.asset.len() + self.path.len());
        v.extend_from_slice(b"sigil-seal/v1\0");
        v.extend_from_slice(self.asset.as_bytes());
        v.push(0);
        v.extend_from_slice(self.path.as_bytes());
        v
    }
}

/// A fresh data key, its wrapped form and the key version that wrapped it.
#[derive(Debug)]
pub struct NewDataKey {
    pub key: DataKey,
    pub wrapped: Vec<u8>,
    pub key_ref: KeyRef,
}

/// Wraps and unwraps per-file data keys under an asset's key. Implemented by [`LocalKey`] and,
/// when the key service lands, by its client (where `unwrap` is refused unless the caller's
/// identity is a reader of `ctx.asset`, and the refusal names the rule).
pub trait DataKeySource: Sync {
    /// A new random data key for a file of `ctx.asset`, and its wrapped form.
    fn wrap(&self, ctx: &WrapContext<'_>) -> Result<NewDataKey, KeyError>;
    /// The data key of a file sealed under `key` with `ctx`.
    fn unwrap(
        &self,
        ctx: &WrapContext<'_>,
        key: &KeyRef,
        wrapped: &[u8],
    ) -> Result<DataKey, KeyError>;
}

/// A local 32-byte AES-256 key (the offline `--key-file` mode) with the version it is known as.
/// Its id, `local:` and 16 hex digits of a SHA-256 over the key, tells keys apart without
/// revealing them.
pub struct LocalKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    id: String,
    version: u32,
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKey")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Wrapped local data key: 12-byte nonce ‖ 32-byte ciphertext ‖ 16-byte tag.
pub const LOCAL_WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + 16;

impl LocalKey {
    /// A key from exactly 32 bytes, known as `version` (≥ 1).
    pub fn from_bytes(bytes: &[u8], version: u32) -> Result<Self, KeyError> {
        let a: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            KeyError::KeyFile(format!(
                "{} bytes, expected exactly {KEY_LEN} random bytes; hint: head -c 32 /dev/urandom > key && chmod 600 key",
                bytes.len()
            ))
        })?;
        if version == 0 {
            return Err(KeyError::KeyFile(
                "key version 0: versions start at 1".into(),
            ));
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"sigil-seal local key id\0");
        ctx.update(&a);
        let d = ctx.finish();
        let id = format!(
            "local:{}",
            hex::encode(d.as_ref().get(..8).unwrap_or_default())
        );
        Ok(Self {
            key: Zeroizing::new(a),
            id,
            version,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    fn aead(&self) -> Result<LessSafeKey, KeyError> {
        UnboundKey::new(&AES_256_GCM, self.key.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| KeyError::KeyFile("cannot build an AES-256-GCM key".into()))
    }

    fn aad(&self, version: u32, ctx: &WrapContext<'_>) -> Vec<u8> {
        let mut a = b"sigil-seal/v1 datakey\0".to_vec();
        a.extend_from_slice(self.id.as_bytes());
        a.push(0);
        a.extend_from_slice(&version.to_be_bytes());
        a.extend_from_slice(&ctx.to_bytes());
        a
    }
}

impl DataKeySource for LocalKey {
    fn wrap(&self, ctx: &WrapContext<'_>) -> Result<NewDataKey, KeyError> {
        let key = DataKey::generate()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyError::Random)?;
        let mut buf = Zeroizing::new(key.as_bytes().to_vec());
        let tag = self
            .aead()?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(self.version, ctx)),
                buf.as_mut_slice(),
            )
            .map_err(|_| KeyError::KeyFile("wrapping the data key failed".into()))?;
        let mut wrapped = Vec::with_capacity(LOCAL_WRAPPED_LEN);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&buf);
        wrapped.extend_from_slice(tag.as_ref());
        Ok(NewDataKey {
            key,
            wrapped,
            key_ref: KeyRef {
                id: self.id.clone(),
                version: self.version,
            },
        })
    }

    fn unwrap(
        &self,
        ctx: &WrapContext<'_>,
        key: &KeyRef,
        wrapped: &[u8],
    ) -> Result<DataKey, KeyError> {
        if key.id != self.id {
            return Err(KeyError::WrongKey {
                sealed: key.id.clone(),
                have: self.id.clone(),
            });
        }
        if key.version != self.version {
            return Err(KeyError::WrongVersion {
                id: key.id.clone(),
                sealed: key.version,
                have: format!("the key file is version {}", self.version),
                hint: format!(
                    "use the key file of version {} (and --key-version {})",
                    key.version, key.version
                ),
            });
        }
        let fail = || KeyError::Unwrap {
            id: key.id.clone(),
            version: key.version,
        };
        if wrapped.len() != LOCAL_WRAPPED_LEN {
            return Err(fail());
        }
        let (nonce, ct) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let pt = self
            .aead()?
            .open_in_place(
                nonce,
                Aad::from(self.aad(key.version, ctx)),
                buf.as_mut_slice(),
            )
            .map_err(|_| fail())?;
        DataKey::from_slice(pt).ok_or_else(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_wrap_unwrap_and_bindings() {
        let k = LocalKey::from_bytes(&[9; 32], 2).unwrap();
        let ctx = WrapContext {
            asset: "a",
            path: "p",
        };
        let n = k.wrap(&ctx).unwrap();
        let dk = k.unwrap(&ctx, &n.key_ref, &n.wrapped).unwrap();
        assert_eq!(dk.as_bytes(), n.key.as_bytes());
        let other = WrapContext {
            asset: "b",
            path: "p",
        };
        assert!(matches!(
            k.unwrap(&other, &n.key_ref, &n.wrapped),
            Err(KeyError::Unwrap { .. })
        ));
        assert!(format!("{k:?}").contains("local:"));
        assert!(!format!("{:?}", n.key).contains('9'));
    }

    #[test]
    fn key_file_length_checked() {
        assert!(LocalKey::from_bytes(&[0; 31], 1).is_err());
        assert!(LocalKey::from_bytes(&[0; 33], 1).is_err());
        assert!(LocalKey::from_bytes(&[0; 32], 0).is_err());
    }
}
