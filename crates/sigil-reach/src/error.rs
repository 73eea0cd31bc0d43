//! Errors of sigil-reach: bad objects (with the object, field, value and a hint) and bad queries.

/// Why an object, query or policy could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachError {
    #[error("bad label selector at {field}: {value:?}: {reason}")]
    BadSelector {
        field: String,
        value: String,
        reason: String,
    },
    #[error("{object}: {field}: bad value {value:?}: {reason}")]
    BadObject {
        object: String,
        field: String,
        value: String,
        reason: String,
    },
    #[error("{object}: cannot decode {kind}: {reason}")]
    Decode {
        object: String,
        kind: String,
        reason: String,
    },
    #[error(
        "no workload, namespace or data asset matches {0:?}\nhint: use a sigil.yaml workload name, a namespace, NAMESPACE/NAME or KIND/NAMESPACE/NAME (see `sigil reach --list`)"
    )]
    UnknownEndpoint(String),
    #[error(
        "{query:?} is ambiguous: it matches {candidates}\nhint: write NAMESPACE/NAME or KIND/NAMESPACE/NAME"
    )]
    Ambiguous { query: String, candidates: String },
    #[error("cannot generate policies: {0}")]
    Generate(String),
    #[error("cannot render output: {0}")]
    Render(String),
}
