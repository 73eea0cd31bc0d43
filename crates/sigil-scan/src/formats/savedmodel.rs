//! TensorFlow SavedModel (`saved_model.pb`): every op of every graph and function, with the ops
//! that read or write files or call back into Python flagged.
//!
//! `tf.saved_model.save` keeps a model's computation in the function library
//! (`meta_graphs[].graph_def.library.function[].node_def[]`) and only `StatefulPartitionedCall`
//! nodes that call into it in `graph_def.node[]`, so both are walked; every library function
//! counts, reachable from a signature or not. The checkpoint machinery every SavedModel carries
//! (`SaveV2`, `RestoreV2`, `MergeV2Checkpoints` in `__inference__traced_save_*`) is not flagged.
//! `PrintV2` is flagged when its `output_stream` attribute is a `file://` path
//! (`tf.print(..., output_stream="file://...")` appends to that file).

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
    "CreateSummaryFileWriter",
    "DatasetToTFRecord",
    "ExperimentalDatasetToTFRecord",
    "SaveDataset",
    "SaveDatasetV2",
    "LoadDataset",
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
        let mut output_stream = None;
        for (n, v) in Fields::new(s.clone()) {
            match (n, v) {
                (1, Val::Len(t)) => name = text(&t).unwrap_or_default(),
                (2, Val::Len(t)) => op = text(&t).unwrap_or_default(),
                (5, Val::Len(entry)) => {
                    if let Some(v) = string_attr(&entry, "output_stream") {
                        output_stream = Some(v);
                    }
                }
                _ => {}
            }
        }
        let to_file = op == "PrintV2"
            && output_stream
                .as_deref()
                .is_some_and(|o| o.starts_with("file://"));
        let (verdict, cat, why) = if to_file {
            (
                Verdict::Dangerous,
                Category::FileAccess,
                "PrintV2 appends to a file (output_stream file://) when the graph runs",
            )
        } else if FILE_OPS.contains(&op.as_str()) {
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

/// The string value of a `NodeDef.attr` map entry (key = 1, `AttrValue` = 2, its `s` = 2) when
/// the entry's key is `key`.
fn string_attr(entry: &Slice, key: &str) -> Option<String> {
    let mut k = None;
    let mut value = None;
    for (n, v) in Fields::new(entry.clone()) {
        match (n, v) {
            (1, Val::Len(t)) => k = text(&t),
            (2, Val::Len(t)) => value = Some(t),
            _ => {}
        }
    }
    if k.as_deref() != Some(key) {
        return None;
    }
    Fields::new(value?).find_map(|(n, v)| match (n, v) {
        (2, Val::Len(t)) => text(&t),
        _ => None,
    })
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) {
    W { ctx, inner }.walk(s, &[], "SavedModel");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{ScanConfig, scan_bytes};
    use std::path::Path;

    fn len(field: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![field << 3 | 2];
        let mut n = payload.len();
        loop {
            let b = u8::try_from(n & 0x7f).unwrap();
            n >>= 7;
            v.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                break;
            }
        }
        v.extend_from_slice(payload);
        v
    }

    /// A SavedModel whose one library function holds one node `op` with a string attribute.
    fn model(op: &str, attr: Option<(&str, &str)>) -> Vec<u8> {
        let mut node = len(1, b"n");
        node.extend(len(2, op.as_bytes()));
        if let Some((k, v)) = attr {
            let mut entry = len(1, k.as_bytes());
            entry.extend(len(2, &len(2, v.as_bytes())));
            node.extend(len(5, &entry));
        }
        let function = len(3, &node);
        let graph = len(2, &len(1, &function));
        let mut out = vec![0x08, 0x01];
        out.extend(len(2, &len(2, &graph)));
        out
    }

    fn verdict(b: Vec<u8>) -> (Verdict, Vec<String>) {
        let r = scan_bytes(Path::new("saved_model.pb"), b, &ScanConfig::default());
        assert_eq!(r.format.as_str(), "tf-savedmodel");
        (
            r.verdict,
            r.findings.into_iter().map(|f| f.subject).collect(),
        )
    }

    #[test]
    fn print_to_a_file_is_file_access() {
        let (v, s) = verdict(model("PrintV2", Some(("output_stream", "file:///tmp/x"))));
        assert_eq!(
            (v, s),
            (Verdict::Dangerous, vec!["PrintV2 (node n)".to_owned()])
        );
        for stream in ["stderr", "log(info)"] {
            assert_eq!(
                verdict(model("PrintV2", Some(("output_stream", stream)))).0,
                Verdict::Safe
            );
        }
        // the same value under another attribute name is not an output stream
        assert_eq!(
            verdict(model("PrintV2", Some(("end", "file://x")))).0,
            Verdict::Safe
        );
    }

    #[test]
    fn library_ops_that_write_files() {
        for op in [
            "WriteFile",
            "DatasetToTFRecord",
            "SaveDatasetV2",
            "CreateSummaryFileWriter",
        ] {
            assert_eq!(verdict(model(op, None)).0, Verdict::Dangerous, "{op}");
        }
        for op in ["MatMul", "SaveV2", "RestoreV2", "MergeV2Checkpoints"] {
            assert_eq!(verdict(model(op, None)).0, Verdict::Safe, "{op}");
        }
    }
}
