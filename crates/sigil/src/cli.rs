//! Command-line structure: `sigil <noun> <verb>`. Only clap types live here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "sigil",
    version,
    about = "Zero trust for AI workloads",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More logging (-v debug, -vv trace); SIGIL_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(
        long,
        value_enum,
        default_value_t,
        global = true,
        env = "SIGIL_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate or print the platform policy file (sigil.yaml).
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Reachability, explanations and blast radius from Kubernetes manifests.
    Reach(ReachArgs),
    /// Least-privilege NetworkPolicies from sigil.yaml flows.
    #[command(subcommand)]
    Netpol(NetpolCmd),
    /// Check manifests against the guardrails (Pod Security, AI/GPU rules, Gatekeeper Rego).
    Audit(AuditArgs),
    /// Validating admission webhook enforcing the same guardrails (HTTPS, AdmissionReview v1).
    Webhook(WebhookArgs),
    /// Scan model files for code execution, unsafe globals and malformed structure.
    Scan(ScanArgs),
    /// Pin, verify and sign model files (lockfiles, Hugging Face cache, OpenSSF model-signing).
    #[command(subcommand)]
    Models(ModelsCmd),
    /// Run the identity demo end to end on the embedded example policy (no external services).
    Demo(crate::commands::demo::DemoArgs),
    /// The SPIFFE CA in the data directory: init, status, rotate.
    #[command(subcommand)]
    Ca(crate::commands::ca::CaCmd),
    /// The control-plane server (HTTPS API, bundle endpoint, OIDC discovery); or `server join-token`.
    Server(crate::commands::server::ServerArgs),
    /// Workload-side client: fetch X.509-SVIDs (and renew with --watch) or JWT-SVIDs.
    #[command(subcommand)]
    Svid(crate::commands::svid::SvidCmd),
    /// Verify the server's hash-chained audit log.
    #[command(subcommand, name = "audit-log")]
    AuditLog(crate::commands::audit_log::AuditLogCmd),
    /// mTLS tunnel: wrap a TCP service in mutual TLS, authorized by the policy's flows.
    #[command(subcommand)]
    Tunnel(TunnelCmd),
    /// Node agent: the SPIFFE Workload API on a Unix socket (run, fetch, demo).
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Encrypt files, directories or a pipe at rest (envelope encryption bound to a data asset);
    /// `--inspect` prints a sealed file's header.
    Seal(crate::commands::seal::SealArgs),
    /// Decrypt what `sigil seal` wrote (whole, or a byte range with --range).
    Unseal(crate::commands::seal::UnsealArgs),
    // <new commands above this line>
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate a policy file and report every error with file:line:column.
    Check {
        /// The policy file.
        #[arg(default_value = "sigil.yaml")]
        file: PathBuf,
    },
    /// Print the example AI-platform policy (the embedded default).
    Example,
}

/// Output formats of `sigil reach`.
#[derive(Debug, Clone, Copy, clap::ValueEnum, Default, PartialEq, Eq)]
pub enum ReachOutput {
    #[default]
    Table,
    Json,
    Dot,
    Svg,
    /// Needs Graphviz `dot` on PATH.
    Png,
}

