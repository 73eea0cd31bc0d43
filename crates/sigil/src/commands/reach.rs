//! `sigil reach`: reachability matrix, explanations, blast radius and CI path checks over
//! Kubernetes manifests. Loading is `sigil-kube`; analysis is `sigil-reach`; this is the edge.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use sigil_policy::Policy;
use sigil_reach::blast::{Blast, Item};
use sigil_reach::ipset::Cidr;
use sigil_reach::query::{self, Endpoint, display_name};
use sigil_reach::render::{self, Graph, Row, Verdict};
use sigil_reach::{Cluster, Engine, Settings};

use super::{EXIT_FINDINGS, EXIT_OK};
use crate::cli::{ReachArgs, ReachOutput};

pub fn load_policy(path: Option<&Path>) -> anyhow::Result<Option<Policy>> {
    let Some(path) = path else { return Ok(None) };
    match Policy::load(path) {
        Ok(p) => Ok(Some(p)),
        Err(e) => bail!("{e}"),
    }
}

/// `--node-cidr` values, with an error naming the bad one.
pub fn parse_node_cidrs(values: &[String]) -> anyhow::Result<Vec<Cidr>> {
    values
        .iter()
        .map(|c| {
            Cidr::parse(c).with_context(|| {
                format!("--node-cidr {c:?} is not a CIDR\nhint: the node addresses, e.g. --node-cidr 10.0.0.0/24")
            })
        })
        .collect()
}

pub fn load_cluster(paths: &[PathBuf], node_cidrs: &[String]) -> anyhow::Result<Cluster> {
    if paths.is_empty() {
        bail!(
            "no manifests given\nhint: sigil reach examples/ai-platform/manifests/naive --policy examples/ai-platform/sigil.yaml"
        );
    }
    let objects = sigil_kube::load_paths(paths).map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = Settings {
        node_cidrs: parse_node_cidrs(node_cidrs)?,
    };
    let cluster = Cluster::from_objects(&objects, settings)?;
    let host: Vec<String> = cluster
        .workloads
        .iter()
        .filter(|w| w.host_network)
        .map(|w| w.key())
        .collect();
    if !host.is_empty() {
        tracing::warn!(
            "hostNetwork workloads are node traffic (not selected by NetworkPolicies, matched only by ipBlocks covering --node-cidr): {}",
            host.join(", ")
        );
    }
    let grouped: Vec<String> = cluster
        .workloads
        .iter()
        .filter_map(|w| {
            sigil_reach::groups::describe(w).map(|d| format!("{} [{}]: {d}", w.key(), w.kind))
        })
        .collect();
    if !grouped.is_empty() {
        let shown: Vec<&str> = grouped.iter().take(5).map(String::as_str).collect();
        tracing::info!(
            "pods grouped by controller owner (the top owner where the chain is in the input; the owner's name when it is not): {} workload(s): {}{}",
            grouped.len(),
            shown.join("; "),
            if grouped.len() > shown.len() {
                "; ... (--list shows every workload)"
            } else {
                ""
            }
        );
    }
    for note in &cluster.grouping_notes {
        tracing::info!("{note}");
    }
    for note in sigil_reach::groups::variant_notes(&cluster) {
        tracing::warn!("{note}");
    }
    tracing::info!(
        "{} objects: {} workloads, {} NetworkPolicies, {} namespaces",
        objects.len(),
        cluster.workloads.len(),
        cluster.policies.len(),
        cluster.namespaces.len()
    );
    Ok(cluster)
}

fn workloads_of(cluster: &Cluster, policy: Option<&Policy>, q: &str) -> anyhow::Result<Vec<usize>> {
    match query::resolve(cluster, policy, q)? {
        Endpoint::Workloads(v) => Ok(v),
        Endpoint::Data(d) => {
            bail!("{d:?} is a data asset; it can only be a destination (--to, --deny-path A->{d})")
        }
        Endpoint::Ip(ip) => bail!("{ip} is an outside address; use it as --to"),
    }
}

enum Dst {
    Workloads(Vec<usize>),
    Ip(std::net::IpAddr),
    Service(Vec<(usize, sigil_reach::Proto, u16)>, u16),
}

