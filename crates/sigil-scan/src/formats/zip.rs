//! Our own ZIP reader (central directory first, like Python's `zipfile` and PyTorch's miniz
//! reader), with ZIP64. Every disagreement a loader might resolve differently from a scanner is
//! itself a finding: local/central name or size mismatch, bad CRC, encryption, duplicate names,
//! overlapping members, data before the first member, names escaping the extraction directory.
//!
//! Then the layout decides the format: PyTorch (`*/data.pkl`), TorchScript (`*/code/`,
//! `*/constants.pkl`), NumPy `.npz`, Keras v3 (`config.json` + `model.weights.h5`), or a plain
//! archive whose members are detected and scanned from their own bytes.

use std::collections::HashMap;
use std::io::Read;

use crate::formats::{keras, torchscript};
use crate::report::{Category, Format, Verdict};
use crate::scan::{Ctx, bomb_prefix, join, scan_slice, spill_or_report};
use crate::source::Slice;

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD64_LOC_SIG: u32 = 0x0706_4b50;
const EOCD64_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

/// One member from the central directory.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub method: u16,
    pub flags: u16,
    pub crc: u32,
    pub csize: u64,
    pub usize: u64,
    pub local_offset: u64,
    /// Offset of the data, from the local header.
    pub data_offset: u64,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

/// Reads the central directory. Structural problems are pushed to `ctx`.
pub(crate) fn read_entries(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) -> Option<Vec<Entry>> {
    let len = s.len();
    let tail_len = len.min(65_557);
    let tail = s
        .bytes_at(len - tail_len, tail_len as usize)
        .ok()
        .flatten()?;
    let Some(eocd_rel) = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(&tail, i) == Some(EOCD_SIG))
    else {
        ctx.malformed(
            inner,
            0,
            "end of central directory",
            "zip has no end-of-central-directory record (truncated archive?)",
        );
        return None;
    };
    let eocd_off = len - tail_len + eocd_rel as u64;
    let e = tail.get(eocd_rel..)?;
    let Directory {
        count,
        size: cd_size,
        offset: cd_off,
        end: cd_end,
    } = directory(ctx, inner, s, eocd_off, e)?;
    // Data prepended before the archive: Python's zipfile shifts offsets by it, miniz does not.
    let expected_end = cd_off.saturating_add(cd_size);
    let mut shift = 0u64;
    if expected_end < cd_end && !(count == 0 && cd_size == 0) {
        shift = cd_end - expected_end;
        ctx.add(
            Verdict::Malformed,
            Category::Structure,
            inner,
            0,
            "prepended data",
            format!(
                "{shift} bytes precede the archive; loaders disagree on offsets (polyglot file)"
            ),
        );
    } else if expected_end > cd_end {
        ctx.malformed(
            inner,
            cd_end,
            "central directory",
            format!("central directory ({cd_off}+{cd_size}) overlaps its end record at {cd_end}"),
        );
        return None;
    }
    if count > ctx.cfg.max_entries as u64 {
        ctx.malformed(
            inner,
            eocd_off,
            "entries",
            format!(
                "{count} entries, more than the limit {}",
                ctx.cfg.max_entries
            ),
        );
        return None;
    }
    let cd_size_usize = usize::try_from(cd_size).ok()?;
    if cd_size > 512 * 1024 * 1024 {
        ctx.malformed(
            inner,
            cd_off,
            "central directory",
            format!("central directory of {cd_size} bytes is too large"),
        );
        return None;
    }
    let Some(cd) = s.bytes_at(cd_off + shift, cd_size_usize).ok().flatten() else {
        ctx.malformed(
            inner,
            cd_off,
            "central directory",
            "central directory lies past the end of the file",
        );
        return None;
    };
    let mut entries = Vec::new();
    let mut i = 0usize;
    for n in 0..count {
        let ok = u32_at(&cd, i) == Some(CENTRAL_SIG);
        let parsed = ok.then(|| parse_central(&cd, i)).flatten();
        let Some((mut entry, next)) = parsed else {
            ctx.malformed(
                inner,
                cd_off + i as u64,
                "central directory",
                format!("central directory entry {n} is broken"),
            );
            return Some(entries);
        };
        entry.local_offset += shift;
        i = next;
        entries.push(entry);
    }
    for e in &mut entries {
        check_local(ctx, inner, s, e);
    }
    check_layout(ctx, inner, &entries);
    Some(entries)
}

