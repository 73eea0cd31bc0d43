//! The Sigil platform policy file (`sigil.yaml`).
//!
//! One file describes the platform: trust domain, workloads and their selectors, allowed flows
//! (default deny), data assets and who may use them, guardrail settings, allowed model sources and
//! attestation settings. Every part of Sigil reads it through [`Policy`].
//!
//! Owns: parsing and validation, with every problem reported at file:line:column with the field,
//! the bad value and a hint. Must not: do network I/O, or know about certificates or Kubernetes
//! objects beyond names.

mod attestation;
mod data;
mod diag;
mod duration;
mod flow;
mod guardrails;
mod models;
mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use sigil_identity::{SpiffeId, TrustDomain};

pub use attestation::{Attestation, ClusterTrust};
pub use data::{DataAsset, DataK8s, DataKind};
pub use diag::{Diagnostic, PolicyError, Pos};
pub use duration::{format_duration, parse_duration};
pub use flow::Flow;
pub use guardrails::{Exemption, Guardrails, PodSecurityLevel};
pub use models::{ModelPolicy, ModelRepo, ModelSource};
pub use workload::{K8sSelector, Protocol, UnixSelector, Workload, WorkloadPort, parse_sha256};

use diag::Diags;

/// The API version this build reads.
pub const API_VERSION: &str = "sigil.dev/v1alpha1";
/// The only `kind` of a policy file.
pub const KIND: &str = "Platform";
/// Largest policy file accepted.
pub const MAX_POLICY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPolicy {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    trust_domain: Spanned<String>,
    #[serde(default)]
    svid: RawSvid,
    #[serde(default)]
    workloads: Vec<workload::RawWorkload>,
    #[serde(default)]
    flows: Vec<flow::RawFlow>,
    #[serde(default)]
    data: Vec<data::RawData>,
    #[serde(default)]
    guardrails: guardrails::RawGuardrails,
    #[serde(default)]
    models: models::RawModels,
    #[serde(default)]
    attestation: attestation::RawAttestation,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSvid {
    #[serde(default)]
    x509_ttl: Option<Spanned<String>>,
    #[serde(default)]
    jwt_ttl: Option<Spanned<String>>,
}

/// SVID lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvidSettings {
    pub x509_ttl: Duration,
    pub jwt_ttl: Duration,
}

impl Default for SvidSettings {
    fn default() -> Self {
        Self {
            x509_ttl: Duration::from_secs(3600),
            jwt_ttl: Duration::from_secs(300),
        }
    }
}

/// Longest SVID lifetime accepted: short-lived credentials are the point.
pub const MAX_X509_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_JWT_TTL: Duration = Duration::from_secs(24 * 3600);

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Where it was read from (for messages and relative paths).
    pub source: PathBuf,
    pub trust_domain: TrustDomain,
    pub svid: SvidSettings,
    pub workloads: Vec<Workload>,
    pub flows: Vec<Flow>,
    pub data: Vec<DataAsset>,
    pub guardrails: Guardrails,
    pub models: ModelPolicy,
    pub attestation: Attestation,
}

