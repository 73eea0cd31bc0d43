//! Untrusted bytes from the network into the TLS 1.3 record layer: record headers, record bodies
//! (authentication must fail cleanly, never panic) and post-handshake messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls::ConnectionTrafficSecrets;
use rustls::crypto::cipher::{AeadKey, Iv};
use sigil_tunnel::record::{RecordKey, body_len, parse_post_handshake};

fuzz_target!(|data: &[u8]| {
    let Some((header, body)) = data.split_first_chunk::<5>() else {
        return;
    };
    let _ = body_len(*header);
    let _ = parse_post_handshake(body);
    let secrets = ConnectionTrafficSecrets::Aes256Gcm {
        key: AeadKey::from([7u8; 32]),
        iv: Iv::from([1u8; 12]),
    };
    if let Ok(mut key) = RecordKey::new(0, &secrets) {
        let mut body = body.to_vec();
        let _ = key.open(*header, &mut body);
    }
});
