//! The key service: the barrier, the keyring, authorization and persistence put together.
//!
//! Owns: the records (`transit/keys/<name>/config`, `transit/keys/<name>/v/<N>`,
//! `core/root-token`, all through the barrier), the order of writes that makes a crash lose
//! nothing (a new version and the configuration naming it as latest are one atomic, durable
//! commit, and the in-memory key changes only after it returned; an encryption-count
//! reservation is durable before the encryptions it covers), auto-rotation (before the next
//! encryption once a version is too old or too used, and in [`KeyService::maintain`]), and
//! clearing every key from memory on seal. Must not: serve a key operation while sealed, or
//! skip [`authz::authorize`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use sigil_policy::Policy;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::aead::{self, KEY_LEN, KeyType};
use crate::authz::{self, Caller, Denial, Operation};
use crate::barrier::{Barrier, BarrierError, SealStatus};
use crate::keyring::{self, ConfigUpdate, KeyConfig, Limits, NamedKey, RotateReason, TransitError};
use crate::store::{Expect, Store, StoreError, Write};

const ROOT_TOKEN: &str = "core/root-token";
const KEYS_PREFIX: &str = "transit/keys/";

fn config_name(key: &str) -> String {
    format!("{KEYS_PREFIX}{key}/config")
}

fn version_name(key: &str, v: u32) -> String {
    format!("{KEYS_PREFIX}{key}/v/{v}")
}

/// Why a key-service request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "the key service is sealed; hint: submit unseal key shares (`PUT /v1/sys/unseal`) or start it with its auto-unseal key file"
    )]
    Sealed,
    #[error(transparent)]
    Denied(#[from] Denial),
    #[error(
        "encryption key not found: no key named {0:?}; hint: create it (POST /v1/transit/keys/{0}) or encrypt with it first"
    )]
    NotFound(String),
    #[error("key {0:?} already exists")]
    Exists(String),
    #[error(
        "deletion is not allowed for key {0:?}; hint: set deletion_allowed=true with keys/{0}/config first"
    )]
    DeletionNotAllowed(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(
        "missing or invalid token; hint: send X-Vault-Token with the root token from init or a token from auth/kubernetes/login"
    )]
    BadToken,
    #[error(transparent)]
    Transit(#[from] TransitError),
    #[error(transparent)]
    Barrier(BarrierError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<BarrierError> for ServiceError {
    fn from(e: BarrierError) -> Self {
        match e {
            BarrierError::Sealed => ServiceError::Sealed,
            BarrierError::Store(s) => ServiceError::Store(s),
            other => ServiceError::Barrier(other),
        }
    }
}

/// What init returns, once.
pub struct InitOutput {
    /// The unseal shares (empty for a key-file seal).
    pub shares: Vec<Zeroizing<Vec<u8>>>,
    pub root_token: Zeroizing<String>,
}

impl std::fmt::Debug for InitOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InitOutput({} shares, <redacted>)", self.shares.len())
    }
}

/// One decrypted batch item.
pub type Decrypted = Result<Zeroizing<Vec<u8>>, TransitError>;

/// One plaintext to encrypt.
#[derive(Debug, Default)]
pub struct EncryptItem {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub context: Vec<u8>,
    pub associated_data: Vec<u8>,
    /// 0: the latest version.
    pub key_version: u32,
}

/// A ciphertext and the version that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    pub ciphertext: String,
    pub key_version: u32,
}

/// One ciphertext to decrypt or rewrap.
#[derive(Debug, Default, Clone)]
pub struct CiphertextItem {
    pub ciphertext: String,
    pub context: Vec<u8>,
    pub associated_data: Vec<u8>,
    /// Rewrap only: the version to re-encrypt with (0: latest).
    pub key_version: u32,
}

/// A data key (`plaintext` only for `datakey/plaintext`).
pub struct DataKey {
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
    pub ciphertext: String,
    pub key_version: u32,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &self.plaintext.as_ref().map(|_| "<redacted>"))
            .field("ciphertext", &self.ciphertext)
            .field("key_version", &self.key_version)
            .finish()
    }
}

/// How a missing key is created on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Upsert {
    pub key_type: KeyType,
}

/// Options of a key created by the admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateOptions {
    pub key_type: KeyType,
    pub derived: bool,
    /// Seconds, 0 = off.
    pub auto_rotate_period: u64,
}

