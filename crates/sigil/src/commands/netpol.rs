//! `sigil netpol generate`: least-privilege NetworkPolicies (or CiliumNetworkPolicies) from the
//! flows in sigil.yaml.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use sigil_reach::generate::{self, Flavor, Options};
use sigil_reach::ipset::Cidr;

use super::EXIT_OK;
use crate::cli::NetpolCmd;

pub fn run(cmd: NetpolCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        NetpolCmd::Generate {
            policy,
            cilium,
            external,
            node_cidr,
            out,
        } => {
            let policy = super::reach::load_policy(Some(&policy))?.context("no policy")?;
            let mut opts = Options::default();
            let mut ext: BTreeMap<String, Vec<Cidr>> = BTreeMap::new();
            for e in &external {
                let (name, cidr) = e.split_once('=').with_context(|| {
                    format!("--external {e:?}: write WORKLOAD=CIDR, e.g. model-sync=10.20.0.0/24")
                })?;
                let c = Cidr::parse(cidr)
                    .with_context(|| format!("--external {e:?}: {cidr:?} is not a CIDR"))?;
                if policy.workload(name).is_none() {
                    anyhow::bail!(
                        "--external {e:?}: no workload {name:?} in {}",
                        policy.source.display()
                    );
                }
                ext.entry(name.to_owned()).or_default().push(c);
            }
            opts.external = ext;
            opts.node_cidrs = super::reach::parse_node_cidrs(&node_cidr)?;
            let flavor = if cilium {
                Flavor::Cilium
            } else {
                Flavor::Kubernetes
            };
            let g = generate::generate(&policy, flavor, &opts)?;
            for w in &g.warnings {
                tracing::warn!("{w}");
            }
            let yaml = generate::to_yaml(&g.objects)?;
            match out {
                Some(path) => std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{yaml}"),
            }
            eprintln!("{} objects generated", g.objects.len());
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}
