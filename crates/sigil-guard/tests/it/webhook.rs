//! Real AdmissionReview v1 JSON posted over TLS (rustls client, hyper HTTP/1.1) to the webhook
//! bound on 127.0.0.1.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use sigil_guard::Severity;
use sigil_guard::audit::{Auditor, Settings};
use sigil_guard::webhook::{self, WebhookState};
use sigil_policy::Exemption;
use tokio::net::TcpStream;

struct Server {
    addr: std::net::SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
    state: Arc<WebhookState>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(settings: Settings) -> Server {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls = webhook::tls_config(&cert, &key).unwrap();
    let mut settings = settings;
    settings.exemptions.push(Exemption {
        rules: vec![],
        namespace: "legacy".into(),
        name: None,
        reason: "migrating off the old platform by Q3".into(),
    });
    let state = Arc::new(WebhookState::new(
        Auditor::new(settings, None),
        Severity::Medium,
        vec!["kube-system".into()],
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    tokio::spawn(async move {
        webhook::serve(listener, Arc::new(tls), st, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        addr,
        ca: ck.cert.der().clone(),
        state,
        _dir: dir,
        stop: Some(tx),
    }
}

async fn request(s: &Server, method: &str, path: &str, body: Vec<u8>) -> (u16, Bytes) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(s.ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn review(uid: &str, namespace: &str, object: Value, dry_run: bool) -> Vec<u8> {
    let kind = object["kind"].as_str().unwrap().to_owned();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object,
            "dryRun": dry_run,
        }
    }))
    .unwrap()
}

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn good_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ok"},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": format!("registry.example.org/app@{DIGEST}"),
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }
    })
}

fn bad_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bad"},
        "spec": {
            "hostNetwork": true,
            "containers": [{"name": "app", "image": "nginx:latest",
                "securityContext": {"privileged": true},
                "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]
        }
    })
}

async fn post(s: &Server, body: Vec<u8>) -> Value {
    let (status, b) = request(s, "POST", "/validate", body).await;
    assert_eq!(status, 200);
    serde_json::from_slice(&b).unwrap()
}

#[tokio::test]
async fn allows_a_hardened_pod() {
    let s = start(Settings::default()).await;
    let r = post(&s, review("u-1", "apps", good_pod(), false)).await;
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["kind"], "AdmissionReview");
    assert_eq!(r["response"]["uid"], "u-1");
    assert_eq!(r["response"]["allowed"], true, "{r}");
    assert_eq!(r["response"]["auditAnnotations"]["findings"], "0");
}

#[tokio::test]
async fn denies_with_every_violation_in_the_message() {
    let s = start(Settings::default()).await;
    let r = post(&s, review("u-2", "apps", bad_pod(), false)).await;
    let resp = &r["response"];
    assert_eq!(resp["uid"], "u-2");
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["status"]["code"], 403);
    let msg = resp["status"]["message"].as_str().unwrap();
    for rule in [
        "PSS-BASELINE-PRIVILEGED",
        "PSS-BASELINE-HOST-NAMESPACES",
        "PSS-RESTRICTED-RUN-AS-NON-ROOT",
        "SIGIL-GPU-VISIBLE-DEVICES",
        "SIGIL-IMAGE-DIGEST",
    ] {
        assert!(msg.contains(rule), "{rule} missing from {msg}");
    }
    assert!(msg.contains("Pod apps/bad"), "{msg}");
    assert!(
        resp["auditAnnotations"]["denied-rules"]
            .as_str()
            .unwrap()
            .contains("PSS-BASELINE-PRIVILEGED")
    );
}

#[tokio::test]
async fn warn_level_findings_become_warnings() {
    let s = start(Settings::default()).await;
    // A GPU Job without a deadline is a low-severity finding: allowed, with a warning.
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
        "spec": {"template": {"spec": good_pod()["spec"].clone()}}
    });
    job["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"nvidia.com/gpu": "1"}});
    let r = post(&s, review("u-3", "training", job, false)).await;
    assert_eq!(r["response"]["allowed"], true, "{r}");
    let w = r["response"]["warnings"].as_array().unwrap();
    assert!(
        w.iter()
            .any(|w| w.as_str().unwrap().contains("SIGIL-TRAINING-DEADLINE")),
        "{w:?}"
    );
}

