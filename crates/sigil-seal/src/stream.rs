//! The STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption
//! and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015) over AES-256-GCM: segment `i` is sealed
//! with the nonce `prefix(7) ‖ i as u32 big-endian ‖ last(1)` and the whole encoded header as
//! associated data. A segment moved to another position (reorder), another file (splice: other
//! prefix and header), or the end of the file (truncation: wrong last flag) does not authenticate,
//! and neither does any segment after a header byte changed. Pure: bytes in, bytes out.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::error::SegmentError;
use crate::format::{MAX_SEGMENTS, NONCE_PREFIX_LEN, TAG_LEN};
use crate::key::DataKey;

/// One file's segment cipher: its data key, nonce prefix and encoded header.
pub struct SegmentCipher {
    key: LessSafeKey,
    prefix: [u8; NONCE_PREFIX_LEN],
    header: Vec<u8>,
}

impl std::fmt::Debug for SegmentCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCipher")
            .field("prefix", &hex::encode(self.prefix))
            .finish_non_exhaustive()
    }
}

impl SegmentCipher {
    /// `header` is the encoded header, bound into every segment.
    pub fn new(
        data_key: &DataKey,
        prefix: [u8; NONCE_PREFIX_LEN],
        header: Vec<u8>,
    ) -> Result<Self, SegmentError> {
        let key = UnboundKey::new(&AES_256_GCM, data_key.as_bytes())
            .map(LessSafeKey::new)
            .map_err(|_| SegmentError::Malformed {
                segment: 0,
                detail: "cannot build an AES-256-GCM key from the data key".into(),
            })?;
        Ok(Self {
            key,
            prefix,
            header,
        })
    }

    fn nonce(&self, index: u64, last: bool) -> Result<Nonce, SegmentError> {
        let counter = u32::try_from(index).map_err(|_| SegmentError::TooMany {
            segments: index.saturating_add(1).max(MAX_SEGMENTS + 1),
        })?;
        let mut n = [0u8; NONCE_LEN];
        let (p, rest) = n.split_at_mut(NONCE_PREFIX_LEN);
        p.copy_from_slice(&self.prefix);
        let (c, l) = rest.split_at_mut(4);
        c.copy_from_slice(&counter.to_be_bytes());
        if let Some(b) = l.first_mut() {
            *b = u8::from(last);
        }
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Encrypt the plaintext `buf[..len]` as segment `index` and put its tag after it; returns
    /// the segment's length (`len + 16`). `buf` must have room for the tag.
    pub fn seal(
        &self,
        index: u64,
        last: bool,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, SegmentError> {
        let nonce = self.nonce(index, last)?;
        let short = || SegmentError::Malformed {
            segment: index,
            detail: "segment buffer too small".into(),
        };
        let pt = buf.get_mut(..len).ok_or_else(short)?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(self.header.as_slice()), pt)
            .map_err(|_| SegmentError::Malformed {
                segment: index,
                detail: "encryption failed".into(),
            })?;
        buf.get_mut(len..len + TAG_LEN)
            .ok_or_else(short)?
            .copy_from_slice(tag.as_ref());
        Ok(len + TAG_LEN)
    }

    /// Authenticate and decrypt segment `index`, `buf[..len]` (ciphertext ‖ tag), in place;
    /// returns the plaintext length (`len - 16`).
    pub fn open(
        &self,
        index: u64,
        last: bool,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, SegmentError> {
        if len < TAG_LEN {
            return Err(SegmentError::Truncated {
                segment: index,
                detail: format!("{len} bytes, shorter than the 16-byte tag"),
            });
        }
        let nonce = self.nonce(index, last)?;
        let ct = buf.get_mut(..len).ok_or(SegmentError::Malformed {
            segment: index,
            detail: "segment buffer too small".into(),
        })?;
        let n = self
            .key
            .open_in_place(nonce, Aad::from(self.header.as_slice()), ct)
            .map_err(|_| SegmentError::Authentication { segment: index })?
            .len();
        Ok(n)
    }
}
