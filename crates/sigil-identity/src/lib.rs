//! SPIFFE identities: IDs, trust domains, SVIDs, bundles and their verification.
//!
//! Owns: the types every other Sigil crate uses to talk about identity, and the only
//! constructors of verified identities. Must not: do I/O, hold private keys, or issue anything.

mod id;

pub use id::{IdError, MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN, SpiffeId, TrustDomain};
