//! Format detection from the bytes and dispatch to the format scanners, recursively through
//! archives and compression, with depth and size limits.
//!
//! Owns: [`ScanConfig`], [`detect`], [`scan_file`]. Must not: trust file names or extensions to
//! decide a format (names only pick among archive layouts already recognised from bytes).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use crate::formats;
use crate::pickle::{self, GlobalPolicy, WalkOptions};
use crate::report::{Category, FileReport, Finding, Format, Verdict};
use crate::source::{self, Slice};

/// Limits and policy for a scan.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    pub globals: GlobalPolicy,
    /// Archives nested deeper than this are reported, not opened.
    pub max_depth: u32,
    /// Most bytes one compressed stream or member may expand to.
    pub max_decompressed: u64,
    /// Most entries in one archive.
    pub max_entries: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            globals: GlobalPolicy::default(),
            max_depth: 8,
            max_decompressed: 64 * 1024 * 1024 * 1024,
            max_entries: 200_000,
        }
    }
}

/// Scanning state for one file on disk.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub cfg: &'a ScanConfig,
    pub findings: Vec<Finding>,
    pub depth: u32,
    /// Windows already opened (backing, start, length) and the shallowest depth they were opened
    /// at: archives whose members overlap, or contain themselves, would otherwise be re-scanned
    /// at every level (3 members re-opening the same bytes 9 levels deep is 3^9 scans and as many
    /// findings from a 4 KB file).
    seen: HashMap<(u64, u64, u64), u32>,
    /// Findings kept so far, per verdict (index: `Verdict as usize`).
    kept: [usize; 4],
    /// Findings seen but not kept once their verdict had `MAX_FINDINGS_PER_VERDICT`.
    dropped: usize,
}

/// Findings kept per file and verdict; further ones are only counted. The cap is per verdict so
/// that padding a file with thousands of lesser findings cannot push a dangerous one out. The
/// report lists the most severe [`crate::report::MAX_LISTED_FINDINGS`].
const MAX_FINDINGS_PER_VERDICT: usize = 2_500;

impl<'a> Ctx<'a> {
    pub(crate) fn new(cfg: &'a ScanConfig) -> Self {
        Self {
            cfg,
            findings: Vec::new(),
            depth: 0,
            seen: HashMap::new(),
            kept: [0; 4],
            dropped: 0,
        }
    }

    fn report(self, path: PathBuf, format: Format, size: u64) -> FileReport {
        FileReport::with_unlisted(path, format, size, self.findings, self.dropped)
    }
    pub fn add(
        &mut self,
        verdict: Verdict,
        category: Category,
        inner: &str,
        offset: u64,
        subject: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.keep(Finding {
            verdict,
            category,
            inner: inner.to_owned(),
            offset,
            subject: subject.into(),
            reason: reason.into(),
        });
    }

    /// Keeps a finding, or only counts it once its verdict has `MAX_FINDINGS_PER_VERDICT`.
    /// Every finding goes through here.
    pub fn keep(&mut self, f: Finding) {
        let Some(kept) = self.kept.get_mut(f.verdict as usize) else {
            return;
        };
        if *kept >= MAX_FINDINGS_PER_VERDICT {
            self.dropped += 1;
            return;
        }
        *kept += 1;
        self.findings.push(f);
    }

    /// Keeps findings made elsewhere (a pickle walk), moved by `offset` into this source.
    pub fn keep_all(&mut self, findings: impl IntoIterator<Item = Finding>, offset: u64) {
        for mut f in findings {
            f.offset = f.offset.saturating_add(offset);
            self.keep(f);
        }
    }

    pub fn malformed(
        &mut self,
        inner: &str,
        offset: u64,
        subject: &str,
        reason: impl Into<String>,
    ) {
        self.add(
            Verdict::Malformed,
            Category::Structure,
            inner,
            offset,
            subject,
            reason,
        );
    }
}

/// Joins an archive member name onto the inner path of its container.
pub(crate) fn join(inner: &str, name: &str) -> String {
    if inner.is_empty() {
        name.to_owned()
    } else {
        format!("{inner}!{name}")
    }
}

