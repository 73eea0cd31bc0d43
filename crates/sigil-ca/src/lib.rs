//! Sigil's SPIFFE certificate authority and control-plane server.
//!
//! Owns: CA key generations and rotation (`authority`), CSR validation (`csr`). Must not: decide
//! who a caller is from anything the caller asserts without proof.

pub mod authority;
pub mod csr;

pub use authority::{CaError, CertificateAuthority, GenState, Generation, IssuedJwt, IssuedX509, StoredGeneration};
pub use csr::{CsrError, ValidCsr};
