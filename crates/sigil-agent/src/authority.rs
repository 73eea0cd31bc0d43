//! Where SVIDs come from: the [`SvidAuthority`] trait, implemented by the `sigil server` client
//! ([`crate::server::ServerAuthority`]) and, for tests and the demo, by an in-process CA
//! ([`crate::local::LocalAuthority`]).
//!
//! Owns: the contract between the agent's cache and an issuer. Must not: attest workloads or
//! decide who gets which ID (the agent has already done that when it asks).

use std::fmt;
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;
use sigil_identity::{JwtBundle, SpiffeId, X509Bundle};

/// Why an issuer did not answer with an SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// The issuer could not be reached or failed; retry later, keep serving cached SVIDs.
    #[error("issuer unavailable: {0}")]
    Unavailable(String),
    /// The issuer refused (the ID is not in its policy, or the agent is not trusted).
    #[error("issuer refused: {0}")]
    Refused(String),
    /// The issuer answered with something unusable.
    #[error("issuer answered with an invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// An issued X.509-SVID chain, leaf first.
#[derive(Debug, Clone)]
pub struct IssuedX509 {
    pub chain: Vec<CertificateDer<'static>>,
}

/// An issued JWT-SVID.
#[derive(Clone)]
pub struct IssuedJwt {
    pub token: String,
    pub expires_at: SystemTime,
}

impl fmt::Debug for IssuedJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are bearer credentials: never in logs.
        f.debug_struct("IssuedJwt")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The trust bundles of the agent's trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundles {
    pub x509: X509Bundle,
    pub jwt: JwtBundle,
}

/// Issues SVIDs for workloads the agent has attested.
#[tonic::async_trait]
pub trait SvidAuthority: Send + Sync + fmt::Debug {
    /// Signs an X.509-SVID for `id` over the public key in `csr_der` (PKCS#10, DER).
    async fn issue_x509(&self, id: &SpiffeId, csr_der: &[u8])
    -> Result<IssuedX509, AuthorityError>;
    /// Signs a JWT-SVID for `id` with the given audiences.
    async fn issue_jwt(
        &self,
        id: &SpiffeId,
        audience: &[String],
    ) -> Result<IssuedJwt, AuthorityError>;
    /// The current X.509 and JWT bundles.
    async fn bundles(&self) -> Result<Bundles, AuthorityError>;
}

/// `exp` of a JWT, for issuers that return only the token.
pub fn jwt_expiry(token: &str) -> Result<SystemTime, AuthorityError> {
    let (_, claims) =
        sigil_identity::jwt::decode_unverified(token).map_err(|e| AuthorityError::Invalid {
            what: "JWT-SVID",
            reason: e.to_string(),
        })?;
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| AuthorityError::Invalid {
            what: "JWT-SVID",
            reason: "no numeric `exp` claim".to_owned(),
        })?;
    Ok(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(exp))
}
