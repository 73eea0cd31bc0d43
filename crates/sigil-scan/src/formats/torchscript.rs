//! TorchScript archives: `code/**/*.py` (TorchScript source compiled at load) and the C++
//! unpickler's pickles (`data.pkl`, `constants.pkl`, the code's `.debug_pkl`), whose `__torch__.*`
//! and `torch.jit._pickle.*` globals are resolved by TorchScript, not imported from Python.
//!
//! The code is read as tokens (comments and string literals skipped, whitespace between tokens
//! ignored), so `torch.from_file(...)` as `torch.jit.save` prints it, `ops.aten.from_file`, or
//! the same split over lines are all found; a name inside a string or comment is not.

use std::io::Read;

use crate::pickle::{self, WalkOptions};
use crate::report::{Category, Verdict};
use crate::scan::Ctx;
use crate::source::Slice;

const STANDARD_OP_NAMESPACES: &[&[u8]] = &[
    b"aten",
    b"prim",
    b"quantized",
    b"_quantized",
    b"profiler",
    b"_caffe2",
];
/// Operators that open a file by name: `aten::from_file` reads (with `shared=True` it creates
/// the file), `aten::save` writes.
const FILE_OPS: &[&[u8]] = &[b"from_file", b"save"];
/// Names through which TorchScript code reaches an `aten` operator.
const OP_RECEIVERS: &[&[u8]] = &[b"torch", b"aten"];

pub(crate) fn scan_pickle(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    let r = pickle::walk(
        s.clone(),
        &WalkOptions {
            policy: &ctx.cfg.globals,
            inner,
            max_pickles: Some(1),
            joblib: false,
        },
    );
    ctx.keep_all(
        r.findings.into_iter().filter(|f| {
            !(f.subject.starts_with("__torch__.") || f.subject.starts_with("torch.jit._pickle."))
        }),
        0,
    );
}

/// One token of TorchScript source: a word (identifier or number) or one punctuation mark (`::`
/// counts as one).
#[derive(Debug, Clone, Copy)]
struct Tok<'t> {
    text: &'t [u8],
    line: usize,
    line_start: u64,
}

