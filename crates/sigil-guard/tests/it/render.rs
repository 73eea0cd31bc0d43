//! Report formats: SARIF 2.1.0 structure (what code-scanning uploads check), JUnit, JSON, table.

use std::path::Path;

use serde_json::Value;
use sigil_guard::audit::{Auditor, Settings};
use sigil_guard::render::{Format, render};
use sigil_policy::Policy;

fn naive_report() -> sigil_guard::Report {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let policy = Policy::load(&root.join("examples/ai-platform/sigil.yaml")).unwrap();
    let mut objs =
        sigil_kube::load_paths(&[root.join("examples/ai-platform/manifests/naive")]).unwrap();
    // An unknown kind, and a message with XML/JSON specials.
    objs.extend(
        sigil_kube::load_str(
            "apiVersion: example.org/v1\nkind: Widget\nmetadata: {name: w, namespace: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: \"p<&>\", namespace: a}\nspec: {containers: [{name: \"c\\\"x\", image: \"i:1\"}]}\n",
            Path::new("extra.yaml"),
        )
        .unwrap(),
    );
    Auditor::new(Settings::from_policy(&policy).unwrap(), None)
        .audit(&objs)
        .unwrap()
}

fn no_empty_strings(v: &Value, path: &str) {
    match v {
        Value::String(s) => assert!(!s.is_empty(), "empty string at {path}"),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| no_empty_strings(x, &format!("{path}[{i}]"))),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| no_empty_strings(x, &format!("{path}.{k}"))),
        _ => {}
    }
}

#[test]
fn sarif_is_well_formed_2_1_0() {
    let r = naive_report();
    let s: Value = serde_json::from_str(&render(&r, Format::Sarif, false)).unwrap();
    assert_eq!(s["version"], "2.1.0");
    assert!(s["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &s["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "sigil");
    no_empty_strings(&s, "$");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), r.findings.len());
    for res in results {
        let idx = res["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx]["id"], res["ruleId"]);
        assert!(["error", "warning", "note"].contains(&res["level"].as_str().unwrap()));
        let loc = &res["locations"][0]["physicalLocation"];
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
        assert!(
            loc["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .ends_with(".yaml")
        );
        assert!(res.get("snippet").is_none() && loc["region"].get("snippet").is_none());
        assert!(res["message"]["text"].as_str().unwrap().contains("Fix:"));
    }
    let ids: std::collections::HashSet<_> =
        rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), rules.len(), "duplicate rule descriptors");
}

#[test]
fn junit_json_and_table() {
    let r = naive_report();
    let x = render(&r, Format::Junit, false);
    assert!(x.starts_with("<?xml"));
    assert_eq!(x.matches("<failure ").count(), r.findings.len());
    assert!(x.contains("p&lt;&amp;&gt;"), "names are escaped");
    assert!(!x.contains("p<&>"));
    assert!(x.contains("<skipped message=\"unknown kind example.org/v1"));
    assert!(x.trim_end().ends_with("</testsuites>"));
    let failing_objects = x.matches("</testcase>").count() - x.matches("<skipped").count();
    assert!(
        x.contains(&format!("failures=\"{failing_objects}\"")),
        "{x}"
    );
    let j: Value = serde_json::from_str(&render(&r, Format::Json, false)).unwrap();
    assert_eq!(j["findings"].as_array().unwrap().len(), r.findings.len());
    assert_eq!(j["unknownKinds"][0]["kind"], "Widget");
    let t = render(&r, Format::Table, false);
    assert!(t.contains("UNKNOWN-KIND") && t.contains("Widget a/w"));
    assert!(t.contains("hint: "));
    assert!(!t.contains('\x1b'), "no colour when disabled");
    assert!(render(&r, Format::Table, true).contains('\x1b'));
}
