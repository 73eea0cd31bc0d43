//! `sigil models lock|verify|sign`: pin what was downloaded and check it later, offline.
//!
//! `lock` hashes a model directory or Hugging Face cache (re-verifying cache blobs against their
//! names) and writes a lockfile; with `--policy`, every Hugging Face file must come from an
//! allowed source pinned at that revision. `verify` fails on any changed, missing or extra file,
//! and checks an OpenSSF model-signing signature when one is given. `sign` writes one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use sigil_policy::Policy;
use sigil_scan::lockfile::{self, Drift, LockEntry, Lockfile};
use sigil_scan::signing::{self, SigningKey, VerifyingKey};
use sigil_scan::{digest, walk};

use super::scan::{jobs, progress};
use super::{EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::cli::{ModelsCmd, ModelsLockArgs, ModelsSignArgs, ModelsVerifyArgs};

pub fn run(cmd: ModelsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelsCmd::Lock(a) => lock(a),
        ModelsCmd::Verify(a) => verify(a),
        ModelsCmd::Sign(a) => sign(a),
    }
}

/// Hashes every file under `root`; returns entries, blob mismatches and the paths the walk could
/// not follow (a dangling link, a link out of the tree: a loader would read what the lock
/// cannot pin, so both `lock` and `verify` fail on them).
fn hash_all(
    root: &Path,
    jobs_n: Option<usize>,
) -> anyhow::Result<(Vec<LockEntry>, Vec<Drift>, Vec<walk::Problem>)> {
    let (targets, problems) = lockfile::collect_all(root)?;
    let total: u64 = targets
        .iter()
        .filter_map(|t| std::fs::metadata(&t.abs).ok())
        .map(|m| m.len())
        .sum();
    let pb = progress(targets.len(), "hashing");
    let started = std::time::Instant::now();
    let results = digest::par_map(&targets, jobs(jobs_n), lockfile::hash_target, || pb.inc(1));
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        files = targets.len(),
        bytes = total,
        mb_per_s = (total as f64 / 1e6 / secs.max(1e-9)) as u64,
        "hashed"
    );
    let mut entries = Vec::new();
    let mut drift = Vec::new();
    for r in results {
        let (e, d) = r?;
        entries.push(e);
        drift.extend(d);
    }
    Ok((entries, drift, problems))
}

fn check_sources(policy: &Path, entries: &[LockEntry]) -> anyhow::Result<Vec<String>> {
    let p = Policy::load(policy).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut bad = BTreeMap::new();
    for e in entries {
        match (&e.repo, &e.revision) {
            (Some(repo), Some(rev)) => {
                if p.models.allowed_source(repo, rev).is_none() {
                    bad.insert(
                        format!("{repo}@{rev}"),
                        format!("{repo} at revision {rev} is not an allowed model source in {} (models.sources)", policy.display()),
                    );
                }
            }
            _ => {
                bad.insert(
                    e.path.clone(),
                    format!("{}: not from a Hugging Face cache snapshot, so its source cannot be checked against models.sources", e.path),
                );
            }
        }
    }
    Ok(bad.into_values().collect())
}

fn lock(a: ModelsLockArgs) -> anyhow::Result<ExitCode> {
    let (entries, drift, problems) = hash_all(&a.path, a.jobs)?;
    for d in &drift {
        eprintln!(
            "{}: {d}",
            crate::logging::paint("tampered", crate::logging::Color::Red)
        );
    }
    for p in &problems {
        eprintln!(
            "{}: {p}",
            crate::logging::paint("not locked", crate::logging::Color::Red)
        );
    }
    if !drift.is_empty() || !problems.is_empty() {
        return Ok(ExitCode::from(EXIT_FINDINGS));
    }
    if let Some(pol) = &a.policy {
        let bad = check_sources(pol, &entries)?;
        for b in &bad {
            eprintln!(
                "{}: {b}",
                crate::logging::paint("denied", crate::logging::Color::Red)
            );
        }
        if !bad.is_empty() {
            eprintln!(
                "hint: add the source with its pinned commit to models.sources, or download the pinned revision"
            );
            return Ok(ExitCode::from(EXIT_FINDINGS));
        }
    }
    let n = entries.len();
    let lockf = Lockfile::new(entries);
    let out = a
        .output
        .unwrap_or_else(|| PathBuf::from(lockfile::DEFAULT_LOCKFILE));
    std::fs::write(&out, lockf.to_json())
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("locked {n} files in {}", out.display());
    Ok(ExitCode::from(EXIT_OK))
}

