//! The workload's own credentials (X.509-SVID, key, trust bundle) and their hot reload.
//!
//! Owns: reading the files `sigil svid fetch --out DIR` writes (`svid.pem` leaf first, `svid.key`
//! PKCS#8, `bundle.pem`), checking them (the key matches the leaf, the chain verifies against the
//! bundle), and swapping them in atomically. New handshakes read the current generation; live
//! connections keep the keys they negotiated. Must not: issue anything or log key material.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use sigil_identity::tls::BundleSource;
use sigil_identity::{
    SpiffeId, SvidUsage, TrustDomain, X509Bundle, certs_from_pem, verify_x509_svid,
};
use zeroize::Zeroizing;

/// Largest credential file read.
pub const MAX_CRED_FILE_BYTES: u64 = 1024 * 1024;

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredError {
    #[error(
        "cannot read {path}: {source}; hint: run `sigil svid fetch --out DIR` and pass --svid-dir DIR"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, more than {MAX_CRED_FILE_BYTES}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error(
        "{path}: the private key does not match the leaf certificate ({reason}); hint: the files may be mid-rotation, or from different fetches"
    )]
    KeyMismatch { path: PathBuf, reason: String },
    #[error("{path}: own SVID {id} does not verify against the bundle: {reason}")]
    OwnSvid {
        path: PathBuf,
        id: String,
        reason: String,
    },
}

/// A time as RFC 3339 in UTC (`2026-11-23T00:32:00Z`), as log fields and messages show times.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

/// One generation of credentials.
pub struct Credentials {
    id: SpiffeId,
    not_after: SystemTime,
    certified: Arc<CertifiedKey>,
    bundle: Arc<X509Bundle>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("not_after", &rfc3339(self.not_after))
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Builds credentials from a chain (leaf first), its key and the trust bundle. Checks that the
    /// key matches the leaf and that the chain is a valid SVID under the bundle now.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundle: X509Bundle,
        origin: &Path,
    ) -> Result<Self, CredError> {
        let provider = crate::tls::provider();
        let leaf_svid = chain
            .first()
            .map(|leaf| sigil_identity::inspect_leaf(leaf))
            .transpose()
            .map_err(|e| CredError::Parse {
                path: origin.join("svid.pem"),
                reason: e.to_string(),
            })?
            .ok_or_else(|| CredError::Parse {
                path: origin.join("svid.pem"),
                reason: "no certificate".to_owned(),
            })?;
        // Our SVID serves both roles (inbound server, outbound client).
        for usage in [SvidUsage::Server, SvidUsage::Client] {
            verify_x509_svid(&chain, &bundle, usage, UnixTime::now()).map_err(|e| {
                CredError::OwnSvid {
                    path: origin.join("svid.pem"),
                    id: leaf_svid.spiffe_id.to_string(),
                    reason: e.to_string(),
                }
            })?;
        }
        let certified =
            CertifiedKey::from_der(chain, key, &provider).map_err(|e| CredError::KeyMismatch {
                path: origin.join("svid.key"),
                reason: e.to_string(),
            })?;
        Ok(Self {
            id: leaf_svid.spiffe_id,
            not_after: leaf_svid.not_after,
            certified: Arc::new(certified),
            bundle: Arc::new(bundle),
        })
    }

    /// Parses PEM texts: `svid_pem` (leaf first), `key_pem` (PKCS#8), `bundle_pem`.
    pub fn from_pem(
        svid_pem: &[u8],
        key_pem: &[u8],
        bundle_pem: &[u8],
        origin: &Path,
    ) -> Result<Self, CredError> {
        let chain = certs_from_pem(svid_pem).map_err(|e| CredError::Parse {
            path: origin.join("svid.pem"),
            reason: e.to_string(),
        })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CredError::Parse {
            path: origin.join("svid.key"),
            reason: format!("no usable private key: {e}"),
        })?;
        let td = chain
            .first()
            .and_then(|leaf| sigil_identity::inspect_leaf(leaf).ok())
            .map(|l| l.spiffe_id.trust_domain())
            .ok_or_else(|| CredError::Parse {
                path: origin.join("svid.pem"),
                reason: "leaf is not an X.509-SVID".to_owned(),
            })?;
        let bundle = X509Bundle::from_pem(td, bundle_pem).map_err(|e| CredError::Parse {
            path: origin.join("bundle.pem"),
            reason: e.to_string(),
        })?;
        Self::new(chain, key, bundle, origin)
    }

    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }

    /// Same certificate chain and trust anchors.
    fn same_as(&self, other: &Credentials) -> bool {
        self.certified.cert == other.certified.cert && self.bundle == other.bundle
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub fn trust_domain(&self) -> TrustDomain {
        self.id.trust_domain()
    }

    pub fn bundle(&self) -> &Arc<X509Bundle> {
        &self.bundle
    }
}

