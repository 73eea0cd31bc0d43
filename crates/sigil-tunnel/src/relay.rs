//! The user-space data path: plaintext socket <-> TLS 1.3 records <-> TCP socket.
//!
//! One task per direction, so the two directions of a busy connection run on two cores. Each
//! direction reads straight into its record buffer (`readv` into record-sized slots on the way
//! out, one large `read` on the way in), seals or opens in place, and writes the batch with one
//! (vectored) write. Buffers start at one record and double, up to 64 records (1 MiB), while reads keep
//! filling them, so idle connections stay small and bulk ones make few system calls.
//!
//! Closing: EOF from the plaintext side sends `close_notify` and half-closes the TLS side; a
//! `close_notify` from the peer half-closes the plaintext side. A TLS EOF without `close_notify`
//! (truncation), a bad record or a fatal alert resets the plaintext side instead, so the
//! application sees an error rather than a clean end of stream.

use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tracing::Instrument;

use crate::handshake::{Established, Rekey};
use crate::live::{Stop, Stopped};
use crate::metrics::Metrics;
use crate::record::{
    self, CONTENT_ALERT, CONTENT_APPLICATION_DATA, CONTENT_HANDSHAKE, HEADER_LEN, MAX_PLAINTEXT,
    MAX_RECORD_WIRE, PostHandshake, RecordError, RecordKey, TAG_LEN,
};

/// Most records batched per read/write.
const MAX_SLOTS: usize = 64;
/// Receive buffer bounds.
const RX_MIN: usize = MAX_RECORD_WIRE + 256;
const RX_MAX: usize = MAX_SLOTS * MAX_RECORD_WIRE + 256;

/// Why a relay ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("record: {0}")]
    Record(#[from] RecordError),
    #[error("peer closed the TLS connection without close_notify (possible truncation)")]
    Truncated,
    #[error("peer sent alert level {0} description {1}")]
    Alert(u8, u8),
    #[error("unexpected record content type {0} after the handshake")]
    UnexpectedContent(u8),
    #[error("post-handshake message: {0}")]
    PostHandshake(String),
    #[error("key update: {0}")]
    KeyUpdate(String),
    #[error("closed: no longer authorized ({0})")]
    Revoked(Box<crate::authz::Refusal>),
    #[error("closed: the connection reached the maximum age of {0:?} (--max-connection-age)")]
    MaxAge(std::time::Duration),
    #[error("relay task failed: {0}")]
    Task(String),
}

/// rustls' key schedule shared by the two directions, for KeyUpdate.
pub(crate) struct KeyState {
    rekey: Mutex<Box<dyn Rekey>>,
    tx_update_requested: AtomicBool,
    /// Records after which the sending key is updated (below the suite's confidentiality limit).
    tx_limit: u64,
}

impl KeyState {
    pub(crate) fn new(rekey: Box<dyn Rekey>, confidentiality_limit: u64) -> Arc<Self> {
        Arc::new(Self {
            rekey: Mutex::new(rekey),
            tx_update_requested: AtomicBool::new(false),
            tx_limit: confidentiality_limit.saturating_sub(1024),
        })
    }

    /// Hands a NewSessionTicket to rustls (the client's session cache, for resumption).
    fn session_ticket(&self, body: &[u8]) -> Result<(), RelayError> {
        let mut g = self
            .rekey
            .lock()
            .map_err(|_| RelayError::KeyUpdate("key schedule lock poisoned".to_owned()))?;
        g.session_ticket(body)
            .map_err(|e| RelayError::PostHandshake(format!("NewSessionTicket: {e}")))
    }

    fn update(&self, tx: bool) -> Result<RecordKey, RelayError> {
        let mut g = self
            .rekey
            .lock()
            .map_err(|_| RelayError::KeyUpdate("key schedule lock poisoned".to_owned()))?;
        let (seq, secrets) = if tx { g.update_tx() } else { g.update_rx() }
            .map_err(|e| RelayError::KeyUpdate(e.to_string()))?;
        Ok(RecordKey::new(seq, &secrets)?)
    }
}

/// The confidentiality limit of the negotiated suite (records per key).
pub(crate) fn confidentiality_limit(est: &Established) -> u64 {
    est.suite
        .tls13()
        .map_or(1 << 23, |s| s.common.confidentiality_limit)
}

/// Makes the next close of `sock` send a reset (SO_LINGER 0), so the application sees an error
/// instead of a clean end of stream.
pub(crate) fn reset_on_close(sock: &impl std::os::fd::AsFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::Linger, &linger);
}

/// Aborts a spawned task when dropped, so no direction outlives its connection.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ends a stopped connection: the plaintext side is reset (through `plain`, a duplicate of its
/// descriptor), so the application sees an error and not a clean end; the TLS side is closed
/// when the caller drops it, which the peer tunnel treats as truncation.
pub(crate) fn stopped(
    why: Stopped,
    plain: &impl std::os::fd::AsFd,
    metrics: &Metrics,
) -> RelayError {
    reset_on_close(plain);
    match why {
        Stopped::Revoked(r) => RelayError::Revoked(r),
        Stopped::MaxAge(age) => {
            metrics.max_age_close();
            RelayError::MaxAge(age)
        }
    }
}

