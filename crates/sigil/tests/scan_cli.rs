//! `sigil scan` and `sigil models lock|verify` over trees a user has: links that dangle or lead
//! out of the tree, a Hugging Face cache (blobs scanned once, under their snapshot names; a
//! fresh lock of a clean cache matches the scan), plain JSON next to the models.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::{sigil_in, text};
use serde_json::Value;

/// A safetensors file with one U8 tensor of 4 bytes.
fn safetensors() -> Vec<u8> {
    let h = br#"{"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
    let mut v = (h.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(h);
    v.extend_from_slice(&[1, 2, 3, 4]);
    v
}

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// `hub/models--org--name` as huggingface_hub leaves it: blobs named by digest, snapshot links,
/// `refs/main`, and the hub's `.locks/`.
fn hf_cache(hub: &Path) {
    let repo = hub.join("models--org--name");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join(format!("snapshots/{REV}"))).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(hub.join(".locks/models--org--name")).unwrap();
    std::fs::write(repo.join("refs/main"), REV).unwrap();
    std::fs::write(hub.join(".locks/models--org--name/a.lock"), b"").unwrap();
    for (name, body) in [
        ("model.safetensors", safetensors()),
        ("config.json", b"{\"data\":{\"hidden\":8}}\n".to_vec()),
    ] {
        let tmp = repo.join("tmp");
        std::fs::write(&tmp, &body).unwrap();
        let out = std::process::Command::new("sha256sum")
            .arg(&tmp)
            .output()
            .unwrap();
        let sha = text(&out.stdout)[..64].to_owned();
        std::fs::rename(&tmp, repo.join("blobs").join(&sha)).unwrap();
        symlink(
            format!("../../blobs/{sha}"),
            repo.join(format!("snapshots/{REV}/{name}")),
        )
        .unwrap();
    }
}

fn json_scan(dir: &Path, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let mut a = vec!["scan", "-o", "json", "--no-progress"];
    a.extend_from_slice(args);
    let out = sigil_in(dir, &a);
    let reports: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    (
        out.status.code(),
        reports.as_array().unwrap().clone(),
        text(&out.stderr),
    )
}

#[test]
fn scan_reports_broken_and_escaping_links_and_scans_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("a.safetensors"), safetensors()).unwrap();
    std::fs::write(d.path().join("outside.pkl"), b"cos\nsystem\n(S'x'\ntR.").unwrap();
    symlink("gone.bin", m.join("b.bin")).unwrap();
    symlink("..", m.join("up")).unwrap();
    symlink("../outside.pkl", m.join("c.pkl")).unwrap();
    std::fs::write(m.join("z.safetensors"), safetensors()).unwrap();
    let (code, reports, stderr) = json_scan(d.path(), &["model"]);
    assert_eq!(code, Some(1), "{stderr}");
    let by_path = |p: &str| {
        reports
            .iter()
            .find(|r| r["path"] == p)
            .unwrap_or_else(|| panic!("no report for {p}: {reports:#?}"))
    };
    // Both real files were scanned (the dangling link did not stop the scan) ...
    for p in ["model/a.safetensors", "model/z.safetensors"] {
        assert_eq!(by_path(p)["verdict"], "safe", "{p}");
    }
    // ... each link is a finding for its own path, and nothing outside the root was read.
    assert_eq!(
        by_path("model/b.bin")["findings"][0]["subject"],
        "dangling symlink"
    );
    for p in ["model/up", "model/c.pkl"] {
        assert_eq!(by_path(p)["verdict"], "suspicious", "{p}");
        assert_eq!(
            by_path(p)["findings"][0]["subject"],
            "symlink outside the root"
        );
    }
    assert_eq!(reports.len(), 5, "{reports:#?}");
    assert!(!text(&serde_json::to_vec(&reports).unwrap()).contains("os.system"));
}

#[test]
fn hf_cache_is_scanned_once_per_file_and_a_fresh_lock_matches() {
    let d = tempfile::tempdir().unwrap();
    let hub = d.path().join("hub");
    hf_cache(&hub);
    let lock = sigil_in(d.path(), &["models", "lock", "hub", "-o", "hub.lock"]);
    assert_eq!(lock.status.code(), Some(0), "{}", text(&lock.stderr));
    let (code, reports, stderr) = json_scan(d.path(), &["hub", "--lockfile", "hub.lock"]);
    assert_eq!(code, Some(0), "{stderr}\n{reports:#?}");
    let paths: Vec<&str> = reports
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            format!("hub/models--org--name/snapshots/{REV}/config.json"),
            format!("hub/models--org--name/snapshots/{REV}/model.safetensors"),
        ]
    );
    for r in &reports {
        assert_eq!(r["verdict"], "safe", "{r:#}");
        let alias = r["aliases"][0].as_str().unwrap();
        assert!(alias.starts_with("hub/models--org--name/blobs/"), "{alias}");
    }
    let verify = sigil_in(
        d.path(),
        &["models", "verify", "hub", "--lockfile", "hub.lock"],
    );
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
}

#[test]
fn models_lock_and_verify_fail_on_a_link_they_cannot_pin() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("w.safetensors"), safetensors()).unwrap();
    let ok = sigil_in(d.path(), &["models", "lock", "model", "-o", "m.lock"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    std::fs::write(d.path().join("secret"), b"x").unwrap();
    symlink("../secret", m.join("s.bin")).unwrap();
    let v = sigil_in(
        d.path(),
        &["models", "verify", "model", "--lockfile", "m.lock"],
    );
    assert_eq!(v.status.code(), Some(1));
    assert!(
        text(&v.stdout).contains("outside the scanned root"),
        "{}",
        text(&v.stdout)
    );
    let l = sigil_in(d.path(), &["models", "lock", "model", "-o", "m2.lock"]);
    assert_eq!(l.status.code(), Some(1));
    assert!(text(&l.stderr).contains("s.bin"), "{}", text(&l.stderr));
    assert!(!d.path().join("m2.lock").exists());
}
