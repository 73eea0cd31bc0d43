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

use crate::authz::{self, InboundAuthorizer, Mode, Reason, Refusal};
use crate::creds::CredentialStore;
use crate::metrics::Metrics;
use crate::reload::PolicyStore;

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

/// Client side: require the server identity the policy in force expects for the target.
#[derive(Debug)]
pub(crate) struct OutboundCheck {
    pub(crate) policy: Arc<PolicyStore>,
    /// This workload's SPIFFE ID (the tunnel refuses to start with another).
    pub(crate) own: SpiffeId,
    pub(crate) target: String,
    pub(crate) port: u16,
    pub(crate) metrics: Arc<Metrics>,
}

impl OutboundCheck {
    /// The policy decision for a verified server identity: a flow from this workload to the
    /// target must exist, and the server must be the target's SPIFFE ID.
    pub(crate) fn decide(&self, server: &SpiffeId) -> Result<(), Refusal> {
        let policy = self.policy.current();
        let expected = authz::expected_server(&policy, &self.own, &self.target, self.port)?;
        if server == &expected {
            return Ok(());
        }
        Err(Refusal {
            reason: Reason::UnexpectedServer,
            peer: Some(server.to_string()),
            target: self.target.clone(),
            port: self.port,
            rule: format!(
                "policy {}: workload {:?} is {expected}, the server presented {server}",
                policy.source.display(),
                self.target,
            ),
        })
    }
}

/// The check as the verifier holds it (shared with the re-authorization of live connections).
#[derive(Debug)]
pub(crate) struct SharedOutbound(pub(crate) Arc<OutboundCheck>);

impl PeerCheck for SharedOutbound {
    fn chain_refused(&self, leaf: &CertificateDer<'_>, err: SvidError) -> Error {
        refuse_chain(
            &self.0.metrics,
            leaf,
            err,
            &self.0.target,
            self.0.port,
            "server",
        )
    }

    fn check_identity(&self, svid: &VerifiedX509Svid) -> Result<(), Error> {
        self.0.decide(svid.spiffe_id()).map_err(|r| {
            r.report(&self.0.metrics, false);
            policy_refusal()
        })
    }
}

/// The outbound verifier: the server's SVID is verified, then must be what the policy expects.
pub(crate) fn outbound_verifier(
    store: Arc<CredentialStore>,
    check: Arc<OutboundCheck>,
) -> Arc<SpiffeServerCertVerifier<SharedOutbound>> {
    SpiffeServerCertVerifier::with_check(store, SharedOutbound(check))
}
