//! 7z archives (sevenz-rust2: LZMA, LZMA2, BZip2, Deflate and copy; no AES): each member is
//! decompressed with the scan's size limit into a spill buffer and scanned from its own bytes.
//! Encrypted archives and methods the crate lacks are reported, never silently passed.
//!
//! Blocks made of LZMA2 and BCJ x86 coders (7-Zip's and py7zr's defaults) up to 64 MiB are
//! decoded here with lzma-rust2's readers and an LZMA2 dictionary no larger than the block:
//! sevenz-rust2 allocates and zeroes the full declared dictionary (16-64 MiB) for every block,
//! which in a non-solid archive of many small members costs far more than scanning them.
//! For the same reason a small archive's LZMA2-encoded header (py7zr writes them) is decoded
//! here and handed to sevenz-rust2 as a plain header ([`plain_header_copy`]). Header parsing,
//! layout, and every other block shape (LZMA, BZip2, Deflate, copy, other filters) stay with
//! sevenz-rust2. Entry CRCs are checked on both paths.

use sevenz_rust2::{Archive, ArchiveReader, Password};

use crate::report::{Category, Format, Verdict};
use crate::scan::{Ctx, join, scan_slice};
use crate::source::{self, Slice};

fn escapes(name: &str) -> bool {
    let n = name.replace('\\', "/");
    let mut depth: i64 = 0;
    if n.starts_with('/') || n.get(1..2) == Some(":") {
        return true;
    }
    for c in n.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// 7z method ids decoded here.
const LZMA2: &[u8] = &[0x21];
const BCJ_X86: &[u8] = &[0x03, 0x03, 0x01, 0x03];
/// Blocks up to this size (uncompressed) take the capped-dictionary path.
const FAST_BLOCK_MAX: u64 = 64 * 1024 * 1024;
/// Signature header size: pack positions count from its end.
const SIGNATURE_HEADER: u64 = 32;

type Member = (String, Option<Slice>, Option<String>);

/// Whether a block is a chain of LZMA2 and BCJ x86 coders (one packed stream) of at most
/// [`FAST_BLOCK_MAX`] bytes.
fn fast_shape(b: &sevenz_rust2::Block) -> bool {
    let chain: Vec<&[u8]> = b
        .ordered_coder_iter()
        .map(|(_, c)| c.encoder_method_id())
        .collect();
    chain.len() == b.coders.len()
        && !chain.is_empty()
        && chain.iter().all(|id| *id == LZMA2 || *id == BCJ_X86)
        && b.get_unpack_size() <= FAST_BLOCK_MAX
}

/// The decoder chain of a [`fast_shape`] block over its packed bytes. LZMA2 gets a dictionary
/// the size of that coder's output: a stream never refers further back than what it has
/// produced, so this is always enough, and it is what keeps small blocks cheap.
fn fast_decoder(b: &sevenz_rust2::Block, packed: Slice) -> Option<Box<dyn std::io::Read>> {
    let mut r: Box<dyn std::io::Read> = Box::new(std::io::BufReader::new(packed));
    for (i, c) in b.ordered_coder_iter() {
        r = match c.encoder_method_id() {
            LZMA2 => {
                let out = b.get_unpack_size_at_index(i).max(4096);
                let dict = u32::try_from(out).ok()?;
                Box::new(lzma_rust2::Lzma2Reader::new(r, dict, None))
            }
            BCJ_X86 => Box::new(lzma_rust2::filter::bcj::BcjReader::new_x86(r, 0)),
            _ => return None,
        };
    }
    Some(r)
}

/// Members of an archive whose blocks all have [`fast_shape`], decoded block by block; `None`
/// when any block has another shape.
fn fast_members(archive: &Archive, s: &Slice, limit: u64) -> Option<Vec<Member>> {
    let map = &archive.stream_map;
    if !archive.blocks.iter().all(fast_shape) {
        return None;
    }
    // Files with data, per block, in archive order.
    let mut per_block: Vec<Vec<usize>> = vec![Vec::new(); archive.blocks.len()];
    for (fi, b) in map.file_block_index.iter().enumerate() {
        if let Some(list) = b.and_then(|b| per_block.get_mut(b)) {
            list.push(fi);
        }
    }
    let mut out = Vec::new();
    for (bi, block) in archive.blocks.iter().enumerate() {
        let pack = *map.block_first_pack_stream_index().get(bi)?;
        let off = SIGNATURE_HEADER
            .checked_add(archive.pack_pos())?
            .checked_add(map.pack_stream_offsets().get(pack).copied()?)?;
        let len = archive.pack_sizes().get(pack).copied()?;
        let declared = block.get_unpack_size();
        let decoder = fast_decoder(block, s.sub(off, len))?;
        // One byte past the declared size is enough to know the header lies; decoding stops
        // there, so a block cannot expand beyond what its header admits (or the scan's limit).
        let cap = declared.saturating_add(1).min(limit);
        let (data, spill_err) = source::spill(std::io::Read::take(decoder, cap), cap);
        let produced = data.as_ref().map_or(0, Slice::len);
        let mut block_err = if produced > declared {
            Some(format!(
                "block {bi} decodes to more than the {declared} bytes its header says; decoding stopped there"
            ))
        } else {
            match spill_err {
                Some(e) => Some(format!("block {bi}: {e}")),
                None if produced != declared => Some(format!(
                    "block {bi} decodes to {produced} bytes, its header says {declared}"
                )),
                None => None,
            }
        };
        let mut at = 0u64;
        let block_start = out.len();
        for &fi in per_block.get(bi).into_iter().flatten() {
            let Some(entry) = archive.files.get(fi) else {
                continue;
            };
            if entry.is_directory() || !entry.has_stream() {
                continue;
            }
            let member = data.as_ref().map(|d| d.sub(at, entry.size));
            let short = member.as_ref().is_none_or(|m| m.len() < entry.size);
            let mut err = if short {
                Some(block_err.take().unwrap_or_else(|| {
                    format!("block {bi} ends before this member's {} bytes", entry.size)
                }))
            } else {
                None
            };
            if err.is_none()
                && entry.has_crc
                && let Some(m) = &member
                && crc32(m).is_some_and(|c| u64::from(c) != entry.crc)
            {
                err = Some(format!("CRC mismatch (stored {:08x})", entry.crc));
            }
            out.push((entry.name().to_owned(), member, err));
            at = at.saturating_add(entry.size);
        }
        if let Some(e) = block_err {
            // Not tied to one member (e.g. a size mismatch after the last one): report it on
            // the last member of the block, or on the block.
            match out.get_mut(block_start..).and_then(<[Member]>::last_mut) {
                Some((_, _, slot @ None)) => *slot = Some(e),
                _ => out.push((format!("<block {bi}>"), None, Some(e))),
            }
        }
    }
    Some(out)
}

fn crc32(s: &Slice) -> Option<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut r = s.clone();
    let mut buf = s.read_buf(64 * 1024);
    loop {
        let n = std::io::Read::read(&mut r, &mut buf).ok()?;
        if n == 0 {
            return Some(h.finalize());
        }
        h.update(buf.get(..n)?);
    }
}

