//! Workloads: who a workload is (SPIFFE ID) and how it is recognised (selectors).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_saphyr::Spanned;
use sigil_identity::{SpiffeId, TrustDomain};

use crate::diag::{Diagnostic, Diags};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawWorkload {
    name: Spanned<String>,
    #[serde(default)]
    spiffe_id: Option<Spanned<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    kubernetes: Option<RawK8sSelector>,
    #[serde(default)]
    unix: Option<RawUnixSelector>,
    #[serde(default)]
    ports: Vec<RawPort>,
    #[serde(default)]
    needs_kubernetes_api: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawK8sSelector {
    namespace: Spanned<String>,
    service_account: Spanned<String>,
    #[serde(default)]
    pod_labels: BTreeMap<String, String>,
    #[serde(default)]
    host_network: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawUnixSelector {
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    sha256: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPort {
    port: Spanned<i64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    protocol: Option<Spanned<String>>,
}

/// A workload declared in the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub spiffe_id: SpiffeId,
    pub description: Option<String>,
    pub kubernetes: Option<K8sSelector>,
    pub unix: Option<UnixSelector>,
    /// Ports the workload serves.
    pub ports: Vec<WorkloadPort>,
    /// Whether the workload needs the Kubernetes API (a mounted service-account token).
    pub needs_kubernetes_api: bool,
}

/// Kubernetes selectors: namespace and service account, plus optional pod labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sSelector {
    pub namespace: String,
    pub service_account: String,
    pub pod_labels: BTreeMap<String, String>,
    /// The pods use the node's network (`hostNetwork: true`): NetworkPolicies cannot select
    /// them and their traffic comes from node addresses.
    pub host_network: bool,
}

/// Unix selectors: every field that is set must match the caller (checked by the kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSelector {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub path: Option<String>,
    pub sha256: Option<[u8; 32]>,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_k8s(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

/// A port a workload serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadPort {
    pub port: u16,
    pub name: Option<String>,
    pub protocol: Protocol,
}

pub(crate) fn parse_port(p: &Spanned<i64>, field: &str, d: &mut Diags) -> Option<u16> {
    match u16::try_from(p.value) {
        Ok(v) if v > 0 => Some(v),
        _ => {
            d.push(
                Diagnostic::new(p, field, p.value.to_string(), "port out of range")
                    .hint("a port is a whole number from 1 to 65535"),
            );
            None
        }
    }
}

pub(crate) fn parse_protocol(p: Option<&Spanned<String>>, field: &str, d: &mut Diags) -> Protocol {
    let Some(p) = p else { return Protocol::Tcp };
    match p.value.to_ascii_uppercase().as_str() {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        _ => {
            d.push(
                Diagnostic::new(p, field, &p.value, "unknown protocol")
                    .hint("use TCP, UDP or SCTP"),
            );
            Protocol::Tcp
        }
    }
}

/// Kubernetes names (namespaces, service accounts) are DNS-1123 labels/subdomains.
pub(crate) fn check_k8s_name(s: &Spanned<String>, field: &str, max: usize, d: &mut Diags) {
    let v = &s.value;
    let ok = !v.is_empty()
        && v.len() <= max
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        d.push(
            Diagnostic::new(s, field, v, "not a valid Kubernetes name")
                .hint(format!("lowercase letters, digits and `-`, at most {max} characters, starting and ending with a letter or digit")),
        );
    }
}

