//! Format detection from the bytes and dispatch to the format scanners, recursively through
//! archives and compression, with depth and size limits.
//!
//! Owns: [`ScanConfig`], [`detect`], [`scan_file`]. Must not: let a file name lower a verdict.
//! Formats are detected from the bytes; a name only adds to that: archive layouts are picked by
//! member names, and a file named for a format it is not (`x.safetensors` holding JSON text, a
//! pickle or nothing readable) is reported malformed rather than `unknown`.

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
    /// A stream that declares more than `bomb_ratio` times its compressed size, and more than
    /// `bomb_min` bytes, is a decompression bomb: reported, and not inflated.
    pub bomb_ratio: u64,
    pub bomb_min: u64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            globals: GlobalPolicy::default(),
            max_depth: 8,
            max_decompressed: 64 * 1024 * 1024 * 1024,
            max_entries: 200_000,
            bomb_ratio: 100,
            bomb_min: 64 * 1024 * 1024,
        }
    }
}

impl ScanConfig {
    /// Most bytes all the decompression in one file may produce, whatever its streams declare:
    /// `bomb_ratio` times the file's size, and at least `bomb_min`.
    pub fn inflate_budget(&self, file_len: u64) -> u64 {
        file_len.saturating_mul(self.bomb_ratio).max(self.bomb_min)
    }

    /// Whether `declared` bytes from `packed` compressed ones make a decompression bomb.
    pub fn is_bomb(&self, packed: u64, declared: u64) -> bool {
        declared > self.bomb_min && declared / packed.max(1) > self.bomb_ratio
    }
}

/// Scanning state for one file on disk.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub cfg: &'a ScanConfig,
    /// The scanned file's own name (its last path component): members are named by `inner`.
    name: String,
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
    /// Bytes decompression produced so far for this file, and the most it may
    /// ([`ScanConfig::inflate_budget`] of the file's size).
    inflated: u64,
    budget: u64,
}

/// Findings kept per file and verdict; further ones are only counted. The cap is per verdict so
/// that padding a file with thousands of lesser findings cannot push a dangerous one out. The
/// report lists the most severe [`crate::report::MAX_LISTED_FINDINGS`].
const MAX_FINDINGS_PER_VERDICT: usize = 2_500;

impl<'a> Ctx<'a> {
    pub(crate) fn new(cfg: &'a ScanConfig, path: &Path) -> Self {
        Self {
            cfg,
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            findings: Vec::new(),
            depth: 0,
            seen: HashMap::new(),
            kept: [0; 4],
            dropped: 0,
            inflated: 0,
            budget: cfg.bomb_min,
        }
    }

    /// Sets the decompression budget from the size of the file being scanned.
    fn budget_for(&mut self, file_len: u64) {
        self.budget = self.cfg.inflate_budget(file_len);
    }

    /// Most bytes the next stream may inflate to: the per-stream limit or what is left of the
    /// file's budget.
    pub(crate) fn inflate_room(&self) -> u64 {
        self.cfg
            .max_decompressed
            .min(self.budget.saturating_sub(self.inflated))
    }

    /// Counts bytes a decompression produced against the file's budget.
    pub(crate) fn inflated(&mut self, n: u64) {
        self.inflated = self.inflated.saturating_add(n);
    }

