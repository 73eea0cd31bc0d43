//! A stand-in Kubernetes service-account token issuer, for `sigil demo` and tests.
//!
//! It signs projected-token-shaped JWTs (ES256) with its own key and publishes the matching JWKS.
//! Such tokens are only accepted by a server whose policy trusts this JWKS file; nothing trusts
//! it by default.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};
use sigil_identity::jwt::b64url;
use sigil_identity::{Jwk, JwkSet};

use crate::authority::unix;

/// The issuer the example policy trusts.
pub const EXAMPLE_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A fake cluster signing key.
pub struct FakeCluster {
    key: EcdsaKeyPair,
    pub kid: String,
    pub issuer: String,
}

impl fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FakeCluster({}, kid={})", self.issuer, self.kid)
    }
}

impl FakeCluster {
    pub fn new(issuer: &str) -> Option<Self> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .ok()?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).ok()?;
        Some(Self {
            key,
            kid: "fake-cluster-1".to_owned(),
            issuer: issuer.to_owned(),
        })
    }

    /// The JWKS to put in the policy's `attestation.kubernetes[].jwksFile`.
    pub fn jwks(&self) -> JwkSet {
        let mut k = Jwk::ec_from_point(&self.kid, "P-256", self.key.public_key().as_ref());
        if let Some(k) = &mut k {
            k.alg = Some("ES256".to_owned());
            k.use_ = Some("sig".to_owned());
        }
        JwkSet {
            keys: k.into_iter().collect(),
        }
    }

    /// The claims of a projected token for `namespace/service_account`.
    pub fn claims(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
        ttl: Duration,
    ) -> Value {
        let now = SystemTime::now();
        json!({
            "iss": self.issuer,
            "aud": [audience],
            "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
            "exp": unix(now + ttl),
            "iat": unix(now),
            "nbf": unix(now),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": service_account, "uid": "00000000-0000-0000-0000-000000000001"},
                "pod": {"name": format!("{service_account}-0"), "uid": "00000000-0000-0000-0000-000000000002"},
                "node": {"name": "node-1", "uid": "00000000-0000-0000-0000-000000000003"}
            }
        })
    }

    /// Signs arbitrary claims (tests use this to make bad tokens).
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map(|s| b64url(s.as_ref()))
            .unwrap_or_default();
        format!("{input}.{sig}")
    }

    /// A valid projected token.
    pub fn token(&self, namespace: &str, service_account: &str, audience: &str) -> String {
        self.sign(&self.claims(
            namespace,
            service_account,
            audience,
            Duration::from_secs(600),
        ))
    }
}
