//! safetensors, with every rule of the reference implementation (`safetensors/src/tensor.rs`):
//! header length bound (100 MB), UTF-8 JSON object starting with `{`, known dtypes, shape and
//! dtype size matching the byte range, offsets contiguous from 0 with no overlap or gap, the last
//! offset equal to the buffer length (no trailing bytes), `__metadata__` string to string. We
//! also refuse duplicate keys, which `serde_json` into a map would silently collapse.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::scan::Ctx;
use crate::source::Slice;

/// The reference implementation's header limit.
pub const MAX_HEADER_SIZE: u64 = 100_000_000;

/// A header problem: (byte offset, subject, reason).
pub type Problem = (u64, String, String);

struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Bits per element of a safetensors dtype.
fn dtype_bits(d: &str) -> Option<u64> {
    Some(match d {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Validates a header against a data buffer of `data_len` bytes. Pure; used by the scanner and
/// the fuzz target.
pub fn validate_header(header: &[u8], data_len: u64) -> Vec<Problem> {
    let mut p: Vec<Problem> = Vec::new();
    let mut bad = |off: u64, subj: &str, why: String| p.push((off, subj.to_owned(), why));
    let Ok(text) = std::str::from_utf8(header) else {
        bad(8, "header", "header is not UTF-8".into());
        return p;
    };
    if !text.starts_with('{') {
        bad(8, "header", "header does not start with '{'".into());
        return p;
    }
    let entries: Entries = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(e) => {
            bad(
                8 + e.column() as u64,
                "header",
                format!("header is not a JSON object: {e}"),
            );
            return p;
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut ranges: Vec<(u64, u64, String)> = Vec::new();
    for (name, v) in entries.0 {
        if !seen.insert(name.clone()) {
            bad(
                8,
                &name,
                "duplicate key in the header (parsers keep different copies)".into(),
            );
            continue;
        }
        if name == "__metadata__" {
            match v.as_object() {
                Some(m) if m.values().all(Value::is_string) => {}
                _ => bad(8, &name, "__metadata__ must map strings to strings".into()),
            }
            continue;
        }
        let Some(obj) = v.as_object() else {
            bad(8, &name, "tensor entry is not an object".into());
            continue;
        };
        let dtype = obj.get("dtype").and_then(Value::as_str);
        let Some(bits) = dtype.and_then(dtype_bits) else {
            bad(
                8,
                &name,
                format!("unknown or missing dtype {:?}", dtype.unwrap_or("")),
            );
            continue;
        };
        let shape: Option<Vec<u64>> = obj
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect());
        let Some(shape) = shape else {
            bad(
                8,
                &name,
                "shape must be a list of non-negative integers".into(),
            );
            continue;
        };
        let offs: Option<Vec<u64>> = obj
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect());
        let (begin, end) = match offs.as_deref() {
            Some([b, e]) => (*b, *e),
            _ => {
                bad(8, &name, "data_offsets must be [begin, end]".into());
                continue;
            }
        };
        if end < begin {
            bad(8, &name, format!("data_offsets end {end} < begin {begin}"));
            continue;
        }
        let nbits = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(bits));
        match nbits {
            None => bad(8, &name, "shape overflows".into()),
            Some(nb) if nb % 8 != 0 => bad(
                8,
                &name,
                "sub-byte dtype does not fill whole bytes (misaligned slice)".into(),
            ),
            Some(nb) if nb / 8 != end - begin => bad(
                8,
                &name,
                format!(
                    "shape {shape:?} x {} is {} bytes but data_offsets span {}",
                    dtype.unwrap_or(""),
                    nb / 8,
                    end - begin
                ),
            ),
            Some(_) => {}
        }
        ranges.push((begin, end, name));
    }
    ranges.sort();
    let mut expect = 0u64;
    for (b, e, name) in &ranges {
        if *b != expect {
            let why = if *b < expect {
                "overlaps the previous tensor"
            } else {
                "leaves a gap after the previous tensor"
            };
            bad(
                8,
                name,
                format!("data_offsets begin {b}, expected {expect}: {why}"),
            );
        }
        expect = expect.max(*e);
    }
    if expect != data_len {
        bad(
            8,
            "buffer",
            if expect < data_len {
                format!("{} trailing bytes after the last tensor", data_len - expect)
            } else {
                format!(
                    "tensors need {expect} bytes of data, the file has {data_len} (incomplete buffer)"
                )
            },
        );
    }
    p
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    let Ok(Some(n8)) = s.bytes_at(0, 8) else {
        ctx.malformed(inner, 0, "header size", "file shorter than 8 bytes");
        return;
    };
    let n = u64::from_le_bytes(n8.try_into().unwrap_or([0; 8]));
    if n > MAX_HEADER_SIZE {
        ctx.malformed(
            inner,
            0,
            "header size",
            format!("header of {n} bytes exceeds the {MAX_HEADER_SIZE}-byte limit"),
        );
        return;
    }
    if 8 + n > s.len() {
        ctx.malformed(
            inner,
            0,
            "header size",
            format!("header of {n} bytes runs past the end of the file"),
        );
        return;
    }
    let Ok(Some(h)) = s.bytes_at(8, usize::try_from(n).unwrap_or(0)) else {
        ctx.malformed(inner, 8, "header", "cannot read header");
        return;
    };
    for (off, subj, why) in validate_header(&h, s.len() - 8 - n) {
        ctx.malformed(inner, off, &subj, why);
    }
}
