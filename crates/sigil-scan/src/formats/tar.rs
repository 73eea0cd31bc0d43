//! POSIX/GNU tar (ustar, pax and GNU long names), including PyTorch's legacy tar format
//! (`sys_info`, `pickle`, `tensors`, `storages`). Header checksums are verified; names and link
//! targets that escape the extraction directory are dangerous (tarfile extraction follows them).

use crate::formats::legacy_tar;
use crate::report::{Category, Format, Verdict};
use crate::scan::{Ctx, join, scan_slice};
use crate::source::Slice;

fn octal(b: &[u8]) -> Option<u64> {
    // GNU base-256 for large sizes.
    if let Some((&first, rest)) = b.split_first()
        && first & 0x80 != 0
    {
        let mut v: u64 = u64::from(first & 0x7f);
        for &c in rest {
            v = v.checked_mul(256)?.checked_add(u64::from(c))?;
        }
        return Some(v);
    }
    let s: String = b
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| char::from(c))
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

fn escapes(name: &str) -> bool {
    name.starts_with('/') || climbs(name)
}

/// Whether a relative path climbs above its root once `..` components are applied.
fn climbs(path: &str) -> bool {
    let mut depth: i64 = 0;
    for c in path.split('/') {
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

fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|l| {
        let (_, kv) = l.split_once(' ')?;
        kv.strip_prefix("path=").map(str::to_owned)
    })
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) -> Format {
    let mut off = 0u64;
    let mut members: Vec<(String, Slice)> = Vec::new();
    let mut next_name: Option<String> = None;
    let mut count = 0usize;
    while off + 512 <= s.len() {
        let Ok(Some(h)) = s.bytes_at(off, 512) else {
            break;
        };
        if h.iter().all(|&b| b == 0) {
            break;
        }
        count += 1;
        if count > ctx.cfg.max_entries {
            ctx.malformed(inner, off, "entries", "more tar entries than the limit");
            break;
        }
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if octal(h.get(148..156).unwrap_or_default()) != Some(sum) {
            ctx.malformed(
                inner,
                off,
                "tar checksum",
                "tar header checksum does not match (tarfile refuses the header)",
            );
            break;
        }
        let Some(size) = octal(h.get(124..136).unwrap_or_default()) else {
            ctx.malformed(inner, off, "tar size", "tar size field is not octal");
            break;
        };
        let kind = h.get(156).copied().unwrap_or(0);
        let mut name = cstr(h.get(0..100).unwrap_or_default());
        if h.get(257..262) == Some(b"ustar") {
            let prefix = cstr(h.get(345..500).unwrap_or_default());
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(n) = next_name.take() {
            name = n;
        }
        let data_off = off + 512;
        if data_off.saturating_add(size) > s.len() {
            ctx.malformed(
                &join(inner, &name),
                data_off,
                "tar member",
                format!("member of {size} bytes runs past the end of the archive"),
            );
            break;
        }
        let data = s.sub(data_off, size);
        match kind {
            b'L' | b'x' => {
                let body = data
                    .head(usize::try_from(size.min(64 * 1024)).unwrap_or(0))
                    .unwrap_or_default();
                next_name = if kind == b'L' {
                    Some(cstr(&body))
                } else {
                    pax_path(&body)
                };
            }
            b'1' | b'2' => {
                let target = cstr(h.get(157..257).unwrap_or_default());
                let base = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                if target.starts_with('/') || climbs(&format!("{base}/{target}")) {
                    ctx.add(
                        Verdict::Dangerous,
                        Category::FileAccess,
                        &join(inner, &name),
                        off,
                        target.clone(),
                        "link target escapes the extraction directory",
                    );
                }
            }
            b'0' | 0 | b'7' => {
                if escapes(&name) {
                    ctx.add(
                        Verdict::Dangerous,
                        Category::FileAccess,
                        &join(inner, &name),
                        off,
                        name.clone(),
                        "member path escapes the extraction directory (tar slip)",
                    );
                }
                members.push((name, data));
            }
            _ => {}
        }
        off = data_off + size.div_ceil(512) * 512;
    }
    let legacy = ["pickle", "storages", "tensors"]
        .iter()
        .all(|n| members.iter().any(|(m, _)| m == n));
    for (name, data) in &members {
        let sub = join(inner, name);
        if legacy && name == "storages" {
            legacy_tar::scan_storages(ctx, &sub, data);
            continue;
        }
        if legacy && name == "tensors" {
            legacy_tar::scan_tensors(ctx, &sub, data);
            continue;
        }
        scan_slice(ctx, &sub, data);
    }
    if legacy {
        Format::PytorchLegacyTar
    } else {
        Format::Tar
    }
}
