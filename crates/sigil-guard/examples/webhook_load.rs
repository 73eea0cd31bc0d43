//! Open-loop load generator for `sigil webhook` (used by bench/audit.sh).
//!
//! Generates a throw-away serving certificate, starts the given `sigil` binary as a child process
//! on 127.0.0.1, then sends AdmissionReview v1 requests over TLS at a fixed rate from several
//! keep-alive connections. Latency is measured from each request's *scheduled* send time, so a
//! slow server cannot hide queueing (no coordinated omission). Prints `RESULT` lines.
//!
//! Usage: webhook_load SIGIL_BIN PLATFORM_YAML MANIFEST_DIR [RATE] [SECONDS] [CONNECTIONS]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!(
            "usage: webhook_load SIGIL_BIN PLATFORM_YAML MANIFEST_DIR [RATE] [SECONDS] [CONNECTIONS]"
        );
        std::process::exit(2);
    }
    let rate: u64 = args.get(4).map_or(500, |s| s.parse().unwrap());
    let seconds: u64 = args.get(5).map_or(20, |s| s.parse().unwrap());
    let conns: u64 = args.get(6).map_or(8, |s| s.parse().unwrap());

    // Request bodies: every pod-carrying object of the example manifests, as AdmissionReviews.
    let objs = sigil_kube::load_paths(&[args[3].clone().into()]).unwrap();
    let bodies: Vec<Bytes> = objs
        .iter()
        .filter(|o| sigil_kube::has_pod_templates(&o.kind))
        .enumerate()
        .map(|(i, o)| {
            Bytes::from(
                serde_json::to_vec(&json!({
                    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "request": {"uid": format!("bench-{i}"), "operation": "CREATE",
                        "kind": {"group": o.group(), "version": "v1", "kind": o.kind},
                        "namespace": o.namespace.clone().unwrap_or_default(),
                        "userInfo": {"username": "bench"}, "object": o.raw}
                }))
                .unwrap(),
            )
        })
        .collect();
    assert!(!bodies.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), ck.signing_key.serialize_pem()).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(&args[1])
        .args(["webhook", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--platform")
        .arg(&args[2])
        .env("SIGIL_LOG", "warn")
        .spawn()
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connect = |cfg: Arc<rustls::ClientConfig>| async move {
        for _ in 0..100 {
            if let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                tcp.set_nodelay(true).unwrap();
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .unwrap();
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                return sender;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("webhook did not start");
    };

    // Warm-up: one request per connection.
    let bodies = Arc::new(bodies);
    let period = Duration::from_nanos(1_000_000_000 * conns / rate);
    let mut tasks = Vec::new();
    let start_at = Instant::now() + Duration::from_millis(500);
    for c in 0..conns {
        let mut sender = connect(cfg.clone()).await;
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut denied = 0u64;
            let n = seconds * rate / conns;
            // Stagger connections evenly over one period.
            let offset = period * u32::try_from(c).unwrap() / u32::try_from(conns).unwrap();
            for i in 0..n {
                let scheduled = start_at + offset + period * u32::try_from(i).unwrap();
                tokio::time::sleep_until(scheduled.into()).await;
                let body =
                    bodies[usize::try_from((i * conns + c) % bodies.len() as u64).unwrap()].clone();
                let req = hyper::Request::post("/validate")
                    .header("host", "localhost")
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .unwrap();
                let resp = sender.send_request(req).await.unwrap();
                let b = resp.into_body().collect().await.unwrap().to_bytes();
                lat.push(scheduled.elapsed());
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                if v["response"]["allowed"] != serde_json::Value::Bool(true) {
                    denied += 1;
                }
            }
            (lat, denied)
        }));
    }
    let mut all = Vec::new();
    let mut denied = 0;
    for t in tasks {
        let (l, d) = t.await.unwrap();
        all.extend(l);
        denied += d;
    }
    let _ = child.kill();
    let _ = child.wait();
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    let elapsed = seconds as f64;
    eprintln!(
        "{} requests ({} denied, {} allowed) over {conns} TLS connections at {rate}/s for {seconds}s",
        all.len(),
        denied,
        all.len() as u64 - denied
    );
    println!("RESULT webhook_requests {} count", all.len());
    println!(
        "RESULT webhook_rate {:.0} req/s",
        all.len() as f64 / elapsed
    );
    println!("RESULT webhook_latency_p50 {:.3} ms", pct(0.50));
    println!("RESULT webhook_latency_p99 {:.3} ms", pct(0.99));
    println!(
        "RESULT webhook_latency_max {:.3} ms",
        all.last().unwrap().as_secs_f64() * 1e3
    );
}
