//! GGUF (v2, v3): header and count sanity against the file size, every key/value and tensor
//! info read with bounds, duplicate keys and tensor names, tensor types, alignment and data
//! ranges; and chat templates (`tokenizer.chat_template*`) that can reach Python objects or the
//! file system from Jinja (server-side template injection when rendered outside a sandbox).

use std::collections::HashSet;
use std::io::{BufReader, Read};

use crate::report::{Category, Verdict};
use crate::scan::Ctx;
use crate::source::Slice;

/// Longest key and longest string value we keep (longer strings are skipped).
const MAX_KEY: u64 = 64 * 1024;
const MAX_TEMPLATE: u64 = 4 * 1024 * 1024;
/// GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

/// A problem: offset, subject, reason, verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub offset: u64,
    pub subject: String,
    pub reason: String,
    pub verdict: Verdict,
}

struct R<T> {
    r: BufReader<T>,
    pos: u64,
    len: u64,
}

impl<T: Read> R<T> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|_| format!("truncated at offset {}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes::<4>()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes::<8>()?))
    }
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }
    fn skip(&mut self, n: u64) -> Result<(), String> {
        if n > self.remaining() {
            return Err(format!(
                "length {n} at offset {} runs past the end of the file",
                self.pos
            ));
        }
        let k = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(|e| e.to_string())?;
        self.pos += k;
        if k != n {
            return Err(format!("truncated at offset {}", self.pos));
        }
        Ok(())
    }
    /// A gguf_string; returns `None` (skipped) when longer than `keep`.
    fn string(&mut self, keep: u64) -> Result<Option<String>, String> {
        let n = self.u64()?;
        if n > self.remaining() {
            return Err(format!(
                "string of {n} bytes at offset {} runs past the end of the file",
                self.pos
            ));
        }
        if n > keep {
            self.skip(n)?;
            return Ok(None);
        }
        let mut v = vec![0u8; usize::try_from(n).map_err(|_| "length".to_owned())?];
        self.r
            .read_exact(&mut v)
            .map_err(|_| format!("truncated at offset {}", self.pos))?;
        self.pos += n;
        Ok(Some(String::from_utf8_lossy(&v).into_owned()))
    }
}

fn scalar_size(t: u32) -> Option<u64> {
    Some(match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

/// (block size in elements, bytes per block) of a ggml tensor type.
fn ggml_type(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),
        1 => (1, 2),
        2 => (32, 18),
        3 => (32, 20),
        6 => (32, 22),
        7 => (32, 24),
        8 => (32, 34),
        9 => (32, 36),
        10 => (256, 84),
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        16 => (256, 66),
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50),
        20 => (32, 18),
        21 => (256, 110),
        22 => (256, 82),
        23 => (256, 136),
        24 => (1, 1),
        25 => (1, 2),
        26 => (1, 4),
        27 => (1, 8),
        28 => (1, 8),
        29 => (256, 56),
        30 => (1, 2),
        34 => (256, 54),
        35 => (256, 66),
        39 => (32, 17),
        _ => return None,
    })
}

/// Jinja constructs that reach Python internals, the file system or the network.
const TEMPLATE_DANGEROUS: &[&str] = &[
    "__class__",
    "__mro__",
    "__subclasses__",
    "__globals__",
    "__builtins__",
    "__import__",
    "__init__",
    "__getattribute__",
    "__dict__",
    "__base__",
    "__bases__",
    "__code__",
    "__func__",
    "__reduce__",
    "__self__",
    "func_globals",
    "popen",
    "os.system",
    "subprocess",
    "eval(",
    "exec(",
    "lipsum",
    "cycler",
    "joiner",
    "_TemplateReference__context",
    "request.application",
    "get_flashed_messages",
    "url_for",
    "config.items",
    "self._",
    "|attr(",
    "| attr(",
];
const TEMPLATE_SUSPICIOUS: &[&str] = &[
    "{% import",
    "{%- import",
    "{% include",
    "{%- include",
    "{% extends",
    "{%- extends",
    "{% from",
    "{%- from",
];

