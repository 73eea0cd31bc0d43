#![no_main]
// JWT-SVIDs arrive from peers (ValidateJWTSVID, object stores).
use std::collections::BTreeMap;
use std::time::SystemTime;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = sigil_identity::jwt::decode_unverified(s);
        let _ = sigil_identity::verify_jwt_svid(s, &BTreeMap::new(), "aud", SystemTime::now());
    }
});
