//! Benchmark: N registered workloads (default 1000) pre-issued and rotated by a real agent (in-
//! process CA as issuer, Workload API on a Unix socket), with S open FetchX509SVID streams
//! watching. Prints `RESULT <metric> <value> <unit>` lines. Run through `bench/agent.sh`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_agent::cache::RotationSettings;
use sigil_agent::local::LocalAuthority;
use sigil_agent::metrics::Metrics;
use sigil_agent::proto::X509svidRequest;
use sigil_agent::{Agent, AgentConfig, client};

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let streams: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let rss_start = status_kib("VmRSS:");
    let mut policy = String::from(
        "apiVersion: sigil.dev/v1alpha1\nkind: Platform\ntrustDomain: bench.example.org\nworkloads:\n  - name: bench-caller\n    unix: { uid: 0 }\n",
    );
    for i in 1..n {
        let _ = write!(
            policy,
            "  - name: w{i}\n    unix: {{ uid: {} }}\n",
            100_000 + i
        );
    }
    let policy = sigil_policy::Policy::parse(&policy, Path::new("bench.yaml")).unwrap();
    let authority = Arc::new(
        LocalAuthority::generate(
            &policy.trust_domain,
            Duration::from_secs(3600),
            Duration::from_secs(300),
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let t = Instant::now();
    let agent = Agent::start(AgentConfig {
        socket_path: socket.clone(),
        policy,
        authority: authority.clone(),
        kubelet: None,
        metrics_addr: None,
        rotation: RotationSettings::default(),
        allow_unauthenticated_verifiers: false,
        proc_root: PathBuf::from("/proc"),
        metrics: Arc::new(Metrics::new()),
    })
    .await
    .unwrap();
    let preissue = t.elapsed();
    assert_eq!(agent.initial.issued, n, "every workload pre-issued");

    // Open streams and read their first snapshot.
    let mut open = Vec::new();
    for _ in 0..streams {
        let mut c = client::connect(&socket, true).await.unwrap();
        let mut s = c
            .fetch_x509svid(X509svidRequest {})
            .await
            .unwrap()
            .into_inner();
        let first = s.message().await.unwrap().unwrap();
        open.push((c, s, first.svids[0].x509_svid.clone()));
    }

    // Rotate all N at once (the worst case: every SVID due together) and wait until every
    // stream has the new snapshot.
    let before = authority.x509_issued();
    let t = Instant::now();
    agent.cache.force_rotation();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut s, old) in open {
        tasks.spawn(async move {
            loop {
                let m = s.message().await.unwrap().unwrap();
                if m.svids[0].x509_svid != old {
                    break;
                }
            }
            drop(c);
            Instant::now()
        });
    }
    let mut last = t;
    while let Some(r) = tasks.join_next().await {
        last = last.max(r.unwrap());
    }
    // Wait for the pass to finish issuing all N.
    while authority.x509_issued() < before + n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rotation = t.elapsed();
    let pushed = last.duration_since(t);
    let rss_end = status_kib("VmRSS:");
    let hwm = status_kib("VmHWM:");
    println!("RESULT agent_workloads {n} count");
    println!("RESULT agent_streams {streams} count");
    println!(
        "RESULT agent_preissue_seconds {:.3} s",
        preissue.as_secs_f64()
    );
    println!(
        "RESULT agent_full_rotation_seconds {:.3} s",
        rotation.as_secs_f64()
    );
    println!(
        "RESULT agent_rotation_rate {:.0} svids/s",
        n as f64 / rotation.as_secs_f64()
    );
    println!(
        "RESULT agent_rotation_to_all_streams_seconds {:.3} s",
        pushed.as_secs_f64()
    );
    println!(
        "RESULT agent_rss_growth_mib {:.1} MiB",
        (rss_end.saturating_sub(rss_start)) as f64 / 1024.0
    );
    println!("RESULT agent_peak_rss_mib {:.1} MiB", hwm as f64 / 1024.0);
    agent.shutdown().await;
}
