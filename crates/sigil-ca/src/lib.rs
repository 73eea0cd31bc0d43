//! Sigil's SPIFFE certificate authority and control-plane server.
//!
//! Owns: CA key generations and rotation (`authority`), CSR validation (`csr`), Kubernetes
//! token validation (`k8s`), the embedded store (`store`), the hash-chained audit log (`audit`),
//! the HTTPS API (`server`) and its client (`client`). Must not: decide who a caller is from
//! anything the caller asserts without proof.

pub mod audit;
pub mod authority;
pub mod client;
pub mod csr;
pub mod fake_cluster;
pub mod k8s;
pub mod server;
pub mod store;

pub use authority::{
    CaError, CertificateAuthority, GenState, Generation, IssuedJwt, IssuedX509, Signer,
    StoredGeneration,
};
pub use csr::{CsrError, ValidCsr};
