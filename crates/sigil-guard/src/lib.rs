//! sigil-guard (work in progress)
