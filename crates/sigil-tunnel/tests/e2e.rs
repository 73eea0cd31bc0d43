//! End-to-end tests of `sigil tunnel` on 127.0.0.1: an echo upstream behind an inbound tunnel
//! (vector-db), reached through an outbound tunnel (rag-api) or by other clients, with a test
//! PKI and the example platform policy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// Tests run one at a time (shared fd counts and log buffer): the guard is held on purpose.
#![allow(clippy::await_holding_lock)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_tunnel::{Limits, Mode, Reason};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pair {
    pki: Pki,
    server: Creds,
    client: Creds,
    inbound: Inbound,
    outbound: Outbound,
    _echo: Task,
}

async fn pair(mode: Mode) -> Pair {
    let pki = Pki::new(TD);
    let (echo, echo_task) = echo_server().await;
    let server = Creds::new(&pki.svid(VECTOR_DB), &pki.bundle_pem());
    let client = Creds::new(&pki.svid(RAG_API), &pki.bundle_pem());
    let inbound = inbound(&server, echo, mode, fast_limits()).await;
    let outbound = outbound(&client, inbound.addr, "vector-db", 6333, fast_limits()).await;
    Pair {
        pki,
        server,
        client,
        inbound,
        outbound,
        _echo: echo_task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_identity_passes_and_uses_pq_key_exchange() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    let out = roundtrip(p.outbound.addr, b"query: nearest neighbours")
        .await
        .unwrap();
    assert_eq!(out, b"query: nearest neighbours");
    // Sigil to Sigil negotiates TLS 1.3 with the hybrid post-quantum group and AES-128-GCM.
    let line = wait_log(&["connection authorized", RAG_API]).await;
    assert!(line.contains("X25519MLKEM768"), "{line}");
    assert!(line.contains("TLS13_AES_128_GCM_SHA256"), "{line}");
    assert_eq!(p.inbound.metrics.refusals(Reason::NoFlow), 0);
    let m = p.inbound.metrics.render();
    assert!(
        m.contains("sigil_tunnel_connections_established_total{tunnel=\"inbound\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("sigil_tunnel_bytes_total{tunnel=\"inbound\",direction=\"received\"} 25"),
        "{m}"
    );
    assert!(
        m.contains("sigil_tunnel_handshake_seconds_count{tunnel=\"inbound\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfer_both_directions_is_intact() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    let data: Vec<u8> = (0..24 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let want = sha256(&data);
    let s = tokio::net::TcpStream::connect(p.outbound.addr)
        .await
        .unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        // Odd-sized writes so records do not line up with writes.
        for chunk in data.chunks(100_003) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), 24 * 1024 * 1024);
    assert_eq!(sha256(&got), want);
}

/// Each refused peer: the reason is in the log with the peer ID, target and port, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_with_reason() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    let addr = p.inbound.addr;

    let foreign = Pki::new("evil.example.org");
    let untrusted = Pki::named(TD, "another CA");
    let rogue = Pki::new(TD); // same name as the real CA, different key
    let cases: Vec<(&str, Svid, Reason, &str)> = vec![
        (
            "expired",
            p.pki.svid_between(RAG_API, -7200, -3600),
            Reason::Expired,
            RAG_API,
        ),
        (
            "foreign trust domain",
            foreign.svid("spiffe://evil.example.org/ns/rag/sa/rag-api"),
            Reason::ForeignTrustDomain,
            "spiffe://evil.example.org/ns/rag/sa/rag-api",
        ),
        (
            "untrusted CA",
            untrusted.svid(RAG_API),
            Reason::UntrustedCa,
            RAG_API,
        ),
        (
            "rogue CA with the real CA's name",
            rogue.svid(RAG_API),
            Reason::UntrustedCa,
            RAG_API,
        ),
        (
            "monitoring not allowed",
            p.pki.svid(PROMETHEUS),
            Reason::NoFlow,
            PROMETHEUS,
        ),
        (
            "unknown workload",
            p.pki.svid("spiffe://ai.example.org/ns/rag/sa/intruder"),
            Reason::UnknownPeer,
            "spiffe://ai.example.org/ns/rag/sa/intruder",
        ),
    ];
    for (name, svid, reason, peer) in cases {
        let r = raw_client(addr, Some(&svid), b"secret query").await;
        assert!(r.data.is_empty(), "{name}: data leaked through: {r:?}");
        let err = r.error.unwrap_or_default();
        assert!(!err.is_empty(), "{name}: no error seen by the client");
        let expected = if reason == Reason::UntrustedCa && name.starts_with("rogue") {
            2
        } else {
            1
        };
        assert_eq!(p.inbound.metrics.refusals(reason), expected, "{name}");
        let line = wait_log(&["connection refused", peer, &format!("reason={reason}")]).await;
        assert!(
            line.contains("target=vector-db") && line.contains("port=6333"),
            "{name}: {line}"
        );
        assert!(line.contains("rule="), "{name}: {line}");
    }
    // The policy refusal names the rule and sends access_denied.
    let r = raw_client(addr, Some(&p.pki.svid(PROMETHEUS)), b"x").await;
    assert!(r.error.unwrap().to_lowercase().contains("accessdenied"));
    let line = wait_log(&["connection refused", PROMETHEUS]).await;
    assert!(
        line.contains("no flow allows prometheus -> vector-db on port 6333 (default deny)"),
        "{line}"
    );

    // No client certificate at all.
    let r = raw_client(addr, None, b"x").await;
    assert!(r.data.is_empty() && r.error.is_some(), "{r:?}");
    wait_for("Reason::NoCertificate counted once", || {
        p.inbound.metrics.refusals(Reason::NoCertificate) == 1
    })
    .await;
    wait_log(&["connection refused", "reason=no_certificate"]).await;

    // Nothing of the above reached the upstream, and the allowed client still works.
    assert_eq!(roundtrip(p.outbound.addr, b"ok").await.unwrap(), b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_logs_but_lets_policy_refusals_through() {
    let _g = serial();
    let p = pair(Mode::DryRun).await;
    let r = raw_client(p.inbound.addr, Some(&p.pki.svid(PROMETHEUS)), b"scrape").await;
    assert_eq!(r.data, b"scrape", "{r:?}");
    wait_log(&["dry-run: would refuse", PROMETHEUS, "reason=no_flow"]).await;
    assert_eq!(p.inbound.metrics.refusals(Reason::NoFlow), 0);
    assert!(
        p.inbound.metrics.render().contains(
            "sigil_tunnel_dry_run_refusals_total{tunnel=\"inbound\",reason=\"no_flow\"} 1"
        )
    );
    // A bad chain is still refused in dry-run.
    let r = raw_client(p.inbound.addr, Some(&Pki::new(TD).svid(RAG_API)), b"x").await;
    assert!(r.data.is_empty());
    wait_for("Reason::UntrustedCa counted once", || {
        p.inbound.metrics.refusals(Reason::UntrustedCa) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_requires_the_expected_server_identity() {
    let _g = serial();
    let pki = Pki::new(TD);
    let (echo, _e) = echo_server().await;
    // An inference server where the policy says vector-db should be.
    let wrong = Creds::new(&pki.svid(INFERENCE), &pki.bundle_pem());
    let inb = inbound_for(
        &wrong,
        echo,
        "inference",
        8000,
        Mode::Enforce,
        fast_limits(),
    )
    .await;
    let client = Creds::new(&pki.svid(RAG_API), &pki.bundle_pem());
    let out = outbound(&client, inb.addr, "vector-db", 6333, fast_limits()).await;
    let r = roundtrip(out.addr, b"leak?").await;
    assert!(r.map(|d| d.is_empty()).unwrap_or(true));
    wait_for("Reason::UnexpectedServer counted once", || {
        out.metrics.refusals(Reason::UnexpectedServer) == 1
    })
    .await;
    let line = wait_log(&["connection refused", INFERENCE, "reason=unexpected_server"]).await;
    assert!(line.contains(VECTOR_DB), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_cannot_open_an_outbound_to_the_vector_db() {
    let _g = serial();
    let pki = Pki::new(TD);
    let prom = Creds::new(&pki.svid(PROMETHEUS), &pki.bundle_pem());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = sigil_tunnel::Metrics::new("outbound");
    let err = sigil_tunnel::run_outbound(sigil_tunnel::OutboundSpec {
        listener,
        remote: "127.0.0.1:9".parse().unwrap(),
        to: "vector-db".into(),
        port: 6333,
        policy: policy(),
        store: Arc::clone(&prom.store),
        metrics: Arc::clone(&metrics),
        live: sigil_tunnel::LiveConnections::new(),
        ktls: sigil_tunnel::ktls::KtlsMode::Off,
        limits: Limits::default(),
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("no flow allows prometheus -> vector-db on port 6333"),
        "{err}"
    );
    wait_for("Reason::OutboundNotAllowed counted once", || {
        metrics.refusals(Reason::OutboundNotAllowed) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_is_refused_no_fallback() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    let mut s = tokio::net::TcpStream::connect(p.inbound.addr)
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: vector-db\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap();
    assert!(
        !out.windows(3).any(|w| w == b"GET"),
        "plaintext echoed back: {out:?}"
    );
    wait_for("Reason::Handshake counted once", || {
        p.inbound.metrics.refusals(Reason::Handshake) == 1
    })
    .await;
    assert_eq!(p.inbound.metrics.active(), 0);
}

/// A plaintext client is refused on its first five bytes, not after the handshake timeout
/// (10 s by default; 3 s here), and gets nothing back in clear: at most a TLS alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_is_refused_at_once() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    for request in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"SSH-2.0-OpenSSH_9.6\r\n"] {
        let before = p.inbound.metrics.refusals(Reason::Handshake);
        let started = Instant::now();
        let mut s = tokio::net::TcpStream::connect(p.inbound.addr)
            .await
            .unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
        let took = started.elapsed();
        assert!(r.is_ok(), "still open after 2 s");
        assert!(took < Duration::from_millis(700), "closed after {took:?}");
        // Nothing, or the plaintext fatal alert unexpected_message.
        assert!(
            out.is_empty() || out == [21, 3, 3, 0, 2, 2, 10],
            "answered in clear: {out:?}"
        );
        wait_for("the refusal counted", || {
            p.inbound.metrics.refusals(Reason::Handshake) == before + 1
        })
        .await;
    }
    wait_log(&["connection refused", "not a TLS record", "GET /"]).await;
    assert_eq!(p.inbound.metrics.active(), 0);
}

/// Times in log lines are RFC 3339 (`not_after=2026-11-23T01:00:00Z`), not `SystemTime { .. }`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_times_are_rfc3339() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    let _w = p.server.watch();
    write_creds(
        &p.server.path(),
        &p.pki.svid(VECTOR_DB),
        &p.pki.bundle_pem(),
    );
    let line = wait_log(&["loaded rotated SVID", VECTOR_DB]).await;
    assert!(!line.contains("SystemTime"), "{line}");
    let at = line.split("not_after=").nth(1).expect(&line);
    let at = at.split_whitespace().next().unwrap();
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not_after={at:?} is not RFC 3339 ({e}): {line}"));
    assert!(at.ends_with('Z'), "{at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_propagates_both_ways() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    let mut s = tokio::net::TcpStream::connect(p.outbound.addr)
        .await
        .unwrap();
    s.write_all(b"first part, ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"second part").await.unwrap();
    // Our write side closes; the echo server only answers fully after seeing EOF, and closes.
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, b"first part, second part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_closes_cleanly() {
    let _g = serial();
    let pki = Pki::new(TD);
    // A port with nothing listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = Creds::new(&pki.svid(VECTOR_DB), &pki.bundle_pem());
    let client = Creds::new(&pki.svid(RAG_API), &pki.bundle_pem());
    let inb = inbound(&server, dead, Mode::Enforce, fast_limits()).await;
    let out = outbound(&client, inb.addr, "vector-db", 6333, fast_limits()).await;
    let started = Instant::now();
    let r = roundtrip(out.addr, b"anyone?").await;
    assert!(r.map(|d| d.is_empty()).unwrap_or(true));
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_log(&["upstream unavailable", RAG_API]).await;
    // Remote down for the outbound: the local client gets a reset, not a hang.
    let out2 = outbound(&client, dead, "vector-db", 6333, fast_limits()).await;
    let r = roundtrip(out2.addr, b"anyone?").await;
    assert!(r.map(|d| d.is_empty()).unwrap_or(true));
    wait_log(&["remote unavailable"]).await;
}

/// An upstream that hashes everything it receives and answers with the SHA-256 and the length
/// (8 bytes, big endian) once the client half-closes.
async fn hash_sink() -> (std::net::SocketAddr, Task) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let t = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            ctx.update(&buf[..n]);
                            total += n as u64;
                        }
                        Err(_) => return,
                    }
                }
                let mut out = ctx.finish().as_ref().to_vec();
                out.extend_from_slice(&total.to_be_bytes());
                let _ = s.write_all(&out).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, Task(t))
}

/// Waits until `store` reaches `generation`.
async fn wait_generation(store: &sigil_tunnel::CredentialStore, generation: u64) {
    wait_for(&format!("credential generation {generation}"), || {
        store.generation() >= generation
    })
    .await;
}

/// Issue 18: a long transfer (320 MiB, rate-limited to last ~7 s) runs across two SVID
/// rotations of both ends and past the expiry of both ends' first SVIDs (4 s TTL), checksummed
/// end to end. Before, the inbound closed the connection 1 s before the client's SVID expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_survives_two_rotations_and_first_svid_expiry() {
    let _g = serial();
    let pki = Pki::new(TD);
    let (sink, _sink) = hash_sink().await;
    let ttl = 4;
    let server = Creds::new(&pki.svid_between(VECTOR_DB, -60, ttl), &pki.bundle_pem());
    let client = Creds::new(&pki.svid_between(RAG_API, -60, ttl), &pki.bundle_pem());
    let (_w1, _w2) = (server.watch(), client.watch());
    let inb = inbound(&server, sink, Mode::Enforce, fast_limits()).await;
    let out = outbound(&client, inb.addr, "vector-db", 6333, fast_limits()).await;
    let first_expiry = Instant::now() + Duration::from_secs(ttl as u64);

    const CHUNK: usize = 1024 * 1024;
    const CHUNKS: u64 = 320;
    let block: Vec<u8> = (0..CHUNK as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let s = tokio::net::TcpStream::connect(out.addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut chunk = block;
        let started = Instant::now();
        for i in 0..CHUNKS {
            // Each chunk differs (its index in the first 8 bytes): a lost, repeated or
            // reordered chunk changes the digest.
            chunk[..8].copy_from_slice(&i.to_be_bytes());
            ctx.update(&chunk);
            w.write_all(&chunk).await.unwrap();
            // ~46 MiB/s: the transfer lasts ~7 s, past the first SVIDs' expiry.
            let due = started + Duration::from_millis(i * 7000 / CHUNKS);
            tokio::time::sleep_until(due.into()).await;
        }
        w.shutdown().await.unwrap();
        ctx.finish().as_ref().to_vec()
    });
    // Two rotations of both ends, with new keys, mid-transfer; the second SVIDs are short too.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    write_creds(
        &server.path(),
        &pki.svid_between(VECTOR_DB, -60, 2 * ttl),
        &pki.bundle_pem(),
    );
    write_creds(
        &client.path(),
        &pki.svid_between(RAG_API, -60, 2 * ttl),
        &pki.bundle_pem(),
    );
    wait_generation(&server.store, 2).await;
    wait_generation(&client.store, 2).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    write_creds(&server.path(), &pki.svid(VECTOR_DB), &pki.bundle_pem());
    write_creds(&client.path(), &pki.svid(RAG_API), &pki.bundle_pem());
    wait_generation(&server.store, 3).await;
    wait_generation(&client.store, 3).await;
    assert!(
        !writer.is_finished(),
        "transfer too short to span the rotations"
    );
    // Past the first SVIDs' expiry, the connection still carries data.
    tokio::time::sleep_until((first_expiry + Duration::from_millis(500)).into()).await;
    assert!(
        !writer.is_finished(),
        "transfer finished before the first SVIDs expired"
    );
    assert_eq!(inb.live.len(), 1);
    let sent_digest = writer.await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.len(), 40, "the upstream's digest did not come back");
    assert_eq!(&answer[32..], &(CHUNKS * CHUNK as u64).to_be_bytes());
    assert_eq!(&answer[..32], &sent_digest[..], "data changed in transit");
    // A new connection authenticates with the third SVIDs.
    assert_eq!(roundtrip(out.addr, b"").await.unwrap().len(), 40);
    for reason in Reason::ALL {
        assert_eq!(inb.metrics.revoked_closes(reason), 0, "{reason}");
        assert_eq!(out.metrics.revoked_closes(reason), 0, "{reason}");
    }
}

/// The example policy with the rag-api -> vector-db flow moved from port 6333 to 6334.
fn policy_without_rag_to_vector_db_6333() -> String {
    let from = "{ from: rag-api, to: vector-db, ports: [6333]";
    assert!(POLICY_TEXT.contains(from));
    POLICY_TEXT.replace(from, "{ from: rag-api, to: vector-db, ports: [6334]")
}

/// The example policy plus an unrelated flow.
fn policy_with_an_extra_flow() -> String {
    let at = "  - { from: grafana, to: prometheus, ports: [9090] }\n";
    assert!(POLICY_TEXT.contains(at));
    POLICY_TEXT.replace(
        at,
        &format!("{at}  - {{ from: grafana, to: inference, ports: [8002] }}\n"),
    )
}

/// An idle connection through the pair: returns the client socket after one echo.
async fn open_idle(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    s
}

/// Issue 18: a policy reload re-decides live connections: one that keeps the flow leaves the
/// connection alone; one that removes it closes the connection within a second, with a log line
/// naming the peer, the target and the rule; a policy that does not load is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_closes_only_connections_it_refuses() {
    let _g = serial();
    let pki = Pki::new(TD);
    let (echo, _e) = echo_server().await;
    let server = Creds::new(&pki.svid(VECTOR_DB), &pki.bundle_pem());
    let client = Creds::new(&pki.svid(RAG_API), &pki.bundle_pem());
    let file = PolicyFile::new(POLICY_TEXT);
    let _watch = file.watch(false);
    let inb = inbound_with(
        &server,
        echo,
        "vector-db",
        6333,
        Mode::Enforce,
        fast_limits(),
        Arc::clone(&file.store),
    )
    .await;
    let out = outbound(&client, inb.addr, "vector-db", 6333, fast_limits()).await;
    let mut s = open_idle(out.addr).await;

    // A reload that keeps the flow: the connection stays.
    file.write(&policy_with_an_extra_flow());
    wait_log(&["policy reloaded", "file changed"]).await;
    wait_log(&["re-authorized live connections", "closed=0"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"pong").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");

    // A policy that does not load: refused, the current one stays, the connection too.
    file.write("flows: [ { from: rag-api\n");
    wait_log(&["new policy refused", "the current policy stays in force"]).await;
    assert!(file.store.current().flows.len() > 1);
    s.write_all(b"ping").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();

    // A reload that removes the flow: closed within a second.
    file.write(&policy_without_rag_to_vector_db_6333());
    let started = Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    let took = started.elapsed();
    assert!(
        r.is_ok(),
        "the live connection survived a policy that refuses it"
    );
    assert!(
        r.unwrap().is_err(),
        "closed as a clean end of stream, not an error"
    );
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    let line = wait_log(&[
        "live connection closed: no longer authorized",
        RAG_API,
        "reason=no_flow",
    ])
    .await;
    assert!(line.contains("target=vector-db"), "{line}");
    assert!(line.contains("port=6333"), "{line}");
    assert!(line.contains("sigil.yaml"), "{line}");
    assert_eq!(inb.metrics.revoked_closes(Reason::NoFlow), 1);
    wait_for("no live connection", || inb.live.is_empty()).await;
    // New connections are refused by the new policy.
    let fresh = raw_client(inb.addr, Some(&pki.svid(RAG_API)), b"x").await;
    assert!(fresh.data.is_empty());
}

fn count_log(needles: &[&str]) -> usize {
    logs()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// Issue 18: tunnel pairs resume TLS 1.3 sessions (tickets, still a fresh X25519MLKEM768 key
/// exchange), and a resumed session's peer is authorized again against the policy in force:
/// a ticket earned before a reload that removes the flow does not get through after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumption_is_used_and_the_resumed_peer_is_authorized_again() {
    let _g = serial();
    let pki = Pki::new(TD);
    let (echo, _e) = echo_server().await;
    let server = Creds::new(&pki.svid(VECTOR_DB), &pki.bundle_pem());
    let client = Creds::new(&pki.svid(RAG_API), &pki.bundle_pem());
    let file = PolicyFile::new(POLICY_TEXT);
    let inb = inbound_with(
        &server,
        echo,
        "vector-db",
        6333,
        Mode::Enforce,
        fast_limits(),
        Arc::clone(&file.store),
    )
    .await;
    let out = outbound(&client, inb.addr, "vector-db", 6333, fast_limits()).await;
    let resumed = &["connection authorized", RAG_API, "resumed=true"];
    let full = &["connection authorized", RAG_API, "resumed=false"];
    let (r0, f0) = (count_log(resumed), count_log(full));
    for i in 0..4u8 {
        assert_eq!(roundtrip(out.addr, &[i; 10]).await.unwrap(), [i; 10]);
    }
    wait_for("4 connections authorized", || {
        count_log(resumed) + count_log(full) == r0 + f0 + 4
    })
    .await;
    assert_eq!(count_log(full), f0 + 1, "only the first handshake is full");
    let line = wait_log(resumed).await;
    assert!(line.contains("X25519MLKEM768"), "{line}");

    // Our own SVID rotates: the ticket cache is dropped, the next handshake is full.
    let _w = client.watch();
    write_creds(&client.path(), &pki.svid(RAG_API), &pki.bundle_pem());
    wait_generation(&client.store, 2).await;
    assert_eq!(roundtrip(out.addr, b"rotated").await.unwrap(), b"rotated");
    wait_for("a full handshake after the rotation", || {
        count_log(full) == f0 + 2
    })
    .await;

    // The client holds a fresh ticket; the flow is removed; the resumption is refused.
    assert_eq!(roundtrip(out.addr, b"ticket").await.unwrap(), b"ticket");
    file.store.replace(
        sigil_policy::Policy::parse(&policy_without_rag_to_vector_db_6333(), &file.path()).unwrap(),
    );
    let before = inb.metrics.refusals(Reason::NoFlow);
    let r = roundtrip(out.addr, b"after the reload").await;
    assert!(
        r.map(|d| d.is_empty()).unwrap_or(true),
        "a resumed session skipped the policy"
    );
    wait_for("the resumed session refused", || {
        inb.metrics.refusals(Reason::NoFlow) == before + 1
    })
    .await;
}

/// `--key-exchange classical` negotiates X25519 (and never offers ML-KEM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classical_key_exchange_negotiates_x25519() {
    let _g = serial();
    let pki = Pki::new(TD);
    let (echo, _e) = echo_server().await;
    let server = Creds::new(&pki.svid(VECTOR_DB), &pki.bundle_pem());
    let client = Creds::new(&pki.svid(RAG_API), &pki.bundle_pem());
    let limits = Limits {
        key_exchange: sigil_tunnel::KeyExchange::Classical,
        ..fast_limits()
    };
    let inb = inbound(&server, echo, Mode::Enforce, limits).await;
    let out = outbound(&client, inb.addr, "vector-db", 6333, limits).await;
    let before = count_log(&["connection authorized", "kx=Some(X25519)"]);
    assert_eq!(roundtrip(out.addr, b"x25519").await.unwrap(), b"x25519");
    wait_for("an X25519 handshake", || {
        count_log(&["connection authorized", "kx=Some(X25519)"]) == before + 1
    })
    .await;
}

/// SIGHUP reloads the policy (a file change the poll could not see: same size, mtime kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy() {
    let _g = serial();
    let file = PolicyFile::new(POLICY_TEXT);
    let mtime = std::fs::metadata(file.path()).unwrap().modified().unwrap();
    let _watch = file.watch(true);
    let text = POLICY_TEXT.replace("ports: [6333]", "ports: [6334]");
    assert_eq!(text.len(), POLICY_TEXT.len());
    std::fs::write(file.path(), &text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(file.path())
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = file.store.current();
    assert!(before.flows.iter().any(|f| f.ports.contains(&6333)));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the policy reloaded on SIGHUP", || {
        !file
            .store
            .current()
            .flows
            .iter()
            .any(|f| f.ports.contains(&6333))
    })
    .await;
    wait_log(&["policy reloaded", "SIGHUP"]).await;
}

