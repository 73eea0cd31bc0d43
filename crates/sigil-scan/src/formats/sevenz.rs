//! 7z archives (sevenz-rust2: LZMA, LZMA2, BZip2, Deflate and copy; no AES): each member is
//! decompressed with the scan's size limit into a spill buffer and scanned from its own bytes.
//! Encrypted archives and methods the crate lacks are reported, never silently passed.

use sevenz_rust2::{ArchiveReader, Password};

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

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) -> Format {
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
    let limit = ctx.cfg.max_decompressed;
    let max_entries = ctx.cfg.max_entries;
    let mut members: Vec<(String, Option<Slice>, Option<String>)> = Vec::new();
    let r = reader.for_each_entries(|entry, rd| {
        if entry.is_directory() || !entry.has_stream() {
            return Ok(true);
        }
        let (slice, err) = source::spill(rd, limit);
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
            scan_slice(ctx, &sub, &sl);
        }
    }
    Format::SevenZip
}
