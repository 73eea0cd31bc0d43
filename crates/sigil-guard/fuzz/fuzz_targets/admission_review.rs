#![no_main]
//! Arbitrary bytes as an AdmissionReview body: the webhook must answer (deny) and never panic.

use libfuzzer_sys::fuzz_target;
use sigil_guard::Severity;
use sigil_guard::audit::{Auditor, Settings};
use sigil_guard::webhook::{WebhookState, review};

fuzz_target!(|data: &[u8]| {
    let state = WebhookState::new(Auditor::new(Settings::default(), None), Severity::Medium, vec![]);
    let _ = review(&state, data);
});
