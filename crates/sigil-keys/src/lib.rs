//! Sigil's key service core: encryption at rest bound to identity.
//!
//! Owns: named, versioned keys and Vault-transit operations on them ([`keyring`]), the barrier
//! that keeps every secret record encrypted and is unsealed with Shamir shares or a key file
//! ([`barrier`], [`shamir`]), the store trait its records live behind ([`store`], with
//! in-memory and redb backends), and authorization from `sigil.yaml`'s `data` section
//! ([`authz`]); [`service`] puts them together. Must not: do network I/O (the HTTP layer in
//! [`http`] is a router a server mounts), trust an identity it did not get from a verifier, or
//! answer a key request while sealed.

pub mod aead;
pub mod barrier;
pub mod redb_store;
pub mod shamir;
pub mod store;

pub use aead::KeyType;
pub use barrier::{Barrier, BarrierError, SealKind, SealStatus};
pub use redb_store::RedbStore;
pub use store::{Expect, MemStore, Store, StoreError, Versioned, Write};
pub mod authz;
pub mod http;
pub mod keyring;
pub mod service;

pub use authz::{Caller, Denial, Operation};
pub use keyring::{KeyConfig, Limits, TransitError};
pub use service::{KeyService, ServiceError};