/// Where the central directory is, from the end record and the zip64 record.
struct Directory {
    count: u64,
    size: u64,
    offset: u64,
    /// Where the directory must end: at the zip64 record when there is one, else at the end
    /// record (anything between is data prepended to the archive).
    end: u64,
}

/// Reads the end-of-central-directory record `e` (at `eocd_off`) and, when a zip64 locator
/// precedes it, the zip64 record. Like miniz (PyTorch's reader) and Python's `zipfile`, a zip64
/// record found through the locator is used even when the 32-bit fields are not saturated:
/// `torch.save` always writes one. Where the two readers would find different records, or the
/// records disagree (readers that skip zip64 unless a field is 0xFFFF read another directory),
/// the disagreement is a finding.
fn directory(
    ctx: &mut Ctx<'_>,
    inner: &str,
    s: &Slice,
    eocd_off: u64,
    e: &[u8],
) -> Option<Directory> {
    let count32 = u16_at(e, 10)?;
    let size32 = u32_at(e, 12)?;
    let off32 = u32_at(e, 16)?;
    let saturated = count32 == 0xffff || size32 == 0xffff_ffff || off32 == 0xffff_ffff;
    let loc_off = eocd_off.checked_sub(20);
    let loc = loc_off
        .and_then(|o| s.bytes_at(o, 20).ok().flatten())
        .filter(|l| u32_at(l, 0) == Some(EOCD64_LOC_SIG));
    let (Some(loc_off), Some(loc)) = (loc_off, loc) else {
        if saturated {
            ctx.malformed(
                inner,
                eocd_off,
                "end of central directory",
                "zip64 markers without a zip64 locator",
            );
            return None;
        }
        return Some(Directory {
            count: u64::from(count32),
            size: u64::from(size32),
            offset: u64::from(off32),
            end: eocd_off,
        });
    };
    let stated = u64_at(&loc, 8)?;
    let record_at = |o: u64| {
        s.bytes_at(o, 56)
            .ok()
            .flatten()
            .filter(|r| u32_at(r, 0) == Some(EOCD64_SIG))
    };
    // miniz reads the record where the locator points; Python's zipfile right before the
    // locator (it assumes no extensible data).
    let before = loc_off.checked_sub(56);
    let at_stated = record_at(stated);
    let found_at_stated = at_stated.is_some();
    let (rec_off, rec) = match (at_stated, before.and_then(record_at)) {
        (Some(r), _) => (stated, r),
        (None, Some(r)) => (before?, r),
        (None, None) => {
            ctx.malformed(
                inner,
                stated,
                "zip64 end of central directory",
                "zip64 locator points at no zip64 record",
            );
            return None;
        }
    };
    if found_at_stated && Some(stated) != before {
        ctx.malformed(
            inner,
            stated,
            "zip64 end of central directory",
            format!(
                "the zip64 record the locator points at ({stated}) is not right before the locator ({loc_off}); miniz (torch) reads it, Python's zipfile does not"
            ),
        );
    }
    let count = u64_at(&rec, 32)?;
    let size = u64_at(&rec, 40)?;
    let offset = u64_at(&rec, 48)?;
    if (count32 != 0xffff && u64::from(count32) != count)
        || (size32 != 0xffff_ffff && u64::from(size32) != size)
        || (off32 != 0xffff_ffff && u64::from(off32) != offset)
    {
        ctx.malformed(
            inner,
            eocd_off,
            "end of central directory",
            format!(
                "end record says {count32} entries, {size32} bytes at {off32}; the zip64 record {count}, {size} at {offset}: readers that skip zip64 unless a field is saturated read another directory"
            ),
        );
    }
    Some(Directory {
        count,
        size,
        offset,
        end: rec_off,
    })
}

