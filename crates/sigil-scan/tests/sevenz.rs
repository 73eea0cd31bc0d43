//! 7z archives built with sevenz-rust2's writer (LZMA2, one block per member or one solid
//! block): members are found and judged, including when the LZMA2 path decodes them, and
//! corruption (CRC, truncation) is reported without hiding what was readable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Cursor;
use std::path::Path;

use sevenz_rust2::{ArchiveEntry, ArchiveWriter};
use sigil_scan::{ScanConfig, Verdict, scan_bytes};

/// `cposix\nsystem\n(S'true'\ntR.`: os.system in protocol 0.
const EVIL: &[u8] = b"cposix\nsystem\n(S'true'\ntR.";
/// `{}` in protocol 2.
const BENIGN: &[u8] = b"\x80\x02}q\x00.";

fn members() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("model/config.json", b"{\"hidden\": 4096}".to_vec()),
        ("model/weights.pkl", BENIGN.to_vec()),
        (
            "model/large.bin",
            (0..200_000u32).flat_map(u32::to_le_bytes).collect(),
        ),
        ("model/payload.pkl", EVIL.to_vec()),
    ]
}

fn solid() -> Vec<u8> {
    let mut w = ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
    let (entries, readers): (Vec<_>, Vec<_>) = members()
        .into_iter()
        .map(|(n, d)| (ArchiveEntry::new_file(n), Cursor::new(d).into()))
        .unzip();
    w.push_archive_entries(entries, readers).unwrap();
    w.finish().unwrap().into_inner()
}

fn per_member() -> Vec<u8> {
    let mut w = ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
    for (n, d) in members() {
        w.push_archive_entry(ArchiveEntry::new_file(n), Some(Cursor::new(d)))
            .unwrap();
    }
    w.push_archive_entry::<Cursor<Vec<u8>>>(ArchiveEntry::new_directory("model/empty-dir"), None)
        .unwrap();
    w.finish().unwrap().into_inner()
}

fn scan(bytes: Vec<u8>) -> sigil_scan::FileReport {
    scan_bytes(Path::new("t.7z"), bytes, &ScanConfig::default())
}

#[test]
fn members_are_scanned_in_solid_and_per_member_archives() {
    for (what, bytes) in [("solid", solid()), ("per member", per_member())] {
        let r = scan(bytes);
        assert_eq!(r.verdict, Verdict::Dangerous, "{what}: {r:#?}");
        let bad: Vec<&str> = r
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Dangerous)
            .map(|f| f.inner.as_str())
            .collect();
        assert_eq!(bad.len(), 1, "{what}: {bad:?}");
        assert!(bad[0].ends_with("model/payload.pkl"), "{what}: {bad:?}");
        assert!(
            !r.findings.iter().any(|f| f.verdict == Verdict::Malformed),
            "{what}: {r:#?}"
        );
    }
}

#[test]
fn benign_archive_is_safe() {
    let mut w = ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
    w.push_archive_entry(
        ArchiveEntry::new_file("w.pkl"),
        Some(Cursor::new(BENIGN.to_vec())),
    )
    .unwrap();
    let r = scan(w.finish().unwrap().into_inner());
    assert_eq!(r.verdict, Verdict::Safe, "{r:#?}");
}

/// Flips one byte inside the packed data (right after the 32-byte signature header).
fn corrupt(mut bytes: Vec<u8>, at: usize) -> Vec<u8> {
    bytes[32 + at] ^= 0x55;
    bytes
}

#[test]
fn corruption_is_malformed_and_never_a_panic() {
    let base = per_member();
    let mut saw_malformed = 0;
    // Every byte of the first packed streams: decoding errors, CRC mismatches, or (rarely) a
    // change that still decodes to the same bytes; never a panic, never a silent pass of the
    // payload that is still intact.
    for at in 0..120 {
        let r = scan(corrupt(base.clone(), at));
        if r.findings.iter().any(|f| f.verdict == Verdict::Malformed) {
            saw_malformed += 1;
        }
        assert!(r.verdict >= Verdict::Suspicious, "byte {at}: {r:#?}");
    }
    assert!(saw_malformed > 60, "{saw_malformed}");
    // Truncated anywhere: malformed (or unreadable), never a panic.
    for cut in (0..base.len()).step_by(7) {
        let r = scan(base[..cut].to_vec());
        assert!(
            r.verdict >= Verdict::Suspicious || cut < 6,
            "cut {cut}: {r:#?}"
        );
    }
}
