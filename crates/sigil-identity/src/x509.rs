//! X.509-SVIDs and X.509 bundles, verified per the SPIFFE X509-SVID standard.
//!
//! Path validation is rustls-webpki's; this module adds the SPIFFE checks on top (exactly one URI
//! SAN that is a SPIFFE ID in the bundle's trust domain, leaf not a CA, key usage present and
//! critical with digitalSignature and without keyCertSign/cRLSign). A [`VerifiedX509Svid`] can
//! only be made by [`verify_x509_svid`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::id::{SpiffeId, TrustDomain};

/// Largest certificate we parse.
pub const MAX_CERT_BYTES: usize = 64 * 1024;
/// Longest chain we accept (leaf + intermediates).
pub const MAX_CHAIN_LEN: usize = 8;

/// Why an X.509-SVID was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    #[error("no certificate presented")]
    EmptyChain,
    #[error("certificate chain has {0} certificates, more than {MAX_CHAIN_LEN}")]
    ChainTooLong(usize),
    #[error("certificate is {0} bytes, more than {MAX_CERT_BYTES}")]
    CertTooLarge(usize),
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error(
        "leaf has no URI SAN; hint: an X.509-SVID carries its SPIFFE ID as exactly one URI SAN"
    )]
    NoUriSan,
    #[error("leaf has {0} URI SANs; an X.509-SVID must have exactly one")]
    MultipleUriSans(usize),
    #[error("URI SAN {uri:?} is not a SPIFFE ID: {reason}")]
    BadSpiffeId { uri: String, reason: String },
    #[error(
        "leaf is a CA certificate (basicConstraints cA=true); an X.509-SVID leaf must have cA=false"
    )]
    LeafIsCa,
    #[error(
        "leaf has no key usage extension; an X.509-SVID leaf must have critical keyUsage digitalSignature"
    )]
    MissingKeyUsage,
    #[error("leaf key usage extension is not critical")]
    KeyUsageNotCritical,
    #[error("leaf key usage lacks digitalSignature")]
    NoDigitalSignature,
    #[error("leaf key usage has keyCertSign or cRLSign, which a leaf SVID must not have")]
    LeafCanSign,
    #[error("SPIFFE ID {id} is in trust domain {found}, not {expected}")]
    ForeignTrustDomain {
        id: String,
        found: String,
        expected: String,
    },
    #[error("no trust bundle for trust domain {0}")]
    NoBundle(String),
    #[error("certificate expired at {0:?}")]
    Expired(SystemTime),
    #[error("certificate is not valid before {0:?}")]
    NotYetValid(SystemTime),
    #[error("certificate is not signed by a CA in the trust bundle (unknown issuer)")]
    UnknownIssuer,
    #[error("bad signature in the certificate chain")]
    BadSignature,
    #[error("certificate path validation failed: {0}")]
    Path(String),
}

/// The X.509 trust anchors of one trust domain.
#[derive(Clone, PartialEq, Eq)]
pub struct X509Bundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
}

/// Why a bundle could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("bundle PEM has no certificates; hint: expected -----BEGIN CERTIFICATE----- blocks")]
    Empty,
    #[error("bundle PEM is malformed: {0}")]
    Pem(String),
    #[error("bundle certificate {index} is malformed: {reason}")]
    BadCert { index: usize, reason: String },
    #[error("bundle JSON is malformed: {0}")]
    Json(String),
}

impl X509Bundle {
    pub fn new(
        trust_domain: TrustDomain,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, BundleError> {
        if roots.is_empty() {
            return Err(BundleError::Empty);
        }
        for (index, r) in roots.iter().enumerate() {
            webpki::anchor_from_trusted_cert(r).map_err(|e| BundleError::BadCert {
                index,
                reason: format!("{e:?}"),
            })?;
        }
        Ok(Self {
            trust_domain,
            roots,
        })
    }

    /// Reads trust anchors from PEM.
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, BundleError> {
        let roots = certs_from_pem(pem)?;
        Self::new(trust_domain, roots)
    }

    pub fn to_pem(&self) -> String {
        certs_to_pem(&self.roots)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }
}

impl fmt::Debug for X509Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "X509Bundle({}, {} roots)",
            self.trust_domain,
            self.roots.len()
        )
    }
}

/// Parses every CERTIFICATE block of a PEM document.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, BundleError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| BundleError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(BundleError::Empty);
    }
    Ok(certs)
}

