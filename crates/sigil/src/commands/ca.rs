//! `sigil ca init|status|rotate`: the CA in the data directory (offline; stop the server first).

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Subcommand;
use sigil_ca::CertificateAuthority;
use sigil_ca::store::Store;

use super::EXIT_OK;
use super::identity::PolicyArgs;

#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// Create the root and intermediate CA (ECDSA P-256) and the JWT signing key.
    Init {
        #[command(flatten)]
        args: PolicyArgs,
    },
    /// Show CA generations and their state.
    Status {
        #[command(flatten)]
        args: PolicyArgs,
    },
    /// Rotate the CA: `prepare` publishes the next CA in the bundle, `activate` switches signing
    /// to it once published long enough, `prune` retires old CAs whose last SVID expired.
    Rotate {
        #[command(subcommand)]
        step: RotateStep,
    },
}

#[derive(Debug, Subcommand)]
pub enum RotateStep {
    Prepare {
        #[command(flatten)]
        args: PolicyArgs,
    },
    Activate {
        #[command(flatten)]
        args: PolicyArgs,
        /// How long the prepared CA must have been in the bundle (relying parties refresh bundles).
        #[arg(long, default_value = "1h", value_parser = parse_dur)]
        min_published: Duration,
        /// Activate now, even if it was published only just now.
        #[arg(long)]
        force: bool,
    },
    Prune {
        #[command(flatten)]
        args: PolicyArgs,
    },
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    sigil_policy::parse_duration(s)
}

fn open(args: &PolicyArgs) -> anyhow::Result<(Store, CertificateAuthority)> {
    let (policy, _) = args.load()?;
    let store = Store::open(&args.data_dir)?;
    let ca = store.load_ca(&policy.trust_domain)?;
    Ok((store, ca))
}

fn write_bundle(args: &PolicyArgs, ca: &CertificateAuthority) -> anyhow::Result<()> {
    let path = args.data_dir.join("bundle.pem");
    std::fs::write(&path, ca.bundle()?.to_pem())
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn run(cmd: CaCmd) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    match cmd {
        CaCmd::Init { args } => {
            let (policy, _) = args.load()?;
            let store = Store::open(&args.data_dir)?;
            let ca = CertificateAuthority::generate(&policy.trust_domain, now)?;
            store.init_ca(&ca)?;
            write_bundle(&args, &ca)?;
            println!(
                "initialized CA for {} in {} (trust bundle: {})",
                policy.trust_domain,
                args.data_dir.display(),
                args.data_dir.join("bundle.pem").display()
            );
        }
        CaCmd::Status { args } => {
            let (_, ca) = open(&args)?;
            println!(
                "trust domain {}  bundle sequence {}",
                ca.trust_domain(),
                ca.sequence
            );
            println!(
                "{:<6} {:<9} {:<24} {:<24} jwt kid",
                "gen", "state", "created", "last SVID expires"
            );
            for g in ca.generations() {
                println!(
                    "{:<6} {:<9} {:<24} {:<24} {}",
                    g.id,
                    format!("{:?}", g.state).to_lowercase(),
                    fmt_time(g.created),
                    fmt_time(g.last_signed_expiry),
                    g.jwt_kid()
                );
            }
        }
        CaCmd::Rotate { step } => match step {
            RotateStep::Prepare { args } => {
                let (store, mut ca) = open(&args)?;
                let id = ca.prepare_rotation(now)?;
                store.save_ca(&ca)?;
                write_bundle(&args, &ca)?;
                println!(
                    "prepared CA generation {id}: it is in the trust bundle now and signs nothing yet."
                );
                println!(
                    "hint: wait until every relying party has refreshed its bundle, then run `sigil ca rotate activate`"
                );
            }
            RotateStep::Activate {
                args,
                min_published,
                force,
            } => {
                let (store, mut ca) = open(&args)?;
                let id =
                    ca.activate_rotation(now, if force { Duration::ZERO } else { min_published })?;
                store.save_ca(&ca)?;
                write_bundle(&args, &ca)?;
                println!(
                    "CA generation {id} now signs; the previous one stays in the bundle until its last SVID expires."
                );
            }
            RotateStep::Prune { args } => {
                let (store, mut ca) = open(&args)?;
                let gone = ca.prune(now);
                store.save_ca(&ca)?;
                write_bundle(&args, &ca)?;
                println!("retired generations: {gone:?}");
            }
        },
    }
    Ok(ExitCode::from(EXIT_OK))
}

pub fn fmt_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
