//! The webhook's listener against clients that hold connections without finishing a request,
//! on 127.0.0.1: idle TCP over the connection cap, trickled headers, idle keep-alive, slow body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use sigil_guard::Severity;
use sigil_guard::audit::{Auditor, Settings};
use sigil_guard::webhook::{self, ConnLimits, WebhookState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

fn tight() -> ConnLimits {
    ConnLimits {
        max_connections: 8,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(1),
    }
}

async fn start(limits: ConnLimits) -> Server {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls = webhook::tls_config(&cert, &key).unwrap();
    let state = Arc::new(WebhookState::new(
        Auditor::new(Settings::default(), None),
        Severity::Medium,
        vec![],
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    tokio::spawn(async move {
        webhook::serve_with(listener, Arc::new(tls), st, limits, async {
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

async fn tls(s: &Server) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(s.ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn metric(s: &Server, name: &str) -> f64 {
    s.state
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the peer closes (EOF or error); the bytes read before.
async fn closed_within(s: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .expect("the webhook did not close the connection in time");
    got
}

/// One GET on a fresh connection; the status line.
async fn healthz(s: &Server) -> String {
    let mut c = tls(s).await;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut c, Duration::from_secs(10)).await;
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_over_the_cap_are_closed_and_a_review_client_is_still_answered() {
    let s = start(tight()).await;
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(TcpStream::connect(s.addr).await.unwrap());
    }
    until("the cap to be reached", Duration::from_secs(5), || {
        metric(&s, "sigil_webhook_connections_open") == 8.0
    })
    .await;
    let t = Instant::now();
    assert_eq!(healthz(&s).await, "HTTP/1.1 200 OK");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    for c in &mut idle {
        closed_within(c, Duration::from_secs(5)).await;
    }
    assert!(metric(&s, "sigil_webhook_connections_limited_total") >= 1.0);
    assert_eq!(
        metric(
            &s,
            "sigil_webhook_connections_timed_out_total{phase=\"handshake\"}"
        ),
        16.0
    );
    let t = Instant::now();
    assert_eq!(healthz(&s).await, "HTTP/1.1 200 OK");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_are_cut_at_the_header_deadline() {
    let s = start(tight()).await;
    let t = Instant::now();
    let mut c = tls(&s).await;
    c.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let trickle = async {
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if c.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
                || c.flush().await.is_err()
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("the trickling connection was not closed");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    until(
        "the header timeout to be counted",
        Duration::from_secs(3),
        || {
            metric(
                &s,
                "sigil_webhook_connections_timed_out_total{phase=\"header\"}",
            ) >= 1.0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let s = start(tight()).await;
    let mut c = tls(&s).await;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let t = Instant::now();
    closed_within(&mut c, Duration::from_secs(6)).await;
    let idle = t.elapsed();
    assert!(
        idle >= Duration::from_millis(1800) && idle < Duration::from_secs(4),
        "closed after {idle:?} idle"
    );
    until(
        "the idle timeout to be counted",
        Duration::from_secs(3),
        || {
            metric(
                &s,
                "sigil_webhook_connections_timed_out_total{phase=\"idle\"}",
            ) >= 1.0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_gets_a_408_admission_review_and_the_connection_is_closed() {
    let s = start(tight()).await;
    let mut c = tls(&s).await;
    c.write_all(
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"apiVersion\":",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let got = closed_within(&mut c, Duration::from_secs(5)).await;
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["status"]["code"], 408);
    assert_eq!(
        metric(
            &s,
            "sigil_webhook_connections_timed_out_total{phase=\"body\"}"
        ),
        1.0
    );
}
