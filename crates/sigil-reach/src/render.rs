//! Renderers: table, JSON (`[{src, src_kind, dst, dst_kind, ports, verdict, because}]`), Graphviz DOT, and a
//! self-contained SVG (drawn here, no Graphviz needed). Pure: strings out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::blast::BlastRadius;
use crate::error::ReachError;

/// One pair's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub src: String,
    /// The source workload's kind (`Deployment`, `ReplicaSet`, `Pod`, ...).
    pub src_kind: String,
    pub dst: String,
    /// The destination's kind: a workload kind, or `IP` for an outside address.
    pub dst_kind: String,
    pub ports: String,
    pub verdict: Verdict,
    pub because: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// A plain-text table with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

pub fn rows_table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.src.clone(),
                r.dst.clone(),
                r.ports.clone(),
                r.verdict.as_str().into(),
                r.because.clone(),
            ]
        })
        .collect();
    table(&["SRC", "DST", "PORTS", "VERDICT", "BECAUSE"], &cells)
}

pub fn json<T: Serialize>(v: &T) -> Result<String, ReachError> {
    serde_json::to_string_pretty(v).map_err(|e| ReachError::Render(e.to_string()))
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A graph to draw: nodes grouped in clusters, labelled edges.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// node id -> (group, kind); kind picks the shape/colour.
    pub nodes: BTreeMap<String, (String, NodeKind)>,
    pub edges: Vec<(String, String, String, EdgeKind)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Workload,
    Compromised,
    Data,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    Network,
    Control,
}

impl Graph {
    pub fn node(&mut self, id: &str, group: &str, kind: NodeKind) {
        self.nodes
            .entry(id.to_owned())
            .and_modify(|e| {
                if kind != NodeKind::Workload {
                    e.1 = kind;
                }
            })
            .or_insert((group.to_owned(), kind));
    }

    /// Graph of allowed pairs: nodes are workloads grouped by namespace (`ns/name`).
    pub fn from_rows(rows: &[Row]) -> Self {
        let mut g = Graph::default();
        let group = |n: &str| n.split('/').next().unwrap_or_default().to_owned();
        for r in rows {
            g.node(&r.src, &group(&r.src), NodeKind::Workload);
            g.node(&r.dst, &group(&r.dst), NodeKind::Workload);
            if r.verdict == Verdict::Allow {
                g.edges.push((
                    r.src.clone(),
                    r.dst.clone(),
                    r.ports.clone(),
                    EdgeKind::Network,
                ));
            }
        }
        g
    }

    /// Graph of a blast radius: every step of every path.
    pub fn from_blast(b: &BlastRadius) -> Self {
        let mut g = Graph::default();
        let mut seen = std::collections::BTreeSet::new();
        for c in &b.compromised {
            g.node(&format!("exec {c}"), "compromised", NodeKind::Compromised);
        }
        for f in &b.findings {
            for s in &f.path {
                let kind_of = |l: &str| {
                    if l.starts_with("data ") {
                        NodeKind::Data
                    } else if l.starts_with("exec ") || l.starts_with("connect ") {
                        NodeKind::Workload
                    } else {
                        NodeKind::Other
                    }
                };
                let group = |l: &str| l.split_whitespace().next().unwrap_or_default().to_owned();
                g.node(&s.from, &group(&s.from), kind_of(&s.from));
                g.node(&s.to, &group(&s.to), kind_of(&s.to));
                if seen.insert((s.from.clone(), s.to.clone())) {
                    let kind = if s.how.starts_with("network") {
                        EdgeKind::Network
                    } else {
                        EdgeKind::Control
                    };
                    let label: String = s.how.chars().take(60).collect();
                    g.edges.push((s.from.clone(), s.to.clone(), label, kind));
                }
            }
        }
        g
    }

