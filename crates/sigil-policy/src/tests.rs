use std::path::Path;

use test_case::test_case;

use super::*;

const EXAMPLE: &str = include_str!("../../../examples/ai-platform/sigil.yaml");

fn parse(s: &str) -> Result<Policy, PolicyError> {
    Policy::parse(s, Path::new("sigil.yaml"))
}

#[test]
fn example_is_valid() {
    let p = parse(EXAMPLE).unwrap();
    assert_eq!(p.trust_domain.as_str(), "ai.example.org");
    let rag = p.workload("rag-api").unwrap();
    assert_eq!(
        rag.spiffe_id.as_str(),
        "spiffe://ai.example.org/ns/rag/sa/rag-api"
    );
    assert_eq!(p.svid.x509_ttl, Duration::from_secs(3600));
    // Only the RAG API (and ingest) may reach the vector DB; monitoring reaches no data.
    let to_vdb: Vec<_> = p.flows_to("vector-db").map(|f| f.from.as_str()).collect();
    assert_eq!(to_vdb, ["rag-api", "rag-ingest"]);
    assert!(
        p.flows_from("prometheus")
            .all(|f| f.to != "object-store" && f.to != "vector-db")
    );
}

#[test]
fn authorize_is_default_deny() {
    let p = parse(EXAMPLE).unwrap();
    let td = &p.trust_domain;
    let rag = td.k8s_id("rag", "rag-api").unwrap();
    let prom = td.k8s_id("monitoring", "prometheus").unwrap();
    assert_eq!(
        p.authorize(&rag, "vector-db", 6333).unwrap().from,
        "rag-api"
    );
    assert!(matches!(
        p.authorize(&rag, "vector-db", 6334),
        Err(Denial::NoFlow { .. })
    ));
    assert!(matches!(
        p.authorize(&prom, "vector-db", 6333),
        Err(Denial::NoFlow { .. })
    ));
    let stranger = td.id("/ns/x/sa/y").unwrap();
    assert!(matches!(
        p.authorize(&stranger, "vector-db", 6333),
        Err(Denial::UnknownPeer { .. })
    ));
    let foreign = "spiffe://evil.org/ns/rag/sa/rag-api".parse().unwrap();
    assert!(matches!(
        p.authorize(&foreign, "vector-db", 6333),
        Err(Denial::ForeignTrustDomain { .. })
    ));
}

#[test]
fn pod_lookup_uses_labels() {
    let p = parse(EXAMPLE).unwrap();
    let mut labels = std::collections::BTreeMap::new();
    assert!(p.workload_for_pod("rag", "rag-api", &labels).is_none());
    labels.insert("app".to_owned(), "rag-api".to_owned());
    assert_eq!(
        p.workload_for_pod("rag", "rag-api", &labels).unwrap().name,
        "rag-api"
    );
    assert!(p.workload_for_pod("rag", "other", &labels).is_none());
}

const HEAD: &str = "apiVersion: sigil.dev/v1alpha1\nkind: Platform\ntrustDomain: example.org\n";

/// Each case: a policy body appended to HEAD, and (line, field, message fragment) expected.
#[test_case(
    "workloads:\n  - name: a\n    kubernetes: {namespace: n, serviceAccount: a}\nflows:\n  - {from: a, to: vectordb, ports: [1]}\n",
    8, "flows[0].to", "unknown workload"; "unknown workload in flow")]
#[test_case(
    "workloads:\n  - name: a\n    kubernetes: {namespace: n, serviceAccount: a}\n  - name: a\n    kubernetes: {namespace: n, serviceAccount: b}\n",
    7, "workloads[1].name", "duplicate workload name"; "duplicate name")]
#[test_case(
    "workloads:\n  - name: a\n    kubernetes: {namespace: n, serviceAccount: a}\n  - name: b\n    kubernetes: {namespace: n, serviceAccount: a}\n",
    7, "workloads[1].spiffeId", "duplicate SPIFFE ID"; "duplicate id")]
#[test_case(
    "workloads:\n  - name: a\n    spiffeId: spiffe://example.org/a//b\n    unix: {uid: 1}\n",
    6, "workloads[0].spiffeId", "bad SPIFFE ID"; "bad spiffe id")]
#[test_case(
    "workloads:\n  - name: a\n    spiffeId: spiffe://other.org/a\n    unix: {uid: 1}\n",
    6, "workloads[0].spiffeId", "outside the trust domain"; "foreign id")]
