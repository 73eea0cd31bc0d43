//! Test support: a throwaway SPIFFE PKI (rcgen), credential directories, log capture, an echo
//! upstream, tunnel pairs on 127.0.0.1, and a plain rustls client that presents any certificate.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sigil_policy::Policy;
use sigil_tunnel::ktls::KtlsMode;
use sigil_tunnel::{
    CredentialStore, FileSource, InboundSpec, Limits, LiveConnections, Metrics, Mode, OutboundSpec,
    PolicyStore,
};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const TD: &str = "ai.example.org";
pub const RAG_API: &str = "spiffe://ai.example.org/ns/rag/sa/rag-api";
pub const VECTOR_DB: &str = "spiffe://ai.example.org/ns/vectordb/sa/qdrant";
pub const PROMETHEUS: &str = "spiffe://ai.example.org/ns/monitoring/sa/prometheus";
pub const INFERENCE: &str = "spiffe://ai.example.org/ns/inference/sa/vllm";

/// Tests share the process (fd counts, log buffer): run them one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------- logs ----------

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = Arc::clone(&buf);
        let _ = tracing_subscriber::fmt()
            .with_env_filter("sigil_tunnel=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&w)))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(b)?;
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_logs() {
    let _ = log_buffer();
}

/// Log lines so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

/// Waits until a log line contains every needle.
/// Waits (up to 5 s) until `cond` holds: server-side counters move a moment after the client
/// has seen the outcome.
pub async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub async fn wait_log(needles: &[&str]) -> String {
    for _ in 0..100 {
        if let Some(line) = logs()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no log line with {needles:?}; logs:\n{}", logs());
}

// ---------- PKI ----------

pub struct Pki {
    pub td: String,
    ca: CertifiedIssuer<'static, KeyPair>,
}

pub struct Svid {
    pub chain_pem: String,
    pub key_pem: String,
    pub leaf: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

impl Svid {
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.leaf.clone()]
    }
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::try_from(self.key_der.clone()).unwrap()
    }
}

impl Pki {
    pub fn new(td: &str) -> Self {
        Self::named(td, &format!("test CA {td}"))
    }

    /// A CA with a chosen name (a rogue CA may reuse the real CA's name).
    pub fn named(td: &str, cn: &str) -> Self {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(1);
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        Self {
            td: td.to_owned(),
            ca,
        }
    }

    pub fn bundle_pem(&self) -> String {
        self.ca.pem()
    }

