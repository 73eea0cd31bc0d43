//! The seal format end to end through the public API: round trips of every size class and a pipe,
//! every byte flipped, every truncation, reordering, splicing, wrong key / version / binding,
//! random access (reading only the needed segments), directories, key files, untrusted headers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use proptest::prelude::*;
use sigil_seal::format::{Layout, TAG_LEN};
use sigil_seal::key::KEY_LEN;
use sigil_seal::{
    DataKey, DataKeySource, Expect, Header, KeyError, KeyRef, LocalKey, NewDataKey, SealError,
    SealOptions, SealedReader, SegmentError, WrapContext,
};

const SEG: u32 = 1024;
const STRIDE: usize = SEG as usize + TAG_LEN;

fn key(v: u32) -> LocalKey {
    LocalKey::from_bytes(&[0x5a; KEY_LEN], v).unwrap()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 7) as u8).collect()
}

fn opts(jobs: usize) -> SealOptions {
    SealOptions {
        segment_size: SEG,
        jobs: Some(jobs),
    }
}

fn seal_with(pt: &[u8], asset: &str, path: &str, keys: &dyn DataKeySource, jobs: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let ctx = WrapContext { asset, path };
    sigil_seal::seal(
        pt,
        &mut out,
        &ctx,
        keys,
        &opts(jobs),
        &|_| {},
        Path::new("in"),
        Path::new("out"),
    )
    .unwrap();
    out
}

fn seal(pt: &[u8]) -> Vec<u8> {
    seal_with(pt, "model-weights", "w/model.bin", &key(1), 2)
}

fn unseal_with(
    sealed: &[u8],
    keys: &dyn DataKeySource,
    expect: &Expect<'_>,
    jobs: usize,
) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::new();
    sigil_seal::unseal(
        sealed,
        &mut out,
        keys,
        expect,
        Some(jobs),
        &|_| {},
        Path::new("sealed"),
        Path::new("out"),
    )?;
    Ok(out)
}

fn unseal(sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    unseal_with(sealed, &key(1), &Expect::default(), 2)
}

fn header_len(sealed: &[u8]) -> usize {
    Header::announced_len(sealed).unwrap()
}

fn segment_error(r: Result<Vec<u8>, SealError>) -> SegmentError {
    match r {
        Err(SealError::Segment { source, .. }) => source,
        other => panic!("expected a segment error, got {other:?}"),
    }
}

#[test]
fn roundtrip_every_size_class() {
    let s = SEG as usize;
    for (n, segments) in [
        (0, 1),
        (1, 1),
        (s - 1, 1),
        (s, 1),
        (s + 1, 2),
        (3 * s, 3),
        (5 * s + 7, 6),
    ] {
        for jobs in [1, 3] {
            let pt = data(n);
            let sealed = seal_with(&pt, "a", "p", &key(1), jobs);
            let h = header_len(&sealed);
            assert_eq!(sealed.len(), h + n + segments * TAG_LEN, "size {n}");
            let l = Layout::from_body_len(SEG, (sealed.len() - h) as u64).unwrap();
            assert_eq!((l.segments, l.plaintext_len), (segments as u64, n as u64));
            assert_eq!(
                unseal_with(&sealed, &key(1), &Expect::default(), jobs).unwrap(),
                pt
            );
        }
    }
}

/// Reads at most `step` bytes per call, like a pipe under load.
struct Trickle<R> {
    inner: R,
    step: usize,
}

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step);
        self.inner.read(&mut buf[..n])
    }
}

#[test]
fn roundtrip_through_a_pipe_and_short_reads() {
    let pt = data(7 * SEG as usize + 300);
    // A real OS pipe, written by another thread.
    let (mut r, mut w) = std::io::pipe().unwrap();
    let feed = pt.clone();
    let writer = std::thread::spawn(move || {
        for c in feed.chunks(777) {
            w.write_all(c).unwrap();
        }
    });
    let mut sealed = Vec::new();
    let ctx = WrapContext {
        asset: "a",
        path: "",
    };
    sigil_seal::seal(
        &mut r,
        &mut sealed,
        &ctx,
        &key(1),
        &opts(3),
        &|_| {},
        Path::new("<stdin>"),
        Path::new("<stdout>"),
    )
    .unwrap();
    writer.join().unwrap();
    assert_eq!(sealed, sealed.clone());
    // Unseal through short reads too.
    let mut out = Vec::new();
    sigil_seal::unseal(
        Trickle {
            inner: sealed.as_slice(),
            step: 100,
        },
        &mut out,
        &key(1),
        &Expect::default(),
        Some(2),
        &|_| {},
        Path::new("<stdin>"),
        Path::new("<stdout>"),
    )
    .unwrap();
    assert_eq!(out, pt);
}

