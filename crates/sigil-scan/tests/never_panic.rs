//! Arbitrary bytes never panic any parser (the fuzz targets in fuzz/ run the same code longer).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use proptest::prelude::*;
use sigil_scan::{ScanConfig, scan_bytes};

const MAGICS: &[&[u8]] = &[
    b"",
    b"PK\x03\x04",
    b"GGUF\x03\x00\x00\x00",
    b"\x93NUMPY\x01\x00",
    b"\x80\x02",
    b"\x80\x04\x95",
    b"\x89HDF\r\n\x1a\n",
    b"\x1f\x8b\x08",
    b"BZh9",
    b"\xfd7zXZ\x00",
    b"\x08\x07\x12",
    b"\x08\x01\x12",
    b"\x10\x00\x00\x00\x00\x00\x00\x00{",
    b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19",
];

fn cfg() -> ScanConfig {
    ScanConfig {
        max_decompressed: 16 << 20,
        ..ScanConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn scan_arbitrary_bytes(m in 0..MAGICS.len(), tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut v = MAGICS[m].to_vec();
        v.extend_from_slice(&tail);
        let _ = scan_bytes(Path::new("x"), v, &cfg());
    }

    #[test]
    fn safetensors_header_arbitrary(h in proptest::collection::vec(any::<u8>(), 0..512), n in 0u64..4096) {
        let _ = sigil_scan::formats::safetensors::validate_header(&h, n);
    }

    #[test]
    fn safetensors_json_soup(s in "\\{(\"[a-z_]{0,4}\":\\{\"dtype\":\"(F32|U8|F4|X)\",\"shape\":\\[[0-9,]{0,6}\\],\"data_offsets\":\\[[0-9,]{0,8}\\]\\},?){0,4}\\}", n in 0u64..64) {
        let _ = sigil_scan::formats::safetensors::validate_header(s.as_bytes(), n);
    }

    #[test]
    fn gguf_arbitrary(tail in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut v = b"GGUF\x03\x00\x00\x00".to_vec();
        v.extend_from_slice(&tail);
        let _ = sigil_scan::formats::gguf::check(&v[..], v.len() as u64);
    }

    /// Mutating real corpus files (one byte flipped, or truncated) never panics.
    #[test]
    fn corpus_mutations(i in 0usize..1000, pos in any::<usize>(), b in any::<u8>(), cut in any::<bool>()) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
        let labels: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("labels.json")).unwrap()).unwrap();
        let keys: Vec<&String> = labels.as_object().unwrap().keys().collect();
        let mut v = std::fs::read(dir.join(keys[i % keys.len()])).unwrap();
        if !v.is_empty() {
            let p = pos % v.len();
            if cut { v.truncate(p) } else { v[p] = b }
        }
        let _ = scan_bytes(Path::new("x"), v, &cfg());
    }
}
