//! Errors: one enum per concern. Header and segment errors come from the pure core; [`SealError`]
//! adds the file they were found in. Messages name the field or segment, the bad value and a hint.

use std::path::PathBuf;

/// A header field that is malformed or out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header field `{field}`: {value}: {hint}")]
pub struct HeaderError {
    pub field: &'static str,
    pub value: String,
    pub hint: String,
}

impl HeaderError {
    pub fn new(field: &'static str, value: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            field,
            value: value.into(),
            hint: hint.into(),
        }
    }
}

/// A segment that does not authenticate or a body whose shape is impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error(
        "segment {segment} does not authenticate: the file was modified, truncated, reordered or \
         spliced, or its header was altered"
    )]
    Authentication { segment: u64 },
    #[error("truncated at segment {segment}: {detail}")]
    Truncated { segment: u64, detail: String },
    #[error(
        "{segments} segments exceed the 2^32 the 32-bit counter allows; use a larger --segment-size"
    )]
    TooMany { segments: u64 },
    #[error("segment {segment}: {detail}")]
    Malformed { segment: u64, detail: String },
}

/// Why a data key could not be wrapped or unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "sealed under key `{sealed}`, but the key given is `{have}`; hint: use the key the header names (`sigil seal --inspect`)"
    )]
    WrongKey { sealed: String, have: String },
    #[error("sealed under version {sealed} of key `{id}`, but {have}; hint: {hint}")]
    WrongVersion {
        id: String,
        sealed: u32,
        have: String,
        hint: String,
    },
    #[error(
        "the wrapped data key does not unwrap with key `{id}` version {version}: wrong key, or the header's key, asset or path was altered"
    )]
    Unwrap { id: String, version: u32 },
    #[error("key file: {0}")]
    KeyFile(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the system random generator failed")]
    Random,
}

/// A binding in the header that differs from what the caller expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sealed for {field} {sealed:?}, expected {expected:?}; hint: {hint}")]
pub struct BindingError {
    pub field: &'static str,
    pub sealed: String,
    pub expected: String,
    pub hint: &'static str,
}

/// Everything sealing or unsealing can fail on, with the file it concerns where there is one.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{}: {source}", path.display())]
    Header {
        path: PathBuf,
        #[source]
        source: HeaderError,
    },
    #[error("{}: {source}", path.display())]
    Segment {
        path: PathBuf,
        #[source]
        source: SegmentError,
    },
    #[error("{}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("{}: {source}", path.display())]
    Binding {
        path: PathBuf,
        #[source]
        source: BindingError,
    },
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {detail}", path.display())]
    Usage { path: PathBuf, detail: String },
}

impl SealError {
    pub fn io(path: impl Into<PathBuf>, what: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            what,
            source,
        }
    }

    pub fn usage(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self::Usage {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
