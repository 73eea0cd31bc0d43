//! sigil-kube (work in progress)
