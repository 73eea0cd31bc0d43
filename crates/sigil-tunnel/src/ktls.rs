//! Kernel TLS: after the rustls handshake, the traffic keys go to the kernel (`TCP_ULP` "tls",
//! `TLS_TX`/`TLS_RX`) and the relay moves bytes with `splice` through a pipe, so bulk data never
//! crosses user space.
//!
//! Detection: `/proc/sys/net/ipv4/tcp_available_ulp` must list `tls`; otherwise the tunnel logs it
//! once at start and uses the user-space record layer. Setup failures on a connection (an older
//! kernel without TLS 1.3 or the negotiated cipher) fall back to user space for that connection,
//! which is possible because nothing has been sent under the new keys yet.
//!
//! The TLS 1.3 KeyUpdate limitation, handled explicitly: the kernel's record layer cannot derive
//! new keys, and re-keying a kTLS socket is not available on every kernel. So on this path:
//! - we never send KeyUpdate; instead the connection is closed (with `close_notify`) before the
//!   sending key reaches the suite's confidentiality limit, and the client reconnects;
//! - a KeyUpdate, or any handshake message other than NewSessionTicket, from the peer arrives as
//!   a non-data record: we read it with `recvmsg` and close the connection with a logged error
//!   rather than decrypt with a stale key. Sigil peers never send KeyUpdate on their own before
//!   the confidentiality limit, so this affects only foreign peers that rekey early.
//!
//! Owns no `unsafe`: socket options and `splice` go through `nix`; sending `close_notify` (a
//! control message) goes through the `ktls` crate's stream shutdown.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::socket::sockopt::{TcpTlsRx, TcpTlsTx, TcpUlp, TlsCryptoInfo};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, TlsGetRecordType, recvmsg, setsockopt};
use rustls::ConnectionTrafficSecrets;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::handshake::Established;
use crate::live::Stop;
use crate::metrics::Metrics;
use crate::record::{self, PostHandshake};
use crate::relay::RelayError;

/// Where the kernel lists the TCP upper-layer protocols it offers.
pub const ULP_LIST: &str = "/proc/sys/net/ipv4/tcp_available_ulp";

/// How the data path is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KtlsMode {
    /// kTLS when the kernel offers it, else user space.
    #[default]
    Auto,
    /// Always user space.
    Off,
}

/// Whether kernel TLS can be used here, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KtlsSupport {
    Available,
    Unavailable(String),
}

impl KtlsSupport {
    pub fn is_available(&self) -> bool {
        matches!(self, KtlsSupport::Available)
    }
}

/// Reads the ULP list and decides.
pub fn detect() -> KtlsSupport {
    detect_from(Path::new(ULP_LIST))
}

/// [`detect`] on another file (tests).
pub fn detect_from(path: &Path) -> KtlsSupport {
    match std::fs::read_to_string(path) {
        Ok(list) if list.split_whitespace().any(|u| u == "tls") => KtlsSupport::Available,
        Ok(list) => KtlsSupport::Unavailable(format!(
            "{} lists [{}] and no `tls` ULP (hint: `modprobe tls`, or a kernel built with CONFIG_TLS)",
            path.display(),
            list.trim()
        )),
        Err(e) => KtlsSupport::Unavailable(format!("cannot read {}: {e}", path.display())),
    }
}

/// Why kTLS could not be set up on a connection.
#[derive(Debug, thiserror::Error)]
pub enum KtlsError {
    #[error("setsockopt {what}: {errno}")]
    Sockopt {
        what: &'static str,
        errno: nix::Error,
    },
    #[error("cipher suite not offloadable: {0}")]
    Cipher(String),
}

