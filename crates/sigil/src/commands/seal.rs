//! `sigil seal` / `sigil unseal`: encryption at rest of files, directories and pipes
//! (sigil-seal's envelope format), and `sigil seal --inspect` (the header, no key needed).
//!
//! The key source is chosen in one place, [`KeySourceArgs::source`]: today the offline
//! `--key-file` mode; the key service (`--server`, identity-bound and policy-checked unseal) is
//! added there as another [`DataKeySource`] without changing the commands.
//! Exit 0 on success, 1 when a sealed file fails verification (tampered, truncated, wrong
//! binding or key), 2 on usage and I/O errors.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sigil_seal::files::SUFFIX;
use sigil_seal::format::{self, Layout};
use sigil_seal::{DataKeySource, Expect, KeyError, SealError, SealOptions, WrapContext};

use super::{EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};

/// Where data keys come from. One field per mode; `source` picks the mode.
#[derive(Debug, Args)]
pub struct KeySourceArgs {
    /// Offline mode: a file of exactly 32 random bytes (mode 0600 or stricter) that wraps each
    /// file's data key. Create one with `head -c 32 /dev/urandom > k && chmod 600 k`.
    #[arg(long, env = "SIGIL_SEAL_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The version the key file is known as (recorded in the header; unsealing needs the same).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub key_version: u32,
}

impl KeySourceArgs {
    fn source(&self) -> anyhow::Result<Box<dyn DataKeySource>> {
        match &self.key_file {
            Some(p) => Ok(Box::new(sigil_seal::load_key_file(p, self.key_version)?)),
            None => bail!(
                "no key source\nhint: pass --key-file FILE (the offline mode); the key service \
                 mode (identity-bound unseal) is not available yet"
            ),
        }
    }
}

/// Header display formats of `--inspect`.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum InspectFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    /// File, directory (each file sealed separately), or `-` for stdin.
    pub path: PathBuf,
    /// Output: a file (default PATH.sigil), a new directory for a directory (default
    /// PATH.sigil), `-` for stdout (the default for stdin).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// The data asset (sigil.yaml `data[].name`) the files belong to; bound into every header.
    #[arg(long, required_unless_present = "inspect")]
    pub asset: Option<String>,
    /// Relative path bound into the header of a single file or stdin (default: the file's name;
    /// empty for stdin). Directory members are bound to their path inside the directory.
    #[arg(long, value_name = "REL")]
    pub bind_path: Option<String>,
    /// Print the header of the sealed file PATH (no key needed, nothing verified) and exit.
    #[arg(long)]
    pub inspect: bool,
    /// `--inspect` output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: InspectFormat,
    #[command(flatten)]
    pub keys: KeySourceArgs,
    /// Plaintext bytes per segment: 1KiB..64MiB (e.g. 1MiB, 4MiB, 65536).
    #[arg(long, default_value = "1MiB")]
    pub segment_size: String,
    /// Worker threads (default: one per core).
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Replace an existing output file (atomically).
    #[arg(long)]
    pub force: bool,
    /// No progress bar (it is drawn only when stderr is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// A sealed file, a sealed directory, or `-` for stdin.
    pub path: PathBuf,
    /// Output: a file (default PATH without .sigil), a new directory, or `-` for stdout (the
    /// default for stdin and for --range).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Refuse files sealed for another asset.
    #[arg(long)]
    pub asset: Option<String>,
    /// Decrypt only bytes OFFSET..OFFSET+LEN of a sealed file, reading only their segments.
    #[arg(long, value_name = "OFFSET:LEN")]
    pub range: Option<String>,
    #[command(flatten)]
    pub keys: KeySourceArgs,
    /// Worker threads (default: one per core).
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Replace an existing output file (atomically).
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// Standard input/output as files (unbuffered, so 1 MiB segments go in one call each).
fn stdin_file() -> anyhow::Result<File> {
    Ok(File::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("stdin")?,
    ))
}

fn stdout_file() -> anyhow::Result<File> {
    Ok(File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("stdout")?,
    ))
}

fn parse_size(s: &str) -> anyhow::Result<u32> {
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix("MiB") {
        (n, 1u64 << 20)
    } else if let Some(n) = t.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (t, 1)
    };
    let v = num
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (format::MIN_SEGMENT_SIZE..=format::MAX_SEGMENT_SIZE).contains(n));
    v.with_context(|| format!("--segment-size {s:?}\nhint: 1KiB..64MiB, e.g. 1MiB, 4MiB or 65536"))
}

