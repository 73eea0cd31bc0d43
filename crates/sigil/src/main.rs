//! The `sigil` binary: parses arguments, starts logging, dispatches to `commands::<noun>`, and
//! maps errors to exit codes in one place. Everything else lives in library crates.

mod cli;
mod commands;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.global.verbose, cli.global.log_format);
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}: {e:#}", logging::paint("error", logging::Color::Red));
            ExitCode::from(commands::EXIT_ERROR)
        }
    }
}
