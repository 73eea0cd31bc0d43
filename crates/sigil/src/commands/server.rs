//! `sigil server`: the control plane. `sigil server join-token`: create a node join token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sigil_ca::client::Client;
use sigil_ca::server::{Bound, ConnLimits, ServerConfig};

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
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Connection limits of an HTTPS listener (`sigil server`, `sigil webhook`).
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Connections served at once; beyond it new connections wait in the kernel's backlog
    /// until one closes. Keep it below the descriptor limit (`ulimit -n`).
    #[arg(long, default_value_t = sigil_ca::server::conn::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,
    /// Time from accept to the end of the first request's headers, TLS handshake included.
    #[arg(long, default_value = "10s", value_parser = positive_duration, value_name = "DURATION")]
    pub header_timeout: std::time::Duration,
    /// Time a keep-alive connection may wait, after a response, for its next request's headers.
    #[arg(long, default_value = "60s", value_parser = positive_duration, value_name = "DURATION")]
    pub idle_timeout: std::time::Duration,
    /// Time for a request's body to arrive after its headers (then 408 and the connection closes).
    #[arg(long, default_value = "30s", value_parser = positive_duration, value_name = "DURATION")]
    pub body_timeout: std::time::Duration,
}

impl ConnArgs {
    pub fn limits(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_timeout,
        }
    }
}

/// A duration like `10s`, `2m`, `1h`, greater than zero.
fn positive_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = sigil_policy::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{s:?} is zero; hint: use a positive duration such as 10s"
        ));
    }
    Ok(d)
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
    let limits = a.conn.limits();
    limits
        .validate()
        .map_err(|e| anyhow::anyhow!("--max-connections/--*-timeout: {e}"))?;
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
    .await?
    .with_limits(limits)?;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        conn: ConnArgs,
    }

    #[test]
    fn connection_flags_default_to_both_servers_defaults_and_refuse_zero() {
        let d = Cli::try_parse_from(["x"]).unwrap().conn;
        assert_eq!(d.limits(), ConnLimits::default());
        let w = sigil_guard::webhook::ConnLimits::default();
        assert_eq!(
            (
                d.max_connections,
                d.header_timeout,
                d.idle_timeout,
                d.body_timeout
            ),
            (
                w.max_connections,
                w.header_timeout,
                w.idle_timeout,
                w.body_timeout
            )
        );
        let c = Cli::try_parse_from(["x", "--header-timeout", "2s", "--max-connections", "9"])
            .unwrap()
            .conn;
        assert_eq!(c.header_timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.max_connections, 9);
        let e = Cli::try_parse_from(["x", "--body-timeout", "0s"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--body-timeout") && e.contains("zero"), "{e}");
    }
}
