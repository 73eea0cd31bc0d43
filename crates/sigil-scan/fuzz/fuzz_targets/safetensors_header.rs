//! safetensors header validation: the first 8 bytes pick the data length, the rest is the header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (len, header) = data.split_at(data.len().min(8));
    let mut b = [0u8; 8];
    b[..len.len()].copy_from_slice(len);
    let _ = sigil_scan::formats::safetensors::validate_header(
        header,
        u64::from_le_bytes(b) % (1 << 40),
    );
});