#[derive(Debug, Args)]
pub struct ReachArgs {
    /// Manifest files or directories (YAML/JSON, multi-document, `-` for stdin).
    pub manifests: Vec<PathBuf>,
    /// The platform policy (names workloads and data assets).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Only pairs from this workload, namespace or sigil.yaml workload.
    #[arg(long)]
    pub from: Option<String>,
    /// Only pairs to this workload, namespace, data asset, IP, or svc/NAMESPACE/NAME:PORT.
    #[arg(long)]
    pub to: Option<String>,
    /// Show denied pairs too in the full matrix.
    #[arg(long)]
    pub all: bool,
    /// Explain the verdict for SOURCE DESTINATION: the policies and rules that decide it.
    #[arg(long, num_args = 2, value_names = ["SOURCE", "DESTINATION"])]
    pub explain: Vec<String>,
    /// What an attacker in this workload can reach and read, with the path to each.
    #[arg(long)]
    pub compromised: Option<String>,
    /// Fail (exit 1) when a path exists, e.g. monitoring->training-data. Repeatable.
    #[arg(long, value_name = "SOURCE->TARGET")]
    pub deny_path: Vec<String>,
    /// Node addresses, for ipBlocks that match hostNetwork pods (node traffic).
    #[arg(long)]
    pub node_cidr: Vec<String>,
    /// List the workloads found and their isolation.
    #[arg(long)]
    pub list: bool,
    /// Compute the full matrix and print only counts and timings.
    #[arg(long)]
    pub stats: bool,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: ReachOutput,
    /// Write output to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum NetpolCmd {
    /// Default deny per namespace, DNS to kube-dns, and exactly the declared flows.
    Generate {
        /// The platform policy.
        #[arg(long, default_value = "sigil.yaml")]
        policy: PathBuf,
        /// Emit CiliumNetworkPolicy instead of Kubernetes NetworkPolicy.
        #[arg(long)]
        cilium: bool,
        /// Addresses of a workload outside Kubernetes: WORKLOAD=CIDR. Repeatable.
        #[arg(long)]
        external: Vec<String>,
        /// Node addresses: flows to and from hostNetwork workloads become ipBlocks of these.
        /// Repeatable.
        #[arg(long, value_name = "CIDR")]
        node_cidr: Vec<String>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Output formats of `sigil audit`.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum AuditOutput {
    #[default]
    Table,
    Json,
    Sarif,
    Junit,
}

/// Severity thresholds.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SeverityArg {
    Low,
    Medium,
    High,
    Critical,
}

/// Pod Security levels.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PssLevelArg {
    Privileged,
    Baseline,
    Restricted,
}

