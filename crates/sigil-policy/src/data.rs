//! Data assets (datasets, model weights, vector databases, buckets) and who may use them.

use std::collections::HashSet;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Diags, unknown_name_hint};
use crate::workload::Workload;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawData {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    served_by: Option<Spanned<String>>,
    #[serde(default)]
    kubernetes: Option<RawDataK8s>,
    #[serde(default)]
    readers: Vec<Spanned<String>>,
    #[serde(default)]
    writers: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDataK8s {
    namespace: String,
    #[serde(default)]
    persistent_volume_claims: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
}

/// What kind of data an asset holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    Dataset,
    ModelWeights,
    VectorDb,
    Bucket,
    Volume,
}

impl DataKind {
    const ALL: [(&'static str, DataKind); 5] = [
        ("dataset", Self::Dataset),
        ("model-weights", Self::ModelWeights),
        ("vector-db", Self::VectorDb),
        ("bucket", Self::Bucket),
        ("volume", Self::Volume),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("dataset", |(s, _)| s)
    }
}

/// Where an asset lives in Kubernetes (for blast-radius analysis).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataK8s {
    pub namespace: String,
    pub persistent_volume_claims: Vec<String>,
    pub secrets: Vec<String>,
}

/// A data asset and the workloads that may read or write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataAsset {
    pub name: String,
    pub kind: DataKind,
    pub uri: Option<String>,
    /// The workload that serves the data over the network (object store, vector DB), if any.
    pub served_by: Option<String>,
    pub kubernetes: Option<DataK8s>,
    pub readers: Vec<String>,
    pub writers: Vec<String>,
}

impl DataAsset {
    /// Whether `workload` may read this asset (writers may read too).
    pub fn may_read(&self, workload: &str) -> bool {
        self.readers
            .iter()
            .chain(&self.writers)
            .any(|w| w == workload)
    }

    pub fn may_write(&self, workload: &str) -> bool {
        self.writers.iter().any(|w| w == workload)
    }
}

pub(crate) fn validate(raw: Vec<RawData>, workloads: &[Workload], d: &mut Diags) -> Vec<DataAsset> {
    let known: HashSet<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
    let names = || workloads.iter().map(|w| w.name.as_str());
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        let field = |s: &str| format!("data[{i}].{s}");
        if !seen.insert(a.name.value.clone()) {
            d.push(Diagnostic::new(
                &a.name,
                field("name"),
                &a.name.value,
                "duplicate data asset name",
            ));
        }
        let kind = DataKind::ALL
            .iter()
            .find(|(s, _)| *s == a.kind.value)
            .map(|(_, k)| *k);
        if kind.is_none() {
            d.push(
                Diagnostic::new(&a.kind, field("kind"), &a.kind.value, "unknown data kind")
                    .hint("use dataset, model-weights, vector-db, bucket or volume"),
            );
        }
        let mut check = |list: &[Spanned<String>], key: &str| {
            for (j, w) in list.iter().enumerate() {
                if !known.contains(w.value.as_str()) {
                    d.push(
                        Diagnostic::new(
                            w,
                            field(&format!("{key}[{j}]")),
                            &w.value,
                            "unknown workload",
                        )
                        .hint(unknown_name_hint(&w.value, names())),
                    );
                }
            }
        };
        check(&a.readers, "readers");
        check(&a.writers, "writers");
        if let Some(s) = &a.served_by {
            check(std::slice::from_ref(s), "servedBy");
        }
        if a.readers.is_empty() && a.writers.is_empty() {
            d.push(
                Diagnostic::new(
                    &a.name,
                    field("readers"),
                    "",
                    "no workload may read or write this asset",
                )
                .hint(
                    "list the readers and writers; an asset nobody may use should not be declared",
                ),
            );
        }
        out.push(DataAsset {
            name: a.name.value,
            kind: kind.unwrap_or(DataKind::Dataset),
            uri: a.uri,
            served_by: a.served_by.map(|s| s.value),
            kubernetes: a.kubernetes.map(|k| DataK8s {
                namespace: k.namespace,
                persistent_volume_claims: k.persistent_volume_claims,
                secrets: k.secrets,
            }),
            readers: a.readers.into_iter().map(|s| s.value).collect(),
            writers: a.writers.into_iter().map(|s| s.value).collect(),
        });
    }
    out
}