fn crypto_info(seq: u64, s: &ConnectionTrafficSecrets) -> Result<TlsCryptoInfo, KtlsError> {
    let version = libc::TLS_1_3_VERSION;
    let bad = |what: &str| KtlsError::Cipher(what.to_owned());
    let rec_seq = seq.to_be_bytes();
    Ok(match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
            let iv = iv.as_ref();
            TlsCryptoInfo::Aes128Gcm(libc::tls12_crypto_info_aes_gcm_128 {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::TLS_CIPHER_AES_GCM_128,
                },
                iv: iv
                    .get(4..12)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| bad("iv"))?,
                key: key.as_ref().try_into().map_err(|_| bad("key length"))?,
                salt: iv
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| bad("salt"))?,
                rec_seq,
            })
        }
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
            let iv = iv.as_ref();
            TlsCryptoInfo::Aes256Gcm(libc::tls12_crypto_info_aes_gcm_256 {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::TLS_CIPHER_AES_GCM_256,
                },
                iv: iv
                    .get(4..12)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| bad("iv"))?,
                key: key.as_ref().try_into().map_err(|_| bad("key length"))?,
                salt: iv
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| bad("salt"))?,
                rec_seq,
            })
        }
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            TlsCryptoInfo::Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305 {
                info: libc::tls_crypto_info {
                    version,
                    cipher_type: libc::TLS_CIPHER_CHACHA20_POLY1305,
                },
                iv: iv.as_ref().try_into().map_err(|_| bad("iv"))?,
                key: key.as_ref().try_into().map_err(|_| bad("key length"))?,
                salt: [],
                rec_seq,
            })
        }
        _ => return Err(bad("unknown suite")),
    })
}

/// Installs the traffic keys in the kernel. On error nothing has been sent with them, so the
/// caller may continue in user space.
pub(crate) fn enable(sock: &TcpStream, est: &Established) -> Result<(), KtlsError> {
    let (tx_seq, tx) = &est.secrets.tx;
    let (rx_seq, rx) = &est.secrets.rx;
    let tx = crypto_info(*tx_seq, tx)?;
    let rx = crypto_info(*rx_seq, rx)?;
    setsockopt(sock, TcpUlp::default(), &b"tls".as_slice()).map_err(|errno| {
        KtlsError::Sockopt {
            what: "TCP_ULP tls",
            errno,
        }
    })?;
    setsockopt(sock, TcpTlsTx, &tx).map_err(|errno| KtlsError::Sockopt {
        what: "TLS_TX",
        errno,
    })?;
    setsockopt(sock, TcpTlsRx, &rx).map_err(|errno| KtlsError::Sockopt {
        what: "TLS_RX",
        errno,
    })?;
    Ok(())
}

/// A non-blocking pipe for one direction, enlarged to 1 MiB where allowed.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    held: usize,
}

impl Pipe {
    fn new() -> std::io::Result<Self> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let _ = fcntl(w.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(1 << 20));
        Ok(Self { r, w, held: 0 })
    }
}

const SPLICE_LEN: usize = 1 << 20;

