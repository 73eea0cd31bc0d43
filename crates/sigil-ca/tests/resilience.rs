//! The control plane under failure and abuse, on 127.0.0.1: audit-log write failures injected
//! through the `LogFile` seam (torn writes, failed syncs, an immutable file), and clients that
//! hold connections without finishing a request (idle TCP, trickled headers, idle keep-alive,
//! slow bodies) against the connection cap and timeouts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sigil_ca::audit::{self, AuditLog, Event, LogFile};
use sigil_ca::client::{Client, ClientError, KeyAndCsr, Proof};
use sigil_ca::fake_cluster::FakeCluster;
use sigil_ca::server::{AppState, AuditFileWrap, Bound, ConnLimits, ServerConfig};
use sigil_identity::X509Bundle;
use sigil_policy::Policy;
use test_case::test_case;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

const ISSUER: &str = "https://kubernetes.test";

const POLICY: &str = r#"
apiVersion: sigil.dev/v1alpha1
kind: Platform
trustDomain: test.example.org
svid: { x509Ttl: 1h, jwtTtl: 5m }
workloads:
  - name: rag-api
    kubernetes: { namespace: rag, serviceAccount: rag-api }
attestation:
  kubernetes:
    - cluster: test
      issuer: https://kubernetes.test
      audiences: [sigil]
      jwksFile: jwks.json
"#;

// ---------------------------------------------------------------------------------------------
// Fault injection.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Half of the batch reaches the file, then ENOSPC.
    Torn,
    /// The whole batch is written, then fdatasync fails (EIO).
    SyncFails,
    /// Nothing can be written or truncated (EPERM), like `chattr +i`.
    Immutable,
    /// Half of the batch reaches the file, then ENOSPC, and truncating fails too.
    TornAndStuck,
}

#[derive(Debug, Default)]
struct Plan {
    /// Writes numbered from 1; those in this range fail.
    failing: std::ops::Range<u64>,
    fault: Option<Fault>,
    writes: u64,
    /// Outage: every sync and cut fails too, not only the first after the failing write.
    outage: bool,
    synced: bool,
    cut: bool,
}

impl Plan {
    fn active(&self) -> Option<Fault> {
        self.fault.filter(|_| self.failing.contains(&self.writes))
    }
    /// Whether this sync (or cut) fails: during an outage every one; after a single failing
    /// write only the first.
    fn once(&mut self, faults: &[Fault], cut: bool) -> bool {
        let Some(f) = self.active() else { return false };
        if !faults.contains(&f) {
            return false;
        }
        let done = if cut { &mut self.cut } else { &mut self.synced };
        self.outage || !std::mem::replace(done, true)
    }
    /// Every write from the next one on fails, until `heal`.
    fn outage(&mut self, f: Fault) {
        self.failing = self.writes + 1..u64::MAX;
        self.fault = Some(f);
        self.outage = true;
    }
    /// Only the N-th write from now fails.
    fn fail_nth(&mut self, n: u64, f: Fault) {
        self.failing = self.writes + n..self.writes + n + 1;
        self.fault = Some(f);
        self.outage = false;
    }
    fn heal(&mut self) {
        self.failing = 0..0;
    }
}

#[derive(Debug)]
struct Faulty {
    inner: File,
    plan: Arc<Mutex<Plan>>,
}

fn os(code: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(code)
}

const ENOSPC: i32 = 28;
const EPERM: i32 = 1;
const EIO: i32 = 5;

impl LogFile for Faulty {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let fault = {
            let mut p = self.plan.lock().unwrap();
            p.writes += 1;
            p.synced = false;
            p.cut = false;
            p.active()
        };
        match fault {
            None | Some(Fault::SyncFails) => self.inner.write_all(buf),
            Some(Fault::Torn | Fault::TornAndStuck) => {
                self.inner.write_all(&buf[..buf.len() / 2])?;
                Err(os(ENOSPC))
            }
            Some(Fault::Immutable) => Err(os(EPERM)),
        }
    }
    fn sync(&mut self) -> std::io::Result<()> {
        if self.plan.lock().unwrap().once(&[Fault::SyncFails], false) {
            return Err(os(EIO));
        }
        self.inner.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        if self
            .plan
            .lock()
            .unwrap()
            .once(&[Fault::Immutable, Fault::TornAndStuck], true)
        {
            return Err(os(EPERM));
        }
        self.inner.set_len(len)
    }
}

fn faulty(plan: &Arc<Mutex<Plan>>) -> AuditFileWrap {
    let plan = plan.clone();
    Box::new(move |f| Box::new(Faulty { inner: f, plan }) as Box<dyn LogFile>)
}

