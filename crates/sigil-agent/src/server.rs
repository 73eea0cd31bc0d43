//! The real issuer: `sigil server`, reached over HTTPS pinned to the trust bundle (docs/api.md),
//! plus the agent's own node identity.
//!
//! Node attestation: a single-use join token (the CSR's key is registered as the node key), or a
//! projected Kubernetes service-account token when the agent runs as a DaemonSet. The agent's
//! SVID is renewed at half-life over mTLS (`/v1/agent/renew`); if it expired during a long
//! outage the agent re-attests on its own: with the registered node key
//! (`/v1/agent/reattest`), or with a fresh service-account token. No restart is needed.
//!
//! Owns: the node key (0600 on disk, zeroized in memory), the agent SVID, the mTLS client.
//! Must not: attest workloads (the agent did) or cache workload SVIDs (that is the cache).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_ca::client::{Client, ClientError, KeyAndCsr, Proof, X509Answer};
use sigil_identity::{JwkSet, JwtBundle, SpiffeId, TrustDomain, X509Bundle};
use tokio::sync::{Notify, RwLock, watch};
use zeroize::Zeroizing;

use crate::authority::{AuthorityError, Bundles, IssuedJwt, IssuedX509, SvidAuthority, jwt_expiry};
use crate::metrics::Metrics;

/// How the agent proves its node.
#[derive(Debug, Clone)]
pub enum NodeProof {
    /// File holding a single-use join token (`sigil server join-token`).
    JoinTokenFile(PathBuf),
    /// File holding a projected service-account token (re-read on every attestation).
    KubernetesTokenFile(PathBuf),
}

/// Settings of the server connection.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `https://host:port`.
    pub url: String,
    /// PEM trust bundle given out of band.
    pub bundle_pem: Vec<u8>,
    pub trust_domain: TrustDomain,
    /// Node name (the agent's ID is `spiffe://<td>/sigil/agent/<node>` for join tokens).
    pub node: String,
    /// Where the node key and agent SVID are kept (0600).
    pub data_dir: PathBuf,
    pub proof: Option<NodeProof>,
}

/// Why the node could not attest.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("bad trust bundle: {0}")]
    Bundle(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no node identity yet and no way to get one; hint: pass --join-token-file (from `sigil server join-token`) or --k8s-token-file"
    )]
    NoProof,
    #[error("server answered with a bad SVID: {0}")]
    BadSvid(String),
    #[error(
        "join token file {path} is for node {token_node:?}, but this agent is node {node:?}; hint: pass --node {token_node}, or create a token for {node:?} with `sigil server join-token --node {node}`"
    )]
    WrongNode {
        path: PathBuf,
        token_node: String,
        node: String,
    },
}

struct NodeState {
    client: Client,
    not_after: SystemTime,
    issued_at: SystemTime,
    spiffe_id: String,
}

/// `sigil server` as [`SvidAuthority`], with the agent's node identity kept fresh.
pub struct ServerAuthority {
    settings: ServerSettings,
    bundle: std::sync::RwLock<X509Bundle>,
    /// Public client (bundles), trusting the bundle.
    public: std::sync::RwLock<Client>,
    node: RwLock<NodeState>,
    reattest: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ServerAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAuthority")
            .field("url", &self.settings.url)
            .field("node", &self.settings.node)
            .finish_non_exhaustive()
    }
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::File {
        path: path.to_owned(),
        source,
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), NodeError> {
    sigil_ca::server::write_private(path, data).map_err(|e| NodeError::File {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })
}

fn leaf_times(svid_pem: &str) -> Result<(SystemTime, String), NodeError> {
    let chain = sigil_identity::certs_from_pem(svid_pem.as_bytes())
        .map_err(|e| NodeError::BadSvid(e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| NodeError::BadSvid("empty chain".to_owned()))?;
    let info = sigil_identity::inspect_leaf(leaf).map_err(|e| NodeError::BadSvid(e.to_string()))?;
    Ok((info.not_after, info.spiffe_id.to_string()))
}

fn to_unavailable(e: ClientError) -> AuthorityError {
    match e {
        ClientError::Refused {
            status,
            code,
            reason,
        } if status == 403 || status == 400 => {
            AuthorityError::Refused(format!("{status} {code}: {reason}"))
        }
        other => AuthorityError::Unavailable(other.to_string()),
    }
}

fn csr_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE REQUEST-----\n");
    s
}

impl ServerAuthority {
    fn key_path(&self) -> PathBuf {
        self.settings.data_dir.join("node.key")
    }
    fn svid_path(&self) -> PathBuf {
        self.settings.data_dir.join("agent-svid.pem")
    }