#[test_case(
    "workloads:\n  - name: a\n    kubernetes: {namespace: n, serviceAccount: a}\n  - name: b\n    kubernetes: {namespace: n, serviceAccount: b}\nflows:\n  - {from: a, to: b, ports: [70000]}\n",
    10, "flows[0].ports[0]", "port out of range"; "bad port")]
#[test_case(
    "workloads:\n  - name: a\n    kubernetes: {namespace: n, serviceAccount: a}\n  - name: b\n    kubernetes: {namespace: n, serviceAccount: b}\n    ports: [{port: 80}]\nflows:\n  - {from: a, to: b, ports: [81]}\n",
    11, "flows[0].ports[0]", "does not serve this port"; "port not served")]
#[test_case("workloads:\n  - name: a\n", 5, "workloads[0].name", "no selectors"; "no selectors")]
#[test_case("svid:\n  x509Ttl: 30d\n", 5, "svid.x509Ttl", "too long"; "ttl too long")]
#[test_case("svid:\n  jwtTtl: 5 minutes\n", 5, "svid.jwtTtl", "unit"; "ttl bad unit")]
#[test_case("models:\n  sources:\n    - {repo: hf://org/model, revision: main}\n", 6, "models.sources[0].revision", "commit SHA"; "hf branch")]
#[test_case("guardrails:\n  exemptions:\n    - {namespace: kube-system}\n", 6, "guardrails.exemptions[0].reason", "without a reason"; "exemption reason")]
#[test_case("guardrails:\n  podSecurity: {level: strict}\n", 5, "guardrails.podSecurity.level", "unknown Pod Security level"; "pss level")]
#[test_case(
    "workloads:\n  - name: a\n    kubernetes: {namespace: n, serviceAccount: a}\ndata:\n  - {name: d, kind: dataset, readers: [b]}\n",
    8, "data[0].readers[0]", "unknown workload"; "unknown reader")]
fn reports(body: &str, line: u64, field: &str, msg: &str) {
    let err = parse(&format!("{HEAD}{body}")).unwrap_err();
    let d = err
        .diagnostics
        .iter()
        .find(|d| d.field == field)
        .unwrap_or_else(|| panic!("no diagnostic for {field}: {err}"));
    assert!(d.message.contains(msg), "{err}");
    assert_eq!(d.pos.line, line, "{err}");
    assert!(d.pos.column > 0, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("sigil.yaml:{line}:")), "{text}");
}

#[test]
fn unknown_field_is_located() {
    let err = parse(&format!("{HEAD}workloadz: []\n")).unwrap_err();
    assert_eq!(err.diagnostics[0].pos.line, 4, "{err}");
    assert!(err.to_string().contains("workloadz"), "{err}");
}

#[test]
fn hint_suggests_close_name() {
    let err = parse(&format!(
        "{HEAD}workloads:\n  - name: vector-db\n    kubernetes: {{namespace: n, serviceAccount: a}}\n  - name: b\n    kubernetes: {{namespace: n, serviceAccount: b}}\nflows:\n  - {{from: b, to: vectordb, ports: [1]}}\n"
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("did you mean \"vector-db\""),
        "{err}"
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let err = parse(&format!(
        "{HEAD}svid: {{x509Ttl: 99d, jwtTtl: 1s}}\nguardrails:\n  podSecurity: {{level: x}}\n"
    ))
    .unwrap_err();
    assert_eq!(err.diagnostics.len(), 3, "{err}");
}

#[test_case("apiVersion: v2\nkind: Platform\ntrustDomain: a.org\n"; "api version")]
#[test_case("apiVersion: sigil.dev/v1alpha1\nkind: Cluster\ntrustDomain: a.org\n"; "kind")]
#[test_case("apiVersion: sigil.dev/v1alpha1\nkind: Platform\ntrustDomain: A.org\n"; "trust domain")]
#[test_case("apiVersion: sigil.dev/v1alpha1\nkind: Platform\n"; "missing trust domain")]
#[test_case("::: not yaml"; "garbage")]
#[test_case(""; "empty")]
#[test_case("[1, 2"; "unterminated")]
fn rejects_bad_documents(s: &str) {
    let err = parse(s).unwrap_err();
    assert!(!err.diagnostics.is_empty());
}

#[test]
fn missing_file_names_path() {
    let err = Policy::load(Path::new("/nonexistent/sigil.yaml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/sigil.yaml"));
}