/// Issue 18: a CA removed from the trust bundle closes the connections whose chain leads to it,
/// and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_removed_from_bundle_closes_its_connections() {
    let _g = serial();
    let (old_ca, new_ca) = (Pki::named(TD, "old CA"), Pki::named(TD, "new CA"));
    let both = format!("{}{}", new_ca.bundle_pem(), old_ca.bundle_pem());
    let (echo, _e) = echo_server().await;
    let server = Creds::new(&new_ca.svid(VECTOR_DB), &both);
    let _w = server.watch();
    let inb = inbound(&server, echo, Mode::Enforce, fast_limits()).await;
    let old_client = Creds::new(&old_ca.svid(RAG_API), &both);
    let new_client = Creds::new(&new_ca.svid(RAG_API), &both);
    let out_old = outbound(&old_client, inb.addr, "vector-db", 6333, fast_limits()).await;
    let out_new = outbound(&new_client, inb.addr, "vector-db", 6333, fast_limits()).await;
    let mut s_old = open_idle(out_old.addr).await;
    let mut s_new = open_idle(out_new.addr).await;
    assert_eq!(inb.live.len(), 2);
    // The old CA leaves the server's bundle (same SVID, new bundle file).
    write_creds(
        &server.path(),
        &new_ca.svid(VECTOR_DB),
        &new_ca.bundle_pem(),
    );
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s_old.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "a connection under the removed CA survived");
    let line = wait_log(&[
        "live connection closed: no longer authorized",
        "untrusted_ca",
    ])
    .await;
    assert!(
        line.contains(RAG_API) && line.contains("trust bundle changed"),
        "{line}"
    );
    s_new.write_all(b"pong").await.unwrap();
    let mut buf = [0u8; 4];
    s_new.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    assert_eq!(inb.live.len(), 1);
}