fn parse_central(cd: &[u8], i: usize) -> Option<(Entry, usize)> {
    let flags = u16_at(cd, i + 8)?;
    let method = u16_at(cd, i + 10)?;
    let crc = u32_at(cd, i + 16)?;
    let mut csize = u64::from(u32_at(cd, i + 20)?);
    let mut usize_ = u64::from(u32_at(cd, i + 24)?);
    let nlen = usize::from(u16_at(cd, i + 28)?);
    let xlen = usize::from(u16_at(cd, i + 30)?);
    let clen = usize::from(u16_at(cd, i + 32)?);
    let mut local = u64::from(u32_at(cd, i + 42)?);
    let name_b = cd.get(i + 46..i + 46 + nlen)?;
    let extra = cd.get(i + 46 + nlen..i + 46 + nlen + xlen)?;
    // ZIP64 extended information.
    let mut j = 0;
    while let (Some(id), Some(sz)) = (u16_at(extra, j), u16_at(extra, j + 2)) {
        let body = extra.get(j + 4..j + 4 + usize::from(sz))?;
        if id == 1 {
            let mut k = 0;
            if usize_ == 0xffff_ffff {
                usize_ = u64_at(body, k)?;
                k += 8;
            }
            if csize == 0xffff_ffff {
                csize = u64_at(body, k)?;
                k += 8;
            }
            if local == 0xffff_ffff {
                local = u64_at(body, k)?;
            }
        }
        j += 4 + usize::from(sz);
    }
    let name = String::from_utf8_lossy(name_b).into_owned();
    Some((
        Entry {
            name,
            method,
            flags,
            crc,
            csize,
            usize: usize_,
            local_offset: local,
            data_offset: 0,
        },
        i + 46 + nlen + xlen + clen,
    ))
}

fn check_local(ctx: &mut Ctx<'_>, inner: &str, s: &Slice, e: &mut Entry) {
    let sub = join(inner, &e.name);
    let Some(h) = s.bytes_at(e.local_offset, 30).ok().flatten() else {
        ctx.malformed(
            &sub,
            e.local_offset,
            "local header",
            "local header lies past the end of the file",
        );
        e.data_offset = u64::MAX;
        return;
    };
    if u32_at(&h, 0) != Some(LOCAL_SIG) {
        ctx.malformed(
            &sub,
            e.local_offset,
            "local header",
            "no local header signature where the central directory points",
        );
        e.data_offset = u64::MAX;
        return;
    }
    let nlen = u16_at(&h, 26).unwrap_or(0);
    let xlen = u16_at(&h, 28).unwrap_or(0);
    let lname = s
        .bytes_at(e.local_offset + 30, usize::from(nlen))
        .ok()
        .flatten()
        .unwrap_or_default();
    if lname != e.name.as_bytes() {
        ctx.malformed(
            &sub,
            e.local_offset,
            "local/central name mismatch",
            format!(
                "local header names {:?}, the central directory {:?}; Python's zipfile refuses this, miniz (torch) follows the central name",
                String::from_utf8_lossy(&lname),
                e.name
            ),
        );
    }
    let lflags = u16_at(&h, 6).unwrap_or(0);
    if (lflags ^ e.flags) & 1 != 0 {
        ctx.malformed(
            &sub,
            e.local_offset,
            "local/central encryption flag mismatch",
            format!(
                "the local header says {}, the central directory {}; miniz (torch) and Python's zipfile go by the central directory",
                if lflags & 1 != 0 { "encrypted" } else { "not encrypted" },
                if e.flags & 1 != 0 { "encrypted" } else { "not encrypted" },
            ),
        );
    }
    let lmethod = u16_at(&h, 8).unwrap_or(0);
    if lmethod != e.method {
        ctx.malformed(
            &sub,
            e.local_offset,
            "local/central method mismatch",
            format!("local method {lmethod}, central method {}", e.method),
        );
    }
    if e.flags & 0x8 == 0 {
        let lcrc = u32_at(&h, 14).unwrap_or(0);
        let lcs = u32_at(&h, 18).unwrap_or(0);
        if lcrc != e.crc || (lcs != 0xffff_ffff && u64::from(lcs) != e.csize) {
            ctx.malformed(
                &sub,
                e.local_offset,
                "local/central size or crc mismatch",
                "local header and central directory disagree on size or CRC",
            );
        }
    }
    e.data_offset = e.local_offset + 30 + u64::from(nlen) + u64::from(xlen);
    if e.data_offset.saturating_add(e.csize) > s.len() {
        ctx.malformed(
            &sub,
            e.data_offset,
            "member data",
            format!(
                "member data ({} bytes) runs past the end of the file",
                e.csize
            ),
        );
        e.data_offset = u64::MAX;
    }
}

