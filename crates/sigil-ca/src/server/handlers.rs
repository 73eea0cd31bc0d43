//! HTTP handlers. Each attestation path: check the proof, derive the SPIFFE ID from it and the
//! policy, validate the CSR, sign, record durably, answer. Every refusal is counted, logged with
//! its reason and written to the audit log.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::digest::{SHA256, digest};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sigil_identity::{SpiffeId, VerifiedX509Svid};
use subtle::ConstantTimeEq;

use super::{AppState, MAX_BODY_BYTES, chain_pem};
use crate::audit::Event;
use crate::authority::{IssuedX509, unix};
use crate::client::check_node_name;
use crate::csr::ValidCsr;
use crate::store::{IssuedRecord, JoinOutcome, JoinTokenRecord, NodeKeyOutcome};

/// Longest join-token lifetime: a week. A join token is a bearer secret that makes a node; one
/// that outlives the time it takes to provision a machine is a standing credential.
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The verified client SVID of this connection, if the client presented one.
#[derive(Debug, Clone)]
pub struct Peer(pub Option<VerifiedX509Svid>);

/// An error answer: status, machine code, human reason.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: reason.into(),
        }
    }
    fn bad(code: &'static str, reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, reason)
    }
    fn unauthorized(code: &'static str, reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, reason)
    }
    fn forbidden(code: &'static str, reason: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, reason)
    }
    fn internal(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "reason": self.reason})),
        )
            .into_response()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    // The bearer token is checked before anything reads the body.
    let admin = Router::new()
        .route("/v1/admin/join-tokens", post(create_join_token))
        .route("/v1/admin/nodes/{node}/revoke", post(revoke_node))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    Router::new()
        .route("/v1/attest/x509", post(attest_x509))
        .route("/v1/attest/jwt", post(attest_jwt))
        .route("/v1/agent/x509", post(agent_x509))
        .route("/v1/agent/jwt", post(agent_jwt))
        .route("/v1/agent/renew", post(agent_renew))
        .route("/v1/agent/reattest", post(agent_reattest))
        .merge(admin)
        .route("/v1/bundle.pem", get(bundle_pem))
        .route("/bundle.json", get(bundle_json))
        .route("/.well-known/openid-configuration", get(oidc_discovery))
        .route("/keys", get(jwks))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no endpoint {}; hint: the endpoints are listed in docs/api.md",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not accept {method}; see the Allow header",
            uri.path()
        ),
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proof {
    #[serde(default)]
    kubernetes_token: Option<String>,
    #[serde(default)]
    join_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestX509 {
    csr: String,
    proof: Proof,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestJwt {
    audience: Vec<String>,
    proof: Proof,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Answer {
    spiffe_id: String,
    svid: String,
    bundle: String,
    expires_at: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtAnswer {
    spiffe_id: String,
    token: String,
    expires_at: String,
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix(t)).unwrap_or(0))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn event(name: &str) -> Event {
    Event {
        seq: 0,
        time: String::new(),
        event: name.to_owned(),
        spiffe_id: None,
        serial: None,
        peer: None,
        reason: None,
        detail: None,
    }
}

fn rejected(e: &axum::extract::rejection::JsonRejection) -> ApiError {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.body_text())
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            format!(
                "{}; hint: send `Content-Type: application/json`",
                e.body_text()
            ),
        ),
        _ => ApiError::bad("bad_request", e.body_text()),
    }
}

/// Counts, logs and audits a refusal, and returns it.
fn refuse(state: &AppState, err: ApiError, who: Option<String>) -> ApiError {
    state
        .metrics
        .refused
        .get_or_create(&super::metrics::ReasonLabel {
            reason: err.code.to_owned(),
        })
        .inc();
    tracing::warn!(status = %err.status, code = err.code, reason = %err.reason, caller = who.as_deref().unwrap_or("-"), "refused");
    let mut e = event("refused");
    e.reason = Some(format!("{}: {}", err.code, err.reason));
    e.peer = who;
    state.journal.record(vec![e]);
    err
}

/// Who a proof says the caller is. Node proofs are not spent here: a join token is consumed,
/// and a node key registered, only once the CSR is known to be good (`register_node`).
enum Attested {
    Workload {
        id: SpiffeId,
        detail: String,
    },
    /// A single-use join token (its SHA-256); the node is the one it was made for.
    JoinToken {
        token_hash: String,
    },
    /// A service-account token of the agent DaemonSet, bound to `node`.
    KubernetesNode {
        node: String,
        proof: String,
    },
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(digest(&SHA256, b).as_ref())
}