/// Archives up to this size get their encoded header decoded here (see [`plain_header_copy`]).
const HEADER_REWRITE_MAX: u64 = 16 * 1024 * 1024;
const SIGNATURE: &[u8] = &[b'7', b'z', 0xBC, 0xAF, 0x27, 0x1C];

/// A reader of the 7z header encoding (7zFormat.txt): bytes and variable-length NUMBERs.
struct Cursor7<'a>(&'a [u8]);

impl Cursor7<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    /// NUMBER: the leading one bits of the first byte say how many little-endian bytes follow;
    /// the first byte's remaining bits are the most significant part.
    fn number(&mut self) -> Option<u64> {
        let first = self.byte()?;
        let mut mask = 0x80u8;
        let mut value = 0u64;
        for i in 0..8 {
            if first & mask == 0 {
                let high = u64::from(first & mask.wrapping_sub(1));
                return Some(value | (high << (8 * i)));
            }
            value |= u64::from(self.byte()?) << (8 * i);
            mask >>= 1;
        }
        Some(value)
    }

    fn expect(&mut self, id: u8) -> Option<()> {
        (self.byte()? == id).then_some(())
    }
}

/// The packed position, packed size, unpacked size and expected CRC of an encoded header that
/// is one LZMA2 coder over one packed stream; `None` for any other shape.
fn encoded_header_stream(h: &[u8]) -> Option<(u64, u64, u64, Option<u32>)> {
    let mut c = Cursor7(h);
    c.expect(0x17)?; // kEncodedHeader
    c.expect(0x06)?; // kPackInfo
    let pack_pos = c.number()?;
    (c.number()? == 1).then_some(())?;
    c.expect(0x09)?; // kSize
    let pack_size = c.number()?;
    let mut id = c.byte()?;
    if id == 0x0A {
        // kCRC of the packed stream: AllAreDefined, then the CRC when defined.
        if c.byte()? == 1 {
            for _ in 0..4 {
                c.byte()?;
            }
        } else {
            return None;
        }
        id = c.byte()?;
    }
    (id == 0x00).then_some(())?; // kEnd
    c.expect(0x07)?; // kUnPackInfo
    c.expect(0x0B)?; // kFolder
    (c.number()? == 1).then_some(())?;
    c.expect(0x00)?; // not external
    (c.number()? == 1).then_some(())?; // one coder
    let flags = c.byte()?;
    // Simple coder (no 0x10), one-byte id, attributes present: LZMA2 and its dictionary byte.
    (flags & 0xDF == 0x01 && flags & 0x20 != 0).then_some(())?;
    c.expect(LZMA2.first().copied()?)?;
    let props = c.number()?;
    for _ in 0..props {
        c.byte()?;
    }
    c.expect(0x0C)?; // kCodersUnPackSize
    let unpack = c.number()?;
    let mut crc = None;
    let mut id = c.byte()?;
    if id == 0x0A {
        if c.byte()? != 1 {
            return None;
        }
        let b: [u8; 4] = [c.byte()?, c.byte()?, c.byte()?, c.byte()?];
        crc = Some(u32::from_le_bytes(b));
        id = c.byte()?;
    }
    (id == 0x00).then_some(())?; // end of UnPackInfo
    c.expect(0x00)?; // end of StreamsInfo
    Some((pack_pos, pack_size, unpack, crc))
}

