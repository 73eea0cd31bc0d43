//! `sigil seal` / `sigil unseal` as a user runs them: files, directories and pipes, `--inspect`,
//! `--range`, exit codes for tampered files and wrong keys, key-file permissions, and `kill -9`
//! during a seal (nothing lost: no partial output under the final name, input untouched, an
//! earlier output intact).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SIGIL, sigil_in, text};

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 131 + i / 1000) as u8).collect()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let k = t.path().join("k");
    std::fs::write(&k, [0x42u8; 32]).unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    (t, k)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = sigil_in(dir, args);
    assert!(
        o.status.success(),
        "sigil {args:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

#[test]
fn file_roundtrip_inspect_and_range() {
    let (t, _) = setup();
    let d = t.path();
    let pt = data(3 * (1 << 20) + 17);
    std::fs::write(d.join("w.bin"), &pt).unwrap();
    ok(
        d,
        &[
            "seal",
            "w.bin",
            "--asset",
            "model-weights",
            "--key-file",
            "k",
        ],
    );
    let table = ok(d, &["seal", "--inspect", "w.bin.sigil"]);
    for want in [
        "aes-256-gcm-stream",
        "model-weights",
        "w.bin",
        "local:",
        "segments        4",
    ] {
        assert!(table.contains(want), "{want} missing in:\n{table}");
    }
    let json: serde_json::Value = serde_json::from_str(&ok(
        d,
        &["seal", "--inspect", "w.bin.sigil", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(json["asset"], "model-weights");
    assert_eq!(json["path"], "w.bin");
    assert_eq!(json["key"]["version"], 1);
    assert_eq!(json["segment_size"], 1 << 20);
    assert_eq!(json["plaintext_len"], pt.len());
    assert_eq!(json["verified"], false);
    std::fs::rename(d.join("w.bin"), d.join("orig")).unwrap();
    ok(
        d,
        &[
            "unseal",
            "w.bin.sigil",
            "--key-file",
            "k",
            "--asset",
            "model-weights",
        ],
    );
    assert_eq!(std::fs::read(d.join("w.bin")).unwrap(), pt);
    let off = (1 << 20) - 5;
    let range = sigil_in(
        d,
        &[
            "unseal",
            "w.bin.sigil",
            "--key-file",
            "k",
            "--range",
            &format!("{off}:10"),
        ],
    );
    assert!(range.status.success(), "{}", text(&range.stderr));
    assert_eq!(range.stdout, pt[off..off + 10]);
    // Refuses to overwrite without --force.
    let again = sigil_in(d, &["unseal", "w.bin.sigil", "--key-file", "k"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn pipe_roundtrip() {
    let (t, k) = setup();
    let pt = data(2 * (1 << 20) + 3);
    let mut seal = Command::new(SIGIL)
        .args(["seal", "-", "--asset", "a", "--key-file"])
        .arg(&k)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let unseal = Command::new(SIGIL)
        .args(["unseal", "-", "--key-file"])
        .arg(&k)
        .stdin(seal.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = seal.stdin.take().unwrap();
    let feed = pt.clone();
    let w = std::thread::spawn(move || stdin.write_all(&feed).unwrap());
    let out = unseal.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(seal.wait().unwrap().success());
    assert!(out.status.success());
    assert_eq!(out.stdout, pt);
    drop(t);
}

#[test]
fn directories_roundtrip() {
    let (t, _) = setup();
    let d = t.path();
    std::fs::create_dir_all(d.join("model/sub")).unwrap();
    std::fs::write(d.join("model/config.json"), b"{}").unwrap();
    std::fs::write(d.join("model/sub/weights.bin"), data(70_000)).unwrap();
    ok(
        d,
        &[
            "seal",
            "model",
            "--asset",
            "model-weights",
            "--key-file",
            "k",
        ],
    );
    assert!(d.join("model.sigil/sub/weights.bin.sigil").is_file());
    ok(
        d,
        &["unseal", "model.sigil", "-o", "restored", "--key-file", "k"],
    );
    assert_eq!(
        std::fs::read(d.join("restored/sub/weights.bin")).unwrap(),
        data(70_000)
    );
    assert_eq!(
        std::fs::read(d.join("restored/config.json")).unwrap(),
        b"{}"
    );
}

#[test]
fn verification_failures_exit_1_and_usage_errors_exit_2() {
    let (t, _) = setup();
    let d = t.path();
    std::fs::write(d.join("f"), data(5000)).unwrap();
    ok(
        d,
        &[
            "seal",
            "f",
            "--asset",
            "a",
            "--key-file",
            "k",
            "--key-version",
            "3",
        ],
    );
    // Tampered body.
    let mut b = std::fs::read(d.join("f.sigil")).unwrap();
    let n = b.len() - 20;
    b[n] ^= 0x80;
    std::fs::write(d.join("bad.sigil"), &b).unwrap();
    let o = sigil_in(
        d,
        &[
            "unseal",
            "bad.sigil",
            "--key-file",
            "k",
            "--key-version",
            "3",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("does not authenticate"),
        "{}",
        text(&o.stderr)
    );
    assert!(!d.join("bad").exists(), "no output from a tampered file");
    // Wrong key version.
    let o = sigil_in(d, &["unseal", "f.sigil", "-o", "x", "--key-file", "k"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("version 3"), "{}", text(&o.stderr));
    // Wrong asset.
    let o = sigil_in(
        d,
        &[
            "unseal",
            "f.sigil",
            "-o",
            "x",
            "--key-file",
            "k",
            "--key-version",
            "3",
            "--asset",
            "b",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    // A key file others can read.
    std::fs::set_permissions(d.join("k"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = sigil_in(
        d,
        &["seal", "f", "-o", "g", "--asset", "a", "--key-file", "k"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("chmod 600"), "{}", text(&o.stderr));
    // No key source at all.
    let o = sigil_in(d, &["seal", "f", "-o", "g", "--asset", "a"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("--key-file"),
        "{}",
        text(&o.stderr)
    );
}

fn tmp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `kill -9` while `sigil seal - -o out --force` is mid-stream (it is blocked on its input, so
/// the kill lands mid-seal every time): the earlier `out` is intact and still unseals, and no
/// partial file has its name.
#[test]
fn kill_9_during_a_seal_loses_nothing() {
    let (t, _) = setup();
    let d = t.path();
    let old = data(100_000);
    std::fs::write(d.join("old"), &old).unwrap();
    ok(
        d,
        &[
            "seal",
            "old",
            "-o",
            "out.sigil",
            "--asset",
            "a",
            "--key-file",
            "k",
        ],
    );
    let before = std::fs::read(d.join("out.sigil")).unwrap();
    let mut child = Command::new(SIGIL)
        .current_dir(d)
        .args([
            "seal",
            "-",
            "-o",
            "out.sigil",
            "--force",
            "--asset",
            "a",
            "--key-file",
            "k",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data(3 << 20)).unwrap();
    stdin.flush().unwrap();
    // The temporary file exists and has segments in it: the seal is under way.
    wait_for(
        || {
            tmp_files(d)
                .iter()
                .any(|n| std::fs::metadata(d.join(n)).is_ok_and(|m| m.len() > 1 << 20))
        },
        "the seal to write segments",
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(stdin);
    assert_eq!(std::fs::read(d.join("out.sigil")).unwrap(), before);
    ok(d, &["unseal", "out.sigil", "-o", "back", "--key-file", "k"]);
    assert_eq!(std::fs::read(d.join("back")).unwrap(), old);

    // Killing a seal of a file at any moment: the input is untouched, and the output is either
    // absent or complete.
    let big = data(24 << 20);
    std::fs::write(d.join("big"), &big).unwrap();
    for delay_ms in [0u64, 20, 80] {
        let _ = std::fs::remove_file(d.join("big.sigil"));
        let mut child = Command::new(SIGIL)
            .current_dir(d)
            .args([
                "seal",
                "big",
                "--asset",
                "a",
                "--key-file",
                "k",
                "--jobs",
                "1",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(std::fs::read(d.join("big")).unwrap(), big, "input changed");
        if d.join("big.sigil").exists() {
            let _ = std::fs::remove_file(d.join("big.check"));
            ok(
                d,
                &["unseal", "big.sigil", "-o", "big.check", "--key-file", "k"],
            );
            assert_eq!(std::fs::read(d.join("big.check")).unwrap(), big);
        }
    }
}
