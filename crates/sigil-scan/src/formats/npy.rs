//! NumPy `.npy` (versions 1-3): header dict, dtype, shape and data length; object arrays carry a
//! pickle after the header, which is walked like any pickle (`np.load(allow_pickle=True)`).

use crate::pickle::{self, WalkOptions};
use crate::report::{Category, Verdict};
use crate::scan::Ctx;
use crate::source::Slice;

/// Largest header we read (NumPy itself limits headers to 10 000 bytes by default).
const MAX_HEADER: u64 = 1024 * 1024;

fn quoted_after<'a>(h: &'a str, key: &str) -> Option<&'a str> {
    let i = h.find(key)? + key.len();
    let rest = h.get(i..)?.trim_start().strip_prefix(':')?.trim_start();
    let q = rest.chars().next()?;
    if q != '\'' && q != '"' {
        return None;
    }
    let body = rest.get(1..)?;
    let end = body.find(q)?;
    body.get(..end)
}

fn after<'a>(h: &'a str, key: &str) -> Option<&'a str> {
    let i = h.find(key)? + key.len();
    Some(h.get(i..)?.trim_start().strip_prefix(':')?.trim_start())
}

pub(crate) fn itemsize(descr: &str) -> Option<u64> {
    let d = descr.trim_start_matches(['<', '>', '|', '=']);
    let mut cs = d.chars();
    let kind = cs.next()?;
    let n: u64 = cs.as_str().parse().ok()?;
    match kind {
        'U' => n.checked_mul(4),
        'b' | 'i' | 'u' | 'f' | 'c' | 'S' | 'V' | 'M' | 'm' | 'a' => Some(n),
        '?' => Some(1),
        _ => None,
    }
}

fn byte(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    let Ok(Some(pre)) = s.bytes_at(0, 12) else {
        ctx.malformed(inner, 0, "npy header", "file too short for an .npy header");
        return;
    };
    let major = pre.get(6).copied().unwrap_or(0);
    let (hlen, hstart) = match major {
        1 => (
            u64::from(u16::from_le_bytes([byte(&pre, 8), byte(&pre, 9)])),
            10u64,
        ),
        2 | 3 => (
            u64::from(u32::from_le_bytes([
                byte(&pre, 8),
                byte(&pre, 9),
                byte(&pre, 10),
                byte(&pre, 11),
            ])),
            12u64,
        ),
        v => {
            ctx.malformed(
                inner,
                6,
                "npy version",
                format!("unsupported .npy version {v}"),
            );
            return;
        }
    };
    if hlen > MAX_HEADER || hstart + hlen > s.len() {
        ctx.malformed(
            inner,
            8,
            "npy header length",
            format!("header length {hlen} is larger than the file or the {MAX_HEADER}-byte limit"),
        );
        return;
    }
    let Ok(Some(hb)) = s.bytes_at(hstart, usize::try_from(hlen).unwrap_or(0)) else {
        ctx.malformed(inner, hstart, "npy header", "cannot read header");
        return;
    };
    let Ok(h) = String::from_utf8(hb) else {
        ctx.malformed(inner, hstart, "npy header", "header is not text");
        return;
    };
    let data_off = hstart + hlen;
    let structured = after(&h, "'descr'").is_some_and(|r| r.starts_with('['));
    let has_object = if structured {
        let r = after(&h, "'descr'").unwrap_or_default();
        r.contains("'O'") || r.contains("'|O'") || r.contains("\"O\"")
    } else {
        quoted_after(&h, "'descr'")
            .is_some_and(|d| d.trim_start_matches(['<', '>', '|', '=']).starts_with('O'))
    };
    if has_object {
        ctx.add(
            Verdict::Suspicious,
            Category::NestedDeserialization,
            inner,
            data_off,
            "object array",
            "object arrays are pickles: np.load needs allow_pickle=True, which runs them",
        );
        let r = pickle::walk(
            s.sub(data_off, s.len()),
            &WalkOptions {
                policy: &ctx.cfg.globals,
                inner,
                max_pickles: Some(1),
                joblib: false,
            },
        );
        ctx.keep_all(r.findings, data_off);
        return;
    }
    let Some(descr) = (!structured).then(|| quoted_after(&h, "'descr'")).flatten() else {
        if !structured {
            ctx.malformed(inner, hstart, "descr", "header has no 'descr'");
        }
        return;
    };
    let Some(item) = itemsize(descr) else {
        ctx.malformed(
            inner,
            hstart,
            "descr",
            format!("dtype {descr:?} not understood"),
        );
        return;
    };
    let shape = after(&h, "'shape'").and_then(|r| {
        let body = r.strip_prefix('(')?;
        let body = body.get(..body.find(')')?)?;
        body.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| x.trim_end_matches('L').parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>()
    });
    let Some(shape) = shape else {
        ctx.malformed(
            inner,
            hstart,
            "shape",
            "header 'shape' is not a tuple of integers",
        );
        return;
    };
    let want = shape.iter().try_fold(item, |acc, &d| acc.checked_mul(d));
    let have = s.len() - data_off;
    match want {
        None => ctx.malformed(inner, hstart, "shape", "shape times dtype size overflows"),
        Some(w) if w > have => ctx.malformed(
            inner,
            data_off,
            "data",
            format!("header promises {w} bytes of data, the file has {have} (truncated)"),
        ),
        Some(w) if w < have => ctx.malformed(
            inner,
            data_off + w,
            "trailing data",
            format!("{} bytes after the array data", have - w),
        ),
        Some(_) => {}
    }
}