/// `--max-connection-age` closes a connection at that age, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_age_closes() {
    let _g = serial();
    let pki = Pki::new(TD);
    let (echo, _e) = echo_server().await;
    let server = Creds::new(&pki.svid(VECTOR_DB), &pki.bundle_pem());
    let client = Creds::new(&pki.svid(RAG_API), &pki.bundle_pem());
    let limits = Limits {
        max_connection_age: Some(Duration::from_millis(800)),
        ..fast_limits()
    };
    let inb = inbound(&server, echo, Mode::Enforce, limits).await;
    let out = outbound(&client, inb.addr, "vector-db", 6333, fast_limits()).await;
    let started = Instant::now();
    let mut s = open_idle(out.addr).await;
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "outlived its maximum age");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700), "{took:?}");
    wait_log(&["maximum age of 800ms"]).await;
    assert!(
        inb.metrics
            .render()
            .contains("sigil_tunnel_max_age_closes_total{tunnel=\"inbound\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_during_long_transfer_keeps_it_intact() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    let _w1 = p.server.watch();
    let _w2 = p.client.watch();
    let total: usize = 32 * 1024 * 1024;
    let data: Arc<Vec<u8>> = Arc::new((0..total).map(|i| (i * 7 % 251) as u8).collect());
    let want = sha256(&data);
    let s = tokio::net::TcpStream::connect(p.outbound.addr)
        .await
        .unwrap();
    let (mut r, mut w) = s.into_split();
    let d = Arc::clone(&data);
    let writer = tokio::spawn(async move {
        for (i, chunk) in d.chunks(256 * 1024).enumerate() {
            w.write_all(chunk).await.unwrap();
            if i % 8 == 0 {
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
        w.shutdown().await.unwrap();
    });
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(total);
        r.read_to_end(&mut got).await.unwrap();
        got
    });
    // Rotate both ends mid-transfer, with new keys.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "transfer too short to test rotation");
    let new_server = p.pki.svid(VECTOR_DB);
    write_creds(&p.server.path(), &new_server, &p.pki.bundle_pem());
    write_creds(&p.client.path(), &p.pki.svid(RAG_API), &p.pki.bundle_pem());
    for _ in 0..100 {
        if p.server.store.generation() == 2 && p.client.store.generation() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (p.server.store.generation(), p.client.store.generation()),
        (2, 2)
    );
    // New handshakes use the new SVID while the old connection continues.
    let fresh = raw_client(p.inbound.addr, Some(&p.pki.svid(RAG_API)), b"new").await;
    assert_eq!(fresh.data, b"new");
    assert_eq!(fresh.server_cert.as_ref(), Some(&new_server.leaf));
    assert!(
        !writer.is_finished(),
        "transfer finished before rotation was observed"
    );
    writer.await.unwrap();
    let got = reader.await.unwrap();
    assert_eq!(got.len(), total);
    assert_eq!(sha256(&got), want);
    wait_log(&["loaded rotated SVID", VECTOR_DB]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_written_rotation_keeps_current_credentials() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    let _w = p.server.watch();
    let next = p.pki.svid(VECTOR_DB);
    // Only the certificate is renewed: the old key no longer matches.
    std::fs::write(p.server.path().join("svid.pem"), &next.chain_pem).unwrap();
    wait_log(&["rotated credentials do not check out yet"]).await;
    assert_eq!(p.server.store.generation(), 1);
    assert_eq!(
        roundtrip(p.outbound.addr, b"still ok").await.unwrap(),
        b"still ok"
    );
    std::fs::write(p.server.path().join("svid.key"), &next.key_pem).unwrap();
    for _ in 0..100 {
        if p.server.store.generation() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.server.store.generation(), 2);
}

/// Opens `n` connections through the pair at once, echoes a line on each, then closes half
/// cleanly and resets the other half, and waits until both tunnels count no live connection.
async fn open_and_close_many(p: &Pair, n: usize) {
    let mut conns = Vec::with_capacity(n);
    let mut pending = Vec::new();
    for i in 0..n {
        let addr = p.outbound.addr;
        pending.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let msg = format!("conn {i:05}");
            s.write_all(msg.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; msg.len()];
            tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(buf, msg.as_bytes());
            s
        }));
        if pending.len() == 100 {
            for h in pending.drain(..) {
                conns.push(h.await.unwrap());
            }
        }
    }
    for h in pending.drain(..) {
        conns.push(h.await.unwrap());
    }
    assert_eq!(p.inbound.metrics.active(), n as u64);
    assert_eq!(p.outbound.metrics.active(), n as u64);
    // Half the clients close cleanly, half reset.
    for (i, s) in conns.into_iter().enumerate() {
        if i % 2 == 1 {
            // SO_LINGER 0: close sends a reset.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &linger).unwrap();
        }
        drop(s);
    }
    for _ in 0..200 {
        if p.inbound.metrics.active() == 0 && p.outbound.metrics.active() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (p.inbound.metrics.active(), p.outbound.metrics.active()),
        (0, 0)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_connections_no_fd_or_memory_leak() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    // Warm up, then take the baseline.
    assert_eq!(roundtrip(p.outbound.addr, b"warm").await.unwrap(), b"warm");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_before = fd_count();
    const N: usize = 1100;
    // The first rounds grow the allocator's pools to their working size (here RSS levels off
    // after two or three rounds); later rounds of the same load must reuse them. Both tunnels
    // (with their 2 x 1,100 relay buffers, TLS sessions and tasks) live in this process, so a
    // per-connection leak of even one 16 KiB record buffer would add ~70 MiB over four rounds;
    // the bound (32 MiB) leaves room for allocator noise when other tests of this binary ran
    // before (their freed memory fragments the heap this test measures).
    for _ in 0..2 {
        open_and_close_many(&p, N).await;
    }
    let rss_warm = rss_bytes();
    for _ in 0..4 {
        open_and_close_many(&p, N).await;
    }
    let rss_last = rss_bytes();
    let fds_after = fd_count();
    assert!(
        fds_after <= fds_before + 4,
        "fd leak: {fds_before} before, {fds_after} after"
    );
    assert!(
        rss_last <= rss_warm + 32 * 1024 * 1024,
        "memory grew from {} KiB after two rounds of 1,100 connections to {} KiB after four more",
        rss_warm / 1024,
        rss_last / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_times_out() {
    let _g = serial();
    let pki = Pki::new(TD);
    let (echo, _e) = echo_server().await;
    let server = Creds::new(&pki.svid(VECTOR_DB), &pki.bundle_pem());
    let limits = Limits {
        handshake_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let inb = inbound(&server, echo, Mode::Enforce, limits).await;
    let mut s = tokio::net::TcpStream::connect(inb.addr).await.unwrap();
    // Half a record header, then nothing (slowloris).
    s.write_all(&[22, 3]).await.unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "stalled peer not dropped");
    wait_log(&["connection refused", "not finished within 500ms"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_prometheus_text() {
    let _g = serial();
    let p = pair(Mode::Enforce).await;
    roundtrip(p.outbound.addr, b"x").await.unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _t = Task(tokio::spawn(sigil_tunnel::metrics::serve(
        l,
        Arc::clone(&p.inbound.metrics),
    )));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("# TYPE sigil_tunnel_refusals_total counter"));
    assert!(
        out.contains("sigil_tunnel_connections_accepted_total{tunnel=\"inbound\"} 1"),
        "{out}"
    );
}

/// kTLS: runs only where the kernel offers the `tls` ULP; otherwise says why it is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ktls_data_path_where_available() {
    let _g = serial();
    match sigil_tunnel::ktls::detect() {
        sigil_tunnel::ktls::KtlsSupport::Unavailable(why) => {
            eprintln!("SKIPPED ktls_data_path_where_available: {why}");
            // The fallback is what ran: the user-space path carries the data.
            let p = pair(Mode::Enforce).await;
            assert_eq!(
                roundtrip(p.outbound.addr, b"user space").await.unwrap(),
                b"user space"
            );
            assert!(
                p.inbound
                    .metrics
                    .render()
                    .contains("sigil_tunnel_ktls_connections_total{tunnel=\"inbound\"} 0")
            );
            wait_log(&["kernel TLS unavailable", "tcp_available_ulp"]).await;
        }
        sigil_tunnel::ktls::KtlsSupport::Available => {
            let p = pair(Mode::Enforce).await;
            let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
            let got = roundtrip(p.outbound.addr, &data).await.unwrap();
            assert_eq!(sha256(&got), sha256(&data));
            assert!(
                p.inbound
                    .metrics
                    .render()
                    .contains("sigil_tunnel_ktls_connections_total{tunnel=\"inbound\"} 1")
            );
        }
    }
}

#[test]
fn ktls_detection_reads_the_ulp_list() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ulp");
    std::fs::write(&f, "mptcp\n").unwrap();
    let s = sigil_tunnel::ktls::detect_from(&f);
    assert!(
        matches!(&s, sigil_tunnel::ktls::KtlsSupport::Unavailable(w) if w.contains("[mptcp]")),
        "{s:?}"
    );
    std::fs::write(&f, "mptcp tls\n").unwrap();
    assert!(sigil_tunnel::ktls::detect_from(&f).is_available());
    assert!(!sigil_tunnel::ktls::detect_from(&dir.path().join("missing")).is_available());
}

/// An upstream that reads one line, answers `hello <line>` and closes.
async fn greeter() -> (std::net::SocketAddr, Task) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let t = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut line = String::new();
                let mut r = tokio::io::BufReader::new(r);
                use tokio::io::AsyncBufReadExt;
                let _ = r.read_line(&mut line).await;
                let _ = w.write_all(format!("hello {line}").as_bytes()).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, Task(t))
}