fn bad_node(node: &str) -> Result<(), ApiError> {
    check_node_name(node).map_err(|e| ApiError::bad("bad_node", e))
}

fn revoked(node: &str) -> ApiError {
    ApiError::forbidden(
        "node_revoked",
        format!(
            "node {node} is revoked, and revocation is final; hint: a replacement machine joins under a new node name"
        ),
    )
}

fn attest(state: &AppState, proof: &Proof) -> Result<Attested, ApiError> {
    match (&proof.kubernetes_token, &proof.join_token) {
        (Some(token), None) => {
            let k = crate::k8s::validate(token, &state.clusters, SystemTime::now())
                .map_err(|e| ApiError::unauthorized("bad_token", e.to_string()))?;
            let is_agent = state
                .policy
                .attestation
                .agent_service_accounts
                .iter()
                .any(|(ns, sa)| *ns == k.namespace && *sa == k.service_account);
            if is_agent {
                // The agent DaemonSet: the token attests the node it is bound to.
                let node = k.node.clone().ok_or_else(|| {
                    ApiError::unauthorized("bad_token", "agent token has no kubernetes.io node claim; hint: use a projected token of a pod (bound to its node)")
                })?;
                bad_node(&node)?;
                return Ok(Attested::KubernetesNode {
                    node,
                    proof: format!("k8s:{}/{}", k.namespace, k.service_account),
                });
            }
            let candidates: Vec<_> = state
                .policy
                .workloads
                .iter()
                .filter(|w| {
                    w.kubernetes.as_ref().is_some_and(|s| {
                        s.namespace == k.namespace && s.service_account == k.service_account
                    })
                })
                .collect();
            match candidates.as_slice() {
                [w] => Ok(Attested::Workload {
                    id: w.spiffe_id.clone(),
                    detail: format!(
                        "cluster={} ns={} sa={} pod={}",
                        k.cluster,
                        k.namespace,
                        k.service_account,
                        k.pod_name.as_deref().unwrap_or("-")
                    ),
                }),
                [] => Err(ApiError::forbidden(
                    "not_registered",
                    format!(
                        "service account {}/{} is not a workload in the policy (default deny); hint: declare it under workloads in sigil.yaml",
                        k.namespace, k.service_account
                    ),
                )),
                many => Err(ApiError::forbidden(
                    "ambiguous",
                    format!(
                        "service account {}/{} matches {} workloads that differ by pod labels, which a token does not carry; hint: attest through `sigil agent`",
                        k.namespace,
                        k.service_account,
                        many.len()
                    ),
                )),
            }
        }
        (None, Some(token)) => Ok(Attested::JoinToken {
            token_hash: sha256_hex(token.as_bytes()),
        }),
        (Some(_), Some(_)) => Err(ApiError::bad(
            "bad_proof",
            "give exactly one of kubernetesToken and joinToken",
        )),
        (None, None) => Err(ApiError::unauthorized(
            "no_proof",
            "no proof of identity; give kubernetesToken or joinToken",
        )),
    }
}

/// Registers the CSR's key as the node's key, atomically with spending the join token: a
/// revoked node is refused on every path and stays revoked. Returns the node and the proof.
fn register_node(
    state: &AppState,
    attested: Attested,
    key_sha256: &str,
) -> Result<(String, String), ApiError> {
    let now = SystemTime::now();
    match attested {
        Attested::Workload { .. } => Err(ApiError::internal("a workload is not a node")),
        Attested::KubernetesNode { node, proof } => {
            match state
                .store
                .set_node_key(&node, key_sha256, now, true)
                .map_err(|e| ApiError::internal(e.to_string()))?
            {
                NodeKeyOutcome::Registered => Ok((node, proof)),
                NodeKeyOutcome::Revoked => Err(revoked(&node)),
                NodeKeyOutcome::Unknown => Err(ApiError::internal("node registration failed")),
            }
        }
        Attested::JoinToken { token_hash } => match state
            .store
            .consume_join_token(&token_hash, key_sha256, now)
            .map_err(|e| ApiError::internal(e.to_string()))?
        {
            JoinOutcome::Joined { node } => Ok((node, format!("join-token:{token_hash}"))),
            JoinOutcome::NodeRevoked { node } => Err(revoked(&node)),
            JoinOutcome::Unknown => Err(ApiError::unauthorized(
                "bad_join_token",
                "unknown join token",
            )),
            JoinOutcome::Expired => Err(ApiError::unauthorized(
                "bad_join_token",
                "join token expired",
            )),
            JoinOutcome::AlreadyUsed => Err(ApiError::unauthorized(
                "bad_join_token",
                "join token was already used (join tokens are single-use); hint: create a new one with `sigil server join-token`",
            )),
        },
    }
}

