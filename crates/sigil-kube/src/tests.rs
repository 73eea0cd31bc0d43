use std::path::Path;

use proptest::prelude::*;

use super::*;

fn load(t: &str) -> Result<Vec<Object>, LoadError> {
    load_str(t, Path::new("m.yaml"))
}

#[test]
fn multi_document_yaml_with_lines() {
    let objs = load(
        "# header\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: a}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: nginx}]\n",
    )
    .unwrap();
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0].source.line, 2);
    assert_eq!(objs[0].source.document, 0);
    assert_eq!(objs[1].source.document, 2);
    assert_eq!(objs[1].source.line, 8);
    assert_eq!(objs[1].namespace.as_deref(), Some("a"));
    assert_eq!(objs[1].group(), "apps");
    let t = pod_templates(&objs[1]).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].field_path, "spec.template.spec");
    assert_eq!(t[0].metadata.namespace.as_deref(), Some("a"));
    assert_eq!(t[0].spec.containers[0].image.as_deref(), Some("nginx"));
}

#[test]
fn malformed_yaml_names_file_document_and_line() {
    let e = load("apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\napiVersion: v1\nkind: B\nmetadata:\n  name: [unclosed\n")
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("m.yaml:"), "{msg}");
    assert!(msg.contains("document 2"), "{msg}");
    match e {
        LoadError::Syntax { document, line, .. } => {
            assert_eq!(document, 1);
            assert!((7..=9).contains(&line), "line {line}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn duplicate_keys_are_errors() {
    let e = load("apiVersion: v1\nkind: Pod\nkind: Pod\n").unwrap_err();
    assert!(matches!(e, LoadError::Syntax { line: 3, .. }), "{e}");
}

#[test]
fn non_objects_are_errors_not_skipped() {
    let e = load("replicas: 3\n").unwrap_err();
    assert!(e.to_string().contains("no apiVersion"), "{e}");
    let e = load("- a\n- b\n").unwrap_err();
    assert!(e.to_string().contains("list"), "{e}");
}

#[test]
fn lists_are_flattened_and_json_streams_read() {
    let objs = load_str(
        r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[]}},{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"}}]}
{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#,
        Path::new("l.json"),
    )
    .unwrap();
    let kinds: Vec<_> = objs.iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(kinds, ["Pod", "Service", "ConfigMap"]);
    assert_eq!(objs[2].source.document, 1);
    assert_eq!(objs[2].source.line, 2);
    let e = load_str("{\"a\": }", Path::new("x.json")).unwrap_err();
    assert!(e.to_string().contains("malformed JSON"), "{e}");
}

#[test]
fn operator_templates() {
    let objs = load(include_str!("../tests/fixtures/operators.yaml")).unwrap();
    let paths: Vec<Vec<String>> = objs
        .iter()
        .map(|o| {
            pod_templates(o)
                .unwrap()
                .into_iter()
                .map(|t| t.field_path)
                .collect()
        })
        .collect();
    assert_eq!(
        paths,
        vec![
            vec![
                "spec.pytorchReplicaSpecs.Master.template.spec".to_owned(),
                "spec.pytorchReplicaSpecs.Worker.template.spec".to_owned()
            ],
            vec![
                "spec.headGroupSpec.template.spec".to_owned(),
                "spec.workerGroupSpecs[0].template.spec".to_owned()
            ],
            vec![
                "spec.rayClusterSpec.headGroupSpec.template.spec".to_owned(),
                "spec.submitterPodTemplate.spec".to_owned()
            ],
            vec!["spec.predictor".to_owned()],
            vec!["spec.jobTemplate.spec.template.spec".to_owned()],
            vec![],
        ]
    );
    let isvc = pod_templates(&objs[3]).unwrap();
    assert_eq!(isvc[0].spec.containers[0].name, "kserve-container");
    assert_eq!(isvc[0].spec.service_account_name.as_deref(), Some("vllm"));
    assert!(has_pod_templates("RayService"));
    assert!(!has_pod_templates("Service"));
}

#[test]
fn bad_field_types_name_the_field() {
    let objs =
        load("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: 3\n").unwrap();
    let e = pod_templates(&objs[0]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("field spec") && msg.contains("Pod p"), "{msg}");
}

#[test]
fn directories_are_walked_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "apiVersion: v1\nkind: B\nmetadata: {name: b}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sub/a.yml"),
        "apiVersion: v1\nkind: A\nmetadata: {name: a}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    let objs = load_paths(&[dir.path().to_owned()]).unwrap();
    let kinds: Vec<_> = objs.iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(kinds, ["B", "A"]);
    let e = load_paths(&[dir.path().join("missing.yaml")]).unwrap_err();
    assert!(e.to_string().contains("missing.yaml"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(objs) = load_bytes(bytes, Path::new("x")) {
            for o in &objs {
                let _ = pod_templates(o);
            }
        }
    }

    #[test]
    fn arbitrary_yaml_like_text_never_panics(s in "[-a-z:{}\\[\\] \n#.\"'|>&*!%]{0,200}") {
        let _ = load(&s);
    }
}

#[test]
fn default_namespace_reaches_pod_templates() {
    let mut objs = load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      containers: []\n").unwrap();
    assert_eq!(objs[0].namespace, None);
    objs[0].set_namespace("team-a");
    assert_eq!(objs[0].raw["metadata"]["namespace"], "team-a");
    let t = pod_templates(&objs[0]).unwrap();
    assert_eq!(t[0].metadata.namespace.as_deref(), Some("team-a"));
}

/// `kubectl get -o yaml` (a `kind: List` whose items say what they are): every item is an object
/// at its own line, not at the list's.
#[test]
fn kubectl_list_items_keep_their_own_lines() {
    let objs = load(
        "apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: a\n    namespace: shop\n- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {name: deny, namespace: shop}\n  spec: {podSelector: {}}\nkind: List\nmetadata:\n  resourceVersion: \"\"\n",
    )
    .unwrap();
    let got: Vec<_> = objs
        .iter()
        .map(|o| {
            (
                o.kind.as_str(),
                o.name.as_str(),
                o.source.line,
                o.source.document,
            )
        })
        .collect();
    assert_eq!(got, [("Pod", "a", 3, 0), ("NetworkPolicy", "deny", 8, 0)]);
    assert_eq!(objs[1].group(), "networking.k8s.io");
}

/// The API server's typed lists (`PodList`, `NetworkPolicyList`) leave apiVersion and kind off
/// their items: they come from the list, and are written into the object.
#[test]
fn typed_list_items_take_api_version_and_kind_from_the_list() {
    let objs = load(
        "apiVersion: v1\nkind: PodList\nmetadata: {resourceVersion: \"7\"}\nitems:\n- metadata:\n    name: p1\n    namespace: shop\n  spec:\n    containers: [{name: c, image: nginx}]\n-   metadata: {name: p2, namespace: shop}\n    spec: {containers: []}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicyList\nitems:\n- metadata: {name: np, namespace: shop}\n  spec: {podSelector: {}}\n",
    )
    .unwrap();
    let got: Vec<_> = objs
        .iter()
        .map(|o| {
            (
                o.api_version.as_str(),
                o.kind.as_str(),
                o.name.as_str(),
                o.source.line,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("v1", "Pod", "p1", 5),
            ("v1", "Pod", "p2", 10),
            ("networking.k8s.io/v1", "NetworkPolicy", "np", 16)
        ]
    );
    assert_eq!(objs[0].raw["kind"], "Pod");
    assert_eq!(objs[0].raw["apiVersion"], "v1");
    assert_eq!(objs[2].source.document, 1);
    let t = pod_templates(&objs[0]).unwrap();
    assert_eq!(t[0].spec.containers[0].image.as_deref(), Some("nginx"));
}

#[test]
fn typed_json_list_items_have_their_lines() {
    let objs = load_str(
        "{\"apiVersion\": \"v1\", \"kind\": \"NamespaceList\",\n \"items\": [\n  {\"metadata\": {\"name\": \"a\"}},\n\n  {\"metadata\": {\"name\": \"b\"}}]}\n{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n {\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"}}]}\n",
        Path::new("l.json"),
    )
    .unwrap();
    let got: Vec<_> = objs
        .iter()
        .map(|o| {
            (
                o.kind.as_str(),
                o.name.as_str(),
                o.source.line,
                o.source.document,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("Namespace", "a", 3, 0),
            ("Namespace", "b", 5, 0),
            ("Pod", "p", 7, 1)
        ]
    );
    assert!(objs[1].is_cluster_scoped());
}

