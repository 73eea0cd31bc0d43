//! Gatekeeper ConstraintTemplates (Rego v0 with libs, Rego v1 via `code`) against allowed and
//! disallowed examples.

use std::path::{Path, PathBuf};

use sigil_guard::Severity;
use sigil_guard::rego::RegoPolicies;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/gatekeeper")
        .join(name)
}

fn policies() -> RegoPolicies {
    let objs =
        sigil_kube::load_paths(&[data("requiredlabels.yaml"), data("allowedrepos.yaml")]).unwrap();
    RegoPolicies::from_objects(&objs).unwrap()
}

#[test]
fn templates_judge_examples() {
    let rego = policies();
    assert_eq!(rego.counts(), (2, 2));
    let examples = sigil_kube::load_paths(&[data("examples.yaml")]).unwrap();
    let mut verdicts = Vec::new();
    for o in &examples {
        let f = rego.evaluate(o).unwrap();
        verdicts.push((
            o.name.clone(),
            f.iter()
                .map(|f| (f.rule.clone(), f.severity))
                .collect::<Vec<_>>(),
        ));
        if o.name == "disallowed" {
            assert!(
                f[0].message.contains("you must provide labels"),
                "{}",
                f[0].message
            );
            assert!(f[0].message.contains("owner"), "{}", f[0].message);
        }
        if o.name == "disallowed-pod" {
            assert!(
                f[0].message
                    .contains("invalid image repo <docker.io/library/nginx:1.27>"),
                "{}",
                f[0].message
            );
        }
    }
    assert_eq!(
        verdicts,
        vec![
            ("allowed".to_owned(), vec![]),
            (
                "disallowed".to_owned(),
                vec![("REGO-K8sRequiredLabels".to_owned(), Severity::High)]
            ),
            ("excluded".to_owned(), vec![]),
            ("allowed-pod".to_owned(), vec![]),
            // enforcementAction: warn -> a low finding (a warning at admission).
            (
                "disallowed-pod".to_owned(),
                vec![("REGO-K8sAllowedRepos".to_owned(), Severity::Low)]
            ),
        ]
    );
}

#[test]
fn broken_templates_and_orphan_constraints_are_errors() {
    let bad = sigil_kube::load_str(
        "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata: {name: broken}\nspec:\n  crd: {spec: {names: {kind: Broken}}}\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n      rego: |\n        package broken\n        violation[{\"msg\": msg}] {\n          msg := \n        }\n",
        Path::new("broken.yaml"),
    )
    .unwrap();
    let e = RegoPolicies::from_objects(&bad).unwrap_err().to_string();
    assert!(
        e.contains("broken.yaml") && e.contains("does not compile"),
        "{e}"
    );
    let orphan = sigil_kube::load_str(
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: Nope\nmetadata: {name: n}\n",
        Path::new("c.yaml"),
    )
    .unwrap();
    let e = RegoPolicies::from_objects(&orphan).unwrap_err().to_string();
    assert!(e.contains("no ConstraintTemplate defines kind Nope"), "{e}");
}

#[test]
fn runaway_policies_hit_the_time_limit() {
    let objs = sigil_kube::load_str(
        r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: slow}
spec:
  crd: {spec: {names: {kind: Slow}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      code:
        - engine: Rego
          source:
            version: "v1"
            rego: |
              package slow
              violation contains {"msg": "never"} if {
                r := numbers.range(1, 4000)
                count([1 | some i in r; some j in r; i + j < 0]) > 0
              }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: Slow
metadata: {name: s}
"#,
        Path::new("slow.yaml"),
    )
    .unwrap();
    let rego = RegoPolicies::from_objects(&objs).unwrap();
    let pod = sigil_kube::load_str(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n",
        Path::new("p.yaml"),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let e = rego.evaluate(&pod[0]).unwrap_err().to_string();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert!(e.contains("constraint Slow/s"), "{e}");
}
