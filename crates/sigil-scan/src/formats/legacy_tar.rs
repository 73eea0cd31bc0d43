//! The records of PyTorch's legacy tar format that mix pickles and raw bytes. `torch.load` reads
//! `storages` (a count; per storage a `(key, location, storage type)` pickle and the raw storage:
//! an 8-byte element count, then the elements; then one storage-views pickle) and `tensors` (a
//! count; per tensor a `(key, storage id, type)` pickle and raw `ndim`, sizes, strides, offset),
//! every pickle with the full unpickler. Each pickle is walked and each raw record stepped over by
//! the length it declares, so a pickle placed after raw data is read as the loader reads it.
//! Where a length cannot be worked out, the rest of the record is reported as not inspected.

use crate::pickle::{self, WalkOptions, WalkResult};
use crate::scan::Ctx;
use crate::source::Slice;

/// Element size of each legacy storage type (`torch.<Name>Storage`).
const ELEMENT_SIZES: &[(&str, u64)] = &[
    ("DoubleStorage", 8),
    ("FloatStorage", 4),
    ("HalfStorage", 2),
    ("BFloat16Storage", 2),
    ("LongStorage", 8),
    ("IntStorage", 4),
    ("ShortStorage", 2),
    ("CharStorage", 1),
    ("ByteStorage", 1),
    ("BoolStorage", 1),
    ("ComplexDoubleStorage", 16),
    ("ComplexFloatStorage", 8),
    ("QUInt8Storage", 1),
    ("QInt8Storage", 1),
    ("QInt32Storage", 4),
    ("QUInt4x2Storage", 1),
    ("QUInt2x4Storage", 1),
];

/// Walks the one pickle at `at`; its findings go to `ctx`. Returns the walk and where it ended,
/// or `None` (reported) when there is no complete pickle there.
fn one_pickle(ctx: &mut Ctx<'_>, inner: &str, s: &Slice, at: u64) -> Option<(WalkResult, u64)> {
    let mut r = pickle::walk(
        s.sub(at, s.len().saturating_sub(at)),
        &WalkOptions {
            policy: &ctx.cfg.globals,
            inner,
            max_pickles: Some(1),
            joblib: false,
        },
    );
    ctx.keep_all(std::mem::take(&mut r.findings), at);
    if r.pickles != 1 {
        return None; // the walker reported why
    }
    let end = at.saturating_add(r.consumed);
    Some((r, end))
}

/// The value of a pickle that holds one plain integer (PROTO, FRAME, then an integer opcode and
/// STOP), the way `torch.save` writes record counts.
fn small_int(b: &[u8]) -> Option<i64> {
    let mut b = b;
    if let [0x80, _, rest @ ..] = b {
        b = rest;
    }
    if let [0x95, rest @ ..] = b {
        b = rest.get(8..)?;
    }
    let (v, rest): (i64, &[u8]) = match b {
        [b'K', x, rest @ ..] => (i64::from(*x), rest),
        [b'M', x, y, rest @ ..] => (i64::from(u16::from_le_bytes([*x, *y])), rest),
        [b'J', a, b2, c, d, rest @ ..] => (i64::from(i32::from_le_bytes([*a, *b2, *c, *d])), rest),
        [0x8a, n, rest @ ..] => {
            let n = usize::from(*n);
            if n > 8 {
                return None;
            }
            let digits = rest.get(..n)?;
            let mut v: i64 = 0;
            for (i, d) in digits.iter().enumerate() {
                v |= i64::from(*d) << (8 * i);
            }
            if n > 0 && n < 8 && digits.last().is_some_and(|d| d & 0x80 != 0) {
                v -= 1i64 << (8 * n);
            }
            (v, rest.get(n..)?)
        }
        [b'I' | b'L', rest @ ..] => {
            let end = rest.iter().position(|&c| c == b'\n')?;
            let text = std::str::from_utf8(rest.get(..end)?).ok()?;
            (
                text.trim_end_matches('L').parse().ok()?,
                rest.get(end + 1..)?,
            )
        }
        _ => return None,
    };
    (rest == b".").then_some(v)
}

