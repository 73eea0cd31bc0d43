//! Identity authorization against the policy's flows, and the one place refusals are logged.
//!
//! Default deny: a peer passes only when its SVID verifies against the bundle and a flow in the
//! policy allows its workload to reach this workload on this port. Every refusal is logged with
//! the peer ID (the claimed one when the chain did not verify), the target, the port and the rule
//! that decided, and counted by reason. Dry-run applies to the policy decision only: a chain that
//! does not verify is always refused, because there is no identity to authorize.

use std::fmt;
use std::sync::Arc;

use sigil_identity::{SpiffeId, SvidError};
use sigil_policy::{Denial, Policy};

use crate::metrics::Metrics;
use crate::reload::PolicyStore;

/// Enforce refusals, or only log what would be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    DryRun,
}

/// Why a connection was refused; the metric label is [`Reason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The peer presented no certificate.
    NoCertificate,
    /// The chain does not lead to a root in the bundle.
    UntrustedCa,
    /// The SVID has expired.
    Expired,
    /// The SVID is not valid yet.
    NotYetValid,
    /// The SPIFFE ID is in another trust domain.
    ForeignTrustDomain,
    /// The certificate is not a valid X.509-SVID (SAN, key usage, signature, ...).
    InvalidSvid,
    /// The SPIFFE ID is not a workload in the policy.
    UnknownPeer,
    /// No flow allows the peer's workload to reach this workload on this port.
    NoFlow,
    /// The destination is not in the policy.
    UnknownDestination,
    /// Outbound: the server is a valid SVID, but not the identity the policy expects.
    UnexpectedServer,
    /// Outbound: the policy has no flow from this workload to the target.
    OutboundNotAllowed,
    /// The handshake failed for another reason (protocol error, timeout, reset).
    Handshake,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::NoCertificate,
        Reason::UntrustedCa,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::ForeignTrustDomain,
        Reason::InvalidSvid,
        Reason::UnknownPeer,
        Reason::NoFlow,
        Reason::UnknownDestination,
        Reason::UnexpectedServer,
        Reason::OutboundNotAllowed,
        Reason::Handshake,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoCertificate => "no_certificate",
            Reason::UntrustedCa => "untrusted_ca",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::ForeignTrustDomain => "foreign_trust_domain",
            Reason::InvalidSvid => "invalid_svid",
            Reason::UnknownPeer => "unknown_peer",
            Reason::NoFlow => "no_flow",
            Reason::UnknownDestination => "unknown_destination",
            Reason::UnexpectedServer => "unexpected_server",
            Reason::OutboundNotAllowed => "outbound_not_allowed",
            Reason::Handshake => "handshake",
        }
    }

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The refusal reason for an SVID verification error.
    pub fn from_svid_error(e: &SvidError) -> Self {
        match e {
            SvidError::EmptyChain => Reason::NoCertificate,
            SvidError::Expired(_) => Reason::Expired,
            SvidError::NotYetValid(_) => Reason::NotYetValid,
            // A signature that does not verify under any trusted root is the same verdict as
            // no path to one: the issuer is not trusted (e.g. a rogue CA reusing our CA's name).
            SvidError::UnknownIssuer | SvidError::BadSignature => Reason::UntrustedCa,
            SvidError::ForeignTrustDomain { .. } | SvidError::NoBundle(_) => {
                Reason::ForeignTrustDomain
            }
            _ => Reason::InvalidSvid,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused (or, in dry-run, would-be-refused) connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// The peer's SPIFFE ID: verified, or as claimed by an unverified leaf, or `None`.
    pub peer: Option<String>,
    /// The workload being reached.
    pub target: String,
    pub port: u16,
    /// The rule that decided, in words.
    pub rule: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused {} -> {}:{} ({}): {}",
            self.peer.as_deref().unwrap_or("<no identity>"),
            self.target,
            self.port,
            self.reason,
            self.rule
        )
    }
}