/// Magic of the legacy (pre-1.6) PyTorch format: the first pickle is this LONG1.
const TORCH_LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// Detects the format from the first bytes (at least 512 when the file has them) and the length.
pub fn detect(head: &[u8], len: u64) -> Format {
    let starts = |m: &[u8]| head.starts_with(m);
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        return Format::Zip;
    }
    if starts(b"GGUF") {
        return Format::Gguf;
    }
    if starts(b"\x93NUMPY") {
        return Format::Npy;
    }
    if starts(b"\x89HDF\r\n\x1a\n") {
        return Format::KerasH5;
    }
    if starts(b"7z\xbc\xaf\x27\x1c") {
        return Format::SevenZip;
    }
    if starts(b"\x1f\x8b") {
        return Format::Gzip;
    }
    if starts(b"BZh") && head.get(3).is_some_and(|c| (b'1'..=b'9').contains(c)) {
        return Format::Bzip2;
    }
    if starts(b"\xfd7zXZ\x00") {
        return Format::Xz;
    }
    if head.get(257..262) == Some(b"ustar") {
        return Format::Tar;
    }
    if starts(TORCH_LEGACY_MAGIC) {
        return Format::PytorchLegacy;
    }
    if let (Some(&0x80), Some(&p)) = (head.first(), head.get(1))
        && p <= 5
    {
        return Format::Pickle;
    }
    // joblib's own zlib container ("ZF" + hex length) and raw zlib streams.
    if starts(b"ZF0x") {
        return Format::Zlib;
    }
    // Only the 32 KiB window (0x78) that zlib and joblib write: smaller windows collide with
    // protocol-0 pickles (`(S` is a valid zlib header).
    if let (Some(&0x78), Some(&b)) = (head.first(), head.get(1))
        && b & 0x20 == 0
        && (0x7800u16 | u16::from(b)).is_multiple_of(31)
    {
        return Format::Zlib;
    }
    // legacy .lzma ("LZMA alone"): properties byte 0x5d, then dictionary size.
    if starts(b"\x5d\x00\x00") && len > 13 {
        return Format::Lzma;
    }
    if let Some(n) = head.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok())
        && head.get(8) == Some(&b'{')
        && u64::from_le_bytes(n) >= 2
    {
        return Format::Safetensors;
    }
    if formats::proto::looks_like_onnx(head) {
        return Format::Onnx;
    }
    if formats::proto::looks_like_saved_model(head) {
        return Format::SavedModel;
    }
    if looks_like_protocol0_pickle(head) {
        return Format::Pickle;
    }
    Format::Unknown
}

/// Protocol 0/1 pickles have no header: accept a stream whose first bytes walk as pickle opcodes
/// and that imports a global or ends with STOP.
fn looks_like_protocol0_pickle(head: &[u8]) -> bool {
    let Some(&first) = head.first() else {
        return false;
    };
    if !b"(cdl]}).NIJKLMSTUVXFGi".contains(&first) {
        return false;
    }
    let policy = GlobalPolicy::default();
    let r = pickle::walk(
        head,
        &WalkOptions {
            policy: &policy,
            inner: "",
            max_pickles: Some(1),
            joblib: false,
        },
    );
    r.pickles == 1 || (!r.globals.is_empty() && r.findings.iter().all(|f| f.subject != "opcode"))
}

/// Scans one file on disk.
pub fn scan_file(path: &Path, cfg: &ScanConfig) -> FileReport {
    let mut ctx = Ctx::new(cfg);
    let (format, size) = match Slice::open(path) {
        Ok(s) => {
            let size = s.len();
            (scan_slice(&mut ctx, "", &s), size)
        }
        Err(e) => {
            ctx.malformed("", 0, "open", format!("cannot read file: {e}"));
            (Format::Unknown, 0)
        }
    };
    ctx.report(path.to_owned(), format, size)
}

/// Scans bytes in memory (tests, fuzzing).
pub fn scan_bytes(name: &Path, bytes: Vec<u8>, cfg: &ScanConfig) -> FileReport {
    let mut ctx = Ctx::new(cfg);
    let s = Slice::mem(bytes);
    let format = scan_slice(&mut ctx, "", &s);
    ctx.report(name.to_owned(), format, s.len())
}

