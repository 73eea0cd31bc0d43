//! TorchScript archives: `code/**/*.py` (TorchScript source compiled at load) and the C++
//! unpickler's pickles (`data.pkl`, `constants.pkl`), whose `__torch__.*` and
//! `torch.jit._pickle.*` globals are resolved by TorchScript, not imported from Python.

use std::io::Read;

use crate::pickle::{self, WalkOptions};
use crate::report::{Category, Verdict};
use crate::scan::Ctx;
use crate::source::Slice;

const STANDARD_OP_NAMESPACES: &[&str] = &[
    "aten",
    "prim",
    "quantized",
    "_quantized",
    "profiler",
    "_caffe2",
];
const FILE_OPS: &[&str] = &[
    "aten.from_file",
    "aten::from_file",
    "aten.save",
    "aten::save",
];

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
    ctx.findings.extend(r.findings.into_iter().filter(|f| {
        !(f.subject.starts_with("__torch__.") || f.subject.starts_with("torch.jit._pickle."))
    }));
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
    let mut line_start = 0u64;
    for (ln, line) in text.split_inclusive('\n').enumerate() {
        let at = line_start;
        line_start += line.len() as u64;
        for op in FILE_OPS {
            if line.contains(op) {
                ctx.add(
                    Verdict::Dangerous,
                    Category::FileAccess,
                    inner,
                    at,
                    (*op).to_owned(),
                    format!("TorchScript calls {op} (file access) at line {}", ln + 1),
                );
            }
        }
        let mut rest = line;
        while let Some(i) = rest.find("torch.ops.") {
            let after = rest.get(i + 10..).unwrap_or_default();
            let ns: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !STANDARD_OP_NAMESPACES.contains(&ns.as_str()) {
                ctx.add(Verdict::Suspicious, Category::CodeExecution, inner, at, format!("torch.ops.{ns}"), format!("custom operator namespace at line {}: needs a native library loaded at run time", ln + 1));
            }
            rest = after;
        }
    }
}
