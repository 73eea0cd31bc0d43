//! kill -9 during rotation loses nothing: a child process rotates and encrypts in a loop on a
//! redb store, logging each ciphertext (fsync'd) only after the service returned it; the parent
//! kills it with SIGKILL at a random moment, reopens the store and decrypts every logged
//! ciphertext.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use sigil_keys::{KeyService, RedbStore, Store};

use crate::common::*;

const CHILD_ENV: &str = "SIGIL_KEYS_CRASH_CHILD";
const KEY: [u8; 32] = [5u8; 32];

/// The child's loop (a no-op unless the parent started this test binary as the child).
#[test]
fn crash_child_loop() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.join("keys.redb")).unwrap());
    let mut svc = KeyService::new(store, policy());
    // With SIGIL_KEYS_ABORT_AT_ROTATION=N the child aborts (SIGABRT: no destructor, no flush)
    // inside its Nth rotation, after the new version exists in memory and before its commit.
    if let Some(n) = std::env::var("SIGIL_KEYS_ABORT_AT_ROTATION")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        let seen = std::sync::atomic::AtomicU64::new(0);
        svc = svc.with_commit_hook(Arc::new(move |label| {
            if label == "rotate" && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n
            {
                std::process::abort();
            }
        }));
    }
    let out = svc.init_key_file(&KEY).unwrap();
    std::fs::write(dir.join("token"), out.root_token.as_bytes()).unwrap();
    let admin = svc.verify_admin(&out.root_token).unwrap();
    svc.create_key(&admin, "k", sigil_keys::service::CreateOptions::default())
        .unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    for i in 0u64.. {
        if i % 2 == 0 {
            let v = svc.rotate_key(&admin, "k").unwrap().latest_version;
            writeln!(log, "rotated\t{v}").unwrap();
        }
        let plain = format!("record-{i}");
        let c = enc(&svc, &admin, "k", plain.as_bytes());
        writeln!(log, "{c}\t{plain}").unwrap();
        log.sync_data().unwrap();
    }
}

fn spawn_child(dir: &std::path::Path, abort_at: Option<u64>) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--exact",
        "crash::crash_child_loop",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, dir)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    if let Some(n) = abort_at {
        cmd.env("SIGIL_KEYS_ABORT_AT_ROTATION", n.to_string());
    }
    cmd.spawn().unwrap()
}

/// Reopen the store after a crash and decrypt every logged ciphertext; returns the key's latest
/// version and the highest rotation the log recorded.
fn verify_after_crash(dir: &std::path::Path) -> (u32, u32) {
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.join("keys.redb")).unwrap());
    let svc = KeyService::new(store, policy());
    svc.unseal_key_file(&KEY).unwrap();
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    let admin = svc.verify_admin(&token).unwrap();
    let text = std::fs::read_to_string(dir.join("log")).unwrap();
    let mut checked = 0;
    let mut max_rotated = 0;
    for line in text.lines() {
        // the last line may be torn by the kill
        let Some((c, plain)) = line.split_once('\t') else {
            continue;
        };
        if c == "rotated" {
            max_rotated = max_rotated.max(plain.parse::<u32>().unwrap_or(0));
            continue;
        }
        if !c.starts_with("vault:v") || !plain.starts_with("record-") {
            continue;
        }
        match dec(&svc, &admin, "k", c) {
            Ok(p) => assert_eq!(p, plain.as_bytes()),
            // only a torn last line may fail
            Err(e) => assert!(
                !text.ends_with('\n') && text.lines().last() == Some(line),
                "{line}: {e}"
            ),
        }
        checked += 1;
    }
    assert!(checked > 20, "only {checked} ciphertexts logged");
    let latest = svc.read_key(&admin, "k").unwrap().latest_version;
    assert!(
        latest >= max_rotated,
        "latest {latest} < logged rotation {max_rotated}"
    );
    // the service goes on: rotate and encrypt after the crash
    svc.rotate_key(&admin, "k").unwrap();
    let c = enc(&svc, &admin, "k", b"after");
    assert_eq!(dec(&svc, &admin, "k", &c).unwrap(), b"after");
    (latest, max_rotated)
}

#[test]
fn abort_inside_a_rotation_before_its_commit_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let status = spawn_child(dir.path(), Some(30)).wait().unwrap();
    assert!(!status.success(), "the child should have aborted");
    let (latest, logged) = verify_after_crash(dir.path());
    // 29 rotations committed (v2..=v30); the 30th never reached the store
    assert_eq!((latest, logged), (30, 30));
}

#[test]
fn kill_9_during_rotation_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child(dir.path(), None);
    // let it run until it has done a few hundred rotations
    let log = dir.path().join("log");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n > 400 || std::time::Instant::now() > deadline {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child stopped by itself ({status}) after {n} log lines");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: no destructor, no flush
    child.kill().unwrap();
    child.wait().unwrap();
    verify_after_crash(dir.path());
}
