//! Guardrails: the rules Sigil enforces on Kubernetes workloads, offline (`sigil audit`) and at
//! admission (`sigil webhook`).
//!
//! Owns: the rule table ([`rules`]), Pod Security Standards ([`pss`]), the AI/GPU rules
//! ([`ai`]), users' Gatekeeper ConstraintTemplates evaluated with regorus ([`rego`]), the audit
//! engine that applies them with the policy's exemptions ([`audit`]), report rendering
//! ([`render`]) and the validating admission webhook ([`webhook`]).
//!
//! Must not: read files other than the ones it is given, or talk to a cluster.

pub mod audit;
mod containers;
pub mod finding;
pub mod image;
pub mod models;
pub mod pss;
pub mod rego;
pub mod render;
pub mod rules;
pub mod webhook;

pub use audit::{Auditor, Settings};
pub use finding::{Finding, ObjectRef, Report, Waived};
pub use rules::{Rule, Severity};
