//! Logs go to stderr through `tracing`; stdout is for data. `NO_COLOR` is honoured.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Whether stderr may carry ANSI colour.
pub fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

pub fn init(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("SIGIL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color_enabled())
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[derive(Debug, Clone, Copy)]
pub enum Color {
    Red,
    Yellow,
    Green,
}

/// `s` in colour when stderr is a terminal and `NO_COLOR` is unset.
pub fn paint(s: &str, c: Color) -> String {
    if !color_enabled() {
        return s.to_owned();
    }
    let code = match c {
        Color::Red => 31,
        Color::Yellow => 33,
        Color::Green => 32,
    };
    format!("\x1b[1;{code}m{s}\x1b[0m")
}
