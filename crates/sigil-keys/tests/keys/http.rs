//! The HTTP layer over 127.0.0.1: status codes from Rust, and the real `hvac` client from PyPI
//! (skipped on a dev machine without it; a failure when `CI` is set).

use std::sync::Arc;

use sigil_identity::SpiffeId;
use sigil_keys::http::{KubernetesLogin, Transit, router};
use sigil_keys::{KeyService, MemStore};

use crate::common::policy;

/// Test verifier: fixed tokens for the fixture's workloads, role "sigil".
struct FakeCluster;

impl KubernetesLogin for FakeCluster {
    fn login(&self, role: &str, jwt: &str) -> Result<SpiffeId, String> {
        if role != "sigil" {
            return Err(format!("unknown role {role:?}"));
        }
        let name = jwt
            .strip_prefix("jwt-")
            .ok_or("token signature does not verify")?;
        policy()
            .workload(name)
            .map(|w| w.spiffe_id.clone())
            .ok_or_else(|| "no such service account".to_string())
    }
}

/// A fresh, uninitialized server on 127.0.0.1; its address.
fn serve(rt: &tokio::runtime::Runtime) -> String {
    let svc = Arc::new(KeyService::new(Arc::new(MemStore::new()), policy()));
    let app = router(Transit::new(svc, Some(Arc::new(FakeCluster))));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn status_codes_follow_vault() {
    let rt = runtime();
    let base = serve(&rt);
    rt.block_on(async {
        let c = reqwest::Client::new();
        let get = |p: &str| c.get(format!("{base}{p}")).send();
        assert_eq!(
            get("/v1/sys/health").await.unwrap().status(),
            501,
            "not initialized"
        );
        let r = c
            .put(format!("{base}/v1/sys/init"))
            .json(&serde_json::json!({"secret_shares": 1, "secret_threshold": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let init: serde_json::Value = r.json().await.unwrap();
        assert_eq!(get("/v1/sys/health").await.unwrap().status(), 503, "sealed");
        let r = c
            .post(format!("{base}/v1/transit/encrypt/k"))
            .header("X-Vault-Token", init["root_token"].as_str().unwrap())
            .json(&serde_json::json!({"plaintext": "aGk="}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let body = r.text().await.unwrap();
        assert!(body.contains("sealed"), "{body}");
        let r = c
            .put(format!("{base}/v1/sys/init"))
            .json(&serde_json::json!({"secret_shares": 1, "secret_threshold": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "second init");
        let r = c
            .put(format!("{base}/v1/sys/unseal"))
            .json(&serde_json::json!({"key": init["keys"][0]}))
            .send()
            .await
            .unwrap();
        let s: serde_json::Value = r.json().await.unwrap();
        assert_eq!(s["sealed"], false);
        let post = |p: &str, token: &str, body: serde_json::Value| {
            c.post(format!("{base}{p}"))
                .header("X-Vault-Token", token.to_string())
                .json(&body)
                .send()
        };
        let root = init["root_token"].as_str().unwrap();
        assert_eq!(
            post(
                "/v1/transit/encrypt/k",
                "s.bogus",
                serde_json::json!({"plaintext": "aGk="})
            )
            .await
            .unwrap()
            .status(),
            403
        );
        let r = post(
            "/v1/transit/encrypt/k",
            root,
            serde_json::json!({"plaintext": "aGk=", "extra": 1}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "unknown field");
        assert!(r.text().await.unwrap().contains("\\\"extra\\\""));
        let r = post(
            "/v1/transit/encrypt/k",
            root,
            serde_json::json!({"plaintext": "aGk=", "convergent_encryption": true}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "convergent refused");
        assert_eq!(
            post(
                "/v1/transit/encrypt/k",
                root,
                serde_json::json!({"plaintext": "aGk="})
            )
            .await
            .unwrap()
            .status(),
            200
        );
        assert_eq!(
            post(
                "/v1/transit/decrypt/missing",
                root,
                serde_json::json!({"ciphertext": "vault:v1:AAAA"})
            )
            .await
            .unwrap()
            .status(),
            404
        );
        let r = post(
            "/v1/transit/encrypt/k",
            root,
            serde_json::json!({"batch_input": [{"plaintext": "!"}]}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "every batch item failed");
        let big = "A".repeat(2 << 20);
        let r = post(
            "/v1/transit/encrypt/k",
            root,
            serde_json::json!({"plaintext": big}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 413, "body limit");
    });
}

#[test]
fn hvac_client_works_unchanged() {
    let has_hvac = std::process::Command::new("python3")
        .args(["-c", "import hvac"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_hvac {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with hvac is required under CI (pip install -r .ci/requirements.txt)");
        }
        eprintln!("skipping: python3 with hvac not found (pip install hvac)");
        return;
    }
    let rt = runtime();
    let base = serve(&rt);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hvac_interop.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .env("VAULT_ADDR", &base)
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "hvac interop failed:\n{text}");
    assert!(text.contains("hvac interop: ok"), "{text}");
}
