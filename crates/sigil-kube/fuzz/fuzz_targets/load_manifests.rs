#![no_main]
//! Arbitrary bytes into the manifest loader and pod-template extraction: must never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(objs) = sigil_kube::load_bytes(data.to_vec(), std::path::Path::new("fuzz")) {
        for o in &objs {
            let _ = sigil_kube::pod_templates(o);
        }
    }
});