/// Signs an X.509-SVID and records it durably (store + audit log, group-committed) before
/// returning it. This is the one issuance path; the handlers and the benchmark use it.
pub async fn issue_x509_recorded(
    state: &AppState,
    id: &SpiffeId,
    csr: &ValidCsr,
    detail: String,
    kind: &str,
) -> Result<(IssuedX509, String), ApiError> {
    let started = Instant::now();
    let ttl = state.policy.svid.x509_ttl;
    // Sign outside the CA lock, so both cores sign; the lock only hands out the active signer
    // and records the expiry for rotation.
    let signer = state
        .ca
        .lock()
        .map_err(|_| ApiError::internal("CA lock poisoned"))?
        .signer()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let issued: IssuedX509 = signer
        .sign_csr(id, csr, ttl, SystemTime::now())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    state
        .ca
        .lock()
        .map_err(|_| ApiError::internal("CA lock poisoned"))?
        .note_signed(issued.generation, issued.not_after);
    let bundle = state
        .bundle_pem
        .read()
        .map(|b| b.clone())
        .unwrap_or_default();
    let mut e = event("x509_svid_issued");
    e.spiffe_id = Some(id.to_string());
    e.serial = Some(issued.serial.clone());
    e.detail = Some(detail);
    let rec = IssuedRecord {
        serial: issued.serial.clone(),
        spiffe_id: id.to_string(),
        kind: kind.to_owned(),
        not_after: unix(issued.not_after),
        generation: issued.generation,
    };
    state
        .journal
        .commit(vec![e], Some(rec))
        .await
        .map_err(ApiError::internal)?;
    state
        .metrics
        .issued
        .get_or_create(&super::metrics::KindLabel {
            kind: kind.to_owned(),
        })
        .inc();
    state
        .metrics
        .issue_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok((issued, bundle))
}

async fn issue_x509(
    state: &AppState,
    id: &SpiffeId,
    csr: &ValidCsr,
    detail: String,
    kind: &str,
) -> Result<X509Answer, ApiError> {
    let (issued, bundle) = issue_x509_recorded(state, id, csr, detail, kind).await?;
    tracing::info!(spiffe_id = %id, serial = %issued.serial, kind, "issued X.509-SVID");
    Ok(X509Answer {
        spiffe_id: id.to_string(),
        svid: chain_pem(&issued.chain),
        bundle,
        expires_at: rfc3339(issued.not_after),
    })
}

async fn issue_jwt(
    state: &AppState,
    id: &SpiffeId,
    audience: &[String],
    detail: String,
) -> Result<JwtAnswer, ApiError> {
    if audience.is_empty() || audience.iter().any(|a| a.is_empty() || a.len() > 512) {
        return Err(ApiError::bad(
            "bad_audience",
            "give one or more non-empty audiences",
        ));
    }
    let issued = {
        let mut ca = state
            .ca
            .lock()
            .map_err(|_| ApiError::internal("CA lock poisoned"))?;
        ca.issue_jwt_svid_with_issuer(
            id,
            audience,
            Some(&state.issuer_url),
            state.policy.svid.jwt_ttl,
            SystemTime::now(),
        )
        .map_err(|e| ApiError::internal(e.to_string()))?
    };
    let mut e = event("jwt_svid_issued");
    e.spiffe_id = Some(id.to_string());
    e.detail = Some(format!("aud={} {detail}", audience.join(",")));
    state
        .journal
        .commit(vec![e], None)
        .await
        .map_err(ApiError::internal)?;
    state
        .metrics
        .issued
        .get_or_create(&super::metrics::KindLabel {
            kind: "jwt".to_owned(),
        })
        .inc();
    Ok(JwtAnswer {
        spiffe_id: id.to_string(),
        token: issued.token,
        expires_at: rfc3339(issued.expires_at),
    })
}

fn csr(pem: &str) -> Result<ValidCsr, ApiError> {
    ValidCsr::from_pem(pem).map_err(|e| ApiError::bad("bad_csr", e.to_string()))
}

