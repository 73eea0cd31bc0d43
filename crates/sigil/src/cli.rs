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
