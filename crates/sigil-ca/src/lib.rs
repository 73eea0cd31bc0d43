//! sigil-ca (work in progress)
