//! Shared helpers for the identity commands: loading the policy (or the embedded example) and
//! the data directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sigil_policy::Policy;

use super::EXAMPLE_POLICY;

/// `--policy` and `--data-dir`, shared by the identity commands.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Platform policy file; default ./sigil.yaml, else the embedded example policy.
    #[arg(long, env = "SIGIL_POLICY")]
    pub policy: Option<PathBuf>,
    /// Data directory (store, audit log, admin token), created 0700.
    #[arg(long, env = "SIGIL_DATA_DIR", default_value = "sigil-data")]
    pub data_dir: PathBuf,
}

impl PolicyArgs {
    /// Loads the policy. The embedded example resolves relative paths against the data directory.
    pub fn load(&self) -> anyhow::Result<(Policy, bool)> {
        match &self.policy {
            Some(p) => Ok((Policy::load(p).map_err(|e| anyhow::anyhow!("{e}"))?, false)),
            None if Path::new("sigil.yaml").exists() => Ok((
                Policy::load(Path::new("sigil.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?,
                false,
            )),
            None => {
                tracing::info!(
                    "no --policy and no ./sigil.yaml: using the embedded example policy (`sigil policy example` prints it)"
                );
                let p = Policy::parse(EXAMPLE_POLICY, &self.data_dir.join("sigil.yaml"))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok((p, true))
            }
        }
    }
}

pub fn read_to_string(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
