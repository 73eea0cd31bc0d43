//! One module per noun. Each returns an exit code or an error; `main` prints errors.

pub mod agent;
pub mod audit;
pub mod audit_log;
pub mod ca;
pub mod demo;
pub mod identity;
pub mod models;
pub mod netpol;
pub mod policy;
pub mod reach;
pub mod scan;
pub mod seal;
pub mod server;
pub mod svid;
pub mod tunnel;
pub mod webhook;

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
        Command::Reach(a) => reach::run(a),
        Command::Netpol(c) => netpol::run(c),
        Command::Audit(a) => audit::run(a),
        Command::Webhook(a) => webhook::run(a),
        Command::Scan(a) => scan::run(a),
        Command::Models(c) => models::run(c),
        Command::Demo(a) => demo::run(a),
        Command::Ca(c) => ca::run(c),
        Command::Server(a) => server::run(a),
        Command::Svid(c) => svid::run(c),
        Command::AuditLog(c) => audit_log::run(c),
        Command::Tunnel(c) => tunnel::run(c),
        Command::Agent(c) => agent::run(c),
        Command::Seal(a) => seal::run_seal(a),
        Command::Unseal(a) => seal::run_unseal(a),
        // <new dispatch above this line>
    }
}
