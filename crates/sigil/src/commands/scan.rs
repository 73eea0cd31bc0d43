//! `sigil scan PATH...`: judge model files before anything loads them.
//!
//! Files are scanned in parallel (one worker per core by default); each file is streamed, never
//! loaded whole. With `--lockfile`, each file is also hashed and files whose digest is not locked
//! are reported. Exit 0 when every verdict is below `--fail-on`, 1 otherwise, 2 on input errors.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use sigil_policy::Policy;
use sigil_scan::lockfile::{self, Lockfile};
use sigil_scan::pickle::{GlobalPolicy, Profile};
use sigil_scan::walk;
use sigil_scan::{Category, FileReport, Finding, ScanConfig, Verdict, digest, scan_file};

use super::{EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::cli::{ScanArgs, ScanOutput};

/// What `sigil scan` reads: every file under the given paths as [`sigil_scan::walk`] lists it
/// (each file once, under its first name; links followed only inside the scanned root), and the
/// paths that could not be followed.
#[derive(Debug, Default)]
pub struct Inputs {
    /// (path, other paths of the same file, whether a lockfile pins it).
    pub files: Vec<(PathBuf, Vec<PathBuf>, bool)>,
    pub problems: Vec<walk::Problem>,
}

pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Inputs> {
    let mut out = Inputs::default();
    for p in paths {
        let w = walk::walk(p)?;
        // A file root is its own path; a directory's files are joined onto it.
        let is_dir = std::fs::metadata(p).is_ok_and(|m| m.is_dir());
        let at = |rel: &str| if is_dir { p.join(rel) } else { p.clone() };
        for f in w.files {
            let aliases = f.aliases.iter().map(|a| at(a)).collect();
            out.files
                .push((f.path, aliases, !is_dir || lockfile::in_lock_scope(&f.rel)));
        }
        out.problems.extend(w.problems);
    }
    Ok(out)
}

/// A report for a path the walk could not follow: suspicious, since what a loader would read
/// there was not judged.
fn problem_report(p: &walk::Problem) -> FileReport {
    let subject = match p {
        walk::Problem::Dangling { .. } => "dangling symlink",
        walk::Problem::Outside { .. } => "symlink outside the root",
        walk::Problem::Unreadable { .. } => "unreadable",
    };
    FileReport::new(
        p.path().to_owned(),
        sigil_scan::Format::Unknown,
        0,
        vec![Finding {
            verdict: Verdict::Suspicious,
            category: Category::Structure,
            inner: String::new(),
            offset: 0,
            subject: subject.into(),
            reason: p.to_string(),
        }],
    )
}

pub fn progress(n: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr());
    if n < 2 {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{elapsed_precise}] {wide_bar}")
    {
        pb.set_style(style);
    }
    pb.set_message(what.to_owned());
    pb
}

