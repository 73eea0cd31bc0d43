//! A minimal Workload API client over the Unix socket, for `sigil agent fetch`, the demo and
//! tests. It sends the `workload.spiffe.io` header unless told not to.
//!
//! Owns: connecting to `unix://` endpoints. Must not: be used by the agent itself.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

use crate::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;

/// Why the client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad endpoint {0:?}; hint: use unix:///path/to/agent.sock or a plain path")]
    BadEndpoint(String),
    #[error(
        "cannot connect to the Workload API at {path}: {reason}; hint: is `sigil agent run` up?"
    )]
    Connect { path: PathBuf, reason: String },
}

/// Adds (or not) the security header.
#[derive(Debug, Clone, Copy)]
pub struct Header(pub bool);

impl tonic::service::Interceptor for Header {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if self.0 {
            req.metadata_mut().insert(
                crate::service::SECURITY_HEADER,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        Ok(req)
    }
}

pub type Client = SpiffeWorkloadApiClient<InterceptedService<Channel, Header>>;

/// Turns `unix:///run/sigil/agent.sock` (or `unix:/...`, or a bare path) into a path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ClientError> {
    let p = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if p.starts_with('/') {
        Ok(PathBuf::from(p))
    } else {
        Err(ClientError::BadEndpoint(endpoint.to_owned()))
    }
}

/// Connects to the agent at `path`; `header` false omits the security header (for tests).
pub async fn connect(path: &Path, header: bool) -> Result<Client, ClientError> {
    let p = path.to_owned();
    let err = |reason: String| ClientError::Connect {
        path: path.to_owned(),
        reason,
    };
    let channel = Endpoint::try_from("http://localhost")
        .map_err(|e| err(e.to_string()))?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .map_err(|e| {
            err(format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ))
        })?;
    Ok(SpiffeWorkloadApiClient::with_interceptor(
        channel,
        Header(header),
    ))
}