fn check_layout(ctx: &mut Ctx<'_>, inner: &str, entries: &[Entry]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        *names.entry(e.name.as_str()).or_default() += 1;
        let sub = join(inner, &e.name);
        if e.name.starts_with('/')
            || e.name.contains('\\')
            || e.name.split('/').any(|c| c == "..")
            || e.name.get(1..2) == Some(":")
        {
            ctx.add(
                Verdict::Dangerous,
                Category::FileAccess,
                &sub,
                e.local_offset,
                e.name.clone(),
                "member path escapes the extraction directory (zip slip)",
            );
        }
        if e.flags & 1 != 0 {
            ctx.malformed(
                &sub,
                e.local_offset,
                "encrypted",
                "member is flagged encrypted: the loader cannot read it and it cannot be inspected",
            );
        }
    }
    for (n, c) in names {
        if c > 1 {
            ctx.malformed(
                &join(inner, n),
                0,
                "duplicate name",
                format!("{c} members share this name; loaders pick different ones"),
            );
        }
    }
    let mut spans: Vec<(u64, u64, &str)> = entries
        .iter()
        .filter(|e| e.data_offset != u64::MAX)
        .map(|e| (e.local_offset, e.data_offset + e.csize, e.name.as_str()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if let [a, b] = w
            && b.0 < a.1
        {
            ctx.malformed(
                &join(inner, b.2),
                b.0,
                "overlapping members",
                format!(
                    "member overlaps {:?} (shared data: a zip bomb or a parser differential)",
                    a.2
                ),
            );
        }
    }
}

/// A reader over a member's decompressed bytes.
fn open_member(ctx: &mut Ctx<'_>, inner: &str, s: &Slice, e: &Entry) -> Option<Slice> {
    let sub = join(inner, &e.name);
    if e.data_offset == u64::MAX || e.flags & 1 != 0 {
        return None;
    }
    let raw = s.sub(e.data_offset, e.csize);
    match e.method {
        0 => {
            if e.csize != e.usize {
                ctx.malformed(
                    &sub,
                    e.data_offset,
                    "stored size",
                    format!(
                        "stored member: compressed size {} != size {}",
                        e.csize, e.usize
                    ),
                );
            }
            Some(raw)
        }
        // Judged from the central directory's sizes before inflating; inflation then stops one
        // byte past the declared size, so a directory that lies cannot make it cost more.
        8 if !ctx.admit(&sub, e.local_offset, e.csize, e.usize) => {
            bomb_prefix(ctx, flate2::read::DeflateDecoder::new(raw))
        }
        12 if !ctx.admit(&sub, e.local_offset, e.csize, e.usize) => {
            bomb_prefix(ctx, bzip2::read::BzDecoder::new(raw))
        }
        8 => spill_or_report(
            ctx,
            &sub,
            flate2::read::DeflateDecoder::new(raw),
            Some(e.usize),
            "deflate member",
        ),
        12 => spill_or_report(
            ctx,
            &sub,
            bzip2::read::BzDecoder::new(raw),
            Some(e.usize),
            "bzip2 member",
        ),
        m => {
            ctx.malformed(&sub, e.local_offset, "compression method", format!("compression method {m} is not supported by the scanner; the member was not inspected"));
            None
        }
    }
}

