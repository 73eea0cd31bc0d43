//! Live connections of one tunnel end, and their re-authorization when the state that authorized
//! them changes.
//!
//! The model (the one ztunnel and Linkerd use): a connection is authenticated once, by its
//! handshake; afterwards its life does not depend on the lifetime of the peer's certificate —
//! the peer's SVID may rotate or expire while the connection carries a training job's traffic for
//! days — but on its *authorization* staying true. When the policy is reloaded or the trust
//! bundle changes, every live connection is decided again against the new state (the chain it
//! presented is checked against the new bundle at the time it was presented, its SPIFFE ID
//! against the new policy), and only the connections the new state refuses are closed, each with
//! a log line naming the peer, the target and the rule. An optional maximum age closes
//! connections for operators who want a bound anyway.
//!
//! Must not: decide (the decision is the caller's closure) or touch sockets (the relay selects on
//! [`Stop::wait`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_identity::SpiffeId;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::authz::Refusal;
use crate::metrics::Metrics;

/// What a live connection was authorized with.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub id: SpiffeId,
    /// The chain the peer presented, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// When the chain was verified; a bundle change re-checks the chain at this time, so an
    /// SVID that expired since does not end the connection but a removed CA does.
    pub verified_at: UnixTime,
}

/// The verdict on one live connection under a new state.
#[derive(Debug)]
pub(crate) enum Verdict {
    Keep,
    Close(Refusal),
    /// Dry-run: the policy would refuse it; logged, kept.
    WouldClose(Refusal),
}

struct Entry {
    peer: Arc<Peer>,
    close: oneshot::Sender<Refusal>,
}

/// The live connections of one tunnel end.
#[derive(Default)]
pub struct LiveConnections {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for LiveConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConnections")
            .field("len", &self.len())
            .finish()
    }
}

impl LiveConnections {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Connections registered and not yet ended.
    pub fn len(&self) -> usize {
        self.conns.lock().map_or(0, |g| g.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers an authorized connection; dropping the [`Stop`] unregisters it.
    pub(crate) fn register(self: &Arc<Self>, peer: Peer, max_age: Option<Duration>) -> Stop {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut g) = self.conns.lock() {
            g.insert(
                id,
                Entry {
                    peer: Arc::new(peer),
                    close: tx,
                },
            );
        }
        Stop {
            id,
            live: Arc::clone(self),
            closed: rx,
            max_age,
            deadline: max_age.map(|a| Instant::now() + a),
        }
    }

    /// Decides every live connection again with `decide` (outside the lock) and closes the ones
    /// it refuses: each refusal is logged with peer, target, port, reason and rule, and counted.
    /// Returns how many were closed.
    pub(crate) fn reauthorize(
        &self,
        metrics: &Metrics,
        decide: impl Fn(&Peer) -> Verdict,
    ) -> usize {
        let snapshot: Vec<(u64, Arc<Peer>)> = match self.conns.lock() {
            Ok(g) => g.iter().map(|(k, e)| (*k, Arc::clone(&e.peer))).collect(),
            Err(_) => return 0,
        };
        let mut refused = Vec::new();
        for (id, peer) in snapshot {
            match decide(&peer) {
                Verdict::Keep => {}
                Verdict::WouldClose(r) => r.report(metrics, true),
                Verdict::Close(r) => refused.push((id, r)),
            }
        }
        let mut closed = 0;
        for (id, r) in refused {
            let entry = self.conns.lock().ok().and_then(|mut g| g.remove(&id));
            if let Some(e) = entry {
                r.report_close(metrics);
                // The relay may have ended meanwhile; nothing to close then.
                if e.close.send(r).is_ok() {
                    closed += 1;
                }
            }
        }
        closed
    }
}

/// Why a live connection must end before its peers close it.
#[derive(Debug)]
pub(crate) enum Stopped {
    /// The new policy or bundle refuses it (already logged).
    Revoked(Box<Refusal>),
    /// It reached the configured maximum age.
    MaxAge(Duration),
}

/// A registered connection's stop signal; unregisters on drop.
pub(crate) struct Stop {
    id: u64,
    live: Arc<LiveConnections>,
    closed: oneshot::Receiver<Refusal>,
    max_age: Option<Duration>,
    deadline: Option<Instant>,
}

impl Stop {
    /// Resolves when the connection must be closed.
    pub(crate) async fn wait(&mut self) -> Stopped {
        let (deadline, max_age) = (self.deadline, self.max_age.unwrap_or_default());
        let revoked = async {
            match (&mut self.closed).await {
                Ok(r) => Stopped::Revoked(Box::new(r)),
                Err(_) => std::future::pending().await,
            }
        };
        let aged = async {
            match deadline {
                Some(d) => {
                    tokio::time::sleep_until(d).await;
                    Stopped::MaxAge(max_age)
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            s = revoked => s,
            s = aged => s,
        }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        if let Ok(mut g) = self.live.conns.lock() {
            g.remove(&self.id);
        }
    }
}