fn progress(total: Option<u64>, what: &str, off: bool) -> ProgressBar {
    if off || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let tpl = if total.is_some() {
        "{msg} {bytes}/{total_bytes} {binary_bytes_per_sec} [{elapsed_precise}] {wide_bar} {eta}"
    } else {
        "{spinner} {msg} {bytes} {binary_bytes_per_sec} [{elapsed_precise}]"
    };
    if let Ok(style) = ProgressStyle::with_template(tpl) {
        pb.set_style(style);
    }
    pb.set_message(what.to_owned());
    pb
}

fn tree_size(files: &[(PathBuf, String)]) -> u64 {
    files
        .iter()
        .filter_map(|(p, _)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Verification failures exit 1, everything else 2.
fn finish(r: Result<(), SealError>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(()) => Ok(ExitCode::from(EXIT_OK)),
        Err(e) => {
            let verification = matches!(
                &e,
                SealError::Segment { .. }
                    | SealError::Binding { .. }
                    | SealError::Key {
                        source: KeyError::Unwrap { .. }
                            | KeyError::WrongKey { .. }
                            | KeyError::WrongVersion { .. }
                            | KeyError::Refused(_),
                        ..
                    }
            );
            eprintln!(
                "{}: {e}",
                crate::logging::paint("error", crate::logging::Color::Red)
            );
            Ok(ExitCode::from(if verification {
                EXIT_FINDINGS
            } else {
                EXIT_ERROR
            }))
        }
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / f64::from(1u32 << 30))
}

pub fn run_seal(a: SealArgs) -> anyhow::Result<ExitCode> {
    if a.inspect {
        return inspect(&a.path, a.format);
    }
    let asset = a.asset.as_deref().unwrap_or_default();
    let opts = SealOptions {
        segment_size: parse_size(&a.segment_size)?,
        jobs: a.jobs,
    };
    let keys = a.keys.source()?;
    let started = std::time::Instant::now();
    if is_dash(&a.path) {
        let ctx = WrapContext {
            asset,
            path: a.bind_path.as_deref().unwrap_or(""),
        };
        let pb = progress(None, "sealing", a.no_progress);
        let r = match a.output.as_deref().filter(|o| !is_dash(o)) {
            None => sigil_seal::seal(
                stdin_file()?,
                stdout_file()?,
                &ctx,
                keys.as_ref(),
                &opts,
                &|n| pb.inc(n),
                Path::new("<stdin>"),
                Path::new("<stdout>"),
            )
            .map(|_| ()),
            Some(out) => seal_stdin_to_file(out, &ctx, keys.as_ref(), &opts, a.force, &pb),
        };
        pb.finish_and_clear();
        return finish(r);
    }
    let meta =
        std::fs::metadata(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?;
    let default_out = || PathBuf::from(format!("{}{SUFFIX}", trim_slash(&a.path).display()));
    if meta.is_dir() {
        if a.bind_path.is_some() {
            bail!(
                "--bind-path applies to a single file or stdin; directory members are bound to their own paths"
            );
        }
        let out = a.output.clone().unwrap_or_else(default_out);
        let files = sigil_seal::files::walk(&a.path)?;
        let pb = progress(Some(tree_size(&files)), "sealing", a.no_progress);
        let r = sigil_seal::seal_dir(&a.path, &out, asset, keys.as_ref(), &opts, &|n| pb.inc(n));
        pb.finish_and_clear();
        if let Ok(s) = &r {
            eprintln!(
                "sealed {} files ({}) into {} for asset {asset} in {:.1}s",
                s.files,
                gib(s.plaintext_bytes),
                out.display(),
                started.elapsed().as_secs_f64()
            );
        }
        return finish(r.map(|_| ()));
    }
    let name = a
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ctx = WrapContext {
        asset,
        path: a.bind_path.as_deref().unwrap_or(&name),
    };
    let pb = progress(Some(meta.len()), "sealing", a.no_progress);
    let r = match &a.output {
        Some(o) if is_dash(o) => File::open(&a.path)
            .map_err(|e| SealError::io(&a.path, "open", e))
            .and_then(|f| {
                sigil_seal::seal(
                    f,
                    stdout_file().map_err(|e| SealError::usage("<stdout>", e.to_string()))?,
                    &ctx,
                    keys.as_ref(),
                    &opts,
                    &|n| pb.inc(n),
                    &a.path,
                    Path::new("<stdout>"),
                )
            }),
        _ => {
            let out = a.output.clone().unwrap_or_else(default_out);
            sigil_seal::seal_file(&a.path, &out, &ctx, keys.as_ref(), &opts, a.force, &|n| {
                pb.inc(n);
            })
        }
    };
    pb.finish_and_clear();
    finish(r.map(|_| ()))
}

fn seal_stdin_to_file(
    out: &Path,
    ctx: &WrapContext<'_>,
    keys: &dyn DataKeySource,
    opts: &SealOptions,
    force: bool,
    pb: &ProgressBar,
) -> Result<(), SealError> {
    // Through a temporary file and a rename, like a file input: /dev/stdin is the input.
    let stdin = stdin_file().map_err(|e| SealError::usage("<stdin>", e.to_string()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".sigil-seal.")
        .suffix(".tmp")
        .tempfile_in(
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .map_err(|e| SealError::io(out, "create a temporary file beside", e))?;
    if !force && out.exists() {
        return Err(SealError::usage(
            out,
            "output exists; hint: remove it, choose another -o, or pass --force",
        ));
    }
    sigil_seal::seal(
        stdin,
        tmp.as_file(),
        ctx,
        keys,
        opts,
        &|n| pb.inc(n),
        Path::new("<stdin>"),
        out,
    )?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| SealError::io(out, "sync", e))?;
    let r = if force {
        tmp.persist(out).map(|_| ())
    } else {
        tmp.persist_noclobber(out).map(|_| ())
    };
    r.map_err(|e| SealError::io(out, "rename into place", e.error))
}

fn trim_slash(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    PathBuf::from(s.trim_end_matches('/'))
}

fn parse_range(s: &str) -> anyhow::Result<(u64, u64)> {
    let parsed = s
        .split_once(':')
        .and_then(|(o, l)| Some((o.trim().parse().ok()?, l.trim().parse().ok()?)));
    parsed.with_context(|| format!("--range {s:?}\nhint: OFFSET:LEN in bytes, e.g. 1048576:4096"))
}

pub fn run_unseal(a: UnsealArgs) -> anyhow::Result<ExitCode> {
    let keys = a.keys.source()?;
    let expect = Expect {
        asset: a.asset.as_deref(),
        path: None,
    };
    if let Some(r) = &a.range {
        let (off, len) = parse_range(r)?;
        if is_dash(&a.path) {
            bail!("--range needs a sealed file (random access), not stdin");
        }
        let f = File::open(&a.path).with_context(|| format!("cannot open {}", a.path.display()))?;
        let res = (|| {
            let mut sr = sigil_seal::SealedReader::open(f, keys.as_ref(), &expect, &a.path)?;
            let mut out: Box<dyn Write> = match a.output.as_deref().filter(|o| !is_dash(o)) {
                None => Box::new(std::io::stdout().lock()),
                Some(o) => Box::new(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(!a.force)
                        .create(true)
                        .truncate(true)
                        .open(o)
                        .map_err(|e| SealError::io(o, "create", e))?,
                ),
            };
            sr.read_range(off, len, &mut out)?;
            out.flush()
                .map_err(|e| SealError::io("<output>", "write", e))
        })();
        return finish(res);
    }
    if is_dash(&a.path) {
        let pb = progress(None, "unsealing", a.no_progress);
        let r = match a.output.as_deref().filter(|o| !is_dash(o)) {
            None => sigil_seal::unseal(
                stdin_file()?,
                stdout_file()?,
                keys.as_ref(),
                &expect,
                a.jobs,
                &|n| pb.inc(n),
                Path::new("<stdin>"),
                Path::new("<stdout>"),
            )
            .map(|_| ()),
            Some(out) => sigil_seal::unseal_file(
                Path::new("/dev/stdin"),
                out,
                keys.as_ref(),
                &expect,
                a.jobs,
                a.force,
                &|n| pb.inc(n),
            )
            .map(|_| ()),
        };
        pb.finish_and_clear();
        return finish(r);
    }
    let meta =
        std::fs::metadata(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?;
    let stripped = trim_slash(&a.path)
        .to_string_lossy()
        .strip_suffix(SUFFIX)
        .map(PathBuf::from);
    let out = match (&a.output, stripped) {
        (Some(o), _) => o.clone(),
        (None, Some(s)) => s,
        (None, None) => bail!(
            "{}: no {SUFFIX} suffix to strip for the output name\nhint: pass -o OUT",
            a.path.display()
        ),
    };
    let started = std::time::Instant::now();
    if meta.is_dir() {
        let files = sigil_seal::files::walk(&a.path)?;
        let pb = progress(Some(tree_size(&files)), "unsealing", a.no_progress);
        let r = sigil_seal::unseal_dir(
            &a.path,
            &out,
            keys.as_ref(),
            a.asset.as_deref(),
            a.jobs,
            &|n| pb.inc(n),
        );
        pb.finish_and_clear();
        if let Ok(s) = &r {
            eprintln!(
                "unsealed {} files ({}) into {} in {:.1}s",
                s.files,
                gib(s.plaintext_bytes),
                out.display(),
                started.elapsed().as_secs_f64()
            );
        }
        return finish(r.map(|_| ()));
    }
    let pb = progress(Some(meta.len()), "unsealing", a.no_progress);
    let r = if is_dash(&out) {
        File::open(&a.path)
            .map_err(|e| SealError::io(&a.path, "open", e))
            .and_then(|f| {
                sigil_seal::unseal(
                    f,
                    stdout_file().map_err(|e| SealError::usage("<stdout>", e.to_string()))?,
                    keys.as_ref(),
                    &expect,
                    a.jobs,
                    &|n| pb.inc(n),
                    &a.path,
                    Path::new("<stdout>"),
                )
            })
            .map(|_| ())
    } else {
        sigil_seal::unseal_file(
            &a.path,
            &out,
            keys.as_ref(),
            &expect,
            a.jobs,
            a.force,
            &|n| pb.inc(n),
        )
        .map(|_| ())
    };
    pb.finish_and_clear();
    finish(r)
}

fn inspect(path: &Path, fmt: InspectFormat) -> anyhow::Result<ExitCode> {
    let (mut f, len) = if is_dash(path) {
        (stdin_file()?, None)
    } else {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (f, len)
    };
    let name = if is_dash(path) {
        Path::new("<stdin>")
    } else {
        path
    };
    let (h, bytes) = match sigil_seal::read_header(&mut f, name) {
        Ok(x) => x,
        Err(e) => return finish(Err(e)),
    };
    let layout =
        len.map(|l| Layout::from_body_len(h.segment_size, l.saturating_sub(bytes.len() as u64)));
    let mut out = std::io::stdout().lock();
    match fmt {
        InspectFormat::Json => {
            let mut v = serde_json::to_value(&h)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("format_version".into(), format::FORMAT_VERSION.into());
                o.insert("header_len".into(), bytes.len().into());
                match &layout {
                    Some(Ok(l)) => {
                        o.insert("segments".into(), l.segments.into());
                        o.insert("plaintext_len".into(), l.plaintext_len.into());
                    }
                    Some(Err(e)) => {
                        o.insert("layout_error".into(), e.to_string().into());
                    }
                    None => {}
                }
                o.insert("verified".into(), false.into());
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        InspectFormat::Table => {
            let rows = [
                ("format version", format::FORMAT_VERSION.to_string()),
                ("algorithm", h.algorithm.name().to_owned()),
                ("segment size", h.segment_size.to_string()),
                (
                    "nonce prefix",
                    h.nonce_prefix.iter().map(|b| format!("{b:02x}")).collect(),
                ),
                ("key id", h.key.id.clone()),
                ("key version", h.key.version.to_string()),
                ("wrapped key", format!("{} bytes", h.wrapped_key.len())),
                ("asset", h.asset.clone()),
                ("path", h.path.clone()),
                ("header length", bytes.len().to_string()),
            ];
            for (k, v) in rows {
                writeln!(out, "{k:<16}{v}")?;
            }
            match &layout {
                Some(Ok(l)) => {
                    writeln!(out, "{:<16}{}", "segments", l.segments)?;
                    writeln!(out, "{:<16}{}", "plaintext", l.plaintext_len)?;
                }
                Some(Err(e)) => writeln!(out, "{:<16}{e}", "layout")?,
                None => {}
            }
            eprintln!(
                "hint: nothing here is verified; the header is authenticated when the file is unsealed"
            );
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}
