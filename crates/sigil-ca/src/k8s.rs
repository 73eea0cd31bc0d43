//! Offline validation of Kubernetes projected service-account tokens.
//!
//! The token is checked against the JWKS of a cluster the policy trusts (signature, `iss`,
//! `aud`, `exp` — required, so legacy non-expiring secret tokens are refused —, `nbf`, `iat`) and
//! its `kubernetes.io` claims must agree with `sub`. No call to the API server is made.

use std::time::SystemTime;

use serde_json::Value;
use sigil_identity::JwkSet;
use sigil_identity::jwt::{JwtError, audiences, check_times, decode_unverified, verify_jws};
use sigil_policy::ClusterTrust;

/// Why a service-account token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "token issuer {0:?} is not a trusted cluster; hint: add it under attestation.kubernetes in sigil.yaml"
    )]
    UnknownIssuer(String),
    #[error("token is invalid: {0}")]
    Jwt(#[from] JwtError),
    #[error(
        "token audience {found:?} has none of {expected:?}; hint: request the projected token with audience {first}"
    )]
    Audience {
        found: Vec<String>,
        expected: Vec<String>,
        first: String,
    },
    #[error(
        "token has no `kubernetes.io` {0} claim; hint: use a projected (bound) service-account token"
    )]
    MissingK8sClaim(&'static str),
    #[error("token `sub` {sub:?} does not match its kubernetes.io claims ({expected:?})")]
    SubjectMismatch { sub: String, expected: String },
}

/// A trusted cluster with its loaded keys.
#[derive(Debug, Clone)]
pub struct TrustedCluster {
    pub trust: ClusterTrust,
    pub keys: JwkSet,
}

/// Who a valid token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sIdentity {
    pub cluster: String,
    pub namespace: String,
    pub service_account: String,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub node: Option<String>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_str)
}

/// Validates `token` against the trusted clusters (chosen by its `iss`).
pub fn validate(
    token: &str,
    clusters: &[TrustedCluster],
    now: SystemTime,
) -> Result<K8sIdentity, TokenError> {
    let (_, unverified) = decode_unverified(token)?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let cluster = clusters
        .iter()
        .find(|c| c.trust.issuer == iss)
        .ok_or_else(|| TokenError::UnknownIssuer(iss.to_owned()))?;
    let jws = verify_jws(token, &cluster.keys)?;
    check_times(&jws.claims, now)?;
    let aud = audiences(&jws.claims)?;
    if !aud.iter().any(|a| cluster.trust.audiences.contains(a)) {
        return Err(TokenError::Audience {
            found: aud,
            expected: cluster.trust.audiences.clone(),
            first: cluster.trust.audiences.first().cloned().unwrap_or_default(),
        });
    }
    let claims = Value::Object(jws.claims);
    let k = claims
        .get("kubernetes.io")
        .ok_or(TokenError::MissingK8sClaim("kubernetes.io"))?;
    let namespace = str_at(k, &["namespace"]).ok_or(TokenError::MissingK8sClaim("namespace"))?;
    let sa = str_at(k, &["serviceaccount", "name"])
        .ok_or(TokenError::MissingK8sClaim("serviceaccount.name"))?;
    let expected = format!("system:serviceaccount:{namespace}:{sa}");
    let sub = str_at(&claims, &["sub"]).unwrap_or_default();
    if sub != expected {
        return Err(TokenError::SubjectMismatch {
            sub: sub.to_owned(),
            expected,
        });
    }
    Ok(K8sIdentity {
        cluster: cluster.trust.cluster.clone(),
        namespace: namespace.to_owned(),
        service_account: sa.to_owned(),
        pod_name: str_at(k, &["pod", "name"]).map(str::to_owned),
        pod_uid: str_at(k, &["pod", "uid"]).map(str::to_owned),
        node: str_at(k, &["node", "name"]).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_cluster::FakeCluster;

    fn clusters(fake: &FakeCluster) -> Vec<TrustedCluster> {
        vec![TrustedCluster {
            trust: ClusterTrust {
                cluster: "t".into(),
                issuer: fake.issuer.clone(),
                audiences: vec!["sigil".into()],
                jwks_file: "jwks.json".into(),
            },
            keys: fake.jwks(),
        }]
    }

    #[test]
    fn valid_token_maps_claims() {
        let fake = FakeCluster::new("https://k").unwrap();
        let id = validate(
            &fake.token("ns1", "sa1", "sigil"),
            &clusters(&fake),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(
            (id.namespace.as_str(), id.service_account.as_str()),
            ("ns1", "sa1")
        );
        assert_eq!(id.pod_name.as_deref(), Some("sa1-0"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_tokens_never_panic(s in "[A-Za-z0-9_.-]{0,400}") {
            let fake = FakeCluster::new("https://k").unwrap();
            let _ = validate(&s, &clusters(&fake), SystemTime::now());
        }
    }
}
