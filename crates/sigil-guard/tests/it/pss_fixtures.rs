//! Every upstream pod-security-admission fixture: `pass` Pods are allowed and `fail` Pods denied,
//! at their level and version.

use std::path::{Path, PathBuf};

use sigil_guard::pss::{PssVersion, check};
use sigil_policy::PodSecurityLevel;

fn fixtures_dir() -> PathBuf {
    // crates/sigil-guard -> repo root -> ../shared
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/pod-security-admission/test/testdata")
}

#[test]
fn upstream_pod_security_fixtures() {
    let root = fixtures_dir();
    assert!(root.is_dir(), "fixtures missing at {}", root.display());
    let mut checked = 0usize;
    let mut failures = Vec::new();
    for (level_name, level) in [
        ("baseline", PodSecurityLevel::Baseline),
        ("restricted", PodSecurityLevel::Restricted),
    ] {
        for vdir in std::fs::read_dir(root.join(level_name)).unwrap() {
            let vdir = vdir.unwrap().path();
            let vname = vdir.file_name().unwrap().to_str().unwrap().to_owned();
            let version = PssVersion::parse(&vname).unwrap();
            for expect in ["pass", "fail"] {
                let dir = vdir.join(expect);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for f in entries {
                    let f = f.unwrap().path();
                    let objs = sigil_kube::load_paths(std::slice::from_ref(&f)).unwrap();
                    assert_eq!(objs.len(), 1, "{}", f.display());
                    let tpl = sigil_kube::pod_templates(&objs[0]).unwrap();
                    let v = check(&tpl[0].metadata, &tpl[0].spec, level, version);
                    checked += 1;
                    let ok = if expect == "pass" {
                        v.is_empty()
                    } else {
                        !v.is_empty()
                    };
                    if !ok {
                        failures.push(format!(
                            "{level_name}/{vname}/{expect}/{}: {:?}",
                            f.file_name().unwrap().to_str().unwrap(),
                            v.iter()
                                .map(|v| (v.rule.id, &v.message))
                                .collect::<Vec<_>>()
                        ));
                    }
                }
            }
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
