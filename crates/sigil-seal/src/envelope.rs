//! Envelope encryption over any `Read`/`Write` (a file, a pipe, a socket): a fresh data key from
//! the [`DataKeySource`], the header, then the segments through the parallel pipeline. The
//! caller names the input and output (a path, or `<stdin>`) so that errors say where.

use std::io::{Read, Write};
use std::path::Path;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::error::{BindingError, KeyError, SealError, SegmentError};
use crate::format::{
    self, Algorithm, DEFAULT_SEGMENT_SIZE, Header, NONCE_PREFIX_LEN, PREAMBLE_LEN, TAG_LEN,
};
use crate::key::{DataKeySource, WrapContext};
use crate::pipeline::{self, StreamError};
use crate::stream::SegmentCipher;

/// How to seal.
#[derive(Debug, Clone, Copy)]
pub struct SealOptions {
    /// Plaintext bytes per segment ([`format::MIN_SEGMENT_SIZE`]..=[`format::MAX_SEGMENT_SIZE`]).
    pub segment_size: u32,
    /// Worker threads (None: one per core).
    pub jobs: Option<usize>,
}

impl Default for SealOptions {
    fn default() -> Self {
        Self {
            segment_size: DEFAULT_SEGMENT_SIZE,
            jobs: None,
        }
    }
}

/// What was sealed or unsealed.
#[derive(Debug, Clone)]
pub struct Summary {
    pub header: Header,
    pub segments: u64,
    pub plaintext_bytes: u64,
}

/// What the caller expects the header to say; `None` accepts what it says.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect<'a> {
    pub asset: Option<&'a str>,
    pub path: Option<&'a str>,
}

impl Expect<'_> {
    /// Refuse a header bound to another asset or path than expected.
    pub fn check(&self, h: &Header) -> Result<(), BindingError> {
        if let Some(a) = self.asset
            && a != h.asset
        {
            return Err(BindingError {
                field: "asset",
                sealed: h.asset.clone(),
                expected: a.to_owned(),
                hint: "unseal with the asset the file was sealed for (`sigil seal --inspect`)",
            });
        }
        if let Some(p) = self.path
            && p != h.path
        {
            return Err(BindingError {
                field: "path",
                sealed: h.path.clone(),
                expected: p.to_owned(),
                hint: "a sealed file was moved or swapped inside the sealed directory",
            });
        }
        Ok(())
    }
}

/// Seal `input` to `output`, bound to `ctx` (asset and relative path).
#[allow(
    clippy::too_many_arguments,
    reason = "names for errors travel with the streams"
)]
pub fn seal<R: Read, W: Write + Send>(
    input: R,
    mut output: W,
    ctx: &WrapContext<'_>,
    keys: &dyn DataKeySource,
    opts: &SealOptions,
    progress: &(dyn Fn(u64) + Sync),
    in_name: &Path,
    out_name: &Path,
) -> Result<Summary, SealError> {
    let herr = |source| SealError::Header {
        path: in_name.to_path_buf(),
        source,
    };
    format::validate_asset(ctx.asset).map_err(herr)?;
    format::validate_rel_path(ctx.path).map_err(herr)?;
    let new = keys.wrap(ctx).map_err(|source| SealError::Key {
        path: in_name.to_path_buf(),
        source,
    })?;
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    SystemRandom::new()
        .fill(&mut nonce_prefix)
        .map_err(|_| SealError::Key {
            path: in_name.to_path_buf(),
            source: KeyError::Random,
        })?;
    let header = Header {
        algorithm: Algorithm::Aes256GcmStream,
        segment_size: opts.segment_size,
        nonce_prefix,
        key: new.key_ref,
        wrapped_key: new.wrapped,
        asset: ctx.asset.to_owned(),
        path: ctx.path.to_owned(),
    };
    let bytes = header.encode().map_err(herr)?;
    output
        .write_all(&bytes)
        .map_err(|e| SealError::io(out_name, "write", e))?;
    let cipher =
        SegmentCipher::new(&new.key, nonce_prefix, bytes).map_err(|source| SealError::Segment {
            path: in_name.to_path_buf(),
            source,
        })?;
    let seg = opts.segment_size as usize;
    let (segments, plaintext_bytes) = pipeline::run(
        input,
        output,
        pipeline::Shape {
            chunk: seg,
            out_cap: seg + TAG_LEN,
            jobs: pipeline::jobs(opts.jobs),
            empty_ok: true,
        },
        &|i, last, buf: &mut [u8], len| cipher.seal(i, last, buf, len),
        progress,
    )
    .map_err(|e| stream_error(e, in_name, out_name))?;
    Ok(Summary {
        header,
        segments,
        plaintext_bytes,
    })
}

