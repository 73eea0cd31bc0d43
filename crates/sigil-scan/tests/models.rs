//! Lockfiles over a Hugging Face cache layout, and OpenSSF model-signing interop with the PyPI
//! `model-signing` package (key mode). The interop test needs Python with `model-signing` and
//! `pyopenssl` (SIGIL_PYTHON, else ./.venv/bin/python at the workspace root, else python3); it
//! prints why and skips when they are missing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use sigil_scan::digest::{git_blob_sha1, sha256_bytes};
use sigil_scan::lockfile::{self, Drift, Lockfile, hash_target};
use sigil_scan::signing::{self, SigningKey, VerifyingKey};

fn fake_hf_cache(root: &Path) -> (PathBuf, String) {
    let repo = root.join("models--acme--tiny");
    let commit = "0123456789abcdef0123456789abcdef01234567".to_owned();
    let blobs = repo.join("blobs");
    let snap = repo.join("snapshots").join(&commit);
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), &commit).unwrap();
    // an LFS file: blob named by sha256
    let weights = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ".to_vec();
    let lfs = sha256_bytes(&weights);
    std::fs::write(blobs.join(&lfs), &weights).unwrap();
    std::os::unix::fs::symlink(format!("../../blobs/{lfs}"), snap.join("model.safetensors"))
        .unwrap();
    // a small git file: blob named by the git blob sha1
    let tmp = root.join("cfg.tmp");
    std::fs::write(&tmp, b"{\"model_type\": \"tiny\"}\n").unwrap();
    let sha1 = git_blob_sha1(&tmp).unwrap();
    std::fs::rename(&tmp, blobs.join(&sha1)).unwrap();
    std::os::unix::fs::symlink(format!("../../blobs/{sha1}"), snap.join("config.json")).unwrap();
    (repo, commit)
}

fn lock_of(root: &Path) -> (Vec<lockfile::LockEntry>, Vec<Drift>) {
    let mut entries = Vec::new();
    let mut drift = Vec::new();
    for t in lockfile::collect(root).unwrap() {
        let (e, d) = hash_target(&t).unwrap();
        entries.push(e);
        drift.extend(d);
    }
    (entries, drift)
}

#[test]
fn hf_cache_lock_verify_and_tamper() {
    let d = tempfile::tempdir().unwrap();
    let (repo, commit) = fake_hf_cache(d.path());
    // the cache root, the repo dir and the snapshot dir are all understood
    for root in [
        d.path().to_owned(),
        repo.clone(),
        repo.join("snapshots").join(&commit),
    ] {
        let (entries, drift) = lock_of(&root);
        assert!(drift.is_empty(), "{drift:?}");
        assert_eq!(entries.len(), 2, "{root:?}: {entries:?}");
        for e in &entries {
            assert_eq!(e.repo.as_deref(), Some("hf://acme/tiny"));
            assert_eq!(e.revision.as_deref(), Some(commit.as_str()));
        }
    }
    let (entries, _) = lock_of(d.path());
    let lock = Lockfile::new(entries);
    let text = lock.to_json();
    let back = Lockfile::parse(&text, Path::new("x")).unwrap();
    assert_eq!(back, lock);
    assert!(lock.compare(&lock_of(d.path()).0).is_empty());

    // tamper with the LFS blob: its name no longer matches, and the lock sees a change
    let blob = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().len() == 64)
        .unwrap();
    std::fs::write(&blob, b"evil").unwrap();
    let (now, drift) = lock_of(d.path());
    assert!(
        matches!(drift.as_slice(), [Drift::BlobMismatch { .. }]),
        "{drift:?}"
    );
    let cmp = lock.compare(&now);
    assert!(matches!(cmp.as_slice(), [Drift::Changed { .. }]), "{cmp:?}");

    // an extra file and a missing one
    let snap = repo.join("snapshots").join(&commit);
    std::fs::write(snap.join("extra.bin"), b"x").unwrap();
    std::fs::remove_file(snap.join("config.json")).unwrap();
    let cmp = lock.compare(&lock_of(d.path()).0);
    assert!(
        cmp.iter()
            .any(|x| matches!(x, Drift::Extra { path } if path.ends_with("extra.bin"))),
        "{cmp:?}"
    );
    assert!(
        cmp.iter()
            .any(|x| matches!(x, Drift::Missing { path } if path.ends_with("config.json"))),
        "{cmp:?}"
    );
}

