//! The Workload API's Unix socket: binding it, and attaching the kernel's peer credentials
//! (`SO_PEERCRED`) plus the peer's process start time to every accepted connection.
//!
//! Owns: socket file lifecycle and [`PeerStream`]. Must not: decide anything about identity.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

use crate::attest::{Attestor, PeerCred};

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create socket directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("{path} exists and is not a socket; hint: choose another --socket path")]
    NotASocket { path: PathBuf },
    #[error("cannot remove stale socket {path}: {source}")]
    Stale { path: PathBuf, source: io::Error },
    #[error("cannot bind {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot set permissions of {path}: {source}")]
    Chmod { path: PathBuf, source: io::Error },
}

/// Binds the Workload API socket at `path`: creates the directory, replaces a stale socket
/// (never a regular file), and makes the socket connectable by every local user (who they
/// are is decided by attestation, not by file permissions).
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SocketError::Dir {
            path: dir.to_owned(),
            source,
        })?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(SocketError::NotASocket {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(|source| SocketError::Stale {
            path: path.to_owned(),
            source,
        })?;
    }
    let l = UnixListener::bind(path).map_err(|source| SocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(|source| {
        SocketError::Chmod {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(l)
}

/// The peer credentials of a connection, as tonic request extension.
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo(pub Option<PeerCred>);

/// An accepted connection with its peer credentials. The bytes flow through
/// [`crate::authority_fix`] on their way in.
#[derive(Debug)]
pub struct PeerStream {
    inner: DuplexStream,
    info: PeerInfo,
}

impl PeerStream {
    /// Reads `SO_PEERCRED` and the peer's start time right after `accept`, and starts the
    /// byte pump between the socket and tonic.
    pub fn new(sock: UnixStream, attestor: &Attestor) -> Self {
        let cred = sock.peer_cred().ok().map(|c| {
            let pid = c.pid();
            PeerCred {
                pid,
                uid: c.uid(),
                gid: c.gid(),
                start_time: pid.filter(|p| *p > 0).and_then(|p| attestor.start_time(p)),
            }
        });
        let (inner, pump) = tokio::io::duplex(64 * 1024);
        let (sock_r, mut sock_w) = sock.into_split();
        let (pump_r, pump_w) = tokio::io::split(pump);
        tokio::spawn(async move {
            let mut pump_r = pump_r;
            let inbound = tokio::spawn(async move {
                if let Err(e) = crate::authority_fix::client_to_server(sock_r, pump_w).await {
                    tracing::debug!(error = %e, "Workload API connection closed");
                }
            });
            // Ends when tonic closes its side (also after the inbound side failed and dropped it).
            let _ = tokio::io::copy(&mut pump_r, &mut sock_w).await;
            inbound.abort();
        });
        Self {
            inner,
            info: PeerInfo(cred),
        }
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The accepted connections of `listener` as a stream for tonic.
pub fn incoming(
    listener: UnixListener,
    attestor: Arc<Attestor>,
) -> impl tokio_stream::Stream<Item = io::Result<PeerStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::UnixListenerStream::new(listener)
        .map(move |r| r.map(|s| PeerStream::new(s, &attestor)))
}
