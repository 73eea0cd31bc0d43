//! The Sigil node agent: a drop-in SPIFFE Workload API for Envoy, spiffe-helper and the
//! go/python/rust SPIFFE libraries.
//!
//! - [`socket`] accepts connections on a Unix socket and records `SO_PEERCRED`;
//! - [`attest`] turns that into facts from the kernel (`/proc`) and the kubelet;
//! - [`selector`] maps facts to the policy's workloads;
//! - [`cache`] pre-issues and rotates their SVIDs through an [`authority::SvidAuthority`];
//! - [`service`] serves the Workload API from the cache's snapshots;
//! - [`runner`] wires it together.
//!
//! Trust boundary: everything a caller sends is untrusted; only the kernel and the kubelet are
//! believed about who it is.

pub mod attest;
pub mod authority;
pub mod authority_fix;
pub mod cache;
pub mod client;
pub mod local;
pub mod metrics;
pub mod runner;
pub mod selector;
pub mod server;
pub mod service;
pub mod socket;

/// Code generated from `proto/workloadapi.proto`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    missing_docs,
    missing_debug_implementations
)]
pub mod proto {
    tonic::include_proto!("_");
}

pub use runner::{Agent, AgentConfig, AgentError};