/// PEM-encodes certificates.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for c in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(c.as_ref());
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// How the SVID is being used, which decides the extended key usage required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvidUsage {
    /// A TLS client (mTLS peer calling us).
    Client,
    /// A TLS server.
    Server,
}

/// An X.509-SVID whose chain and SPIFFE properties were verified.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedX509Svid {
    spiffe_id: SpiffeId,
    not_after: SystemTime,
}

impl VerifiedX509Svid {
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

impl fmt::Debug for VerifiedX509Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifiedX509Svid({})", self.spiffe_id)
    }
}

/// What the leaf says, after the SPIFFE leaf checks (no path validation yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    pub spiffe_id: SpiffeId,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Applies the SPIFFE X509-SVID leaf rules to one certificate.
pub fn inspect_leaf(der: &[u8]) -> Result<LeafInfo, SvidError> {
    if der.len() > MAX_CERT_BYTES {
        return Err(SvidError::CertTooLarge(der.len()));
    }
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| SvidError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SvidError::Malformed(
            "trailing data after certificate".to_owned(),
        ));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::Malformed(format!("subjectAltName: {e}")))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    let uri = match uris.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [one] => *one,
        many => return Err(SvidError::MultipleUriSans(many.len())),
    };
    let spiffe_id: SpiffeId =
        uri.parse()
            .map_err(|e: crate::id::IdError| SvidError::BadSpiffeId {
                uri: uri.to_owned(),
                reason: e.to_string(),
            })?;
    let bc = cert
        .basic_constraints()
        .map_err(|e| SvidError::Malformed(format!("basicConstraints: {e}")))?;
    if bc.is_some_and(|b| b.value.ca) {
        return Err(SvidError::LeafIsCa);
    }
    let ku = cert
        .key_usage()
        .map_err(|e| SvidError::Malformed(format!("keyUsage: {e}")))?
        .ok_or(SvidError::MissingKeyUsage)?;
    if !ku.critical {
        return Err(SvidError::KeyUsageNotCritical);
    }
    if !ku.value.digital_signature() {
        return Err(SvidError::NoDigitalSignature);
    }
    if ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(SvidError::LeafCanSign);
    }
    let to_time = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    Ok(LeafInfo {
        spiffe_id,
        not_before: to_time(cert.validity().not_before.timestamp()),
        not_after: to_time(cert.validity().not_after.timestamp()),
    })
}

/// Verifies an X.509-SVID chain (leaf first) against the bundle of its trust domain.
pub fn verify_x509_svid(
    chain: &[CertificateDer<'_>],
    bundle: &X509Bundle,
    usage: SvidUsage,
    now: UnixTime,
) -> Result<VerifiedX509Svid, SvidError> {
    let (leaf, intermediates) = chain.split_first().ok_or(SvidError::EmptyChain)?;
    if chain.len() > MAX_CHAIN_LEN {
        return Err(SvidError::ChainTooLong(chain.len()));
    }
    if let Some(big) = chain.iter().find(|c| c.len() > MAX_CERT_BYTES) {
        return Err(SvidError::CertTooLarge(big.len()));
    }
    let info = inspect_leaf(leaf)?;
    if !info.spiffe_id.is_member_of(bundle.trust_domain()) {
        return Err(SvidError::ForeignTrustDomain {
            id: info.spiffe_id.to_string(),
            found: info.spiffe_id.trust_domain_str().to_owned(),
            expected: bundle.trust_domain().to_string(),
        });
    }
    let anchors: Vec<_> = bundle
        .roots()
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| SvidError::Malformed(format!("{e:?}")))?;
    let eku = match usage {
        SvidUsage::Client => webpki::KeyUsage::client_auth(),
        SvidUsage::Server => webpki::KeyUsage::server_auth(),
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        now,
        eku,
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => SvidError::Expired(info.not_after),
        webpki::Error::CertNotValidYet { .. } => SvidError::NotYetValid(info.not_before),
        webpki::Error::UnknownIssuer => SvidError::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => SvidError::BadSignature,
        webpki::Error::CaUsedAsEndEntity => SvidError::LeafIsCa,
        other => SvidError::Path(format!("{other:?}")),
    })?;
    Ok(VerifiedX509Svid {
        spiffe_id: info.spiffe_id,
        not_after: info.not_after,
    })
}
