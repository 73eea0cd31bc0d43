//! sigil-reach (work in progress)
