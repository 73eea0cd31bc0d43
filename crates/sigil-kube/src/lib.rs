//! Kubernetes manifest loading, shared by guardrails (`sigil audit`, `sigil webhook`) and
//! segmentation (`sigil reach`).
//!
//! Owns: reading files, directories and stdin; splitting multi-document YAML and JSON streams;
//! flattening `List` kinds (`kubectl get -o yaml`) and typed lists (`PodList`, whose items take
//! apiVersion and kind from the list); remembering where each object came from (file, document,
//! line, the item's own line inside a list); and
//! finding the pod templates inside workload kinds and the AI operators' resources (Kubeflow,
//! KubeRay, KServe), typed with k8s-openapi. Inputs are bounded (bytes, objects, YAML budget).
//!
//! Must not: judge objects (that is sigil-guard / sigil-reach), talk to a cluster, or silently
//! drop documents: a document that is not a Kubernetes object is an error naming file and line.

#![allow(
    clippy::result_large_err,
    reason = "LoadError carries file, document, line and field for good messages; errors are the cold path"
)]

mod error;
mod items;
mod split;
mod templates;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use error::LoadError;
pub use k8s_openapi;
pub use templates::{PodTemplate, has_pod_templates, pod_templates};

/// Largest single input (file or stdin) accepted.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Most objects accepted from one input (after flattening lists).
pub const MAX_OBJECTS_PER_INPUT: usize = 200_000;
/// Deepest directory recursion.
pub const MAX_DIR_DEPTH: usize = 32;

/// Kinds that live outside any namespace (built-in and the common add-ons'); everything else is
/// treated as namespaced.
pub const CLUSTER_SCOPED_KINDS: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "APIService",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "ConstraintTemplate",
    "ClusterIssuer",
    "ClusterServingRuntime",
    "ClusterPolicy",
];

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    /// The file; `-` for stdin.
    pub path: PathBuf,
    /// 0-based document index in the file.
    pub document: usize,
    /// 1-based line where the document's content starts.
    pub line: u64,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} (document {})",
            self.path.display(),
            self.line,
            self.document + 1
        )
    }
}

/// One Kubernetes object, untyped, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub source: Source,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    /// `metadata.name`, or `metadata.generateName` when only that is set; empty when neither.
    pub name: String,
    pub raw: serde_json::Value,
}

impl Object {
    /// The API group (empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    /// Whether the kind lives outside namespaces (see [`CLUSTER_SCOPED_KINDS`]); Gatekeeper
    /// constraints (`constraints.gatekeeper.sh`) are cluster-scoped too.
    pub fn is_cluster_scoped(&self) -> bool {
        CLUSTER_SCOPED_KINDS.contains(&self.kind.as_str())
            || self.group() == "constraints.gatekeeper.sh"
    }

    /// `metadata.labels`.
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        string_map(self.raw.pointer("/metadata/labels"))
    }

    /// `metadata.annotations`.
    pub fn annotations(&self) -> std::collections::BTreeMap<String, String> {
        string_map(self.raw.pointer("/metadata/annotations"))
    }

    /// Deserializes the whole object into a k8s-openapi type, with an error naming the object.
    pub fn typed<T: serde::de::DeserializeOwned>(&self) -> Result<T, LoadError> {
        serde_json::from_value(self.raw.clone()).map_err(|e| self.invalid("", e.to_string()))
    }

    /// Sets the namespace (field and `metadata.namespace`), e.g. a default for objects without one.
    pub fn set_namespace(&mut self, namespace: &str) {
        self.namespace = Some(namespace.to_owned());
        if let Some(meta) = self
            .raw
            .as_object_mut()
            .map(|m| m.entry("metadata").or_insert_with(|| serde_json::json!({})))
            .and_then(serde_json::Value::as_object_mut)
        {
            meta.insert("namespace".to_owned(), serde_json::json!(namespace));
        }
    }

    pub(crate) fn invalid(&self, field: &str, message: String) -> LoadError {
        LoadError::Invalid {
            path: self.source.path.clone(),
            document: self.source.document,
            line: self.source.line,
            kind: self.kind.clone(),
            name: self.name.clone(),
            field: field.to_owned(),
            message,
        }
    }
}

fn string_map(v: Option<&serde_json::Value>) -> std::collections::BTreeMap<String, String> {
    v.and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Loads every object from files, directories (recursively, `*.yaml`, `*.yml`, `*.json`, sorted)
/// and `-` (stdin). `List` kinds are flattened; empty documents are skipped.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Object>, LoadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .take(MAX_INPUT_BYTES + 1)
                .read_to_end(&mut buf)
                .map_err(|source| LoadError::Io {
                    path: p.clone(),
                    source,
                })?;
            out.extend(load_bytes(buf, p)?);
        } else {
            load_path(p, 0, &mut out)?;
        }
    }
    Ok(out)
}