/// Reads the count pickle at the start of `storages` or `tensors`.
fn count(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) -> Option<(u64, u64)> {
    let (_, end) = one_pickle(ctx, inner, s, 0)?;
    let bytes = s.bytes_at(0, usize::try_from(end).ok()?).ok().flatten();
    match bytes
        .as_deref()
        .and_then(small_int)
        .and_then(|n| u64::try_from(n).ok())
    {
        Some(n) => Some((n, end)),
        None => {
            ctx.malformed(
                inner,
                0,
                "record count",
                "the record count is not a plain integer pickle; the records after it were not inspected",
            );
            None
        }
    }
}

fn cut(ctx: &mut Ctx<'_>, inner: &str, at: u64, what: &str) {
    ctx.malformed(
        inner,
        at,
        what,
        format!("{what} runs past the end of the member; the loader fails here, everything before still runs"),
    );
}

/// Where a record's raw tail of `tail` bytes, starting at `end` right after its pickle, ends; a
/// length that is unknown, overflows or runs past the member is reported as a cut.
fn skip_tail(
    ctx: &mut Ctx<'_>,
    inner: &str,
    s: &Slice,
    end: u64,
    tail: Option<u64>,
    what: &str,
) -> Option<u64> {
    let next = tail
        .and_then(|t| end.checked_add(t))
        .filter(|&e| e <= s.len());
    if next.is_none() {
        cut(ctx, inner, end, what);
    }
    next
}

/// `storages`: count, per storage a pickle and raw data, then the storage-views pickle.
pub(crate) fn scan_storages(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    let Some((n, mut at)) = count(ctx, inner, s) else {
        return;
    };
    for _ in 0..n {
        let Some((r, end)) = one_pickle(ctx, inner, s, at) else {
            return;
        };
        let size = r.globals.iter().find_map(|g| {
            let name = g.rsplit('.').next()?;
            ELEMENT_SIZES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, z)| *z)
        });
        let Some(size) = size else {
            ctx.malformed(
                inner,
                at,
                "storage type",
                "storage record names no known storage type, so its data length is unknown; the records after it were not inspected",
            );
            return;
        };
        // numel (8), then numel elements.
        let numel = s.array_at(end).map(u64::from_le_bytes);
        let tail = numel
            .and_then(|k| k.checked_mul(size))
            .and_then(|b| b.checked_add(8));
        let Some(next) = skip_tail(ctx, inner, s, end, tail, "storage data") else {
            return;
        };
        at = next;
    }
    // The storage views.
    let _ = one_pickle(ctx, inner, s, at);
}

/// `tensors`: count, per tensor a pickle and raw `ndim`, sizes, strides and offset.
pub(crate) fn scan_tensors(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    let Some((n, mut at)) = count(ctx, inner, s) else {
        return;
    };
    for _ in 0..n {
        let Some((_, end)) = one_pickle(ctx, inner, s, at) else {
            return;
        };
        let ndim = s
            .array_at(end)
            .map(i32::from_le_bytes)
            .and_then(|d| u64::try_from(d).ok());
        // ndim (4), padding (4), sizes and strides (8 each per dimension), offset (8)
        let tail = ndim
            .and_then(|d| d.checked_mul(16))
            .and_then(|b| b.checked_add(16));
        let Some(next) = skip_tail(ctx, inner, s, end, tail, "tensor record") else {
            return;
        };
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ints() {
        assert_eq!(small_int(b"\x80\x02K\x03."), Some(3));
        assert_eq!(small_int(b"\x80\x02M\x01\x01."), Some(257));
        assert_eq!(small_int(b"\x80\x02J\xff\xff\xff\xff."), Some(-1));
        assert_eq!(small_int(b"\x80\x02\x8a\x02\x00\x01."), Some(256));
        assert_eq!(small_int(b"\x80\x02\x8a\x01\xff."), Some(-1));
        assert_eq!(small_int(b"I12\n."), Some(12));
        assert_eq!(small_int(b"L12L\n."), Some(12));
        assert_eq!(
            small_int(b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00K\x07."),
            Some(7)
        );
        assert_eq!(small_int(b"\x80\x02K\x03\x85."), None);
        assert_eq!(small_int(b"\x80\x02N."), None);
    }
}