async fn attest_x509(
    State(state): State<Arc<AppState>>,
    body: Result<Json<AttestX509>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<X509Answer>, ApiError> {
    let Json(req) = body.map_err(|e| refuse(&state, rejected(&e), None))?;
    let attested = attest(&state, &req.proof).map_err(|e| refuse(&state, e, None))?;
    // The CSR is checked before a join token is spent: a bad CSR must not burn it.
    let valid = csr(&req.csr).map_err(|e| refuse(&state, e, None))?;
    if let Attested::Workload { id, detail } = attested {
        return issue_x509(&state, &id, &valid, detail, "x509")
            .await
            .map(Json);
    }
    let (node, proof) = register_node(&state, attested, &sha256_hex(valid.spki_der()))
        .map_err(|e| refuse(&state, e, None))?;
    let who = Some(format!("node {node}"));
    let id = agent_id(&state, &node)
        .map_err(|e| refuse(&state, ApiError::bad("bad_node", e.to_string()), who))?;
    issue_x509(
        &state,
        &id,
        &valid,
        format!("node={node} proof={proof}"),
        "agent",
    )
    .await
    .map(Json)
}

async fn attest_jwt(
    State(state): State<Arc<AppState>>,
    body: Result<Json<AttestJwt>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<JwtAnswer>, ApiError> {
    let Json(req) = body.map_err(|e| refuse(&state, rejected(&e), None))?;
    let node_proof = || {
        ApiError::bad(
            "bad_proof",
            "node proofs (join tokens, agent service-account tokens) attest nodes, not JWT-SVIDs; use a workload's Kubernetes token or the agent",
        )
    };
    if req.proof.join_token.is_some() {
        return Err(refuse(&state, node_proof(), None));
    }
    match attest(&state, &req.proof).map_err(|e| refuse(&state, e, None))? {
        Attested::Workload { id, detail } => issue_jwt(&state, &id, &req.audience, detail)
            .await
            .map(Json),
        Attested::JoinToken { .. } | Attested::KubernetesNode { .. } => {
            Err(refuse(&state, node_proof(), None))
        }
    }
}

/// The node (agent) identity `spiffe://<td>/sigil/agent/<node>`; `agent()` below parses it back.
fn agent_id(state: &AppState, node: &str) -> Result<SpiffeId, sigil_identity::IdError> {
    state
        .policy
        .trust_domain
        .id(&format!("/sigil/agent/{node}"))
}

/// The agent calling: a verified client SVID `spiffe://<td>/sigil/agent/<node>` of a node that
/// is not revoked.
fn agent(state: &AppState, peer: &Peer) -> Result<(String, SpiffeId), ApiError> {
    let v = peer.0.as_ref().ok_or_else(|| {
        ApiError::unauthorized(
            "no_client_certificate",
            "agent endpoints need the agent's X.509-SVID as TLS client certificate",
        )
    })?;
    let id = v.spiffe_id();
    let node = id
        .path()
        .strip_prefix("/sigil/agent/")
        .filter(|n| check_node_name(n).is_ok())
        .ok_or_else(|| {
            ApiError::forbidden("not_an_agent", format!("{id} is not an agent identity"))
        })?;
    let rec = state
        .store
        .node(node)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match rec {
        Some(r) if !r.revoked => Ok((node.to_owned(), id.clone())),
        Some(_) => Err(revoked(node)),
        None => Err(ApiError::forbidden(
            "unknown_node",
            format!("node {node} never joined"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentX509 {
    spiffe_id: String,
    csr: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentJwt {
    spiffe_id: String,
    audience: Vec<String>,
}

fn declared(state: &AppState, raw: &str) -> Result<SpiffeId, ApiError> {
    let id: SpiffeId = raw
        .parse()
        .map_err(|e| ApiError::bad("bad_spiffe_id", format!("{raw:?}: {e}")))?;
    if state.policy.workload_by_id(&id).is_none() {
        return Err(ApiError::forbidden(
            "not_registered",
            format!("{id} is not a workload in the policy (default deny)"),
        ));
    }
    Ok(id)
}

async fn agent_x509(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    body: Result<Json<AgentX509>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<X509Answer>, ApiError> {
    let who = peer.0.as_ref().map(|p| p.spiffe_id().to_string());
    let Json(req) = body.map_err(|e| refuse(&state, rejected(&e), who.clone()))?;
    let (node, _) = agent(&state, &peer).map_err(|e| refuse(&state, e, who.clone()))?;
    let id = declared(&state, &req.spiffe_id).map_err(|e| refuse(&state, e, who.clone()))?;
    let valid = csr(&req.csr).map_err(|e| refuse(&state, e, who))?;
    issue_x509(
        &state,
        &id,
        &valid,
        format!("via agent node={node}"),
        "x509",
    )
    .await
    .map(Json)
}

async fn agent_jwt(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    body: Result<Json<AgentJwt>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<JwtAnswer>, ApiError> {
    let who = peer.0.as_ref().map(|p| p.spiffe_id().to_string());
    let Json(req) = body.map_err(|e| refuse(&state, rejected(&e), who.clone()))?;
    let (node, _) = agent(&state, &peer).map_err(|e| refuse(&state, e, who.clone()))?;
    let id = declared(&state, &req.spiffe_id).map_err(|e| refuse(&state, e, who))?;
    issue_jwt(&state, &id, &req.audience, format!("via agent node={node}"))
        .await
        .map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Renew {
    csr: String,
}

async fn agent_renew(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    body: Result<Json<Renew>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<X509Answer>, ApiError> {
    let who = peer.0.as_ref().map(|p| p.spiffe_id().to_string());
    let Json(req) = body.map_err(|e| refuse(&state, rejected(&e), who.clone()))?;
    let (node, id) = agent(&state, &peer).map_err(|e| refuse(&state, e, who.clone()))?;
    let valid = csr(&req.csr).map_err(|e| refuse(&state, e, who.clone()))?;
    // The new key becomes the node's registered key (used by re-attestation), in one
    // transaction that refuses a node revoked since `agent` looked.
    match state
        .store
        .set_node_key(
            &node,
            &sha256_hex(valid.spki_der()),
            SystemTime::now(),
            false,
        )
        .map_err(|e| ApiError::internal(e.to_string()))?
    {
        NodeKeyOutcome::Registered => {}
        NodeKeyOutcome::Revoked => return Err(refuse(&state, revoked(&node), who)),
        NodeKeyOutcome::Unknown => {
            return Err(refuse(
                &state,
                ApiError::forbidden("unknown_node", format!("node {node} never joined")),
                who,
            ));
        }
    }
    issue_x509(&state, &id, &valid, format!("renewal node={node}"), "agent")
        .await
        .map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reattest {
    node: String,
    csr: String,
}

async fn agent_reattest(
    State(state): State<Arc<AppState>>,
    body: Result<Json<Reattest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<X509Answer>, ApiError> {
    let Json(req) = body.map_err(|e| refuse(&state, rejected(&e), None))?;
    bad_node(&req.node).map_err(|e| refuse(&state, e, None))?;
    let who = Some(format!("node {}", req.node));
    let valid = csr(&req.csr).map_err(|e| refuse(&state, e, who.clone()))?;
    let rec = state
        .store
        .node(&req.node)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| {
            refuse(
                &state,
                ApiError::unauthorized("unknown_node", format!("node {:?} never joined", req.node)),
                who.clone(),
            )
        })?;
    if rec.revoked {
        return Err(refuse(&state, revoked(&req.node), who));
    }
    let presented = sha256_hex(valid.spki_der());
    if !bool::from(presented.as_bytes().ct_eq(rec.key_sha256.as_bytes())) {
        return Err(refuse(
            &state,
            ApiError::unauthorized(
                "wrong_node_key",
                "the CSR is not signed by the key this node registered; hint: re-join with a new join token",
            ),
            who,
        ));
    }
    let id = agent_id(&state, &req.node).map_err(|e| ApiError::bad("bad_node", e.to_string()))?;
    issue_x509(
        &state,
        &id,
        &valid,
        format!("re-attestation node={}", req.node),
        "agent",
    )
    .await
    .map(Json)
}

fn check_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(got.as_bytes().ct_eq(state.admin_token.as_bytes())) && !got.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "not_admin",
            "admin endpoints need `Authorization: Bearer <data-dir>/admin.token`",
        ))
    }
}

/// Admin routes: the bearer token first, before the body is read or parsed; a refusal is
/// counted, logged and audited like every other.
async fn require_admin(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match check_admin(&state, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let who = format!("admin {} {}", req.method(), req.uri().path());
            refuse(&state, e, Some(who)).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewJoinToken {
    node: String,
    #[serde(default)]
    ttl: Option<String>,
}

/// Checks a join-token lifetime; `source` names where it came from.
fn check_join_ttl(ttl: Duration, source: &str) -> Result<(), ApiError> {
    if ttl.is_zero() {
        return Err(ApiError::bad(
            "bad_ttl",
            format!("join-token ttl from {source} is 0s; give at least 1s, e.g. 1h"),
        ));
    }
    if ttl > MAX_JOIN_TOKEN_TTL {
        return Err(ApiError::bad(
            "bad_ttl",
            format!(
                "join-token ttl {} from {source} is longer than the maximum 7d; hint: create the token when the machine is being provisioned, with a ttl of 7d or less (default 1h)",
                sigil_policy::format_duration(ttl)
            ),
        ));
    }
    Ok(())
}

async fn create_join_token(
    State(state): State<Arc<AppState>>,
    body: Result<Json<NewJoinToken>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = Some("admin".to_owned());
    let Json(req) = body.map_err(|e| refuse(&state, rejected(&e), who.clone()))?;
    let ttl = match &req.ttl {
        Some(t) => sigil_policy::parse_duration(t).map_err(|e| {
            refuse(
                &state,
                ApiError::bad("bad_ttl", format!("join-token ttl: {e}")),
                who.clone(),
            )
        })?,
        None => state.policy.attestation.join_token_ttl,
    };
    let (token, expires) = new_join_token(&state, &req.node, ttl, req.ttl.is_some())
        .map_err(|e| refuse(&state, e, who))?;
    Ok(Json(
        json!({"token": token, "node": req.node, "expiresAt": rfc3339(expires)}),
    ))
}

/// Creates and stores a single-use join token for `node`. `explicit`: the ttl came from the
/// request (else from the policy's `attestation.joinTokenTtl`), for the error message.
pub fn new_join_token(
    state: &AppState,
    node: &str,
    ttl: Duration,
    explicit: bool,
) -> Result<(String, SystemTime), ApiError> {
    bad_node(node)?;
    let source = if explicit {
        "the request"
    } else {
        "the policy's attestation.joinTokenTtl"
    };
    check_join_ttl(ttl, source)?;
    if state
        .store
        .node(node)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .is_some_and(|r| r.revoked)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "node_revoked",
            format!(
                "node {node} is revoked, and revocation is final; hint: give the replacement machine a new node name"
            ),
        ));
    }
    let token = super::random_token().map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = SystemTime::now()
        .checked_add(ttl)
        .ok_or_else(|| ApiError::bad("bad_ttl", "join-token ttl is out of range"))?;
    state
        .store
        .put_join_token(
            &sha256_hex(token.as_bytes()),
            &JoinTokenRecord {
                node: node.to_owned(),
                expires_at: unix(expires),
                used_at: None,
            },
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut e = event("join_token_created");
    e.detail = Some(format!("node={node} ttl={}s", ttl.as_secs()));
    state.journal.record(vec![e]);
    Ok((token, expires))
}

async fn revoke_node(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = Some("admin".to_owned());
    bad_node(&node).map_err(|e| refuse(&state, e, who.clone()))?;
    let known = state
        .store
        .revoke_node(&node)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if !known {
        return Err(refuse(
            &state,
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_node",
                format!("node {node:?} never joined"),
            ),
            who,
        ));
    }
    let mut e = event("node_revoked");
    e.detail = Some(format!("node={node}"));
    state
        .journal
        .commit(vec![e], None)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({"node": node, "revoked": true})))
}

async fn bundle_pem(State(state): State<Arc<AppState>>) -> Response {
    let pem = state
        .bundle
        .current()
        .map(|b| b.to_pem())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response()
}

async fn bundle_json(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let json = {
        let ca = state
            .ca
            .lock()
            .map_err(|_| ApiError::internal("CA lock poisoned"))?;
        ca.spiffe_bundle(Duration::from_secs(300))
            .and_then(|b| {
                b.to_json()
                    .map_err(|e| crate::authority::CaError::Sign(e.to_string()))
            })
            .map_err(|e| ApiError::internal(e.to_string()))?
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

async fn oidc_discovery(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    // The same string every JWT-SVID carries as `iss` (see `issuer`).
    let iss = state.issuer_url.as_str();
    Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/keys"),
        "authorization_endpoint": format!("{iss}/unsupported"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let set = state
        .ca
        .lock()
        .map_err(|_| ApiError::internal("CA lock poisoned"))?
        .jwt_bundle()
        .keys;
    let mut v = serde_json::to_value(set).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(keys) = v.get_mut("keys").and_then(|k| k.as_array_mut()) {
        for k in keys {
            if let Some(o) = k.as_object_mut() {
                o.insert("use".to_owned(), json!("sig"));
            }
        }
    }
    Ok(Json(v))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
