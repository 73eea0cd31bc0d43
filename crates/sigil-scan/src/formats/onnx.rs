//! ONNX: external-data locations that escape the model directory (absolute, `..`, drive letters,
//! URLs), custom operator domains (a custom op library means native code), recursively through
//! subgraphs, functions and tensors in attributes.

use crate::formats::proto::{Fields, Val, text};
use crate::report::{Category, Verdict};
use crate::scan::Ctx;
use crate::source::Slice;

const STANDARD_DOMAINS: &[&str] = &[
    "",
    "ai.onnx",
    "ai.onnx.ml",
    "ai.onnx.training",
    "ai.onnx.preview.training",
    "com.microsoft",
    "com.microsoft.nchwc",
    "com.microsoft.mlfeaturizers",
    "com.ms.internal.nhwc",
];
const MAX_DEPTH: u32 = 32;

/// Whether an external-data location escapes the directory holding the model.
pub fn location_escapes(loc: &str) -> bool {
    let l = loc.replace('\\', "/");
    if l.starts_with('/') || l.contains("://") || l.get(1..2) == Some(":") || l.starts_with("~") {
        return true;
    }
    let mut depth: i64 = 0;
    for c in l.split('/') {
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

struct W<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    inner: &'c str,
}

impl W<'_, '_> {
    fn err(&mut self, f: &Fields, what: &str) {
        if let Some(e) = &f.error {
            self.ctx.malformed(
                self.inner,
                0,
                what,
                format!("{what} is not valid protobuf: {e}"),
            );
        }
    }

    fn model(&mut self, s: &Slice) {
        let mut f = Fields::new(s.clone());
        for (n, v) in f.by_ref() {
            match (n, v) {
                (7, Val::Len(g)) => self.graph(&g, 0),
                (8, Val::Len(o)) => self.opset(&o),
                (25, Val::Len(func)) => self.function(&func, 0),
                _ => {}
            }
        }
        self.err(&f, "ModelProto");
    }

    fn opset(&mut self, s: &Slice) {
        let mut f = Fields::new(s.clone());
        for (n, v) in f.by_ref() {
            if let (1, Val::Len(d)) = (n, v) {
                let d = text(&d).unwrap_or_default();
                if !STANDARD_DOMAINS.contains(&d.as_str()) {
                    self.ctx.add(
                        Verdict::Suspicious,
                        Category::CodeExecution,
                        self.inner,
                        0,
                        format!("opset domain {d}"),
                        "custom operator domain: the runtime must load a custom op library (native code) to run this model",
                    );
                }
            }
        }
        self.err(&f, "OperatorSetIdProto");
    }

    fn graph(&mut self, s: &Slice, depth: u32) {
        if depth > MAX_DEPTH {
            self.ctx
                .malformed(self.inner, 0, "graph", "subgraphs nested too deep");
            return;
        }
        let mut f = Fields::new(s.clone());
        for (n, v) in f.by_ref() {
            match (n, v) {
                (1, Val::Len(node)) => self.node(&node, depth),
                (5, Val::Len(t)) => self.tensor(&t),
                (15, Val::Len(sp)) => self.sparse(&sp),
                _ => {}
            }
        }
        self.err(&f, "GraphProto");
    }

    fn function(&mut self, s: &Slice, depth: u32) {
        let mut f = Fields::new(s.clone());
        for (n, v) in f.by_ref() {
            match (n, v) {
                (7, Val::Len(node)) => self.node(&node, depth + 1),
                (9, Val::Len(o)) => self.opset(&o),
                _ => {}
            }
        }
        self.err(&f, "FunctionProto");
    }

    fn node(&mut self, s: &Slice, depth: u32) {
        let mut f = Fields::new(s.clone());
        let mut op = String::new();
        let mut domain = String::new();
        let mut attrs = Vec::new();
        for (n, v) in f.by_ref() {
            match (n, v) {
                (4, Val::Len(t)) => op = text(&t).unwrap_or_default(),
                (7, Val::Len(t)) => domain = text(&t).unwrap_or_default(),
                (5, Val::Len(a)) => attrs.push(a),
                _ => {}
            }
        }
        self.err(&f, "NodeProto");
        if !STANDARD_DOMAINS.contains(&domain.as_str()) {
            self.ctx.add(
                Verdict::Suspicious,
                Category::CodeExecution,
                self.inner,
                0,
                format!("{domain}::{op}"),
                "node uses an operator from a custom domain (native custom op library)",
            );
        }
        for a in attrs {
            let mut fa = Fields::new(a);
            for (n, v) in fa.by_ref() {
                match (n, v) {
                    (5, Val::Len(t)) | (10, Val::Len(t)) => self.tensor(&t),
                    (6, Val::Len(g)) | (11, Val::Len(g)) => self.graph(&g, depth + 1),
                    (22, Val::Len(t)) | (23, Val::Len(t)) => self.sparse(&t),
                    _ => {}
                }
            }
            self.err(&fa, "AttributeProto");
        }
    }

    fn sparse(&mut self, s: &Slice) {
        let mut f = Fields::new(s.clone());
        for (n, v) in f.by_ref() {
            if let (1 | 2, Val::Len(t)) = (n, v) {
                self.tensor(&t);
            }
        }
    }

    fn tensor(&mut self, s: &Slice) {
        let mut f = Fields::new(s.clone());
        let mut name = String::new();
        let mut external = false;
        let mut locations = Vec::new();
        for (n, v) in f.by_ref() {
            match (n, v) {
                (8, Val::Len(t)) => name = text(&t).unwrap_or_default(),
                (14, Val::Varint(1)) => external = true,
                (13, Val::Len(kv)) => {
                    let mut k = String::new();
                    let mut val = String::new();
                    for (m, x) in Fields::new(kv) {
                        match (m, x) {
                            (1, Val::Len(t)) => k = text(&t).unwrap_or_default(),
                            (2, Val::Len(t)) => val = text(&t).unwrap_or_default(),
                            _ => {}
                        }
                    }
                    if k == "location" {
                        locations.push(val);
                    }
                }
                _ => {}
            }
        }
        self.err(&f, "TensorProto");
        for loc in locations {
            if location_escapes(&loc) {
                self.ctx.add(
                    Verdict::Dangerous,
                    Category::FileAccess,
                    self.inner,
                    0,
                    format!("tensor {name} external data {loc}"),
                    "external-data location escapes the model directory: loading reads an arbitrary file",
                );
            } else if !external {
                self.ctx.add(
                    Verdict::Malformed,
                    Category::Structure,
                    self.inner,
                    0,
                    format!("tensor {name}"),
                    "external_data entries without data_location = EXTERNAL",
                );
            }
        }
    }
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    W { ctx, inner }.model(s);
}

#[cfg(test)]
mod tests {
    use super::location_escapes;

    #[test]
    fn locations() {
        assert!(!location_escapes("weights.bin"));
        assert!(!location_escapes("sub/../weights.bin"));
        assert!(location_escapes("../secret"));
        assert!(location_escapes("/etc/passwd"));
        assert!(location_escapes("C:\\x"));
        assert!(location_escapes("a/../../b"));
    }
}
