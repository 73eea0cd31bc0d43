//! `sigil audit`: checks manifests offline against the guardrails and prints a report.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use sigil_guard::Severity;
use sigil_guard::audit::{Auditor, Settings};
use sigil_guard::pss::PssVersion;
use sigil_guard::rego::RegoPolicies;
use sigil_guard::render::{self, Format};
use sigil_policy::{PodSecurityLevel, Policy};

use super::{EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::cli::{AuditArgs, AuditOutput, GuardRuleArgs, PssLevelArg, SeverityArg};

pub fn severity(s: SeverityArg) -> Severity {
    match s {
        SeverityArg::Low => Severity::Low,
        SeverityArg::Medium => Severity::Medium,
        SeverityArg::High => Severity::High,
        SeverityArg::Critical => Severity::Critical,
    }
}

/// Builds the auditor from the rule arguments; `Err` carries a message for exit code 2.
pub fn auditor(args: &GuardRuleArgs) -> Result<Auditor, String> {
    let mut settings = match &args.platform {
        Some(p) => {
            let policy = Policy::load(p).map_err(|e| e.to_string())?;
            Settings::from_policy(&policy).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Settings::default(),
    };
    if let Some(l) = args.level {
        settings.level = match l {
            PssLevelArg::Privileged => PodSecurityLevel::Privileged,
            PssLevelArg::Baseline => PodSecurityLevel::Baseline,
            PssLevelArg::Restricted => PodSecurityLevel::Restricted,
        };
    }
    if let Some(v) = &args.pss_version {
        settings.version = PssVersion::parse(v).map_err(|e| format!("--pss-version: {e}"))?;
    }
    let rego = if args.policy.is_empty() {
        None
    } else {
        let objs = sigil_kube::load_paths(&args.policy).map_err(|e| e.to_string())?;
        let rego = RegoPolicies::from_objects(&objs).map_err(|e| e.to_string())?;
        let (t, c) = rego.counts();
        tracing::info!(templates = t, constraints = c, "loaded Gatekeeper policies");
        if c == 0 {
            return Err(format!(
                "--policy {}: no Gatekeeper constraints found (templates: {t}); hint: a ConstraintTemplate does nothing without a constraint of its kind",
                args.policy
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Some(rego)
    };
    Ok(Auditor::new(settings, rego))
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let auditor = match auditor(&args.rules) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let objects = match sigil_kube::load_paths(&args.manifests) {
        Ok(mut o) => {
            for obj in o
                .iter_mut()
                .filter(|o| o.namespace.is_none() && !o.is_cluster_scoped())
            {
                obj.set_namespace(&args.namespace);
            }
            o
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let report = match auditor.audit(&objects) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let format = match args.output {
        AuditOutput::Table => Format::Table,
        AuditOutput::Json => Format::Json,
        AuditOutput::Sarif => Format::Sarif,
        AuditOutput::Junit => Format::Junit,
    };
    let color = args.out.is_none()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal();
    let text = render::render(&report, format, color);
    match &args.out {
        Some(p) => std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    for u in &report.unknown_kinds {
        tracing::warn!(
            "{}:{}: {} ({}) is a kind sigil does not know; it was not checked",
            u.path.display(),
            u.line,
            u.display(),
            u.api_version
        );
    }
    Ok(ExitCode::from(if report.fails(severity(args.fail_on)) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }))
}
