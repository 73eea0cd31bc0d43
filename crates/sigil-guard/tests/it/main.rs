//! sigil-guard integration tests: one binary, one module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod examples;
mod pss_fixtures;
mod rego;
mod render;
mod rules_table;
mod webhook;
mod webhook_conn;
