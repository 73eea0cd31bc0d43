//! sigil-reach: segmentation you can prove.
//!
//! Owns: Kubernetes NetworkPolicy semantics ([`engine`], checked against the simple
//! [`reference`] evaluator), the blast-radius graph that joins the network with RBAC, secrets,
//! shared volumes and node escapes ([`blast`]), least-privilege policy generation from
//! `sigil.yaml` flows ([`generate`]) and renderers ([`render`]).
//!
//! Must not: read files or talk to a cluster. Objects come in as typed values (decoded from the
//! `serde_json::Value`s that `sigil-kube` loads); verdicts and graphs go out.

pub mod blast;
pub mod engine;
pub mod error;
pub mod generate;
pub mod groups;
pub mod ipset;
mod load;
pub mod model;
pub mod ports;
pub mod query;
pub mod reference;
pub mod render;
pub mod selector;

pub use engine::{Direction, Engine, Explanation};
pub use error::ReachError;
pub use model::{Cluster, LabelVariant, Settings, Workload};
pub use ports::{PortSet, Proto};
