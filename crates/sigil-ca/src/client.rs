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
    #[error(
        "join token file {path}: {reason}; hint: give the file `sigil server join-token` writes (its JSON), or a file holding only the token"
    )]
    JoinTokenFile { path: String, reason: String },
}

/// Longest node name: a DNS-1123 subdomain, as Kubernetes node names are.
pub const MAX_NODE_NAME: usize = 253;

/// The one rule for node names, applied on every path that names a node (join-token creation,
/// join, Kubernetes agent tokens, re-attestation, agent certificates, revocation): a DNS-1123
/// subdomain like a Kubernetes node name, so that `spiffe://<td>/sigil/agent/<node>` is one
/// path segment and two spellings cannot name one node.
pub fn check_node_name(node: &str) -> Result<(), String> {
    const RULE: &str = "a node name uses lowercase letters, digits, '-' and '.', starts and ends with a letter or digit, and has at most 253 characters (a DNS-1123 name, like a Kubernetes node name)";
    let shown: String = node.chars().take(64).collect();
    let shown = if shown.len() < node.len() {
        format!("{shown:?}...")
    } else {
        format!("{shown:?}")
    };
    let problem = if node.is_empty() {
        Some("is empty".to_owned())
    } else if node.len() > MAX_NODE_NAME {
        Some(format!("has {} characters", node.len()))
    } else if let Some((i, c)) = node
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')))
    {
        Some(format!("has {c:?} at position {i}"))
    } else if !node.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !node.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("does not start and end with a letter or digit".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(format!("node name {shown} {p}; {RULE}")),
    }
}

/// Largest join-token file read.
const MAX_JOIN_TOKEN_FILE: u64 = 64 * 1024;

/// A join token as read from a file.
pub struct JoinTokenFile {
    pub token: Zeroizing<String>,
    /// The node the token was made for, when the file says (the JSON of `sigil server join-token`).
    pub node: Option<String>,
}

impl fmt::Debug for JoinTokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinTokenFile(node={:?}, token=<redacted>)", self.node)
    }
}

/// Reads a join token from what `sigil server join-token` prints (`{"token", "node",
/// "expiresAt"}`) or from a file holding only the token; surrounding whitespace is ignored.
/// Anything else is an error that never echoes the file's contents (it may be a secret).
pub fn parse_join_token(text: &str) -> Result<JoinTokenFile, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    if text.starts_with('{') {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            format!(
                "is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or("is JSON without a non-empty string field \"token\"")?;
        let node = match v.get("node") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) => Some(n.clone()),
            Some(_) => return Err("has a field \"node\" that is not a string".to_owned()),
        };
        check_bare_token(token)?;
        return Ok(JoinTokenFile {
            token: Zeroizing::new(token.to_owned()),
            node,
        });
    }
    check_bare_token(text)?;
    Ok(JoinTokenFile {
        token: Zeroizing::new(text.to_owned()),
        node: None,
    })
}

fn check_bare_token(t: &str) -> Result<(), String> {
    if t.len() > 1024 {
        return Err(format!(
            "holds {} bytes, more than a join token (64 hex digits)",
            t.len()
        ));
    }
    if t.chars().any(char::is_whitespace) {
        return Err("holds more than one word, not a single token".to_owned());
    }
    if !t.chars().all(|c| c.is_ascii_graphic()) {
        return Err("holds characters that are not printable ASCII".to_owned());
    }
    Ok(())
}

