#![no_main]
// Peer certificates arrive in every mTLS handshake.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sigil_identity::inspect_leaf(data);
});
