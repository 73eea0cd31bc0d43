//! The Vault-transit-compatible HTTP subset, as an axum [`Router`] the control-plane server
//! mounts: `sys/health`, `sys/seal-status`, `sys/init`, `sys/unseal`, `sys/seal`,
//! `auth/kubernetes/login`, and `transit/` encrypt, decrypt, rewrap, datakey and keys (create,
//! read, list, delete, rotate, config, trim). Request and response bodies are Vault's, so that
//! hvac and other Vault clients work unchanged.
//!
//! Owns: turning `X-Vault-Token` into a [`Caller`] (the root token from init, or a short-lived
//! token issued by `auth/kubernetes/login` after the server's [`KubernetesLogin`] verifier
//! accepted a projected service-account token), request parsing (unknown fields with a value
//! are refused; 1 MiB body limit), and status codes (400 bad request, 403 denied, 404 no key,
//! 503 sealed). Must not: bind sockets (the server does), or call the service from an async
//! worker (every call runs on the blocking pool: a commit waits for fsync).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};
use sigil_identity::SpiffeId;
use zeroize::Zeroizing;

use crate::aead::KeyType;
use crate::authz::Caller;
use crate::barrier::{self, SealStatus};
use crate::keyring::{self, ConfigUpdate, KeyConfig, MAX_CONTEXT_LEN, TransitError};
use crate::service::{
    CiphertextItem, CreateOptions, EncryptItem, KeyService, ServiceError, Upsert,
};

/// Largest request body.
pub const MAX_BODY: usize = 1 << 20;
/// Largest batch.
pub const MAX_BATCH: usize = 10_000;
/// Largest plaintext per item (decoded).
pub const MAX_PLAINTEXT: usize = 512 * 1024;
/// Lifetime of a login token (seconds).
pub const LOGIN_TOKEN_TTL: u64 = 3600;

/// The server's verifier of Kubernetes projected service-account tokens (in `sigil server`,
/// `sigil-ca`'s token validation against the configured clusters). This is a trust boundary:
/// the SPIFFE ID it returns is taken as proven.
pub trait KubernetesLogin: Send + Sync {
    /// Verify `jwt` for `role`; the workload identity it proves, or why not.
    fn login(&self, role: &str, jwt: &str) -> Result<SpiffeId, String>;
}

/// The router's state.
pub struct Transit {
    svc: Arc<KeyService>,
    k8s: Option<Arc<dyn KubernetesLogin>>,
    tokens: Mutex<HashMap<Vec<u8>, (SpiffeId, u64)>>,
}

impl std::fmt::Debug for Transit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transit")
            .field("svc", &self.svc)
            .field("kubernetes_login", &self.k8s.is_some())
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sha256(b: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, b).as_ref().to_vec()
}

/// An HTTP error in Vault's shape: `{"errors": [...]}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "errors": [self.1] }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let code = match &e {
            ServiceError::Sealed => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::Denied(_) | ServiceError::BadToken => StatusCode::FORBIDDEN,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(code, e.to_string())
    }
}

impl From<TransitError> for ApiError {
    fn from(e: TransitError) -> Self {
        bad(e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok_data(data: Value) -> ApiResult {
    Ok(axum::Json(json!({
        "request_id": "",
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    }))
    .into_response())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("request task failed: {e}"),
        )
    })
}

/// Parse a JSON object body (empty body = `{}`), refusing fields outside `allowed` that carry a
/// value (clients such as hvac send some optional fields as null or false).
fn body(bytes: &Bytes, allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("request body is not JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(bad("request body must be a JSON object"));
    };
    for (k, v) in &m {
        let empty = v.is_null() || *v == Value::Bool(false) || *v == json!("") || *v == json!([]);
        if !allowed.contains(&k.as_str()) && !empty {
            return Err(bad(format!(
                "unknown or unsupported field {k:?}; hint: Sigil's transit subset accepts {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(m)
}

fn field_str<'a>(m: &'a Map<String, Value>, k: &'static str) -> Result<Option<&'a str>, ApiError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(format!("{k} must be a string, got {other}"))),
    }
}

fn field_int(m: &Map<String, Value>, k: &'static str) -> Result<Option<i64>, ApiError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(format!("{k} must be an integer"))),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("{k} must be an integer, got {s:?}"))),
        Some(other) => Err(bad(format!("{k} must be an integer, got {other}"))),
    }
}

fn field_bool(m: &Map<String, Value>, k: &'static str) -> Result<Option<bool>, ApiError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(other) => Err(bad(format!("{k} must be a boolean, got {other}"))),
    }
}

