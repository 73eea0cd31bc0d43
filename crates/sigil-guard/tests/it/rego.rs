//! Gatekeeper ConstraintTemplates (Rego v0 with libs, Rego v1 via `code`) against allowed and
//! disallowed examples.

use std::path::{Path, PathBuf};

use sigil_guard::Severity;
use sigil_guard::rego::{EvalLimits, NamespaceLabels, RegoPolicies, namespace_labels};

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
    let namespaces = namespace_labels(&examples);
    let mut verdicts = Vec::new();
    for o in &examples {
        let f = rego.evaluate(o, &namespaces).unwrap();
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

const POD: &str =
    "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ml}\nspec: {containers: []}\n";

/// One v1 template of kind `kind` whose violation body is `body`, and one constraint of it.
fn template(kind: &str, body: &str, constraint_spec: &str) -> Vec<sigil_kube::Object> {
    let lower = kind.to_lowercase();
    let body: String = body
        .lines()
        .map(|l| format!("                {l}\n"))
        .collect();
    let text = format!(
        r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {{name: {lower}}}
spec:
  crd: {{spec: {{names: {{kind: {kind}}}}}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      code:
        - engine: Rego
          source:
            version: "v1"
            rego: |
              package {lower}
              violation contains {{"msg": "hit"}} if {{
{body}              }}
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: {kind}
metadata: {{name: c}}
spec: {constraint_spec}
"#
    );
    sigil_kube::load_str(&text, Path::new("t.yaml")).unwrap()
}

#[test]
fn runaway_policies_hit_the_time_limit() {
    let rego = RegoPolicies::from_objects(&template(
        "Slow",
        "r := numbers.range(1, 4000)\ncount([1 | some i in r; some j in r; i + j < 0]) > 0",
        "{}",
    ))
    .unwrap();
    let pod = sigil_kube::load_str(POD, Path::new("p.yaml")).unwrap();
    let start = std::time::Instant::now();
    let e = rego
        .evaluate(&pod[0], &NamespaceLabels::new())
        .unwrap_err()
        .to_string();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert!(e.contains("constraint Slow/c"), "{e}");
    assert!(e.contains("ran longer than 250 ms"), "{e}");
}

#[test]
fn runaway_policies_hit_the_memory_limit_and_the_next_evaluation_is_unaffected() {
    let hog = RegoPolicies::from_objects(&template(
        "Hog",
        "x := [sprintf(\"%d-padding-padding\", [i]) | some i in numbers.range(1, 100000)]\ncount(x) < 0",
        "{}",
    ))
    .unwrap()
    .with_limits(EvalLimits {
        time: std::time::Duration::from_secs(60),
        memory: 2 * 1024 * 1024,
    });
    let pod = sigil_kube::load_str(POD, Path::new("p.yaml")).unwrap();
    let start = std::time::Instant::now();
    let e = hog
        .evaluate(&pod[0], &NamespaceLabels::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("constraint Hog/c"), "{e}");
    assert!(e.contains("more than its 2 MiB of memory"), "{e}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    // The ceiling is lifted once no evaluation is in flight: a normal policy still runs, and
    // the same hog passes with a budget that fits it.
    let fine = RegoPolicies::from_objects(&template(
        "Fine",
        "input.review.object.kind == \"Pod\"",
        "{}",
    ))
    .unwrap();
    assert_eq!(
        fine.evaluate(&pod[0], &NamespaceLabels::new())
            .unwrap()
            .len(),
        1
    );
    let roomy = hog.with_limits(EvalLimits {
        time: std::time::Duration::from_secs(60),
        memory: 4 * 1024 * 1024 * 1024,
    });
    assert!(
        roomy
            .evaluate(&pod[0], &NamespaceLabels::new())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn match_scope_namespaces_and_namespace_selector_table() {
    let objects = sigil_kube::load_str(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: ml, labels: {team: research, gpu: "true"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: web-system, labels: {team: web}}
---
apiVersion: v1
kind: Pod
metadata: {name: trainer, namespace: ml}
spec: {containers: []}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend, namespace: web-system}
spec: {containers: []}
---
apiVersion: v1
kind: Pod
metadata: {name: orphan, namespace: unlisted}
spec: {containers: []}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
"#,
        Path::new("objs.yaml"),
    )
    .unwrap();
    let namespaces = namespace_labels(&objects);
    // (spec.match, objects it must select, in input order)
    let cases: &[(&str, &[&str])] = &[
        (
            "{}",
            &[
                "ml",
                "web-system",
                "trainer",
                "frontend",
                "orphan",
                "reader",
            ],
        ),
        ("{scope: Cluster}", &["ml", "web-system", "reader"]),
        ("{scope: Namespaced}", &["trainer", "frontend", "orphan"]),
        (
            "{kinds: [{apiGroups: [''], kinds: [Pod]}]}",
            &["trainer", "frontend", "orphan"],
        ),
        // a Namespace matches on its own name; other cluster-scoped objects are never skipped
        ("{namespaces: [ml]}", &["ml", "trainer", "reader"]),
        (
            "{namespaces: ['*-system']}",
            &["web-system", "frontend", "reader"],
        ),
        (
            "{excludedNamespaces: ['web-*']}",
            &["ml", "trainer", "orphan", "reader"],
        ),
        (
            "{namespaceSelector: {matchLabels: {team: research}}}",
            &["ml", "trainer", "reader"],
        ),
        (
            "{namespaceSelector: {matchExpressions: [{key: gpu, operator: DoesNotExist}]}}",
            &["web-system", "frontend", "orphan", "reader"],
        ),
        // the implied name label works for namespaces with no Namespace object in the input
        (
            "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: unlisted}}}",
            &["orphan", "reader"],
        ),
        (
            "{scope: Namespaced, namespaceSelector: {matchLabels: {team: web}}, kinds: [{apiGroups: [''], kinds: [Pod]}]}",
            &["frontend"],
        ),
    ];
    for (i, (matcher, want)) in cases.iter().enumerate() {
        let rego = RegoPolicies::from_objects(&template(
            &format!("Case{i}"),
            "true",
            &format!("{{match: {matcher}}}"),
        ))
        .unwrap();
        let got: Vec<&str> = objects
            .iter()
            .filter(|o| !rego.evaluate(o, &namespaces).unwrap().is_empty())
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(&got, want, "match {matcher}");
    }
}
