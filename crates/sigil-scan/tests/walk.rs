//! The walker `sigil scan` and `sigil models lock|verify` share: dangling links and links out of
//! the root are reported and the walk goes on; a Hugging Face cache's blobs are listed once,
//! under their snapshot names; `refs/` is not a model file; lock and walk agree on the scope.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::symlink;
use std::path::Path;

use sigil_scan::lockfile;
use sigil_scan::walk::{Problem, walk};

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// `hub/models--org--name/{blobs,snapshots/REV,refs/main}` as huggingface_hub lays it out, with
/// blob names that are the files' real digests; plus `hub/.locks/`.
fn hf_cache(hub: &Path) -> std::path::PathBuf {
    let repo = hub.join("models--org--name");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join(format!("snapshots/{REV}/sub"))).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join(format!(".no_exist/{REV}"))).unwrap();
    std::fs::create_dir_all(hub.join(".locks/models--org--name")).unwrap();
    std::fs::write(repo.join("refs/main"), REV).unwrap();
    std::fs::write(repo.join(format!(".no_exist/{REV}/model.bin")), b"").unwrap();
    std::fs::write(hub.join(".locks/models--org--name/x.lock"), b"").unwrap();
    for (name, body) in [
        ("config.json", &b"{\"a\": 1}"[..]),
        ("sub/w.bin", b"weights"),
    ] {
        let p = repo.join("tmp");
        std::fs::write(&p, body).unwrap();
        let sha = sigil_scan::digest::sha256_file(&p).unwrap().0;
        std::fs::rename(&p, repo.join("blobs").join(&sha)).unwrap();
        let up = if name.contains('/') {
            "../../../"
        } else {
            "../../"
        };
        symlink(
            format!("{up}blobs/{sha}"),
            repo.join(format!("snapshots/{REV}/{name}")),
        )
        .unwrap();
    }
    repo
}

fn rels(root: &Path) -> Vec<String> {
    walk(root)
        .unwrap()
        .files
        .into_iter()
        .map(|f| f.rel)
        .collect()
}

#[test]
fn a_dangling_symlink_is_a_problem_and_the_walk_goes_on() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.bin"), b"a").unwrap();
    symlink("missing.bin", d.path().join("b.bin")).unwrap();
    std::fs::write(d.path().join("c.bin"), b"c").unwrap();
    let w = walk(d.path()).unwrap();
    let files: Vec<_> = w.files.iter().map(|f| f.rel.as_str()).collect();
    assert_eq!(files, ["a.bin", "c.bin"]);
    assert!(
        matches!(&w.problems[..], [Problem::Dangling { path, target }]
            if path.ends_with("b.bin") && target == Path::new("missing.bin")),
        "{:?}",
        w.problems
    );
}

#[test]
fn a_symlink_out_of_the_root_is_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("model");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(d.path().join("outside.pkl"), b"secret").unwrap();
    std::fs::write(root.join("w.bin"), b"w").unwrap();
    symlink("..", root.join("up")).unwrap();
    symlink("../outside.pkl", root.join("o.pkl")).unwrap();
    let w = walk(&root).unwrap();
    let files: Vec<_> = w.files.iter().map(|f| f.rel.as_str()).collect();
    assert_eq!(files, ["w.bin"], "{:?}", w.files);
    assert_eq!(w.problems.len(), 2, "{:?}", w.problems);
    assert!(
        w.problems
            .iter()
            .all(|p| matches!(p, Problem::Outside { .. })),
        "{:?}",
        w.problems
    );
    // Inside the root, a link to `..` is a loop: walked once, no problem.
    std::fs::create_dir_all(root.join("sub")).unwrap();
    symlink("..", root.join("sub/back")).unwrap();
    assert_eq!(walk(&root).unwrap().problems.len(), 2);
    // A link to itself (ELOOP) is a problem too, not an abort.
    symlink("self", root.join("self")).unwrap();
    assert_eq!(walk(&root).unwrap().problems.len(), 3);
}

#[test]
fn hf_cache_blobs_are_listed_once_under_their_snapshot_names() {
    let d = tempfile::tempdir().unwrap();
    let hub = d.path().join("hub");
    let repo = hf_cache(&hub);
    let snap = format!("models--org--name/snapshots/{REV}");
    assert_eq!(
        rels(&hub),
        [format!("{snap}/config.json"), format!("{snap}/sub/w.bin")]
    );
    let w = walk(&hub).unwrap();
    assert!(w.problems.is_empty(), "{:?}", w.problems);
    assert!(w.files[0].aliases[0].starts_with("models--org--name/blobs/"));
    // From the repo directory, and from the snapshot (its links point into ../../blobs, inside
    // the repo directory).
    assert_eq!(
        rels(&repo),
        [
            format!("snapshots/{REV}/config.json"),
            format!("snapshots/{REV}/sub/w.bin")
        ]
    );
    let w = walk(&repo.join("snapshots").join(REV)).unwrap();
    assert!(w.problems.is_empty(), "{:?}", w.problems);
    let files: Vec<_> = w.files.iter().map(|f| f.rel.as_str()).collect();
    assert_eq!(files, ["config.json", "sub/w.bin"]);
    // A blob no snapshot links to is still listed, under blobs/.
    std::fs::write(repo.join("blobs/orphan"), b"x").unwrap();
    assert!(rels(&repo).contains(&"blobs/orphan".to_owned()));
}

#[test]
fn lock_covers_what_the_walk_lists_so_a_fresh_lock_matches() {
    let d = tempfile::tempdir().unwrap();
    let hub = d.path().join("hub");
    hf_cache(&hub);
    let targets = lockfile::collect(&hub).unwrap();
    let locked: Vec<_> = targets.iter().map(|t| t.rel.clone()).collect();
    // Same scope: no refs/main, no .locks, no blob names, each snapshot file once.
    assert_eq!(locked, rels(&hub));
    for t in &targets {
        assert_eq!(t.repo.as_deref(), Some("hf://org/name"));
        assert_eq!(t.revision.as_deref(), Some(REV));
        let (_, drift) = lockfile::hash_target(t).unwrap();
        assert!(drift.is_none(), "{drift:?}");
    }
    // A dangling link makes the tree unlockable, naming the path.
    symlink(
        "../../blobs/gone",
        hub.join(format!("models--org--name/snapshots/{REV}/gone.bin")),
    )
    .unwrap();
    let e = lockfile::collect(&hub).unwrap_err().to_string();
    assert!(e.contains("gone.bin") && e.contains("dangling"), "{e}");
}