#[test]
fn every_flipped_byte_is_detected() {
    let pt = data(2 * SEG as usize + 100);
    let sealed = seal(&pt);
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(unseal(&bad).is_err(), "flipping byte {i} went unnoticed");
    }
}

#[test]
fn every_truncation_is_detected() {
    let pt = data(3 * SEG as usize + 50);
    let sealed = seal(&pt);
    for n in 0..sealed.len() {
        assert!(
            unseal(&sealed[..n]).is_err(),
            "truncation to {n} bytes went unnoticed"
        );
    }
}

#[test]
fn dropping_the_last_segment_is_truncation() {
    let pt = data(3 * SEG as usize);
    let sealed = seal(&pt);
    let cut = sealed.len() - STRIDE;
    // Segment 1 is now the last one, but it was sealed with the last flag clear.
    assert_eq!(
        segment_error(unseal(&sealed[..cut])),
        SegmentError::Authentication { segment: 1 }
    );
    // Cut in the middle of the final segment.
    let mid = sealed.len() - STRIDE / 2;
    assert_eq!(
        segment_error(unseal(&sealed[..mid])),
        SegmentError::Authentication { segment: 2 }
    );
    // Cut inside the tag of a one-byte final segment.
    let short = seal(&data(SEG as usize + 1));
    assert!(matches!(
        segment_error(unseal(&short[..short.len() - 8])),
        SegmentError::Truncated { segment: 1, .. }
    ));
    // Only the header left.
    let h = header_len(&sealed);
    assert!(matches!(
        segment_error(unseal(&sealed[..h])),
        SegmentError::Truncated { segment: 0, .. }
    ));
}

#[test]
fn swapped_segments_are_detected() {
    let pt = data(3 * SEG as usize);
    let sealed = seal(&pt);
    let h = header_len(&sealed);
    let mut bad = sealed.clone();
    let (a, b) = (h, h + STRIDE);
    let seg0 = sealed[a..a + STRIDE].to_vec();
    let seg1 = sealed[b..b + STRIDE].to_vec();
    bad[a..a + STRIDE].copy_from_slice(&seg1);
    bad[b..b + STRIDE].copy_from_slice(&seg0);
    assert_eq!(
        segment_error(unseal(&bad)),
        SegmentError::Authentication { segment: 0 }
    );
}

/// A source that hands out the same data key every time (as a broken or malicious key service
/// might): even then a segment from another file does not authenticate.
struct FixedKey;

impl DataKeySource for FixedKey {
    fn wrap(&self, _: &WrapContext<'_>) -> Result<NewDataKey, KeyError> {
        Ok(NewDataKey {
            key: DataKey::from_bytes([7; KEY_LEN]),
            wrapped: vec![1; 8],
            key_ref: KeyRef {
                id: "fixed".into(),
                version: 1,
            },
        })
    }

    fn unwrap(&self, _: &WrapContext<'_>, _: &KeyRef, _: &[u8]) -> Result<DataKey, KeyError> {
        Ok(DataKey::from_bytes([7; KEY_LEN]))
    }
}

#[test]
fn a_segment_spliced_from_another_file_with_the_same_key_is_detected() {
    let a = seal_with(&data(3 * SEG as usize), "a", "f", &FixedKey, 1);
    let b = seal_with(&[0xEE; 3 * SEG as usize], "a", "f", &FixedKey, 1);
    assert_eq!(header_len(&a), header_len(&b));
    assert_eq!(
        unseal_with(&a, &FixedKey, &Expect::default(), 1).unwrap(),
        data(3 * SEG as usize)
    );
    let h = header_len(&a);
    let mut spliced = a.clone();
    let at = h + STRIDE;
    spliced[at..at + STRIDE].copy_from_slice(&b[at..at + STRIDE]);
    assert_eq!(
        segment_error(unseal_with(&spliced, &FixedKey, &Expect::default(), 1)),
        SegmentError::Authentication { segment: 1 }
    );
    // b's header with a's body: every segment is bound to a's header.
    let mut mixed = b[..h].to_vec();
    mixed.extend_from_slice(&a[h..]);
    assert_eq!(
        segment_error(unseal_with(&mixed, &FixedKey, &Expect::default(), 1)),
        SegmentError::Authentication { segment: 0 }
    );
}

