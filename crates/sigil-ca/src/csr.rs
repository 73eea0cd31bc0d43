//! Certificate signing requests from untrusted callers.
//!
//! Only the public key is used: names, extensions and attributes in the CSR are ignored, because
//! the identity comes from the attestation proof. The self-signature is verified (proof of
//! possession) and the key type is restricted.

use std::fmt;

use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

/// Largest CSR accepted.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("CSR is {0} bytes, more than {MAX_CSR_BYTES}")]
    TooLarge(usize),
    #[error("CSR is not PEM (expected -----BEGIN CERTIFICATE REQUEST-----): {0}")]
    Pem(String),
    #[error("CSR is malformed DER: {0}")]
    Der(String),
    #[error("CSR has trailing data after the request")]
    Trailing,
    #[error(
        "CSR self-signature does not verify; hint: the request must be signed by the key it carries"
    )]
    BadSignature,
    #[error("CSR key type {0} is not accepted; hint: use ECDSA P-256, P-384 or Ed25519")]
    KeyType(String),
}

/// A CSR whose signature verified and whose key type is allowed.
#[derive(Clone, PartialEq, Eq)]
pub struct ValidCsr {
    spki: Vec<u8>,
}

impl fmt::Debug for ValidCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValidCsr({} byte key)", self.spki.len())
    }
}

impl ValidCsr {
    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// Parses and verifies a PEM CSR.
    pub fn from_pem(pem: &str) -> Result<Self, CsrError> {
        if pem.len() > MAX_CSR_BYTES * 2 {
            return Err(CsrError::TooLarge(pem.len()));
        }
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CsrError::Pem(e.to_string()))?;
        Self::from_der(der.as_ref())
    }

    /// Parses and verifies a DER CSR.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        if der.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge(der.len()));
        }
        let (rest, csr) =
            X509CertificationRequest::from_der(der).map_err(|e| CsrError::Der(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Trailing);
        }
        let info = &csr.certification_request_info;
        let spki = &info.subject_pki;
        let alg = &spki.algorithm;
        let ok = if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
            curve.is_some_and(|c| c == OID_EC_P256 || c == OID_NIST_EC_P384)
        } else {
            alg.algorithm == OID_SIG_ED25519
        };
        if !ok {
            return Err(CsrError::KeyType(alg.algorithm.to_id_string()));
        }
        csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
        Ok(Self {
            spki: spki.raw.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_pem(alg: &'static rcgen::SignatureAlgorithm) -> String {
        let kp = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["ignored.example".to_owned()]).unwrap();
        params.serialize_request(&kp).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_p256_p384_ed25519() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            ValidCsr::from_pem(&csr_pem(alg)).unwrap();
        }
    }

    #[test]
    fn rejects_tampered_signature() {
        let pem = csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        let n = bytes.len();
        bytes[n - 5] ^= 0x55;
        assert!(matches!(
            ValidCsr::from_der(&bytes),
            Err(CsrError::BadSignature | CsrError::Der(_))
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(ValidCsr::from_pem("hello"), Err(CsrError::Pem(_))));
        assert!(matches!(
            ValidCsr::from_der(&[0x30, 0x03, 0x02, 0x01]),
            Err(CsrError::Der(_))
        ));
        assert!(matches!(
            ValidCsr::from_der(&vec![0u8; MAX_CSR_BYTES + 1]),
            Err(CsrError::TooLarge(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = ValidCsr::from_der(&b);
        }
    }
}
