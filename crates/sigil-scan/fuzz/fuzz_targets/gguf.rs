//! The GGUF metadata and tensor-info parser; inputs get the magic so the fuzzer goes deep.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(data);
    let _ = sigil_scan::formats::gguf::check(&v[..], v.len() as u64);
    let _ = sigil_scan::formats::gguf::check(data, data.len() as u64);
});
