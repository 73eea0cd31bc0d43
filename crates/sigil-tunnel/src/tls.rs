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
//! - TLS 1.3 resumption between tunnel ends (stateless tickets, `psk_dhe_ke` only, so every
//!   connection still runs a fresh key exchange and keeps forward secrecy; no 0-RTT): it saves
//!   the two signatures and two chain verifications of a full handshake. A resumed session's
//!   peer certificates come from the ticket, so the tunnel authorizes them again after the
//!   handshake against the bundle and policy in force ([`crate::server`]); the client's ticket
//!   cache is emptied when its own SVID rotates, so a resumption never presents a retired SVID.
//! - Secret extraction enabled: needed to hand the traffic keys to the record layer or the
//!   kernel after the handshake.

use std::sync::Arc;

use std::sync::Mutex;

use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12Resumption};
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};
use rustls::pki_types::ServerName;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, NamedGroup, ServerConfig};

use crate::creds::{CredentialStore, StoreResolver};

/// Key exchange groups offered and accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyExchange {
    /// X25519MLKEM768 first, then X25519 and P-256 (the default).
    #[default]
    PostQuantum,
    /// X25519 and P-256 only (for peers or measurements without ML-KEM).
    Classical,
}

/// The crypto provider: aws-lc-rs with the tunnel's suites and the default groups.
pub fn provider() -> CryptoProvider {
    provider_with(KeyExchange::default())
}

/// The crypto provider with the given key exchange groups.
pub fn provider_with(kx: KeyExchange) -> CryptoProvider {
    let mut kx_groups = vec![kx_group::X25519, kx_group::SECP256R1];
    if kx == KeyExchange::PostQuantum {
        kx_groups.insert(0, kx_group::X25519MLKEM768);
    }
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups,
        ..aws_lc_rs::default_provider()
    }
}

/// Server side (inbound): requires a client SVID through `verifier`.
pub fn server_config(
    store: &Arc<CredentialStore>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    kx: KeyExchange,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut c = ServerConfig::builder_with_provider(Arc::new(provider_with(kx)))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(StoreResolver(Arc::clone(store))));
    c.ignore_client_order = true;
    // Two tickets per full handshake, one per resumption: a client opening connections in
    // parallel finds one ready.
    c.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
    c.ticketer = aws_lc_rs::Ticketer::new()?;
    c.session_storage = Arc::new(NoServerSessionStorage {});
    c.enable_secret_extraction = true;
    c.max_early_data_size = 0;
    Ok(Arc::new(c))
}

/// Client side (outbound): presents the SVID and checks the server through `verifier`.
pub fn client_config(
    store: &Arc<CredentialStore>,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    kx: KeyExchange,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut c = ClientConfig::builder_with_provider(Arc::new(provider_with(kx)))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(StoreResolver(Arc::clone(store))));
    c.resumption = Resumption::store(Arc::new(SessionCache::new(Arc::clone(store))))
        .tls12_resumption(Tls12Resumption::Disabled);
    c.enable_secret_extraction = true;
    c.enable_early_data = false;
    Ok(Arc::new(c))
}

/// Tickets the server sends after each handshake.
const TICKETS_PER_HANDSHAKE: usize = 2;
/// Remote tunnel ends whose tickets the client keeps.
const CACHED_SERVERS: usize = 256;

/// The client's ticket cache, emptied whenever the credential store's generation changes (our
/// own SVID rotated): a ticket binds the client certificate of the handshake that earned it.
#[derive(Debug)]
struct SessionCache {
    store: Arc<CredentialStore>,
    inner: Mutex<(u64, Arc<ClientSessionMemoryCache>)>,
}

impl SessionCache {
    fn new(store: Arc<CredentialStore>) -> Self {
        let generation = store.generation();
        Self {
            store,
            inner: Mutex::new((generation, Self::fresh())),
        }
    }

    fn fresh() -> Arc<ClientSessionMemoryCache> {
        Arc::new(ClientSessionMemoryCache::new(CACHED_SERVERS))
    }

    fn cache(&self) -> Arc<ClientSessionMemoryCache> {
        let generation = self.store.generation();
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.0 != generation {
            *g = (generation, Self::fresh());
        }
        Arc::clone(&g.1)
    }
}

impl ClientSessionStore for SessionCache {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.cache().set_kx_hint(server_name, group);
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache().kx_hint(server_name)
    }
    fn set_tls12_session(
        &self,
        _server_name: ServerName<'static>,
        _value: rustls::client::Tls12ClientSessionValue,
    ) {
    }
    fn tls12_session(
        &self,
        _server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }
    fn remove_tls12_session(&self, _server_name: &ServerName<'static>) {}
    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.cache().insert_tls13_ticket(server_name, value);
    }
    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.cache().take_tls13_ticket(server_name)
    }
}
