//! Random access: decrypt a byte range of a sealed file reading only the segments that hold it.
//! The layout follows from the header's segment size and the file's length, so segment `i` is at
//! a computed offset. Each segment read is authenticated at its position and with its last flag,
//! so a truncated file fails as soon as the (now wrong) final segment is read; segments before it
//! are authentic and are returned.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::envelope::{Expect, cipher_for, read_header};
use crate::error::{SealError, SegmentError};
use crate::format::{Header, Layout};
use crate::key::DataKeySource;
use crate::stream::SegmentCipher;

/// A sealed file opened for random access.
#[derive(Debug)]
pub struct SealedReader<R> {
    inner: R,
    header: Header,
    cipher: SegmentCipher,
    layout: Layout,
    body_start: u64,
    name: PathBuf,
    buf: Vec<u8>,
}

impl<R: Read + Seek> SealedReader<R> {
    /// Read the header, check the binding, unwrap the data key and compute the layout.
    pub fn open(
        mut inner: R,
        keys: &dyn DataKeySource,
        expect: &Expect<'_>,
        name: &Path,
    ) -> Result<Self, SealError> {
        inner
            .seek(SeekFrom::Start(0))
            .map_err(|e| SealError::io(name, "seek", e))?;
        let (header, bytes) = read_header(&mut inner, name)?;
        let body_start = bytes.len() as u64;
        let end = inner
            .seek(SeekFrom::End(0))
            .map_err(|e| SealError::io(name, "seek", e))?;
        let layout = Layout::from_body_len(header.segment_size, end.saturating_sub(body_start))
            .map_err(|source| SealError::Segment {
                path: name.to_path_buf(),
                source,
            })?;
        let cipher = cipher_for(&header, bytes, keys, expect, name)?;
        Ok(Self {
            inner,
            header,
            cipher,
            layout,
            body_start,
            name: name.to_path_buf(),
            buf: Vec::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Plaintext length, from the file's length.
    pub fn plaintext_len(&self) -> u64 {
        self.layout.plaintext_len
    }

    pub fn segments(&self) -> u64 {
        self.layout.segments
    }

    /// Decrypt segment `i` into the internal buffer; returns its plaintext.
    pub fn segment(&mut self, i: u64) -> Result<&[u8], SealError> {
        let seg_err = |source| SealError::Segment {
            path: self.name.clone(),
            source,
        };
        if i >= self.layout.segments {
            return Err(seg_err(SegmentError::Malformed {
                segment: i,
                detail: format!("the file has {} segments", self.layout.segments),
            }));
        }
        let len = usize::try_from(self.layout.ct_len(i)).unwrap_or(usize::MAX);
        self.buf.resize(len, 0);
        self.inner
            .seek(SeekFrom::Start(self.body_start + self.layout.offset(i)))
            .map_err(|e| SealError::io(&self.name, "seek", e))?;
        self.inner.read_exact(&mut self.buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                seg_err(SegmentError::Truncated {
                    segment: i,
                    detail: "the file shrank while being read".into(),
                })
            } else {
                SealError::io(&self.name, "read", e)
            }
        })?;
        let last = i + 1 == self.layout.segments;
        let n = self
            .cipher
            .open(i, last, &mut self.buf, len)
            .map_err(seg_err)?;
        Ok(self.buf.get(..n).unwrap_or_default())
    }

    /// Write plaintext bytes `offset..offset+len` (clipped to the end) to `out`; returns how many.
    pub fn read_range<W: Write>(
        &mut self,
        offset: u64,
        len: u64,
        out: &mut W,
    ) -> Result<u64, SealError> {
        let total = self.layout.plaintext_len;
        let end = offset.saturating_add(len).min(total);
        if offset >= end {
            return Ok(0);
        }
        let seg = u64::from(self.layout.segment_size);
        let mut written = 0;
        for i in offset / seg..=(end - 1) / seg {
            let start = i * seg;
            let name = self.name.clone();
            let pt = self.segment(i)?;
            let from = usize::try_from(offset.saturating_sub(start)).unwrap_or(0);
            let to = usize::try_from((end - start).min(pt.len() as u64)).unwrap_or(0);
            let part = pt.get(from..to).unwrap_or_default();
            out.write_all(part)
                .map_err(|e| SealError::io(&name, "write", e))?;
            written += part.len() as u64;
        }
        Ok(written)
    }
}