/// Judges a chat template.
pub fn check_template(t: &str) -> Option<(Verdict, String)> {
    let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    let lower = t.to_ascii_lowercase();
    if let Some(p) = TEMPLATE_DANGEROUS
        .iter()
        .find(|p| t.contains(**p) || compact.contains(&p.replace(' ', "")))
    {
        return Some((
            Verdict::Dangerous,
            format!(
                "chat template uses {p:?}: Jinja rendered outside a sandbox can reach Python objects and run code"
            ),
        ));
    }
    if let Some(p) = TEMPLATE_SUSPICIOUS.iter().find(|p| lower.contains(**p)) {
        return Some((
            Verdict::Suspicious,
            format!("chat template uses {p:?}: it loads other templates from the file system"),
        ));
    }
    None
}

/// Parses GGUF metadata and tensor infos from `r` (`len` bytes in all).
pub fn check<T: Read>(r: T, len: u64) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut rd = R {
        r: BufReader::with_capacity(64 * 1024, r),
        pos: 0,
        len,
    };
    if let Err(e) = walk(&mut rd, &mut out) {
        out.push(Problem {
            offset: rd.pos,
            subject: "gguf".into(),
            reason: e,
            verdict: Verdict::Malformed,
        });
    }
    out
}

fn bad(out: &mut Vec<Problem>, offset: u64, subject: impl Into<String>, reason: impl Into<String>) {
    out.push(Problem {
        offset,
        subject: subject.into(),
        reason: reason.into(),
        verdict: Verdict::Malformed,
    });
}

fn walk<T: Read>(rd: &mut R<T>, out: &mut Vec<Problem>) -> Result<(), String> {
    let magic = rd.bytes::<4>()?;
    if &magic != b"GGUF" {
        return Err("not a GGUF file".into());
    }
    let version = rd.u32()?;
    if !(2..=3).contains(&version) {
        bad(
            out,
            4,
            "version",
            format!("GGUF version {version} is not supported (2 or 3)"),
        );
        return Ok(());
    }
    let n_tensors = rd.u64()?;
    let n_kv = rd.u64()?;
    // Each KV is at least 8+1+4+1 bytes, each tensor info at least 8+1+4+8+4+8.
    if n_kv.saturating_mul(14) > rd.remaining() {
        bad(
            out,
            16,
            "kv count",
            format!("{n_kv} key/values cannot fit in the file"),
        );
        return Ok(());
    }
    if n_tensors.saturating_mul(33) > rd.remaining() {
        bad(
            out,
            8,
            "tensor count",
            format!("{n_tensors} tensors cannot fit in the file"),
        );
        return Ok(());
    }
    let mut keys = HashSet::new();
    let mut alignment: u64 = 32;
    for _ in 0..n_kv {
        let at = rd.pos;
        let key = rd
            .string(MAX_KEY)?
            .ok_or_else(|| format!("key longer than {MAX_KEY} bytes at offset {at}"))?;
        if !keys.insert(key.clone()) {
            bad(out, at, key.clone(), "duplicate metadata key");
        }
        let t = rd.u32()?;
        if key.starts_with("tokenizer.chat_template") && t == 8 {
            let vat = rd.pos;
            match rd.string(MAX_TEMPLATE)? {
                Some(tpl) => {
                    if let Some((v, why)) = check_template(&tpl) {
                        out.push(Problem {
                            offset: vat,
                            subject: key.clone(),
                            reason: why,
                            verdict: v,
                        });
                    }
                }
                None => out.push(Problem {
                    offset: vat,
                    subject: key.clone(),
                    reason: format!(
                        "chat template longer than {MAX_TEMPLATE} bytes was not inspected"
                    ),
                    verdict: Verdict::Suspicious,
                }),
            }
            continue;
        }
        if key == "general.alignment" && t == 4 {
            let a = u64::from(rd.u32()?);
            if a == 0 || !a.is_power_of_two() {
                bad(
                    out,
                    at,
                    key.clone(),
                    format!("alignment {a} is not a power of two"),
                );
                return Ok(());
            }
            alignment = a;
            continue;
        }
        value(rd, t, 0)?;
    }
    let mut names = HashSet::new();
    let mut ranges: Vec<(u64, u64, String)> = Vec::new();
    for _ in 0..n_tensors {
        let at = rd.pos;
        let name = rd
            .string(MAX_KEY)?
            .ok_or_else(|| format!("tensor name too long at offset {at}"))?;
        if !names.insert(name.clone()) {
            bad(out, at, name.clone(), "duplicate tensor name");
        }
        let nd = rd.u32()?;
        if nd > MAX_DIMS {
            bad(
                out,
                at,
                name,
                format!("{nd} dimensions, more than {MAX_DIMS}"),
            );
            return Ok(());
        }
        let mut n: u64 = 1;
        let mut overflow = false;
        for _ in 0..nd {
            let d = rd.u64()?;
            match n.checked_mul(d) {
                Some(v) => n = v,
                None => overflow = true,
            }
        }
        let t = rd.u32()?;
        let off = rd.u64()?;
        if overflow {
            bad(out, at, name, "tensor dimensions overflow");
            continue;
        }
        let Some((block, bytes)) = ggml_type(t) else {
            bad(out, at, name, format!("unknown ggml type {t}"));
            continue;
        };
        if !n.is_multiple_of(block) {
            bad(
                out,
                at,
                name.clone(),
                format!("{n} elements is not a multiple of the block size {block}"),
            );
            continue;
        }
        if off % alignment != 0 {
            bad(
                out,
                at,
                name.clone(),
                format!("offset {off} is not aligned to {alignment}"),
            );
        }
        match (n / block)
            .checked_mul(bytes)
            .and_then(|sz| off.checked_add(sz).map(|e| (off, e)))
        {
            Some((b, e)) => ranges.push((b, e, name)),
            None => bad(out, at, name, "tensor size overflows"),
        }
    }
    let data_start = rd.pos.div_ceil(alignment) * alignment;
    let data_len = rd.len.saturating_sub(data_start);
    ranges.sort();
    let mut prev_end = 0u64;
    for (b, e, name) in &ranges {
        if *e > data_len {
            bad(
                out,
                data_start + b,
                name.clone(),
                format!("tensor data [{b}, {e}) runs past the data section ({data_len} bytes)"),
            );
        }
        if *b < prev_end {
            bad(
                out,
                data_start + b,
                name.clone(),
                "tensor data overlaps the previous tensor",
            );
        }
        prev_end = prev_end.max(*e);
    }
    Ok(())
}

