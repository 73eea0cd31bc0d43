//! Connection guard of the HTTPS listener: a cap on connections served at once and a deadline
//! for every phase a client controls, so that clients which open connections and never finish a
//! request (slowloris, half-open TLS) cannot hold the server's file descriptors.
//!
//! - **max connections**: the accept loop takes a permit before `accept()`; at the cap it stops
//!   accepting, and new connections wait in the kernel's listen backlog (holding no descriptor
//!   of the server) until a served one closes. Every served connection ends within the deadlines
//!   below, so a waiting client is answered within about one header timeout.
//! - **header timeout**: from accept to the end of the first request's headers, the TLS
//!   handshake included; one absolute deadline, so trickling bytes does not extend it.
//! - **idle timeout**: a keep-alive connection must send the complete headers of its next
//!   request within this long after the previous response (hyper's `header_read_timeout`,
//!   which starts when the connection goes idle).
//! - **body timeout**: a request's body must arrive within this long after its headers; the
//!   answer is then `408 body_timeout` and the connection is closed.
//!
//! The webhook (`sigil-guard`) applies the same rules with its own copy of this thin loop: the
//! two crates share no crate that does I/O, and the logic is a few lines over hyper and tokio.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, SizeHint};

use super::metrics::ConnMetrics;

/// Limits of the HTTPS listener. See the module documentation for what each one bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
}

/// Default `max_connections`: well below the common soft limit of 1024 descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default header timeout (TLS handshake and first request headers).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default keep-alive idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default body timeout.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

impl ConnLimits {
    /// Refuses a zero limit (it would refuse every connection or close it at once).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max connections is 0; hint: at least 1 (default 512)".to_owned());
        }
        for (name, d) in [
            ("header timeout", self.header_timeout),
            ("idle timeout", self.idle_timeout),
            ("body timeout", self.body_timeout),
        ] {
            if d.is_zero() {
                return Err(format!(
                    "{name} is 0s; hint: use a positive duration such as 10s"
                ));
            }
        }
        Ok(())
    }
}

/// Counts a served connection in `connections_open` while it lives.
#[derive(Debug)]
pub struct OpenGuard(ConnMetrics);

impl OpenGuard {
    pub fn new(m: &ConnMetrics) -> Self {
        m.open.inc();
        Self(m.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.dec();
    }
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body that fails once its deadline passes, and says so in `fired`.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    fired: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration, fired: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
            fired,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.fired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Takes a connection permit, counting a wait when the cap is reached.
pub async fn permit(
    slots: &Arc<tokio::sync::Semaphore>,
    m: &ConnMetrics,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match slots.clone().try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) => {
            m.limited.inc();
            tracing::debug!("connection limit reached; new connections wait in the backlog");
            slots.clone().acquire_owned().await.ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_with_the_field_named() {
        assert!(ConnLimits::default().validate().is_ok());
        let e = ConnLimits {
            max_connections: 0,
            ..ConnLimits::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("max connections"), "{e}");
        let e = ConnLimits {
            body_timeout: Duration::ZERO,
            ..ConnLimits::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("body timeout"), "{e}");
    }
}
