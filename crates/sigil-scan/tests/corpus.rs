//! The generated corpus (tests/corpus, made by tests/corpus/generate.py): every file's verdict
//! must equal its label, and its format must be the one the generator wrote.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sigil_scan::pickle::{GlobalPolicy, Profile};
use sigil_scan::{Format, ScanConfig, Verdict, scan_file};

#[derive(Deserialize)]
struct Label {
    label: String,
    format: String,
}

#[test]
fn corpus_verdicts_match_labels() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let labels: BTreeMap<String, Label> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("labels.json")).unwrap()).unwrap();
    assert!(labels.len() > 60, "corpus too small: {}", labels.len());
    let cfg = ScanConfig::default();
    let mut wrong = Vec::new();
    for (rel, l) in &labels {
        let r = scan_file(&dir.join(rel), &cfg);
        if r.verdict.as_str() != l.label || r.format.as_str() != l.format {
            wrong.push(format!(
                "{rel}: want {}/{}, got {}/{}: {:#?}",
                l.label, l.format, r.verdict, r.format, r.findings
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} wrong:\n{}",
        wrong.len(),
        labels.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_format_has_benign_malicious_and_malformed_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let labels: BTreeMap<String, Label> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("labels.json")).unwrap()).unwrap();
    for fam in [
        "pickle",
        "pytorch",
        "numpy",
        "joblib",
        "safetensors",
        "gguf",
        "onnx",
        "keras",
        "savedmodel",
        "torchscript",
    ] {
        for kind in ["benign", "malicious", "malformed"] {
            if fam == "safetensors" && kind == "malicious" {
                continue; // safetensors has no code path to abuse; only malformed headers
            }
            assert!(
                labels
                    .keys()
                    .any(|k| k.starts_with(&format!("{kind}/{fam}/"))),
                "no {kind} case for {fam}"
            );
        }
    }
}

/// A state_dict written by `torch.save` passes the allowlist `torch.load(weights_only=True)`
/// applies (the generator confirms it loads there), without a single finding; the same layout
/// with a payload does not.
#[test]
fn torch_save_files_under_the_weights_only_allowlist() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let cfg = ScanConfig {
        globals: GlobalPolicy {
            profile: Profile::WeightsOnly,
            ..GlobalPolicy::default()
        },
        ..ScanConfig::default()
    };
    let r = scan_file(&dir.join("benign/pytorch/torch_save.pt"), &cfg);
    assert_eq!(r.format, Format::PytorchZip);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.verdict, Verdict::Safe);
    let r = scan_file(&dir.join("malicious/pytorch/torch_save_exec.pt"), &cfg);
    assert_eq!(r.format, Format::PytorchZip);
    assert_eq!(r.verdict, Verdict::Dangerous, "{:#?}", r.findings);
}
