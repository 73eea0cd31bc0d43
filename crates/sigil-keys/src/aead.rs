//! The AEADs the key service uses (AES-256-GCM with 96-bit nonces, ChaCha20-Poly1305) and the
//! HKDF derivation of context-bound keys, all through aws-lc-rs.
//!
//! Owns: sealing and opening `nonce || ciphertext || tag` blobs (the layout of Vault's transit
//! engine) and random bytes. Must not: know about key names, versions or storage.

use aws_lc_rs::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

/// Nonce length of both AEADs (96 bits).
pub const NONCE_LEN: usize = 12;
/// Tag length of both AEADs (128 bits).
pub const TAG_LEN: usize = 16;
/// Key length of both AEADs (256 bits).
pub const KEY_LEN: usize = 32;

/// A failure inside the crypto provider, or a blob that does not authenticate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the random number generator failed")]
    Random,
    #[error("ciphertext is {len} bytes, shorter than nonce + tag ({min} bytes)")]
    TooShort { len: usize, min: usize },
    #[error(
        "ciphertext does not authenticate (wrong key, context or associated data, or tampered)"
    )]
    Authentication,
    #[error("key derivation failed")]
    Derivation,
    #[error("the crypto provider refused the key")]
    BadKey,
}

/// The symmetric key types the key service offers, named as Vault's transit engine names them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum KeyType {
    #[default]
    #[serde(rename = "aes256-gcm96")]
    Aes256Gcm96,
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
}

impl KeyType {
    pub const ALL: [KeyType; 2] = [KeyType::Aes256Gcm96, KeyType::ChaCha20Poly1305];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Aes256Gcm96 => "aes256-gcm96",
            KeyType::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// Parse a Vault key type name; `None` for types Sigil does not offer.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    fn algorithm(self) -> &'static aws_lc_rs::aead::Algorithm {
        match self {
            KeyType::Aes256Gcm96 => &AES_256_GCM,
            KeyType::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        }
    }
}

/// Fill `out` from the system CSPRNG.
pub fn random_fill(out: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(out).map_err(|_| CryptoError::Random)
}

/// A fresh random 256-bit key.
pub fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    random_fill(k.as_mut())?;
    Ok(k)
}

fn less_safe(kt: KeyType, key: &[u8]) -> Result<LessSafeKey, CryptoError> {
    let unbound = UnboundKey::new(kt.algorithm(), key).map_err(|_| CryptoError::BadKey)?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypt `plaintext` under `key` with a random nonce; returns `nonce || ciphertext || tag`.
pub fn seal(kt: KeyType, key: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let k = less_safe(kt, key)?;
    let mut nonce = [0u8; NONCE_LEN];
    random_fill(&mut nonce)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let body = out.get_mut(NONCE_LEN..).ok_or(CryptoError::BadKey)?;
    let tag = k
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
        .map_err(|_| CryptoError::BadKey)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypt a `nonce || ciphertext || tag` blob.
pub fn open(
    kt: KeyType,
    key: &[u8],
    blob: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let min = NONCE_LEN + TAG_LEN;
    let (nonce, body) = blob
        .split_first_chunk::<NONCE_LEN>()
        .filter(|_| blob.len() >= min)
        .ok_or(CryptoError::TooShort {
            len: blob.len(),
            min,
        })?;
    let k = less_safe(kt, key)?;
    let mut buf = Zeroizing::new(body.to_vec());
    let n = k
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| CryptoError::Authentication)?
        .len();
    buf.truncate(n);
    Ok(buf)
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Derive a context-bound key as Vault's transit engine does for `derived` keys with the
/// `hkdf_sha256` KDF: HKDF-SHA256 with the version's key as input keying material, no salt and
/// the request's context as info.
pub fn derive(key: &[u8], context: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(key);
    let info = [context];
    let okm = prk
        .expand(&info, Len(KEY_LEN))
        .map_err(|_| CryptoError::Derivation)?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    okm.fill(out.as_mut())
        .map_err(|_| CryptoError::Derivation)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout_for_both_types() {
        for kt in KeyType::ALL {
            let key = random_key().unwrap();
            let blob = seal(kt, key.as_ref(), b"hello", b"ad").unwrap();
            assert_eq!(blob.len(), NONCE_LEN + 5 + TAG_LEN);
            assert_eq!(&open(kt, key.as_ref(), &blob, b"ad").unwrap()[..], b"hello");
            assert_eq!(
                open(kt, key.as_ref(), &blob, b"other"),
                Err(CryptoError::Authentication)
            );
        }
    }

    #[test]
    fn short_blob_is_refused() {
        let key = random_key().unwrap();
        assert!(matches!(
            open(KeyType::Aes256Gcm96, key.as_ref(), &[0u8; 27], b""),
            Err(CryptoError::TooShort { len: 27, min: 28 })
        ));
    }

    // RFC 5869 test case 3 (SHA-256, zero-length salt and info): the OKM's first 32 bytes.
    #[test]
    fn hkdf_matches_rfc5869_case3() {
        let ikm = [0x0bu8; 22];
        let okm = derive(&ikm, b"").unwrap();
        assert_eq!(
            hex::encode(okm.as_ref()),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        );
    }
}
