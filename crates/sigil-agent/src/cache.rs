//! The SVID cache: X.509-SVIDs pre-issued for every workload in the policy, rotated at half-life
//! with jitter, published as immutable [`Snapshot`]s that Workload API streams watch.
//!
//! Owns: private keys of workload SVIDs (generated here, never sent to the issuer), rotation
//! timing, retry with backoff while the issuer is down, dropping SVIDs when they expire, bundle
//! refresh, and the JWT-SVID cache. Must not: attest callers or speak gRPC.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_identity::{SpiffeId, SvidUsage};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use crate::authority::{AuthorityError, Bundles, IssuedJwt, SvidAuthority};
use crate::metrics::Metrics;

/// Rotation tuning.
#[derive(Debug, Clone)]
pub struct RotationSettings {
    /// Up to this fraction of the lifetime is taken off the half-life, at random, so SVIDs issued
    /// together do not all renew together. 0.0 to 0.4.
    pub jitter: f64,
    /// Issuances in flight at once.
    pub concurrency: usize,
    /// First retry delay after a failed issuance; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How often bundles are refetched (also on every rotation pass that issues).
    pub bundle_refresh: Duration,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            jitter: 0.1,
            concurrency: 32,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            bundle_refresh: Duration::from_secs(60),
        }
    }
}

/// One X.509-SVID with its private key.
pub struct CachedSvid {
    pub id: SpiffeId,
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER of the private key.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Increases with every issuance, across all SVIDs: a changed SVID has a new version.
    pub version: u64,
}

impl std::fmt::Debug for CachedSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedSvid")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .field("version", &self.version)
            .field("key_pkcs8", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CachedSvid {
    /// The chain as the Workload API wants it: concatenated DER.
    pub fn chain_der(&self) -> Vec<u8> {
        concat_der(&self.chain)
    }
}

/// Trust bundles with their Workload API encodings precomputed.
#[derive(Debug)]
pub struct BundleSet {
    pub version: u64,
    pub bundles: Bundles,
    /// Concatenated DER of the X.509 roots.
    pub x509_der: Vec<u8>,
    /// The JWT bundle as a JWK set document.
    pub jwks_json: Vec<u8>,
}

/// What the Workload API serves at one moment. Immutable; replaced on every change.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    /// Valid (unexpired) SVIDs by ID.
    pub svids: HashMap<SpiffeId, Arc<CachedSvid>>,
    pub bundles: Option<Arc<BundleSet>>,
}

/// Why an issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error("cannot generate a key or CSR: {0}")]
    Key(String),
    #[error("issued SVID is unusable: {0}")]
    BadSvid(String),
    #[error("no trust bundle yet; hint: the issuer has not answered a bundle request")]
    NoBundle,
}

struct Entry {
    svid: Option<Arc<CachedSvid>>,
    next_attempt: SystemTime,
    failures: u32,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<SpiffeId, Entry>,
    bundles: Option<Arc<BundleSet>>,
    /// When bundles are next fetched (`None`: at once).
    bundles_next: Option<SystemTime>,
    bundle_failures: u32,
    force_bundles: bool,
}

type JwtKey = (SpiffeId, Vec<String>);

/// Largest number of JWT-SVIDs cached.
pub const MAX_JWT_CACHE: usize = 10_000;

/// The cache. Share it as `Arc<SvidCache>`.
pub struct SvidCache {
    authority: Arc<dyn SvidAuthority>,
    settings: RotationSettings,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    tx: watch::Sender<Arc<Snapshot>>,
    wake: Notify,
    versions: AtomicU64,
    jwt: Mutex<HashMap<JwtKey, (IssuedJwt, SystemTime)>>,
}

impl std::fmt::Debug for SvidCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidCache")
            .field("authority", &self.authority)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What one rotation pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub issued: usize,
    pub failed: usize,
}

