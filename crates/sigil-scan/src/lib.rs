//! sigil-scan (work in progress)