/// Read and parse the header at the start of `r`; returns it and its exact bytes.
pub fn read_header<R: Read>(r: &mut R, name: &Path) -> Result<(Header, Vec<u8>), SealError> {
    let herr = |source| SealError::Header {
        path: name.to_path_buf(),
        source,
    };
    let mut pre = [0u8; PREAMBLE_LEN];
    read_exact_or(r, &mut pre, name, "the header preamble")?;
    let len = Header::announced_len(&pre).map_err(herr)?;
    let mut bytes = vec![0u8; len];
    let (head, rest) = bytes.split_at_mut(PREAMBLE_LEN);
    head.copy_from_slice(&pre);
    read_exact_or(r, rest, name, "the header")?;
    let h = Header::parse(&bytes).map_err(herr)?;
    Ok((h, bytes))
}

fn read_exact_or<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    name: &Path,
    what: &'static str,
) -> Result<(), SealError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            SealError::Segment {
                path: name.to_path_buf(),
                source: SegmentError::Truncated {
                    segment: 0,
                    detail: format!("the file ends inside {what}"),
                },
            }
        } else {
            SealError::io(name, "read", e)
        }
    })
}

/// The segment cipher of a parsed header: binding checked, data key unwrapped.
pub fn cipher_for(
    header: &Header,
    bytes: Vec<u8>,
    keys: &dyn DataKeySource,
    expect: &Expect<'_>,
    name: &Path,
) -> Result<SegmentCipher, SealError> {
    expect.check(header).map_err(|source| SealError::Binding {
        path: name.to_path_buf(),
        source,
    })?;
    let ctx = WrapContext {
        asset: &header.asset,
        path: &header.path,
    };
    let dk = keys
        .unwrap(&ctx, &header.key, &header.wrapped_key)
        .map_err(|source| SealError::Key {
            path: name.to_path_buf(),
            source,
        })?;
    SegmentCipher::new(&dk, header.nonce_prefix, bytes).map_err(|source| SealError::Segment {
        path: name.to_path_buf(),
        source,
    })
}

/// Unseal `input` to `output`. Each segment is authenticated before its plaintext is written;
/// truncation is found at the end, so a caller writing to a file must only keep the output when
/// this returns `Ok` (the file edge writes to a temporary file and renames it).
#[allow(
    clippy::too_many_arguments,
    reason = "names for errors travel with the streams"
)]
pub fn unseal<R: Read, W: Write + Send>(
    mut input: R,
    output: W,
    keys: &dyn DataKeySource,
    expect: &Expect<'_>,
    jobs: Option<usize>,
    progress: &(dyn Fn(u64) + Sync),
    in_name: &Path,
    out_name: &Path,
) -> Result<Summary, SealError> {
    let (header, bytes) = read_header(&mut input, in_name)?;
    let cipher = cipher_for(&header, bytes, keys, expect, in_name)?;
    let ct = header.segment_size as usize + TAG_LEN;
    let (segments, ct_bytes) = pipeline::run(
        input,
        output,
        pipeline::Shape {
            chunk: ct,
            out_cap: ct,
            jobs: pipeline::jobs(jobs),
            empty_ok: false,
        },
        &|i, last, buf: &mut [u8], len| cipher.open(i, last, buf, len),
        progress,
    )
    .map_err(|e| stream_error(e, in_name, out_name))?;
    let plaintext_bytes = ct_bytes.saturating_sub(segments.saturating_mul(TAG_LEN as u64));
    Ok(Summary {
        header,
        segments,
        plaintext_bytes,
    })
}

fn stream_error(e: StreamError, in_name: &Path, out_name: &Path) -> SealError {
    match e {
        StreamError::Read(e) => SealError::io(in_name, "read", e),
        StreamError::Write(e) => SealError::io(out_name, "write", e),
        StreamError::Segment(source) => SealError::Segment {
            path: in_name.to_path_buf(),
            source,
        },
    }
}
