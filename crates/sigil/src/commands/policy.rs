//! `sigil policy check|example`.

use std::process::ExitCode;

use sigil_policy::Policy;

use super::{EXAMPLE_POLICY, EXIT_ERROR, EXIT_OK};
use crate::cli::PolicyCmd;

pub fn run(cmd: PolicyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCmd::Check { file } => match Policy::load(&file) {
            Ok(p) => {
                println!(
                    "{}: ok (trust domain {}, {} workloads, {} flows, {} data assets)",
                    file.display(),
                    p.trust_domain,
                    p.workloads.len(),
                    p.flows.len(),
                    p.data.len()
                );
                Ok(ExitCode::from(EXIT_OK))
            }
            Err(e) => {
                eprint!("{e}");
                Ok(ExitCode::from(EXIT_ERROR))
            }
        },
        PolicyCmd::Example => {
            print!("{EXAMPLE_POLICY}");
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}
