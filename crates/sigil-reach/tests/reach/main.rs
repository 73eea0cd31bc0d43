//! sigil-reach integration tests: one binary (semantics tables, property tests against the
//! reference evaluator, the AI-platform scenario and the generation round trip).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod dumps;
mod examples;
mod platform;
mod props;
mod semantics;
