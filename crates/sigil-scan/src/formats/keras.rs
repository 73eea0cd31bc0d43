//! Keras: the v3 `.keras` zip's `config.json` and the legacy HDF5 `model_config` attribute.
//! Lambda layers carry marshalled bytecode or source; `module`/`registered_name` entries name
//! modules the loader imports; nested models are walked recursively.
//!
//! HDF5 is not parsed in full: h5py stores the `model_config` attribute as one contiguous JSON
//! string, which is located by its `{"class_name"` prefix and read with a streaming JSON reader.

use std::io::Read;

use serde_json::Value;

use crate::report::{Category, Verdict};
use crate::scan::Ctx;
use crate::source::Slice;

/// Largest config we read.
const MAX_CONFIG: u64 = 64 * 1024 * 1024;

const KERAS_MODULES: &[&str] = &["keras", "tf_keras", "tensorflow.keras", "builtins"];

fn keras_module(m: &str) -> bool {
    KERAS_MODULES
        .iter()
        .any(|k| m == *k || m.starts_with(&format!("{k}.")))
}

fn walk(ctx: &mut Ctx<'_>, inner: &str, v: &Value, path: &str, depth: u32) {
    if depth > 128 {
        ctx.malformed(inner, 0, path, "config nested too deep");
        return;
    }
    match v {
        Value::Object(m) => {
            let class = m.get("class_name").and_then(Value::as_str).unwrap_or("");
            let name = m
                .get("config")
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if class == "Lambda" {
                ctx.add(
                    Verdict::Dangerous,
                    Category::CodeExecution,
                    inner,
                    0,
                    format!("Lambda layer {name}"),
                    "Lambda layers carry Python bytecode or source that runs when the model loads (safe_mode=False) or is called",
                );
            }
            if let Some(module) = m.get("module").and_then(Value::as_str)
                && !keras_module(module)
            {
                let g = ctx
                    .cfg
                    .globals
                    .classify(module, if class.is_empty() { "?" } else { class });
                let verdict = g.verdict.max(Verdict::Suspicious);
                ctx.add(
                    verdict,
                    if verdict == Verdict::Dangerous {
                        g.category
                    } else {
                        Category::UnknownGlobal
                    },
                    inner,
                    0,
                    format!("{module}.{class}"),
                    format!("config names module {module:?}, which the loader imports"),
                );
            }
            if let Some(f) = m.get("function_type").and_then(Value::as_str)
                && f == "lambda"
                && class != "Lambda"
            {
                ctx.add(
                    Verdict::Dangerous,
                    Category::CodeExecution,
                    inner,
                    0,
                    format!("{class} {name}"),
                    "layer config carries a serialized lambda",
                );
            }
            for (k, x) in m {
                walk(ctx, inner, x, &format!("{path}.{k}"), depth + 1);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(ctx, inner, x, &format!("{path}[{i}]"), depth + 1);
            }
        }
        _ => {}
    }
}

/// Judges a Keras model config (JSON).
pub(crate) fn check_config(ctx: &mut Ctx<'_>, inner: &str, v: &Value) {
    walk(ctx, inner, v, "$", 0);
}

pub(crate) fn scan_config_json(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    if s.len() > MAX_CONFIG {
        ctx.malformed(
            inner,
            0,
            "config.json",
            format!("config larger than {MAX_CONFIG} bytes"),
        );
        return;
    }
    match serde_json::from_reader::<_, Value>(std::io::BufReader::new(s.clone())) {
        Ok(v) => check_config(ctx, inner, &v),
        Err(e) => ctx.malformed(
            inner,
            0,
            "config.json",
            format!("config.json is not JSON: {e}"),
        ),
    }
}

/// Legacy HDF5: finds each `{"class_name"` JSON document in the file and judges it.
pub(crate) fn scan_h5(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    const NEEDLE: &[u8] = b"{\"class_name\"";
    let mut r = s.clone();
    let mut buf = s.read_buf(1024 * 1024);
    let mut base: u64 = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut found = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut window = std::mem::take(&mut carry);
        let window_start = base - window.len() as u64;
        window.extend_from_slice(buf.get(..n).unwrap_or_default());
        let mut i = 0;
        while let Some(p) = window
            .get(i..)
            .and_then(|w| w.windows(NEEDLE.len()).position(|x| x == NEEDLE))
        {
            let at = window_start + (i + p) as u64;
            let doc = s.sub(at, MAX_CONFIG);
            let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(doc))
                .into_iter::<Value>();
            if let Some(Ok(v)) = de.next() {
                found += 1;
                check_config(ctx, inner, &v);
            }
            i += p + 1;
            if found > 16 {
                break;
            }
        }
        base += n as u64;
        let keep = window.len().saturating_sub(NEEDLE.len() - 1);
        carry = window.get(keep..).unwrap_or_default().to_vec();
    }
}
