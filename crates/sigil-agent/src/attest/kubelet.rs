//! The kubelet's pod list (`GET /pods` on the kubelet's port 10250): which pod and container a
//! cgroup belongs to, and that pod's namespace, service account, labels and image.
//!
//! Owns: parsing the kubelet's `PodList` JSON (bounded), the HTTPS client, and a short-lived
//! cache. Must not: trust a pod that is not running this container, or fall back to plaintext.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::cgroup::ContainerRef;

/// Largest pod list accepted (a node runs at most a few hundred pods).
pub const MAX_POD_LIST_BYTES: usize = 32 * 1024 * 1024;
/// A cached pod list is used for lookups that hit for at most this long.
pub const MAX_CACHE_AGE: Duration = Duration::from_secs(10);

/// What the kubelet says about the pod and container a process runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub node_name: String,
    pub container_name: String,
    pub image: String,
    pub image_id: String,
}

/// Why the kubelet could not place a container.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(
        "kubelet request to {url} failed: {reason}; hint: check --kubelet-url and that the agent runs on the node (hostNetwork)"
    )]
    Request { url: String, reason: String },
    #[error(
        "kubelet answered {status} for {url}; hint: the agent's service account needs `nodes/proxy` get permission"
    )]
    Status { url: String, status: u16 },
    #[error("kubelet pod list is more than {MAX_POD_LIST_BYTES} bytes")]
    TooLarge,
    #[error("kubelet pod list is not a PodList: {0}")]
    Malformed(String),
    #[error("no running container {container_id} in pod {pod_uid} on this node's kubelet")]
    NotFound {
        pod_uid: String,
        container_id: String,
    },
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kubelet TLS settings are invalid: {0}")]
    Tls(String),
}

#[derive(Debug, Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Debug, Deserialize)]
struct Pod {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    service_account_name: String,
    #[serde(default)]
    node_name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    init_container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    #[serde(default)]
    name: String,
    /// `<runtime>://<id>`, absent until the container is created.
    #[serde(default, rename = "containerID")]
    container_id: Option<String>,
    #[serde(default)]
    image: String,
    #[serde(default, rename = "imageID")]
    image_id: String,
}

/// A parsed pod list, searchable by pod UID and container ID.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_container: BTreeMap<(String, String), PodFacts>,
}

impl PodIndex {
    /// Parses the kubelet's `/pods` JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, KubeletError> {
        if bytes.len() > MAX_POD_LIST_BYTES {
            return Err(KubeletError::TooLarge);
        }
        let list: PodList =
            serde_json::from_slice(bytes).map_err(|e| KubeletError::Malformed(e.to_string()))?;
        let mut by_container = BTreeMap::new();
        for pod in list.items {
            let statuses = pod
                .status
                .container_statuses
                .iter()
                .chain(&pod.status.init_container_statuses)
                .chain(&pod.status.ephemeral_container_statuses);
            for c in statuses {
                let Some(id) = c.container_id.as_deref() else {
                    continue;
                };
                let id = id.split_once("://").map_or(id, |(_, id)| id);
                let sa = if pod.spec.service_account_name.is_empty() {
                    "default".to_owned()
                } else {
                    pod.spec.service_account_name.clone()
                };
                by_container.insert(
                    (pod.metadata.uid.clone(), id.to_owned()),
                    PodFacts {
                        namespace: pod.metadata.namespace.clone(),
                        pod_name: pod.metadata.name.clone(),
                        pod_uid: pod.metadata.uid.clone(),
                        service_account: sa,
                        labels: pod.metadata.labels.clone(),
                        node_name: pod.spec.node_name.clone(),
                        container_name: c.name.clone(),
                        image: c.image.clone(),
                        image_id: c.image_id.clone(),
                    },
                );
            }
        }
        Ok(Self { by_container })
    }

    pub fn find(&self, r: &ContainerRef) -> Option<&PodFacts> {
        self.by_container
            .get(&(r.pod_uid.clone(), r.container_id.clone()))
    }

    pub fn len(&self) -> usize {
        self.by_container.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_container.is_empty()
    }
}

/// How to reach the kubelet.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Base URL, e.g. `https://127.0.0.1:10250`.
    pub url: String,
    /// PEM file of the CA that signed the kubelet's serving certificate.
    pub ca_file: Option<PathBuf>,
    /// Skip verification of the kubelet's certificate (kubelets often self-sign). Off by default.
    pub insecure_skip_verify: bool,
    /// Bearer token file (the agent's projected service-account token), re-read on every request.
    pub token_file: Option<PathBuf>,
}

