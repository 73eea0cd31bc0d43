//! Loading errors. Every variant names the file; parse errors also name the document (1-based in
//! messages) and the line, so a user can jump straight to the bad spot.

use std::path::PathBuf;

/// Why manifests could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: input is {size} bytes, more than the limit of {limit}; hint: split the input into smaller files", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{}: input is not UTF-8 (byte offset {offset}); hint: Kubernetes manifests are UTF-8 YAML or JSON", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("{}:{line}:{column}: document {}: malformed {format}: {message}", path.display(), document + 1)]
    Syntax {
        path: PathBuf,
        /// 0-based document index in the file.
        document: usize,
        line: u64,
        column: u64,
        format: &'static str,
        message: String,
    },
    #[error("{}:{line}: document {}: {message}; hint: {hint}", path.display(), document + 1)]
    NotAnObject {
        path: PathBuf,
        document: usize,
        line: u64,
        message: String,
        hint: &'static str,
    },
    #[error("{}:{line}: document {} ({kind} {name}): field {field}: {message}; hint: check the field against the Kubernetes API reference for {kind}", path.display(), document + 1)]
    Invalid {
        path: PathBuf,
        document: usize,
        line: u64,
        kind: String,
        name: String,
        field: String,
        message: String,
    },
    #[error("{}: more than {limit} objects; hint: split the input", path.display())]
    TooManyObjects { path: PathBuf, limit: usize },
}