/// Relays until both directions are closed, an error occurs, or `stop` fires.
pub(crate) async fn run(
    tls: TcpStream,
    plain: TcpStream,
    est: Established,
    mut stop: Stop,
    metrics: Arc<Metrics>,
) -> Result<(), RelayError> {
    let limit = confidentiality_limit(&est);
    let Established { secrets, rekey, .. } = est;
    let (tx_seq, tx_secrets) = secrets.tx;
    let (rx_seq, rx_secrets) = secrets.rx;
    let tx_key = RecordKey::new(tx_seq, &tx_secrets)?;
    let rx_key = RecordKey::new(rx_seq, &rx_secrets)?;
    drop((tx_secrets, rx_secrets));
    let keys = KeyState::new(rekey, limit);
    let plain_fd = std::os::fd::AsFd::as_fd(&plain).try_clone_to_owned()?;
    let (tls_r, tls_w) = tls.into_split();
    let (plain_r, plain_w) = plain.into_split();

    let rx = tokio::spawn(
        rx_loop(
            tls_r,
            plain_w,
            rx_key,
            Arc::clone(&keys),
            Arc::clone(&metrics),
        )
        .instrument(tracing::Span::current()),
    );
    let _abort_rx = AbortOnDrop(rx.abort_handle());
    let tx = tx_loop(plain_r, tls_w, tx_key, keys, Arc::clone(&metrics));
    tokio::pin!(tx, rx);
    let (mut tx_done, mut rx_done) = (false, false);
    let stopping = stop.wait();
    tokio::pin!(stopping);
    while !(tx_done && rx_done) {
        tokio::select! {
            r = &mut tx, if !tx_done => { r?; tx_done = true; }
            r = &mut rx, if !rx_done => {
                r.map_err(|e| RelayError::Task(e.to_string()))??;
                rx_done = true;
            }
            why = &mut stopping => return Err(stopped(why, &plain_fd, &metrics)),
        }
    }
    Ok(())
}

/// Plaintext -> records.
async fn tx_loop(
    plain_r: OwnedReadHalf,
    mut tls_w: OwnedWriteHalf,
    mut key: RecordKey,
    keys: Arc<KeyState>,
    metrics: Arc<Metrics>,
) -> Result<(), RelayError> {
    let mut slots = 1usize;
    let mut buf = vec![0u8; slots * MAX_RECORD_WIRE];
    loop {
        plain_r.readable().await?;
        let read = {
            let mut iov: Vec<IoSliceMut<'_>> = buf
                .chunks_mut(MAX_RECORD_WIRE)
                .filter_map(|c| c.get_mut(HEADER_LEN..HEADER_LEN + MAX_PLAINTEXT))
                .map(IoSliceMut::new)
                .collect();
            plain_r.try_read_vectored(&mut iov)
        };
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if keys.tx_update_requested.swap(false, Ordering::AcqRel) || key.seq() >= keys.tx_limit {
            key = send_key_update(&mut tls_w, key, &keys).await?;
            metrics.key_update();
        }
        if n == 0 {
            let mut rec = [0u8; HEADER_LEN + 2 + 1 + TAG_LEN];
            if let Some(body) = rec.get_mut(HEADER_LEN..HEADER_LEN + 2) {
                body.copy_from_slice(&record::CLOSE_NOTIFY);
            }
            let len = key.seal(&mut rec, 2, CONTENT_ALERT)?;
            tls_w.write_all(rec.get(..len).unwrap_or_default()).await?;
            tls_w.shutdown().await?;
            return Ok(());
        }
        let mut total = 0;
        let mut left = n;
        for slot in buf.chunks_mut(MAX_RECORD_WIRE) {
            if left == 0 {
                break;
            }
            let len = left.min(MAX_PLAINTEXT);
            total += key.seal(slot, len, CONTENT_APPLICATION_DATA)?;
            left -= len;
        }
        tls_w
            .write_all(buf.get(..total).unwrap_or_default())
            .await?;
        metrics.sent(n);
        if n == slots * MAX_PLAINTEXT && slots < MAX_SLOTS {
            slots *= 2;
            buf.resize(slots * MAX_RECORD_WIRE, 0);
        }
    }
}

/// Sends a KeyUpdate (not requesting one back) under the old key, then switches keys.
async fn send_key_update(
    tls_w: &mut OwnedWriteHalf,
    mut key: RecordKey,
    keys: &KeyState,
) -> Result<RecordKey, RelayError> {
    let msg = record::key_update_message(false);
    let mut rec = [0u8; HEADER_LEN + 5 + 1 + TAG_LEN];
    if let Some(body) = rec.get_mut(HEADER_LEN..HEADER_LEN + msg.len()) {
        body.copy_from_slice(&msg);
    }
    let len = key.seal(&mut rec, msg.len(), CONTENT_HANDSHAKE)?;
    tls_w.write_all(rec.get(..len).unwrap_or_default()).await?;
    tracing::debug!("sent TLS 1.3 KeyUpdate");
    keys.update(true)
}