struct Loaded {
    key: NamedKey,
    /// The store version of the config record (compare-and-swap).
    rec_version: u64,
}

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A fault-injection seam for crash tests: called with a label before each durable commit.
pub type CommitHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The key service.
pub struct KeyService {
    barrier: Barrier,
    policy: RwLock<Arc<Policy>>,
    keys: Mutex<HashMap<String, Arc<Mutex<Loaded>>>>,
    limits: Limits,
    clock: Clock,
    hook: Option<CommitHook>,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("barrier", &self.barrier)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, ServiceError> {
    m.lock()
        .map_err(|_| ServiceError::Invalid("internal lock poisoned by a panic".to_string()))
}

fn sha256(b: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, b).as_ref().to_vec()
}

impl KeyService {
    pub fn new(store: Arc<dyn Store>, policy: Arc<Policy>) -> Self {
        Self {
            barrier: Barrier::new(store),
            policy: RwLock::new(policy),
            keys: Mutex::new(HashMap::new()),
            limits: Limits::default(),
            clock: Arc::new(system_now),
            hook: None,
        }
    }

    /// Replace the limits (tests use small ones).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Replace the clock (unix seconds).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Install a hook called before each durable commit (crash tests).
    pub fn with_commit_hook(mut self, hook: CommitHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Swap in a reloaded policy.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        if let Ok(mut p) = self.policy.write() {
            *p = policy;
        }
    }

    fn policy(&self) -> Result<Arc<Policy>, ServiceError> {
        self.policy
            .read()
            .map(|p| p.clone())
            .map_err(|_| ServiceError::Invalid("policy lock poisoned".to_string()))
    }

    pub fn barrier(&self) -> &Barrier {
        &self.barrier
    }

    pub fn seal_status(&self) -> Result<SealStatus, ServiceError> {
        Ok(self.barrier.status()?)
    }

    fn commit(&self, label: &str, writes: &[Write]) -> Result<(), ServiceError> {
        if let Some(h) = &self.hook {
            h(label);
        }
        Ok(self.barrier.commit(writes)?)
    }

    fn new_root_token(&self) -> Result<Zeroizing<String>, ServiceError> {
        let mut raw = Zeroizing::new([0u8; 24]);
        aead::random_fill(raw.as_mut()).map_err(BarrierError::from)?;
        let token = Zeroizing::new(format!("s.{}", hex::encode(raw.as_ref())));
        let w = self
            .barrier
            .put_write(ROOT_TOKEN, Expect::Any, &sha256(token.as_bytes()))?;
        self.commit("root-token", &[w])?;
        Ok(token)
    }

    /// Initialize with Shamir shares; the service stays sealed.
    pub fn init_shamir(&self, shares: usize, threshold: usize) -> Result<InitOutput, ServiceError> {
        let out = self.barrier.init_shamir(shares, threshold)?;
        for s in out.iter().take(threshold) {
            self.barrier.submit_share(s)?;
        }
        let token = self.new_root_token();
        self.seal()?;
        Ok(InitOutput {
            shares: out,
            root_token: token?,
        })
    }

    /// Initialize for auto-unseal with a key file's key; the service is unsealed after.
    pub fn init_key_file(&self, key: &[u8; KEY_LEN]) -> Result<InitOutput, ServiceError> {
        self.barrier.init_key_file(key)?;
        self.barrier.unseal_key_file(key)?;
        Ok(InitOutput {
            shares: Vec::new(),
            root_token: self.new_root_token()?,
        })
    }

    pub fn unseal_key_file(&self, key: &[u8; KEY_LEN]) -> Result<SealStatus, ServiceError> {
        Ok(self.barrier.unseal_key_file(key)?)
    }

    pub fn submit_share(&self, share: &[u8]) -> Result<SealStatus, ServiceError> {
        Ok(self.barrier.submit_share(share)?)
    }

    /// Seal: the barrier key and every cached key version leave memory.
    pub fn seal(&self) -> Result<(), ServiceError> {
        self.barrier.seal()?;
        lock(&self.keys)?.clear();
        Ok(())
    }

    /// The admin caller, if `token` is the root token (compared in constant time).
    pub fn verify_admin(&self, token: &str) -> Result<Caller, ServiceError> {
        let (stored, _) = self
            .barrier
            .get(ROOT_TOKEN)?
            .ok_or(ServiceError::BadToken)?;
        if bool::from(stored.as_slice().ct_eq(&sha256(token.as_bytes()))) {
            Ok(Caller::admin())
        } else {
            Err(ServiceError::BadToken)
        }
    }