#[tokio::test]
async fn dry_run_is_answered_but_not_counted() {
    let s = start(Settings::default()).await;
    let r = post(&s, review("u-4", "apps", bad_pod(), true)).await;
    assert_eq!(r["response"]["allowed"], false);
    assert_eq!(r["response"]["auditAnnotations"]["dry-run"], "true");
    let (_, m) = request(&s, "GET", "/metrics", vec![]).await;
    let m = String::from_utf8(m.to_vec()).unwrap();
    assert!(
        m.contains("sigil_webhook_reviews_total{result=\"denied\"} 0"),
        "{m}"
    );
    assert!(m.contains("sigil_webhook_dry_run_total 1"), "{m}");
    let _ = &s.state;
}

#[tokio::test]
async fn exempt_namespaces_are_allowed_and_annotated() {
    let s = start(Settings::default()).await;
    for (uid, ns) in [("u-5", "kube-system"), ("u-6", "legacy")] {
        let r = post(&s, review(uid, ns, bad_pod(), false)).await;
        assert_eq!(r["response"]["allowed"], true, "{ns}: {r}");
        assert!(
            r["response"]["auditAnnotations"]["exempt"]
                .as_str()
                .unwrap()
                .contains(ns)
        );
    }
    let r = post(&s, review("u-7", "other", bad_pod(), false)).await;
    assert_eq!(r["response"]["allowed"], false);
}

#[tokio::test]
async fn malformed_requests_fail_closed() {
    let s = start(Settings::default()).await;
    let r = post(&s, b"{not json".to_vec()).await;
    assert_eq!(r["response"]["allowed"], false);
    let r = post(&s, serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}})).unwrap()).await;
    assert_eq!(r["response"]["allowed"], false);
    assert_eq!(r["response"]["status"]["code"], 400);
    // A pod whose spec has the wrong shape is denied with the field named.
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": 5}});
    let r = post(&s, review("u-8", "apps", bad, false)).await;
    assert_eq!(r["response"]["allowed"], false);
    assert!(
        r["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("field spec"),
        "{r}"
    );
    let (status, _) = request(&s, "GET", "/healthz", vec![]).await;
    assert_eq!(status, 200);
}

mod never_panics {
    use proptest::prelude::*;
    use serde_json::json;
    use sigil_guard::Severity;
    use sigil_guard::audit::{Auditor, Settings};
    use sigil_guard::webhook::{WebhookState, review};

    fn state() -> WebhookState {
        WebhookState::new(
            Auditor::new(Settings::default(), None),
            Severity::Medium,
            vec![],
        )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_denied_not_panicked(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let r = review(&state(), &bytes);
            prop_assert_eq!(&r["kind"], "AdmissionReview");
        }

        #[test]
        fn arbitrary_objects_never_panic(spec in "[a-zA-Z{}\\[\\]:,\" 0-9]{0,120}") {
            let object = serde_json::from_str::<serde_json::Value>(&spec).unwrap_or(json!(spec));
            let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u", "operation": "CREATE", "namespace": "n",
                    "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": object}}});
            let r = review(&state(), &serde_json::to_vec(&body).unwrap());
            prop_assert_eq!(&r["response"]["uid"], "u");
        }
    }
}

#[tokio::test]
async fn rotated_certificates_are_picked_up_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let write = |ck: &rcgen::CertifiedKey<rcgen::KeyPair>| {
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    };
    let a = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    write(&a);
    let resolver = webhook::ReloadingCert::load(&cert, &key).unwrap();
    let tls = webhook::tls_config_with(resolver.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(WebhookState::new(
        Auditor::new(Settings::default(), None),
        Severity::Medium,
        vec![],
    ));
    tokio::spawn(webhook::serve(
        listener,
        Arc::new(tls),
        state.clone(),
        std::future::pending(),
    ));
    let srv = |ca: &rcgen::CertifiedKey<rcgen::KeyPair>| Server {
        addr,
        ca: ca.cert.der().clone(),
        state: state.clone(),
        _dir: tempfile::tempdir().unwrap(),
        stop: None,
    };
    assert_eq!(request(&srv(&a), "GET", "/healthz", vec![]).await.0, 200);
    assert!(!resolver.reload_if_changed().unwrap());
    let b = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    write(&b);
    assert!(resolver.reload_if_changed().unwrap());
    assert_eq!(request(&srv(&b), "GET", "/healthz", vec![]).await.0, 200);
    // A broken file keeps the current certificate.
    std::fs::write(&key, "not a key").unwrap();
    assert!(resolver.reload_if_changed().is_err());
    assert_eq!(request(&srv(&b), "GET", "/healthz", vec![]).await.0, 200);
}
