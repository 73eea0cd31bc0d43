//! rustls verifiers for the tunnel: `sigil_identity::tls::verify_peer` (webpki path validation
//! plus the SPIFFE checks) followed by the policy decision, with every refusal reported.
//!
//! Deciding inside the verifier means a refused peer gets a TLS alert (`access_denied` for a
//! policy refusal, `bad_certificate`/`unknown_ca`/`certificate_expired` for a bad chain) instead
//! of a bare close, and the connection never reaches the upstream.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sigil_identity::tls::verify_peer;
use sigil_identity::{SpiffeId, SvidError, SvidUsage};

use crate::authz::{InboundAuthorizer, Mode, Reason, Refusal};
use crate::creds::CredentialStore;
use crate::metrics::Metrics;

fn algorithms() -> WebPkiSupportedAlgorithms {
    crate::tls::provider().signature_verification_algorithms
}

fn claimed_id(leaf: &CertificateDer<'_>) -> Option<String> {
    sigil_identity::inspect_leaf(leaf)
        .ok()
        .map(|l| format!("{} (unverified)", l.spiffe_id))
}

fn chain_error(e: &SvidError) -> Error {
    Error::InvalidCertificate(match e {
        SvidError::Expired(_) => CertificateError::Expired,
        SvidError::NotYetValid(_) => CertificateError::NotValidYet,
        SvidError::UnknownIssuer
        | SvidError::NoBundle(_)
        | SvidError::ForeignTrustDomain { .. } => CertificateError::UnknownIssuer,
        SvidError::BadSignature => CertificateError::BadSignature,
        _ => CertificateError::BadEncoding,
    })
}

/// Server side: require a client SVID, verify it, authorize it for this workload and port.
#[derive(Debug)]
pub(crate) struct InboundVerifier {
    store: Arc<CredentialStore>,
    authz: InboundAuthorizer,
    metrics: Arc<Metrics>,
    algs: WebPkiSupportedAlgorithms,
}

impl InboundVerifier {
    pub(crate) fn new(
        store: Arc<CredentialStore>,
        authz: InboundAuthorizer,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            authz,
            metrics,
            algs: algorithms(),
        })
    }
}

impl ClientCertVerifier for InboundVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let (target, port) = self.authz.target();
        let svid = verify_peer(
            self.store.as_ref(),
            end_entity,
            intermediates,
            SvidUsage::Client,
            now,
        )
        .map_err(|e| {
            Refusal {
                reason: Reason::from_svid_error(&e),
                peer: claimed_id(end_entity),
                target: target.to_owned(),
                port,
                rule: format!("client SVID chain: {e}"),
            }
            .report(&self.metrics, false);
            chain_error(&e)
        })?;
        match self.authz.authorize(svid.spiffe_id()) {
            Ok(by) => {
                tracing::debug!(peer = %svid.spiffe_id(), target, port, rule = %by.0, "authorized");
                Ok(ClientCertVerified::assertion())
            }
            Err(refusal) => {
                let dry = self.authz.mode() == Mode::DryRun;
                refusal.report(&self.metrics, dry);
                if dry {
                    Ok(ClientCertVerified::assertion())
                } else {
                    Err(Error::InvalidCertificate(
                        CertificateError::ApplicationVerificationFailure,
                    ))
                }
            }
        }
    }

    fn client_auth_mandatory(&self) -> bool {
        true
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

/// Client side: verify the server SVID and require the identity the policy expects.
#[derive(Debug)]
pub(crate) struct OutboundVerifier {
    store: Arc<CredentialStore>,
    expected: SpiffeId,
    target: String,
    port: u16,
    metrics: Arc<Metrics>,
    algs: WebPkiSupportedAlgorithms,
}

impl OutboundVerifier {
    pub(crate) fn new(
        store: Arc<CredentialStore>,
        expected: SpiffeId,
        target: String,
        port: u16,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            expected,
            target,
            port,
            metrics,
            algs: algorithms(),
        })
    }
}

impl ServerCertVerifier for OutboundVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let svid = verify_peer(
            self.store.as_ref(),
            end_entity,
            intermediates,
            SvidUsage::Server,
            now,
        )
        .map_err(|e| {
            Refusal {
                reason: Reason::from_svid_error(&e),
                peer: claimed_id(end_entity),
                target: self.target.clone(),
                port: self.port,
                rule: format!("server SVID chain: {e}"),
            }
            .report(&self.metrics, false);
            chain_error(&e)
        })?;
        if svid.spiffe_id() != &self.expected {
            Refusal {
                reason: Reason::UnexpectedServer,
                peer: Some(svid.spiffe_id().to_string()),
                target: self.target.clone(),
                port: self.port,
                rule: format!(
                    "policy: workload {:?} is {}, the server presented {}",
                    self.target,
                    self.expected,
                    svid.spiffe_id()
                ),
            }
            .report(&self.metrics, false);
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
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