    /// Attests the node (or reuses a still-valid SVID from the data directory).
    pub async fn connect(
        settings: ServerSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, NodeError> {
        let bundle = X509Bundle::from_pem(settings.trust_domain.clone(), &settings.bundle_pem)
            .map_err(|e| NodeError::Bundle(e.to_string()))?;
        let public = Client::new(&settings.url, &bundle, None)?;
        std::fs::create_dir_all(&settings.data_dir).map_err(file_err(&settings.data_dir))?;
        // Placeholder node state, replaced by `obtain` before anyone can use it.
        let me = Self {
            node: RwLock::new(NodeState {
                client: public.clone(),
                not_after: SystemTime::UNIX_EPOCH,
                issued_at: SystemTime::UNIX_EPOCH,
                spiffe_id: String::new(),
            }),
            bundle: std::sync::RwLock::new(bundle),
            public: std::sync::RwLock::new(public),
            settings,
            reattest: Notify::new(),
            metrics,
        };
        me.load_or_attest().await?;
        Ok(Arc::new(me))
    }

    /// The agent's own SPIFFE ID and expiry.
    pub async fn node_identity(&self) -> (String, SystemTime) {
        let n = self.node.read().await;
        (n.spiffe_id.clone(), n.not_after)
    }

    async fn install(&self, key_pem: &str, answer: &X509Answer) -> Result<(), NodeError> {
        let (not_after, id) = leaf_times(&answer.svid)?;
        let bundle = self.current_bundle();
        let client = Client::new(&self.settings.url, &bundle, Some((&answer.svid, key_pem)))?;
        write_private(&self.svid_path(), answer.svid.as_bytes())?;
        let mut n = self.node.write().await;
        *n = NodeState {
            client,
            not_after,
            issued_at: SystemTime::now(),
            spiffe_id: id.clone(),
        };
        drop(n);
        let exp = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.metrics.set_own_svid_expiry(exp);
        tracing::info!(spiffe_id = %id, "agent SVID installed");
        Ok(())
    }

    fn current_bundle(&self) -> X509Bundle {
        match self.bundle.read() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn read_key(&self) -> Result<Option<Zeroizing<String>>, NodeError> {
        let p = self.key_path();
        match std::fs::read_to_string(&p) {
            Ok(k) => Ok(Some(Zeroizing::new(k))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(file_err(&p)(e)),
        }
    }

    /// Reuses the stored SVID if valid; otherwise re-attests with the node key, a k8s token, or
    /// the join token, in that order.
    async fn load_or_attest(&self) -> Result<(), NodeError> {
        let key = self.read_key()?;
        if let (Some(key), Ok(svid)) = (&key, std::fs::read_to_string(self.svid_path()))
            && let Ok((not_after, _)) = leaf_times(&svid)
            && not_after > SystemTime::now() + Duration::from_secs(5)
        {
            let answer = X509Answer {
                spiffe_id: String::new(),
                svid,
                bundle: String::new(),
                expires_at: String::new(),
            };
            return self.install(key, &answer).await;
        }
        self.attest().await
    }

    /// Obtains a fresh agent SVID without a valid current one.
    async fn attest(&self) -> Result<(), NodeError> {
        let public = self
            .public
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        if let Some(NodeProof::KubernetesTokenFile(f)) = &self.settings.proof {
            let token = Zeroizing::new(
                std::fs::read_to_string(f)
                    .map_err(file_err(f))?
                    .trim()
                    .to_owned(),
            );
            let kc = KeyAndCsr::generate()?;
            let answer = public
                .attest_x509(&Proof::KubernetesToken(token), &kc.csr_pem)
                .await?;
            return self.install(&kc.key_pem, &answer).await;
        }
        if let Some(key) = self.read_key()? {
            let kc = KeyAndCsr::from_key_pem(&key)?;
            let answer = public.reattest(&self.settings.node, &kc.csr_pem).await?;
            tracing::info!(node = %self.settings.node, "re-attested with the registered node key");
            return self.install(&key, &answer).await;
        }
        if let Some(NodeProof::JoinTokenFile(f)) = &self.settings.proof {
            // The JSON `sigil server join-token` prints, or the bare token.
            let file = sigil_ca::client::read_join_token_file(f)?;
            if let Some(made_for) = file.node.as_deref()
                && made_for != self.settings.node
            {
                return Err(NodeError::WrongNode {
                    path: f.clone(),
                    token_node: made_for.to_owned(),
                    node: self.settings.node.clone(),
                });
            }
            let kc = KeyAndCsr::generate()?;
            let answer = public
                .attest_x509(&Proof::JoinToken(file.token), &kc.csr_pem)
                .await?;
            // The CSR's key is now the node key: keep it for re-attestation.
            write_private(&self.key_path(), kc.key_pem.as_bytes())?;
            tracing::info!(node = %self.settings.node, "node attested with a join token");
            return self.install(&kc.key_pem, &answer).await;
        }
        Err(NodeError::NoProof)
    }

    /// Renews (or, if expired, re-obtains) the agent SVID once.
    pub async fn refresh_node(&self) -> Result<(), NodeError> {
        let (expired, client) = {
            let n = self.node.read().await;
            (
                n.not_after <= SystemTime::now() + Duration::from_secs(2),
                n.client.clone(),
            )
        };
        if expired {
            tracing::warn!("agent SVID expired; re-attesting the node");
            return self.attest().await;
        }
        let key = match self.read_key()? {
            Some(k) => k,
            None => Zeroizing::new(KeyAndCsr::generate()?.key_pem.to_string()),
        };
        let kc = KeyAndCsr::from_key_pem(&key)?;
        match client.renew(&kc.csr_pem).await {
            Ok(answer) => self.install(&key, &answer).await,
            Err(ClientError::Refused { status: 401, .. }) => self.attest().await,
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps the agent SVID fresh: renews at half-life (with jitter), retries with backoff,
    /// re-attests after expiry. Runs until `shutdown` turns true.
    pub async fn run_node_renewal(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            let wait = if failures > 0 {
                Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
            } else {
                let n = self.node.read().await;
                let life = n.not_after.duration_since(n.issued_at).unwrap_or_default();
                let at = n.issued_at + life.mul_f64(0.5 - 0.1 * fastrand::f64());
                at.duration_since(SystemTime::now()).unwrap_or_default()
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.reattest.notified() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            match self.refresh_node().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "cannot renew the agent SVID; cached workload SVIDs stay in service until they expire");
                }
            }
        }
    }

    async fn client(&self) -> Client {
        self.node.read().await.client.clone()
    }

    fn note_refusal(&self, e: &ClientError) {
        if matches!(e, ClientError::Refused { status: 401, .. }) {
            self.reattest.notify_one();
        }
    }
}

#[tonic::async_trait]
impl SvidAuthority for ServerAuthority {
    async fn issue_x509(
        &self,
        id: &SpiffeId,
        csr_der: &[u8],
    ) -> Result<IssuedX509, AuthorityError> {
        let c = self.client().await;
        let a = c
            .agent_x509(&id.to_string(), &csr_pem(csr_der))
            .await
            .map_err(|e| {
                self.note_refusal(&e);
                to_unavailable(e)
            })?;
        let chain = sigil_identity::certs_from_pem(a.svid.as_bytes()).map_err(|e| {
            AuthorityError::Invalid {
                what: "X.509-SVID",
                reason: e.to_string(),
            }
        })?;
        Ok(IssuedX509 { chain })
    }

    async fn issue_jwt(
        &self,
        id: &SpiffeId,
        audience: &[String],
    ) -> Result<IssuedJwt, AuthorityError> {
        let c = self.client().await;
        let a = c.agent_jwt(&id.to_string(), audience).await.map_err(|e| {
            self.note_refusal(&e);
            to_unavailable(e)
        })?;
        let expires_at = jwt_expiry(&a.token)?;
        Ok(IssuedJwt {
            token: a.token,
            expires_at,
        })
    }

    async fn bundles(&self) -> Result<Bundles, AuthorityError> {
        let c = self
            .public
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let pem = c.get_text("/v1/bundle.pem").await.map_err(to_unavailable)?;
        let x509 = X509Bundle::from_pem(self.settings.trust_domain.clone(), pem.as_bytes())
            .map_err(|e| AuthorityError::Invalid {
                what: "X.509 bundle",
                reason: e.to_string(),
            })?;
        let jwks = c.get_text("/keys").await.map_err(to_unavailable)?;
        let keys = JwkSet::from_json(jwks.as_bytes()).map_err(|e| AuthorityError::Invalid {
            what: "JWT bundle",
            reason: e.to_string(),
        })?;
        // Trust follows the server's bundle (CA rotation publishes the next root first).
        if let Ok(mut b) = self.bundle.write() {
            *b = x509.clone();
        }
        Ok(Bundles {
            x509,
            jwt: JwtBundle {
                trust_domain: self.settings.trust_domain.clone(),
                keys,
            },
        })
    }
}