pub(crate) fn validate(
    raw: Vec<RawWorkload>,
    td: Option<&TrustDomain>,
    d: &mut Diags,
) -> Vec<Workload> {
    let mut out = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    for (i, w) in raw.into_iter().enumerate() {
        let f = |s: &str| format!("workloads[{i}].{s}");
        let name = w.name.value.clone();
        check_k8s_name(&w.name, &f("name"), 63, d);
        if let Some(prev) = names.insert(name.clone(), i) {
            d.push(
                Diagnostic::new(&w.name, f("name"), &name, "duplicate workload name").hint(
                    format!("workloads[{prev}] already uses this name; names must be unique"),
                ),
            );
        }
        if w.kubernetes.is_none() && w.unix.is_none() {
            d.push(
                Diagnostic::new(
                    &w.name,
                    f("name"),
                    &name,
                    "workload has no selectors, so nothing can ever prove to be it",
                )
                .hint("add `kubernetes: {namespace, serviceAccount}` or `unix: {uid, path, ...}`"),
            );
        }
        let kubernetes = w.kubernetes.map(|k| {
            check_k8s_name(&k.namespace, &f("kubernetes.namespace"), 63, d);
            check_k8s_name(&k.service_account, &f("kubernetes.serviceAccount"), 253, d);
            K8sSelector {
                namespace: k.namespace.value,
                service_account: k.service_account.value,
                pod_labels: k.pod_labels,
                host_network: k.host_network,
            }
        });
        let unix = w.unix.map(|u| {
            if u.uid.is_none() && u.gid.is_none() && u.path.is_none() && u.sha256.is_none() {
                d.push(
                    Diagnostic::new(
                        &w.name,
                        f("unix"),
                        "",
                        "empty unix selector would match every process",
                    )
                    .hint("set at least one of uid, gid, path, sha256"),
                );
            }
            if let Some(p) = &u.path
                && !p.value.starts_with('/')
            {
                d.push(Diagnostic::new(
                    p,
                    f("unix.path"),
                    &p.value,
                    "executable path must be absolute",
                ));
            }
            let sha256 = u
                .sha256
                .as_ref()
                .and_then(|h| match parse_sha256(&h.value) {
                    Some(b) => Some(b),
                    None => {
                        d.push(
                            Diagnostic::new(h, f("unix.sha256"), &h.value, "not a sha256 digest")
                                .hint("64 hexadecimal characters, as printed by `sha256sum`"),
                        );
                        None
                    }
                });
            UnixSelector {
                uid: u.uid,
                gid: u.gid,
                path: u.path.map(|p| p.value),
                sha256,
            }
        });
        let spiffe_id = match (&w.spiffe_id, td) {
            (Some(s), Some(td)) => match s.value.parse::<SpiffeId>() {
                Ok(id) if id.is_member_of(td) => Some(id),
                Ok(id) => {
                    d.push(
                        Diagnostic::new(s, f("spiffeId"), &s.value, format!("SPIFFE ID is outside the trust domain {td}"))
                            .hint(format!("use spiffe://{td}/..., or leave spiffeId out for the default (found trust domain {})", id.trust_domain())),
                    );
                    None
                }
                Err(e) => {
                    d.push(Diagnostic::new(
                        s,
                        f("spiffeId"),
                        &s.value,
                        format!("bad SPIFFE ID: {e}"),
                    ));
                    None
                }
            },
            (None, Some(td)) => match &kubernetes {
                Some(k) => td.k8s_id(&k.namespace, &k.service_account).ok(),
                None => td.id(&format!("/workload/{name}")).ok(),
            },
            (_, None) => None,
        };
        let mut ports = Vec::new();
        for (j, p) in w.ports.iter().enumerate() {
            let pf = f(&format!("ports[{j}]"));
            let protocol = parse_protocol(p.protocol.as_ref(), &format!("{pf}.protocol"), d);
            if let Some(port) = parse_port(&p.port, &format!("{pf}.port"), d) {
                ports.push(WorkloadPort {
                    port,
                    name: p.name.clone(),
                    protocol,
                });
            }
        }
        if let Some(id) = spiffe_id {
            if let Some(prev) = ids.insert(id.to_string(), name.clone()) {
                let at: crate::diag::Pos = w
                    .spiffe_id
                    .as_ref()
                    .map_or_else(|| (&w.name).into(), Into::into);
                d.push(
                    Diagnostic::new(at, f("spiffeId"), id.to_string(), "duplicate SPIFFE ID")
                        .hint(format!("workload {prev:?} has the same ID; each workload needs its own identity")),
                );
            }
            out.push(Workload {
                name,
                spiffe_id: id,
                description: w.description,
                kubernetes,
                unix,
                ports,
                needs_kubernetes_api: w.needs_kubernetes_api,
            });
        }
    }
    out
}

/// Parses 64 hex characters.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}