fn load_path(p: &Path, depth: usize, out: &mut Vec<Object>) -> Result<(), LoadError> {
    let io = |source| LoadError::Io {
        path: p.to_owned(),
        source,
    };
    let meta = std::fs::metadata(p).map_err(io)?;
    if meta.is_dir() {
        if depth >= MAX_DIR_DEPTH {
            return Err(LoadError::Io {
                path: p.to_owned(),
                source: std::io::Error::other(format!(
                    "directories nested deeper than {MAX_DIR_DEPTH}"
                )),
            });
        }
        let mut entries = std::fs::read_dir(p)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        entries.sort();
        for e in entries {
            let is_dir = std::fs::metadata(&e).map(|m| m.is_dir()).unwrap_or(false);
            let hidden = e
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if is_dir || is_manifest_name(&e) {
                load_path(&e, depth + 1, out)?;
            }
        }
        return Ok(());
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(LoadError::TooLarge {
            path: p.to_owned(),
            size: meta.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    let bytes = std::fs::read(p).map_err(io)?;
    out.extend(load_bytes(bytes, p)?);
    Ok(())
}

fn is_manifest_name(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Loads objects from raw bytes (checked for size and UTF-8).
pub fn load_bytes(bytes: Vec<u8>, path: &Path) -> Result<Vec<Object>, LoadError> {
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit: MAX_INPUT_BYTES,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| LoadError::NotUtf8 {
        path: path.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    load_str(&text, path)
}

/// Loads objects from text; `path` is used in sources and messages. JSON (one or more
/// concatenated values) is detected by a leading `{` or `[`; everything else is YAML.
pub fn load_str(text: &str, path: &Path) -> Result<Vec<Object>, LoadError> {
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size: text.len() as u64,
            limit: MAX_INPUT_BYTES,
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    if text.trim_start().starts_with(['{', '[']) {
        load_json(text, path, &mut out)?;
    } else {
        load_yaml(text, path, &mut out)?;
    }
    Ok(out)
}

fn load_json(text: &str, path: &Path, out: &mut Vec<Object>) -> Result<(), LoadError> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    let mut document = 0usize;
    loop {
        let start = stream.byte_offset();
        let Some(next) = stream.next() else { break };
        let value = next.map_err(|e| LoadError::Syntax {
            path: path.to_owned(),
            document,
            line: e.line() as u64,
            column: e.column() as u64,
            format: "JSON",
            message: e.to_string(),
        })?;
        // The value starts at the first non-blank byte after `start`.
        let skipped = text
            .get(start..)
            .map_or(0, |t| t.len() - t.trim_start().len());
        let at = start + skipped;
        let line = line_of(text, at);
        let item_lines = if is_list(&value) {
            text.get(at..stream.byte_offset())
                .and_then(items::json_item_offsets)
                .map(|offsets| offsets.iter().map(|o| line_of(text, at + o)).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let doc = Doc {
            path,
            document,
            line,
            item_lines: &item_lines,
        };
        push_value(value, &doc, out)?;
        document += 1;
    }
    Ok(())
}

fn line_of(text: &str, offset: usize) -> u64 {
    let upto = text.get(..offset).unwrap_or(text);
    1 + upto.bytes().filter(|b| *b == b'\n').count() as u64
}

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    }
}

fn load_yaml(text: &str, path: &Path, out: &mut Vec<Object>) -> Result<(), LoadError> {
    for chunk in split::split(text) {
        if !chunk.has_content {
            continue;
        }
        let parsed: items::YamlDoc =
            serde_saphyr::from_str_with_options(chunk.text, yaml_options()).map_err(|e| {
                let (line, column) = e.location().map_or((chunk.content_line, 1), |l| {
                    (chunk.first_line + l.line().saturating_sub(1), l.column())
                });
                let msg = e.to_string();
                LoadError::Syntax {
                    path: path.to_owned(),
                    document: chunk.index,
                    line,
                    column,
                    format: "YAML",
                    message: msg.lines().next().unwrap_or_default().trim().to_owned(),
                }
            })?;
        if parsed.value.is_null() {
            continue;
        }
        let item_lines: Vec<u64> = parsed
            .item_lines
            .iter()
            .map(|l| chunk.first_line + l.saturating_sub(1))
            .collect();
        let doc = Doc {
            path,
            document: chunk.index,
            line: chunk.content_line,
            item_lines: &item_lines,
        };
        push_value(parsed.value, &doc, out)?;
        if out.len() > MAX_OBJECTS_PER_INPUT {
            return Err(LoadError::TooManyObjects {
                path: path.to_owned(),
                limit: MAX_OBJECTS_PER_INPUT,
            });
        }
    }
    Ok(())
}

/// One document of an input: where it is, and where its list items start (if it is a list).
struct Doc<'a> {
    path: &'a Path,
    document: usize,
    /// 1-based line where the document's content starts.
    line: u64,
    /// 1-based line of each element of a top-level `items` list; may be empty (then items are
    /// placed at the document's line).
    item_lines: &'a [u64],
}

/// Whether `value` is a list kind (`List`, `PodList`, ...) with an `items` array.
fn is_list(value: &serde_json::Value) -> bool {
    value
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(serde_json::Value::is_array)
}

const MANIFEST_HINT: &str = "pass Kubernetes manifests, each with apiVersion and kind (for a Helm chart, `helm template` output; for a cluster, `kubectl get -o yaml` output)";
const LIST_ITEM_HINT: &str = "each item of a `kind: List` carries its own apiVersion and kind (as `kubectl get -o yaml` writes them); items of a typed list (PodList, NetworkPolicyList, ...) take them from the list";

fn push_value(
    value: serde_json::Value,
    doc: &Doc<'_>,
    out: &mut Vec<Object>,
) -> Result<(), LoadError> {
    push_object(value, doc, doc.line, None, out)
}

/// What a list gives its items: its apiVersion and, for a typed list (`PodList`), the kind.
struct ListContext<'a> {
    /// `kind` of the list, for messages.
    list_kind: &'a str,
    /// 0-based index of the item.
    index: usize,
    api_version: &'a str,
    /// `Pod` for a `PodList`; `None` for `kind: List`.
    item_kind: Option<&'a str>,
}

fn push_object(
    value: serde_json::Value,
    doc: &Doc<'_>,
    line: u64,
    list: Option<&ListContext<'_>>,
    out: &mut Vec<Object>,
) -> Result<(), LoadError> {
    let what = list.map_or_else(
        || "object".to_owned(),
        |l| format!("item {} of the {}", l.index, l.list_kind),
    );
    let not_object = |message: String| LoadError::NotAnObject {
        path: doc.path.to_owned(),
        document: doc.document,
        line,
        message,
        hint: if list.is_some() {
            LIST_ITEM_HINT
        } else {
            MANIFEST_HINT
        },
    };
    let serde_json::Value::Object(mut map) = value else {
        return Err(not_object(format!(
            "{} is a {}, not a Kubernetes object",
            if list.is_some() { &what } else { "document" },
            json_type(&value)
        )));
    };
    let text = |map: &serde_json::Map<String, serde_json::Value>, key: &str| {
        map.get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // A typed list's items carry neither apiVersion nor kind: the list's apply. They are written
    // into the object, so every consumer (typed decoding, Rego input) sees a complete object.
    // A `kind: List` is generic: its items must say what they are.
    if let Some(ListContext {
        api_version,
        item_kind: Some(item_kind),
        ..
    }) = list
    {
        if text(&map, "apiVersion").is_none() {
            map.insert("apiVersion".to_owned(), (*api_version).into());
        }
        if text(&map, "kind").is_none() {
            map.insert("kind".to_owned(), (*item_kind).into());
        }
    }
    let api_version =
        text(&map, "apiVersion").ok_or_else(|| not_object(format!("{what} has no apiVersion")))?;
    let kind = text(&map, "kind").ok_or_else(|| not_object(format!("{what} has no kind")))?;
    if kind.ends_with("List") && map.get("items").is_some_and(serde_json::Value::is_array) {
        if let Some(serde_json::Value::Array(items)) = map.remove("items") {
            // Only the document's own items have lines of their own; a list nested in an item
            // places its items at the item's line.
            let lines = if list.is_none() { doc.item_lines } else { &[] };
            let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
            for (index, item) in items.into_iter().enumerate() {
                let ctx = ListContext {
                    list_kind: &kind,
                    index,
                    api_version: &api_version,
                    item_kind,
                };
                let item_line = lines.get(index).copied().unwrap_or(line);
                push_object(item, doc, item_line, Some(&ctx), out)?;
                if out.len() > MAX_OBJECTS_PER_INPUT {
                    return Err(LoadError::TooManyObjects {
                        path: doc.path.to_owned(),
                        limit: MAX_OBJECTS_PER_INPUT,
                    });
                }
            }
        }
        return Ok(());
    }
    let meta = map.get("metadata");
    let get = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let namespace = get("namespace").filter(|s| !s.is_empty());
    let name = get("name")
        .filter(|s| !s.is_empty())
        .or_else(|| get("generateName"))
        .unwrap_or_default();
    out.push(Object {
        source: Source {
            path: doc.path.to_owned(),
            document: doc.document,
            line,
        },
        api_version,
        kind,
        namespace,
        name,
        raw: serde_json::Value::Object(map),
    });
    Ok(())
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "mapping",
    }
}

#[cfg(test)]
mod tests;
