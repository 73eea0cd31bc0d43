//! Decompression bombs are judged from the sizes their containers declare, before anything is
//! inflated (zip central directory, gzip ISIZE, 7z block sizes); inflation stays bounded when
//! the declared sizes lie (one byte past a zip member's declared size, and a per-file budget of
//! `bomb_ratio` x the file's size).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Cursor, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sevenz_rust2::{ArchiveEntry, ArchiveWriter};
use sigil_scan::{FileReport, ScanConfig, Verdict, scan_bytes};

const MIB: usize = 1 << 20;

/// Raw deflate of `n` zero bytes.
fn deflate_zeros(n: usize) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; MIB];
    for _ in 0..n / MIB {
        e.write_all(&chunk).unwrap();
    }
    e.write_all(&chunk[..n % MIB]).unwrap();
    e.finish().unwrap()
}

/// 200 MiB of zeros, deflated once for every test (about 200 KB).
fn bomb_200mib() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| deflate_zeros(200 * MIB))
}

fn crc_zeros(n: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let chunk = vec![0u8; MIB];
    for _ in 0..n / MIB {
        h.update(&chunk);
    }
    h.update(&chunk[..n % MIB]);
    h.finalize()
}

/// A zip whose members are `(name, deflated bytes, declared size, crc)`.
fn zip(members: &[(&str, &[u8], u32, u32)]) -> Vec<u8> {
    let mut z = Vec::new();
    let mut central = Vec::new();
    for (name, data, size, crc) in members {
        let off = u32::try_from(z.len()).unwrap();
        let csize = u32::try_from(data.len()).unwrap();
        let nlen = u16::try_from(name.len()).unwrap();
        z.extend_from_slice(b"PK\x03\x04");
        z.extend_from_slice(&[20, 0, 0, 0, 8, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&crc.to_le_bytes());
        z.extend_from_slice(&csize.to_le_bytes());
        z.extend_from_slice(&size.to_le_bytes());
        z.extend_from_slice(&nlen.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(name.as_bytes());
        z.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 8, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&csize.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&nlen.to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_off = u32::try_from(z.len()).unwrap();
    let cd_size = u32::try_from(central.len()).unwrap();
    z.extend_from_slice(&central);
    let n = u16::try_from(members.len()).unwrap();
    z.extend_from_slice(b"PK\x05\x06");
    z.extend_from_slice(&[0, 0, 0, 0]);
    z.extend_from_slice(&n.to_le_bytes());
    z.extend_from_slice(&n.to_le_bytes());
    z.extend_from_slice(&cd_size.to_le_bytes());
    z.extend_from_slice(&cd_off.to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z
}

/// A gzip member around a raw deflate stream, with the given ISIZE.
fn gzip(deflated: &[u8], crc: u32, isize: u32) -> Vec<u8> {
    let mut g = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    g.extend_from_slice(deflated);
    g.extend_from_slice(&crc.to_le_bytes());
    g.extend_from_slice(&isize.to_le_bytes());
    g
}

fn timed_scan(name: &str, bytes: Vec<u8>, cfg: &ScanConfig) -> (FileReport, Duration) {
    let t = Instant::now();
    let r = scan_bytes(Path::new(name), bytes, cfg);
    (r, t.elapsed())
}

fn bomb_findings(r: &FileReport) -> Vec<&str> {
    r.findings
        .iter()
        .filter(|f| f.subject == "decompression bomb")
        .map(|f| f.reason.as_str())
        .collect()
}

#[test]
fn a_zip_bomb_is_refused_from_its_central_directory_without_inflating() {
    let z = zip(&[(
        "model/data.pkl",
        bomb_200mib(),
        200 * MIB as u32,
        crc_zeros(200 * MIB),
    )]);
    let (r, t) = timed_scan("bomb.zip", z, &ScanConfig::default());
    assert_eq!(r.verdict, Verdict::Malformed, "{:#?}", r.findings);
    let why = bomb_findings(&r);
    assert_eq!(why.len(), 1, "{:#?}", r.findings);
    assert!(why[0].contains("not inflated"), "{}", why[0]);
    // Inflating 200 MiB (and spilling it to disk) takes far longer than reading a directory.
    assert!(t < Duration::from_millis(500), "took {t:?}");
}

#[test]
fn a_gzip_bomb_is_refused_from_its_isize() {
    let g = gzip(bomb_200mib(), crc_zeros(200 * MIB), 200 * MIB as u32);
    let (r, t) = timed_scan("model.pkl.gz", g, &ScanConfig::default());
    assert_eq!(bomb_findings(&r).len(), 1, "{:#?}", r.findings);
    assert!(t < Duration::from_millis(500), "took {t:?}");
}

#[test]
fn a_gzip_whose_isize_lies_inflates_no_further_than_the_files_budget() {
    // ISIZE says 1000 bytes: admitted, and inflation stops at the budget (64 MiB for a file of
    // 200 KB), not at 200 MiB.
    let g = gzip(bomb_200mib(), crc_zeros(200 * MIB), 1000);
    let r = scan_bytes(Path::new("m.pkl.gz"), g, &ScanConfig::default());
    assert_eq!(r.verdict, Verdict::Malformed, "{:#?}", r.findings);
    assert!(
        r.findings
            .iter()
            .any(|f| f.reason.contains("decompression budget")),
        "{:#?}",
        r.findings
    );
}

#[test]
fn a_zip_member_that_understates_its_size_stops_one_byte_past_it() {
    let data = deflate_zeros(8 * MIB);
    let z = zip(&[("w.bin", &data, 1000, crc_zeros(1000))]);
    let r = scan_bytes(Path::new("m.zip"), z, &ScanConfig::default());
    assert!(
        r.findings.iter().any(|f| f
            .reason
            .contains("inflates past the 1000 bytes its header declares")),
        "{:#?}",
        r.findings
    );
}

#[test]
fn many_small_members_share_one_budget() {
    // 200 members of 1 MiB of zeros each (about 1 KB deflated): none is a bomb alone at these
    // settings, together they declare 200 MiB from about 200 KB.
    let cfg = ScanConfig {
        bomb_min: 4 * MIB as u64,
        ..ScanConfig::default()
    };
    let one = deflate_zeros(MIB);
    let crc = crc_zeros(MIB);
    let names: Vec<String> = (0..200).map(|i| format!("m{i}.bin")).collect();
    let members: Vec<(&str, &[u8], u32, u32)> = names
        .iter()
        .map(|n| (n.as_str(), &one[..], MIB as u32, crc))
        .collect();
    let z = zip(&members);
    let budget = cfg.inflate_budget(z.len() as u64);
    let r = scan_bytes(Path::new("many.zip"), z, &cfg);
    let refused = bomb_findings(&r).len() as u64;
    // Everything past the budget is refused before inflating.
    assert!(refused > 0, "{:#?}", r.findings);
    assert!((200 - refused) * MIB as u64 <= budget, "{refused} refused");
}

#[test]
fn a_7z_bomb_is_refused_from_its_block_sizes() {
    let cfg = ScanConfig {
        bomb_min: MIB as u64,
        ..ScanConfig::default()
    };
    let mut w = ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
    w.push_archive_entry(
        ArchiveEntry::new_file("zeros.bin"),
        Some(Cursor::new(vec![0u8; 8 * MIB])),
    )
    .unwrap();
    let a = w.finish().unwrap().into_inner();
    assert!(a.len() < 64 * 1024, "{} bytes", a.len());
    let r = scan_bytes(Path::new("z.7z"), a, &cfg);
    assert_eq!(bomb_findings(&r).len(), 1, "{:#?}", r.findings);
}

#[test]
fn ordinary_compressed_members_are_still_inflated_and_scanned() {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let evil = b"cos\nsystem\n(S'echo sigil'\ntR.";
    e.write_all(evil).unwrap();
    let data = e.finish().unwrap();
    let z = zip(&[(
        "payload.pkl",
        &data,
        evil.len() as u32,
        crc32fast::hash(evil),
    )]);
    let r = scan_bytes(Path::new("m.zip"), z, &ScanConfig::default());
    assert_eq!(r.verdict, Verdict::Dangerous, "{:#?}", r.findings);
    assert!(bomb_findings(&r).is_empty());
}

#[test]
fn a_payload_at_the_start_of_a_refused_stream_is_still_found() {
    // A small gzip that claims (ISIZE) to inflate to 200 MiB, e.g. a truncated or doctored one:
    // refused as a bomb, and its first MiB still judged.
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let evil = b"cos\nsystem\n(S'echo sigil'\ntR.";
    e.write_all(evil).unwrap();
    let g = gzip(
        &e.finish().unwrap(),
        crc32fast::hash(evil),
        200 * MIB as u32,
    );
    let r = scan_bytes(Path::new("m.pkl.gz"), g, &ScanConfig::default());
    assert_eq!(bomb_findings(&r).len(), 1, "{:#?}", r.findings);
    assert_eq!(r.verdict, Verdict::Dangerous, "{:#?}", r.findings);
}
