//! `sigil tunnel`: wraps any TCP service in mutual TLS and lets a connection through only when the
//! peer's SPIFFE ID is allowed by the policy's flows.
//!
//! Owns: the rustls configuration (TLS 1.3 only, AES-GCM first, X25519MLKEM768 offered), the
//! handshake driver, identity authorization with refusal logging, the data path (user-space TLS
//! 1.3 record layer or kernel TLS), credentials with hot reload, and Prometheus metrics.
//! Must not: parse the policy file (that is `sigil-policy`), verify certificate paths itself (that
//! is `sigil-identity`), or ever fall back to plaintext.
//!
//! Shape of a connection:
//! 1. the handshake runs in rustls' unbuffered API, reading whole records only, so that nothing
//!    after the peer's `Finished` is consumed; the peer chain is verified and (inbound) the peer
//!    is authorized inside the rustls verifier, so a refused peer gets a TLS alert;
//! 2. the connection is turned into a rustls [`rustls::kernel::KernelConnection`]: rustls keeps
//!    the key schedule (KeyUpdate), and the traffic keys go either to the kernel (kTLS, relayed
//!    with `splice`) or to [`record`], a TLS 1.3 record layer over aws-lc-rs that encrypts in
//!    place in large buffers, with one task per direction;
//! 3. the connection lives while its peers keep it open and the policy and trust bundle keep
//!    authorizing it ([`live`]): the peer SVID rotating or expiring does not end it; a policy
//!    reload or bundle change re-decides every live connection and closes the refused ones.

pub mod authz;
pub mod creds;
mod handshake;
pub mod ktls;
pub mod live;
pub mod metrics;
pub mod record;
mod relay;
pub mod reload;
pub mod run;
mod server;
pub mod tls;
mod verify;
pub mod workload_api;

pub use authz::{Mode, Reason, Refusal};
pub use creds::{CredError, CredentialStore, Credentials, FileSource};
pub use live::LiveConnections;
pub use metrics::Metrics;
pub use reload::{PolicyStore, Reloaded};
pub use run::{CredentialSource, Side, TunnelOptions, run_blocking};
pub use server::{InboundSpec, Limits, OutboundSpec, TunnelError, run_inbound, run_outbound};
pub use tls::KeyExchange;
pub use workload_api::WorkloadApiSource;
