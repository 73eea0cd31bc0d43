//! Who may use which key: `sigil.yaml`'s `data` section, default deny.
//!
//! Owns: [`Caller`] (an identity the service got from a verifier, or the admin) and the
//! decision for each key operation. A key named after a data asset is that asset's key: its
//! writers may encrypt and mint data keys (plaintext or wrapped); its readers (and writers, who
//! may read) may decrypt, which is also how a wrapped data key is unwrapped; rewrap needs both,
//! so only the asset's writers may rewrap. Keys that are no asset's are admin keys: only the
//! admin uses them. The admin manages keys (create, read, rotate, config, trim, delete) but gets
//! no data operation on an asset's key: asset keys are released only to the workloads the
//! policy names. Every refusal says which rule decided. Must not: take an identity from a
//! request field.

use std::fmt;

use sigil_identity::{SpiffeId, VerifiedJwtSvid, VerifiedX509Svid};
use sigil_policy::Policy;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    X509Svid,
    JwtSvid,
    KubernetesLogin,
    AdminToken,
}

/// A caller whose identity a verifier established.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    id: Option<SpiffeId>,
    proof: Proof,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Caller({self}, {:?})", self.proof)
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("admin"),
        }
    }
}

impl Caller {
    /// A workload that presented a verified X.509-SVID (mTLS).
    pub fn from_x509(svid: &VerifiedX509Svid) -> Self {
        Self {
            id: Some(svid.spiffe_id().clone()),
            proof: Proof::X509Svid,
        }
    }

    /// A workload that presented a verified JWT-SVID.
    pub fn from_jwt(svid: &VerifiedJwtSvid) -> Self {
        Self {
            id: Some(svid.spiffe_id().clone()),
            proof: Proof::JwtSvid,
        }
    }

    /// A workload whose Kubernetes service-account token a [`crate::http::KubernetesLogin`]
    /// verifier accepted (directly, or through the login token it was given). Only call this with
    /// an identity such a verifier returned.
    pub fn from_kubernetes_login(id: SpiffeId) -> Self {
        Self {
            id: Some(id),
            proof: Proof::KubernetesLogin,
        }
    }

    /// The admin, after its token was compared (constant time) with the stored one.
    pub(crate) fn admin() -> Self {
        Self {
            id: None,
            proof: Proof::AdminToken,
        }
    }

    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        self.id.as_ref()
    }

    pub fn is_admin(&self) -> bool {
        self.id.is_none()
    }

    pub fn proof(&self) -> Proof {
        self.proof
    }
}

/// A key operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Encrypt,
    Decrypt,
    Rewrap,
    DataKeyPlaintext,
    DataKeyWrapped,
    Manage,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
            Operation::Rewrap => "rewrap",
            Operation::DataKeyPlaintext => "datakey/plaintext",
            Operation::DataKeyWrapped => "datakey/wrapped",
            Operation::Manage => "manage",
        }
    }

    fn needs_write(self) -> bool {
        matches!(
            self,
            Operation::Encrypt
                | Operation::Rewrap
                | Operation::DataKeyPlaintext
                | Operation::DataKeyWrapped
        )
    }
}

/// Which rule allowed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// The workload is a writer (or reader, for decrypt) of the asset.
    Asset { asset: String, workload: String },
    /// The admin, on a management operation or an admin key.
    Admin,
}

/// A refusal: who, what, which key, and the rule that decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission denied: {caller} may not {op} with key {key:?}: {rule}")]
pub struct Denial {
    pub caller: String,
    pub op: &'static str,
    pub key: String,
    pub rule: String,
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

/// Decide whether `caller` may do `op` with key `key` under `policy`.
pub fn authorize(
    policy: &Policy,
    caller: &Caller,
    op: Operation,
    key: &str,
) -> Result<Grant, Denial> {
    let deny = |rule: String| Denial {
        caller: caller.to_string(),
        op: op.as_str(),
        key: key.to_string(),
        rule,
    };
    let asset = policy.data.iter().position(|a| a.name == key);
    let Some(id) = caller.spiffe_id() else {
        return match (op, asset) {
            (Operation::Manage, _) | (_, None) => Ok(Grant::Admin),
            (_, Some(i)) => Err(deny(format!(
                "key {key:?} belongs to data asset {key:?} (sigil.yaml data[{i}]); its keys are released only to the workloads listed as its readers and writers, not to the admin token"
            ))),
        };
    };
    if op == Operation::Manage {
        return Err(deny(
            "key management (create, read, rotate, config, trim, delete) needs the admin token; workloads only use the keys of the assets sigil.yaml lets them read or write".to_string(),
        ));
    }
    let Some(workload) = policy.workload_by_id(id) else {
        return Err(deny(format!(
            "no workload in sigil.yaml has SPIFFE ID {id} (default deny)"
        )));
    };
    let Some(i) = asset else {
        return Err(deny(format!(
            "no data asset in sigil.yaml is named {key:?}, so the key is an admin key that no workload may use (default deny)"
        )));
    };
    let a = policy
        .data
        .get(i)
        .ok_or_else(|| deny("data asset vanished".to_string()))?;
    let w = workload.name.as_str();
    let allowed = if op.needs_write() {
        a.may_write(w)
    } else {
        a.may_read(w)
    };
    if allowed {
        return Ok(Grant::Asset {
            asset: a.name.clone(),
            workload: w.to_string(),
        });
    }
    let rule = if op.needs_write() {
        let why = if op == Operation::Rewrap {
            "rewrap decrypts and re-encrypts, so it needs a writer"
        } else {
            "only writers may encrypt or mint data keys"
        };
        format!(
            "data asset {key:?} (sigil.yaml data[{i}].writers) lists writers [{}]; workload {w:?} is not one ({why}; default deny)",
            list(&a.writers)
        )
    } else {
        format!(
            "data asset {key:?} (sigil.yaml data[{i}].readers/writers) lists readers [{}] and writers [{}]; workload {w:?} is neither (default deny)",
            list(&a.readers),
            list(&a.writers)
        )
    };
    Err(deny(rule))
}
