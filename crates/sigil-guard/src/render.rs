//! Report rendering: a table for people, JSON, SARIF 2.1.0 for code-scanning tools, JUnit XML for
//! CI test tabs. Pure: a [`Report`] in, a string out.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::finding::{Finding, Report};
use crate::rules::{self, Severity};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Sarif,
    Junit,
}

/// Renders `report` in `format`. `color` adds ANSI colours to the table.
pub fn render(report: &Report, format: Format, color: bool) -> String {
    match format {
        Format::Table => table(report, color),
        Format::Json => json(report),
        Format::Sarif => sarif(report),
        Format::Junit => junit(report),
    }
}

fn paint(s: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

fn sev_color(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "1;31",
        Severity::High => "31",
        Severity::Medium => "33",
        Severity::Low => "36",
    }
}

fn table(r: &Report, color: bool) -> String {
    let mut s = String::new();
    for f in &r.findings {
        let loc = format!("{}:{}", f.object.path.display(), f.object.line);
        let _ = writeln!(
            s,
            "{:<8} {:<36} {}",
            paint(f.severity.as_str(), sev_color(f.severity), color),
            f.rule,
            loc
        );
        let _ = writeln!(s, "         {}", f.summary());
        if !f.field.is_empty() {
            let _ = writeln!(s, "         field: {}", f.field);
        }
        let _ = writeln!(s, "         hint: {}", f.hint);
    }
    for w in &r.waived {
        let _ = writeln!(
            s,
            "{:<8} {:<36} {} (exempt: {})",
            paint("exempt", "2", color),
            w.finding.rule,
            w.finding.object.display(),
            w.reason
        );
    }
    for u in &r.unknown_kinds {
        let _ = writeln!(
            s,
            "{:<8} {:<36} {}:{} {} ({}) is a kind Sigil does not know; not checked",
            paint("note", "2", color),
            "UNKNOWN-KIND",
            u.path.display(),
            u.line,
            u.display(),
            u.api_version
        );
    }
    let mut counts = [0usize; 4];
    for f in &r.findings {
        if let Some(c) = counts.get_mut(f.severity as usize) {
            *c += 1;
        }
    }
    let _ = writeln!(
        s,
        "{} objects, {} pod templates: {} findings ({} critical, {} high, {} medium, {} low), {} exempt, {} unknown kinds",
        r.objects,
        r.pod_templates,
        r.findings.len(),
        counts[3],
        counts[2],
        counts[1],
        counts[0],
        r.waived.len(),
        r.unknown_kinds.len()
    );
    s
}

fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "note",
    }
}

fn uri(f: &Finding) -> String {
    let p = f.object.path.to_string_lossy().replace('\\', "/");
    let p = p.strip_prefix("./").unwrap_or(&p).to_owned();
    if p == "-" { "stdin".to_owned() } else { p }
}

fn sarif(r: &Report) -> String {
    // Every built-in rule is described, plus one descriptor per Rego constraint kind seen.
    let mut descriptors: Vec<Value> = rules::ALL
        .iter()
        .map(|rule| {
            json!({
                "id": rule.id,
                "name": rule.id.replace('-', ""),
                "shortDescription": {"text": rule.title},
                "fullDescription": {"text": format!("{}. Fix: {}", rule.title, rule.hint)},
                "helpUri": rule.help_uri(),
                "help": {"text": rule.hint},
                "defaultConfiguration": {"level": sarif_level(rule.severity)},
                "properties": {"security-severity": security_severity(rule.severity), "tags": ["security", "kubernetes"]},
            })
        })
        .collect();
    let mut ids: Vec<String> = rules::ALL.iter().map(|r| r.id.to_owned()).collect();
    for f in &r.findings {
        if !ids.contains(&f.rule) {
            ids.push(f.rule.clone());
            descriptors.push(json!({
                "id": f.rule,
                "shortDescription": {"text": f.title},
                "defaultConfiguration": {"level": sarif_level(f.severity)},
            }));
        }
    }
    let results: Vec<Value> = r
        .findings
        .iter()
        .map(|f| {
            let index = ids.iter().position(|i| *i == f.rule).unwrap_or(0);
            json!({
                "ruleId": f.rule,
                "ruleIndex": index,
                "level": sarif_level(f.severity),
                "message": {"text": format!("{} Fix: {}", f.summary(), f.hint)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(f)},
                        "region": {"startLine": f.object.line.max(1)},
                    },
                    "logicalLocations": [{"fullyQualifiedName": format!("{}.{}", f.object.display(), f.field), "kind": "member"}],
                }],
                "partialFingerprints": {"sigil/v1": format!("{}|{}|{}|{}", f.rule, f.object.display(), f.container.as_deref().unwrap_or(""), f.field)},
                "properties": {"severity": f.severity.as_str(), "field": f.field},
            })
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "sigil",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://example.invalid/sigil",
                "rules": descriptors,
            }},
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
    }
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0 cannot carry.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

fn junit(r: &Report) -> String {
    // One test case per checked object; a failure per finding.
    let mut by_object: Vec<(String, Vec<&Finding>)> = Vec::new();
    for f in &r.findings {
        let key = format!(
            "{} ({}:{})",
            f.object.display(),
            f.object.path.display(),
            f.object.line
        );
        match by_object.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(f),
            None => by_object.push((key, vec![f])),
        }
    }
    let passed = r.objects.saturating_sub(by_object.len());
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"sigil audit\" tests=\"{}\" failures=\"{}\">",
        r.objects.max(by_object.len()),
        by_object.len()
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"sigil audit\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">",
        r.objects.max(by_object.len()),
        by_object.len(),
        r.unknown_kinds.len()
    );
    for (key, findings) in &by_object {
        let _ = writeln!(
            s,
            "    <testcase classname=\"sigil.audit\" name=\"{}\">",
            xml_escape(key)
        );
        for f in findings {
            let _ = writeln!(
                s,
                "      <failure type=\"{}\" message=\"{}\">{}\nfield: {}\nhint: {}</failure>",
                xml_escape(&f.rule),
                xml_escape(&format!("[{}] {}", f.severity, f.message)),
                xml_escape(&f.summary()),
                xml_escape(&f.field),
                xml_escape(&f.hint)
            );
        }
        let _ = writeln!(s, "    </testcase>");
    }
    for u in &r.unknown_kinds {
        let _ = writeln!(
            s,
            "    <testcase classname=\"sigil.audit\" name=\"{}\"><skipped message=\"unknown kind {}; not checked\"/></testcase>",
            xml_escape(&u.display()),
            xml_escape(&u.api_version)
        );
    }
    if passed > 0 {
        let _ = writeln!(
            s,
            "    <testcase classname=\"sigil.audit\" name=\"{passed} objects without findings\"/>"
        );
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}
