//! Helpers shared by the CLI tests: run the built `sigil` binary and read its output.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SIGIL: &str = env!("CARGO_BIN_EXE_sigil");

/// The example platform the CLI tests run on (relative to [`repo`]): its policy, the manifests
/// as a team would first write them, and the hardened ones.
pub const PLATFORM: &str = "examples/ai-platform/sigil.yaml";
pub const NAIVE: &str = "examples/ai-platform/manifests/naive";
pub const HARDENED: &str = "examples/ai-platform/manifests/hardened";

/// The repository root (examples and test data paths are relative to it).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `sigil ARGS` in `dir` with colour off.
pub fn sigil_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(SIGIL)
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// Runs `sigil ARGS` from the repository root.
pub fn sigil(args: &[&str]) -> Output {
    sigil_in(&repo(), args)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `sigil ARGS` in `dir` as a server (output discarded) and waits until it listens on
/// 127.0.0.1:`port`.
pub fn spawn_server(dir: &Path, args: &[&str], port: u16) -> Child {
    let child = Command::new(SIGIL)
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sigil {args:?} did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}
