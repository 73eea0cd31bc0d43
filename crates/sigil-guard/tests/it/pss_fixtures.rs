//! Every upstream pod-security-admission fixture: `pass` Pods are allowed and `fail` Pods denied,
//! at their level and version.

use std::path::{Path, PathBuf};

use sigil_guard::pss::{PssVersion, check};
use sigil_policy::PodSecurityLevel;

/// The packed fixtures (see `tests/fixtures/pss/README.md`): each distinct upstream file once
/// under `blobs/`, and `index.tsv` naming every upstream file by level, version and expectation.
fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pss")
}

#[test]
fn upstream_pod_security_fixtures() {
    let root = fixtures_dir();
    let index = std::fs::read_to_string(root.join("index.tsv"))
        .unwrap_or_else(|e| panic!("{}: {e}", root.join("index.tsv").display()));
    let mut checked = 0usize;
    let mut failures = Vec::new();
    for line in index.lines() {
        let [level_name, vname, expect, name, sha] = line.split('\t').collect::<Vec<_>>()[..]
        else {
            panic!("index.tsv: bad row {line:?}");
        };
        let level = match level_name {
            "baseline" => PodSecurityLevel::Baseline,
            "restricted" => PodSecurityLevel::Restricted,
            other => panic!("index.tsv: unknown level {other:?}"),
        };
        let version = PssVersion::parse(vname).unwrap();
        let f = root.join("blobs").join(format!("{sha}.yaml"));
        let objs = sigil_kube::load_paths(std::slice::from_ref(&f)).unwrap();
        assert_eq!(objs.len(), 1, "{}", f.display());
        let tpl = sigil_kube::pod_templates(&objs[0]).unwrap();
        let v = check(&tpl[0].metadata, &tpl[0].spec, level, version);
        checked += 1;
        let ok = match expect {
            "pass" => v.is_empty(),
            "fail" => !v.is_empty(),
            other => panic!("index.tsv: unknown expectation {other:?}"),
        };
        if !ok {
            failures.push(format!(
                "{level_name}/{vname}/{expect}/{name}: {:?}",
                v.iter()
                    .map(|v| (v.rule.id, &v.message))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(checked > 4000, "only {checked} fixtures found");
    assert!(
        failures.is_empty(),
        "{} of {checked} fixtures disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
