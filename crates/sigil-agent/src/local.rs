//! An in-process issuer over [`sigil_ca::CertificateAuthority`], for tests, benchmarks and
//! `sigil agent demo`. It can be switched off to simulate a server outage.
//!
//! Owns: nothing persistent; the CA lives in memory. Must not: be used for a production agent
//! (that talks to `sigil server` through [`crate::server::ServerAuthority`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sigil_ca::{CertificateAuthority, ValidCsr};
use sigil_identity::{SpiffeId, TrustDomain};

use crate::authority::{AuthorityError, Bundles, IssuedJwt, IssuedX509, SvidAuthority};

/// An issuer backed by an in-memory CA.
#[derive(Debug)]
pub struct LocalAuthority {
    ca: Mutex<CertificateAuthority>,
    x509_ttl: Duration,
    jwt_ttl: Duration,
    available: AtomicBool,
    x509_issued: AtomicU64,
}

impl LocalAuthority {
    /// A fresh CA for `td`.
    pub fn generate(
        td: &TrustDomain,
        x509_ttl: Duration,
        jwt_ttl: Duration,
    ) -> Result<Self, AuthorityError> {
        let ca = CertificateAuthority::generate(td, SystemTime::now())
            .map_err(|e| AuthorityError::Unavailable(format!("cannot create the CA: {e}")))?;
        Ok(Self {
            ca: Mutex::new(ca),
            x509_ttl,
            jwt_ttl,
            available: AtomicBool::new(true),
            x509_issued: AtomicU64::new(0),
        })
    }

    /// Simulates the issuer going down (`false`) or coming back (`true`).
    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::SeqCst);
    }

    /// X.509-SVIDs issued so far.
    pub fn x509_issued(&self) -> u64 {
        self.x509_issued.load(Ordering::SeqCst)
    }

    fn ca(&self) -> Result<std::sync::MutexGuard<'_, CertificateAuthority>, AuthorityError> {
        if !self.available.load(Ordering::SeqCst) {
            return Err(AuthorityError::Unavailable(
                "issuer is down (simulated outage)".to_owned(),
            ));
        }
        Ok(self
            .ca
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[tonic::async_trait]
impl SvidAuthority for LocalAuthority {
    async fn issue_x509(
        &self,
        id: &SpiffeId,
        csr_der: &[u8],
    ) -> Result<IssuedX509, AuthorityError> {
        let csr =
            ValidCsr::from_der(csr_der).map_err(|e| AuthorityError::Refused(e.to_string()))?;
        let issued = self
            .ca()?
            .issue_x509_svid(id, &csr, self.x509_ttl, SystemTime::now())
            .map_err(|e| AuthorityError::Refused(e.to_string()))?;
        self.x509_issued.fetch_add(1, Ordering::SeqCst);
        Ok(IssuedX509 {
            chain: issued.chain,
        })
    }

    async fn issue_jwt(
        &self,
        id: &SpiffeId,
        audience: &[String],
    ) -> Result<IssuedJwt, AuthorityError> {
        let t = self
            .ca()?
            .issue_jwt_svid(id, audience, self.jwt_ttl, SystemTime::now())
            .map_err(|e| AuthorityError::Refused(e.to_string()))?;
        Ok(IssuedJwt {
            token: t.token,
            expires_at: t.expires_at,
        })
    }

    async fn bundles(&self) -> Result<Bundles, AuthorityError> {
        let ca = self.ca()?;
        let x509 = ca
            .bundle()
            .map_err(|e| AuthorityError::Unavailable(e.to_string()))?;
        Ok(Bundles {
            x509,
            jwt: ca.jwt_bundle(),
        })
    }
}