pub fn jobs(j: Option<usize>) -> usize {
    j.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

pub fn run(a: ScanArgs) -> anyhow::Result<ExitCode> {
    let mut globals = GlobalPolicy {
        profile: a.profile.parse::<Profile>().map_err(anyhow::Error::msg)?,
        allow: a.allow.clone(),
        deny: a.deny.clone(),
    };
    if let Some(p) = &a.policy {
        match Policy::load(p) {
            Ok(pol) => {
                globals
                    .allow
                    .extend(pol.models.pickle_allow.iter().cloned());
                globals.deny.extend(pol.models.pickle_deny.iter().cloned());
            }
            Err(e) => {
                eprint!("{e}");
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        }
    }
    let fail_on: Verdict = a.fail_on.parse().map_err(anyhow::Error::msg)?;
    let lock = match &a.lockfile {
        Some(l) => Some(Lockfile::load(l)?),
        None => None,
    };
    let Inputs { files, problems } = collect_files(&a.paths)?;
    if files.is_empty() && problems.is_empty() {
        eprintln!("error: no files under {:?}", a.paths);
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    let cfg = ScanConfig {
        globals,
        ..ScanConfig::default()
    };
    let pb = if a.no_progress {
        ProgressBar::hidden()
    } else {
        progress(files.len(), "scanning")
    };
    let digests = lock.as_ref().map(Lockfile::digests);
    let started = std::time::Instant::now();
    let reports = digest::par_map(
        &files,
        jobs(a.jobs),
        |(f, aliases, lockable)| {
            let mut r = scan_file(f, &cfg);
            r.aliases.clone_from(aliases);
            if let Some(d) = digests.as_ref().filter(|_| *lockable) {
                match digest::sha256_file(f) {
                    Ok((h, _)) => {
                        if !d.contains(h.as_str()) {
                            r.push(Finding {
                                verdict: Verdict::Suspicious,
                                category: Category::Provenance,
                                inner: String::new(),
                                offset: 0,
                                subject: format!("sha256:{h}"),
                                reason: "file digest is not in the lockfile (unpinned or modified)"
                                    .into(),
                            });
                        }
                        r.sha256 = Some(h);
                    }
                    Err(e) => r.push(Finding {
                        verdict: Verdict::Malformed,
                        category: Category::Provenance,
                        inner: String::new(),
                        offset: 0,
                        subject: "sha256".into(),
                        reason: e.to_string(),
                    }),
                }
            }
            r
        },
        || pb.inc(1),
    );
    pb.finish_and_clear();
    let mut reports = reports;
    reports.extend(problems.iter().map(problem_report));
    reports.sort_by(|a, b| a.path.cmp(&b.path));
    tracing::debug!(
        files = files.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "scan done"
    );
    // Buffered: stdout is line-buffered, and a pretty-printed report is thousands of lines.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    match a.output {
        ScanOutput::Table => print_table(&mut out, &reports)?,
        ScanOutput::Json => {
            serde_json::to_writer_pretty(&mut out, &reports)?;
            writeln!(out)?;
        }
        ScanOutput::Sarif => {
            serde_json::to_writer_pretty(&mut out, &sarif(&reports))?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    let failed = reports.iter().filter(|r| r.verdict >= fail_on).count();
    if failed > 0 {
        eprintln!(
            "{}: {failed} of {} files at or above {fail_on}",
            crate::logging::paint("fail", crate::logging::Color::Red),
            reports.len()
        );
        Ok(ExitCode::from(EXIT_FINDINGS))
    } else {
        Ok(ExitCode::from(EXIT_OK))
    }
}

fn print_table(out: &mut impl Write, reports: &[FileReport]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<11} {:<18} {:>12}  PATH",
        "VERDICT", "FORMAT", "SIZE"
    )?;
    for r in reports {
        writeln!(
            out,
            "{:<11} {:<18} {:>12}  {}",
            r.verdict.as_str(),
            r.format.as_str(),
            r.size,
            r.path.display()
        )?;
        for f in &r.findings {
            let inner = if f.inner.is_empty() {
                String::new()
            } else {
                format!(" [{}]", f.inner)
            };
            writeln!(
                out,
                "  {:<10} {}{} @{}: {} ({}: {})",
                f.verdict.as_str(),
                r.path.display(),
                inner,
                f.offset,
                f.subject,
                f.category.as_str(),
                f.reason
            )?;
        }
    }
    let count = |v: Verdict| reports.iter().filter(|r| r.verdict == v).count();
    writeln!(
        out,
        "{} files: {} safe, {} suspicious, {} malformed, {} dangerous",
        reports.len(),
        count(Verdict::Safe),
        count(Verdict::Suspicious),
        count(Verdict::Malformed),
        count(Verdict::Dangerous)
    )
}

/// SARIF 2.1.0.
fn sarif(reports: &[FileReport]) -> serde_json::Value {
    let cats = [
        Category::CodeExecution,
        Category::FileAccess,
        Category::NetworkAccess,
        Category::NestedDeserialization,
        Category::ImportMachinery,
        Category::UnknownGlobal,
        Category::Structure,
        Category::Provenance,
        Category::PolicyDeny,
    ];
    let rules: Vec<_> = cats
        .iter()
        .map(|c| json!({"id": c.as_str(), "shortDescription": {"text": c.as_str().replace('-', " ")}}))
        .collect();
    let mut results = Vec::new();
    for r in reports {
        for f in &r.findings {
            let level = match f.verdict {
                Verdict::Dangerous => "error",
                Verdict::Malformed | Verdict::Suspicious => "warning",
                Verdict::Safe => "note",
            };
            results.push(json!({
                "ruleId": f.category.as_str(),
                "level": level,
                "message": {"text": format!("{}: {}", f.subject, f.reason)},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": r.path.display().to_string()},
                    "region": {"byteOffset": f.offset}
                }}],
                "properties": {"verdict": f.verdict.as_str(), "inner": f.inner, "format": r.format.as_str()}
            }));
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "sigil", "version": env!("CARGO_PKG_VERSION"), "rules": rules}},
            "results": results
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sarif_levels_and_locations() {
        let r = FileReport::new(
            PathBuf::from("m.pkl"),
            sigil_scan::Format::Pickle,
            10,
            vec![Finding {
                verdict: Verdict::Dangerous,
                category: Category::CodeExecution,
                inner: String::new(),
                offset: 7,
                subject: "os.system".into(),
                reason: "runs code".into(),
            }],
        );
        let s = sarif(&[r]);
        assert_eq!(s["version"], "2.1.0");
        let res = &s["runs"][0]["results"][0];
        assert_eq!(res["level"], "error");
        assert_eq!(res["ruleId"], "code-execution");
        assert_eq!(
            res["locations"][0]["physicalLocation"]["region"]["byteOffset"],
            7
        );
    }

    fn paths(i: &Inputs) -> Vec<PathBuf> {
        i.files.iter().map(|f| f.0.clone()).collect()
    }

    #[test]
    fn collects_files_recursively_sorted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("b/.git")).unwrap();
        std::fs::write(d.path().join("b/x.pkl"), b"x").unwrap();
        std::fs::write(d.path().join("b/.git/config"), b"x").unwrap();
        std::fs::write(d.path().join("a.bin"), b"x").unwrap();
        let f = collect_files(&[d.path().to_owned()]).unwrap();
        assert_eq!(
            paths(&f),
            vec![d.path().join("a.bin"), d.path().join("b/x.pkl")]
        );
    }

    #[test]
    fn follows_file_symlinks_once_and_walks_a_symlink_loop_once() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::create_dir_all(root.join("snap")).unwrap();
        std::fs::write(root.join("blobs/abc"), b"x").unwrap();
        std::os::unix::fs::symlink("../blobs/abc", root.join("snap/model.bin")).unwrap();
        // A loop: snap/up -> .. (the root again).
        std::os::unix::fs::symlink("..", root.join("snap/up")).unwrap();
        let f = collect_files(&[root.to_owned()]).unwrap();
        // One file, two names: scanned once.
        assert_eq!(paths(&f), vec![root.join("blobs/abc")]);
        assert_eq!(f.files[0].1, vec![root.join("snap/model.bin")]);
        assert!(f.problems.is_empty(), "{:?}", f.problems);
    }
}
