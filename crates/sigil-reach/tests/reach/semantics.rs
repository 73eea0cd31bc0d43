//! One table row per NetworkPolicy rule of the Kubernetes semantics. Each row is decided by the
//! fast engine and by the reference evaluator, which must agree.

use sigil_reach::ipset::Cidr;
use sigil_reach::{Engine, Proto, Settings};
use test_case::test_case;

use crate::common::{cluster, decide, idx};

/// Namespaces a (team=a) and b (team=b); pods a/web, a/db (named port pg=5432/TCP,
/// dns=53/UDP), b/client, b/other, and a/host (hostNetwork).
const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: b, tier: front}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: a}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, role: frontend}}
    spec:
      containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: a}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: x, ports: [{name: pg, containerPort: 5432}, {name: dns, containerPort: 53, protocol: UDP}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
spec:
  containers: [{name: c, image: x}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: b, labels: {app: other}}
spec:
  containers: [{name: c, image: x, ports: [{name: pg, containerPort: 6543}]}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: host, namespace: a}
spec:
  selector: {matchLabels: {app: host}}
  template:
    metadata: {labels: {app: host}}
    spec:
      hostNetwork: true
      containers: [{name: c, image: x}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: a}
spec:
  selector: {app: db}
  ports: [{name: sql, port: 80, targetPort: pg}]
"#;

fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{}\n",
        spec.lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

fn yes(policies: &str, src: &str, dst: &str, proto: Proto, port: u16) -> bool {
    decide(
        &format!("{WORLD}{policies}"),
        Settings::default(),
        vec![],
        src,
        dst,
        proto,
        port,
    )
}

const DB_DENY: &str = "podSelector: {matchLabels: {app: db}}\npolicyTypes: [Ingress]";

#[test_case("", "a/web", "a/db", 5432, true ; "no policy: nothing is isolated")]
#[test_case(&np("a", "deny", DB_DENY), "a/web", "a/db", 5432, false ; "ingress isolation with no rules denies")]
#[test_case(&np("a", "deny", "podSelector: {}"), "a/web", "a/db", 5432, false ; "absent policyTypes defaults to ingress")]
#[test_case(&np("a", "deny", "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Ingress]"), "a/web", "a/db", 5432, true ; "isolation is per pod: db not selected")]
#[test_case(&np("a", "e", "podSelector: {matchLabels: {app: web}}\negress: []"), "a/web", "a/db", 5432, true ; "egress empty list without policyTypes does not isolate egress")]
#[test_case(&np("a", "e", "podSelector: {matchLabels: {app: web}}\negress: [{}]"), "a/web", "a/db", 5432, true ; "egress with one empty rule isolates and allows all")]
#[test_case(&np("a", "e", "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Egress]\negress: []"), "a/web", "a/db", 5432, false ; "egress policy type with no rules denies all egress")]
#[test_case(&np("a", "e", "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Egress]"), "a/web", "a/db", 5432, false ; "egress policy type with absent egress denies all egress")]
#[test_case(&np("a", "e", "podSelector: {matchLabels: {app: web}}\npolicyTypes: []\negress: [{}]"), "a/web", "a/db", 5432, true ; "empty policyTypes list is defaulted too")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{}]"), "b/client", "a/db", 5432, true ; "ingress rule with no from and no ports allows everything")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [], ports: []}]"), "b/client", "a/db", 5432, true ; "empty from and ports lists mean all")]
#[test_case(&format!("{}{}", np("a", "i1", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]"), np("a", "i2", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}]}]")), "b/client", "a/db", 5432, true ; "allows are the union of selecting policies")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]"), "b/client", "a/db", 5432, false ; "podSelector alone only looks in the policy namespace")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {}}]}]"), "a/web", "a/db", 5432, true ; "empty podSelector peer matches the own namespace")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {}}]}]"), "b/client", "a/db", 5432, false ; "empty podSelector peer excludes other namespaces")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {}}]}]"), "b/other", "a/db", 5432, true ; "empty namespaceSelector matches every namespace")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: b}}, podSelector: {matchLabels: {app: client}}}]}]"), "b/client", "a/db", 5432, true ; "namespace and pod selector in one peer: both match")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: b}}, podSelector: {matchLabels: {app: client}}}]}]"), "b/other", "a/db", 5432, false ; "namespace and pod selector in one peer is AND")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}, {podSelector: {matchLabels: {app: client}}}]}]"), "b/other", "a/db", 5432, true ; "separate peers are OR")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]}]"), "b/other", "a/db", 5432, true ; "metadata name label is implied")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {matchExpressions: [{key: tier, operator: Exists}]}}]}]"), "b/client", "a/db", 5432, true ; "matchExpressions Exists")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {matchExpressions: [{key: role, operator: DoesNotExist}]}}]}]"), "a/web", "a/db", 5432, false ; "matchExpressions DoesNotExist")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {matchExpressions: [{key: role, operator: NotIn, values: [backend]}]}}]}]"), "a/web", "a/db", 5432, true ; "matchExpressions NotIn")]
#[test_case(&np("a", "i", "podSelector: {matchExpressions: [{key: app, operator: In, values: [db, cache]}]}\ningress: []"), "a/web", "a/db", 5432, false ; "policy podSelector with In")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: 5000, endPort: 5500}]}]"), "a/web", "a/db", 5432, true ; "endPort range includes")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: 5000, endPort: 5431}]}]"), "a/web", "a/db", 5432, false ; "endPort range excludes")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: pg}]}]"), "a/web", "a/db", 5432, true ; "named port resolves on the destination pod")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: pg}]}]"), "a/web", "a/db", 6543, false ; "named port is not another pod's number")]
#[test_case(&np("a", "e", "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Egress]\negress: [{ports: [{port: pg}]}]"), "a/web", "b/other", 6543, true ; "egress named port resolves on the destination")]
#[test_case(&np("a", "e", "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Egress]\negress: [{ports: [{port: pg}]}]"), "a/web", "b/other", 5432, false ; "egress named port uses the destination's number")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: 5432, protocol: UDP}]}]"), "a/web", "a/db", 5432, false ; "protocol must match")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{protocol: TCP}]}]"), "a/web", "a/db", 1, true ; "protocol without port is every port")]
#[test_case(&format!("{}{}", np("a", "e", "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Egress]\negress: [{to: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 5432}]}]"), ""), "a/web", "a/db", 5432, true ; "egress rule allows the pair")]
#[test_case(&format!("{}{}", np("a", "e", "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Egress]\negress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]"), np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {matchLabels: {app: other}}}]}]")), "a/web", "a/db", 5432, false ; "a connection needs egress and ingress")]
#[test_case(&np("a", "i", "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{namespaceSelector: {}}]}]"), "a/host", "a/db", 5432, false ; "hostNetwork source is node traffic and matches no selector")]
#[test_case(&np("a", "deny", "podSelector: {}\npolicyTypes: [Ingress, Egress]"), "a/web", "a/host", 80, false ; "hostNetwork destination: source egress still applies")]
#[test_case(&np("a", "deny", "podSelector: {}\npolicyTypes: [Ingress]"), "a/web", "a/host", 80, true ; "hostNetwork pod is not selected by policies")]
fn semantics(policies: &str, src: &str, dst: &str, port: u16, expected: bool) {
    assert_eq!(yes(policies, src, dst, Proto::Tcp, port), expected);
}

#[test]
fn udp_named_port() {
    let p = np(
        "a",
        "i",
        "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: dns, protocol: UDP}]}]",
    );
    assert!(yes(&p, "a/web", "a/db", Proto::Udp, 53));
    assert!(!yes(&p, "a/web", "a/db", Proto::Tcp, 53));
}

#[test]
fn ip_block_with_except_on_node_traffic() {
    let p = np(
        "a",
        "i",
        "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.9.0/24]}}]}]",
    );
    let y = format!("{WORLD}{p}");
    let node = |c: &str| Settings {
        node_cidrs: vec![Cidr::parse(c).unwrap()],
    };
    let ip = |s: &str| vec![s.parse().unwrap()];
    assert!(decide(
        &y,
        node("192.168.1.7/32"),
        ip("192.168.1.7"),
        "a/host",
        "a/db",
        Proto::Tcp,
        5432
    ));
    assert!(!decide(
        &y,
        node("192.168.9.7/32"),
        ip("192.168.9.7"),
        "a/host",
        "a/db",
        Proto::Tcp,
        5432
    ));
    assert!(!decide(
        &y,
        Settings::default(),
        vec![],
        "a/host",
        "a/db",
        Proto::Tcp,
        5432
    ));
    // ipBlock never matches pod traffic.
    assert!(!decide(
        &y,
        node("192.168.1.7/32"),
        ip("192.168.1.7"),
        "a/web",
        "a/db",
        Proto::Tcp,
        5432
    ));
}

#[test]
fn egress_ip_block_with_except() {
    let p = np(
        "a",
        "e",
        "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Egress]\negress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: 443}]}]",
    );
    let c = cluster(&format!("{WORLD}{p}"), Settings::default()).unwrap();
    let e = Engine::new(&c);
    let web = idx(&c, "a/web");
    let to = |ip: &str| e.egress_to_ip(web, ip.parse().unwrap());
    assert!(to("10.2.3.4").contains(Proto::Tcp, 443));
    assert!(!to("10.2.3.4").contains(Proto::Tcp, 80));
    assert!(to("10.1.2.3").is_empty());
    assert!(to("8.8.8.8").is_empty());
    // Unisolated pods reach any address.
    assert!(
        e.egress_to_ip(idx(&c, "a/db"), "8.8.8.8".parse().unwrap())
            .is_all()
    );
    assert!(
        e.egress_addresses(web)
            .contains("10.200.0.1".parse().unwrap())
    );
    assert!(
        !e.egress_addresses(web)
            .contains("10.1.0.1".parse().unwrap())
    );
}

#[test]
fn service_port_translates_to_named_target_port() {
    let p = np(
        "a",
        "i",
        "podSelector: {matchLabels: {app: db}}\ningress: [{ports: [{port: 5432}]}]",
    );
    let c = cluster(&format!("{WORLD}{p}"), Settings::default()).unwrap();
    let e = Engine::new(&c);
    let b = sigil_reach::query::service_backends(&c, "a", "db", 80).unwrap();
    assert_eq!(b, vec![(idx(&c, "a/db"), Proto::Tcp, 5432)]);
    let (d, proto, port) = b[0];
    assert!(e.verdict(idx(&c, "a/web"), d).contains(proto, port));
    assert!(
        !e.verdict(idx(&c, "a/web"), d).contains(proto, 80),
        "the service port is not the pod port"
    );
    assert!(sigil_reach::query::service_backends(&c, "a", "db", 81).is_err());
}

#[test]
fn explanation_names_policy_rule_and_peer() {
    let p = format!(
        "{}{}",
        np("a", "deny-all", "podSelector: {}\npolicyTypes: [Ingress]"),
        np(
            "a",
            "allow-b",
            "podSelector: {matchLabels: {app: db}}\ningress: [{from: [{podSelector: {matchLabels: {app: web}}}, {namespaceSelector: {matchLabels: {team: b}}}], ports: [{port: pg}]}]"
        )
    );
    let c = cluster(&format!("{WORLD}{p}"), Settings::default()).unwrap();
    let e = Engine::new(&c);
    let x = e.explain(idx(&c, "b/client"), idx(&c, "a/db"));
    assert!(x.allowed.contains(Proto::Tcp, 5432));
    assert_eq!(
        x.ingress.isolating,
        vec!["a/allow-b".to_owned(), "a/deny-all".to_owned()]
    );
    assert_eq!(x.ingress.hits.len(), 1);
    assert_eq!(x.ingress.hits[0].policy, "a/allow-b");
    assert_eq!(x.ingress.hits[0].peer, Some(1));
    let because = x.because("b/client", "a/db");
    assert!(
        because.contains("a/allow-b ingress[0].from[1]"),
        "{because}"
    );
    let denied = e.explain(idx(&c, "a/web"), idx(&c, "a/host"));
    assert!(denied.ingress.note.is_some());
    let denied = e.explain(idx(&c, "b/other"), idx(&c, "a/web"));
    assert!(denied.allowed.is_empty());
    assert!(
        denied
            .because("b/other", "a/web")
            .contains("isolated by a/deny-all and no rule matches")
    );
}

#[test_case("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]", "ipBlock cannot be combined" ; "ipblock with selector")]
#[test_case("ingress: [{from: [{}]}]", "a peer needs" ; "empty peer")]
#[test_case("ingress: [{ports: [{port: pg, endPort: 6000}]}]", "named port" ; "endport with named port")]
#[test_case("ingress: [{ports: [{port: 6000, endPort: 5000}]}]", "must not be below" ; "endport below port")]
#[test_case("ingress: [{ports: [{port: 80, protocol: ICMP}]}]", "unknown protocol" ; "bad protocol")]
#[test_case("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]}]", "strict subset" ; "except outside cidr")]
#[test_case("ingress: [{from: [{ipBlock: {cidr: not-a-cidr}}]}]", "not a CIDR" ; "bad cidr")]
#[test_case("ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}}]}]", "unknown operator" ; "bad operator")]
#[test_case("policyTypes: [Sideways]", "use Ingress or Egress" ; "bad policy type")]
fn invalid_policies_are_errors(spec: &str, message: &str) {
    let p = np("a", "bad", &format!("podSelector: {{}}\n{spec}"));
    let err = cluster(&format!("{WORLD}{p}"), Settings::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(message), "{err}");
    assert!(err.contains("a/bad"), "the error names the object: {err}");
}

#[test]
fn ip_set_arithmetic() {
    use sigil_reach::ipset::{IpSet, non_public};
    let c = |s: &str| IpSet::from_cidr(&Cidr::parse(s).unwrap());
    let s = c("10.0.0.0/8").difference(&c("10.1.0.0/16"));
    assert!(s.contains("10.0.255.255".parse().unwrap()));
    assert!(!s.contains("10.1.0.0".parse().unwrap()));
    assert!(s.contains("10.2.0.0".parse().unwrap()));
    assert!(c("0.0.0.0/0").covers(&c("192.168.1.1/32")));
    assert!(!c("192.168.0.0/16").covers(&c("192.0.0.0/8")));
    assert!(
        IpSet::all()
            .difference(&non_public())
            .contains("8.8.8.8".parse().unwrap())
    );
    assert!(
        !IpSet::all()
            .difference(&non_public())
            .contains("10.0.0.1".parse().unwrap())
    );
    assert!(c("10.0.0.0/8").intersection(&c("11.0.0.0/8")).is_empty());
    assert!(Cidr::parse("10.0.0.0/33").is_none());
    assert!(c("fd00::/8").contains("fd12::1".parse().unwrap()));
}

#[test]
fn port_set_arithmetic_and_display() {
    use sigil_reach::PortSet;
    let mut p = PortSet::range(Proto::Tcp, 80, 90);
    p.union_with(&PortSet::range(Proto::Tcp, 91, 100));
    p.union_with(&PortSet::single(Proto::Udp, 53));
    assert_eq!(p.to_string(), "TCP/80-100,UDP/53");
    let q = p.intersection(&PortSet::range(Proto::Tcp, 95, 200));
    assert_eq!(q.to_string(), "TCP/95-100");
    assert!(PortSet::all().is_all());
    assert_eq!(PortSet::empty().to_string(), "none");
    assert_eq!(PortSet::all_of(Proto::Tcp).to_string(), "TCP/any");
}
