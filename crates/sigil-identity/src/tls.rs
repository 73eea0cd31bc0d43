//! rustls verifiers that authenticate peers by X.509-SVID.
//!
//! They wrap [`verify_x509_svid`] (webpki path validation plus the SPIFFE checks) instead of
//! copying rustls' verifier. The server-side verifier requires a client certificate; the
//! client-side verifier ignores the DNS name (SVIDs have none) and instead asks a caller-supplied
//! check whether the server's SPIFFE ID is the one expected. Bundles are read through
//! [`BundleSource`] on every handshake, so rotation needs no restart.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::id::{SpiffeId, TrustDomain};
use crate::x509::{
    SvidError, SvidUsage, VerifiedX509Svid, X509Bundle, inspect_leaf, verify_x509_svid,
};

/// Where verifiers get the current trust bundle for a trust domain.
pub trait BundleSource: Send + Sync + fmt::Debug {
    fn x509_bundle(&self, td: &TrustDomain) -> Option<Arc<X509Bundle>>;
}

/// One trust domain's bundle that can be replaced at run time (rotation).
#[derive(Debug)]
pub struct SharedBundle(RwLock<Arc<X509Bundle>>);

impl SharedBundle {
    pub fn new(b: X509Bundle) -> Arc<Self> {
        Arc::new(Self(RwLock::new(Arc::new(b))))
    }

    pub fn replace(&self, b: X509Bundle) {
        if let Ok(mut g) = self.0.write() {
            *g = Arc::new(b);
        }
    }

    pub fn current(&self) -> Option<Arc<X509Bundle>> {
        self.0.read().ok().map(|g| Arc::clone(&g))
    }
}

impl BundleSource for SharedBundle {
    fn x509_bundle(&self, td: &TrustDomain) -> Option<Arc<X509Bundle>> {
        self.current().filter(|b| b.trust_domain() == td)
    }
}

/// Verifies a peer chain with the bundle of the trust domain its leaf names.
pub fn verify_peer(
    source: &dyn BundleSource,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    usage: SvidUsage,
    now: UnixTime,
) -> Result<VerifiedX509Svid, SvidError> {
    let td = inspect_leaf(end_entity)?.spiffe_id.trust_domain();
    let bundle = source
        .x509_bundle(&td)
        .ok_or_else(|| SvidError::NoBundle(td.to_string()))?;
    let mut chain = Vec::with_capacity(1 + intermediates.len());
    chain.push(end_entity.clone());
    chain.extend(intermediates.iter().cloned());
    verify_x509_svid(&chain, &bundle, usage, now)
}

/// The verified SPIFFE ID of a finished TLS connection's peer (`conn.peer_certificates()`).
pub fn peer_spiffe_id(
    source: &dyn BundleSource,
    peer_certs: Option<&[CertificateDer<'_>]>,
    usage: SvidUsage,
) -> Result<VerifiedX509Svid, SvidError> {
    let (ee, rest) = peer_certs
        .and_then(<[_]>::split_first)
        .ok_or(SvidError::EmptyChain)?;
    verify_peer(source, ee, rest, usage, UnixTime::now())
}

fn to_rustls(e: SvidError) -> Error {
    match e {
        SvidError::Expired(_) => Error::InvalidCertificate(CertificateError::Expired),
        SvidError::NotYetValid(_) => Error::InvalidCertificate(CertificateError::NotValidYet),
        SvidError::UnknownIssuer
        | SvidError::NoBundle(_)
        | SvidError::ForeignTrustDomain { .. } => {
            Error::InvalidCertificate(CertificateError::UnknownIssuer)
        }
        SvidError::BadSignature => Error::InvalidCertificate(CertificateError::BadSignature),
        other => Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(other)))),
    }
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}

/// Server side: require and verify a client X.509-SVID.
#[derive(Debug)]
pub struct SpiffeClientCertVerifier {
    source: Arc<dyn BundleSource>,
    algs: WebPkiSupportedAlgorithms,
    mandatory: bool,
}

impl SpiffeClientCertVerifier {
    /// Every client must present a valid X.509-SVID.
    pub fn new(source: Arc<dyn BundleSource>) -> Arc<Self> {
        Arc::new(Self {
            source,
            algs: algorithms(),
            mandatory: true,
        })
    }

    /// A client may present no certificate (the application then decides); one that presents a
    /// certificate must present a valid X.509-SVID.
    pub fn optional(source: Arc<dyn BundleSource>) -> Arc<Self> {
        Arc::new(Self {
            source,
            algs: algorithms(),
            mandatory: false,
        })
    }
}

impl ClientCertVerifier for SpiffeClientCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        verify_peer(
            self.source.as_ref(),
            end_entity,
            intermediates,
            SvidUsage::Client,
            now,
        )
        .map_err(to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Decides whether a verified server identity is the expected one.
pub type ServerIdCheck = Arc<dyn Fn(&SpiffeId) -> Result<(), String> + Send + Sync>;

/// Client side: verify the server's X.509-SVID and check its SPIFFE ID.
pub struct SpiffeServerCertVerifier {
    source: Arc<dyn BundleSource>,
    check: ServerIdCheck,
    algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for SpiffeServerCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerCertVerifier")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SpiffeServerCertVerifier {
    pub fn new(source: Arc<dyn BundleSource>, check: ServerIdCheck) -> Arc<Self> {
        Arc::new(Self {
            source,
            check,
            algs: algorithms(),
        })
    }

    /// Expects exactly `id`.
    pub fn expecting(source: Arc<dyn BundleSource>, id: SpiffeId) -> Arc<Self> {
        Self::new(
            source,
            Arc::new(move |got: &SpiffeId| {
                if *got == id {
                    Ok(())
                } else {
                    Err(format!("server is {got}, expected {id}"))
                }
            }),
        )
    }
}

/// The server presented a valid SVID, but not the identity the client expected.
#[derive(Debug, thiserror::Error)]
#[error("unexpected server identity: {0}")]
pub struct UnexpectedServerId(pub String);

impl ServerCertVerifier for SpiffeServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let v = verify_peer(
            self.source.as_ref(),
            end_entity,
            intermediates,
            SvidUsage::Server,
            now,
        )
        .map_err(to_rustls)?;
        (self.check)(v.spiffe_id()).map_err(|m| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                UnexpectedServerId(m),
            ))))
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