/// Fetches and caches the kubelet's pod list.
#[derive(Debug)]
pub struct KubeletClient {
    config: KubeletConfig,
    http: reqwest::Client,
    cache: Mutex<Option<(Instant, Arc<PodIndex>)>>,
    /// Lookups that miss refetch at most this often.
    min_refresh: Duration,
    /// Attempts for a container the kubelet does not list yet (it may be starting).
    attempts: u32,
}

impl KubeletClient {
    pub fn new(config: KubeletConfig) -> Result<Self, KubeletError> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .tls_backend_rustls();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|source| KubeletError::File {
                path: ca.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| KubeletError::Tls(format!("{}: {e}", ca.display())))?;
            b = b.tls_certs_only(certs);
        }
        if config.insecure_skip_verify {
            tracing::warn!(url = %config.url, "kubelet certificate verification is disabled (--kubelet-insecure-skip-verify)");
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| KubeletError::Tls(e.to_string()))?;
        Ok(Self {
            config,
            http,
            cache: Mutex::new(None),
            min_refresh: Duration::from_millis(500),
            attempts: 5,
        })
    }

    /// Sets how many times a missing container is looked up (minimum 1), for tests.
    pub fn with_attempts(mut self, attempts: u32, min_refresh: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.min_refresh = min_refresh;
        self
    }

    /// The pod facts for a container, refetching the pod list when it is not cached.
    pub async fn lookup(&self, r: &ContainerRef) -> Result<PodFacts, KubeletError> {
        for attempt in 0..self.attempts {
            let index = self.index(attempt > 0).await?;
            if let Some(f) = index.find(r) {
                return Ok(f.clone());
            }
        }
        Err(KubeletError::NotFound {
            pod_uid: r.pod_uid.clone(),
            container_id: r.container_id.clone(),
        })
    }

    /// The cached pod list, or a fresh one when it is older than [`MAX_CACHE_AGE`] or `after_miss`
    /// (then no more often than `min_refresh`: concurrent lookups wait on the lock and share it).
    async fn index(&self, after_miss: bool) -> Result<Arc<PodIndex>, KubeletError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, idx)) = cache.as_ref() {
            let age = at.elapsed();
            if !after_miss && age < MAX_CACHE_AGE {
                return Ok(idx.clone());
            }
            if after_miss && age < self.min_refresh {
                tokio::time::sleep(self.min_refresh.saturating_sub(age)).await;
            }
        }
        let idx = Arc::new(self.fetch().await?);
        *cache = Some((Instant::now(), idx.clone()));
        Ok(idx)
    }

    async fn fetch(&self) -> Result<PodIndex, KubeletError> {
        let url = format!("{}/pods", self.config.url.trim_end_matches('/'));
        let mut req = self.http.get(&url);
        if let Some(tf) = &self.config.token_file {
            let token = std::fs::read_to_string(tf).map_err(|source| KubeletError::File {
                path: tf.clone(),
                source,
            })?;
            req = req.bearer_auth(token.trim());
        }
        let err = |e: reqwest::Error| KubeletError::Request {
            url: url.clone(),
            reason: e.to_string(),
        };
        let mut resp = req.send().await.map_err(err)?;
        if !resp.status().is_success() {
            return Err(KubeletError::Status {
                url,
                status: resp.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(err)? {
            if body.len() + chunk.len() > MAX_POD_LIST_BYTES {
                return Err(KubeletError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        PodIndex::parse(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../fixtures/kubelet/pods.json");

    #[test]
    fn parses_recorded_pod_list() {
        let idx = PodIndex::parse(FIXTURE).unwrap();
        let r = ContainerRef {
            pod_uid: "2c48913c-b29f-11e7-9350-020968147796".into(),
            container_id: "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961".into(),
        };
        let f = idx.find(&r).unwrap();
        assert_eq!(f.namespace, "rag");
        assert_eq!(f.service_account, "rag-api");
        assert_eq!(f.labels.get("app").map(String::as_str), Some("rag-api"));
        assert_eq!(f.container_name, "api");
        assert_eq!(f.node_name, "gpu-node-1");
        assert!(f.image.starts_with("registry.ai.example.org/rag-api"));
        // A container ID from another pod does not match this pod's UID.
        let wrong = ContainerRef {
            pod_uid: "2c48913c-b29f-11e7-9350-020968147796".into(),
            container_id: "1111111111111111111111111111111111111111111111111111111111111111".into(),
        };
        assert!(idx.find(&wrong).is_none());
    }

    #[test]
    fn rejects_non_json() {
        assert!(matches!(
            PodIndex::parse(b"<html>"),
            Err(KubeletError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = PodIndex::parse(&b);
        }
    }
}
