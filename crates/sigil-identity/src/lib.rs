//! SPIFFE identities: IDs, trust domains, SVIDs, bundles and their verification.
//!
//! Owns: the types every other Sigil crate uses to talk about identity, and the only
//! constructors of verified identities ([`VerifiedX509Svid`], [`VerifiedJwtSvid`]). Must not: do
//! I/O, hold private keys, or issue anything (that is `sigil-ca`).

mod bundle;
mod id;
pub mod jwt;
pub mod tls;
mod x509;

pub use bundle::{SpiffeBundle, MAX_BUNDLE_BYTES};
pub use id::{IdError, SpiffeId, TrustDomain, MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN};
pub use jwt::{verify_jwt_svid, Jwk, JwkSet, JwtBundle, JwtError, VerifiedJwtSvid};
pub use x509::{
    certs_from_pem, certs_to_pem, inspect_leaf, verify_x509_svid, BundleError, LeafInfo, SvidError, SvidUsage,
    VerifiedX509Svid, X509Bundle, MAX_CERT_BYTES, MAX_CHAIN_LEN,
};
