//! The pickle opcode walker on arbitrary bytes, with joblib payload handling on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_scan::pickle::{GlobalPolicy, WalkOptions, walk};

fuzz_target!(|data: &[u8]| {
    let policy = GlobalPolicy::default();
    let r = walk(
        data,
        &WalkOptions {
            policy: &policy,
            inner: "",
            max_pickles: None,
            joblib: true,
        },
    );
    assert!(r.consumed <= data.len() as u64);
});