fn value<T: Read>(rd: &mut R<T>, t: u32, depth: u32) -> Result<(), String> {
    if let Some(sz) = scalar_size(t) {
        return rd.skip(sz);
    }
    match t {
        8 => rd.string(0).map(|_| ()),
        9 => {
            if depth > 2 {
                return Err("arrays nested too deep".into());
            }
            let et = rd.u32()?;
            let n = rd.u64()?;
            if let Some(sz) = scalar_size(et) {
                let total = n
                    .checked_mul(sz)
                    .ok_or_else(|| format!("array of {n} elements overflows"))?;
                return rd.skip(total);
            }
            if n.saturating_mul(8) > rd.remaining() {
                return Err(format!("array of {n} elements cannot fit in the file"));
            }
            for _ in 0..n {
                value(rd, et, depth + 1)?;
            }
            Ok(())
        }
        other => Err(format!("unknown metadata value type {other}")),
    }
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    for p in check(s.clone(), s.len()) {
        let cat = if p.verdict == Verdict::Malformed {
            Category::Structure
        } else {
            Category::CodeExecution
        };
        ctx.add(p.verdict, cat, inner, p.offset, p.subject, p.reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(check_template("{% for m in messages %}{{ m.content }}{% endfor %}").is_none());
        assert_eq!(
            check_template("{{ ''.__class__.__mro__[1].__subclasses__() }}").map(|x| x.0),
            Some(Verdict::Dangerous)
        );
        assert_eq!(
            check_template("{{ cycler.__init__.__globals__.os.popen('id').read() }}").map(|x| x.0),
            Some(Verdict::Dangerous)
        );
        assert_eq!(
            check_template("{% include 'x' %}").map(|x| x.0),
            Some(Verdict::Suspicious)
        );
    }
}
