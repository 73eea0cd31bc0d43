//! Workload attestation: who is calling, according to the kernel and the kubelet.
//!
//! The caller's PID, UID and GID come from `SO_PEERCRED` on the Unix socket (captured by the
//! kernel at `connect`); everything else is read from `/proc/<pid>` and, for processes in a pod
//! cgroup, the kubelet's pod list. Nothing the caller sends is used. PID reuse is guarded by
//! comparing the process start time at accept, before and after reading `/proc`.
//!
//! Owns: turning a peer credential into [`WorkloadFacts`]. Must not: decide which identity the
//! facts deserve (that is [`crate::selector`]).

pub mod cgroup;
pub mod kubelet;
pub mod proc;

use std::fmt;

pub use kubelet::{KubeletClient, KubeletConfig, PodFacts};
pub use proc::ProcFs;

/// The kernel's view of the peer at connection time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// `None` when the peer is in a PID namespace the agent cannot see.
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// Start time of `pid` read right after `accept`.
    pub start_time: Option<u64>,
}

/// What attestation established about a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadFacts {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// The executable path, if `/proc/<pid>/exe` could be read.
    pub exe_path: Option<String>,
    /// The executable's SHA-256, computed only when some workload selects on it.
    pub sha256: Option<[u8; 32]>,
    /// Pod facts, for a process in a Kubernetes pod on this node.
    pub kubernetes: Option<PodFacts>,
}

impl fmt::Display for WorkloadFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid={} uid={} gid={}", self.pid, self.uid, self.gid)?;
        if let Some(p) = &self.exe_path {
            write!(f, " exe={p}")?;
        }
        if let Some(k) = &self.kubernetes {
            write!(
                f,
                " pod={}/{} sa={} container={} image={}",
                k.namespace, k.pod_name, k.service_account, k.container_name, k.image
            )?;
        }
        Ok(())
    }
}

/// Why a caller could not be attested. [`AttestError::reason`] is the metrics label.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("caller has no peer credentials (not a Unix socket?)")]
    NoCredentials,
    #[error(
        "caller's PID is not visible to the agent; hint: run the agent in the host PID namespace (hostPID: true)"
    )]
    NoPid,
    #[error(
        "PID {pid} was reused: start time {before} at connect, {after} now; refusing to attest a different process"
    )]
    PidReused { pid: i32, before: u64, after: u64 },
    #[error(transparent)]
    Proc(#[from] proc::ProcError),
    #[error("{0}")]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Kubelet(#[from] kubelet::KubeletError),
}

impl AttestError {
    /// A short, fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::NoPid => "no_pid",
            Self::PidReused { .. } => "pid_reused",
            Self::Proc(proc::ProcError::Gone { .. }) => "process_gone",
            Self::Proc(_) => "proc_unreadable",
            Self::Cgroup(_) => "cgroup",
            Self::Kubelet(_) => "kubelet",
        }
    }
}

/// Attests callers.
#[derive(Debug)]
pub struct Attestor {
    proc: ProcFs,
    kubelet: Option<KubeletClient>,
    need_sha256: bool,
}

impl Attestor {
    /// `need_sha256`: hash executables (only when some workload selects on `sha256`).
    pub fn new(proc: ProcFs, kubelet: Option<KubeletClient>, need_sha256: bool) -> Self {
        Self {
            proc,
            kubelet,
            need_sha256,
        }
    }

    pub fn proc(&self) -> &ProcFs {
        &self.proc
    }

    /// Reads the start time of a freshly accepted peer (for the PID reuse guard).
    pub fn start_time(&self, pid: i32) -> Option<u64> {
        self.proc.start_time(pid).ok()
    }

    pub async fn attest(&self, peer: &PeerCred) -> Result<WorkloadFacts, AttestError> {
        let pid = match peer.pid {
            Some(p) if p > 0 => p,
            _ => return Err(AttestError::NoPid),
        };
        let before = self.proc.start_time(pid)?;
        if let Some(at_accept) = peer.start_time
            && at_accept != before
        {
            return Err(AttestError::PidReused {
                pid,
                before: at_accept,
                after: before,
            });
        }
        let exe_path = self.proc.exe_path(pid).ok();
        let sha256 = if self.need_sha256 {
            match self.proc.exe_sha256(pid) {
                Ok(d) => Some(d),
                Err(e @ proc::ProcError::Gone { .. }) => return Err(e.into()),
                Err(e) => {
                    tracing::debug!(pid, error = %e, "executable digest unavailable");
                    None
                }
            }
        } else {
            None
        };
        let kubernetes = match &self.kubelet {
            None => None,
            Some(k) => {
                let text = self.proc.cgroup(pid)?;
                match cgroup::parse(&text) {
                    Ok(r) => Some(k.lookup(&r).await?),
                    Err(cgroup::CgroupError::NotInPod) => None,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let after = self.proc.start_time(pid)?;
        if after != before {
            return Err(AttestError::PidReused { pid, before, after });
        }
        Ok(WorkloadFacts {
            pid,
            uid: peer.uid,
            gid: peer.gid,
            exe_path,
            sha256,
            kubernetes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> PeerCred {
        let pid = i32::try_from(std::process::id()).unwrap();
        PeerCred {
            pid: Some(pid),
            uid: 0,
            gid: 0,
            start_time: ProcFs::default().start_time(pid).ok(),
        }
    }

    #[tokio::test]
    async fn attests_own_process() {
        let a = Attestor::new(ProcFs::default(), None, true);
        let f = a.attest(&me()).await.unwrap();
        assert_eq!(
            f.exe_path.as_deref(),
            std::env::current_exe().unwrap().to_str()
        );
        assert!(f.sha256.is_some());
        assert!(f.kubernetes.is_none());
    }

    #[tokio::test]
    async fn detects_pid_reuse() {
        let a = Attestor::new(ProcFs::default(), None, false);
        let mut p = me();
        p.start_time = p.start_time.map(|t| t + 1);
        let e = a.attest(&p).await.unwrap_err();
        assert_eq!(e.reason(), "pid_reused");
    }

    #[tokio::test]
    async fn invisible_pid_is_refused() {
        let a = Attestor::new(ProcFs::default(), None, false);
        let mut p = me();
        p.pid = Some(0);
        assert_eq!(a.attest(&p).await.unwrap_err().reason(), "no_pid");
        p.pid = None;
        assert_eq!(a.attest(&p).await.unwrap_err().reason(), "no_pid");
    }

    #[tokio::test]
    async fn exited_process_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        let a = Attestor::new(ProcFs::default(), None, false);
        let p = PeerCred {
            pid: Some(pid),
            uid: 0,
            gid: 0,
            start_time: None,
        };
        assert_eq!(a.attest(&p).await.unwrap_err().reason(), "process_gone");
    }
}
