//! The seal format's bytes: the versioned header (encode, strict bounded parse) and the segment
//! layout arithmetic (where segment `i` lies, how many a body of `n` bytes holds). Pure: no I/O,
//! no keys. The layout is documented byte for byte in docs/keys.md ("Seal format").
//!
//! A sealed file is untrusted input: every field is bounded, every length is checked before it is
//! used, the encoding is canonical (no trailing bytes, reserved bits zero), and nothing here panics.

use serde::Serialize;

use crate::error::HeaderError;

/// First eight bytes of every sealed file. The high first byte catches 7-bit channels, as PNG's does.
pub const MAGIC: [u8; 8] = *b"\x89SIGSEAL";
/// The only format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes before the variable-length fields: magic, version, header length, algorithm, flags,
/// segment size, nonce prefix, key version.
pub const FIXED_LEN: usize = 31;
/// Magic, version and header length: what must be read to know how long the header is.
pub const PREAMBLE_LEN: usize = 14;
/// Upper bound on a header (the parser refuses longer ones before allocating).
pub const MAX_HEADER_LEN: usize = 8192;
/// AES-GCM tag bytes at the end of every segment.
pub const TAG_LEN: usize = 16;
/// Random per-file nonce prefix (STREAM: prefix ‖ 32-bit counter ‖ last flag = 12-byte GCM nonce).
pub const NONCE_PREFIX_LEN: usize = 7;
/// Default plaintext bytes per segment (1 MiB).
pub const DEFAULT_SEGMENT_SIZE: u32 = 1 << 20;
/// Smallest segment the parser accepts.
pub const MIN_SEGMENT_SIZE: u32 = 1 << 10;
/// Largest segment the parser accepts (bounds the memory one segment can demand).
pub const MAX_SEGMENT_SIZE: u32 = 64 << 20;
/// The 32-bit counter allows at most 2^32 segments per file.
pub const MAX_SEGMENTS: u64 = 1 << 32;
/// Field limits.
pub const MAX_KEY_ID_LEN: usize = 256;
pub const MAX_WRAPPED_KEY_LEN: usize = 2048;
pub const MAX_ASSET_LEN: usize = 253;
pub const MAX_PATH_LEN: usize = 4096;

/// The segment cipher. Only one today; the byte leaves room for chacha20-poly1305 later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// AES-256-GCM in the STREAM construction (code 1).
    Aes256GcmStream,
}

impl Algorithm {
    pub fn code(self) -> u8 {
        match self {
            Self::Aes256GcmStream => 1,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::Aes256GcmStream),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Aes256GcmStream => "aes-256-gcm-stream",
        }
    }
}

/// Which version of which key wrapped the file's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRef {
    pub id: String,
    pub version: u32,
}

/// A header's fields. [`Header::encode`] and [`Header::parse`] are inverse and canonical, so the
/// encoded bytes (bound into every segment as associated data) are a function of the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    pub algorithm: Algorithm,
    pub segment_size: u32,
    #[serde(serialize_with = "hex_ser")]
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub key: KeyRef,
    #[serde(serialize_with = "hex_ser")]
    pub wrapped_key: Vec<u8>,
    /// The data asset (sigil.yaml `data[].name`) whose key wrapped the data key.
    pub asset: String,
    /// The file's path relative to the sealed root, `/`-separated; empty for a pipe.
    pub path: String,
}