fn check_crc(ctx: &mut Ctx<'_>, inner: &str, e: &Entry, data: &Slice) {
    let mut h = crc32fast::Hasher::new();
    let mut r = data.clone();
    let mut buf = data.read_buf(256 * 1024);
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(buf.get(..n).unwrap_or_default()),
            Err(_) => return,
        }
    }
    let got = h.finalize();
    if got != e.crc {
        ctx.malformed(
            &join(inner, &e.name),
            e.data_offset,
            "crc",
            format!("CRC-32 is {got:08x}, the directory says {:08x}; Python's zipfile refuses the member, PyTorch's reader (miniz built without CRC checks) loads it", e.crc),
        );
    }
}

/// Records of a PyTorch or TorchScript archive that the loader reads as raw bytes, never as a
/// pickle: tensor storages under `<prefix>/data/` and the small version and id records. Only
/// under the archive's own prefix (the first member's directory): a member elsewhere is scanned,
/// and a model saved as `data.pt` (prefix `data`) still has its `data/data.pkl` scanned.
fn is_raw_record(prefix: Option<&str>, name: &str) -> bool {
    let Some(rest) = prefix.and_then(|p| name.strip_prefix(p)?.strip_prefix('/')) else {
        return false;
    };
    rest.starts_with("data/")
        || matches!(
            rest,
            "version"
                | "byteorder"
                | ".data/version"
                | ".data/serialization_id"
                | ".format_version"
                | ".storage_alignment"
        )
}

/// Archive layouts decided by member names.
fn layout(entries: &[Entry]) -> Format {
    let has = |suffix: &str| {
        entries
            .iter()
            .any(|e| e.name == suffix || e.name.ends_with(&format!("/{suffix}")))
    };
    if has("constants.pkl")
        || entries
            .iter()
            .any(|e| e.name.contains("/code/") && e.name.ends_with(".py"))
    {
        Format::Torchscript
    } else if has("data.pkl") {
        Format::PytorchZip
    } else if entries.iter().any(|e| e.name == "config.json")
        && entries.iter().any(|e| e.name.ends_with(".weights.h5"))
    {
        Format::Keras
    } else if !entries.is_empty() && entries.iter().all(|e| e.name.ends_with(".npy")) {
        Format::Npz
    } else {
        Format::Zip
    }
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) -> Format {
    let Some(entries) = read_entries(ctx, inner, s) else {
        return Format::Zip;
    };
    let format = layout(&entries);
    let torch = matches!(format, Format::PytorchZip | Format::Torchscript);
    // PyTorch's reader names every record after the first member's top directory.
    let prefix = entries
        .first()
        .and_then(|e| e.name.split_once('/'))
        .map(|(p, _)| p);
    for e in &entries {
        if e.name.ends_with('/') {
            continue;
        }
        let sub = join(inner, &e.name);
        if torch && is_raw_record(prefix, &e.name) {
            continue;
        }
        let Some(data) = open_member(ctx, inner, s, e) else {
            continue;
        };
        // A refused bomb's prefix is not the whole member: its CRC cannot match.
        if data.len() == e.usize {
            check_crc(ctx, inner, e, &data);
        }
        match format {
            Format::Keras if e.name == "config.json" => keras::scan_config_json(ctx, &sub, &data),
            Format::Torchscript if e.name.ends_with(".py") => {
                torchscript::scan_code(ctx, &sub, &data)
            }
            // data.pkl, constants.pkl, bytecode.pkl and the code's .debug_pkl source ranges are
            // all read by TorchScript's C++ unpickler.
            Format::Torchscript if e.name.ends_with(".pkl") || e.name.ends_with(".debug_pkl") => {
                torchscript::scan_pickle(ctx, &sub, &data)
            }
            _ => {
                scan_slice(ctx, &sub, &data);
            }
        }
    }
    if format == Format::PytorchZip
        && !entries
            .iter()
            .any(|e| e.name.ends_with("/data.pkl") || e.name == "data.pkl")
    {
        ctx.malformed(inner, 0, "data.pkl", "PyTorch archive without data.pkl");
    }
    format
}

