//! The SPIFFE Workload API (`SpiffeWorkloadAPI`, no package) over tonic.
//!
//! Every call must carry the `workload.spiffe.io: true` metadata header (InvalidArgument
//! otherwise), is attested from the kernel's view of the caller, and gets only the identities
//! its selectors match (PermissionDenied, with a log line saying why, when there are none).
//! Streams send a full snapshot at once and again whenever the caller's part changes.
//!
//! Owns: request validation, per-caller filtering, stream lifecycles. Must not: issue anything
//! itself or read `/proc` (that is [`crate::attest`]).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use sigil_identity::{SpiffeId, TrustDomain};
use sigil_policy::Workload;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::attest::{Attestor, WorkloadFacts};
use crate::cache::{Snapshot, SvidCache};
use crate::metrics::Metrics;
use crate::proto::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use crate::proto::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse,
    WitsvidRequest, WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid,
    X509svidRequest, X509svidResponse,
};
use crate::selector;
use crate::socket::PeerInfo;

/// The metadata header every Workload API call must carry.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// Rejects calls without `workload.spiffe.io: true`, before any attestation.
#[allow(clippy::result_large_err)] // tonic's interceptor signature.
pub fn check_security_header(req: Request<()>) -> Result<Request<()>, Status> {
    match req.metadata().get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(req),
        _ => Err(Status::invalid_argument(
            "security header missing from request: set metadata `workload.spiffe.io: true`",
        )),
    }
}

/// The checker in front of the service.
pub type HeaderCheck = fn(Request<()>) -> Result<Request<()>, Status>;
/// The Workload API service as tonic serves it.
pub type Server = tonic::service::interceptor::InterceptedService<
    SpiffeWorkloadApiServer<WorkloadApi>,
    HeaderCheck,
>;

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The Workload API service.
#[derive(Debug, Clone)]
pub struct WorkloadApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cache: Arc<SvidCache>,
    attestor: Arc<Attestor>,
    workloads: RwLock<Arc<Vec<Workload>>>,
    metrics: Arc<Metrics>,
    trust_domain: TrustDomain,
    allow_unauthenticated_verifiers: bool,
}

/// An attested caller and the IDs it is entitled to, in policy order.
#[derive(Debug, Clone)]
struct Caller {
    facts: Option<WorkloadFacts>,
    ids: Vec<SpiffeId>,
}

impl WorkloadApi {
    pub fn new(
        cache: Arc<SvidCache>,
        attestor: Arc<Attestor>,
        workloads: Vec<Workload>,
        trust_domain: TrustDomain,
        allow_unauthenticated_verifiers: bool,
    ) -> Self {
        let metrics = cache.metrics().clone();
        Self {
            inner: Arc::new(Inner {
                cache,
                attestor,
                workloads: RwLock::new(Arc::new(workloads)),
                metrics,
                trust_domain,
                allow_unauthenticated_verifiers,
            }),
        }
    }

    /// The tonic service, with the security-header check in front.
    pub fn into_server(self) -> Server {
        let check: HeaderCheck = check_security_header;
        SpiffeWorkloadApiServer::with_interceptor(self, check)
    }

    /// Replaces the workloads (policy reload).
    pub fn set_workloads(&self, workloads: Vec<Workload>) {
        if let Ok(mut w) = self.inner.workloads.write() {
            *w = Arc::new(workloads);
        }
    }

