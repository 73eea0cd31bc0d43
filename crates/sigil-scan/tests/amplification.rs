//! Small inputs must not turn into huge scans or reports: archives whose members overlap or
//! re-open the same bytes, and files padded with thousands of findings to bury a dangerous one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use sigil_scan::report::MAX_LISTED_FINDINGS;
use sigil_scan::{FileReport, Finding, ScanConfig, Verdict, scan_bytes, scan_file};

/// A zip with one stored member and `n` central-directory entries, each with its own name, that
/// all point at it.
fn overlapping_zip(member: &[u8], n: usize) -> Vec<u8> {
    let crc = crc32fast::hash(member);
    let len = u32::try_from(member.len()).unwrap();
    let name = b"m.pkl";
    let mut z = Vec::new();
    z.extend_from_slice(b"PK\x03\x04");
    z.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    z.extend_from_slice(&crc.to_le_bytes());
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z.extend_from_slice(name);
    z.extend_from_slice(member);
    let cd_start = u32::try_from(z.len()).unwrap();
    for i in 0..n {
        let name = format!("m{i}.pkl");
        z.extend_from_slice(b"PK\x01\x02");
        z.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&crc.to_le_bytes());
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&[0; 12]);
        z.extend_from_slice(&0u32.to_le_bytes()); // every entry: the local header at 0
        z.extend_from_slice(name.as_bytes());
    }
    let cd_size = u32::try_from(z.len()).unwrap() - cd_start;
    let n16 = u16::try_from(n).unwrap();
    z.extend_from_slice(b"PK\x05\x06");
    z.extend_from_slice(&[0, 0, 0, 0]);
    z.extend_from_slice(&n16.to_le_bytes());
    z.extend_from_slice(&n16.to_le_bytes());
    z.extend_from_slice(&cd_size.to_le_bytes());
    z.extend_from_slice(&cd_start.to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z
}

const SYSTEM_PICKLE: &[u8] = b"cos\nsystem\n(S'echo sigil'\ntR.";

/// `n` distinct unknown globals (a suspicious finding each), then os.system.
fn padded_pickle(n: usize) -> Vec<u8> {
    let mut p = Vec::new();
    for i in 0..n {
        p.extend_from_slice(format!("cpkg{i}\nf\n0").as_bytes());
    }
    p.extend_from_slice(SYSTEM_PICKLE);
    p
}

/// The report's last entry, the note that counts the findings not listed, and that count.
fn unlisted_note(r: &FileReport) -> (&Finding, usize) {
    let note = r.findings.last().unwrap();
    assert_eq!(note.subject, "findings");
    assert!(
        note.reason.contains("further findings not listed"),
        "{}",
        note.reason
    );
    let unlisted: usize = note.reason.split(' ').next().unwrap().parse().unwrap();
    (note, unlisted)
}

#[test]
fn a_member_reached_through_many_entries_is_opened_once_and_still_judged() {
    let z = overlapping_zip(SYSTEM_PICKLE, 5_000);
    let r = scan_bytes(Path::new("overlap.zip"), z, &ScanConfig::default());
    assert_eq!(r.verdict, Verdict::Dangerous, "{:?}", &r.findings[..3]);
    let system = r
        .findings
        .iter()
        .filter(|f| f.subject.contains("os.system") || f.subject.contains("os system"))
        .count();
    assert_eq!(system, 1, "the shared bytes are judged once");
    // Each entry's name differs from the local header's: reported (capped), never re-scanned.
    assert!(r.findings.iter().any(|f| f.verdict == Verdict::Malformed));
    assert!(r.findings.len() <= MAX_LISTED_FINDINGS + 1);
}

#[test]
fn self_nesting_archive_found_by_fuzzing_stays_small() {
    // 4.3 KB, three members re-opening the archive's own bytes: before windows were remembered
    // it produced 3^9 nested scans and 72,171 findings (a 240 KB report per 4 KB of input).
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/overlap_fanout.zip");
    let r = scan_file(&p, &ScanConfig::default());
    assert_eq!(r.verdict, Verdict::Malformed);
    assert!(r.findings.len() < 50, "{} findings", r.findings.len());
}

#[test]
fn padding_with_findings_cannot_bury_a_dangerous_one() {
    let r = scan_bytes(
        Path::new("padded.pkl"),
        padded_pickle(6_000),
        &ScanConfig::default(),
    );
    assert_eq!(r.verdict, Verdict::Dangerous);
    assert_eq!(
        r.findings[0].verdict,
        Verdict::Dangerous,
        "most severe first"
    );
    assert_eq!(r.findings.len(), MAX_LISTED_FINDINGS + 1);
    let (_, unlisted) = unlisted_note(&r);
    assert!(unlisted >= 6_000 - MAX_LISTED_FINDINGS, "{unlisted}");
}

#[test]
fn findings_beyond_the_cap_are_counted_and_the_verdict_kept() {
    // More suspicious findings than a file keeps.
    let r = scan_bytes(
        Path::new("many.pkl"),
        padded_pickle(12_000),
        &ScanConfig::default(),
    );
    assert_eq!(r.verdict, Verdict::Dangerous);
    let (note, unlisted) = unlisted_note(&r);
    // Every one of the 12,001 findings is either listed or counted.
    assert_eq!(r.findings.len() - 1 + unlisted, 12_001, "{}", note.reason);
}
