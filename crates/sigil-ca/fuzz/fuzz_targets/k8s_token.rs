#![no_main]
// Service-account tokens arrive from unauthenticated callers.
use std::sync::OnceLock;
use std::time::SystemTime;

use sigil_ca::fake_cluster::FakeCluster;
use sigil_ca::k8s::{validate, TrustedCluster};

fn clusters() -> &'static Vec<TrustedCluster> {
    static C: OnceLock<Vec<TrustedCluster>> = OnceLock::new();
    C.get_or_init(|| {
        let fake = FakeCluster::new("https://kubernetes.fuzz").expect("key");
        vec![TrustedCluster {
            trust: sigil_policy::ClusterTrust {
                cluster: "fuzz".into(),
                issuer: "https://kubernetes.fuzz".into(),
                audiences: vec!["sigil".into()],
                jwks_file: "jwks.json".into(),
            },
            keys: fake.jwks(),
        }]
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = validate(s, clusters(), SystemTime::now());
    }
});