    /// An SVID valid from `from` to `to` seconds relative to now.
    pub fn svid_between(&self, id: &str, from: i64, to: i64) -> Svid {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::seconds(from);
        p.not_after = now + time::Duration::seconds(to);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca).unwrap();
        Svid {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            leaf: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    pub fn svid(&self, id: &str) -> Svid {
        self.svid_between(id, -60, 3600)
    }
}

/// Writes `svid.pem`, `svid.key`, `bundle.pem` atomically (temp + rename), as `sigil svid fetch`.
pub fn write_creds(dir: &Path, svid: &Svid, bundle_pem: &str) {
    for (name, body) in [
        ("svid.key", svid.key_pem.as_str()),
        ("svid.pem", svid.chain_pem.as_str()),
        ("bundle.pem", bundle_pem),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

pub const POLICY_TEXT: &str = include_str!("../../../../examples/ai-platform/sigil.yaml");

/// The example platform's policy, in a store of its own.
pub fn policy() -> Arc<PolicyStore> {
    PolicyStore::new(
        Policy::parse(POLICY_TEXT, Path::new("examples/ai-platform/sigil.yaml")).unwrap(),
    )
}

/// A policy file in its own directory (for reloads), and its store.
pub struct PolicyFile {
    pub dir: tempfile::TempDir,
    pub store: Arc<PolicyStore>,
}

impl PolicyFile {
    pub fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sigil.yaml");
        std::fs::write(&path, text).unwrap();
        let store = PolicyStore::new(Policy::load(&path).unwrap());
        Self { dir, store }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("sigil.yaml")
    }

    /// Replaces the file atomically (temp + rename), as a config-map update does.
    pub fn write(&self, text: &str) {
        let tmp = self.dir.path().join(".sigil.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }

    /// Starts the reload watcher (file changes every 50 ms, and SIGHUP when asked).
    pub fn watch(&self, sighup: bool) -> Task {
        let fut = Arc::clone(&self.store)
            .watch(Duration::from_millis(50), sighup)
            .unwrap();
        Task(tokio::spawn(fut))
    }
}

// ---------- servers ----------

/// Aborts the task on drop.
pub struct Task(pub JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An echo server: writes back what it reads, half-closes after EOF.
pub async fn echo_server() -> (SocketAddr, Task) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let t = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, Task(t))
}

/// One tunnel end's credentials: a directory and a store loaded from it.
pub struct Creds {
    pub dir: tempfile::TempDir,
    pub store: Arc<CredentialStore>,
}

impl Creds {
    pub fn new(svid: &Svid, bundle_pem: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_creds(dir.path(), svid, bundle_pem);
        let store = CredentialStore::new(FileSource::new(dir.path()).load().unwrap());
        Self { dir, store }
    }

    /// A store built in memory (no files to watch).
    pub fn from_store(store: Arc<CredentialStore>) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            store,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Starts the file watcher (rotation).
    pub fn watch(&self) -> Task {
        let src = FileSource::new(self.dir.path());
        let store = Arc::clone(&self.store);
        Task(tokio::spawn(src.watch(store, Duration::from_millis(50))))
    }
}

pub struct Inbound {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub live: Arc<LiveConnections>,
    _task: Task,
}

pub async fn inbound(creds: &Creds, upstream: SocketAddr, mode: Mode, limits: Limits) -> Inbound {
    inbound_for(creds, upstream, "vector-db", 6333, mode, limits).await
}

pub async fn inbound_for(
    creds: &Creds,
    upstream: SocketAddr,
    workload: &str,
    port: u16,
    mode: Mode,
    limits: Limits,
) -> Inbound {
    inbound_with(creds, upstream, workload, port, mode, limits, policy()).await
}

pub async fn inbound_with(
    creds: &Creds,
    upstream: SocketAddr,
    workload: &str,
    port: u16,
    mode: Mode,
    limits: Limits,
    policy: Arc<PolicyStore>,
) -> Inbound {
    init_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Metrics::new("inbound");
    let live = LiveConnections::new();
    let spec = InboundSpec {
        listener,
        upstream,
        workload: workload.to_owned(),
        port,
        mode,
        policy,
        store: Arc::clone(&creds.store),
        metrics: Arc::clone(&metrics),
        live: Arc::clone(&live),
        ktls: KtlsMode::Auto,
        limits,
    };
    let task = tokio::spawn(async move {
        if let Err(e) = sigil_tunnel::run_inbound(spec).await {
            tracing::error!(error = %e, "inbound stopped");
        }
    });
    Inbound {
        addr,
        metrics,
        live,
        _task: Task(task),
    }
}

pub struct Outbound {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub live: Arc<LiveConnections>,
    _task: Task,
}

pub async fn outbound(
    creds: &Creds,
    remote: SocketAddr,
    to: &str,
    port: u16,
    limits: Limits,
) -> Outbound {
    outbound_with(creds, remote, to, port, limits, policy()).await
}

pub async fn outbound_with(
    creds: &Creds,
    remote: SocketAddr,
    to: &str,
    port: u16,
    limits: Limits,
    policy: Arc<PolicyStore>,
) -> Outbound {
    init_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Metrics::new("outbound");
    let live = LiveConnections::new();
    let spec = OutboundSpec {
        listener,
        remote,
        to: to.to_owned(),
        port,
        policy,
        store: Arc::clone(&creds.store),
        metrics: Arc::clone(&metrics),
        live: Arc::clone(&live),
        ktls: KtlsMode::Auto,
        limits,
    };
    let task = tokio::spawn(async move {
        if let Err(e) = sigil_tunnel::run_outbound(spec).await {
            tracing::error!(error = %e, "outbound stopped");
        }
    });
    Outbound {
        addr,
        metrics,
        live,
        _task: Task(task),
    }
}

/// Sends `msg`, half-closes, reads everything back.
pub async fn roundtrip(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(msg).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    Ok(out)
}

pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

// ---------- a plain rustls client presenting any chain ----------

#[derive(Debug)]
struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("tls12".into()))
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a raw client saw.
#[derive(Debug)]
pub struct RawResult {
    pub data: Vec<u8>,
    pub error: Option<String>,
    pub server_cert: Option<CertificateDer<'static>>,
}

/// Connects with rustls (any server accepted), presents `client` if given, sends `msg` and reads
/// until EOF or error.
pub async fn raw_client(addr: SocketAddr, client: Option<&Svid>, msg: &'static [u8]) -> RawResult {
    let client = client.map(|s| (s.chain(), s.key()));
    tokio::task::spawn_blocking(move || {
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer));
        let config = match client {
            Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
            None => b.with_no_client_auth(),
        };
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::IpAddress(addr.ip().into()),
        )
        .unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut out = RawResult {
            data: Vec::new(),
            error: None,
            server_cert: None,
        };
        if let Err(e) = s.write_all(msg).and_then(|_| s.flush()) {
            out.error = Some(e.to_string());
            return out;
        }
        out.server_cert = s.conn.peer_certificates().and_then(|c| c.first().cloned());
        s.conn.send_close_notify();
        let _ = s.flush();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.data.extend_from_slice(&buf[..n]),
                Err(e) => {
                    out.error = Some(e.to_string());
                    break;
                }
            }
        }
        if out.server_cert.is_none() {
            out.server_cert = s.conn.peer_certificates().and_then(|c| c.first().cloned());
        }
        out
    })
    .await
    .unwrap()
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

pub fn fast_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(3),
        ..Limits::default()
    }
}
