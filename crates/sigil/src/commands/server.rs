//! `sigil server`: the control plane. `sigil server join-token`: create a node join token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sigil_ca::client::Client;
use sigil_ca::server::{Bound, ServerConfig};

use super::EXIT_OK;
use super::identity::{PolicyArgs, read_to_string};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    pub cmd: Option<ServerCmd>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Address to listen on (HTTPS).
    #[arg(long, env = "SIGIL_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Extra DNS names or IP addresses for the server certificate.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Public base URL where relying parties reach this server: the OIDC issuer (`iss` of every
    /// JWT-SVID, `issuer` of /.well-known/openid-configuration). Default https://<listen>;
    /// required when --listen is an unspecified address such as 0.0.0.0.
    #[arg(long, env = "SIGIL_ISSUER_URL")]
    pub issuer_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ServerCmd {
    /// Create a single-use join token for a node (calls the running server's admin API).
    JoinToken {
        /// Node name; the agent becomes spiffe://<td>/sigil/agent/<node>.
        #[arg(long)]
        node: String,
        /// Token lifetime, at most 7d (default: the policy's attestation.joinTokenTtl).
        #[arg(long)]
        ttl: Option<String>,
        /// Server URL.
        #[arg(long, default_value = "https://127.0.0.1:8443")]
        server: String,
        #[arg(long, env = "SIGIL_DATA_DIR", default_value = "sigil-data")]
        data_dir: PathBuf,
    },
}

pub fn run(a: ServerArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match a.cmd {
        None => rt.block_on(serve(a.run)),
        Some(ServerCmd::JoinToken {
            node,
            ttl,
            server,
            data_dir,
        }) => rt.block_on(async move {
            let bundle = sigil_identity::X509Bundle::from_pem(
                // The trust domain is not needed to trust the server's TLS certificate.
                sigil_identity::TrustDomain::new("bootstrap.invalid")?,
                read_to_string(&data_dir.join("bundle.pem"))?.as_bytes(),
            )?;
            let admin = read_to_string(&data_dir.join("admin.token"))?;
            let client = Client::new(&server, &bundle, None)?;
            let v = client
                .create_join_token(admin.trim(), &node, ttl.as_deref())
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::from(EXIT_OK))
        }),
    }
}

async fn serve(a: RunArgs) -> anyhow::Result<ExitCode> {
    let (policy, embedded) = a.policy.load()?;
    let bound = Bound::bind(ServerConfig {
        data_dir: a.policy.data_dir.clone(),
        listen: a.listen,
        policy,
        extra_sans: a.sans,
        issuer_url: a.issuer_url,
        init_if_missing: true,
        require_jwks: !embedded,
    })
    .await?;
    let addr = bound
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        %addr,
        bundle = %a.policy.data_dir.join("bundle.pem").display(),
        "sigil server listening (HTTPS); trust bundle written; Ctrl-C to stop"
    );
    bound
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await;
    Ok(ExitCode::from(EXIT_OK))
}
