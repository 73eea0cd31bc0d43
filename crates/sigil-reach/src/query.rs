//! Turning what a user types (`--from monitoring`, `--to vectordb/qdrant`, `--to 10.0.0.1`) into
//! workloads, data assets or addresses, and mapping manifest workloads to `sigil.yaml` workloads.

use std::net::IpAddr;

use sigil_policy::Policy;

use crate::error::ReachError;
use crate::model::{Cluster, Workload};
use crate::ports::Proto;

/// What a name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Manifest workloads (indices into `Cluster::workloads`).
    Workloads(Vec<usize>),
    /// A data asset from `sigil.yaml`.
    Data(String),
    /// An address outside the cluster.
    Ip(IpAddr),
}

/// The `sigil.yaml` workload a manifest workload is, if any.
pub fn policy_workload<'p>(policy: &'p Policy, w: &Workload) -> Option<&'p sigil_policy::Workload> {
    policy.workload_for_pod(&w.namespace, &w.service_account, &w.labels)
}

/// A short display name: `namespace/name`, plus the sigil.yaml name when it differs.
pub fn display_name(policy: Option<&Policy>, w: &Workload) -> String {
    match policy.and_then(|p| policy_workload(p, w)) {
        Some(pw) if pw.name != w.name => format!("{}/{} ({})", w.namespace, w.name, pw.name),
        _ => w.key(),
    }
}

/// Resolves a name. Order: IP address, `KIND/NS/NAME`, `NS/NAME`, sigil.yaml workload, data
/// asset, owner name, namespace.
pub fn resolve(
    cluster: &Cluster,
    policy: Option<&Policy>,
    q: &str,
) -> Result<Endpoint, ReachError> {
    let q = q.trim();
    if let Ok(ip) = q.strip_prefix("ip:").unwrap_or(q).parse::<IpAddr>() {
        return Ok(Endpoint::Ip(ip));
    }
    let ws = &cluster.workloads;
    let parts: Vec<&str> = q.split('/').collect();
    let pick = |f: &dyn Fn(&Workload) -> bool| -> Vec<usize> {
        ws.iter()
            .enumerate()
            .filter(|(_, w)| f(w))
            .map(|(i, _)| i)
            .collect()
    };
    match parts.as_slice() {
        [kind, ns, name] => {
            let v = pick(&|w| {
                w.kind.eq_ignore_ascii_case(kind) && w.namespace == *ns && w.name == *name
            });
            return if v.is_empty() {
                Err(ReachError::UnknownEndpoint(q.into()))
            } else {
                Ok(Endpoint::Workloads(v))
            };
        }
        [ns, name] => {
            let v = pick(&|w| w.namespace == *ns && w.name == *name);
            return if v.is_empty() {
                Err(ReachError::UnknownEndpoint(q.into()))
            } else {
                Ok(Endpoint::Workloads(v))
            };
        }
        _ => {}
    }
    if let Some(p) = policy {
        if p.workload(q).is_some() {
            let v = pick(&|w| policy_workload(p, w).is_some_and(|pw| pw.name == q));
            if !v.is_empty() {
                return Ok(Endpoint::Workloads(v));
            }
        }
        if p.data.iter().any(|d| d.name == q) {
            return Ok(Endpoint::Data(q.into()));
        }
    }
    let v = pick(&|w| w.name == q);
    let namespaces: Vec<&str> = v
        .iter()
        .filter_map(|i| ws.get(*i))
        .map(|w| w.namespace.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if namespaces.len() > 1 {
        return Err(ReachError::Ambiguous {
            query: q.into(),
            candidates: namespaces
                .iter()
                .map(|n| format!("{n}/{q}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if !v.is_empty() {
        return Ok(Endpoint::Workloads(v));
    }
    let v = pick(&|w| w.namespace == q);
    if !v.is_empty() {
        return Ok(Endpoint::Workloads(v));
    }
    Err(ReachError::UnknownEndpoint(q.into()))
}

/// Backends of a Service port: (workload, protocol, target port on that pod). Named target ports
/// resolve per pod; pods without the name are not backends for that port.
pub fn service_backends(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    port: u16,
) -> Result<Vec<(usize, Proto, u16)>, ReachError> {
    let svc = cluster
        .services
        .iter()
        .find(|s| s.namespace == namespace && s.name == name)
        .ok_or_else(|| ReachError::UnknownEndpoint(format!("svc/{namespace}/{name}")))?;
    let Some(sp) = svc.ports.iter().find(|p| p.port == port) else {
        let ports: Vec<String> = svc.ports.iter().map(|p| p.port.to_string()).collect();
        return Err(ReachError::UnknownEndpoint(format!(
            "svc/{namespace}/{name}:{port} (the service has ports {})",
            ports.join(", ")
        )));
    };
    let Some(sel) = &svc.selector else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, w) in cluster.workloads.iter().enumerate() {
        if w.namespace != namespace || !sel.iter().all(|(k, v)| w.labels.get(k) == Some(v)) {
            continue;
        }
        let target = match &sp.target {
            crate::model::Target::Number(n) => Some(*n),
            crate::model::Target::Named(n) => w.named_port(n, sp.proto),
        };
        if let Some(t) = target {
            out.push((i, sp.proto, t));
        }
    }
    Ok(out)
}