fn parse_dst(cluster: &Cluster, policy: Option<&Policy>, q: &str) -> anyhow::Result<Dst> {
    if let Some(rest) = q.strip_prefix("svc/") {
        let (nsname, port) = rest
            .rsplit_once(':')
            .context("a service destination is svc/NAMESPACE/NAME:PORT")?;
        let (ns, name) = nsname
            .split_once('/')
            .context("a service destination is svc/NAMESPACE/NAME:PORT")?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("bad service port {port:?}"))?;
        return Ok(Dst::Service(
            query::service_backends(cluster, ns, name, port)?,
            port,
        ));
    }
    match query::resolve(cluster, policy, q)? {
        Endpoint::Workloads(v) => Ok(Dst::Workloads(v)),
        Endpoint::Ip(ip) => Ok(Dst::Ip(ip)),
        Endpoint::Data(d) => {
            let p = policy.context("data assets need --policy")?;
            let asset = p
                .data
                .iter()
                .find(|a| a.name == d)
                .context("unknown data asset")?;
            let server = asset
                .served_by
                .as_deref()
                .with_context(|| format!("data asset {d:?} has no servedBy workload; use --compromised to see who can read it"))?;
            workloads_of(cluster, policy, server).map(Dst::Workloads)
        }
    }
}

fn emit(args: &ReachArgs, text: &str, graph: Option<&Graph>) -> anyhow::Result<()> {
    let bytes: Vec<u8> = match (args.output, graph) {
        (ReachOutput::Dot, Some(g)) => g.dot().into_bytes(),
        (ReachOutput::Svg, Some(g)) => g.svg().into_bytes(),
        (ReachOutput::Png, Some(g)) => dot_png(&g.dot())?,
        _ => text.as_bytes().to_vec(),
    };
    match &args.out {
        Some(path) => std::fs::write(path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout()
            .write_all(&bytes)
            .context("cannot write to stdout")?,
    }
    Ok(())
}

/// PNG needs Graphviz; SVG does not.
fn dot_png(dot: &str) -> anyhow::Result<Vec<u8>> {
    let mut child = std::process::Command::new("dot")
        .arg("-Tpng")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run Graphviz `dot` for PNG output\nhint: install graphviz (apt-get install graphviz), or use --output svg, which needs nothing")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(dot.as_bytes()).context("writing to dot")?;
    }
    let out = child.wait_with_output().context("waiting for dot")?;
    if !out.status.success() {
        bail!("dot failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

pub fn run(args: ReachArgs) -> anyhow::Result<ExitCode> {
    let policy = load_policy(args.policy.as_deref())?;
    let cluster = load_cluster(&args.manifests, &args.node_cidr)?;
    let started = std::time::Instant::now();
    let engine = Engine::new(&cluster);
    if args.stats {
        let allowed = engine.count_allowed();
        let n = cluster.workloads.len();
        let pods: u64 = cluster
            .workloads
            .iter()
            .map(|w| u64::from(w.replicas))
            .sum();
        let isolated = (0..n)
            .filter(|i| engine.isolation(*i) != (false, false))
            .count();
        println!(
            "workloads {n} ({pods} pods), policies {}, namespaces {}, isolated workloads {isolated}, allowed pairs {allowed} of {} ({:.1}%), analysis {:.3} s",
            cluster.policies.len(),
            cluster.namespaces.len(),
            n * n,
            100.0 * allowed as f64 / (n * n).max(1) as f64,
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::from(EXIT_OK));
    }
    let p = policy.as_ref();
    let name = |i: usize| {
        cluster
            .workloads
            .get(i)
            .map(|w| display_name(p, w))
            .unwrap_or_default()
    };
    let kind = |i: usize| {
        cluster
            .workloads
            .get(i)
            .map(|w| w.kind.clone())
            .unwrap_or_default()
    };

    if args.list {
        let rows: Vec<Vec<String>> = cluster
            .workloads
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let (ing, eg) = engine.isolation(i);
                vec![
                    name(i),
                    w.kind.clone(),
                    sigil_reach::groups::describe(w).unwrap_or_default(),
                    w.service_account.clone(),
                    format!("{:?}", w.labels),
                    format!(
                        "{}{}{}",
                        if ing { "ingress " } else { "" },
                        if eg { "egress" } else { "" },
                        if w.host_network { "hostNetwork" } else { "" }
                    ),
                ]
            })
            .collect();
        emit(
            &args,
            &render::table(
                &[
                    "WORKLOAD",
                    "KIND",
                    "GROUPED",
                    "SERVICEACCOUNT",
                    "LABELS",
                    "ISOLATED",
                ],
                &rows,
            ),
            None,
        )?;
        return Ok(ExitCode::from(EXIT_OK));
    }

    // CI gates first, so they can be combined with any view.
    let mut violations = Vec::new();
    for spec in &args.deny_path {
        let (a, b) = spec.split_once("->").with_context(|| {
            format!("--deny-path {spec:?}: write SOURCE->TARGET, e.g. monitoring->training-data")
        })?;
        let from = workloads_of(&cluster, p, a.trim())?;
        let target = query::resolve(&cluster, p, b.trim())?;
        let blast = Blast::new(&engine, p).compromised(&from);
        let hit = blast.findings.iter().find(|f| match (&target, &f.item) {
            (Endpoint::Data(d), Item::Data { name, .. }) => name == d,
            (Endpoint::Workloads(v), Item::Exec { workload } | Item::Reach { workload, .. }) => {
                v.iter().any(|i| name(*i) == *workload)
            }
            _ => false,
        });
        let ip_hit = match target {
            Endpoint::Ip(ip) => from.iter().any(|i| !engine.egress_to_ip(*i, ip).is_empty()),
            _ => false,
        };
        if let Some(f) = hit {
            let steps: Vec<String> = f
                .path
                .iter()
                .map(|s| format!("  -> {}  [{}]", s.to, s.how))
                .collect();
            violations.push(format!(
                "path {a}->{b} exists:\n  {}\n{}",
                blast.compromised.join(", "),
                steps.join("\n")
            ));
        } else if ip_hit {
            violations.push(format!("path {a}->{b} exists: egress to {b} is allowed"));
        }
    }
    if !args.deny_path.is_empty() {
        if violations.is_empty() {
            eprintln!("ok: no path for {}", args.deny_path.join(", "));
            return Ok(ExitCode::from(EXIT_OK));
        }
        println!("{}", violations.join("\n"));
        return Ok(ExitCode::from(EXIT_FINDINGS));
    }

    if let Some(x) = &args.compromised {
        let from = workloads_of(&cluster, p, x)?;
        let blast = Blast::new(&engine, p).compromised(&from);
        let text = match args.output {
            ReachOutput::Json => render::json(&blast)?,
            _ => render::blast_text(&blast),
        };
        emit(&args, &text, Some(&Graph::from_blast(&blast)))?;
        return Ok(ExitCode::from(EXIT_OK));
    }

    if let [x, y] = args.explain.as_slice() {
        let srcs = workloads_of(&cluster, p, x)?;
        let mut out = String::new();
        let mut rows = Vec::new();
        match parse_dst(&cluster, p, y)? {
            Dst::Workloads(dsts) => {
                for &s in &srcs {
                    for &d in &dsts {
                        let e = engine.explain(s, d);
                        let verdict = if e.allowed.is_empty() {
                            "DENY"
                        } else {
                            "ALLOW"
                        };
                        out.push_str(&format!(
                            "{} -> {}: {verdict} {}\n",
                            name(s),
                            name(d),
                            e.allowed
                        ));
                        for side in [&e.egress, &e.ingress] {
                            let who = if side.direction == sigil_reach::Direction::Egress {
                                name(s)
                            } else {
                                name(d)
                            };
                            out.push_str(&format!("  {} of {who}:\n", side.direction.as_str()));
                            if let Some(n) = &side.note {
                                out.push_str(&format!("    {n}\n"));
                            }
                            if side.isolating.is_empty() {
                                out.push_str("    not isolated: no NetworkPolicy selects it for this direction, so everything is allowed\n");
                            } else {
                                out.push_str(&format!(
                                    "    isolated by: {}\n",
                                    side.isolating.join(", ")
                                ));
                                if side.hits.is_empty() {
                                    out.push_str("    no rule matches the peer: denied\n");
                                }
                                for h in &side.hits {
                                    out.push_str(&format!("    allowed by {h}\n"));
                                }
                            }
                            out.push_str(&format!("    allows: {}\n", side.allowed));
                        }
                        rows.push(Row {
                            src: name(s),
                            src_kind: kind(s),
                            dst: name(d),
                            dst_kind: kind(d),
                            ports: e.allowed.to_string(),
                            verdict: if e.allowed.is_empty() {
                                Verdict::Deny
                            } else {
                                Verdict::Allow
                            },
                            because: e.because(&name(s), &name(d)),
                        });
                    }
                }
            }
            _ => bail!("--explain takes two workloads"),
        }
        let text = match args.output {
            ReachOutput::Json => render::json(&rows)?,
            _ => out,
        };
        emit(&args, &text, Some(&Graph::from_rows(&rows)))?;
        return Ok(ExitCode::from(EXIT_OK));
    } else if !args.explain.is_empty() {
        bail!("--explain takes exactly two names: --explain SOURCE DESTINATION");
    }

    // Matrix (optionally filtered).
    let srcs: Vec<usize> = match &args.from {
        Some(x) => workloads_of(&cluster, p, x)?,
        None => (0..cluster.workloads.len()).collect(),
    };
    let filtered = args.from.is_some() || args.to.is_some();
    let mut rows = Vec::new();
    let row = |s: usize,
               (dst, dst_kind): (String, String),
               ports: sigil_reach::PortSet,
               because: String| Row {
        src: name(s),
        src_kind: kind(s),
        dst,
        dst_kind,
        verdict: if ports.is_empty() {
            Verdict::Deny
        } else {
            Verdict::Allow
        },
        ports: ports.to_string(),
        because,
    };
    match args
        .to
        .as_deref()
        .map(|t| parse_dst(&cluster, p, t))
        .transpose()?
    {
        Some(Dst::Ip(ip)) => {
            for &s in &srcs {
                let ports = engine.egress_to_ip(s, ip);
                let because = if engine.isolation(s).1 {
                    "egress ipBlock rules".into()
                } else {
                    "egress not isolated".to_owned()
                };
                rows.push(row(s, (ip.to_string(), "IP".to_owned()), ports, because));
            }
        }
        Some(Dst::Service(backends, port)) => {
            for &s in &srcs {
                for &(d, proto, target) in &backends {
                    let e = engine.explain(s, d);
                    let ok = e.allowed.contains(proto, target);
                    let ports = if ok {
                        sigil_reach::PortSet::single(proto, target)
                    } else {
                        sigil_reach::PortSet::empty()
                    };
                    rows.push(row(
                        s,
                        (
                            format!(
                                "{} (service port {port} -> {}/{target})",
                                name(d),
                                proto.as_str()
                            ),
                            kind(d),
                        ),
                        ports,
                        e.because(&name(s), &name(d)),
                    ));
                }
            }
        }
        Some(Dst::Workloads(dsts)) => {
            for &s in &srcs {
                for &d in &dsts {
                    let ports = engine.verdict(s, d);
                    rows.push(row(
                        s,
                        (name(d), kind(d)),
                        ports,
                        engine.explain(s, d).because(&name(s), &name(d)),
                    ));
                }
            }
        }
        None => {
            let all: Vec<usize> = (0..cluster.workloads.len()).collect();
            for &s in &srcs {
                for &d in &all {
                    let ports = engine.verdict(s, d);
                    if ports.is_empty() && !(args.all || filtered) {
                        continue;
                    }
                    rows.push(row(
                        s,
                        (name(d), kind(d)),
                        ports,
                        engine.explain(s, d).because(&name(s), &name(d)),
                    ));
                }
            }
        }
    }
    let text = match args.output {
        ReachOutput::Json => render::json(&rows)?,
        _ => render::rows_table(&rows),
    };
    emit(&args, &text, Some(&Graph::from_rows(&rows)))?;
    Ok(ExitCode::from(EXIT_OK))
}
