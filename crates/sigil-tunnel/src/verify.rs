//! The tunnel's peer checks, plugged into `sigil_identity::tls`'s SVID verifiers (webpki path
//! validation plus the SPIFFE checks): the policy decision, with every refusal reported.
//!
//! Deciding inside the verifier means a refused peer gets a TLS alert (`access_denied` for a
//! policy refusal, `bad_certificate`/`unknown_ca`/`certificate_expired` for a bad chain) instead
//! of a bare close, and the connection never reaches the upstream.

use std::sync::Arc;

use rustls::{CertificateError, Error};
use rustls_pki_types::CertificateDer;
use sigil_identity::tls::{
    PeerCheck, SpiffeClientCertVerifier, SpiffeServerCertVerifier, svid_error_to_rustls,
};
use sigil_identity::{SpiffeId, SvidError, VerifiedX509Svid};

use crate::authz::{InboundAuthorizer, Mode, Reason, Refusal};
use crate::creds::CredentialStore;
use crate::metrics::Metrics;

fn claimed_id(leaf: &CertificateDer<'_>) -> Option<String> {
    sigil_identity::inspect_leaf(leaf)
        .ok()
        .map(|l| format!("{} (unverified)", l.spiffe_id))
}

/// Reports a chain that is not a valid SVID and picks the alert.
fn refuse_chain(
    metrics: &Metrics,
    leaf: &CertificateDer<'_>,
    err: SvidError,
    target: &str,
    port: u16,
    side: &str,
) -> Error {
    Refusal {
        reason: Reason::from_svid_error(&err),
        peer: claimed_id(leaf),
        target: target.to_owned(),
        port,
        rule: format!("{side} SVID chain: {err}"),
    }
    .report(metrics, false);
    svid_error_to_rustls(err)
}

fn policy_refusal() -> Error {
    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Server side: authorize the client's verified SPIFFE ID for this workload and port.
#[derive(Debug)]
pub(crate) struct InboundCheck {
    authz: InboundAuthorizer,
    metrics: Arc<Metrics>,
}

impl PeerCheck for InboundCheck {
    fn chain_refused(&self, leaf: &CertificateDer<'_>, err: SvidError) -> Error {
        let (target, port) = self.authz.target();
        refuse_chain(&self.metrics, leaf, err, target, port, "client")
    }

    fn check_identity(&self, svid: &VerifiedX509Svid) -> Result<(), Error> {
        match self.authz.authorize(svid.spiffe_id()) {
            Ok(by) => {
                let (target, port) = self.authz.target();
                tracing::debug!(peer = %svid.spiffe_id(), target, port, rule = %by.0, "authorized");
                Ok(())
            }
            Err(refusal) => {
                let dry = self.authz.mode() == Mode::DryRun;
                refusal.report(&self.metrics, dry);
                if dry { Ok(()) } else { Err(policy_refusal()) }
            }
        }
    }
}

/// The inbound verifier: a client SVID is required, verified, then authorized.
pub(crate) fn inbound_verifier(
    store: Arc<CredentialStore>,
    authz: InboundAuthorizer,
    metrics: Arc<Metrics>,
) -> Arc<SpiffeClientCertVerifier<InboundCheck>> {
    SpiffeClientCertVerifier::with_check(store, InboundCheck { authz, metrics })
}

/// Client side: require the server identity the policy expects for the target.
#[derive(Debug)]
pub(crate) struct OutboundCheck {
    expected: SpiffeId,
    target: String,
    port: u16,
    metrics: Arc<Metrics>,
}

impl PeerCheck for OutboundCheck {
    fn chain_refused(&self, leaf: &CertificateDer<'_>, err: SvidError) -> Error {
        refuse_chain(&self.metrics, leaf, err, &self.target, self.port, "server")
    }

    fn check_identity(&self, svid: &VerifiedX509Svid) -> Result<(), Error> {
        if svid.spiffe_id() == &self.expected {
            return Ok(());
        }
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
        Err(policy_refusal())
    }
}

/// The outbound verifier: the server's SVID is verified, then must be `expected`.
pub(crate) fn outbound_verifier(
    store: Arc<CredentialStore>,
    expected: SpiffeId,
    target: String,
    port: u16,
    metrics: Arc<Metrics>,
) -> Arc<SpiffeServerCertVerifier<OutboundCheck>> {
    SpiffeServerCertVerifier::with_check(
        store,
        OutboundCheck {
            expected,
            target,
            port,
            metrics,
        },
    )
}