    /// Judges a stream from its declared size before anything inflates it: `false` (and a
    /// finding) for a decompression bomb or a stream the file's budget cannot hold.
    pub(crate) fn admit(&mut self, inner: &str, offset: u64, packed: u64, declared: u64) -> bool {
        let why = if self.cfg.is_bomb(packed, declared) {
            format!(
                "{packed} compressed bytes declare {declared} ({}:1, above the {}:1 limit for streams over {} bytes)",
                declared / packed.max(1),
                self.cfg.bomb_ratio,
                self.cfg.bomb_min
            )
        } else if declared > self.inflate_room() {
            format!(
                "{packed} compressed bytes declare {declared}, more than the {} bytes left of this file's decompression budget ({} x its size, at least {})",
                self.inflate_room(),
                self.cfg.bomb_ratio,
                self.cfg.bomb_min
            )
        } else {
            return true;
        };
        self.malformed(
            inner,
            offset,
            "decompression bomb",
            format!(
                "{why}; not inflated past its first {BOMB_PREFIX} bytes, which alone were inspected"
            ),
        );
        false
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

    /// Drops the findings kept since `mark` (a length of `findings`) that `keep` refuses.
    fn retain_since(&mut self, mark: usize, keep: impl Fn(&Finding) -> bool) {
        let tail = self.findings.split_off(mark.min(self.findings.len()));
        for f in tail {
            if keep(&f) {
                self.findings.push(f);
            } else if let Some(k) = self.kept.get_mut(f.verdict as usize) {
                *k = k.saturating_sub(1);
            }
        }
    }

    /// The name of the file or member `inner` denotes.
    fn name_of<'s>(&'s self, inner: &'s str) -> &'s str {
        if inner.is_empty() {
            &self.name
        } else {
            let last = inner.rsplit('!').next().unwrap_or(inner);
            last.rsplit('/').next().unwrap_or(last)
        }
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
    if safetensors_header_len(head).is_some() {
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

/// The header length of a safetensors file, when `head` starts like one: an 8-byte little-endian
/// length within the reference implementation's limit, then `{`. The limit is what tells a
/// safetensors file from JSON text: the first eight bytes of JSON (`{"data":{`, a JSON-lines log)
/// read as a length are above 2^61.
fn safetensors_header_len(head: &[u8]) -> Option<u64> {
    let n = u64::from_le_bytes(head.get(..8)?.try_into().ok()?);
    (head.get(8) == Some(&b'{') && (2..=formats::safetensors::MAX_HEADER_SIZE).contains(&n))
        .then_some(n)
}

/// The format a file name promises by its extension, for the formats whose loaders are chosen by
/// the name and refuse anything else (`safetensors`, and `gguf` for llama.cpp). Not `.npy`:
/// `numpy.load` goes by the bytes (a pickle or zip named `.npy` loads as one).
fn named_format(name: &str) -> Option<Format> {
    let (_, ext) = name.rsplit_once('.')?;
    match ext.to_ascii_lowercase().as_str() {
        "safetensors" => Some(Format::Safetensors),
        "gguf" => Some(Format::Gguf),
        _ => None,
    }
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
    let mut ctx = Ctx::new(cfg, path);
    let (format, size) = match Slice::open(path) {
        Ok(s) => {
            let size = s.len();
            ctx.budget_for(size);
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
    let mut ctx = Ctx::new(cfg, name);
    let s = Slice::mem(bytes);
    ctx.budget_for(s.len());
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
    let named = named_format(ctx.name_of(inner)).filter(|n| *n != format);
    let both = format != Format::Safetensors
        && safetensors_header_len(&head).is_some()
        && (named == Some(Format::Safetensors) || is_valid_safetensors(&head, s));
    let out = if both {
        // A safetensors file (valid, or named so) whose length bytes also start like a pickle
        // (`\x80` then a protocol: a 128- or 640-byte header) or a compressed stream. Both
        // readings are scanned; the other one keeps only what could make the file dangerous or
        // suspicious (a polyglot still fails), not the structural complaints of misreading a
        // header; the safetensors reading says whether the file is a valid one.
        let mark = ctx.findings.len();
        dispatch(ctx, inner, s, format);
        ctx.retain_since(mark, |f| f.verdict != Verdict::Malformed);
        formats::safetensors::scan(ctx, inner, s);
        Format::Safetensors
    } else if let Some(claimed) = named {
        if format == Format::Unknown {
            if claimed == Format::Gguf {
                ctx.malformed(
                    inner,
                    0,
                    "magic",
                    "named .gguf but does not start with the GGUF magic; llama.cpp refuses it",
                );
            }
            // The safetensors scanner says what is wrong (a header length past the limit or
            // the file, a header that is not a JSON object).
            dispatch(ctx, inner, s, claimed)
        } else {
            let found = dispatch(ctx, inner, s, format);
            ctx.malformed(
                inner,
                0,
                "file name",
                format!(
                    "named .{claimed} but its bytes are {format}; a {claimed} loader refuses it (and a loader that goes by the bytes reads the {format})"
                ),
            );
            found
        }
    } else {
        dispatch(ctx, inner, s, format)
    };
    ctx.depth -= 1;
    out
}

/// Whether `s` is a safetensors file that passes every check (used where its first bytes also
/// start like another format).
fn is_valid_safetensors(head: &[u8], s: &Slice) -> bool {
    let Some(n) = safetensors_header_len(head) else {
        return false;
    };
    let Some(data_len) = s.len().checked_sub(8).and_then(|l| l.checked_sub(n)) else {
        return false;
    };
    match s.bytes_at(8, usize::try_from(n).unwrap_or(usize::MAX)) {
        Ok(Some(h)) => formats::safetensors::validate_header(&h, data_len).is_empty(),
        _ => false,
    }
}

/// Runs the scanner of `format` over `s`; returns the format found (a zip's layout, joblib).
fn dispatch(ctx: &mut Ctx<'_>, inner: &str, s: &Slice, format: Format) -> Format {
    match format {
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
    }
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

/// How much of a refused stream is still inflated and scanned: loaders run a pickle in stream
/// order, so a payload at its start is found, and a lying size field (a truncated gzip's last
/// bytes) cannot hide it.
pub(crate) const BOMB_PREFIX: u64 = 1 << 20;

/// The first [`BOMB_PREFIX`] bytes of a stream refused as a bomb (the cut is not reported again).
pub(crate) fn bomb_prefix(ctx: &mut Ctx<'_>, r: impl std::io::Read) -> Option<Slice> {
    let (s, _) = source::spill(r.take(BOMB_PREFIX), BOMB_PREFIX);
    ctx.inflated(s.as_ref().map_or(0, Slice::len));
    s
}

/// Decompresses a stream, bounded by what is left of the file's budget and, when the container
/// declares the size, by one byte more than that; reports a break (or a stream that inflates
/// past its declared size) but returns what was produced before it.
pub(crate) fn spill_or_report(
    ctx: &mut Ctx<'_>,
    inner: &str,
    r: impl std::io::Read,
    declared: Option<u64>,
    what: &str,
) -> Option<Slice> {
    let room = ctx.inflate_room();
    let limit = declared.map_or(room, |d| d.saturating_add(1).min(room));
    let (s, err) = source::spill(r, limit);
    let produced = s.as_ref().map_or(0, Slice::len);
    ctx.inflated(produced);
    if let Some(d) = declared.filter(|d| produced > *d) {
        ctx.malformed(
            inner,
            0,
            what,
            format!(
                "{what} inflates past the {d} bytes its header declares; inflating stopped there (the part before is still scanned)"
            ),
        );
    } else if let Some(e) = err {
        let budget = if limit == room && room < ctx.cfg.max_decompressed {
            format!(
                " (this file's decompression budget: {} x its size, at least {} bytes)",
                ctx.cfg.bomb_ratio, ctx.cfg.bomb_min
            )
        } else {
            String::new()
        };
        ctx.malformed(
            inner,
            0,
            what,
            format!("{what}: {e}{budget}; the part before the break is still scanned"),
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
