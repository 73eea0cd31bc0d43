//! `sigil svid fetch`: a workload-side client. It makes its key locally, proves itself to the
//! server, writes `svid.pem`, `svid.key` (0600) and `bundle.pem`, and with `--watch` renews at
//! half-life with jitter, keeping the old files while the server is unreachable.
//! `sigil svid jwt`: print a JWT-SVID for an audience.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use clap::{Args, Subcommand};
use sigil_ca::client::{Client, KeyAndCsr, Proof, X509Answer, write_svid_files};
use sigil_identity::{TrustDomain, X509Bundle, certs_from_pem, inspect_leaf};
use zeroize::Zeroizing;

use super::EXIT_OK;
use super::identity::read_to_string;

#[derive(Debug, Subcommand)]
pub enum SvidCmd {
    /// Fetch an X.509-SVID and write svid.pem, svid.key and bundle.pem.
    Fetch(FetchArgs),
    /// Print a JWT-SVID for an audience on stdout.
    Jwt {
        #[command(flatten)]
        conn: ConnArgs,
        /// Audience (repeatable).
        #[arg(long = "audience", required = true)]
        audience: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Server URL.
    #[arg(long, env = "SIGIL_SERVER", default_value = "https://127.0.0.1:8443")]
    pub server: String,
    /// Trust bundle (PEM) used to verify the server.
    #[arg(long, env = "SIGIL_BUNDLE")]
    pub bundle: PathBuf,
    /// Kubernetes projected service-account token file (re-read on every renewal).
    #[arg(long, conflicts_with_all = ["join_token", "join_token_file"])]
    pub k8s_token_file: Option<PathBuf>,
    /// Single-use node join token.
    #[arg(long, env = "SIGIL_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// File holding a node join token: the JSON `sigil server join-token` prints, or the bare token.
    #[arg(long, conflicts_with = "join_token")]
    pub join_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Output directory.
    #[arg(long, default_value = "svid")]
    pub out: PathBuf,
    /// Keep running and renew at half-life (with jitter).
    #[arg(long)]
    pub watch: bool,
}

fn proof(c: &ConnArgs) -> anyhow::Result<Proof> {
    if let Some(f) = &c.k8s_token_file {
        return Ok(Proof::KubernetesToken(Zeroizing::new(
            read_to_string(f)?.trim().to_owned(),
        )));
    }
    if let Some(t) = &c.join_token {
        return Ok(Proof::JoinToken(Zeroizing::new(t.trim().to_owned())));
    }
    if let Some(f) = &c.join_token_file {
        // The JSON `sigil server join-token` prints, or the bare token.
        return Ok(Proof::JoinToken(
            sigil_ca::client::read_join_token_file(f)?.token,
        ));
    }
    anyhow::bail!("no proof of identity: give --k8s-token-file, --join-token or --join-token-file")
}

fn bundle(path: &Path) -> anyhow::Result<X509Bundle> {
    // The server certificate is checked against these anchors; the trust domain is learned from
    // the SVID the server returns.
    X509Bundle::from_pem(
        TrustDomain::new("bootstrap.invalid")?,
        read_to_string(path)?.as_bytes(),
    )
    .with_context(|| format!("bad trust bundle {}", path.display()))
}

pub fn run(cmd: SvidCmd) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            SvidCmd::Fetch(a) => fetch(a).await,
            SvidCmd::Jwt { conn, audience } => {
                let client = Client::new(&conn.server, &bundle(&conn.bundle)?, None)?;
                let ans = client.attest_jwt(&proof(&conn)?, &audience).await?;
                eprintln!(
                    "JWT-SVID for {} (expires {})",
                    ans.spiffe_id, ans.expires_at
                );
                println!("{}", ans.token);
                Ok(ExitCode::from(EXIT_OK))
            }
        }
    })
}