impl SvidCache {
    /// A cache for `ids`; nothing is issued until [`SvidCache::rotate_once`] or [`SvidCache::run`].
    pub fn new(
        authority: Arc<dyn SvidAuthority>,
        ids: impl IntoIterator<Item = SpiffeId>,
        settings: RotationSettings,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let now = SystemTime::now();
        let entries = ids
            .into_iter()
            .map(|id| {
                (
                    id,
                    Entry {
                        svid: None,
                        next_attempt: now,
                        failures: 0,
                    },
                )
            })
            .collect();
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Arc::new(Self {
            authority,
            settings,
            metrics,
            state: Mutex::new(State {
                entries,
                ..State::default()
            }),
            tx,
            wake: Notify::new(),
            versions: AtomicU64::new(0),
            jwt: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// The IDs the cache keeps SVIDs for.
    pub fn ids(&self) -> Vec<SpiffeId> {
        self.lock().entries.keys().cloned().collect()
    }

    /// Replaces the set of IDs (policy reload): new IDs are issued at the next pass, removed IDs
    /// disappear from the next snapshot.
    pub fn set_ids(&self, ids: impl IntoIterator<Item = SpiffeId>) {
        let now = SystemTime::now();
        let mut st = self.lock();
        let mut next = BTreeMap::new();
        for id in ids {
            let e = st.entries.remove(&id).unwrap_or(Entry {
                svid: None,
                next_attempt: now,
                failures: 0,
            });
            next.insert(id, e);
        }
        st.entries = next;
        drop(st);
        self.publish();
        self.wake.notify_one();
    }

    /// Makes every SVID due now (and refetches bundles), then wakes the rotation loop.
    pub fn force_rotation(&self) {
        let now = SystemTime::now();
        let mut st = self.lock();
        for e in st.entries.values_mut() {
            e.next_attempt = now;
            e.failures = 0;
        }
        st.force_bundles = true;
        drop(st);
        self.wake.notify_one();
    }

    /// Refetches bundles if they are missing, stale or forced. Publishes if they changed.
    pub async fn refresh_bundles(&self, force: bool) -> Result<(), AuthorityError> {
        let now = SystemTime::now();
        {
            let st = self.lock();
            let stale = st.bundles_next.is_none_or(|t| t <= now);
            if !(force || st.force_bundles || st.bundles.is_none() || stale) {
                return Ok(());
            }
        }
        let b = match self.authority.bundles().await {
            Ok(b) => b,
            Err(e) => {
                let mut st = self.lock();
                st.bundle_failures = st.bundle_failures.saturating_add(1);
                st.bundles_next = Some(now + self.backoff(st.bundle_failures));
                return Err(e);
            }
        };
        let changed = {
            let mut st = self.lock();
            st.bundles_next = Some(now + self.settings.bundle_refresh);
            st.bundle_failures = 0;
            st.force_bundles = false;
            if st.bundles.as_ref().is_some_and(|cur| cur.bundles == b) {
                false
            } else {
                let jwks_json =
                    serde_json::to_vec(&b.jwt.keys).map_err(|e| AuthorityError::Invalid {
                        what: "JWT bundle",
                        reason: e.to_string(),
                    })?;
                let x509_der = concat_der(b.x509.roots());
                st.bundles = Some(Arc::new(BundleSet {
                    version: self.versions.fetch_add(1, Ordering::Relaxed) + 1,
                    bundles: b,
                    x509_der,
                    jwks_json,
                }));
                true
            }
        };
        if changed {
            tracing::info!("trust bundle updated");
            self.publish();
        }
        Ok(())
    }

    /// Issues one X.509-SVID for `id` with a fresh key, and checks what came back.
    pub async fn issue(&self, id: &SpiffeId) -> Result<CachedSvid, IssueError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| IssueError::Key(e.to_string()))?;
        let csr = CertificateParams::new(Vec::<String>::new())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| IssueError::Key(e.to_string()))?;
        let issued = self.authority.issue_x509(id, csr.der()).await?;
        let leaf = issued
            .chain
            .first()
            .ok_or_else(|| IssueError::BadSvid("empty chain".to_owned()))?;
        let info =
            sigil_identity::inspect_leaf(leaf).map_err(|e| IssueError::BadSvid(e.to_string()))?;
        if &info.spiffe_id != id {
            return Err(IssueError::BadSvid(format!(
                "asked for {id}, the issuer signed {}",
                info.spiffe_id
            )));
        }
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| IssueError::BadSvid(e.to_string()))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(IssueError::BadSvid(format!(
                "the SVID for {id} does not carry the key the agent generated"
            )));
        }
        let verify = |b: &BundleSet| {
            sigil_identity::verify_x509_svid(
                &issued.chain,
                &b.bundles.x509,
                SvidUsage::Client,
                UnixTime::now(),
            )
        };
        let bundle = self.lock().bundles.clone().ok_or(IssueError::NoBundle)?;
        if verify(&bundle).is_err() {
            // Perhaps the CA rotated since the bundle was fetched: refetch once, then decide.
            if let Err(e) = self.refresh_bundles(true).await {
                tracing::warn!(error = %e, "cannot refresh trust bundles");
            }
            let bundle = self.lock().bundles.clone().ok_or(IssueError::NoBundle)?;
            verify(&bundle).map_err(|e| {
                IssueError::BadSvid(format!("does not verify against the trust bundle: {e}"))
            })?;
        }
        Ok(CachedSvid {
            id: id.clone(),
            chain: issued.chain,
            key_pkcs8: Zeroizing::new(key.serialize_der()),
            not_before: info.not_before,
            not_after: info.not_after,
            version: self.versions.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }

    /// When an SVID issued now and valid until `not_after` should be renewed: at half its
    /// remaining life, minus up to `jitter` of that life at random.
    fn renew_at(&self, now: SystemTime, not_after: SystemTime) -> SystemTime {
        let life = not_after.duration_since(now).unwrap_or_default();
        let jitter = self.settings.jitter.clamp(0.0, 0.4) * fastrand::f64();
        now + life.mul_f64(0.5 - jitter)
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .settings
            .retry_min
            .saturating_mul(1u32 << failures.min(16));
        exp.min(self.settings.retry_max)
            .mul_f64(0.8 + 0.4 * fastrand::f64())
    }

    /// One pass: refresh bundles if needed, issue every due SVID, publish once.
    pub async fn rotate_once(self: &Arc<Self>) -> PassReport {
        let mut report = PassReport::default();
        let now = SystemTime::now();
        // SVIDs due within the next second join this pass: fewer wake-ups and snapshots.
        let horizon = now + Duration::from_secs(1);
        let due: Vec<SpiffeId> = {
            let st = self.lock();
            st.entries
                .iter()
                .filter(|(_, e)| e.next_attempt <= horizon)
                .map(|(id, _)| id.clone())
                .collect()
        };
        if let Err(e) = self.refresh_bundles(false).await {
            tracing::warn!(error = %e, "cannot refresh trust bundles; serving the cached ones");
        }
        let mut due = due.into_iter();
        let mut set: JoinSet<(SpiffeId, Result<CachedSvid, IssueError>)> = JoinSet::new();
        let mut done = Vec::new();
        loop {
            while set.len() < self.settings.concurrency.max(1) {
                let Some(id) = due.next() else { break };
                let me = self.clone();
                set.spawn(async move {
                    let r = me.issue(&id).await;
                    (id, r)
                });
            }
            match set.join_next().await {
                Some(Ok(r)) => done.push(r),
                Some(Err(e)) => tracing::error!(error = %e, "issuance task failed"),
                None => break,
            }
        }
        let now = SystemTime::now();
        {
            let mut st = self.lock();
            for (id, r) in done {
                let Some(e) = st.entries.get_mut(&id) else {
                    continue;
                };
                match r {
                    Ok(svid) => {
                        e.next_attempt = self.renew_at(now, svid.not_after);
                        e.failures = 0;
                        tracing::debug!(%id, "X.509-SVID issued");
                        e.svid = Some(Arc::new(svid));
                        report.issued += 1;
                        self.metrics.rotation(true);
                    }
                    Err(err) => {
                        e.failures = e.failures.saturating_add(1);
                        e.next_attempt = now + self.backoff(e.failures);
                        let valid = e.svid.as_ref().is_some_and(|s| s.not_after > now);
                        tracing::warn!(%id, error = %err, serving_cached = valid, "cannot renew X.509-SVID");
                        report.failed += 1;
                        self.metrics.rotation(false);
                    }
                }
            }
        }
        self.publish();
        report
    }

    /// The next time the loop must wake: a due rotation, an expiry, or a bundle refresh.
    fn next_wake(&self) -> SystemTime {
        let st = self.lock();
        let mut next = st.bundles_next.unwrap_or_else(SystemTime::now);
        for e in st.entries.values() {
            next = next.min(e.next_attempt);
            if let Some(s) = &e.svid {
                next = next.min(s.not_after);
            }
        }
        next
    }

    /// Builds and sends a snapshot of the valid SVIDs and bundles, if anything changed.
    pub fn publish(&self) {
        let now = SystemTime::now();
        let st = self.lock();
        let svids: HashMap<SpiffeId, Arc<CachedSvid>> = st
            .entries
            .iter()
            .filter_map(|(id, e)| {
                e.svid
                    .as_ref()
                    .filter(|s| s.not_after > now)
                    .map(|s| (id.clone(), s.clone()))
            })
            .collect();
        let bundles = st.bundles.clone();
        drop(st);
        self.metrics.set_cached_svids(svids.len());
        let cur = self.snapshot();
        let same = cur.svids.len() == svids.len()
            && svids
                .iter()
                .all(|(id, s)| cur.svids.get(id).is_some_and(|c| c.version == s.version))
            && cur.bundles.as_ref().map(|b| b.version) == bundles.as_ref().map(|b| b.version);
        if same {
            return;
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        self.tx.send_replace(Arc::new(Snapshot {
            version,
            svids,
            bundles,
        }));
    }

    /// Runs the rotation loop until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let r = self.rotate_once().await;
            if r.issued + r.failed > 0 {
                tracing::debug!(issued = r.issued, failed = r.failed, "rotation pass");
            }
            let wait = self
                .next_wake()
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .max(Duration::from_millis(20));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// A JWT-SVID for `id` and `audience`: cached until half its life, fetched otherwise; while
    /// the issuer is down a cached token is served until it expires.
    pub async fn jwt_svid(
        &self,
        id: &SpiffeId,
        audience: &[String],
    ) -> Result<IssuedJwt, AuthorityError> {
        let mut aud = audience.to_vec();
        aud.sort();
        aud.dedup();
        let key = (id.clone(), aud);
        let now = SystemTime::now();
        let cached = self
            .jwt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some((tok, fetched)) = &cached {
            let life = tok.expires_at.duration_since(*fetched).unwrap_or_default();
            if now < *fetched + life / 2 {
                return Ok(tok.clone());
            }
        }
        match self.authority.issue_jwt(id, &key.1).await {
            Ok(tok) => {
                let mut m = self
                    .jwt
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if m.len() >= MAX_JWT_CACHE {
                    m.retain(|_, (t, _)| t.expires_at > now);
                    if m.len() >= MAX_JWT_CACHE {
                        m.clear();
                    }
                }
                m.insert(key, (tok.clone(), now));
                Ok(tok)
            }
            Err(e) => match cached {
                Some((tok, _)) if tok.expires_at > now + Duration::from_secs(5) => {
                    tracing::warn!(%id, error = %e, "issuer unavailable; serving cached JWT-SVID");
                    Ok(tok)
                }
                _ => Err(e),
            },
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn authority(&self) -> &Arc<dyn SvidAuthority> {
        &self.authority
    }
}

fn concat_der(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(certs.iter().map(|c| c.len()).sum());
    for c in certs {
        out.extend_from_slice(c);
    }
    out
}
