//! Drives a rustls handshake over a TCP socket with the unbuffered API, then hands the connection
//! over as a [`KernelConnection`] plus traffic secrets.
//!
//! Reads are whole records only (header, then exactly the body), so the handshake never consumes
//! a byte of application data: what follows the peer's `Finished` stays in the socket for the
//! data path (user-space record layer or kernel TLS).

use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::kernel::KernelConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, SupportedCipherSuite};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::record::HEADER_LEN;

/// Largest record accepted during the handshake (2^14 + 2048, the TLSCiphertext limit).
const MAX_HANDSHAKE_RECORD: usize = 16 * 1024 + 2048;
/// Largest amount of handshake data buffered (rustls caps handshake messages at 64 KiB).
const MAX_HANDSHAKE_BUFFER: usize = 128 * 1024;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("i/o during handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("handshake protocol error: {0}")]
    Protocol(String),
    #[error(
        "the first bytes are not a TLS record ({0}): a plaintext client? hint: connect through `sigil tunnel outbound`, which speaks mTLS"
    )]
    NotTls(String),
}

/// The rustls key schedule, kept after the handshake for KeyUpdate.
pub(crate) trait Rekey: Send {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
    /// A NewSessionTicket body from the peer (client side: stored for resumption).
    fn session_ticket(&mut self, body: &[u8]) -> Result<(), rustls::Error>;
}

impl Rekey for KernelConnection<rustls::client::ClientConnectionData> {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_tx_secret()
    }
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_rx_secret()
    }
    fn session_ticket(&mut self, body: &[u8]) -> Result<(), rustls::Error> {
        self.handle_new_session_ticket(body)
    }
}

impl Rekey for KernelConnection<rustls::server::ServerConnectionData> {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_tx_secret()
    }
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_rx_secret()
    }
    fn session_ticket(&mut self, _body: &[u8]) -> Result<(), rustls::Error> {
        Err(rustls::Error::General(
            "a client sent a NewSessionTicket".to_owned(),
        ))
    }
}

/// A finished handshake.
pub(crate) struct Established {
    pub secrets: ExtractedSecrets,
    pub rekey: Box<dyn Rekey>,
    pub suite: SupportedCipherSuite,
    pub kx_group: Option<rustls::NamedGroup>,
    pub peer_certs: Vec<CertificateDer<'static>>,
    /// A TLS 1.3 resumption: the peer certificates come from the session ticket, and no verifier
    /// ran in this handshake, so the caller must authorize them again.
    pub resumed: bool,
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("suite", &self.suite.suite())
            .field("kx_group", &self.kx_group)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

/// The two sides of the unbuffered API, behind one interface.
pub(crate) trait Side: Sized {
    type Data: 'static;
    fn process<'c, 'i>(&'c mut self, buf: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn finish(self) -> Result<Established, rustls::Error>;
}

impl Side for UnbufferedServerConnection {
    type Data = rustls::server::ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, buf: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(buf)
    }
    fn finish(self) -> Result<Established, rustls::Error> {
        let common: &rustls::CommonState = &self;
        let (suite, kx, peers) = (
            common.negotiated_cipher_suite(),
            common.negotiated_key_exchange_group().map(|g| g.name()),
            common.peer_certificates().map(<[_]>::to_vec),
        );
        let resumed = common.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let (secrets, kconn) = self.dangerous_into_kernel_connection()?;
        Ok(Established {
            secrets,
            rekey: Box::new(kconn),
            suite: suite.ok_or(rustls::Error::HandshakeNotComplete)?,
            kx_group: kx,
            peer_certs: peers.unwrap_or_default(),
            resumed,
        })
    }
}

impl Side for UnbufferedClientConnection {
    type Data = rustls::client::ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, buf: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(buf)
    }
    fn finish(self) -> Result<Established, rustls::Error> {
        let common: &rustls::CommonState = &self;
        let (suite, kx, peers) = (
            common.negotiated_cipher_suite(),
            common.negotiated_key_exchange_group().map(|g| g.name()),
            common.peer_certificates().map(<[_]>::to_vec),
        );
        let resumed = common.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let (secrets, kconn) = self.dangerous_into_kernel_connection()?;
        Ok(Established {
            secrets,
            rekey: Box::new(kconn),
            suite: suite.ok_or(rustls::Error::HandshakeNotComplete)?,
            kx_group: kx,
            peer_certs: peers.unwrap_or_default(),
            resumed,
        })
    }
}

