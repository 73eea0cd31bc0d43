//! The seal parser on untrusted bytes: the header (alone and behind a valid preamble, so the
//! fuzzer reaches the variable fields), the body layout, the streaming opener and random
//! access. A fixed data key gets inputs past the key unwrap, into the segment code.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sigil_seal::format::{FORMAT_VERSION, MAGIC};
use sigil_seal::{DataKey, DataKeySource, Expect, KeyError, KeyRef, NewDataKey, WrapContext};

struct Fixed;

impl DataKeySource for Fixed {
    fn wrap(&self, _: &WrapContext<'_>) -> Result<NewDataKey, KeyError> {
        Err(KeyError::Refused("fuzzing opens only".into()))
    }
    fn unwrap(&self, _: &WrapContext<'_>, _: &KeyRef, _: &[u8]) -> Result<DataKey, KeyError> {
        Ok(DataKey::from_bytes([0; 32]))
    }
}

fn open_all(bytes: &[u8]) {
    let _ = sigil_seal::Header::parse(bytes);
    let _ = sigil_seal::unseal(
        bytes,
        std::io::sink(),
        &Fixed,
        &Expect::default(),
        Some(2),
        &|_| {},
        Path::new("fuzz"),
        Path::new("sink"),
    );
    if let Ok(mut r) = sigil_seal::SealedReader::open(
        Cursor::new(bytes),
        &Fixed,
        &Expect::default(),
        Path::new("fuzz"),
    ) {
        let _ = r.read_range(0, u64::MAX, &mut std::io::sink());
        let mid = r.plaintext_len() / 2;
        let _ = r.read_range(mid, 1 << 20, &mut std::io::sink());
    }
}

fuzz_target!(|data: &[u8]| {
    open_all(data);
    // Behind a valid magic and version, with the input's first 4 bytes as the header length.
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    v.extend_from_slice(data);
    open_all(&v);
});