fn ev(name: &str) -> Event {
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

fn events_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["body"]["event"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test_case(Fault::Torn ; "half a batch written then ENOSPC")]
#[test_case(Fault::SyncFails ; "written but fdatasync fails")]
#[test_case(Fault::Immutable ; "immutable file")]
#[test_case(Fault::TornAndStuck ; "torn and the cut fails too")]
fn failed_append_leaves_a_verifiable_log_and_the_chain_continues(fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let plan = Arc::new(Mutex::new(Plan::default()));
    let mut log = AuditLog::open_with(&p, faulty(&plan)).unwrap();
    log.append(vec![ev("a"), ev("b")]).unwrap();
    let before = std::fs::read(&p).unwrap();

    plan.lock().unwrap().fail_nth(1, fault);
    let err = log
        .append(vec![ev("lost-1"), ev("lost-2")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audit.jsonl") && err.contains("failed"),
        "{err}"
    );
    assert_eq!(
        log.next_seq(),
        3,
        "the sequence must not advance on a failed append"
    );
    if fault == Fault::TornAndStuck {
        assert!(err.contains("retried before the next append"), "{err}");
    } else {
        // Nothing of the failed batch is left: the file is byte for byte what it was.
        assert_eq!(std::fs::read(&p).unwrap(), before, "{err}");
        assert_eq!(audit::verify(&p).unwrap().lines, 2);
    }

    // Writing works again: the torn tail (if any) is cut first, the chain continues.
    log.append(vec![ev("c")]).unwrap();
    let v = audit::verify(&p).unwrap();
    assert_eq!(v.lines, 3);
    assert_eq!(events_in(&p), ["a", "b", "c"]);
    drop(log);
    let mut log = AuditLog::open(&p).unwrap();
    log.append(vec![ev("d")]).unwrap();
    assert_eq!(audit::verify(&p).unwrap().lines, 4);
}

#[test]
fn append_refused_while_the_torn_tail_cannot_be_cut() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let plan = Arc::new(Mutex::new(Plan::default()));
    let mut log = AuditLog::open_with(&p, faulty(&plan)).unwrap();
    log.append(vec![ev("a")]).unwrap();
    plan.lock().unwrap().outage(Fault::TornAndStuck);
    assert!(log.append(vec![ev("x")]).is_err());
    // Still stuck: the next append refuses before writing anything on top of the torn tail.
    let e = log.append(vec![ev("y")]).unwrap_err().to_string();
    assert!(
        e.contains("cannot remove the partly written records"),
        "{e}"
    );
    plan.lock().unwrap().heal();
    log.append(vec![ev("b")]).unwrap();
    assert_eq!(events_in(&p), ["a", "b"]);
    assert_eq!(audit::verify(&p).unwrap().lines, 2);
}

// ---------------------------------------------------------------------------------------------
// Servers.

struct Running {
    url: String,
    addr: std::net::SocketAddr,
    bundle: Arc<X509Bundle>,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
    fn client(&self) -> Client {
        Client::new(&self.url, &self.bundle, None).unwrap()
    }
    fn metrics(&self) -> String {
        self.state.metrics.encode()
    }
}

async fn start(
    dir: &Path,
    cluster: &FakeCluster,
    wrap: Option<AuditFileWrap>,
    limits: ConnLimits,
) -> Running {
    std::fs::write(
        dir.join("jwks.json"),
        serde_json::to_vec(&cluster.jwks()).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("sigil.yaml"), POLICY).unwrap();
    let policy = Policy::load(&dir.join("sigil.yaml")).unwrap();
    let cfg = ServerConfig {
        data_dir: dir.join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        policy,
        extra_sans: vec![],
        issuer_url: None,
        init_if_missing: true,
        require_jwks: true,
    };
    let bound = match wrap {
        Some(w) => Bound::bind_with_audit_file(cfg, w).await,
        None => Bound::bind(cfg).await,
    }
    .unwrap()
    .with_limits(limits)
    .unwrap();
    let addr = bound.local_addr().unwrap();
    let bundle = bound.bundle().unwrap();
    let state = bound.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async {
        let _ = rx.await;
    }));
    Running {
        url: format!("https://{addr}"),
        addr,
        bundle,
        state,
        stop: Some(tx),
        task: Some(task),
    }
}

