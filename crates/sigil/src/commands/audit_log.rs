//! `sigil audit-log verify`: check the hash chain of the server's audit log.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{EXIT_FINDINGS, EXIT_OK};

#[derive(Debug, Subcommand)]
pub enum AuditLogCmd {
    /// Verify the whole chain; exit 1 and name the first bad line if it was tampered with.
    Verify {
        /// The log file.
        #[arg(default_value = "sigil-data/audit.jsonl")]
        file: PathBuf,
    },
}

pub fn run(cmd: AuditLogCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditLogCmd::Verify { file } => match sigil_ca::audit::verify(&file) {
            Ok(v) => {
                println!(
                    "{}: {} records, chain intact, head {}",
                    file.display(),
                    v.lines,
                    v.head
                );
                Ok(ExitCode::from(EXIT_OK))
            }
            Err(sigil_ca::audit::AuditError::Io { path, reason }) => {
                anyhow::bail!("{}: {reason}", path.display())
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(EXIT_FINDINGS))
            }
        },
    }
}
