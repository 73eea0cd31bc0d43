//! sigil-scan: the model supply chain.
//!
//! Owns: detecting model formats from bytes, judging them (our own pickle opcode walker and a
//! scanner per format), digests and lockfiles (including the Hugging Face cache layout), and
//! OpenSSF model-signing signatures. Must not: load, import or execute any model content, or
//! hold a whole model file in memory.

pub mod pickle;
pub mod report;

pub use report::{Category, FileReport, Finding, Format, Verdict};
pub mod digest;
pub mod formats;
pub mod lockfile;
pub mod scan;
pub mod signing;
pub mod source;
pub mod walk;

pub use scan::{ScanConfig, detect, scan_bytes, scan_file};