/// An item of a generic `kind: List` without a kind is an error at the item, with a hint about
/// lists (not about Helm).
#[test]
fn list_item_errors_point_at_the_item() {
    let e = load("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n- metadata:\n    name: b\n")
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LoadError::NotAnObject { line: 7, .. }), "{msg}");
    assert!(
        msg.contains("item 1 of the List has no apiVersion"),
        "{msg}"
    );
    assert!(msg.contains("typed list") && !msg.contains("helm"), "{msg}");
    let e =
        load("apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n- 3\n").unwrap_err();
    assert!(matches!(e, LoadError::NotAnObject { line: 5, .. }), "{e}");
    assert!(
        e.to_string().contains("item 1 of the PodList is a number"),
        "{e}"
    );
    // A field error in an item names the item's line too.
    let objs = load("apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n  spec: {}\n- metadata: {name: b}\n  spec:\n    containers: 3\n").unwrap();
    let e = pod_templates(&objs[1]).unwrap_err();
    assert!(
        e.to_string().starts_with("m.yaml:6: document 1 (Pod b)"),
        "{e}"
    );
    // Duplicate keys are still refused, at the top and inside items.
    let e = load("apiVersion: v1\nkind: List\nkind: List\nitems: []\n").unwrap_err();
    assert!(matches!(e, LoadError::Syntax { line: 3, .. }), "{e}");
    let e = load(
        "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n  metadata: {name: b}\n",
    )
    .unwrap_err();
    assert!(matches!(e, LoadError::Syntax { line: 5, .. }), "{e}");
}