impl Refusal {
    /// Logs the refusal and counts it. In dry-run mode (policy decisions only) it is logged as
    /// "would refuse" and counted separately.
    pub fn report(&self, metrics: &Metrics, dry_run: bool) {
        let peer = self.peer.as_deref().unwrap_or("<no identity>");
        if dry_run {
            metrics.dry_run_refusal(self.reason);
            tracing::warn!(peer, target = %self.target, port = self.port, reason = %self.reason,
                rule = %self.rule, "dry-run: would refuse connection");
        } else {
            metrics.refusal(self.reason);
            tracing::warn!(peer, target = %self.target, port = self.port, reason = %self.reason,
                rule = %self.rule, "connection refused");
        }
    }

    /// Logs and counts a live connection closed because the new policy or bundle refuses it.
    pub fn report_close(&self, metrics: &Metrics) {
        let peer = self.peer.as_deref().unwrap_or("<no identity>");
        metrics.revoked_close(self.reason);
        tracing::warn!(peer, target = %self.target, port = self.port, reason = %self.reason,
            rule = %self.rule, "live connection closed: no longer authorized");
    }
}

/// Inbound authorization: may a peer reach `workload` on `port`?
#[derive(Debug, Clone)]
pub struct InboundAuthorizer {
    policy: Arc<PolicyStore>,
    workload: String,
    port: u16,
    mode: Mode,
}

/// A flow that allowed the connection, named for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedBy(pub String);

impl InboundAuthorizer {
    pub fn new(policy: Arc<PolicyStore>, workload: String, port: u16, mode: Mode) -> Self {
        Self {
            policy,
            workload,
            port,
            mode,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn target(&self) -> (&str, u16) {
        (&self.workload, self.port)
    }

    /// The policy decision for a verified peer, under the policy in force now.
    pub fn authorize(&self, peer: &SpiffeId) -> Result<AllowedBy, Refusal> {
        let policy = self.policy.current();
        match policy.authorize(peer, &self.workload, self.port) {
            Ok(flow) => {
                let idx = policy.flows.iter().position(|f| f == flow);
                Ok(AllowedBy(format!(
                    "flows[{}] {} -> {} ports {:?}",
                    idx.map_or_else(|| "?".to_owned(), |i| i.to_string()),
                    flow.from,
                    flow.to,
                    flow.ports
                )))
            }
            Err(d) => Err(self.refusal(&policy, peer, &d)),
        }
    }

    fn refusal(&self, policy: &Policy, peer: &SpiffeId, d: &Denial) -> Refusal {
        let reason = match d {
            Denial::ForeignTrustDomain { .. } => Reason::ForeignTrustDomain,
            Denial::UnknownPeer { .. } => Reason::UnknownPeer,
            Denial::UnknownDestination(_) => Reason::UnknownDestination,
            Denial::NoFlow { .. } => Reason::NoFlow,
        };
        Refusal {
            reason,
            peer: Some(peer.to_string()),
            target: self.workload.clone(),
            port: self.port,
            rule: format!("policy {}: {d}", policy.source.display()),
        }
    }
}

/// Outbound: the identity the policy expects at the other end, after checking that a flow from
/// our workload to the target exists.
pub fn expected_server(
    policy: &Policy,
    own: &SpiffeId,
    to: &str,
    port: u16,
) -> Result<SpiffeId, Refusal> {
    let target = policy.workload(to).ok_or_else(|| Refusal {
        reason: Reason::UnknownDestination,
        peer: None,
        target: to.to_owned(),
        port,
        rule: format!(
            "policy {}: workload {to:?} is not declared",
            policy.source.display()
        ),
    })?;
    policy.authorize(own, to, port).map_err(|d| Refusal {
        reason: Reason::OutboundNotAllowed,
        peer: Some(target.spiffe_id.to_string()),
        target: to.to_owned(),
        port,
        rule: format!(
            "policy {}: this workload ({own}) may not connect: {d}",
            policy.source.display()
        ),
    })?;
    Ok(target.spiffe_id.clone())
}
