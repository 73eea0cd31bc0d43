//! Verdicts and findings: what a scan says about a file and why.
//!
//! Owns: the [`Verdict`] order, the [`Finding`] record (file, inner path, byte offset, subject,
//! reason) and the per-file [`FileReport`]. Must not: print anything; the binary renders reports.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How bad a finding is. Ordered: a file's verdict is its worst finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing found.
    Safe,
    /// Something we could not prove harmless: an unknown global, an unpinned file.
    Suspicious,
    /// The structure breaks the format's rules (truncated, inconsistent, lying lengths).
    Malformed,
    /// Code execution, file or network access, nested deserialization, import machinery.
    Dangerous,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::Suspicious => "suspicious",
            Self::Malformed => "malformed",
            Self::Dangerous => "dangerous",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "safe" => Ok(Self::Safe),
            "suspicious" => Ok(Self::Suspicious),
            "malformed" => Ok(Self::Malformed),
            "dangerous" => Ok(Self::Dangerous),
            _ => Err(format!(
                "unknown verdict {s:?}; use safe, suspicious, malformed or dangerous"
            )),
        }
    }
}

/// Why a global or construct is dangerous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    CodeExecution,
    FileAccess,
    NetworkAccess,
    NestedDeserialization,
    ImportMachinery,
    UnknownGlobal,
    Structure,
    Provenance,
    PolicyDeny,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CodeExecution => "code-execution",
            Self::FileAccess => "file-access",
            Self::NetworkAccess => "network-access",
            Self::NestedDeserialization => "nested-deserialization",
            Self::ImportMachinery => "import-machinery",
            Self::UnknownGlobal => "unknown-global",
            Self::Structure => "structure",
            Self::Provenance => "provenance",
            Self::PolicyDeny => "policy-deny",
        }
    }
}

/// One thing found in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub verdict: Verdict,
    pub category: Category,
    /// Path inside the file (zip member, tar member, nested archive path joined with `!`); empty
    /// for the file itself.
    pub inner: String,
    /// Byte offset of the construct in the innermost stream.
    pub offset: u64,
    /// The global (`module.name`), opcode, key or field concerned.
    pub subject: String,
    /// Why it matters.
    pub reason: String,
}

/// Formats the scanner recognises, from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Pickle,
    PytorchZip,
    PytorchLegacy,
    PytorchLegacyTar,
    Torchscript,
    Npy,
    Npz,
    Joblib,
    Keras,
    KerasH5,
    SavedModel,
    Onnx,
    Gguf,
    Safetensors,
    Zip,
    Tar,
    SevenZip,
    Gzip,
    Zlib,
    Bzip2,
    Xz,
    Lzma,
    Unknown,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pickle => "pickle",
            Self::PytorchZip => "pytorch-zip",
            Self::PytorchLegacy => "pytorch-legacy",
            Self::PytorchLegacyTar => "pytorch-legacy-tar",
            Self::Torchscript => "torchscript",
            Self::Npy => "npy",
            Self::Npz => "npz",
            Self::Joblib => "joblib",
            Self::Keras => "keras",
            Self::KerasH5 => "keras-h5",
            Self::SavedModel => "tf-savedmodel",
            Self::Onnx => "onnx",
            Self::Gguf => "gguf",
            Self::Safetensors => "safetensors",
            Self::Zip => "zip",
            Self::Tar => "tar",
            Self::SevenZip => "7z",
            Self::Gzip => "gzip",
            Self::Zlib => "zlib",
            Self::Bzip2 => "bzip2",
            Self::Xz => "xz",
            Self::Lzma => "lzma",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result for one file on disk.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub format: Format,
    pub size: u64,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    /// The file's SHA-256 when it was computed (lockfile comparison).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Other paths of the same file (device and inode), scanned once under `path`: a cache blob
    /// reached through its snapshot link, a second link.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<PathBuf>,
}

/// Most findings listed per file; the rest are counted in a last finding. The list is sorted most
/// severe first, so what is cut is the least severe.
pub const MAX_LISTED_FINDINGS: usize = 1_000;

impl FileReport {
    pub fn new(path: PathBuf, format: Format, size: u64, findings: Vec<Finding>) -> Self {
        Self::with_unlisted(path, format, size, findings, 0)
    }

    /// `unlisted` findings were seen but not kept while scanning (beyond the per-verdict cap);
    /// the verdict already reflects them, since a finding is only dropped when one of the same
    /// or a higher verdict was kept.
    pub(crate) fn with_unlisted(
        path: PathBuf,
        format: Format,
        size: u64,
        mut findings: Vec<Finding>,
        unlisted: usize,
    ) -> Self {
        findings.sort_by(|a, b| {
            b.verdict
                .cmp(&a.verdict)
                .then_with(|| a.inner.cmp(&b.inner))
                .then(a.offset.cmp(&b.offset))
                .then_with(|| a.subject.cmp(&b.subject))
                .then_with(|| a.reason.cmp(&b.reason))
        });
        // The same construct reached twice (a Keras .h5 carries its config in more than one
        // place) is one finding.
        findings.dedup();
        let verdict = findings
            .iter()
            .map(|f| f.verdict)
            .max()
            .unwrap_or(Verdict::Safe);
        let mut unlisted = unlisted;
        if findings.len() > MAX_LISTED_FINDINGS {
            unlisted += findings.len() - MAX_LISTED_FINDINGS;
            findings.truncate(MAX_LISTED_FINDINGS);
        }
        if unlisted > 0 {
            findings.push(Finding {
                verdict: Verdict::Safe,
                category: Category::Structure,
                inner: String::new(),
                offset: 0,
                subject: "findings".to_owned(),
                reason: format!(
                    "{unlisted} further findings not listed (the most severe are listed first; the verdict counts all of them)"
                ),
            });
        }
        Self {
            path,
            format,
            size,
            verdict,
            findings,
            sha256: None,
            aliases: Vec::new(),
        }
    }

    /// Adds a finding and recomputes the verdict.
    pub fn push(&mut self, f: Finding) {
        self.verdict = self.verdict.max(f.verdict);
        self.findings.push(f);
    }
}
