//! The policy a running tunnel decides with, and its reload: on `SIGHUP` and when the file
//! changes (polled). A new policy that does not load (parse or validation error) is refused with
//! its located error and the current one is kept; an accepted one is published to the handshake
//! verifiers (new connections) and to the re-authorization of live connections.
//!
//! Must not: parse the policy itself (that is `sigil-policy`) or decide anything.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sigil_policy::{Policy, PolicyError};
use tokio::sync::watch;

/// Largest policy file compared for changes (the policy crate enforces its own limit on load).
const MAX_COMPARED_BYTES: u64 = 8 * 1024 * 1024;

/// The current policy of one tunnel process, swappable at run time.
#[derive(Debug)]
pub struct PolicyStore {
    tx: watch::Sender<Arc<Policy>>,
    /// The file's bytes when the current policy was loaded (to tell a real change from a touch).
    loaded: Mutex<Option<Vec<u8>>>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The file is the one already loaded.
    Unchanged,
    /// A new policy is in force.
    Replaced,
}

impl PolicyStore {
    pub fn new(policy: Policy) -> Arc<Self> {
        let bytes = read_bounded(&policy.source);
        Arc::new(Self {
            tx: watch::Sender::new(Arc::new(policy)),
            loaded: Mutex::new(bytes),
        })
    }

    /// The policy new decisions use.
    pub fn current(&self) -> Arc<Policy> {
        Arc::clone(&self.tx.borrow())
    }

    /// Notified on every accepted replacement.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Policy>> {
        self.tx.subscribe()
    }

    /// Puts `policy` in force (re-authorizes live connections through the subscribers).
    pub fn replace(&self, policy: Policy) {
        let bytes = read_bounded(&policy.source);
        if let Ok(mut g) = self.loaded.lock() {
            *g = bytes;
        }
        self.tx.send_replace(Arc::new(policy));
    }

    /// The file the current policy came from.
    pub fn path(&self) -> PathBuf {
        self.tx.borrow().source.clone()
    }

    /// Loads the policy file again. `Err` leaves the current policy in force.
    pub fn reload(&self) -> Result<Reloaded, PolicyError> {
        let path = self.path();
        let bytes = read_bounded(&path);
        let same = match (self.loaded.lock(), &bytes) {
            (Ok(g), Some(b)) => g.as_ref() == Some(b),
            _ => false,
        };
        if same {
            return Ok(Reloaded::Unchanged);
        }
        let policy = Policy::load(&path)?;
        if let Ok(mut g) = self.loaded.lock() {
            *g = bytes;
        }
        self.tx.send_replace(Arc::new(policy));
        Ok(Reloaded::Replaced)
    }

    fn reload_logged(&self, trigger: &str) {
        let path = self.path();
        match self.reload() {
            Ok(Reloaded::Unchanged) => {
                tracing::debug!(trigger, path = %path.display(), "policy file unchanged")
            }
            Ok(Reloaded::Replaced) => {
                tracing::info!(trigger, path = %path.display(), "policy reloaded; live connections are re-authorized")
            }
            Err(e) => {
                tracing::error!(trigger, path = %path.display(), error = %e.to_string().trim_end(),
                "new policy refused; the current policy stays in force")
            }
        }
    }

    /// Reloads on `SIGHUP` (when `sighup` is set) and when the file changes (polled every
    /// `interval`), until dropped. The signal handler is installed before this returns, so a
    /// `SIGHUP` sent after it cannot kill the process.
    pub fn watch(
        self: Arc<Self>,
        interval: Duration,
        sighup: bool,
    ) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = if sighup {
            Some(signal(SignalKind::hangup())?)
        } else {
            None
        };
        let mut last = fingerprint(&self.path());
        Ok(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let got_hup = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => {
                        let now = fingerprint(&self.path());
                        if now != last {
                            last = now;
                            self.reload_logged("file changed");
                        }
                    }
                    _ = got_hup => {
                        last = fingerprint(&self.path());
                        self.reload_logged("SIGHUP");
                    }
                }
            }
        })
    }
}

type Fingerprint = Option<(Option<std::time::SystemTime>, u64)>;

fn fingerprint(path: &std::path::Path) -> Fingerprint {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

fn read_bounded(path: &std::path::Path) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_COMPARED_BYTES {
        return None;
    }
    std::fs::read(path).ok()
}