fn version_field(m: &Map<String, Value>) -> Result<u32, String> {
    match field_int(m, "key_version") {
        Ok(None) => Ok(0),
        Ok(Some(v)) => u32::try_from(v).map_err(|_| format!("key_version {v} is out of range")),
        Err(ApiError(_, e)) => Err(e),
    }
}

/// The items of a single or batch request: `(batch?, items)`.
fn items(m: &Map<String, Value>) -> Result<(bool, Vec<Map<String, Value>>), ApiError> {
    match m.get("batch_input") {
        None | Some(Value::Null) => Ok((false, vec![m.clone()])),
        Some(Value::Array(a)) => {
            if a.is_empty() {
                return Err(bad("missing batch input to process"));
            }
            if a.len() > MAX_BATCH {
                return Err(bad(format!(
                    "batch_input has {} items; at most {MAX_BATCH}",
                    a.len()
                )));
            }
            a.iter()
                .map(|v| match v {
                    Value::Object(o) => Ok(o.clone()),
                    _ => Err(bad("every batch_input item must be an object")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| (true, v))
        }
        Some(_) => Err(bad("batch_input must be a list")),
    }
}

fn reference(m: &Map<String, Value>) -> Value {
    m.get("reference")
        .cloned()
        .unwrap_or(Value::String(String::new()))
}

fn no_convergence(m: &Map<String, Value>) -> Result<(), ApiError> {
    if field_bool(m, "convergent_encryption")? == Some(true)
        || field_str(m, "nonce")?.is_some_and(|n| !n.is_empty())
    {
        return Err(TransitError::Convergent.into());
    }
    Ok(())
}

/// Answer a single request from its one result, a batch with every item (400 only when every
/// item failed, as Vault does without `partial_failure_response_code`).
fn respond(batch: bool, results: Vec<Result<Value, String>>, refs: Vec<Value>) -> ApiResult {
    if !batch {
        return match results.into_iter().next() {
            Some(Ok(v)) => ok_data(v),
            Some(Err(e)) => Err(bad(e)),
            None => Err(bad("empty request")),
        };
    }
    let all_failed = results.iter().all(Result::is_err);
    let items: Vec<Value> = results
        .into_iter()
        .zip(refs)
        .map(|(r, reference)| match r {
            Ok(Value::Object(mut o)) => {
                o.insert("reference".into(), reference);
                Value::Object(o)
            }
            Ok(other) => other,
            Err(e) => json!({ "error": e, "reference": reference }),
        })
        .collect();
    if all_failed {
        return Ok((StatusCode::BAD_REQUEST, axum::Json(json!({ "errors": ["every batch item failed"], "data": { "batch_results": items } }))).into_response());
    }
    ok_data(json!({ "batch_results": items }))
}

impl Transit {
    pub fn new(svc: Arc<KeyService>, k8s: Option<Arc<dyn KubernetesLogin>>) -> Arc<Self> {
        Arc::new(Self {
            svc,
            k8s,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The caller behind `X-Vault-Token` (or `Authorization: Bearer`).
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, ServiceError> {
        if self.svc.barrier().is_sealed() {
            return Err(ServiceError::Sealed);
        }
        let token = headers
            .get("x-vault-token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .ok_or(ServiceError::BadToken)?;
        let h = sha256(token.as_bytes());
        if let Ok(mut t) = self.tokens.lock() {
            let n = now();
            t.retain(|_, (_, exp)| *exp > n);
            if let Some((id, _)) = t.get(&h) {
                return Ok(Caller::from_kubernetes_login(id.clone()));
            }
        }
        self.svc.verify_admin(token)
    }
}

/// The router (paths start with `/v1/`).
pub fn router(state: Arc<Transit>) -> Router {
    Router::new()
        .route("/v1/sys/health", get(health))
        .route("/v1/sys/seal-status", get(seal_status))
        .route("/v1/sys/init", get(init_status).put(init).post(init))
        .route("/v1/sys/unseal", post(unseal).put(unseal))
        .route("/v1/sys/seal", post(seal).put(seal))
        .route("/v1/auth/kubernetes/login", post(login).put(login))
        .route("/v1/transit/keys", any(list_keys))
        .route("/v1/transit/keys/{name}", any(key))
        .route("/v1/transit/keys/{name}/rotate", post(rotate).put(rotate))
        .route("/v1/transit/keys/{name}/config", post(config).put(config))
        .route("/v1/transit/keys/{name}/trim", post(trim).put(trim))
        .route("/v1/transit/encrypt/{name}", post(encrypt).put(encrypt))
        .route("/v1/transit/decrypt/{name}", post(decrypt).put(decrypt))
        .route("/v1/transit/rewrap/{name}", post(rewrap).put(rewrap))
        .route(
            "/v1/transit/datakey/{kind}/{name}",
            post(datakey).put(datakey),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn status_json(s: &SealStatus) -> Value {
    json!({
        "type": s.kind.map_or("shamir", |k| if k == barrier::SealKind::Shamir { "shamir" } else { "sigil-key-file" }),
        "initialized": s.initialized,
        "sealed": s.sealed,
        "t": s.threshold,
        "n": s.shares,
        "progress": s.progress,
        "nonce": "",
        "version": env!("CARGO_PKG_VERSION"),
        "build_date": "",
        "migration": false,
        "recovery_seal": false,
        "storage_type": "sigil",
    })
}

async fn health(State(st): State<Arc<Transit>>) -> ApiResult {
    let s = blocking(move || st.svc.seal_status()).await??;
    let code = match (s.initialized, s.sealed) {
        (false, _) => StatusCode::NOT_IMPLEMENTED,
        (true, true) => StatusCode::SERVICE_UNAVAILABLE,
        (true, false) => StatusCode::OK,
    };
    let body = json!({
        "initialized": s.initialized,
        "sealed": s.sealed,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now(),
        "version": env!("CARGO_PKG_VERSION"),
        "cluster_name": "sigil",
        "cluster_id": "",
    });
    Ok((code, axum::Json(body)).into_response())
}

async fn seal_status(State(st): State<Arc<Transit>>) -> ApiResult {
    let s = blocking(move || st.svc.seal_status()).await??;
    Ok(axum::Json(status_json(&s)).into_response())
}

async fn init_status(State(st): State<Arc<Transit>>) -> ApiResult {
    let s = blocking(move || st.svc.seal_status()).await??;
    Ok(axum::Json(json!({ "initialized": s.initialized })).into_response())
}

async fn init(State(st): State<Arc<Transit>>, b: Bytes) -> ApiResult {
    let m = body(&b, &["secret_shares", "secret_threshold"])?;
    let n = field_int(&m, "secret_shares")?.ok_or_else(|| bad("secret_shares is required"))?;
    let k =
        field_int(&m, "secret_threshold")?.ok_or_else(|| bad("secret_threshold is required"))?;
    let (n, k) = (
        usize::try_from(n).unwrap_or(0),
        usize::try_from(k).unwrap_or(0),
    );
    let out = blocking(move || st.svc.init_shamir(n, k)).await??;
    let keys: Vec<String> = out.shares.iter().map(hex::encode).collect();
    let keys_b64: Vec<String> = out.shares.iter().map(|s| B64.encode(s)).collect();
    Ok(axum::Json(json!({
        "keys": keys,
        "keys_base64": keys_b64,
        "root_token": out.root_token.as_str(),
    }))
    .into_response())
}

async fn unseal(State(st): State<Arc<Transit>>, b: Bytes) -> ApiResult {
    let m = body(&b, &["key", "reset", "migrate"])?;
    let reset = field_bool(&m, "reset")?.unwrap_or(false);
    let key = field_str(&m, "key")?.map(str::to_string);
    let s = blocking(move || -> Result<SealStatus, ServiceError> {
        if reset {
            st.svc.barrier().reset_progress()?;
            return st.svc.seal_status();
        }
        let key = key
            .ok_or_else(|| ServiceError::Invalid("key is required (or reset=true)".to_string()))?;
        let share = barrier::decode_share(&key)?;
        st.svc.submit_share(&share)
    })
    .await??;
    Ok(axum::Json(status_json(&s)).into_response())
}

async fn seal(State(st): State<Arc<Transit>>, headers: HeaderMap) -> ApiResult {
    blocking(move || -> Result<(), ServiceError> {
        let c = st.caller(&headers)?;
        if !c.is_admin() {
            return Err(ServiceError::BadToken);
        }
        st.svc.seal()
    })
    .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn login(State(st): State<Arc<Transit>>, b: Bytes) -> ApiResult {
    let m = body(&b, &["role", "jwt"])?;
    let role = field_str(&m, "role")?.unwrap_or("").to_string();
    let jwt = field_str(&m, "jwt")?
        .ok_or_else(|| bad("missing jwt"))?
        .to_string();
    if st.svc.barrier().is_sealed() {
        return Err(ServiceError::Sealed.into());
    }
    let Some(k8s) = st.k8s.clone() else {
        return Err(bad(
            "Kubernetes login is not configured on this server; hint: configure a trusted cluster",
        ));
    };
    let st2 = st.clone();
    let (id, token) = blocking(move || -> Result<(SpiffeId, Zeroizing<String>), ApiError> {
        let id = k8s.login(&role, &jwt).map_err(|e| {
            ApiError(
                StatusCode::FORBIDDEN,
                format!("permission denied: kubernetes login for role {role:?}: {e}"),
            )
        })?;
        let mut raw = Zeroizing::new([0u8; 24]);
        crate::aead::random_fill(raw.as_mut())
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let token = Zeroizing::new(format!("s.{}", hex::encode(raw.as_ref())));
        st2.tokens
            .lock()
            .map_err(|_| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "token table poisoned".into(),
                )
            })?
            .insert(
                sha256(token.as_bytes()),
                (id.clone(), now() + LOGIN_TOKEN_TTL),
            );
        Ok((id, token))
    })
    .await??;
    Ok(axum::Json(json!({
        "request_id": "",
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "warnings": null,
        "auth": {
            "client_token": token.as_str(),
            "accessor": "",
            "policies": ["default"],
            "token_policies": ["default"],
            "metadata": { "spiffe_id": id.to_string() },
            "lease_duration": LOGIN_TOKEN_TTL,
            "renewable": false,
            "entity_id": "",
            "token_type": "service",
            "orphan": true,
        },
    }))
    .into_response())
}

fn key_json(c: &KeyConfig) -> Value {
    let keys: Map<String, Value> = c
        .versions
        .iter()
        .map(|(v, m)| (v.to_string(), json!(m.created)))
        .collect();
    json!({
        "name": c.name,
        "type": c.key_type.as_str(),
        "derived": c.derived,
        "kdf": if c.derived { "hkdf_sha256" } else { "" },
        "keys": keys,
        "latest_version": c.latest_version,
        "min_available_version": c.min_available_version,
        "min_decryption_version": c.min_decryption_version,
        "min_encryption_version": c.min_encryption_version,
        "deletion_allowed": c.deletion_allowed,
        "auto_rotate_period": c.auto_rotate_period,
        "exportable": false,
        "allow_plaintext_backup": false,
        "convergent_encryption": false,
        "imported_key": false,
        "supports_encryption": true,
        "supports_decryption": true,
        "supports_derivation": true,
        "supports_signing": false,
    })
}

async fn list_keys(
    State(st): State<Arc<Transit>>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let is_list = method.as_str() == "LIST"
        || (method == Method::GET && q.get("list").is_some_and(|v| v == "true"));
    if !is_list {
        return Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            "use LIST (or GET ?list=true) on transit/keys".into(),
        ));
    }
    let names = blocking(move || st.caller(&headers).and_then(|c| st.svc.list_keys(&c))).await??;
    if names.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, "no keys".into()));
    }
    ok_data(json!({ "keys": names }))
}

async fn key(
    State(st): State<Arc<Transit>>,
    method: Method,
    Path(name): Path<String>,
    headers: HeaderMap,
    b: Bytes,
) -> ApiResult {
    match method {
        Method::GET => {
            let c = blocking(move || st.caller(&headers).and_then(|c| st.svc.read_key(&c, &name)))
                .await??;
            ok_data(key_json(&c))
        }
        Method::DELETE => {
            blocking(move || {
                st.caller(&headers)
                    .and_then(|c| st.svc.delete_key(&c, &name))
            })
            .await??;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::POST | Method::PUT => {
            let m = body(&b, &["type", "derived", "auto_rotate_period"])?;
            no_convergence(&m)?;
            let key_type = match field_str(&m, "type")? {
                None | Some("") => KeyType::default(),
                Some(t) => KeyType::parse(t).ok_or_else(|| bad(format!("unknown key type {t}; hint: Sigil offers aes256-gcm96 and chacha20-poly1305")))?,
            };
            let auto_rotate_period = match m.get("auto_rotate_period") {
                None | Some(Value::Null) => 0,
                Some(v) => keyring::parse_duration(v).map_err(bad)?,
            };
            let opts = CreateOptions {
                key_type,
                derived: field_bool(&m, "derived")?.unwrap_or(false),
                auto_rotate_period,
            };
            let c = blocking(move || {
                st.caller(&headers)
                    .and_then(|c| st.svc.create_key(&c, &name, opts))
            })
            .await??;
            ok_data(key_json(&c))
        }
        _ => Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed on transit/keys/:name"),
        )),
    }
}

async fn rotate(
    State(st): State<Arc<Transit>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let c = blocking(move || {
        st.caller(&headers)
            .and_then(|c| st.svc.rotate_key(&c, &name))
    })
    .await??;
    ok_data(key_json(&c))
}

async fn config(
    State(st): State<Arc<Transit>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    b: Bytes,
) -> ApiResult {
    let m = body(
        &b,
        &[
            "min_decryption_version",
            "min_encryption_version",
            "deletion_allowed",
            "auto_rotate_period",
        ],
    )?;
    let u = ConfigUpdate {
        min_decryption_version: field_int(&m, "min_decryption_version")?,
        min_encryption_version: field_int(&m, "min_encryption_version")?,
        deletion_allowed: field_bool(&m, "deletion_allowed")?,
        exportable: field_bool(&m, "exportable")?,
        allow_plaintext_backup: field_bool(&m, "allow_plaintext_backup")?,
        auto_rotate_period: m
            .get("auto_rotate_period")
            .filter(|v| !v.is_null())
            .cloned(),
    };
    let (c, warning) = blocking(move || {
        st.caller(&headers)
            .and_then(|c| st.svc.configure_key(&c, &name, &u))
    })
    .await??;
    let mut r = ok_data(key_json(&c))?;
    if let Some(w) = warning {
        r.headers_mut()
            .insert("x-sigil-warning", w.parse().map_err(|_| bad("warning"))?);
    }
    Ok(r)
}

async fn trim(
    State(st): State<Arc<Transit>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    b: Bytes,
) -> ApiResult {
    let m = body(&b, &["min_available_version"])?;
    let v = field_int(&m, "min_available_version")?
        .ok_or_else(|| bad("missing min_available_version"))?;
    let c = blocking(move || {
        st.caller(&headers)
            .and_then(|c| st.svc.trim_key(&c, &name, v))
    })
    .await??;
    ok_data(key_json(&c))
}

const ITEM_FIELDS: &[&str] = &[
    "plaintext",
    "ciphertext",
    "context",
    "associated_data",
    "key_version",
    "reference",
];

async fn encrypt(
    State(st): State<Arc<Transit>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    b: Bytes,
) -> ApiResult {
    let m = body(
        &b,
        &[
            ITEM_FIELDS,
            &["batch_input", "type", "partial_failure_response_code"],
        ]
        .concat(),
    )?;
    no_convergence(&m)?;
    let upsert = Upsert {
        key_type: match field_str(&m, "type")? {
            None | Some("") => KeyType::default(),
            Some(t) => KeyType::parse(t).ok_or_else(|| bad(format!("unknown key type {t}")))?,
        },
    };
    let (batch, raw) = items(&m)?;
    let refs: Vec<Value> = raw.iter().map(reference).collect();
    // Decode every item; an undecodable one fails alone.
    let decoded: Vec<Result<EncryptItem, String>> = raw
        .iter()
        .map(|i| {
            no_convergence(i).map_err(|ApiError(_, e)| e)?;
            let plaintext = keyring::decode_b64(
                "plaintext",
                i.get("plaintext").and_then(Value::as_str),
                MAX_PLAINTEXT,
            )
            .map_err(|e| e.to_string())?;
            Ok(EncryptItem {
                plaintext: Zeroizing::new(plaintext),
                context: keyring::decode_b64(
                    "context",
                    i.get("context").and_then(Value::as_str),
                    MAX_CONTEXT_LEN,
                )
                .map_err(|e| e.to_string())?,
                associated_data: keyring::decode_b64(
                    "associated_data",
                    i.get("associated_data").and_then(Value::as_str),
                    MAX_CONTEXT_LEN,
                )
                .map_err(|e| e.to_string())?,
                key_version: version_field(i)?,
            })
        })
        .collect();
    let results = blocking(
        move || -> Result<Vec<Result<Value, String>>, ServiceError> {
            let caller = st.caller(&headers)?;
            let good: Vec<&EncryptItem> = decoded.iter().filter_map(|d| d.as_ref().ok()).collect();
            let owned: Vec<EncryptItem> = good
                .iter()
                .map(|i| EncryptItem {
                    plaintext: i.plaintext.clone(),
                    context: i.context.clone(),
                    associated_data: i.associated_data.clone(),
                    key_version: i.key_version,
                })
                .collect();
            let mut out = if owned.is_empty() {
                Vec::new()
            } else {
                st.svc.encrypt(&caller, &name, &owned, upsert)?
            }
            .into_iter();
            Ok(decoded
                .iter()
                .map(|d| match d {
                    Err(e) => Err(e.clone()),
                    Ok(_) => match out.next() {
                        Some(Ok(e)) => {
                            Ok(json!({ "ciphertext": e.ciphertext, "key_version": e.key_version }))
                        }
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err("internal: missing result".to_string()),
                    },
                })
                .collect())
        },
    )
    .await??;
    respond(batch, results, refs)
}

fn ct_items(raw: &[Map<String, Value>]) -> Vec<Result<CiphertextItem, String>> {
    raw.iter()
        .map(|i| {
            Ok(CiphertextItem {
                ciphertext: i
                    .get("ciphertext")
                    .and_then(Value::as_str)
                    .ok_or("missing ciphertext")?
                    .to_string(),
                context: keyring::decode_b64(
                    "context",
                    i.get("context").and_then(Value::as_str),
                    MAX_CONTEXT_LEN,
                )
                .map_err(|e| e.to_string())?,
                associated_data: keyring::decode_b64(
                    "associated_data",
                    i.get("associated_data").and_then(Value::as_str),
                    MAX_CONTEXT_LEN,
                )
                .map_err(|e| e.to_string())?,
                key_version: version_field(i)?,
            })
        })
        .collect()
}

/// Run `op` on the decodable items and merge its results back in order.
fn merge<T>(
    decoded: &[Result<CiphertextItem, String>],
    out: Vec<Result<T, TransitError>>,
    render: impl Fn(T) -> Value,
) -> Vec<Result<Value, String>> {
    let mut out = out.into_iter();
    decoded
        .iter()
        .map(|d| match d {
            Err(e) => Err(e.clone()),
            Ok(_) => match out.next() {
                Some(Ok(v)) => Ok(render(v)),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("internal: missing result".to_string()),
            },
        })
        .collect()
}

async fn decrypt(
    State(st): State<Arc<Transit>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    b: Bytes,
) -> ApiResult {
    let m = body(
        &b,
        &[
            ITEM_FIELDS,
            &["batch_input", "partial_failure_response_code"],
        ]
        .concat(),
    )?;
    no_convergence(&m)?;
    let (batch, raw) = items(&m)?;
    let refs: Vec<Value> = raw.iter().map(reference).collect();
    let decoded = ct_items(&raw);
    let results = blocking(move || -> Result<_, ServiceError> {
        let caller = st.caller(&headers)?;
        let good: Vec<CiphertextItem> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok().cloned())
            .collect();
        let out = if good.is_empty() {
            Vec::new()
        } else {
            st.svc.decrypt(&caller, &name, &good)?
        };
        Ok(merge(
            &decoded,
            out,
            |p| json!({ "plaintext": B64.encode(&*p) }),
        ))
    })
    .await??;
    respond(batch, results, refs)
}