/// The current credentials, swappable at run time. Implements the rustls resolvers and the
/// bundle source, so one `ServerConfig`/`ClientConfig` serves every generation.
#[derive(Debug)]
pub struct CredentialStore {
    current: RwLock<Arc<Credentials>>,
    generation: AtomicU64,
    /// The generation, for tasks that act on a change (re-authorization after a bundle change).
    changes: tokio::sync::watch::Sender<u64>,
}

impl CredentialStore {
    pub fn new(c: Credentials) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(c)),
            generation: AtomicU64::new(1),
            changes: tokio::sync::watch::Sender::new(1),
        })
    }

    /// The credentials new handshakes use.
    pub fn current(&self) -> Arc<Credentials> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Swaps in new credentials; live connections are not touched.
    pub fn replace(&self, c: Credentials) {
        let c = Arc::new(c);
        match self.current.write() {
            Ok(mut g) => *g = c,
            Err(poisoned) => *poisoned.into_inner() = c,
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.changes.send_replace(generation);
    }

    /// Notified on every replacement.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Increments on every replacement (starts at 1).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

impl BundleSource for CredentialStore {
    fn x509_bundle(&self, td: &TrustDomain) -> Option<Arc<X509Bundle>> {
        let c = self.current();
        (c.bundle.trust_domain() == td).then(|| Arc::clone(&c.bundle))
    }
}

/// rustls resolver over a [`CredentialStore`].
#[derive(Debug)]
pub(crate) struct StoreResolver(pub(crate) Arc<CredentialStore>);

impl ResolvesServerCert for StoreResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let c = self.0.current();
        if c.not_after <= SystemTime::now() {
            tracing::error!(id = %c.id, "own SVID has expired and no renewal was loaded; refusing handshakes");
            return None;
        }
        Some(Arc::clone(&c.certified))
    }
}

impl ResolvesClientCert for StoreResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let c = self.0.current();
        if c.not_after <= SystemTime::now() {
            tracing::error!(id = %c.id, "own SVID has expired and no renewal was loaded; not presenting it");
            return None;
        }
        Some(Arc::clone(&c.certified))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Credentials from a directory written by `sigil svid fetch --out DIR`.
#[derive(Debug, Clone)]
pub struct FileSource {
    dir: PathBuf,
}

type Fingerprint = [(Option<SystemTime>, u64); 3];

impl FileSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self) -> [PathBuf; 3] {
        [
            self.dir.join("svid.pem"),
            self.dir.join("svid.key"),
            self.dir.join("bundle.pem"),
        ]
    }

    /// Reads and checks the three files.
    pub fn load(&self) -> Result<Credentials, CredError> {
        let [svid, key, bundle] = self.paths();
        let svid_pem = read_limited(&svid)?;
        let key_pem = read_limited(&key)?;
        let bundle_pem = read_limited(&bundle)?;
        Credentials::from_pem(&svid_pem, &key_pem, &bundle_pem, &self.dir)
    }

    fn fingerprint(&self) -> Fingerprint {
        self.paths().map(|p| match std::fs::metadata(&p) {
            Ok(m) => (m.modified().ok(), m.len()),
            Err(_) => (None, 0),
        })
    }

    /// Polls the files every `interval` and swaps in new credentials when they change and check
    /// out. A half-written rotation (key not matching the leaf yet) is retried on the next poll.
    pub async fn watch(self, store: Arc<CredentialStore>, interval: Duration) {
        // No fingerprint yet: the first poll reloads and compares, so a change between the initial
        // load and the start of the watch is not missed.
        let mut last: Option<Fingerprint> = None;
        let mut failed = false;
        let mut warned_expiry = false;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Some(self.fingerprint());
            if now == last && !failed {
                let cur = store.current();
                let left = cur
                    .not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                if left < Duration::from_secs(60) && !warned_expiry {
                    warned_expiry = true;
                    tracing::warn!(id = %cur.id, seconds_left = left.as_secs(), dir = %self.dir.display(),
                        "own SVID expires soon and the files have not been renewed; hint: is `sigil svid fetch` running?");
                }
                continue;
            }
            last = now;
            match self.load() {
                Ok(c) if c.same_as(&store.current()) => failed = false,
                Ok(c) => {
                    failed = false;
                    warned_expiry = false;
                    tracing::info!(id = %c.id, not_after = %rfc3339(c.not_after), generation = store.generation() + 1,
                        "loaded rotated SVID; new handshakes use it, live connections continue");
                    store.replace(c);
                }
                Err(e) => {
                    if !failed {
                        tracing::warn!(error = %e, "rotated credentials do not check out yet; keeping the current ones");
                    }
                    failed = true;
                }
            }
        }
    }
}

fn read_limited(path: &Path) -> Result<Zeroizing<Vec<u8>>, CredError> {
    let meta = std::fs::metadata(path).map_err(|source| CredError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > MAX_CRED_FILE_BYTES {
        return Err(CredError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| CredError::Read {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
    }
}