    pub fn dot(&self) -> String {
        let mut out = String::from(
            "digraph sigil {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=9];\n",
        );
        let mut groups: BTreeMap<&str, Vec<(&String, NodeKind)>> = BTreeMap::new();
        for (id, (g, k)) in &self.nodes {
            groups.entry(g.as_str()).or_default().push((id, *k));
        }
        for (i, (g, nodes)) in groups.iter().enumerate() {
            let _ = writeln!(
                out,
                "  subgraph cluster_{i} {{\n    label={};\n    style=dashed;",
                dot_id(g)
            );
            for (id, k) in nodes {
                let style = match k {
                    NodeKind::Compromised => ", style=\"rounded,filled\", fillcolor=\"#f8b4b4\"",
                    NodeKind::Data => ", shape=cylinder, style=filled, fillcolor=\"#fde68a\"",
                    NodeKind::Other => ", style=\"rounded,dashed\"",
                    NodeKind::Workload => "",
                };
                let _ = writeln!(
                    out,
                    "    {}{};",
                    dot_id(id),
                    if style.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", style.trim_start_matches(", "))
                    }
                );
            }
            out.push_str("  }\n");
        }
        for (a, b, l, k) in &self.edges {
            let style = match k {
                EdgeKind::Network => "",
                EdgeKind::Control => ", color=red",
            };
            let _ = writeln!(
                out,
                "  {} -> {} [label={}{style}];",
                dot_id(a),
                dot_id(b),
                dot_id(l)
            );
        }
        out.push_str("}\n");
        out
    }

    /// A self-contained SVG: one column per group, nodes stacked, edges as curves with arrows.
    pub fn svg(&self) -> String {
        let mut groups: BTreeMap<&str, Vec<(&String, NodeKind)>> = BTreeMap::new();
        for (id, (g, k)) in &self.nodes {
            groups.entry(g.as_str()).or_default().push((id, *k));
        }
        let (col_w, node_w, node_h, gap, top) =
            (300.0_f64, 240.0_f64, 28.0_f64, 14.0_f64, 50.0_f64);
        let mut pos: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        let mut max_rows = 0usize;
        let mut body = String::new();
        for (ci, (g, nodes)) in groups.iter().enumerate() {
            let x = 20.0 + ci as f64 * col_w;
            max_rows = max_rows.max(nodes.len());
            let h = nodes.len() as f64 * (node_h + gap) + gap + 24.0;
            let _ = write!(
                body,
                "<rect x=\"{:.0}\" y=\"{:.0}\" width=\"{:.0}\" height=\"{h:.0}\" rx=\"8\" fill=\"none\" stroke=\"#999\" stroke-dasharray=\"4 3\"/><text x=\"{:.0}\" y=\"{:.0}\" class=\"g\">{}</text>",
                x - 10.0,
                top - 30.0,
                node_w + 20.0,
                x,
                top - 12.0,
                esc(g)
            );
            for (ri, (id, k)) in nodes.iter().enumerate() {
                let y = top + ri as f64 * (node_h + gap);
                pos.insert(id.as_str(), (x, y));
                let fill = match k {
                    NodeKind::Compromised => "#f8b4b4",
                    NodeKind::Data => "#fde68a",
                    NodeKind::Other => "#eef",
                    NodeKind::Workload => "#fff",
                };
                let label: String = id.chars().take(36).collect();
                let _ = write!(
                    body,
                    "<rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{node_w:.0}\" height=\"{node_h:.0}\" rx=\"6\" fill=\"{fill}\" stroke=\"#333\"><title>{}</title></rect><text x=\"{:.0}\" y=\"{:.0}\">{}</text>",
                    esc(id),
                    x + 8.0,
                    y + 18.0,
                    esc(&label)
                );
            }
        }
        let mut edges = String::new();
        for (a, b, l, k) in &self.edges {
            let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(a.as_str()), pos.get(b.as_str()))
            else {
                continue;
            };
            let (sx, sy) = (if x2 >= x1 { x1 + node_w } else { x1 }, y1 + node_h / 2.0);
            let (ex, ey) = (if x2 > x1 { x2 } else { x2 + node_w }, y2 + node_h / 2.0);
            let bend = if (x1 - x2).abs() < 1.0 { 60.0 } else { 0.0 };
            let color = match k {
                EdgeKind::Network => "#2563eb",
                EdgeKind::Control => "#dc2626",
            };
            let _ = write!(
                edges,
                "<path d=\"M{sx:.0},{sy:.0} C{:.0},{sy:.0} {:.0},{ey:.0} {ex:.0},{ey:.0}\" stroke=\"{color}\" fill=\"none\" marker-end=\"url(#a)\"><title>{} -&gt; {}: {}</title></path>",
                (sx + ex) / 2.0 + bend,
                (sx + ex) / 2.0 + bend,
                esc(a),
                esc(b),
                esc(l)
            );
        }
        let w = 40.0 + groups.len().max(1) as f64 * col_w;
        let h = top + max_rows as f64 * (node_h + gap) + 40.0;
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"Helvetica,Arial,sans-serif\" font-size=\"12\">\n<defs><marker id=\"a\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker><style>.g{{font-weight:bold}}</style></defs>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}\n{edges}\n</svg>\n"
        )
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The blast radius as text: one block per finding with its path.
pub fn blast_text(b: &BlastRadius) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "compromised: {}", b.compromised.join(", "));
    let data: Vec<_> = b.data().collect();
    if data.is_empty() {
        out.push_str("data assets exposed: none\n");
    } else {
        let _ = writeln!(out, "data assets exposed: {}", data.len());
        for f in &data {
            let _ = writeln!(out, "  {}", f.label);
            for s in &f.path {
                let _ = writeln!(out, "    -> {}  [{}]", s.to, s.how);
            }
        }
    }
    if !b.without_network.is_empty() {
        let _ = writeln!(
            out,
            "data reached without the network (no NetworkPolicy can close these): {}",
            b.without_network.len()
        );
        for f in &b.without_network {
            let _ = writeln!(out, "  {}", f.label);
            for s in &f.path {
                let _ = writeln!(out, "    -> {}  [{}]", s.to, s.how);
            }
        }
    }
    let _ = writeln!(out, "everything reachable ({}):", b.findings.len());
    for f in b.findings.iter().filter(|f| !f.item.is_data()) {
        let via: Vec<&str> = f.path.iter().map(|s| s.to.as_str()).collect();
        let how = f.path.last().map(|s| s.how.as_str()).unwrap_or_default();
        let _ = writeln!(out, "  {}  (steps: {})  [{}]", f.label, via.len(), how);
    }
    out
}
