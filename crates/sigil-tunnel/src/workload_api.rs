//! Credentials from the SPIFFE Workload API (`sigil agent run`'s Unix socket): the
//! `FetchX509SVID` stream delivers the first SVID and every rotation; each message is checked like
//! the file source's (key matches leaf, chain verifies against the bundle) before it is swapped in.
//!
//! Owns: the stream, reconnecting with backoff when the agent restarts. Must not: log key bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil_agent::proto::{X509svidRequest, X509svidResponse};
use sigil_identity::X509Bundle;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::creds::{CredError, CredentialStore, Credentials};

type Stream = tonic::Streaming<X509svidResponse>;

/// A Workload API endpoint (`unix:///run/sigil/agent.sock` or a path).
#[derive(Debug, Clone)]
pub struct WorkloadApiSource {
    endpoint: String,
    path: PathBuf,
}

fn err(path: &Path, reason: impl Into<String>) -> CredError {
    CredError::Parse {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Splits concatenated DER certificates (the Workload API's encoding).
fn split_der(mut der: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, CredError> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = X509Certificate::from_der(der)
            .map_err(|e| err(path, format!("malformed certificate in the response: {e}")))?;
        let (one, _) = der.split_at(der.len() - rest.len());
        out.push(CertificateDer::from(one.to_vec()));
        der = rest;
        if out.len() > 16 {
            return Err(err(path, "more than 16 certificates in the response"));
        }
    }
    Ok(out)
}

impl WorkloadApiSource {
    pub fn new(endpoint: &str) -> Result<Self, CredError> {
        let path = sigil_agent::client::socket_path(endpoint)
            .map_err(|e| err(Path::new(endpoint), e.to_string()))?;
        Ok(Self {
            endpoint: endpoint.to_owned(),
            path,
        })
    }

    fn credentials(&self, resp: X509svidResponse) -> Result<Credentials, CredError> {
        let svid = resp.svids.into_iter().next().ok_or_else(|| {
            err(
                &self.path,
                "the Workload API returned no SVID for this workload",
            )
        })?;
        let chain = split_der(&svid.x509_svid, &self.path)?;
        let key = Zeroizing::new(svid.x509_svid_key);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
        let id: sigil_identity::SpiffeId = svid.spiffe_id.parse().map_err(|e| {
            err(
                &self.path,
                format!("bad SPIFFE ID {:?}: {e}", svid.spiffe_id),
            )
        })?;
        let roots = split_der(&svid.bundle, &self.path)?;
        let bundle = X509Bundle::new(id.trust_domain(), roots)
            .map_err(|e| err(&self.path, e.to_string()))?;
        Credentials::new(chain, key, bundle, &self.path)
    }

    async fn open(&self) -> Result<Stream, CredError> {
        let mut client = sigil_agent::client::connect(&self.path, true)
            .await
            .map_err(|e| err(&self.path, e.to_string()))?;
        client
            .fetch_x509svid(X509svidRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| err(&self.path, format!("FetchX509SVID: {}", e.message())))
    }

    /// Connects and waits for the first SVID.
    pub async fn first(&self) -> Result<(Credentials, WorkloadApiWatch), CredError> {
        let mut stream = self.open().await?;
        let msg = stream
            .message()
            .await
            .map_err(|e| err(&self.path, format!("FetchX509SVID: {}", e.message())))?
            .ok_or_else(|| {
                err(
                    &self.path,
                    "the agent closed the stream before sending an SVID",
                )
            })?;
        let creds = self.credentials(msg)?;
        Ok((
            creds,
            WorkloadApiWatch {
                source: self.clone(),
                stream: Some(stream),
            },
        ))
    }
}

/// The rest of the stream: rotations.
#[derive(Debug)]
pub struct WorkloadApiWatch {
    source: WorkloadApiSource,
    stream: Option<Stream>,
}

impl WorkloadApiWatch {
    /// Swaps in every new SVID the agent sends; reconnects (1 s, doubling to 30 s) when the
    /// stream ends.
    pub async fn watch(mut self, store: Arc<CredentialStore>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut stream = match self.stream.take() {
                Some(s) => s,
                None => match self.source.open().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(endpoint = %self.source.endpoint, error = %e, "Workload API unavailable; keeping the current SVID");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                },
            };
            loop {
                match stream.message().await {
                    Ok(Some(msg)) => match self.source.credentials(msg) {
                        Ok(c) => {
                            backoff = Duration::from_secs(1);
                            tracing::info!(id = %c.spiffe_id(), not_after = %crate::creds::rfc3339(c.not_after()),
                                "Workload API sent a rotated SVID; new handshakes use it, live connections continue");
                            store.replace(c);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Workload API sent credentials that do not check out; keeping the current ones")
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e.message(), "Workload API stream failed; reconnecting");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_der_rejects_garbage() {
        assert!(split_der(b"not der", Path::new("x")).is_err());
        assert!(split_der(b"", Path::new("x")).unwrap().is_empty());
    }
}