/// Records -> plaintext.
async fn rx_loop(
    tls_r: OwnedReadHalf,
    plain_w: OwnedWriteHalf,
    key: RecordKey,
    keys: Arc<KeyState>,
    metrics: Arc<Metrics>,
) -> Result<(), RelayError> {
    let mut guard = NoFinOnDrop(Some(plain_w));
    let plain_w = guard
        .0
        .as_mut()
        .ok_or_else(|| RelayError::Task("write half missing".to_owned()))?;
    let r = rx_inner(&tls_r, plain_w, key, &keys, &metrics).await;
    if r.is_err() {
        // Make the application see an error, not a clean end of stream.
        reset_on_close(plain_w.as_ref());
    }
    r
}

/// Dropping a write half shuts it down (a FIN), which the application would read as a clean end
/// of stream before the reset of an aborted connection arrives; a clean end is sent explicitly
/// (after `close_notify`), so the write half is never shut down on drop, also when the task is
/// aborted (a revoked connection).
struct NoFinOnDrop(Option<OwnedWriteHalf>);

impl Drop for NoFinOnDrop {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.forget();
        }
    }
}

async fn rx_inner(
    tls_r: &OwnedReadHalf,
    plain_w: &mut OwnedWriteHalf,
    mut key: RecordKey,
    keys: &KeyState,
    metrics: &Metrics,
) -> Result<(), RelayError> {
    let mut buf = vec![0u8; RX_MIN];
    let mut filled = 0usize;
    let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(MAX_SLOTS);
    loop {
        tls_r.readable().await?;
        let space = buf.len() - filled;
        let n = match tls_r.try_read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(RelayError::Truncated);
        }
        filled += n;
        let mut pos = 0usize;
        let mut closed = false;
        ranges.clear();
        while let Some(hdr) = buf
            .get(pos..pos + HEADER_LEN)
            .filter(|_| pos + HEADER_LEN <= filled)
        {
            let header: [u8; HEADER_LEN] =
                hdr.try_into().map_err(|_| RecordError::Buffer("header"))?;
            let blen = record::body_len(header)?;
            let end = pos + HEADER_LEN + blen;
            if end > filled {
                break;
            }
            let body = buf
                .get_mut(pos + HEADER_LEN..end)
                .ok_or(RecordError::Buffer("body"))?;
            let (ct, len) = key.open(header, body)?;
            let plain = body.get(..len).unwrap_or_default();
            match ct {
                CONTENT_APPLICATION_DATA => {
                    if len > 0 {
                        ranges.push((pos + HEADER_LEN, len));
                    }
                }
                CONTENT_ALERT => match plain {
                    [_, 0] => {
                        closed = true;
                        pos = end;
                        break;
                    }
                    [level, desc] => return Err(RelayError::Alert(*level, *desc)),
                    _ => return Err(RelayError::PostHandshake("malformed alert".to_owned())),
                },
                CONTENT_HANDSHAKE => {
                    for m in
                        record::parse_post_handshake(plain).map_err(RelayError::PostHandshake)?
                    {
                        match m {
                            PostHandshake::KeyUpdate { update_requested } => {
                                key = keys.update(false)?;
                                metrics.key_update();
                                tracing::debug!(update_requested, "peer sent TLS 1.3 KeyUpdate");
                                if update_requested {
                                    keys.tx_update_requested.store(true, Ordering::Release);
                                }
                            }
                            PostHandshake::NewSessionTicket { start, len } => {
                                let ticket = plain
                                    .get(start..start + len)
                                    .ok_or(RecordError::Buffer("ticket"))?;
                                keys.session_ticket(ticket)?;
                            }
                        }
                    }
                }
                other => return Err(RelayError::UnexpectedContent(other)),
            }
            pos = end;
        }
        let mut total = 0;
        {
            let mut iov: Vec<IoSlice<'_>> = ranges
                .iter()
                .filter_map(|&(start, len)| buf.get(start..start + len))
                .map(IoSlice::new)
                .collect();
            let mut slices: &mut [IoSlice<'_>] = &mut iov;
            while !slices.is_empty() {
                let w = plain_w.write_vectored(slices).await?;
                if w == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
                }
                total += w;
                IoSlice::advance_slices(&mut slices, w);
            }
        }
        metrics.received(total);
        buf.copy_within(pos..filled, 0);
        filled -= pos;
        if closed {
            plain_w.shutdown().await?;
            return Ok(());
        }
        if n == space && buf.len() < RX_MAX {
            let grown = (buf.len() * 2).min(RX_MAX);
            buf.resize(grown, 0);
        }
    }
}
