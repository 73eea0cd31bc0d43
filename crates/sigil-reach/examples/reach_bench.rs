//! Benchmark driver for `bench/reach.sh`: loads a manifest file, builds the fast engine, computes
//! the full matrix, and runs the reference evaluator (the peer) on a sample of source rows with
//! the same probe ports to report a speed ratio. Prints `RESULT` lines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::time::Instant;

use sigil_reach::reference::{RefPod, RefWorld};
use sigil_reach::{Cluster, Engine, Proto, Settings};

fn main() {
    let path = PathBuf::from(std::env::args().nth(1).expect("manifest file"));
    let sample: usize = std::env::args().nth(2).map_or(20, |s| s.parse().unwrap());
    let t0 = Instant::now();
    let objs = sigil_kube::load_paths(&[path]).unwrap();
    let cluster = Cluster::from_objects(&objs, Settings::default()).unwrap();
    let load = t0.elapsed();
    let pods: u64 = cluster
        .workloads
        .iter()
        .map(|w| u64::from(w.replicas))
        .sum();
    let t1 = Instant::now();
    let engine = Engine::new(&cluster);
    let build = t1.elapsed();
    let t2 = Instant::now();
    let matrix = engine.matrix();
    let full = t2.elapsed();
    let n = cluster.workloads.len();
    let probes: Vec<u16> = vec![443, 8000, 8001, 8002, 8003, 8004, 9090];

    // Peer: the reference evaluator, one (pair, port) at a time, on `sample` source rows.
    let mut w = RefWorld::default();
    for o in &objs {
        match o.kind.as_str() {
            "Namespace" => {
                w.namespaces.insert(o.name.clone(), o.labels());
            }
            "NetworkPolicy" => {
                let mut np: sigil_kube::k8s_openapi::api::networking::v1::NetworkPolicy =
                    o.typed().unwrap();
                np.metadata.namespace = o.namespace.clone();
                w.policies.push(np);
            }
            _ => {}
        }
    }
    for p in &cluster.workloads {
        w.pods.push(RefPod {
            namespace: p.namespace.clone(),
            labels: p.labels.clone(),
            host_network: p.host_network,
            named_ports: p
                .named_ports
                .iter()
                .map(|(a, b, c)| (a.clone(), b.as_str().into(), i32::from(*c)))
                .collect(),
        });
    }
    let rows = sample.min(n);
    let t3 = Instant::now();
    let mut disagreements = 0usize;
    let by_pair: std::collections::HashMap<(usize, usize), &sigil_reach::PortSet> =
        matrix.iter().map(|(s, d, p)| ((*s, *d), p)).collect();
    for s in 0..rows {
        for d in 0..n {
            for &port in &probes {
                let slow = sigil_reach::reference::allowed(&w, s, d, "TCP", i32::from(port));
                let fast = by_pair
                    .get(&(s, d))
                    .is_some_and(|p| p.contains(Proto::Tcp, port));
                if slow != fast {
                    disagreements += 1;
                }
            }
        }
    }
    let reference_sample = t3.elapsed();
    let reference_full = reference_sample.as_secs_f64() * n as f64 / rows.max(1) as f64;
    let analysis = (build + full).as_secs_f64();
    println!(
        "workloads {n}, pods {pods}, policies {}, namespaces {}",
        cluster.policies.len(),
        cluster.namespaces.len()
    );
    println!(
        "allowed pairs {} of {} ({} probe-port disagreements with the reference on {rows} rows)",
        matrix.len(),
        n * n,
        disagreements
    );
    println!("RESULT reach_load_s {:.3} s", load.as_secs_f64());
    println!("RESULT reach_engine_build_s {:.3} s", build.as_secs_f64());
    println!("RESULT reach_full_matrix_s {:.3} s", full.as_secs_f64());
    println!("RESULT reach_analysis_s {analysis:.3} s");
    println!("RESULT reach_reference_full_matrix_estimate_s {reference_full:.1} s");
    println!(
        "RESULT reach_speedup_vs_reference {:.0} x",
        reference_full / analysis.max(1e-9)
    );
    println!("RESULT reach_reference_disagreements {disagreements} count");
}
