//! The dependency tree keeps one crypto provider (aws-lc-rs) and no unmaintained YAML crate
//! (the same bans as deny.toml, checked with plain `cargo tree` so CI needs no extra tool).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn banned_crates_are_absent() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for banned in ["ring", "openssl-sys", "serde_yaml", "serde_yml"] {
        let out = Command::new(&cargo)
            .current_dir(root)
            .args([
                "tree",
                "--workspace",
                "--offline",
                "--edges",
                "normal,build",
                "--invert",
                banned,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.trim().is_empty(),
            "{banned} is in the dependency tree:\n{stdout}"
        );
    }
}