async fn rewrap(
    State(st): State<Arc<Transit>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    b: Bytes,
) -> ApiResult {
    let m = body(
        &b,
        &[
            ITEM_FIELDS,
            &["batch_input", "partial_failure_response_code"],
        ]
        .concat(),
    )?;
    no_convergence(&m)?;
    let (batch, raw) = items(&m)?;
    let refs: Vec<Value> = raw.iter().map(reference).collect();
    let decoded = ct_items(&raw);
    let results = blocking(move || -> Result<_, ServiceError> {
        let caller = st.caller(&headers)?;
        let good: Vec<CiphertextItem> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok().cloned())
            .collect();
        let out = if good.is_empty() {
            Vec::new()
        } else {
            st.svc.rewrap(&caller, &name, &good)?
        };
        Ok(merge(
            &decoded,
            out,
            |e| json!({ "ciphertext": e.ciphertext, "key_version": e.key_version }),
        ))
    })
    .await??;
    respond(batch, results, refs)
}

async fn datakey(
    State(st): State<Arc<Transit>>,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
    b: Bytes,
) -> ApiResult {
    let with_plaintext = match kind.as_str() {
        "plaintext" => true,
        "wrapped" => false,
        other => {
            return Err(bad(format!(
                "invalid type {other:?}; hint: datakey/plaintext/:name or datakey/wrapped/:name"
            )));
        }
    };
    let m = body(&b, &["context", "bits"])?;
    no_convergence(&m)?;
    let bits = field_int(&m, "bits")?.unwrap_or(256);
    let bits = u32::try_from(bits).map_err(|_| TransitError::BadBits(0))?;
    let context = keyring::decode_b64("context", field_str(&m, "context")?, MAX_CONTEXT_LEN)?;
    let dk = blocking(move || {
        st.caller(&headers)
            .and_then(|c| st.svc.datakey(&c, &name, with_plaintext, bits, &context))
    })
    .await??;
    let mut data = json!({ "ciphertext": dk.ciphertext, "key_version": dk.key_version });
    if let (Some(p), Some(o)) = (&dk.plaintext, data.as_object_mut()) {
        o.insert("plaintext".into(), Value::String(B64.encode(&**p)));
    }
    ok_data(data)
}