fn hex_ser<S: serde::Serializer>(v: &impl AsRef<[u8]>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

impl Header {
    /// The canonical bytes of this header. Fails on a field out of bounds.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        self.validate()?;
        let var = [
            self.key.id.as_bytes(),
            &self.wrapped_key,
            self.asset.as_bytes(),
            self.path.as_bytes(),
        ];
        let len = FIXED_LEN + var.iter().map(|f| 2 + f.len()).sum::<usize>();
        if len > MAX_HEADER_LEN {
            return Err(HeaderError::new(
                "header length",
                len.to_string(),
                format!("at most {MAX_HEADER_LEN} bytes"),
            ));
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        out.push(self.algorithm.code());
        out.push(0); // flags: reserved
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.nonce_prefix);
        out.extend_from_slice(&self.key.version.to_be_bytes());
        for f in var {
            out.extend_from_slice(&u16::try_from(f.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(f);
        }
        Ok(out)
    }

    /// The header length announced by a preamble (the first [`PREAMBLE_LEN`] bytes), checked
    /// against the magic, the version and [`MAX_HEADER_LEN`] before anything more is read.
    pub fn announced_len(preamble: &[u8]) -> Result<usize, HeaderError> {
        let mut c = Cursor::new(preamble);
        let magic = c.take("magic", MAGIC.len())?;
        if magic != MAGIC {
            return Err(HeaderError::new(
                "magic",
                hex::encode(magic),
                "not a sealed file (expected 89 'SIGSEAL'); was it sealed by `sigil seal`?",
            ));
        }
        let version = c.u16("format version")?;
        if version != FORMAT_VERSION {
            return Err(HeaderError::new(
                "format version",
                version.to_string(),
                format!("this sigil reads version {FORMAT_VERSION}; use a newer sigil"),
            ));
        }
        let len = c.u32("header length")? as usize;
        if !(FIXED_LEN + 8..=MAX_HEADER_LEN).contains(&len) {
            return Err(HeaderError::new(
                "header length",
                len.to_string(),
                format!("must be {}..={MAX_HEADER_LEN}", FIXED_LEN + 8),
            ));
        }
        Ok(len)
    }

    /// Parse a complete header (`bytes` is exactly the header: its announced length).
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let len = Self::announced_len(bytes)?;
        if len != bytes.len() {
            return Err(HeaderError::new(
                "header length",
                len.to_string(),
                format!("the header given is {} bytes", bytes.len()),
            ));
        }
        let mut c = Cursor::new(bytes);
        c.pos = PREAMBLE_LEN;
        let code = c.u8("algorithm")?;
        let algorithm = Algorithm::from_code(code).ok_or_else(|| {
            HeaderError::new(
                "algorithm",
                code.to_string(),
                "known: 1 (aes-256-gcm-stream)",
            )
        })?;
        let flags = c.u8("flags")?;
        if flags != 0 {
            return Err(HeaderError::new(
                "flags",
                flags.to_string(),
                "reserved, must be 0",
            ));
        }
        let segment_size = c.u32("segment size")?;
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(c.take("nonce prefix", NONCE_PREFIX_LEN)?);
        let version = c.u32("key version")?;
        let id = c.string("key id")?;
        let wrapped_key = c.var("wrapped key")?.to_vec();
        let asset = c.string("asset")?;
        let path = c.string("path")?;
        if c.pos != bytes.len() {
            return Err(HeaderError::new(
                "header length",
                len.to_string(),
                format!("{} bytes after the last field", bytes.len() - c.pos),
            ));
        }
        let h = Self {
            algorithm,
            segment_size,
            nonce_prefix,
            key: KeyRef { id, version },
            wrapped_key,
            asset,
            path,
        };
        h.validate()?;
        Ok(h)
    }

    fn validate(&self) -> Result<(), HeaderError> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(HeaderError::new(
                "segment size",
                self.segment_size.to_string(),
                format!("must be {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}"),
            ));
        }
        if self.key.version == 0 {
            return Err(HeaderError::new("key version", "0", "versions start at 1"));
        }
        bounded("key id", &self.key.id, 1, MAX_KEY_ID_LEN)?;
        printable("key id", &self.key.id)?;
        if self.wrapped_key.is_empty() || self.wrapped_key.len() > MAX_WRAPPED_KEY_LEN {
            return Err(HeaderError::new(
                "wrapped key",
                format!("{} bytes", self.wrapped_key.len()),
                format!("must be 1..={MAX_WRAPPED_KEY_LEN} bytes"),
            ));
        }
        validate_asset(&self.asset)?;
        validate_rel_path(&self.path)?;
        Ok(())
    }
}

/// A data asset name: 1..=253 printable ASCII characters, no spaces.
pub fn validate_asset(asset: &str) -> Result<(), HeaderError> {
    bounded("asset", asset, 1, MAX_ASSET_LEN)?;
    printable("asset", asset)
}

/// A relative path: empty (a pipe) or `/`-separated components, none empty, `.` or `..`, no
/// backslash or control character, at most [`MAX_PATH_LEN`] bytes.
pub fn validate_rel_path(path: &str) -> Result<(), HeaderError> {
    bounded("path", path, 0, MAX_PATH_LEN)?;
    if path.is_empty() {
        return Ok(());
    }
    let bad = path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
        || path.chars().any(|ch| ch.is_control() || ch == '\\');
    if bad {
        return Err(HeaderError::new(
            "path",
            format!("{path:?}"),
            "a relative path: `/`-separated names, none empty, `.` or `..`",
        ));
    }
    Ok(())
}

fn bounded(field: &'static str, v: &str, min: usize, max: usize) -> Result<(), HeaderError> {
    if (min..=max).contains(&v.len()) {
        Ok(())
    } else {
        Err(HeaderError::new(
            field,
            format!("{} bytes", v.len()),
            format!("must be {min}..={max} bytes"),
        ))
    }
}

