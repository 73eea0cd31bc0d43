//! rustls configuration for the tunnel: one provider (aws-lc-rs), TLS 1.3 only, AES-GCM first,
//! the hybrid post-quantum group X25519MLKEM768 offered first.
//!
//! Why each default:
//! - TLS 1.3 only: one handshake shape to reason about, no renegotiation, no RSA key transport,
//!   and the only version whose record layer [`crate::record`] implements.
//! - AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305: AES-GCM is hardware accelerated on
//!   the GPU nodes and is what kernel TLS offloads; the server's order wins.
//! - X25519MLKEM768 first, X25519 and P-256 as fallbacks: traffic recorded today stays safe
//!   against a future quantum computer when both sides support it.
//! - No session tickets and no resumption: every connection proves its SVID again against the
//!   current bundle, and no post-handshake ticket record reaches the kernel TLS socket.
//! - Secret extraction enabled: needed to hand the traffic keys to the record layer or the
//!   kernel after the handshake.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};

use crate::creds::{CredentialStore, StoreResolver};

/// The crypto provider: aws-lc-rs with the tunnel's suites and groups.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
        ],
        ..aws_lc_rs::default_provider()
    }
}

/// Server side (inbound): requires a client SVID through `verifier`.
pub fn server_config(
    store: &Arc<CredentialStore>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut c = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(StoreResolver(Arc::clone(store))));
    c.ignore_client_order = true;
    c.send_tls13_tickets = 0;
    c.session_storage = Arc::new(NoServerSessionStorage {});
    c.enable_secret_extraction = true;
    c.max_early_data_size = 0;
    Ok(Arc::new(c))
}

/// Client side (outbound): presents the SVID and checks the server through `verifier`.
pub fn client_config(
    store: &Arc<CredentialStore>,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut c = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(StoreResolver(Arc::clone(store))));
    c.resumption = Resumption::disabled();
    c.enable_secret_extraction = true;
    c.enable_early_data = false;
    Ok(Arc::new(c))
}
