//! Detection and every format scanner, recursively, on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = sigil_scan::ScanConfig {
        max_decompressed: 64 << 20,
        ..Default::default()
    };
    let _ = sigil_scan::scan_bytes(std::path::Path::new("fuzz"), data.to_vec(), &cfg);
});