fn printable(field: &'static str, v: &str) -> Result<(), HeaderError> {
    if v.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(HeaderError::new(
            field,
            format!("{v:?}"),
            "printable ASCII without spaces",
        ))
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0 }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], HeaderError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        match end.and_then(|e| self.b.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(HeaderError::new(
                field,
                format!("{n} bytes at offset {}", self.pos),
                format!("the header ends at {} bytes (truncated?)", self.b.len()),
            )),
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, HeaderError> {
        Ok(self.take(field, 1)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, HeaderError> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(field, 2)?);
        Ok(u16::from_be_bytes(a))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, HeaderError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(field, 4)?);
        Ok(u32::from_be_bytes(a))
    }

    fn var(&mut self, field: &'static str) -> Result<&'a [u8], HeaderError> {
        let n = self.u16(field)? as usize;
        self.take(field, n)
    }

    fn string(&mut self, field: &'static str) -> Result<String, HeaderError> {
        let b = self.var(field)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| HeaderError::new(field, hex::encode(b), "must be UTF-8"))
    }
}

/// Where a body's segments lie, computed from the segment size and the body's length (the bytes
/// after the header). Every segment but the last holds exactly `segment_size` plaintext bytes; the
/// last holds 1..=`segment_size` (0 only when the whole plaintext is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub segment_size: u32,
    pub segments: u64,
    pub plaintext_len: u64,
}

impl Layout {
    /// Ciphertext bytes of a full segment.
    pub fn stride(segment_size: u32) -> u64 {
        u64::from(segment_size) + TAG_LEN as u64
    }

    /// The layout of a body of `body_len` bytes, or why no valid file has that length.
    pub fn from_body_len(segment_size: u32, body_len: u64) -> Result<Self, crate::SegmentError> {
        let stride = Self::stride(segment_size);
        if body_len == 0 {
            return Err(crate::SegmentError::Truncated {
                segment: 0,
                detail: "no segments after the header".into(),
            });
        }
        let segments = body_len.div_ceil(stride);
        if segments > MAX_SEGMENTS {
            return Err(crate::SegmentError::TooMany { segments });
        }
        let last_ct = body_len - (segments - 1) * stride;
        if last_ct < TAG_LEN as u64 {
            return Err(crate::SegmentError::Truncated {
                segment: segments - 1,
                detail: format!("final segment is {last_ct} bytes, shorter than its 16-byte tag"),
            });
        }
        Ok(Self {
            segment_size,
            segments,
            plaintext_len: (segments - 1) * u64::from(segment_size) + (last_ct - TAG_LEN as u64),
        })
    }

    /// Offset of segment `i` from the start of the body.
    pub fn offset(&self, i: u64) -> u64 {
        i * Self::stride(self.segment_size)
    }

    /// Ciphertext length of segment `i` (which must be < `segments`).
    pub fn ct_len(&self, i: u64) -> u64 {
        let seg = u64::from(self.segment_size);
        if i + 1 < self.segments {
            seg + TAG_LEN as u64
        } else {
            self.plaintext_len - i * seg + TAG_LEN as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            algorithm: Algorithm::Aes256GcmStream,
            segment_size: DEFAULT_SEGMENT_SIZE,
            nonce_prefix: [7; NONCE_PREFIX_LEN],
            key: KeyRef {
                id: "local:0011223344556677".into(),
                version: 3,
            },
            wrapped_key: vec![1; 60],
            asset: "model-weights".into(),
            path: "llama/model-00001.safetensors".into(),
        }
    }

    #[test]
    fn encode_parse_roundtrip() {
        let h = sample();
        let b = h.encode().unwrap();
        assert_eq!(Header::parse(&b).unwrap(), h);
        assert_eq!(Header::announced_len(&b).unwrap(), b.len());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = sample().encode().unwrap();
        for n in 0..b.len() {
            assert!(Header::parse(b.get(..n).unwrap()).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn bad_paths_refused() {
        for p in ["/abs", "a//b", "../x", "a/./b", "a\\b", "a/", "x\0y"] {
            assert!(validate_rel_path(p).is_err(), "{p}");
        }
        for p in ["", "a", "a/b.c", "dir/sub/file"] {
            assert!(validate_rel_path(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn layout_arithmetic() {
        let s = 1024u32;
        let st = Layout::stride(s);
        let l = Layout::from_body_len(s, 16).unwrap();
        assert_eq!((l.segments, l.plaintext_len), (1, 0));
        let l = Layout::from_body_len(s, 2 * st).unwrap();
        assert_eq!((l.segments, l.plaintext_len), (2, 2048));
        let l = Layout::from_body_len(s, st + 17).unwrap();
        assert_eq!((l.segments, l.plaintext_len, l.ct_len(1)), (2, 1025, 17));
        assert!(Layout::from_body_len(s, st + 5).is_err());
        assert!(Layout::from_body_len(s, 0).is_err());
    }
}