fn save(out: &Path, ans: &X509Answer, key: &KeyAndCsr) -> anyhow::Result<(SystemTime, SystemTime)> {
    let chain = certs_from_pem(ans.svid.as_bytes())?;
    let leaf = chain.first().context("server returned an empty chain")?;
    let info = inspect_leaf(leaf)?;
    write_svid_files(out, &ans.svid, &key.key_pem, &ans.bundle)?;
    tracing::info!(spiffe_id = %ans.spiffe_id, expires = %ans.expires_at, dir = %out.display(), "wrote X.509-SVID");
    Ok((info.not_before, info.not_after))
}

/// Next renewal: half-life, with up to ±10% jitter.
fn renew_delay(not_before: SystemTime, not_after: SystemTime) -> Duration {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::from_secs(60));
    let mut b = [0u8; 2];
    let _ = SystemRandom::new().fill(&mut b);
    let jitter = f64::from(u16::from_be_bytes(b)) / f64::from(u16::MAX) * 0.2 - 0.1;
    let half = life.as_secs_f64() / 2.0;
    Duration::from_secs_f64((half + half * jitter).max(1.0))
}

async fn fetch(a: FetchArgs) -> anyhow::Result<ExitCode> {
    let anchors = bundle(&a.conn.bundle)?;
    let p = proof(&a.conn)?;
    let client = Client::new(&a.conn.server, &anchors, None)?;
    let key = KeyAndCsr::generate()?;
    let ans = client.attest_x509(&p, &key.csr_pem).await?;
    let (mut nb, mut na) = save(&a.out, &ans, &key)?;
    println!("{}", ans.spiffe_id);
    if !a.watch {
        return Ok(ExitCode::from(EXIT_OK));
    }
    let mut backoff = Duration::from_secs(2);
    let mut wait = renew_delay(nb, na);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::from(EXIT_OK)),
        }
        match renew_once(&a, &anchors, &ans.spiffe_id, na).await {
            Ok(times) => {
                (nb, na) = times;
                backoff = Duration::from_secs(2);
                wait = renew_delay(nb, na);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "renewal failed; keeping the current SVID");
                wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

async fn renew_once(
    a: &FetchArgs,
    anchors: &X509Bundle,
    id: &str,
    not_after: SystemTime,
) -> anyhow::Result<(SystemTime, SystemTime)> {
    let key = KeyAndCsr::generate()?;
    if a.conn.k8s_token_file.is_some() {
        // Projected tokens rotate on disk; re-read and attest again with a fresh key.
        let client = Client::new(&a.conn.server, anchors, None)?;
        let ans = client.attest_x509(&proof(&a.conn)?, &key.csr_pem).await?;
        return save(&a.out, &ans, &key);
    }
    // A node: renew over mTLS with the current SVID, or, once it expired, re-attest with the
    // registered key.
    if SystemTime::now() < not_after {
        let chain = read_to_string(&a.out.join("svid.pem"))?;
        let cur_key = Zeroizing::new(read_to_string(&a.out.join("svid.key"))?);
        let client = Client::new(&a.conn.server, anchors, Some((&chain, &cur_key)))?;
        let ans = client.renew(&key.csr_pem).await?;
        return save(&a.out, &ans, &key);
    }
    let node = id.rsplit('/').next().unwrap_or_default().to_owned();
    let cur_key = Zeroizing::new(read_to_string(&a.out.join("svid.key"))?);
    let same = KeyAndCsr::from_key_pem(&cur_key)?;
    let client = Client::new(&a.conn.server, anchors, None)?;
    let ans = client.reattest(&node, &same.csr_pem).await?;
    save(&a.out, &ans, &same)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_half_life_with_bounded_jitter() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(3600);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = renew_delay(nb, na).as_secs_f64();
            assert!((1620.0..=1980.0).contains(&d), "{d}");
            seen.insert(d as u64);
        }
        assert!(seen.len() > 10, "jitter must vary: {seen:?}");
    }
}
