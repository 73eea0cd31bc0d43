//! Flows: which workload may connect to which, on which ports. Anything not listed is denied.

use std::collections::HashMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Diags, unknown_name_hint};
use crate::workload::{Protocol, Workload, parse_port, parse_protocol};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawFlow {
    from: Spanned<String>,
    to: Spanned<String>,
    ports: Vec<Spanned<i64>>,
    #[serde(default)]
    protocol: Option<Spanned<String>>,
    #[serde(default)]
    description: Option<String>,
}

/// An allowed connection from one workload to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub from: String,
    pub to: String,
    pub ports: Vec<u16>,
    pub protocol: Protocol,
    pub description: Option<String>,
}

pub(crate) fn validate(raw: Vec<RawFlow>, workloads: &[Workload], d: &mut Diags) -> Vec<Flow> {
    let by_name: HashMap<&str, &Workload> =
        workloads.iter().map(|w| (w.name.as_str(), w)).collect();
    let names = || workloads.iter().map(|w| w.name.as_str());
    let mut out = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        let field = |s: &str| format!("flows[{i}].{s}");
        let mut ok = true;
        for (key, v) in [("from", &f.from), ("to", &f.to)] {
            if !by_name.contains_key(v.value.as_str()) {
                ok = false;
                d.push(
                    Diagnostic::new(v, field(key), &v.value, "unknown workload")
                        .hint(unknown_name_hint(&v.value, names())),
                );
            }
        }
        if f.ports.is_empty() {
            ok = false;
            d.push(
                Diagnostic::new(
                    &f.to,
                    field("ports"),
                    "[]",
                    "a flow needs at least one port",
                )
                .hint("flows are least privilege: list the ports the destination serves"),
            );
        }
        let protocol = parse_protocol(f.protocol.as_ref(), &field("protocol"), d);
        let mut ports = Vec::new();
        for (j, p) in f.ports.iter().enumerate() {
            let pf = field(&format!("ports[{j}]"));
            let Some(port) = parse_port(p, &pf, d) else {
                ok = false;
                continue;
            };
            if let Some(dst) = by_name.get(f.to.value.as_str())
                && !dst.ports.is_empty()
                && !dst
                    .ports
                    .iter()
                    .any(|wp| wp.port == port && wp.protocol == protocol)
            {
                let served: Vec<String> = dst
                    .ports
                    .iter()
                    .map(|p| format!("{}/{}", p.port, p.protocol.as_k8s()))
                    .collect();
                d.push(
                    Diagnostic::new(
                        p,
                        pf,
                        port.to_string(),
                        format!("workload {:?} does not serve this port", dst.name),
                    )
                    .hint(format!("it serves {}", served.join(", "))),
                );
                ok = false;
            }
            ports.push(port);
        }
        if ok {
            out.push(Flow {
                from: f.from.value,
                to: f.to.value,
                ports,
                protocol,
                description: f.description,
            });
        }
    }
    out
}
