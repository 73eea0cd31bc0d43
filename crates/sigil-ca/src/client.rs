//! A client of the control-plane API: what `sigil svid fetch` and `sigil agent` use.
//!
//! The client makes its key locally (the private key never leaves the machine), proves itself,
//! and verifies the server against the trust bundle it was given. HTTPS only.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::{Value, json};
use sigil_identity::X509Bundle;
use zeroize::Zeroizing;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("server refused ({status}): {code}: {reason}")]
    Refused {
        status: u16,
        code: String,
        reason: String,
    },
    #[error(
        "cannot reach the server at {url}: {reason}; hint: check --server and that `sigil server` is running"
    )]
    Transport { url: String, reason: String },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("key generation: {0}")]
    Key(String),
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

/// A fresh P-256 key and a CSR for it (the CSR carries no names; the server assigns the ID).
pub struct KeyAndCsr {
    pub key_pem: Zeroizing<String>,
    pub csr_pem: String,
}

impl fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyAndCsr(<redacted>)")
    }
}

impl KeyAndCsr {
    pub fn generate() -> Result<Self, ClientError> {
        let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| ClientError::Key(e.to_string()))?;
        Self::for_key(&kp)
    }

    /// A new CSR for an existing key (re-attestation proves the registered key).
    pub fn from_key_pem(pem: &str) -> Result<Self, ClientError> {
        let kp = KeyPair::from_pem(pem).map_err(|e| ClientError::Key(e.to_string()))?;
        Self::for_key(&kp)
    }

    fn for_key(kp: &KeyPair) -> Result<Self, ClientError> {
        let params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| ClientError::Key(e.to_string()))?;
        let csr = params
            .serialize_request(kp)
            .map_err(|e| ClientError::Key(e.to_string()))?;
        Ok(Self {
            key_pem: Zeroizing::new(kp.serialize_pem()),
            csr_pem: csr.pem().map_err(|e| ClientError::Key(e.to_string()))?,
        })
    }
}

/// An X.509-SVID answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Answer {
    pub spiffe_id: String,
    pub svid: String,
    pub bundle: String,
    pub expires_at: String,
}

/// A JWT-SVID answer.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtAnswer {
    pub spiffe_id: String,
    pub token: String,
    pub expires_at: String,
}

impl fmt::Debug for JwtAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtAnswer({}, token=<redacted>)", self.spiffe_id)
    }
}

/// How the caller proves itself.
#[derive(Clone)]
pub enum Proof {
    KubernetesToken(Zeroizing<String>),
    JoinToken(Zeroizing<String>),
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KubernetesToken(_) => f.write_str("KubernetesToken(<redacted>)"),
            Self::JoinToken(_) => f.write_str("JoinToken(<redacted>)"),
        }
    }
}

impl Proof {
    fn json(&self) -> Value {
        match self {
            Self::KubernetesToken(t) => json!({"kubernetesToken": t.as_str()}),
            Self::JoinToken(t) => json!({"joinToken": t.as_str()}),
        }
    }
}

/// The API client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client trusting `bundle` for the server's certificate, optionally presenting an
    /// X.509-SVID (`chain` PEM, `key` PEM) for the agent endpoints.
    pub fn new(
        base_url: &str,
        bundle: &X509Bundle,
        identity: Option<(&str, &str)>,
    ) -> Result<Self, ClientError> {
        if !base_url.starts_with("https://") {
            return Err(ClientError::Tls(format!(
                "{base_url:?} is not an https:// URL; Sigil never talks to its server in plaintext"
            )));
        }
        let mut roots = RootCertStore::empty();
        for r in bundle.roots() {
            roots
                .add(r.clone())
                .map_err(|e| ClientError::Tls(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let cfg = match identity {
            None => builder.with_no_client_auth(),
            Some((chain_pem, key_pem)) => {
                let chain: Result<Vec<CertificateDer<'static>>, _> =
                    CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect();
                let chain =
                    chain.map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                    .map_err(|e| ClientError::Tls(format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ClientError::Tls(e.to_string()))?
            }
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(cfg)
            .https_only(true)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
        })
    }

    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &Value,
        bearer: Option<&str>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.post(&url).json(body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
            url,
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(ClientError::Refused {
                status: status.as_u16(),
                code: v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_owned(),
                reason: v
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn attest_x509(
        &self,
        proof: &Proof,
        csr_pem: &str,
    ) -> Result<X509Answer, ClientError> {
        self.post(
            "/v1/attest/x509",
            &json!({"csr": csr_pem, "proof": proof.json()}),
            None,
        )
        .await
    }

    pub async fn attest_jwt(
        &self,
        proof: &Proof,
        audience: &[String],
    ) -> Result<JwtAnswer, ClientError> {
        self.post(
            "/v1/attest/jwt",
            &json!({"audience": audience, "proof": proof.json()}),
            None,
        )
        .await
    }

    pub async fn agent_x509(
        &self,
        spiffe_id: &str,
        csr_pem: &str,
    ) -> Result<X509Answer, ClientError> {
        self.post(
            "/v1/agent/x509",
            &json!({"spiffeId": spiffe_id, "csr": csr_pem}),
            None,
        )
        .await
    }

    pub async fn agent_jwt(
        &self,
        spiffe_id: &str,
        audience: &[String],
    ) -> Result<JwtAnswer, ClientError> {
        self.post(
            "/v1/agent/jwt",
            &json!({"spiffeId": spiffe_id, "audience": audience}),
            None,
        )
        .await
    }

    pub async fn renew(&self, csr_pem: &str) -> Result<X509Answer, ClientError> {
        self.post("/v1/agent/renew", &json!({"csr": csr_pem}), None)
            .await
    }

    pub async fn reattest(&self, node: &str, csr_pem: &str) -> Result<X509Answer, ClientError> {
        self.post(
            "/v1/agent/reattest",
            &json!({"node": node, "csr": csr_pem}),
            None,
        )
        .await
    }

    pub async fn create_join_token(
        &self,
        admin_token: &str,
        node: &str,
        ttl: Option<&str>,
    ) -> Result<Value, ClientError> {
        self.post(
            "/v1/admin/join-tokens",
            &json!({"node": node, "ttl": ttl}),
            Some(admin_token),
        )
        .await
    }

    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        resp.text().await.map_err(|e| ClientError::Transport {
            url,
            reason: e.to_string(),
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Writes `svid.pem`, `svid.key` (0600) and `bundle.pem` into `dir`, each atomically.
pub fn write_svid_files(
    dir: &Path,
    svid_pem: &str,
    key_pem: &str,
    bundle_pem: &str,
) -> Result<(), ClientError> {
    std::fs::create_dir_all(dir).map_err(|e| ClientError::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let w = |name: &str, data: &str| {
        crate::server::write_private(&dir.join(name), data.as_bytes()).map_err(|e| {
            ClientError::Io {
                path: dir.join(name).display().to_string(),
                reason: e.to_string(),
            }
        })
    };
    // Key first, then the certificate: a reader never sees a certificate without its key.
    w("svid.key", key_pem)?;
    w("svid.pem", svid_pem)?;
    w("bundle.pem", bundle_pem)
}