async fn s_client(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(["-brief", "-ign_eof"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect(
        "openssl not found: the interop tests need the `openssl` command (apt-get install openssl)",
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"sigil\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("openssl s_client hung")
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_with_and_without_client_certificate() {
    let _g = serial();
    let pki = Pki::new(TD);
    let (up, _u) = greeter().await;
    let server = Creds::new(&pki.svid(VECTOR_DB), &pki.bundle_pem());
    let inb = inbound(&server, up, Mode::Enforce, fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    write_creds(dir.path(), &pki.svid(RAG_API), &pki.bundle_pem());
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (cert, key, ca) = (p("svid.pem"), p("svid.key"), p("bundle.pem"));

    // With the rag-api SVID: TLS 1.3, AES-GCM, the server SVID verifies, data flows.
    let out = s_client(inb.addr, &["-cert", &cert, "-key", &key, "-CAfile", &ca]).await;
    assert!(out.contains("Protocol version: TLSv1.3"), "{out}");
    assert!(out.contains("Ciphersuite: TLS_AES_128_GCM_SHA256"), "{out}");
    assert!(out.contains("Verification: OK"), "{out}");
    assert!(out.contains("hello sigil"), "{out}");

    // TLS 1.2 is refused.
    let out = s_client(
        inb.addr,
        &["-tls1_2", "-cert", &cert, "-key", &key, "-CAfile", &ca],
    )
    .await;
    assert!(!out.contains("hello sigil"), "{out}");
    assert!(
        out.to_lowercase().contains("alert protocol version"),
        "{out}"
    );

    // Without a client certificate: certificate_required, nothing reaches the upstream.
    let out = s_client(inb.addr, &["-CAfile", &ca]).await;
    assert!(!out.contains("hello sigil"), "{out}");
    assert!(out.contains("certificate required"), "{out}");
    wait_log(&["connection refused", "reason=no_certificate", "port=6333"]).await;

    // With a valid SVID of a workload the policy does not allow: access_denied.
    write_creds(dir.path(), &pki.svid(PROMETHEUS), &pki.bundle_pem());
    let out = s_client(inb.addr, &["-cert", &cert, "-key", &key, "-CAfile", &ca]).await;
    assert!(!out.contains("hello sigil"), "{out}");
    assert!(out.contains("access denied"), "{out}");
    wait_for("Reason::NoFlow counted once", || {
        inb.metrics.refusals(Reason::NoFlow) == 1
    })
    .await;
}

/// openssl asks for a KeyUpdate mid-connection (`K` command): the user-space record layer
/// updates its receive key, answers with its own KeyUpdate, and data keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_key_update_is_handled() {
    let _g = serial();
    let pki = Pki::new(TD);
    let (echo, _e) = echo_server().await;
    let server = Creds::new(&pki.svid(VECTOR_DB), &pki.bundle_pem());
    let inb = inbound(&server, echo, Mode::Enforce, fast_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    write_creds(dir.path(), &pki.svid(RAG_API), &pki.bundle_pem());
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let mut child = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &inb.addr.to_string(),
            "-cert",
            &p("svid.pem"),
            "-key",
            &p("svid.key"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl not found: the interop tests need the `openssl` command");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"before\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // "K" on its own line: send a KeyUpdate requesting one back.
    stdin.write_all(b"K\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stdin.write_all(b"after\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stdin.write_all(b"Q\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("before") && stdout.contains("after"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("KEYUPDATE") || stderr.contains("KEYUPDATE"),
        "{stdout}\n{stderr}"
    );
    // Received one, sent one in reply.
    assert!(
        inb.metrics
            .render()
            .contains("sigil_tunnel_key_updates_total{tunnel=\"inbound\"} 2"),
        "{}",
        inb.metrics.render()
    );
}

/// Credentials streamed from the SPIFFE Workload API (`sigil agent`), including rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_source_streams_svid_and_rotations() {
    let _g = serial();
    init_logs();
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    let text = format!(
        r#"
apiVersion: sigil.dev/v1alpha1
kind: Platform
trustDomain: ai.example.org
workloads:
  - name: vector-db
    spiffeId: spiffe://ai.example.org/ns/vectordb/sa/qdrant
    unix: {{ uid: {uid} }}
    ports: [{{ port: 6333 }}]
"#
    );
    let policy = sigil_policy::Policy::parse(&text, std::path::Path::new("test.yaml")).unwrap();
    let authority = Arc::new(
        sigil_agent::local::LocalAuthority::generate(
            &policy.trust_domain,
            Duration::from_secs(4),
            Duration::from_secs(300),
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let _agent = sigil_agent::Agent::start(sigil_agent::AgentConfig {
        socket_path: socket.clone(),
        policy: policy.clone(),
        authority,
        kubelet: None,
        metrics_addr: None,
        rotation: sigil_agent::cache::RotationSettings {
            jitter: 0.0,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(1),
            ..Default::default()
        },
        allow_unauthenticated_verifiers: false,
        proc_root: std::path::PathBuf::from("/proc"),
        metrics: Arc::new(sigil_agent::metrics::Metrics::new()),
    })
    .await
    .unwrap();
    let source =
        sigil_tunnel::WorkloadApiSource::new(&format!("unix://{}", socket.display())).unwrap();
    let (creds, rest) = source.first().await.unwrap();
    assert_eq!(creds.spiffe_id().as_str(), VECTOR_DB);
    let first_expiry = creds.not_after();
    let store = sigil_tunnel::CredentialStore::new(creds);
    let _w = Task(tokio::spawn(rest.watch(Arc::clone(&store))));
    // The agent renews at half-life (2 s); the stream delivers the new SVID.
    for _ in 0..100 {
        if store.generation() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        store.generation() >= 2,
        "no rotation arrived over the Workload API"
    );
    assert!(store.current().not_after() > first_expiry);
    wait_log(&["Workload API sent a rotated SVID", VECTOR_DB]).await;
}

/// SVIDs from the Sigil CA (leaf + intermediate chains) work end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigil_ca_chains_with_intermediate() {
    let _g = serial();
    let now = std::time::SystemTime::now();
    let td = sigil_identity::TrustDomain::new(TD).unwrap();
    let mut ca = sigil_ca::CertificateAuthority::generate(&td, now).unwrap();
    let mut creds = |id: &str| {
        let (issued, key) = ca
            .issue_x509_svid_with_new_key(&id.parse().unwrap(), Duration::from_secs(3600), now)
            .unwrap();
        assert_eq!(issued.chain.len(), 2, "leaf + intermediate");
        let c = sigil_tunnel::Credentials::new(
            issued.chain,
            key,
            ca.bundle().unwrap(),
            std::path::Path::new("memory"),
        )
        .unwrap();
        Creds::from_store(sigil_tunnel::CredentialStore::new(c))
    };
    let server = creds(VECTOR_DB);
    let client = creds(RAG_API);
    let prom = creds(PROMETHEUS);
    let (echo, _e) = echo_server().await;
    let inb = inbound(&server, echo, Mode::Enforce, fast_limits()).await;
    let out = outbound(&client, inb.addr, "vector-db", 6333, fast_limits()).await;
    assert_eq!(
        roundtrip(out.addr, b"via intermediate").await.unwrap(),
        b"via intermediate"
    );
    // Monitoring, with a valid Sigil-CA SVID, is refused by the policy.
    let prom_out = outbound(&prom, inb.addr, "inference", 8002, fast_limits()).await;
    let r = roundtrip(prom_out.addr, b"scrape").await;
    assert!(r.map(|d| d.is_empty()).unwrap_or(true));
    // The outbound refuses first: the server is not the inference workload.
    wait_for("Reason::UnexpectedServer counted once", || {
        prom_out.metrics.refusals(Reason::UnexpectedServer) == 1
    })
    .await;
}