/// The value of one sample line of the Prometheus text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_outage_refuses_issuance_counts_lost_refusals_and_the_chain_survives() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let plan = Arc::new(Mutex::new(Plan::default()));
    let srv = start(
        dir.path(),
        &cluster,
        Some(faulty(&plan)),
        ConnLimits::default(),
    )
    .await;
    let log = dir.path().join("data/audit.jsonl");
    let proof = || Proof::KubernetesToken(Zeroizing::new(cluster.token("rag", "rag-api", "sigil")));
    let key = KeyAndCsr::generate().unwrap();
    let first = srv
        .client()
        .attest_x509(&proof(), &key.csr_pem)
        .await
        .unwrap();
    let lines_before = audit::verify(&log).unwrap().lines;
    assert!(lines_before >= 1);

    // Disk full: every write is torn.
    plan.lock().unwrap().outage(Fault::Torn);
    match srv.client().attest_x509(&proof(), &key.csr_pem).await {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status, 500),
        other => panic!("an SVID without its durable record: {other:?}"),
    }
    // A refusal during the outage: its record cannot be written, it is counted instead.
    let bad = Proof::KubernetesToken(Zeroizing::new(cluster.token("rag", "rag-api", "other")));
    assert!(matches!(
        srv.client().attest_x509(&bad, &key.csr_pem).await,
        Err(ClientError::Refused { .. })
    ));
    until(
        "the lost refusal to be counted",
        Duration::from_secs(10),
        || metric(&srv.metrics(), "sigil_server_audit_records_lost_total") >= 2.0,
    )
    .await;
    let m = srv.metrics();
    assert!(
        metric(&m, "sigil_server_audit_write_failures_total") >= 2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "sigil_server_unrecorded_refused_total"),
        1.0,
        "{m}"
    );
    // During the outage the log still verifies, and holds nothing of the refused issuance.
    assert_eq!(audit::verify(&log).unwrap().lines, lines_before);

    // Writing works again: issuance resumes and the chain continues.
    plan.lock().unwrap().heal();
    let again = srv
        .client()
        .attest_x509(&proof(), &key.csr_pem)
        .await
        .unwrap();
    let v = audit::verify(&log).unwrap();
    assert_eq!(v.lines, lines_before + 1);
    let text = std::fs::read_to_string(&log).unwrap();
    let serial = |pem: &str| {
        let der = sigil_identity::certs_from_pem(pem.as_bytes()).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(der[0].as_ref()).unwrap();
        c.raw_serial_as_string().replace(':', "").to_lowercase()
    };
    for svid in [&first, &again] {
        assert!(
            text.contains(&serial(&svid.svid)),
            "the log must hold the serial of every SVID handed out"
        );
    }
    srv.stop().await;

    // A restart on the same log continues the chain.
    let srv = start(dir.path(), &cluster, None, ConnLimits::default()).await;
    srv.client()
        .attest_x509(&proof(), &key.csr_pem)
        .await
        .unwrap();
    assert_eq!(audit::verify(&log).unwrap().lines, lines_before + 2);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Connection cap and timeouts.

fn tight() -> ConnLimits {
    ConnLimits {
        max_connections: 8,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(1),
    }
}

async fn tls(srv: &Running) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for r in srv.bundle.roots() {
        roots.add(r.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls_pki_types::ServerName::IpAddress(srv.addr.ip().into()),
            tcp,
        )
        .await
        .unwrap()
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
        .expect("the server did not close the connection in time");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_over_the_cap_are_closed_and_a_real_request_is_still_answered() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster, None, tight()).await;
    // Twice the cap of connections that never start TLS.
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(tokio::net::TcpStream::connect(srv.addr).await.unwrap());
    }
    until("the cap to be reached", Duration::from_secs(5), || {
        metric(&srv.metrics(), "sigil_server_connections_open") == 8.0
    })
    .await;
    // A real client while the cap is held: it waits in the backlog and is answered once the
    // idle connections time out (two rounds of one header timeout at most).
    let t = Instant::now();
    let body = srv.client().get_text("/healthz").await.unwrap();
    let waited = t.elapsed();
    assert_eq!(body.trim(), "ok");
    assert!(waited < Duration::from_secs(6), "answered after {waited:?}");
    for s in &mut idle {
        closed_within(s, Duration::from_secs(5)).await;
    }
    let m = srv.metrics();
    assert!(
        metric(&m, "sigil_server_connections_limited_total") >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "sigil_server_connections_timed_out_total{phase=\"handshake\"}"
        ),
        16.0,
        "{m}"
    );
    // After the flood, a request is answered at once.
    let t = Instant::now();
    srv.client().get_text("/healthz").await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_are_cut_at_the_header_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster, None, tight()).await;
    let t = Instant::now();
    let mut s = tls(&srv).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // One header line every 200 ms: progress, but the request never completes.
    let trickle = async {
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
                || s.flush().await.is_err()
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("the trickling connection was not closed");
    let took = t.elapsed();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    until(
        "the header timeout to be counted",
        Duration::from_secs(3),
        || {
            metric(
                &srv.metrics(),
                "sigil_server_connections_timed_out_total{phase=\"header\"}",
            ) >= 1.0
        },
    )
    .await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster, None, tight()).await;
    let mut s = tls(&srv).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let t = Instant::now();
    closed_within(&mut s, Duration::from_secs(6)).await;
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
                &srv.metrics(),
                "sigil_server_connections_timed_out_total{phase=\"idle\"}",
            ) >= 1.0
        },
    )
    .await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_gets_408_and_the_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(ISSUER).unwrap();
    let srv = start(dir.path(), &cluster, None, tight()).await;
    let mut s = tls(&srv).await;
    s.write_all(
        b"POST /v1/attest/x509 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"token\":",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let got = closed_within(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"body_timeout\""), "{text}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let m = srv.metrics();
    assert_eq!(
        metric(
            &m,
            "sigil_server_connections_timed_out_total{phase=\"body\"}"
        ),
        1.0,
        "{m}"
    );
    srv.stop().await;
}
