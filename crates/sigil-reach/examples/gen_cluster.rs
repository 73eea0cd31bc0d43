//! Generates a synthetic cluster for `bench/reach.sh`: namespaces, Deployments (pods = workloads x
//! replicas) with labels and named ports, and NetworkPolicies mixing every peer and port form.
//! Deterministic (seeded xorshift). Usage: gen_cluster PODS REPLICAS POLICIES NAMESPACES > out.yaml
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt::Write as _;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let (pods, replicas, policies, namespaces) = match args.as_slice() {
        [a, b, c, d] => (*a, *b, *c, *d),
        _ => (10_000, 5, 1_000, 50),
    };
    let workloads = pods / replicas;
    let apps = 40; // distinct app labels per namespace
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::new();
    for n in 0..namespaces {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{team: t{}, env: {}}}}}\n",
            n % 10,
            if n % 3 == 0 { "prod" } else { "dev" }
        );
    }
    for w in 0..workloads {
        let ns = w % namespaces;
        let app = r.below(apps);
        let tier = ["web", "api", "db", "cache"][r.below(4)];
        let _ = write!(
            out,
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: w{w}, namespace: ns{ns}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: a{app}, wl: w{w}}}}}\n  template:\n    metadata: {{labels: {{app: a{app}, wl: w{w}, tier: {tier}}}}}\n    spec:\n      serviceAccountName: sa{}\n      containers:\n        - name: c\n          image: registry.example/app@sha256:{}\n          ports: [{{name: http, containerPort: {}}}, {{name: metrics, containerPort: 9090}}]\n",
            app % 5,
            "0".repeat(64),
            8000 + r.below(5)
        );
    }
    for p in 0..policies {
        let ns = p % namespaces;
        if p < namespaces {
            let _ = write!(
                out,
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny-{p}, namespace: ns{ns}}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress{}]}}\n",
                if ns % 4 == 0 { ", Egress" } else { "" }
            );
            continue;
        }
        let sel = format!("{{matchLabels: {{app: a{}}}}}", r.below(apps));
        let peer = match r.below(5) {
            0 => format!("{{podSelector: {{matchLabels: {{app: a{}}}}}}}", r.below(apps)),
            1 => format!("{{namespaceSelector: {{matchLabels: {{team: t{}}}}}}}", r.below(10)),
            2 => "{namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchExpressions: [{key: tier, operator: In, values: [web, api]}]}}".to_string(),
            3 => "{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}".to_owned(),
            _ => format!("{{podSelector: {{matchLabels: {{tier: {}}}}}}}", ["web", "api", "db", "cache"][r.below(4)]),
        };
        let ports = match r.below(4) {
            0 => "[{port: http}]".to_owned(),
            1 => format!("[{{port: {}, endPort: {}}}]", 8000, 8000 + r.below(5)),
            2 => "[{port: metrics}, {port: 443, protocol: TCP}]".to_owned(),
            _ => "[]".to_owned(),
        };
        if r.below(4) == 0 {
            let _ = write!(
                out,
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{p}, namespace: ns{ns}}}\nspec:\n  podSelector: {sel}\n  policyTypes: [Egress]\n  egress: [{{to: [{peer}], ports: {ports}}}]\n"
            );
        } else {
            let _ = write!(
                out,
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{p}, namespace: ns{ns}}}\nspec:\n  podSelector: {sel}\n  ingress: [{{from: [{peer}], ports: {ports}}}]\n"
            );
        }
    }
    print!("{out}");
}
