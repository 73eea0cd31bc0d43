//! The key service's integration tests: transit operations, versions, sealing, authorization,
//! persistence and crash safety. One test binary for the crate.

// Test helpers outside #[test] functions panic on purpose: a failed fixture is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod crash;
mod http;
mod service;
mod transit;