/// For a small archive whose header is encoded with LZMA2 (py7zr writes them so), an in-memory
/// copy with that header decoded in place: the start header is rewritten (size, CRCs) to point at
/// the plain header, the packed streams stay where they were. sevenz-rust2 would decode the
/// header with the full declared dictionary (16 MiB and more); here it is the header's size.
/// `None` whenever anything is not exactly as expected: the caller then reads the original.
fn plain_header_copy(s: &Slice) -> Option<Slice> {
    if s.len() > HEADER_REWRITE_MAX {
        return None;
    }
    // The start header and the header first: the archive is copied only once it qualifies.
    let sig = s.bytes_at(0, 32).ok()??;
    (sig.get(..6)? == SIGNATURE).then_some(())?;
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(sig.get(at..at + 8)?.try_into().ok()?))
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(sig.get(at..at + 4)?.try_into().ok()?))
    };
    let start = SIGNATURE_HEADER.checked_add(u64_at(12)?)?;
    let header = s
        .bytes_at(start, usize::try_from(u64_at(20)?).ok()?)
        .ok()??;
    // The original's own checks first: a damaged start or encoded header is left to
    // sevenz-rust2, which reports it, rather than repaired by the rewrite.
    (crc32fast::hash(sig.get(12..32)?) == u32_at(8)?).then_some(())?;
    (crc32fast::hash(&header) == u32_at(28)?).then_some(())?;
    let (pack_pos, pack_size, unpack, crc) = encoded_header_stream(&header)?;
    (unpack <= HEADER_REWRITE_MAX).then_some(())?;
    let packed = s.sub(SIGNATURE_HEADER.checked_add(pack_pos)?, pack_size);
    let dict = u32::try_from(unpack.max(4096)).ok()?;
    let mut plain = Vec::new();
    let reader = lzma_rust2::Lzma2Reader::new(std::io::BufReader::new(packed), dict, None);
    std::io::Read::read_to_end(&mut std::io::Read::take(reader, unpack), &mut plain).ok()?;
    (plain.len() as u64 == unpack).then_some(())?;
    let plain_crc = crc32fast::hash(&plain);
    if crc.is_some_and(|c| c != plain_crc) {
        return None;
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut s.sub(0, start), &mut bytes).ok()?;
    (bytes.len() as u64 == start).then_some(())?;
    bytes.extend_from_slice(&plain);
    let patch = |b: &mut Vec<u8>, at: usize, v: &[u8]| -> Option<()> {
        b.get_mut(at..at + v.len())?.copy_from_slice(v);
        Some(())
    };
    patch(&mut bytes, 20, &(plain.len() as u64).to_le_bytes())?;
    patch(&mut bytes, 28, &plain_crc.to_le_bytes())?;
    let start_crc = crc32fast::hash(bytes.get(12..32)?);
    patch(&mut bytes, 8, &start_crc.to_le_bytes())?;
    Some(Slice::mem(bytes))
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) -> Format {
    let rewritten = plain_header_copy(s);
    let s = rewritten.as_ref().unwrap_or(s);
    let max_entries = ctx.cfg.max_entries;
    // One header parse (an encoded header is itself LZMA-compressed) serves both paths.
    let mut reader = match ArchiveReader::new(s.clone(), Password::empty()) {
        Ok(r) => r,
        Err(e) => {
            ctx.malformed(
                inner,
                0,
                "7z",
                format!("7z archive cannot be read: {e}; its contents were not inspected"),
            );
            return Format::SevenZip;
        }
    };
    let archive = reader.archive();
    // The blocks' declared sizes against the archive's, before any block is decoded.
    let declared = archive
        .blocks
        .iter()
        .fold(0u64, |a, b| a.saturating_add(b.get_unpack_size()));
    if !ctx.admit(inner, 0, s.len(), declared) {
        return Format::SevenZip;
    }
    let limit = ctx.inflate_room();
    if archive.files.len() <= max_entries
        && let Some(members) = fast_members(archive, s, limit)
    {
        scan_members(ctx, inner, members);
        return Format::SevenZip;
    }
    let mut members: Vec<Member> = Vec::new();
    let mut left = limit;
    let r = reader.for_each_entries(|entry, rd| {
        if entry.is_directory() || !entry.has_stream() {
            return Ok(true);
        }
        // The budget is for the whole archive, not each member.
        let (slice, err) = source::spill(rd, left);
        left = left.saturating_sub(slice.as_ref().map_or(0, Slice::len));
        members.push((entry.name().to_owned(), slice, err.map(|e| e.to_string())));
        Ok(members.len() < max_entries)
    });
    if let Err(e) = r {
        ctx.malformed(
            inner,
            0,
            "7z",
            format!("7z decoding failed: {e}; members before the failure are still scanned"),
        );
    }
    scan_members(ctx, inner, members);
    Format::SevenZip
}

