#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sigil_agent::attest::kubelet::PodIndex::parse(data);
});
