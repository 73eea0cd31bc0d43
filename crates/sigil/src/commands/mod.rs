//! One module per noun. Each returns an exit code or an error; `main` prints errors.

pub mod policy;

use std::process::ExitCode;

use crate::cli::Command;

/// Exit code: success, nothing found.
pub const EXIT_OK: u8 = 0;
/// Exit code: findings at or above the failure threshold, or a verification failed.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: usage or input error.
pub const EXIT_ERROR: u8 = 2;

/// The example policy, embedded as the default.
pub const EXAMPLE_POLICY: &str = include_str!("../../../../examples/ai-platform/sigil.yaml");

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Policy(c) => policy::run(c),
        // <new dispatch above this line>
    }
}
