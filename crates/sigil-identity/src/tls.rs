//! rustls verifiers that authenticate peers by X.509-SVID.
//!
//! They wrap [`verify_x509_svid`] (webpki path validation plus the SPIFFE checks) instead of
//! copying rustls' verifier. The server-side verifier requires a client certificate; the
//! client-side verifier ignores the DNS name (SVIDs have none) and instead asks a caller-supplied
//! check whether the server's SPIFFE ID is the one expected. Both take a [`PeerCheck`]: the hook
//! where a caller (the tunnel's authorizer, say) decides on the verified identity and reports
//! refusals, so no caller re-implements a rustls verifier. Bundles are read through
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

/// The rustls error (and so the TLS alert) for a chain that is not a valid X.509-SVID:
/// `certificate_expired`, `unknown_ca`, `decrypt_error`/`bad_certificate`.
pub fn svid_error_to_rustls(e: SvidError) -> Error {
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

/// What a verifier does once a peer's chain has been checked: where a caller applies its policy
/// to the verified identity and reports refusals. The verifiers below do the path validation and
/// the SPIFFE checks, then hand the outcome to their `PeerCheck`; a refusal from it becomes the
/// handshake's alert, so a refused peer never gets a session.
pub trait PeerCheck: Send + Sync + fmt::Debug {
    /// The peer's chain is not a valid X.509-SVID. Returns the error rustls turns into the
    /// alert; the default maps the SVID error with [`svid_error_to_rustls`].
    fn chain_refused(&self, leaf: &CertificateDer<'_>, err: SvidError) -> Error {
        let _ = leaf;
        svid_error_to_rustls(err)
    }

    /// The chain is a valid SVID: accept its identity (`Ok`) or refuse it.
    fn check_identity(&self, svid: &VerifiedX509Svid) -> Result<(), Error>;
}

/// Accepts any valid X.509-SVID of a trusted trust domain.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnySvid;

impl PeerCheck for AnySvid {
    fn check_identity(&self, _svid: &VerifiedX509Svid) -> Result<(), Error> {
        Ok(())
    }
}

/// Decides whether a verified server identity is the expected one.
pub type ServerIdCheck = Arc<dyn Fn(&SpiffeId) -> Result<(), String> + Send + Sync>;

/// A [`PeerCheck`] from a closure; its refusal is reported as [`UnexpectedServerId`].
#[derive(Clone)]
pub struct IdCheck(pub ServerIdCheck);

impl fmt::Debug for IdCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdCheck(..)")
    }
}

impl PeerCheck for IdCheck {
    fn check_identity(&self, svid: &VerifiedX509Svid) -> Result<(), Error> {
        (self.0)(svid.spiffe_id()).map_err(|m| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                UnexpectedServerId(m),
            ))))
        })
    }
}

/// The server presented a valid SVID, but not the identity the client expected.
#[derive(Debug, thiserror::Error)]
#[error("unexpected server identity: {0}")]
pub struct UnexpectedServerId(pub String);

/// Verifies a peer chain for `usage`, then asks `check`.
fn verify_and_check(
    source: &dyn BundleSource,
    check: &dyn PeerCheck,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    usage: SvidUsage,
    now: UnixTime,
) -> Result<(), Error> {
    let svid = verify_peer(source, end_entity, intermediates, usage, now)
        .map_err(|e| check.chain_refused(end_entity, e))?;
    check.check_identity(&svid)
}

/// The handshake-signature half of both verifiers: rustls' own checks over aws-lc-rs.
#[derive(Debug)]
struct Signatures(WebPkiSupportedAlgorithms);

impl Signatures {
    fn new() -> Self {
        Self(algorithms())
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Server side: require (or accept) and verify a client X.509-SVID, then apply `C`.
#[derive(Debug)]
pub struct SpiffeClientCertVerifier<C = AnySvid> {
    source: Arc<dyn BundleSource>,
    check: C,
    sigs: Signatures,
    mandatory: bool,
}

impl SpiffeClientCertVerifier<AnySvid> {
    /// Every client must present a valid X.509-SVID.
    pub fn new(source: Arc<dyn BundleSource>) -> Arc<Self> {
        Self::with_check(source, AnySvid)
    }

    /// A client may present no certificate (the application then decides); one that presents a
    /// certificate must present a valid X.509-SVID.
    pub fn optional(source: Arc<dyn BundleSource>) -> Arc<Self> {
        Arc::new(Self {
            source,
            check: AnySvid,
            sigs: Signatures::new(),
            mandatory: false,
        })
    }
}

impl<C: PeerCheck> SpiffeClientCertVerifier<C> {
    /// Every client must present a valid X.509-SVID that `check` accepts.
    pub fn with_check(source: Arc<dyn BundleSource>, check: C) -> Arc<Self> {
        Arc::new(Self {
            source,
            check,
            sigs: Signatures::new(),
            mandatory: true,
        })
    }
}

impl<C: PeerCheck> ClientCertVerifier for SpiffeClientCertVerifier<C> {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        verify_and_check(
            self.source.as_ref(),
            &self.check,
            end_entity,
            intermediates,
            SvidUsage::Client,
            now,
        )?;
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
        self.sigs.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.sigs.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.sigs.schemes()
    }
}

/// Client side: verify the server's X.509-SVID (the DNS name is ignored: SVIDs have none), then
/// apply `C`, which says whether it is the server expected.
#[derive(Debug)]
pub struct SpiffeServerCertVerifier<C = IdCheck> {
    source: Arc<dyn BundleSource>,
    check: C,
    sigs: Signatures,
}

impl SpiffeServerCertVerifier<IdCheck> {
    pub fn new(source: Arc<dyn BundleSource>, check: ServerIdCheck) -> Arc<Self> {
        Self::with_check(source, IdCheck(check))
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

impl<C: PeerCheck> SpiffeServerCertVerifier<C> {
    pub fn with_check(source: Arc<dyn BundleSource>, check: C) -> Arc<Self> {
        Arc::new(Self {
            source,
            check,
            sigs: Signatures::new(),
        })
    }
}

impl<C: PeerCheck> ServerCertVerifier for SpiffeServerCertVerifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        verify_and_check(
            self.source.as_ref(),
            &self.check,
            end_entity,
            intermediates,
            SvidUsage::Server,
            now,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.sigs.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.sigs.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.sigs.schemes()
    }
}