/// [`parse_join_token`] of the file at `path`.
pub fn read_join_token_file(path: &Path) -> Result<JoinTokenFile, ClientError> {
    use std::io::Read;
    let err = |reason: String| ClientError::JoinTokenFile {
        path: path.display().to_string(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut text = Zeroizing::new(String::new());
    f.take(MAX_JOIN_TOKEN_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    if text.len() as u64 > MAX_JOIN_TOKEN_FILE {
        return Err(err(format!("is larger than {MAX_JOIN_TOKEN_FILE} bytes")));
    }
    parse_join_token(&text).map_err(err)
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

    /// Revokes a node for good (admin API).
    pub async fn revoke_node(&self, admin_token: &str, node: &str) -> Result<Value, ClientError> {
        self.post(
            &format!("/v1/admin/nodes/{node}/revoke"),
            &json!({}),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use test_case::test_case;

    const TOKEN: &str = "3f1c0a9e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a";

    #[test_case(TOKEN; "bare")]
    #[test_case("  3f1c0a9e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a\n"; "bare with whitespace")]
    #[test_case("{\n  \"token\": \"3f1c0a9e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a\",\n  \"node\": \"gpu-1\",\n  \"expiresAt\": \"2026-01-01T00:00:00Z\"\n}\n"; "json of sigil server join-token")]
    fn join_token_file_forms(text: &str) {
        let t = parse_join_token(text).unwrap();
        assert_eq!(t.token.as_str(), TOKEN);
    }

    #[test]
    fn join_token_json_names_its_node() {
        let t =
            parse_join_token(&format!("{{\"token\": \"{TOKEN}\", \"node\": \"gpu-1\"}}")).unwrap();
        assert_eq!(t.node.as_deref(), Some("gpu-1"));
        assert_eq!(parse_join_token(TOKEN).unwrap().node, None);
    }

    #[test_case("", "is empty"; "empty")]
    #[test_case(" \n\t", "is empty"; "blank")]
    #[test_case("{\"token\": 1}", "\"token\""; "token not a string")]
    #[test_case("{\"node\": \"a\"}", "\"token\""; "no token")]
    #[test_case("{\"token\": ", "not valid JSON"; "truncated json")]
    #[test_case("{\"token\": \"ab\", \"node\": 7}", "\"node\""; "node not a string")]
    #[test_case("secret-part-1 secret-part-2", "more than one word"; "two words")]
    #[test_case("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", "more than one word"; "a pem file")]
    fn join_token_file_errors(text: &str, want: &str) {
        let e = parse_join_token(text).unwrap_err();
        assert!(e.contains(want), "{e}");
        assert!(
            !e.contains("secret-part"),
            "the token must not be echoed: {e}"
        );
    }

    #[test]
    fn join_token_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gpu-1.token");
        std::fs::write(&p, "{}").unwrap();
        let e = read_join_token_file(&p).unwrap_err().to_string();
        assert!(e.contains("gpu-1.token") && e.contains("hint:"), "{e}");
        std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
        assert_eq!(read_join_token_file(&p).unwrap().token.as_str(), TOKEN);
    }

    #[test_case("gpu-1"; "simple")]
    #[test_case("ip-10-0-0-1.ec2.internal"; "dotted")]
    #[test_case("a"; "one letter")]
    fn good_node_names(n: &str) {
        check_node_name(n).unwrap();
        check_node_name(&"a".repeat(MAX_NODE_NAME)).unwrap();
    }

    #[test_case("a/b", "'/'"; "slash")]
    #[test_case("GPU-1", "'G'"; "upper case")]
    #[test_case("gpu_1", "'_'"; "underscore")]
    #[test_case("", "empty"; "empty")]
    #[test_case("-gpu", "start and end"; "leading dash")]
    #[test_case("gpu.", "start and end"; "trailing dot")]
    #[test_case("..", "start and end"; "dots")]
    #[test_case("gpu 1", "' '"; "space")]
    fn bad_node_names(n: &str, want: &str) {
        let e = check_node_name(n).unwrap_err();
        assert!(e.contains(want) && e.contains("DNS-1123"), "{e}");
    }

    #[test]
    fn long_node_name_is_refused_and_not_echoed_whole() {
        let e = check_node_name(&"a".repeat(300)).unwrap_err();
        assert!(e.contains("300 characters"), "{e}");
        assert!(e.len() < 400, "{e}");
    }
}
