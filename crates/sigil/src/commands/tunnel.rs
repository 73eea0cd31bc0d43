//! `sigil tunnel inbound|outbound|ktls-check`: flags to validated options, then
//! `sigil_tunnel::run_blocking`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use sigil_policy::{Policy, parse_duration};
use sigil_tunnel::ktls::{KtlsMode, KtlsSupport};
use sigil_tunnel::{CredentialSource, KeyExchange, Limits, Mode, Side, TunnelOptions};

use super::{EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::cli::{KtlsArg, KxArg, TunnelCmd, TunnelCommonArgs};

fn duration(flag: &str, v: &str) -> anyhow::Result<Duration> {
    parse_duration(v).map_err(|e| anyhow::anyhow!("--{flag} {v:?}: {e}; hint: e.g. 10s, 500ms, 1m"))
}

fn options(side: Side, common: TunnelCommonArgs) -> anyhow::Result<Option<TunnelOptions>> {
    let policy = match Policy::load(&common.policy) {
        Ok(p) => p,
        Err(e) => {
            eprint!("{e}");
            return Ok(None);
        }
    };
    let limits = Limits {
        max_connections: common.max_connections.max(1),
        handshake_timeout: duration("handshake-timeout", &common.handshake_timeout)?,
        max_connection_age: common
            .max_connection_age
            .as_deref()
            .map(|v| duration("max-connection-age", v))
            .transpose()?,
        key_exchange: match common.key_exchange {
            KxArg::Pq => KeyExchange::PostQuantum,
            KxArg::Classical => KeyExchange::Classical,
        },
        ..Limits::default()
    };
    Ok(Some(TunnelOptions {
        side,
        policy,
        credentials: match (common.svid_dir, common.workload_api) {
            (Some(dir), _) => CredentialSource::Dir(dir),
            (None, Some(endpoint)) => CredentialSource::WorkloadApi(endpoint),
            (None, None) => anyhow::bail!("pass --svid-dir DIR or --workload-api ENDPOINT"),
        },
        reload_interval: duration("reload-interval", &common.reload_interval)?,
        metrics: common.metrics,
        ktls: match common.ktls {
            KtlsArg::Auto => KtlsMode::Auto,
            KtlsArg::Off => KtlsMode::Off,
        },
        limits,
    }))
}

pub fn run(cmd: TunnelCmd) -> anyhow::Result<ExitCode> {
    let opts = match cmd {
        TunnelCmd::KtlsCheck => {
            return Ok(match sigil_tunnel::ktls::detect() {
                KtlsSupport::Available => {
                    println!("kernel TLS: available (the tls ULP is offered)");
                    ExitCode::from(EXIT_OK)
                }
                KtlsSupport::Unavailable(why) => {
                    println!("kernel TLS: unavailable: {why}");
                    ExitCode::from(EXIT_FINDINGS)
                }
            });
        }
        TunnelCmd::Inbound {
            workload,
            listen,
            upstream,
            dry_run,
            common,
        } => {
            let port = common.port;
            let side = Side::Inbound {
                listen,
                upstream,
                workload,
                port,
                mode: if dry_run { Mode::DryRun } else { Mode::Enforce },
            };
            options(side, common)?
        }
        TunnelCmd::Outbound {
            to,
            listen,
            remote,
            common,
        } => {
            if !listen.ip().is_loopback() {
                tracing::warn!(%listen, "the outbound end accepts plaintext; hint: listen on 127.0.0.1");
            }
            let port = common.port;
            options(
                Side::Outbound {
                    listen,
                    remote,
                    to,
                    port,
                },
                common,
            )?
        }
    };
    let Some(opts) = opts else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    sigil_tunnel::run_blocking(opts).context("tunnel")?;
    Ok(ExitCode::from(EXIT_OK))
}