#[test]
fn wrong_key_is_refused_by_id() {
    let sealed = seal(b"secret weights");
    let other = LocalKey::from_bytes(&[0x11; KEY_LEN], 1).unwrap();
    let err = unseal_with(&sealed, &other, &Expect::default(), 1).unwrap_err();
    assert!(
        matches!(
            &err,
            SealError::Key {
                source: KeyError::WrongKey { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("sealed"), "{err}");
}

#[test]
fn wrong_key_version_is_refused() {
    let pt = b"weights v2".to_vec();
    let sealed = seal_with(&pt, "a", "p", &key(2), 1);
    let err = unseal_with(&sealed, &key(1), &Expect::default(), 1).unwrap_err();
    match &err {
        SealError::Key {
            source: KeyError::WrongVersion { sealed, .. },
            ..
        } => assert_eq!(*sealed, 2),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("--key-version 2"), "{err}");
    assert_eq!(
        unseal_with(&sealed, &key(2), &Expect::default(), 1).unwrap(),
        pt
    );
    // Rewriting the header's version to match the key does not help: the wrapped key is bound
    // to its version.
    let (mut h, bytes) = sigil_seal::read_header(&mut sealed.as_slice(), Path::new("s")).unwrap();
    h.key.version = 1;
    let mut forged = h.encode().unwrap();
    forged.extend_from_slice(&sealed[bytes.len()..]);
    let err = unseal_with(&forged, &key(1), &Expect::default(), 1).unwrap_err();
    assert!(
        matches!(
            err,
            SealError::Key {
                source: KeyError::Unwrap { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn asset_and_path_bindings_are_checked_and_cryptographic() {
    let pt = data(100);
    let sealed = seal_with(&pt, "training-data", "shard/0001.parquet", &key(1), 1);
    let wrong_asset = Expect {
        asset: Some("model-weights"),
        path: None,
    };
    let err = unseal_with(&sealed, &key(1), &wrong_asset, 1).unwrap_err();
    assert!(matches!(err, SealError::Binding { .. }), "{err}");
    assert!(err.to_string().contains("training-data"), "{err}");
    let wrong_path = Expect {
        asset: Some("training-data"),
        path: Some("shard/0002.parquet"),
    };
    assert!(matches!(
        unseal_with(&sealed, &key(1), &wrong_path, 1),
        Err(SealError::Binding { .. })
    ));
    let right = Expect {
        asset: Some("training-data"),
        path: Some("shard/0001.parquet"),
    };
    assert_eq!(unseal_with(&sealed, &key(1), &right, 1).unwrap(), pt);
    // Relabelling the header (asset or path) breaks the wrapped key's binding.
    for relabel in [0, 1] {
        let (mut h, bytes) =
            sigil_seal::read_header(&mut sealed.as_slice(), Path::new("s")).unwrap();
        if relabel == 0 {
            h.asset = "model-weights".into();
        } else {
            h.path = "shard/0002.parquet".into();
        }
        let mut forged = h.encode().unwrap();
        forged.extend_from_slice(&sealed[bytes.len()..]);
        assert!(matches!(
            unseal_with(&forged, &key(1), &Expect::default(), 1),
            Err(SealError::Key {
                source: KeyError::Unwrap { .. },
                ..
            })
        ));
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn random_access_reads_only_the_needed_segments() {
    let s = SEG as u64;
    let pt = data(10 * SEG as usize + 5);
    let sealed = seal(&pt);
    let h = header_len(&sealed) as u64;
    for (off, len, segs_needed) in [
        (0, 1, 1),
        (s - 1, 2, 2),
        (3 * s + 10, 100, 1),
        (2 * s, 3 * s, 3),
        (10 * s, 5, 1),
        (10 * s + 4, 100, 1),
        (9 * s, 1000 * s, 2),
    ] {
        let counter = std::rc::Rc::new(std::cell::Cell::new(0));
        let r = Counting {
            inner: Cursor::new(sealed.clone()),
            read: counter.clone(),
        };
        let mut sr = SealedReader::open(r, &key(1), &Expect::default(), Path::new("s")).unwrap();
        assert_eq!(sr.plaintext_len(), pt.len() as u64);
        assert_eq!(sr.segments(), 11);
        let mut out = Vec::new();
        let n = sr.read_range(off, len, &mut out).unwrap();
        let end = (off + len).min(pt.len() as u64);
        assert_eq!(n, end - off);
        assert_eq!(out, pt[off as usize..end as usize]);
        let budget = h + segs_needed * (s + TAG_LEN as u64);
        assert!(
            counter.get() <= budget,
            "range {off}+{len}: read {} bytes, {segs_needed} segments need {budget}",
            counter.get()
        );
    }
}

#[test]
fn random_access_on_a_truncated_file_fails_at_the_end_only() {
    let pt = data(4 * SEG as usize);
    let sealed = seal(&pt);
    let cut = &sealed[..sealed.len() - STRIDE];
    let mut sr = SealedReader::open(
        Cursor::new(cut.to_vec()),
        &key(1),
        &Expect::default(),
        Path::new("s"),
    )
    .unwrap();
    let mut out = Vec::new();
    sr.read_range(0, 10, &mut out).unwrap();
    assert_eq!(out, pt[..10]);
    assert!(matches!(
        sr.read_range(2 * SEG as u64, 10, &mut Vec::new()),
        Err(SealError::Segment {
            source: SegmentError::Authentication { segment: 2 },
            ..
        })
    ));
}

#[test]
fn hostile_headers_give_clear_errors_without_allocating() {
    let sealed = seal(b"x");
    // Announces a 1 GiB header.
    let mut big = sealed.clone();
    big[10..14].copy_from_slice(&(1u32 << 30).to_be_bytes());
    let err = unseal(&big).unwrap_err();
    assert!(err.to_string().contains("header length"), "{err}");
    assert!(
        err.to_string().starts_with("sealed: "),
        "names the file: {err}"
    );
    // Not a sealed file at all.
    let err = unseal(b"PK\x03\x04 a zip file, not sealed").unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    // A future version.
    let mut v2 = sealed.clone();
    v2[9] = 2;
    assert!(
        unseal(&v2)
            .unwrap_err()
            .to_string()
            .contains("format version")
    );
    // Segment size out of bounds.
    let (mut h, bytes) = sigil_seal::read_header(&mut sealed.as_slice(), Path::new("s")).unwrap();
    h.segment_size = 16;
    assert!(h.encode().is_err());
    let mut raw = bytes.clone();
    raw[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = Header::parse(&raw).unwrap_err();
    assert_eq!(err.field, "segment size");
}

#[test]
fn key_files_must_be_private_and_32_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k");
    std::fs::write(&p, [3u8; 32]).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = sigil_seal::load_key_file(&p, 1).unwrap_err().to_string();
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let k = sigil_seal::load_key_file(&p, 1).unwrap();
    assert!(k.id().starts_with("local:"));
    std::fs::write(&p, [3u8; 33]).unwrap();
    let err = sigil_seal::load_key_file(&p, 1).unwrap_err().to_string();
    assert!(
        err.contains("33 bytes") && err.contains(&p.display().to_string()),
        "{err}"
    );
}

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("a.bin"), data(3 * SEG as usize + 1)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("sub/b.txt"), b"hello").unwrap();
    std::fs::write(root.join("sub/deeper/c"), data(SEG as usize)).unwrap();
}

#[test]
fn directories_roundtrip_and_bind_relative_paths() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_tree(&src);
    let sealed = t.path().join("src.sigil");
    let s = sigil_seal::seal_dir(&src, &sealed, "data", &key(1), &opts(2), &|_| {}).unwrap();
    assert_eq!(s.files, 4);
    assert!(sealed.join("sub/deeper/c.sigil").is_file());
    let (h, _) = sigil_seal::read_header(
        &mut std::fs::File::open(sealed.join("sub/b.txt.sigil")).unwrap(),
        Path::new("x"),
    )
    .unwrap();
    assert_eq!((h.asset.as_str(), h.path.as_str()), ("data", "sub/b.txt"));
    let out = t.path().join("out");
    sigil_seal::unseal_dir(&sealed, &out, &key(1), Some("data"), Some(2), &|_| {}).unwrap();
    for rel in ["a.bin", "empty", "sub/b.txt", "sub/deeper/c"] {
        assert_eq!(
            std::fs::read(out.join(rel)).unwrap(),
            std::fs::read(src.join(rel)).unwrap()
        );
    }
    // Refuses an existing output directory.
    assert!(sigil_seal::unseal_dir(&sealed, &out, &key(1), None, None, &|_| {}).is_err());
    // Wrong asset for the whole tree.
    let err = sigil_seal::unseal_dir(
        &sealed,
        &t.path().join("o2"),
        &key(1),
        Some("x"),
        None,
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(err, SealError::Binding { .. }), "{err}");
    assert!(!t.path().join("o2").exists());
    // Two sealed files swapped inside the tree: the path binding refuses them.
    std::fs::rename(sealed.join("sub/b.txt.sigil"), t.path().join("tmp")).unwrap();
    std::fs::rename(sealed.join("a.bin.sigil"), sealed.join("sub/b.txt.sigil")).unwrap();
    std::fs::rename(t.path().join("tmp"), sealed.join("a.bin.sigil")).unwrap();
    let out3 = t.path().join("o3");
    let err = sigil_seal::unseal_dir(&sealed, &out3, &key(1), None, None, &|_| {}).unwrap_err();
    assert!(matches!(err, SealError::Binding { .. }), "{err}");
    assert!(err.to_string().contains("path"), "{err}");
    assert!(!out3.exists(), "nothing appears when one file fails");
}

#[test]
fn file_output_is_atomic_and_never_clobbered() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("w.bin");
    std::fs::write(&src, data(5 * SEG as usize)).unwrap();
    let dest = t.path().join("w.bin.sigil");
    let ctx = WrapContext {
        asset: "a",
        path: "w.bin",
    };
    sigil_seal::seal_file(&src, &dest, &ctx, &key(1), &opts(2), false, &|_| {}).unwrap();
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let err = sigil_seal::seal_file(&src, &dest, &ctx, &key(1), &opts(2), false, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    // A tampered file unseals to nothing under the destination name.
    let mut bytes = std::fs::read(&dest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let bad = t.path().join("bad.sigil");
    std::fs::write(&bad, bytes).unwrap();
    let out = t.path().join("bad.out");
    assert!(
        sigil_seal::unseal_file(
            &bad,
            &out,
            &key(1),
            &Expect::default(),
            None,
            false,
            &|_| {}
        )
        .is_err()
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let good = t.path().join("good.out");
    sigil_seal::unseal_file(
        &dest,
        &good,
        &key(1),
        &Expect::default(),
        None,
        false,
        &|_| {},
    )
    .unwrap();
    assert_eq!(std::fs::read(good).unwrap(), std::fs::read(src).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_roundtrip(
        pt in proptest::collection::vec(any::<u8>(), 0..9000),
        seg in 1024u32..3000,
        jobs in 1usize..4,
    ) {
        let mut sealed = Vec::new();
        let ctx = WrapContext { asset: "a", path: "p" };
        let o = SealOptions { segment_size: seg, jobs: Some(jobs) };
        sigil_seal::seal(pt.as_slice(), &mut sealed, &ctx, &key(1), &o, &|_| {}, Path::new("i"), Path::new("o")).unwrap();
        let back = unseal_with(&sealed, &key(1), &Expect::default(), jobs).unwrap();
        prop_assert_eq!(&back, &pt);
        // Random access agrees with the stream.
        let mut sr = SealedReader::open(Cursor::new(sealed), &key(1), &Expect::default(), Path::new("s")).unwrap();
        prop_assert_eq!(sr.plaintext_len(), pt.len() as u64);
        let off = pt.len() as u64 / 3;
        let mut out = Vec::new();
        sr.read_range(off, 2500, &mut out).unwrap();
        let end = (off as usize + 2500).min(pt.len());
        prop_assert_eq!(out.as_slice(), &pt[off as usize..end]);
    }

    #[test]
    fn prop_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Header::parse(&bytes);
        let _ = unseal(&bytes);
    }
}