/// Splits Python-syntax source into tokens, dropping whitespace, comments and string literals.
fn tokens(src: &[u8]) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let (mut i, mut line, mut line_start) = (0usize, 1usize, 0u64);
    let at = |k: usize| src.get(k).copied();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while let Some(c) = at(i) {
        match c {
            b'\n' => {
                i += 1;
                line += 1;
                line_start = i as u64;
            }
            // a line continuation
            b'\\' if at(i + 1) == Some(b'\n') => {
                i += 2;
                line += 1;
                line_start = i as u64;
            }
            b'#' => {
                while at(i).is_some_and(|c| c != b'\n') {
                    i += 1;
                }
            }
            b'"' | b'\'' => {
                let quote = c;
                let triple = at(i + 1) == Some(quote) && at(i + 2) == Some(quote);
                i += if triple { 3 } else { 1 };
                loop {
                    match at(i) {
                        None => break,
                        Some(b'\\') => i += 2,
                        Some(b'\n') => {
                            i += 1;
                            line += 1;
                            line_start = i as u64;
                            if !triple {
                                break; // unterminated: the compiler refuses it
                            }
                        }
                        Some(q) if q == quote => {
                            if !triple {
                                i += 1;
                                break;
                            }
                            if at(i + 1) == Some(quote) && at(i + 2) == Some(quote) {
                                i += 3;
                                break;
                            }
                            i += 1;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            c if word(c) => {
                let start = i;
                while at(i).is_some_and(word) {
                    i += 1;
                }
                let text = src.get(start..i).unwrap_or_default();
                // A string prefix (r"", b'', f"", rb"") belongs to the literal that follows.
                let prefix = text.len() <= 2
                    && text
                        .iter()
                        .all(|c| matches!(c.to_ascii_lowercase(), b'r' | b'b' | b'f' | b'u'));
                if !(prefix && matches!(at(i), Some(b'"' | b'\''))) {
                    out.push(Tok {
                        text,
                        line,
                        line_start,
                    });
                }
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                let n = if c == b':' && at(i + 1) == Some(b':') {
                    2
                } else {
                    1
                };
                out.push(Tok {
                    text: src.get(i..i + n).unwrap_or_default(),
                    line,
                    line_start,
                });
                i += n;
            }
        }
    }
    out
}

pub(crate) fn scan_code(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    let mut text = String::new();
    if s.clone()
        .take(16 * 1024 * 1024)
        .read_to_string(&mut text)
        .is_err()
    {
        ctx.malformed(inner, 0, "code", "TorchScript code is not UTF-8");
        return;
    }
    let toks = tokens(text.as_bytes());
    let is = |k: usize, t: &[u8]| toks.get(k).is_some_and(|x| x.text == t);
    let dot = |k: usize| is(k, b".") || is(k, b"::");
    for (k, t) in toks.iter().enumerate() {
        let name = |k: usize| {
            toks.get(k)
                .map(|x| String::from_utf8_lossy(x.text).into_owned())
                .unwrap_or_default()
        };
        // torch.from_file, ops.aten.from_file, aten::save
        if OP_RECEIVERS.contains(&t.text)
            && dot(k + 1)
            && toks.get(k + 2).is_some_and(|x| FILE_OPS.contains(&x.text))
        {
            let op = format!("{}{}{}", name(k), name(k + 1), name(k + 2));
            ctx.add(
                Verdict::Dangerous,
                Category::FileAccess,
                inner,
                t.line_start,
                op.clone(),
                format!("TorchScript calls {op} (file access) at line {}", t.line),
            );
        }
        // ops.<namespace>.<op> or torch.ops.<namespace>.<op>, not some_object.ops
        let reaches_ops = t.text == b"ops"
            && (k == 0 || !dot(k - 1) || (k >= 2 && is(k - 2, b"torch")))
            && dot(k + 1);
        if reaches_ops
            && let Some(ns) = toks.get(k + 2)
            && !STANDARD_OP_NAMESPACES.contains(&ns.text)
        {
            let ns = name(k + 2);
            ctx.add(
                Verdict::Suspicious,
                Category::CodeExecution,
                inner,
                t.line_start,
                format!("torch.ops.{ns}"),
                format!(
                    "custom operator namespace at line {}: needs a native library loaded at run time",
                    t.line
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::ScanConfig;

    fn scan(src: &str) -> Vec<(Verdict, String, u64)> {
        let cfg = ScanConfig::default();
        let mut ctx = Ctx::new(&cfg, std::path::Path::new("t.pt"));
        scan_code(&mut ctx, "code.py", &Slice::mem(src.as_bytes().to_vec()));
        ctx.findings
            .into_iter()
            .map(|f| (f.verdict, f.subject, f.offset))
            .collect()
    }

    #[test]
    fn file_ops_in_every_spelling() {
        let d = |s: &str| (Verdict::Dangerous, s.to_owned());
        let subjects = |src: &str| {
            scan(src)
                .into_iter()
                .map(|(v, s, _)| (v, s))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            subjects("    _0 = torch.from_file(\"x\", False, 16, dtype=0)\n"),
            [d("torch.from_file")]
        );
        assert_eq!(
            subjects("    torch.save(x, \"sigil_marker\")\n"),
            [d("torch.save")]
        );
        assert_eq!(
            subjects("  y = ops.aten.from_file(\"/etc/passwd\", None, 10)\n"),
            [d("aten.from_file")]
        );
        assert_eq!(
            subjects("  y = torch.ops.aten.from_file(\"/etc/passwd\")\n"),
            [d("aten.from_file")]
        );
        assert_eq!(
            subjects("  y = (torch\n    .from_file)(\"f\")\n"),
            [d("torch.from_file")]
        );
        assert_eq!(
            subjects("  y = torch . \\\n from_file(\"f\")\n"),
            [d("torch.from_file")]
        );
    }

    #[test]
    fn strings_comments_and_lookalikes_are_not_calls() {
        for src in [
            "    return torch.relu(x)  # torch.from_file(\"x\")\n",
            "    s = \"torch.from_file('x')\"\n",
            "    s = '''\n torch.save(x, 'f')\n'''\n",
            "    s = r\"torch.save\\\"\" + 'ops.evil.op'\n",
            "    return torch.from_file_like(x) + torch.saved(x) + self.save(x)\n",
            "    return self.ops.custom.thing + ops.prim.NumToTensor(x)\n",
        ] {
            assert_eq!(scan(src), [], "{src}");
        }
    }

    #[test]
    fn custom_op_namespaces_and_line_offsets() {
        let src = "def forward(self, x):\n    return ops.my_ns.op(x) + torch.ops.other.op(x)\n";
        let f = scan(src);
        assert_eq!(f.len(), 2);
        assert!(
            f.iter()
                .all(|(v, _, at)| *v == Verdict::Suspicious && *at == 22)
        );
        assert_eq!(f[0].1, "torch.ops.my_ns");
        assert_eq!(f[1].1, "torch.ops.other");
    }
}
