//! TensorFlow SavedModel (`saved_model.pb`): every op of every graph and function, with the ops
//! that read or write files or call back into Python flagged.

use crate::formats::proto::{Fields, Val, text};
use crate::report::{Category, Verdict};
use crate::scan::Ctx;
use crate::source::Slice;

const FILE_OPS: &[&str] = &[
    "ReadFile",
    "WriteFile",
    "MatchingFiles",
    "ImmutableConst",
    "WholeFileReader",
    "WholeFileReaderV2",
    "DeleteFile",
    "DebugIdentityV2",
    "DebugIdentityV3",
];
const CODE_OPS: &[&str] = &["PyFunc", "PyFuncStateless", "EagerPyFunc"];
const NETWORK_OPS: &[&str] = &["RemoteCall", "_Send", "_Recv"];

struct W<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    inner: &'c str,
}

impl W<'_, '_> {
    fn walk(&mut self, s: &Slice, path: &[u32], what: &str) {
        let mut f = Fields::new(s.clone());
        for (n, v) in f.by_ref() {
            let Val::Len(sub) = v else { continue };
            match (path, n) {
                // SavedModel.meta_graphs -> MetaGraphDef.graph_def -> GraphDef.node / library
                ([], 2) => self.walk(&sub, &[2], "MetaGraphDef"),
                ([2], 2) => self.walk(&sub, &[2, 2], "GraphDef"),
                ([2, 2], 1) => self.node(&sub),
                ([2, 2], 2) => self.walk(&sub, &[2, 2, 2], "FunctionDefLibrary"),
                ([2, 2, 2], 1) => self.walk(&sub, &[2, 2, 2, 1], "FunctionDef"),
                ([2, 2, 2, 1], 3) => self.node(&sub),
                _ => {}
            }
        }
        if let Some(e) = &f.error {
            self.ctx.malformed(
                self.inner,
                0,
                what,
                format!("{what} is not valid protobuf: {e}"),
            );
        }
    }

    fn node(&mut self, s: &Slice) {
        let mut name = String::new();
        let mut op = String::new();
        for (n, v) in Fields::new(s.clone()) {
            match (n, v) {
                (1, Val::Len(t)) => name = text(&t).unwrap_or_default(),
                (2, Val::Len(t)) => op = text(&t).unwrap_or_default(),
                _ => {}
            }
        }
        let (verdict, cat, why) = if FILE_OPS.contains(&op.as_str()) {
            (
                Verdict::Dangerous,
                Category::FileAccess,
                "op reads or writes files when the graph runs",
            )
        } else if CODE_OPS.contains(&op.as_str()) {
            (
                Verdict::Dangerous,
                Category::CodeExecution,
                "op calls a Python function when the graph runs",
            )
        } else if NETWORK_OPS.contains(&op.as_str()) {
            (
                Verdict::Suspicious,
                Category::NetworkAccess,
                "op talks to another device or task",
            )
        } else {
            return;
        };
        self.ctx.add(
            verdict,
            cat,
            self.inner,
            0,
            format!("{op} (node {name})"),
            why,
        );
    }
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    W { ctx, inner }.walk(s, &[], "SavedModel");
}