/// Starts a server-side connection.
pub(crate) fn server(
    config: Arc<rustls::ServerConfig>,
) -> Result<UnbufferedServerConnection, rustls::Error> {
    UnbufferedServerConnection::new(config)
}

/// Starts a client-side connection; the name is not checked (SVIDs carry none), so the peer's
/// IP address is used and no SNI is sent.
pub(crate) fn client(
    config: Arc<rustls::ClientConfig>,
    peer: std::net::IpAddr,
) -> Result<UnbufferedClientConnection, rustls::Error> {
    UnbufferedClientConnection::new(config, ServerName::IpAddress(peer.into()))
}

enum Step {
    Read,
    Write,
    Done,
}

/// Runs the handshake to completion.
pub(crate) async fn run<S: Side>(
    mut conn: S,
    sock: &mut TcpStream,
) -> Result<Established, HandshakeError> {
    let mut inbuf = vec![0u8; MAX_HANDSHAKE_RECORD + HEADER_LEN];
    let mut used = 0usize;
    let mut out: Vec<u8> = vec![0u8; 8 * 1024];
    let mut out_len = 0usize;
    let mut first = true;
    loop {
        let incoming = inbuf
            .get_mut(..used)
            .ok_or_else(|| HandshakeError::Protocol("buffer accounting".to_owned()))?;
        let UnbufferedStatus { discard, state } = conn.process(incoming);
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                if discard > 0 {
                    inbuf.copy_within(discard..used, 0);
                    used -= discard;
                }
                flush_alert(&mut conn, inbuf.get_mut(..used).unwrap_or_default(), sock).await;
                return Err(e.into());
            }
        };
        let step = match state {
            ConnectionState::EncodeTlsData(mut enc) => loop {
                let room = out.get_mut(out_len..).unwrap_or_default();
                match enc.encode(room) {
                    Ok(n) => {
                        out_len += n;
                        break None;
                    }
                    Err(EncodeError::InsufficientSize(e)) => {
                        out.resize(out_len + e.required_size, 0);
                    }
                    Err(e) => return Err(HandshakeError::Protocol(e.to_string())),
                }
            },
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                Some(Step::Write)
            }
            ConnectionState::BlockedHandshake => Some(Step::Read),
            ConnectionState::WriteTraffic(_) => Some(Step::Done),
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(HandshakeError::Closed);
            }
            other => {
                return Err(HandshakeError::Protocol(format!(
                    "unexpected state during handshake: {other:?}"
                )));
            }
        };
        if discard > 0 {
            inbuf.copy_within(discard..used, 0);
            used -= discard;
        }
        match step {
            None => {}
            Some(Step::Write) => {
                let data = out.get(..out_len).unwrap_or_default();
                sock.write_all(data).await?;
                out_len = 0;
            }
            Some(Step::Read) => {
                if let Err(e) = read_record(sock, &mut inbuf, &mut used, first).await {
                    if matches!(e, HandshakeError::NotTls(_)) {
                        refuse_not_tls(sock).await;
                    }
                    return Err(e);
                }
                first = false;
            }
            Some(Step::Done) => {
                if out_len > 0 {
                    let data = out.get(..out_len).unwrap_or_default();
                    sock.write_all(data).await?;
                }
                if used != 0 {
                    return Err(HandshakeError::Protocol(format!(
                        "{used} bytes of unprocessed data after the handshake"
                    )));
                }
                return Ok(conn.finish()?);
            }
        }
    }
}

/// After a handshake error rustls has queued a fatal alert (`access_denied`, `bad_certificate`,
/// `certificate_required`, ...): send it, best effort, so the peer learns why. Then half-close
/// and drain what the peer already sent (bounded: 64 KiB, 500 ms): closing a socket with unread
/// data sends a reset, which can destroy the alert before the peer reads it.
async fn flush_alert<S: Side>(conn: &mut S, incoming: &mut [u8], sock: &mut TcpStream) {
    let mut out = vec![0u8; 512];
    let mut len = 0;
    for _ in 0..4 {
        let status = conn.process(incoming);
        match status.state {
            Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                if let Ok(n) = enc.encode(out.get_mut(len..).unwrap_or_default()) {
                    len += n;
                }
            }
            Ok(ConnectionState::TransmitTlsData(t)) => {
                t.done();
                break;
            }
            _ => break,
        }
    }
    if let Some(data) = out.get(..len).filter(|d| !d.is_empty()) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sock.write_all(data)).await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        sock.shutdown().await.ok()?;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match sock.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        Some(())
    })
    .await;
}