/// Rule settings shared by `sigil audit` and `sigil webhook`.
#[derive(Debug, Args)]
pub struct GuardRuleArgs {
    /// The platform policy (sigil.yaml): guardrails settings, exemptions, workloads, model sources.
    #[arg(long, env = "SIGIL_PLATFORM")]
    pub platform: Option<PathBuf>,
    /// Gatekeeper ConstraintTemplates and Constraints (files or directories). Repeatable.
    #[arg(long, value_name = "DIR|FILE")]
    pub policy: Vec<PathBuf>,
    /// Pod Security Standards level (default: the policy's, else restricted).
    #[arg(long, value_enum)]
    pub level: Option<PssLevelArg>,
    /// Pod Security Standards version, like pod-security.kubernetes.io/enforce-version: latest or v1.N.
    #[arg(long, value_name = "VERSION")]
    pub pss_version: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Manifest files or directories (YAML/JSON, multi-document, List kinds, `helm template`
    /// output); `-` for stdin.
    #[arg(required = true)]
    pub manifests: Vec<PathBuf>,
    #[command(flatten)]
    pub rules: GuardRuleArgs,
    /// Namespace for objects that do not set one (like `kubectl apply -n`; `helm template`
    /// output often has none).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: AuditOutput,
    /// Exit 1 when a finding is at or above this severity.
    #[arg(long, value_enum, default_value = "low")]
    pub fail_on: SeverityArg,
    /// Write the report to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Address to listen on (HTTPS only).
    #[arg(long, default_value = "0.0.0.0:8443", env = "SIGIL_WEBHOOK_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Serving certificate chain (PEM).
    #[arg(long, env = "SIGIL_WEBHOOK_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// Serving private key (PEM).
    #[arg(long, env = "SIGIL_WEBHOOK_TLS_KEY")]
    pub tls_key: PathBuf,
    #[command(flatten)]
    pub rules: GuardRuleArgs,
    /// Deny when a finding is at or above this severity; findings below become warnings.
    #[arg(long, value_enum, default_value = "medium")]
    pub deny_on: SeverityArg,
    /// Namespaces never checked (besides whole-namespace exemptions in sigil.yaml). Repeatable.
    #[arg(long, value_name = "NAMESPACE")]
    pub exempt_namespace: Vec<String>,
    /// Connection cap and header, idle and body timeouts of the listener.
    #[command(flatten)]
    pub conn: crate::commands::server::ConnArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScanOutput {
    Table,
    Json,
    Sarif,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Model files or directories (scanned recursively; formats are detected from the bytes).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format on stdout.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: ScanOutput,
    /// Pickle allowlist profile: `weights-only` (what torch.load(weights_only=True) accepts) or
    /// `standard` (weights-only plus NumPy/joblib array reconstruction).
    #[arg(long, default_value = "standard")]
    pub profile: String,
    /// Extra allowed pickle globals (`module.name` or `module.*`); never clears a dangerous one.
    #[arg(long)]
    pub allow: Vec<String>,
    /// Pickle globals always refused (`module.name` or `module.*`).
    #[arg(long)]
    pub deny: Vec<String>,
    /// Policy file whose models.pickle.allow/deny lists are applied.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Exit 1 when a file is at or above this verdict: suspicious, malformed or dangerous.
    #[arg(long, default_value = "suspicious")]
    pub fail_on: String,
    /// Lockfile: files whose SHA-256 is not in it are reported.
    #[arg(long)]
    pub lockfile: Option<PathBuf>,
    /// Parallel workers (default: one per core).
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCmd {
    /// Write a lockfile (path, size, sha256, source repo, revision) for a model directory or a
    /// Hugging Face cache; cache blobs are re-verified against their names.
    Lock(ModelsLockArgs),
    /// Fail on any changed, missing or extra file, and/or verify a model-signing signature.
    Verify(ModelsVerifyArgs),
    /// Sign a model directory (OpenSSF model-signing v1.0, key-based, ECDSA P-256/P-384).
    Sign(ModelsSignArgs),
}

#[derive(Debug, Args)]
pub struct ModelsLockArgs {
    /// Model directory, single file, Hugging Face cache (hub/), models--org--name dir or snapshot.
    pub path: PathBuf,
    /// Lockfile to write.
    #[arg(long, short, default_value = None)]
    pub output: Option<PathBuf>,
    /// Refuse files whose repo and revision are not an allowed source in this policy.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[arg(long, short)]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ModelsVerifyArgs {
    pub path: PathBuf,
    /// Lockfile written by `sigil models lock`.
    #[arg(long)]
    pub lockfile: Option<PathBuf>,
    /// model-signing bundle (model.sig).
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// PEM public key for --signature.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    #[arg(long, short)]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ModelsSignArgs {
    /// Model directory.
    pub path: PathBuf,
    /// PEM private key (PKCS#8 or SEC1), ECDSA P-256 or P-384.
    #[arg(long)]
    pub private_key: PathBuf,
    /// Where to write the bundle (default PATH/model.sig, which is then excluded from signing).
    #[arg(long)]
    pub signature: Option<PathBuf>,
    #[arg(long, short)]
    pub jobs: Option<usize>,
}

/// `sigil tunnel` data path choice.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum KtlsArg {
    /// Kernel TLS when the kernel offers the `tls` ULP, else user space.
    #[default]
    Auto,
    /// Always the user-space record layer.
    Off,
}

/// `sigil tunnel` key exchange groups.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum KxArg {
    /// X25519MLKEM768 (hybrid post-quantum) first, then X25519 and P-256.
    #[default]
    Pq,
    /// X25519 and P-256 only.
    Classical,
}

/// Settings shared by both tunnel ends.
#[derive(Debug, Args)]
pub struct TunnelCommonArgs {
    /// The platform policy (flows decide who may connect).
    #[arg(long, default_value = "sigil.yaml")]
    pub policy: PathBuf,
    /// Directory written by `sigil svid fetch --out DIR` (svid.pem, svid.key, bundle.pem); watched
    /// for rotation.
    #[arg(long, env = "SIGIL_SVID_DIR", required_unless_present = "workload_api")]
    pub svid_dir: Option<PathBuf>,
    /// SPIFFE Workload API endpoint (e.g. unix:///run/sigil/agent.sock) to stream SVIDs from;
    /// --svid-dir wins when both are given.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET", value_name = "ENDPOINT")]
    pub workload_api: Option<String>,
    /// The policy port this tunnel carries (default: the workload's only port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Serve Prometheus metrics on this address (/metrics).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Kernel TLS data path.
    #[arg(long, value_enum, default_value_t)]
    pub ktls: KtlsArg,
    /// Most connections at once; accepting pauses at the limit.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Close connections at this age (e.g. 24h); default: no limit (a connection lives while
    /// the policy and trust bundle authorize it, across the peer's SVID rotation and expiry).
    #[arg(long, value_name = "DURATION")]
    pub max_connection_age: Option<String>,
    /// Key exchange groups offered and accepted.
    #[arg(long, value_enum, default_value_t)]
    pub key_exchange: KxArg,
    /// Drop peers that have not finished the handshake in this time (e.g. 10s).
    #[arg(long, default_value = "10s")]
    pub handshake_timeout: String,
    /// How often the SVID files are checked for rotation.
    #[arg(long, default_value = "1s")]
    pub reload_interval: String,
}

#[derive(Debug, Subcommand)]
pub enum TunnelCmd {
    /// Accept mTLS, authorize the peer SPIFFE ID for this workload and port, forward plaintext to
    /// the local service.
    Inbound {
        /// This workload's name in the policy.
        #[arg(long)]
        workload: String,
        /// Where to accept mTLS connections.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The local plaintext service.
        #[arg(long)]
        upstream: std::net::SocketAddr,
        /// Log what the policy would refuse, but let it through (bad certificates are still refused).
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        common: TunnelCommonArgs,
    },
    /// Accept local plaintext, connect over mTLS to the remote, require the SPIFFE ID the policy
    /// gives the target workload.
    Outbound {
        /// The target workload's name in the policy.
        #[arg(long)]
        to: String,
        /// Where local clients connect (plaintext; keep it on 127.0.0.1).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// HOST:PORT of the target's inbound tunnel.
        #[arg(long)]
        remote: String,
        #[command(flatten)]
        common: TunnelCommonArgs,
    },
    /// Report whether this kernel offers kernel TLS (exit 0) or not (exit 1).
    KtlsCheck,
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Serve the SPIFFE Workload API on a Unix socket, attesting callers from the kernel.
    Run(Box<AgentRunArgs>),
    /// Fetch this process's SVIDs from the agent (a Workload API client), verify and print them.
    Fetch(AgentFetchArgs),
    /// A self-contained demo: agent, in-memory CA, a workload getting its identity, a refusal.
    Demo,
}

#[derive(Debug, Args)]
pub struct AgentRunArgs {
    /// The policy file (workloads and their selectors).
    #[arg(long, env = "SIGIL_POLICY", default_value = "sigil.yaml")]
    pub policy: PathBuf,
    /// Path of the Workload API socket.
    #[arg(
        long,
        env = "SIGIL_AGENT_SOCKET",
        default_value = "/run/sigil/agent.sock"
    )]
    pub socket: PathBuf,
    /// `sigil server` URL (https only).
    #[arg(long, env = "SIGIL_SERVER")]
    pub server: Option<String>,
    /// Trust bundle PEM for the server, given out of band.
    #[arg(long, env = "SIGIL_BUNDLE")]
    pub bundle: Option<PathBuf>,
    /// Node name (default: /etc/hostname).
    #[arg(long, env = "SIGIL_NODE")]
    pub node: Option<String>,
    /// File with a single-use join token (`sigil server join-token`).
    #[arg(long)]
    pub join_token_file: Option<PathBuf>,
    /// File with a projected service-account token (DaemonSet node attestation).
    #[arg(long)]
    pub k8s_token_file: Option<PathBuf>,
    /// Node key and agent SVID (kept 0600).
    #[arg(
        long,
        env = "SIGIL_AGENT_DATA_DIR",
        default_value = "/var/lib/sigil-agent"
    )]
    pub data_dir: PathBuf,
    /// Kubelet base URL, enabling Kubernetes workload attestation (e.g. https://127.0.0.1:10250).
    #[arg(long)]
    pub kubelet_url: Option<String>,
    /// CA of the kubelet's serving certificate.
    #[arg(long)]
    pub kubelet_ca: Option<PathBuf>,
    /// Bearer token file for the kubelet (the agent's service-account token).
    #[arg(long)]
    pub kubelet_token_file: Option<PathBuf>,
    /// Accept the kubelet's certificate without verification (self-signed kubelets).
    #[arg(long)]
    pub kubelet_insecure_skip_verify: bool,
    /// Prometheus metrics listener.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: std::net::SocketAddr,
    /// Let callers without an identity fetch bundles and validate JWT-SVIDs.
    #[arg(long)]
    pub allow_unauthenticated_verifiers: bool,
    /// Issue from an in-memory CA instead of `sigil server` (development only).
    #[arg(long)]
    pub insecure_local_ca: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, Default)]
pub enum FetchOutput {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct AgentFetchArgs {
    /// The agent's socket (unix:///path or a path).
    #[arg(
        long,
        env = "SPIFFE_ENDPOINT_SOCKET",
        default_value = "unix:///run/sigil/agent.sock"
    )]
    pub socket: String,
    /// Also fetch a JWT-SVID for this audience and have the agent validate it.
    #[arg(long)]
    pub jwt_audience: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub output: FetchOutput,
}
