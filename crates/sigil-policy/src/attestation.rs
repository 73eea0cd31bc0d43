//! How workloads and nodes prove themselves to the server: Kubernetes clusters whose projected
//! service-account tokens are trusted, and join-token settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Diags};
use crate::duration::parse_duration;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawAttestation {
    #[serde(default)]
    kubernetes: Vec<RawCluster>,
    #[serde(default)]
    join_token_ttl: Option<Spanned<String>>,
    #[serde(default)]
    agent_service_accounts: Vec<RawAgentSa>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAgentSa {
    namespace: String,
    service_account: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCluster {
    cluster: String,
    issuer: Spanned<String>,
    audiences: Vec<String>,
    jwks_file: Spanned<String>,
}

/// A Kubernetes cluster whose service-account tokens the server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTrust {
    pub cluster: String,
    /// The `iss` the API server writes (`--service-account-issuer`).
    pub issuer: String,
    /// Accepted `aud` values; a token must carry at least one.
    pub audiences: Vec<String>,
    /// JWKS file of the cluster's service-account signing keys, relative to the policy file.
    pub jwks_file: PathBuf,
}

/// Attestation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    pub kubernetes: Vec<ClusterTrust>,
    pub join_token_ttl: Duration,
    /// Service accounts (`namespace`, `name`) of the agent DaemonSet: a token of one of these
    /// attests the *node* named in the token's `kubernetes.io.node` claim.
    pub agent_service_accounts: Vec<(String, String)>,
}

impl Default for Attestation {
    fn default() -> Self {
        Self {
            kubernetes: Vec::new(),
            join_token_ttl: Duration::from_secs(3600),
            agent_service_accounts: Vec::new(),
        }
    }
}

pub(crate) fn validate(raw: RawAttestation, d: &mut Diags) -> Attestation {
    let mut a = Attestation::default();
    if let Some(t) = raw.join_token_ttl {
        match parse_duration(&t.value) {
            Ok(v) => a.join_token_ttl = v,
            Err(e) => d.push(Diagnostic::new(&t, "attestation.joinTokenTtl", &t.value, e)),
        }
    }
    a.agent_service_accounts = raw
        .agent_service_accounts
        .into_iter()
        .map(|s| (s.namespace, s.service_account))
        .collect();
    for (i, c) in raw.kubernetes.into_iter().enumerate() {
        if !c.issuer.value.starts_with("https://") {
            d.push(
                Diagnostic::new(
                    &c.issuer,
                    format!("attestation.kubernetes[{i}].issuer"),
                    &c.issuer.value,
                    "issuer must be an https:// URL",
                )
                .hint("use the API server's --service-account-issuer value"),
            );
        }
        if c.audiences.is_empty() {
            d.push(
                Diagnostic::new(
                    &c.issuer,
                    format!("attestation.kubernetes[{i}].audiences"),
                    "[]",
                    "no audiences",
                )
                .hint("list the audience the projected token is requested for, e.g. `sigil`"),
            );
        }
        a.kubernetes.push(ClusterTrust {
            cluster: c.cluster,
            issuer: c.issuer.value,
            audiences: c.audiences,
            jwks_file: PathBuf::from(c.jwks_file.value),
        });
    }
    a
}