#[cfg(test)]
mod tests {
    use crate::scan::{ScanConfig, scan_bytes};
    use std::path::Path;

    /// One stored member `a/data.pkl` (a benign pickle), `prepend` bytes before the archive,
    /// `extensible` bytes of zip64 extensible data, and the 32-bit end record's entry count.
    fn archive(prepend: &[u8], extensible: usize, count32: u16) -> Vec<u8> {
        let name = b"a/data.pkl";
        let data = b"\x80\x02}q\x00.";
        let crc = crc32fast::hash(data);
        let u16le = |v: u16| v.to_le_bytes();
        let u32le = |v: u32| v.to_le_bytes();
        let mut z = prepend.to_vec();
        let base = z.len();
        z.extend(u32le(0x0403_4b50));
        z.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend(u32le(crc));
        z.extend(u32le(6));
        z.extend(u32le(6));
        z.extend(u16le(10));
        z.extend(u16le(0));
        z.extend(name);
        z.extend(data);
        let cd = z.len() - base;
        z.extend(u32le(0x0201_4b50));
        z.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend(u32le(crc));
        z.extend(u32le(6));
        z.extend(u32le(6));
        z.extend(u16le(10));
        z.extend([0; 12]);
        z.extend(u32le(0));
        z.extend(name);
        let cd_size = z.len() - base - cd;
        let rec = z.len() - base;
        z.extend(u32le(0x0606_4b50));
        z.extend(u64::try_from(44 + extensible).unwrap().to_le_bytes());
        z.extend([45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend(1u64.to_le_bytes());
        z.extend(1u64.to_le_bytes());
        z.extend(u64::try_from(cd_size).unwrap().to_le_bytes());
        z.extend(u64::try_from(cd).unwrap().to_le_bytes());
        z.extend(vec![0; extensible]);
        z.extend(u32le(0x0706_4b50));
        z.extend(u32le(0));
        z.extend(u64::try_from(rec).unwrap().to_le_bytes());
        z.extend(u32le(1));
        z.extend(u32le(0x0605_4b50));
        z.extend([0, 0, 0, 0]);
        z.extend(u16le(count32));
        z.extend(u16le(count32));
        z.extend(u32le(u32::try_from(cd_size).unwrap()));
        z.extend(u32le(u32::try_from(cd).unwrap()));
        z.extend(u16le(0));
        z
    }

    fn scan(z: Vec<u8>) -> (String, Vec<String>) {
        let r = scan_bytes(Path::new("x.pt"), z, &ScanConfig::default());
        (
            r.format.as_str().to_owned(),
            r.findings.into_iter().map(|f| f.subject).collect(),
        )
    }

    #[test]
    fn zip64_record_with_unsaturated_fields_is_read_like_torch_save_writes_it() {
        assert_eq!(scan(archive(b"", 0, 1)), ("pytorch-zip".to_owned(), vec![]));
    }

    #[test]
    fn zip64_disagreements_are_findings() {
        // the end record counts 2 entries, the zip64 record 1
        let (format, f) = scan(archive(b"", 0, 2));
        assert_eq!(format, "pytorch-zip");
        assert_eq!(f, ["end of central directory"]);
        // extensible data: the record is not right before its locator, where Python looks
        let (format, f) = scan(archive(b"", 16, 1));
        assert_eq!(format, "pytorch-zip");
        assert_eq!(f, ["zip64 end of central directory"]);
    }

    #[test]
    fn data_before_a_zip64_archive_is_prepended_data() {
        let (format, f) = scan(archive(b"#!/bin/sh\nexit 0\n", 0, 1));
        assert_eq!(format, "pytorch-zip");
        assert_eq!(f, ["prepended data"]);
    }
}