fn python() -> Option<String> {
    let candidates = [
        std::env::var("SIGIL_PYTHON").ok(),
        Some(format!(
            "{}/../../.venv/bin/python",
            env!("CARGO_MANIFEST_DIR")
        )),
        Some("python3".to_owned()),
    ];
    for c in candidates.into_iter().flatten() {
        let ok = Command::new(&c)
            .args(["-c", "import model_signing, OpenSSL"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(c);
        }
    }
    None
}

fn key_pem(curve: &str, dir: &Path, py: &str) -> (PathBuf, PathBuf) {
    // The key is made by Python's `cryptography` so both sides read a foreign key.
    let key = dir.join("key.pem");
    let pubk = dir.join("pub.pem");
    let script = format!(
        "from cryptography.hazmat.primitives.asymmetric import ec\n\
         from cryptography.hazmat.primitives import serialization as s\n\
         k = ec.generate_private_key(ec.{curve}())\n\
         open({key:?}, 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n\
         open({pubk:?}, 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n",
        key = key.to_str().unwrap(),
        pubk = pubk.to_str().unwrap()
    );
    let o = Command::new(py).args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (key, pubk)
}

fn model_dir(root: &Path) -> PathBuf {
    let m = root.join("tiny-model");
    std::fs::create_dir_all(m.join("sub")).unwrap();
    std::fs::write(m.join("model.safetensors"), b"weights").unwrap();
    std::fs::write(m.join("config.json"), b"{}").unwrap();
    std::fs::write(m.join("sub/tokenizer.json"), b"{\"v\": 1}").unwrap();
    m
}

fn sigil_verify(model: &Path, sig: &Path, pubk: &Path) -> Result<(), String> {
    let key = VerifyingKey::from_pem(&std::fs::read_to_string(pubk).unwrap())
        .map_err(|e| e.to_string())?;
    let m =
        signing::verify(&std::fs::read_to_string(sig).unwrap(), &key).map_err(|e| e.to_string())?;
    let mut ignore: Vec<String> = signing::DEFAULT_IGNORE
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    ignore.extend(m.ignore_paths.iter().cloned());
    let now = signing::hash_dir(model, &ignore, 2).map_err(|e| e.to_string())?;
    if now != m.files {
        return Err(format!(
            "files differ: signed {:?}, found {:?}",
            m.files, now
        ));
    }
    Ok(())
}

#[test]
fn model_signing_interop_both_ways() {
    let Some(py) = python() else {
        let why = "no Python with the PyPI packages `model-signing` and `pyopenssl` (pip install -r .ci/requirements.txt, set SIGIL_PYTHON or create .venv)";
        assert!(
            std::env::var_os("CI").is_none(),
            "model_signing_interop_both_ways cannot run under CI: {why}"
        );
        println!("SKIPPED model_signing_interop_both_ways: {why}");
        return;
    };
    for curve in ["SECP256R1", "SECP384R1"] {
        let d = tempfile::tempdir().unwrap();
        let (key, pubk) = key_pem(curve, d.path(), &py);
        let model = model_dir(d.path());

        // model-signing signs, Sigil verifies
        let sig = d.path().join("py.sig");
        let o = Command::new(&py)
            .args(["-m", "model_signing", "sign", "key", "--private_key"])
            .arg(&key)
            .arg("--signature")
            .arg(&sig)
            .arg(&model)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "model_signing sign: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        sigil_verify(&model, &sig, &pubk)
            .unwrap_or_else(|e| panic!("{curve}: sigil rejects model-signing's signature: {e}"));

        // Sigil signs, model-signing verifies
        let sk = SigningKey::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
        let files = signing::hash_dir(&model, &[], 2).unwrap();
        let ignore: Vec<String> = signing::DEFAULT_IGNORE
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let bundle =
            signing::sign(&sk, &signing::statement("tiny-model", &files, &ignore)).unwrap();
        let ours = d.path().join("sigil.sig");
        std::fs::write(&ours, bundle).unwrap();
        let verify_py = |sig: &Path| {
            Command::new(&py)
                .args(["-m", "model_signing", "verify", "key", "--public_key"])
                .arg(&pubk)
                .arg("--signature")
                .arg(sig)
                .arg(&model)
                .output()
                .unwrap()
        };
        let o = verify_py(&ours);
        assert!(
            o.status.success(),
            "{curve}: model_signing rejects Sigil's signature: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );

        // tampering is caught by both
        std::fs::write(model.join("config.json"), b"{\"evil\": true}").unwrap();
        assert!(sigil_verify(&model, &sig, &pubk).is_err());
        assert!(!verify_py(&ours).status.success());
    }
}