fn scan_members(ctx: &mut Ctx<'_>, inner: &str, members: Vec<Member>) {
    for (name, slice, err) in members {
        let sub = join(inner, &name);
        if escapes(&name) {
            ctx.add(
                Verdict::Dangerous,
                Category::FileAccess,
                &sub,
                0,
                name.clone(),
                "member path escapes the extraction directory",
            );
        }
        if let Some(e) = err {
            ctx.malformed(
                &sub,
                0,
                "7z member",
                format!("{e}; the part before the break is still scanned"),
            );
        }
        if let Some(sl) = slice {
            ctx.inflated(sl.len());
            scan_slice(ctx, &sub, &sl);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};

    use sevenz_rust2::{ArchiveEntry, ArchiveWriter, EncoderConfiguration, EncoderMethod};

    use super::*;

    #[test]
    fn fast_path_decodes_what_the_crate_decodes() {
        let files: Vec<(String, Vec<u8>)> = (0..5u8)
            .map(|i| {
                let data: Vec<u8> = (0..(i as usize * 70_001))
                    .map(|j| (j % 251) as u8 ^ i)
                    .collect();
                (format!("d/f{i}"), data)
            })
            .collect();
        // x86-looking bytes (E8/E9 call and jump opcodes) so the BCJ filter has work to do.
        let mut files = files;
        files.push((
            "d/code.bin".to_owned(),
            (0..50_000u32)
                .flat_map(|i| {
                    [
                        0xE8,
                        (i % 256) as u8,
                        0x10,
                        0x00,
                        0x00,
                        0x90,
                        0xE9,
                        0x01,
                        0x02,
                        0x03,
                        0x00,
                    ]
                })
                .collect(),
        ));
        for (solid, bcj) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut w = ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
            if bcj {
                w.set_content_methods(vec![
                    EncoderConfiguration::new(EncoderMethod::BCJ_X86_FILTER),
                    EncoderConfiguration::new(EncoderMethod::LZMA2),
                ]);
            }
            if solid {
                let (e, r): (Vec<_>, Vec<_>) = files
                    .iter()
                    .map(|(n, d)| (ArchiveEntry::new_file(n), Cursor::new(d.clone()).into()))
                    .unzip();
                w.push_archive_entries(e, r).unwrap();
            } else {
                for (n, d) in &files {
                    w.push_archive_entry(ArchiveEntry::new_file(n), Some(Cursor::new(d.clone())))
                        .unwrap();
                }
            }
            let bytes = w.finish().unwrap().into_inner();
            let s = Slice::mem(bytes);
            let archive = Archive::read(&mut s.clone(), &Password::empty()).unwrap();
            let members =
                fast_members(&archive, &s, u64::MAX).expect("LZMA2 blocks take the fast path");
            let got: Vec<(String, Vec<u8>)> = members
                .into_iter()
                .map(|(n, sl, err)| {
                    assert!(err.is_none(), "{n}: {err:?}");
                    let mut v = Vec::new();
                    sl.unwrap().read_to_end(&mut v).unwrap();
                    (n, v)
                })
                .collect();
            // Compare without printing megabytes: names, lengths, equality. The empty first
            // file may or may not be stored as a stream, depending on the writer's mode.
            let want: Vec<&(String, Vec<u8>)> = files
                .iter()
                .filter(|(n, d)| !d.is_empty() || got.iter().any(|(g, _)| g == n))
                .collect();
            assert_eq!(got.len(), want.len(), "solid={solid}");
            for ((gn, gd), (wn, wd)) in got.iter().zip(want) {
                assert_eq!((gn, gd.len()), (wn, wd.len()), "solid={solid}");
                assert!(gd == wd, "{gn}: contents differ (solid={solid})");
            }
        }
    }

    fn members_of(s: &Slice) -> Vec<(String, Vec<u8>)> {
        let mut r = ArchiveReader::new(s.clone(), Password::empty()).unwrap();
        let mut out = Vec::new();
        r.for_each_entries(|e, rd| {
            let mut v = Vec::new();
            rd.read_to_end(&mut v)?;
            out.push((e.name().to_owned(), v));
            Ok(true)
        })
        .unwrap();
        out
    }

    #[test]
    fn lzma2_encoded_headers_are_decoded_in_place() {
        // py7zr's archives from the corpus: LZMA2-encoded header, BCJ+LZMA2 data.
        for rel in ["benign/archive/wrapped.7z", "malicious/archive/wrapped.7z"] {
            let path = format!("{}/tests/corpus/{rel}", env!("CARGO_MANIFEST_DIR"));
            let original = Slice::mem(std::fs::read(path).unwrap());
            let copy = plain_header_copy(&original).expect("rewritten");
            let mut head = Vec::new();
            copy.clone().read_to_end(&mut head).unwrap();
            // The copy's header is plain (kHeader), and both read the same members.
            let off =
                32 + usize::try_from(u64::from_le_bytes(head[12..20].try_into().unwrap())).unwrap();
            assert_eq!(head[off], 0x01, "{rel}");
            assert_eq!(members_of(&copy), members_of(&original), "{rel}");
            assert!(!members_of(&copy).is_empty());
        }
        // Anything else is left alone: a plain zip, a truncated archive, flipped header bytes.
        assert!(plain_header_copy(&Slice::mem(b"PK\x03\x04....".to_vec())).is_none());
        let path = format!(
            "{}/tests/corpus/benign/archive/wrapped.7z",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(path).unwrap();
        assert!(plain_header_copy(&Slice::mem(bytes[..bytes.len() - 3].to_vec())).is_none());
        let header_at =
            32 + usize::try_from(u64::from_le_bytes(bytes[12..20].try_into().unwrap())).unwrap();
        for i in 8..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xFF;
            // Never a panic; a damaged start header or encoded header is never rewritten
            // (sevenz-rust2 then reports it).
            let copy = plain_header_copy(&Slice::mem(b));
            if i < 32 || i >= header_at {
                assert!(copy.is_none(), "byte {i}");
            }
        }
    }
}
