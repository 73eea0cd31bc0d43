#![no_main]
// CSRs arrive from unauthenticated callers: DER and PEM parsing must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sigil_ca::ValidCsr::from_der(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = sigil_ca::ValidCsr::from_pem(s);
    }
});