/// A plaintext `unexpected_message` fatal alert (TLS 1.2 record version, as before keys exist).
const ALERT_UNEXPECTED_MESSAGE: [u8; 7] = [21, 3, 3, 0, 2, 2, 10];

/// A peer that does not speak TLS gets a fatal alert (meaningless to it, nothing in clear) and
/// the connection is closed at once; what it sent is not drained (it is not waiting for an alert).
async fn refuse_not_tls(sock: &mut TcpStream) {
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
        sock.write_all(&ALERT_UNEXPECTED_MESSAGE).await.ok()?;
        sock.shutdown().await.ok()
    })
    .await;
}

/// Whether a record header can start a TLS 1.3 handshake flight: content type handshake (22),
/// or an alert (21) from a peer that refuses us, and a 3.x record version. Anything else (an
/// HTTP request line, an SSH banner, a TLS-in-TLS mistake) is refused before waiting for a body
/// its header never announced.
fn plausible_first_record(header: &[u8; HEADER_LEN]) -> bool {
    matches!(header, [21 | 22, 3, 1..=4, _, _])
}

/// Whether a later handshake record header is TLS: change_cipher_spec (20, middlebox
/// compatibility), alert, handshake or application data (23, the encrypted flight).
fn plausible_record(header: &[u8; HEADER_LEN]) -> bool {
    matches!(header, [20..=23, 3, 1..=4, _, _])
}

fn printable(bytes: &[u8]) -> String {
    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
    format!("{text:?}")
}

/// Appends exactly one TLS record to `buf`. The first record of the handshake must be a
/// handshake or alert record; the check runs on the 5-byte header, so a plaintext client is
/// refused at once instead of waiting out the handshake timeout for a body that never comes.
async fn read_record(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    used: &mut usize,
    first: bool,
) -> Result<(), HandshakeError> {
    let mut header = [0u8; HEADER_LEN];
    match sock.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(HandshakeError::Closed);
        }
        Err(e) => return Err(e.into()),
    }
    if first && !plausible_first_record(&header) {
        return Err(HandshakeError::NotTls(printable(&header)));
    }
    if !plausible_record(&header) {
        return Err(HandshakeError::Protocol(format!(
            "record header {header:?} is not TLS"
        )));
    }
    let [_, _, _, l0, l1] = header;
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    if len > MAX_HANDSHAKE_RECORD {
        return Err(HandshakeError::Protocol(format!(
            "record of {len} bytes during the handshake"
        )));
    }
    let end = *used + HEADER_LEN + len;
    if end > MAX_HANDSHAKE_BUFFER {
        return Err(HandshakeError::Protocol(
            "handshake larger than 128 KiB".to_owned(),
        ));
    }
    if buf.len() < end {
        buf.resize(end, 0);
    }
    let slot = buf
        .get_mut(*used..end)
        .ok_or_else(|| HandshakeError::Protocol("buffer accounting".to_owned()))?;
    let (h, body) = slot.split_at_mut(HEADER_LEN);
    h.copy_from_slice(&header);
    match sock.read_exact(body).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(HandshakeError::Closed);
        }
        Err(e) => return Err(e.into()),
    }
    *used = end;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_record_must_be_handshake_or_alert() {
        // A TLS 1.3 ClientHello (legacy record version 3.1), a ServerHello (3.3), an alert.
        assert!(plausible_first_record(&[22, 3, 1, 0, 200]));
        assert!(plausible_first_record(&[22, 3, 3, 0, 90]));
        assert!(plausible_first_record(&[21, 3, 3, 0, 2]));
        for bad in [
            *b"GET /",
            *b"SSH-2",
            *b"PRI *",
            [23, 3, 3, 0, 10],
            [22, 2, 0, 0, 1],
        ] {
            assert!(!plausible_first_record(&bad), "{bad:?}");
        }
        assert!(plausible_record(&[20, 3, 3, 0, 1]));
        assert!(plausible_record(&[23, 3, 3, 0, 100]));
        assert!(!plausible_record(b"HTTP/"));
        assert_eq!(printable(b"GET /"), "\"GET /\"");
    }
}