/// Why a connection is refused by the policy's flows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("peer {peer} is in trust domain {found}, not {expected}")]
    ForeignTrustDomain {
        peer: String,
        found: String,
        expected: String,
    },
    #[error("peer {peer} is not a workload declared in the policy")]
    UnknownPeer { peer: String },
    #[error("destination workload {0:?} is not declared in the policy")]
    UnknownDestination(String),
    #[error("no flow allows {from} -> {to} on port {port} (default deny)")]
    NoFlow { from: String, to: String, port: u16 },
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let bytes = std::fs::read(path).map_err(|e| {
            PolicyError::single(
                path,
                Diagnostic::new(
                    Pos::default(),
                    "",
                    "",
                    format!("cannot read policy file: {e}"),
                )
                .hint("pass the path of a sigil.yaml, or run `sigil policy example > sigil.yaml`"),
            )
        })?;
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::single(
                path,
                Diagnostic::new(
                    Pos::default(),
                    "",
                    "",
                    format!(
                        "policy file is {} bytes, more than {MAX_POLICY_BYTES}",
                        bytes.len()
                    ),
                ),
            ));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            PolicyError::single(
                path,
                Diagnostic::new(
                    Pos::default(),
                    "",
                    "",
                    format!("policy file is not UTF-8: {e}"),
                ),
            )
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates policy text; `path` is used in messages and for relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::single(
                path,
                Diagnostic::new(
                    Pos::default(),
                    "",
                    "",
                    format!(
                        "policy is {} bytes, more than {MAX_POLICY_BYTES}",
                        text.len()
                    ),
                ),
            ));
        }
        let raw: RawPolicy = serde_saphyr::from_str(text).map_err(|e| {
            let pos = e.location().map(Pos::from).unwrap_or_default();
            PolicyError::single(
                path,
                Diagnostic::new(pos, "", "", first_line(&e.to_string())).hint(
                    "check the YAML syntax and field names against examples/ai-platform/sigil.yaml",
                ),
            )
        })?;
        let mut d = Diags::default();
        if raw.api_version.value != API_VERSION {
            d.push(
                Diagnostic::new(
                    &raw.api_version,
                    "apiVersion",
                    &raw.api_version.value,
                    "unsupported apiVersion",
                )
                .hint(format!("this build reads apiVersion: {API_VERSION}")),
            );
        }
        if raw.kind.value != KIND {
            d.push(
                Diagnostic::new(&raw.kind, "kind", &raw.kind.value, "unsupported kind")
                    .hint(format!("use kind: {KIND}")),
            );
        }
        let td = match TrustDomain::new(&raw.trust_domain.value) {
            Ok(td) => Some(td),
            Err(e) => {
                d.push(Diagnostic::new(
                    &raw.trust_domain,
                    "trustDomain",
                    &raw.trust_domain.value,
                    e.to_string(),
                ));
                None
            }
        };
        let svid = validate_svid(&raw.svid, &mut d);
        let workloads = workload::validate(raw.workloads, td.as_ref(), &mut d);
        let flows = flow::validate(raw.flows, &workloads, &mut d);
        let data = data::validate(raw.data, &workloads, &mut d);
        let guardrails = guardrails::validate(raw.guardrails, &mut d);
        let models = models::validate(raw.models, &mut d);
        let attestation = attestation::validate(raw.attestation, &mut d);
        match td {
            Some(trust_domain) if d.0.is_empty() => Ok(Self {
                source: path.to_owned(),
                trust_domain,
                svid,
                workloads,
                flows,
                data,
                guardrails,
                models,
                attestation,
            }),
            _ => Err(PolicyError::new(path, d.0)),
        }
    }

    /// The directory relative paths in the policy are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.source.parent().unwrap_or_else(|| Path::new("."))
    }

    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name == name)
    }

    pub fn workload_by_id(&self, id: &SpiffeId) -> Option<&Workload> {
        self.workloads.iter().find(|w| &w.spiffe_id == id)
    }

    /// The workload a Kubernetes pod is, by namespace, service account and labels.
    pub fn workload_for_pod(
        &self,
        namespace: &str,
        service_account: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<&Workload> {
        self.workloads.iter().find(|w| {
            w.kubernetes.as_ref().is_some_and(|k| {
                k.namespace == namespace
                    && k.service_account == service_account
                    && k.pod_labels
                        .iter()
                        .all(|(key, v)| labels.get(key) == Some(v))
            })
        })
    }

    /// Flows whose destination is `workload`.
    pub fn flows_to<'a>(&'a self, workload: &'a str) -> impl Iterator<Item = &'a Flow> + 'a {
        self.flows.iter().filter(move |f| f.to == workload)
    }

    /// Flows whose source is `workload`.
    pub fn flows_from<'a>(&'a self, workload: &'a str) -> impl Iterator<Item = &'a Flow> + 'a {
        self.flows.iter().filter(move |f| f.from == workload)
    }

    /// Default-deny authorization: may `peer` connect to workload `to` on `port` (TCP)?
    /// Returns the flow that allows it, or why not.
    pub fn authorize(&self, peer: &SpiffeId, to: &str, port: u16) -> Result<&Flow, Denial> {
        if !peer.is_member_of(&self.trust_domain) {
            return Err(Denial::ForeignTrustDomain {
                peer: peer.to_string(),
                found: peer.trust_domain_str().to_owned(),
                expected: self.trust_domain.to_string(),
            });
        }
        let from = self
            .workload_by_id(peer)
            .ok_or_else(|| Denial::UnknownPeer {
                peer: peer.to_string(),
            })?;
        if self.workload(to).is_none() {
            return Err(Denial::UnknownDestination(to.to_owned()));
        }
        self.flows
            .iter()
            .find(|f| {
                f.from == from.name
                    && f.to == to
                    && f.protocol == Protocol::Tcp
                    && f.ports.contains(&port)
            })
            .ok_or_else(|| Denial::NoFlow {
                from: from.name.clone(),
                to: to.to_owned(),
                port,
            })
    }
}

fn validate_svid(raw: &RawSvid, d: &mut Diags) -> SvidSettings {
    let mut s = SvidSettings::default();
    for (field, v, max, slot) in [
        ("svid.x509Ttl", &raw.x509_ttl, MAX_X509_TTL, &mut s.x509_ttl),
        ("svid.jwtTtl", &raw.jwt_ttl, MAX_JWT_TTL, &mut s.jwt_ttl),
    ] {
        let Some(v) = v else { continue };
        match parse_duration(&v.value) {
            Ok(t) if t < Duration::from_secs(60) => {
                d.push(
                    Diagnostic::new(v, field, &v.value, "lifetime shorter than one minute")
                        .hint("use at least 1m"),
                );
            }
            Ok(t) if t > max => d.push(
                Diagnostic::new(
                    v,
                    field,
                    &v.value,
                    "lifetime too long for a short-lived credential",
                )
                .hint(format!("at most {}", format_duration(max))),
            ),
            Ok(t) => *slot = t,
            Err(e) => d.push(Diagnostic::new(v, field, &v.value, e)),
        }
    }
    s
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}

#[cfg(test)]
mod tests;