fn splice_flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// One step of `from -> pipe -> to`: returns bytes moved, or `None` at EOF. `Err` with
/// `InvalidData`/EIO from a kTLS socket means a control record is waiting.
async fn splice_step(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &mut Pipe,
) -> std::io::Result<Option<usize>> {
    loop {
        if pipe.held == 0 {
            from.readable().await?;
            let r = from.try_io(Interest::READABLE, || {
                splice(
                    from.as_fd(),
                    None,
                    pipe.w.as_fd(),
                    None,
                    SPLICE_LEN,
                    splice_flags(),
                )
                .map_err(std::io::Error::from)
            });
            match r {
                Ok(0) => return Ok(None),
                Ok(n) => pipe.held = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        let moved = pipe.held;
        while pipe.held > 0 {
            to.writable().await?;
            let r = to.try_io(Interest::WRITABLE, || {
                splice(
                    pipe.r.as_fd(),
                    None,
                    to.as_fd(),
                    None,
                    pipe.held,
                    splice_flags(),
                )
                .map_err(std::io::Error::from)
            });
            match r {
                Ok(n) => pipe.held = pipe.held.saturating_sub(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        return Ok(Some(moved));
    }
}

/// What a control record on the kTLS socket meant.
enum Control {
    /// Application data read through recvmsg instead of splice; forward it.
    Data(Vec<u8>),
    CloseNotify,
    Ignore,
}

fn read_control(sock: &TcpStream) -> Result<Control, RelayError> {
    let mut buf = vec![0u8; record::MAX_PLAINTEXT];
    let mut cmsg = nix::cmsg_space!(u8);
    let (n, typ) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(|e| RelayError::Io(e.into()))?;
        let typ = msg
            .cmsgs()
            .map_err(|e| RelayError::Io(e.into()))?
            .find_map(|c| match c {
                ControlMessageOwned::TlsGetRecordType(t) => Some(t),
                _ => None,
            });
        (msg.bytes, typ)
    };
    let body = buf.get(..n).unwrap_or_default();
    match typ {
        None | Some(TlsGetRecordType::ApplicationData) => Ok(Control::Data(body.to_vec())),
        Some(TlsGetRecordType::Alert) => match body {
            [_, 0] => Ok(Control::CloseNotify),
            [level, desc] => Err(RelayError::Alert(*level, *desc)),
            _ => Err(RelayError::PostHandshake("malformed alert".to_owned())),
        },
        Some(TlsGetRecordType::Handshake) => {
            for m in record::parse_post_handshake(body).map_err(RelayError::PostHandshake)? {
                if let PostHandshake::KeyUpdate { update_requested } = m {
                    return Err(RelayError::KeyUpdate(format!(
                        "peer sent a TLS 1.3 KeyUpdate (update_requested={update_requested}); the kernel TLS path does not re-key, closing (hint: run the tunnel with --ktls off for peers that re-key early)"
                    )));
                }
            }
            Ok(Control::Ignore)
        }
        Some(other) => Err(RelayError::UnexpectedContent(match other {
            TlsGetRecordType::ChangeCipherSpec => 20,
            TlsGetRecordType::Unknown(t) => t,
            _ => 0,
        })),
    }
}

/// Sends close_notify and half-closes the kTLS socket, through a duplicate of its descriptor so
/// the other direction can keep reading.
async fn close_notify(sock: &TcpStream) -> std::io::Result<()> {
    let dup = sock.as_fd().try_clone_to_owned()?;
    let std = std::net::TcpStream::from(dup);
    std.set_nonblocking(true)?;
    let mut s = ::ktls::KtlsStream::new(TcpStream::from_std(std)?, None);
    s.shutdown().await
}

/// Relays over kTLS until both directions close, an error, or `stop` fires.
pub(crate) async fn relay(
    tls: TcpStream,
    plain: TcpStream,
    confidentiality_limit: u64,
    mut stop: Stop,
    metrics: Arc<Metrics>,
) -> Result<(), RelayError> {
    // No KeyUpdate here: stop before the confidentiality limit (in bytes, at full records).
    let limit_bytes = confidentiality_limit
        .saturating_sub(1024)
        .saturating_mul(record::MAX_PLAINTEXT as u64);
    let mut up = Pipe::new()?;
    let mut down = Pipe::new()?;
    let (mut tx_done, mut rx_done) = (false, false);
    let mut sent: u64 = 0;
    let stopping = stop.wait();
    tokio::pin!(stopping);
    while !(tx_done && rx_done) {
        tokio::select! {
            r = splice_step(&plain, &tls, &mut up), if !tx_done => match r? {
                Some(n) => {
                    metrics.sent(n);
                    sent += n as u64;
                    if sent >= limit_bytes {
                        tracing::info!("kTLS connection reached the key's confidentiality limit; closing instead of re-keying");
                        close_notify(&tls).await?;
                        return Ok(());
                    }
                }
                None => { close_notify(&tls).await?; tx_done = true; }
            },
            r = splice_step(&tls, &plain, &mut down), if !rx_done => match r {
                Ok(Some(n)) => metrics.received(n),
                Ok(None) => {
                    crate::relay::reset_on_close(&plain);
                    return Err(RelayError::Truncated);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) && down.held == 0 => {
                    match read_control(&tls)? {
                        Control::Data(d) => {
                            write_all(&plain, &d).await?;
                            metrics.received(d.len());
                        }
                        Control::CloseNotify => {
                            plain.as_ref_shutdown()?;
                            rx_done = true;
                        }
                        Control::Ignore => {}
                    }
                }
                Err(e) => return Err(e.into()),
            },
            why = &mut stopping => return Err(crate::relay::stopped(why, &plain, &metrics)),
        }
    }
    Ok(())
}

async fn write_all(sock: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        sock.writable().await?;
        match sock.try_write(data) {
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

trait ShutdownWrite {
    fn as_ref_shutdown(&self) -> std::io::Result<()>;
}

impl ShutdownWrite for TcpStream {
    fn as_ref_shutdown(&self) -> std::io::Result<()> {
        nix::sys::socket::shutdown(self.as_raw_fd(), nix::sys::socket::Shutdown::Write)
            .map_err(std::io::Error::from)
    }
}