    fn authorize(&self, caller: &Caller, op: Operation, key: &str) -> Result<(), ServiceError> {
        if self.barrier.is_sealed() {
            return Err(ServiceError::Sealed);
        }
        keyring::check_name(key).map_err(ServiceError::Invalid)?;
        authz::authorize(&*self.policy()?, caller, op, key)?;
        Ok(())
    }

    fn load_from_store(&self, name: &str) -> Result<Option<Loaded>, ServiceError> {
        let Some((raw, rec_version)) = self.barrier.get(&config_name(name))? else {
            return Ok(None);
        };
        let config: KeyConfig = serde_json::from_slice(&raw).map_err(|e| {
            ServiceError::Invalid(format!("record {} is corrupt: {e}", config_name(name)))
        })?;
        let mut material = BTreeMap::new();
        for v in config.versions.keys() {
            let rec = version_name(name, *v);
            let (k, _) = self.barrier.get(&rec)?.ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "record {rec} is missing though {} lists it; hint: restore the data directory from backup",
                    config_name(name)
                ))
            })?;
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            if k.len() != KEY_LEN {
                return Err(ServiceError::Invalid(format!(
                    "record {rec} is {} bytes, not 32",
                    k.len()
                )));
            }
            key.copy_from_slice(&k);
            material.insert(*v, key);
        }
        Ok(Some(Loaded {
            key: NamedKey::from_parts(config, material),
            rec_version,
        }))
    }

    fn cached(&self, name: &str) -> Result<Option<Arc<Mutex<Loaded>>>, ServiceError> {
        if let Some(k) = lock(&self.keys)?.get(name) {
            return Ok(Some(k.clone()));
        }
        let Some(loaded) = self.load_from_store(name)? else {
            return Ok(None);
        };
        let mut map = lock(&self.keys)?;
        Ok(Some(
            map.entry(name.to_string())
                .or_insert_with(|| Arc::new(Mutex::new(loaded)))
                .clone(),
        ))
    }

    fn config_write(&self, l: &Loaded) -> Result<Write, ServiceError> {
        let json = serde_json::to_vec(&l.key.config)
            .map_err(|e| ServiceError::Invalid(format!("cannot serialize key config: {e}")))?;
        Ok(self.barrier.put_write(
            &config_name(&l.key.config.name),
            Expect::Version(l.rec_version),
            &json,
        )?)
    }

    /// After a conflicting commit (another replica wrote), forget the cached key.
    fn on_conflict<T>(&self, name: &str, r: Result<T, ServiceError>) -> Result<T, ServiceError> {
        if matches!(r, Err(ServiceError::Store(StoreError::Conflict { .. }))) {
            lock(&self.keys)?.remove(name);
        }
        r
    }

    fn create(&self, name: &str, opts: CreateOptions) -> Result<Arc<Mutex<Loaded>>, ServiceError> {
        let mut key = NamedKey::create(name, opts.key_type, opts.derived, (self.clock)())?;
        key.config.auto_rotate_period = opts.auto_rotate_period;
        let json = serde_json::to_vec(&key.config)
            .map_err(|e| ServiceError::Invalid(format!("cannot serialize key config: {e}")))?;
        let material = key
            .material(1)
            .ok_or_else(|| ServiceError::Invalid("new key has no version 1".to_string()))?;
        let writes = [
            self.barrier
                .put_write(&version_name(name, 1), Expect::Absent, material)?,
            self.barrier
                .put_write(&config_name(name), Expect::Absent, &json)?,
        ];
        match self.commit("create", &writes) {
            Err(ServiceError::Store(StoreError::Conflict { .. })) => {
                return Err(ServiceError::Exists(name.to_string()));
            }
            other => other?,
        }
        let loaded = Arc::new(Mutex::new(Loaded {
            key,
            rec_version: 1,
        }));
        lock(&self.keys)?.insert(name.to_string(), loaded.clone());
        Ok(loaded)
    }

    fn get_or_create(
        &self,
        name: &str,
        upsert: Option<CreateOptions>,
    ) -> Result<Arc<Mutex<Loaded>>, ServiceError> {
        if let Some(k) = self.cached(name)? {
            return Ok(k);
        }
        let Some(opts) = upsert else {
            return Err(ServiceError::NotFound(name.to_string()));
        };
        match self.create(name, opts) {
            // created concurrently: use that one
            Err(ServiceError::Exists(_)) => self
                .cached(name)?
                .ok_or_else(|| ServiceError::NotFound(name.to_string())),
            other => other,
        }
    }

    /// Rotate `l` durably: the new version's record and the config naming it latest are one
    /// commit; memory changes only after it returned.
    fn rotate_locked(&self, l: &mut Loaded) -> Result<u32, ServiceError> {
        let next = l.key.rotated((self.clock)())?;
        let v = next.config.latest_version;
        let name = next.config.name.clone();
        let material =
            Zeroizing::new(*next.material(v).ok_or_else(|| {
                ServiceError::Invalid("rotated key has no new version".to_string())
            })?);
        let staged = Loaded {
            key: next,
            rec_version: l.rec_version,
        };
        let writes = [
            self.barrier
                .put_write(&version_name(&name, v), Expect::Any, material.as_ref())?,
            self.config_write(&staged)?,
        ];
        self.commit("rotate", &writes)?;
        l.key = staged.key;
        l.rec_version += 1;
        Ok(v)
    }

    /// Make `n` encryptions under `version` durable-counted, rotating first when due.
    fn prepare_encrypt(&self, l: &mut Loaded, requested: &[u32]) -> Result<(), ServiceError> {
        if requested.contains(&0) && l.key.rotation_due((self.clock)(), &self.limits).is_some() {
            self.rotate_locked(l)?;
        }
        let mut per: BTreeMap<u32, u64> = BTreeMap::new();
        for r in requested {
            if let Ok(v) = l.key.encryption_version(*r) {
                *per.entry(v).or_insert(0) += 1;
            }
        }
        let mut changed = false;
        let mut staged_reservations = Vec::new();
        for (v, n) in &per {
            if let Some(res) = l.key.reserve(*v, *n, &self.limits) {
                staged_reservations.push((*v, res));
                changed = true;
            }
        }
        if changed {
            let mut staged = Loaded {
                key: NamedKey::from_parts(l.key.config.clone(), BTreeMap::new()),
                rec_version: l.rec_version,
            };
            for (v, res) in &staged_reservations {
                staged.key.set_reserved(*v, *res);
            }
            self.commit("reserve", &[self.config_write(&staged)?])?;
            for (v, res) in staged_reservations {
                l.key.set_reserved(v, res);
            }
            l.rec_version += 1;
        }
        for (v, n) in per {
            l.key.count(v, n);
        }
        Ok(())
    }

    /// `transit/encrypt/:name`, single or batch. Context must be in all items or none.
    pub fn encrypt(
        &self,
        caller: &Caller,
        name: &str,
        items: &[EncryptItem],
        upsert: Upsert,
    ) -> Result<Vec<Result<Encrypted, TransitError>>, ServiceError> {
        self.authorize(caller, Operation::Encrypt, name)?;
        let with_ctx = items.iter().filter(|i| !i.context.is_empty()).count();
        if with_ctx != 0 && with_ctx != items.len() {
            return Err(ServiceError::Invalid(
                "context should be set either in all the request blocks or in none".to_string(),
            ));
        }
        let key = self.get_or_create(
            name,
            Some(CreateOptions {
                key_type: upsert.key_type,
                derived: with_ctx != 0,
                auto_rotate_period: 0,
            }),
        )?;
        let mut l = lock(&key)?;
        let versions: Vec<u32> = items.iter().map(|i| i.key_version).collect();
        let r = self.prepare_encrypt(&mut l, &versions);
        self.on_conflict(name, r)?;
        Ok(items
            .iter()
            .map(|i| {
                let v = l.key.encryption_version(i.key_version)?;
                let ciphertext = l
                    .key
                    .encrypt(v, &i.plaintext, &i.context, &i.associated_data)?;
                Ok(Encrypted {
                    ciphertext,
                    key_version: v,
                })
            })
            .collect())
    }

    /// `transit/decrypt/:name`, single or batch.
    pub fn decrypt(
        &self,
        caller: &Caller,
        name: &str,
        items: &[CiphertextItem],
    ) -> Result<Vec<Decrypted>, ServiceError> {
        self.authorize(caller, Operation::Decrypt, name)?;
        let key = self.get_or_create(name, None)?;
        let l = lock(&key)?;
        Ok(items
            .iter()
            .map(|i| {
                l.key
                    .decrypt(&i.ciphertext, &i.context, &i.associated_data)
                    .map(|(p, _)| p)
            })
            .collect())
    }

    /// `transit/rewrap/:name`: decrypt and encrypt again with the latest (or given) version.
    pub fn rewrap(
        &self,
        caller: &Caller,
        name: &str,
        items: &[CiphertextItem],
    ) -> Result<Vec<Result<Encrypted, TransitError>>, ServiceError> {
        self.authorize(caller, Operation::Rewrap, name)?;
        let key = self.get_or_create(name, None)?;
        let mut l = lock(&key)?;
        let versions: Vec<u32> = items.iter().map(|i| i.key_version).collect();
        let r = self.prepare_encrypt(&mut l, &versions);
        self.on_conflict(name, r)?;
        Ok(items
            .iter()
            .map(|i| {
                let (plain, _) = l
                    .key
                    .decrypt(&i.ciphertext, &i.context, &i.associated_data)?;
                let v = l.key.encryption_version(i.key_version)?;
                let ciphertext = l.key.encrypt(v, &plain, &i.context, &i.associated_data)?;
                Ok(Encrypted {
                    ciphertext,
                    key_version: v,
                })
            })
            .collect())
    }

    /// `transit/datakey/plaintext|wrapped/:name`: a fresh key of `bits`, wrapped by `name`.
    pub fn datakey(
        &self,
        caller: &Caller,
        name: &str,
        with_plaintext: bool,
        bits: u32,
        context: &[u8],
    ) -> Result<DataKey, ServiceError> {
        let op = if with_plaintext {
            Operation::DataKeyPlaintext
        } else {
            Operation::DataKeyWrapped
        };
        self.authorize(caller, op, name)?;
        let dk = keyring::data_key(bits)?;
        let key = self.get_or_create(
            name,
            Some(CreateOptions {
                derived: !context.is_empty(),
                ..CreateOptions::default()
            }),
        )?;
        let mut l = lock(&key)?;
        let r = self.prepare_encrypt(&mut l, &[0]);
        self.on_conflict(name, r)?;
        let v = l.key.encryption_version(0)?;
        let ciphertext = l.key.encrypt(v, &dk, context, &[])?;
        Ok(DataKey {
            plaintext: with_plaintext.then_some(dk),
            ciphertext,
            key_version: v,
        })
    }

    /// `transit/keys/:name` (POST): create a key (admin).
    pub fn create_key(
        &self,
        caller: &Caller,
        name: &str,
        opts: CreateOptions,
    ) -> Result<KeyConfig, ServiceError> {
        self.authorize(caller, Operation::Manage, name)?;
        if opts.auto_rotate_period != 0 && opts.auto_rotate_period < keyring::MIN_AUTO_ROTATE_SECS {
            return Err(ServiceError::Invalid(
                "auto rotate period must be 0 to disable or at least an hour".to_string(),
            ));
        }
        let k = match self.cached(name)? {
            // as Vault: creating an existing key is not an error and changes nothing
            Some(k) => k,
            None => self.create(name, opts)?,
        };
        Ok(lock(&k)?.key.config.clone())
    }

    /// `transit/keys/:name` (GET).
    pub fn read_key(&self, caller: &Caller, name: &str) -> Result<KeyConfig, ServiceError> {
        self.authorize(caller, Operation::Manage, name)?;
        let k = self.get_or_create(name, None)?;
        Ok(lock(&k)?.key.config.clone())
    }

    /// `transit/keys` (LIST).
    pub fn list_keys(&self, caller: &Caller) -> Result<Vec<String>, ServiceError> {
        if self.barrier.is_sealed() {
            return Err(ServiceError::Sealed);
        }
        if !caller.is_admin() {
            return Err(
                authz::authorize(&*self.policy()?, caller, Operation::Manage, "*")
                    .err()
                    .map_or(ServiceError::BadToken, ServiceError::Denied),
            );
        }
        Ok(self
            .barrier
            .list(KEYS_PREFIX)?
            .into_iter()
            .filter_map(|n| {
                n.strip_prefix(KEYS_PREFIX)
                    .and_then(|r| r.strip_suffix("/config"))
                    .map(str::to_string)
            })
            .collect())
    }

    /// `transit/keys/:name/rotate`.
    pub fn rotate_key(&self, caller: &Caller, name: &str) -> Result<KeyConfig, ServiceError> {
        self.authorize(caller, Operation::Manage, name)?;
        let k = self.get_or_create(name, None)?;
        let mut l = lock(&k)?;
        let r = self.rotate_locked(&mut l);
        self.on_conflict(name, r)?;
        Ok(l.key.config.clone())
    }

    /// `transit/keys/:name/config`; returns the new config and a warning.
    pub fn configure_key(
        &self,
        caller: &Caller,
        name: &str,
        update: &ConfigUpdate,
    ) -> Result<(KeyConfig, Option<String>), ServiceError> {
        self.authorize(caller, Operation::Manage, name)?;
        let k = self.get_or_create(name, None)?;
        let mut l = lock(&k)?;
        let mut staged = Loaded {
            key: NamedKey::from_parts(l.key.config.clone(), BTreeMap::new()),
            rec_version: l.rec_version,
        };
        let warning = staged.key.configure(update)?;
        let r = self
            .config_write(&staged)
            .and_then(|w| self.commit("config", &[w]));
        self.on_conflict(name, r)?;
        let before = l.key.config.clone();
        l.key.configure(update)?;
        debug_assert_eq!(before.versions, l.key.config.versions);
        l.rec_version += 1;
        Ok((l.key.config.clone(), warning))
    }

    /// `transit/keys/:name/trim`.
    pub fn trim_key(
        &self,
        caller: &Caller,
        name: &str,
        min_available: i64,
    ) -> Result<KeyConfig, ServiceError> {
        self.authorize(caller, Operation::Manage, name)?;
        let k = self.get_or_create(name, None)?;
        let mut l = lock(&k)?;
        let mut staged = Loaded {
            key: NamedKey::from_parts(l.key.config.clone(), BTreeMap::new()),
            rec_version: l.rec_version,
        };
        staged.key.trim(min_available)?;
        let mut writes = vec![self.config_write(&staged)?];
        for v in l
            .key
            .config
            .versions
            .keys()
            .filter(|v| !staged.key.config.versions.contains_key(v))
        {
            writes.push(Write::delete(version_name(name, *v), Expect::Any));
        }
        let r = self.commit("trim", &writes);
        self.on_conflict(name, r)?;
        l.key.trim(min_available)?;
        l.rec_version += 1;
        Ok(l.key.config.clone())
    }

    /// `transit/keys/:name` (DELETE): only with `deletion_allowed`.
    pub fn delete_key(&self, caller: &Caller, name: &str) -> Result<(), ServiceError> {
        self.authorize(caller, Operation::Manage, name)?;
        let k = self.get_or_create(name, None)?;
        let l = lock(&k)?;
        if !l.key.config.deletion_allowed {
            return Err(ServiceError::DeletionNotAllowed(name.to_string()));
        }
        let mut writes = vec![Write::delete(
            config_name(name),
            Expect::Version(l.rec_version),
        )];
        for v in l.key.config.versions.keys() {
            writes.push(Write::delete(version_name(name, *v), Expect::Any));
        }
        let r = self.commit("delete", &writes);
        self.on_conflict(name, r)?;
        drop(l);
        lock(&self.keys)?.remove(name);
        Ok(())
    }

    /// Rotate every key whose latest version is due (age or count); returns what rotated.
    /// The server runs this from its maintenance task.
    pub fn maintain(&self) -> Result<Vec<(String, RotateReason, u32)>, ServiceError> {
        if self.barrier.is_sealed() {
            return Err(ServiceError::Sealed);
        }
        let mut out = Vec::new();
        let names: Vec<String> = self
            .barrier
            .list(KEYS_PREFIX)?
            .into_iter()
            .filter_map(|n| {
                n.strip_prefix(KEYS_PREFIX)
                    .and_then(|r| r.strip_suffix("/config"))
                    .map(str::to_string)
            })
            .collect();
        for name in names {
            let Some(k) = self.cached(&name)? else {
                continue;
            };
            let mut l = lock(&k)?;
            if let Some(reason) = l.key.rotation_due((self.clock)(), &self.limits) {
                let r = self.rotate_locked(&mut l);
                let v = self.on_conflict(&name, r)?;
                out.push((name.clone(), reason, v));
            }
        }
        Ok(out)
    }
}