/// Detects and scans one byte source; returns the detected format.
pub(crate) fn scan_slice(ctx: &mut Ctx<'_>, inner: &str, s: &Slice) -> Format {
    let head = match s.head(1024) {
        Ok(h) => h,
        Err(e) => {
            ctx.malformed(inner, 0, "read", format!("read error: {e}"));
            return Format::Unknown;
        }
    };
    let mut format = detect(&head, s.len());
    if format == Format::Unknown && has_zip_end_record(s) {
        // Python's zipfile finds archives by their end record, so data before it does not hide
        // them (shell-script or image polyglots).
        format = Format::Zip;
    }
    if ctx.depth > ctx.cfg.max_depth {
        ctx.malformed(
            inner,
            0,
            format.as_str(),
            format!(
                "nested deeper than {} levels; not opened",
                ctx.cfg.max_depth
            ),
        );
        return format;
    }
    // The same bytes opened already at this depth or a shallower one (another member or level
    // reaching them) gave their findings then. Reached at a shallower depth than before, they
    // are opened again, since more of what they nest is then within the depth limit; so each
    // window is opened at most `max_depth + 1` times. (Containers report overlapping members
    // themselves.)
    match ctx.seen.entry(s.identity()) {
        Entry::Occupied(e) if *e.get() <= ctx.depth => return format,
        Entry::Occupied(mut e) => {
            e.insert(ctx.depth);
        }
        Entry::Vacant(e) => {
            e.insert(ctx.depth);
        }
    }
    ctx.depth += 1;
    let out = match format {
        Format::Pickle | Format::PytorchLegacy => scan_pickle(ctx, inner, s, format),
        Format::Zip => formats::zip::scan(ctx, inner, s),
        Format::Tar => formats::tar::scan(ctx, inner, s),
        Format::Npy => {
            formats::npy::scan(ctx, inner, s);
            Format::Npy
        }
        Format::Safetensors => {
            formats::safetensors::scan(ctx, inner, s);
            Format::Safetensors
        }
        Format::Gguf => {
            formats::gguf::scan(ctx, inner, s);
            Format::Gguf
        }
        Format::Onnx => {
            formats::onnx::scan(ctx, inner, s);
            Format::Onnx
        }
        Format::SavedModel => {
            formats::savedmodel::scan(ctx, inner, s);
            Format::SavedModel
        }
        Format::KerasH5 => {
            formats::keras::scan_h5(ctx, inner, s);
            Format::KerasH5
        }
        Format::Gzip | Format::Zlib | Format::Bzip2 | Format::Xz | Format::Lzma => {
            formats::compress::scan(ctx, inner, s, format)
        }
        Format::SevenZip => formats::sevenz::scan(ctx, inner, s),
        other => other,
    };
    ctx.depth -= 1;
    out
}

fn has_zip_end_record(s: &Slice) -> bool {
    let n = s.len().min(65_557);
    let Ok(Some(tail)) = s.bytes_at(s.len() - n, usize::try_from(n).unwrap_or(0)) else {
        return false;
    };
    tail.windows(4).any(|w| w == b"PK\x05\x06")
}

fn scan_pickle(ctx: &mut Ctx<'_>, inner: &str, s: &Slice, format: Format) -> Format {
    let legacy = format == Format::PytorchLegacy;
    let r = pickle::walk(
        s.clone(),
        &WalkOptions {
            policy: &ctx.cfg.globals,
            inner,
            // magic, protocol version, sys info, the object, storage keys; raw storages follow.
            max_pickles: legacy.then_some(5),
            joblib: true,
        },
    );
    ctx.keep_all(r.findings, 0);
    if legacy {
        return Format::PytorchLegacy;
    }
    if r.globals.iter().any(|g| g.starts_with("joblib.")) {
        Format::Joblib
    } else {
        Format::Pickle
    }
}

/// Decompresses a stream (bounded); reports a break but returns what was produced before it.
pub(crate) fn spill_or_report(
    ctx: &mut Ctx<'_>,
    inner: &str,
    r: impl std::io::Read,
    what: &str,
) -> Option<Slice> {
    let (s, err) = source::spill(r, ctx.cfg.max_decompressed);
    if let Some(e) = err {
        ctx.malformed(
            inner,
            0,
            what,
            format!("{what}: {e}; the part before the break is still scanned"),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_from_bytes() {
        assert_eq!(detect(b"(dp0\nS'a'\np1\nI1\ns.", 20), Format::Pickle);
        assert_eq!(detect(b"(S'a'\np1\nI1\ntp2\n.", 20), Format::Pickle);
        assert_eq!(detect(b"cos\nsystem\n(S'ls'\ntR.", 20), Format::Pickle);
        assert_eq!(detect(b"\x78\x9c\x03\x00", 4), Format::Zlib);
        assert_eq!(detect(b"\x80\x04\x95", 3), Format::Pickle);
        assert_eq!(detect(b"PK\x03\x04", 4), Format::Zip);
        assert_eq!(detect(b"GGUF\x03\x00", 6), Format::Gguf);
        assert_eq!(detect(b"hello world, a text file", 24), Format::Unknown);
        assert_eq!(detect(b"{\"a\": 1}", 8), Format::Unknown);
    }
}
