#![no_main]
// HPACK header blocks from untrusted Workload API clients, through the `:authority` repair.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut dec = loona_hpack::Decoder::new();
    let mut enc = loona_hpack::Encoder::new();
    let _ = sigil_agent::authority_fix::rewrite_block(&mut dec, &mut enc, data);
});