fn verify(a: ModelsVerifyArgs) -> anyhow::Result<ExitCode> {
    if a.lockfile.is_none() && a.signature.is_none() {
        eprintln!("error: give --lockfile, or --signature with --public-key (or both)");
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    let mut failed = false;
    if let Some(l) = &a.lockfile {
        let lockf = Lockfile::load(l)?;
        let (entries, mut drift, problems) = hash_all(&a.path, a.jobs)?;
        drift.extend(lockf.compare(&entries));
        for d in &drift {
            println!("{d}");
        }
        for p in &problems {
            println!("{p}");
        }
        if drift.is_empty() && problems.is_empty() {
            eprintln!(
                "{}: {} files match {}",
                crate::logging::paint("ok", crate::logging::Color::Green),
                entries.len(),
                l.display()
            );
        } else {
            failed = true;
        }
    }
    if let Some(sig) = &a.signature {
        let Some(k) = &a.public_key else {
            eprintln!("error: --signature needs --public-key (key-based model-signing)");
            return Ok(ExitCode::from(EXIT_ERROR));
        };
        let key = VerifyingKey::from_pem(
            &std::fs::read_to_string(k).with_context(|| format!("cannot read {}", k.display()))?,
        )?;
        let bundle = std::fs::read_to_string(sig)
            .with_context(|| format!("cannot read {}", sig.display()))?;
        match signing::verify(&bundle, &key) {
            Err(e) => {
                println!("{}: {e}", sig.display());
                failed = true;
            }
            Ok(m) => {
                let mut ignore: Vec<String> = m.ignore_paths.clone();
                ignore.extend(signing::DEFAULT_IGNORE.iter().map(|s| (*s).to_owned()));
                if let Some(rel) = sig.strip_prefix(&a.path).ok().and_then(Path::to_str) {
                    ignore.push(rel.to_owned());
                }
                let now = signing::hash_dir(&a.path, &ignore, jobs(a.jobs))?;
                let mut problems = Vec::new();
                for (name, d) in &m.files {
                    match now.get(name) {
                        None => problems.push(format!("{name}: signed but missing")),
                        Some(x) if x != d => {
                            problems.push(format!("{name}: digest {x} differs from the signed {d}"))
                        }
                        Some(_) => {}
                    }
                }
                for name in now.keys() {
                    if !m.files.contains_key(name) {
                        problems.push(format!("{name}: present but not signed"));
                    }
                }
                for p in &problems {
                    println!("{p}");
                }
                if problems.is_empty() {
                    eprintln!(
                        "{}: signature by {} verifies {} files of model {:?}",
                        crate::logging::paint("ok", crate::logging::Color::Green),
                        k.display(),
                        m.files.len(),
                        m.model_name
                    );
                } else {
                    failed = true;
                }
            }
        }
    }
    Ok(ExitCode::from(if failed { EXIT_FINDINGS } else { EXIT_OK }))
}

fn sign(a: ModelsSignArgs) -> anyhow::Result<ExitCode> {
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&a.private_key)
            .with_context(|| format!("cannot read {}", a.private_key.display()))?,
    );
    let key = SigningKey::from_pem(&pem)?;
    let sig_path = a.signature.unwrap_or_else(|| a.path.join("model.sig"));
    let mut ignore: Vec<String> = signing::DEFAULT_IGNORE
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if let Some(rel) = sig_path.strip_prefix(&a.path).ok().and_then(Path::to_str) {
        ignore.push(rel.to_owned());
    }
    let files = signing::hash_dir(&a.path, &ignore, jobs(a.jobs))?;
    let name = std::fs::canonicalize(&a.path)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let bundle = signing::sign(&key, &signing::statement(&name, &files, &ignore))?;
    std::fs::write(&sig_path, bundle)
        .with_context(|| format!("cannot write {}", sig_path.display()))?;
    eprintln!(
        "signed {} files of {name:?} into {}",
        files.len(),
        sig_path.display()
    );
    Ok(ExitCode::from(EXIT_OK))
}