    fn workloads(&self) -> Arc<Vec<Workload>> {
        self.inner
            .workloads
            .read()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// Attests the caller and selects its identities. `require` false lets verifiers without an
    /// identity through (bundles, validation) when so configured.
    async fn caller<T>(
        &self,
        req: &Request<T>,
        method: &str,
        require: bool,
    ) -> Result<Caller, Status> {
        let m = &self.inner.metrics;
        let peer = req.extensions().get::<PeerInfo>().and_then(|p| p.0);
        let Some(peer) = peer else {
            m.attestation_failure("no_credentials");
            tracing::warn!(
                method,
                "caller got no identity: no peer credentials on the connection"
            );
            return Err(Status::permission_denied(
                "no identity issued: caller has no peer credentials",
            ));
        };
        let facts = match self.inner.attestor.attest(&peer).await {
            Ok(f) => f,
            Err(e) => {
                m.attestation_failure(e.reason());
                tracing::warn!(method, pid = ?peer.pid, uid = peer.uid, gid = peer.gid, error = %e, "caller got no identity: attestation failed");
                return Err(Status::permission_denied(format!(
                    "no identity issued: attestation failed: {e}"
                )));
            }
        };
        let workloads = self.workloads();
        let ids: Vec<SpiffeId> = selector::select(&workloads, &facts)
            .into_iter()
            .map(|w| w.spiffe_id.clone())
            .collect();
        if ids.is_empty() {
            if require || !self.inner.allow_unauthenticated_verifiers {
                m.attestation_failure("no_matching_workload");
                tracing::warn!(
                    method,
                    caller = %facts,
                    why = %selector::explain(&workloads, &facts, 8),
                    "caller got no identity: no workload in the policy matches it"
                );
                return Err(Status::permission_denied("no identity issued"));
            }
            return Ok(Caller {
                facts: Some(facts),
                ids,
            });
        }
        tracing::debug!(method, caller = %facts, ids = ?ids.iter().map(ToString::to_string).collect::<Vec<_>>(), "caller attested");
        Ok(Caller {
            facts: Some(facts),
            ids,
        })
    }

    fn td_key(&self) -> String {
        self.inner.trust_domain.id_string()
    }
}

/// The caller's X.509-SVID response from a snapshot, with a key that changes when it does.
fn x509_response(snap: &Snapshot, ids: &[SpiffeId]) -> Option<(Vec<u64>, X509svidResponse)> {
    let bundle = snap.bundles.as_ref()?;
    let mut key = vec![bundle.version];
    let mut svids = Vec::new();
    for id in ids {
        if let Some(s) = snap.svids.get(id) {
            key.push(s.version);
            svids.push(X509svid {
                spiffe_id: id.to_string(),
                x509_svid: s.chain_der(),
                x509_svid_key: s.key_pkcs8.to_vec(),
                bundle: bundle.x509_der.clone(),
                hint: String::new(),
            });
        }
    }
    if svids.is_empty() {
        return None;
    }
    Some((
        key,
        X509svidResponse {
            svids,
            crl: Vec::new(),
            federated_bundles: HashMap::new(),
        },
    ))
}

/// Runs one stream: sends `make(snapshot)` at once and on every change of its key, until the
/// client goes away. `make` returning `None` means "nothing to send yet".
fn watch_stream<T, K, F>(
    mut rx: watch::Receiver<Arc<Snapshot>>,
    mut make: F,
    on_send: impl Fn(&T) + Send + 'static,
) -> Stream<T>
where
    T: Send + 'static,
    K: PartialEq + Send + 'static,
    F: FnMut(&Snapshot) -> Option<(K, T)> + Send + 'static,
{
    let (tx, out) = mpsc::channel::<Result<T, Status>>(4);
    tokio::spawn(async move {
        let mut last: Option<K> = None;
        loop {
            let snap = rx.borrow_and_update().clone();
            if let Some((key, msg)) = make(&snap)
                && last.as_ref() != Some(&key)
            {
                on_send(&msg);
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                last = Some(key);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() {
                    let _ = tx.send(Err(Status::unavailable("agent is shutting down"))).await;
                    return;
                },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(out))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<JwtBundlesResponse>;
    type FetchWITSVIDStream = Stream<WitsvidResponse>;
    type FetchWITBundlesStream = Stream<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let caller = self.caller(&request, "FetchX509SVID", true).await?;
        let metrics = self.inner.metrics.clone();
        if let Some(f) = &caller.facts {
            tracing::info!(caller = %f, ids = ?caller.ids.iter().map(ToString::to_string).collect::<Vec<_>>(), "serving X.509-SVIDs");
        }
        let ids = caller.ids;
        let s = watch_stream(
            self.inner.cache.subscribe(),
            move |snap| x509_response(snap, &ids),
            move |msg: &X509svidResponse| metrics.served("x509", msg.svids.len() as u64),
        );
        Ok(Response::new(s))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.caller(&request, "FetchX509Bundles", false).await?;
        let td = self.td_key();
        let s = watch_stream(
            self.inner.cache.subscribe(),
            move |snap| {
                let b = snap.bundles.as_ref()?;
                let mut bundles = HashMap::new();
                bundles.insert(td.clone(), b.x509_der.clone());
                Some((
                    b.version,
                    X509BundlesResponse {
                        crl: Vec::new(),
                        bundles,
                    },
                ))
            },
            |_: &X509BundlesResponse| {},
        );
        Ok(Response::new(s))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let caller = self.caller(&request, "FetchJWTSVID", true).await?;
        let req = request.into_inner();
        let audience: Vec<String> = req.audience.into_iter().filter(|a| !a.is_empty()).collect();
        if audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let ids = if req.spiffe_id.is_empty() {
            caller.ids
        } else {
            let want: SpiffeId = req.spiffe_id.parse().map_err(|e| {
                Status::invalid_argument(format!("bad spiffe_id {:?}: {e}", req.spiffe_id))
            })?;
            if !caller.ids.contains(&want) {
                self.inner.metrics.attestation_failure("id_not_entitled");
                tracing::warn!(requested = %want, entitled = ?caller.ids.iter().map(ToString::to_string).collect::<Vec<_>>(), "caller asked for a SPIFFE ID it is not entitled to");
                return Err(Status::permission_denied(format!(
                    "no identity issued: caller is not entitled to {want}"
                )));
            }
            vec![want]
        };
        let mut svids = Vec::with_capacity(ids.len());
        for id in ids {
            let tok = self
                .inner
                .cache
                .jwt_svid(&id, &audience)
                .await
                .map_err(|e| Status::unavailable(format!("cannot get a JWT-SVID for {id}: {e}")))?;
            svids.push(Jwtsvid {
                spiffe_id: id.to_string(),
                svid: tok.token,
                hint: String::new(),
            });
        }
        self.inner.metrics.served("jwt", svids.len() as u64);
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.caller(&request, "FetchJWTBundles", false).await?;
        let td = self.td_key();
        let s = watch_stream(
            self.inner.cache.subscribe(),
            move |snap| {
                let b = snap.bundles.as_ref()?;
                let mut bundles = HashMap::new();
                bundles.insert(td.clone(), b.jwks_json.clone());
                Some((b.version, JwtBundlesResponse { bundles }))
            },
            |_: &JwtBundlesResponse| {},
        );
        Ok(Response::new(s))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.caller(&request, "ValidateJWTSVID", false).await?;
        let req = request.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if req.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let snap = self.inner.cache.snapshot();
        let Some(b) = snap.bundles.as_ref() else {
            return Err(Status::unavailable(
                "no JWT bundle yet: the issuer has not been reached",
            ));
        };
        let mut bundles = BTreeMap::new();
        bundles.insert(b.bundles.jwt.trust_domain.clone(), b.bundles.jwt.clone());
        let v =
            sigil_identity::verify_jwt_svid(&req.svid, &bundles, &req.audience, SystemTime::now())
                .map_err(|e| Status::invalid_argument(format!("invalid JWT-SVID: {e}")))?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: v.spiffe_id().to_string(),
            claims: Some(json_to_struct(v.claims())),
        }))
    }

    async fn fetch_witsvid(
        &self,
        _request: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(Status::unimplemented(
            "the WIT-SVID profile is not served by this agent",
        ))
    }

    async fn fetch_wit_bundles(
        &self,
        _request: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(Status::unimplemented(
            "the WIT-SVID profile is not served by this agent",
        ))
    }
}

fn json_to_struct(m: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}
