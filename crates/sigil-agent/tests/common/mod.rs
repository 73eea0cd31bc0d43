//! Shared test harness: an agent with an in-process CA on a socket in a temp dir.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_agent::cache::RotationSettings;
use sigil_agent::local::LocalAuthority;
use sigil_agent::metrics::Metrics;
use sigil_agent::proto::X509svid;
use sigil_agent::{Agent, AgentConfig};
use sigil_identity::{SvidUsage, X509Bundle};
use sigil_policy::Policy;

pub const CHILD_ENV: &str = "SIGIL_AGENT_TEST_CHILD_SOCKET";

pub const POLICY: &str = r#"
apiVersion: sigil.dev/v1alpha1
kind: Platform
trustDomain: example.org
workloads:
  - name: tester
    unix: { uid: 0 }
  - name: alice
    unix: { uid: 1001 }
  - name: bob
    unix: { uid: 1002, gid: 1002 }
"#;

pub struct Harness {
    pub agent: Agent,
    pub authority: Arc<LocalAuthority>,
    pub socket: PathBuf,
    pub policy: Policy,
    _dir: tempfile::TempDir,
}

pub fn settings() -> RotationSettings {
    RotationSettings {
        retry_min: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        ..RotationSettings::default()
    }
}

pub async fn start_agent(policy: &Policy, authority: Arc<LocalAuthority>, socket: &Path) -> Agent {
    Agent::start(AgentConfig {
        socket_path: socket.to_owned(),
        policy: policy.clone(),
        authority,
        kubelet: None,
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
        rotation: settings(),
        allow_unauthenticated_verifiers: false,
        proc_root: PathBuf::from("/proc"),
        metrics: Arc::new(Metrics::new()),
    })
    .await
    .unwrap()
}

impl Harness {
    pub async fn start(x509_ttl: Duration) -> Self {
        Self::start_with(POLICY, x509_ttl).await
    }

    pub async fn start_with(policy: &str, x509_ttl: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Children under other uids must reach the socket inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("agent.sock");
        let policy = Policy::parse(policy, Path::new("test.yaml")).unwrap();
        let authority = Arc::new(
            LocalAuthority::generate(&policy.trust_domain, x509_ttl, Duration::from_secs(300))
                .unwrap(),
        );
        let agent = start_agent(&policy, authority.clone(), &socket).await;
        assert_eq!(agent.initial.failed, 0);
        Self {
            agent,
            authority,
            socket,
            policy,
            _dir: dir,
        }
    }

    /// Stops the agent (removing its socket), then starts a new one on the same path and issuer.
    pub async fn restart(self) -> Self {
        let Self {
            agent,
            authority,
            socket,
            policy,
            _dir,
        } = self;
        agent.shutdown().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let agent = start_agent(&policy, authority.clone(), &socket).await;
        Self {
            agent,
            authority,
            socket,
            policy,
            _dir,
        }
    }

    pub async fn stop(self) {
        self.agent.shutdown().await;
    }
}

/// The next stream message, or a test failure after 20 s.
pub async fn next<T>(s: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("no stream message within 20 s")
        .unwrap()
        .expect("stream ended")
}

/// Splits concatenated DER certificates.
pub fn split_der(mut der: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der).unwrap();
        let len = der.len() - rest.len();
        out.push(CertificateDer::from(der[..len].to_vec()));
        der = rest;
    }
    out
}

/// Checks an X509SVID message: the chain verifies against the bundle it came with, the leaf
/// carries `id`, and the private key belongs to the leaf.
pub fn check_svid(svid: &X509svid, id: &str) {
    assert_eq!(svid.spiffe_id, id);
    let chain = split_der(&svid.x509_svid);
    let roots = split_der(&svid.bundle);
    let td = id
        .parse::<sigil_identity::SpiffeId>()
        .unwrap()
        .trust_domain();
    let bundle = X509Bundle::new(td, roots).unwrap();
    let v = sigil_identity::verify_x509_svid(&chain, &bundle, SvidUsage::Client, UnixTime::now())
        .unwrap();
    assert_eq!(v.spiffe_id().to_string(), id);
    let key = rcgen::KeyPair::try_from(svid.x509_svid_key.as_slice()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    use rcgen::PublicKeyData;
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
}

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A Python interpreter that can `import spiffe`: $SIGIL_PYTHON, the repository's .venv, python3.
pub fn python_with_spiffe() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let candidates = [
        std::env::var_os("SIGIL_PYTHON").map(PathBuf::from),
        Some(venv),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|p| {
        std::process::Command::new(p)
            .args(["-c", "import spiffe, cryptography"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}
