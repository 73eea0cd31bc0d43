//! The SPIFFE bundle format: a JWK set holding X.509 authorities (`use: x509-svid`, one `x5c`
//! certificate each) and JWT authorities (`use: jwt-svid`, with `kid`), plus `spiffe_sequence`
//! and `spiffe_refresh_hint`. This is what the https_web bundle endpoint serves.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::id::TrustDomain;
use crate::jwt::{Jwk, JwkSet, JwtBundle};
use crate::x509::{BundleError, X509Bundle};

/// Largest bundle document accepted.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// A trust domain's complete bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeBundle {
    pub x509: X509Bundle,
    pub jwt: JwtBundle,
    pub sequence: u64,
    pub refresh_hint: Duration,
}

#[derive(Serialize, Deserialize)]
struct Doc {
    keys: Vec<Jwk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spiffe_sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spiffe_refresh_hint: Option<u64>,
}

impl SpiffeBundle {
    pub fn trust_domain(&self) -> &TrustDomain {
        self.x509.trust_domain()
    }

    /// Serializes to the SPIFFE bundle JSON format.
    pub fn to_json(&self) -> Result<String, BundleError> {
        let mut keys = Vec::new();
        for root in self.x509.roots() {
            let mut jwk = jwk_for_cert(root)?;
            jwk.use_ = Some("x509-svid".to_owned());
            jwk.x5c = Some(vec![STANDARD.encode(root.as_ref())]);
            keys.push(jwk);
        }
        for k in &self.jwt.keys.keys {
            let mut k = k.clone();
            k.use_ = Some("jwt-svid".to_owned());
            keys.push(k);
        }
        let doc = Doc {
            keys,
            spiffe_sequence: Some(self.sequence),
            spiffe_refresh_hint: Some(self.refresh_hint.as_secs()),
        };
        serde_json::to_string_pretty(&doc).map_err(|e| BundleError::Json(e.to_string()))
    }

    /// Parses the SPIFFE bundle JSON format for `td`. Keys with an unknown `use` are ignored, as
    /// the standard requires.
    pub fn from_json(td: TrustDomain, bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::Json(format!(
                "bundle is {} bytes, more than {MAX_BUNDLE_BYTES}",
                bytes.len()
            )));
        }
        let doc: Doc =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
        let mut roots = Vec::new();
        let mut jwt = Vec::new();
        for (index, k) in doc.keys.into_iter().enumerate() {
            match k.use_.as_deref() {
                Some("x509-svid") => {
                    let x5c = k.x5c.as_deref().unwrap_or_default();
                    let [one] = x5c else {
                        return Err(BundleError::BadCert {
                            index,
                            reason: format!(
                                "x509-svid key must have exactly one x5c entry, has {}",
                                x5c.len()
                            ),
                        });
                    };
                    let der = STANDARD.decode(one).map_err(|e| BundleError::BadCert {
                        index,
                        reason: e.to_string(),
                    })?;
                    roots.push(CertificateDer::from(der));
                }
                Some("jwt-svid") => {
                    if k.kid.is_none() {
                        return Err(BundleError::Json(format!(
                            "jwt-svid key {index} has no kid"
                        )));
                    }
                    jwt.push(k);
                }
                _ => {}
            }
        }
        Ok(Self {
            x509: X509Bundle::new(td.clone(), roots)?,
            jwt: JwtBundle {
                trust_domain: td,
                keys: JwkSet { keys: jwt },
            },
            sequence: doc.spiffe_sequence.unwrap_or(0),
            refresh_hint: Duration::from_secs(doc.spiffe_refresh_hint.unwrap_or(300)),
        })
    }
}

/// The JWK of a certificate's public key (EC P-256/P-384).
fn jwk_for_cert(der: &CertificateDer<'_>) -> Result<Jwk, BundleError> {
    let bad = |reason: String| BundleError::BadCert { index: 0, reason };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let spki = cert.public_key();
    let point = spki.subject_public_key.data.as_ref();
    let crv = match point.len() {
        65 => "P-256",
        97 => "P-384",
        n => {
            return Err(bad(format!(
                "unsupported CA key ({n}-byte public key); Sigil CAs use ECDSA P-256"
            )));
        }
    };
    Jwk::ec_from_point("", crv, point)
        .map(|mut j| {
            j.kid = None;
            j
        })
        .ok_or_else(|| bad("not an uncompressed EC point".to_owned()))
}
